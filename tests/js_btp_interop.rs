//! Wire compatibility with the JS packages (npm): an `ilp-plugin-btp` client against our hub, and
//! our client against `ilp-plugin-mini-accounts`. The JS sides are tests/js-btp/js-client.js and
//! js-server.js (run `(cd tests/js-btp && npm ci)` first; .ci/run does). They print one JSON
//! object a line, which these tests read.

mod common;

use common::hub::HubProcess;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use ilp_plugin_lightning::btp::auth::account_for_token;
use ilp_plugin_lightning::ilp::{
    condition_of, Address, ErrorCode, Fulfill, Packet, PrepareBuilder, Reject, Timestamp,
};
use ilp_plugin_lightning::plugin::{route_between_clients, LightningPlugin, PluginError};
use serde_json::Value;

/// Generous: node starts slowly on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);
const FULFILLMENT: [u8; 32] = [0x11; 32];

fn js_dir() -> PathBuf {
    common::js::require_packages("js-btp", "ilp-plugin-btp")
}

/// A node process whose stdout JSON lines arrive on a channel; killed when dropped.
struct NodeProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    seen: Vec<Value>,
}

impl NodeProcess {
    fn start(name: &str, script: &str, args: &[&str]) -> NodeProcess {
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {script}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
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
        NodeProcess {
            name: name.to_owned(),
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The next line whose `event` is `event` (earlier lines of other events are kept for the
    /// failure message). An `error` event fails the test at once.
    fn expect(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == event {
                        return v;
                    }
                    if v["event"] == "error" && event != "error" {
                        panic!("{}: error while waiting for {event}: {v}", self.name);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {event:?} event within {WAIT:?}; saw {:?}",
                        self.name, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before a {event:?} event; saw {:?}; status {:?}",
                    self.name,
                    self.seen,
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Sends one JSON command line.
    fn command(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write to node");
        stdin.flush().expect("flush to node");
    }

    /// Waits for the process to exit and returns its success.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not exit within {WAIT:?}", self.name);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hub binary, checked to have started as asked.
fn start_hub(credit_limit: u64) -> HubProcess {
    let hub = HubProcess::start_on_sim(&[
        "--credit-limit",
        &credit_limit.to_string(),
        "--max-packet-amount",
        "5000",
    ]);
    let v = &hub.first_line;
    assert_eq!(v["event"], "listening", "{v}");
    assert_eq!(v["address"], "test.hub");
    hub
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn condition_hex() -> String {
    hex::encode(condition_of(&FULFILLMENT))
}

fn prepare(destination: &str, amount: u64, data: &[u8]) -> Vec<u8> {
    common::ilp::prepare(&FULFILLMENT, destination, amount, 30_000, data)
}

fn fulfilling_handler(
    prepare: &[u8],
) -> Result<Vec<u8>, ilp_plugin_lightning::plugin::HandlerError> {
    let data = match Packet::parse(prepare) {
        Ok(Packet::Prepare(p)) => p.data().to_vec(),
        _ => Vec::new(),
    };
    Ok(common::ilp::fulfill(&FULFILLMENT, &data))
}

/// A JS client of the hub at `port`, account `user`, that fulfils what it gets with
/// `FULFILLMENT` and echoes its data.
fn js_fulfiller(port: u16, user: &str) -> NodeProcess {
    let server = format!("btp+ws://{user}:token-{user}@127.0.0.1:{port}");
    NodeProcess::start(
        &format!("js-client-{user}"),
        "js-client.js",
        &[
            "serve",
            "--server",
            &server,
            "--fulfillment",
            &hex::encode(FULFILLMENT),
        ],
    )
}

fn send_with_js(port: u16, user: &str, destination: &str, amount: u64) -> Value {
    let server = format!("btp+ws://{user}:token-{user}@127.0.0.1:{port}");
    let mut js = NodeProcess::start(
        &format!("js-client-{user}"),
        "js-client.js",
        &[
            "send",
            "--server",
            &server,
            "--destination",
            destination,
            "--condition",
            &condition_hex(),
            "--amount",
            &amount.to_string(),
            "--data",
            "c0ffee",
        ],
    );
    let ildcp = js.expect("ildcp");
    assert_eq!(
        ildcp["clientAddress"],
        format!("test.hub.{user}"),
        "{ildcp}"
    );
    assert_eq!(ildcp["assetCode"], "BTC");
    assert_eq!(ildcp["assetScale"], 0);
    let reply = js.expect("reply");
    assert!(js.wait_exit(), "js client failed");
    reply
}

#[test]
fn two_js_clients_exchange_packets_through_our_hub_binary() {
    let hub = start_hub(1_000);
    let mut bob = js_fulfiller(hub.port, "bob");
    let ready = bob.expect("ready");
    assert_eq!(ready["clientAddress"], "test.hub.bob");

    // Fulfilled end to end, data echoed back by bob.
    let reply = send_with_js(hub.port, "alice", "test.hub.bob.wallet", 7);
    assert_eq!(reply["type"], "fulfill", "{reply}");
    assert_eq!(reply["fulfillment"], hex::encode(FULFILLMENT));
    assert_eq!(reply["data"], "c0ffee");
    let seen = bob.expect("prepare");
    assert_eq!(seen["destination"], "test.hub.bob.wallet");
    assert_eq!(seen["amount"], "7");
    assert_eq!(seen["data"], "c0ffee");

    // Bob's own Reject comes back unchanged.
    let reply = send_with_js(hub.port, "alice", "test.hub.bob.reject", 1);
    assert_eq!(reply["type"], "reject", "{reply}");
    assert_eq!(reply["code"], "F99");
    assert_eq!(reply["triggeredBy"], "test.hub.bob");

    // Nobody there: the hub says F02.
    let reply = send_with_js(hub.port, "alice", "test.hub.nobody.x", 1);
    assert_eq!(reply["type"], "reject", "{reply}");
    assert_eq!(reply["code"], "F02");
    assert_eq!(reply["triggeredBy"], "test.hub");

    // Above the hub's --max-packet-amount: F08; above the credit limit: T04.
    let reply = send_with_js(hub.port, "carol", "test.hub.bob.x", 5_001);
    assert_eq!(reply["code"], "F08", "{reply}");
    let reply = send_with_js(hub.port, "carol", "test.hub.bob.x", 1_001);
    assert_eq!(reply["code"], "T04", "{reply}");
    // Alice owes 7 (the Rejected and unroutable packets gave their credit back): 993 more pass.
    let reply = send_with_js(hub.port, "alice", "test.hub.bob.x", 993);
    assert_eq!(reply["type"], "fulfill", "{reply}");
    let reply = send_with_js(hub.port, "alice", "test.hub.bob.x", 1);
    assert_eq!(reply["code"], "T04", "{reply}");

    // No username: the account is base64url(sha256(token)), as in mini-accounts.
    let mut anon = NodeProcess::start(
        "js-client-anon",
        "js-client.js",
        &[
            "send",
            "--server",
            &format!(
                "btp+ws://:anonymous-token-of-32-bytes-or-so@127.0.0.1:{}",
                hub.port
            ),
            "--destination",
            "test.hub.bob.x",
            "--condition",
            &condition_hex(),
        ],
    );
    let expected = format!(
        "test.hub.{}",
        account_for_token(b"anonymous-token-of-32-bytes-or-so")
    );
    assert_eq!(anon.expect("ildcp")["clientAddress"], expected.as_str());
    assert_eq!(anon.expect("reply")["type"], "fulfill");
    assert!(anon.wait_exit());
}

#[test]
fn our_client_and_a_js_client_exchange_packets_both_ways_through_an_in_process_hub() {
    let hub = Arc::new(
        LightningPlugin::server(
            "127.0.0.1:0".parse().unwrap(),
            Address::new("test.hub").unwrap(),
        )
        .credit_limit(Some(1_000_000))
        .build()
        .unwrap(),
    );
    route_between_clients(&hub).unwrap();
    hub.connect().unwrap();
    let port = hub.local_addr().unwrap().port();

    let ours = LightningPlugin::client(&format!("btp+ws://rusty:token-rusty@127.0.0.1:{port}"))
        .build()
        .unwrap();
    ours.register_data_handler(fulfilling_handler).unwrap();
    ours.connect().unwrap();
    assert!(ours.is_connected());
    assert_eq!(ours.own_address().unwrap().as_str(), "test.hub.rusty");

    let mut bob = js_fulfiller(port, "bob");
    assert_eq!(bob.expect("ready")["clientAddress"], "test.hub.bob");

    // Rust -> hub -> JS.
    let reply = ours
        .send_data(&prepare("test.hub.bob.x", 3, b"hi"))
        .unwrap();
    let fulfill = Fulfill::parse(&reply).expect("a Fulfill");
    assert_eq!(fulfill.data(), b"hi");
    assert_eq!(bob.expect("prepare")["destination"], "test.hub.bob.x");
    let reply = ours
        .send_data(&prepare("test.hub.bob.reject", 3, b""))
        .unwrap();
    let reject = Reject::parse(&reply).expect("a Reject");
    assert_eq!(reject.code().as_str(), "F99");

    // JS -> hub -> Rust.
    bob.command(serde_json::json!({
        "destination": "test.hub.rusty.inbox",
        "amount": 4,
        "condition": condition_hex(),
        "data": "0102",
    }));
    let reply = bob.expect("reply");
    assert_eq!(reply["type"], "fulfill", "{reply}");
    assert_eq!(reply["data"], "0102");

    // The hub booked both directions: bob owes for what it sent, is owed for what it fulfilled.
    let balances = hub.balances().unwrap();
    assert_eq!(balances.balance("rusty").receivable, 3);
    assert_eq!(balances.balance("bob").payable, 3);
    assert_eq!(balances.balance("bob").receivable, 4);
    assert_eq!(balances.balance("rusty").payable, 4);

    ours.disconnect();
    assert!(!ours.is_connected());
    hub.disconnect();
}

#[test]
fn our_client_against_js_mini_accounts() {
    let port = free_port();
    let mut server = NodeProcess::start(
        "js-server",
        "js-server.js",
        &[
            "--port",
            &port.to_string(),
            "--address",
            "test.js",
            "--fulfillment",
            &hex::encode(FULFILLMENT),
        ],
    );
    server.expect("listening");

    let ours = LightningPlugin::client(&format!("btp+ws://carol:token-carol@127.0.0.1:{port}"))
        .build()
        .unwrap();
    ours.register_data_handler(fulfilling_handler).unwrap();
    ours.connect().unwrap();
    assert_eq!(ours.own_address().unwrap().as_str(), "test.js.carol");

    // Ours -> mini-accounts' data handler.
    let reply = ours
        .send_data(&prepare("test.js.carol.x", 9, b"abc"))
        .unwrap();
    assert_eq!(Fulfill::parse(&reply).expect("a Fulfill").data(), b"abc");
    let seen = server.expect("prepare");
    assert_eq!(seen["destination"], "test.js.carol.x");
    assert_eq!(seen["amount"], "9");
    let reply = ours
        .send_data(&prepare("test.js.x.reject", 1, b""))
        .unwrap();
    let reject = Reject::parse(&reply).expect("a Reject");
    assert_eq!(reject.code().as_str(), "F99");
    assert_eq!(reject.triggered_by(), "test.js");

    // mini-accounts fulfils whatever the condition: our client refuses a wrong fulfillment (F05).
    let other_condition = condition_of(&[0x22; 32]);
    let mismatched = PrepareBuilder {
        amount: 1,
        expires_at: Timestamp::now().add_millis(30_000),
        execution_condition: &other_condition,
        destination: "test.js.carol.y",
        data: b"",
    }
    .build()
    .unwrap()
    .to_bytes();
    let reply = ours.send_data(&mismatched).unwrap();
    assert_eq!(
        Reject::parse(&reply).expect("a Reject").code(),
        ErrorCode::F05_WRONG_CONDITION
    );
    while server.expect("prepare")["destination"] != "test.js.carol.y" {}

    // Mini-accounts -> ours: fulfilled by our handler.
    server.command(serde_json::json!({
        "destination": "test.js.carol.inbox",
        "amount": 2,
        "condition": condition_hex(),
        "data": "ff",
    }));
    let reply = server.expect("reply");
    assert_eq!(reply["type"], "fulfill", "{reply}");
    assert_eq!(reply["data"], "ff");

    // Another token for the same account is refused by mini-accounts.
    let impostor = LightningPlugin::client(&format!("btp+ws://carol:wrong@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let err = impostor
        .connect()
        .expect_err("a wrong token must not connect");
    assert!(
        matches!(
            err,
            PluginError::PeerError { .. } | PluginError::Transport(_)
        ),
        "{err}"
    );

    // Our reject codes reach the JS side: an amount our handler refuses.
    ours.deregister_data_handler();
    server.command(serde_json::json!({
        "destination": "test.js.carol.inbox",
        "amount": 2,
        "condition": condition_hex(),
    }));
    let reply = server.expect("reply");
    assert_eq!(reply["type"], "reject", "{reply}");
    assert_eq!(reply["code"], ErrorCode::T00_INTERNAL_ERROR.as_str());
    assert_eq!(reply["message"], "no data handler registered");
    ours.disconnect();
}
