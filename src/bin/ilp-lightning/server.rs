//! `ilp-lightning server`: a hub. The plugin in server role, routing Prepares between its own
//! clients and settling with each of them over LND, its books in an embedded store (or, built
//! with the `redis` feature, in Redis). It prints one JSON line when it listens, then serves
//! until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ilp_plugin_lightning::btp::auth::{AllowList, TokenStore};
use ilp_plugin_lightning::btp::AccountLimits;
use ilp_plugin_lightning::ilp::Address;
use ilp_plugin_lightning::lnd::{Lightning, NodeInfo};
use ilp_plugin_lightning::plugin::{route_between_clients, LightningPlugin, PluginEvent};
use ilp_plugin_lightning::settlement::{SettlementOptions, Status, Store};

use crate::flags::{command_options, FlagError, Flags};
use crate::json::Object;
use crate::node::{self, NodeLocation};
use crate::{settle, status};

/// The one-line summary `ilp-lightning --help` shows.
pub const SUMMARY: &str = "  server --listen HOST:PORT --address ILP_ADDRESS [options]
                     a hub: BTP server for many clients, routing between them and settling
                     with each over LND (`ilp-lightning server --help`)";

/// The command's usage text.
pub fn usage() -> String {
    format!(
        "usage: ilp-lightning server --listen HOST:PORT --address ILP_ADDRESS [options]

A hub: a BTP server for many clients (one account each, named by the user part of their
btp+ws URI), routing Prepares between them and settling with each over Lightning through LND.
It prints one JSON line when it listens ({{\"event\":\"listening\",...}}), then serves until killed.

  --listen HOST:PORT        where the BTP server listens (port 0: any free port)
  --address ILP_ADDRESS     the hub's ILP address; account USER gets ILP_ADDRESS.USER
  --max-packet-amount SAT   larger Prepares get F08 (default: no maximum)
  --max-in-flight N         Prepares one account may have waiting on the next hop at once;
                            past it T03 (default {DEFAULT_MAX_IN_FLIGHT}, a quarter of the
                            {HANDLER_THREADS} handler threads: no client can stall the others)
  --forward-margin-ms MS    a forwarded Prepare expires this much before the one that came
                            in (default 1000; less time left: R02)
  --max-accounts N          most accounts bound at once; past it a new account's auth is
                            refused and its connection closed (default {DEFAULT_MAX_ACCOUNTS})
  --max-new-accounts-per-minute N
                            most new accounts bound in any minute (default
                            {DEFAULT_NEW_PER_MINUTE}; 0: no limit)
  --accounts FILE           only the accounts in FILE get in, each with its token's SHA-256:
                            lines `ACCOUNT SHA256HEX` (or `SHA256HEX` alone for a client that
                            sends no username: its account is base64url of the hash); `#`
                            starts a comment. `printf %s TOKEN | sha256sum` gives the hash
  --expire-unused-after SECONDS
                            forget an account (its token binding) unused this long that
                            never settled and owes nothing either way (default
                            {DEFAULT_EXPIRE_SECS}, a day; 0: never)
  --allow-short-tokens true accept tokens under 16 bytes from clients that send no username
                            (their account, the token's hash, is public in their ILP
                            address: a short token can be found from it offline)
  --status-every SECONDS    log a one-line summary of the books this often (default 60;
                            0: never); `ilp-lightning status` shows them per account
{}
{}
    --store redis://HOST:PORT/DB
                            the books and tokens in Redis, shared by every hub process given
                            the same URL (needs a build with `--features redis`)",
        node::USAGE,
        settle::USAGE
    )
}

const OWN_FLAGS: &[&str] = &[
    "listen",
    "address",
    "max-packet-amount",
    "max-in-flight",
    "forward-margin-ms",
    "status-every",
    "max-accounts",
    "max-new-accounts-per-minute",
    "accounts",
    "expire-unused-after",
    "allow-short-tokens",
];

/// `--max-accounts` unless given.
const DEFAULT_MAX_ACCOUNTS: usize = 10_000;
/// `--max-new-accounts-per-minute` unless given.
const DEFAULT_NEW_PER_MINUTE: u32 = 600;
/// `--expire-unused-after` unless given: a day.
const DEFAULT_EXPIRE_SECS: u64 = 86_400;

/// Threads that run the hub's incoming requests, each held while its Prepare waits on the next
/// hop.
const HANDLER_THREADS: usize = 32;
/// `--max-in-flight` unless given.
const DEFAULT_MAX_IN_FLIGHT: usize = HANDLER_THREADS / 4;

/// How often the hub logs its summary line by default.
const DEFAULT_STATUS_EVERY: Duration = Duration::from_secs(60);

/// The hub's settings, from its flags.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--listen`: where the BTP server listens.
    pub listen: SocketAddr,
    /// `--address`: the hub's ILP address; clients get `<address>.<account>`.
    pub address: Address,
    /// The node it settles through.
    pub node: NodeLocation,
    /// `--store`: the books and the account-to-token bindings.
    pub store: StoreLocation,
    /// The settlement rules (server defaults: credit limit 0, pay after every Fulfill).
    pub settlement: SettlementOptions,
    /// `--max-packet-amount`: larger Prepares get F08.
    pub max_packet_amount: Option<u64>,
    /// `--max-in-flight`: Prepares one account may have in the hub at once.
    pub max_in_flight: usize,
    /// `--forward-margin-ms`: how much earlier a forwarded Prepare expires.
    pub forward_margin: Duration,
    /// `--status-every`: how often to log the summary line (`None`: never).
    pub status_every: Option<Duration>,
    /// `--max-accounts`, `--max-new-accounts-per-minute`, `--accounts`,
    /// `--expire-unused-after`, `--allow-short-tokens`.
    pub accounts: AccountLimits,
}

/// The books, and the token bindings (the same object for both stores of this crate).
type OpenedStore = (Arc<dyn Store>, Arc<dyn TokenStore>);

/// Where the hub keeps its books and token bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An embedded database in this folder: one process at a time.
    Dir(PathBuf),
    /// A Redis database (`redis://HOST:PORT/DB`), shared by several hub processes.
    Redis(String),
}

impl StoreLocation {
    fn describe(&self) -> String {
        match self {
            StoreLocation::Dir(dir) => dir.display().to_string(),
            StoreLocation::Redis(url) => url.clone(),
        }
    }

    /// Opens the books there: the store, and the same object as the token store.
    fn open(&self) -> Result<OpenedStore, String> {
        match self {
            StoreLocation::Dir(dir) => {
                let store = settle::open_store(dir)?;
                Ok((store.clone(), store))
            }
            StoreLocation::Redis(url) => open_redis(url),
        }
    }
}

#[cfg(feature = "redis")]
fn open_redis(url: &str) -> Result<OpenedStore, String> {
    let store = ilp_plugin_lightning::settlement::RedisStore::open(url)
        .map(Arc::new)
        .map_err(|e| format!("--store {url}: {e}"))?;
    Ok((store.clone(), store))
}

/// This process's place among the hub processes sharing a Redis (nothing with another store).
#[cfg(feature = "redis")]
type Membership = Option<ilp_plugin_lightning::plugin::Cluster>;
#[cfg(not(feature = "redis"))]
type Membership = ();

/// With the books in Redis, joins the other hub processes on it: accounts attached to any of
/// them are reachable from every one.
#[cfg(feature = "redis")]
fn join_cluster(store: &StoreLocation, hub: &Arc<LightningPlugin>) -> Result<Membership, String> {
    use ilp_plugin_lightning::plugin::{Cluster, ClusterOptions};
    match store {
        StoreLocation::Redis(url) => Cluster::join(url, hub, ClusterOptions::default())
            .map(Some)
            .map_err(|e| format!("--store {url}: cannot join the other hub processes: {e}")),
        StoreLocation::Dir(_) => Ok(None),
    }
}

#[cfg(not(feature = "redis"))]
fn join_cluster(_: &StoreLocation, _: &Arc<LightningPlugin>) -> Result<Membership, String> {
    Ok(())
}

#[cfg(not(feature = "redis"))]
fn open_redis(url: &str) -> Result<OpenedStore, String> {
    Err(format!(
        "--store {url}: this ilp-lightning was built without Redis support (build it with \
         `cargo build --release --features redis`)"
    ))
}

/// Reads and checks the flags.
pub fn parse(args: &[String]) -> Result<ServerOptions, FlagError> {
    let known: Vec<&str> = [OWN_FLAGS, node::FLAGS, settle::FLAGS].concat();
    let flags = Flags::parse(args, &known)?;
    let listen = flags.required("listen")?.parse().map_err(|e| {
        FlagError(format!(
            "--listen: {e} (expected HOST:PORT, e.g. 127.0.0.1:7768)"
        ))
    })?;
    let address = Address::new(flags.required("address")?)
        .map_err(|e| FlagError(format!("--address: {e}")))?;
    Ok(ServerOptions {
        listen,
        address,
        settlement: settle::options(&flags, SettlementOptions::server())?,
        max_packet_amount: flags.parsed("max-packet-amount")?,
        status_every: match flags.parsed::<u64>("status-every")? {
            None => Some(DEFAULT_STATUS_EVERY),
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(seconds)),
        },
        max_in_flight: match flags.parsed::<usize>("max-in-flight")? {
            Some(0) => return Err(FlagError("--max-in-flight: must be at least 1".into())),
            Some(max) => max,
            None => DEFAULT_MAX_IN_FLIGHT,
        },
        forward_margin: Duration::from_millis(flags.parsed("forward-margin-ms")?.unwrap_or(1_000)),
        store: match flags.get("store") {
            Some(url) if url.starts_with("redis://") => StoreLocation::Redis(url.to_owned()),
            _ => StoreLocation::Dir(settle::store_dir(&flags, "server")?),
        },
        accounts: account_limits(&flags)?,
        node: node::parse(&flags)?,
    })
}

