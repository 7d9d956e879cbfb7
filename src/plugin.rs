//! `LightningPlugin`: the ILP plugin of this crate, in the spirit of the ledger plugin interface
//! (RFC 24) but blocking. It wires the BTP transport, the packet checks ([`packets`]) and the
//! per-account balance hooks ([`crate::settlement`]) together, in one of two roles:
//!
//! - **Client**: one BTP connection to a server (`btp+ws://user:token@host:port`). On connect it
//!   asks the server for its own ILP address by IL-DCP. `send_data` goes over that connection.
//! - **Server**: a BTP/WebSocket listener with one account per authenticated client, in the style
//!   of `ilp-plugin-mini-accounts`. A client's address is `<server address>.<account>`, told to
//!   it by IL-DCP; `send_data` goes to the client whose address prefixes the destination (F02
//!   when none does). [`route_between_clients`] turns a server into a hub.
//!
//! Handlers run on the transport's handler threads, never under a lock of the plugin's, and
//! never on a socket's reader thread. Settlement over Lightning plugs in through
//! [`SettlementHooks`]; until it does, [`Balances`] enforces the credit limit.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ilp_plugin_lightning::ilp::Address;
//! use ilp_plugin_lightning::plugin::{route_between_clients, LightningPlugin};
//!
//! let hub = Arc::new(
//!     LightningPlugin::server("127.0.0.1:7768".parse().unwrap(), Address::new("test.hub").unwrap())
//!         .credit_limit(Some(1_000))
//!         .build()
//!         .unwrap(),
//! );
//! route_between_clients(&hub).unwrap();
//! hub.connect().unwrap();
//! ```

#[cfg(feature = "redis")]
mod cluster;
mod link;
pub mod packets;
pub mod test_packets;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

pub use crate::settlement::hooks::{Hold, HoldId};
pub use crate::settlement::{
    Balance, Balances, CreditRefused, PrepareRefused, Settlement, SettlementHooks,
    SettlementOptions, PEER_ACCOUNT,
};
#[cfg(feature = "redis")]
pub use cluster::{Cluster, ClusterOptions};
pub use packets::{DataHandler, HandlerError, InvalidReply, MoneyHandler};

use crate::btp::auth::{MemoryTokenStore, TokenStore};
pub use crate::btp::AccountLimits;
use crate::btp::{
    MayExpire, OwnedEntry, ProtocolDataEntry, RequestError as BtpRequestError, TransportError,
};
use crate::ilp::ildcp::IldcpError;
use crate::ilp::{Address, ErrorCode, Prepare};
use crate::lnd::Lightning;
use crate::settlement::{MemoryStore, PeerLink, Store};
use link::{ConnectAttempt, Link};
use packets::{check_reply, reject, InFlight, Incoming, Sent};

/// The asset a server tells its clients about by default: satoshis.
pub const DEFAULT_ASSET_CODE: &str = "BTC";
/// Satoshis have no decimal places in ILP amounts here.
pub const DEFAULT_ASSET_SCALE: u8 = 0;
/// How much earlier a Prepare forwarded by [`route_between_clients`] expires than the one that
/// came in, unless [`PluginBuilder::forward_expiry_margin`] says otherwise: a second, as
/// connectors commonly leave for one hop.
pub const DEFAULT_FORWARD_EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// Which side of a BTP connection the plugin is.
#[derive(Clone)]
pub enum Role {
    /// One connection to a server.
    Client {
        /// `btp+ws://[user:token@]host:port[/path]`.
        server: String,
    },
    /// A listener for many clients, one account each.
    Server {
        /// Where to listen (port 0: any free port, see [`LightningPlugin::local_addr`]).
        listen: SocketAddr,
        /// The server's own ILP address; clients get `<address>.<account>`.
        address: Address,
        /// Asset code told to clients by IL-DCP.
        asset_code: String,
        /// Asset scale told to clients by IL-DCP.
        asset_scale: u8,
    },
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The URI may carry a token: never print it.
            Role::Client { .. } => f.write_str("Client"),
            Role::Server {
                listen, address, ..
            } => write!(f, "Server {{ listen: {listen}, address: {address} }}"),
        }
    }
}

/// What the plugin tells its user about connections, through [`PluginBuilder::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginEvent {
    /// Client: the connection to the server is up and authenticated.
    Connected,
    /// Client: the connection to the server is gone (it reconnects by itself).
    Disconnected(String),
    /// Server: a client authenticated as this account.
    AccountConnected(String),
    /// Server: this account's last connection closed.
    AccountDisconnected(String),
    /// Settlement credited a Lightning payment from this account (client role: the server,
    /// [`PEER_ACCOUNT`]) of `amount` units; the money handler was called with it.
    MoneyReceived {
        /// Who paid.
        account: String,
        /// How much, in the asset's units.
        amount: u64,
    },
    /// Settlement paid this account over Lightning, and booked it.
    MoneySent {
        /// Who was paid.
        account: String,
        /// How much the peer received, in millisatoshis.
        amount_msat: u64,
        /// What the routing cost us, in millisatoshis.
        fee_msat: u64,
    },
    /// A Lightning payment to this account failed for good; what it was to pay is owed again
    /// and is paid by a later settlement.
    PaymentFailed {
        /// Who was to be paid.
        account: String,
        /// How much, in millisatoshis.
        amount_msat: u64,
        /// Why it failed.
        reason: String,
    },
    /// Settlement cancelled an invoice it had issued to this account and no longer needed
    /// (see [`SettlementOptions::invoice_grace`]).
    InvoiceCancelled {
        /// Whose invoice it was.
        account: String,
        /// Whether the node also deleted it from its database (LND 0.20 and later).
        deleted: bool,
    },
}

/// Called with each [`PluginEvent`], on a transport thread: keep it short.
pub type EventHandler = Arc<dyn Fn(&PluginEvent) + Send + Sync>;

