//! Crash safety of settlement: a hub with its books in an [`EmbeddedStore`] runs in a child
//! process (this test binary, run again in "child mode"), against a simulated Lightning network
//! that lives in the test process. The test kills it with SIGKILL at random points while it
//! settles — paying a client, being paid by one, both, starting up — restarts it on the same
//! books, many times, then lets it finish and checks that no satoshi was created, lost or paid
//! twice: what moved on every channel is what the books say, every payment the nodes made is
//! booked once, every invoice paid is credited once, and nothing owed is forgotten.
//!
//! Knobs: `CRASH_KILLS` (default 30) kills, `CRASH_SEED` to replay a run (the seed is printed).
#![cfg(feature = "sim")]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use serde_json::{json, Value};

use common::lightning::{moved_msat, network, node_client, sim_paid, WAIT};
use ilp_plugin_lightning::ilp::{Address, Packet, Prepare};
use ilp_plugin_lightning::lnd::grpc::GrpcLightning;
use ilp_plugin_lightning::lnd::sim::{FailureReason, Release, SimNode};
use ilp_plugin_lightning::lnd::PaymentHash;
use ilp_plugin_lightning::plugin::{
    route_between_clients, HandlerError, LightningPlugin, PluginEvent, Role, PEER_ACCOUNT,
};
use ilp_plugin_lightning::settlement::store::{AccountBook, IssuedState};
use ilp_plugin_lightning::settlement::{EmbeddedStore, SettlementOptions, Store};

/// Set (to the child's configuration, JSON) in the environment of the child process.
const CHILD_ENV: &str = "ILP_LIGHTNING_CRASH_CHILD";
/// The child's own lines on its stdout begin here (libtest prints there too).
const LINE_PREFIX: &str = "crash-child:";
/// The ILP amount of each packet, in satoshis.
const PACKET_SAT: u64 = 10;
/// How much the hub lets a client owe, in satoshis.
const HUB_CREDIT_SAT: u64 = 100;
/// A client pays the hub by itself once it owes more than this, in satoshis.
const CLIENT_THRESHOLD_SAT: u64 = 50;
/// Invoices each side keeps its peer stocked with (fewer than the default 20: restarts are
/// many).
const INVOICE_STOCK: usize = 4;
/// What the client in a child process pays ahead each time, in satoshis.
const PREFUND_SAT: u64 = 20;

/// The clients' settlement options: they pay by themselves past a threshold.
fn client_options() -> SettlementOptions {
    SettlementOptions {
        settle_threshold: Some(CLIENT_THRESHOLD_SAT),
        invoice_stock: INVOICE_STOCK,
        payment_timeout: Duration::from_secs(10),
        ..SettlementOptions::client()
    }
}

/// The child process: not a test of its own. The crash test runs this binary again with
/// `crash_child --exact --ignored` and [`CHILD_ENV`] set.
#[test]
#[ignore = "the hub process of the crash test, started by it"]
fn crash_child() {
    match std::env::var(CHILD_ENV) {
        Ok(config) => child::run(&config),
        Err(_) => eprintln!("crash_child only runs as the child process of the crash test"),
    }
}

mod child {
    use super::*;

    fn say(kind: &str, body: Value) {
        println!("{LINE_PREFIX}{kind} {body}");
    }

    fn book_json(book: &AccountBook) -> Value {
        let int = |v: i128| i64::try_from(v).expect("fits the test's amounts");
        let unsigned = |v: u128| u64::try_from(v).expect("fits the test's amounts");
        json!({
            "receivable": int(book.receivable_msat),
            "reserved": unsigned(book.reserved_msat),
            "payable": int(book.payable_msat),
            "paying": unsigned(book.paying_msat),
            "paid": unsigned(book.paid_msat),
            "fees": unsigned(book.fees_msat),
            "payments": book.payments,
            "received": unsigned(book.received_msat),
            "receipts": book.receipts,
        })
    }

    pub(super) fn books_json(store: &dyn Store) -> Value {
        let accounts: serde_json::Map<String, Value> = store
            .accounts()
            .expect("accounts")
            .into_iter()
            .map(|(name, book)| (name, book_json(&book)))
            .collect();
        json!({
            "accounts": accounts,
            "open_payments": store.open_payments().expect("open payments").len(),
        })
    }

