//! The `ilp-lightning server` binary as a child process, on simulated LND nodes whose files sit
//! where programs read them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use ilp_plugin_lightning::lnd::sim::SimNetwork;
use serde_json::Value;

/// The program under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ilp-lightning");

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `tag` names it, for whoever finds one left by a killed test.
    pub fn new(tag: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "ilp-lightning-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// `self/rel`, as a flag value.
    pub fn arg(&self, rel: &str) -> String {
        self.0.join(rel).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Simulated LND nodes, every pair with a channel of 1 000 000 sat, each node's files in
/// `<dir>/<name>` as `ilp-lightning sim` writes them (tls.cert, admin.macaroon, node.json).
pub struct SimFiles {
    /// The running nodes.
    pub network: SimNetwork,
    /// Where their folders are.
    pub dir: Scratch,
}

impl SimFiles {
    /// Starts `names` and writes their files.
    pub fn start(names: &[&str]) -> SimFiles {
        let network = names
            .iter()
            .fold(SimNetwork::builder(), |b, n| b.node(n))
            .fully_connected(1_000_000)
            .start()
            .expect("simulated network starts");
        let dir = Scratch::new("lnd");
        for node in network.nodes() {
            node.write_files(&dir.0.join(node.name())).unwrap();
        }
        SimFiles { network, dir }
    }

    /// The folder of node `name`, for `--lnddir`.
    pub fn lnddir(&self, name: &str) -> String {
        self.dir.arg(name)
    }

    /// The local balance of node `name` over all its channels, msat.
    pub fn balance_msat(&self, name: &str) -> i128 {
        i128::from(self.network.node(name).unwrap().local_balance_msat())
    }
}

/// A running hub (`server --listen 127.0.0.1:0 --address test.hub` and more arguments); killed
/// when dropped.
pub struct HubProcess {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The JSON line it prints once it listens.
    pub first_line: Value,
    /// Its node and books, when [`HubProcess::start_on_sim`] made them.
    _owned: Option<(SimFiles, Scratch)>,
}

impl HubProcess {
    /// Starts the hub with `extra` arguments and waits until it says where it listens.
    pub fn start(extra: &[&str]) -> HubProcess {
        Self::start_with_env(extra, &[])
    }

    /// [`HubProcess::start`] with environment variables set for it.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &Path)]) -> HubProcess {
        let mut command = Command::new(BIN);
        command
            .args(["server", "--listen", "127.0.0.1:0", "--address", "test.hub"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start ilp-lightning server");
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
            _owned: None,
        }
    }

    /// A hub on a simulated node of its own, its books in a scratch directory: for tests of the
    /// packet path, whose clients need not settle.
    pub fn start_on_sim(extra: &[&str]) -> HubProcess {
        let lnd = SimFiles::start(&["hub"]);
        let store = Scratch::new("hub-store");
        let mut args = vec![
            "--lnddir".to_owned(),
            lnd.lnddir("hub"),
            "--store".to_owned(),
            store.arg("books"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut hub = Self::start(&args);
        hub._owned = Some((lnd, store));
        hub
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
