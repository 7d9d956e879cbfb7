//! `ilp-lightning demo`: everything in one process, on a simulated Lightning network. A hub and
//! N clients, each with its own simulated LND node reached over gRPC and TLS; the clients'
//! nodes and the hub's are linked through a routing node that charges LND's default fee. The
//! clients prefund over Lightning, stream test packets to each other through the hub, the hub
//! pays the receivers; then every book is checked against what moved on the channels.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use ilp_plugin_lightning::ilp::{Address, Packet};
use ilp_plugin_lightning::lnd::grpc::GrpcLightning;
use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, SimNetwork, SimNode};
use ilp_plugin_lightning::plugin::{
    route_between_clients, test_packets, LightningPlugin, PluginEvent, PEER_ACCOUNT,
};
use ilp_plugin_lightning::settlement::store::AccountBook;
use ilp_plugin_lightning::settlement::EmbeddedStore;

use crate::flags::{command_options, FlagError, Flags};
use crate::json::Object;

/// The lines `ilp-lightning --help` shows.
pub const SUMMARY: &str =
    "  demo [--clients N] [--packets N] [--amount SAT] [--settle invoices|keysend]
                     a hub, clients, packets and Lightning settlement on a simulated
                     network, in one process; every balance reconciled (`demo --help`)";

fn usage() -> String {
    format!(
        "usage: ilp-lightning demo [--clients N] [--packets N] [--amount SAT]
                          [--settle invoices|keysend]

Runs, in one process, a simulated Lightning network (real gRPC + TLS nodes), a hub and N
clients, each with its own node; the clients' nodes reach the hub's through a routing node
that charges LND's default fee (1 sat + 1 ppm). Each client prefunds the hub over Lightning,
then streams test packets through the hub to the next client, {STREAMS} at a time; the hub pays
each receiver what it is owed after every Fulfill. Last, every book is checked: each node's channel
balance moved by what its books say it received, paid and paid in fees, the hub's books and
each client's mirror each other, and nothing is left owed or in flight.

With --settle invoices (the default) every node runs as LND does by default, without
--accept-keysend: the plugins pay each other's invoices, as the JS plugin does. With --settle
keysend the hub's and the clients' nodes accept keysend: the plugins agree on it (in their
ilpLightningSettlement sub-protocol) and pay by keysend, with no invoice at all.

Progress goes to stderr; last comes one JSON line on stdout:
  {{\"packets_fulfilled\":..,\"ilp_amount_sat\":..,\"lightning_settled_sat\":..,\"fees_msat\":..,
   \"balances_ok\":true,\"settle\":\"invoices\",\"settlements\":..,\"invoices_created\":..,
   \"invoices_open_at_end\":..,\"lnd_calls\":..,\"lnd_calls_per_settlement\":..,
   \"fulfill_to_received_ms\":{{\"median\":..,\"p99\":..}},...}}
(settlements: Lightning payments made; invoices_created and lnd_calls: AddInvoice and all gRPC
calls the plugins' nodes received, counted by the simulator; invoices_open_at_end: invoices
still open on those nodes when the plugins stopped; fulfill_to_received_ms: for each packet,
from the receiver's Fulfill to its books showing the hub's payment for it)
and the exit status is 0 only if every balance reconciles.

  --clients N     clients, {MIN_CLIENTS} to {MAX_CLIENTS} (default {DEFAULT_CLIENTS})
  --packets N     test packets each client sends (default {DEFAULT_PACKETS})
  --amount SAT    each packet's amount (default {DEFAULT_AMOUNT})
  --settle MODE   invoices (default) or keysend"
    )
}

const DEFAULT_CLIENTS: usize = 2;
const MIN_CLIENTS: usize = 2;
const MAX_CLIENTS: usize = 50;
const DEFAULT_PACKETS: u64 = 50;
const DEFAULT_AMOUNT: u64 = 10;
/// The hub's ILP address.
const HUB_ADDRESS: &str = "test.hub";
/// Packets each client has in flight at once.
const STREAMS: u64 = 4;
/// How long a test packet may take.
const PACKET_LIFETIME: Duration = Duration::from_secs(30);
/// How long each phase may take before the demo gives up; only a broken build waits this long.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];

/// How the demo's plugins settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// By invoice: the nodes do not accept keysend (LND's default).
    Invoices,
    /// By keysend: the plugins' nodes accept it.
    Keysend,
}

impl Settle {
    fn name(self) -> &'static str {
        match self {
            Settle::Invoices => "invoices",
            Settle::Keysend => "keysend",
        }
    }
}

/// The demo's settings, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    clients: usize,
    packets: u64,
    amount: u64,
    settle: Settle,
}

