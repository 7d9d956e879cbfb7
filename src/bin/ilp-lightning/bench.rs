//! `ilp-lightning bench`: a server and a client plugin in one process over loopback BTP; the
//! client sends 1-sat Prepares from C threads, the server's data handler fulfils them. Prints
//! one JSON line with the same keys as the JS reference pair's bench.js (benches/js-bench),
//! `cpu_us_per_packet` included: the process's user + system CPU time over the packets, divided
//! by their number. `--pin CPU` runs the whole process on that one CPU.
//!
//! With `--clients K`, K idle clients are connected to the server first, from a child process
//! (this same binary), so that the RSS reported is the server side's (plus the one bench client).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ilp_plugin_lightning::ilp::{condition_of, Address, FulfillBuilder, PrepareBuilder, Timestamp};
use ilp_plugin_lightning::plugin::{AccountLimits, LightningPlugin};

use crate::flags::{FlagError, Flags};

pub const USAGE: &str =
    "  bench [--packets N] [--concurrency C] [--threads T] [--clients K] [--pin CPU]
                     loopback throughput/latency/CPU of a server and client pair, one JSON line;
                     C packets in flight, from T sending threads (default C: each thread waits
                     in send_data; fewer: each keeps a window of submit_data in flight)
  bench --store DIR|redis://HOST:PORT/DB [--hubs N] [--packets N] [--concurrency C]
                     the same through N hubs with their books in that store (Redis: flushed
                     first; with the figure of Redis commands per packet)";

pub(crate) const FULFILLMENT: [u8; 32] = [7; 32];

/// The resident set of this process in MB (10^6 bytes, as Node's figures), from /proc.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| (kb * 1024.0 / 1e6 * 10.0).round() / 10.0)
        .unwrap_or(0.0)
}

