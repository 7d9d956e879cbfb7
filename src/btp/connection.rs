//! One BTP connection over a blocking tungstenite WebSocket: reading threads that take turns,
//! combined writes, requests matched to responses by requestId, keepalive pings, and a clean
//! close.
//!
//! # Why a reader WebSocket and a frame writer
//! A tungstenite `WebSocket` cannot be shared by a reading and a writing thread, and its reader
//! queues pong and close replies of its own (tungstenite issues 178 and 311). So the TCP stream
//! is cloned: the `Reader` owns a `WebSocket` over `ReaderIo`, whose *writes* (the automatic
//! pongs and close replies) are handed whole to the shared `FrameWriter`; every other frame
//! (requests, replies, pings, our close) is encoded with tungstenite's `Frame` and goes through
//! the same writer. Every byte written to the socket passes that one writer, a whole frame at
//! a time, so frames never interleave, and no thread polls. (A second `WebSocket` for writing
//! would also work, but would keep an unused read buffer per connection.)
//!
//! # Combined writes
//! A thread that sends a frame encodes it into the writer's queue under a short lock. If no
//! other thread is writing, it becomes the writer: it takes the whole queue, writes it with one
//! system call outside the lock, and repeats until the queue is empty. A thread that finds a
//! writer at work returns at once; its frame goes out in that writer's next batch, in order.
//! Under load, many frames leave in one `sendto`, and no thread waits on another's write unless
//! 4 MB are queued behind a write that blocks (a peer that stopped reading), which then holds
//! the queue's growth. A failed write closes the connection, failing every pending request.
//!
//! # Reading threads that take turns
//! The `Reader` (the WebSocket and the keepalive state) moves between at most two threads per
//! connection: the one the connection started with, and a partner started once the peer has
//! sent a second request (a client that only sends its IL-DCP request keeps one thread).
//! Whoever holds the `Reader` reads. Replies go to their waiting request. When a request
//! (Message, Transfer) arrives and the partner is idle, the holder parks the `Reader` for the
//! partner, wakes it, and runs the handler itself with the frame still hot in its cache: the
//! request reaches its handler without a thread wakeup on its path. When the partner is busy
//! (running a handler) the request goes to the shared [`HandlerPool`](super::pool::HandlerPool)
//! as before. Either way someone is always reading while a handler runs, so a handler that waits
//! for a response from the same peer cannot deadlock. The threads hand the `Reader` over under
//! one short lock; only its holder touches the socket's read side. Both threads are joined by
//! [`Connection::join`] (and so by `close`); a thread asked to join itself is skipped and left
//! for a later join. Since handlers run on these threads, they get the handlers' stack size.
//!
//! # Waiting for a reply
//! A request registers a slot under its requestId before its frame is written, so a fast reply
//! always finds it, then sleeps on the slot's condvar until the reader fills it, the
//! connection fails, or the timeout passes. Ids come from a per-connection counter started at
//! a random value (RFC 23 allows sequential ids; one in flight is never reused), so no system
//! call is spent per request.
//!
//! # Liveness
//! The socket carries a read timeout that is re-armed for the next keepalive event only when it
//! fires, so an idle connection wakes once per ping interval and a busy one never. A ping is
//! sent every `ping_interval`; if nothing at all arrives within `pong_timeout` after it, the
//! peer is dropped. Writes carry `write_timeout`, so a peer that stops reading cannot wedge the
//! writer: the connection is declared dead instead.
//!
//! # RFC 23 flow
//! Responses and Errors are matched to the waiting request by requestId; one with an unknown or
//! already answered id gets no response. Requests (Message, Transfer) run on a reading thread
//! whose partner then reads, or on the handler pool; never on the only thread reading.
//!
//! Unreadable packets: RFC 23 says they get no response (to avoid feedback loops), the JS plugin
//! closes the socket. We keep the connection and answer `F01 InvalidFieldsError` when the frame
//! is at least 5 bytes long (type + requestId) and its type byte is not Response (1) or Error (2):
//! the peer's request then fails at once instead of timing out, and since we never answer a
//! Response or Error, two peers cannot loop. An unreadable Response or Error with a pending id
//! fails that request (`MalformedReply`); frames under 5 bytes are dropped. Text frames are
//! ignored (BTP is binary; interledger-rs does the same before auth).
//!
//! # Backpressure
//! When every handler thread is busy and the pool's queue is full, the reading thread waits for
//! room before it reads on, so the peer is slowed down by TCP instead of filling our memory —
//! but only while none of our requests awaits a response on this connection. Otherwise waiting
//! would leave that response unread behind the blocked reader while a handler waits for it (a
//! deadlock until the request timeout), so the request is refused at once with BTP Error
//! `T00` "busy" and reading goes on.
//!
//! # Closing
//! [`Connection::close`] sends a close frame, fails pending requests at once, waits up to
//! `close_timeout` for the peer's reply, cuts the socket and joins the reading threads (after
//! any handler running on them returns). A connection that dies on its own (peer gone, pong
//! deadline, write timeout, oversized frame) fails every pending request at once with
//! [`TransportError::Closed`]. Writes after that return the same typed error instead of
//! touching the socket.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex, MutexGuard};
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::pool::{PoolHandle, SubmitError};
use super::request::ErrorReply;

