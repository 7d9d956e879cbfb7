//! Where the LND node is and how to authenticate to it, from the flags `server` and `client`
//! share: lncli's own (`--rpcserver`, `--lnddir`, `--tlscertpath`, `--macaroonpath`,
//! `--network`) with lncli's defaults, plus the older `--lnd-dir`, `--lnd-host`, `--lnd-port`,
//! `--tls-cert` and `--macaroon`.
//!
//! `--lnddir` reads LND's layout (`tls.cert`, `data/chain/bitcoin/NETWORK/admin.macaroon`) and
//! also a folder `ilp-lightning sim` wrote (`tls.cert`, `admin.macaroon`, and `node.json`, whose
//! `grpc` field gives the address when `--rpcserver` does not).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ilp_plugin_lightning::lnd::grpc::GrpcLightning;
use ilp_plugin_lightning::lnd::{Lightning, NodeInfo};

use crate::flags::{FlagError, Flags};

/// The node flags, for [`Flags::parse`].
pub const FLAGS: &[&str] = &[
    "rpcserver",
    "lnddir",
    "tlscertpath",
    "macaroonpath",
    "network",
    "lnd-dir",
    "lnd-host",
    "lnd-port",
    "tls-cert",
    "macaroon",
];

/// The node flags' lines of a usage text.
pub const USAGE: &str = "  node (lncli's flags and defaults):
    --rpcserver HOST:PORT   LND's gRPC address (default localhost:10009, or the grpc field
                            of LNDDIR/node.json in a folder `ilp-lightning sim` wrote)
    --lnddir DIR            LND's directory (default ~/.lnd); also a simulated node's folder
    --tlscertpath FILE      default LNDDIR/tls.cert
    --macaroonpath FILE     default LNDDIR/data/chain/bitcoin/NETWORK/admin.macaroon, else
                            LNDDIR/admin.macaroon; a baked macaroon with info:read
                            invoices:read invoices:write offchain:read offchain:write is enough
    --network NET           mainnet (default), testnet, testnet4, signet, regtest or simnet
    (--lnd-dir, --lnd-host, --lnd-port, --tls-cert and --macaroon are accepted too)";

/// LND's default gRPC port.
const DEFAULT_PORT: u16 = 10009;
/// lncli's default `--rpcserver`.
const DEFAULT_RPCSERVER: &str = "localhost:10009";
/// The networks lncli knows.
const NETWORKS: &[&str] = &[
    "mainnet", "testnet", "testnet4", "signet", "regtest", "simnet",
];

/// A resolved node: every file checked to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLocation {
    /// gRPC host.
    pub host: String,
    /// gRPC port.
    pub port: u16,
    /// The node's TLS certificate (PEM).
    pub tls_cert: PathBuf,
    /// The macaroon file (binary, as LND writes it).
    pub macaroon: PathBuf,
}

/// `~` and `~/...` with the home directory, as lncli does.
fn expand_home(path: &str) -> Result<PathBuf, FlagError> {
    let rest = match path {
        "~" => "",
        p => match p.strip_prefix("~/") {
            Some(rest) => rest,
            None => return Ok(PathBuf::from(p)),
        },
    };
    Ok(home_dir()?.join(rest))
}

/// The user's home directory (`HOME`).
pub fn home_dir() -> Result<PathBuf, FlagError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| FlagError("HOME is not set: give the paths explicitly".into()))
}

/// The value of whichever of two synonymous flags is given; both is an error.
fn one_of<'a>(flags: &'a Flags, name: &str, old: &str) -> Result<Option<&'a str>, FlagError> {
    match (flags.get(name), flags.get(old)) {
        (Some(_), Some(_)) => Err(FlagError(format!(
            "--{name} and --{old} are the same option: give one"
        ))),
        (new, old) => Ok(new.or(old)),
    }
}

fn existing_file(flag: &str, path: PathBuf) -> Result<PathBuf, FlagError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(FlagError(format!(
            "--{flag}: {} is not a readable file",
            path.display()
        )))
    }
}

/// `HOST:PORT`, `HOST`, `[V6]:PORT` or `[V6]`.
fn parse_host_port(flag: &str, text: &str) -> Result<(String, u16), FlagError> {
    let bad = || FlagError(format!("--{flag} {text:?} is not HOST:PORT"));
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return Err(bad()),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok((host.to_owned(), port))
}

/// The `grpc` field of a simulated node's `node.json`.
fn sim_grpc_address(node_json: &Path) -> Result<String, FlagError> {
    let text = std::fs::read_to_string(node_json).map_err(|e| {
        FlagError(format!(
            "--lnddir: cannot read {}: {e}",
            node_json.display()
        ))
    })?;
    json_string_field(&text, "grpc")
        .map(str::to_owned)
        .ok_or_else(|| {
            FlagError(format!(
                "--lnddir: {} has no \"grpc\": \"host:port\" field",
                node_json.display()
            ))
        })
}

