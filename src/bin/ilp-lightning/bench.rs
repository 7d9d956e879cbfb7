//! `ilp-lightning bench`: a server and a client plugin in one process over loopback BTP; the
//! client sends 1-sat Prepares from C threads, the server's data handler fulfils them. Prints
//! one JSON line with the same keys as the JS reference pair's bench.js.
//!
//! With `--clients K`, K idle clients are connected to the server first, from a child process
//! (this same binary), so that the RSS reported is the server side's (plus the one bench client).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ilp_plugin_lightning::ilp::{condition_of, Address, FulfillBuilder, PrepareBuilder, Timestamp};
use ilp_plugin_lightning::plugin::LightningPlugin;

use crate::flags::{FlagError, Flags};

pub const USAGE: &str = "  bench [--packets N] [--concurrency C] [--clients K]
                     loopback throughput/latency of a server and client pair, one JSON line";

const FULFILLMENT: [u8; 32] = [7; 32];

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

struct Settings {
    packets: usize,
    concurrency: usize,
    clients: usize,
}

fn parse(args: &[String]) -> Result<Settings, FlagError> {
    let flags = Flags::parse(args, &["packets", "concurrency", "clients"])?;
    let settings = Settings {
        packets: flags.parsed("packets")?.unwrap_or(20_000),
        concurrency: flags.parsed("concurrency")?.unwrap_or(1),
        clients: flags.parsed("clients")?.unwrap_or(0),
    };
    if settings.concurrency == 0 || settings.packets == 0 {
        return Err(FlagError(
            "--packets and --concurrency must be at least 1".into(),
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
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let uri = format!("btp+ws://idle{i}:secret{i}@{server}");
        let client = match LightningPlugin::client(&uri).handler_threads(1).build() {
            Ok(c) => c,
            Err(e) => {
                println!("error: {e}");
                return ExitCode::from(1);
            }
        };
        if let Err(e) = client.connect() {
            println!("error: client {i}: {e}");
            return ExitCode::from(1);
        }
        clients.push(client);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
    for c in &clients {
        c.disconnect();
    }
    ExitCode::SUCCESS
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[index]
}

fn bench(settings: &Settings) -> Result<String, String> {
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
    .build()
    .map_err(|e| e.to_string())?;
    let fulfill = FulfillBuilder {
        fulfillment: &FULFILLMENT,
        data: &[],
    }
    .build()
    .map_err(|e| e.to_string())?
    .to_bytes();
    server
        .register_data_handler(move |_prepare| Ok(fulfill.clone()))
        .map_err(|e| e.to_string())?;
    server.connect().map_err(|e| format!("server: {e}"))?;
    let port = server.local_addr().ok_or("server has no address")?.port();

    let rss_before_clients = rss_mb();
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
    let started = Instant::now();
    let mut workers = Vec::with_capacity(settings.concurrency);
    for i in 0..settings.concurrency {
        let (client, prepare, next, fulfilled) = (
            client.clone(),
            prepare.clone(),
            next.clone(),
            fulfilled.clone(),
        );
        let total = settings.packets;
        let worker = std::thread::Builder::new()
            .name(format!("bench-{i}"))
            .spawn(move || {
                let mut latencies = Vec::with_capacity(total / 4 + 1);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    let reply = client.send_data(&prepare);
                    latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if matches!(reply.as_deref().map(|r| r.first()), Ok(Some(13))) {
                        fulfilled.fetch_add(1, Ordering::Relaxed);
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
    let rss = rss_mb();
    latencies.sort_unstable();
    client.disconnect();
    server.disconnect();
    let mut line = format!(
        "{{\"impl\":\"rust-ilp-plugin-lightning\",\"packets\":{},\"concurrency\":{},\"fulfilled\":{},\
         \"seconds\":{:.3},\"packets_per_s\":{},\"p50_us\":{},\"p99_us\":{},\"rss_mb\":{}",
        settings.packets,
        settings.concurrency,
        fulfilled.load(Ordering::Relaxed),
        seconds,
        (settings.packets as f64 / seconds).round() as u64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        rss
    );
    if settings.clients > 0 {
        line.push_str(&format!(
            ",\"clients\":{},\"rss_mb_before_clients\":{}",
            settings.clients, rss_before_clients
        ));
    }
    line.push('}');
    Ok(line)
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
    match bench(&settings) {
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
}
