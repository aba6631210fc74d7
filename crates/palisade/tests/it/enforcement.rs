//! Real enforcement through `palisade up`, as root, on a tmpfs the test mounts.
use crate::harness::*;
use crate::require_root;
use std::path::Path;
use std::time::Duration;

/// What a refused load looks like for each path: the exec fails, or the
/// program fails because its library could not be mapped.
fn assert_blocked(r: &Ran, what: &str) {
    assert!(!r.ok(), "{what} ran but should be blocked: {r:?}");
}

#[test]
fn lockdown_blocks_unknown_executables_and_runs_approved_ones() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let hello = p.install("hello", &m.path, "hello");

    let r = run(&hello, &[], &[]);
    assert!(
        r.exec_refused(),
        "unknown executable must be refused at exec: {r:?}"
    );

    up.ok(&["file", "approve", hello.to_str().unwrap()]);
    let took = eventually(Duration::from_secs(2), || run(&hello, &[], &[]).ok());
    assert!(took.is_some(), "approved executable must run");
    assert_eq!(run(&hello, &[], &[]).stdout.trim(), "hello");

    // The same content under another name is the same approved code...
    let copy = m.join("renamed");
    std::fs::copy(&hello, &copy).unwrap();
    assert!(
        run(&copy, &[], &[]).ok(),
        "identity is the content, not the path"
    );
    // ...and other content at an approved path is not.
    std::fs::copy(p.path("hello2"), &copy).unwrap();
    assert!(
        run(&copy, &[], &[]).exec_refused(),
        "new content at an old path is unknown"
    );

    let ev = up
        .wait_event(|e| {
            e["event"]["kind"] == "blocked"
                && e["event"]["operation"] == "execute"
                && e["event"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/hello"))
        })
        .unwrap_or_else(|events| panic!("a blocked event for the first exec: {events:#?}"));
    let process = &ev["event"]["process"];
    assert!(process["pid"].as_u64().unwrap() > 0);
    assert!(
        process["exe"]["sha256"].is_string(),
        "the process context carries the exe hash: {process}"
    );
    assert!(
        process["ancestors"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "parent chain: {process}"
    );
    assert!(
        process["ancestors"][0]["exe"]["sha256"].is_string(),
        "ancestor hashes: {process}"
    );
}

#[test]
fn a_file_modified_after_approval_is_blocked() {
    require_root!();
    let m = TestMount::tmpfs();
    let (up, hello) = Up::lockdown_with_approved_hello(&m);
    // Run it again: now from the kernel-side cache.
    assert!(run(&hello, &[], &[]).ok());

    // Append to it: a modified file is new, unknown code.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&hello)
        .unwrap()
        .write_all(b"\0tampered")
        .unwrap();
    let r = run(&hello, &[], &[]);
    assert!(
        r.exec_refused(),
        "modified after approval must be blocked: {r:?}"
    );

    // Copies of approved code, each opened by a writer that changes it at
    // once: the writer's open is allowed (it reads approved content), and
    // the cache must not keep that allow for the changed file. Many rounds:
    // the writer races the agent's caching of its open.
    let approved = m.join("approved");
    Programs::get().install("hello", &m.path, "approved");
    up.ok(&["file", "approve", approved.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(2), || run(&approved, &[], &[]).ok()).is_some());
    for i in 0..40 {
        let copy = m.join(&format!("copy-{i}"));
        std::fs::copy(&approved, &copy).unwrap();
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&copy)
            .unwrap();
        w.write_all(b"\0changed").unwrap();
        drop(w);
        let r = run(&copy, &[], &[]);
        assert!(
            r.exec_refused(),
            "copy {i}, changed by its writer, must be blocked: {r:?}\nstatus: {}",
            up.cli(&["status", "--json"]).stdout
        );
    }
}

#[test]
fn a_file_modified_through_a_shared_mapping_after_approval_is_blocked() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let hello = p.install("hello", &m.path, "hello");
    up.ok(&["file", "approve", hello.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(2), || run(&hello, &[], &[]).ok()).is_some());
    assert!(run(&hello, &[], &[]).ok(), "cached in the kernel");
    // A write through a shared writable mapping clears no ignore mark.
    let w = run(p.path("mmapwrite"), &[hello.to_str().unwrap()], &[]);
    assert!(w.stdout.contains("modified"), "{w:?}");
    assert!(
        eventually(Duration::from_secs(2), || run(&hello, &[], &[])
            .exec_refused())
        .is_some(),
        "content changed through a mapping must not run as the approved file: {:?}\nstatus: {}\nevents: {:#?}\nagent log:\n{}",
        run(&hello, &[], &[]),
        up.cli(&["status", "--json"]).stdout,
        up.events(),
        up.proc.stderr()
    );
}