/// Why a plugin call failed.
#[derive(Debug)]
pub enum PluginError {
    /// The builder's options do not make a plugin.
    Config(String),
    /// `connect()` has not succeeded (or `disconnect()` was called).
    NotConnected,
    /// A data handler is already registered (RFC 24 `DataHandlerAlreadyRegisteredError`).
    DataHandlerAlreadyRegistered,
    /// A money handler is already registered (RFC 24 `MoneyHandlerAlreadyRegisteredError`).
    MoneyHandlerAlreadyRegistered,
    /// `send_data` was given something that is not an ILP Prepare.
    InvalidPrepare(crate::ilp::ParseError),
    /// The peer answered with something that is not a Fulfill or Reject.
    InvalidReply(InvalidReply),
    /// The peer answered our request with a BTP Error.
    PeerError {
        /// Its code, e.g. `F00`.
        code: String,
        /// Its name, e.g. `NotAcceptedError`.
        name: String,
        /// Its data, as text.
        message: String,
    },
    /// The BTP transport failed (closed, timed out, refused).
    Transport(String),
    /// The server did not tell us our address.
    Ildcp(IldcpError),
    /// This role does not do that.
    Unsupported(&'static str),
    /// The settlement hooks could not pay, or settlement could not start.
    Settlement(String),
    /// The money handler is missing or refused the money.
    MoneyHandler(String),
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::Config(m) => write!(f, "invalid plugin options: {m}"),
            PluginError::NotConnected => f.write_str("plugin is not connected"),
            PluginError::DataHandlerAlreadyRegistered => {
                f.write_str("a data handler is already registered")
            }
            PluginError::MoneyHandlerAlreadyRegistered => {
                f.write_str("a money handler is already registered")
            }
            PluginError::InvalidPrepare(e) => write!(f, "send_data needs an ILP Prepare: {e}"),
            PluginError::InvalidReply(e) => e.fmt(f),
            PluginError::PeerError {
                code,
                name,
                message,
            } => write!(f, "peer answered with BTP error {code} {name}: {message}"),
            PluginError::Transport(m) => write!(f, "BTP transport: {m}"),
            PluginError::Ildcp(e) => e.fmt(f),
            PluginError::Unsupported(m) => f.write_str(m),
            PluginError::Settlement(m) => write!(f, "settlement failed: {m}"),
            PluginError::MoneyHandler(m) => write!(f, "money handler: {m}"),
        }
    }
}

impl std::error::Error for PluginError {}

impl From<TransportError> for PluginError {
    fn from(e: TransportError) -> Self {
        PluginError::Transport(e.to_string())
    }
}

/// The options of a [`LightningPlugin`]; start from [`LightningPlugin::client`] or
/// [`LightningPlugin::server`].
#[derive(Clone)]
pub struct PluginBuilder {
    role: Role,
    max_packet_amount: Option<u64>,
    credit_limit: Option<Option<u64>>,
    request_timeout: Duration,
    connect_timeout: Duration,
    auth_timeout: Duration,
    max_connections: usize,
    handler_threads: usize,
    max_in_flight: Option<usize>,
    forward_expiry_margin: Duration,
    token_store: Option<Arc<dyn TokenStore>>,
    account_limits: AccountLimits,
    hooks: Option<Arc<dyn SettlementHooks>>,
    lightning: Option<Arc<dyn Lightning>>,
    store: Option<Arc<dyn Store>>,
    settlement_options: Option<SettlementOptions>,
    on_event: Option<EventHandler>,
}

impl PluginBuilder {
    fn new(role: Role) -> Self {
        PluginBuilder {
            role,
            max_packet_amount: None,
            credit_limit: None,
            request_timeout: Duration::from_secs(35),
            connect_timeout: Duration::from_secs(35),
            auth_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            handler_threads: 8,
            max_in_flight: None,
            forward_expiry_margin: DEFAULT_FORWARD_EXPIRY_MARGIN,
            token_store: None,
            account_limits: AccountLimits::default(),
            hooks: None,
            lightning: None,
            store: None,
            settlement_options: None,
            on_event: None,
        }
    }

    /// Incoming Prepares above this amount are rejected with F08 (default: no maximum).
    pub fn max_packet_amount(mut self, amount: u64) -> Self {
        self.max_packet_amount = Some(amount);
        self
    }

    /// How much a peer may owe before its Prepares get T04; `None` is unlimited. Defaults: server
    /// 0 (clients prefund, as in the JS reference), client unlimited. Ignored when
    /// [`PluginBuilder::settlement_hooks`] is set.
    pub fn credit_limit(mut self, limit: Option<u64>) -> Self {
        self.credit_limit = Some(limit);
        self
    }

    /// How long a request waits for its response (default 35 s, like the JS plugin). A Prepare
    /// waits no longer than until it expires.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Client: how long `connect()` keeps trying (with the JS backoff) before it fails
    /// (default 35 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Server: how long a new connection has to authenticate (default 10 s).
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// Server: most client connections at once (default 10,000).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Threads that run incoming requests (default 8). A hub's handlers block while they wait
    /// for the next hop, so this bounds how many packets it forwards at once.
    pub fn handler_threads(mut self, threads: usize) -> Self {
        self.handler_threads = threads;
        self
    }