/// Threads of this process now, from /proc.
fn threads() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// File descriptors this process holds now.
fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// User + system CPU time this process has used so far (all its threads, ended ones too).
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs the calling thread, and so every thread it starts afterwards, on CPU `cpu` only.
fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: the set is a plain bit array, initialised by CPU_ZERO before use.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        return Err(format!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

struct Settings {
    packets: usize,
    concurrency: usize,
    threads: usize,
    clients: usize,
    pin: Option<usize>,
    /// `--store`: bench hubs with books there instead of the bare pair.
    store: Option<String>,
    hubs: usize,
}

fn parse(args: &[String]) -> Result<Settings, FlagError> {
    let flags = Flags::parse(
        args,
        &[
            "packets",
            "concurrency",
            "threads",
            "clients",
            "pin",
            "store",
            "hubs",
        ],
    )?;
    let concurrency = flags.parsed("concurrency")?.unwrap_or(1);
    let settings = Settings {
        packets: flags.parsed("packets")?.unwrap_or(20_000),
        concurrency,
        threads: flags.parsed("threads")?.unwrap_or(concurrency),
        clients: flags.parsed("clients")?.unwrap_or(0),
        pin: flags.parsed("pin")?,
        store: flags.get("store").map(str::to_owned),
        hubs: flags.parsed("hubs")?.unwrap_or(1),
    };
    if settings
        .pin
        .is_some_and(|cpu| cpu >= libc::CPU_SETSIZE as usize)
    {
        return Err(FlagError("--pin: no such CPU".into()));
    }
    if settings.concurrency == 0 || settings.packets == 0 {
        return Err(FlagError(
            "--packets and --concurrency must be at least 1".into(),
        ));
    }
    if settings.threads == 0 || settings.threads > settings.concurrency {
        return Err(FlagError(
            "--threads must be between 1 and --concurrency".into(),
        ));
    }
    Ok(settings)
}

/// Kills the idle-clients child when the bench ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Closing its stdin asks it to stop; kill in case it does not.
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `count` idle clients of `server` in a child process; returns once all are connected.
fn spawn_idle_clients(server: &str, count: usize) -> Result<ChildGuard, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let child = Command::new(exe)
        .args(["bench-idle-clients", server, &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start idle clients: {e}"))?;
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().ok_or("no stdout from idle clients")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("idle clients: {e}"))?;
    if line.trim() != "ready" {
        return Err(format!("idle clients failed to connect: {}", line.trim()));
    }
    Ok(guard)
}

/// The child side of `--clients`: `bench-idle-clients URI_PREFIX COUNT`. Connects COUNT clients
/// (user `idleN`), prints `ready`, and waits for stdin to close.
pub fn run_idle_clients(args: &[String]) -> ExitCode {
    let (Some(server), Some(count)) = (
        args.first(),
        args.get(1).and_then(|c| c.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: bench-idle-clients HOST:PORT COUNT");
        return ExitCode::from(2);
    };
    // Raw WebSocket clients, authenticated and then silent: the server's cost is what is
    // measured, and a socket each (no threads) lets one process hold thousands.
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        match idle_client(server, i) {
            Ok(ws) => clients.push(ws),
            Err(e) => {
                println!("error: client {i}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
    for mut ws in clients {
        let _ = ws.close(None);
    }
    ExitCode::SUCCESS
}

/// One idle client: TCP, the WebSocket handshake, auth as `idle<i>`, its Response.
fn idle_client(
    server: &str,
    i: usize,
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, String> {
    use ilp_plugin_lightning::btp::{auth_message, Packet};
    let stream = std::net::TcpStream::connect(server).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tungstenite::client(format!("ws://{server}/"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    ws.send(tungstenite::Message::Binary(auth_message(
        1,
        &format!("idle{i}"),
        &format!("secret{i}"),
    )))
    .map_err(|e| e.to_string())?;
    loop {
        match ws.read().map_err(|e| format!("auth reply: {e}"))? {
            tungstenite::Message::Binary(reply) => {
                return match Packet::parse(&reply) {
                    Ok(Packet::Response(_)) => Ok(ws),
                    other => Err(format!("auth refused: {other:?}")),
                }
            }
            _ => continue,
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[index]
}

/// Makes `plugin` fulfil every Prepare with the bench's one fulfillment.
pub(crate) fn fulfil_every_prepare(plugin: &LightningPlugin) -> Result<(), String> {
    let fulfill = FulfillBuilder {
        fulfillment: &FULFILLMENT,
        data: &[],
    }
    .build()
    .map_err(|e| e.to_string())?
    .to_bytes();
    plugin
        .register_data_handler(move |_prepare| Ok(fulfill.clone()))
        .map_err(|e| e.to_string())
}

fn bench(settings: &Settings) -> Result<String, String> {
    // Before any thread starts, so that all of them inherit it.
    if let Some(cpu) = settings.pin {
        pin_to_cpu(cpu)?;
    }
    let server = LightningPlugin::server(
        "127.0.0.1:0".parse().unwrap(),
        Address::new("test.bench").unwrap(),
    )
    .credit_limit(None)
    // Requests run on the connection's reading threads when one is free, else on the pool.
    // Past 4 pool threads (the library default), measured on 2 cores, the extra context
    // switches cost more than the parallelism gains (c=100: 16 threads ~80k/s, 4 ~95k/s).
    .handler_threads(settings.concurrency.clamp(2, 4))
    .max_connections(settings.clients + 16)
    // Every idle client is a new account, all within seconds.
    .account_limits(AccountLimits {
        max_accounts: settings.clients + 16,
        max_new_per_minute: None,
        ..AccountLimits::default()
    })
    .build()
    .map_err(|e| e.to_string())?;
    fulfil_every_prepare(&server)?;
    server.connect().map_err(|e| format!("server: {e}"))?;
    let port = server.local_addr().ok_or("server has no address")?.port();

    let rss_before_clients = rss_mb();
    let threads_before_clients = threads();
    let _idle = if settings.clients > 0 {
        Some(spawn_idle_clients(
            &format!("127.0.0.1:{port}"),
            settings.clients,
        )?)
    } else {
        None
    };

    let client = Arc::new(
        LightningPlugin::client(&format!("btp+ws://bench:secret@127.0.0.1:{port}"))
            // It only sends: one thread is enough for the requests it never gets.
            .handler_threads(1)
            .build()
            .map_err(|e| e.to_string())?,
    );
    client.connect().map_err(|e| format!("client: {e}"))?;
    let own = client.own_address().ok_or("client learned no address")?;
    let destination = format!("{own}.x");
    let condition = condition_of(&FULFILLMENT);
    let prepare = PrepareBuilder {
        amount: 1,
        expires_at: Timestamp::now().add_millis(600_000),
        execution_condition: &condition,
        destination: &destination,
        data: &[],
    }
    .build()
    .map_err(|e| e.to_string())?
    .to_bytes();
    let prepare = Arc::new(prepare);

    let next = Arc::new(AtomicUsize::new(0));
    let fulfilled = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let mut workers = Vec::with_capacity(settings.threads);
    for i in 0..settings.threads {
        let (client, prepare, next, fulfilled) = (
            client.clone(),
            prepare.clone(),
            next.clone(),
            fulfilled.clone(),
        );
        let total = settings.packets;
        // The packets in flight, shared out as evenly as the threads allow.
        let window = settings.concurrency / settings.threads
            + usize::from(i < settings.concurrency % settings.threads);
        let worker = std::thread::Builder::new()
            .name(format!("bench-{i}"))
            .spawn(move || {
                let mut latencies = Vec::with_capacity(total / 4 + 1);
                let mut count = |sent: Instant, reply: Result<Vec<u8>, _>| {
                    latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if matches!(reply.as_deref().map(|r| r.first()), Ok(Some(13))) {
                        fulfilled.fetch_add(1, Ordering::Relaxed);
                    }
                };
                if window == 1 {
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        let sent = Instant::now();
                        count(sent, client.send_data(&prepare));
                    }
                } else {
                    let mut in_flight = VecDeque::with_capacity(window);
                    loop {
                        let mut room = 0;
                        while in_flight.len() + room < window
                            && next.fetch_add(1, Ordering::Relaxed) < total
                        {
                            room += 1;
                        }
                        // Refilled in one go: the Prepares leave in one system call.
                        let sent = Instant::now();
                        let batch = std::iter::repeat_n(&prepare[..], room);
                        for packet in client.submit_data_many(batch) {
                            in_flight.push_back((sent, packet));
                        }
                        let Some((sent, packet)) = in_flight.pop_front() else {
                            break;
                        };
                        count(sent, packet.and_then(|p| p.wait()));
                        // Every answer already in, so that the refill goes out in one batch.
                        while in_flight
                            .front()
                            .is_some_and(|(_, p)| p.as_ref().map_or(true, |p| p.is_ready()))
                        {
                            let (sent, packet) = in_flight.pop_front().expect("front exists");
                            count(sent, packet.and_then(|p| p.wait()));
                        }
                    }
                }
                latencies
            })
            .map_err(|e| format!("cannot start a bench thread: {e}"))?;
        workers.push(worker);
    }
    let mut latencies = Vec::with_capacity(settings.packets);
    for w in workers {
        latencies.extend(w.join().map_err(|_| "a bench thread panicked")?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let rss = rss_mb();
    let (threads_with_clients, descriptors_with_clients) = (threads(), descriptors());
    latencies.sort_unstable();
    client.disconnect();
    server.disconnect();
    let mut line = format!(
        "{{\"impl\":\"rust-ilp-plugin-lightning\",\"packets\":{},\"concurrency\":{},\"threads\":{},\"fulfilled\":{},\
         \"seconds\":{:.3},\"packets_per_s\":{},\"p50_us\":{},\"p99_us\":{},\
         \"cpu_us_per_packet\":{:.1},\"rss_mb\":{}",
        settings.packets,
        settings.concurrency,
        settings.threads,
        fulfilled.load(Ordering::Relaxed),
        seconds,
        (settings.packets as f64 / seconds).round() as u64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        cpu.as_secs_f64() * 1e6 / settings.packets as f64,
        rss
    );
    if let Some(cpu) = settings.pin {
        line.push_str(&format!(",\"pinned_cpu\":{cpu}"));
    }
    if settings.clients > 0 {
        line.push_str(&format!(
            ",\"clients\":{},\"rss_mb_before_clients\":{},\"threads\":{},\"threads_before_clients\":{},\"descriptors\":{}",
            settings.clients,
            rss_before_clients,
            threads_with_clients,
            threads_before_clients,
            descriptors_with_clients
        ));
    }
    line.push('}');
    Ok(line)
}

#[cfg(feature = "sim")]
fn bench_store(settings: &Settings, store: &str) -> Result<String, String> {
    use crate::bench_hubs::{bench, BenchStore};
    if let Some(cpu) = settings.pin {
        pin_to_cpu(cpu)?;
    }
    let store = if store.starts_with("redis://") {
        BenchStore::Redis(store.to_owned())
    } else {
        BenchStore::Dir(store.into())
    };
    bench(
        &store,
        settings.hubs,
        settings.packets,
        settings.concurrency,
    )
}

#[cfg(not(feature = "sim"))]
fn bench_store(_: &Settings, _: &str) -> Result<String, String> {
    Err("--store needs a build with the sim feature (the hubs settle over a simulated node)".into())
}

/// `ilp-lightning bench ...`.
pub fn run(args: &[String]) -> ExitCode {
    let settings = match parse(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ilp-lightning bench: {e}\nusage:\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match &settings.store {
        None => bench(&settings),
        Some(store) => bench_store(&settings, store),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ilp-lightning bench: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_the_sorted_samples() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), 51);
        assert_eq!(percentile(&samples, 0.99), 100);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn rss_is_read_from_proc() {
        assert!(rss_mb() > 0.0);
    }

    /// This thread's time on a CPU so far, as the scheduler counts it (an account independent
    /// of getrusage's).
    fn thread_run_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        Duration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
    }

    #[test]
    fn cpu_time_counts_work_done() {
        let before = process_cpu_time();
        let ran_before = thread_run_time();
        // Busy work the optimiser cannot drop, until the scheduler says this thread ran 30 ms
        // (however long that takes on a loaded machine).
        let mut x = 1u64;
        while thread_run_time() - ran_before < Duration::from_millis(30) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let used = process_cpu_time().saturating_sub(before);
        // getrusage splits the same run time into user and system time, rounded to ticks.
        assert!(
            used >= Duration::from_millis(20),
            "{used:?} for 30 ms of work"
        );
    }

    #[test]
    fn pinning_runs_on_that_cpu_only() {
        let pinned = std::thread::spawn(|| {
            pin_to_cpu(0)?;
            // A thread started after pinning inherits the mask.
            std::thread::spawn(|| {
                let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|v| v.trim().to_string())
            })
            .join()
            .map_err(|_| "thread panicked".to_string())
        });
        assert_eq!(pinned.join().unwrap(), Ok(Some("0".to_string())));
    }

    #[test]
    fn pin_needs_a_cpu_number() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&args(&["--pin", "0"])).unwrap().pin, Some(0));
        assert!(parse(&args(&["--pin", "x"])).is_err());
        assert!(parse(&args(&["--pin", "100000"])).is_err());
        assert_eq!(parse(&args(&[])).unwrap().pin, None);
    }

    #[test]
    fn threads_default_to_the_concurrency_and_never_exceed_it() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let plain = parse(&args(&["--concurrency", "100"])).unwrap();
        assert_eq!((plain.concurrency, plain.threads), (100, 100));
        let window = parse(&args(&["--concurrency", "100", "--threads", "1"])).unwrap();
        assert_eq!((window.concurrency, window.threads), (100, 1));
        assert!(parse(&args(&["--concurrency", "2", "--threads", "3"])).is_err());
        assert!(parse(&args(&["--threads", "0"])).is_err());
    }
}
