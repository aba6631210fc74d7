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
    if !same_process {
        return;
    }
    tracing::info!(
        "pid {}: maximum run time reached; killing it and its descendants",
        e.pid
    );
    // Stop the process and what it started (found by their parent links,
    // again while new ones turn up: a stopped process forks no more), then
    // kill them all: killed first, a parent's children would be handed to
    // another parent before they were found. A descendant that had already
    // left the tree (double fork, its parent gone) is not found.
    let mut tree = vec![e.pid];
    signal(e.pid, rustix::process::Signal::STOP);
    for _ in 0..5 {
        let parents = all_parents();
        let new: Vec<u32> = tree
            .iter()
            .flat_map(|&p| descendants(p, &parents))
            .filter(|d| !tree.contains(d))
            .collect();
        if new.is_empty() {
            break;
        }
        for d in new {
            if !tree.contains(&d) {
                signal(d, rustix::process::Signal::STOP);
                tree.push(d);
            }
        }
    }
    for pid in tree {
        signal(pid, rustix::process::Signal::KILL);
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// (pid, parent pid) of every process.
fn all_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, crate::procfs::read_stat(pid).ok()?.0)))
        .collect()
}

/// The descendants of `root` in `parents` ((pid, parent pid) pairs).
fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in parents {
            if ppid == p && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
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

    #[test]
    fn descendants_follow_parent_links() {
        let parents = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 12), (15, 13)];
        let mut d = descendants(10, &parents);
        d.sort_unstable();
        assert_eq!(d, [11, 12, 14]);
        assert!(descendants(99, &parents).is_empty());
    }

    /// A process that forked before its time ran out does not leave its
    /// children running.
    #[test]
    fn what_the_process_started_is_killed_with_it() {
        let keeper = Timekeeper::start();
        let dir = tempfile::tempdir().unwrap();
        let child_pid = dir.path().join("child");
        let mut parent = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 30 & echo $! > {}; wait",
                child_pid.display()
            ))
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !child_pid.exists() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let child: u32 = std::fs::read_to_string(&child_pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        keeper.limit(parent.id(), Duration::from_millis(50));
        let _ = parent.wait();
        let gone = || {
            crate::procfs::read_stat(child).is_err()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        };
        let started = Instant::now();
        while !gone() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let alive = !gone();
        if alive {
            signal(child, rustix::process::Signal::KILL);
        }
        assert!(!alive, "the child outlived its parent's limit");
    }
}
