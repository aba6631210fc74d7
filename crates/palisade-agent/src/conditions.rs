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

/// Enforces maximum run times on one background thread.
#[derive(Default)]
pub struct Timekeeper {
    queue: Mutex<BinaryHeap<Reverse<Expiry>>>,
    cv: Condvar,
}

impl Timekeeper {
    /// Start the timekeeper's thread.
    pub fn start() -> Arc<Timekeeper> {
        let t = Arc::new(Timekeeper::default());
        let weak = Arc::downgrade(&t);
        std::thread::Builder::new()
            .name("palisade-timekeeper".into())
            .spawn(move || loop {
                let Some(t) = weak.upgrade() else { return };
                t.run_once(Duration::from_millis(500));
            })
            .expect("spawn timekeeper");
        t
    }

    fn run_once(&self, max: Duration) {
        let mut q = self.queue.lock();
        let now = Instant::now();
        let wake = q.peek().map_or(now + max, |Reverse(e)| e.at.min(now + max));
        self.cv.wait_until(&mut q, wake);
        let now = Instant::now();
        while q.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = q.pop() {
                expire(e);
            }
        }
    }

    /// Kill `pid` after `limit` if it is still the same process.
    pub fn limit(&self, pid: u32, limit: Duration) {
        let Ok((_, start_time)) = crate::procfs::read_stat(pid) else {
            return;
        };
        self.queue.lock().push(Reverse(Expiry {
            at: Instant::now() + limit,
            pid,
            start_time,
        }));
        self.cv.notify_one();
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
