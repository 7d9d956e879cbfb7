//! The BTP server role with `ilp-plugin-mini-accounts` semantics: many clients, one account
//! each, authenticated by their first message.
//!
//! - Auth must be the first binary message, within `auth_timeout` (10 s), else `F00` and close.
//! - The account is `auth_username` (which must be one ILP address segment — mini-accounts
//!   takes anything, we refuse what cannot be an address), else `base64url(sha256(token))`.
//! - The first token seen for an account is bound to it in the [`TokenStore`]; another token is
//!   refused with `F00 "incorrect token for account"`, then the connection is closed.
//! - A new authenticated connection for an account replaces (closes) the old one. (mini-accounts
//!   keeps both and sends to all; one connection per account keeps replies unambiguous.)
//! - At most `max_connections` sockets (authenticated or not) at once; beyond that a new socket
//!   is closed right after `accept`.
//!
//! What the plugin layer builds on top: [`BtpServer::request`] sends a Message to one account
//! (route a Prepare to the account whose address prefixes its destination), the
//! [`AccountHandler`] gets every incoming Message/Transfer with the account it came from (answer
//! `peer.config` with `<server address>.<account>`), and [`ServerEvent`]s tell who comes and goes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use parking_lot::Mutex;
use tungstenite::protocol::frame::coding::CloseCode;

use super::admission::{AccountLimits, Admission, LimitLog, Pending, Unauthenticated};
use super::auth::{account_name, hash_token, MemoryTokenStore, TokenStore};
use super::connection::{
    deadline_after, CloseReason, Connection, ConnectionConfig, Dispatch, FirstFrame, Prepared,
    Reader, Watch, WATCH_PERIOD,
};
use super::pool::HandlerPool;
use super::request::{
    frame_handler, send_request, submit_request, ErrorReply, PendingResponse, Reply, RequestError,
    RequestHandler, ResponseFrame,
};
use crate::btp::codec::{AuthRequest, Packet, ProtocolData, ProtocolDataEntry, Response};

/// Server settings.
#[derive(Clone)]
pub struct ServerConfig {
    /// Per-connection settings (timeouts, keepalive, frame cap).
    pub connection: ConnectionConfig,
    /// How long a client has, after the WebSocket handshake, to send its auth message.
    pub auth_timeout: Duration,
    /// Most sockets at once; more are closed on accept.
    pub max_connections: usize,
    /// Stack size of each connection's reader threads. They also run request handlers, so
    /// they get at least `handler_stack_size`.
    pub reader_stack_size: usize,
    /// Threads answering incoming requests, shared by all connections.
    pub handler_threads: usize,
    /// Incoming requests that may wait for a handler thread before readers block.
    pub handler_queue: usize,
    /// Stack size of the handler threads (they run user code).
    pub handler_stack_size: usize,
    /// Where account → token bindings live.
    pub token_store: Arc<dyn TokenStore>,
    /// Which accounts may bind, how many, how fast, and when unused ones are forgotten.
    pub accounts: AccountLimits,
    /// Most sockets not authenticated yet, from all sources; more are closed on accept.
    pub max_unauthenticated: usize,
    /// Most sockets not authenticated yet from one IP address; more are closed on accept.
    pub max_unauthenticated_per_address: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connection: ConnectionConfig::default(),
            auth_timeout: Duration::from_secs(10),
            max_connections: 4096,
            reader_stack_size: 128 * 1024,
            handler_threads: 4,
            handler_queue: 256,
            handler_stack_size: 1024 * 1024,
            token_store: Arc::new(MemoryTokenStore::new()),
            accounts: AccountLimits::default(),
            max_unauthenticated: 1024,
            max_unauthenticated_per_address: 64,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("connection", &self.connection)
            .field("auth_timeout", &self.auth_timeout)
            .field("max_connections", &self.max_connections)
            .field("reader_stack_size", &self.reader_stack_size)
            .field("handler_threads", &self.handler_threads)
            .field("handler_queue", &self.handler_queue)
            .field("accounts", &self.accounts)
            .field("max_unauthenticated", &self.max_unauthenticated)
            .field(
                "max_unauthenticated_per_address",
                &self.max_unauthenticated_per_address,
            )
            .finish_non_exhaustive()
    }
}

