//! `ilp-lightning server`: a hub. The plugin in server role, plus routing of Prepares between its
//! own clients. It prints one JSON line when it listens, then serves until killed.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ilp_plugin_lightning::btp::auth::FileTokenStore;
use ilp_plugin_lightning::ilp::Address;
use ilp_plugin_lightning::lnd::grpc::GrpcLightning;
use ilp_plugin_lightning::lnd::{Lightning, NodeInfo};
use ilp_plugin_lightning::plugin::{route_between_clients, LightningPlugin, PluginEvent};

use crate::flags::{FlagError, Flags};
use crate::json::Object;

/// The `server` lines of the command's usage text.
pub const USAGE: &str = "  server --listen ADDR --address ILP_ADDRESS
         (--lnd-dir DIR | --lnd-host H [--lnd-port P] --tls-cert FILE --macaroon FILE)
         [--store DIR] [--credit-limit SAT] [--max-packet-amount SAT]
                     run a hub: BTP server for many clients, routing Prepares between them";

const FLAGS: &[&str] = &[
    "listen",
    "address",
    "lnd-dir",
    "lnd-host",
    "lnd-port",
    "tls-cert",
    "macaroon",
    "store",
    "credit-limit",
    "max-packet-amount",
];

/// LND's default gRPC port.
const DEFAULT_LND_PORT: u16 = 10009;

/// Where the hub's LND is and how to authenticate to it. The hub connects at start (one GetInfo),
/// so a wrong certificate, macaroon or address stops it with a clear error; settling over it
/// comes with the settlement work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LndLocation {
    /// A directory as `ilp-lightning sim` writes it: tls.cert, admin.macaroon, node.json.
    Dir(PathBuf),
    /// An explicit node.
    Node {
        /// gRPC host.
        host: String,
        /// gRPC port.
        port: u16,
        /// The node's TLS certificate (PEM).
        tls_cert: PathBuf,
        /// A macaroon file (binary, as LND writes it).
        macaroon: PathBuf,
    },
}

/// The hub's settings, from its flags.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--listen`: where the BTP server listens.
    pub listen: SocketAddr,
    /// `--address`: the hub's ILP address; clients get `<address>.<account>`.
    pub address: Address,
    /// Where LND is, if given.
    pub lnd: Option<LndLocation>,
    /// `--store`: the directory that keeps account-to-token bindings across restarts.
    pub store: Option<PathBuf>,
    /// `--credit-limit`: how much a client may owe the hub (never 0 without settlement).
    pub credit_limit: u64,
    /// `--max-packet-amount`: larger Prepares get F08.
    pub max_packet_amount: Option<u64>,
}

/// Why the hub cannot start.
#[derive(Debug)]
pub enum ServerError {
    /// A flag is missing, unknown or malformed.
    Usage(FlagError),
    /// A credit limit of 0 without working settlement would refuse every packet.
    NeedsSettlement {
        /// Whether LND settings were given (this build cannot use them yet).
        lnd_given: bool,
    },
    /// The plugin could not be built, or could not listen.
    Start(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Usage(e) => write!(f, "{e}"),
            ServerError::NeedsSettlement { lnd_given: false } => f.write_str(
                "settlement needs LND: pass --lnd-dir or --lnd-host/--tls-cert/--macaroon, \
                 or raise --credit-limit",
            ),
            ServerError::NeedsSettlement { lnd_given: true } => f.write_str(
                "settlement needs LND, and this build cannot settle over LND yet: \
                 raise --credit-limit to run on credit alone",
            ),
            ServerError::Start(m) => f.write_str(m),
        }
    }
}

impl From<FlagError> for ServerError {
    fn from(e: FlagError) -> Self {
        ServerError::Usage(e)
    }
}

fn existing_file(flag: &str, path: &Path) -> Result<PathBuf, FlagError> {
    if path.is_file() {
        Ok(path.to_owned())
    } else {
        Err(FlagError(format!(
            "--{flag}: {} is not a readable file",
            path.display()
        )))
    }
}

