//! A simulated Lightning network whose nodes serve LND's own gRPC API over TLS with macaroons.
//!
//! Each [`SimNode`] is a real grpcio server on its own loopback port with its own self-signed
//! ECDSA P-256 certificate and macaroon, serving at LND's method paths and field numbers
//! (`lnd::methods`): GetInfo, AddInvoice, LookupInvoice, ListInvoices, SubscribeInvoices,
//! DecodePayReq, DeleteCanceledInvoice, ChannelBalance, ListChannels, routerrpc SendPaymentV2 and
//! TrackPaymentV2, invoicesrpc CancelInvoice. Any LND client, in any language, can talk to it;
//! where it still differs from LND, the README's simulator section says so.
//!
//! Nodes sign real BOLT11 invoices (regtest) with their secp256k1 identity, and payments route
//! over simulated channels with balances, reserves, commitment fees and forwarding fees. A node
//! started as LND 0.20 or earlier ([`SimNetworkBuilder::lnd_version`]) also serves the
//! bidirectional `lnrpc.Lightning/SendPayment` and `SendPaymentSync` that 0.21 removed.
//!
//! Tests can make a node fail the way LND fails: take it offline, slow it down, make its next
//! payments fail, hold its payments in flight until released, break the streams of its next
//! payments or invoice subscription, or move the network's clock.
//!
//! ```no_run
//! use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, SimNetwork};
//!
//! let net = SimNetwork::builder()
//!     .node("alice")
//!     .node("bob")
//!     .channel("alice", "bob", 1_000_000, ChannelPolicy { base_fee_msat: 1000, fee_ppm: 1 })
//!     .start()?;
//! let alice = net.node("alice").unwrap();
//! println!("{} at {}", alice.pubkey_hex(), alice.grpc_address());
//! # Ok::<(), ilp_plugin_lightning::lnd::sim::SimError>(())
//! ```

mod features;
mod invoices;
mod network;
mod server;
mod timer;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use crossbeam_channel::Receiver;
use grpcio::{
    ChannelBuilder, EnvBuilder, Environment, Server, ServerBuilder, ServerCredentialsBuilder,
};
use parking_lot::{Condvar, Mutex};

use network::{Channel, Ledger, NodeIdentity};
use timer::{Timer, TimerHandle};

/// The version string simulated nodes report in GetInfo unless told otherwise: the newest LND
/// this crate knows. The version decides which calls a node serves and how it checks them (see
/// [`SimNetworkBuilder::lnd_version`]).
pub const DEFAULT_LND_VERSION: &str = "0.21.2-beta commit=sim";

/// The LND versions a simulated node can play: 0.18 to 0.21.
pub const SUPPORTED_LND_MINORS: std::ops::RangeInclusive<u32> = 18..=21;

/// How a node charges for forwarding a payment out over a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// Fixed fee per forwarded payment, in millisatoshi.
    pub base_fee_msat: u64,
    /// Proportional fee, in millionths of the forwarded amount.
    pub fee_ppm: u64,
}

impl ChannelPolicy {
    /// LND's defaults: 1 sat base fee, 1 ppm.
    pub const LND_DEFAULT: ChannelPolicy = ChannelPolicy {
        base_fee_msat: 1000,
        fee_ppm: 1,
    };

    /// The fee for forwarding `amount_msat`.
    pub fn fee_msat(&self, amount_msat: u64) -> u64 {
        let proportional = u128::from(amount_msat) * u128::from(self.fee_ppm) / 1_000_000;
        self.base_fee_msat
            .saturating_add(u64::try_from(proportional).unwrap_or(u64::MAX))
    }
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy::LND_DEFAULT
    }
}

/// Why a payment failed, as LND's `PaymentFailureReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// FAILURE_REASON_TIMEOUT.
    Timeout,
    /// FAILURE_REASON_NO_ROUTE.
    NoRoute,
    /// FAILURE_REASON_ERROR.
    Error,
    /// FAILURE_REASON_INCORRECT_PAYMENT_DETAILS.
    IncorrectPaymentDetails,
    /// FAILURE_REASON_INSUFFICIENT_BALANCE.
    InsufficientBalance,
    /// FAILURE_REASON_CANCELED.
    Canceled,
}

/// How a held payment goes on (see [`SimNode::hold_payments`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Its HTLCs go on to the payee, which settles them (the payment SUCCEEDS) or refuses them
    /// as it would have at once (an invoice cancelled or expired meanwhile: FAILED,
    /// INCORRECT_PAYMENT_DETAILS).
    Forward,
    /// Its HTLCs fail on the way back: FAILED with this reason, nothing moved.
    Fail(FailureReason),
}