/// Answers the Messages and Transfers clients send, told which account sent each. Runs on one
/// of the connection's threads or a handler pool thread; it may block and may send requests of
/// its own.
pub trait AccountHandler: Send + Sync + 'static {
    /// The reply to `request` (a [`Packet::Message`] or [`Packet::Transfer`]) from `account`.
    fn handle(&self, account: &str, request: &Packet<'_>) -> Reply;
}

impl<F> AccountHandler for F
where
    F: Fn(&str, &Packet<'_>) -> Reply + Send + Sync + 'static,
{
    fn handle(&self, account: &str, request: &Packet<'_>) -> Reply {
        self(account, request)
    }
}

/// Accounts coming and going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client authenticated as `account` (possibly replacing its previous connection).
    Connected {
        /// The account.
        account: String,
    },
    /// The account's connection ended and no newer one replaced it.
    Disconnected {
        /// The account.
        account: String,
        /// Why.
        reason: CloseReason,
    },
}

/// Why the server could not start.
#[derive(Debug)]
pub enum ServerError {
    /// The listening socket could not be opened.
    Bind(io::Error),
    /// A thread could not be started.
    Spawn(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind(e) => write!(f, "cannot listen for BTP clients: {e}"),
            ServerError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

struct Slot {
    handle: Option<JoinHandle<()>>,
    socket: Arc<TcpStream>,
    conn: Option<Connection>,
}

struct Shared {
    config: ServerConfig,
    handler: Arc<dyn AccountHandler>,
    pool: HandlerPool,
    watch: Watch,
    admission: Admission,
    unauthenticated: Arc<Unauthenticated>,
    /// Authenticated accounts: connection id and connection.
    accounts: Mutex<HashMap<String, (u64, Connection)>>,
    /// Every connection thread not yet joined.
    slots: Mutex<HashMap<u64, Slot>>,
    stopping: AtomicBool,
    events: Sender<ServerEvent>,
    exits: Sender<u64>,
    /// Told when a connection ends or the server stops: the accept loop, out of descriptors,
    /// waits on it.
    freed: (Sender<()>, Receiver<()>),
    accept_log: LimitLog,
    connections_log: LimitLog,
    next_id: AtomicU64,
}

/// A BTP server. Threads: `btp-accept`, `btp-reaper` (joins finished connection threads),
/// one `btp-conn-<n>` per connection (handshake, auth, then reading), and
/// `btp-server-handler-<i>`. [`BtpServer::shutdown`] (or dropping it) closes every connection
/// and joins all of them.
pub struct BtpServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// Shared with the accept thread: shutting it down is what wakes that thread.
    listener: Arc<TcpListener>,
    accept: Mutex<Option<JoinHandle<()>>>,
    reaper: Mutex<Option<JoinHandle<()>>>,
    reaper_stop: Mutex<Option<Sender<()>>>,
    events: Receiver<ServerEvent>,
}

impl fmt::Debug for BtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BtpServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl BtpServer {
    /// Listens on `addr` and serves clients until [`BtpServer::shutdown`].
    pub fn bind(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        handler: Arc<dyn AccountHandler>,
    ) -> Result<BtpServer, ServerError> {
        let listener = Arc::new(TcpListener::bind(addr).map_err(ServerError::Bind)?);
        let local_addr = listener.local_addr().map_err(ServerError::Bind)?;
        let pool = HandlerPool::new(
            "btp-server-handler",
            config.handler_threads,
            config.handler_queue,
            config.handler_stack_size,
        )
        .map_err(ServerError::Spawn)?;
        let watch = Watch::start(WATCH_PERIOD).map_err(ServerError::Spawn)?;
        let (events_tx, events_rx) = unbounded();
        let (exits_tx, exits_rx) = unbounded();
        let (reaper_stop_tx, reaper_stop_rx) = bounded::<()>(0);
        let admission = Admission::new(config.accounts.clone(), config.token_store.clone());
        let unauthenticated = Unauthenticated::new(
            config.max_unauthenticated,
            config.max_unauthenticated_per_address,
        );
        let shared = Arc::new(Shared {
            config,
            handler,
            pool,
            watch,
            admission,
            unauthenticated,
            accounts: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            events: events_tx,
            exits: exits_tx,
            freed: bounded(1),
            accept_log: LimitLog::default(),
            connections_log: LimitLog::default(),
            next_id: AtomicU64::new(1),
        });
        let reaper = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("btp-reaper".into())
                .spawn(move || reap(&shared, exits_rx, reaper_stop_rx))
                .map_err(ServerError::Spawn)?
        };
        let accept = {
            let shared = shared.clone();
            let listener = listener.clone();
            thread::Builder::new()
                .name("btp-accept".into())
                .spawn(move || accept_loop(&shared, &listener))
        };
        let accept = match accept {
            Ok(h) => h,
            Err(e) => {
                drop(reaper_stop_tx);
                let _ = reaper.join();
                shared.pool.shutdown();
                shared.watch.stop();
                return Err(ServerError::Spawn(e));
            }
        };
        Ok(BtpServer {
            shared,
            local_addr,
            listener,
            accept: Mutex::new(Some(accept)),
            reaper: Mutex::new(Some(reaper)),
            reaper_stop: Mutex::new(Some(reaper_stop_tx)),
            events: events_rx,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accounts connecting and disconnecting, in order; every one is delivered (the queue has
    /// no bound: read it, as the plugin's event thread does, so that it does not grow).
    pub fn events(&self) -> Receiver<ServerEvent> {
        self.events.clone()
    }

    /// The accounts connected now.
    pub fn accounts(&self) -> Vec<String> {
        self.shared.accounts.lock().keys().cloned().collect()
    }

    /// Whether `account` has a connection now.
    pub fn is_connected(&self, account: &str) -> bool {
        self.shared.accounts.lock().contains_key(account)
    }

    /// The connection of `account`, if any.
    pub fn connection(&self, account: &str) -> Option<Connection> {
        self.shared
            .accounts
            .lock()
            .get(account)
            .map(|(_, c)| c.clone())
    }

    /// Accounts bound now, connected or not (those the token store listed at start, and those
    /// bound since, less those forgotten).
    pub fn bound_accounts(&self) -> usize {
        self.shared.admission.bound()
    }

    /// Sockets open now (authenticated or not).
    pub fn connection_count(&self) -> usize {
        self.shared.slots.lock().len()
    }

    /// Sends a Message (or a Transfer of `amount`) to `account` and waits for its Response;
    /// `timeout` defaults to `request_timeout`.
    pub fn request(
        &self,
        account: &str,
        entries: &[ProtocolDataEntry<'_>],
        amount: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<ResponseFrame, RequestError> {
        let conn = self
            .connection(account)
            .ok_or_else(|| RequestError::NotConnected(account.to_string()))?;
        send_request(&conn, entries, amount, timeout)
    }

    /// Sends a Message (or a Transfer of `amount`) to `account` without waiting for its
    /// Response. Queued, not yet written: see [`submit_request`].
    pub fn submit(
        &self,
        account: &str,
        entries: &[ProtocolDataEntry<'_>],
        amount: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<PendingResponse, RequestError> {
        let conn = self
            .connection(account)
            .ok_or_else(|| RequestError::NotConnected(account.to_string()))?;
        submit_request(&conn, entries, amount, timeout)
    }

    /// Closes `account`'s connection, if any (it may reconnect).
    pub fn disconnect_account(&self, account: &str) {
        if let Some(conn) = self.connection(account) {
            conn.abort(CloseCode::Normal, "closed by the server");
        }
    }

    /// Wakes the accept thread, blocked in `accept()` or waiting for a descriptor, so that it
    /// sees `stopping`. Shutting the listening socket down ends a blocked `accept()` (Linux);
    /// where that does not, a connection of our own does (`by_connect`).
    fn wake_accept(&self, by_connect: bool) {
        let _ = self.shared.freed.0.try_send(());
        let shut = socket2::SockRef::from(&*self.listener).shutdown(Shutdown::Both);
        if shut.is_ok() || !by_connect {
            return;
        }
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if let Err(e) = TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            log::warn!("BTP server: cannot wake its accept thread to stop it: {e}");
        }
    }

    /// Stops accepting, closes every connection (close frame, then the socket after
    /// `close_timeout`), and joins every thread the server started. Idempotent.
    pub fn shutdown(&self) {
        self.shutdown_waking(true);
    }

    fn shutdown_waking(&self, by_connect: bool) {
        let shared = &self.shared;
        if shared.stopping.swap(true, Ordering::SeqCst) {
            // Already stopped (or stopping on another thread, which joins everything).
            return;
        }
        self.wake_accept(by_connect);
        let accept = self.accept.lock().take();
        if let Some(h) = accept {
            let _ = h.join();
        }
        let slots: Vec<Slot> = std::mem::take(&mut *shared.slots.lock())
            .into_values()
            .collect();
        // Called by a handler running on a connection's own thread: nobody may wait for it.
        let me = thread::current().id();
        for slot in &slots {
            if let Some(conn) = &slot.conn {
                conn.detach_current_thread();
            }
        }
        for slot in &slots {
            match &slot.conn {
                Some(conn) => conn.begin_close(),
                None => {
                    let _ = slot.socket.shutdown(Shutdown::Both);
                }
            }
        }
        let deadline = deadline_after(shared.config.connection.close_timeout);
        for slot in &slots {
            if let Some(conn) = &slot.conn {
                conn.wait_closed(deadline.saturating_duration_since(Instant::now()));
            }
            let _ = slot.socket.shutdown(Shutdown::Both);
        }
        for slot in slots {
            if let Some(h) = slot.handle {
                if h.thread().id() != me {
                    let _ = h.join();
                }
            }
        }
        drop(self.reaper_stop.lock().take());
        let reaper = self.reaper.lock().take();
        if let Some(h) = reaper {
            let _ = h.join();
        }
        shared.accounts.lock().clear();
        shared.pool.shutdown();
        shared.watch.stop();
    }
}

impl Drop for BtpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn emit(shared: &Shared, event: ServerEvent) {
    // Fails only when nobody can read it any more (the server is gone).
    let _ = shared.events.send(event);
}

fn reap(shared: &Shared, exits: Receiver<u64>, stop: Receiver<()>) {
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(exits) -> id => {
                let Ok(id) = id else { return };
                let slot = shared.slots.lock().remove(&id);
                if let Some(Slot { handle: Some(h), .. }) = slot {
                    let _ = h.join();
                }
                // Full means the accept loop has a wake-up waiting already.
                let _ = shared.freed.0.try_send(());
            }
        }
    }
}

/// The accept loop's first wait after `accept` fails; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while the failures last.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether an `accept` error means the process or the system is out of descriptors or memory
/// (it lasts until something is closed), rather than one connection's trouble.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut backoff = ACCEPT_BACKOFF_START;
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_START;
                stream
            }
            Err(e) if out_of_resources(&e) => {
                // Lasts until a descriptor is freed: wait for one of our connections to end
                // (the reaper says so) or, for descriptors freed elsewhere in the process, at
                // most `backoff`, doubling — never a spin, and one log line a second at most.
                let open = shared.slots.lock().len();
                shared.accept_log.hit(|| {
                    format!(
                        "BTP accept failed: {e} ({open} connections open); waiting for one to \
                         close (raise the descriptor limit, `ulimit -n`, for more)"
                    )
                });
                let _ = shared.freed.1.recv_timeout(backoff);
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
            Err(e) => {
                // One connection's trouble (reset before accept, ...): the next may be fine.
                log::debug!("BTP accept failed: {e}");
                continue;
            }
        };
        let Some(pending) = stream
            .peer_addr()
            .ok()
            .and_then(|peer| shared.unauthenticated.enter(peer.ip()))
        else {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        };
        // One descriptor per connection: the slot shares the socket, it does not dup it.
        let stream = Arc::new(stream);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut slots = shared.slots.lock();
            if slots.len() >= shared.config.max_connections {
                drop(slots);
                let max = shared.config.max_connections;
                shared.connections_log.hit(|| {
                    format!(
                        "BTP connection from {:?} refused: {max} connections already \
                         (max_connections)",
                        stream.peer_addr()
                    )
                });
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            slots.insert(
                id,
                Slot {
                    handle: None,
                    socket: stream.clone(),
                    conn: None,
                },
            );
        }
        let worker = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("btp-conn-{id}"))
            .stack_size(connection_stack_size(&shared.config))
            .spawn(move || {
                serve(&worker, id, stream, pending);
                let _ = worker.exits.send(id);
            });
        match spawned {
            Ok(h) => {
                let mut slots = shared.slots.lock();
                match slots.get_mut(&id) {
                    Some(slot) => slot.handle = Some(h),
                    None => {
                        // The thread already ended and was reaped without its handle.
                        drop(slots);
                        let _ = h.join();
                    }
                }
            }
            Err(e) => {
                log::error!("BTP: cannot start a connection thread: {e}");
                if let Some(slot) = shared.slots.lock().remove(&id) {
                    let _ = slot.socket.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Refuses a client: a BTP Error answering `request_id`, a close frame, up to `close_timeout`
/// for the peer's close reply, then the socket is cut.
fn refuse(conn: &Connection, mut reader: Reader, request_id: u32, message: &str) {
    log::info!("BTP client {} refused: {message}", conn.peer());
    let _ = conn.send_frame(ErrorReply::not_accepted(message).to_frame(request_id));
    conn.begin_close();
    let _ = reader.first_binary(conn, deadline_after(conn.config().close_timeout));
    conn.shutdown_socket();
}

/// Checks an auth frame; `Ok((request_id, account))` or `Err((request_id, why))`.
fn authenticate(shared: &Shared, frame: &[u8]) -> Result<(u32, String), (u32, String)> {
    let request_id = match frame.get(1..5) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    };
    let message = match Packet::parse(frame) {
        Ok(Packet::Message(m)) => m,
        Ok(other) => {
            return Err((
                request_id,
                format!(
                    "the first packet must be an auth Message, not a {:?}",
                    other.packet_type()
                ),
            ))
        }
        Err(e) => return Err((request_id, format!("unreadable auth packet: {e}"))),
    };
    let auth = AuthRequest::from_message(&message)
        .map_err(|e| (request_id, format!("invalid auth packet: {e}")))?;
    let account = account_name(auth.username, auth.token.as_bytes())
        .map_err(|e| (request_id, e.to_string()))?;
    let named = auth.username.is_some_and(|u| !u.is_empty());
    let token = auth.token.as_bytes();
    shared
        .admission
        .admit(&account, token, &hash_token(token), named)
        .map(|()| (request_id, account))
        .map_err(|why| (request_id, why))
}

/// One connection's thread: WebSocket handshake, auth, then the read loop.
fn serve(shared: &Arc<Shared>, id: u64, stream: Arc<TcpStream>, pending: Pending) {
    let cfg = &shared.config.connection;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| format!("conn-{id}"), |a| a.to_string());
    let (io, prepared) = match Prepared::shared(stream, false, cfg) {
        Ok(p) => p,
        Err(e) => {
            log::debug!("BTP {peer}: socket setup failed: {e}");
            return;
        }
    };
    // The WebSocket tungstenite returns is done with: the connection reads and writes frames
    // itself from here on.
    match tungstenite::accept_with_config(io, Some(cfg.websocket_config())) {
        Ok(_) => {}
        Err(e) => {
            log::debug!("BTP {peer}: WebSocket handshake failed: {e}");
            prepared.shutdown();
            return;
        }
    }
    let (conn, mut reader) = Connection::start(prepared, peer, cfg.clone());
    {
        let mut slots = shared.slots.lock();
        match slots.get_mut(&id) {
            Some(slot) if !shared.stopping.load(Ordering::SeqCst) => slot.conn = Some(conn.clone()),
            _ => {
                drop(slots);
                conn.abort(CloseCode::Away, "server shutting down");
                return;
            }
        }
    }
    let frame = match reader.first_binary(&conn, deadline_after(shared.config.auth_timeout)) {
        FirstFrame::Binary(frame) => frame,
        FirstFrame::TimedOut => {
            refuse(&conn, reader, 0, "timed out waiting for the auth message");
            return;
        }
        FirstFrame::Closed(reason) => {
            log::debug!("BTP {}: closed before auth: {reason}", conn.peer());
            conn.shutdown_socket();
            return;
        }
    };
    let authenticated = authenticate(shared, &frame);
    // Authenticated or about to be refused: no longer a stranger holding a place.
    drop(pending);
    let account = match authenticated {
        Ok((request_id, account)) => {
            let ok = Packet::Response(Response::new(request_id, ProtocolData::EMPTY)).to_bytes();
            if conn.send_frame(ok).is_err() {
                conn.shutdown_socket();
                return;
            }
            account
        }
        Err((request_id, why)) => {
            refuse(&conn, reader, request_id, &why);
            return;
        }
    };
    let replaced = shared
        .accounts
        .lock()
        .insert(account.clone(), (id, conn.clone()));
    if let Some((_, old)) = replaced {
        log::info!("BTP account {account}: new connection replaces the old one");
        old.abort(CloseCode::Normal, "replaced by a new connection");
    }
    if shared.stopping.load(Ordering::SeqCst) {
        // shutdown() may have missed this registration: do its job for this connection.
        shared.accounts.lock().remove(&account);
        conn.abort(CloseCode::Away, "server shutting down");
        return;
    }
    log::info!("BTP account {account} connected from {}", conn.peer());
    emit(
        shared,
        ServerEvent::Connected {
            account: account.clone(),
        },
    );
    shared.admission.opened(&account);
    let account: Arc<str> = account.into();
    let handler: Arc<dyn RequestHandler> = {
        let account = account.clone();
        let inner = shared.handler.clone();
        Arc::new(move |request: &Packet<'_>| inner.handle(&account, request))
    };
    let on_close = {
        let shared = shared.clone();
        Box::new(move |reason: &CloseReason| {
            shared.admission.closed(&account);
            let mut accounts = shared.accounts.lock();
            let current = matches!(accounts.get(&*account), Some((cid, _)) if *cid == id);
            if current {
                accounts.remove(&*account);
            }
            drop(accounts);
            if current {
                emit(
                    &shared,
                    ServerEvent::Disconnected {
                        account: account.to_string(),
                        reason: reason.clone(),
                    },
                );
            }
        })
    };
    let dispatch = Dispatch {
        pool: shared.pool.handle(),
        handler: frame_handler(handler),
        stack_size: connection_stack_size(&shared.config),
        watch: shared.watch.handle(),
    };
    conn.run_reading(reader, dispatch, on_close);
    // The partner thread, if the connection had one.
    conn.join();
}

/// Connection threads run request handlers too (see [`Connection`]'s docs), so they get the
/// larger of the two stacks. Only the pages a thread touches count towards memory.
fn connection_stack_size(config: &ServerConfig) -> usize {
    config.reader_stack_size.max(config.handler_stack_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_does_not_need_a_wake_up_connection() {
        let handler: Arc<dyn AccountHandler> =
            Arc::new(|_: &str, _: &Packet<'_>| Reply::Response(Vec::new()));
        let server =
            Arc::new(BtpServer::bind("127.0.0.1:0", ServerConfig::default(), handler).unwrap());
        // As if the wake-up connect failed (no descriptor left, a firewall): the accept
        // thread must stop all the same.
        let (done_tx, done_rx) = bounded(1);
        let stopping = server.clone();
        let stopper = thread::spawn(move || {
            stopping.shutdown_waking(false);
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "shutdown hung on the accept thread"
        );
        stopper.join().unwrap();
        assert!(server.accept.lock().is_none());
    }
}
