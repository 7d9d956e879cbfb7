//! The BTP client role: one connection to one server, authenticated, kept up by a reconnect
//! loop with the JS plugin's backoff.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::connection::{
    CloseReason, Connection, ConnectionConfig, Dispatch, Prepared, Watch, WatchHandle, WATCH_PERIOD,
};
use super::pool::HandlerPool;
use super::request::{
    frame_handler, interpret_reply, submit_request, ErrorReply, PendingResponse, RequestError,
    RequestHandler, ResponseFrame,
};
use super::uri::{BtpUri, UriError};
use crate::btp::codec::{auth_message, ProtocolDataEntry};

/// Client settings. Defaults follow the JS `ilp-plugin-btp`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Per-connection settings (timeouts, keepalive, frame cap).
    pub connection: ConnectionConfig,
    /// How long [`BtpClient::connect`] waits for the first authenticated connection.
    pub connect_timeout: Duration,
    /// Waits before each reconnect attempt, indexed by the attempt number and capped at the
    /// last (JS: 0, 100, 500, 1000, 2000, 5000 ms).
    pub reconnect_delays: Vec<Duration>,
    /// A connection that lived this long resets the attempt counter (JS: 10 s).
    pub reconnect_clear_after: Duration,
    /// Threads answering incoming requests.
    pub handler_threads: usize,
    /// Incoming requests that may wait for a handler thread before the reader blocks.
    pub handler_queue: usize,
    /// Stack size of the reader and handler threads.
    pub thread_stack_size: usize,
    /// When this channel gets a message or its senders are all dropped, a [`BtpClient::connect`]
    /// still waiting gives up at once with [`ClientError::Cancelled`] (the plugin's
    /// `disconnect()` uses it so as not to wait behind a `connect()`). Default: none.
    pub cancel: Option<Receiver<()>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connection: ConnectionConfig::default(),
            connect_timeout: Duration::from_secs(35),
            reconnect_delays: [0, 100, 500, 1000, 2000, 5000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            reconnect_clear_after: Duration::from_secs(10),
            handler_threads: 4,
            handler_queue: 64,
            thread_stack_size: 256 * 1024,
            cancel: None,
        }
    }
}

/// What happens to the client's connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected and authenticated (again).
    Connected,
    /// The connection ended; the client reconnects unless it was told to stop.
    Disconnected(CloseReason),
    /// The server refused the credentials; the client has stopped.
    AuthRefused(ErrorReply),
}

/// Why the client could not connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The URI is not usable.
    Uri(UriError),
    /// The server answered the auth message with a BTP Error.
    AuthRefused(ErrorReply),
    /// No authenticated connection within `connect_timeout`; the last failure is given.
    Timeout {
        /// How long it tried.
        after: Duration,
        /// The last attempt's failure.
        last_error: String,
    },
    /// A thread could not be started.
    Spawn(String),
    /// The caller gave up waiting (see [`ClientConfig::cancel`]).
    Cancelled,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Uri(e) => e.fmt(f),
            ClientError::AuthRefused(e) => write!(f, "BTP server refused authentication: {e}"),
            ClientError::Timeout { after, last_error } => write!(
                f,
                "no BTP connection within {} ms (last error: {last_error})",
                after.as_millis()
            ),
            ClientError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
            ClientError::Cancelled => f.write_str("BTP connect abandoned by its caller"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<UriError> for ClientError {
    fn from(e: UriError) -> Self {
        ClientError::Uri(e)
    }
}

/// Why one connection attempt failed.
enum AttemptError {
    Auth(ErrorReply),
    Other(String),
}

/// A BTP client: a supervisor thread keeps one authenticated connection to the server up.
///
/// Threads: `btp-client` (connects, authenticates, waits, reconnects), `btp-reader-<host:port>`
/// per connection, and `btp-client-handler-<i>` answering incoming requests. [`BtpClient::disconnect`]
/// (or dropping the client) stops and joins all of them.
pub struct BtpClient {
    peer: String,
    current: Arc<Mutex<Option<Connection>>>,
    /// The socket of the attempt in progress, cut by `disconnect()` so that a handshake or an
    /// auth wait does not delay it.
    attempting: Arc<Mutex<Option<Arc<TcpStream>>>>,
    stop: Mutex<Option<Sender<()>>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    pool: Arc<HandlerPool>,
    watch: Watch,
    events: Receiver<ClientEvent>,
}

impl fmt::Debug for BtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BtpClient")
            .field("peer", &self.peer)
            .finish()
    }
}

