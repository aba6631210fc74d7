//! The agent's threads and their scheduling (no BPF guard involved: not
//! part of the guard's runs under QEMU).
use crate::harness::*;
use crate::require_root;
use std::path::Path;
use std::time::Duration;

/// Scheduling policy (`/proc/PID/task/TID/stat` field 41: 0 `SCHED_OTHER`,
/// 1 `SCHED_FIFO`) of each thread of `pid`, by thread name.
fn thread_policies(pid: i32) -> Vec<(String, u32)> {
    thread_files(pid, "stat")
        .into_iter()
        .map(|(name, stat)| {
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let policy = after_name
                .split_whitespace()
                .nth(38)
                .unwrap()
                .parse()
                .unwrap();
            (name, policy)
        })
        .collect()
}

/// Each thread of `pid`: its name and the content of its `/proc` `file`.
fn thread_files(pid: i32, file: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(content)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join(file)),
        ) else {
            continue; // the thread ended
        };
        out.push((comm.trim().to_owned(), content));
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

/// Context switches (voluntary and not) of each thread of `pid`, by thread
/// name (threads of one name summed).
fn thread_switches(pid: i32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for (name, status) in thread_files(pid, "status") {
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .sum();
        *out.entry(name).or_default() += switches;
    }
    out
}

/// An idle agent's enforcement threads sleep until there is work: none wakes
/// on a timer to look at a stop flag or an empty queue (on a VM each such
/// wake-up is a halted vCPU woken, on a laptop a CPU kept out of deep sleep).
/// Until this was fixed the reader, watchdog and hasher woke 5 times a second
/// each and the timekeeper twice. Stopping still ends them at once.
#[test]
fn an_idle_agent_s_enforcement_threads_do_not_wake() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut up = Up::start(&m, &["--no-scan", "--lockdown"]);
    up.wait_level("lockdown", Duration::from_secs(10));
    // Some work first, so that every thread has run.
    let p = Programs::get();
    let hello = p.install("hello", &m.path, "hello");
    up.ok(&["file", "approve", p.path("hello").to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(2), || run(&hello, &[], &[]).ok()).is_some());
    // The watchdog wakes once more, at the deadline (3 s by default) of the
    // last event a worker took, to drop it from its queue.
    std::thread::sleep(Duration::from_millis(3500));

    let idle = [
        "palisade-reader",
        "palisade-watchd",
        "palisade-hasher",
        "palisade-timeke",
        "palisade-names",
        "palisade-worker",
    ];
    let before = thread_switches(up.proc.pid());
    for name in &idle[..4] {
        assert!(before.contains_key(*name), "no thread {name}: {before:?}");
    }
    std::thread::sleep(Duration::from_secs(3));
    let after = thread_switches(up.proc.pid());
    let woke: Vec<_> = after
        .iter()
        .filter(|(name, _)| idle.iter().any(|i| name.starts_with(i)))
        .filter(|(name, n)| before.get(*name).is_some_and(|b| *n > b))
        .map(|(name, n)| format!("{name}: {} times", n - before[name]))
        .collect();
    assert!(woke.is_empty(), "idle threads woke in 3 s: {woke:?}");

    let t = std::time::Instant::now();
    up.proc.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        t.elapsed()
    );
}