/// Where a payment a node sent stands (LND's `Payment.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentStatus {
    /// Not final yet (created, or HTLCs on their way or held).
    InFlight,
    /// Paid.
    Succeeded,
    /// Not paid.
    Failed,
}

/// One payment a node sent, as the node keeps it (what LND's ListPayments shows): for tests
/// that check what moved against what the payer booked. See [`SimNode::payments`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentPayment {
    /// Its payment hash: a node keeps one payment per hash.
    pub payment_hash: [u8; 32],
    /// Where it stands.
    pub status: SentStatus,
    /// What the payee is to receive.
    pub amount_msat: u64,
    /// The routing fee it cost (0 until it succeeds).
    pub fee_msat: u64,
    /// The payee's name, once an attempt was routed (`None` when no route was found).
    pub payee: Option<String>,
}

/// What can go wrong building, starting or controlling a simulated network.
#[derive(Debug)]
pub enum SimError {
    /// Two nodes with one name.
    DuplicateNode(String),
    /// A channel or a lookup names a node that was not declared.
    UnknownNode(String),
    /// A channel from a node to itself, or of zero capacity.
    InvalidChannel(String),
    /// No nodes at all, or a base port that overflows.
    InvalidConfig(String),
    /// Making a TLS certificate failed.
    Tls(String),
    /// Drawing random bytes failed.
    Random(String),
    /// The gRPC server of a node could not be built or bound to its port.
    Grpc {
        /// The node.
        node: String,
        /// The address it tried.
        address: String,
        /// What grpcio said (boxed: grpcio's error is large).
        source: Box<grpcio::Error>,
    },
    /// Writing a node's files, or starting a thread, failed.
    Io(std::io::Error),
    /// The network has been shut down.
    ShutDown,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::DuplicateNode(name) => write!(f, "node {name:?} is declared twice"),
            SimError::UnknownNode(name) => write!(f, "no node called {name:?}"),
            SimError::InvalidChannel(why) => write!(f, "invalid channel: {why}"),
            SimError::InvalidConfig(why) => write!(f, "invalid network: {why}"),
            SimError::Tls(why) => write!(f, "cannot make a TLS certificate: {why}"),
            SimError::Random(why) => write!(f, "cannot draw random bytes: {why}"),
            SimError::Grpc {
                node,
                address,
                source,
            } => write!(f, "node {node:?} cannot serve gRPC on {address}: {source}"),
            SimError::Io(error) => write!(f, "I/O error: {error}"),
            SimError::ShutDown => f.write_str("the simulated network has been shut down"),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SimError::Grpc { source, .. } => Some(source.as_ref()),
            SimError::Io(error) => Some(error),
            _ => None,
        }
    }
}

impl From<std::io::Error> for SimError {
    fn from(error: std::io::Error) -> Self {
        SimError::Io(error)
    }
}

/// 32 random bytes: preimages, payment addresses, keys.
pub(crate) fn random_32() -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|error| error.to_string())?;
    Ok(bytes)
}

/// State shared by the network handle, the nodes and their gRPC handlers.
pub(crate) struct Shared {
    pub(crate) identities: Vec<NodeIdentity>,
    pub(crate) macaroons: Vec<Vec<u8>>,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) latency: Vec<Mutex<Duration>>,
    /// Per node: the wallet is locked (every call refused, as LND after a restart).
    pub(crate) wallet_locked: Vec<AtomicBool>,
    pub(crate) secp: Secp256k1<All>,
    pub(crate) clock_offset_secs: AtomicI64,
    pub(crate) timer: TimerHandle,
    pub(crate) version: String,
    /// The minor version (LND 0.MINOR): what the node serves and how it checks.
    pub(crate) minor: u32,
    /// Signalled whenever a node starts holding a payment.
    pub(crate) held_changed: Condvar,
    /// Per node: the calls it received, by gRPC method path.
    pub(crate) calls: Vec<Mutex<BTreeMap<String, u64>>>,
}

/// The minor number of an LND version string ("0.20.3-beta commit=..." is 20).
fn lnd_minor(version: &str) -> Option<u32> {
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().ok());
    match (numbers.next()??, numbers.next()??) {
        (0, minor) => Some(minor),
        _ => None,
    }
}

impl Shared {
    /// Whether the node has `DeleteCanceledInvoice` (LND 0.20 and later).
    pub(crate) fn serves_delete_canceled_invoice(&self) -> bool {
        self.minor >= 20
    }

    /// Whether the node has the payment calls LND 0.21 removed: `lnrpc.Lightning/SendPayment`
    /// (bidirectional) and `SendPaymentSync`.
    pub(crate) fn serves_legacy_payments(&self) -> bool {
        self.minor <= 20
    }

