//! One BTP connection over a WebSocket on a blocking TCP socket: requests matched to their
//! replies by requestId, incoming requests run by a handler, keepalive pings, a clean close.
//!
//! tungstenite runs the HTTP upgrade; after it the connection reads and writes WebSocket frames
//! itself, without allocating per frame. Each concern has its own file:
//!
//! - [`config`]: the settings, and what a connection reports when it ends or a request fails.
//! - `handshake`: the socket made ready, and the stream the upgrade runs on, which never
//!   reads past the upgrade's headers.
//! - `wire`: WebSocket frames, decoded from one reused buffer (whole frames per system
//!   call, unmasked in place, caps checked before anything is buffered) and encoded in place.
//! - `writer`: the one place bytes go to the socket; frames queued while another thread
//!   writes leave in its next system call.
//! - `reader`: the socket's read side, turned into BTP events, with pings answered and the
//!   keepalive kept.
//! - `replies`: our requests in flight, and where each reply goes.
//! - `turns`: which thread reads: callers waiting for a reply read it themselves when nobody
//!   else reads (a round trip wakes two threads, not three), the connection's own threads read
//!   otherwise and run handlers.
//! - `threads`: the connection's threads, named and joined.
//!
//! # RFC 23 flow
//! Responses and Errors are matched to the waiting request by requestId; one with an unknown or
//! already answered id gets no response. Requests (Message, Transfer) run on a connection thread
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

pub mod config;
mod handshake;
mod reader;
mod replies;
mod threads;
mod turns;
mod watch;
mod wire;
mod writer;

use std::fmt;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};
use tungstenite::protocol::frame::coding::CloseCode;

pub use config::{CloseReason, ConnectionConfig, TransportError};
pub(crate) use handshake::Prepared;
pub(crate) use reader::{FirstFrame, Reader};
use threads::ConnectionThreads;
pub(crate) use turns::Dispatch;
use turns::Seat;
pub(crate) use watch::{Watch, WatchHandle, WATCH_PERIOD};
use wire::CLOSE_NORMAL;
use writer::FrameWriter;

/// The instant `timeout` from now; a timeout too long for the clock (`Duration::MAX`, as a
/// caller may pass for "no limit") is a century, not a panic.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// What runs an incoming request frame (a Message, a Transfer, or anything not a reply): called
/// on a connection thread or a handler pool thread with the raw frame; it answers through
/// [`Connection::send_with`] or [`Connection::send_frame`].
pub type FrameHandler = Arc<dyn Fn(&Connection, &[u8]) + Send + Sync>;

/// Called once when the connection has ended, after every pending request has failed, on the
/// thread that read the end.
pub type OnClose = Box<dyn FnOnce(&CloseReason) + Send>;

struct Inner {
    peer: String,
    config: ConnectionConfig,
    writer: Arc<FrameWriter>,
    /// The read turn and the requests in flight (see `turns`).
    seat: Mutex<Seat>,
    /// The ticket of a reader parked with nobody reading (0 when there is none), for the
    /// watch to read without the lock.
    watch_ticket: Arc<AtomicU64>,
    /// Where the connection's own threads wait for the reader or a request.
    turn: Condvar,
    /// Set when reading starts.
    dispatch: OnceLock<Dispatch>,
    threads: ConnectionThreads,
    /// Never sent on: it disconnects when the reader is dropped, at the end.
    reader_done: Receiver<()>,
    /// Signalled when a request of ours is registered or the connection fails: a reader held
    /// back by a full handler pool must then ask again whether it may keep waiting.
    recheck_tx: Sender<()>,
    recheck_rx: Receiver<()>,
}

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

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        // The OS RNG does not fail on supported platforms; a clock-derived start is still
        // fine, since ids only need to be unique among the requests in flight.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    }
    u32::from_be_bytes(b)
}