#[test]
fn a_ban_made_while_running_takes_effect_within_a_second() {
    require_root!();
    let m = TestMount::tmpfs();
    let (up, hello) = Up::lockdown_with_approved_hello(&m);
    for _ in 0..3 {
        assert!(run(&hello, &[], &[]).ok(), "cached approval");
    }
    let banned_at = std::time::Instant::now();
    up.ok(&["file", "ban", hello.to_str().unwrap()]);
    let cli_took = banned_at.elapsed();
    let scale = time_scale();
    let took = eventually(Duration::from_secs(5), || {
        run(&hello, &[], &[]).exec_refused()
    })
    .map(|_| banned_at.elapsed());
    let took = took.expect("the ban must take effect");
    eprintln!(
        "ban took effect {took:?} after the CLI was started (the CLI itself took {cli_took:?}; time scale {scale})"
    );
    let bound = Duration::from_secs(1) * scale;
    assert!(took < bound, "ban took {took:?}, bound {bound:?}");

    // A ban beats a later approval at a narrower scope.
    up.ok(&[
        "file",
        "approve",
        "--policy",
        "default",
        hello.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(run(&hello, &[], &[]).exec_refused(), "ban beats approval");
    up.ok(&["file", "unapprove", hello.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(2), || run(&hello, &[], &[]).ok()).is_some(),
        "policy approval applies once the ban is lifted"
    );
}

#[test]
fn libraries_are_controlled_however_they_are_loaded() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let uselib = p.install("uselib", &m.path, "uselib");
    let libfoo = p.install("libfoo.so", &m.path, "libfoo.so");
    let dl = p.install("dl", &m.path, "dl");
    let libpre = p.install("libpre.so", &m.path, "libpre.so");
    let hello = p.install("hello", &m.path, "hello");
    up.ok(&[
        "file",
        "approve",
        uselib.to_str().unwrap(),
        dl.to_str().unwrap(),
        hello.to_str().unwrap(),
    ]);
    assert!(eventually(Duration::from_secs(2), || run(&hello, &[], &[]).ok()).is_some());

    // By the dynamic loader at start-up.
    let r = run(&uselib, &[], &[]);
    assert_blocked(&r, "uselib with an unknown libfoo.so");
    assert!(!r.stdout.contains("foo=42"));
    // Through dlopen.
    let r = run(&dl, &[libfoo.to_str().unwrap()], &[]);
    assert!(
        r.stdout.contains("dlopen failed"),
        "dlopen of an unknown library: {r:?}"
    );
    // Through LD_PRELOAD (ld.so ignores a preload it cannot map: its code must not run).
    let r = run(&hello, &[], &[("LD_PRELOAD", libpre.to_str().unwrap())]);
    assert!(
        !r.stdout.contains("PRELOADED"),
        "unknown LD_PRELOAD library ran: {r:?}"
    );
    // Into `palisade` itself: the agent's own program is no exception (it
    // used to be, so that `palisade file approve PATH` could read what it
    // approves; the approvals above now go through the agent instead).
    let r = run(
        BIN,
        &["--version"],
        &[("LD_PRELOAD", libpre.to_str().unwrap())],
    );
    assert!(
        !r.stdout.contains("PRELOADED") && !r.stderr.contains("PRELOADED"),
        "unknown LD_PRELOAD library ran in palisade: {r:?}"
    );
    // The loader run directly on an unknown program.
    let stranger = p.install("hello2", &m.path, "stranger");
    let r = run(
        "/lib64/ld-linux-x86-64.so.2",
        &[stranger.to_str().unwrap()],
        &[],
    );
    assert_blocked(&r, "ld.so on an unknown program");
    assert!(!r.stdout.contains("hello"), "{r:?}");

    // Approve the libraries: every path works.
    up.ok(&[
        "file",
        "approve",
        libfoo.to_str().unwrap(),
        libpre.to_str().unwrap(),
        stranger.to_str().unwrap(),
    ]);
    assert!(
        eventually(Duration::from_secs(2), || run(&uselib, &[], &[])
            .stdout
            .contains("foo=42"))
        .is_some(),
        "approved library loads"
    );
    assert!(run(&dl, &[libfoo.to_str().unwrap()], &[])
        .stdout
        .contains("dlopen ok foo=42"));
    assert!(
        run(&hello, &[], &[("LD_PRELOAD", libpre.to_str().unwrap())])
            .stdout
            .contains("PRELOADED")
    );
    let r = run(
        "/lib64/ld-linux-x86-64.so.2",
        &[stranger.to_str().unwrap()],
        &[],
    );
    assert!(r.ok() && r.stdout.contains("hello, two"), "{r:?}");

    // A library modified after approval is refused again.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&libfoo)
        .unwrap()
        .write_all(b"\0")
        .unwrap();
    assert_blocked(&run(&uselib, &[], &[]), "uselib with a modified libfoo.so");

    up.wait_event(|e| {
        e["event"]["kind"] == "blocked"
            && e["event"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("libfoo.so"))
    })
    .unwrap_or_else(|events| panic!("blocked library load reported: {events:#?}"));
}

#[test]
fn scripts_are_controlled_through_shebang_and_interpreters() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let sh = script(&m.join("s.sh"), "#!/bin/sh\necho from-sh\n");
    let py = script(&m.join("s.py"), "print('from-python')\n");
    let pl = script(&m.join("s.pl"), "print \"from-perl\\n\";\n");
    let noext = script(&m.join("noext"), "print('from-noext')\n");
    // Named through a descriptor of the interpreter's own: the agent must
    // look at that process's descriptor, not its own of that number.
    let via_fd = format!(
        "exec /usr/bin/python3 /proc/self/fd/3 3< {}",
        noext.display()
    );
    let via_pid_fd = format!("exec /usr/bin/python3 /proc/$$/fd/3 3< {}", noext.display());
    // The same through links of the caller's own to /proc/self: resolved
    // by the agent, they lead to its own descriptors.
    std::os::unix::fs::symlink("/proc/self/fd/3", m.join("fdlink")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd", m.join("fddir")).unwrap();
    let via_link = format!(
        "cd {} && exec /usr/bin/python3 fdlink 3< {}",
        m.path.display(),
        noext.display()
    );
    let via_dir_link = format!(
        "exec /usr/bin/python3 {}/3 3< {}",
        m.join("fddir").display(),
        noext.display()
    );
    // A bare name bash does not find in its working directory is looked
    // for in its PATH.
    let on_path = script(&m.join("onpath"), "echo from-path\n");
    let via_path = format!(
        "cd / && PATH={}:$PATH exec /bin/bash onpath",
        m.path.display()
    );
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("/bin/sh", vec!["-c", via_path.as_str()], "from-path"),
        ("/bin/sh", vec!["-c", via_fd.as_str()], "from-noext"),
        ("/bin/sh", vec!["-c", via_pid_fd.as_str()], "from-noext"),
        ("/bin/sh", vec!["-c", via_link.as_str()], "from-noext"),
        ("/bin/sh", vec!["-c", via_dir_link.as_str()], "from-noext"),
        (sh.to_str().unwrap(), vec![], "from-sh"),
        ("/bin/sh", vec![sh.to_str().unwrap()], "from-sh"),
        ("/bin/bash", vec![sh.to_str().unwrap()], "from-sh"),
        ("/bin/dash", vec![sh.to_str().unwrap()], "from-sh"),
        (
            "/usr/bin/python3",
            vec![py.to_str().unwrap()],
            "from-python",
        ),
        (
            "/usr/bin/python3",
            vec![noext.to_str().unwrap()],
            "from-noext",
        ),
        ("/usr/bin/perl", vec![pl.to_str().unwrap()], "from-perl"),
    ];
    for (prog, args, out) in &cases {
        let r = run(prog, args, &[]);
        assert!(
            !r.ok() && !r.stdout.contains(out),
            "unknown script ran: {prog} {args:?}: {r:?}"
        );
    }
    // Sourcing a script from an interpreter is an interpreted load too.
    let r = run("/bin/bash", &["-c", &format!(". {}", sh.display())], &[]);
    assert!(
        !r.stdout.contains("from-sh"),
        "sourced unknown script ran: {r:?}"
    );

    // Data files read by an interpreter are not scripts.
    std::fs::write(m.join("data.txt"), "just data\n").unwrap();
    let r = run("/bin/cat", &[m.join("data.txt").to_str().unwrap()], &[]);
    assert!(r.ok(), "{r:?}");
    let r = run(
        "/usr/bin/python3",
        &[
            "-c",
            &format!(
                "print(open('{}').read().strip())",
                m.join("data.txt").display()
            ),
        ],
        &[],
    );
    assert!(
        r.ok() && r.stdout.contains("just data"),
        "interpreters may read data: {r:?}"
    );
    // A program text longer than a file name can be names no file.
    let long = format!(
        "{}print(open('{}').read().strip())",
        "x = 1; ".repeat(50),
        m.join("data.txt").display()
    );
    let r = run("/usr/bin/python3", &["-c", &long], &[]);
    assert!(
        r.ok() && r.stdout.contains("just data"),
        "a long program may read data: {r:?}"
    );

    up.ok(&[
        "file",
        "approve",
        sh.to_str().unwrap(),
        py.to_str().unwrap(),
        pl.to_str().unwrap(),
        noext.to_str().unwrap(),
        on_path.to_str().unwrap(),
    ]);
    assert!(eventually(Duration::from_secs(2), || run(&sh, &[], &[]).ok()).is_some());
    for (prog, args, out) in &cases {
        let r = run(prog, args, &[]);
        assert!(
            r.ok() && r.stdout.contains(out),
            "approved script must run: {prog} {args:?}: {r:?}"
        );
    }
    up.wait_event(|e| {
        e["event"]["operation"] == "interpret_script" && e["event"]["kind"] == "blocked"
    })
    .unwrap_or_else(|events| panic!("interpreted script blocks are reported: {events:#?}"));
}

