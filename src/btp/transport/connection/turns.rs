//! Who reads a connection: its own threads and the callers waiting for a reply take turns
//! holding its one [`Reader`] (leader/follower), so that a round trip wakes two threads: the
//! peer's reader, and the caller.
//!
//! # Callers read their own replies
//! A caller that has sent a request and finds nobody reading takes the reader and reads the
//! socket itself. When its own reply comes, it has it without any other thread waking up.
//! Replies for other callers it copies into their buffers and wakes them; a request from the
//! peer it hands to a connection thread or the handler pool (a caller never runs a handler).
//! Then it passes the turn on: to the caller asleep the longest, else (when the peer sends
//! requests, or a handler runs) to the connection's own threads, else it leaves the reader
//! parked for the next caller, under [the watch](super::watch).
//!
//! # The connection's own threads
//! At most two per connection: the first, and a partner started once the peer has sent a
//! second request. They read while no caller does. When one of them reads a request while the
//! other waits idle, it runs the handler itself with the frame still hot, and leaves the reader
//! parked: for a caller asleep if there is one (it then reads its own reply), else for itself,
//! to take back when the handler returns, and under the watch meanwhile, which hands it to the
//! idle partner if the handler runs long. So a request reaches its handler and the next request
//! is read without any thread woken in between. When the partner is busy, the request goes to
//! the handler pool and reading goes on. When a connection thread reads a reply while the peer
//! only answers (it has sent nothing but replies lately) and no handler runs, it leaves the
//! reader to the callers and goes idle.
//!
//! # Never stuck
//! A reader lies parked with nobody reading only under the watch, which hands it to an idle
//! connection thread after at most two periods (a handler runs on a connection thread only
//! while the other is idle, so there is one); and a caller waiting for a reply takes a parked
//! reader at once. So a handler that waits for a response from the same peer cannot deadlock,
//! and a frame the peer sends unasked waits a few milliseconds at most.
//!
//! All this state, and the requests in flight ([`Pending`]), live under the connection's one
//! lock, held briefly and never across I/O or a handler.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Condvar;

use super::config::{CloseReason, TransportError};
use super::reader::{Event, Reader, Until};
use super::replies::{Outcome, Pending};
use super::watch::WatchHandle;
use super::{Connection, FrameHandler, OnClose};
use crate::btp::transport::pool::{PoolHandle, SubmitError};
use crate::btp::transport::request::ErrorReply;

/// Requests a connection must have sent before it gets a second thread: a connection that
/// only ever sends its IL-DCP request keeps one.
const PARTNER_AFTER_REQUESTS: u32 = 2;

thread_local! {
    /// What a caller on this thread sleeps on while it waits for a reply.
    static WAKE: Arc<Condvar> = Arc::new(Condvar::new());
    /// A request frame a connection thread runs the handler of, kept for its capacity.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The condition variable callers on this thread sleep on (made once per thread).
pub(crate) fn caller_wake() -> Arc<Condvar> {
    WAKE.with(Arc::clone)
}

/// Who a parked reader is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// A connection thread, woken for it (a caller may take it too).
    Connection,
    /// The caller of this request, woken for it.
    Caller(u32),
    /// Nobody woken: the next caller, or the connection thread that parked it when its
    /// handler returns; the watch hands it to a connection thread if neither comes.
    Anyone,
}

/// Who holds the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Nobody,
    Connection,
    Caller,
}

/// How requests get run, and who watches: set when the reading starts.
pub(crate) struct Dispatch {
    pub(crate) pool: PoolHandle,
    pub(crate) handler: FrameHandler,
    /// The stack size of the connection's threads (they run handlers).
    pub(crate) stack_size: usize,
    pub(crate) watch: WatchHandle,
}