/// The string value of `"key"` in a flat JSON object such as `node.json`; `None` when absent,
/// not a string, or escaped (a host:port never needs escapes).
fn json_string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let quoted_key = format!("\"{key}\"");
    let after_key = &text[text.find(&quoted_key)? + quoted_key.len()..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    let value = value.strip_prefix('"')?;
    let end = value.find('"')?;
    let value = &value[..end];
    (!value.contains('\\')).then_some(value)
}

/// Resolves the node flags (lncli's defaults for what is not given) and checks that the
/// certificate and macaroon exist.
pub fn parse(flags: &Flags) -> Result<NodeLocation, FlagError> {
    let network = flags.get("network").unwrap_or("mainnet");
    if !NETWORKS.contains(&network) {
        return Err(FlagError(format!(
            "--network {network:?}: one of {}",
            NETWORKS.join(", ")
        )));
    }
    let dir_flag = if flags.get("lnd-dir").is_some() {
        "lnd-dir"
    } else {
        "lnddir"
    };
    let dir = match one_of(flags, "lnddir", "lnd-dir")? {
        Some(dir) => {
            let dir = expand_home(dir)?;
            if !dir.is_dir() {
                return Err(FlagError(format!(
                    "--{dir_flag}: {} is not a directory",
                    dir.display()
                )));
            }
            Some(dir)
        }
        None => None,
    };
    // Only read when needed: without --lnddir, ~/.lnd matters only for the files not given.
    let dir_or_default = || match &dir {
        Some(dir) => Ok(dir.clone()),
        None => Ok(home_dir()?.join(".lnd")),
    };
    let node_json = dir.as_ref().map(|d| d.join("node.json"));

    let rpcserver = flags.get("rpcserver");
    let old_host = flags.get("lnd-host");
    let old_port = flags.get("lnd-port");
    let (host, port) = match (rpcserver, old_host, old_port) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(FlagError(
                "--rpcserver and --lnd-host/--lnd-port say the same thing: give one".into(),
            ))
        }
        (Some(text), None, None) => parse_host_port("rpcserver", text)?,
        (None, host, port) if host.is_some() || port.is_some() => {
            let port = match port {
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| FlagError(format!("--lnd-port {p:?} is not a port")))?,
                None => DEFAULT_PORT,
            };
            (host.unwrap_or("localhost").to_owned(), port)
        }
        _ => match node_json.as_ref().filter(|p| p.is_file()) {
            Some(node_json) => parse_host_port("lnddir", &sim_grpc_address(node_json)?)?,
            None => parse_host_port("rpcserver", DEFAULT_RPCSERVER)?,
        },
    };

    let cert_flag = if flags.get("tls-cert").is_some() {
        "tls-cert"
    } else {
        "tlscertpath"
    };
    let tls_cert = match one_of(flags, "tlscertpath", "tls-cert")? {
        Some(path) => existing_file(cert_flag, expand_home(path)?)?,
        None => existing_file(dir_flag, dir_or_default()?.join("tls.cert"))?,
    };

    let macaroon_flag = if flags.get("macaroon").is_some() {
        "macaroon"
    } else {
        "macaroonpath"
    };
    let macaroon = match one_of(flags, "macaroonpath", "macaroon")? {
        Some(path) => existing_file(macaroon_flag, expand_home(path)?)?,
        None => {
            let dir = dir_or_default()?;
            let lnd_layout = dir
                .join("data/chain/bitcoin")
                .join(network)
                .join("admin.macaroon");
            let sim_layout = dir.join("admin.macaroon");
            if lnd_layout.is_file() {
                lnd_layout
            } else if sim_layout.is_file() {
                sim_layout
            } else {
                return Err(FlagError(format!(
                    "no macaroon: neither {} nor {} exists (pass --macaroonpath, or --network \
                     for another network)",
                    lnd_layout.display(),
                    sim_layout.display()
                )));
            }
        }
    };
    Ok(NodeLocation {
        host,
        port,
        tls_cert,
        macaroon,
    })
}