    /// The child: a hub as `ilp-lightning server` runs one, or a client that prefunds over and
    /// over and is paid for the packets it fulfils (`role` in the configuration). Its node is
    /// reached through the files the simulator wrote, its books (and a hub's token bindings)
    /// are in an embedded store. Answers `books`, `quiet` and `stop` on stdin; stops when
    /// stdin closes (the test is gone).
    pub(super) fn run(config: &str) {
        // Its log lines (RUST_LOG) go to stderr, told apart from the test's own.
        let _ = env_logger::builder()
            .format(|out, record| {
                writeln!(
                    out,
                    "[child process {} {}] {}",
                    record.level(),
                    std::thread::current().name().unwrap_or("?"),
                    record.args()
                )
            })
            .try_init();
        let config: Value = serde_json::from_str(config).expect("child config");
        let text = |key: &str| {
            config[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing"))
                .to_owned()
        };
        let node = Arc::new(node_from_files(&PathBuf::from(text("node_dir"))));
        let store = Arc::new(EmbeddedStore::open(text("store")).expect("the books"));
        let on_event = |event: &PluginEvent| match event {
            PluginEvent::MoneySent { account, .. } | PluginEvent::MoneyReceived { account, .. } => {
                say("event", json!({ "account": account }))
            }
            _ => {}
        };
        let plugin = if text("role") == "hub" {
            let listen: SocketAddr = text("listen").parse().expect("listen address");
            let hub = Arc::new(
                LightningPlugin::server(listen, Address::new("test.hub").unwrap())
                    .lightning(node)
                    .store(store.clone())
                    .token_store(store.clone())
                    .settlement_options(SettlementOptions {
                        credit_limit: Some(HUB_CREDIT_SAT),
                        invoice_stock: INVOICE_STOCK,
                        payment_timeout: Duration::from_secs(10),
                        ..SettlementOptions::server()
                    })
                    .on_event(on_event)
                    .build()
                    .expect("hub builds"),
            );
            route_between_clients(&hub).unwrap();
            hub
        } else {
            let client = Arc::new(
                LightningPlugin::client(&text("server"))
                    .lightning(node)
                    .store(store.clone())
                    .settlement_options(client_options())
                    .on_event(on_event)
                    .build()
                    .expect("client builds"),
            );
            client.register_data_handler(fulfil_by_data).unwrap();
            client
        };
        plugin.register_money_handler(|_| Ok(())).unwrap();
        plugin.connect().expect("the plugin starts");
        // A client prefunds again and again, each time as soon as the last payment is done.
        let (quiet, quieted) = crossbeam_channel::bounded::<()>(0);
        let prefunds = matches!(plugin.role(), Role::Client { .. }).then(|| {
            let plugin = plugin.clone();
            std::thread::Builder::new()
                .name("crash-child-prefunds".into())
                .spawn(move || loop {
                    // A failed payment is tried again a little later, not in a tight loop.
                    let pause = match plugin.send_money(PREFUND_SAT) {
                        Ok(()) => Duration::ZERO,
                        Err(_) => Duration::from_millis(100),
                    };
                    if !matches!(quieted.recv_timeout(pause), Err(RecvTimeoutError::Timeout)) {
                        return;
                    }
                })
                .expect("prefund thread")
        });
        let mut quiet = Some(quiet);
        let mut prefunds = prefunds;
        say("ready", json!({}));
        for line in std::io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("books") => say("books", books_json(&*store)),
                Ok("quiet") => {
                    quiet.take();
                    if let Some(thread) = prefunds.take() {
                        thread.join().expect("prefund thread");
                    }
                    say("quiet", json!({}));
                }
                Ok("stop") | Err(_) => break,
                Ok(_) => {}
            }
        }
        drop(quiet);
        plugin.disconnect();
        if let Some(thread) = prefunds {
            thread.join().expect("prefund thread");
        }
        say("stopped", json!({}));
    }

    fn node_from_files(dir: &Path) -> GrpcLightning {
        let node_file: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("node.json")).expect("node.json"),
        )
        .expect("node.json is JSON");
        let grpc = node_file["grpc"].as_str().expect("grpc address");
        let (host, port) = grpc.rsplit_once(':').expect("host:port");
        GrpcLightning::builder()
            .host(host)
            .port(port.parse().expect("port"))
            .tls_cert_path(dir.join("tls.cert"))
            .macaroon_path(dir.join("admin.macaroon"))
            .call_timeout(Duration::from_secs(10))
            .max_reconnect_backoff(Duration::from_millis(500))
            .connect()
            .expect("the node")
    }

    /// The receivers' test convention: a Prepare whose `data` is its fulfillment is fulfilled.
    fn fulfil_by_data(bytes: &[u8]) -> Result<Vec<u8>, HandlerError> {
        let prepare = Prepare::parse(bytes).map_err(|e| HandlerError::Final(e.to_string()))?;
        let fulfillment: [u8; 32] = prepare
            .data()
            .try_into()
            .map_err(|_| HandlerError::Final("data is not a fulfillment".into()))?;
        Ok(common::ilp::fulfill(&fulfillment, b""))
    }
}

/// The child process.
struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<(String, Value)>,
    reader: Option<JoinHandle<()>>,
}