fn parse(args: &[String]) -> Result<Settings, FlagError> {
    let flags = Flags::parse(args, &["clients", "packets", "amount", "settle"])?;
    let settle = match flags.get("settle") {
        None | Some("invoices") => Settle::Invoices,
        Some("keysend") => Settle::Keysend,
        Some(other) => {
            return Err(FlagError(format!(
                "--settle {other:?}: invoices or keysend"
            )))
        }
    };
    let settings = Settings {
        clients: flags.parsed("clients")?.unwrap_or(DEFAULT_CLIENTS),
        packets: flags.parsed("packets")?.unwrap_or(DEFAULT_PACKETS),
        amount: flags.parsed("amount")?.unwrap_or(DEFAULT_AMOUNT),
        settle,
    };
    if !(MIN_CLIENTS..=MAX_CLIENTS).contains(&settings.clients) {
        return Err(FlagError(format!(
            "--clients {}: from {MIN_CLIENTS} to {MAX_CLIENTS}",
            settings.clients
        )));
    }
    if settings.packets == 0 || settings.amount == 0 {
        return Err(FlagError(
            "--packets and --amount must be at least 1".into(),
        ));
    }
    // What each client prefunds, in msat, must fit the simulated channels and the books.
    settings
        .prefund_sat()
        .and_then(|sat| sat.checked_mul(1000 * 64))
        .ok_or_else(|| FlagError("--packets times --amount is too large".into()))?;
    Ok(settings)
}

impl Settings {
    /// What each client pays the hub before it sends: all it will send.
    fn prefund_sat(&self) -> Option<u64> {
        self.packets.checked_mul(self.amount)
    }

    /// Channel capacity: room for every payment many times over.
    fn capacity_sat(&self) -> u64 {
        let needed = self.prefund_sat().unwrap_or(u64::MAX).saturating_mul(8);
        needed.max(1_000_000)
    }
}

fn client_name(index: usize) -> String {
    NAMES
        .get(index)
        .map(|n| (*n).to_owned())
        .unwrap_or_else(|| format!("client{}", index + 1))
}

/// What the demo's threads and the plugins' event handlers tell the main thread.
enum Note {
    Hub(PluginEvent),
    /// A client's plugin reported something (money in, money out): the books changed.
    Client,
    Reply {
        sender: usize,
        fulfilled: bool,
    },
    SenderDone,
}

/// One line on stderr, rewritten in place on a terminal.
struct Progress {
    tty: bool,
    started: Instant,
    last: Option<Instant>,
    pending: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            pending: false,
        }
    }

    fn stamp(&self) -> String {
        format!("demo {:5.1}s:", self.started.elapsed().as_secs_f64())
    }

    /// A status that changes often: shown at most ten times a second, on a terminal only.
    fn update(&mut self, text: &str) {
        if !self.tty
            || self
                .last
                .is_some_and(|at| at.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        self.pending = true;
        let stamp = self.stamp();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{stamp} {text}");
        let _ = err.flush();
    }

    /// A line that stays.
    fn line(&mut self, text: &str) {
        let stamp = self.stamp();
        let mut err = std::io::stderr().lock();
        if self.pending {
            let _ = write!(err, "\r\x1b[K");
            self.pending = false;
        }
        let _ = writeln!(err, "{stamp} {text}");
    }
}

/// A scratch directory for the books, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("ilp-lightning-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gRPC client of a simulated node, as any LND client would connect.
pub(crate) fn node_client(node: &SimNode) -> Result<Arc<GrpcLightning>, String> {
    GrpcLightning::builder()
        .host("127.0.0.1")
        .port(node.port())
        .tls_cert(node.tls_cert_pem())
        .macaroon(node.macaroon())
        .connect()
        .map(Arc::new)
        .map_err(|e| format!("cannot reach simulated node {}: {e}", node.name()))
}

fn open_store(scratch: &Scratch, name: &str) -> Result<Arc<EmbeddedStore>, String> {
    EmbeddedStore::open(scratch.0.join(name))
        .map(Arc::new)
        .map_err(|e| format!("cannot open the books of {name}: {e}"))
}

/// When each of a receiver's Fulfills came to be paid for: the Fulfills (their running total,
/// sat, and when) waiting for the money, and the waits of those paid.
#[derive(Default)]
struct PaidFor {
    fulfilled_sat: u64,
    received_sat: u64,
    waiting: std::collections::VecDeque<(u64, Instant)>,
    waits: Vec<Duration>,
}

impl PaidFor {
    /// The receiver fulfilled a packet of `amount`.
    fn fulfilled(&mut self, amount: u64) {
        self.fulfilled_sat = self.fulfilled_sat.saturating_add(amount);
        self.waiting.push_back((self.fulfilled_sat, Instant::now()));
    }