/// Connects to the node and asks who it is (one GetInfo): a wrong address, certificate or
/// macaroon fails here, before anything else starts.
pub fn connect(location: &NodeLocation) -> Result<(Arc<dyn Lightning>, NodeInfo), String> {
    let node = GrpcLightning::builder()
        .host(location.host.as_str())
        .port(location.port)
        .tls_cert_path(&location.tls_cert)
        .macaroon_path(&location.macaroon)
        .connect()
        .map_err(|e| format!("cannot use LND at {}:{}: {e}", location.host, location.port))?;
    let info = node
        .node_info()
        .map_err(|e| format!("cannot use LND at {}:{}: {e}", location.host, location.port))?;
    Ok((Arc::new(node), info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Flags {
        let args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        Flags::parse(&args, FLAGS).unwrap()
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("ilp-node-flags-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn file(&self, rel: &str) -> PathBuf {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
            path
        }
        fn arg(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn lnddir_reads_lnds_layout_for_the_network() {
        let lnd = Scratch::new("lnd");
        let cert = lnd.file("tls.cert");
        let regtest = lnd.file("data/chain/bitcoin/regtest/admin.macaroon");
        let mainnet = lnd.file("data/chain/bitcoin/mainnet/admin.macaroon");
        let loc = parse(&flags(&["--lnddir", lnd.arg(), "--network", "regtest"])).unwrap();
        assert_eq!(
            loc,
            NodeLocation {
                host: "localhost".into(),
                port: 10009,
                tls_cert: cert.clone(),
                macaroon: regtest,
            }
        );
        let loc = parse(&flags(&[
            "--lnddir",
            lnd.arg(),
            "--rpcserver",
            "10.0.0.2:10010",
        ]))
        .unwrap();
        assert_eq!((loc.host.as_str(), loc.port), ("10.0.0.2", 10010));
        assert_eq!(loc.macaroon, mainnet);
        let err = parse(&flags(&["--lnddir", lnd.arg(), "--network", "signet"])).unwrap_err();
        assert!(err.0.contains("signet/admin.macaroon"), "{err}");
        let err = parse(&flags(&["--lnddir", lnd.arg(), "--network", "moon"])).unwrap_err();
        assert!(err.0.starts_with("--network \"moon\""), "{err}");
    }

    #[test]
    fn lnddir_reads_a_simulated_nodes_folder() {
        let sim = Scratch::new("sim");
        sim.file("tls.cert");
        let macaroon = sim.file("admin.macaroon");
        std::fs::write(
            sim.0.join("node.json"),
            "{\"pubkey\": \"02ab\", \"grpc\": \"127.0.0.1:41234\"}\n",
        )
        .unwrap();
        for flag in ["--lnddir", "--lnd-dir"] {
            let loc = parse(&flags(&[flag, sim.arg()])).unwrap();
            assert_eq!((loc.host.as_str(), loc.port), ("127.0.0.1", 41234));
            assert_eq!(loc.macaroon, macaroon);
        }
        // --rpcserver wins over node.json.
        let loc = parse(&flags(&["--lnddir", sim.arg(), "--rpcserver", "h:1"])).unwrap();
        assert_eq!((loc.host.as_str(), loc.port), ("h", 1));
    }

    #[test]
    fn explicit_files_and_the_older_flag_names() {
        let d = Scratch::new("explicit");
        let cert = d.file("c.pem");
        let mac = d.file("m.mac");
        let (c, m) = (cert.to_str().unwrap(), mac.to_str().unwrap());
        let loc = parse(&flags(&[
            "--rpcserver",
            "[::1]:10011",
            "--tlscertpath",
            c,
            "--macaroonpath",
            m,
        ]))
        .unwrap();
        assert_eq!((loc.host.as_str(), loc.port), ("::1", 10011));
        let old = parse(&flags(&[
            "--lnd-host",
            "node.example",
            "--tls-cert",
            c,
            "--macaroon",
            m,
        ]))
        .unwrap();
        assert_eq!((old.host.as_str(), old.port), ("node.example", 10009));
        assert_eq!((old.tls_cert, old.macaroon), (cert.clone(), mac.clone()));

        let both = parse(&flags(&[
            "--macaroon",
            m,
            "--macaroonpath",
            m,
            "--tls-cert",
            c,
        ]));
        assert!(both.unwrap_err().0.contains("same option"));
        let both = parse(&flags(&["--rpcserver", "a:1", "--lnd-port", "2"]));
        assert!(both.unwrap_err().0.contains("--rpcserver and --lnd-host"));
        let missing = parse(&flags(&["--tlscertpath", "/nonexistent/tls.cert"]));
        assert!(missing
            .unwrap_err()
            .0
            .starts_with("--tlscertpath: /nonexistent"));
        let bad = parse(&flags(&[
            "--rpcserver",
            "a:b",
            "--tls-cert",
            c,
            "--macaroon",
            m,
        ]));
        assert!(bad.unwrap_err().0.contains("not HOST:PORT"));
        let nodir = parse(&flags(&["--lnd-dir", "/nonexistent/lnd"]));
        assert!(nodir
            .unwrap_err()
            .0
            .starts_with("--lnd-dir: /nonexistent/lnd"));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("x", "localhost").unwrap(),
            ("localhost".into(), 10009)
        );
        assert_eq!(
            parse_host_port("x", "[::1]").unwrap(),
            ("::1".into(), 10009)
        );
        assert!(parse_host_port("x", "::1").is_err());
        assert!(parse_host_port("x", ":10009").is_err());
        assert!(parse_host_port("x", "h:0").is_err());
        assert_eq!(
            json_string_field("{\"grpc\": \"127.0.0.1:1\"}", "grpc"),
            Some("127.0.0.1:1")
        );
        assert_eq!(json_string_field("{\"grpc\": 5}", "grpc"), None);
    }
}
