//! The `ilp-lightning server` binary as a child process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running hub (`server --listen 127.0.0.1:0 --address test.hub` and more arguments); killed
/// when dropped.
pub struct HubProcess {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The JSON line it prints once it listens.
    pub first_line: Value,
}

impl HubProcess {
    /// Starts the hub with `extra` arguments and waits until it says where it listens.
    pub fn start(extra: &[&str]) -> HubProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
            .args(["server", "--listen", "127.0.0.1:0", "--address", "test.hub"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ilp-lightning server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read hub's first line");
        let first_line: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("hub's first line is not JSON ({e}): {line:?}"));
        let listen = first_line["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("no listen address in {line:?}"));
        let port = listen.rsplit(':').next().unwrap().parse().expect("port");
        HubProcess {
            child,
            port,
            first_line,
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
