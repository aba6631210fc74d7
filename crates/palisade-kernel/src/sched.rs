//! Thread scheduling: taking a thread out of a real-time policy.
//!
//! Linux scheduling policies are per thread, and a new thread inherits its
//! creator's. An agent started under `SCHED_FIFO` (a unit's
//! `CPUSchedulingPolicy=fifo`, a benchmark under `chrt -f`) runs every
//! thread real-time, and a real-time thread is never preempted by another of
//! the same priority: background work would then hold a CPU that a process
//! waiting for its decision, or a real-time process the agent just allowed,
//! needs.

/// Move the calling thread to `SCHED_OTHER` (priority 0, its nice value
/// unchanged) if it runs under `SCHED_FIFO` or `SCHED_RR`. Returns whether
/// it changed anything.
pub fn leave_realtime() -> std::io::Result<bool> {
    // SAFETY: `sched_getscheduler(0)` only reads the calling thread's policy.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if policy != libc::SCHED_FIFO && policy != libc::SCHED_RR {
        return Ok(false);
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialized `sched_param` that outlives the
    // call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// The calling thread's scheduling policy (`libc::SCHED_*`).
pub fn policy() -> std::io::Result<i32> {
    // SAFETY: `sched_getscheduler(0)` only reads the calling thread's policy.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_time_thread_leaves_and_others_are_untouched() {
        std::thread::spawn(|| {
            assert!(!leave_realtime().unwrap(), "not real-time to begin with");
            assert_eq!(policy().unwrap(), libc::SCHED_OTHER);
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: valid `sched_param`; pid 0 is this thread.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
                eprintln!("skipped: cannot enter SCHED_FIFO (not root?)");
                return;
            }
            assert_eq!(policy().unwrap(), libc::SCHED_FIFO);
            assert!(leave_realtime().unwrap());
            assert_eq!(policy().unwrap(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
