//! The plugin's side of the BTP transport: a [`BtpClient`] or a [`BtpServer`], the request
//! handler that feeds incoming ILP packets to [`Core`], and a named thread that turns transport
//! events into [`PluginEvent`]s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::Mutex;

use super::packets::IldcpServe;
use super::{Core, PluginBuilder, PluginError, PluginEvent};
use crate::btp::auth::TokenStore;
use crate::btp::{
    AccountLimits, BtpClient, BtpServer, ClientConfig, ClientError, ClientEvent, ConnectionConfig,
    ErrorReply, OwnedEntry, Packet, PendingResponse, ProtocolDataEntry, Reply,
    RequestError as BtpRequestError, ResponseFrame, ServerConfig, ServerEvent, TransportError, ILP,
};
use crate::ilp::ildcp::{self, IldcpResponse};
use crate::ilp::{Address, Timestamp};
use crate::settlement::PEER_ACCOUNT;

/// A client `connect()` in progress, which `disconnect()` can cut short: while the client
/// connects, by the cancel channel; while it asks for its address, by closing its connection.
pub(crate) struct ConnectAttempt {
    cancel: Mutex<Option<Sender<()>>>,
    cancelled: Receiver<()>,
    connection: Mutex<Option<crate::btp::Connection>>,
}

impl ConnectAttempt {
    pub(crate) fn new() -> ConnectAttempt {
        let (cancel, cancelled) = bounded(0);
        ConnectAttempt {
            cancel: Mutex::new(Some(cancel)),
            cancelled,
            connection: Mutex::new(None),
        }
    }

    /// Makes the connect in progress fail now.
    pub(crate) fn cancel(&self) {
        drop(self.cancel.lock().take());
        let connection = self.connection.lock().take();
        if let Some(connection) = connection {
            connection.abort(
                tungstenite::protocol::frame::coding::CloseCode::Away,
                "disconnect() called while connecting",
            );
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.lock().is_none()
    }

    /// Notes the connection being set up, so that a cancel closes it; false if cancelled
    /// already.
    fn register(&self, connection: crate::btp::Connection) -> bool {
        let mut slot = self.connection.lock();
        if self.is_cancelled() {
            return false;
        }
        *slot = Some(connection);
        true
    }
}

fn cancelled_error() -> PluginError {
    PluginError::Transport("connect() abandoned: disconnect() was called".into())
}

/// Why a request to the peer got no ILP reply.
pub(crate) enum SendError {
    /// No answer before the Prepare expired (or the request timeout).
    TimedOut,
    /// No connection to that account / the server.
    Unreachable(String),
    /// Anything else.
    Failed(PluginError),
}

enum Transport {
    Client(BtpClient),
    Server { server: BtpServer, address: Address },
}

/// A live transport plus its event thread.
pub(crate) struct Link {
    transport: Transport,
    stop_events: Mutex<Option<Sender<()>>>,
    event_thread: Mutex<Option<JoinHandle<()>>>,
}

fn connection_config(options: &PluginBuilder) -> ConnectionConfig {
    ConnectionConfig {
        request_timeout: options.request_timeout,
        ..ConnectionConfig::default()
    }
}

/// The reply to one incoming BTP request, for either role.
fn answer(
    core: &Core,
    account: &str,
    own_address: &str,
    serve: Option<IldcpServe<'_>>,
    request: &Packet<'_>,
) -> Reply {
    match request {
        Packet::Message(message) => match message.protocol_data().ilp() {
            Some(ilp) => {
                let reply = core.handle_incoming(account, own_address, serve, ilp);
                Reply::Response(vec![OwnedEntry::ilp(reply)])
            }
            None => match core.hooks.on_message(account, &message.protocol_data()) {
                Ok(entries) => Reply::Response(entries),
                Err(why) => Reply::Error(ErrorReply::not_accepted(why)),
            },
        },
        // Money moves over Lightning, never in BTP Transfers.
        Packet::Transfer(_) => Reply::Error(ErrorReply::not_accepted(
            "BTP Transfer is not supported: this plugin settles over Lightning",
        )),
        _ => Reply::Error(ErrorReply::not_accepted("not a request")),
    }
}

fn spawn_events<E: Send + 'static>(
    name: &str,
    events: Receiver<E>,
    core: Arc<Core>,
    translate: fn(E) -> Option<PluginEvent>,
) -> Result<(Sender<()>, JoinHandle<()>), PluginError> {
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            select! {
                recv(stop_rx) -> _ => return,
                recv(events) -> event => match event {
                    Ok(event) => {
                        if let Some(event) = translate(event) {
                            core.emit(event);
                        }
                    }
                    Err(_) => return,
                },
            }
        })
        .map_err(|e| PluginError::Transport(format!("cannot start a thread: {e}")))?;
    Ok((stop_tx, handle))
}