    /// The smallest final CLTV delta AddInvoice accepts (`routing.MinCLTVDelta`): 24 from LND
    /// 0.21 on, 18 before.
    pub(crate) fn min_cltv_delta(&self) -> u64 {
        if self.minor >= 21 {
            24
        } else {
            18
        }
    }

    fn now_duration(&self) -> Duration {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let offset = self.clock_offset_secs.load(Ordering::Relaxed);
        real.saturating_add(Duration::from_secs(offset.max(0) as u64))
    }

    /// The network's clock, in unix seconds (real time plus [`SimNetwork::advance_clock`]).
    pub(crate) fn now(&self) -> i64 {
        self.now_duration().as_secs() as i64
    }

    /// The network's clock, in unix nanoseconds.
    pub(crate) fn now_ns(&self) -> i64 {
        i64::try_from(self.now_duration().as_nanos()).unwrap_or(i64::MAX)
    }

    pub(crate) fn latency(&self, node: usize) -> Duration {
        *self.latency[node].lock()
    }
}

/// A channel as declared: `a`'s share of the capacity (None: half).
#[derive(Clone, Debug)]
struct ChannelSpec {
    a: String,
    b: String,
    capacity_sat: u64,
    a_balance_sat: Option<u64>,
    policy: ChannelPolicy,
}

/// Declares a network: nodes, channels, ports. See [`SimNetwork::builder`].
#[derive(Clone, Debug, Default)]
pub struct SimNetworkBuilder {
    nodes: Vec<String>,
    channels: Vec<ChannelSpec>,
    fully_connected: Option<(u64, ChannelPolicy)>,
    base_port: Option<u16>,
    version: Option<String>,
    accept_keysend: Vec<String>,
}

impl SimNetworkBuilder {
    /// Adds a node; its name is its alias.
    pub fn node(mut self, name: &str) -> Self {
        self.nodes.push(name.to_string());
        self
    }

    /// Opens a channel of `capacity_sat` between two declared nodes, each side holding half
    /// the capacity; both directions forward with `policy`. `a` opens it, so `a` pays the
    /// commitment fee and the anchors (3 470 sat) out of its half, as an LND opener does.
    pub fn channel(mut self, a: &str, b: &str, capacity_sat: u64, policy: ChannelPolicy) -> Self {
        self.channels.push(ChannelSpec {
            a: a.to_string(),
            b: b.to_string(),
            capacity_sat,
            a_balance_sat: None,
            policy,
        });
        self
    }

    /// Like [`channel`](Self::channel), with `a` (the opener) funding `a_balance_sat` of the
    /// capacity and `b` the rest: a channel as its opener funded it is all on `a`'s side. The
    /// opener's share must cover the commitment fee and anchors (3 470 sat).
    pub fn channel_with_balance(
        mut self,
        a: &str,
        b: &str,
        capacity_sat: u64,
        a_balance_sat: u64,
        policy: ChannelPolicy,
    ) -> Self {
        self.channels.push(ChannelSpec {
            a: a.to_string(),
            b: b.to_string(),
            capacity_sat,
            a_balance_sat: Some(a_balance_sat),
            policy,
        });
        self
    }

    /// Opens a channel of `capacity_sat` with LND's default policy between every pair of nodes
    /// that [`channel`](Self::channel) does not already connect.
    pub fn fully_connected(mut self, capacity_sat: u64) -> Self {
        self.fully_connected = Some((capacity_sat, ChannelPolicy::default()));
        self
    }

    /// Node `i` (in declaration order) listens on `base + i` instead of a free port.
    pub fn base_port(mut self, base: u16) -> Self {
        self.base_port = Some(base);
        self
    }

    /// The LND version the nodes play and GetInfo reports (default [`DEFAULT_LND_VERSION`]):
    /// `"0.20"`, `"0.20.3"` (reported as `0.20.3-beta commit=sim`) or a full version string,
    /// from 0.18 to 0.21. As LND: before 0.20 there is no DeleteCanceledInvoice
    /// (UNIMPLEMENTED); up to 0.20 the nodes serve the bidirectional `SendPayment` and
    /// `SendPaymentSync`, which 0.21 answers UNIMPLEMENTED; AddInvoice's smallest final CLTV
    /// delta is 18 before 0.21 and 24 from it.
    pub fn lnd_version(mut self, version: &str) -> Self {
        let version = version.trim();
        let bare = version.chars().all(|c| c.is_ascii_digit() || c == '.');
        self.version = Some(match version.matches('.').count() {
            1 if bare => format!("{version}.0-beta commit=sim"),
            2 if bare => format!("{version}-beta commit=sim"),
            _ => version.to_string(),
        });
        self
    }

