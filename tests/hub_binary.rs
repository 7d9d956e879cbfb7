//! The `ilp-lightning server` binary: it settles over LND (a simulated node here, reached over
//! gRPC and TLS as a real one), finds the node by lncli's flags and LND's directory layout,
//! keeps its books and token bindings in its store across restarts, and refuses bad flags with
//! one line.
#![cfg(feature = "sim")]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::hub::{HubProcess, Scratch, SimFiles, BIN};
use ilp_plugin_lightning::plugin::{LightningPlugin, PluginError};

fn connect(port: u16, user: &str, token: &str) -> Result<LightningPlugin, PluginError> {
    let c = LightningPlugin::client(&format!("btp+ws://{user}:{token}@127.0.0.1:{port}"))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    c.connect()?;
    Ok(c)
}

fn server(args: &[&str], home: &Scratch) -> Output {
    Command::new(BIN)
        .arg("server")
        .args(args)
        .env("HOME", &home.0)
        .output()
        .unwrap()
}

/// Exit status 2, nothing on stdout, exactly one line on stderr, which contains `expect`.
fn assert_refused(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(expect), "{expect:?} not in {stderr}");
    assert!(stderr.starts_with("ilp-lightning server: "), "{stderr}");
}

#[test]
fn bad_flags_exit_2_with_one_line_that_names_the_problem() {
    let home = Scratch::new("home");
    let base = ["--listen", "127.0.0.1:0", "--address", "test.hub"];
    let with = |extra: &[&str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        server(&all, &home)
    };
    assert_refused(&server(&[], &home), "--listen is required");
    assert_refused(
        &server(&["--listen", "nowhere", "--address", "test.hub"], &home),
        "--listen: invalid socket address",
    );
    assert_refused(&with(&["--bogus", "1"]), "unknown option --bogus");
    assert_refused(&with(&["--credit-limit"]), "--credit-limit needs a value");
    assert_refused(&with(&["--settle-to", "-5"]), "--settle-to \"-5\"");
    assert_refused(
        &with(&["--lnd-dir", "/nonexistent/lnd"]),
        "--lnd-dir: /nonexistent/lnd",
    );
    assert_refused(&with(&["--network", "moon"]), "--network \"moon\"");
    // No node flags: lncli's default, ~/.lnd, which this HOME does not have.
    let lnd = home.0.join(".lnd");
    assert_refused(&with(&[]), &format!("{}", lnd.join("tls.cert").display()));
}