#[test]
fn code_executed_from_memory_is_blocked() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    // The helper is on the host (not watched): it runs, but its fexecve of a memfd must fail.
    let r = run(p.path("memexec"), &["/bin/true"], &[]);
    assert!(
        r.stdout.contains("fexecve failed"),
        "memfd execution must be refused: {r:?}"
    );
    // Only the BPF guard sees (and so reports) memory execution; without it
    // the kernel refuses it through vm.memfd_noexec, silently.
    let status = up.status();
    if status["guard_active"] == true {
        assert!(
            eventually(Duration::from_secs(3), || up
                .events()
                .iter()
                .any(|e| e["event"]["operation"] == "execute_memory"))
            .is_some(),
            "memory execution is reported"
        );
    }
    // Back to monitor: memory execution is allowed again.
    up.ok(&[
        "policy",
        "set-level",
        "default",
        "monitor",
        "--disconnected",
        "monitor",
    ]);
    // The sysctl is host-wide: another test's agent enforcing at the same
    // time rightly keeps it raised. Then this agent must at least have
    // released its own hold.
    let mine = format!("/run/palisade/memfd-noexec/pid-{}", up.proc.pid());
    // (10 s: the level reaches the agent over its stream, and the other
    // tests' agents take and release their holds meanwhile; 3 s was once
    // too short on a loaded CI run.)
    assert!(
        eventually(Duration::from_secs(10), || {
            run(p.path("memexec"), &["/bin/true"], &[]).ok()
                || (other_agents_hold_memfd(up.proc.pid()) && !Path::new(&mine).exists())
        })
        .is_some(),
        "memfd execution allowed once not enforcing (own hold still there: {}; holds: {:?})",
        Path::new(&mine).exists(),
        std::fs::read_dir("/run/palisade/memfd-noexec")
            .map(|d| d
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect::<Vec<_>>())
            .unwrap_or_default()
    );
}