/// The state of the read turn and the requests in flight, under the connection's lock.
pub(crate) struct Seat {
    pub(crate) pending: Pending,
    /// The reader, while nobody holds it.
    parked: Option<Reader>,
    offer: Offer,
    holder: Holder,
    /// The ticket of a reader parked for [`Offer::Anyone`] (0 otherwise), where the watch
    /// reads it without this lock.
    ticket: Arc<AtomicU64>,
    /// Readers parked for [`Offer::Anyone`] so far (their tickets).
    parks: u64,
    /// Connection threads waiting for work.
    idle: u8,
    /// Connection threads running a handler.
    running: u8,
    /// A request a caller read, for an idle connection thread to run.
    inbox: Option<Vec<u8>>,
    ended: bool,
    partner_started: bool,
    requests_seen: u32,
    on_close: Option<OnClose>,
    /// Replies read by their own caller, and replies handed to their caller by another thread.
    pub(crate) replies_read_by_caller: u64,
    pub(crate) replies_handed: u64,
}

impl Seat {
    /// The seat of a connection whose first thread holds the reader; request ids start at
    /// `first_id`; `ticket` is where the watch looks.
    pub(crate) fn new(first_id: u32, ticket: Arc<AtomicU64>) -> Self {
        Seat {
            pending: Pending::new(first_id),
            parked: None,
            offer: Offer::Connection,
            holder: Holder::Connection,
            ticket,
            parks: 0,
            idle: 0,
            running: 0,
            inbox: None,
            ended: false,
            partner_started: false,
            requests_seen: 0,
            on_close: None,
            replies_read_by_caller: 0,
            replies_handed: 0,
        }
    }

    pub(crate) fn set_on_close(&mut self, on_close: OnClose) {
        self.on_close = Some(on_close);
    }

    /// Hands a reply read by another thread to its caller; false when nobody waits for it.
    fn deliver(&mut self, request_id: u32, frame: &[u8]) -> bool {
        let delivered = self.pending.deliver(request_id, frame);
        self.replies_handed += u64::from(delivered);
        delivered
    }

    /// Parks `reader` for `offer` (waking nobody: see [`offer`](Self::offer)).
    fn park(&mut self, reader: Reader, offer: Offer) {
        self.parked = Some(reader);
        self.holder = Holder::Nobody;
        self.set_offer(offer);
    }

    /// Says who the parked reader is for, with its ticket for the watch.
    fn set_offer(&mut self, offer: Offer) {
        self.offer = offer;
        let ticket = if offer == Offer::Anyone {
            self.parks += 1;
            self.parks
        } else {
            0
        };
        self.ticket.store(ticket, Ordering::SeqCst);
    }

    /// Takes the parked reader, for `holder`.
    fn take(&mut self, holder: Holder) -> Option<Reader> {
        let reader = self.parked.take()?;
        self.holder = holder;
        self.ticket.store(0, Ordering::SeqCst);
        Some(reader)
    }

    /// Counts a request sent to the pool; true when it is time to start the partner thread.
    fn pooled_request(&mut self) -> bool {
        self.requests_seen = self.requests_seen.saturating_add(1);
        let start = !self.partner_started && self.requests_seen >= PARTNER_AFTER_REQUESTS;
        self.partner_started |= start;
        start
    }

    /// After the connection failed: a parked reader goes to a connection thread, to read on
    /// to the end (the caller wakes the connection threads).
    pub(crate) fn closing(&mut self) {
        if self.parked.is_some() {
            self.set_offer(Offer::Connection);
        }
    }
}

/// Parks `reader` for `offer` and wakes whoever must know: a connection thread, the caller
/// (already woken by [`Pending::offer_to_sleeper`]), or the watch if it sleeps.
fn park(conn: &Connection, seat: &mut Seat, reader: Reader, offer: Offer) {
    seat.park(reader, offer);
    notify_offer(conn, offer);
}

fn notify_offer(conn: &Connection, offer: Offer) {
    match offer {
        Offer::Connection => {
            conn.inner.turn.notify_one();
        }
        Offer::Anyone => {
            if let Some(dispatch) = conn.inner.dispatch.get() {
                dispatch.watch.parked();
            }
        }
        Offer::Caller(_) => {}
    }
}

