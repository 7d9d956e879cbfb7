//! `ilp-lightning bench --store DIR|redis://... [--hubs N]`: the packet path of a hub with its
//! books in a store. N hub plugins (N > 1 needs Redis: they share it as separate processes
//! would, each with its own connections and cluster membership) settle over one simulated
//! node; a sending client on the first hub sends 1-sat Prepares from C threads to a receiving
//! client on the last, which fulfils them: every Prepare is reserved, posted and owed in the
//! books, and with two hubs forwarded between them through Redis. No payment is made during
//! the run (no settle threshold, no credit limit): the figure is the booking's cost. With
//! Redis, the line also says how many Redis commands (those run inside scripts included) each
//! packet cost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ilp_plugin_lightning::btp::auth::TokenStore;
use ilp_plugin_lightning::ilp::{condition_of, Address, PrepareBuilder, Timestamp};
use ilp_plugin_lightning::lnd::sim::SimNetwork;
use ilp_plugin_lightning::plugin::{route_between_clients, LightningPlugin};
use ilp_plugin_lightning::settlement::{EmbeddedStore, SettlementOptions, Store};

use crate::bench::FULFILLMENT;

/// What the run's books are in.
pub enum BenchStore {
    /// An embedded store in this (new, emptied) folder.
    Dir(PathBuf),
    /// Redis at this URL (its database is flushed first).
    Redis(String),
}

type Opened = (Arc<dyn Store>, Arc<dyn TokenStore>);

fn open(store: &BenchStore) -> Result<Opened, String> {
    match store {
        BenchStore::Dir(dir) => {
            let store = EmbeddedStore::open(dir)
                .map(Arc::new)
                .map_err(|e| format!("--store {}: {e}", dir.display()))?;
            Ok((store.clone(), store))
        }
        BenchStore::Redis(url) => open_redis(url),
    }
}

#[cfg(feature = "redis")]
fn open_redis(url: &str) -> Result<Opened, String> {
    let store = ilp_plugin_lightning::settlement::RedisStore::open(url)
        .map(Arc::new)
        .map_err(|e| format!("--store {url}: {e}"))?;
    Ok((store.clone(), store))
}

#[cfg(not(feature = "redis"))]
fn open_redis(url: &str) -> Result<Opened, String> {
    Err(format!("--store {url}: built without the redis feature"))
}