#[test]
fn monitor_blocks_nothing_and_reports_would_blocks() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--no-scan"]);
    let p = Programs::get();
    let hello = p.install("hello", &m.path, "hello");
    let uselib = p.install("uselib", &m.path, "uselib");
    p.install("libfoo.so", &m.path, "libfoo.so");
    let sh = script(&m.join("s.sh"), "#!/bin/sh\necho from-sh\n");
    assert!(run(&hello, &[], &[]).ok());
    assert!(run(&uselib, &[], &[]).stdout.contains("foo=42"));
    assert!(run(&sh, &[], &[]).ok());
    assert!(run("/usr/bin/python3", &["-c", "print(1)"], &[]).ok());
    let found = eventually(Duration::from_secs(5), || {
        let ev = up.events();
        let would = |suffix: &str| {
            ev.iter().any(|e| {
                e["event"]["kind"] == "would_block"
                    && e["event"]["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(suffix))
            })
        };
        would("/hello") && would("/libfoo.so") && would("/s.sh")
    });
    assert!(found.is_some(), "would-blocks reported: {:#?}", up.events());
    assert!(
        !up.events().iter().any(|e| e["event"]["kind"] == "blocked"),
        "monitor blocks nothing"
    );

    // Switching the level takes effect at once.
    up.ok(&["policy", "set-level", "default", "lockdown"]);
    assert!(eventually(Duration::from_secs(2), || run(&hello, &[], &[])
        .exec_refused())
    .is_some());
    let st = up.cli(&["status"]);
    assert!(
        st.ok(),
        "status exits 0 when enforcing at the stated level: {st:?}"
    );
    assert!(st.stdout.contains("lockdown"), "{st:?}");
}