impl Connection {
    /// Wraps a socket whose WebSocket handshake succeeded over `prepared`'s [`HandshakeIo`].
    /// Nothing reads yet: call [`Connection::spawn_reading`] or [`Connection::run_reading`]
    /// with the returned reader (or read the auth message with it first).
    pub(crate) fn start(
        prepared: Prepared,
        peer: String,
        config: ConnectionConfig,
    ) -> (Connection, Reader) {
        let (done_tx, done_rx) = bounded(0);
        let (recheck_tx, recheck_rx) = bounded(1);
        let reader = Reader::new(
            prepared.socket,
            prepared.client,
            config.max_frame_size,
            config.ping_interval,
            config.pong_timeout,
            done_tx,
        );
        let watch_ticket = Arc::new(AtomicU64::new(0));
        let conn = Connection {
            inner: Arc::new(Inner {
                peer,
                config,
                writer: prepared.writer,
                seat: Mutex::new(Seat::new(random_u32(), watch_ticket.clone())),
                watch_ticket,
                turn: Condvar::new(),
                dispatch: OnceLock::new(),
                threads: ConnectionThreads::new(),
                reader_done: done_rx,
                recheck_tx,
                recheck_rx,
            }),
        };
        (conn, reader)
    }

    /// Starts reading on a new thread named `btp-reader-<peer>`, requests run as `dispatch`
    /// says; `on_close` is called once the connection has ended.
    pub(crate) fn spawn_reading(
        &self,
        reader: Reader,
        dispatch: Dispatch,
        on_close: OnClose,
    ) -> io::Result<()> {
        let stack_size = dispatch.stack_size;
        self.prepare_reading(dispatch, on_close);
        let conn = self.clone();
        self.inner.threads.spawn(
            format!("btp-reader-{}", self.inner.peer),
            stack_size,
            move || turns::run_connection_thread(&conn, Some(reader)),
        )?;
        Ok(())
    }

    /// Reads on the calling thread until the connection ends (see [`Connection::spawn_reading`]);
    /// handlers may run on it, so its stack must suit them.
    pub(crate) fn run_reading(&self, reader: Reader, dispatch: Dispatch, on_close: OnClose) {
        self.prepare_reading(dispatch, on_close);
        turns::run_connection_thread(self, Some(reader));
    }

    fn prepare_reading(&self, dispatch: Dispatch, on_close: OnClose) {
        dispatch.watch.watch(self);
        if self.inner.dispatch.set(dispatch).is_err() {
            log::error!("BTP {}: reading started twice", self.inner.peer);
        }
        self.inner.seat.lock().set_on_close(on_close);
    }

    /// Runs the request handler on `frame` (on a handler pool thread).
    pub(crate) fn run_request(&self, frame: &[u8]) {
        turns::run_handler(self, frame);
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
        self.inner.seat.lock().pending.closed.is_none() && !self.inner.writer.is_closed()
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.seat.lock().pending.closed.clone()
    }

    /// Requests of ours awaiting their reply right now.
    pub fn pending_requests(&self) -> usize {
        self.inner.seat.lock().pending.len()
    }

    fn has_pending_requests(&self) -> bool {
        self.pending_requests() > 0
    }

    /// This side closed the connection (its close frame went out or its socket was cut).
    fn closed_by_us(&self) -> bool {
        self.inner.writer.is_closed() && self.close_reason().is_some()
    }

    /// Writes one binary frame (a whole BTP packet).
    pub fn send_frame(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        self.send_with(frame.len(), |out| out.extend_from_slice(&frame))
    }

    /// Writes one binary frame whose `len`-byte payload `write` appends, in place in the
    /// writer's queue (no buffer of its own). `write` must append exactly `len` bytes.
    pub fn send_with(
        &self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), TransportError> {
        self.check_size(len)?;
        self.inner
            .writer
            .send_binary(len, write)
            .map_err(|e| TransportError::Closed(self.close_reason().unwrap_or(e)))
    }