/// The watch saw the reader parked with `ticket` a whole period ago and still there: a
/// connection thread takes it now.
pub(crate) fn hand_over_parked(conn: &Connection, ticket: u64) {
    let mut seat = conn.inner.seat.lock();
    if seat.parked.is_some() && seat.offer == Offer::Anyone && seat.parks == ticket {
        seat.set_offer(Offer::Connection);
        conn.inner.turn.notify_one();
    }
}

/// What a connection thread does next.
enum Work {
    Read(Reader),
    Run(Vec<u8>),
    Stop,
}

/// How a connection thread's reading ended.
enum Handed {
    /// It ran a request's handler, the reader parked meanwhile.
    Ran,
    /// It parked the reader for the callers.
    Parked,
    /// The connection is over.
    Ended,
}

/// The loop of each of a connection's own threads: `first` is the reader for the first thread.
pub(crate) fn run_connection_thread(conn: &Connection, first: Option<Reader>) {
    let mut holding = first;
    let mut ran_handler = false;
    loop {
        let reader = match holding.take() {
            Some(reader) => reader,
            None => match next_work(conn, std::mem::take(&mut ran_handler)) {
                Work::Read(reader) => reader,
                Work::Run(frame) => {
                    run_handler(conn, &frame);
                    ran_handler = true;
                    continue;
                }
                Work::Stop => return,
            },
        };
        match read_for_connection(conn, reader) {
            Handed::Ran => ran_handler = true,
            Handed::Parked => {}
            Handed::Ended => return,
        }
    }
}

/// Waits until the reader or a request is there for this connection thread, or the end. A
/// thread back from a handler takes a reader left for anyone at once (it left it there).
fn next_work(conn: &Connection, ran_handler: bool) -> Work {
    let inner = &conn.inner;
    let mut seat = inner.seat.lock();
    if ran_handler {
        seat.running -= 1;
    }
    let mut back_from_handler = ran_handler;
    loop {
        if seat.ended {
            return Work::Stop;
        }
        if let Some(frame) = seat.inbox.take() {
            seat.running += 1;
            return Work::Run(frame);
        }
        let take = match seat.offer {
            Offer::Connection => true,
            Offer::Anyone => back_from_handler,
            Offer::Caller(_) => false,
        };
        if take {
            if let Some(reader) = seat.take(Holder::Connection) {
                return Work::Read(reader);
            }
        }
        back_from_handler = false;
        seat.idle += 1;
        inner.turn.wait(&mut seat);
        seat.idle -= 1;
    }
}

/// A connection thread reads until it hands the reader on or the connection ends.
fn read_for_connection(conn: &Connection, mut reader: Reader) -> Handed {
    let inner = &conn.inner;
    loop {
        match reader.next_event(conn, Until::Forever) {
            Event::Reply { request_id, frame } => {
                let mut seat = inner.seat.lock();
                if !seat.deliver(request_id, reader.payload(&frame)) {
                    log_unmatched(conn, request_id);
                }
                // A peer that only answers: the callers read their replies themselves.
                if seat.running == 0 && !reader.peer_sends_requests() {
                    if let Some(id) = seat.pending.offer_to_sleeper() {
                        park(conn, &mut seat, reader, Offer::Caller(id));
                        return Handed::Parked;
                    }
                    if seat.pending.unanswered() == 0 {
                        park(conn, &mut seat, reader, Offer::Anyone);
                        return Handed::Parked;
                    }
                }
            }
            Event::Request(frame) => {
                let mut seat = inner.seat.lock();
                if seat.idle > 0 {
                    // This thread runs the handler; the reader waits for a caller asleep if
                    // there is one (it then reads its own reply), else for this thread, under
                    // the watch, which gives it to the idle partner if the handler runs long.
                    let mut scratch = SCRATCH.take();
                    scratch.clear();
                    scratch.extend_from_slice(reader.payload(&frame));
                    let offer = match seat.pending.offer_to_sleeper() {
                        Some(id) => Offer::Caller(id),
                        None => Offer::Anyone,
                    };
                    park(conn, &mut seat, reader, offer);
                    seat.running += 1;
                    drop(seat);
                    run_handler(conn, &scratch);
                    SCRATCH.set(scratch);
                    return Handed::Ran;
                }
                let start_partner = seat.pooled_request();
                drop(seat);
                if start_partner {
                    start_partner_thread(conn);
                }
                // Waiting for room in the pool holds the peer back through TCP, but only while
                // no request of ours awaits a reply that would sit unread behind the wait.
                submit_to_pool(conn, reader.payload(&frame), true);
            }
            Event::TimedOut | Event::Drained => {}
            Event::Ended(reason) => {
                finish(conn, reader, reason);
                return Handed::Ended;
            }
        }
    }
}