/// BTP packet type bytes the transport needs to route frames (RFC 23; the codec owns the rest).
const TYPE_RESPONSE: u8 = 1;
const TYPE_ERROR: u8 = 2;

/// Tunables of one connection. The defaults follow the JS `ilp-plugin-btp`.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// How long a request waits for its Response or Error (JS: 35 s).
    pub request_timeout: Duration,
    /// How often a ping is sent (JS client: 20 s).
    pub ping_interval: Duration,
    /// How long after a ping the peer may stay silent before it is dropped.
    pub pong_timeout: Duration,
    /// How long one frame write may block before the peer is declared dead.
    pub write_timeout: Duration,
    /// Largest WebSocket message or frame accepted or sent, in bytes.
    pub max_frame_size: usize,
    /// Most requests in flight at once on this connection.
    pub max_pending_requests: usize,
    /// How long `close()` waits for the peer's close reply before cutting the socket.
    pub close_timeout: Duration,
    /// How long the WebSocket (HTTP upgrade) handshake may take.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            request_timeout: Duration::from_secs(35),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            max_frame_size: 1 << 20,
            max_pending_requests: 4096,
            close_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionConfig {
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig {
            max_message_size: Some(self.max_frame_size),
            max_frame_size: Some(self.max_frame_size),
            ..WebSocketConfig::default()
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it.
    Local,
    /// The peer closed it (close frame or end of stream).
    PeerClosed,
    /// The peer did not answer a keepalive ping in time.
    PongTimeout,
    /// The peer sent a message bigger than `max_frame_size`.
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// A socket error (reset, write timeout...).
    Io(String),
    /// The peer broke the WebSocket protocol.
    Protocol(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this side"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::PongTimeout => f.write_str("peer did not answer a keepalive ping"),
            CloseReason::FrameTooLarge { size, max } => {
                write!(f, "peer sent a {size}-byte message (at most {max})")
            }
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Protocol(e) => write!(f, "WebSocket protocol error: {e}"),
        }
    }
}

/// Why a request or a frame could not be sent or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The connection is closed (or closed while the request waited).
    Closed(CloseReason),
    /// No Response or Error arrived in time.
    Timeout {
        /// The request's id.
        request_id: u32,
        /// How long it waited.
        after: Duration,
    },
    /// The frame is bigger than `max_frame_size`; nothing was written.
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// `max_pending_requests` requests are already in flight.
    TooManyPending {
        /// The cap.
        max: usize,
    },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Closed(r) => write!(f, "BTP connection closed: {r}"),
            TransportError::Timeout { request_id, after } => write!(
                f,
                "BTP request {request_id} got no response within {} ms",
                after.as_millis()
            ),
            TransportError::FrameTooLarge { size, max } => {
                write!(f, "BTP frame of {size} bytes exceeds the {max}-byte cap")
            }
            TransportError::TooManyPending { max } => {
                write!(f, "{max} BTP requests already in flight on this connection")
            }
        }
    }
}

impl std::error::Error for TransportError {}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        // The OS RNG does not fail on supported platforms; a clock-derived start is still
        // fine, since ids only need to be unique among the requests in flight.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return nanos;
    }
    u32::from_be_bytes(b)
}

/// Where the reader leaves the answer to one request, and its waiter sleeps until it does.
/// (A crossbeam channel per request would cost an allocation more and spin before sleeping.)
struct ReplySlot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

enum SlotState {
    Waiting,
    Answered(Vec<u8>),
    Closed,
}

impl ReplySlot {
    fn new() -> Arc<ReplySlot> {
        Arc::new(ReplySlot {
            state: Mutex::new(SlotState::Waiting),
            ready: Condvar::new(),
        })
    }

