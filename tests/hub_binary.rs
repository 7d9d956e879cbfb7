//! The `ilp-lightning server` binary: what it refuses to start with, and its token store
//! (`--store`) binding an account to its first token across restarts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ilp_plugin_lightning::plugin::{LightningPlugin, PluginError};

const BIN: &str = env!("CARGO_BIN_EXE_ilp-lightning");

/// A running hub; killed when dropped.
struct Hub {
    child: Child,
    port: u16,
}

impl Hub {
    fn start(extra: &[&str]) -> Hub {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--address", "test.hub"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the hub");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let listen = line
            .split("\"listen\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no listen address in {line:?}"));
        let port = listen.rsplit(':').next().unwrap().parse().unwrap();
        Hub { child, port }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let hub = Hub::start(&["--credit-limit", "10", "--store", store_arg]);
        let alice = connect(hub.port, "alice", "first").unwrap();
        assert_eq!(alice.own_address().unwrap().as_str(), "test.hub.alice");
        alice.disconnect();
    }
    let hub = Hub::start(&["--credit-limit", "10", "--store", store_arg]);
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

    let mut child = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--address", "test.hub"])
        .args(["--credit-limit", "10", "--lnd-dir", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains(&format!("\"lnd_pubkey\":\"{}\"", node.pubkey_hex())),
        "{line}"
    );

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