fn parse_lnd(flags: &Flags) -> Result<Option<LndLocation>, FlagError> {
    let explicit = ["lnd-host", "lnd-port", "tls-cert", "macaroon"];
    let any_explicit = explicit.iter().any(|f| flags.get(f).is_some());
    match (flags.get("lnd-dir"), any_explicit) {
        (Some(_), true) => Err(FlagError(
            "--lnd-dir and --lnd-host/--lnd-port/--tls-cert/--macaroon exclude each other".into(),
        )),
        (Some(dir), false) => {
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                return Err(FlagError(format!(
                    "--lnd-dir: {} is not a directory",
                    dir.display()
                )));
            }
            for file in ["tls.cert", "admin.macaroon", "node.json"] {
                existing_file("lnd-dir", &dir.join(file))?;
            }
            Ok(Some(LndLocation::Dir(dir)))
        }
        (None, true) => Ok(Some(LndLocation::Node {
            host: flags.required("lnd-host")?.to_owned(),
            port: flags.parsed("lnd-port")?.unwrap_or(DEFAULT_LND_PORT),
            tls_cert: existing_file("tls-cert", Path::new(flags.required("tls-cert")?))?,
            macaroon: existing_file("macaroon", Path::new(flags.required("macaroon")?))?,
        })),
        (None, false) => Ok(None),
    }
}

/// Reads and checks the flags.
pub fn parse(args: &[String]) -> Result<ServerOptions, ServerError> {
    let flags = Flags::parse(args, FLAGS)?;
    let listen = flags.required("listen")?.parse().map_err(|e| {
        FlagError(format!(
            "--listen: {e} (expected HOST:PORT, e.g. 127.0.0.1:7768)"
        ))
    })?;
    let address = Address::new(flags.required("address")?)
        .map_err(|e| FlagError(format!("--address: {e}")))?;
    let options = ServerOptions {
        listen,
        address,
        lnd: parse_lnd(&flags)?,
        store: flags.get("store").map(PathBuf::from),
        credit_limit: flags.parsed("credit-limit")?.unwrap_or(0),
        max_packet_amount: flags.parsed("max-packet-amount")?,
    };
    // Without settlement nothing ever pays a client's debt down, so the credit limit is all a
    // client can spend: zero would make a hub that refuses every packet.
    if options.credit_limit == 0 {
        return Err(ServerError::NeedsSettlement {
            lnd_given: options.lnd.is_some(),
        });
    }
    Ok(options)
}

/// Starts the hub; it serves on its own threads until the plugin is dropped.
pub fn start(options: &ServerOptions) -> Result<Arc<LightningPlugin>, ServerError> {
    let mut builder = LightningPlugin::server(options.listen, options.address.clone())
        .credit_limit(Some(options.credit_limit))
        .handler_threads(32)
        .on_event(|event| match event {
            PluginEvent::AccountConnected(a) => log::info!("account {a} connected"),
            PluginEvent::AccountDisconnected(a) => log::info!("account {a} disconnected"),
            other => log::info!("{other:?}"),
        });
    if let Some(max) = options.max_packet_amount {
        builder = builder.max_packet_amount(max);
    }
    if let Some(dir) = &options.store {
        let store = FileTokenStore::open(dir)
            .map_err(|e| ServerError::Start(format!("--store {}: {e}", dir.display())))?;
        builder = builder.token_store(Arc::new(store));
    }
    let hub = Arc::new(
        builder
            .build()
            .map_err(|e| ServerError::Start(e.to_string()))?,
    );
    route_between_clients(&hub).map_err(|e| ServerError::Start(e.to_string()))?;
    hub.connect()
        .map_err(|e| ServerError::Start(e.to_string()))?;
    Ok(hub)
}

/// Connects to the hub's LND and asks who it is: the check that its address, certificate and
/// macaroon are right, made before the hub accepts anyone.
pub fn connect_lnd(location: &LndLocation) -> Result<NodeInfo, ServerError> {
    let builder = match location {
        LndLocation::Dir(dir) => {
            let node_json = dir.join("node.json");
            let text = std::fs::read_to_string(&node_json).map_err(|e| {
                ServerError::Start(format!(
                    "--lnd-dir: cannot read {}: {e}",
                    node_json.display()
                ))
            })?;
            let grpc = json_string_field(&text, "grpc").ok_or_else(|| {
                ServerError::Start(format!(
                    "--lnd-dir: {} has no \"grpc\": \"host:port\" field",
                    node_json.display()
                ))
            })?;
            let (host, port) = grpc
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    ServerError::Start(format!(
                        "--lnd-dir: {}: \"grpc\" is {grpc:?}, not host:port",
                        node_json.display()
                    ))
                })?;
            GrpcLightning::builder()
                .host(host)
                .port(port)
                .tls_cert_path(dir.join("tls.cert"))
                .macaroon_path(dir.join("admin.macaroon"))
        }
        LndLocation::Node {
            host,
            port,
            tls_cert,
            macaroon,
        } => GrpcLightning::builder()
            .host(host.as_str())
            .port(*port)
            .tls_cert_path(tls_cert)
            .macaroon_path(macaroon),
    };
    let node = builder
        .connect()
        .map_err(|e| ServerError::Start(format!("cannot use LND: {e}")))?;
    node.node_info()
        .map_err(|e| ServerError::Start(format!("cannot use LND: {e}")))
}