    fn settle(&self, outcome: SlotState) {
        let mut state = self.state.lock();
        if matches!(*state, SlotState::Waiting) {
            *state = outcome;
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Waits until `deadline`; `Waiting` back means it passed.
    fn wait(&self, deadline: Instant) -> SlotState {
        let mut state = self.state.lock();
        while matches!(*state, SlotState::Waiting) {
            if self.ready.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        match *state {
            SlotState::Waiting => SlotState::Waiting,
            _ => std::mem::replace(&mut *state, SlotState::Closed),
        }
    }
}

/// Frames waiting to be written, and who writes them.
struct Outbox {
    /// Whole encoded frames not yet handed to the socket, in order.
    queued: Vec<u8>,
    /// The writing thread's buffer, kept between turns for its capacity.
    spare: Vec<u8>,
    /// A thread is writing; it writes everything queued before it lets go.
    writing: bool,
    /// xorshift64* state for client masking keys (RFC 6455 asks for unpredictable keys, not
    /// secret ones); seeded from the OS.
    mask_state: u64,
    /// Set once nothing more may be written, with the reason.
    closed: Option<CloseReason>,
}

/// Above this, a write buffer is given back after the write rather than kept.
const KEEP_BUFFER: usize = 64 * 1024;

/// While this much waits behind a blocked write, further writers wait too (instead of
/// queueing without bound behind a peer that stopped reading).
const QUEUE_CAP: usize = 4 << 20;

impl Outbox {
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.mask_state = x;
        let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        [
            (out >> 56) as u8,
            (out >> 48) as u8,
            (out >> 40) as u8,
            (out >> 32) as u8,
        ]
    }

    fn encode(&mut self, mut frame: Frame, role: Role) {
        if role == Role::Client {
            frame.header_mut().mask = Some(self.next_mask());
        }
        // Writing into a Vec cannot fail.
        let _ = frame.format(&mut self.queued);
    }
}

/// The one place bytes are written to a connection's socket.
///
/// Writers combine: a thread queues its encoded frame under a short lock; if no other thread is
/// writing, it becomes the writer and writes everything queued (its own frame and any that
/// other threads queue meanwhile) with one system call per batch, outside the lock. A thread
/// that finds a writer at work returns at once: its frame goes out in that writer's next batch.
/// A failed write closes the connection, which fails every pending request.
pub(crate) struct FrameWriter {
    outbox: Mutex<Outbox>,
    /// Signalled after each batch, for threads waiting on a full queue.
    drained: Condvar,
    role: Role,
    /// Written only by the thread that set `writing`; shut down by anyone.
    socket: TcpStream,
}

impl FrameWriter {
    fn new(stream: &TcpStream, role: Role) -> io::Result<Self> {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            seed = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64))
            .to_be_bytes();
        }
        Ok(FrameWriter {
            outbox: Mutex::new(Outbox {
                queued: Vec::new(),
                spare: Vec::new(),
                writing: false,
                // xorshift must not start at zero.
                mask_state: u64::from_be_bytes(seed) | 1,
                closed: None,
            }),
            drained: Condvar::new(),
            role,
            socket: stream.try_clone()?,
        })
    }

    /// Waits while a full queue sits behind a blocked write; the outbox, ready to queue on,
    /// or why the connection is closed.
    fn room(&self) -> Result<MutexGuard<'_, Outbox>, CloseReason> {
        let mut out = self.outbox.lock();
        while out.closed.is_none() && out.writing && out.queued.len() >= QUEUE_CAP {
            self.drained.wait(&mut out);
        }
        match &out.closed {
            Some(reason) => Err(reason.clone()),
            None => Ok(out),
        }
    }

    /// Writes what is queued unless another thread is already at it (see the type's docs).
    fn write_queued(&self, mut out: MutexGuard<'_, Outbox>) -> Result<(), CloseReason> {
        if out.writing {
            return Ok(());
        }
        out.writing = true;
        loop {
            let mut batch = std::mem::take(&mut out.spare);
            std::mem::swap(&mut batch, &mut out.queued);
            let result = MutexGuard::unlocked(&mut out, || (&self.socket).write_all(&batch));
            batch.clear();
            if batch.capacity() <= KEEP_BUFFER {
                out.spare = batch;
            }
            self.drained.notify_all();
            if let Err(e) = result {
                let reason = out
                    .closed
                    .get_or_insert(CloseReason::Io(format!("write: {e}")))
                    .clone();
                out.writing = false;
                out.queued = Vec::new();
                drop(out);
                self.drained.notify_all();
                let _ = self.socket.shutdown(Shutdown::Both);
                return Err(reason);
            }
            if out.queued.is_empty() {
                out.writing = false;
                return Ok(());
            }
        }
    }

    /// Writes bytes the reader's WebSocket produced (handshake, pongs, close replies): always
    /// whole frames, since tungstenite hands over its whole output buffer at once.
    fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let mut out = match self.room() {
            Ok(out) => out,
            // The connection is closing: a late pong or close reply has nowhere to go.
            Err(_) => return Ok(()),
        };
        out.queued.extend_from_slice(bytes);
        self.write_queued(out)
            // Not WouldBlock: tungstenite must treat it as fatal, not retry a half frame.
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }

    /// Writes one whole frame (or queues it for the thread writing now), or declares the
    /// connection dead (a half-written frame cannot be taken back).
    fn send(&self, frame: Frame) -> Result<(), CloseReason> {
        let mut out = self.room()?;
        out.encode(frame, self.role);
        self.write_queued(out)
    }

    /// Sends a close frame (once) and refuses every later write.
    fn close(&self, code: CloseCode, reason: &str) {
        let mut out = self.outbox.lock();
        if out.closed.is_some() {
            return;
        }
        out.closed = Some(CloseReason::Local);
        let frame = Frame::close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        out.encode(frame, self.role);
        if let Err(e) = self.write_queued(out) {
            log::debug!("close frame not sent: {e}");
        }
    }

    fn is_closed(&self) -> bool {
        self.outbox.lock().closed.is_some()
    }

    fn shutdown(&self) {
        self.outbox.lock().closed.get_or_insert(CloseReason::Local);
        self.drained.notify_all();
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// The stream under the reader's WebSocket: reads from the socket, writes through the shared
/// `FrameWriter`.
pub(crate) struct ReaderIo {
    stream: TcpStream,
    writer: Arc<FrameWriter>,
    /// While set (handshake and auth), no read may end after it: a peer trickling one byte at
    /// a time cannot hold a thread past it, as a per-read timeout alone would allow.
    deadline: Option<Instant>,
}

impl ReaderIo {
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

impl Read for ReaderIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

impl Write for ReaderIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write_raw(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TCP stream prepared for a BTP connection (`TCP_NODELAY`, write timeout) and the writer all
/// its frames will go through. [`Prepared::new`] also returns the [`ReaderIo`] to run the
/// tungstenite handshake on; the resulting WebSocket then goes to [`Connection::start`].
pub(crate) struct Prepared {
    writer: Arc<FrameWriter>,
    socket: TcpStream,
}

impl Prepared {
    pub(crate) fn new(
        stream: TcpStream,
        role: Role,
        config: &ConnectionConfig,
    ) -> io::Result<(ReaderIo, Prepared)> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(config.write_timeout))?;
        let writer = Arc::new(FrameWriter::new(&stream, role)?);
        let io = ReaderIo {
            stream: stream.try_clone()?,
            writer: writer.clone(),
            deadline: Some(Instant::now() + config.handshake_timeout),
        };
        Ok((
            io,
            Prepared {
                writer,
                socket: stream,
            },
        ))
    }

    /// Cuts the socket (e.g. to stop a handshake that is taking too long).
    pub(crate) fn shutdown(&self) {
        self.writer.shutdown();
    }
}

struct Pending {
    waiting: HashMap<u32, Arc<ReplySlot>>,
    /// The next requestId to try: RFC 23 allows sequential ids; starting at a random value
    /// keeps ids from one connection to the next apart, with no system call per request.
    next_id: u32,
    closed: Option<CloseReason>,
}

struct Inner {
    peer: String,
    config: ConnectionConfig,
    writer: Arc<FrameWriter>,
    socket: TcpStream,
    pending: Mutex<Pending>,
    /// The threads that read this connection (one, plus a partner once requests arrive).
    readers: Mutex<ReaderThreads>,
    /// Never sent on: it disconnects when the reader thread ends.
    reader_done: Receiver<()>,
    /// Signalled when a request of ours is registered or the connection fails: a reader held
    /// back by a full handler pool must then ask again whether it may keep waiting.
    recheck_tx: Sender<()>,
    recheck_rx: Receiver<()>,
}

/// What runs an incoming request frame (a Message, a Transfer, or anything not a reply): called
/// on a handler pool thread with the raw frame; it answers through [`Connection::send_frame`].
pub type FrameHandler = Arc<dyn Fn(&Connection, Vec<u8>) + Send + Sync>;

/// Called once on the reader thread when the connection has ended, after every pending
/// request has failed.
pub type OnClose = Box<dyn FnOnce(&CloseReason) + Send>;

/// A handle to one live (or ended) BTP connection; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.inner.peer)
            .finish()
    }
}