    /// Makes `node` accept keysend payments, as LND's `--accept-keysend` (off by default: a
    /// keysend to a node without it fails with INCORRECT_PAYMENT_DETAILS, and its GetInfo lacks
    /// feature bit 55). See also [`SimNode::set_accept_keysend`].
    pub fn accept_keysend(mut self, node: &str) -> Self {
        self.accept_keysend.push(node.to_string());
        self
    }

    fn channel_list(&self) -> Result<Vec<Channel>, SimError> {
        let index_of = |name: &str| {
            self.nodes
                .iter()
                .position(|node| node == name)
                .ok_or_else(|| SimError::UnknownNode(name.to_string()))
        };
        let mut pairs: Vec<(usize, usize, u64, Option<u64>, ChannelPolicy)> = Vec::new();
        for spec in &self.channels {
            let (a, b) = (index_of(&spec.a)?, index_of(&spec.b)?);
            if a == b {
                return Err(SimError::InvalidChannel(format!(
                    "{:?} cannot open a channel to itself",
                    self.nodes[a]
                )));
            }
            pairs.push((a, b, spec.capacity_sat, spec.a_balance_sat, spec.policy));
        }
        if let Some((capacity_sat, policy)) = self.fully_connected {
            for a in 0..self.nodes.len() {
                for b in a + 1..self.nodes.len() {
                    let exists = pairs
                        .iter()
                        .any(|(x, y, ..)| (*x, *y) == (a, b) || (*x, *y) == (b, a));
                    if !exists {
                        pairs.push((a, b, capacity_sat, None, policy));
                    }
                }
            }
        }
        pairs
            .into_iter()
            .enumerate()
            .map(|(index, (a, b, capacity_sat, a_balance_sat, policy))| {
                if capacity_sat == 0 || capacity_sat > 21_000_000 * 100_000_000 {
                    return Err(SimError::InvalidChannel(format!(
                        "capacity {capacity_sat} sat between {:?} and {:?}",
                        self.nodes[a], self.nodes[b]
                    )));
                }
                let a_sat = a_balance_sat.unwrap_or(capacity_sat / 2);
                if a_sat > capacity_sat {
                    return Err(SimError::InvalidChannel(format!(
                        "{:?} cannot hold {a_sat} sat of a {capacity_sat} sat channel",
                        self.nodes[a]
                    )));
                }
                // A short channel id as LND writes it: block height, transaction index and
                // output index packed into 24, 24 and 16 bits.
                let chan_id =
                    (u64::from(network::BLOCK_HEIGHT - 100) << 40) | ((index as u64 + 1) << 16);
                Channel::open(chan_id, [a, b], capacity_sat, a_sat * 1000, policy).ok_or_else(
                    || {
                        SimError::InvalidChannel(format!(
                            "{:?} opens the channel to {:?} with {a_sat} sat, less than the \
                             commitment fee and anchors it pays ({} sat)",
                            self.nodes[a],
                            self.nodes[b],
                            network::opening_cost_sat()
                        ))
                    },
                )
            })
            .collect()
    }