/// The string value of `"key"` in a flat JSON object such as `node.json`, which the simulator
/// writes; `None` when absent, not a string, or escaped (a host:port never needs escapes).
fn json_string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let quoted_key = format!("\"{key}\"");
    let after_key = &text[text.find(&quoted_key)? + quoted_key.len()..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    let value = value.strip_prefix('"')?;
    let end = value.find('"')?;
    let value = &value[..end];
    (!value.contains('\\')).then_some(value)
}

/// `ilp-lightning server ...`: exit code 2 for bad flags, 1 when it cannot start.
pub fn run(args: &[String]) -> std::process::ExitCode {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ilp-lightning server: {e}");
            eprintln!("usage:\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let lnd_identity = match &options.lnd {
        None => None,
        Some(location) => match connect_lnd(location) {
            Ok(info) => {
                eprintln!(
                    "ilp-lightning server: LND {} ({}, {}) reached; this build does not settle \
                     over it yet",
                    info.pubkey, info.network, info.version
                );
                Some(info)
            }
            Err(e) => {
                eprintln!("ilp-lightning server: {e}");
                return std::process::ExitCode::from(1);
            }
        },
    };
    eprintln!(
        "ilp-lightning server: running WITHOUT settlement: each client may owe up to {} sat, \
         which nothing collects",
        options.credit_limit
    );
    let hub = match start(&options) {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("ilp-lightning server: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let listen = hub.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut line = Object::new();
    line.string("event", "listening")
        .string("listen", &listen)
        .string("address", options.address.as_str())
        .number("credit_limit", options.credit_limit)
        .boolean("settlement", false);
    if let Some(info) = &lnd_identity {
        line.string("lnd_pubkey", &info.pubkey.to_string());
    }
    println!("{}", line.finish());
    // Serve until the process is killed; the plugin's threads do the work.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_lnd_a_credit_limit_is_required() {
        let err = parse(&args(&["--listen", "127.0.0.1:0", "--address", "test.hub"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("settlement needs LND: pass --lnd-dir"),
            "{err}"
        );
        let ok = parse(&args(&[
            "--listen",
            "127.0.0.1:0",
            "--address",
            "test.hub",
            "--credit-limit",
            "1000",
        ]))
        .unwrap();
        assert_eq!(ok.credit_limit, 1000);
        assert_eq!(ok.lnd, None);
        assert_eq!(ok.address.as_str(), "test.hub");
    }

    #[test]
    fn lnd_flags_are_checked() {
        let dir = std::env::temp_dir().join(format!("ilp-hub-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = [
            "--listen",
            "127.0.0.1:0",
            "--address",
            "test.hub",
            "--credit-limit",
            "5",
        ];
        let with = |extra: &[&str]| {
            let mut all: Vec<&str> = base.to_vec();
            all.extend_from_slice(extra);
            parse(&args(&all))
        };
        let d = dir.to_str().unwrap();
        let missing = with(&["--lnd-dir", d]).unwrap_err().to_string();
        assert!(missing.contains("tls.cert"), "{missing}");
        for f in ["tls.cert", "admin.macaroon", "node.json"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        assert_eq!(
            with(&["--lnd-dir", d]).unwrap().lnd,
            Some(LndLocation::Dir(dir.clone()))
        );
        let cert = dir.join("tls.cert");
        let mac = dir.join("admin.macaroon");
        let node = with(&[
            "--lnd-host",
            "localhost",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--macaroon",
            mac.to_str().unwrap(),
        ])
        .unwrap();
        assert!(matches!(
            node.lnd,
            Some(LndLocation::Node { port: 10009, .. })
        ));
        let no_mac = with(&[
            "--lnd-host",
            "localhost",
            "--tls-cert",
            cert.to_str().unwrap(),
        ]);
        assert!(no_mac
            .unwrap_err()
            .to_string()
            .contains("--macaroon is required"));
        let both = with(&["--lnd-dir", d, "--lnd-host", "x"])
            .unwrap_err()
            .to_string();
        assert!(both.contains("exclude each other"), "{both}");
        // LND given but credit 0: still refused, with the reason.
        let zero = parse(&args(&[
            "--listen",
            "127.0.0.1:0",
            "--address",
            "test.hub",
            "--lnd-dir",
            d,
        ]));
        assert!(zero
            .unwrap_err()
            .to_string()
            .contains("raise --credit-limit"));
        assert!(with(&["--address", "bad..address"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