/// A caller waits for the reply to its request `id`, reading the socket itself whenever nobody
/// else does; the reply ends up in `out` (the buffer lent at registration comes back in it
/// either way).
pub(crate) fn await_reply(
    conn: &Connection,
    id: u32,
    deadline: Instant,
    timeout: Duration,
    out: &mut Vec<u8>,
) -> Result<(), TransportError> {
    let inner = &conn.inner;
    let wake = caller_wake();
    let mut seat = inner.seat.lock();
    loop {
        let waiter = seat
            .pending
            .get_mut(id)
            .expect("a request stays registered until its caller leaves");
        waiter.offered = false;
        let outcome = waiter.outcome;
        match outcome {
            Outcome::Answered => {
                *out = remove(&mut seat, id);
                return Ok(());
            }
            Outcome::Closed => {
                *out = remove(&mut seat, id);
                return Err(closed(&seat));
            }
            Outcome::Waiting => {}
        }
        let for_me = match seat.offer {
            Offer::Caller(offered) => offered == id,
            Offer::Connection | Offer::Anyone => true,
        };
        if for_me {
            if let Some(reader) = seat.take(Holder::Caller) {
                let mut mine = seat
                    .pending
                    .get_mut(id)
                    .map(|w| std::mem::take(&mut w.reply))
                    .unwrap_or_default();
                drop(seat);
                let led = lead(conn, reader, id, deadline, &mut mine);
                let mut seat = inner.seat.lock();
                seat.pending.remove(id);
                return match led {
                    Led::Answered => {
                        *out = mine;
                        Ok(())
                    }
                    Led::TimedOut => {
                        mine.clear();
                        *out = mine;
                        Err(TransportError::Timeout {
                            request_id: id,
                            after: timeout,
                        })
                    }
                    Led::Ended => {
                        mine.clear();
                        *out = mine;
                        Err(closed(&seat))
                    }
                };
            }
        }
        if Instant::now() >= deadline {
            *out = remove(&mut seat, id);
            out.clear();
            // A turn offered to this caller must not be lost with it.
            if seat.parked.is_some() && seat.offer == Offer::Caller(id) {
                let offer = next_offer(&mut seat, false);
                seat.set_offer(offer);
                notify_offer(conn, offer);
            }
            return Err(TransportError::Timeout {
                request_id: id,
                after: timeout,
            });
        }
        seat.pending.sleep(id);
        wake.wait_until(&mut seat, deadline);
        seat.pending.woke(id);
    }
}

/// Removes request `id` and gives its buffer back.
fn remove(seat: &mut Seat, id: u32) -> Vec<u8> {
    seat.pending.remove(id).map(|w| w.reply).unwrap_or_default()
}

fn closed(seat: &Seat) -> TransportError {
    TransportError::Closed(seat.pending.closed.clone().unwrap_or(CloseReason::Local))
}

/// How a caller's turn at reading ended.
enum Led {
    Answered,
    TimedOut,
    Ended,
}