    /// Makes the identities, certificates and macaroons, and starts every node's gRPC server.
    /// Returns once all of them listen.
    pub fn start(self) -> Result<SimNetwork, SimError> {
        if self.nodes.is_empty() {
            return Err(SimError::InvalidConfig("no nodes".to_string()));
        }
        for (index, name) in self.nodes.iter().enumerate() {
            if self.nodes[..index].contains(name) {
                return Err(SimError::DuplicateNode(name.clone()));
            }
        }
        if let Some(base) = self.base_port {
            if usize::from(base) + self.nodes.len() > usize::from(u16::MAX) + 1 || base == 0 {
                return Err(SimError::InvalidConfig(format!(
                    "base port {base} leaves no room for {} nodes",
                    self.nodes.len()
                )));
            }
        }
        let channels = self.channel_list()?;
        let version = self
            .version
            .clone()
            .unwrap_or_else(|| DEFAULT_LND_VERSION.to_string());
        let minor = lnd_minor(&version)
            .filter(|minor| SUPPORTED_LND_MINORS.contains(minor))
            .ok_or_else(|| {
                SimError::InvalidConfig(format!(
                    "LND version {version:?}: the simulator plays LND 0.18 to 0.21"
                ))
            })?;
        let mut ledger = Ledger::new(self.nodes.len(), channels);
        for name in &self.accept_keysend {
            let index = self
                .nodes
                .iter()
                .position(|node| node == name)
                .ok_or_else(|| SimError::UnknownNode(name.clone()))?;
            ledger.nodes[index].accept_keysend = true;
        }
        let secp = Secp256k1::new();
        let mut identities = Vec::with_capacity(self.nodes.len());
        let mut macaroons = Vec::with_capacity(self.nodes.len());
        let mut tls_identities = Vec::with_capacity(self.nodes.len());
        for name in &self.nodes {
            let secret_key = loop {
                let bytes = random_32().map_err(SimError::Random)?;
                if let Ok(key) = SecretKey::from_slice(&bytes) {
                    break key;
                }
            };
            let pubkey = PublicKey::from_secret_key(&secp, &secret_key);
            identities.push(NodeIdentity {
                alias: name.clone(),
                secret_key,
                pubkey,
                pubkey_hex: hex::encode(pubkey.serialize()),
            });
            // LND's admin.macaroon is about 260 bytes of binary; clients only ever hex it.
            let mut macaroon = random_32().map_err(SimError::Random)?.to_vec();
            macaroon.extend_from_slice(&random_32().map_err(SimError::Random)?);
            macaroons.push(macaroon);
            tls_identities.push(tls::self_signed(name).map_err(|e| SimError::Tls(e.to_string()))?);
        }

        let timer = Timer::start("lnd-sim-timer")?;
        let node_count = self.nodes.len();
        let shared = Arc::new(Shared {
            identities,
            macaroons,
            ledger: Mutex::new(ledger),
            latency: (0..node_count)
                .map(|_| Mutex::new(Duration::ZERO))
                .collect(),
            wallet_locked: (0..node_count).map(|_| AtomicBool::new(false)).collect(),
            secp,
            clock_offset_secs: AtomicI64::new(0),
            timer: timer.handle(),
            version,
            minor,
            held_changed: Condvar::new(),
            calls: (0..node_count)
                .map(|_| Mutex::new(BTreeMap::new()))
                .collect(),
        });

        let (stopped_sender, stopped) = crossbeam_channel::unbounded();
        let cq_count = 2;
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(cq_count)
                .name_prefix("lnd-sim-grpc")
                .before_stop(move || {
                    let _ = stopped_sender.send(());
                })
                .build(),
        );

        let mut network = SimNetwork {
            shared: shared.clone(),
            nodes: Vec::with_capacity(node_count),
            timer,
            env: Mutex::new(Some(env.clone())),
            env_stopped: stopped,
            cq_count,
            shut_down: AtomicBool::new(false),
        };
        for (index, (name, tls)) in self.nodes.iter().zip(tls_identities).enumerate() {
            let requested_port = self.base_port.map_or(0, |base| base + index as u16);
            let node = SimNode {
                index,
                name: name.clone(),
                port: requested_port,
                tls,
                shared: shared.clone(),
                env: Mutex::new(Some(env.clone())),
                server: Mutex::new(None),
            };
            // On error, `network` is dropped here and stops the nodes already started.
            let port = node.serve()?;
            network.nodes.push(SimNode { port, ..node });
        }
        Ok(network)
    }
}

/// A running simulated network. Dropping it (or [`shutdown`](Self::shutdown)) stops every
/// server and thread.
pub struct SimNetwork {
    shared: Arc<Shared>,
    nodes: Vec<SimNode>,
    timer: Timer,
    env: Mutex<Option<Arc<Environment>>>,
    env_stopped: Receiver<()>,
    cq_count: usize,
    shut_down: AtomicBool,
}

/// One channel's balances, for conservation checks: `balance_a_msat + balance_b_msat +
/// in_flight_msat + opening_cost_msat` is always the capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBalance {
    /// The short channel id, as ListChannels reports it.
    pub chan_id: u64,
    /// The node that opened the channel.
    pub node_a: String,
    /// The other node.
    pub node_b: String,
    /// The channel's capacity.
    pub capacity_sat: u64,
    /// What `node_a` holds on the commitment (HTLCs in flight not included).
    pub balance_a_msat: u64,
    /// What `node_b` holds on the commitment.
    pub balance_b_msat: u64,
    /// HTLCs in flight over the channel, both ways.
    pub in_flight_msat: u64,
    /// The commitment fee and anchors `node_a` paid when it opened the channel (3 470 sat).
    pub opening_cost_msat: u64,
}