/// The reader side of a connection before its thread runs: lets the server read the auth
/// message itself before normal dispatch starts.
pub(crate) struct Reader {
    ws: WebSocket<ReaderIo>,
    conn: Connection,
    done: Option<Sender<()>>,
    /// Keepalive state; it lives here because reading moves between threads.
    next_ping: Instant,
    ping_sent_at: Option<Instant>,
    /// The keepalive event the socket's read timeout is armed for.
    armed: Option<Instant>,
}

struct ReaderThreads {
    handles: Vec<JoinHandle<()>>,
    /// Set by `join`: no partner thread is started after it.
    joined: bool,
}

impl Connection {
    /// Wraps a WebSocket that finished its handshake over `prepared.io`. The reader does not
    /// run yet: call [`Reader::spawn`] or [`Reader::run`].
    pub(crate) fn start(
        ws: WebSocket<ReaderIo>,
        prepared: Prepared,
        peer: String,
        config: ConnectionConfig,
    ) -> (Connection, Reader) {
        let mut ws = ws;
        ws.get_mut().set_deadline(None);
        let (done_tx, done_rx) = bounded(0);
        let (recheck_tx, recheck_rx) = bounded(1);
        let conn = Connection {
            inner: Arc::new(Inner {
                peer,
                config,
                writer: prepared.writer,
                socket: prepared.socket,
                pending: Mutex::new(Pending {
                    waiting: HashMap::new(),
                    next_id: random_u32(),
                    closed: None,
                }),
                readers: Mutex::new(ReaderThreads {
                    handles: Vec::new(),
                    joined: false,
                }),
                reader_done: done_rx,
                recheck_tx,
                recheck_rx,
            }),
        };
        let reader = Reader {
            ws,
            conn: conn.clone(),
            done: Some(done_tx),
            next_ping: Instant::now() + conn.inner.config.ping_interval,
            ping_sent_at: None,
            armed: None,
        };
        (conn, reader)
    }

