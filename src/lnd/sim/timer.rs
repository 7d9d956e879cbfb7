//! One named thread that runs jobs at a later instant: the simulator's added latency and payment
//! timeouts. Jobs must be short (they take the network lock briefly and push to channels); they
//! never run on grpcio's completion-queue threads, so a slow node does not slow the others.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send + 'static>;

enum Command {
    Run(Instant, Job),
    Stop,
}

/// Cheap to clone; every clone feeds the same thread.
#[derive(Clone)]
pub(crate) struct TimerHandle {
    commands: Sender<Command>,
}

impl TimerHandle {
    /// Runs `job` on the timer thread at `at` (or soon after). After [`Timer::stop`] the job is
    /// dropped without running, which closes whatever channel it was going to complete.
    /// Runs `job` `delay` from now; a delay too long for the clock (`Duration::MAX`, as a
    /// caller may give for "never") is a century.
    pub(crate) fn run_after(&self, delay: Duration, job: impl FnOnce() + Send + 'static) {
        let now = Instant::now();
        let at = now
            .checked_add(delay)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
            .unwrap_or(now);
        self.run_at(at, job);
    }

    pub(crate) fn run_at(&self, at: Instant, job: impl FnOnce() + Send + 'static) {
        let _ = self.commands.send(Command::Run(at, Box::new(job)));
    }
}

/// The timer thread; stopped and joined by [`Timer::stop`] or on drop.
pub(crate) struct Timer {
    handle: TimerHandle,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Scheduled {
    at: Instant,
    sequence: u64,
    job: Job,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed so that `BinaryHeap` (a max-heap) pops the earliest job first; the sequence
    // number keeps jobs due at the same instant in the order they were scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

impl Timer {
    pub(crate) fn start(name: &str) -> std::io::Result<Timer> {
        let (commands, receiver) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(receiver))?;
        Ok(Timer {
            handle: TimerHandle { commands },
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn handle(&self) -> TimerHandle {
        self.handle.clone()
    }

    /// Stops the thread and joins it; pending jobs are dropped. Idempotent.
    pub(crate) fn stop(&self) {
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = self.handle.commands.send(Command::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(commands: Receiver<Command>) {
    let mut queue: BinaryHeap<Scheduled> = BinaryHeap::new();
    let mut sequence = 0u64;
    loop {
        let now = Instant::now();
        while queue.peek().is_some_and(|next| next.at <= now) {
            if let Some(due) = queue.pop() {
                (due.job)();
            }
        }
        let command = match queue.peek() {
            Some(next) => match commands.recv_deadline(next.at) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match commands.recv() {
                Ok(command) => command,
                Err(_) => return,
            },
        };
        match command {
            Command::Run(at, job) => {
                sequence += 1;
                queue.push(Scheduled { at, sequence, job });
            }
            Command::Stop => return,
        }
    }
}
