//! Settlement wire compatibility with the unmodified npm `ilp-plugin-lightning` (1.0.0-beta.25),
//! both ways: its clients against our hub, and our client against its server. Each side has its
//! own simulated LND node (as LND 0.20, which still serves the bidirectional `SendPayment` the JS
//! plugin pays through); the JS plugin reaches its node over gRPC with TLS and a macaroon from the
//! node's files, as it would a real LND.
//!
//! The JS side is tests/js-lightning/peer.js: it prints one JSON event a line (what its logger,
//! store, money and data handlers saw) and takes JSON commands on stdin. The tests wait for those
//! events, never for time, and check what moved on the simulated channels against both sides'
//! books.
//!
//! Needs Node.js; the npm packages are installed on first run (`npm ci` in tests/js-lightning;
//! .ci/run does it too).
#![cfg(feature = "sim")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};

use common::lightning::{
    client, fulfil_by_data, hub, is_fulfill, moved_msat, network_of_version, node_client,
    reject_code, with_events, Events,
};
use ilp_plugin_lightning::btp::{OwnedEntry, ProtocolData, ProtocolDataEntry};
use ilp_plugin_lightning::lnd::sim::SimNetwork;
use ilp_plugin_lightning::plugin::{LightningPlugin, PluginEvent, PEER_ACCOUNT};
use ilp_plugin_lightning::settlement::hooks::Hold;
use ilp_plugin_lightning::settlement::{PrepareRefused, SettlementHooks, SettlementOptions};

/// Long enough for Node.js and the simulator on a loaded machine; only a broken build waits
/// this long.
const WAIT: Duration = Duration::from_secs(90);

/// The JS plugin running in a Node.js process; killed when dropped.
struct JsPeer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Every event so far, in order.
    seen: Vec<Value>,
}