#[test]
fn initialization_scan_approves_what_is_installed() {
    require_root!();
    let m = TestMount::tmpfs();
    let p = Programs::get();
    let hello = p.install("hello", &m.path, "hello");
    let uselib = p.install("uselib", &m.path, "uselib");
    p.install("libfoo.so", &m.path, "libfoo.so");
    let sh = script(&m.join("tool.sh"), "#!/bin/sh\necho tool\n");
    std::fs::write(m.join("README"), "not code").unwrap();
    // With a scan, lockdown comes up with what was there approved.
    let up = Up::start(&m, &["--lockdown"]);
    assert!(run(&hello, &[], &[]).ok());
    assert!(run(&uselib, &[], &[]).stdout.contains("foo=42"));
    assert!(run(&sh, &[], &[]).ok());
    // Whatever appears afterwards is unknown.
    let late = p.install("hello2", &m.path, "late");
    assert!(run(&late, &[], &[]).exec_refused());
    let show = up.ok(&["file", "show", hello.to_str().unwrap()]);
    assert!(show.contains("approved") && show.contains("scan"), "{show}");
    let approvals = eventually(Duration::from_secs(5), || {
        up.events()
            .iter()
            .filter(|e| e["event"]["kind"] == "approved" && e["event"]["operation"] == "inventory")
            .count()
            >= 4
    });
    assert!(
        approvals.is_some(),
        "each local approval is an event: {:#?}",
        up.events()
    );
}

#[test]
fn approved_code_already_seen_runs_first_time_without_a_round_trip() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let stats = || up.status()["stats"].clone();
    // Written while the agent runs: hashed when closed.
    let hello = Programs::get().install("hello", &m.path, "fresh");
    assert!(
        eventually(Duration::from_secs(5), || stats()["hashed_on_write"]
            .as_u64()
            >= Some(1))
        .is_some(),
        "hashed on write: {}",
        stats()
    );
    // Approved by hash only: the agent is told the hash, and finds the file itself.
    let sha = sha256_hex(&Programs::get().path("hello"));
    up.ok(&["file", "approve", &sha]);
    // Generous: in CI's emulated guest the push, look-up and re-hash
    // sometimes took longer than 5 s (cause not established).
    assert!(
        eventually(Duration::from_secs(20), || stats()["prewarmed"].as_u64()
            >= Some(1))
        .is_some(),
        "put in the kernel-side cache ahead of its first run: {}",
        stats()
    );
    let before = stats()["events"].as_u64().unwrap();
    let r = run(&hello, &[], &[]);
    assert!(r.ok(), "{r:?}");
    let after = stats()["events"].as_u64().unwrap();
    assert_eq!(
        after, before,
        "the first run was answered by the kernel, not the agent"
    );
}

/// A first exec that the agent answers (a file it never saw, approved by
/// hash) costs the blocked process one round trip. The kernel raises two
/// permission events for an exec, `OPEN_EXEC_PERM` and then, once that is
/// answered, `OPEN_PERM`; the agent's ignore mark, placed before its
/// answer, keeps the second in the kernel. (Placed after the answer, as it
/// once was, the mark lost that race now and then, and the process waited
/// for a second answer.)
#[test]
fn a_first_exec_the_agent_answers_takes_one_round_trip() {
    require_root!();
    let m = TestMount::tmpfs();
    // Written before the agent starts, which runs without a scan: cold.
    let copies: Vec<_> = (0..10)
        .map(|i| Programs::get().install("hello", &m.path, &format!("cold-{i}")))
        .collect();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let status = || up.status();
    up.ok(&[
        "file",
        "approve",
        &sha256_hex(&Programs::get().path("hello")),
    ]);
    assert!(
        eventually(Duration::from_secs(20), || status()["cached_approvals"]
            .as_u64()
            >= Some(1))
        .is_some(),
        "the approval reached the agent: {}",
        status()
    );
    for copy in &copies {
        let before = status()["stats"]["events"].as_u64().unwrap();
        let r = run(copy, &[], &[]);
        assert!(r.ok(), "{} ran: {r:?}", copy.display());
        let after = status()["stats"]["events"].as_u64().unwrap();
        assert_eq!(
            after - before,
            1,
            "permission events that reached the agent for the first run of {}: {}",
            copy.display(),
            status()["stats"]
        );
    }
}

/// Whether a live agent other than `pid` wants `vm.memfd_noexec` raised.
fn other_agents_hold_memfd(pid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/run/palisade/memfd-noexec") else {
        return false;
    };
    dir.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let Some(other) = name.to_str().and_then(|n| n.strip_prefix("pid-")) else {
            return false;
        };
        other != pid.to_string() && Path::new(&format!("/proc/{other}")).exists()
    })
}