    /// The receiver's books show `amount` more received: every Fulfill it covers is paid for.
    fn received(&mut self, amount: u64) {
        self.received_sat = self.received_sat.saturating_add(amount);
        let now = Instant::now();
        while let Some((upto, at)) = self.waiting.front().copied() {
            if upto > self.received_sat {
                break;
            }
            self.waiting.pop_front();
            self.waits.push(now.saturating_duration_since(at));
        }
    }
}

/// The `share` quantile (0 to 1) of `waits`, in milliseconds (sorted in place).
fn quantile_ms(waits: &mut [Duration], share: f64) -> f64 {
    if waits.is_empty() {
        return f64::NAN;
    }
    waits.sort_unstable();
    let rank = ((waits.len() as f64) * share).ceil() as usize;
    let index = rank.clamp(1, waits.len()) - 1;
    waits[index].as_secs_f64() * 1000.0
}

/// One client of the demo.
struct Client {
    name: String,
    plugin: Arc<LightningPlugin>,
}

/// What a node's books and channels say at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Side {
    /// How much the node's channel balances moved, msat (up: it received more than it paid).
    moved_msat: i128,
    /// Its book of the other side (a client's of the hub; the hub's of that client).
    book: AccountBook,
}

/// One client as the reconciliation sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClientTally {
    /// The client's node and its book of the hub.
    client: Side,
    /// The hub's book of this client.
    hub_book: AccountBook,
    /// What the client sent that was fulfilled, sat.
    sent_sat: u64,
    /// What the client fulfilled, sat.
    received_sat: u64,
}

/// What the reconciliation checks, and its totals.
#[derive(Debug, Default)]
struct Reconciled {
    problems: Vec<String>,
    lightning_settled_msat: u128,
    lightning_payments: u64,
    fees_msat: u128,
}

/// The money a book says moved on its node's channels: received − paid − fees.
fn booked_flow(book: &AccountBook) -> i128 {
    let received = i128::try_from(book.received_msat).unwrap_or(i128::MAX);
    let paid = i128::try_from(book.paid_msat).unwrap_or(i128::MAX);
    let fees = i128::try_from(book.fees_msat).unwrap_or(i128::MAX);
    received.saturating_sub(paid).saturating_sub(fees)
}

/// Checks every book against the channels and against each other.
fn reconcile(
    clients: &[(String, ClientTally)],
    hub_moved_msat: i128,
    router_moved_msat: i128,
) -> Reconciled {
    let mut out = Reconciled::default();
    let mut problem = |text: String| out.problems.push(text);
    let mut hub_flow: i128 = 0;
    let mut all_fees: u128 = 0;
    let mut settled: u128 = 0;
    let mut payments: u64 = 0;
    for (name, tally) in clients {
        let mine = &tally.client.book;
        let hubs = &tally.hub_book;
        if tally.client.moved_msat != booked_flow(mine) {
            problem(format!(
                "{name}'s channels moved {} msat, its books say {}",
                tally.client.moved_msat,
                booked_flow(mine)
            ));
        }
        hub_flow = hub_flow.saturating_add(booked_flow(hubs));
        all_fees = all_fees
            .saturating_add(mine.fees_msat)
            .saturating_add(hubs.fees_msat);
        settled = settled
            .saturating_add(mine.paid_msat)
            .saturating_add(hubs.paid_msat);
        payments = payments
            .saturating_add(mine.payments)
            .saturating_add(hubs.payments);
        let mirror = [
            (
                "paid the hub",
                mine.paid_msat,
                "received from it",
                hubs.received_msat,
            ),
            (
                "received from the hub",
                mine.received_msat,
                "paid it",
                hubs.paid_msat,
            ),
        ];
        for (what, theirs, hub_what, hub) in mirror {
            if theirs != hub {
                problem(format!(
                    "{name} {what} {theirs} msat, the hub {hub_what} {hub} msat"
                ));
            }
        }
        if mine.payable_msat != hubs.receivable_msat || mine.receivable_msat != hubs.payable_msat {
            problem(format!(
                "{name} and the hub disagree on who owes what: {name} owes {} and is owed {}, \
                 the hub is owed {} and owes {} (msat)",
                mine.payable_msat, mine.receivable_msat, hubs.receivable_msat, hubs.payable_msat
            ));
        }
        // What the packets moved is what the books hold, net of Lightning.
        let sent = i128::from(tally.sent_sat) * 1000;
        let received = i128::from(tally.received_sat) * 1000;
        let hub_received = i128::try_from(hubs.received_msat).unwrap_or(i128::MAX);
        let hub_paid = i128::try_from(hubs.paid_msat).unwrap_or(i128::MAX);
        if hubs.receivable_msat != sent - hub_received {
            problem(format!(
                "{name} sent {sent} msat in packets and paid {hub_received}: the hub should be \
                 owed {}, its books say {}",
                sent - hub_received,
                hubs.receivable_msat
            ));
        }
        if hubs.payable_msat != received - hub_paid {
            problem(format!(
                "{name} took {received} msat in packets and was paid {hub_paid}: the hub should \
                 owe {}, its books say {}",
                received - hub_paid,
                hubs.payable_msat
            ));
        }
        if hubs.payable_msat != 0 {
            problem(format!(
                "the hub still owes {name} {} msat",
                hubs.payable_msat
            ));
        }
        for (whose, book) in [(name.as_str(), mine), ("the hub", hubs)] {
            if book.paying_msat != 0 || book.reserved_msat != 0 {
                problem(format!(
                    "{whose} has {} msat in flight and {} reserved",
                    book.paying_msat, book.reserved_msat
                ));
            }
        }
    }
    if hub_moved_msat != hub_flow {
        problem(format!(
            "the hub's channels moved {hub_moved_msat} msat, its books say {hub_flow}"
        ));
    }
    // Every payment crossed the routing node once: it earned exactly the fees booked.
    if router_moved_msat != i128::try_from(all_fees).unwrap_or(i128::MAX) {
        problem(format!(
            "the routing node earned {router_moved_msat} msat, the books paid {all_fees} msat in fees"
        ));
    }
    out.lightning_settled_msat = settled;
    out.lightning_payments = payments;
    out.fees_msat = all_fees;
    out
}