    /// Who the peer is: `host:port` on a client, the client's socket address on a server.
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// This connection's settings.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    /// Whether the connection still takes requests.
    pub fn is_open(&self) -> bool {
        self.inner.pending.lock().closed.is_none() && !self.inner.writer.is_closed()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.pending.lock().closed.clone()
    }

    /// Writes one binary frame (a whole BTP packet).
    pub fn send_frame(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        let max = self.inner.config.max_frame_size;
        if frame.len() > max {
            return Err(TransportError::FrameTooLarge {
                size: frame.len(),
                max,
            });
        }
        if let Some(reason) = self.inner.pending.lock().closed.clone() {
            return Err(TransportError::Closed(reason));
        }
        self.inner
            .writer
            .send(Frame::message(frame, OpCode::Data(OpData::Binary), true))
            .map_err(|e| TransportError::Closed(self.close_reason().unwrap_or(e)))
    }

    /// Sends a request built by `encode` (given a fresh requestId no other request in flight
    /// uses) and waits up to `timeout` (default `request_timeout`) for the raw Response or Error
    /// frame with that id. The waiter is registered before the frame is written, so a fast reply
    /// always finds it.
    pub fn request_frame(
        &self,
        encode: impl FnOnce(u32) -> Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, TransportError> {
        let timeout = timeout.unwrap_or(self.inner.config.request_timeout);
        let slot = ReplySlot::new();
        let request_id = {
            let mut pending = self.inner.pending.lock();
            if let Some(reason) = &pending.closed {
                return Err(TransportError::Closed(reason.clone()));
            }
            let max = self.inner.config.max_pending_requests;
            if pending.waiting.len() >= max {
                return Err(TransportError::TooManyPending { max });
            }
            let mut request_id = pending.next_id;
            while pending.waiting.contains_key(&request_id) {
                request_id = request_id.wrapping_add(1);
            }
            pending.next_id = request_id.wrapping_add(1);
            pending.waiting.insert(request_id, slot.clone());
            request_id
        };
        // Full means a signal is already waiting to be read: one is enough.
        let _ = self.inner.recheck_tx.try_send(());
        if let Err(e) = self.send_frame(encode(request_id)) {
            self.inner.pending.lock().waiting.remove(&request_id);
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        match slot.wait(deadline) {
            SlotState::Answered(frame) => Ok(frame),
            SlotState::Closed => Err(TransportError::Closed(
                self.close_reason().unwrap_or(CloseReason::Local),
            )),
            SlotState::Waiting => {
                self.inner.pending.lock().waiting.remove(&request_id);
                // The reply may have landed between the timeout and the removal.
                match slot.wait(Instant::now()) {
                    SlotState::Answered(frame) => Ok(frame),
                    SlotState::Closed => Err(TransportError::Closed(
                        self.close_reason().unwrap_or(CloseReason::Local),
                    )),
                    SlotState::Waiting => Err(TransportError::Timeout {
                        request_id,
                        after: timeout,
                    }),
                }
            }
        }
    }

    /// Fails every pending request with `reason` and refuses new ones. Idempotent: the first
    /// reason stays.
    fn fail_all(&self, reason: CloseReason) {
        let waiting = {
            let mut pending = self.inner.pending.lock();
            if pending.closed.is_none() {
                pending.closed = Some(reason);
            }
            std::mem::take(&mut pending.waiting)
        };
        let _ = self.inner.recheck_tx.try_send(());
        for slot in waiting.into_values() {
            slot.settle(SlotState::Closed);
        }
    }

    /// Closes without waiting: sends a close frame, fails pending requests, cuts the socket.
    /// The reader thread ends on its own; [`Connection::close`] (or [`Connection::join`]) joins it.
    pub fn abort(&self, code: CloseCode, reason: &str) {
        self.inner.writer.close(code, reason);
        self.fail_all(CloseReason::Local);
        self.inner.writer.shutdown();
    }

    /// Closes cleanly: a close frame, up to `close_timeout` for the peer's reply, then the socket
    /// is cut and the reader thread joined. Pending requests fail at once. Idempotent.
    pub fn close(&self) {
        self.inner.writer.close(CloseCode::Normal, "");
        self.fail_all(CloseReason::Local);
        let _ = self
            .inner
            .reader_done
            .recv_timeout(self.inner.config.close_timeout);
        self.inner.writer.shutdown();
        self.join();
    }

    /// Waits for the threads reading this connection to end (they end when the connection
    /// does, once a handler one of them runs has returned) and joins them. The calling thread
    /// itself, if it is one of them, is skipped and left for a later `join`.
    pub fn join(&self) {
        let handles = {
            let mut readers = self.inner.readers.lock();
            readers.joined = true;
            std::mem::take(&mut readers.handles)
        };
        let me = thread::current().id();
        for h in handles {
            if h.thread().id() == me {
                self.inner.readers.lock().handles.push(h);
            } else {
                let _ = h.join();
            }
        }
    }

    /// Lets the calling thread, if it is one of this connection's (a handler running on it is
    /// shutting things down), go unjoined: whoever joins the connection then does not wait for
    /// the very thread that waits for them. Like a pool thread that shuts its own pool down,
    /// it ends on its own once the handler returns.
    pub(crate) fn detach_current_thread(&self) {
        let me = thread::current().id();
        self.inner
            .readers
            .lock()
            .handles
            .retain(|h| h.thread().id() != me);
    }

    /// Joins those of the connection's threads that have finished, without waiting; true once
    /// none is left. (A thread may outlive the connection while a handler it runs returns.)
    pub fn join_finished(&self) -> bool {
        let mut readers = self.inner.readers.lock();
        readers.joined = true;
        let (finished, running): (Vec<_>, Vec<_>) = std::mem::take(&mut readers.handles)
            .into_iter()
            .partition(JoinHandle::is_finished);
        readers.handles = running;
        let all_done = readers.handles.is_empty();
        drop(readers);
        for h in finished {
            let _ = h.join();
        }
        all_done
    }

    /// A receiver that disconnects when the connection has ended, to `select!` on.
    pub fn closed_signal(&self) -> Receiver<()> {
        self.inner.reader_done.clone()
    }

    /// Sends a close frame and fails pending requests, without waiting (the first half of
    /// [`Connection::close`], for closing many connections at once).
    pub(crate) fn begin_close(&self) {
        self.inner.writer.close(CloseCode::Normal, "");
        self.fail_all(CloseReason::Local);
    }

    /// Cuts the socket, which ends the reader.
    pub(crate) fn shutdown_socket(&self) {
        self.inner.writer.shutdown();
    }

    /// Waits up to `timeout` for the connection to end; true if it has.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        !matches!(
            self.inner.reader_done.recv_timeout(timeout),
            Err(RecvTimeoutError::Timeout)
        )
    }