impl SimNetwork {
    /// Starts declaring a network.
    pub fn builder() -> SimNetworkBuilder {
        SimNetworkBuilder::default()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// All nodes, in declaration order.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Every channel's balances, read under one lock (a consistent snapshot).
    pub fn channel_balances(&self) -> Vec<ChannelBalance> {
        let ledger = self.shared.ledger.lock();
        ledger
            .channels
            .iter()
            .map(|channel| ChannelBalance {
                chan_id: channel.chan_id,
                node_a: self.shared.identities[channel.nodes[0]].alias.clone(),
                node_b: self.shared.identities[channel.nodes[1]].alias.clone(),
                capacity_sat: channel.capacity_sat,
                balance_a_msat: channel.balance_msat[0],
                balance_b_msat: channel.balance_msat[1],
                in_flight_msat: channel.in_flight_msat(),
                opening_cost_msat: network::opening_cost_sat() * 1000,
            })
            .collect()
    }

    /// What the nodes own in all channels together: every balance plus every HTLC in flight.
    /// Payments never change it; only the channels' capacities less their opening costs.
    pub fn total_balance_msat(&self) -> u64 {
        let ledger = self.shared.ledger.lock();
        ledger
            .channels
            .iter()
            .map(|channel| {
                channel.balance_msat[0] + channel.balance_msat[1] + channel.in_flight_msat()
            })
            .sum()
    }

    /// The LND version the nodes play, as GetInfo reports it.
    pub fn lnd_version(&self) -> &str {
        &self.shared.version
    }

    /// Moves the network's clock forward (for expiry tests without waiting). Invoices made
    /// afterwards carry the moved timestamp; a client that checks expiry against its own wall
    /// clock will disagree with the network by that much.
    pub fn advance_clock(&self, by: Duration) {
        let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.shared
            .clock_offset_secs
            .fetch_add(seconds, Ordering::Relaxed);
    }

    /// Stops every server, the timer thread and grpcio's completion-queue threads, and waits
    /// for them. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        for node in &self.nodes {
            node.stop_server();
            node.env.lock().take();
        }
        self.timer.stop();
        {
            let mut ledger = self.shared.ledger.lock();
            for node in 0..self.nodes.len() {
                ledger.drop_streams(node);
            }
        }
        let env = self.env.lock().take();
        if let Some(env) = env {
            drop(env);
            // grpcio does not join its threads; wait for each to say it is leaving.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            for _ in 0..self.cq_count {
                if self.env_stopped.recv_deadline(deadline).is_err() {
                    log::warn!("lnd sim: a gRPC completion-queue thread did not stop in time");
                    break;
                }
            }
        }
    }
}

impl Drop for SimNetwork {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One simulated LND node.
pub struct SimNode {
    index: usize,
    name: String,
    port: u16,
    tls: tls::TlsIdentity,
    shared: Arc<Shared>,
    env: Mutex<Option<Arc<Environment>>>,
    server: Mutex<Option<Server>>,
}

impl SimNode {
    /// The node's name, which is also its alias.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's identity public key, 33 bytes compressed, hex.
    pub fn pubkey_hex(&self) -> &str {
        &self.shared.identities[self.index].pubkey_hex
    }

    /// The node's identity public key, 33 bytes compressed.
    pub fn pubkey(&self) -> [u8; 33] {
        self.shared.identities[self.index].pubkey.serialize()
    }

    /// The loopback port its gRPC server listens on (stays the same across
    /// [`set_offline`](Self::set_offline)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`. The certificate is also valid for `localhost`.
    pub fn grpc_address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The node's TLS certificate (PEM), as LND's `tls.cert`.
    pub fn tls_cert_pem(&self) -> &str {
        &self.tls.cert_pem
    }

    /// The node's admin macaroon (binary, as LND's `admin.macaroon`); clients send it hex.
    pub fn macaroon(&self) -> &[u8] {
        &self.shared.macaroons[self.index]
    }

    /// The macaroon as clients send it in the `macaroon` metadata.
    pub fn macaroon_hex(&self) -> String {
        hex::encode(self.macaroon())
    }

    /// The sum of this node's balances on its channels' commitments, as LND's ChannelBalance
    /// reports them (what the node opened is net of the commitment fee and anchors; HTLCs in
    /// flight are not included).
    pub fn local_balance_msat(&self) -> u64 {
        let ledger = self.shared.ledger.lock();
        ledger.adjacency[self.index]
            .iter()
            .map(|&index| {
                let channel = &ledger.channels[index];
                channel.balance_msat[channel.side(self.index)]
            })
            .sum()
    }

    /// The gRPC calls this node received so far, by method path (`/lnrpc.Lightning/AddInvoice`),
    /// counting refused ones: how much a client asks of its node.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared.calls[self.index].lock().clone()
    }

    /// The invoices this node holds, by state: (open, settled, cancelled). Deleted ones are
    /// gone; expired ones count as cancelled, as LND cancels them.
    pub fn invoice_counts(&self) -> (usize, usize, usize) {
        let now = self.shared.now();
        let mut ledger = self.shared.ledger.lock();
        ledger.invoices(self.index, now).counts()
    }