impl ChildProcess {
    fn spawn(config: &Value, activity: Sender<()>) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("own test binary"))
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the hub process");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = unbounded();
        let reader = std::thread::Builder::new()
            .name("crash-child-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    // libtest may have begun the line ("test crash_child ... ").
                    let Some(at) = line.find(LINE_PREFIX) else {
                        continue;
                    };
                    let rest = &line[at + LINE_PREFIX.len()..];
                    let (kind, body) = rest.split_once(' ').unwrap_or((rest, "null"));
                    let body = serde_json::from_str(body).unwrap_or(Value::Null);
                    let _ = activity.send(());
                    if tx.send((kind.to_owned(), body)).is_err() {
                        return;
                    }
                }
            })
            .expect("reader thread");
        ChildProcess {
            stdin: child.stdin.take(),
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The next line of `kind` (others are skipped); panics if the process ends or `WAIT`
    /// passes first.
    fn wait_for(&self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok((k, body)) if k == kind => return body,
                Ok(_) => {}
                Err(e) => panic!("the hub process said no {kind:?} ({e:?})"),
            }
        }
    }

    fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the hub process");
        stdin.flush().expect("flush");
    }

    /// The hub's books as it has them now.
    fn books(&mut self) -> Value {
        self.command("books");
        self.wait_for("books")
    }

    /// Asks a client to stop prefunding, and waits until it did.
    fn quiet(&mut self) {
        self.command("quiet");
        self.wait_for("quiet");
    }

    /// SIGKILL, then reap it.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the hub");
        self.reap();
    }

    /// Asks it to disconnect and exit, and waits for it.
    fn stop(mut self) -> ExitStatus {
        self.command("stop");
        self.wait_for("stopped");
        self.stdin.take();
        self.reap()
    }

    fn reap(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("wait for the hub process");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("reader thread");
        }
        status
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            self.reap();
        }
    }
}

/// A small random generator (xorshift64*): the kill points of a run follow from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "ilp-lightning-crash-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Packet `nonce`'s fulfillment: unique per packet, and carried in its `data` (the receivers'
/// test convention).
fn fulfillment_of(nonce: u64) -> [u8; 32] {
    let mut f = [0x5a; 32];
    f[..8].copy_from_slice(&nonce.to_be_bytes());
    f
}

fn nonce_of(fulfillment: &[u8; 32]) -> u64 {
    u64::from_be_bytes(fulfillment[..8].try_into().unwrap())
}

/// What the packet sender saw, per packet.
#[derive(Default)]
struct Sent {
    fulfilled: BTreeSet<u64>,
    /// Packets that got no Fulfill for a reason other than the hub's credit check: cut by a
    /// kill, or refused while a client was away. The hub may have forwarded them.
    interrupted: BTreeSet<u64>,
    refused_t04: u64,
}

/// A client of the hub at `port` settling over `node`, with its own events.
fn client(
    name: &str,
    port: u16,
    node: &ilp_plugin_lightning::lnd::sim::SimNode,
    activity: Sender<()>,
) -> (LightningPlugin, Receiver<PluginEvent>) {
    let (tx, events) = unbounded();
    let plugin =
        LightningPlugin::client(&format!("btp+ws://{name}:secret-{name}@127.0.0.1:{port}"))
            .lightning(node_client(node))
            .settlement_options(client_options())
            .on_event(move |e| {
                let _ = tx.send(e.clone());
                let _ = activity.send(());
            })
            .build()
            .expect("client builds");
    plugin.connect().expect("client connects");
    (plugin, events)
}

/// A client's traffic: packets to `destination` through the hub until told to stop. Each
/// Fulfill is reported on `fulfills`.
fn drive(
    sender: &LightningPlugin,
    destination: &str,
    events: &Receiver<PluginEvent>,
    sent: &Mutex<Sent>,
    stop: &AtomicBool,
    fulfills: &Sender<u64>,
) {
    let mut nonce = 0u64;
    while !stop.load(Ordering::SeqCst) {
        nonce += 1;
        let fulfillment = fulfillment_of(nonce);
        let packet =
            common::ilp::prepare(&fulfillment, destination, PACKET_SAT, 30_000, &fulfillment);
        let reply = sender.send_data(&packet);
        let outcome = match &reply {
            Ok(bytes) => match Packet::parse(bytes) {
                Ok(Packet::Fulfill(_)) => Some(true),
                Ok(Packet::Reject(r)) if r.code().as_str() == "T04" => None,
                _ => Some(false),
            },
            Err(_) => Some(false),
        };
        match outcome {
            Some(true) => {
                sent.lock().fulfilled.insert(nonce);
                let _ = fulfills.send(nonce);
                continue;
            }
            Some(false) => {
                sent.lock().interrupted.insert(nonce);
            }
            None => sent.lock().refused_t04 += 1,
        }
        // Refused: the sender's settlement pays on T04, or the hub or receiver is away. Go on
        // at the next thing that happens to the sender (a payment booked, a reconnect), or
        // after a while.
        if let Err(RecvTimeoutError::Disconnected) = events.recv_timeout(Duration::from_secs(1)) {
            return;
        }
    }
}

/// Where the hub is killed.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// While its payment to bob is in flight (held by its node); the payment then succeeds or
    /// fails while it is down, or after it is back.
    Paying(Release, bool),
    /// While alice's payment to it is in flight; it lands (or fails) while the hub is down.
    BeingPaid(Release),
    /// After `n` more packets went through, plus a random fraction of a millisecond.
    AfterPackets(u64, u64),
    /// While it starts up (resolving what the last run left), `n` ms after it was started.
    Starting(u64),
}

