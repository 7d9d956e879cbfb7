//! A fixed pool of named threads that run incoming BTP requests, so that a handler never runs
//! on a reader thread (it would deadlock as soon as it waited for a response from the same peer).

use std::thread::{self, JoinHandle};

use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A bounded pool of handler threads. Submitting to a full pool blocks the submitter (a reader
/// thread), which stops reading its socket: backpressure reaches the peer through TCP instead
/// of piling up in memory.
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

/// The pool is shut down: the job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolClosed;

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
    /// Queues `job`, blocking while the queue is full.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), PoolClosed> {
        let job: Job = Box::new(job);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                log::debug!("handler pool full: reader waits (backpressure)");
                self.jobs.send(job).map_err(|_| PoolClosed)
            }
            Err(TrySendError::Disconnected(_)) => Err(PoolClosed),
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
