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