impl JsPeer {
    fn start(name: &str, args: &[&str]) -> JsPeer {
        let dir = common::js::require_packages("js-lightning", "ilp-plugin-lightning");
        let mut child = Command::new("node")
            .arg("peer.js")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node peer.js: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = unbounded();
        let label = name.to_owned();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => {
                            if tx.send(v).is_err() {
                                break;
                            }
                        }
                        Err(_) => eprintln!("[{label}] {line}"),
                    }
                }
            })
            .expect("spawn stdout reader");
        JsPeer {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The JS plugin as a client of the hub at `port`, account `name`, on the node in `lnd_dir`.
    fn client(name: &str, port: u16, lnd_dir: &Path) -> JsPeer {
        let server = format!("btp+ws://{name}:secret-{name}@127.0.0.1:{port}");
        let mut peer = JsPeer::start(
            name,
            &[
                "--role",
                "client",
                "--server",
                &server,
                "--lnd",
                path_str(lnd_dir),
                "--credentials",
                "buffer",
            ],
        );
        peer.wait_for_event("ready");
        peer
    }

    /// The JS plugin as a server listening on `port` with ILP address `address`.
    fn server(port: u16, address: &str, lnd_dir: &Path) -> JsPeer {
        let mut peer = JsPeer::start(
            "js-server",
            &[
                "--role",
                "server",
                "--port",
                &port.to_string(),
                "--address",
                address,
                "--lnd",
                path_str(lnd_dir),
                "--credentials",
                "base64",
            ],
        );
        peer.wait_for_event("ready");
        peer
    }

    /// Waits until `found` finds what it looks for in the events so far (it is asked again
    /// after each new one); an `error` event fails the test at once.
    fn wait_until<T>(&mut self, what: &str, mut found: impl FnMut(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(result) = found(&self.seen) {
                return result;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    if v["event"] == "error" {
                        panic!("{}: error while waiting for {what}: {v}", self.name);
                    }
                    self.seen.push(v);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {what} within {WAIT:?}; saw:\n{}",
                    self.name,
                    self.history()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited while waiting for {what} ({:?}); saw:\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.history()
                ),
            }
        }
    }

    /// The first event named `event` (seen already or to come).
    fn wait_for_event(&mut self, event: &str) -> Value {
        self.wait_until(event, |seen| {
            seen.iter().find(|v| v["event"] == event).cloned()
        })
    }

    /// The first event named `event` that `matches` accepts.
    fn wait_for(&mut self, event: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, |seen| {
            seen.iter()
                .find(|v| v["event"] == event && matches(v))
                .cloned()
        })
    }

    /// Waits until the amounts of the `event` events (their `amount` field) add up to `total`,
    /// and checks that they do not exceed it.
    fn wait_for_sum(&mut self, event: &str, total: u64) {
        let sum = |seen: &[Value]| -> u64 {
            seen.iter()
                .filter(|v| v["event"] == event)
                .map(amount)
                .sum()
        };
        let reached = self.wait_until(&format!("{event} events adding up to {total}"), |seen| {
            let sum = sum(seen);
            (sum >= total).then_some(sum)
        });
        assert_eq!(reached, total, "{}: more {event} than expected", self.name);
    }

    /// Sends one JSON command.
    fn command(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write to node");
        stdin.flush().expect("flush to node");
    }

    /// Sends a Prepare of `amount` to `destination` that `fulfillment` fulfils (carried as its
    /// data, the receivers' convention); returns the reply event.
    fn send_packet(&mut self, id: u64, destination: &str, amount: u64, fulfillment: &[u8; 32]) {
        self.command(json!({
            "cmd": "send",
            "id": id,
            "destination": destination,
            "amount": amount,
            "fulfillment": hex::encode(fulfillment),
        }));
    }

    fn reply(&mut self, id: u64) -> Value {
        self.wait_for("reply", &format!("reply {id}"), |v| v["id"] == id)
    }

    /// The plugin's balances for `account` and the total its money handler heard, read now
    /// (the answer to a status command sent after everything it waits for happened).
    fn status(&mut self) -> Value {
        let asked = self.seen.iter().filter(|v| v["event"] == "status").count();
        self.command(json!({ "cmd": "status" }));
        self.wait_until("status", |seen| {
            seen.iter()
                .filter(|v| v["event"] == "status")
                .nth(asked)
                .cloned()
        })
    }

    /// Checks that none of the plugin's payments failed so far.
    fn assert_settled_without_failure(&self) {
        let failed: Vec<&Value> = self
            .seen
            .iter()
            .filter(|v| v["event"] == "settleFailed")
            .collect();
        assert!(
            failed.is_empty(),
            "{}: failed to settle: {failed:?}",
            self.name
        );
    }

    fn history(&self) -> String {
        self.seen
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// The `amount` of an event, a decimal string or a number.
fn amount(v: &Value) -> u64 {
    match &v["amount"] {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("amount of {v}")),
        Value::Number(n) => n.as_u64().unwrap_or_else(|| panic!("amount of {v}")),
        _ => panic!("no amount in {v}"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A folder for the simulated nodes' files, removed when dropped.
struct NodeFiles(PathBuf);

impl NodeFiles {
    fn new(sim: &SimNetwork, test: &str, nodes: &[&str]) -> NodeFiles {
        let dir = std::env::temp_dir().join(format!(
            "js-lightning-{test}-{}-{}",
            std::process::id(),
            sim.node(nodes[0]).unwrap().port()
        ));
        for name in nodes {
            sim.node(name)
                .unwrap()
                .write_files(&dir.join(name))
                .expect("write the node's files");
        }
        NodeFiles(dir)
    }

    fn node(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for NodeFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until settlement has paid each account its total (in msat), over however many
/// MoneySent events, and checks it paid no more.
fn wait_for_payments(events: &Events, totals: &[(&str, u64)]) {
    let mut paid = vec![0u64; totals.len()];
    events.wait_for("the payments", |e| {
        if let PluginEvent::MoneySent {
            account,
            amount_msat,
            ..
        } = e
        {
            if let Some(i) = totals.iter().position(|(a, _)| a == account) {
                paid[i] += amount_msat;
            }
        }
        paid.iter().zip(totals).all(|(p, (_, t))| p >= t)
    });
    for (p, (account, t)) in paid.iter().zip(totals) {
        assert_eq!(p, t, "paid {account} more than expected");
    }
}

fn fulfillment(nonce: u8) -> [u8; 32] {
    [nonce; 32]
}

#[test]
fn js_clients_prefund_our_hub_and_stream_through_it_and_the_hub_pays_the_receivers() {
    let sim = network_of_version(&["hub", "alice", "bob", "carol"], "0.20");
    let files = NodeFiles::new(&sim, "hub", &["alice", "bob"]);
    let hub_pubkey = sim.node("hub").unwrap().pubkey_hex().to_owned();
    let before = sim.channel_balances();
    let (hub, hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let port = hub.local_addr().unwrap().port();

    // Two JS clients, alice and bob, and one of ours, carol.
    let mut alice = JsPeer::client("alice", port, &files.node("alice"));
    let mut bob = JsPeer::client("bob", port, &files.node("bob"));
    let (carol, carol_events) = client(&hub, "carol", sim.node("carol").unwrap(), |b| b);
    fulfil_by_data(&carol);

    // Each JS client took our hub's peeringRequest (its node key) ...
    for js in [&mut alice, &mut bob] {
        js.wait_for("peered", "peered with the hub's node", |v| {
            v["pubkey"] == hub_pubkey.as_str()
        });
    }
    // ... and its IL-DCP answer.
    alice.command(json!({ "cmd": "ildcp" }));
    assert_eq!(
        alice.wait_for_event("ildcp")["clientAddress"],
        "test.hub.alice"
    );

    // Not prefunded: our hub (credit limit 0) refuses alice's packet.
    alice.send_packet(1, "test.hub.bob", 10, &fulfillment(1));
    let refused = alice.reply(1);
    assert_eq!(refused["type"], "reject", "{refused}");
    assert_eq!(refused["code"], "T04", "{refused}");

    // Alice prefunds 1000 sat with sendMoney: it pays one of our hub's invoices.
    alice.command(json!({ "cmd": "sendMoney", "id": 2, "amount": 1000 }));
    let settled = alice.wait_for_event("settled");
    assert_eq!(settled["pubkey"], hub_pubkey.as_str(), "{settled}");
    assert_eq!(amount(&settled), 1000);
    hub_events.wait_for_money("alice", 1000);
    assert_eq!(
        hub.settlement()
            .unwrap()
            .account("alice")
            .unwrap()
            .receivable_msat,
        -1_000_000
    );

    // Alice streams 10 packets of 10 sat through our hub: five to bob (JS), five to carol (ours).
    for i in 0..10u64 {
        let to = if i % 2 == 0 { "bob" } else { "carol" };
        alice.send_packet(
            100 + i,
            &format!("test.hub.{to}.wallet"),
            10,
            &fulfillment(10 + i as u8),
        );
    }
    for i in 0..10u64 {
        let reply = alice.reply(100 + i);
        assert_eq!(reply["type"], "fulfill", "packet {i}: {reply}");
    }

    // Our hub pays each receiver what it fulfilled: bob's JS money handler hears 50 sat,
    // carol's 50, and the hub books both payments.
    bob.wait_for_sum("money", 50);
    bob.wait_for_sum("paymentReceived", 50);
    carol_events.wait_for_money(PEER_ACCOUNT, 50);
    wait_for_payments(&hub_events, &[("bob", 50_000), ("carol", 50_000)]);

    // Our hub's books.
    let settlement = hub.settlement().unwrap();
    let alice_book = settlement.account("alice").unwrap();
    assert_eq!(alice_book.receivable_msat, -900_000);
    assert_eq!(alice_book.received_msat, 1_000_000);
    for name in ["bob", "carol"] {
        let book = settlement.account(name).unwrap();
        assert_eq!(
            (
                book.payable_msat,
                book.paying_msat,
                book.paid_msat,
                book.fees_msat
            ),
            (0, 0, 50_000, 0),
            "{name}: {book:?}"
        );
    }
    assert!(settlement.store().open_payments().unwrap().is_empty());

    // The JS clients' books: alice paid 1000 and owes for the 100 bob and carol fulfilled;
    // bob was paid all it fulfilled.
    let alice_status = alice.status();
    let alice_peer = &alice_status["accounts"]["peer"];
    assert_eq!(alice_peer["payable"], "-900", "{alice_status}");
    assert_eq!(alice_peer["receivable"], "0", "{alice_status}");
    let bob_status = bob.status();
    let bob_peer = &bob_status["accounts"]["peer"];
    assert_eq!(bob_peer["receivable"], "0", "{bob_status}");
    assert_eq!(bob_peer["payable"], "0", "{bob_status}");
    assert_eq!(bob_status["moneyTotal"], "50", "{bob_status}");
    alice.assert_settled_without_failure();
    // Carol's books mirror the hub's.
    let carol_book = carol.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(carol_book.received_msat, 50_000);
    assert_eq!(carol_book.receivable_msat, 0);

    // What moved on the channels is what both sides booked.
    let after = sim.channel_balances();
    assert_eq!(moved_msat(&before, &after, "alice", "hub"), 1_000_000);
    assert_eq!(moved_msat(&before, &after, "hub", "bob"), 50_000);
    assert_eq!(moved_msat(&before, &after, "hub", "carol"), 50_000);
    assert_eq!(moved_msat(&before, &after, "alice", "bob"), 0);

    drop((alice, bob));
    carol.disconnect();
    hub.disconnect();
    let _ = Arc::strong_count(&hub);
}

#[test]
fn our_client_prefunds_the_js_server_streams_to_it_and_is_paid_for_what_it_fulfils() {
    let sim = network_of_version(&["js", "ours"], "0.20");
    let files = NodeFiles::new(&sim, "server", &["js"]);
    let ours_pubkey = sim.node("ours").unwrap().pubkey_hex().to_owned();
    let before = sim.channel_balances();
    let port = free_port();
    let mut server = JsPeer::server(port, "test.js", &files.node("js"));

    let builder = LightningPlugin::client(&format!("btp+ws://ours:token-ours@127.0.0.1:{port}"))
        .lightning(node_client(sim.node("ours").unwrap()));
    let (builder, events) = with_events(builder);
    let ours = builder.build().expect("client builds");
    fulfil_by_data(&ours);
    ours.connect()
        .expect("our client connects to the JS server");
    assert_eq!(ours.own_address().unwrap().as_str(), "test.js.ours");

    // The JS server linked our node's key (it arrived in our peeringRequest).
    server.wait_for("peered", "peered with our node", |v| {
        v["pubkey"] == ours_pubkey.as_str()
    });

    // The JS server (its balance limit is 0) wants to be prefunded.
    let refused = ours
        .send_data(&common::ilp::prepare(
            &fulfillment(1),
            "test.js.server",
            10,
            30_000,
            &fulfillment(1),
        ))
        .unwrap();
    assert_eq!(reject_code(&refused).as_deref(), Some("T04"));

    // Our client prefunds 1000 sat: it pays one of the JS server's invoices, which credits us.
    ours.send_money(1_000).expect("our client prefunds");
    events.wait_for_payments(PEER_ACCOUNT, 1_000_000);
    server.wait_for_sum("paymentReceived", 1000);
    server.wait_for_sum("money", 1000);
    server.wait_for("balance", "our account at -1000", |v| {
        v["account"] == "ours" && v["key"] == "receivableBalance" && v["value"] == "-1000"
    });

    // Our client streams 10 packets of 10 sat to the JS server's data handler.
    for nonce in 0..10u8 {
        let f = fulfillment(20 + nonce);
        let reply = ours
            .send_data(&common::ilp::prepare(&f, "test.js.server", 10, 30_000, &f))
            .unwrap();
        assert!(
            is_fulfill(&reply),
            "packet {nonce}: {:?}",
            reject_code(&reply)
        );
    }

    // The JS server holds the invoices our client gave it (it pays with them; one it lacks
    // makes it fail and, restoring what it owes twice, pay double later: a bug of the
    // reference's that this test does not exercise).
    let stock = SettlementOptions::client().invoice_stock;
    server.command(json!({ "cmd": "waitInvoices", "id": 1, "account": "ours", "count": stock }));
    assert_eq!(server.wait_for_event("invoices")["count"], stock);

    // The JS server sends our client 5 packets of 20 sat; our client fulfils them, and the JS
    // server pays what it owes each time, over our invoices.
    for i in 0..5u64 {
        server.send_packet(i, "test.js.ours.inbox", 20, &fulfillment(40 + i as u8));
    }
    for i in 0..5u64 {
        let reply = server.reply(i);
        assert_eq!(reply["type"], "fulfill", "packet {i}: {reply}");
    }
    events.wait_for_money(PEER_ACCOUNT, 100);
    server.wait_for_sum("settled", 100);
    assert!(
        server
            .seen
            .iter()
            .filter(|v| v["event"] == "settled")
            .all(|v| v["pubkey"] == ours_pubkey.as_str()),
        "the JS server paid our node only"
    );

    server.assert_settled_without_failure();

    // Our books.
    let book = ours.settlement().unwrap().account(PEER_ACCOUNT).unwrap();
    assert_eq!(book.paid_msat, 1_000_000, "{book:?}");
    assert_eq!(book.payable_msat, -1_000_000 + 100_000, "{book:?}");
    assert_eq!(book.received_msat, 100_000, "{book:?}");
    assert_eq!(book.receivable_msat, 0, "{book:?}");
    assert_eq!(book.fees_msat, 0, "{book:?}");
    // The JS server's: we prefunded 1000 and sent 100; it owes us nothing after paying 100.
    let status = server.status();
    let account = &status["accounts"]["ours"];
    assert_eq!(account["receivable"], "-900", "{status}");
    assert_eq!(account["payable"], "0", "{status}");
    assert_eq!(account["payout"], "0", "{status}");
    assert_eq!(status["moneyTotal"], "1000", "{status}");

    // The channel between the two nodes moved by exactly that.
    let after = sim.channel_balances();
    assert_eq!(
        moved_msat(&before, &after, "ours", "js"),
        1_000_000 - 100_000
    );
    ours.disconnect();
}

/// A client's settlement side that refuses the first `peeringRequest` it gets, as the JS
/// plugin's client does with what arrives before its connect handler has run, and reports
/// every settlement message it gets: (sub-protocol, accepted).
struct RefusesFirstGreeting {
    refused: AtomicBool,
    seen: Sender<(String, bool)>,
}

impl SettlementHooks for RefusesFirstGreeting {
    fn on_incoming_prepare(&self, _: &str, _: u64, _: &Hold) -> Result<(), PrepareRefused> {
        Ok(())
    }
    fn on_incoming_rejected(&self, _: &str, _: u64, _: &Hold) {}
    fn on_outgoing_fulfilled(&self, _: &str, _: u64) {}
    fn on_outgoing_rejected(&self, _: &str, _: u64, _: &str) {}
    fn on_message(&self, _: &str, data: &ProtocolData<'_>) -> Result<Vec<OwnedEntry>, String> {
        let name = data
            .primary()
            .map(|e| e.name.to_owned())
            .unwrap_or_default();
        let refuse = name == "peeringRequest" && !self.refused.swap(true, Ordering::SeqCst);
        let _ = self.seen.send((name, !refuse));
        if refuse {
            Err("Account peer is not yet loaded".into())
        } else {
            Ok(Vec::new())
        }
    }
}

#[test]
fn a_client_that_refuses_our_first_greeting_gets_it_again_once_it_announces_its_node() {
    let sim = SimNetwork::builder()
        .node("hub")
        .node("alice")
        .fully_connected(1_000_000)
        .start()
        .expect("simulated network starts");
    let (hub, _hub_events) = hub(sim.node("hub").unwrap(), |b| b);
    let (seen_tx, seen) = unbounded();
    let alice = LightningPlugin::client(&format!(
        "btp+ws://alice:secret-alice@{}",
        hub.local_addr().unwrap()
    ))
    .settlement_hooks(Arc::new(RefusesFirstGreeting {
        refused: AtomicBool::new(false),
        seen: seen_tx,
    }))
    .build()
    .expect("client builds");
    alice.connect().expect("alice connects");
    let next = || {
        seen.recv_timeout(WAIT)
            .expect("a settlement message from the hub")
    };

    assert_eq!(next(), ("peeringRequest".to_owned(), false));
    // Alice announces her node, as the JS client does once it is ready: the hub greets her
    // again, and only then hands her its offer and its invoices.
    let pubkey = sim.node("alice").unwrap().pubkey_hex().to_owned();
    alice
        .request(
            PEER_ACCOUNT,
            &[ProtocolDataEntry::text("peeringRequest", &pubkey)],
        )
        .expect("the hub takes alice's peeringRequest");
    assert_eq!(next(), ("peeringRequest".to_owned(), true));
    // Then its settlement offer, which a client that does not speak it answers with an empty
    // Response, as the JS plugin does: such a client gets invoices.
    assert_eq!(next(), ("ilpLightningSettlement".to_owned(), true));
    for _ in 0..SettlementOptions::server().invoice_stock {
        assert_eq!(next(), ("paymentRequest".to_owned(), true));
    }
    alice.disconnect();
    hub.disconnect();
}