    /// Most Prepares one account may have in the data handler at once; past it a Prepare gets
    /// T03 (connector busy). Default: no limit. A hub's handler holds its thread until the next
    /// hop answers, so without a limit one client can occupy every handler thread and stall
    /// everyone else's packets: set it below [`PluginBuilder::handler_threads`] on a hub.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = Some(max);
        self
    }

    /// How much earlier than the incoming Prepare a Prepare forwarded by
    /// [`route_between_clients`] expires (default 1 s), as ILP connectors do: the hub gives up
    /// on the next hop, and answers its sender, before the sender gives up on the hub. A Prepare
    /// with less time left than this gets R02.
    pub fn forward_expiry_margin(mut self, margin: Duration) -> Self {
        self.forward_expiry_margin = margin;
        self
    }

    /// Server: which accounts may bind, how many (default 10,000), how fast (default 600 new
    /// a minute), and when unused ones are forgotten (see [`AccountLimits`]). When
    /// [`AccountLimits::expire_unused_after`] is set and [`AccountLimits::may_expire`] is not,
    /// an account expires only if its books are all zero — nothing owed either way, nothing in
    /// flight, no Lightning payment ever made or received; with custom
    /// [`PluginBuilder::settlement_hooks`], whose balances the plugin cannot see, none does.
    pub fn account_limits(mut self, limits: AccountLimits) -> Self {
        self.account_limits = limits;
        self
    }

    /// Server: where account-to-token bindings live (default: in memory, lost on restart).
    pub fn token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.token_store = Some(store);
        self
    }

    /// Replaces the default [`Balances`] with hooks of the caller's.
    pub fn settlement_hooks(mut self, hooks: Arc<dyn SettlementHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Settles over Lightning through `node` (LND through
    /// [`GrpcLightning`](crate::lnd::grpc::GrpcLightning), or a simulated node): the plugin
    /// then sends its peers invoices, pays theirs, and keeps its books in the
    /// [`store`](PluginBuilder::store).
    pub fn lightning(mut self, node: Arc<dyn Lightning>) -> Self {
        self.lightning = Some(node);
        self
    }

    /// Where settlement keeps its books (default: in memory, gone at exit). Use an
    /// [`EmbeddedStore`](crate::settlement::EmbeddedStore) for balances that survive a crash.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Settlement's rules (default: [`SettlementOptions::server`] or
    /// [`SettlementOptions::client`] for the role, with [`PluginBuilder::credit_limit`] if set).
    pub fn settlement_options(mut self, options: SettlementOptions) -> Self {
        self.settlement_options = Some(options);
        self
    }

    /// Told about connects and disconnects.
    pub fn on_event(mut self, handler: impl Fn(&PluginEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(handler));
        self
    }

    /// Server: the asset told to clients by IL-DCP (default BTC, scale 0).
    pub fn asset(mut self, code: &str, scale: u8) -> Self {
        if let Role::Server {
            asset_code,
            asset_scale,
            ..
        } = &mut self.role
        {
            *asset_code = code.to_owned();
            *asset_scale = scale;
        }
        self
    }

    /// Checks the options and makes the plugin (not connected yet).
    pub fn build(self) -> Result<LightningPlugin, PluginError> {
        if self.handler_threads == 0 {
            return Err(PluginError::Config(
                "handler_threads must be at least 1".into(),
            ));
        }
        let mut settlement = None;
        let (balances, hooks): (Option<Arc<Balances>>, Arc<dyn SettlementHooks>) =
            match (self.hooks.clone(), self.lightning.clone()) {
                (Some(_), Some(_)) => {
                    return Err(PluginError::Config(
                        "settlement_hooks and lightning exclude each other".into(),
                    ))
                }
                (Some(hooks), None) => (None, hooks),
                (None, Some(node)) => {
                    let mut options = self.settlement_options.clone().unwrap_or_else(|| match self
                        .role
                    {
                        Role::Client { .. } => SettlementOptions::client(),
                        Role::Server { .. } => SettlementOptions::server(),
                    });
                    if let Some(limit) = self.credit_limit {
                        options.credit_limit = limit;
                    }
                    if let Role::Server { asset_scale, .. } = &self.role {
                        options.unit = crate::settlement::Unit::from_asset_scale(*asset_scale)
                            .map_err(|e| PluginError::Config(e.to_string()))?;
                    }
                    let store = self
                        .store
                        .clone()
                        .unwrap_or_else(|| Arc::new(MemoryStore::new()));
                    let engine = Arc::new(Settlement::new(node, store, options));
                    settlement = Some(engine.clone());
                    (None, engine)
                }
                (None, None) => {
                    let default_limit = match self.role {
                        Role::Client { .. } => None,
                        Role::Server { .. } => Some(0),
                    };
                    let balances =
                        Arc::new(Balances::new(self.credit_limit.unwrap_or(default_limit)));
                    (Some(balances.clone()), balances)
                }
            };
        let own_address = match &self.role {
            Role::Client { server } => {
                crate::btp::BtpUri::parse(server)
                    .map_err(|e| PluginError::Config(format!("server URI: {e}")))?;
                None
            }
            Role::Server { address, .. } => Some(address.clone()),
        };
        let core = Arc::new(Core {
            own_address: RwLock::new(own_address),
            max_packet_amount: self.max_packet_amount,
            in_flight: self.max_in_flight.map(InFlight::new),
            hooks,
            data_handler: RwLock::new(None),
            money_handler: RwLock::new(None),
            on_event: self.on_event.clone(),
            link: RwLock::new(None),
            #[cfg(feature = "redis")]
            remote_hubs: RwLock::new(None),
        });
        Ok(LightningPlugin {
            options: self,
            core,
            balances,
            settlement,
            transition: Mutex::new(false),
            attempt: Mutex::new(None),
            transition_done: Condvar::new(),
        })
    }
}

thread_local! {
    /// The account whose Prepare the data handler on this thread is answering:
    /// [`route_between_clients`] converts amounts from its unit.
    static ANSWERING: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Marks the calling thread as answering `account`'s Prepare until dropped.
struct Answering(Option<String>);

impl Answering {
    fn set(account: &str) -> Answering {
        Answering(ANSWERING.with(|a| a.replace(Some(account.to_owned()))))
    }

    /// The account whose Prepare this thread is answering, if any.
    fn current() -> Option<String> {
        ANSWERING.with(|a| a.borrow().clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let previous = self.0.take();
        ANSWERING.with(|a| *a.borrow_mut() = previous);
    }
}

/// What the transport callbacks share with the plugin.
pub(crate) struct Core {
    own_address: RwLock<Option<Address>>,
    max_packet_amount: Option<u64>,
    /// Prepares each account has in the data handler, when they are capped.
    in_flight: Option<InFlight>,
    hooks: Arc<dyn SettlementHooks>,
    data_handler: RwLock<Option<DataHandler>>,
    money_handler: RwLock<Option<MoneyHandler>>,
    on_event: Option<EventHandler>,
    /// The transport while connected. The transport's handlers hold the core, so `disconnect`
    /// takes the link out to end that cycle.
    link: RwLock<Option<Arc<Link>>>,
    /// The other hub processes of a cluster, when this one has joined one.
    #[cfg(feature = "redis")]
    remote_hubs: RwLock<Option<Arc<dyn cluster::RemoteHubs>>>,
}

impl Core {
    fn own_address_text(&self) -> String {
        self.own_address
            .read()
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default()
    }

    /// Answers one incoming ILP packet from `account`. `ildcp` is the account's IL-DCP answer
    /// (server role).
    pub(crate) fn handle_incoming(
        &self,
        account: &str,
        own_address: &str,
        ildcp: Option<packets::IldcpServe<'_>>,
        packet: &[u8],
    ) -> Vec<u8> {
        // Clone the handler out so that it runs with no lock held.
        let handler = self.data_handler.read().clone();
        let _answering = Answering::set(account);
        packets::answer_prepare(
            &Incoming {
                own_address,
                account,
                max_packet_amount: self.max_packet_amount,
                in_flight: self.in_flight.as_ref(),
                hooks: &*self.hooks,
                ildcp,
            },
            packet,
            handler.as_ref(),
        )
    }

    pub(crate) fn emit(&self, event: PluginEvent) {
        #[cfg(feature = "redis")]
        {
            let remote = self.remote_hubs.read().clone();
            match (&event, remote) {
                (PluginEvent::AccountConnected(account), Some(remote)) => remote.attached(account),
                (PluginEvent::AccountDisconnected(account), Some(remote)) => {
                    remote.detached(account)
                }
                _ => {}
            }
        }
        match &event {
            PluginEvent::Connected => self.hooks.on_connected(PEER_ACCOUNT),
            PluginEvent::Disconnected(_) => self.hooks.on_disconnected(PEER_ACCOUNT),
            PluginEvent::AccountConnected(account) => self.hooks.on_connected(account),
            PluginEvent::AccountDisconnected(account) => self.hooks.on_disconnected(account),
            PluginEvent::MoneyReceived { .. }
            | PluginEvent::MoneySent { .. }
            | PluginEvent::PaymentFailed { .. }
            | PluginEvent::InvoiceCancelled { .. } => {}
        }
        if let Some(handler) = &self.on_event {
            handler(&event);
        }
    }

    fn money_received(&self, amount: u64) -> Result<(), PluginError> {
        let handler = self
            .money_handler
            .read()
            .clone()
            .ok_or_else(|| PluginError::MoneyHandler("no money handler registered".into()))?;
        handler(amount).map_err(|e| PluginError::MoneyHandler(e.to_string()))
    }
}

/// The entries of a Response, owned.
fn owned_entries(response: &crate::btp::ResponseFrame) -> Vec<OwnedEntry> {
    response
        .protocol_data()
        .iter()
        .map(|e| OwnedEntry {
            name: e.name.to_owned().into(),
            content_type: e.content_type,
            data: e.data.to_vec(),
        })
        .collect()
}

/// Settlement's way to the peers and the user: the plugin's transport and money handler. Holds
/// the core weakly: settlement must not keep a dropped plugin alive.
struct PluginPeerLink {
    core: Weak<Core>,
}

impl PeerLink for PluginPeerLink {
    fn send(
        &self,
        account: &str,
        entries: &[ProtocolDataEntry<'_>],
        timeout: Duration,
    ) -> Result<Vec<OwnedEntry>, String> {
        let core = self.core.upgrade().ok_or("the plugin is gone")?;
        let link = core.link.read().clone().ok_or("not connected")?;
        let response = link
            .request_entries(account, entries, timeout)
            .map_err(|e| e.to_string())?;
        Ok(owned_entries(&response))
    }

    fn money_received(&self, account: &str, amount: u64) -> Result<(), String> {
        let core = self.core.upgrade().ok_or("the plugin is gone")?;
        let result = core.money_received(amount).map_err(|e| e.to_string());
        core.emit(PluginEvent::MoneyReceived {
            account: account.to_owned(),
            amount,
        });
        result
    }

    fn money_sent(&self, account: &str, amount_msat: u64, fee_msat: u64) {
        if let Some(core) = self.core.upgrade() {
            core.emit(PluginEvent::MoneySent {
                account: account.to_owned(),
                amount_msat,
                fee_msat,
            });
        }
    }

    fn payment_failed(&self, account: &str, amount_msat: u64, why: &str) {
        if let Some(core) = self.core.upgrade() {
            core.emit(PluginEvent::PaymentFailed {
                account: account.to_owned(),
                amount_msat,
                reason: why.to_owned(),
            });
        }
    }

    fn invoice_cancelled(&self, account: &str, deleted: bool) {
        if let Some(core) = self.core.upgrade() {
            core.emit(PluginEvent::InvoiceCancelled {
                account: account.to_owned(),
                deleted,
            });
        }
    }
}

/// An ILP plugin over BTP, settling (once settlement lands) over Lightning. Blocking; safe to
/// share between threads (`Arc<LightningPlugin>`); dropping it disconnects.
pub struct LightningPlugin {
    options: PluginBuilder,
    core: Arc<Core>,
    balances: Option<Arc<Balances>>,
    settlement: Option<Arc<Settlement>>,
    /// True while a connect() or disconnect() runs: they take turns without holding a lock
    /// across their I/O.
    transition: Mutex<bool>,
    /// The connect() in progress, which disconnect() cuts short instead of waiting for it.
    attempt: Mutex<Option<Arc<ConnectAttempt>>>,
    transition_done: Condvar,
}

impl fmt::Debug for LightningPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LightningPlugin")
            .field("role", &self.options.role)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl LightningPlugin {
    /// Options for a client of the BTP server at `server` (`btp+ws://user:token@host:port`).
    pub fn client(server: &str) -> PluginBuilder {
        PluginBuilder::new(Role::Client {
            server: server.to_owned(),
        })
    }

    /// Options for a server listening on `listen`, whose own ILP address is `address`.
    pub fn server(listen: SocketAddr, address: Address) -> PluginBuilder {
        PluginBuilder::new(Role::Server {
            listen,
            address,
            asset_code: DEFAULT_ASSET_CODE.to_owned(),
            asset_scale: DEFAULT_ASSET_SCALE,
        })
    }

    /// Options for `role`.
    pub fn builder(role: Role) -> PluginBuilder {
        PluginBuilder::new(role)
    }

    /// The role.
    pub fn role(&self) -> &Role {
        &self.options.role
    }

    /// Client: connects, authenticates and learns our address by IL-DCP. Server: starts
    /// listening. With settlement, first asks the node who it is and starts settlement's
    /// threads (an unreachable node is an error here). Does nothing when already connected.
    pub fn connect(&self) -> Result<(), PluginError> {
        // Published before waiting for our turn: a disconnect() from now on cuts this short.
        let attempt = Arc::new(ConnectAttempt::new());
        *self.attempt.lock() = Some(attempt.clone());
        self.begin_transition();
        let result = if self.core.link.read().is_some() {
            Ok(())
        } else {
            self.start_settlement().and_then(|()| {
                self.open_link(&attempt)
                    .and_then(|link| {
                        let link = Arc::new(link);
                        *self.core.link.write() = Some(link.clone());
                        // Only now do connect events go out: settlement greets the peer as
                        // soon as it hears of it, through this link.
                        link.start_events(&self.core).inspect_err(|_| {
                            self.core.link.write().take();
                            link.close();
                        })
                    })
                    .inspect_err(|_| self.stop_settlement())
            })
        };
        {
            let mut current = self.attempt.lock();
            if current.as_ref().is_some_and(|a| Arc::ptr_eq(a, &attempt)) {
                *current = None;
            }
        }
        self.end_transition();
        result
    }

    fn start_settlement(&self) -> Result<(), PluginError> {
        match &self.settlement {
            Some(settlement) => settlement
                .start(Arc::new(PluginPeerLink {
                    core: Arc::downgrade(&self.core),
                }))
                .map_err(|e| PluginError::Settlement(e.to_string())),
            None => Ok(()),
        }
    }

    fn stop_settlement(&self) {
        if let Some(settlement) = &self.settlement {
            settlement.stop();
        }
    }

    /// Waits for any connect/disconnect in progress, then marks one as running.
    fn begin_transition(&self) {
        let mut busy = self.transition.lock();
        while *busy {
            self.transition_done.wait(&mut busy);
        }
        *busy = true;
    }

    fn end_transition(&self) {
        *self.transition.lock() = false;
        self.transition_done.notify_all();
    }

    fn open_link(&self, attempt: &ConnectAttempt) -> Result<Link, PluginError> {
        Ok(match &self.options.role {
            Role::Client { server } => {
                Link::connect_client(server, &self.options, &self.core, attempt)?
            }
            Role::Server {
                listen,
                address,
                asset_code,
                asset_scale,
            } => {
                let store = self
                    .options
                    .token_store
                    .clone()
                    .unwrap_or_else(|| Arc::new(MemoryTokenStore::new()));
                Link::listen(
                    *listen,
                    address,
                    asset_code,
                    *asset_scale,
                    (store, self.account_limits()),
                    &self.options,
                    &self.core,
                )?
            }
        })
    }

    /// The account limits for the server, with the expiry check filled in from the books.
    fn account_limits(&self) -> AccountLimits {
        let mut limits = self.options.account_limits.clone();
        if limits.expire_unused_after.is_some() && limits.may_expire.is_none() {
            let may_expire: MayExpire = match (&self.settlement, &self.balances) {
                (Some(settlement), _) => {
                    let settlement = settlement.clone();
                    Arc::new(move |account: &str| {
                        settlement.account(account).is_ok_and(|book| {
                            book == crate::settlement::book::AccountBook::default()
                        })
                    })
                }
                (None, Some(balances)) => {
                    let balances = balances.clone();
                    Arc::new(move |account: &str| {
                        let balance = balances.balance(account);
                        balance.receivable == 0 && balance.payable == 0
                    })
                }
                (None, None) => Arc::new(|_: &str| false),
            };
            limits.may_expire = Some(may_expire);
        }
        limits
    }

    /// Closes every connection, stops settlement and joins every thread (except the calling
    /// one, when a handler or hook of this plugin calls it: that thread ends when it returns).
    /// Does nothing when not connected. A `connect()` in progress on another thread fails at
    /// once rather than make this wait for it.
    pub fn disconnect(&self) {
        // A connect() in progress gives up rather than make us wait for it (up to its connect
        // timeout and then its IL-DCP request's).
        let attempt = self.attempt.lock().take();
        if let Some(attempt) = attempt {
            attempt.cancel();
        }
        self.begin_transition();
        let link = self.core.link.write().take();
        if let Some(link) = link {
            link.close();
        }
        self.stop_settlement();
        self.end_transition();
    }

    /// Client: the connection to the server is up. Server: it is listening.
    pub fn is_connected(&self) -> bool {
        self.core.link.read().as_ref().is_some_and(|l| l.is_up())
    }

    /// Settlement over Lightning, when the plugin was built with
    /// [`PluginBuilder::lightning`].
    pub fn settlement(&self) -> Option<&Arc<Settlement>> {
        self.settlement.as_ref()
    }

    /// Our own ILP address: the server's configured one, or the one the client learned by IL-DCP.
    pub fn own_address(&self) -> Option<Address> {
        self.core.own_address.read().clone()
    }

    /// Server: the address it listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.core.link.read().as_ref().and_then(|l| l.local_addr())
    }

    /// Server: the accounts with at least one live connection.
    pub fn connected_accounts(&self) -> Vec<String> {
        self.core
            .link
            .read()
            .as_ref()
            .map(|l| l.accounts())
            .unwrap_or_default()
    }

    /// Joins (`Some`) or leaves (`None`) a cluster of hub processes.
    #[cfg(feature = "redis")]
    pub(crate) fn set_remote_hubs(&self, remote: Option<Arc<dyn cluster::RemoteHubs>>) {
        *self.core.remote_hubs.write() = remote;
    }

    /// The account `prepare` goes to when no client of that account is attached here (and
    /// this is a server): where another hub process may hold it.
    #[cfg(feature = "redis")]
    fn attached_elsewhere(&self, prepare: &[u8]) -> Option<String> {
        let link = self.core.link.read().clone()?;
        let destination = Prepare::parse(prepare).ok()?.destination().to_owned();
        let account = link.route(&destination).ok()?;
        (!link.is_attached(&account)).then_some(account)
    }

    /// The account `prepare` goes to if a client of it is attached here.
    #[cfg(feature = "redis")]
    fn attached_account(&self, prepare: &[u8]) -> Option<String> {
        let link = self.core.link.read().clone()?;
        let destination = Prepare::parse(prepare).ok()?.destination().to_owned();
        let account = link.route(&destination).ok()?;
        link.is_attached(&account).then_some(account)
    }

    /// The built-in balances, unless [`PluginBuilder::settlement_hooks`] replaced them.
    pub fn balances(&self) -> Option<&Balances> {
        self.balances.as_deref()
    }

    fn current_link(&self) -> Result<Arc<Link>, PluginError> {
        self.core
            .link
            .read()
            .clone()
            .ok_or(PluginError::NotConnected)
    }

    /// Sends a serialized ILP Prepare and returns the serialized Fulfill or Reject. Server role:
    /// to the client whose address prefixes the destination (a Reject F02 if none is connected).
    /// A Prepare that expires before its answer gets R00; a Fulfill that does not match the
    /// condition F05.
    pub fn send_data(&self, prepare: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.send_data_via(prepare, &*self.core.hooks)
    }

    /// [`send_data`](Self::send_data), booking the outcome through `hooks`.
    pub(crate) fn send_data_via(
        &self,
        prepare: &[u8],
        hooks: &dyn SettlementHooks,
    ) -> Result<Vec<u8>, PluginError> {
        match self.route_prepare(prepare)? {
            Routed::Answered(reply) => Ok(reply),
            Routed::To {
                link,
                account,
                sent,
                timeout,
            } => {
                let result = link.request(&account, prepare, timeout);
                self.conclude(hooks, &account, &sent, result)
            }
        }
    }

    /// Sends a serialized ILP Prepare like [`LightningPlugin::send_data`] without waiting for
    /// its answer, so that one thread can keep many Prepares in flight (as an event loop
    /// would): [`DataInFlight::wait`] returns the Fulfill or Reject. A thread waiting for one
    /// answer reads the others as they come, so a window of Prepares costs no thread wake-up
    /// per packet. To send several at once in one system call, see
    /// [`LightningPlugin::submit_data_many`].
    ///
    /// ```no_run
    /// # fn run(plugin: &ilp_plugin_lightning::plugin::LightningPlugin, prepares: &[Vec<u8>])
    /// # -> Result<(), ilp_plugin_lightning::plugin::PluginError> {
    /// let in_flight = prepares
    ///     .iter()
    ///     .map(|p| plugin.submit_data(p))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// for packet in in_flight {
    ///     let fulfill_or_reject = packet.wait()?;
    ///     # let _ = fulfill_or_reject;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn submit_data(&self, prepare: &[u8]) -> Result<DataInFlight<'_>, PluginError> {
        let packet = self.queue_data(prepare)?;
        packet.flush()
    }

    /// Sends several serialized Prepares like [`LightningPlugin::submit_data`], those for the
    /// same peer in one system call; one result per Prepare, in order.
    pub fn submit_data_many<'p>(
        &self,
        prepares: impl IntoIterator<Item = &'p [u8]>,
    ) -> Vec<Result<DataInFlight<'_>, PluginError>> {
        let queued: Vec<_> = prepares.into_iter().map(|p| self.queue_data(p)).collect();
        // Flushing one connection writes everything queued on it: the rest find it empty.
        queued
            .into_iter()
            .map(|packet| packet.and_then(DataInFlight::flush))
            .collect()
    }

    /// Routes a Prepare and queues it on its peer's connection, or answers it here.
    fn queue_data(&self, prepare: &[u8]) -> Result<DataInFlight<'_>, PluginError> {
        let state = match self.route_prepare(prepare)? {
            Routed::Answered(reply) => InFlightState::Answered(reply),
            Routed::To {
                link,
                account,
                sent,
                timeout,
            } => match link.submit(&account, prepare, timeout) {
                Ok(pending) => InFlightState::Sent {
                    link,
                    account,
                    sent,
                    pending,
                },
                Err(e) => InFlightState::Answered(self.conclude(
                    &*self.core.hooks,
                    &account,
                    &sent,
                    Err(e),
                )?),
            },
        };
        Ok(DataInFlight {
            plugin: self,
            state,
        })
    }

    /// Where a Prepare goes, or the answer it gets without going anywhere.
    fn route_prepare(&self, prepare: &[u8]) -> Result<Routed, PluginError> {
        let parsed = Prepare::parse(prepare).map_err(PluginError::InvalidPrepare)?;
        let link = self.current_link()?;
        let sent = Sent::of(&parsed);
        let now = crate::ilp::Timestamp::now();
        let left = sent.expires_at.unix_millis() - now.unix_millis();
        if left <= 0 {
            let own = self.core.own_address_text();
            return Ok(Routed::Answered(reject(
                ErrorCode::R00_TRANSFER_TIMED_OUT,
                &own,
                "Packet expired",
                &[],
            )));
        }
        let timeout = self
            .options
            .request_timeout
            .min(Duration::from_millis(left as u64));
        match link.route(parsed.destination()) {
            Ok(account) => Ok(Routed::To {
                link,
                account,
                sent,
                timeout,
            }),
            Err(message) => {
                let own = self.core.own_address_text();
                Ok(Routed::Answered(reject(
                    ErrorCode::F02_UNREACHABLE,
                    &own,
                    &message,
                    &[],
                )))
            }
        }
    }

    /// The answer to a Prepare sent to `account`, checked, with `hooks` told.
    fn conclude(
        &self,
        hooks: &dyn SettlementHooks,
        account: &str,
        sent: &Sent,
        result: Result<Vec<u8>, link::SendError>,
    ) -> Result<Vec<u8>, PluginError> {
        let own = self.core.own_address_text();
        match result {
            Ok(reply) => {
                check_reply(hooks, &own, account, sent, reply).map_err(PluginError::InvalidReply)
            }
            Err(link::SendError::TimedOut) => {
                hooks.on_outgoing_rejected(account, sent.amount, "R00");
                Ok(reject(
                    ErrorCode::R00_TRANSFER_TIMED_OUT,
                    &own,
                    "Packet expired",
                    &[],
                ))
            }
            // No ILP answer: nothing is owed, and the hooks hear of it like of a Reject.
            Err(link::SendError::Unreachable(message)) => {
                hooks.on_outgoing_rejected(account, sent.amount, "F02");
                Ok(reject(ErrorCode::F02_UNREACHABLE, &own, &message, &[]))
            }
            Err(link::SendError::Failed(e)) => {
                hooks.on_outgoing_rejected(account, sent.amount, "T00");
                Err(e)
            }
        }
    }

    /// Pays the peer `amount` through [`SettlementHooks::send_money`] (client role; the built-in
    /// [`Balances`] cannot pay and say so). Server role: unsupported, as in the JS reference (the
    /// server settles by itself).
    pub fn send_money(&self, amount: u64) -> Result<(), PluginError> {
        match self.options.role {
            Role::Server { .. } => Err(PluginError::Unsupported(
                "sendMoney is not supported by the server role: it settles by itself",
            )),
            Role::Client { .. } if amount == 0 => Ok(()),
            Role::Client { .. } => self
                .core
                .hooks
                .send_money(PEER_ACCOUNT, amount)
                .map_err(PluginError::Settlement),
        }
    }

    /// Sends a BTP Message carrying `entries` (another sub-protocol than `ilp`: settlement's
    /// `peeringRequest`, `paymentRequest`...) to `account` (client role: any name, there is one
    /// peer) and returns the entries of its Response. The peer's BTP Error is
    /// [`PluginError::PeerError`].
    pub fn request(
        &self,
        account: &str,
        entries: &[ProtocolDataEntry<'_>],
    ) -> Result<Vec<OwnedEntry>, PluginError> {
        let link = self.current_link()?;
        let response = link
            .request_entries(account, entries, self.options.request_timeout)
            .map_err(|e| match e {
                BtpRequestError::Rejected(reply) => PluginError::PeerError {
                    code: reply.code.as_str().to_owned(),
                    name: reply.name.clone(),
                    message: String::from_utf8_lossy(&reply.data).into_owned(),
                },
                BtpRequestError::NotConnected(_) => PluginError::NotConnected,
                other => PluginError::Transport(other.to_string()),
            })?;
        Ok(owned_entries(&response))
    }

    /// Sets the handler for incoming Prepares. Fails if one is set already.
    pub fn register_data_handler(
        &self,
        handler: impl Fn(&[u8]) -> Result<Vec<u8>, HandlerError> + Send + Sync + 'static,
    ) -> Result<(), PluginError> {
        let mut slot = self.core.data_handler.write();
        if slot.is_some() {
            return Err(PluginError::DataHandlerAlreadyRegistered);
        }
        *slot = Some(Arc::new(handler));
        Ok(())
    }

    /// Removes the data handler (no-op if none): incoming Prepares then get T00.
    pub fn deregister_data_handler(&self) {
        self.core.data_handler.write().take();
    }

    /// Sets the handler told about money received. Fails if one is set already.
    pub fn register_money_handler(
        &self,
        handler: impl Fn(u64) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> Result<(), PluginError> {
        let mut slot = self.core.money_handler.write();
        if slot.is_some() {
            return Err(PluginError::MoneyHandlerAlreadyRegistered);
        }
        *slot = Some(Arc::new(handler));
        Ok(())
    }

    /// Removes the money handler (no-op if none).
    pub fn deregister_money_handler(&self) {
        self.core.money_handler.write().take();
    }

    /// Hands `amount` the peer paid us (settlement calls this when a Lightning payment lands)
    /// to the money handler, on the calling thread and with no lock held. With no handler this
    /// is an error, as RFC 24 asks.
    pub fn money_received(&self, amount: u64) -> Result<(), PluginError> {
        self.core.money_received(amount)
    }

    /// Whether a money handler is registered (the settlement layer asks before it credits).
    pub fn has_money_handler(&self) -> bool {
        self.core.money_handler.read().is_some()
    }
}

impl Drop for LightningPlugin {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Makes a server a hub: each Prepare a client sends to `<server>.<other account>...` is forwarded
/// to that account's client, and its Fulfill or Reject returned. The incoming side is booked
/// against the sender (credit limit), the outgoing side against the receiver. Registers the
/// plugin's data handler (so fails if one is set). The handler holds the plugin weakly.
pub fn route_between_clients(plugin: &Arc<LightningPlugin>) -> Result<(), PluginError> {
    if !matches!(plugin.role(), Role::Server { .. }) {
        return Err(PluginError::Unsupported(
            "only a server routes between its clients",
        ));
    }
    let weak: Weak<LightningPlugin> = Arc::downgrade(plugin);
    plugin.register_data_handler(move |prepare| {
        let plugin = weak
            .upgrade()
            .ok_or_else(|| HandlerError::Internal("hub is shutting down".into()))?;
        let own_address = plugin.core.own_address_text();
        let amount = match forwarded_amount(&plugin, prepare) {
            Ok(amount) => amount,
            Err(why) => return Ok(reject(ErrorCode::F00_BAD_REQUEST, &own_address, &why, &[])),
        };
        let forwarded = match shorten_expiry(prepare, amount, plugin.options.forward_expiry_margin)
        {
            Ok(forwarded) => forwarded,
            Err(why) => {
                return Ok(reject(
                    ErrorCode::R02_INSUFFICIENT_TIMEOUT,
                    &own_address,
                    &why,
                    &[],
                ))
            }
        };
        #[cfg(feature = "redis")]
        {
            let remote = plugin.core.remote_hubs.read().clone();
            if let Some(remote) = remote {
                if let Some(account) = plugin.attached_elsewhere(&forwarded) {
                    if let Some(reply) = remote.forward(&account, &forwarded) {
                        return Ok(reply);
                    }
                }
            }
        }
        match plugin.send_data(&forwarded) {
            Ok(reply) => Ok(reply),
            Err(PluginError::InvalidPrepare(e)) => Err(HandlerError::Final(e.to_string())),
            // The next hop went away or refused the request: temporary, so T01.
            Err(e @ (PluginError::Transport(_) | PluginError::PeerError { .. })) => Ok(reject(
                ErrorCode::T01_PEER_UNREACHABLE,
                &own_address,
                &format!("next hop unreachable: {e}"),
                &[],
            )),
            Err(e) => Err(HandlerError::Internal(format!("forwarding failed: {e}"))),
        }
    })
}

/// What a forwarded Prepare carries: its amount in the receiving account's unit. Settlement
/// agrees on a unit per account (satoshis with JS peers, millisatoshis between two of ours that
/// agree), so a hub may forward between accounts of different units; like any connector it
/// rounds down, so it never passes on more than it took in. `None`: the amount as it came (same
/// unit, or no per-account units).
fn forwarded_amount(plugin: &LightningPlugin, prepare: &[u8]) -> Result<Option<u64>, String> {
    let Ok(parsed) = Prepare::parse(prepare) else {
        return Ok(None);
    };
    let Some(from) = Answering::current() else {
        return Ok(None);
    };
    let Ok(link) = plugin.current_link() else {
        return Ok(None);
    };
    let Ok(to) = link.route(parsed.destination()) else {
        return Ok(None);
    };
    let hooks = &plugin.core.hooks;
    let (Some(from_scale), Some(to_scale)) = (hooks.asset_scale(&from), hooks.asset_scale(&to))
    else {
        return Ok(None);
    };
    if from_scale == to_scale {
        return Ok(None);
    }
    let unit = |scale| crate::settlement::Unit::from_asset_scale(scale).map_err(|e| e.to_string());
    let msat = unit(from_scale)?.to_msat(parsed.amount());
    let out = msat / u128::from(unit(to_scale)?.msat_per_unit());
    u64::try_from(out).map(Some).map_err(|_| {
        format!(
            "{} at asset scale {from_scale} does not fit an ILP amount at scale {to_scale}",
            parsed.amount()
        )
    })
}

/// The Prepare to forward: `prepare` expiring `margin` earlier, so that the hub's wait for the
/// next hop ends, and its sender hears why, before the sender itself gives up, and carrying
/// `amount` if given. With too little time left for that: why, for an R02.
fn shorten_expiry(
    prepare: &[u8],
    amount: Option<u64>,
    margin: Duration,
) -> Result<Vec<u8>, String> {
    let Ok(parsed) = Prepare::parse(prepare) else {
        // The packet path parsed it before the handler ran; keep the bytes as they came.
        return Ok(prepare.to_vec());
    };
    let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
    let expires_at = parsed.expires_at().add_millis(margin_ms.saturating_neg());
    if expires_at <= crate::ilp::Timestamp::now() {
        return Err(format!(
            "the Prepare expires at {}: less than the {} ms this hub keeps for the next hop",
            parsed.expires_at(),
            margin.as_millis()
        ));
    }
    let shortened = crate::ilp::PrepareBuilder {
        amount: amount.unwrap_or(parsed.amount()),
        expires_at,
        execution_condition: parsed.execution_condition(),
        destination: parsed.destination(),
        data: parsed.data(),
    }
    .build()
    .map(|shortened| shortened.to_bytes());
    // Only the expiry and the amount changed, so building cannot fail on what parsed.
    Ok(shortened.unwrap_or_else(|_| prepare.to_vec()))
}

/// Where [`LightningPlugin::route_prepare`] sends a Prepare.
enum Routed {
    /// Answered here (expired, or no route).
    Answered(Vec<u8>),
    To {
        link: Arc<Link>,
        account: String,
        sent: Sent,
        timeout: Duration,
    },
}

/// A Prepare sent by [`LightningPlugin::submit_data`], its Fulfill or Reject still to come.
/// Dropped without [`DataInFlight::wait`], its answer is ignored (and the settlement hooks
/// never hear of it: wait for every Prepare whose money matters).
#[must_use = "the Fulfill or Reject is only read by waiting for it"]
pub struct DataInFlight<'a> {
    plugin: &'a LightningPlugin,
    state: InFlightState,
}

enum InFlightState {
    Answered(Vec<u8>),
    Sent {
        link: Arc<Link>,
        account: String,
        sent: Sent,
        pending: crate::btp::PendingResponse,
    },
}

impl fmt::Debug for DataInFlight<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            InFlightState::Answered(_) => f.write_str("DataInFlight(answered)"),
            InFlightState::Sent {
                account, pending, ..
            } => f
                .debug_struct("DataInFlight")
                .field("account", account)
                .field("request_id", &pending.request_id())
                .finish(),
        }
    }
}

