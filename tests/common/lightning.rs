//! A simulated Lightning network and plugins that settle over it, for the settlement tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use ilp_plugin_lightning::ilp::{Address, Packet, Prepare};
use ilp_plugin_lightning::lnd::grpc::GrpcLightning;
use ilp_plugin_lightning::lnd::sim::{SimNetwork, SimNode};
use ilp_plugin_lightning::lnd::Lightning;
use ilp_plugin_lightning::plugin::{
    route_between_clients, HandlerError, LightningPlugin, PluginBuilder, PluginEvent,
};

use super::ilp::fulfill;

/// Long enough for a loaded machine; only a broken build waits this long.
pub const WAIT: Duration = Duration::from_secs(60);

/// Every pair of `names` with a channel of 1 000 000 sat, half on each side.
pub fn network(names: &[&str]) -> SimNetwork {
    names
        .iter()
        .fold(SimNetwork::builder(), |b, n| b.node(n))
        .fully_connected(1_000_000)
        .start()
        .expect("simulated network starts")
}

/// Like [`network`], with every node playing LND `version` (e.g. "0.20", whose lnrpc
/// SendPayment the JS plugin needs).
pub fn network_of_version(names: &[&str], version: &str) -> SimNetwork {
    names
        .iter()
        .fold(SimNetwork::builder(), |b, n| b.node(n))
        .fully_connected(1_000_000)
        .lnd_version(version)
        .start()
        .expect("simulated network starts")
}

/// A gRPC client of `node`.
pub fn node_client(node: &SimNode) -> Arc<dyn Lightning> {
    Arc::new(
        GrpcLightning::builder()
            .host("127.0.0.1")
            .port(node.port())
            .tls_cert(node.tls_cert_pem())
            .macaroon(node.macaroon())
            .call_timeout(Duration::from_secs(10))
            .max_reconnect_backoff(Duration::from_millis(500))
            .connect()
            .unwrap_or_else(|e| panic!("connect to {}: {e}", node.name())),
    )
}

/// The plugin events a test waits for.
pub struct Events(pub Receiver<PluginEvent>);

impl Events {
    /// Waits for an event `want` accepts; panics after [`WAIT`].
    pub fn wait_for(&self, what: &str, mut want: impl FnMut(&PluginEvent) -> bool) -> PluginEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(event) if want(&event) => return event,
                Ok(_) => {}
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// Waits until `account` has been credited `total` units in all (over any number of
    /// MoneyReceived events).
    pub fn wait_for_money(&self, account: &str, total: u64) {
        let mut seen = 0;
        self.wait_for(&format!("{total} received from {account}"), |e| {
            if let PluginEvent::MoneyReceived { account: a, amount } = e {
                if a == account {
                    seen += amount;
                }
            }
            seen >= total
        });
        assert_eq!(
            seen, total,
            "more money received from {account} than expected"
        );
    }

    /// Waits until settlement has paid `account` `total_msat` in all (booked as paid).
    pub fn wait_for_payments(&self, account: &str, total_msat: u64) {
        let mut paid = 0;
        self.wait_for(&format!("{total_msat} msat paid to {account}"), |e| {
            if let PluginEvent::MoneySent {
                account: a,
                amount_msat,
                ..
            } = e
            {
                if a == account {
                    paid += amount_msat;
                }
            }
            paid >= total_msat
        });
        assert_eq!(paid, total_msat, "more paid to {account} than expected");
    }
}

/// Adds an event channel to `builder`.
pub fn with_events(builder: PluginBuilder) -> (PluginBuilder, Events) {
    let (tx, rx) = unbounded();
    let builder = builder.on_event(move |e| {
        let _ = tx.send(e.clone());
    });
    (builder, Events(rx))
}