    fn has_pending_requests(&self) -> bool {
        !self.inner.pending.lock().waiting.is_empty()
    }

    /// Hands a reply frame to the request waiting for it. Unknown or already answered ids get
    /// nothing (RFC 23: no response to an unexpected response).
    fn deliver_reply(&self, request_id: u32, frame: Vec<u8>) {
        let waiter = self.inner.pending.lock().waiting.remove(&request_id);
        match waiter {
            Some(slot) => slot.settle(SlotState::Answered(frame)),
            None => log::debug!(
                "BTP {}: reply to unknown or answered request {request_id}, ignored",
                self.inner.peer
            ),
        }
    }
}

/// One frame read during the server's auth phase.
pub(crate) enum FirstFrame {
    Binary(Vec<u8>),
    TimedOut,
    Closed(CloseReason),
}

impl Reader {
    /// Reads until a binary frame arrives (text, ping and pong frames are skipped) or
    /// `deadline` passes.
    pub(crate) fn read_binary_until(&mut self, deadline: Instant) -> FirstFrame {
        self.ws.get_mut().set_deadline(Some(deadline));
        let frame = self.read_binary();
        self.ws.get_mut().set_deadline(None);
        frame
    }

    fn read_binary(&mut self) -> FirstFrame {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) => return FirstFrame::Binary(b),
                Ok(Message::Close(_)) => {
                    let _ = self.ws.flush();
                    return FirstFrame::Closed(CloseReason::PeerClosed);
                }
                Ok(_) => continue,
                Err(e) => match self.classify(e) {
                    None => return FirstFrame::TimedOut,
                    Some(reason) => return FirstFrame::Closed(reason),
                },
            }
        }
    }

    /// Maps a read error to the end of the connection, or `None` for a read timeout.
    fn classify(&mut self, e: tungstenite::Error) -> Option<CloseReason> {
        use tungstenite::error::{CapacityError, Error, ProtocolError};
        match e {
            Error::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            _ if self.conn.inner.writer.is_closed() && self.conn.close_reason().is_some() => {
                Some(CloseReason::Local)
            }
            Error::ConnectionClosed | Error::AlreadyClosed => Some(CloseReason::PeerClosed),
            Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                Some(CloseReason::PeerClosed)
            }
            Error::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                Some(CloseReason::PeerClosed)
            }
            Error::Io(e) => Some(CloseReason::Io(e.to_string())),
            Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                self.conn
                    .inner
                    .writer
                    .close(CloseCode::Size, "message too big");
                Some(CloseReason::FrameTooLarge {
                    size,
                    max: max_size,
                })
            }
            Error::Capacity(e) => {
                self.conn
                    .inner
                    .writer
                    .close(CloseCode::Size, "message too big");
                Some(CloseReason::Protocol(e.to_string()))
            }
            Error::Protocol(e) => {
                self.conn
                    .inner
                    .writer
                    .close(CloseCode::Protocol, "protocol error");
                Some(CloseReason::Protocol(e.to_string()))
            }
            other => Some(CloseReason::Protocol(other.to_string())),
        }
    }

    /// Starts the reader on its own named thread (`btp-reader-<peer>`); its partner, if
    /// requests arrive, gets the same stack size.
    pub(crate) fn spawn(
        self,
        stack_size: usize,
        pool: PoolHandle,
        handler: FrameHandler,
        on_close: OnClose,
    ) -> io::Result<()> {
        let conn = self.conn.clone();
        let name = format!("btp-reader-{}", conn.inner.peer);
        let mut readers = conn.inner.readers.lock();
        let handle = thread::Builder::new()
            .name(name)
            .stack_size(stack_size)
            .spawn(move || self.run(pool, handler, on_close, stack_size))?;
        readers.handles.push(handle);
        Ok(())
    }

    /// Reads and dispatches frames on this thread (taking turns with a partner thread of
    /// `stack_size` once requests arrive, see the module docs) until the connection ends; then
    /// fails every pending request, cuts the socket and calls `on_close`. Handlers may run on
    /// this thread, so its stack must suit them.
    pub(crate) fn run(
        self,
        pool: PoolHandle,
        handler: FrameHandler,
        on_close: OnClose,
        stack_size: usize,
    ) {
        let turns = Arc::new(Turns {
            conn: self.conn.clone(),
            seat: Mutex::new(Seat {
                parked: None,
                partner_idle: false,
                ended: false,
                partner_started: false,
                requests_seen: 0,
                on_close: Some(on_close),
            }),
            turn: Condvar::new(),
            pool,
            handler,
            stack_size,
        });
        take_turns(&turns, Some(self));
    }

    /// Reads until a request (Message, Transfer, or anything not a reply) arrives or the
    /// connection ends; delivers replies, sends keepalive pings on the way.
    fn read_request(&mut self) -> Turn {
        let conn = self.conn.clone();
        let config = &conn.inner.config;
        loop {
            let now = Instant::now();
            if let Some(sent) = self.ping_sent_at {
                if now >= sent + config.pong_timeout {
                    self.conn
                        .inner
                        .writer
                        .close(CloseCode::Away, "ping timeout");
                    return Turn::Ended(CloseReason::PongTimeout);
                }
            }
            if now >= self.next_ping {
                if let Err(e) = self.conn.inner.writer.send(Frame::ping(Vec::new())) {
                    return Turn::Ended(self.conn.close_reason().unwrap_or(e));
                }
                self.ping_sent_at.get_or_insert(now);
                self.next_ping = now + config.ping_interval;
            }
            // Re-arm the read timeout for the next keepalive event only when it changes.
            let next_event = match self.ping_sent_at {
                Some(sent) => self.next_ping.min(sent + config.pong_timeout),
                None => self.next_ping,
            };
            if self.armed != Some(next_event) {
                let wait = next_event
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                if let Err(e) = self.conn.inner.socket.set_read_timeout(Some(wait)) {
                    return Turn::Ended(CloseReason::Io(e.to_string()));
                }
                self.armed = Some(next_event);
            }
            let message = match self.ws.read() {
                Ok(m) => m,
                Err(e) => match self.classify(e) {
                    None => {
                        // The timeout fired: next pass re-arms it.
                        self.armed = None;
                        continue;
                    }
                    Some(reason) => return Turn::Ended(reason),
                },
            };
            // Anything from the peer proves it alive.
            self.ping_sent_at = None;
            match message {
                Message::Binary(frame) => {
                    if frame.len() < 5 {
                        log::debug!(
                            "BTP {}: {}-byte frame has no requestId, dropped",
                            self.conn.inner.peer,
                            frame.len()
                        );
                        continue;
                    }
                    let request_id = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
                    match frame[0] {
                        TYPE_RESPONSE | TYPE_ERROR => self.conn.deliver_reply(request_id, frame),
                        _ => return Turn::Request(frame),
                    }
                }
                Message::Text(_) => {
                    log::debug!(
                        "BTP {}: text frame ignored (BTP is binary)",
                        self.conn.inner.peer
                    );
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(_) => {
                    // Push out tungstenite's close reply before the socket is cut.
                    let _ = self.ws.flush();
                    // Our own close frame went out first when the writer is closed: `close()`
                    // may not have recorded its reason yet.
                    let ours = self.conn.inner.writer.is_closed();
                    return Turn::Ended(if ours || self.conn.close_reason().is_some() {
                        CloseReason::Local
                    } else {
                        CloseReason::PeerClosed
                    });
                }
            }
        }
    }

    /// Queues a request for the handler pool (today's path when no partner is free).
    fn submit(&self, frame: Vec<u8>, pool: &PoolHandle, handler: &FrameHandler) {
        let request_id = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        let conn = self.conn.clone();
        let handler = handler.clone();
        let job = move || handler(&conn, frame);
        // Wait for room only while nothing of ours awaits a response on this connection
        // (and never once it is closing: shutdown must not wait on a full queue).
        let may_wait = || self.conn.is_open() && !self.conn.has_pending_requests();
        match pool.submit(job, may_wait, &self.conn.inner.recheck_rx) {
            Ok(()) => {}
            Err(SubmitError::Busy) => {
                log::debug!(
                    "BTP {}: handler pool full, request {request_id} refused",
                    self.conn.inner.peer
                );
                let busy = ErrorReply::unreachable("busy: request handlers saturated");
                let _ = self.conn.send_frame(busy.to_frame(request_id));
            }
            Err(SubmitError::Closed) => {
                log::debug!("BTP {}: handler pool is shut down", self.conn.inner.peer)
            }
        }
    }
}