/// A caller reads until its reply comes (then on through what is already buffered) or its
/// deadline passes, then passes the turn on.
fn lead(
    conn: &Connection,
    mut reader: Reader,
    id: u32,
    deadline: Instant,
    mine: &mut Vec<u8>,
) -> Led {
    let mut answered = false;
    let mut saw_request = false;
    loop {
        let until = if answered {
            Until::Buffered
        } else {
            Until::Deadline(deadline)
        };
        match reader.next_event(conn, until) {
            Event::Reply { request_id, frame } if request_id == id && !answered => {
                mine.clear();
                mine.extend_from_slice(reader.payload(&frame));
                answered = true;
            }
            Event::Reply { request_id, frame } => {
                let delivered = conn
                    .inner
                    .seat
                    .lock()
                    .deliver(request_id, reader.payload(&frame));
                if !delivered {
                    log_unmatched(conn, request_id);
                }
            }
            Event::Request(frame) => {
                saw_request = true;
                hand_over_request(conn, reader.payload(&frame));
            }
            Event::TimedOut | Event::Drained => break,
            Event::Ended(reason) => {
                finish(conn, reader, reason);
                return if answered { Led::Answered } else { Led::Ended };
            }
        }
    }
    let mut seat = conn.inner.seat.lock();
    if answered {
        seat.pending.answered_by_caller(id);
        seat.replies_read_by_caller += 1;
    }
    let connection_needed = saw_request || reader.peer_sends_requests();
    let offer = next_offer(&mut seat, connection_needed);
    park(conn, &mut seat, reader, offer);
    if answered {
        Led::Answered
    } else {
        Led::TimedOut
    }
}

/// Who a reader a caller leaves is for: the caller asleep the longest (woken), else a
/// connection thread when `connection_needed` (the peer sends requests), a handler runs or the
/// connection is closing, else the next caller.
fn next_offer(seat: &mut Seat, connection_needed: bool) -> Offer {
    if let Some(id) = seat.pending.offer_to_sleeper() {
        Offer::Caller(id)
    } else if connection_needed || seat.running > 0 || seat.pending.closed.is_some() {
        Offer::Connection
    } else {
        Offer::Anyone
    }
}

/// A caller read a request: an idle connection thread runs it when one more stays idle to
/// read, else the pool does.
fn hand_over_request(conn: &Connection, frame: &[u8]) {
    let mut seat = conn.inner.seat.lock();
    if seat.idle >= 2 && seat.inbox.is_none() {
        seat.inbox = Some(frame.to_vec());
        conn.inner.turn.notify_one();
        return;
    }
    let start_partner = seat.pooled_request();
    drop(seat);
    if start_partner {
        start_partner_thread(conn);
    }
    // A caller has a request of its own in flight: it never waits for room.
    submit_to_pool(conn, frame, false);
}

/// Queues a request for the handler pool; answers it with BTP Error `T00` "busy" when the pool
/// is full and waiting is not allowed (`may_wait` false, or a request of ours is in flight).
fn submit_to_pool(conn: &Connection, frame: &[u8], may_wait: bool) {
    let request_id = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
    let Some(dispatch) = conn.inner.dispatch.get() else {
        log::error!("BTP {}: a request came before reading started", conn.peer());
        return;
    };
    // Never once it is closing either: shutdown must not wait on a full queue.
    let wait_now = || may_wait && conn.is_open() && !conn.has_pending_requests();
    let recheck = &conn.inner.recheck_rx;
    match dispatch.pool.submit_request(conn, frame, wait_now, recheck) {
        Ok(()) => {}
        Err(SubmitError::Busy) => {
            log::debug!(
                "BTP {}: handler pool full, request {request_id} refused",
                conn.peer()
            );
            let busy = ErrorReply::unreachable("busy: request handlers saturated");
            let _ = conn.send_frame(busy.to_frame(request_id));
        }
        Err(SubmitError::Closed) => log::debug!("BTP {}: handler pool is shut down", conn.peer()),
    }
}

/// Runs `conn`'s handler on `frame`; a panic in it is caught and logged.
pub(crate) fn run_handler(conn: &Connection, frame: &[u8]) {
    let Some(dispatch) = conn.inner.dispatch.get() else {
        return;
    };
    let run = std::panic::AssertUnwindSafe(|| (dispatch.handler)(conn, frame));
    if std::panic::catch_unwind(run).is_err() {
        log::error!("a BTP request handler panicked");
    }
}

