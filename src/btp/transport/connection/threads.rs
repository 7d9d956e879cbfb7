//! The threads that read one connection (its first thread, and a partner once requests
//! arrive), named and joined.
//!
//! A thread asked to join itself is skipped and left for a later join: a request handler
//! running on one of these threads may disconnect its own client or shut its own server down,
//! and must not wait for itself. Once [`ConnectionThreads::join`] has run, no new thread starts,
//! so none can be missed.

use std::io;
use std::thread::{self, JoinHandle};

use parking_lot::Mutex;

/// See the module docs.
pub(crate) struct ConnectionThreads {
    state: Mutex<State>,
}

struct State {
    handles: Vec<JoinHandle<()>>,
    /// Set by `join`: no thread is started after it.
    joined: bool,
}

impl ConnectionThreads {
    pub(crate) fn new() -> Self {
        ConnectionThreads {
            state: Mutex::new(State {
                handles: Vec::new(),
                joined: false,
            }),
        }
    }

    /// Starts `body` on a thread named `name`, unless the connection is being joined (then
    /// `Ok(false)`). The lock is held across the spawn so that `join` cannot miss it.
    pub(crate) fn spawn(
        &self,
        name: String,
        stack_size: usize,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<bool> {
        let mut state = self.state.lock();
        if state.joined {
            return Ok(false);
        }
        let handle = thread::Builder::new()
            .name(name)
            .stack_size(stack_size)
            .spawn(body)?;
        state.handles.push(handle);
        Ok(true)
    }

    /// Waits for every thread to end and joins it; the calling thread itself, if it is one of
    /// them, is skipped and left for a later `join`. No thread starts after this.
    pub(crate) fn join(&self) {
        let handles = {
            let mut state = self.state.lock();
            state.joined = true;
            std::mem::take(&mut state.handles)
        };
        let me = thread::current().id();
        for h in handles {
            if h.thread().id() == me {
                self.state.lock().handles.push(h);
            } else {
                let _ = h.join();
            }
        }
    }

    /// Lets the calling thread, if it is one of these, go unjoined: whoever joins then does
    /// not wait for the very thread that waits for them. It ends on its own.
    pub(crate) fn detach_current(&self) {
        let me = thread::current().id();
        self.state.lock().handles.retain(|h| h.thread().id() != me);
    }

    /// Joins the threads that have finished, without waiting; true once none is left. No
    /// thread starts after this.
    pub(crate) fn join_finished(&self) -> bool {
        let mut state = self.state.lock();
        state.joined = true;
        let (finished, running): (Vec<_>, Vec<_>) = std::mem::take(&mut state.handles)
            .into_iter()
            .partition(JoinHandle::is_finished);
        state.handles = running;
        let all_done = state.handles.is_empty();
        drop(state);
        for h in finished {
            let _ = h.join();
        }
        all_done
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crossbeam_channel::bounded;

    use super::*;

    #[test]
    fn join_waits_for_every_thread_and_stops_new_ones() {
        let threads = ConnectionThreads::new();
        let (release_tx, release_rx) = bounded::<()>(0);
        let (ended_tx, ended_rx) = bounded::<()>(2);
        for i in 0..2 {
            let (release, ended) = (release_rx.clone(), ended_tx.clone());
            let started = threads
                .spawn(format!("conn-test-{i}"), 64 * 1024, move || {
                    let _ = release.recv();
                    ended.send(()).unwrap();
                })
                .unwrap();
            assert!(started);
        }
        drop(release_tx); // both may end now
        threads.join();
        assert_eq!(
            ended_rx.try_iter().count(),
            2,
            "join returned before both ended"
        );
        assert!(!threads.spawn("late".into(), 64 * 1024, || {}).unwrap());
    }

    #[test]
    fn a_thread_joining_its_own_connection_skips_itself() {
        let threads = Arc::new(ConnectionThreads::new());
        let (done_tx, done_rx) = bounded(1);
        let inner = threads.clone();
        threads
            .spawn("conn-test-self".into(), 64 * 1024, move || {
                inner.join(); // would deadlock if it waited for itself
                done_tx.send(()).unwrap();
            })
            .unwrap();
        done_rx.recv().unwrap();
        // It is still listed, and a later join from outside waits for it.
        threads.join();
        assert!(threads.join_finished());
    }

    #[test]
    fn join_finished_leaves_running_threads_and_detach_forgets_the_caller() {
        let threads = Arc::new(ConnectionThreads::new());
        let (release_tx, release_rx) = bounded::<()>(0);
        threads
            .spawn("conn-test-run".into(), 64 * 1024, move || {
                let _ = release_rx.recv();
            })
            .unwrap();
        assert!(!threads.join_finished(), "one still runs");
        drop(release_tx);
        threads.join();
        assert!(threads.join_finished());

        let threads = Arc::new(ConnectionThreads::new());
        let inner = threads.clone();
        let (detached_tx, detached_rx) = bounded(1);
        let (release_tx, release_rx) = bounded::<()>(0);
        threads
            .spawn("conn-test-det".into(), 64 * 1024, move || {
                inner.detach_current();
                detached_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
            .unwrap();
        detached_rx.recv().unwrap();
        // Nothing left to wait for, although the thread still runs.
        assert!(threads.join_finished());
        threads.join();
        drop(release_tx);
    }
}
