//! The requests of ours awaiting a reply on one connection, by requestId, and where each reply
//! goes.
//!
//! A request registers before its frame is written, so a fast reply always finds it. Its
//! [`Waiter`] lends the caller's reply buffer and the caller thread's own condition variable
//! (one per thread, made once: a thread waits for one request at a time), so registering,
//! answering and waking cost no allocation once the map has grown to the connection's
//! concurrency. Whoever reads a reply for another caller copies it into that caller's buffer and
//! wakes it; a caller that reads its own reply (see [`super::turns`]) needs no wake-up at all.
//!
//! Ids come from a per-connection counter started at a random value (RFC 23 allows sequential
//! ids; one in flight is never reused), so no system call is spent per request.
//!
//! Everything here lives under the connection's one lock (the "seat" of [`super::turns`]); the
//! waiters sleep on their condition variables with that lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Condvar;

use super::config::{CloseReason, TransportError};

/// How a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Waiting,
    /// Its reply is in the waiter's buffer.
    Answered,
    /// The connection ended first.
    Closed,
}

/// One request awaiting its reply.
pub(crate) struct Waiter {
    pub(crate) outcome: Outcome,
    /// The caller's buffer, lent for the reply.
    pub(crate) reply: Vec<u8>,
    /// The caller's condition variable.
    wake: Arc<Condvar>,
    /// The caller sleeps, and may be offered the read turn.
    asleep: bool,
    /// In `sleepers` now.
    queued: bool,
    /// Offered the read turn and woken for it.
    pub(crate) offered: bool,
}

/// The requests in flight on one connection; see the module docs.
pub(crate) struct Pending {
    waiting: HashMap<u32, Waiter>,
    /// The next requestId to try.
    next_id: u32,
    /// Why the connection ended, once it has: no request registers after that.
    pub(crate) closed: Option<CloseReason>,
    /// Callers asleep, by request id, oldest first: the read turn is offered to them in that
    /// order. Ids whose caller woke or left meanwhile are skipped.
    sleepers: VecDeque<u32>,
    /// Waiters still [`Outcome::Waiting`].
    unanswered: usize,
    /// Replies whose caller was asleep and had to be woken for them.
    pub(crate) woken: u64,
}

impl Pending {
    /// No request yet; ids start at `first_id`.
    pub(crate) fn new(first_id: u32) -> Self {
        Pending {
            waiting: HashMap::new(),
            next_id: first_id,
            closed: None,
            sleepers: VecDeque::new(),
            unanswered: 0,
            woken: 0,
        }
    }

    /// Registers a request (at most `max` in flight) whose reply goes into the buffer taken
    /// from `reply` and whose caller sleeps on `wake`; its requestId. On an error `reply` is
    /// left alone.
    pub(crate) fn register(
        &mut self,
        max: usize,
        reply: &mut Vec<u8>,
        wake: Arc<Condvar>,
    ) -> Result<u32, TransportError> {
        if let Some(reason) = &self.closed {
            return Err(TransportError::Closed(reason.clone()));
        }
        if self.waiting.len() >= max {
            return Err(TransportError::TooManyPending { max });
        }
        let mut id = self.next_id;
        while self.waiting.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.waiting.insert(
            id,
            Waiter {
                outcome: Outcome::Waiting,
                reply: std::mem::take(reply),
                wake,
                asleep: false,
                queued: false,
                offered: false,
            },
        );
        self.unanswered += 1;
        Ok(id)
    }