impl Link {
    /// Connects a client, then learns its own address by IL-DCP.
    pub(crate) fn connect_client(
        uri: &str,
        options: &PluginBuilder,
        core: &Arc<Core>,
        attempt: &ConnectAttempt,
    ) -> Result<Link, PluginError> {
        let config = ClientConfig {
            connection: connection_config(options),
            connect_timeout: options.connect_timeout,
            handler_threads: options.handler_threads,
            cancel: Some(attempt.cancelled.clone()),
            ..ClientConfig::default()
        };
        let handler_core = core.clone();
        let handler = move |request: &Packet<'_>| {
            let own = handler_core.own_address_text();
            answer(&handler_core, PEER_ACCOUNT, &own, None, request)
        };
        let client = BtpClient::connect(uri, config, Arc::new(handler)).map_err(|e| match e {
            ClientError::AuthRefused(reply) => PluginError::PeerError {
                code: reply.code.as_str().to_owned(),
                name: reply.name.clone(),
                message: String::from_utf8_lossy(&reply.data).into_owned(),
            },
            ClientError::Cancelled => cancelled_error(),
            other => PluginError::Transport(other.to_string()),
        })?;
        let registered = client.connection().is_some_and(|c| attempt.register(c));
        if !registered {
            client.disconnect();
            return Err(cancelled_error());
        }
        // Settlement agrees on its terms first: the server's IL-DCP answer depends on them.
        let timeout = options.request_timeout;
        core.hooks.on_authenticated(PEER_ACCOUNT, &|entries| {
            client
                .request(entries, None, Some(timeout))
                .map(|response| super::owned_entries(&response))
                .map_err(|e| e.to_string())
        });
        // IL-DCP: ask the server who we are.
        let request = ildcp::request(Timestamp::now().add_millis(ildcp::REQUEST_LIFETIME_MS));
        let entries = [ProtocolDataEntry::octets(ILP, &request)];
        let info = client
            .request(&entries, None, Some(options.request_timeout))
            .map_err(|e| PluginError::Transport(format!("IL-DCP request failed: {e}")))
            .and_then(|response| {
                IldcpResponse::from_reply(response.ilp().unwrap_or_default())
                    .map_err(PluginError::Ildcp)
            });
        let info = match info {
            Ok(_) if attempt.is_cancelled() => Err(cancelled_error()),
            Err(_) if attempt.is_cancelled() => Err(cancelled_error()),
            other => other,
        };
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                client.disconnect();
                return Err(e);
            }
        };
        *core.own_address.write() = Some(info.client_address);
        // Its Connected event (queued meanwhile) reaches the user once the plugin has stored
        // this link: see `start_events`.
        Ok(Link {
            transport: Transport::Client(client),
            stop_events: Mutex::new(None),
            event_thread: Mutex::new(None),
        })
    }

    /// Starts a server; its accounts' tokens live in `accounts.0`, bounded by `accounts.1`.
    pub(crate) fn listen(
        listen: SocketAddr,
        address: &Address,
        asset_code: &str,
        asset_scale: u8,
        (token_store, accounts): (Arc<dyn TokenStore>, AccountLimits),
        options: &PluginBuilder,
        core: &Arc<Core>,
    ) -> Result<Link, PluginError> {
        let config = ServerConfig {
            connection: connection_config(options),
            auth_timeout: options.auth_timeout,
            max_connections: options.max_connections,
            handler_threads: options.handler_threads,
            token_store,
            accounts,
            ..ServerConfig::default()
        };
        let handler_core = core.clone();
        let server_address = address.clone();
        let own = address.as_str().to_owned();
        let asset_code = asset_code.to_owned();
        let handler = move |account: &str, request: &Packet<'_>| {
            let serve = IldcpServe {
                server_address: &server_address,
                asset_code: &asset_code,
                // Settlement agrees on each account's unit with its peer.
                asset_scale: handler_core
                    .hooks
                    .asset_scale(account)
                    .unwrap_or(asset_scale),
            };
            answer(&handler_core, account, &own, Some(serve), request)
        };
        let server = BtpServer::bind(listen, config, Arc::new(handler))
            .map_err(|e| PluginError::Transport(e.to_string()))?;
        Ok(Link {
            transport: Transport::Server {
                server,
                address: address.clone(),
            },
            stop_events: Mutex::new(None),
            event_thread: Mutex::new(None),
        })
    }

    /// Starts the thread that turns transport events into [`PluginEvent`]s. The plugin calls it
    /// once it has stored this link, so that whoever hears "connected" (settlement greeting the
    /// peer, a user's handler) can already send over it; events that came meanwhile are queued.
    pub(crate) fn start_events(&self, core: &Arc<Core>) -> Result<(), PluginError> {
        let (stop, thread) = match &self.transport {
            Transport::Client(client) => {
                spawn_events("plugin-client-events", client.events(), core.clone(), |e| {
                    Some(match e {
                        ClientEvent::Connected => PluginEvent::Connected,
                        ClientEvent::Disconnected(reason) => {
                            PluginEvent::Disconnected(reason.to_string())
                        }
                        ClientEvent::AuthRefused(reply) => {
                            PluginEvent::Disconnected(format!("authentication refused: {reply}"))
                        }
                    })
                })?
            }
            Transport::Server { server, .. } => {
                spawn_events("plugin-server-events", server.events(), core.clone(), |e| {
                    Some(match e {
                        ServerEvent::Connected { account } => {
                            PluginEvent::AccountConnected(account)
                        }
                        ServerEvent::Disconnected { account, .. } => {
                            PluginEvent::AccountDisconnected(account)
                        }
                    })
                })?
            }
        };
        *self.stop_events.lock() = Some(stop);
        *self.event_thread.lock() = Some(thread);
        Ok(())
    }

    pub(crate) fn is_up(&self) -> bool {
        match &self.transport {
            Transport::Client(client) => client.is_connected(),
            Transport::Server { .. } => true,
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match &self.transport {
            Transport::Client(_) => None,
            Transport::Server { server, .. } => Some(server.local_addr()),
        }
    }

    pub(crate) fn accounts(&self) -> Vec<String> {
        match &self.transport {
            Transport::Client(_) => Vec::new(),
            Transport::Server { server, .. } => server.accounts(),
        }
    }

    /// Whether `account` has a connection here (server role; the client's only peer always).
    #[cfg(feature = "redis")]
    pub(crate) fn is_attached(&self, account: &str) -> bool {
        match &self.transport {
            Transport::Client(_) => true,
            Transport::Server { server, .. } => server.is_connected(account),
        }
    }

    /// The account a Prepare to `destination` goes to, or why it cannot go anywhere.
    pub(crate) fn route(&self, destination: &str) -> Result<String, String> {
        match &self.transport {
            Transport::Client(_) => Ok(PEER_ACCOUNT.to_owned()),
            Transport::Server { address, .. } => {
                let rest = destination
                    .strip_prefix(address.as_str())
                    .and_then(|r| r.strip_prefix('.'))
                    .ok_or_else(|| {
                        format!("destination {destination} is not under this server's address {address}")
                    })?;
                let account = rest.split('.').next().unwrap_or_default();
                Ok(account.to_owned())
            }
        }
    }

    /// Sends `prepare` to `account` (the server, on a client) and waits for the ILP answer.
    pub(crate) fn request(
        &self,
        account: &str,
        prepare: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, SendError> {
        let entries = [ProtocolDataEntry::octets(ILP, prepare)];
        let result = match &self.transport {
            Transport::Client(client) => client.request(&entries, None, Some(timeout)),
            Transport::Server { server, .. } => {
                server.request(account, &entries, None, Some(timeout))
            }
        };
        self.ilp_answer(result)
    }

    /// Queues `prepare` for `account` like [`Link::request`], without waiting for the answer:
    /// flush it or collect it with [`Link::finish`].
    pub(crate) fn submit(
        &self,
        account: &str,
        prepare: &[u8],
        timeout: Duration,
    ) -> Result<PendingResponse, SendError> {
        let entries = [ProtocolDataEntry::octets(ILP, prepare)];
        let result = match &self.transport {
            Transport::Client(client) => client.submit(&entries, None, Some(timeout)),
            Transport::Server { server, .. } => {
                server.submit(account, &entries, None, Some(timeout))
            }
        };
        result.map_err(|e| self.send_error(e))
    }

    /// Writes a Prepare [`Link::submit`] queued, unless it is gone already.
    pub(crate) fn flush(&self, pending: &PendingResponse) -> Result<(), SendError> {
        pending.flush().map_err(|e| self.send_error(e))
    }

    /// Waits for the ILP answer to a Prepare sent by [`Link::submit`].
    pub(crate) fn finish(&self, pending: PendingResponse) -> Result<Vec<u8>, SendError> {
        self.ilp_answer(pending.wait())
    }

    fn ilp_answer(
        &self,
        result: Result<ResponseFrame, BtpRequestError>,
    ) -> Result<Vec<u8>, SendError> {
        match result {
            Ok(response) => match response.ilp() {
                Some(ilp) => Ok(ilp.to_vec()),
                None => Err(SendError::Failed(PluginError::InvalidReply(
                    super::InvalidReply("the BTP Response has no ilp entry".into()),
                ))),
            },
            Err(e) => Err(self.send_error(e)),
        }
    }

    fn send_error(&self, error: BtpRequestError) -> SendError {
        match error {
            BtpRequestError::Transport(TransportError::Timeout { .. }) => SendError::TimedOut,
            // A client between two connections: the caller should retry, not learn of an F02.
            BtpRequestError::NotConnected(_) if matches!(self.transport, Transport::Client(_)) => {
                SendError::Failed(PluginError::NotConnected)
            }
            BtpRequestError::NotConnected(who) => {
                SendError::Unreachable(format!("no connection to {who}"))
            }
            BtpRequestError::Rejected(reply) => SendError::Failed(PluginError::PeerError {
                code: reply.code.as_str().to_owned(),
                name: reply.name.clone(),
                message: String::from_utf8_lossy(&reply.data).into_owned(),
            }),
            other => SendError::Failed(PluginError::Transport(other.to_string())),
        }
    }

    pub(crate) fn request_entries(
        &self,
        account: &str,
        entries: &[ProtocolDataEntry<'_>],
        timeout: Duration,
    ) -> Result<ResponseFrame, BtpRequestError> {
        match &self.transport {
            Transport::Client(client) => client.request(entries, None, Some(timeout)),
            Transport::Server { server, .. } => {
                server.request(account, entries, None, Some(timeout))
            }
        }
    }

    /// Closes the transport and joins every thread.
    pub(crate) fn close(&self) {
        match &self.transport {
            Transport::Client(client) => client.disconnect(),
            Transport::Server { server, .. } => server.shutdown(),
        }
        drop(self.stop_events.lock().take());
        // Taken out first: the lock must not be held while the join waits.
        let event_thread = self.event_thread.lock().take();
        if let Some(thread) = event_thread {
            // An event handler (or a settlement hook it ran) that disconnects the plugin is on
            // this very thread: it ends by itself once the handler returns (its stop channel is
            // closed), and joining it from itself would fail.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
