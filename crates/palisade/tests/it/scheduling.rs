//! The agent's threads and their scheduling (no BPF guard involved: not
//! part of the guard's runs under QEMU).
use crate::harness::*;
use crate::require_root;
use std::path::Path;
use std::time::Duration;

/// Scheduling policy (`/proc/PID/task/TID/stat` field 41: 0 `SCHED_OTHER`,
/// 1 `SCHED_FIFO`) of each thread of `pid`, by thread name.
fn thread_policies(pid: i32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue; // the thread ended
        };
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after_name
            .split_whitespace()
            .nth(38)
            .unwrap()
            .parse()
            .unwrap();
        out.push((comm.trim().to_owned(), policy));
    }
    out
}

/// `chrt FLAGS -p PRIORITY TID` on the calling thread.
fn set_own_policy(flag: &str, priority: &str) {
    let me = std::fs::read_link("/proc/thread-self").unwrap();
    let tid = me.file_name().unwrap().to_str().unwrap().to_owned();
    let r = run(Path::new("chrt"), &[flag, "-p", priority, &tid], &[]);
    assert!(r.ok(), "chrt {flag} -p {priority} {tid}: {r:?}");
}

/// Started real-time (a unit's `CPUSchedulingPolicy=fifo`, say), the agent
/// keeps the policy for the threads that answer the kernel and puts its
/// background threads back to `SCHED_OTHER`, where they cannot hold a CPU
/// that a just-allowed process waits for; enforcement is unchanged.
#[test]
fn background_threads_leave_a_real_time_policy_decision_threads_keep_it() {
    require_root!();
    let m = TestMount::tmpfs();
    // A child inherits the policy of the thread that spawns it.
    set_own_policy("-f", "1");
    let up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Up::start(&m, &["--lockdown", "--no-scan"])
    }));
    set_own_policy("-o", "0");
    let up = up.unwrap();
    let p = Programs::get();
    let hello = p.install("hello", &m.path, "hello");
    assert!(run(&hello, &[], &[]).exec_refused());
    up.ok(&["file", "approve", hello.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(2), || run(&hello, &[], &[]).ok()).is_some());
    // A first run of another approved file.
    let copy = p.install("hello2", &m.path, "other");
    up.ok(&["file", "approve", p.path("hello2").to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(2), || run(&copy, &[], &[]).ok()).is_some());

    let threads = thread_policies(up.proc.pid());
    let policy_of = |prefix: &str| -> Vec<u32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, p)| *p)
            .collect()
    };
    for decision in ["palisade-reader", "palisade-worker", "palisade-watchd"] {
        let p = policy_of(decision);
        assert!(
            !p.is_empty() && p.iter().all(|&p| p == 1),
            "{decision}: {threads:?}"
        );
    }
    // Names are cut at 15 characters by the kernel.
    for background in ["palisade-hasher", "palisade-prewar", "palisade-persis"] {
        let p = policy_of(background);
        assert!(
            !p.is_empty() && p.iter().all(|&p| p == 0),
            "{background}: {threads:?}"
        );
    }
}