fn pick(rng: &mut Rng) -> KillPoint {
    let release = |rng: &mut Rng| {
        if rng.below(3) == 0 {
            Release::Fail(FailureReason::NoRoute)
        } else {
            Release::Forward
        }
    };
    match rng.below(10) {
        0..=2 => KillPoint::Paying(release(rng), rng.below(2) == 0),
        3..=4 => KillPoint::BeingPaid(release(rng)),
        5 => KillPoint::Starting(rng.below(400)),
        _ => KillPoint::AfterPackets(1 + rng.below(8), rng.below(1000)),
    }
}

fn book(books: &Value, account: &str, field: &str) -> i128 {
    books["accounts"][account][field]
        .as_i64()
        .map(i128::from)
        .unwrap_or(0)
}

fn own_book(plugin: &LightningPlugin) -> AccountBook {
    plugin
        .settlement()
        .unwrap()
        .account(PEER_ACCOUNT)
        .expect("client books")
}

/// Checks that every payment `payer`'s node made that succeeded paid an invoice the payee
/// issued to `account` and credited.
fn credited(
    payer: &ilp_plugin_lightning::lnd::sim::SimNode,
    payee_store: &dyn Store,
    account: &str,
) {
    let mut hashes = HashSet::new();
    for payment in payer.payments() {
        if payment.status != ilp_plugin_lightning::lnd::sim::SentStatus::Succeeded {
            continue;
        }
        assert!(hashes.insert(payment.payment_hash));
        let issued = payee_store
            .invoice(&PaymentHash(payment.payment_hash))
            .unwrap()
            .unwrap_or_else(|| panic!("{} paid an invoice nobody issued", payer.name()));
        assert_eq!(issued.account, account);
        assert_eq!(issued.state, IssuedState::Paid);
    }
}

/// Why the network is not settled yet, or `None` once it is: nothing in flight anywhere, the
/// hub owes bob nothing, and each side credited what the other paid.
fn unsettled(hub_books: &Value, alice: &LightningPlugin, bob: &LightningPlugin) -> Option<String> {
    let alice_side = own_book(alice);
    let bob_side = own_book(bob);
    let alice_open = alice.settlement().unwrap().store().open_payments().unwrap();
    if hub_books["open_payments"].as_u64() != Some(0) {
        return Some(format!("hub has open payments: {hub_books}"));
    }
    if !alice_open.is_empty() {
        return Some(format!("alice has open payments: {alice_open:?}"));
    }
    if book(hub_books, "bob", "payable") != 0 {
        return Some(format!("hub still owes bob: {hub_books}"));
    }
    if book(hub_books, "alice", "received") != alice_side.paid_msat as i128 {
        return Some(format!(
            "hub credited {} of alice's {} msat",
            book(hub_books, "alice", "received"),
            alice_side.paid_msat
        ));
    }
    if book(hub_books, "bob", "paid") != bob_side.received_msat as i128 {
        return Some(format!(
            "bob credited {} of the hub's {} msat",
            bob_side.received_msat,
            book(hub_books, "bob", "paid")
        ));
    }
    None
}

/// The child a crash test kills again and again, and what happens around each kill.
struct Victim<'a> {
    /// "hub" or "carol", for the messages.
    name: &'static str,
    config: &'a Value,
    activity: &'a Sender<()>,
    /// Its own node: [`KillPoint::Paying`] holds the payment it makes.
    own_node: &'a SimNode,
    /// The node that pays it: [`KillPoint::BeingPaid`] holds that payment.
    payer_node: &'a SimNode,
    /// Who it pays, and who pays it, for the messages.
    payee: &'static str,
    payer: &'static str,
}

