//! The `ilp-lightning client` binary against the hub binary, every process on its own simulated
//! LND node: a sender prefunds and streams test packets, a receiver fulfils them and is paid by
//! the hub, and every satoshi shows on the channels and in the books each side keeps. Also the
//! `--help` of every command, bad flags, and the T04 retry the client relies on after a prefund.
#![cfg(feature = "sim")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::hub::{HubProcess, Scratch, SimFiles, BIN};
use ilp_plugin_lightning::ilp::{Address, ErrorCode, Packet};
use ilp_plugin_lightning::plugin::packets::reject;
use ilp_plugin_lightning::plugin::{test_packets, LightningPlugin, PEER_ACCOUNT};
use ilp_plugin_lightning::settlement::{EmbeddedStore, Store};
use serde_json::Value;

/// `client --server <hub as user> --lnddir <user's node> --store <dir> ARGS...`.
fn client(hub: &HubProcess, lnd: &SimFiles, user: &str, store: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("client")
        .args([
            "--server",
            &format!("btp+ws://{user}:token-{user}@127.0.0.1:{}", hub.port),
        ])
        .args(["--lnddir", &lnd.lnddir(user), "--store", store])
        .args(args);
    command
}

/// The one JSON line on stdout.
fn json_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {text:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// A `client ... receive` process, ready: it has said where it receives.
struct Receiver {
    child: Child,
    stderr: JoinHandle<String>,
}

impl Receiver {
    fn start(mut command: Command) -> Receiver {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            // Blocks until the receiver writes a line; EOF means it died.
            let read = stderr.read_line(&mut line).unwrap();
            assert!(read > 0, "the receiver ended before it was ready: {seen}");
            seen.push_str(&line);
            if line.contains("receiving test packets at test.hub.bob") {
                break;
            }
        }
        // Keep draining, so that the receiver never blocks on a full pipe.
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            seen + &rest
        });
        Receiver { child, stderr }
    }

    /// Waits for it to end by itself (it has a goal and a time limit); its stdout line.
    fn finish(mut self) -> (Value, Option<i32>) {
        let mut stdout = Vec::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.join().unwrap();
        assert!(
            !stdout.is_empty(),
            "the receiver printed nothing; stderr: {stderr}"
        );
        (json_line(&stdout), status.code())
    }
}

fn assert_ok(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    json_line(&out.stdout)
}

#[test]
fn a_sender_prefunds_and_the_hub_pays_the_receiver_over_lightning() {
    let lnd = SimFiles::start(&["hub", "alice", "bob"]);
    let before = ["hub", "alice", "bob"].map(|n| lnd.balance_msat(n));
    let stores = Scratch::new("stores");
    let hub = HubProcess::start(&[
        "--lnddir",
        &lnd.lnddir("hub"),
        "--store",
        &stores.arg("hub"),
    ]);
    let alice_store = stores.arg("alice");
    let bob_store = stores.arg("bob");

    let bob = Receiver::start(client(
        &hub,
        &lnd,
        "bob",
        &bob_store,
        &["receive", "--packets", "5", "--for", "120"],
    ));
    let sent = client(
        &hub,
        &lnd,
        "alice",
        &alice_store,
        &[
            "--prefund",
            "100",
            "send",
            "--to",
            "test.hub.bob",
            "--amount",
            "10",
            "--packets",
            "5",
        ],
    )
    .output()
    .unwrap();
    let line = assert_ok(&sent);
    assert_eq!(line["sent"], 5, "{line}");
    assert_eq!(line["fulfilled"], 5, "{line}");
    assert_eq!(line["rejected"], 0, "{line}");
    assert_eq!(line["amount_fulfilled_sat"], 50, "{line}");
    let (line, code) = bob.finish();
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["fulfilled"], 5, "{line}");
    assert_eq!(line["amount_sat"], 50, "{line}");
    assert_eq!(line["money_received_sat"], 50, "{line}");

    // Alice's prefund left 50 sat with the hub: the next run spends it without paying again.
    let bob = Receiver::start(client(
        &hub,
        &lnd,
        "bob",
        &bob_store,
        &["receive", "--packets", "2", "--for", "120"],
    ));
    let sent = client(
        &hub,
        &lnd,
        "alice",
        &alice_store,
        &[
            "send",
            "--to",
            "test.hub.bob",
            "--amount",
            "10",
            "--packets",
            "2",
        ],
    )
    .output()
    .unwrap();
    let line = assert_ok(&sent);
    assert_eq!(line["fulfilled"], 2, "{line}");
    let (line, code) = bob.finish();
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["money_received_sat"], 20, "{line}");

    // The channels: alice paid the hub 100 sat, the hub paid bob 70 (direct channels: no fees).
    let moved = |i: usize, name: &str| lnd.balance_msat(name) - before[i];
    assert_eq!(moved(1, "alice"), -100_000);
    assert_eq!(moved(2, "bob"), 70_000);
    assert_eq!(moved(0, "hub"), 30_000);

    // The books each side kept on disk, read back once the processes are gone.
    drop(hub);
    let hub_books = EmbeddedStore::open(stores.arg("hub")).unwrap();
    let alice_books = EmbeddedStore::open(&alice_store).unwrap();
    let bob_books = EmbeddedStore::open(&bob_store).unwrap();
    let hub_alice = hub_books.account("alice").unwrap();
    let hub_bob = hub_books.account("bob").unwrap();
    let alice = alice_books.account(PEER_ACCOUNT).unwrap();
    let bob = bob_books.account(PEER_ACCOUNT).unwrap();
    assert_eq!(
        (hub_alice.received_msat, alice.paid_msat),
        (100_000, 100_000)
    );
    assert_eq!(
        (hub_alice.receivable_msat, alice.payable_msat),
        (-30_000, -30_000)
    );
    assert_eq!((hub_bob.paid_msat, bob.received_msat), (70_000, 70_000));
    assert_eq!((hub_bob.payable_msat, bob.receivable_msat), (0, 0));
    assert_eq!(hub_bob.fees_msat + alice.fees_msat, 0);
    assert!(hub_books.open_payments().unwrap().is_empty());
}

