//! The watch: one thread per client or server (`btp-watch`) that hands a connection's reader
//! to one of its own threads once it has lain parked, with nobody reading, for a whole period.
//!
//! A reader is left parked without waking anyone at two moments of the packet path (see
//! [`super::turns`]): between two requests of a caller that reads its own replies, and while the
//! thread that read a request runs its handler, ready to read on when it returns. Both are
//! short, and waking a thread to cover them would cost a wake-up per round trip. The rare long
//! ones (the callers stopped, a handler blocks) are covered here: each parked reader carries a
//! ticket, and a ticket the watch sees twice, a period apart, means nobody took the reader in
//! between; the watch offers it to the connection's threads. A frame the peer sends unasked
//! therefore waits at most two periods for a reader; replies never wait for the watch (a caller
//! waiting for one takes a parked reader itself).
//!
//! The watch sleeps (no timer at all) once it has seen no parked reader for a while, and the
//! next connection to park one wakes it: an idle process stays idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Connection, Inner};

/// How often the watch looks at the parked readers.
pub(crate) const WATCH_PERIOD: Duration = Duration::from_millis(2);

/// Periods without a parked reader after which the watch sleeps until one is parked.
const QUIET_PERIODS: u32 = 50;

/// The watch of one client or server; dropping it stops and joins its thread.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What connections hold to be watched.
#[derive(Clone)]
pub(crate) struct WatchHandle {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The watch sleeps with no timer: a connection that parks a reader must wake it.
    pub(crate) asleep: AtomicBool,
    period: Duration,
}

struct State {
    /// Every connection watched, with the ticket seen at the last look (0: none).
    watched: Vec<(Weak<Inner>, u64)>,
    stop: bool,
}

impl Watch {
    /// Starts the watch thread, looking every `period`.
    pub(crate) fn start(period: Duration) -> std::io::Result<Watch> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                watched: Vec::new(),
                stop: false,
            }),
            wake: Condvar::new(),
            asleep: AtomicBool::new(false),
            period,
        });
        let watching = shared.clone();
        let thread = thread::Builder::new()
            .name("btp-watch".into())
            .stack_size(64 * 1024)
            .spawn(move || watch(&watching))?;
        Ok(Watch {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// What a connection needs to be watched.
    pub(crate) fn handle(&self) -> WatchHandle {
        WatchHandle {
            shared: self.shared.clone(),
        }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Stops the thread and joins it. Idempotent.
    pub(crate) fn stop(&self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

impl WatchHandle {
    /// Watches `conn` from now on (until it is dropped).
    pub(crate) fn watch(&self, conn: &Connection) {
        self.shared
            .state
            .lock()
            .watched
            .push((Arc::downgrade(&conn.inner), 0));
    }

    /// A connection just parked a reader, its ticket already stored where the watch looks:
    /// wakes the watch if it sleeps.
    pub(crate) fn parked(&self) {
        if self.shared.asleep.load(Ordering::SeqCst) {
            let _state = self.shared.state.lock();
            self.shared.wake.notify_one();
        }
    }
}

fn watch(shared: &Shared) {
    let mut quiet = 0u32;
    // Connections whose reader lay parked a whole period, with its ticket: handed over
    // outside the lock.
    let mut stale: Vec<(Arc<Inner>, u64)> = Vec::new();
    let mut state = shared.state.lock();
    loop {
        if state.stop {
            return;
        }
        if quiet >= QUIET_PERIODS {
            // Sleep, unless a reader is parked already: a connection that parks one after
            // this either sees `asleep` and wakes us, or its ticket is seen here.
            shared.asleep.store(true, Ordering::SeqCst);
            if !any_parked(&state.watched) {
                shared.wake.wait(&mut state);
            }
            shared.asleep.store(false, Ordering::SeqCst);
            quiet = 0;
            continue;
        }
        shared.wake.wait_for(&mut state, shared.period);
        if state.stop {
            return;
        }
        if look(&mut state.watched, &mut stale) {
            quiet = 0;
        } else {
            quiet += 1;
        }
        if !stale.is_empty() {
            drop(state);
            for (inner, ticket) in stale.drain(..) {
                super::turns::hand_over_parked(&Connection { inner }, ticket);
            }
            state = shared.state.lock();
        }
    }
}

/// Whether any watched connection has a reader parked now.
fn any_parked(watched: &[(Weak<Inner>, u64)]) -> bool {
    watched.iter().any(|(weak, _)| {
        weak.upgrade()
            .is_some_and(|inner| inner.watch_ticket.load(Ordering::SeqCst) != 0)
    })
}

/// One look at every connection: collects into `stale` those whose reader lay parked since the
/// last look (same ticket), forgets the dropped ones; true if any reader is parked.
fn look(watched: &mut Vec<(Weak<Inner>, u64)>, stale: &mut Vec<(Arc<Inner>, u64)>) -> bool {
    let mut parked = false;
    watched.retain_mut(|(weak, seen)| {
        let Some(inner) = weak.upgrade() else {
            return false;
        };
        let ticket = inner.watch_ticket.load(Ordering::SeqCst);
        if ticket != 0 {
            parked = true;
            if ticket == *seen {
                stale.push((inner, ticket));
            }
        }
        *seen = ticket;
        true
    });
    parked
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use super::super::testing::{echo, pair_watched, raw, request};
    use super::super::ConnectionConfig;
    use super::*;

    #[test]
    fn a_ticket_seen_twice_is_stale_and_dropped_connections_are_forgotten() {
        let (a, _reader_a, _peer_a) = raw(false, ConnectionConfig::default());
        let (b, _reader_b, _peer_b) = raw(false, ConnectionConfig::default());
        let mut watched = vec![(Arc::downgrade(&a.inner), 0), (Arc::downgrade(&b.inner), 0)];
        let mut stale = Vec::new();
        assert!(!look(&mut watched, &mut stale));
        a.inner.watch_ticket.store(7, Ordering::SeqCst);
        assert!(any_parked(&watched));
        // First seen: not stale yet.
        assert!(look(&mut watched, &mut stale));
        assert!(stale.is_empty());
        // Still 7 a period later: nobody took it.
        assert!(look(&mut watched, &mut stale));
        assert_eq!(stale.len(), 1);
        assert!(Arc::ptr_eq(&stale[0].0, &a.inner) && stale[0].1 == 7);
        stale.clear();
        // Taken and parked again in between: a new ticket, not stale.
        a.inner.watch_ticket.store(8, Ordering::SeqCst);
        assert!(look(&mut watched, &mut stale));
        assert!(stale.is_empty());
        drop(b);
        look(&mut watched, &mut stale);
        assert_eq!(watched.len(), 1);
    }

    #[test]
    fn a_watch_asleep_wakes_for_the_next_parked_reader() {
        let pair = pair_watched(
            ConnectionConfig::default(),
            echo(b"c:"),
            echo(b"s:"),
            Duration::from_millis(1),
        );
        let watch = pair.client_watch();
        // Nothing parked yet (the client's thread reads): the watch falls asleep after its
        // quiet periods. Nothing signals that, hence the bounded poll.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !watch.asleep.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the watch never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A request leaves the reader parked for the next caller, which never comes: the
        // watch, woken by the park, gives it to the connection's thread, which reads the
        // server's request.
        pair.client
            .request_frame(|id| request(id, b"one"), None)
            .unwrap();
        let reply = pair
            .server
            .request_frame(|id| request(id, b"hi"), Some(Duration::from_secs(20)))
            .unwrap();
        assert_eq!(&reply[5..], b"c:hi");
    }
}