impl BtpClient {
    /// Connects to `uri` (`btp+ws://[user:token@]host:port[/path]`), authenticates, and returns
    /// once authenticated; reconnects on its own afterwards. `handler` answers the server's
    /// requests.
    pub fn connect(
        uri: &str,
        config: ClientConfig,
        handler: Arc<dyn RequestHandler>,
    ) -> Result<BtpClient, ClientError> {
        let uri = BtpUri::parse(uri)?;
        let peer = format!("{}:{}", uri.host, uri.port);
        if uri.token_in_clear() {
            log::warn!(
                "BTP: the token for {peer} travels in clear (btp+ws to a host that is not this \
                 machine): anyone on the path can read it and take the account; reach the \
                 server through a TLS tunnel or terminator on this machine"
            );
        }
        let pool = Arc::new(
            HandlerPool::new(
                "btp-client-handler",
                config.handler_threads,
                config.handler_queue,
                config.thread_stack_size,
            )
            .map_err(|e| ClientError::Spawn(e.to_string()))?,
        );
        let watch = Watch::start(WATCH_PERIOD).map_err(|e| ClientError::Spawn(e.to_string()))?;
        let current = Arc::new(Mutex::new(None));
        let attempting = Arc::new(Mutex::new(None));
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (ready_tx, ready_rx) = bounded::<Result<(), AttemptError>>(1);
        let (events_tx, events_rx) = unbounded();
        let supervisor = Supervisor {
            uri,
            config: config.clone(),
            current: current.clone(),
            attempting: attempting.clone(),
            pool: pool.clone(),
            watch: watch.handle(),
            handler,
            stop: stop_rx,
            events: events_tx,
            ready: Some(ready_tx),
            last_error: Arc::new(Mutex::new(String::from("no attempt finished"))),
            retired: Vec::new(),
        };
        let last_error = supervisor.last_error.clone();
        let handle = thread::Builder::new()
            .name("btp-client".into())
            .spawn(move || supervisor.run())
            .map_err(|e| ClientError::Spawn(e.to_string()))?;
        let client = BtpClient {
            peer,
            current,
            attempting,
            stop: Mutex::new(Some(stop_tx)),
            supervisor: Mutex::new(Some(handle)),
            pool,
            watch,
            events: events_rx,
        };
        let never = crossbeam_channel::never();
        let cancel = config.cancel.as_ref().unwrap_or(&never);
        let ready = select! {
            recv(ready_rx) -> ready => ready.map_err(|_| RecvTimeoutError::Disconnected),
            recv(cancel) -> _ => {
                client.disconnect();
                return Err(ClientError::Cancelled);
            }
            default(config.connect_timeout) => Err(RecvTimeoutError::Timeout),
        };
        match ready {
            Ok(Ok(())) => Ok(client),
            Ok(Err(AttemptError::Auth(e))) => {
                client.disconnect();
                Err(ClientError::AuthRefused(e))
            }
            Ok(Err(AttemptError::Other(e))) => {
                client.disconnect();
                Err(ClientError::Timeout {
                    after: config.connect_timeout,
                    last_error: e,
                })
            }
            Err(_) => {
                client.disconnect();
                let last_error = last_error.lock().clone();
                Err(ClientError::Timeout {
                    after: config.connect_timeout,
                    last_error,
                })
            }
        }
    }

