//! A fixed pool of named threads that run incoming BTP requests when both of a connection's
//! reading threads are busy: a handler must never run on the only thread reading (it would
//! deadlock as soon as it waited for a response from the same peer).
//!
//! A request goes to a worker as its connection and a copy of its frame, in a buffer the worker
//! gives back when the handler returns: once the pool has warmed up, handing a request over
//! allocates nothing.

use std::thread::{self, JoinHandle};

use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Select, Sender, TrySendError};
use parking_lot::Mutex;

use super::connection::Connection;

enum Job {
    /// Any work (tests, one-off jobs).
    Run(Box<dyn FnOnce() + Send + 'static>),
    /// An incoming request for its connection's handler.
    Request { conn: Connection, frame: Vec<u8> },
}

/// Frame buffers bigger than this are not kept for reuse.
const KEEP_FRAME: usize = 64 * 1024;

/// A bounded pool of handler threads with a bounded queue: nothing piles up without limit.
///
/// When the queue is full, [`PoolHandle::submit`] makes the submitter (a reader thread) wait,
/// so that it stops reading its socket and backpressure reaches the peer through TCP — but
/// only while `may_wait` says so. A reader must not wait while handlers may be waiting for a
/// response on its own connection (the response would sit unread behind it: a deadlock until
/// the request timeout), so the caller refuses the request instead (`Busy`).
pub struct HandlerPool {
    jobs: Sender<Job>,
    stop: Mutex<Option<Sender<()>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Frame buffers the workers are done with.
    spare: Receiver<Vec<u8>>,
}

/// The submitting side of a [`HandlerPool`], held by reader threads.
#[derive(Clone)]
pub struct PoolHandle {
    jobs: Sender<Job>,
    spare: Receiver<Vec<u8>>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full and waiting was not allowed.
    Busy,
    /// The pool is shut down.
    Closed,
}

/// A waiting submitter asks `may_wait` again whenever its `recheck` channel signals (a request
/// of ours was registered, or the connection closed); this timeout is only the safety net for a
/// change nobody signalled. Never reached on the normal path: only when the pool is saturated.
const RECHECK_AT_LEAST_EVERY: Duration = Duration::from_millis(500);

impl HandlerPool {
    /// Starts `threads` workers named `<name>-<i>`, with room for `queue` waiting jobs.
    pub fn new(
        name: &str,
        threads: usize,
        queue: usize,
        stack_size: usize,
    ) -> std::io::Result<Self> {
        let (jobs_tx, jobs_rx) = bounded::<Job>(queue.max(1));
        // Never sent on: dropped to stop the workers. Not a zero-capacity channel: a worker
        // waiting on one in `select!` allocates each time it starts waiting.
        let (stop_tx, stop_rx) = bounded::<()>(1);
        // Room for a buffer per queued job and per worker: no more are ever out at once.
        let (spare_tx, spare_rx) = bounded::<Vec<u8>>(queue.max(1) + threads.max(1));
        let mut workers = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let jobs = jobs_rx.clone();
            let stop = stop_rx.clone();
            let spare = spare_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(stack_size)
                .spawn(move || worker(jobs, stop, spare));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    drop(stop_tx);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(HandlerPool {
            jobs: jobs_tx,
            stop: Mutex::new(Some(stop_tx)),
            workers: Mutex::new(workers),
            spare: spare_rx,
        })
    }

    /// A handle to submit jobs with.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            jobs: self.jobs.clone(),
            spare: self.spare.clone(),
        }
    }

    /// Stops the workers (each finishes the job it is running; queued jobs are dropped) and
    /// joins them. Idempotent.
    pub fn shutdown(&self) {
        drop(self.stop.lock().take());
        let workers = std::mem::take(&mut *self.workers.lock());
        for w in workers {
            if w.thread().id() == thread::current().id() {
                continue;
            }
            let _ = w.join();
        }
    }
}

impl Drop for HandlerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PoolHandle {
    /// Queues `job`. When the queue is full, waits for room as long as `may_wait()` stays true,
    /// asking it again each time `recheck` signals, else gives up with [`SubmitError::Busy`].
    pub fn submit(
        &self,
        job: impl FnOnce() + Send + 'static,
        may_wait: impl Fn() -> bool,
        recheck: &Receiver<()>,
    ) -> Result<(), SubmitError> {
        self.queue(Job::Run(Box::new(job)), may_wait, recheck)
    }