/// Exit status 2, nothing on stdout, one line on stderr containing `expect`.
fn assert_refused(args: &[&str], expect: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains(expect),
        "{args:?}: {expect:?} not in {stderr}"
    );
}

#[test]
fn bad_client_flags_exit_2_with_one_line() {
    let lnd = SimFiles::start(&["alice"]);
    let dir = lnd.lnddir("alice");
    let server = "btp+ws://alice:t@127.0.0.1:9";
    let base = ["client", "--server", server, "--lnddir", &dir];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    }
    assert_refused(&["client", "send"], "--server is required");
    assert_refused(&["client", "--server", "http://x", "send"], "--server: ");
    assert_refused(&with(&base, &[]), "a command is needed: send or receive");
    assert_refused(&with(&base, &["pay"]), "unknown command \"pay\"");
    assert_refused(
        &with(&base, &["send", "--to", "test.hub.bob"]),
        "--amount is required",
    );
    assert_refused(
        &with(
            &base,
            &[
                "send",
                "--to",
                "test.hub.bob",
                "--amount",
                "1",
                "--packets",
                "0",
            ],
        ),
        "--packets must be at least 1",
    );
    assert_refused(
        &with(&base, &["receive", "--for", "soon"]),
        "--for \"soon\"",
    );
    assert_refused(
        &with(&base, &["--prefund", "x", "receive"]),
        "--prefund \"x\"",
    );
    assert_refused(&["frobnicate"], "unknown command \"frobnicate\"");
}

#[test]
fn every_command_answers_help() {
    for command in ["demo", "server", "client", "sim", "decode", "bench"] {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{command}: {stdout}");
        assert!(
            stdout.starts_with("usage: ilp-lightning"),
            "{command}: {stdout}"
        );
        assert!(stdout.contains(command), "{command}: {stdout}");
        assert!(out.stderr.is_empty(), "{command}");
    }
    let client = Command::new(BIN)
        .args(["client", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&client.stdout);
    for flag in [
        "--rpcserver",
        "--lnddir",
        "--macaroonpath",
        "--network",
        "--prefund",
        "receive",
    ] {
        assert!(text.contains(flag), "client --help lacks {flag}");
    }
    let all = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&all.stdout);
    assert_eq!(all.status.code(), Some(0));
    for command in ["demo", "server", "client", "sim", "decode", "bench"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(command)),
            "--help does not list {command}: {text}"
        );
    }
}

/// The send the client uses: a T04 (the hub has not booked a prefund yet) is tried again, the
/// same packet, until another answer; without the retry the T04 is the answer; a T04 that never
/// ends is given up when the packet expires.
#[test]
fn a_t04_is_retried_until_another_answer_comes() {
    let server = Arc::new(
        LightningPlugin::server(
            "127.0.0.1:0".parse().unwrap(),
            Address::new("test.hub").unwrap(),
        )
        .credit_limit(None)
        .build()
        .unwrap(),
    );
    let refusals_left = Arc::new(AtomicUsize::new(0));
    let tries = Arc::new(AtomicUsize::new(0));
    let (left, counted) = (refusals_left.clone(), tries.clone());
    server
        .register_data_handler(move |prepare| {
            counted.fetch_add(1, Ordering::SeqCst);
            let refuse = left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if refuse {
                return Ok(reject(
                    ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
                    "test.hub",
                    "prefund not booked yet",
                    &[],
                ));
            }
            match test_packets::answer(prepare, "test.hub")? {
                test_packets::Answer::Fulfilled { reply, .. } => Ok(reply),
                test_packets::Answer::Rejected(reply) => Ok(reply),
            }
        })
        .unwrap();
    server.connect().unwrap();
    let url = format!("btp+ws://a:t@{}", server.local_addr().unwrap());
    let client = LightningPlugin::client(&url).build().unwrap();
    client.connect().unwrap();
    let is_t04 = |reply: &[u8]| {
        matches!(Packet::parse(reply), Ok(Packet::Reject(r))
            if r.code() == ErrorCode::T04_INSUFFICIENT_LIQUIDITY)
    };

    let packet = test_packets::prepare("test.hub", 5, Duration::from_secs(30)).unwrap();
    refusals_left.store(1, Ordering::SeqCst);
    assert!(is_t04(
        &test_packets::send(&client, &packet, false).unwrap()
    ));
    assert_eq!(tries.swap(0, Ordering::SeqCst), 1);

    refusals_left.store(2, Ordering::SeqCst);
    let reply = test_packets::send(&client, &packet, true).unwrap();
    assert!(
        matches!(Packet::parse(&reply), Ok(Packet::Fulfill(_))),
        "{reply:?}"
    );
    assert_eq!(tries.swap(0, Ordering::SeqCst), 3);

    refusals_left.store(usize::MAX, Ordering::SeqCst);
    let short = test_packets::prepare("test.hub", 5, Duration::from_millis(400)).unwrap();
    let reply = test_packets::send(&client, &short, true).unwrap();
    assert!(
        is_t04(&reply)
            || matches!(Packet::parse(&reply), Ok(Packet::Reject(r)) if r.code() == ErrorCode::R00_TRANSFER_TIMED_OUT)
    );
    assert!(
        tries.load(Ordering::SeqCst) >= 2,
        "it tried again before giving up"
    );
    client.disconnect();
    server.disconnect();
}