/// The network: a hub, a routing node, the clients; every client's node has a channel to the
/// router, and so has the hub's.
fn start_network(settings: &Settings, names: &[String]) -> Result<SimNetwork, String> {
    let capacity = settings.capacity_sat();
    let mut builder = SimNetwork::builder().node("hub").node("router").channel(
        "hub",
        "router",
        capacity.saturating_mul(names.len() as u64),
        ChannelPolicy::LND_DEFAULT,
    );
    for name in names {
        builder = builder
            .node(name)
            .channel(name, "router", capacity, ChannelPolicy::LND_DEFAULT);
    }
    if settings.settle == Settle::Keysend {
        builder = std::iter::once("hub")
            .chain(names.iter().map(String::as_str))
            .fold(builder, |b, name| b.accept_keysend(name));
    }
    builder
        .start()
        .map_err(|e| format!("cannot start the simulated network: {e}"))
}

fn local_balances(network: &SimNetwork) -> Vec<(String, i128)> {
    network
        .nodes()
        .iter()
        .map(|n| (n.name().to_owned(), i128::from(n.local_balance_msat())))
        .collect()
}

fn moved(before: &[(String, i128)], after: &[(String, i128)], name: &str) -> i128 {
    let find = |list: &[(String, i128)]| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| *b)
            .unwrap_or(0)
    };
    find(after) - find(before)
}