    fn check_size(&self, len: usize) -> Result<(), TransportError> {
        let max = self.inner.config.max_frame_size;
        if len > max {
            return Err(TransportError::FrameTooLarge { size: len, max });
        }
        Ok(())
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
        let mut reply = Vec::new();
        self.request(
            |id| {
                let frame = encode(id);
                self.send_frame(frame)
            },
            &mut reply,
            timeout,
        )?;
        Ok(reply)
    }

    /// Like [`Connection::request_frame`], without allocating: `write` appends the request's
    /// `len`-byte payload for the requestId it is given in place in the writer's queue, and
    /// the reply frame is left in `reply` (whose capacity is reused; it comes back empty on an
    /// error).
    pub fn request_with(
        &self,
        len: usize,
        write: impl FnOnce(u32, &mut Vec<u8>),
        reply: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        self.check_size(len)?;
        self.request(
            |id| self.send_with(len, |out| write(id, out)),
            reply,
            timeout,
        )
    }

    /// Sends a request without waiting for its reply, for a thread that keeps several in
    /// flight: `write` appends the request's `len`-byte payload for the requestId it is given.
    /// The frame is queued, not yet written: it leaves with the next write on the connection,
    /// at the latest when a [`Submitted`] of this connection is waited for, so that requests
    /// submitted back to back share one system call. Wait for the reply with
    /// [`Submitted::wait_into`]; a thread waiting for one of its requests reads the replies of
    /// all of them as they come, so a pipeline of requests costs no thread wake-ups.
    pub fn submit_with(
        &self,
        len: usize,
        write: impl FnOnce(u32, &mut Vec<u8>),
        timeout: Option<Duration>,
    ) -> Result<Submitted, TransportError> {
        self.check_size(len)?;
        let timeout = timeout.unwrap_or(self.inner.config.request_timeout);
        let id = {
            let mut seat = self.inner.seat.lock();
            let max = self.inner.config.max_pending_requests;
            seat.pending
                .register(max, &mut Vec::new(), turns::caller_wake())?
        };
        let _ = self.inner.recheck_tx.try_send(());
        let submitted = Submitted {
            conn: self.clone(),
            id,
            deadline: deadline_after(timeout),
            timeout,
            waited: false,
        };
        self.inner
            .writer
            .queue_binary(len, |out| write(id, out))
            .map_err(|e| TransportError::Closed(self.close_reason().unwrap_or(e)))?;
        Ok(submitted)
    }

    fn request(
        &self,
        send: impl FnOnce(u32) -> Result<(), TransportError>,
        reply: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let timeout = timeout.unwrap_or(self.inner.config.request_timeout);
        let id = {
            let mut seat = self.inner.seat.lock();
            let max = self.inner.config.max_pending_requests;
            let wake = turns::caller_wake();
            seat.pending.register(max, reply, wake)?
        };
        // Full means a signal is already waiting to be read: one is enough.
        let _ = self.inner.recheck_tx.try_send(());
        if let Err(e) = send(id) {
            if let Some(waiter) = self.inner.seat.lock().pending.remove(id) {
                *reply = waiter.reply;
                reply.clear();
            }
            return Err(e);
        }
        turns::await_reply(self, id, deadline_after(timeout), timeout, reply)
    }

    /// Fails every pending request with `reason` and refuses new ones; a reader parked for the
    /// callers goes to the connection's threads, to read on to the end. Idempotent: the first
    /// reason stays.
    fn fail_all(&self, reason: CloseReason) {
        {
            let mut seat = self.inner.seat.lock();
            seat.pending.fail_all(reason);
            seat.closing();
        }
        self.inner.turn.notify_all();
        let _ = self.inner.recheck_tx.try_send(());
    }

    /// Closes without waiting: sends a close frame with `code` (RFC 6455 §7.4), fails pending
    /// requests, cuts the socket. The reading threads end on their own; [`Connection::close`]
    /// (or [`Connection::join`]) joins them.
    pub fn abort(&self, code: CloseCode, reason: &str) {
        self.inner.writer.close(code.into(), reason);
        self.fail_all(CloseReason::Local);
        self.inner.writer.shutdown();
    }