#[test]
fn every_answer_is_timed_and_status_reports_the_times() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let status = || up.status();
    // A small file's first exec is hashed and answered by the reader; one
    // too large for the reader to read goes to a worker.
    let p = Programs::get();
    let small = p.install("hello", &m.path, "small");
    // (Written in one go: in lockdown an open of an unapproved ELF file is
    // refused, so it cannot be appended to once it is there.)
    let mut bytes = std::fs::read(p.path("hello")).unwrap();
    bytes.resize(bytes.len() + (1 << 20), 0x5a);
    let large = script(&m.join("large"), "");
    std::fs::write(&large, bytes).unwrap();
    up.ok(&["file", "approve", small.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(2), || run(&small, &[], &[]).ok()).is_some());
    assert!(run(&large, &[], &[]).exec_refused(), "not approved");

    // Every event is answered once and timed once, by one kind of decider.
    let mut last = serde_json::Value::Null;
    let settled = eventually(Duration::from_secs(5), || {
        last = status();
        let count = |who: &str| last["latency"][who]["count"].as_u64().unwrap_or(0);
        let answered = count("reader") + count("workers");
        answered == last["stats"]["events"].as_u64().unwrap() && count("workers") >= 1
    });
    assert!(settled.is_some(), "one time per event: {last:#}");
    for who in ["reader", "workers"] {
        let h = &last["latency"][who];
        let count = h["count"].as_u64().unwrap();
        assert!(count >= 1, "{who}: {h}");
        let in_buckets: u64 = h["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1].as_u64().unwrap())
            .sum();
        assert_eq!(in_buckets, count, "{who}: {h}");
        let max = h["max_ns"].as_u64().unwrap();
        assert!(max > 0 && max < 10_000_000_000, "{who}: {h}");
        assert!(h["sum_ns"].as_u64().unwrap() >= max, "{who}: {h}");
    }
    let text = up.ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("answer time  reader ") && l.contains("median ≤ ")),
        "{text}"
    );
}

/// A binary too large for one read is hashed in place through a mapping
/// (`palisade_kernel::mapped`): the digest must be the file's SHA-256 as
/// computed elsewhere, to the last byte.
#[test]
fn a_large_binary_runs_by_its_sha256_and_a_one_byte_change_does_not() {
    use sha2::Digest;
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let mut bytes = std::fs::read(Programs::get().path("hello")).unwrap();
    bytes.resize(bytes.len() + (24 << 20), 0x5a);
    // Written in one go each (see above).
    let large = script(&m.join("large"), "");
    std::fs::write(&large, &bytes).unwrap();
    *bytes.last_mut().unwrap() = 0x5b;
    let changed = script(&m.join("changed"), "");
    std::fs::write(&changed, &bytes).unwrap();
    *bytes.last_mut().unwrap() = 0x5a;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    up.ok(&["file", "approve", &sha]);
    assert!(
        eventually(Duration::from_secs(5), || run(&large, &[], &[]).ok()).is_some(),
        "the approved 24 MiB binary does not run"
    );
    assert!(
        run(&changed, &[], &[]).exec_refused(),
        "one byte changed at the end"
    );
}

/// A large binary truncated while the agent hashes it (through a mapping,
/// where a page past the new end raises SIGBUS) costs the agent nothing:
/// it answers, and goes on enforcing.
#[test]
fn a_binary_truncated_while_the_agent_hashes_it_leaves_the_agent_running() {
    require_root!();
    let m = TestMount::tmpfs();
    // Written before the agent starts (and no scan): it meets them at their
    // exec, and hashes them then.
    let p = Programs::get();
    let mut shas = Vec::new();
    let bigs: Vec<_> = (0..2u8)
        .map(|round| {
            let mut bytes = std::fs::read(p.path("hello")).unwrap();
            bytes.resize(bytes.len() + (64 << 20), round);
            let big = script(&m.join(&format!("big-{round}")), "");
            std::fs::write(&big, &bytes).unwrap();
            // Read back before the agent starts: nothing refuses it yet.
            shas.push(sha256_hex(&big));
            big
        })
        .collect();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let small = p.install("hello", &m.path, "small");
    up.ok(&["file", "approve", small.to_str().unwrap()]);
    for sha in &shas {
        up.ok(&["file", "approve", sha]);
    }
    assert!(eventually(Duration::from_secs(5), || run(&small, &[], &[]).ok()).is_some());
    for (big, delay_ms) in bigs.iter().zip([2u64, 10]) {
        let exec = {
            let big = big.clone();
            std::thread::spawn(move || run(&big, &[], &[]))
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        // By path: no open, so no permission event of its own.
        let c = std::ffi::CString::new(big.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::truncate(c.as_ptr(), 0) }, 0);
        // Refused, or failing on an empty file: either way it ends.
        let _ = exec.join().unwrap();
        // The agent is still there and still decides.
        up.ok(&["status"]);
        assert!(run(&small, &[], &[]).ok(), "{}", big.display());
        assert!(!run(big, &[], &[]).ok(), "{}", big.display());
    }
}

