//! `LightningPlugin`: the blocking plugin API (in the spirit of RFC 24) over the BTP transport,
//! in role client (one server) or server (many clients, mini-accounts style).
//!
//! - `send_data(prepare)` returns the peer's Fulfill or Reject bytes. A Prepare that expires
//!   before the answer comes gets a local `R00` Reject; a Fulfill whose fulfillment does not
//!   match the condition becomes `F05`; in role server a destination under no connected client's
//!   address gets `F02`.
//! - Incoming Prepares go to the data handler. Bad ILP gets `F01`, an expired Prepare `R00`, one
//!   above `max_packet_amount` `F08`; a handler error becomes `F00` (final) or `T00` (temporary)
//!   carrying its message, and so does a missing handler (`T00`) or a panicking one (`T00`).
//! - In role server, `peer.config` (IL-DCP) requests from a client are answered with the
//!   client's address `<server address>.<account>`.
//! - `send_money` hands the amount to the [`Settlement`] given to the builder (Lightning
//!   settlement plugs in there); incoming BTP Transfers go to the money handler.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::btp::{
    BtpClient, BtpServer, ClientConfig, ClientError, ErrorReply, OwnedEntry, Packet as BtpPacket,
    ProtocolDataEntry, Reply, RequestError, ServerConfig, ServerError, TransportError,
};
use crate::ilp::ildcp::{self, IldcpResponse};
use crate::ilp::{
    Address, ErrorCode, MaxPacketAmountDetails, Packet, ParseError, Prepare, RejectBuilder,
    Timestamp,
};

/// Why a data handler refused a Prepare; becomes a Reject carrying the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataHandlerError {
    /// A final error: Reject `F00`.
    Final(String),
    /// A temporary error: Reject `T00`.
    Temporary(String),
}

/// Answers an incoming Prepare from `peer` (the account in role server, the server's address
/// or `"server"` in role client) with the bytes of a Fulfill or a Reject.
pub type DataHandler =
    Arc<dyn Fn(&str, &Prepare<'_>) -> Result<Vec<u8>, DataHandlerError> + Send + Sync>;

/// Told about `amount` received from `peer` (a BTP Transfer). An error refuses it.
pub type MoneyHandler = Arc<dyn Fn(&str, u64) -> Result<(), String> + Send + Sync>;

/// How money is actually sent: the settlement layer (Lightning) implements this.
pub trait Settlement: Send + Sync {
    /// Pays `amount` to `peer` (the account in role server, `"server"` in role client).
    fn send_money(&self, peer: &str, amount: u64) -> Result<(), String>;
}

/// Which side of BTP the plugin plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Connects to one server at this `btp+ws://` URI.
    Client {
        /// `btp+ws://[user:token@]host:port[/path]`.
        server: String,
    },
    /// Listens for clients; each client's address is `<address>.<account>`.
    Server {
        /// Where to listen, e.g. `127.0.0.1:7768`.
        listen: String,
        /// This node's ILP address.
        address: Address,
    },
}

/// Why a plugin call failed.
#[derive(Debug)]
pub enum PluginError {
    /// The builder was given no role.
    NoRole,
    /// `connect()` was not called, or `disconnect()` was.
    NotConnected,
    /// `connect()` was already called.
    AlreadyConnected,
    /// The client could not connect.
    Client(ClientError),
    /// The server could not start.
    Server(ServerError),
    /// The bytes given to `send_data` are not an ILP Prepare.
    InvalidPrepare(ParseError),
    /// The request to the peer failed (connection lost, BTP Error, timeout before expiry).
    Request(RequestError),
    /// The peer answered with something that is not a Fulfill or Reject.
    InvalidReply(String),
    /// `send_money` without a [`Settlement`].
    NoSettlement,
    /// The settlement refused or failed.
    Settlement(String),
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::NoRole => f.write_str("plugin built without a role (client or server)"),
            PluginError::NotConnected => f.write_str("plugin is not connected"),
            PluginError::AlreadyConnected => f.write_str("plugin is already connected"),
            PluginError::Client(e) => e.fmt(f),
            PluginError::Server(e) => e.fmt(f),
            PluginError::InvalidPrepare(e) => write!(f, "not an ILP Prepare: {e}"),
            PluginError::Request(e) => e.fmt(f),
            PluginError::InvalidReply(e) => {
                write!(f, "peer's reply is not a Fulfill or Reject: {e}")
            }
            PluginError::NoSettlement => f.write_str("no settlement configured: cannot send money"),
            PluginError::Settlement(e) => write!(f, "settlement failed: {e}"),
        }
    }
}