fn account_limits(flags: &Flags) -> Result<AccountLimits, FlagError> {
    Ok(AccountLimits {
        max_accounts: match flags.parsed::<usize>("max-accounts")? {
            Some(0) => return Err(FlagError("--max-accounts: must be at least 1".into())),
            Some(max) => max,
            None => DEFAULT_MAX_ACCOUNTS,
        },
        max_new_per_minute: match flags.parsed::<u32>("max-new-accounts-per-minute")? {
            Some(0) => None,
            Some(max) => Some(max),
            None => Some(DEFAULT_NEW_PER_MINUTE),
        },
        allow_list: match flags.get("accounts") {
            Some(path) => Some(Arc::new(
                AllowList::load(path).map_err(|e| FlagError(format!("--accounts: {e}")))?,
            )),
            None => None,
        },
        expire_unused_after: match flags
            .parsed::<u64>("expire-unused-after")?
            .unwrap_or(DEFAULT_EXPIRE_SECS)
        {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        },
        // The plugin fills it in from the books.
        may_expire: None,
        allow_short_tokens: flags.parsed("allow-short-tokens")?.unwrap_or(false),
    })
}

/// Starts the hub on `node` with its books in `store` and its token bindings in `tokens`; it
/// serves on its own threads until the plugin is dropped.
pub fn start(
    options: &ServerOptions,
    node: Arc<dyn Lightning>,
    store: Arc<dyn Store>,
    tokens: Arc<dyn TokenStore>,
) -> Result<Arc<LightningPlugin>, String> {
    let mut builder = LightningPlugin::server(options.listen, options.address.clone())
        .lightning(node)
        .store(store)
        .token_store(tokens)
        .settlement_options(options.settlement.clone())
        .handler_threads(HANDLER_THREADS)
        .max_in_flight(options.max_in_flight)
        .forward_expiry_margin(options.forward_margin)
        .account_limits(options.accounts.clone())
        .on_event(|event| match event {
            PluginEvent::AccountConnected(a) => log::info!("account {a} connected"),
            PluginEvent::AccountDisconnected(a) => log::info!("account {a} disconnected"),
            PluginEvent::MoneyReceived { account, amount } => {
                log::info!("{account} paid {amount} sat over Lightning")
            }
            PluginEvent::MoneySent {
                account,
                amount_msat,
                fee_msat,
            } => log::info!("paid {account} {amount_msat} msat (fee {fee_msat} msat)"),
            other => log::info!("{other:?}"),
        });
    if let Some(max) = options.max_packet_amount {
        builder = builder.max_packet_amount(max);
    }
    let hub = Arc::new(builder.build().map_err(|e| e.to_string())?);
    route_between_clients(&hub).map_err(|e| e.to_string())?;
    // What clients pay is booked by settlement; the hub has nothing more to do with it.
    hub.register_money_handler(|_| Ok(()))
        .map_err(|e| e.to_string())?;
    hub.connect().map_err(|e| e.to_string())?;
    Ok(hub)
}

