//! `ilp-lightning demo`: the README's first command. It runs a hub, clients and a routing node
//! on a simulated network in one process and exits 0 only when every book reconciles with the
//! channels; the figures it prints follow from its flags.
#![cfg(feature = "sim")]

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ilp-lightning");

fn demo(args: &[&str]) -> Output {
    Command::new(BIN).arg("demo").args(args).output().unwrap()
}

fn json_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one line on stdout: {stdout:?}; stderr: {stderr}"
    );
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"))
}

/// Checks what any successful run must show for `clients` × `packets` packets of `amount`.
fn check_run(out: &Output, clients: u64, packets: u64, amount: u64) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let line = json_line(out);
    assert_eq!(line["balances_ok"], true, "{line}");
    assert_eq!(line["packets_fulfilled"], clients * packets, "{line}");
    assert_eq!(line["ilp_amount_sat"], clients * packets * amount, "{line}");
    // Each client prefunds what it sends, and the hub pays each receiver what it took.
    assert_eq!(
        line["lightning_settled_sat"],
        2 * clients * packets * amount,
        "{line}"
    );
    // Every payment crosses the routing node, which charges at least 1 sat.
    let payments = line["lightning_payments"].as_u64().unwrap();
    assert!(payments >= 2 * clients, "{line}");
    assert!(
        line["fees_msat"].as_u64().unwrap() >= payments * 1000,
        "{line}"
    );
    assert!(stderr.contains("balances reconcile"), "{stderr}");
    assert_eq!(line["settlements"], line["lightning_payments"], "{line}");
    let settlements = line["settlements"].as_u64().unwrap();
    let calls = line["lnd_calls"].as_u64().unwrap();
    let per_settlement = line["lnd_calls_per_settlement"].as_f64().unwrap();
    assert!(
        (per_settlement - calls as f64 / settlements as f64).abs() < 0.06,
        "{line}"
    );
    // Every packet's money reached its receiver's books, and the waits are read off.
    let latency = &line["fulfill_to_received_ms"];
    assert_eq!(latency["packets"], clients * packets, "{line}");
    let median = latency["median"].as_f64().unwrap();
    let p99 = latency["p99"].as_f64().unwrap();
    assert!(median >= 0.0 && median <= p99, "{line}");
    line
}

/// Invoice mode: each settlement pays one invoice; every peer holds up to 20 of the other side's
/// (the hub's stock for each client, each client's for the hub), never more.
fn check_invoice_mode(line: &Value, clients: u64) {
    assert_eq!(line["settle"], "invoices", "{line}");
    let created = line["invoices_created"].as_u64().unwrap();
    let open = line["invoices_open_at_end"].as_u64().unwrap();
    assert!(created >= line["settlements"].as_u64().unwrap(), "{line}");
    assert!(open <= 2 * clients * 20 && open <= created, "{line}");
    assert!(line["lnd_calls"].as_u64().unwrap() > created, "{line}");
}

#[test]
fn the_demo_reconciles_every_balance_by_default() {
    let out = demo(&[]);
    let line = check_run(&out, 2, 50, 10);
    check_invoice_mode(&line, 2);
}

#[test]
fn keysend_mode_settles_without_invoices_and_prints_the_same_keys() {
    let invoices = check_run(&demo(&["--settle", "invoices"]), 2, 50, 10);
    check_invoice_mode(&invoices, 2);
    let keysend = check_run(&demo(&["--settle", "keysend"]), 2, 50, 10);
    assert_eq!(keysend["settle"], "keysend", "{keysend}");
    assert_eq!(keysend["invoices_created"], 0, "{keysend}");
    assert_eq!(keysend["invoices_open_at_end"], 0, "{keysend}");
    // No AddInvoice, no invoice to cancel: fewer node calls per settlement.
    assert!(
        keysend["lnd_calls_per_settlement"].as_f64().unwrap()
            < invoices["lnd_calls_per_settlement"].as_f64().unwrap(),
        "keysend {keysend}, invoices {invoices}"
    );
    let keys = |line: &Value| -> Vec<String> {
        let mut keys: Vec<String> = line.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&invoices), keys(&keysend));
}

#[test]
fn the_demo_follows_its_flags() {
    let out = demo(&["--clients", "3", "--packets", "4", "--amount", "7"]);
    let line = check_run(&out, 3, 4, 7);
    check_invoice_mode(&line, 3);
    assert_eq!(line["clients"], 3);
    assert_eq!(line["packets_rejected"], 0);
}

#[test]
fn bad_demo_flags_exit_2_with_one_line() {
    for (args, expect) in [
        (&["--clients", "1"][..], "--clients 1: from 2 to 50"),
        (&["--packets", "0"][..], "at least 1"),
        (&["--amount", "lots"][..], "--amount \"lots\""),
        (&["--bogus", "1"][..], "unknown option --bogus"),
        (
            &["--settle", "cash"][..],
            "--settle \"cash\": invoices or keysend",
        ),
    ] {
        let out = demo(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect), "{expect:?} not in {stderr}");
        assert!(out.stdout.is_empty());
    }
}