impl<'a> DataInFlight<'a> {
    /// Writes the Prepare if it is still queued; a failed write answers it at once.
    fn flush(self) -> Result<DataInFlight<'a>, PluginError> {
        let InFlightState::Sent {
            link,
            account,
            sent,
            pending,
        } = &self.state
        else {
            return Ok(self);
        };
        match link.flush(pending) {
            Ok(()) => Ok(self),
            Err(e) => {
                let answer =
                    self.plugin
                        .conclude(&*self.plugin.core.hooks, account, sent, Err(e))?;
                Ok(DataInFlight {
                    plugin: self.plugin,
                    state: InFlightState::Answered(answer),
                })
            }
        }
    }

    /// Whether [`DataInFlight::wait`] would return without waiting (the answer is here, or
    /// the connection has ended), as `JoinHandle::is_finished` tells of a thread: to collect
    /// every answer already in before sending more.
    pub fn is_ready(&self) -> bool {
        match &self.state {
            InFlightState::Answered(_) => true,
            InFlightState::Sent { pending, .. } => pending.is_ready(),
        }
    }

    /// Waits for the serialized Fulfill or Reject, checked as [`LightningPlugin::send_data`]
    /// checks it.
    pub fn wait(self) -> Result<Vec<u8>, PluginError> {
        match self.state {
            InFlightState::Answered(reply) => Ok(reply),
            InFlightState::Sent {
                link,
                account,
                sent,
                pending,
            } => {
                let result = link.finish(pending);
                self.plugin
                    .conclude(&*self.plugin.core.hooks, &account, &sent, result)
            }
        }
    }
}