/// The line printed once the hub listens.
fn listening_line(options: &ServerOptions, hub: &LightningPlugin, info: &NodeInfo) -> String {
    let listen = hub.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut line = Object::new();
    line.string("event", "listening")
        .string("listen", &listen)
        .string("address", options.address.as_str())
        .number(
            "credit_limit",
            options.settlement.credit_limit.unwrap_or(u64::MAX),
        )
        .boolean("settlement", true)
        .string("lnd_pubkey", &info.pubkey.to_string())
        .string("network", &info.network.to_string())
        .string("store", &options.store.describe());
    line.finish()
}

/// `ilp-lightning server ...`: exit code 2 for bad flags, 1 when it cannot start.
pub fn run(args: &[String]) -> ExitCode {
    let options = match command_options("server", args, usage, parse) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    let started = node::connect(&options.node).and_then(|(node, info)| {
        let (store, tokens) = options.store.open()?;
        let hub = start(&options, node, store.clone(), tokens)?;
        let membership = join_cluster(&options.store, &hub)?;
        Ok((hub, info, store, membership))
    });
    let (hub, info, store, _membership) = match started {
        Ok(started) => started,
        Err(e) => {
            eprintln!("ilp-lightning server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", listening_line(&options, &hub, &info));
    // Serve until the process is killed; the plugin's threads do the work, this one logs the
    // summary now and then.
    let _hub = hub;
    let Some(every) = options.status_every else {
        loop {
            std::thread::park();
        }
    };
    let mut next = Instant::now() + every;
    loop {
        let now = Instant::now();
        if now < next {
            std::thread::park_timeout(next - now);
            continue;
        }
        next += every;
        match Status::of(&*store) {
            Ok(status) => {
                log::info!(target: status::LOG_TARGET, "{}", status::summary_line(&status))
            }
            Err(e) => log::warn!("status: cannot read the books: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_make_the_options_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("ilp-hub-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["tls.cert", "admin.macaroon"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let d = dir.to_str().unwrap();
        let base = [
            "--listen",
            "127.0.0.1:0",
            "--address",
            "test.hub",
            "--lnddir",
            d,
        ];
        let with = |extra: &[&str]| {
            let mut all: Vec<&str> = base.to_vec();
            all.extend_from_slice(extra);
            parse(&args(&all))
        };
        let ok = with(&["--store", "/tmp/s", "--max-packet-amount", "5"]).unwrap();
        // Settles by default: clients prefund, the hub pays after every Fulfill.
        assert_eq!(ok.settlement.credit_limit, Some(0));
        assert_eq!(ok.settlement.settle_threshold, Some(0));
        assert_eq!(ok.max_packet_amount, Some(5));
        assert_eq!(ok.accounts.max_accounts, 10_000);
        assert_eq!(ok.accounts.max_new_per_minute, Some(600));
        assert_eq!(
            ok.accounts.expire_unused_after,
            Some(Duration::from_secs(86_400))
        );
        assert!(!ok.accounts.allow_short_tokens && ok.accounts.allow_list.is_none());
        let list = dir.join("accounts");
        std::fs::write(&list, format!("alice {}\n", "ab".repeat(32))).unwrap();
        let limited = with(&[
            "--max-accounts",
            "3",
            "--max-new-accounts-per-minute",
            "0",
            "--expire-unused-after",
            "0",
            "--allow-short-tokens",
            "true",
            "--accounts",
            list.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(limited.accounts.max_accounts, 3);
        assert_eq!(limited.accounts.max_new_per_minute, None);
        assert_eq!(limited.accounts.expire_unused_after, None);
        assert!(limited.accounts.allow_short_tokens);
        assert_eq!(
            limited.accounts.allow_list.as_ref().map(|l| l.len()),
            Some(1)
        );
        assert_eq!(ok.store, StoreLocation::Dir(PathBuf::from("/tmp/s")));
        let shared = with(&["--store", "redis://127.0.0.1:6379/2"]).unwrap();
        assert_eq!(
            shared.store,
            StoreLocation::Redis("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(ok.node.macaroon, dir.join("admin.macaroon"));
        assert_eq!(ok.address.as_str(), "test.hub");

        let err = |extra: &[&str]| with(extra).unwrap_err().0;
        assert!(err(&["--address", "x"]).contains("--address given twice"));
        assert!(err(&["--bogus", "1"]).contains("unknown option --bogus"));
        assert!(err(&["--credit-limit", "lots"]).starts_with("--credit-limit \"lots\""));
        assert!(err(&["--max-accounts", "0"]).contains("at least 1"));
        std::fs::write(&list, "alice nothex\n").unwrap();
        assert!(err(&["--accounts", list.to_str().unwrap()]).contains("line 1"));
        let no_listen = parse(&args(&["--address", "test.hub", "--lnddir", d])).unwrap_err();
        assert!(no_listen.0.contains("--listen is required"));
        let bad_address = parse(&args(&[
            "--listen",
            "127.0.0.1:0",
            "--address",
            "bad..address",
            "--lnddir",
            d,
        ]));
        assert!(bad_address.unwrap_err().0.starts_with("--address:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn a_redis_store_without_the_feature_is_refused_with_how_to_build_it() {
        let Err(refused) = StoreLocation::Redis("redis://127.0.0.1:1/0".into()).open() else {
            panic!("opened a Redis store without the redis feature");
        };
        assert!(refused.contains("--features redis"), "{refused}");
    }
}