/// Kills `child` at `kills` points `rng` picks, each time once the point is reached, then starts
/// it again and waits until it is ready; the child running at the end, and the points.
/// `before_being_paid` runs before a payment to it is held; `after_restart` once it is back.
fn kill_again_and_again(
    victim: &Victim<'_>,
    mut child: ChildProcess,
    kills: u64,
    rng: &mut Rng,
    fulfilled_rx: &Receiver<u64>,
    mut before_being_paid: impl FnMut(&mut ChildProcess),
    mut after_restart: impl FnMut(),
) -> (ChildProcess, Vec<KillPoint>) {
    let Victim { name, .. } = *victim;
    let mut points = Vec::new();
    for kill in 0..kills {
        let point = pick(rng);
        log::info!("{name} crash test: kill {kill} at {point:?}");
        points.push(point);
        let mut release_after_restart = None;
        match point {
            KillPoint::Paying(release, after_restart) => {
                victim.own_node.hold_payments(true);
                victim
                    .own_node
                    .wait_for_held_payments(1, WAIT)
                    .unwrap_or_else(|| panic!("kill {kill}: {name} paid {} nothing", victim.payee));
                child.kill();
                victim.own_node.hold_payments(false);
                if after_restart {
                    release_after_restart = Some(release);
                } else {
                    victim.own_node.release_held_payments(release);
                }
            }
            KillPoint::BeingPaid(release) => {
                before_being_paid(&mut child);
                victim.payer_node.hold_payments(true);
                victim
                    .payer_node
                    .wait_for_held_payments(1, WAIT)
                    .unwrap_or_else(|| panic!("kill {kill}: {} paid {name} nothing", victim.payer));
                child.kill();
                victim.payer_node.hold_payments(false);
                victim.payer_node.release_held_payments(release);
            }
            KillPoint::AfterPackets(n, micros) => {
                while fulfilled_rx.try_recv().is_ok() {}
                for _ in 0..n {
                    fulfilled_rx
                        .recv_timeout(WAIT)
                        .unwrap_or_else(|_| panic!("kill {kill}: no packet went through"));
                }
                // Not a synchronisation: a random moment within whatever it does next.
                std::thread::sleep(Duration::from_micros(micros));
                child.kill();
            }
            KillPoint::Starting(millis) => {
                child.kill();
                let starting = ChildProcess::spawn(victim.config, victim.activity.clone());
                // Not a synchronisation: a random moment of the start-up.
                std::thread::sleep(Duration::from_millis(millis));
                starting.kill();
            }
        }
        child = ChildProcess::spawn(victim.config, victim.activity.clone());
        child.wait_for("ready");
        after_restart();
        if let Some(release) = release_after_restart {
            victim.own_node.release_held_payments(release);
        }
    }
    eprintln!("{name} crash test kill points: {points:?}");
    (child, points)
}

fn reconnect(plugin: &LightningPlugin) {
    plugin.disconnect();
    plugin.connect().expect("client reconnects");
}