/// What one turn of reading ended with.
enum Turn {
    Request(Vec<u8>),
    Ended(CloseReason),
}

/// The threads reading one connection take turns: whoever holds the [`Reader`] reads; when it
/// reads a request while its partner waits idle, it parks the reader for the partner and runs
/// the handler itself, with the frame still hot in its cache and no thread woken on the
/// request's path. Someone is therefore always reading while a handler runs on either thread.
struct Turns {
    conn: Connection,
    seat: Mutex<Seat>,
    /// Signalled when the reader is parked or the connection has ended.
    turn: Condvar,
    pool: PoolHandle,
    handler: FrameHandler,
    stack_size: usize,
}

struct Seat {
    /// The reader, while no thread holds it.
    parked: Option<Reader>,
    /// The thread not reading waits for the reader (and is not running a handler).
    partner_idle: bool,
    ended: bool,
    partner_started: bool,
    requests_seen: u32,
    on_close: Option<OnClose>,
}

/// Requests a connection must have sent before it gets a second thread: a connection that
/// only ever sends its IL-DCP request keeps one.
const PARTNER_AFTER_REQUESTS: u32 = 2;

/// The loop each thread reading a connection runs: `reader` is `Some` for the first thread.
fn take_turns(turns: &Arc<Turns>, mut reader: Option<Reader>) {
    loop {
        let mut current = match reader.take() {
            Some(r) => r,
            None => {
                let mut seat = turns.seat.lock();
                loop {
                    if seat.ended {
                        return;
                    }
                    if let Some(r) = seat.parked.take() {
                        break r;
                    }
                    seat.partner_idle = true;
                    turns.turn.wait(&mut seat);
                }
            }
        };
        loop {
            let frame = match current.read_request() {
                Turn::Request(frame) => frame,
                Turn::Ended(reason) => {
                    finish(turns, current, reason);
                    return;
                }
            };
            let mut seat = turns.seat.lock();
            if seat.partner_idle {
                seat.partner_idle = false;
                seat.parked = Some(current);
                drop(seat);
                turns.turn.notify_one();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (turns.handler)(&turns.conn, frame)
                }))
                .is_err()
                {
                    log::error!("a BTP request handler panicked");
                }
                break;
            }
            seat.requests_seen = seat.requests_seen.saturating_add(1);
            let start_partner =
                !seat.partner_started && seat.requests_seen >= PARTNER_AFTER_REQUESTS;
            seat.partner_started |= start_partner;
            drop(seat);
            if start_partner {
                start_partner_thread(turns);
            }
            current.submit(frame, &turns.pool, &turns.handler);
        }
    }
}

