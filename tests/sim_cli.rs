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

#[test]
fn sim_command_serves_nodes_described_by_their_files() {
    let dir = scratch_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
        .args(["sim", "--nodes", "alice,bob,carol", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    // One line per node once it listens; reading blocks until then (or EOF if it died).
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");

    let env = Arc::new(Environment::new(1));
    for (line, name) in lines.iter().zip(["alice", "bob", "carol"]) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
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
        let cert = std::fs::read(node_dir.join("tls.cert")).unwrap();
        assert!(cert.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let macaroon = std::fs::read(node_dir.join("admin.macaroon")).unwrap();
        let port = fields[2].strip_prefix("127.0.0.1:").unwrap();

        let channel = ChannelBuilder::new(env.clone())
            .set_credentials(ChannelCredentialsBuilder::new().root_cert(cert).build())
            .connect(&format!("localhost:{port}"));
        let client = grpcio::Client::new(channel);
        let mut metadata = MetadataBuilder::new();
        metadata
            .add_str("macaroon", &hex::encode(&macaroon))
            .unwrap();
        let options = CallOption::default()
            .headers(metadata.build())
            .timeout(Duration::from_secs(30));
        let info = client
            .unary_call(
                &methods::GET_INFO,
                &lightning::GetInfoRequest::new(),
                options.clone(),
            )
            .unwrap();
        assert_eq!(info.identity_pubkey, fields[1]);
        assert_eq!(info.alias, name);
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
fn sim_command_refuses_bad_arguments() {
    let output = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
        .args(["sim", "--nodes", "alice", "--port", "banana", "--dir", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--port \"banana\""), "{stderr}");
}