/// Commands Redis ran so far (INFO commandstats, INFO itself left out), and empties it first
/// if `flush`.
#[cfg(feature = "redis")]
fn redis_commands(url: &str, flush: bool) -> Result<u64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut con = client.get_connection().map_err(|e| e.to_string())?;
    if flush {
        redis::cmd("FLUSHDB")
            .query::<()>(&mut con)
            .map_err(|e| e.to_string())?;
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    Ok(stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

#[cfg(not(feature = "redis"))]
fn redis_commands(_: &str, _: bool) -> Result<u64, String> {
    Ok(0)
}

#[cfg(feature = "redis")]
type Membership = Option<ilp_plugin_lightning::plugin::Cluster>;
#[cfg(not(feature = "redis"))]
type Membership = Option<()>;

#[cfg(feature = "redis")]
fn join(store: &BenchStore, hub: &Arc<LightningPlugin>) -> Result<Membership, String> {
    use ilp_plugin_lightning::plugin::{Cluster, ClusterOptions};
    match store {
        BenchStore::Redis(url) => Cluster::join(url, hub, ClusterOptions::default()).map(Some),
        BenchStore::Dir(_) => Ok(None),
    }
}

#[cfg(not(feature = "redis"))]
fn join(_: &BenchStore, _: &Arc<LightningPlugin>) -> Result<Membership, String> {
    Ok(None)
}

/// Runs the bench; one JSON line.
pub fn bench(
    store: &BenchStore,
    hubs: usize,
    packets: usize,
    concurrency: usize,
) -> Result<String, String> {
    if hubs > 1 && !matches!(store, BenchStore::Redis(_)) {
        return Err("--hubs above 1 needs --store redis://...".into());
    }
    let url = match store {
        BenchStore::Redis(url) => Some(url.clone()),
        BenchStore::Dir(dir) => {
            let _ = std::fs::remove_dir_all(dir);
            None
        }
    };
    if let Some(url) = &url {
        redis_commands(url, true)?;
    }
    let network = SimNetwork::builder()
        .node("hub")
        .start()
        .map_err(|e| format!("simulated node: {e}"))?;
    let hub_node = network.node("hub").ok_or("no hub node")?;
    let options = SettlementOptions {
        credit_limit: None,
        settle_threshold: None,
        ..SettlementOptions::server()
    };
    let mut plugins = Vec::new();
    let mut memberships = Vec::new();
    for _ in 0..hubs.max(1) {
        let (books, tokens) = open(store)?;
        let hub = Arc::new(
            LightningPlugin::server(
                "127.0.0.1:0".parse().unwrap(),
                Address::new("test.bench").unwrap(),
            )
            .lightning(crate::demo::node_client(hub_node)?)
            .store(books)
            .token_store(tokens)
            .settlement_options(options.clone())
            .handler_threads(concurrency.clamp(2, 16))
            .build()
            .map_err(|e| e.to_string())?,
        );
        route_between_clients(&hub).map_err(|e| e.to_string())?;
        hub.register_money_handler(|_| Ok(()))
            .map_err(|e| e.to_string())?;
        hub.connect().map_err(|e| format!("hub: {e}"))?;
        memberships.push(join(store, &hub)?);
        plugins.push(hub);
    }
    let port_of = |hub: &LightningPlugin| hub.local_addr().map(|a| a.port()).unwrap_or(0);
    let receiver = LightningPlugin::client(&format!(
        "btp+ws://sink:secret@127.0.0.1:{}",
        port_of(plugins.last().ok_or("no hub")?)
    ))
    .build()
    .map_err(|e| e.to_string())?;
    crate::bench::fulfil_every_prepare(&receiver)?;
    receiver.connect().map_err(|e| format!("receiver: {e}"))?;
    let sender = Arc::new(
        LightningPlugin::client(&format!(
            "btp+ws://bench:secret@127.0.0.1:{}",
            port_of(&plugins[0])
        ))
        .handler_threads(1)
        .build()
        .map_err(|e| e.to_string())?,
    );
    sender.connect().map_err(|e| format!("sender: {e}"))?;
    let condition = condition_of(&FULFILLMENT);
    let prepare = Arc::new(
        PrepareBuilder {
            amount: 1,
            expires_at: Timestamp::now().add_millis(600_000),
            execution_condition: &condition,
            destination: "test.bench.sink",
            data: &[],
        }
        .build()
        .map_err(|e| e.to_string())?
        .to_bytes(),
    );
    // The receiver is reachable from the first hub once registered: the first Fulfill says so.
    let warm_until = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = sender.send_data(&prepare).map_err(|e| e.to_string())?;
        if reply.first() == Some(&13) {
            break;
        }
        if Instant::now() > warm_until {
            return Err("the receiver never became reachable".into());
        }
        std::thread::park_timeout(std::time::Duration::from_millis(50));
    }
    let commands_before = match &url {
        Some(url) => redis_commands(url, false)?,
        None => 0,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let fulfilled = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..concurrency {
        let (sender, prepare, next, fulfilled) = (
            sender.clone(),
            prepare.clone(),
            next.clone(),
            fulfilled.clone(),
        );
        workers.push(
            std::thread::Builder::new()
                .name(format!("bench-{i}"))
                .spawn(move || {
                    while next.fetch_add(1, Ordering::Relaxed) < packets {
                        if matches!(
                            sender.send_data(&prepare).as_deref().map(|r| r.first()),
                            Ok(Some(13))
                        ) {
                            fulfilled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .map_err(|e| format!("cannot start a bench thread: {e}"))?,
        );
    }
    for worker in workers {
        worker.join().map_err(|_| "a bench thread panicked")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let commands = match &url {
        Some(url) => Some(redis_commands(url, false)? - commands_before),
        None => None,
    };
    sender.disconnect();
    receiver.disconnect();
    drop(memberships);
    for hub in &plugins {
        hub.disconnect();
    }
    let mut line = format!(
        "{{\"impl\":\"rust-ilp-plugin-lightning\",\"store\":\"{}\",\"hubs\":{},\"packets\":{packets},\
         \"concurrency\":{concurrency},\"fulfilled\":{},\"seconds\":{seconds:.3},\"packets_per_s\":{}",
        match store {
            BenchStore::Dir(_) => "embedded",
            BenchStore::Redis(_) => "redis",
        },
        hubs.max(1),
        fulfilled.load(Ordering::Relaxed),
        (packets as f64 / seconds).round() as u64,
    );
    if let Some(commands) = commands {
        line.push_str(&format!(
            ",\"redis_commands_per_packet\":{:.1}",
            commands as f64 / packets as f64
        ));
    }
    line.push('}');
    Ok(line)
}