impl std::error::Error for PluginError {}

/// Options of a [`LightningPlugin`].
pub struct LightningPluginBuilder {
    role: Option<Role>,
    client_config: ClientConfig,
    server_config: ServerConfig,
    max_packet_amount: Option<u64>,
    asset_code: String,
    asset_scale: u8,
    settlement: Option<Arc<dyn Settlement>>,
}

impl Default for LightningPluginBuilder {
    fn default() -> Self {
        LightningPluginBuilder {
            role: None,
            client_config: ClientConfig::default(),
            server_config: ServerConfig::default(),
            max_packet_amount: None,
            asset_code: "BTC".into(),
            asset_scale: 8,
            settlement: None,
        }
    }
}

impl LightningPluginBuilder {
    /// Role client, connecting to `server` (`btp+ws://[user:token@]host:port[/path]`).
    pub fn client(mut self, server: impl Into<String>) -> Self {
        self.role = Some(Role::Client {
            server: server.into(),
        });
        self
    }

    /// Role server, listening on `listen`, with ILP address `address`.
    pub fn server(mut self, listen: impl Into<String>, address: Address) -> Self {
        self.role = Some(Role::Server {
            listen: listen.into(),
            address,
        });
        self
    }

    /// BTP client settings (timeouts, reconnect, keepalive).
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.client_config = config;
        self
    }

    /// BTP server settings (auth timeout, caps, token store).
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server_config = config;
        self
    }

    /// Incoming Prepares above this amount are rejected with `F08`.
    pub fn max_packet_amount(mut self, amount: u64) -> Self {
        self.max_packet_amount = Some(amount);
        self
    }

    /// Asset code and scale told to clients by IL-DCP (default `BTC`, 8: amounts in satoshis).
    pub fn asset(mut self, code: impl Into<String>, scale: u8) -> Self {
        self.asset_code = code.into();
        self.asset_scale = scale;
        self
    }

    /// What `send_money` pays through.
    pub fn settlement(mut self, settlement: Arc<dyn Settlement>) -> Self {
        self.settlement = Some(settlement);
        self
    }

    /// The plugin, not yet connected.
    pub fn build(self) -> Result<LightningPlugin, PluginError> {
        let role = self.role.ok_or(PluginError::NoRole)?;
        Ok(LightningPlugin {
            shared: Arc::new(Shared {
                role,
                max_packet_amount: self.max_packet_amount,
                asset_code: self.asset_code,
                asset_scale: self.asset_scale,
                data_handler: RwLock::new(None),
                money_handler: RwLock::new(None),
            }),
            client_config: self.client_config,
            server_config: self.server_config,
            settlement: self.settlement,
            transport: Mutex::new(None),
            connecting: Mutex::new(()),
        })
    }
}

struct Shared {
    role: Role,
    max_packet_amount: Option<u64>,
    asset_code: String,
    asset_scale: u8,
    data_handler: RwLock<Option<DataHandler>>,
    money_handler: RwLock<Option<MoneyHandler>>,
}

enum Transport {
    Client(Arc<BtpClient>),
    Server(Arc<BtpServer>),
}

impl Clone for Transport {
    fn clone(&self) -> Self {
        match self {
            Transport::Client(c) => Transport::Client(c.clone()),
            Transport::Server(s) => Transport::Server(s.clone()),
        }
    }
}

/// An ILP plugin over BTP, settling through a [`Settlement`]. All calls block; handlers run on
/// the BTP handler pool.
pub struct LightningPlugin {
    shared: Arc<Shared>,
    client_config: ClientConfig,
    server_config: ServerConfig,
    settlement: Option<Arc<dyn Settlement>>,
    transport: Mutex<Option<Transport>>,
    connecting: Mutex<()>,
}

