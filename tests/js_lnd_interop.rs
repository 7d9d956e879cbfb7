//! LND clients from another language against `ilp-lightning sim`, the program other processes
//! use:
//! - tests/js-lnd/interop.js (@grpc/grpc-js on our proto/ files, bolt11 from npm) checks
//!   identity, an invoice decoded independently, a payment over SendPaymentV2 and the settle on
//!   SubscribeInvoices;
//! - tests/js-lnd/fidelity.js checks what issue 9 made the simulator do as LND does: the
//!   backlog repeating a settled invoice, keysend refused then accepted, the macaroon errors'
//!   code and texts, a zero preimage on a failed payment, and the JS reference plugin
//!   (ilp-plugin-lightning 1.0.0-beta.25, installed once in tests/js-lightning) paying through the
//!   bidirectional SendPayment of a node started as LND 0.20.
//!
//! Needs Node.js; the npm packages are installed on first run (`npm ci` from the lock files).
//! The scripts have deadlines of their own and always exit.
#![cfg(feature = "sim")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// An `ilp-lightning sim` process, killed when the test ends, pass or fail.
struct Sim {
    child: Child,
    dir: PathBuf,
}

impl Sim {
    /// Starts it with `args` and returns once every node of `nodes` listens (it prints a line
    /// per node then).
    fn start(name: &str, nodes: &[&str], args: &[&str]) -> Sim {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("js-lnd-{name}-{}-{nanos}", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
            .arg("sim")
            .arg("--nodes")
            .arg(nodes.join(","))
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ilp-lightning sim starts");
        let stdout = child.stdout.take().unwrap();
        let mut sim = Sim { child, dir };
        let announced: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(nodes.len())
            .map(Result::unwrap)
            .collect();
        if announced.len() != nodes.len() {
            let _ = sim.child.kill();
            panic!("ilp-lightning sim {args:?} stopped early: {announced:?}");
        }
        sim
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `node <script> <args>` to its end (the scripts exit on their own deadlines) and returns
/// its standard output, failing the test with its messages if it failed.
fn run_node(js_dir: &Path, script: &str, args: &[&Path]) -> String {
    let output = Command::new("node")
        .arg(js_dir.join(script))
        .args(args)
        .env("GRPC_SSL_CIPHER_SUITES", "HIGH+ECDSA")
        .stdin(Stdio::null())
        .output()
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "{script} failed: {stderr}");
    stdout
}

#[test]
fn javascript_lnd_client_works_against_the_simulator() {
    let js_dir = common::js::require_packages("js-lnd", "@grpc/grpc-js");
    let sim = Sim::start("interop", &["alice", "bob"], &[]);
    let stdout = run_node(
        &js_dir,
        "interop.js",
        &[&sim.dir().join("bob"), &sim.dir().join("alice")],
    );
    assert!(stdout.contains("js interop: all checks passed"));
    assert!(stdout.contains("ok: bolt11 payee is the node pubkey"));
    assert!(stdout.contains("ok: SubscribeInvoices delivered the add event first"));
}

#[test]
fn javascript_clients_see_lnds_behaviour_in_the_simulator() {
    let js_dir = common::js::require_packages("js-lnd", "@grpc/grpc-js");
    common::js::require_packages("js-lightning", "ilp-plugin-lightning");
    let newest = Sim::start(
        "newest",
        &["alice", "bob", "carol"],
        &["--accept-keysend", "carol"],
    );
    let old = Sim::start("old", &["dave", "erin"], &["--lnd-version", "0.20"]);
    let stdout = run_node(&js_dir, "fidelity.js", &[newest.dir(), old.dir()]);
    assert!(stdout.contains("js fidelity: all checks passed"));
    // One line per point: the script cannot pass without making each check.
    for point in ["ok: 1:", "ok: 2:", "ok: 3:", "ok: 4:", "ok: 7:"] {
        assert!(stdout.contains(point), "no check of {point}");
    }
    assert!(stdout
        .contains("ok: 7: the JS plugin's payInvoice pays over the bidirectional SendPayment"));
}