#[test]
fn a_hub_killed_at_random_points_of_settlement_loses_creates_and_pays_twice_nothing() {
    let kills = env_number("CRASH_KILLS", 30);
    let seed = env_number(
        "CRASH_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    )
    .max(1);
    let _ = env_logger::builder().is_test(true).try_init();
    eprintln!("crash test: {kills} kills, CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let sim = network(&["hub", "alice", "bob"]);
    let before = sim.channel_balances();
    let hub_node = sim.node("hub").unwrap();
    let alice_node = sim.node("alice").unwrap();
    let bob_node = sim.node("bob").unwrap();
    let hub_local_before = hub_node.local_balance_msat();
    let dir = temp_dir();
    hub_node.write_files(&dir.join("hub-node")).unwrap();
    let port = free_port();
    let config = json!({
        "node_dir": dir.join("hub-node"),
        "store": dir.join("hub-books"),
        "listen": format!("127.0.0.1:{port}"),
        "role": "hub",
    });
    let (activity, activity_rx) = unbounded::<()>();

    let hub = ChildProcess::spawn(&config, activity.clone());
    hub.wait_for("ready");

    let (alice, alice_events) = client("alice", port, alice_node, activity.clone());
    let (bob, _bob_events) = client("bob", port, bob_node, activity.clone());
    let bob_fulfilled = Arc::new(Mutex::new(BTreeSet::new()));
    let bob_money = Arc::new(Mutex::new(Vec::new()));
    {
        let fulfilled = bob_fulfilled.clone();
        bob.register_data_handler(move |bytes| {
            let prepare = Prepare::parse(bytes).map_err(|e| HandlerError::Final(e.to_string()))?;
            let fulfillment: [u8; 32] = prepare
                .data()
                .try_into()
                .map_err(|_| HandlerError::Final("data is not a fulfillment".into()))?;
            fulfilled.lock().insert(nonce_of(&fulfillment));
            Ok(common::ilp::fulfill(&fulfillment, b""))
        })
        .unwrap();
        let money = bob_money.clone();
        bob.register_money_handler(move |amount| {
            money.lock().push(amount);
            Ok(())
        })
        .unwrap();
    }
    alice.send_money(30).expect("alice prefunds");

    let alice = Arc::new(alice);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (fulfills, fulfilled_rx) = unbounded();
    let driver = {
        let (alice, sent, stop) = (alice.clone(), sent.clone(), stop.clone());
        std::thread::Builder::new()
            .name("crash-traffic".into())
            .spawn(move || {
                drive(
                    &alice,
                    "test.hub.bob",
                    &alice_events,
                    &sent,
                    &stop,
                    &fulfills,
                )
            })
            .unwrap()
    };

    let victim = Victim {
        name: "hub",
        config: &config,
        activity: &activity,
        own_node: hub_node,
        payer_node: alice_node,
        payee: "bob",
        payer: "alice",
    };
    let (mut hub, _points) = kill_again_and_again(
        &victim,
        hub,
        kills,
        &mut rng,
        &fulfilled_rx,
        |_| {},
        || {
            reconnect(&alice);
            reconnect(&bob);
        },
    );

    stop.store(true, Ordering::SeqCst);
    driver.join().expect("traffic thread");
    // Nothing is held any more; let the hub finish what it owes and credit what it was paid.
    assert_eq!(hub_node.held_payments(), Vec::<[u8; 32]>::new());
    assert_eq!(alice_node.held_payments(), Vec::<[u8; 32]>::new());
    let deadline = Instant::now() + WAIT;
    loop {
        let books = hub.books();
        let Some(why) = unsettled(&books, &alice, &bob) else {
            break;
        };
        // Asking for the books is activity too: the deadline must not depend on quiet.
        let timed_out = Instant::now() >= deadline || activity_rx.recv_deadline(deadline).is_err();
        assert!(
            !timed_out,
            "settlement did not finish after the last restart: {why}"
        );
        while activity_rx.try_recv().is_ok() {}
    }
    let last_books = hub.books();
    assert!(hub.stop().success(), "the hub exits cleanly when asked");

    // The books as the hub left them on disk.
    let store = EmbeddedStore::open(dir.join("hub-books")).expect("the hub's books reopen");
    assert_eq!(child::books_json(&store), last_books);
    let hub_alice = store.account("alice").unwrap();
    let hub_bob = store.account("bob").unwrap();
    let alice_side = own_book(&alice);
    let bob_side = own_book(&bob);
    let after = sim.channel_balances();
    let sent = sent.lock();
    let bob_fulfilled = bob_fulfilled.lock().clone();
    let amount = |set: &BTreeSet<u64>| u128::from(PACKET_SAT) * 1000 * set.len() as u128;
    eprintln!(
        "crash test: {} packets fulfilled, {} interrupted, {} T04; hub paid bob {} msat in {} \
         payments, alice paid the hub {} msat in {}",
        sent.fulfilled.len(),
        sent.interrupted.len(),
        sent.refused_t04,
        hub_bob.paid_msat,
        hub_bob.payments,
        alice_side.paid_msat,
        alice_side.payments
    );
    assert!(
        sent.fulfilled.len() as u64 >= kills,
        "too little traffic to mean anything"
    );
    assert!(hub_bob.payments > 0 && alice_side.payments > 0);

    // What moved on each channel is what both sides booked.
    assert_eq!(
        moved_msat(&before, &after, "alice", "hub"),
        alice_side.paid_msat as i128
    );
    assert_eq!(alice_side.paid_msat, hub_alice.received_msat);
    assert_eq!(
        moved_msat(&before, &after, "hub", "bob"),
        hub_bob.paid_msat as i128
    );
    assert_eq!(hub_bob.paid_msat, bob_side.received_msat);
    assert_eq!(moved_msat(&before, &after, "alice", "bob"), 0);
    assert_eq!(
        i128::from(hub_node.local_balance_msat()) - i128::from(hub_local_before),
        hub_alice.received_msat as i128 - hub_bob.paid_msat as i128 - hub_bob.fees_msat as i128
    );

    // Every payment the nodes made is booked once; nothing is in flight.
    assert_eq!(
        sim_paid(hub_node, "bob"),
        (hub_bob.payments, hub_bob.paid_msat, hub_bob.fees_msat)
    );
    assert_eq!(
        sim_paid(alice_node, "hub"),
        (
            alice_side.payments,
            alice_side.paid_msat,
            alice_side.fees_msat
        )
    );
    assert_eq!(sim_paid(alice_node, "bob").0, 0);
    assert_eq!(sim_paid(bob_node, "hub").0, 0);

    // Every invoice paid is credited once, to the account it was issued to.
    assert_eq!(hub_alice.receipts, alice_side.payments);
    assert_eq!(bob_side.receipts, hub_bob.payments);
    credited(alice_node, &store, "alice");
    credited(hub_node, &**bob.settlement().unwrap().store(), PEER_ACCOUNT);
    assert!(store.pending_receipts().unwrap().is_empty());
    let money = bob_money.lock();
    assert_eq!(money.len() as u64, bob_side.receipts);
    assert_eq!(
        u128::from(money.iter().sum::<u64>()) * 1000,
        bob_side.received_msat
    );

    // Nothing owed is forgotten. Alice and bob never crashed: their books hold every packet.
    assert_eq!(
        alice_side.payable_msat + alice_side.paid_msat as i128,
        amount(&sent.fulfilled) as i128
    );
    assert_eq!(alice_side.paying_msat, 0);
    assert_eq!(
        bob_side.receivable_msat + bob_side.received_msat as i128,
        amount(&bob_fulfilled) as i128
    );
    // Bob fulfilled every packet alice saw fulfilled; the others he fulfilled were cut short
    // by a kill on their way back.
    assert!(sent.fulfilled.is_subset(&bob_fulfilled));
    let lost_on_the_way: BTreeSet<u64> =
        bob_fulfilled.difference(&sent.fulfilled).copied().collect();
    assert!(
        lost_on_the_way.is_subset(&sent.interrupted),
        "bob fulfilled packets alice neither saw fulfilled nor lost: {:?}",
        lost_on_the_way.difference(&sent.interrupted)
    );
    // The hub owes bob for every Fulfill it passed back to alice and paid all of it; at most
    // what bob fulfilled.
    assert_eq!((hub_bob.payable_msat, hub_bob.paying_msat), (0, 0));
    assert!(hub_bob.paid_msat >= amount(&sent.fulfilled));
    assert!(hub_bob.paid_msat <= amount(&bob_fulfilled));
    // Alice owes the hub for every Fulfill she received, and at most for those it sent.
    let hub_alice_owed = hub_alice.receivable_msat + hub_alice.received_msat as i128;
    assert!(hub_alice_owed >= amount(&sent.fulfilled) as i128);
    let sent_or_cut: BTreeSet<u64> = sent.fulfilled.union(&sent.interrupted).copied().collect();
    assert!(hub_alice_owed <= amount(&sent_or_cut) as i128);
    assert_eq!(hub_alice.reserved_msat, 0);
    assert_eq!(store.open_payments().unwrap(), Vec::new());

    drop(store);
    drop(bob);
    drop(alice);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Why a client in a child process and its hub are not settled yet, or `None` once they are.
fn client_unsettled(
    client_books: &Value,
    hub: &LightningPlugin,
    bob: &LightningPlugin,
) -> Option<String> {
    let settlement = hub.settlement().unwrap();
    let hub_open = settlement.store().open_payments().unwrap();
    let bob_open = bob.settlement().unwrap().store().open_payments().unwrap();
    let hub_carol = settlement.account("carol").unwrap();
    let hub_bob = settlement.account("bob").unwrap();
    if client_books["open_payments"].as_u64() != Some(0) {
        return Some(format!("carol has open payments: {client_books}"));
    }
    if !hub_open.is_empty() || !bob_open.is_empty() {
        return Some(format!("open payments: hub {hub_open:?}, bob {bob_open:?}"));
    }
    if hub_carol.payable_msat != 0 {
        return Some(format!("hub still owes carol: {hub_carol:?}"));
    }
    if book(client_books, PEER_ACCOUNT, "paid") != hub_carol.received_msat as i128 {
        return Some(format!(
            "hub credited {} of carol's {client_books}",
            hub_carol.received_msat
        ));
    }
    if book(client_books, PEER_ACCOUNT, "received") != hub_carol.paid_msat as i128 {
        return Some(format!(
            "carol credited {client_books} of the hub's {} msat",
            hub_carol.paid_msat
        ));
    }
    if own_book(bob).paid_msat != hub_bob.received_msat {
        return Some("the hub has not credited all of bob's payments".into());
    }
    None
}

#[test]
fn a_client_killed_at_random_points_of_settlement_loses_creates_and_pays_twice_nothing() {
    let kills = env_number("CRASH_KILLS", 30);
    let seed = env_number(
        "CRASH_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    )
    .max(1);
    let _ = env_logger::builder().is_test(true).try_init();
    eprintln!("client crash test: {kills} kills, CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let sim = network(&["hub", "carol", "bob"]);
    let before = sim.channel_balances();
    let hub_node = sim.node("hub").unwrap();
    let carol_node = sim.node("carol").unwrap();
    let bob_node = sim.node("bob").unwrap();
    let (activity, activity_rx) = unbounded::<()>();

    // The hub, in this process: it pays carol after each packet she fulfils.
    let hub = {
        let activity = activity.clone();
        Arc::new(
            LightningPlugin::server(
                "127.0.0.1:0".parse().unwrap(),
                Address::new("test.hub").unwrap(),
            )
            .lightning(node_client(hub_node))
            .settlement_options(SettlementOptions {
                credit_limit: Some(HUB_CREDIT_SAT),
                invoice_stock: INVOICE_STOCK,
                payment_timeout: Duration::from_secs(10),
                ..SettlementOptions::server()
            })
            .on_event(move |_| {
                let _ = activity.send(());
            })
            .build()
            .expect("hub builds"),
        )
    };
    route_between_clients(&hub).unwrap();
    hub.connect().expect("hub listens");
    hub.register_money_handler(|_| Ok(())).unwrap();
    let port = hub.local_addr().unwrap().port();

    // Carol, in a child process: she prefunds again and again and fulfils bob's packets.
    let dir = temp_dir();
    carol_node.write_files(&dir.join("carol-node")).unwrap();
    let config = json!({
        "node_dir": dir.join("carol-node"),
        "store": dir.join("carol-books"),
        "server": format!("btp+ws://carol:secret-carol@127.0.0.1:{port}"),
        "role": "client",
    });
    let carol = ChildProcess::spawn(&config, activity.clone());
    carol.wait_for("ready");

    // Bob sends carol packets through the hub.
    let (bob, bob_events) = client("bob", port, bob_node, activity.clone());
    let bob = Arc::new(bob);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (fulfills, fulfilled_rx) = unbounded();
    let driver = {
        let (bob, sent, stop) = (bob.clone(), sent.clone(), stop.clone());
        std::thread::Builder::new()
            .name("crash-traffic".into())
            .spawn(move || drive(&bob, "test.hub.carol", &bob_events, &sent, &stop, &fulfills))
            .unwrap()
    };

    // Paying: carol's own payment is held; BeingPaid: the hub's payment to her is.
    let victim = Victim {
        name: "carol",
        config: &config,
        activity: &activity,
        own_node: carol_node,
        payer_node: hub_node,
        payee: "the hub",
        payer: "the hub",
    };
    let (mut carol, _points) = kill_again_and_again(
        &victim,
        carol,
        kills,
        &mut rng,
        &fulfilled_rx,
        // While carol prefunds faster than bob's packets earn her money, the hub never owes
        // her anything; quiet, she is owed after a few packets and the hub pays.
        ChildProcess::quiet,
        || {},
    );

    stop.store(true, Ordering::SeqCst);
    driver.join().expect("traffic thread");
    carol.quiet();
    assert_eq!(hub_node.held_payments(), Vec::<[u8; 32]>::new());
    assert_eq!(carol_node.held_payments(), Vec::<[u8; 32]>::new());
    let deadline = Instant::now() + WAIT;
    loop {
        let books = carol.books();
        let Some(why) = client_unsettled(&books, &hub, &bob) else {
            break;
        };
        // Asking for the books is activity too: the deadline must not depend on quiet.
        let timed_out = Instant::now() >= deadline || activity_rx.recv_deadline(deadline).is_err();
        assert!(
            !timed_out,
            "settlement did not finish after the last restart: {why}"
        );
        while activity_rx.try_recv().is_ok() {}
    }
    let last_books = carol.books();
    assert!(carol.stop().success(), "carol exits cleanly when asked");

    let store = EmbeddedStore::open(dir.join("carol-books")).expect("carol's books reopen");
    assert_eq!(child::books_json(&store), last_books);
    let carol_side = store.account(PEER_ACCOUNT).unwrap();
    let settlement = hub.settlement().unwrap();
    let hub_carol = settlement.account("carol").unwrap();
    let after = sim.channel_balances();
    let sent = sent.lock();
    let amount = |set: &BTreeSet<u64>| u128::from(PACKET_SAT) * 1000 * set.len() as u128;
    eprintln!(
        "client crash test: {} packets fulfilled, {} interrupted; carol paid the hub {} msat in \
         {} payments, the hub paid her {} msat in {}",
        sent.fulfilled.len(),
        sent.interrupted.len(),
        carol_side.paid_msat,
        carol_side.payments,
        hub_carol.paid_msat,
        hub_carol.payments
    );
    assert!(sent.fulfilled.len() as u64 >= kills);
    assert!(carol_side.payments > 0 && hub_carol.payments > 0);

    // What moved between carol and the hub is what both booked, both ways.
    let net = carol_side.paid_msat as i128 - carol_side.received_msat as i128;
    assert_eq!(moved_msat(&before, &after, "carol", "hub"), net);
    assert_eq!(
        net,
        hub_carol.received_msat as i128 - hub_carol.paid_msat as i128
    );
    assert_eq!(carol_side.paid_msat, hub_carol.received_msat);
    assert_eq!(carol_side.received_msat, hub_carol.paid_msat);
    assert_eq!(
        sim_paid(carol_node, "hub"),
        (
            carol_side.payments,
            carol_side.paid_msat,
            carol_side.fees_msat
        )
    );
    assert_eq!(
        sim_paid(hub_node, "carol"),
        (hub_carol.payments, hub_carol.paid_msat, hub_carol.fees_msat)
    );
    assert_eq!(hub_carol.receipts, carol_side.payments);
    assert_eq!(carol_side.receipts, hub_carol.payments);
    credited(carol_node, &**settlement.store(), "carol");
    credited(hub_node, &store, PEER_ACCOUNT);
    assert!(store.pending_receipts().unwrap().is_empty());

    // Carol owes nothing for packets: every payment of hers is a prefund, booked once.
    assert_eq!(
        carol_side.payable_msat + carol_side.paid_msat as i128,
        0,
        "{carol_side:?}"
    );
    assert_eq!(carol_side.paying_msat, 0);
    // The hub, which never crashed, owes carol exactly the packets it passed back to bob, and
    // paid all of it.
    assert_eq!((hub_carol.payable_msat, hub_carol.paying_msat), (0, 0));
    assert_eq!(hub_carol.paid_msat, amount(&sent.fulfilled));
    // Carol booked every packet she fulfilled that reached bob, and at most those bob sent.
    let carol_owed = carol_side.receivable_msat + carol_side.received_msat as i128;
    assert!(carol_owed >= amount(&sent.fulfilled) as i128);
    let sent_or_cut: BTreeSet<u64> = sent.fulfilled.union(&sent.interrupted).copied().collect();
    assert!(carol_owed <= amount(&sent_or_cut) as i128);
    assert_eq!(store.open_payments().unwrap(), Vec::new());

    drop(store);
    drop(bob);
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}