/// Unmounts (lazily) what a test mounted inside its mount, even on failure.
struct Submount(std::path::PathBuf);

impl Drop for Submount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l", self.0.to_str().unwrap()])
            .status();
    }
}

/// A filesystem mounted after the agent started, inside a watched
/// directory, is watched too: it does not carve a hole out of the scope.
/// (Mounted at once with the program on it: the agent has no time to see
/// the mount before the exec but what following the mount table gives it.)
#[test]
fn a_filesystem_mounted_later_inside_the_scope_is_enforced() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let sub = m.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64m",
            "palisade-test",
            sub.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on {}", sub.display());
    let _unmount = Submount(sub.clone());
    let hello = p.install("hello", &sub, "hello");
    let refused = eventually(Duration::from_secs(3), || {
        run(&hello, &[], &[]).exec_refused()
    });
    assert!(
        refused.is_some(),
        "unknown code on a filesystem mounted later ran\n{}",
        up.proc.stderr()
    );
    let status = up.ok(&["status"]);
    assert!(
        status.contains(sub.to_str().unwrap()),
        "the new filesystem is listed as watched: {status}"
    );
    // Approved code runs there as anywhere.
    up.ok(&["file", "approve", hello.to_str().unwrap()]);
    let ran = eventually(Duration::from_secs(3), || run(&hello, &[], &[]).ok());
    assert!(ran.is_some(), "approved code on the new filesystem runs");
}

/// A filesystem mounted inside a user namespace (any user may make one) is
/// in no mount table the agent reads. Where the BPF guard runs, code on it
/// is refused while enforcing; without the guard nothing can see it (the
/// README's limits say so), and this test only shows what happens.
#[test]
fn code_on_a_user_namespace_filesystem_is_refused_by_the_guard() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let outside = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs none {d} && cp {hello} {d}/h && {d}/h",
        d = outside.path().display(),
        hello = p.path("hello").display()
    );
    let r = run("unshare", &["-Urm", "sh", "-c", &script], &[]);
    let status = up.status();
    if status["guard_active"] != true {
        eprintln!("without the guard, code on a user namespace's tmpfs: {r:?}");
        return;
    }
    assert!(
        !r.stdout.contains("hello"),
        "code on a user namespace's tmpfs ran: {r:?}"
    );
    up.wait_event(|e| {
        e["event"]["kind"] == "blocked"
            && e["event"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("user namespace"))
    })
    .unwrap_or_else(|events| panic!("the refusal is reported: {events:#?}"));
}

/// A FUSE filesystem (bindfs over a directory of this test), its daemon
/// in the foreground; on drop the daemon is let go on, the mount detached
/// and the daemon ended (even on panic).
struct BindFs {
    mount: std::path::PathBuf,
    daemon: std::process::Child,
}

impl BindFs {
    /// `src` shown at `mount` (an empty directory), or `None` without
    /// `/dev/fuse` (the QEMU guest of `vm-test.sh`, which loads no fuse
    /// module). Where FUSE exists, bindfs must too (`scripts/test.sh`
    /// installs it).
    fn mount(src: &Path, mount: &Path) -> Option<BindFs> {
        if !Path::new("/dev/fuse").exists() {
            return None;
        }
        let daemon = std::process::Command::new("bindfs")
            .arg("-f")
            .args([src, mount])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("bindfs (scripts/deps.sh bindfs)");
        let fs = BindFs {
            mount: mount.to_owned(),
            daemon,
        };
        let shown = mount.join("sh");
        assert!(
            eventually(Duration::from_secs(10), || shown.exists()).is_some(),
            "bindfs did not mount"
        );
        Some(fs)
    }

    fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([sig, &self.daemon.id().to_string()])
            .status();
    }
}

