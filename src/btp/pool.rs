//! A fixed pool of named threads that run incoming BTP requests, so that a handler never runs
//! on a reader thread (it would deadlock as soon as it waited for a response from the same peer).

use std::thread::{self, JoinHandle};

use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, SendTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send + 'static>;

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
}

/// The submitting side of a [`HandlerPool`], held by reader threads.
#[derive(Clone)]
pub struct PoolHandle {
    jobs: Sender<Job>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full and waiting was not allowed.
    Busy,
    /// The pool is shut down.
    Closed,
}

/// How often a waiting submitter asks `may_wait` again. Only reached when the pool is
/// saturated, never on the normal path.
const RECHECK: Duration = Duration::from_millis(20);

impl HandlerPool {
    /// Starts `threads` workers named `<name>-<i>`, with room for `queue` waiting jobs.
    pub fn new(
        name: &str,
        threads: usize,
        queue: usize,
        stack_size: usize,
    ) -> std::io::Result<Self> {
        let (jobs_tx, jobs_rx) = bounded::<Job>(queue.max(1));
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let mut workers = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let jobs = jobs_rx.clone();
            let stop = stop_rx.clone();
            let spawned = thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(stack_size)
                .spawn(move || worker(jobs, stop));
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
        })
    }

    /// A handle to submit jobs with.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            jobs: self.jobs.clone(),
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
    /// Queues `job`. When the queue is full, waits for room as long as `may_wait()` stays true
    /// (asked again every 20 ms), else gives up with [`SubmitError::Busy`].
    pub fn submit(
        &self,
        job: impl FnOnce() + Send + 'static,
        may_wait: impl Fn() -> bool,
    ) -> Result<(), SubmitError> {
        let mut job: Job = Box::new(job);
        loop {
            match self.jobs.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
                Err(TrySendError::Full(j)) => job = j,
            }
            if !may_wait() {
                return Err(SubmitError::Busy);
            }
            match self.jobs.send_timeout(job, RECHECK) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Disconnected(_)) => return Err(SubmitError::Closed),
                Err(SendTimeoutError::Timeout(j)) => job = j,
            }
        }
    }
}

fn worker(jobs: Receiver<Job>, stop: Receiver<()>) {
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(jobs) -> job => match job {
                Ok(job) => {
                    // A panicking handler must not shrink the pool.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        log::error!("a BTP request handler panicked");
                    }
                }
                Err(_) => return,
            },
        }
    }
}
