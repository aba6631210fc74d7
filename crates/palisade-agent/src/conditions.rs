//! Conditional execution: what an allowing rule can impose on the process it
//! lets run (the patent's "qualified enable"): a scheduling priority and a
//! maximum run time. Applied by pid, re-checked before killing so that a
//! reused pid or a process that exec'd something else is never hit.
use parking_lot::{Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A process to kill at a deadline, if it is still the same process (pid
/// and start time, which survive exec: a script's process runs its
/// interpreter once started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Expiry {
    at: Instant,
    pid: u32,
    start_time: u64,
}

/// Enforces maximum run times on one background thread, which sleeps while
/// nothing is to be killed (no timer wakes an idle agent) and ends when the
/// `Timekeeper` is dropped.
pub struct Timekeeper {
    inner: Arc<Queue>,
}

#[derive(Default)]
struct Queue {
    /// The expiries, and whether the `Timekeeper` was dropped.
    state: Mutex<(BinaryHeap<Reverse<Expiry>>, bool)>,
    cv: Condvar,
}

impl Timekeeper {
    /// Start the timekeeper's thread.
    pub fn start() -> Arc<Timekeeper> {
        let inner = Arc::new(Queue::default());
        let queue = inner.clone();
        std::thread::Builder::new()
            .name("palisade-timekeeper".into())
            .spawn(move || while queue.run_once() {})
            .expect("spawn timekeeper");
        Arc::new(Timekeeper { inner })
    }

    /// Kill `pid` after `limit` if it is still the same process.
    pub fn limit(&self, pid: u32, limit: Duration) {
        let Ok((_, start_time)) = crate::procfs::read_stat(pid) else {
            return;
        };
        self.inner.state.lock().0.push(Reverse(Expiry {
            at: Instant::now() + limit,
            pid,
            start_time,
        }));
        self.inner.cv.notify_one();
    }
}

impl Drop for Timekeeper {
    fn drop(&mut self) {
        self.inner.state.lock().1 = true;
        self.inner.cv.notify_one();
    }
}

impl Queue {
    /// Wait for the next expiry (or a new one) and carry out what is due;
    /// `false` once the `Timekeeper` is gone.
    fn run_once(&self) -> bool {
        let mut state = self.state.lock();
        if state.1 {
            return false;
        }
        match state.0.peek().map(|Reverse(e)| e.at) {
            Some(at) => {
                self.cv.wait_until(&mut state, at);
            }
            None => self.cv.wait(&mut state),
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while state.0.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = state.0.pop() {
                due.push(e);
            }
        }
        // Killing reads `/proc`: not while `limit` (called on decisions)
        // could be waiting for the lock.
        if !due.is_empty() {
            parking_lot::MutexGuard::unlocked(&mut state, || due.into_iter().for_each(expire));
        }
        !state.1
    }
}

fn expire(e: Expiry) {
    let same_process =
        crate::procfs::read_stat(e.pid).is_ok_and(|(_, start)| start == e.start_time);
    if same_process {
        tracing::info!("pid {}: maximum run time reached; killing it", e.pid);
        if let Some(pid) = rustix::process::Pid::from_raw(e.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Give `pid` the nice value `nice` (best effort).
pub fn renice(pid: u32, nice: i8) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        if let Err(e) = rustix::process::setpriority_process(Some(p), i32::from(nice)) {
            tracing::warn!("pid {pid}: cannot set nice {nice}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_past_its_limit_is_killed_and_others_are_not() {
        let keeper = Timekeeper::start();
        let mut short = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut long = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        keeper.limit(short.id(), Duration::from_millis(100));
        keeper.limit(long.id(), Duration::from_secs(60));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = short.try_wait().unwrap() {
                break Some(s);
            }
            if started.elapsed() > Duration::from_secs(5) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        let killed = status.and_then(|s| s.signal());
        let _ = short.kill();
        let _ = short.wait();
        assert_eq!(killed, Some(9), "the process past its limit was not killed");
        assert!(
            long.try_wait().unwrap().is_none(),
            "a process within its limit was killed"
        );
        let _ = long.kill();
        let _ = long.wait();
        // Dropping the keeper ends its thread; the pending expiry goes with it.
        drop(keeper);
    }
}