    /// Closes cleanly: a close frame, up to `close_timeout` for the peer's reply, then the socket
    /// is cut and the reading threads joined. Pending requests fail at once. Idempotent.
    pub fn close(&self) {
        self.begin_close();
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
        self.inner.threads.join();
    }

    /// Lets the calling thread, if it is one of this connection's (a handler running on it is
    /// shutting things down), go unjoined: whoever joins the connection then does not wait for
    /// the very thread that waits for them. Like a pool thread that shuts its own pool down,
    /// it ends on its own once the handler returns.
    pub(crate) fn detach_current_thread(&self) {
        self.inner.threads.detach_current();
    }

    /// Joins those of the connection's threads that have finished, without waiting; true once
    /// none is left. (A thread may outlive the connection while a handler it runs returns.)
    pub fn join_finished(&self) -> bool {
        self.inner.threads.join_finished()
    }

    /// A receiver that disconnects when the connection has ended, to `select!` on.
    pub fn closed_signal(&self) -> Receiver<()> {
        self.inner.reader_done.clone()
    }

    /// Sends a close frame and fails pending requests, without waiting (the first half of
    /// [`Connection::close`], for closing many connections at once).
    pub(crate) fn begin_close(&self) {
        self.inner.writer.close(CLOSE_NORMAL, "");
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
}

/// A request sent by [`Connection::submit_with`] whose reply is still to be collected. Dropped
/// without [`Submitted::wait_into`], it is forgotten: its reply, should one come, is dropped.
#[must_use = "a submitted request's reply is only read by waiting for it"]
pub struct Submitted {
    conn: Connection,
    id: u32,
    deadline: Instant,
    timeout: Duration,
    waited: bool,
}

impl fmt::Debug for Submitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitted")
            .field("peer", &self.conn.peer())
            .field("request_id", &self.id)
            .finish()
    }
}

impl Submitted {
    /// The requestId the request was sent with.
    pub fn request_id(&self) -> u32 {
        self.id
    }

    /// Whether [`Submitted::wait_into`] would return without waiting: the reply is here (read
    /// by whichever thread was reading), or the connection has ended. It reads nothing itself.
    pub fn is_ready(&self) -> bool {
        self.conn.inner.seat.lock().pending.is_settled(self.id)
    }

    /// Writes the request now if it is still queued (with whatever else is queued on the
    /// connection), without waiting for the reply.
    pub fn flush(&self) -> Result<(), TransportError> {
        let conn = &self.conn;
        conn.inner
            .writer
            .flush()
            .map_err(|e| TransportError::Closed(conn.close_reason().unwrap_or(e)))
    }

    /// Writes what this thread queued, then waits until the request's deadline for its raw
    /// Response or Error frame, left in `reply` (whose capacity is reused; empty on an error).
    /// Replies to other requests in flight that arrive meanwhile are read too and kept for
    /// their own wait, which then returns at once.
    pub fn wait_into(mut self, reply: &mut Vec<u8>) -> Result<(), TransportError> {
        self.waited = true;
        let conn = &self.conn;
        if let Err(e) = conn.inner.writer.flush() {
            conn.inner.seat.lock().pending.remove(self.id);
            reply.clear();
            return Err(TransportError::Closed(conn.close_reason().unwrap_or(e)));
        }
        turns::await_reply(conn, self.id, self.deadline, self.timeout, reply)
    }
}

impl Drop for Submitted {
    fn drop(&mut self) {
        if !self.waited {
            // Its frame must not linger in the queue for want of a waiter.
            let _ = self.conn.inner.writer.flush();
            self.conn.inner.seat.lock().pending.remove(self.id);
        }
    }
}