impl fmt::Debug for LightningPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LightningPlugin")
            .field("role", &self.shared.role)
            .finish_non_exhaustive()
    }
}

/// The peer name handlers see for the server, in role client.
pub const SERVER_PEER: &str = "server";

impl LightningPlugin {
    /// Starts building a plugin.
    pub fn builder() -> LightningPluginBuilder {
        LightningPluginBuilder::default()
    }

    /// Role client: connects and authenticates (blocks until then or `connect_timeout`).
    /// Role server: starts listening.
    pub fn connect(&self) -> Result<(), PluginError> {
        // Serialises connect() calls only; the transport lock is never held while connecting,
        // so is_connected() and send_data() answer at once meanwhile.
        let _connecting = self.connecting.lock();
        if self.transport.lock().is_some() {
            return Err(PluginError::AlreadyConnected);
        }
        let shared = self.shared.clone();
        let transport = match &self.shared.role {
            Role::Client { server } => {
                let handler = Arc::new(move |request: &BtpPacket<'_>| {
                    shared.handle_request(SERVER_PEER, request)
                });
                let client = BtpClient::connect(server, self.client_config.clone(), handler)
                    .map_err(PluginError::Client)?;
                Transport::Client(Arc::new(client))
            }
            Role::Server { listen, .. } => {
                let handler = Arc::new(move |account: &str, request: &BtpPacket<'_>| {
                    shared.handle_request(account, request)
                });
                let server = BtpServer::bind(listen.as_str(), self.server_config.clone(), handler)
                    .map_err(PluginError::Server)?;
                Transport::Server(Arc::new(server))
            }
        };
        *self.transport.lock() = Some(transport);
        Ok(())
    }

    /// Closes every connection and joins every thread. Idempotent.
    pub fn disconnect(&self) {
        let transport = self.transport.lock().take();
        match transport {
            Some(Transport::Client(c)) => c.disconnect(),
            Some(Transport::Server(s)) => s.shutdown(),
            None => {}
        }
    }

    /// Role client: authenticated to the server now. Role server: listening.
    pub fn is_connected(&self) -> bool {
        match &*self.transport.lock() {
            Some(Transport::Client(c)) => c.is_connected(),
            Some(Transport::Server(_)) => true,
            None => false,
        }
    }

    /// The BTP server, in role server once connected (its events, accounts, local address).
    pub fn btp_server(&self) -> Option<Arc<BtpServer>> {
        match &*self.transport.lock() {
            Some(Transport::Server(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// The BTP client, in role client once connected (its events).
    pub fn btp_client(&self) -> Option<Arc<BtpClient>> {
        match &*self.transport.lock() {
            Some(Transport::Client(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// Sends an ILP Prepare and returns the Fulfill or Reject bytes that answer it.
    pub fn send_data(&self, prepare: &[u8]) -> Result<Vec<u8>, PluginError> {
        let parsed = Prepare::parse(prepare).map_err(PluginError::InvalidPrepare)?;
        let transport = self
            .transport
            .lock()
            .clone()
            .ok_or(PluginError::NotConnected)?;
        let until_expiry = parsed
            .expires_at()
            .to_system_time()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let triggered_by = self.shared.own_address();
        if until_expiry.is_zero() {
            return Ok(reject(
                ErrorCode::R00_TRANSFER_TIMED_OUT,
                triggered_by,
                "packet expired",
            ));
        }
        let entries = [ProtocolDataEntry::octets(crate::btp::ILP, prepare)];
        let result = match &transport {
            Transport::Client(c) => {
                let timeout = until_expiry.min(self.client_config.connection.request_timeout);
                c.request(&entries, None, Some(timeout))
            }
            Transport::Server(s) => {
                let Some(account) = self.shared.route(parsed.destination()) else {
                    return Ok(reject(
                        ErrorCode::F02_UNREACHABLE,
                        triggered_by,
                        "no client with that address",
                    ));
                };
                if !s.is_connected(account) {
                    return Ok(reject(
                        ErrorCode::F02_UNREACHABLE,
                        triggered_by,
                        "client is not connected",
                    ));
                }
                let timeout = until_expiry.min(self.server_config.connection.request_timeout);
                s.request(account, &entries, None, Some(timeout))
            }
        };
        let response = match result {
            Ok(r) => r,
            Err(RequestError::Transport(TransportError::Timeout { .. }))
                if Timestamp::now() >= parsed.expires_at() =>
            {
                return Ok(reject(
                    ErrorCode::R00_TRANSFER_TIMED_OUT,
                    triggered_by,
                    "packet expired",
                ));
            }
            Err(e) => return Err(PluginError::Request(e)),
        };
        let reply = response
            .ilp()
            .ok_or_else(|| PluginError::InvalidReply("no ilp entry".into()))?
            .to_vec();
        match Packet::parse(&reply) {
            Ok(Packet::Fulfill(f)) => {
                if !f.fulfills(parsed.execution_condition()) {
                    return Ok(reject(
                        ErrorCode::F05_WRONG_CONDITION,
                        triggered_by,
                        "fulfillment does not match the condition",
                    ));
                }
                if Timestamp::now() > parsed.expires_at() {
                    return Ok(reject(
                        ErrorCode::R00_TRANSFER_TIMED_OUT,
                        triggered_by,
                        "packet expired",
                    ));
                }
                Ok(reply)
            }
            Ok(Packet::Reject(_)) => Ok(reply),
            Ok(Packet::Prepare(_)) => Err(PluginError::InvalidReply("a Prepare".into())),
            Err(e) => Err(PluginError::InvalidReply(e.to_string())),
        }
    }

    /// Pays `amount` through the [`Settlement`]: to the server in role client, to `account`
    /// in role server (use [`LightningPlugin::send_money_to`]).
    pub fn send_money(&self, amount: u64) -> Result<(), PluginError> {
        self.send_money_to(SERVER_PEER, amount)
    }

    /// Pays `amount` to `peer` through the [`Settlement`].
    pub fn send_money_to(&self, peer: &str, amount: u64) -> Result<(), PluginError> {
        let settlement = self.settlement.as_ref().ok_or(PluginError::NoSettlement)?;
        settlement
            .send_money(peer, amount)
            .map_err(PluginError::Settlement)
    }

    /// Sets the handler of incoming Prepares (replacing any previous one).
    pub fn register_data_handler(&self, handler: DataHandler) {
        *self.shared.data_handler.write() = Some(handler);
    }

    /// Removes the data handler: incoming Prepares get `T00` until a new one is registered.
    pub fn deregister_data_handler(&self) {
        *self.shared.data_handler.write() = None;
    }

    /// Sets the handler of incoming money (BTP Transfers).
    pub fn register_money_handler(&self, handler: MoneyHandler) {
        *self.shared.money_handler.write() = Some(handler);
    }

    /// Removes the money handler: incoming Transfers are refused.
    pub fn deregister_money_handler(&self) {
        *self.shared.money_handler.write() = None;
    }
}

impl Drop for LightningPlugin {
    fn drop(&mut self) {
        self.disconnect();
    }
}

fn reject(code: ErrorCode, triggered_by: &str, message: &str) -> Vec<u8> {
    reject_with_data(code, triggered_by, message, &[])
}

fn reject_with_data(code: ErrorCode, triggered_by: &str, message: &str, data: &[u8]) -> Vec<u8> {
    let mut message = message;
    while message.len() > 8191 {
        let mut cut = 8191;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message = &message[..cut];
    }
    let built = RejectBuilder {
        code,
        triggered_by,
        message,
        data,
    }
    .build();
    match built {
        Ok(r) => r.to_bytes(),
        // Only an invalid `triggered_by` or oversized data can fail: drop them.
        Err(_) => RejectBuilder {
            code,
            triggered_by: "",
            message,
            data: &[],
        }
        .build()
        .map(|r| r.to_bytes())
        .unwrap_or_default(),
    }
}

impl Shared {
    fn own_address(&self) -> &str {
        match &self.role {
            Role::Server { address, .. } => address.as_str(),
            Role::Client { .. } => "",
        }
    }

    /// The account a destination belongs to: the segment after `<address>.`.
    fn route<'d>(&self, destination: &'d str) -> Option<&'d str> {
        let Role::Server { address, .. } = &self.role else {
            return None;
        };
        let rest = destination
            .strip_prefix(address.as_str())?
            .strip_prefix('.')?;
        let account = rest.split('.').next()?;
        (!account.is_empty()).then_some(account)
    }

    fn handle_request(&self, peer: &str, request: &BtpPacket<'_>) -> Reply {
        match request {
            BtpPacket::Message(m) => match m.protocol_data().ilp() {
                Some(ilp) => Reply::Response(vec![OwnedEntry::ilp(self.handle_prepare(peer, ilp))]),
                None => Reply::Error(ErrorReply::not_accepted(format!(
                    "unsupported sub-protocol {:?}",
                    m.protocol_data().primary().map(|e| e.name).unwrap_or("")
                ))),
            },
            BtpPacket::Transfer(t) => {
                let handler = self.money_handler.read().clone();
                match handler {
                    None => Reply::Error(ErrorReply::not_accepted("no money handler registered")),
                    Some(h) => match h(peer, t.amount()) {
                        Ok(()) => Reply::Response(Vec::new()),
                        Err(e) => Reply::Error(ErrorReply::not_accepted(e)),
                    },
                }
            }
            _ => Reply::Error(ErrorReply::not_accepted("not a request")),
        }
    }

    fn handle_prepare(&self, peer: &str, bytes: &[u8]) -> Vec<u8> {
        let me = self.own_address();
        let prepare = match Prepare::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                return reject(
                    ErrorCode::F01_INVALID_PACKET,
                    me,
                    &format!("invalid ILP Prepare: {e}"),
                )
            }
        };
        if prepare.expires_at() <= Timestamp::now() {
            return reject(ErrorCode::R00_TRANSFER_TIMED_OUT, me, "packet expired");
        }
        if let Some(max) = self.max_packet_amount {
            if prepare.amount() > max {
                let details = MaxPacketAmountDetails {
                    received: prepare.amount(),
                    maximum: max,
                };
                return reject_with_data(
                    ErrorCode::F08_AMOUNT_TOO_LARGE,
                    me,
                    "packet amount too large",
                    &details.to_bytes(),
                );
            }
        }
        if let Role::Server { address, .. } = &self.role {
            if ildcp::is_request(&prepare) {
                return match address.with_suffix(peer) {
                    Ok(client_address) => IldcpResponse {
                        client_address,
                        asset_scale: self.asset_scale,
                        asset_code: self.asset_code.clone(),
                    }
                    .to_fulfill_bytes(),
                    Err(e) => reject(
                        ErrorCode::F00_BAD_REQUEST,
                        me,
                        &format!("account is not an address segment: {e}"),
                    ),
                };
            }
        }
        let handler = self.data_handler.read().clone();
        let Some(handler) = handler else {
            return reject(
                ErrorCode::T00_INTERNAL_ERROR,
                me,
                "no data handler registered",
            );
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(peer, &prepare)));
        match outcome {
            Ok(Ok(reply)) => match Packet::parse(&reply) {
                Ok(Packet::Fulfill(f)) if !f.fulfills(prepare.execution_condition()) => reject(
                    ErrorCode::F05_WRONG_CONDITION,
                    me,
                    "fulfillment does not match the condition",
                ),
                Ok(Packet::Fulfill(_) | Packet::Reject(_)) => reply,
                _ => reject(
                    ErrorCode::T00_INTERNAL_ERROR,
                    me,
                    "data handler returned neither a Fulfill nor a Reject",
                ),
            },
            Ok(Err(DataHandlerError::Final(message))) => {
                reject(ErrorCode::F00_BAD_REQUEST, me, &message)
            }
            Ok(Err(DataHandlerError::Temporary(message))) => {
                reject(ErrorCode::T00_INTERNAL_ERROR, me, &message)
            }
            Err(_) => reject(ErrorCode::T00_INTERNAL_ERROR, me, "data handler panicked"),
        }
    }
}
