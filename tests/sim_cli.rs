//! `ilp-lightning sim` as another program would use it: start it, read its lines and files,
//! talk LND's gRPC to the nodes it announced.
#![cfg(feature = "sim")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grpcio::{CallOption, ChannelBuilder, ChannelCredentialsBuilder, Environment, MetadataBuilder};
use ilp_plugin_lightning::lnd::methods;
use ilp_plugin_lightning::lnd::proto::lightning;

/// Kills the simulator when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("ilp-lightning-sim-{}-{nanos}", std::process::id()))
}

/// Starts `ilp-lightning sim` with `args` (after `--dir`) and returns it with its per-node
/// lines (name, pubkey, address), read once every node listens.
fn start_sim(dir: &std::path::Path, nodes: usize, args: &[&str]) -> (Running, Vec<Vec<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
        .arg("sim")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    // One line per node once it listens; reading blocks until then (or EOF if it died).
    let lines: Vec<Vec<String>> = BufReader::new(stdout)
        .lines()
        .take(nodes)
        .map(|line| line.unwrap().split(' ').map(str::to_string).collect())
        .collect();
    assert_eq!(lines.len(), nodes, "{lines:?}");
    (running, lines)
}

/// A client for the node whose files are in `node_dir`, and the call options with its macaroon.
fn client(
    env: &Arc<Environment>,
    node_dir: &std::path::Path,
    address: &str,
) -> (grpcio::Client, CallOption) {
    let cert = std::fs::read(node_dir.join("tls.cert")).unwrap();
    assert!(cert.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let macaroon = std::fs::read(node_dir.join("admin.macaroon")).unwrap();
    let port = address.strip_prefix("127.0.0.1:").unwrap();
    let channel = ChannelBuilder::new(env.clone())
        .set_credentials(ChannelCredentialsBuilder::new().root_cert(cert).build())
        .connect(&format!("localhost:{port}"));
    let mut metadata = MetadataBuilder::new();
    metadata
        .add_str("macaroon", &hex::encode(&macaroon))
        .unwrap();
    let options = CallOption::default()
        .headers(metadata.build())
        .timeout(Duration::from_secs(30));
    (grpcio::Client::new(channel), options)
}

#[test]
fn sim_command_serves_nodes_described_by_their_files() {
    let dir = scratch_dir();
    let (_running, lines) = start_sim(&dir, 3, &["--nodes", "alice,bob,carol"]);
    let env = Arc::new(Environment::new(1));
    for (fields, name) in lines.iter().zip(["alice", "bob", "carol"]) {
        assert_eq!(fields.len(), 3, "{fields:?}");
        assert_eq!(fields[0], name);
        let node_dir = dir.join(name);
        let json = std::fs::read_to_string(node_dir.join("node.json")).unwrap();
        assert_eq!(
            json.trim(),
            format!(
                "{{\"pubkey\": \"{}\", \"grpc\": \"{}\"}}",
                fields[1], fields[2]
            )
        );
        let (client, options) = client(&env, &node_dir, &fields[2]);
        let info = client
            .unary_call(
                &methods::GET_INFO,
                &lightning::GetInfoRequest::new(),
                options.clone(),
            )
            .unwrap();
        assert_eq!(info.identity_pubkey, fields[1]);
        assert_eq!(info.alias, name);
        // The newest LND by default, and no keysend unless asked for.
        assert!(info.version.starts_with("0.21."), "{}", info.version);
        assert!(!info.features.contains_key(&55));
        // A funded channel to each of the two others.
        let channels = client
            .unary_call(
                &methods::LIST_CHANNELS,
                &lightning::ListChannelsRequest::new(),
                options,
            )
            .unwrap();
        assert_eq!(channels.channels.len(), 2);
        assert!(channels.channels.iter().all(|c| c.local_balance > 0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sim_command_plays_an_older_lnd_and_accepts_keysend_where_asked() {
    let dir = scratch_dir();
    let (_running, lines) = start_sim(
        &dir,
        2,
        &[
            "--nodes",
            "alice,bob",
            "--accept-keysend",
            "bob",
            "--lnd-version",
            "0.20",
        ],
    );
    let env = Arc::new(Environment::new(1));
    for (fields, keysend) in lines.iter().zip([false, true]) {
        let (client, options) = client(&env, &dir.join(&fields[0]), &fields[2]);
        let info = client
            .unary_call(
                &methods::GET_INFO,
                &lightning::GetInfoRequest::new(),
                options.clone(),
            )
            .unwrap();
        assert_eq!(info.version, "0.20.0-beta commit=sim");
        assert_eq!(info.features.contains_key(&55), keysend, "{}", fields[0]);
        // 0.20 still has SendPaymentSync: a malformed request reaches it (and is refused).
        let mut request = lightning::SendRequest::new();
        request.payment_request = "lnbcrt1garbage".to_string();
        request.amt = 1;
        let refused = client
            .unary_call(&methods::SEND_PAYMENT_SYNC, &request, options)
            .unwrap_err();
        match refused {
            grpcio::Error::RpcFailure(status) => {
                assert_eq!(status.code(), grpcio::RpcStatusCode::UNKNOWN)
            }
            other => panic!("{other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sim_command_refuses_bad_arguments() {
    let output = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
        .args(["sim", "--nodes", "alice", "--port", "banana", "--dir", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--port \"banana\""), "{stderr}");
    for (args, complaint) in [
        (
            vec!["--nodes", "alice", "--accept-keysend", "bob"],
            "--accept-keysend names \"bob\", which is not in --nodes",
        ),
        (
            vec!["--nodes", "alice", "--lnd-version", "0.17"],
            "the simulator plays LND 0.18 to 0.21",
        ),
        (
            vec!["--nodes", "alice", "--lnd-version", "latest"],
            "the simulator plays LND 0.18 to 0.21",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
            .arg("sim")
            .args(&args)
            .args(["--dir", "x"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
}