#[test]
fn the_hub_reaches_its_lnd_at_start_and_refuses_a_wrong_macaroon() {
    let lnd = SimFiles::start(&["hub"]);
    let node = lnd.network.node("hub").unwrap();
    let store = Scratch::new("hub-store");
    let hub = HubProcess::start(&["--lnddir", &lnd.lnddir("hub"), "--store", &store.arg("b")]);
    let line = &hub.first_line;
    assert_eq!(line["event"], "listening", "{line}");
    assert_eq!(line["address"], "test.hub");
    assert_eq!(
        line["lnd_pubkey"].as_str(),
        Some(node.pubkey_hex()),
        "{line}"
    );
    assert_eq!(line["network"], "regtest");
    // Settling by default: clients prefund.
    assert_eq!(line["settlement"], true);
    assert_eq!(line["credit_limit"], 0);
    drop(hub);

    std::fs::write(
        lnd.dir.0.join("hub").join("admin.macaroon"),
        b"not the node's macaroon",
    )
    .unwrap();
    let home = Scratch::new("home");
    let out = server(
        &[
            "--listen",
            "127.0.0.1:0",
            "--address",
            "test.hub",
            "--lnddir",
            &lnd.lnddir("hub"),
            "--store",
            &store.arg("b"),
        ],
        &home,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot use LND at 127.0.0.1:"), "{stderr}");
    assert!(out.stdout.is_empty(), "it must not listen");
}

/// A node laid out as LND lays itself out — `~/.lnd/tls.cert` and
/// `~/.lnd/data/chain/bitcoin/regtest/admin.macaroon` — is found by lncli's defaults and flags.
#[test]
fn lncli_flags_find_a_node_in_lnds_own_layout() {
    let lnd = SimFiles::start(&["hub"]);
    let node = lnd.network.node("hub").unwrap();
    let home = Scratch::new("home");
    let lnddir = home.0.join(".lnd");
    let chain = lnddir.join("data/chain/bitcoin/regtest");
    std::fs::create_dir_all(&chain).unwrap();
    std::fs::write(lnddir.join("tls.cert"), node.tls_cert_pem()).unwrap();
    std::fs::write(chain.join("admin.macaroon"), node.macaroon()).unwrap();
    let rpcserver = format!("localhost:{}", node.port());
    let store = Scratch::new("hub-store");

    // Defaults: ~/.lnd, with the network and the address given.
    let hub = HubProcess::start_with_env(
        &[
            "--network",
            "regtest",
            "--rpcserver",
            &rpcserver,
            "--store",
            &store.arg("a"),
        ],
        &[("HOME", &home.0)],
    );
    assert_eq!(
        hub.first_line["lnd_pubkey"].as_str(),
        Some(node.pubkey_hex())
    );
    drop(hub);

    // --lnddir elsewhere, and explicit files.
    let elsewhere = Scratch::new("lnddir");
    let moved = elsewhere.0.join("node-a");
    std::fs::rename(&lnddir, &moved).unwrap();
    let moved_arg = moved.to_str().unwrap();
    let hub = HubProcess::start_with_env(
        &[
            "--lnddir",
            moved_arg,
            "--network",
            "regtest",
            "--rpcserver",
            &rpcserver,
            "--store",
            &store.arg("b"),
        ],
        &[("HOME", &home.0)],
    );
    assert_eq!(
        hub.first_line["lnd_pubkey"].as_str(),
        Some(node.pubkey_hex())
    );
    drop(hub);
    let cert = moved.join("tls.cert");
    let macaroon = moved.join("data/chain/bitcoin/regtest/admin.macaroon");
    let hub = HubProcess::start_with_env(
        &[
            "--rpcserver",
            &rpcserver,
            "--tlscertpath",
            cert.to_str().unwrap(),
            "--macaroonpath",
            macaroon.to_str().unwrap(),
            "--store",
            &store.arg("c"),
        ],
        &[("HOME", &home.0)],
    );
    assert_eq!(
        hub.first_line["lnd_pubkey"].as_str(),
        Some(node.pubkey_hex())
    );
    drop(hub);

    // The network decides which macaroon: mainnet's is not there.
    let out = server(
        &[
            "--listen",
            "127.0.0.1:0",
            "--address",
            "test.hub",
            "--lnddir",
            moved_arg,
            "--rpcserver",
            &rpcserver,
        ],
        &home,
    );
    assert_refused(&out, "bitcoin/mainnet/admin.macaroon");
}

#[test]
fn the_store_binds_an_account_to_its_first_token_across_restarts() {
    let lnd = SimFiles::start(&["hub"]);
    let store = Scratch::new("hub-store");
    let args = [
        "--lnddir",
        &lnd.lnddir("hub"),
        "--store",
        &store.arg("books"),
    ];
    {
        let hub = HubProcess::start(&args);
        let alice = connect(hub.port, "alice", "first").unwrap();
        assert_eq!(alice.own_address().unwrap().as_str(), "test.hub.alice");
        alice.disconnect();
    }
    let hub = HubProcess::start(&args);
    let err = connect(hub.port, "alice", "second").unwrap_err();
    assert!(matches!(err, PluginError::PeerError { .. }), "{err}");
    let again = connect(hub.port, "alice", "first").unwrap();
    assert!(again.is_connected());
    again.disconnect();
}