/// Calls `step` with nothing, then with every note, until it says the phase is over (`true`)
/// or fails; gives up after `PHASE_LIMIT`.
fn wait_until(
    notes: &Receiver<Note>,
    what: &str,
    mut step: impl FnMut(Option<Note>) -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + PHASE_LIMIT;
    if step(None)? {
        return Ok(());
    }
    loop {
        match notes.recv_deadline(deadline) {
            Ok(note) => {
                if step(Some(note))? {
                    return Ok(());
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("{what} did not happen within {PHASE_LIMIT:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => return Err(format!("{what}: nobody left")),
        }
    }
}

/// The end of a demo: its line, whether it reconciled, and the network, to be stopped after
/// the line is out (stopping gRPC servers can take a moment).
struct Finished {
    line: String,
    balances_ok: bool,
    network: SimNetwork,
}

/// Runs the demo.
fn demo(settings: &Settings, progress: &mut Progress) -> Result<Finished, String> {
    let started = Instant::now();
    let scratch = Scratch::new()?;
    let names: Vec<String> = (0..settings.clients).map(client_name).collect();
    let network = start_network(settings, &names)?;
    progress.line(&format!(
        "simulated Lightning network up: hub, router and {} clients ({})",
        names.len(),
        names.join(", ")
    ));
    let before = local_balances(&network);
    let (notes_tx, notes) = unbounded::<Note>();

    let hub_node = network.node("hub").ok_or("no hub node")?;
    let hub_store = open_store(&scratch, "hub")?;
    let hub_notes = notes_tx.clone();
    let hub = Arc::new(
        LightningPlugin::server(
            "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            Address::new(HUB_ADDRESS).map_err(|e| e.to_string())?,
        )
        .lightning(node_client(hub_node)?)
        .store(hub_store.clone())
        .token_store(hub_store)
        .on_event(move |e| {
            let _ = hub_notes.send(Note::Hub(e.clone()));
        })
        .build()
        .map_err(|e| e.to_string())?,
    );
    route_between_clients(&hub).map_err(|e| e.to_string())?;
    hub.register_money_handler(|_| Ok(()))
        .map_err(|e| e.to_string())?;
    hub.connect().map_err(|e| format!("hub: {e}"))?;
    let listen = hub.local_addr().ok_or("the hub does not listen")?;

    let mut clients = Vec::new();
    let received: Vec<Arc<std::sync::atomic::AtomicU64>> = (0..names.len())
        .map(|_| Arc::new(std::sync::atomic::AtomicU64::new(0)))
        .collect();
    let paid_for: Vec<Arc<parking_lot::Mutex<PaidFor>>> = (0..names.len())
        .map(|_| Arc::new(parking_lot::Mutex::new(PaidFor::default())))
        .collect();
    for (index, name) in names.iter().enumerate() {
        let node = network.node(name).ok_or("no client node")?;
        let mut token = [0u8; 16];
        let _ = getrandom::getrandom(&mut token);
        let uri = format!("btp+ws://{name}:{}@{listen}", hex::encode(token));
        let client_notes = notes_tx.clone();
        let paid = paid_for[index].clone();
        let plugin = Arc::new(
            LightningPlugin::client(&uri)
                .lightning(node_client(node)?)
                .store(open_store(&scratch, name)?)
                .on_event(move |event| {
                    // The client's books show it: called after the credit is durable.
                    if let PluginEvent::MoneyReceived { amount, .. } = event {
                        paid.lock().received(*amount);
                    }
                    let _ = client_notes.send(Note::Client);
                })
                .build()
                .map_err(|e| e.to_string())?,
        );
        let counter = received[index].clone();
        let paid = paid_for[index].clone();
        test_packets::receive(&plugin, move |amount| {
            counter.fetch_add(amount, std::sync::atomic::Ordering::Relaxed);
            paid.lock().fulfilled(amount);
        })
        .map_err(|e| e.to_string())?;
        plugin
            .register_money_handler(|_| Ok(()))
            .map_err(|e| e.to_string())?;
        plugin
            .connect()
            .map_err(|e| format!("{name} cannot connect: {e}"))?;
        clients.push(Client {
            name: name.clone(),
            plugin,
        });
    }

    // Prefund: each client pays the hub what it will send; the hub books it when its node
    // reports the invoice paid.
    let prefund = settings.prefund_sat().ok_or("prefund too large")?;
    let payers: Vec<_> = clients
        .iter()
        .map(|client| {
            let plugin = client.plugin.clone();
            let name = client.name.clone();
            std::thread::Builder::new()
                .name(format!("demo-prefund-{name}"))
                .spawn(move || {
                    plugin
                        .send_money(prefund)
                        .map_err(|e| format!("{name} cannot prefund: {e}"))
                })
                .map_err(|e| format!("cannot start a payer: {e}"))
        })
        .collect::<Result<_, _>>()?;
    for payer in payers {
        payer
            .join()
            .map_err(|_| "a prefund thread panicked".to_owned())??;
    }
    let mut prefunded = vec![0u64; clients.len()];
    wait_until(&notes, "the hub booking every prefund", |note| {
        if let Some(Note::Hub(PluginEvent::MoneyReceived { account, amount })) = note {
            if let Some(i) = names.iter().position(|n| *n == account) {
                prefunded[i] = prefunded[i].saturating_add(amount);
            }
        }
        Ok(prefunded.iter().all(|p| *p >= prefund))
    })?;
    progress.line(&format!(
        "{} clients prefunded the hub {prefund} sat each over Lightning",
        clients.len()
    ));

    // Stream: client i sends to client i+1 (the last to the first), all at once, each with
    // STREAMS packets in flight.
    let mut senders = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let to = format!("{HUB_ADDRESS}.{}", names[(index + 1) % names.len()]);
        for stream in 0..STREAMS {
            // The packets dealt out as evenly as they go.
            let share = settings.packets / STREAMS + u64::from(stream < settings.packets % STREAMS);
            let plugin = client.plugin.clone();
            let to = to.clone();
            let notes = notes_tx.clone();
            let amount = settings.amount;
            senders.push(
                std::thread::Builder::new()
                    .name(format!("demo-sender-{index}-{stream}"))
                    .spawn(move || send_packets(&plugin, index, &to, share, amount, &notes))
                    .map_err(|e| format!("cannot start a sender: {e}"))?,
            );
        }
    }
    let streams = senders.len();
    drop(notes_tx);
    let total_packets = settings.packets.saturating_mul(clients.len() as u64);
    let mut fulfilled = vec![0u64; clients.len()];
    let mut rejected = 0u64;
    let mut done = 0usize;
    let mut payments = 0u64;
    let stream_result = wait_until(&notes, "every packet answered", |note| {
        match note {
            Some(Note::Reply {
                sender,
                fulfilled: f,
            }) => {
                if f {
                    fulfilled[sender] += 1;
                } else {
                    rejected += 1;
                }
                let answered: u64 = fulfilled.iter().sum::<u64>() + rejected;
                progress.update(&format!(
                    "{answered}/{total_packets} packets answered, {rejected} rejected, \
                     {payments} Lightning payments to receivers"
                ));
            }
            Some(Note::Hub(PluginEvent::MoneySent { .. })) => payments += 1,
            Some(Note::SenderDone) => done += 1,
            _ => {}
        }
        Ok(done == streams)
    });
    for sender in senders {
        let _ = sender.join();
    }
    stream_result?;
    let packets_fulfilled: u64 = fulfilled.iter().sum();
    progress.line(&format!(
        "{packets_fulfilled}/{total_packets} packets fulfilled through the hub ({rejected} rejected)"
    ));

    // Settle: the hub pays each receiver what it owes; wait until the books say it is done on
    // both sides.
    let hub_settlement = hub.settlement().ok_or("the hub does not settle")?.clone();
    let books = |client: &Client| -> Result<(AccountBook, AccountBook), String> {
        let mine = client
            .plugin
            .settlement()
            .ok_or("a client does not settle")?
            .account(PEER_ACCOUNT)
            .map_err(|e| e.to_string())?;
        let hubs = hub_settlement
            .account(&client.name)
            .map_err(|e| e.to_string())?;
        Ok((mine, hubs))
    };
    wait_until(&notes, "the hub paying every receiver", |_| {
        if !hub_settlement
            .store()
            .open_payments()
            .map_err(|e| e.to_string())?
            .is_empty()
        {
            return Ok(false);
        }
        for client in &clients {
            let (mine, hubs) = books(client)?;
            let settled = hubs.payable_msat == 0
                && hubs.paying_msat == 0
                && mine.received_msat == hubs.paid_msat
                && mine.paid_msat == hubs.received_msat;
            if !settled {
                return Ok(false);
            }
        }
        Ok(true)
    })?;

    // Reconcile.
    let after = local_balances(&network);
    let mut tallies = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let (mine, hubs) = books(client)?;
        tallies.push((
            client.name.clone(),
            ClientTally {
                client: Side {
                    moved_msat: moved(&before, &after, &client.name),
                    book: mine,
                },
                hub_book: hubs,
                sent_sat: fulfilled[index].saturating_mul(settings.amount),
                received_sat: received[index].load(std::sync::atomic::Ordering::Relaxed),
            },
        ));
    }
    let reconciled = reconcile(
        &tallies,
        moved(&before, &after, "hub"),
        moved(&before, &after, "router"),
    );
    for problem in &reconciled.problems {
        progress.line(&format!("NOT RECONCILED: {problem}"));
    }
    let balances_ok = reconciled.problems.is_empty();
    progress.line(&format!(
        "{} Lightning payments settled {} sat, {} msat in routing fees; balances {}",
        reconciled.lightning_payments,
        reconciled.lightning_settled_msat / 1000,
        reconciled.fees_msat,
        if balances_ok {
            "reconcile"
        } else {
            "DO NOT reconcile"
        }
    ));

    for client in &clients {
        client.plugin.disconnect();
    }
    hub.disconnect();
    let node_figures = NodeFigures::of(&network);
    let mut waits: Vec<Duration> = paid_for
        .iter()
        .flat_map(|p| std::mem::take(&mut p.lock().waits))
        .collect();
    let mut latency = Object::new();
    latency
        .decimal("median", quantile_ms(&mut waits, 0.5), 1)
        .decimal("p99", quantile_ms(&mut waits, 0.99), 1)
        .number("packets", waits.len() as u64);
    let settlements = reconciled.lightning_payments;
    let mut line = Object::new();
    line.number("packets_fulfilled", packets_fulfilled)
        .number(
            "ilp_amount_sat",
            packets_fulfilled.saturating_mul(settings.amount),
        )
        .number(
            "lightning_settled_sat",
            u64::try_from(reconciled.lightning_settled_msat / 1000).unwrap_or(u64::MAX),
        )
        .number(
            "fees_msat",
            u64::try_from(reconciled.fees_msat).unwrap_or(u64::MAX),
        )
        .boolean("balances_ok", balances_ok)
        .number("clients", clients.len() as u64)
        .number("packets_rejected", rejected)
        .number("lightning_payments", reconciled.lightning_payments)
        .string("settle", settings.settle.name())
        .number("settlements", settlements)
        .number("invoices_created", node_figures.invoices_created)
        .number("invoices_open_at_end", node_figures.invoices_open)
        .number("lnd_calls", node_figures.calls)
        .decimal(
            "lnd_calls_per_settlement",
            node_figures.calls as f64 / settlements.max(1) as f64,
            1,
        )
        .object("fulfill_to_received_ms", latency)
        .number(
            "elapsed_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
    drop(clients);
    drop(hub);
    Ok(Finished {
        line: line.finish(),
        balances_ok,
        network,
    })
}

/// What the simulated nodes of the plugins (not the router) were asked, counted by the nodes.
struct NodeFigures {
    /// AddInvoice calls.
    invoices_created: u64,
    /// Invoices still open.
    invoices_open: u64,
    /// Every gRPC call.
    calls: u64,
}

impl NodeFigures {
    fn of(network: &SimNetwork) -> NodeFigures {
        let mut figures = NodeFigures {
            invoices_created: 0,
            invoices_open: 0,
            calls: 0,
        };
        for node in network.nodes().iter().filter(|n| n.name() != "router") {
            let calls = node.calls();
            figures.invoices_created += calls
                .get("/lnrpc.Lightning/AddInvoice")
                .copied()
                .unwrap_or(0);
            figures.calls += calls.values().sum::<u64>();
            figures.invoices_open += node.invoice_counts().0 as u64;
        }
        figures
    }
}

/// A sender thread: `packets` test packets of `amount` to `to`, one after the other (each client
/// runs `STREAMS` of them).
fn send_packets(
    plugin: &LightningPlugin,
    index: usize,
    to: &str,
    packets: u64,
    amount: u64,
    notes: &Sender<Note>,
) {
    for _ in 0..packets {
        let fulfilled = test_packets::prepare(to, amount, PACKET_LIFETIME)
            .ok()
            .and_then(|prepare| test_packets::send(plugin, &prepare, true).ok())
            .is_some_and(|reply| matches!(Packet::parse(&reply), Ok(Packet::Fulfill(_))));
        let _ = notes.send(Note::Reply {
            sender: index,
            fulfilled,
        });
    }
    let _ = notes.send(Note::SenderDone);
}

/// `ilp-lightning demo ...`: exit code 2 for bad flags, 1 if anything failed or a balance does
/// not reconcile.
pub fn run(args: &[String]) -> ExitCode {
    let settings = match command_options("demo", args, usage, parse) {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    let mut progress = Progress::new();
    match demo(&settings, &mut progress) {
        Ok(finished) => {
            println!("{}", finished.line);
            drop(finished.network);
            if finished.balances_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            progress.line(&format!("failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_have_defaults_and_bounds() {
        assert_eq!(
            parse(&[]).unwrap(),
            Settings {
                clients: DEFAULT_CLIENTS,
                packets: DEFAULT_PACKETS,
                amount: DEFAULT_AMOUNT,
                settle: Settle::Invoices,
            }
        );
        assert_eq!(
            parse(&args(&["--settle", "keysend"])).unwrap().settle,
            Settle::Keysend
        );
        assert!(parse(&args(&["--settle", "carrier-pigeon"]))
            .unwrap_err()
            .0
            .contains("invoices or keysend"));
        let s = parse(&args(&[
            "--clients",
            "3",
            "--packets",
            "7",
            "--amount",
            "2",
        ]))
        .unwrap();
        assert_eq!((s.clients, s.packets, s.amount), (3, 7, 2));
        assert_eq!(s.prefund_sat(), Some(14));
        let err = |a: &[&str]| parse(&args(a)).unwrap_err().0;
        assert!(err(&["--clients", "1"]).contains("from 2 to 50"));
        assert!(err(&["--clients", "51"]).contains("from 2 to 50"));
        assert!(err(&["--packets", "0"]).contains("at least 1"));
        assert!(err(&["--amount", "x"]).starts_with("--amount \"x\""));
        let huge = u64::MAX.to_string();
        assert!(err(&["--amount", &huge, "--packets", "2"]).contains("too large"));
        assert_eq!(client_name(1), "bob");
        assert_eq!(client_name(12), "client13");
    }

    #[test]
    fn waits_are_counted_from_each_fulfill_to_the_money_that_covers_it() {
        let mut paid = PaidFor::default();
        paid.fulfilled(10);
        paid.fulfilled(10);
        paid.received(15);
        assert_eq!((paid.waits.len(), paid.waiting.len()), (1, 1));
        paid.received(5);
        assert_eq!((paid.waits.len(), paid.waiting.len()), (2, 0));
        let mut waits: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&mut waits, 0.5), 50.0);
        assert_eq!(quantile_ms(&mut waits, 0.99), 99.0);
        assert!(quantile_ms(&mut [], 0.5).is_nan());
    }

    fn book(f: impl FnOnce(&mut AccountBook)) -> AccountBook {
        let mut b = AccountBook::default();
        f(&mut b);
        b
    }

    /// Alice prefunds 1000 sat (fee 1 sat), sends 300 sat of packets to bob; the hub pays bob
    /// 300 sat (fee 1 sat); bob prefunded 500 sat (fee 1 sat) and sent nothing.
    fn consistent() -> (Vec<(String, ClientTally)>, i128, i128) {
        let alice = ClientTally {
            client: Side {
                moved_msat: -1_001_000,
                book: book(|b| {
                    b.paid_msat = 1_000_000;
                    b.fees_msat = 1_000;
                    b.payments = 1;
                    b.payable_msat = -700_000;
                }),
            },
            hub_book: book(|b| {
                b.received_msat = 1_000_000;
                b.receipts = 1;
                b.receivable_msat = -700_000;
            }),
            sent_sat: 300,
            received_sat: 0,
        };
        let bob = ClientTally {
            client: Side {
                moved_msat: -501_000 + 300_000,
                book: book(|b| {
                    b.paid_msat = 500_000;
                    b.fees_msat = 1_000;
                    b.payments = 1;
                    b.payable_msat = -500_000;
                    b.received_msat = 300_000;
                    b.receipts = 1;
                }),
            },
            hub_book: book(|b| {
                b.received_msat = 500_000;
                b.receivable_msat = -500_000;
                b.paid_msat = 300_000;
                b.fees_msat = 1_000;
                b.payments = 1;
            }),
            sent_sat: 0,
            received_sat: 300,
        };
        let hub_moved = 1_000_000 + 500_000 - 301_000;
        (
            vec![("alice".into(), alice), ("bob".into(), bob)],
            hub_moved,
            3_000,
        )
    }

    #[test]
    fn consistent_books_reconcile_with_their_totals() {
        let (clients, hub, router) = consistent();
        let r = reconcile(&clients, hub, router);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.lightning_settled_msat, 1_800_000);
        assert_eq!(r.lightning_payments, 3);
        assert_eq!(r.fees_msat, 3_000);
    }

    /// Spoils a consistent set of tallies: the clients', the hub's and the router's.
    type Spoil = dyn Fn(&mut Vec<(String, ClientTally)>, &mut i128, &mut i128);

    #[test]
    fn every_kind_of_disagreement_is_found() {
        let check = |change: &Spoil, expect: &str| {
            let (mut clients, mut hub, mut router) = consistent();
            change(&mut clients, &mut hub, &mut router);
            let r = reconcile(&clients, hub, router);
            assert!(
                r.problems.iter().any(|p| p.contains(expect)),
                "expected {expect:?} in {:?}",
                r.problems
            );
        };
        check(
            &|c, _, _| c[0].1.client.moved_msat -= 1,
            "alice's channels moved",
        );
        check(&|_, h, _| *h += 1, "the hub's channels moved");
        check(&|_, _, r| *r -= 1, "the routing node earned");
        check(
            &|c, _, _| c[1].1.hub_book.paid_msat += 1_000,
            "bob received from the hub",
        );
        check(
            &|c, _, _| c[0].1.hub_book.received_msat -= 1,
            "alice paid the hub",
        );
        check(
            &|c, _, _| c[0].1.client.book.payable_msat += 1,
            "disagree on who owes what",
        );
        check(&|c, _, _| c[0].1.sent_sat += 1, "alice sent");
        check(&|c, _, _| c[1].1.received_sat += 1, "bob took");
        check(
            &|c, _, _| {
                c[1].1.hub_book.payable_msat = 5;
                c[1].1.client.book.receivable_msat = 5;
            },
            "the hub still owes bob",
        );
        check(
            &|c, _, _| c[0].1.hub_book.paying_msat = 7,
            "7 msat in flight",
        );
        check(
            &|c, _, _| c[1].1.client.book.reserved_msat = 3,
            "3 reserved",
        );
    }
}