    /// Queues the request `frame` (copied) for `conn`'s handler, as [`PoolHandle::submit`]
    /// does.
    pub(crate) fn submit_request(
        &self,
        conn: &Connection,
        frame: &[u8],
        may_wait: impl Fn() -> bool,
        recheck: &Receiver<()>,
    ) -> Result<(), SubmitError> {
        let mut copy = self.spare.try_recv().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(frame);
        let job = Job::Request {
            conn: conn.clone(),
            frame: copy,
        };
        self.queue(job, may_wait, recheck)
    }

    fn queue(
        &self,
        mut job: Job,
        may_wait: impl Fn() -> bool,
        recheck: &Receiver<()>,
    ) -> Result<(), SubmitError> {
        loop {
            match self.jobs.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
                Err(TrySendError::Full(j)) => job = j,
            }
            if !may_wait() {
                return Err(SubmitError::Busy);
            }
            // Room in the queue, or a reason to ask `may_wait` again, whichever comes first.
            let mut select = Select::new();
            let room = select.send(&self.jobs);
            let signal = select.recv(recheck);
            match select.select_timeout(RECHECK_AT_LEAST_EVERY) {
                Ok(operation) if operation.index() == room => {
                    return operation
                        .send(&self.jobs, job)
                        .map_err(|_| SubmitError::Closed);
                }
                Ok(operation) => {
                    debug_assert_eq!(operation.index(), signal);
                    // Its sender lives as long as the connection: gone means shut down.
                    if operation.recv(recheck).is_err() {
                        return Err(SubmitError::Closed);
                    }
                }
                Err(_) => {}
            }
        }
    }
}

fn worker(jobs: Receiver<Job>, stop: Receiver<()>, spare: Sender<Vec<u8>>) {
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(jobs) -> job => match job {
                Ok(Job::Run(job)) => {
                    // A panicking handler must not shrink the pool.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        log::error!("a BTP request handler panicked");
                    }
                }
                Ok(Job::Request { conn, mut frame }) => {
                    // Panics are caught there.
                    conn.run_request(&frame);
                    drop(conn);
                    if frame.capacity() <= KEEP_FRAME {
                        frame.clear();
                        let _ = spare.try_send(frame);
                    }
                }
                Err(_) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A pool of one busy worker and a full queue of one; the worker is released through the
    /// returned sender.
    fn saturated() -> (HandlerPool, Sender<()>) {
        let pool = HandlerPool::new("pool-test", 1, 1, 64 * 1024).unwrap();
        let (release_tx, release_rx) = bounded::<()>(0);
        let (started_tx, started_rx) = bounded::<()>(1);
        let handle = pool.handle();
        let (release, started) = (release_rx.clone(), started_tx);
        handle
            .submit(
                move || {
                    let _ = started.send(());
                    let _ = release.recv();
                },
                || false,
                &bounded(1).1,
            )
            .unwrap();
        started_rx.recv().unwrap();
        let release = release_rx;
        handle
            .submit(
                move || {
                    let _ = release.recv();
                },
                || false,
                &bounded(1).1,
            )
            .unwrap();
        (pool, release_tx)
    }

    #[test]
    fn a_waiting_submitter_gives_up_when_signalled_that_it_may_no_longer_wait() {
        let (pool, release) = saturated();
        let handle = pool.handle();
        let may_wait = Arc::new(AtomicBool::new(true));
        let (asked_tx, asked_rx) = bounded(1);
        let (recheck_tx, recheck_rx) = bounded(1);
        let waiter = {
            let may_wait = Arc::clone(&may_wait);
            thread::Builder::new()
                .name("pool-test-waiter".into())
                .spawn(move || {
                    let ask = || {
                        let _ = asked_tx.try_send(());
                        may_wait.load(Ordering::SeqCst)
                    };
                    handle.submit(|| {}, ask, &recheck_rx)
                })
                .unwrap()
        };
        // Once it has been allowed to wait, take the permission back and tell it so.
        asked_rx.recv().unwrap();
        may_wait.store(false, Ordering::SeqCst);
        recheck_tx.send(()).unwrap();
        assert_eq!(waiter.join().unwrap(), Err(SubmitError::Busy));
        drop(release);
        pool.shutdown();
    }

    #[test]
    fn a_waiting_submitter_gets_in_when_room_frees_up() {
        let (pool, release) = saturated();
        let handle = pool.handle();
        let (ran_tx, ran_rx) = bounded(1);
        let (_recheck_tx, recheck_rx) = bounded::<()>(1);
        let waiter = thread::Builder::new()
            .name("pool-test-waiter".into())
            .spawn(move || handle.submit(move || ran_tx.send(()).unwrap(), || true, &recheck_rx))
            .unwrap();
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(()));
        ran_rx.recv().unwrap();
        pool.shutdown();
    }
}