/// Starts the second thread of a connection (`btp-turn-<peer>`), unless it is being joined.
fn start_partner_thread(turns: &Arc<Turns>) {
    let conn = &turns.conn;
    // Held across the spawn so that `join` cannot miss the new thread.
    let mut readers = conn.inner.readers.lock();
    if readers.joined {
        return;
    }
    let partner = turns.clone();
    let spawned = thread::Builder::new()
        .name(format!("btp-turn-{}", conn.inner.peer))
        .stack_size(turns.stack_size)
        .spawn(move || take_turns(&partner, None));
    match spawned {
        Ok(h) => readers.handles.push(h),
        Err(e) => log::warn!(
            "BTP {}: no second reading thread ({e}); requests go to the pool",
            conn.inner.peer
        ),
    }
}

/// The end of a connection, on the thread that saw it: fail pending requests, cut the socket,
/// wake the partner (it ends), call `on_close`, signal `reader_done`.
fn finish(turns: &Turns, mut reader: Reader, reason: CloseReason) {
    log::debug!("BTP {}: connection ended: {reason}", reader.conn.inner.peer);
    reader.conn.fail_all(reason.clone());
    reader.conn.inner.writer.shutdown();
    let on_close = {
        let mut seat = turns.seat.lock();
        seat.ended = true;
        seat.on_close.take()
    };
    turns.turn.notify_all();
    if let Some(on_close) = on_close {
        on_close(&reason);
    }
    drop(reader.done.take());
}