fn log_unmatched(conn: &Connection, request_id: u32) {
    log::debug!(
        "BTP {}: reply to unknown or answered request {request_id}, ignored",
        conn.peer()
    );
}

/// Starts the second thread of a connection (`btp-turn-<peer>`), unless it is being joined.
fn start_partner_thread(conn: &Connection) {
    let Some(dispatch) = conn.inner.dispatch.get() else {
        return;
    };
    let partner = conn.clone();
    let spawned = conn.inner.threads.spawn(
        format!("btp-turn-{}", conn.peer()),
        dispatch.stack_size,
        move || run_connection_thread(&partner, None),
    );
    if let Err(e) = spawned {
        log::warn!(
            "BTP {}: no second reading thread ({e}); requests go to the pool",
            conn.peer()
        );
    }
}

/// The end of a connection, on the thread that read it: fail pending requests, cut the socket,
/// wake the connection threads (they end), call `on_close`, then signal the end.
fn finish(conn: &Connection, reader: Reader, reason: CloseReason) {
    log::debug!("BTP {}: connection ended: {reason}", conn.peer());
    conn.fail_all(reason.clone());
    conn.inner.writer.shutdown();
    let on_close = {
        let mut seat = conn.inner.seat.lock();
        seat.ended = true;
        seat.holder = Holder::Nobody;
        seat.parked = None;
        seat.ticket.store(0, Ordering::SeqCst);
        seat.on_close.take()
    };
    conn.inner.turn.notify_all();
    if let Some(on_close) = on_close {
        on_close(&reason);
    }
    // Dropping the reader signals the end to `closed_signal` and `wait_closed`.
    drop(reader);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crossbeam_channel::bounded;

    use super::super::testing::{echo, pair, pair_watched, request};
    use super::super::{Connection, ConnectionConfig, FrameHandler};

    fn counts(conn: &Connection) -> (u64, u64) {
        let seat = conn.inner.seat.lock();
        (seat.replies_read_by_caller, seat.replies_handed)
    }

    #[test]
    fn a_caller_reads_its_own_reply_once_the_connection_thread_lets_go() {
        // No watch to speak of: nothing but the callers take the reader parked for them.
        let pair = pair_watched(
            ConnectionConfig::default(),
            echo(b"c:"),
            echo(b"s:"),
            Duration::from_secs(3600),
        );
        for i in 0..100u32 {
            let body = i.to_be_bytes();
            let reply = pair
                .client
                .request_frame(|id| request(id, &body), None)
                .unwrap();
            assert_eq!(&reply[5..], [&b"s:"[..], &body].concat());
        }
        // The first reply came while the connection's thread held the reader (it reads from
        // the start); every later one was read by its own caller, with no thread woken for it.
        assert_eq!(counts(&pair.client), (99, 1));
        assert_eq!(pair.client.pending_requests(), 0);
    }

    #[test]
    fn one_thread_keeps_many_requests_in_flight_and_reads_every_reply_itself() {
        let pair = pair_watched(
            ConnectionConfig::default(),
            echo(b"c:"),
            echo(b"s:"),
            Duration::from_secs(3600),
        );
        // The first reply is read by the connection's thread, which then lets the callers read.
        pair.client
            .request_frame(|id| request(id, b"-"), None)
            .unwrap();
        let woken_before = pair.client.inner.seat.lock().pending.woken;
        for round in 0..20u8 {
            let submitted: Vec<_> = (0..50u8)
                .map(|i| {
                    let body = [round, i];
                    pair.client
                        .submit_with(
                            7,
                            |id, out| out.extend_from_slice(&request(id, &body)),
                            None,
                        )
                        .unwrap()
                })
                .collect();
            assert_eq!(pair.client.pending_requests(), 50);
            let mut reply = Vec::new();
            for (i, request) in submitted.into_iter().enumerate() {
                request.wait_into(&mut reply).unwrap();
                assert_eq!(&reply[5..], [&b"s:"[..], &[round, i as u8]].concat());
            }
            assert_eq!(pair.client.pending_requests(), 0);
        }
        // Nobody slept: the waiting thread read the replies of its other requests itself.
        assert_eq!(pair.client.inner.seat.lock().pending.woken, woken_before);
    }

    #[test]
    fn a_submitted_request_dropped_unwaited_is_forgotten() {
        let pair = pair(ConnectionConfig::default(), echo(b"c:"), echo(b"s:"));
        let kept = pair
            .client
            .submit_with(6, |id, out| out.extend_from_slice(&request(id, b"k")), None)
            .unwrap();
        let dropped = pair
            .client
            .submit_with(6, |id, out| out.extend_from_slice(&request(id, b"d")), None)
            .unwrap();
        assert_eq!(pair.client.pending_requests(), 2);
        drop(dropped);
        assert_eq!(pair.client.pending_requests(), 1);
        // Its frame still went out (it may have been handed to the server already), and the
        // one kept gets its own reply, not the dropped one's.
        let mut reply = Vec::new();
        kept.wait_into(&mut reply).unwrap();
        assert_eq!(&reply[5..], b"s:k");
        assert_eq!(pair.client.pending_requests(), 0);
    }

    #[test]
    fn a_submitted_request_times_out_and_fails_when_the_connection_ends() {
        // The server never answers "x".
        let echo_all = echo(b"s:");
        let silent_on_x: FrameHandler = Arc::new(move |conn: &Connection, frame: &[u8]| {
            if &frame[5..] != b"x" {
                echo_all(conn, frame)
            }
        });
        let pair = pair(ConnectionConfig::default(), echo(b"c:"), silent_on_x);
        let late = pair
            .client
            .submit_with(
                6,
                |id, out| out.extend_from_slice(&request(id, b"x")),
                Some(Duration::from_millis(50)),
            )
            .unwrap();
        let mut reply = Vec::new();
        assert!(matches!(
            late.wait_into(&mut reply),
            Err(crate::btp::transport::TransportError::Timeout { .. })
        ));
        assert!(reply.is_empty());
        let cut = pair
            .client
            .submit_with(6, |id, out| out.extend_from_slice(&request(id, b"y")), None)
            .unwrap();
        pair.server.abort(
            tungstenite::protocol::frame::coding::CloseCode::Normal,
            "bye",
        );
        let ended = cut.wait_into(&mut reply);
        // Either the reply beat the close, or the close failed the request: never a hang.
        match ended {
            Ok(()) => assert_eq!(&reply[5..], b"s:y"),
            Err(e) => assert!(
                matches!(e, crate::btp::transport::TransportError::Closed(_)),
                "{e:?}"
            ),
        }
        assert!(pair.client.wait_closed(Duration::from_secs(30)));
        assert!(matches!(
            pair.client
                .submit_with(6, |id, out| out.extend_from_slice(&request(id, b"z")), None),
            Err(crate::btp::transport::TransportError::Closed(_))
        ));
    }

    #[test]
    fn concurrent_callers_each_get_their_own_reply() {
        let pair = pair(ConnectionConfig::default(), echo(b"c:"), echo(b"s:"));
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let client = &pair.client;
                s.spawn(move || {
                    let mut reply = Vec::new();
                    for i in 0..100u8 {
                        let body = [t, i, 0xAA];
                        client
                            .request_with(
                                8,
                                |id, out| out.extend_from_slice(&request(id, &body)),
                                &mut reply,
                                None,
                            )
                            .unwrap();
                        assert_eq!(&reply[5..], [&b"s:"[..], &body].concat());
                    }
                });
            }
        });
        let (own, handed) = counts(&pair.client);
        assert_eq!(own + handed, 800);
        assert_eq!(pair.client.pending_requests(), 0);
    }

    #[test]
    fn the_watch_reads_for_callers_gone_quiet() {
        let pair = pair(ConnectionConfig::default(), echo(b"c:"), echo(b"s:"));
        for i in 0..10u8 {
            pair.client
                .request_frame(|id| request(id, &[i]), None)
                .unwrap();
        }
        // The client's callers have stopped with the reader parked for the next of them: a
        // request from the server is read all the same.
        let reply = pair
            .server
            .request_frame(|id| request(id, b"hi"), Some(Duration::from_secs(20)))
            .unwrap();
        assert_eq!(&reply[5..], b"c:hi");
    }

    #[test]
    fn a_request_read_by_a_caller_is_run_by_someone_else() {
        // The server answers "slow" only after asking the client something: the client's
        // caller, reading while it waits, reads that request and must hand it on.
        let server_handler: FrameHandler = Arc::new(|conn: &Connection, frame: &[u8]| {
            let body = frame[5..].to_vec();
            let back = conn
                .request_frame(|id| request(id, b"back"), Some(Duration::from_secs(20)))
                .unwrap();
            let mut reply = vec![1];
            reply.extend_from_slice(&frame[1..5]);
            reply.extend_from_slice(&back[5..]);
            reply.extend_from_slice(&body);
            conn.send_frame(reply).unwrap();
        });
        let pair = pair_watched(
            ConnectionConfig::default(),
            echo(b"c:"),
            server_handler,
            Duration::from_secs(3600),
        );
        for _ in 0..20 {
            let reply = pair
                .client
                .request_frame(|id| request(id, b"slow"), None)
                .unwrap();
            assert_eq!(&reply[5..], b"c:backslow");
        }
    }

    #[test]
    fn a_handler_that_blocks_does_not_hold_up_the_requests_after_it() {
        let (release_tx, release_rx) = bounded::<()>(0);
        let server_handler: FrameHandler = Arc::new(move |conn: &Connection, frame: &[u8]| {
            if &frame[5..] == b"block" {
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
            }
            echo(b"s:")(conn, frame)
        });
        let pair = pair(ConnectionConfig::default(), echo(b"c:"), server_handler);
        // Enough requests for the server's second thread: from then on, the thread that reads
        // a request runs it with the reader parked, under the watch.
        for i in 0..10u8 {
            pair.client
                .request_frame(|id| request(id, &[i]), None)
                .unwrap();
        }
        std::thread::scope(|s| {
            let blocked = s.spawn(|| pair.client.request_frame(|id| request(id, b"block"), None));
            // Answered while the other handler still blocks.
            for _ in 0..5 {
                let reply = pair
                    .client
                    .request_frame(|id| request(id, b"quick"), Some(Duration::from_secs(20)))
                    .unwrap();
                assert_eq!(&reply[5..], b"s:quick");
            }
            drop(release_tx);
            assert_eq!(&blocked.join().unwrap().unwrap()[5..], b"s:block");
        });
    }

    #[test]
    fn a_timed_out_caller_passes_the_turn_on() {
        // The server's handler answers "hang" only when told to.
        let (release_tx, release_rx) = bounded::<()>(0);
        let server_handler: FrameHandler = Arc::new(move |conn: &Connection, frame: &[u8]| {
            if &frame[5..] == b"hang" {
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
            }
            echo(b"s:")(conn, frame)
        });
        let pair = pair_watched(
            ConnectionConfig::default(),
            echo(b"c:"),
            server_handler,
            Duration::from_secs(3600),
        );
        let started = Instant::now();
        let err = pair
            .client
            .request_frame(|id| request(id, b"hang"), Some(Duration::from_millis(100)))
            .unwrap_err();
        assert!(
            matches!(err, super::TransportError::Timeout { .. }),
            "{err:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(pair.client.pending_requests(), 0);
        drop(release_tx);
        // The late reply is dropped; the next caller takes the parked reader and gets its own.
        let reply = pair
            .client
            .request_frame(|id| request(id, b"next"), None)
            .unwrap();
        assert_eq!(&reply[5..], b"s:next");
    }
}