/// A hub over `node`, routing between its clients, listening on a free port.
pub fn hub(
    node: &SimNode,
    configure: impl FnOnce(PluginBuilder) -> PluginBuilder,
) -> (Arc<LightningPlugin>, Events) {
    let builder = LightningPlugin::server(
        "127.0.0.1:0".parse().unwrap(),
        Address::new("test.hub").unwrap(),
    )
    .lightning(node_client(node));
    let (builder, events) = with_events(configure(builder));
    let hub = Arc::new(builder.build().expect("hub builds"));
    route_between_clients(&hub).expect("hub routes");
    hub.connect().expect("hub listens");
    (hub, events)
}

/// A client of `hub` as `name`, settling over `node`.
pub fn client(
    hub: &LightningPlugin,
    name: &str,
    node: &SimNode,
    configure: impl FnOnce(PluginBuilder) -> PluginBuilder,
) -> (LightningPlugin, Events) {
    let url = format!(
        "btp+ws://{name}:secret-{name}@{}",
        hub.local_addr().expect("hub listens")
    );
    let builder = LightningPlugin::client(&url).lightning(node_client(node));
    let (builder, events) = with_events(configure(builder));
    let client = builder.build().expect("client builds");
    client.connect().expect("client connects");
    (client, events)
}

/// The test convention for receivers: a Prepare whose `data` is its own fulfillment (its
/// condition is sha256(data)) is fulfilled; anything else gets F05 from the plugin.
pub fn fulfil_by_data(client: &LightningPlugin) {
    client
        .register_data_handler(|bytes| {
            let prepare = Prepare::parse(bytes).map_err(|e| HandlerError::Final(e.to_string()))?;
            let data: [u8; 32] = prepare
                .data()
                .try_into()
                .map_err(|_| HandlerError::Final("data is not a 32-byte fulfillment".into()))?;
            Ok(fulfill(&data, b""))
        })
        .expect("data handler");
}

/// Whether `reply` is a Fulfill.
pub fn is_fulfill(reply: &[u8]) -> bool {
    matches!(Packet::parse(reply), Ok(Packet::Fulfill(_)))
}

/// The Reject code of `reply`, or `None` for a Fulfill.
pub fn reject_code(reply: &[u8]) -> Option<String> {
    match Packet::parse(reply) {
        Ok(Packet::Reject(r)) => Some(r.code().as_str().to_owned()),
        _ => None,
    }
}

/// How many millisatoshis went from `from` to `to` over their channel between two snapshots of
/// [`SimNetwork::channel_balances`] (negative: the other way).
pub fn moved_msat(
    before: &[ilp_plugin_lightning::lnd::sim::ChannelBalance],
    after: &[ilp_plugin_lightning::lnd::sim::ChannelBalance],
    from: &str,
    to: &str,
) -> i128 {
    let side = |list: &[ilp_plugin_lightning::lnd::sim::ChannelBalance]| -> i128 {
        list.iter()
            .find(|c| c.node_a == from && c.node_b == to)
            .map(|c| i128::from(c.balance_a_msat))
            .or_else(|| {
                list.iter()
                    .find(|c| c.node_a == to && c.node_b == from)
                    .map(|c| -i128::from(c.balance_a_msat))
            })
            .unwrap_or_else(|| panic!("no channel between {from} and {to}"))
    };
    side(before) - side(after)
}

/// What the simulator says `node` paid `payee`: (succeeded payments, their amounts, their fees),
/// after checking that none of its payments is still in flight.
pub fn sim_paid(node: &SimNode, payee: &str) -> (u64, u128, u128) {
    use ilp_plugin_lightning::lnd::sim::SentStatus;
    let payments = node.payments();
    let in_flight: Vec<_> = payments
        .iter()
        .filter(|p| p.status == SentStatus::InFlight)
        .collect();
    assert!(
        in_flight.is_empty(),
        "{} still has payments in flight: {in_flight:?}",
        node.name()
    );
    payments
        .iter()
        .filter(|p| p.status == SentStatus::Succeeded && p.payee.as_deref() == Some(payee))
        .fold((0, 0, 0), |(count, amount, fees), p| {
            (
                count + 1,
                amount + u128::from(p.amount_msat),
                fees + u128::from(p.fee_msat),
            )
        })
}
