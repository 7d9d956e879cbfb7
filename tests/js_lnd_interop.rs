//! An LND client from another language against the simulator: tests/js-lnd/interop.js
//! (@grpc/grpc-js on our proto/ files, bolt11 from npm) checks identity, an invoice decoded
//! independently, a payment over SendPaymentV2 and the settle on SubscribeInvoices.
//!
//! Needs Node.js; the npm packages are installed on first run (`npm ci` in tests/js-lnd).
#![cfg(feature = "sim")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, SimNetwork};

#[test]
fn javascript_lnd_client_works_against_the_simulator() {
    let js_dir = common::js::require_packages("js-lnd", "@grpc/grpc-js");

    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel("alice", "bob", 1_000_000, ChannelPolicy::LND_DEFAULT)
        .start()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("js-lnd-interop-{}", std::process::id()));
    let (payee, payer) = (dir.join("bob"), dir.join("alice"));
    net.node("bob").unwrap().write_files(&payee).unwrap();
    net.node("alice").unwrap().write_files(&payer).unwrap();

    let mut child = Command::new("node")
        .arg(js_dir.join("interop.js"))
        .arg(&payee)
        .arg(&payer)
        .env("GRPC_SSL_CIPHER_SUITES", "HIGH+ECDSA")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    // The script has its own 20 s deadlines; this one only guards against a hung process.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("interop.js did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "interop.js failed: {stderr}");
    assert!(stdout.contains("js interop: all checks passed"));
    assert!(stdout.contains("ok: bolt11 payee is the node pubkey"));
}
