//! The `ilp-lightning server` binary: what it refuses to start with, and its token store
//! (`--store`) binding an account to its first token across restarts.

mod common;

use std::process::Command;
use std::time::Duration;

use common::hub::HubProcess;
use ilp_plugin_lightning::plugin::{LightningPlugin, PluginError};

const BIN: &str = env!("CARGO_BIN_EXE_ilp-lightning");

fn connect(port: u16, user: &str, token: &str) -> Result<LightningPlugin, PluginError> {
    let c = LightningPlugin::client(&format!("btp+ws://{user}:{token}@127.0.0.1:{port}"))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    c.connect()?;
    Ok(c)
}

#[test]
fn without_lnd_or_credit_the_hub_refuses_to_start_and_says_why() {
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--address", "test.hub"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("settlement needs LND: pass --lnd-dir or --lnd-host"),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--address",
            "test.hub",
            "--credit-limit",
            "5",
        ])
        .args(["--lnd-dir", "/nonexistent/lnd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lnd-dir"));
    let out = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "nowhere",
            "--address",
            "test.hub",
            "--credit-limit",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn the_store_binds_an_account_to_its_first_token_across_restarts() {
    let store = std::env::temp_dir().join(format!("ilp-hub-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let store_arg = store.to_str().unwrap();
    {
        let hub = HubProcess::start(&["--credit-limit", "10", "--store", store_arg]);
        let alice = connect(hub.port, "alice", "first").unwrap();
        assert_eq!(alice.own_address().unwrap().as_str(), "test.hub.alice");
        alice.disconnect();
    }
    let hub = HubProcess::start(&["--credit-limit", "10", "--store", store_arg]);
    let err = connect(hub.port, "alice", "second").unwrap_err();
    assert!(matches!(err, PluginError::PeerError { .. }), "{err}");
    let again = connect(hub.port, "alice", "first").unwrap();
    assert!(again.is_connected());
    again.disconnect();
    drop(hub);
    std::fs::remove_dir_all(&store).unwrap();
}

/// With `--lnd-dir` as `ilp-lightning sim` writes it, the hub reaches the node at start and names
/// it; a wrong macaroon stops it with a clear error before it listens.
#[cfg(feature = "sim")]
#[test]
fn the_hub_reaches_its_lnd_at_start_and_refuses_a_wrong_macaroon() {
    use ilp_plugin_lightning::lnd::sim::SimNetwork;

    let net = SimNetwork::builder().node("hub").start().unwrap();
    let node = net.node("hub").unwrap();
    let dir = std::env::temp_dir().join(format!("hub-lnd-{}", std::process::id()));
    node.write_files(&dir).unwrap();

    let hub = HubProcess::start(&["--credit-limit", "10", "--lnd-dir", dir.to_str().unwrap()]);
    assert_eq!(
        hub.first_line["lnd_pubkey"].as_str(),
        Some(node.pubkey_hex()),
        "{}",
        hub.first_line
    );
    drop(hub);

    std::fs::write(dir.join("admin.macaroon"), b"not the node's macaroon").unwrap();
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--address", "test.hub"])
        .args(["--credit-limit", "10", "--lnd-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot use LND"), "{stderr}");
    assert!(stdout_is_empty(&out.stdout), "it must not listen");
}

fn stdout_is_empty(stdout: &[u8]) -> bool {
    stdout.iter().all(u8::is_ascii_whitespace)
}