    /// The waiter of request `id`.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Waiter> {
        self.waiting.get_mut(&id)
    }

    /// Whether request `id` needs no more waiting: answered, failed, or not in flight.
    pub(crate) fn is_settled(&self, id: u32) -> bool {
        self.waiting
            .get(&id)
            .is_none_or(|w| w.outcome != Outcome::Waiting)
    }

    /// Removes request `id` (its caller is leaving) and gives its waiter back.
    pub(crate) fn remove(&mut self, id: u32) -> Option<Waiter> {
        let waiter = self.waiting.remove(&id)?;
        if waiter.outcome == Outcome::Waiting {
            self.unanswered -= 1;
        }
        Some(waiter)
    }

    /// Copies `frame` into the buffer of request `id` and wakes its caller. False when no
    /// request `id` awaits a reply (unknown, answered already, or given up): RFC 23 says such
    /// a reply gets no response, so it is dropped.
    pub(crate) fn deliver(&mut self, id: u32, frame: &[u8]) -> bool {
        match self.waiting.get_mut(&id) {
            Some(waiter) if waiter.outcome == Outcome::Waiting => {
                waiter.reply.clear();
                waiter.reply.extend_from_slice(frame);
                waiter.outcome = Outcome::Answered;
                self.unanswered -= 1;
                if waiter.wake.notify_one() {
                    self.woken += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// Marks request `id`'s own caller as having read its reply itself.
    pub(crate) fn answered_by_caller(&mut self, id: u32) {
        if let Some(waiter) = self.waiting.get_mut(&id) {
            if waiter.outcome == Outcome::Waiting {
                waiter.outcome = Outcome::Answered;
                self.unanswered -= 1;
            }
        }
    }

    /// Fails every waiting request with `reason` (the first reason given stays) and wakes its
    /// caller; no request registers after this.
    pub(crate) fn fail_all(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
        for waiter in self.waiting.values_mut() {
            if waiter.outcome == Outcome::Waiting {
                waiter.outcome = Outcome::Closed;
                waiter.wake.notify_one();
            }
        }
        self.unanswered = 0;
    }

    /// Request `id`'s caller is going to sleep: it may be offered the read turn.
    pub(crate) fn sleep(&mut self, id: u32) {
        if let Some(waiter) = self.waiting.get_mut(&id) {
            waiter.asleep = true;
            if !waiter.queued {
                waiter.queued = true;
                self.sleepers.push_back(id);
            }
        }
    }

    /// Request `id`'s caller woke up.
    pub(crate) fn woke(&mut self, id: u32) {
        if let Some(waiter) = self.waiting.get_mut(&id) {
            waiter.asleep = false;
        }
    }

    /// The caller asleep the longest whose request still waits: marked as offered the read
    /// turn and woken. `None` when no caller sleeps.
    pub(crate) fn offer_to_sleeper(&mut self) -> Option<u32> {
        while let Some(id) = self.sleepers.pop_front() {
            let Some(waiter) = self.waiting.get_mut(&id) else {
                continue;
            };
            waiter.queued = false;
            if waiter.asleep && waiter.outcome == Outcome::Waiting && !waiter.offered {
                waiter.offered = true;
                waiter.wake.notify_one();
                return Some(id);
            }
        }
        None
    }

    /// Requests in flight.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Requests still awaiting their reply.
    pub(crate) fn unanswered(&self) -> usize {
        self.unanswered
    }

    /// Whether request `id` is registered (for tests and assertions).
    #[cfg(test)]
    fn contains(&self, id: u32) -> bool {
        self.waiting.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake() -> Arc<Condvar> {
        Arc::new(Condvar::new())
    }

    #[test]
    fn ids_run_on_from_the_start_and_skip_those_in_flight() {
        let mut pending = Pending::new(u32::MAX - 1);
        let a = pending.register(10, &mut Vec::new(), wake()).unwrap();
        let b = pending.register(10, &mut Vec::new(), wake()).unwrap();
        let c = pending.register(10, &mut Vec::new(), wake()).unwrap();
        assert_eq!((a, b, c), (u32::MAX - 1, u32::MAX, 0));
        // Wrapped all the way round, the ids still in flight are skipped.
        pending.next_id = u32::MAX;
        assert_eq!(pending.register(10, &mut Vec::new(), wake()).unwrap(), 1);
        assert!(pending.contains(u32::MAX));
    }

    #[test]
    fn at_most_max_in_flight_and_none_after_the_end() {
        let mut pending = Pending::new(1);
        pending.register(2, &mut Vec::new(), wake()).unwrap();
        pending.register(2, &mut Vec::new(), wake()).unwrap();
        assert_eq!(
            pending.register(2, &mut Vec::new(), wake()),
            Err(TransportError::TooManyPending { max: 2 })
        );
        pending.fail_all(CloseReason::PongTimeout);
        pending.fail_all(CloseReason::Local);
        assert_eq!(
            pending.register(5, &mut Vec::new(), wake()),
            Err(TransportError::Closed(CloseReason::PongTimeout))
        );
    }

    #[test]
    fn a_reply_fills_the_lent_buffer_once() {
        let mut pending = Pending::new(7);
        let mut buffer = Vec::with_capacity(64);
        let at = buffer.as_ptr();
        let id = pending.register(4, &mut buffer, wake()).unwrap();
        assert_eq!(buffer.capacity(), 0, "lent");
        assert_eq!(pending.unanswered(), 1);
        assert!(pending.deliver(id, b"first"));
        assert!(!pending.deliver(id, b"again"), "answered already");
        assert!(!pending.deliver(id + 1, b"unknown"));
        assert_eq!(pending.unanswered(), 0);
        let waiter = pending.remove(id).unwrap();
        assert_eq!(waiter.outcome, Outcome::Answered);
        assert_eq!(waiter.reply, b"first");
        assert_eq!(waiter.reply.as_ptr(), at, "copied into the lent buffer");
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn failing_all_closes_the_waiting_ones_only() {
        let mut pending = Pending::new(1);
        let answered = pending.register(4, &mut Vec::new(), wake()).unwrap();
        let waiting = pending.register(4, &mut Vec::new(), wake()).unwrap();
        pending.deliver(answered, b"ok");
        pending.fail_all(CloseReason::PeerClosed);
        assert_eq!(
            pending.get_mut(answered).unwrap().outcome,
            Outcome::Answered
        );
        assert_eq!(pending.get_mut(waiting).unwrap().outcome, Outcome::Closed);
        assert_eq!(pending.unanswered(), 0);
        pending.remove(waiting);
        assert_eq!(pending.unanswered(), 0);
    }

    #[test]
    fn the_turn_goes_to_the_longest_sleeper_still_waiting() {
        let mut pending = Pending::new(1);
        let ids: Vec<u32> = (0..4)
            .map(|_| pending.register(8, &mut Vec::new(), wake()).unwrap())
            .collect();
        for &id in &ids {
            pending.sleep(id);
            pending.sleep(id); // queued once
        }
        pending.woke(ids[0]); // awake again: not offered
        pending.deliver(ids[1], b"r"); // answered: not offered
        pending.remove(ids[2]); // gone
        assert_eq!(pending.offer_to_sleeper(), Some(ids[3]));
        assert!(pending.get_mut(ids[3]).unwrap().offered);
        assert_eq!(pending.offer_to_sleeper(), None);
        // Asleep again later, it is queued again.
        pending.get_mut(ids[3]).unwrap().offered = false;
        pending.sleep(ids[3]);
        assert_eq!(pending.offer_to_sleeper(), Some(ids[3]));
    }
}
