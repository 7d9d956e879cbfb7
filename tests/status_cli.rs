//! `ilp-lightning status` and the server's periodic summary line: the books of a running hub
//! (a child process on a simulated node) read while it runs, as a table and as JSON.
#![cfg(feature = "sim")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::hub::{Scratch, SimFiles, BIN};
use common::lightning::{node_client, WAIT};
use crossbeam_channel::{unbounded, Receiver};
use ilp_plugin_lightning::plugin::LightningPlugin;
use serde_json::Value;

/// The hub as a child process whose stderr lines arrive on a channel.
struct Hub {
    child: Child,
    port: u16,
    stderr: Receiver<String>,
}

impl Hub {
    fn start(args: &[&str]) -> Hub {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--address", "test.hub"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ilp-lightning server");
        let (lines, stderr) = unbounded();
        let err = child.stderr.take().unwrap();
        std::thread::Builder::new()
            .name("test-hub-stderr".into())
            .spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("hub: {line}");
                    let _ = lines.send(line);
                }
            })
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let first: Value = serde_json::from_str(&first).expect("listening line");
        let port = first["listen"]
            .as_str()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("port");
        Hub {
            child,
            port,
            stderr,
        }
    }

    /// Waits for a line of stderr that contains `text`.
    fn wait_for_line(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {text:?} within {WAIT:?}"),
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(args: &[&str]) -> Output {
    Command::new(BIN).arg("status").args(args).output().unwrap()
}

#[test]
fn status_reads_a_running_hubs_books_as_a_table_and_as_json() {
    let lnd = SimFiles::start(&["hub", "alice"]);
    let books = Scratch::new("status-books");
    let store = books.arg("hub");
    let hub = Hub::start(&[
        "--lnddir",
        &lnd.lnddir("hub"),
        "--store",
        &store,
        "--invoice-stock",
        "4",
        "--status-every",
        "1",
    ]);
    // The summary comes every second, from the start.
    hub.wait_for_line("status: 0 accounts");

    let alice = LightningPlugin::client(&format!("btp+ws://alice:secret@127.0.0.1:{}", hub.port))
        .lightning(node_client(lnd.network.node("alice").unwrap()))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    alice.register_money_handler(|_| Ok(())).unwrap();
    alice.connect().unwrap();
    alice.send_money(300).expect("alice prefunds");
    let line = hub.wait_for_line("received 300000 msat in 1 payments");
    assert!(line.contains("status: 1 accounts"), "{line}");
    assert!(line.contains("receivable -300000 msat"), "{line}");

    // Read while the hub runs and holds the books open for writing.
    let out = status(&["--store", &store, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    let accounts = json["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{json}");
    let a = &accounts[0];
    assert_eq!(a["account"], "alice");
    assert_eq!(a["receivable_msat"], -300_000, "{json}");
    assert_eq!(a["received_msat"], 300_000);
    assert_eq!(a["receipts"], 1);
    assert_eq!(a["payable_msat"], 0);
    assert_eq!(a["payments"], 0);
    assert_eq!(a["payments_in_flight"], 0);
    // The paid invoice is no longer open; the others (and its replacement) are, within stock.
    let open = a["open_invoices"].as_u64().unwrap();
    assert!((3..=4).contains(&open), "{json}");
    assert_eq!(json["total"]["received_msat"], 300_000);
    assert_eq!(json["total"]["account"], "total");

    let out = status(&["--store", &store]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("alice"))
        .unwrap_or_else(|| panic!("no alice row in\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // account receivable payable paid payments fees received receipts open in-flight
    assert_eq!(
        &cells[..8],
        ["alice", "-300000", "0", "0", "0", "0", "300000", "1"],
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("total")), "{table}");
    drop(alice);
}

#[test]
fn status_refuses_bad_flags_and_missing_books_with_one_line() {
    let out = status(&["--bogus", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown option --bogus"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);

    let empty = Scratch::new("status-empty");
    let out = status(&["--store", &empty.arg("nothing-here"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no books at"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
    assert!(out.stdout.is_empty());
    // Nothing was created where there were no books.
    assert!(!empty.0.join("nothing-here").exists());

    let help = status(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--json"));
}