/// Connections on loopback for the unit tests of this module's files.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::btp::transport::pool::HandlerPool;

    /// A connection of ours on one end of a loopback socket, with the peer's plain end; nothing
    /// reads ours yet, and no WebSocket handshake was made (frames can be written at once).
    pub(crate) fn raw(client: bool, config: ConnectionConfig) -> (Connection, Reader, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (_io, prepared) = Prepared::new(ours, client, &config).unwrap();
        let (conn, reader) = Connection::start(prepared, "test-peer".into(), config);
        (conn, reader, peer)
    }

    /// Both ends ours, after a real WebSocket handshake, each reading on its own thread with
    /// requests answered by its handler.
    pub(crate) struct Pair {
        pub(crate) client: Connection,
        pub(crate) server: Connection,
        _pools: [HandlerPool; 2],
        _watches: [Watch; 2],
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            self.client.close();
            self.server.close();
        }
    }

    fn dispatch(pool: &HandlerPool, handler: FrameHandler, watch: &Watch) -> Dispatch {
        Dispatch {
            pool: pool.handle(),
            handler,
            stack_size: 256 * 1024,
            watch: watch.handle(),
        }
    }

    pub(crate) fn pair(
        config: ConnectionConfig,
        client_handler: FrameHandler,
        server_handler: FrameHandler,
    ) -> Pair {
        pair_watched(config, client_handler, server_handler, WATCH_PERIOD)
    }

    /// [`pair`] with the client's watch looking every `client_watch_period`.
    pub(crate) fn pair_watched(
        config: ConnectionConfig,
        client_handler: FrameHandler,
        server_handler: FrameHandler,
        client_watch_period: Duration,
    ) -> Pair {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_config = config.clone();
        let accepting = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let (io, prepared) = Prepared::new(stream, false, &server_config).unwrap();
            tungstenite::accept(io).unwrap();
            Connection::start(prepared, "client".into(), server_config)
        });
        let stream = TcpStream::connect(addr).unwrap();
        let (io, prepared) = Prepared::new(stream, true, &config).unwrap();
        tungstenite::client(format!("ws://{addr}/"), io).unwrap();
        let (client, client_reader) = Connection::start(prepared, "server".into(), config);
        let (server, server_reader) = accepting.join().unwrap();
        let pools = [
            HandlerPool::new("test-client-pool", 2, 8, 256 * 1024).unwrap(),
            HandlerPool::new("test-server-pool", 2, 8, 256 * 1024).unwrap(),
        ];
        let watches = [
            Watch::start(client_watch_period).unwrap(),
            Watch::start(WATCH_PERIOD).unwrap(),
        ];
        let client_dispatch = dispatch(&pools[0], client_handler, &watches[0]);
        client
            .spawn_reading(client_reader, client_dispatch, Box::new(|_| {}))
            .unwrap();
        let server_dispatch = dispatch(&pools[1], server_handler, &watches[1]);
        server
            .spawn_reading(server_reader, server_dispatch, Box::new(|_| {}))
            .unwrap();
        Pair {
            client,
            server,
            _pools: pools,
            _watches: watches,
        }
    }

    impl Pair {
        /// The shared state of the client's watch.
        pub(crate) fn client_watch(&self) -> &super::watch::Shared {
            self._watches[0].shared()
        }
    }

    /// A handler answering every request with a Response carrying the request's payload
    /// bytes after the envelope, prefixed with `tag`.
    pub(crate) fn echo(tag: &'static [u8]) -> FrameHandler {
        Arc::new(move |conn: &Connection, frame: &[u8]| {
            let mut reply = vec![1];
            reply.extend_from_slice(&frame[1..5]);
            reply.extend_from_slice(tag);
            reply.extend_from_slice(&frame[5..]);
            let _ = conn.send_frame(reply);
        })
    }

    /// A request frame (a Message, by its type byte) carrying `body` after the envelope.
    pub(crate) fn request(id: u32, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![6];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }
}
