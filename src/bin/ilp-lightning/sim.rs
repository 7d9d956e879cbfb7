//! `ilp-lightning sim`: runs simulated LND nodes as real gRPC+TLS servers until killed, for
//! integration tests and for other programs (LND clients in any language).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ilp_plugin_lightning::lnd::sim::{SimNetwork, SUPPORTED_LND_MINORS};

const USAGE: &str = "  sim --nodes alice,bob[,...] --dir DIR [--port BASE] [--capacity SAT]
      [--accept-keysend NODE[,NODE...]] [--lnd-version 0.18|0.19|0.20|0.21]
                     run simulated LND nodes (gRPC+TLS+macaroon), a funded channel between
                     every pair; writes DIR/<node>/{tls.cert,admin.macaroon,node.json}.
                     --accept-keysend: those nodes accept keysend (LND's --accept-keysend).
                     --lnd-version: the LND the nodes play (default the newest, 0.21); 0.20
                     and earlier also serve lnrpc SendPayment and SendPaymentSync";

/// Default capacity of every channel, in satoshi.
const DEFAULT_CAPACITY_SAT: u64 = 10_000_000;

struct Options {
    nodes: Vec<String>,
    dir: PathBuf,
    base_port: Option<u16>,
    capacity_sat: u64,
    accept_keysend: Vec<String>,
    lnd_version: Option<String>,
}

/// A comma-separated list of node names; `flag` names the option in errors.
fn node_list(flag: &str, text: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err(format!("{flag} needs at least one name"));
    }
    if let Some(bad) = list.iter().find(|name| {
        !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }) {
        return Err(format!(
            "node name {bad:?} must be letters, digits, '-' or '_' (it names a directory)"
        ));
    }
    Ok(list)
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut nodes = None;
    let mut dir = None;
    let mut base_port = None;
    let mut capacity_sat = DEFAULT_CAPACITY_SAT;
    let mut accept_keysend = Vec::new();
    let mut lnd_version = None;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => nodes = Some(node_list(flag, value()?)?),
            "--accept-keysend" => accept_keysend.extend(node_list(flag, value()?)?),
            "--lnd-version" => {
                let text = value()?;
                let minor = text
                    .strip_prefix("0.")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|minor| minor.parse::<u32>().ok());
                match minor {
                    Some(minor)
                        if SUPPORTED_LND_MINORS.contains(&minor)
                            && text.chars().all(|c| c.is_ascii_digit() || c == '.') =>
                    {
                        lnd_version = Some(text.clone())
                    }
                    _ => {
                        return Err(format!(
                            "--lnd-version {text:?}: the simulator plays LND 0.18 to 0.21 \
                             (for example 0.20 or 0.20.3)"
                        ))
                    }
                }
            }
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--port" => {
                let text = value()?;
                base_port = Some(
                    text.parse::<u16>()
                        .ok()
                        .filter(|port| *port != 0)
                        .ok_or_else(|| format!("--port {text:?} is not a port number (1-65535)"))?,
                );
            }
            "--capacity" => {
                let text = value()?;
                capacity_sat =
                    text.parse::<u64>()
                        .ok()
                        .filter(|sat| *sat > 0)
                        .ok_or_else(|| {
                            format!("--capacity {text:?} is not a positive number of satoshi")
                        })?;
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let nodes = nodes.ok_or("--nodes is required")?;
    if let Some(unknown) = accept_keysend.iter().find(|name| !nodes.contains(name)) {
        return Err(format!(
            "--accept-keysend names {unknown:?}, which is not in --nodes"
        ));
    }
    Ok(Options {
        nodes,
        dir: dir.ok_or("--dir is required")?,
        base_port,
        capacity_sat,
        accept_keysend,
        lnd_version,
    })
}

/// Starts the network, writes each node's files, prints `NAME PUBKEY 127.0.0.1:PORT` per node,
/// then blocks until the process is killed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("usage: ilp-lightning\n{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("ilp-lightning sim: {message}\nusage:\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = SimNetwork::builder().fully_connected(options.capacity_sat);
    for name in &options.nodes {
        builder = builder.node(name);
    }
    if let Some(base) = options.base_port {
        builder = builder.base_port(base);
    }
    for name in &options.accept_keysend {
        builder = builder.accept_keysend(name);
    }
    if let Some(version) = &options.lnd_version {
        builder = builder.lnd_version(version);
    }
    let network = match builder.start() {
        Ok(network) => network,
        Err(error) => {
            eprintln!("ilp-lightning sim: {error}");
            return ExitCode::FAILURE;
        }
    };
    for node in network.nodes() {
        let dir = options.dir.join(node.name());
        if let Err(error) = node.write_files(&dir) {
            eprintln!("ilp-lightning sim: writing {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    let mut out = std::io::stdout().lock();
    for node in network.nodes() {
        let _ = writeln!(
            out,
            "{} {} {}",
            node.name(),
            node.pubkey_hex(),
            node.grpc_address()
        );
    }
    let _ = out.flush();
    drop(out);
    // Serve until killed: the servers run on grpcio's threads; this one has nothing to do.
    loop {
        std::thread::park();
    }
}