    /// Writes `dir/tls.cert` (PEM), `dir/admin.macaroon` (binary) and `dir/node.json`
    /// (`{"pubkey": "<hex>", "grpc": "127.0.0.1:<port>"}`), creating `dir` if needed.
    pub fn write_files(&self, dir: &Path) -> Result<(), SimError> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("tls.cert"), self.tls_cert_pem())?;
        std::fs::write(dir.join("admin.macaroon"), self.macaroon())?;
        let mut json = std::fs::File::create(dir.join("node.json"))?;
        writeln!(
            json,
            "{{\"pubkey\": \"{}\", \"grpc\": \"{}\"}}",
            self.pubkey_hex(),
            self.grpc_address()
        )?;
        Ok(())
    }

    /// Takes the node's gRPC server down (clients see UNAVAILABLE; open streams end with an
    /// error) or brings it back on the same port with the same certificate and macaroon.
    ///
    /// Only the node's API goes away: its channels stay up, so it can still receive payments
    /// while offline — as when a client loses its connection to a node that keeps running.
    /// Its invoice stream then replays what was missed when the client resubscribes.
    pub fn set_offline(&self, offline: bool) -> Result<(), SimError> {
        if offline {
            self.stop_server();
            Ok(())
        } else {
            if self.server.lock().is_some() {
                return Ok(());
            }
            self.serve().map(|_| ())
        }
    }

    /// Whether the node's gRPC server is down.
    pub fn is_offline(&self) -> bool {
        self.server.lock().is_none()
    }

    /// Delays every reply of this node by `latency`, and the outcome of its payments too (a
    /// payment whose latency reaches its `timeout_seconds` fails with TIMEOUT).
    pub fn set_latency(&self, latency: Duration) {
        *self.shared.latency[self.index].lock() = latency;
    }

    /// Makes the next `count` payments this node sends fail with `reason`, moving no money.
    pub fn fail_next_payments(&self, count: usize, reason: FailureReason) {
        self.shared
            .ledger
            .lock()
            .force_failures(self.index, count, reason);
    }

    /// Locks or unlocks the node's wallet. While locked, every call is refused before its
    /// macaroon is even checked, as LND refuses them after a restart until the wallet is
    /// unlocked (`rpcperms/interceptor.go` `checkRPCState`: UNKNOWN, "wallet locked, unlock it to
    /// enable full RPC access"). Its channels stay up: payments to it still arrive.
    pub fn set_wallet_locked(&self, locked: bool) {
        self.shared.wallet_locked[self.index].store(locked, Ordering::SeqCst);
    }

    /// What this node's next payment can carry over all its channels together, reserves and
    /// fee buffers kept back: a payment above it fails with INSUFFICIENT_BALANCE.
    pub fn spendable_msat(&self) -> u64 {
        self.shared.ledger.lock().spendable_msat(self.index)
    }

    /// LND's `--accept-keysend`: whether keysend payments to this node are accepted (default
    /// off, or as [`SimNetworkBuilder::accept_keysend`] set it). GetInfo's feature 55 follows.
    pub fn set_accept_keysend(&self, accept: bool) {
        self.shared.ledger.lock().nodes[self.index].accept_keysend = accept;
    }

    /// Whether keysend payments to this node are accepted.
    pub fn accepts_keysend(&self) -> bool {
        self.shared.ledger.lock().nodes[self.index].accept_keysend
    }

    /// While `hold` is true, the payments this node sends stop IN_FLIGHT once routed: their
    /// HTLCs are locked on every hop of the route (the sender's balance is down, nothing has
    /// reached the payee, whose invoice stays OPEN), as when a hop downstream is slow. They stay
    /// so, whatever their timeout — LND never abandons an HTLC in flight — until
    /// [`release_held_payments`](Self::release_held_payments) or
    /// [`release_held_payment`](Self::release_held_payment); a second payment of the same hash
    /// meanwhile is refused with "payment is in transition". Turning it off releases nothing.
    pub fn hold_payments(&self, hold: bool) {
        self.shared.ledger.lock().nodes[self.index].holding = hold;
    }

    /// The payment hashes this node's held payments are for, oldest first.
    pub fn held_payments(&self) -> Vec<[u8; 32]> {
        self.shared.ledger.lock().held_payments(self.index)
    }

    /// Waits until this node holds at least `count` payments (see
    /// [`hold_payments`](Self::hold_payments)) and returns their hashes, or `None` if `timeout`
    /// passes first.
    pub fn wait_for_held_payments(&self, count: usize, timeout: Duration) -> Option<Vec<[u8; 32]>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut ledger = self.shared.ledger.lock();
        loop {
            let held = ledger.held_payments(self.index);
            if held.len() >= count {
                return Some(held);
            }
            if self
                .shared
                .held_changed
                .wait_until(&mut ledger, deadline)
                .timed_out()
            {
                return None;
            }
        }
    }

    /// Lets the held payment for `payment_hash` go on as `release` says; false if this node
    /// holds none for that hash.
    pub fn release_held_payment(&self, payment_hash: &[u8; 32], release: Release) -> bool {
        let (now, now_ns) = (self.shared.now(), self.shared.now_ns());
        let released =
            self.shared
                .ledger
                .lock()
                .release(self.index, Some(payment_hash), release, now, now_ns);
        released > 0
    }

    /// Lets every payment this node holds go on as `release` says; returns how many.
    pub fn release_held_payments(&self, release: Release) -> usize {
        let (now, now_ns) = (self.shared.now(), self.shared.now_ns());
        self.shared
            .ledger
            .lock()
            .release(self.index, None, release, now, now_ns)
    }

    /// Every payment this node has sent, oldest first, one per payment hash (a failed payment
    /// retried with its hash shows its latest attempt), as LND's ListPayments would list them.
    pub fn payments(&self) -> Vec<SentPayment> {
        self.shared
            .ledger
            .lock()
            .sent_payments(self.index, &self.shared.identities)
    }

    /// Breaks the SendPaymentV2 streams of this node's next `count` payments once they are
    /// dispatched: the client gets the first update (unless it asked for none in flight) and
    /// then the stream fails with UNAVAILABLE, while the node completes the payment as it would
    /// have — the case where a client cannot tell whether it paid, and must track.
    pub fn break_next_payment_streams(&self, count: usize) {
        self.shared.ledger.lock().nodes[self.index]
            .stream_breaks
            .send += count;
    }

    /// Breaks this node's next `count` TrackPaymentV2 streams of a known payment: they fail
    /// with UNAVAILABLE; the payment is not affected. (A hash the node does not know still gets
    /// NOT_FOUND.)
    pub fn break_next_track_streams(&self, count: usize) {
        self.shared.ledger.lock().nodes[self.index]
            .stream_breaks
            .track += count;
    }

    /// Breaks this node's next SubscribeInvoices stream once it has sent `events` events (at
    /// least one), backlog included: it fails with UNAVAILABLE, as when the connection to LND
    /// drops in the middle of a replay. As on a real connection, the client may not read the
    /// last events sent before the failure (a grpcio client reports the failure first).
    pub fn break_next_invoice_stream_after(&self, events: usize) {
        let now = self.shared.now();
        self.shared
            .ledger
            .lock()
            .invoices(self.index, now)
            .break_next_stream_after(events);
    }

    /// Builds, binds and starts the node's server; returns the bound port.
    fn serve(&self) -> Result<u16, SimError> {
        let env = self.env.lock().clone().ok_or(SimError::ShutDown)?;
        let address = format!("127.0.0.1:{}", self.port);
        let grpc_error = |source| SimError::Grpc {
            node: self.name.clone(),
            address: address.clone(),
            source: Box::new(source),
        };
        let service = server::lnd_service(self.shared.clone(), self.index);
        // LND's transport settings (`lnd.go`, `config.go`): it pings an idle client after a
        // minute, lets clients ping every 5 s (gRPC core's default is 5 min: a client with a
        // shorter keepalive would be cut off with "too_many_pings"), and takes messages up to
        // 200 MiB.
        let transport = ChannelBuilder::new(env.clone())
            .keepalive_time(Duration::from_secs(60))
            .keepalive_timeout(Duration::from_secs(20))
            .keepalive_permit_without_calls(true)
            .http2_min_recv_ping_interval_without_data(Duration::from_secs(5))
            .http2_max_pings_without_data(0)
            .max_receive_message_len(200 * 1024 * 1024)
            .build_args();
        let mut server = ServerBuilder::new(env)
            .channel_args(transport)
            .register_service(service)
            .build()
            .map_err(grpc_error)?;
        let credentials = ServerCredentialsBuilder::new()
            .add_cert(
                self.tls.cert_pem.clone().into_bytes(),
                self.tls.key_pem.clone().into_bytes(),
            )
            .build();
        let port = server
            .add_listening_port(address.clone(), credentials)
            .map_err(grpc_error)?;
        server.start();
        log::debug!(
            "lnd sim: {} serves LND's gRPC on 127.0.0.1:{port}",
            self.name
        );
        *self.server.lock() = Some(server);
        Ok(port)
    }

    fn stop_server(&self) {
        let server = self.server.lock().take();
        if let Some(mut server) = server {
            let shutdown = server.shutdown();
            server.cancel_all_calls();
            // The streams' futures wait on channels: close them so that they finish, now that
            // their calls are cancelled (the clients have seen the error already).
            self.shared.ledger.lock().drop_streams(self.index);
            let _ = futures::executor::block_on(shutdown);
            log::debug!(
                "lnd sim: {} stopped serving on port {}",
                self.name,
                self.port
            );
        }
    }
}