impl Drop for BindFs {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = std::process::Command::new("umount")
            .args(["-l", self.mount.to_str().unwrap()])
            .status();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// Programs run from a FUSE filesystem whose daemon then stops answering
/// (a user's own FUSE mount can do this at will) do not stall the agent:
/// it asks FUSE nothing, neither to open their executables (to hash them
/// for the process context, or to tell whether they are interpreters) nor
/// to find them by path. More such programs than the agent has workers
/// read a file on the watched mount (allowed at once) and run an unknown
/// program there (refused at once), and the agent goes on answering.
/// (Before, each worker that opened such an executable waited on the
/// daemon for ever, and the events were answered by the deadline, in
/// lockdown by a refusal.)
#[test]
fn programs_on_a_stalled_fuse_filesystem_do_not_stall_the_agent() {
    require_root!();
    let m = TestMount::tmpfs();
    let dir = tempfile::tempdir().unwrap();
    let (src, shown) = (dir.path().join("src"), dir.path().join("fuse"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&shown).unwrap();
    std::fs::copy("/bin/dash", src.join("sh")).unwrap();
    let Some(fuse) = BindFs::mount(&src, &shown) else {
        eprintln!("skipped: no /dev/fuse on this machine");
        return;
    };
    let data = m.join("data");
    std::fs::write(&data, "hello\n").unwrap();
    let unknown = Programs::get().install("hello2", &m.path, "unknown");
    let (up, hello) = Up::lockdown_with_approved_hello(&m);
    let go = dir.path().join("go");
    let n = 8;
    let children: Vec<_> = (0..n)
        .map(|i| {
            let out = std::fs::File::create(dir.path().join(format!("out-{i}"))).unwrap();
            std::process::Command::new(shown.join("sh"))
                .arg("-c")
                .arg(
                    "while [ ! -e \"$1\" ]; do sleep 0.02; done; \
                     if read x < \"$2\"; then echo \"read $x\"; else echo 'read refused'; fi; \
                     \"$3\"; echo \"exec $?\"",
                )
                .args(["sh", go.to_str().unwrap(), data.to_str().unwrap()])
                .arg(&unknown)
                .stdout(out)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Running from FUSE, and polling: their pages are in memory.
    std::thread::sleep(Duration::from_millis(500));
    fuse.signal("-STOP");
    let before = up.status()["stats"].clone();
    let t = std::time::Instant::now();
    std::fs::write(&go, "").unwrap();
    let limit = Duration::from_secs(2 * u64::from(time_scale()));
    let mut children = children;
    let done = eventually(limit, || {
        children
            .iter_mut()
            .all(|c| c.try_wait().ok().flatten().is_some())
    });
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        done.is_some(),
        "the programs on the stalled FUSE filesystem were still waiting after {:?}",
        t.elapsed()
    );
    for i in 0..n {
        let out = std::fs::read_to_string(dir.path().join(format!("out-{i}"))).unwrap();
        assert_eq!(out, "read hello\nexec 126\n", "program {i}");
    }
    let after = up.status()["stats"].clone();
    assert_eq!(
        after["timeouts"], before["timeouts"],
        "no event waited for the deadline: {after}"
    );
    // And the agent goes on deciding.
    assert!(run(&hello, &[], &[]).ok());
    assert!(run(&unknown, &[], &[]).exec_refused());
    drop(fuse);
}

/// Code larger than the agent hashes (8 GiB; here a sparse file, which
/// costs whoever writes it nothing) is refused at once as unknown, with an
/// event that says why, and is never hashed at its exec. (Before, the agent hashed the holes, 8 GiB in about 4.5 s
/// here and a terabyte in ten minutes, on a worker per file: the exec
/// waited for the deadline, and a few such files held every worker.)
#[test]
fn code_larger_than_the_agent_hashes_is_refused_at_once_unhashed() {
    require_root!();
    let m = TestMount::tmpfs();
    // Written before the agent starts: in lockdown, without the guard, an
    // unknown ELF file on the mount cannot even be opened for writing.
    let huge = Programs::get().install("hello2", &m.path, "huge");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len((8 << 30) + 4096)
        .unwrap();
    let (up, hello) = Up::lockdown_with_approved_hello(&m);
    let before = up.status()["stats"].clone();
    let t = std::time::Instant::now();
    let r = run(&huge, &[], &[]);
    let took = t.elapsed();
    assert!(r.exec_refused(), "{r:?}");
    assert!(
        took < Duration::from_secs(u64::from(time_scale())),
        "refused at once, not at the deadline: {took:?}"
    );
    let after = up.status()["stats"].clone();
    assert_eq!(after["timeouts"], before["timeouts"], "{after}");
    assert_eq!(after["hashed"], before["hashed"], "not hashed: {after}");
    let huge_path = huge.to_str().unwrap().to_owned();
    let e = up
        .wait_event(|e| e["event"]["kind"] == "blocked" && e["event"]["path"] == huge_path)
        .unwrap_or_else(|all| panic!("no blocked event for {huge_path}: {all:#?}"));
    assert!(e["event"]["sha256"].is_null(), "{e}");
    let reason = e["event"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("larger than the 8 GiB"), "{reason}");
    assert!(run(&hello, &[], &[]).ok(), "approved code unaffected");
}