    /// Whether an authenticated connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.current
            .lock()
            .as_ref()
            .is_some_and(Connection::is_open)
    }

    /// The current connection, if one is up.
    pub fn connection(&self) -> Option<Connection> {
        self.current.lock().clone()
    }

    /// Connect and disconnect events, in order; every one is delivered (the queue has no
    /// bound: read it, as the plugin's event thread does, so that it does not grow).
    pub fn events(&self) -> Receiver<ClientEvent> {
        self.events.clone()
    }

    /// Sends a Message (or a Transfer of `amount`) and waits for its Response; `timeout`
    /// defaults to the connection's `request_timeout`. Fails at once while reconnecting.
    pub fn request(
        &self,
        entries: &[ProtocolDataEntry<'_>],
        amount: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<ResponseFrame, RequestError> {
        let conn = self
            .connection()
            .ok_or_else(|| RequestError::NotConnected(self.peer.clone()))?;
        super::request::send_request(&conn, entries, amount, timeout)
    }

    /// Sends a Message (or a Transfer of `amount`) without waiting for its Response: several
    /// may be in flight from one thread. Queued, not yet written: see [`submit_request`].
    pub fn submit(
        &self,
        entries: &[ProtocolDataEntry<'_>],
        amount: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<PendingResponse, RequestError> {
        let conn = self
            .connection()
            .ok_or_else(|| RequestError::NotConnected(self.peer.clone()))?;
        submit_request(&conn, entries, amount, timeout)
    }

    /// Closes the connection (close frame), stops reconnecting, and joins every thread the
    /// client started. Idempotent.
    pub fn disconnect(&self) {
        // Called by a handler running on the connection's own thread: the supervisor must
        // not wait for this thread while it waits for the supervisor.
        if let Some(conn) = self.connection() {
            conn.detach_current_thread();
        }
        drop(self.stop.lock().take());
        let attempting = self.attempting.lock().take();
        if let Some(socket) = attempting {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        let supervisor = self.supervisor.lock().take();
        if let Some(h) = supervisor {
            let _ = h.join();
        }
        self.pool.shutdown();
        self.watch.stop();
    }
}

impl Drop for BtpClient {
    fn drop(&mut self) {
        self.disconnect();
    }
}

struct Supervisor {
    uri: BtpUri,
    config: ClientConfig,
    current: Arc<Mutex<Option<Connection>>>,
    attempting: Arc<Mutex<Option<Arc<TcpStream>>>>,
    pool: Arc<HandlerPool>,
    watch: WatchHandle,
    handler: Arc<dyn RequestHandler>,
    stop: Receiver<()>,
    events: Sender<ClientEvent>,
    ready: Option<Sender<Result<(), AttemptError>>>,
    last_error: Arc<Mutex<String>>,
    /// Ended connections whose threads still run a handler: joined once finished, or on stop
    /// (a reconnect does not wait for them).
    retired: Vec<Connection>,
}

impl Supervisor {
    fn emit(&self, event: ClientEvent) {
        // Fails only when nobody can read it any more (the client is gone).
        let _ = self.events.send(event);
    }

    /// Waits `delay` unless told to stop first; true if told to stop.
    fn stopped_during(&self, delay: Duration) -> bool {
        !matches!(
            self.stop.recv_timeout(delay),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        )
    }

    fn run(mut self) {
        self.keep_connected();
        for conn in std::mem::take(&mut self.retired) {
            conn.join();
        }
    }

    fn keep_connected(&mut self) {
        let delays = if self.config.reconnect_delays.is_empty() {
            vec![Duration::ZERO]
        } else {
            self.config.reconnect_delays.clone()
        };
        let mut tries = 0usize;
        loop {
            let delay = delays[tries.min(delays.len() - 1)];
            if self.stopped_during(delay) {
                return;
            }
            tries += 1;
            let attempt = self.attempt();
            self.attempting.lock().take();
            // disconnect() may have cut this attempt short: the stop signal says so.
            if !matches!(
                self.stop.try_recv(),
                Err(crossbeam_channel::TryRecvError::Empty)
            ) {
                if let Ok(conn) = attempt {
                    conn.close();
                }
                return;
            }
            match attempt {
                Ok(conn) => {
                    let connected_at = Instant::now();
                    *self.current.lock() = Some(conn.clone());
                    log::info!("BTP client connected to {}", conn.peer());
                    self.emit(ClientEvent::Connected);
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                    let closed = conn.closed_signal();
                    let stop_now = select! {
                        recv(self.stop) -> _ => true,
                        recv(closed) -> _ => false,
                    };
                    *self.current.lock() = None;
                    if stop_now {
                        conn.close();
                        return;
                    }
                    self.retired.retain(|old| !old.join_finished());
                    if !conn.join_finished() {
                        self.retired.push(conn.clone());
                    }
                    let reason = conn.close_reason().unwrap_or(CloseReason::PeerClosed);
                    log::info!("BTP client disconnected from {}: {reason}", conn.peer());
                    self.emit(ClientEvent::Disconnected(reason));
                    if connected_at.elapsed() >= self.config.reconnect_clear_after {
                        tries = 0;
                    }
                }
                Err(AttemptError::Auth(e)) => {
                    log::error!("BTP server {} refused authentication: {e}", self.uri.host);
                    self.emit(ClientEvent::AuthRefused(e.clone()));
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(AttemptError::Auth(e)));
                    }
                    // No retry storm against a server that refuses our credentials.
                    return;
                }
                Err(AttemptError::Other(e)) => {
                    log::debug!("BTP connect to {:?} failed: {e}", self.uri);
                    *self.last_error.lock() = e;
                }
            }
        }
    }

    /// One connection: TCP, WebSocket handshake, reader thread, auth.
    fn attempt(&self) -> Result<Connection, AttemptError> {
        let cfg = &self.config.connection;
        let addrs = (self.uri.host.as_str(), self.uri.port)
            .to_socket_addrs()
            .map_err(|e| AttemptError::Other(format!("resolve {}: {e}", self.uri.host)))?;
        let mut last = String::from("no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, cfg.handshake_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("connect {addr}: {e}"),
            }
        }
        // Shared with disconnect(), which may cut it: one descriptor, not a dup.
        let stream = Arc::new(stream.ok_or(AttemptError::Other(last))?);
        *self.attempting.lock() = Some(stream.clone());
        // disconnect() drops the stop sender before it looks for this socket: if it has been
        // dropped already, the socket may have been missed, so stop here.
        if !matches!(
            self.stop.try_recv(),
            Err(crossbeam_channel::TryRecvError::Empty)
        ) {
            return Err(AttemptError::Other("stopped".into()));
        }
        let (io, prepared) = Prepared::shared(stream, true, cfg)
            .map_err(|e| AttemptError::Other(format!("socket setup: {e}")))?;
        // The WebSocket tungstenite returns is done with: the connection reads and writes
        // frames itself from here on.
        tungstenite::client::client_with_config(
            self.uri.websocket_url(),
            io,
            Some(cfg.websocket_config()),
        )
        .map_err(|e| AttemptError::Other(format!("WebSocket handshake: {e}")))?;
        let peer = format!("{}:{}", self.uri.host, self.uri.port);
        let (conn, reader) = Connection::start(prepared, peer, cfg.clone());
        let dispatch = Dispatch {
            pool: self.pool.handle(),
            handler: frame_handler(self.handler.clone()),
            stack_size: self.config.thread_stack_size,
            watch: self.watch.clone(),
        };
        conn.spawn_reading(reader, dispatch, Box::new(|_| {}))
            .map_err(|e| AttemptError::Other(format!("spawn reader: {e}")))?;
        let username = self.uri.username.as_deref().unwrap_or("");
        let token = self.uri.token.as_deref().unwrap_or("");
        let reply = conn
            .request_frame(
                |id| auth_message(id, username, token),
                Some(cfg.request_timeout.min(self.config.connect_timeout)),
            )
            .map_err(RequestError::from)
            .and_then(interpret_reply);
        match reply {
            Ok(_) => Ok(conn),
            Err(e) => {
                conn.close();
                match e {
                    RequestError::Rejected(e) => Err(AttemptError::Auth(e)),
                    other => Err(AttemptError::Other(format!("auth: {other}"))),
                }
            }
        }
    }
}
