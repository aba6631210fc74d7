//! The approval model end to end, as root, on tmpfs mounts the tests make:
//! publishers and package-manager updaters (real dpkg), trusted directories
//! and users, reputation, custom execute and write rules with conditions,
//! event rules, the prompt flow, folder protection.
use crate::harness::*;
use crate::require_root;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn sh(cmd: &str) -> Ran {
    run("/bin/sh", &["-c", cmd], &[])
}

fn must(cmd: &str) -> String {
    let r = sh(cmd);
    assert!(r.ok(), "{cmd}: {r:?}");
    r.stdout
}

/// A root directory with an empty dpkg database and apt lists, inside `dir`.
fn fake_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/apt/lists",
        "usr/bin",
        "var/log",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    root
}

fn arch() -> String {
    must("dpkg --print-architecture").trim().to_owned()
}

/// Build `name_version.deb` holding `/usr/bin/<name>` (a copy of `program`).
fn build_deb(work: &Path, name: &str, version: &str, program: &Path) -> PathBuf {
    let tree = work.join(format!("{name}-{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::copy(program, tree.join("usr/bin").join(name)).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {}\nMaintainer: Palisade Tests <t@example.org>\nDescription: test package\n",
            arch()
        ),
    )
    .unwrap();
    let deb = work.join(format!("{name}_{version}.deb"));
    must(&format!(
        "dpkg-deb --root-owner-group --build {} {} >/dev/null",
        tree.display(),
        deb.display()
    ));
    deb
}

fn dpkg_install(root: &Path, deb: &Path) {
    must(&format!(
        "dpkg --root={r} --log={r}/var/log/dpkg.log --force-not-root --force-bad-path --force-script-chrootless -i {d} >/dev/null",
        r = root.display(),
        d = deb.display()
    ));
}

/// A signed-looking apt list (apt keeps only lists whose signature verified)
/// whose repository `origin` provides `name` at `version`.
fn apt_list(root: &Path, origin: &str, name: &str, version: &str) {
    let lists = root.join("var/lib/apt/lists");
    std::fs::write(
        lists.join("repo.example.org_debian_dists_stable_InRelease"),
        format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: {origin}\nLabel: {origin}\nSuite: stable\nCodename: stable\n\
             -----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"
        ),
    )
    .unwrap();
    std::fs::write(
        lists.join(format!(
            "repo.example.org_debian_dists_stable_main_binary-{}_Packages",
            arch()
        )),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {}\nFilename: pool/{name}.deb\n\n",
            arch()
        ),
    )
    .unwrap();
}

#[test]
fn packages_from_an_approved_publisher_run_and_tampered_copies_do_not() {
    require_root!();
    let m = TestMount::tmpfs();
    let root = fake_root(&m.path);
    let up = Up::start(
        &m,
        &[
            "--lockdown",
            "--no-scan",
            "--package-root",
            root.to_str().unwrap(),
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let p = Programs::get();

    // A package its repository (origin PalisadeTest) provides, installed with dpkg -i.
    apt_list(&root, "PalisadeTest", "palisade-hello", "1.0");
    let deb = build_deb(work.path(), "palisade-hello", "1.0", &p.path("hello"));
    up.ok(&["publisher", "approve", "PalisadeTest"]);
    dpkg_install(&root, &deb);
    let installed = root.join("usr/bin/palisade-hello");
    // The publisher's approval is pushed to the agent (within 1 s); `dpkg
    // -i` may finish first.
    let mut last = None;
    eventually(Duration::from_secs(3), || {
        let r = run(&installed, &[], &[]);
        let ok = r.ok();
        last = Some(r);
        ok
    });
    let r = last.expect("ran at least once");
    assert!(
        r.ok() && r.stdout.contains("hello"),
        "a verified file of an approved publisher runs: {r:?}\n{}",
        up.proc.stderr()
    );
    // The agent sends the package fact it established to the service.
    let hello = sha256_hex(&p.path("hello"));
    assert!(
        eventually(Duration::from_secs(3), || {
            let show = up.ok(&["file", "show", &hello]);
            show.contains("PalisadeTest")
        })
        .is_some(),
        "file show names the publisher: {}",
        up.ok(&["file", "show", &hello])
    );

    // A local package no repository provides: not without the updater rule.
    let local = build_deb(work.path(), "palisade-local", "2.0", &p.path("hello2"));
    dpkg_install(&root, &local);
    let local_bin = root.join("usr/bin/palisade-local");
    assert!(
        run(&local_bin, &[], &[]).exec_refused(),
        "unpublished package, no updater rule"
    );
    up.ok(&["bundle", "enable", "debian-packages"]);
    assert!(
        eventually(Duration::from_secs(3), || run(&local_bin, &[], &[]).ok()).is_some(),
        "installed by dpkg (package-manager updater): runs"
    );

    // Tampered after installation: the content no longer matches the package.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&installed)
        .unwrap()
        .write_all(b"\0x")
        .unwrap();
    assert!(
        run(&installed, &[], &[]).exec_refused(),
        "tampered package file is blocked"
    );
    // Reinstalled: verified again. Then a banned publisher beats the updater.
    dpkg_install(&root, &deb);
    assert!(
        eventually(Duration::from_secs(3), || run(&installed, &[], &[]).ok()).is_some(),
        "reinstalled: runs"
    );
    up.ok(&["publisher", "ban", "PalisadeTest"]);
    assert!(
        eventually(Duration::from_secs(3), || run(&installed, &[], &[])
            .exec_refused())
        .is_some(),
        "banned publisher, even with the package-manager updater\n{}",
        up.proc.stderr()
    );
}

#[test]
fn trusted_directories_and_users_approve_what_they_receive() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let dist = m.join("dist");
    let drop = m.join("drop");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::create_dir_all(&drop).unwrap();
    must(&format!("chmod 1777 {}", drop.display()));

    // Trusted directory: files placed there are approved (on this computer,
    // not named as the directory's trusted server).
    up.ok(&["rule", "add", "trusted-dir", dist.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    let tool = p.install("hello", &dist, "tool");
    assert!(
        eventually(Duration::from_secs(3), || run(&tool, &[], &[]).ok()).is_some(),
        "placed in a trusted directory: runs\n{}",
        up.proc.stderr()
    );
    // Approved by hash: a copy elsewhere runs too.
    let copy = m.join("copy-of-tool");
    must(&format!(
        "cp {} {}",
        p.path("hello").display(),
        copy.display()
    ));
    assert!(eventually(Duration::from_secs(3), || run(&copy, &[], &[]).ok()).is_some());
    let show = up.ok(&["file", "show", &sha256_hex(&p.path("hello"))]);
    assert!(show.contains("trusted-directory"), "{show}");

    // Trusted user: code written by `daemon` is approved on this computer;
    // by `bin` it is not.
    up.ok(&["rule", "add", "trusted-user", "daemon"]);
    std::thread::sleep(Duration::from_millis(300));
    let by_daemon = drop.join("by-daemon");
    let by_bin = drop.join("by-bin");
    must(&format!(
        "setpriv --reuid=daemon --regid=daemon --clear-groups sh -c 'cat {src} > {dst} && chmod 755 {dst}'",
        src = p.path("hello2").display(),
        dst = by_daemon.display()
    ));
    must(&format!(
        "setpriv --reuid=bin --regid=bin --clear-groups sh -c 'cat {src} > {dst}; chmod 755 {dst}'",
        src = p.path("uselib").display(),
        dst = by_bin.display()
    ));
    assert!(
        eventually(Duration::from_secs(3), || run(&by_daemon, &[], &[]).ok()).is_some(),
        "written by a trusted user: runs\n{}",
        up.proc.stderr()
    );
    assert!(
        run(&by_bin, &[], &[]).exec_refused(),
        "written by another user: blocked"
    );
    up.wait_event(|e| {
        e["event"]["kind"] == "approved"
            && e["event"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("trusted user"))
    })
    .unwrap_or_else(|events| panic!("the approval is an event: {events:#?}"));
}

/// In lockdown, with `daemon` a trusted user: the agent, and a directory
/// anyone may write to on the watched mount.
fn daemon_trusted(m: &TestMount) -> (Up, PathBuf) {
    let up = Up::start(m, &["--lockdown", "--no-scan"]);
    let drop = m.join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    must(&format!("chmod 1777 {}", drop.display()));
    up.ok(&["rule", "add", "trusted-user", "daemon"]);
    std::thread::sleep(Duration::from_millis(300));
    (up, drop)
}

/// A trusted user's write approves what that user wrote, once: a file the
/// trusted user once wrote (not code then), shared with others, does not
/// approve the script another user later writes into it.
#[test]
fn a_trusted_writers_old_open_approves_nothing_written_later() {
    require_root!();
    let m = TestMount::tmpfs();
    let (_up, drop) = daemon_trusted(&m);
    let shared = drop.join("shared");
    must(&format!(
        "setpriv --reuid=daemon --regid=daemon --clear-groups sh -c 'echo notes > {f} && chmod 777 {f}'",
        f = shared.display()
    ));
    must(&format!(
        "setpriv --reuid=bin --regid=bin --clear-groups sh -c 'printf \"#!/bin/sh\\necho pwned\\n\" > {f}'",
        f = shared.display()
    ));
    // Give the agent time to hash the close (as it would approve it).
    std::thread::sleep(Duration::from_millis(500));
    let r = run(&shared, &[], &[]);
    assert!(
        !r.stdout.contains("pwned"),
        "another user's script approved as the trusted user's: {r:?}"
    );
}

/// A trusted user's close approves only its own work: another user who
/// had the file open for writing first, and wrote into it while the trusted
/// user did, gets nothing approved, whether it still holds the file when
/// the trusted user closes it or closes it right after.
#[test]
fn a_trusted_writers_close_approves_nothing_another_writer_shares() {
    require_root!();
    let m = TestMount::tmpfs();
    let (_up, drop) = daemon_trusted(&m);
    // `then`: what the other writer does once its script is written: hold
    // the file a while, or close it as soon as the trusted user is done.
    for (case, tag, then) in [
        ("held", "h", "sleep 1.5"),
        ("closed right after", "c", "while [ ! -e DONE ]; do :; done"),
    ] {
        let shared = drop.join(format!("shared-{tag}"));
        let mark = |what: &str| drop.join(format!("{what}-{tag}")).display().to_string();
        must(&format!(
            "setpriv --reuid=daemon --regid=daemon --clear-groups sh -c ': > {f} && chmod 777 {f}'",
            f = shared.display()
        ));
        // The other writer opens first (no trusted open to cancel yet),
        // writes its script over the trusted user's once that is written,
        // then holds the file or closes it.
        let mut other = std::process::Command::new("setpriv")
            .args(["--reuid=bin", "--regid=bin", "--clear-groups", "sh", "-c"])
            .arg(format!(
                "exec 3<>{f}; touch {ready}; while [ ! -e {written} ]; do sleep 0.01; done; \
                 printf '#!/bin/sh\\necho pwned\\n' >&3; touch {over}; {then}",
                f = shared.display(),
                ready = mark("ready"),
                written = mark("written"),
                over = mark("over"),
                then = then.replace("DONE", &mark("done")),
            ))
            .spawn()
            .unwrap();
        let ready = eventually(Duration::from_secs(5), || {
            Path::new(&mark("ready")).exists()
        });
        assert!(
            ready.is_some(),
            "{case}: the other writer never opened the file"
        );
        must(&format!(
            "setpriv --reuid=daemon --regid=daemon --clear-groups sh -c \
             'exec 4<>{f}; printf \"#!/bin/sh\\necho fine\\n\" >&4; touch {written}; \
              while [ ! -e {over} ]; do sleep 0.01; done; touch {done}'",
            f = shared.display(),
            written = mark("written"),
            over = mark("over"),
            done = mark("done"),
        ));
        std::thread::sleep(Duration::from_millis(400));
        let r = run(&shared, &[], &[]);
        assert!(
            !r.stdout.contains("pwned"),
            "{case}: another writer's script approved as the trusted user's: {r:?}"
        );
        assert!(
            other.wait().unwrap().success(),
            "{case}: the other writer failed"
        );
        std::thread::sleep(Duration::from_millis(400));
        let r = run(&shared, &[], &[]);
        assert!(
            !r.stdout.contains("pwned"),
            "{case}: approved once the other writer closed it: {r:?}"
        );
    }
}

/// An updater is trusted as the system's: what root runs it to write is
/// approved; the same program run by another user approves nothing.
#[test]
fn an_updater_run_by_a_user_approves_nothing() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let drop = m.join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    must(&format!("chmod 1777 {}", drop.display()));
    up.ok(&["rule", "add", "updater", "copier", "--program", "cp"]);
    std::thread::sleep(Duration::from_millis(300));
    let by_root = drop.join("by-root");
    let by_bin = drop.join("by-bin");
    must(&format!(
        "cp {} {}",
        p.path("hello2").display(),
        by_root.display()
    ));
    must(&format!(
        "setpriv --reuid=bin --regid=bin --clear-groups cp {} {}",
        p.path("hello").display(),
        by_bin.display()
    ));
    assert!(
        eventually(Duration::from_secs(3), || run(&by_root, &[], &[]).ok()).is_some(),
        "written by the updater run by root: runs\n{}",
        up.proc.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run(&by_bin, &[], &[]).exec_refused(),
        "written by the updater run by another user: blocked"
    );
}

/// Run `script` with `sh` in a private mount namespace of its own: its
/// mounts are seen by it alone.
fn in_own_mount_namespace(script: &str) -> Ran {
    run(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", script],
        &[],
    )
}

/// The kernel names a file as the acting process's mount namespace sees it:
/// a bind mount in a namespace of one's own (any user can make one) puts an
/// unknown program at a trusted directory's path. The agent finds the file
/// is not there in its own namespace, and the directory approves nothing.
#[test]
fn a_trusted_path_faked_in_another_mount_namespace_approves_nothing() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let dist = m.join("dist");
    let elsewhere = m.join("elsewhere");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    up.ok(&["rule", "add", "trusted-dir", dist.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    let evil = p.install("hello2", &elsewhere, "evil");
    let faked = dist.join("evil");
    // A private mount namespace: the bind mount is seen by this shell only.
    let script = format!(
        "mount --bind {} {} && exec {}",
        elsewhere.display(),
        dist.display(),
        faked.display()
    );
    let r = in_own_mount_namespace(&script);
    assert!(
        !r.stdout.contains("hello, two"),
        "unknown code ran as if placed in the trusted directory: {r:?}"
    );
    assert!(!faked.exists(), "the bind mount stayed in its namespace");
    assert!(
        run(&evil, &[], &[]).exec_refused(),
        "and it is still unknown"
    );
    // The directory itself still approves what is really placed there.
    let real = p.install("hello2", &dist, "real");
    assert!(
        eventually(Duration::from_secs(3), || run(&real, &[], &[]).ok()).is_some(),
        "placed in the trusted directory: runs\n{}",
        up.proc.stderr()
    );
}

/// The same with a rule about the process: an approved program bind-mounted
/// at the path a rule trusts, in a namespace of one's own, is not that
/// program for the rule.
#[test]
fn a_process_path_faked_in_another_mount_namespace_grants_nothing() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    for d in ["tools", "elsewhere", "free"] {
        std::fs::create_dir_all(m.join(d)).unwrap();
    }
    let runner = m.join("elsewhere").join("runner");
    std::fs::copy("/bin/sh", &runner).unwrap();
    up.ok(&["file", "approve", runner.to_str().unwrap()]);
    let trusted = m.join("tools").join("runner");
    up.ok(&[
        "rule",
        "add",
        "custom",
        "--process-path",
        trusted.to_str().unwrap(),
        "--path",
        &format!("{}/**", m.join("free").display()),
        "--action",
        "allow",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let evil = p.install("hello2", &m.join("free"), "evil");
    let script = format!(
        "mount --bind {} {} && exec {} -c 'exec {}'",
        m.join("elsewhere").display(),
        m.join("tools").display(),
        trusted.display(),
        evil.display()
    );
    let r = in_own_mount_namespace(&script);
    assert!(
        !r.stdout.contains("hello, two"),
        "unknown code ran under a faked trusted process path: {r:?}"
    );
    // The rule holds for the program really at that path.
    std::fs::copy("/bin/sh", &trusted).unwrap();
    up.ok(&["file", "approve", trusted.to_str().unwrap()]);
    let r = eventually(Duration::from_secs(3), || {
        run(&trusted, &["-c", &format!("exec {}", evil.display())], &[])
            .stdout
            .contains("hello, two")
    });
    assert!(
        r.is_some(),
        "started by the real trusted process\n{}",
        up.proc.stderr()
    );
}

#[test]
fn reputation_thresholds_approve_and_manual_states_win() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let good = p.install("hello2", &m.path, "good");
    let meh = p.install("hello", &m.path, "meh");
    let list = m.dir.path().join("ratings.txt");
    std::fs::write(
        &list,
        format!(
            "# test ratings\n{} 9\n{},3\n",
            sha256_hex(&p.path("hello2")),
            sha256_hex(&p.path("hello"))
        ),
    )
    .unwrap();
    let out = up.ok(&[
        "reputation",
        "import",
        list.to_str().unwrap(),
        "--format",
        "sha256-list",
    ]);
    assert!(out.contains("2 ratings"), "{out}");
    assert!(
        run(&good, &[], &[]).exec_refused(),
        "a rating alone approves nothing"
    );
    up.ok(&["rule", "add", "reputation", "--min-trust", "8"]);
    assert!(
        eventually(Duration::from_secs(3), || run(&good, &[], &[]).ok()).is_some(),
        "trust 9 >= 8: runs"
    );
    assert!(run(&meh, &[], &[]).exec_refused(), "trust 3 < 8: blocked");
    up.ok(&["file", "ban", &sha256_hex(&p.path("hello2"))]);
    assert!(
        eventually(Duration::from_secs(2), || run(&good, &[], &[])
            .exec_refused())
        .is_some(),
        "a manual ban beats reputation"
    );
    let show: serde_json::Value =
        serde_json::from_str(&up.ok(&["file", "show", "--json", &sha256_hex(&p.path("hello"))]))
            .unwrap();
    assert_eq!(
        show["trust"], 3,
        "file show carries the trust rating: {show}"
    );
}

/// Add a custom rule blocking execution of anything under `dir`; its id.
fn block_under(up: &Up, dir: &Path) -> String {
    let added = up.ok(&[
        "rule",
        "add",
        "custom",
        "--path",
        &format!("{}/**", dir.display()),
        "--action",
        "block",
    ]);
    added
        .split_whitespace()
        .nth(1)
        .expect("rule N added: ...")
        .to_owned()
}

#[test]
fn custom_rules_control_execution_and_writes_with_conditions() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    for d in ["blocked", "tools", "protected", "slow"] {
        std::fs::create_dir_all(m.join(d)).unwrap();
    }
    // Block: beats an approval.
    let blocked = p.install("hello", &m.join("blocked"), "x");
    up.ok(&["file", "approve", &sha256_hex(&p.path("hello"))]);
    block_under(&up, &m.join("blocked"));
    assert!(
        eventually(Duration::from_secs(2), || run(&blocked, &[], &[])
            .exec_refused())
        .is_some()
    );

    // Allow, only for one source process (by path): unknown code started by bash runs.
    let tool = p.install("hello2", &m.join("tools"), "t");
    up.ok(&[
        "rule",
        "add",
        "custom",
        "--process-path",
        "/usr/bin/bash",
        "--path",
        &format!("{}/*", m.join("tools").display()),
        "--action",
        "allow",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run("/usr/bin/bash", &["-c", tool.to_str().unwrap()], &[]).ok(),
        "started by bash"
    );
    assert!(
        run(&tool, &[], &[]).exec_refused(),
        "started by anything else"
    );

    // Write control: opening protected files for writing is refused; reading is not.
    let conf = m.join("protected/app.conf");
    std::fs::write(&conf, "setting=1\n").unwrap();
    up.ok(&[
        "rule",
        "add",
        "custom",
        "--op",
        "write",
        "--path",
        &format!("{}/*.conf", m.join("protected").display()),
        "--action",
        "block",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let w = sh(&format!("echo setting=2 > {}", conf.display()));
    assert!(
        !w.ok() && (w.stderr.contains("not permitted") || w.stderr.contains("ermission")),
        "write refused: {w:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "setting=1\n",
        "content untouched"
    );
    assert!(
        sh(&format!(
            "echo x > {}",
            m.join("protected/other.txt").display()
        ))
        .ok(),
        "other files writable"
    );
    up.wait_event(|e| e["event"]["kind"] == "blocked" && e["event"]["operation"] == "write")
        .unwrap_or_else(|events| panic!("blocked write reported: {events:#?}"));
    // A rename over the protected file cannot be refused (no permission
    // event for it), but it is reported.
    let staged = m.join("protected/app.conf.new");
    std::fs::write(&staged, "setting=3\n").unwrap();
    let mv = run(
        "/usr/bin/mv",
        &[staged.to_str().unwrap(), conf.to_str().unwrap()],
        &[],
    );
    assert!(mv.ok(), "{mv:?}");
    up.wait_event(|e| {
        e["event"]["operation"] == "write"
            && e["event"]["kind"] == "allowed"
            && e["event"]["path"] == conf.to_str().unwrap()
            && e["event"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("renamed over"))
    })
    .unwrap_or_else(|events| panic!("a rename over a protected file is reported: {events:#?}"));
    std::fs::remove_file(&conf).unwrap();
    up.wait_event(|e| {
        e["event"]["operation"] == "write"
            && e["event"]["path"] == conf.to_str().unwrap()
            && e["event"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("removed from"))
    })
    .unwrap_or_else(|events| panic!("removing a protected file is reported: {events:#?}"));

    // Conditional execution: nice 10, killed after one second.
    let sleeper = script(&m.join("slow/sleeper"), "#!/bin/sh\nsleep 30\n");
    up.ok(&[
        "rule",
        "add",
        "custom",
        "--path",
        &format!("{}/*", m.join("slow").display()),
        "--action",
        "allow",
        "--nice",
        "10",
        "--max-runtime",
        "1",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let mut child = std::process::Command::new(&sleeper)
        .spawn()
        .expect("allowed by the rule");
    std::thread::sleep(Duration::from_millis(300));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    let nice: i64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(nice, 10, "nice applied: {stat}");
    let start = std::time::Instant::now();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed at its maximum run time");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A one-request HTTP server: returns what was posted.
/// Whether process `pid` holds a fanotify filesystem mark that asks for
/// creations (`FAN_CREATE`), from its descriptors' fdinfo.
fn follows_creations(pid: i32) -> bool {
    const FAN_CREATE: u64 = 0x100;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_to_string(fd.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("fanotify sdev:"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("mask:")))
            .filter_map(|m| u64::from_str_radix(m, 16).ok())
            .any(|m| m & FAN_CREATE != 0)
    })
}

/// A block rule for a path holds for approved code that arrives there by a
/// rename or a second hard link, though the file ran elsewhere first (and so
/// sits in the kernel-side cache, which knows inodes, not paths). Renames
/// and links are followed only while rules look at paths.
#[test]
fn a_path_block_rule_holds_for_code_moved_or_linked_under_it() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    for d in ["tools", "blocked"] {
        std::fs::create_dir_all(m.join(d)).unwrap();
    }
    assert!(
        !follows_creations(up.proc.pid()),
        "no path rules: creations are not followed"
    );
    up.ok(&["file", "approve", &sha256_hex(&p.path("hello"))]);
    let rule_id = block_under(&up, &m.join("blocked"));
    assert!(
        eventually(Duration::from_secs(2), || follows_creations(up.proc.pid())).is_some(),
        "a path rule: creations are followed"
    );
    let moved = p.install("hello", &m.join("tools"), "moved");
    let linked = p.install("hello", &m.join("tools"), "linked");
    for f in [&moved, &linked] {
        assert!(
            eventually(Duration::from_secs(3), || run(f, &[], &[]).ok()).is_some(),
            "approved, outside the rule: {}",
            f.display()
        );
        assert!(run(f, &[], &[]).ok(), "and again (kernel-side cache)");
    }

    let moved_to = m.join("blocked/moved");
    std::fs::rename(&moved, &moved_to).unwrap();
    let linked_to = m.join("blocked/linked");
    std::fs::hard_link(&linked, &linked_to).unwrap();
    // The agent learns of the new names from notifications: allow it a moment.
    assert!(
        eventually(Duration::from_secs(2), || run(&moved_to, &[], &[])
            .exec_refused())
        .is_some(),
        "moved under the rule: refused"
    );
    assert!(
        eventually(Duration::from_secs(2), || run(&linked_to, &[], &[])
            .exec_refused())
        .is_some(),
        "linked under the rule: refused"
    );
    // The first name still runs, and running it does not let the second one
    // back into the kernel-side cache.
    for _ in 0..3 {
        assert!(run(&linked, &[], &[]).ok(), "the first name still runs");
        assert!(
            run(&linked_to, &[], &[]).exec_refused(),
            "the second name stays refused"
        );
    }
    up.ok(&["rule", "remove", &rule_id]);
    assert!(
        eventually(Duration::from_secs(2), || !follows_creations(up.proc.pid())).is_some(),
        "the rule gone: creations no longer followed"
    );
}

fn webhook_listener() -> (String, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            use std::io::{Read, Write};
            let mut conn = conn;
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = conn.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(i) = text.find("\r\n\r\n") {
                    let len = text[..i]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break;
                    }
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        }
    });
    (url, rx)
}

#[test]
fn event_rules_ban_globally_and_alert() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--no-scan"]);
    let p = Programs::get();
    let suspicious = p.install("hello", &m.path, "suspicious");
    let list = m.dir.path().join("bad.txt");
    std::fs::write(&list, format!("{} 1\n", sha256_hex(&p.path("hello")))).unwrap();
    up.ok(&["reputation", "import", list.to_str().unwrap()]);
    let (url, hooks) = webhook_listener();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let syslog = udp.local_addr().unwrap().to_string();
    up.ok(&[
        "rule",
        "add",
        "event",
        "--name",
        "ban bad reputation",
        "--max-trust",
        "2",
        "--set-global",
        "banned",
        "--webhook",
        &url,
        "--syslog",
        &syslog,
    ]);
    std::thread::sleep(Duration::from_millis(300));
    // Monitor: it runs, and the would-block event fires the rule.
    assert!(run(&suspicious, &[], &[]).ok());
    let hook = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("webhook delivered");
    assert!(hook.contains(&sha256_hex(&p.path("hello"))), "{hook}");
    let mut buf = [0u8; 8192];
    let n = udp.recv(&mut buf).expect("syslog line delivered");
    let line = String::from_utf8_lossy(&buf[..n]);
    assert!(
        line.starts_with('<') && line.contains("palisade"),
        "RFC 5424 line: {line}"
    );
    assert!(
        eventually(Duration::from_secs(5), || up
            .ok(&["file", "show", &sha256_hex(&p.path("hello"))])
            .contains("banned"))
        .is_some(),
        "banned globally by the event rule"
    );
    up.ok(&["policy", "set-level", "default", "lockdown"]);
    assert!(
        eventually(Duration::from_secs(3), || run(&suspicious, &[], &[])
            .exec_refused())
        .is_some()
    );
}

/// Approving what the computer has (a level raised with
/// `--approve-existing`) is a scan that can take minutes on a real
/// filesystem: bans made meanwhile take effect at once, not after it.
#[test]
fn a_ban_takes_effect_while_the_computer_approves_what_it_has() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let m = TestMount::tmpfs();
    let (up, hello) = Up::lockdown_with_approved_hello(&m);
    // Slow to scan: a large executable (sparse: no memory), hashed in full
    // (seconds at about 1.5 GB/s).
    let big = m.join("big-tool");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(6 << 30).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
        .unwrap();
    drop(f);
    up.ok(&[
        "policy",
        "set-level",
        "default",
        "lockdown",
        "--approve-existing",
    ]);
    let logged = |what: &str, within| {
        let seen = eventually(within, || up.proc.stderr().contains(what)).is_some();
        assert!(seen, "not logged: {what}\n{}", up.proc.stderr());
    };
    logged("approval of what is here: scanning", Duration::from_secs(5));
    const SCANNED: &str = "present before the level was raised";
    let banned_at = std::time::Instant::now();
    up.ok(&["file", "ban", hello.to_str().unwrap()]);
    let took = eventually(Duration::from_secs(30), || {
        run(&hello, &[], &[]).exec_refused()
    })
    .map(|_| banned_at.elapsed())
    .expect("the ban must take effect");
    let scan_over = up.proc.stderr().contains(SCANNED);
    eprintln!("ban took effect {took:?} after it was made (scan over: {scan_over})");
    assert!(
        took < Duration::from_secs(1) && !scan_over,
        "the ban waited for the scan: took {took:?}\n{}",
        up.proc.stderr()
    );
    // The scan finishes; it does not lift the ban.
    logged(SCANNED, Duration::from_secs(60));
    assert!(
        run(&hello, &[], &[]).exec_refused(),
        "the scan does not lift a ban"
    );
}

#[test]
fn the_prompt_level_lets_users_request_approval() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--no-scan"]);
    let p = Programs::get();
    let wanted = p.install("hello", &m.path, "wanted");
    let unwanted = p.install("hello2", &m.path, "unwanted");
    // Raising the level approves what is already here, when asked.
    let before = p.install("uselib", &m.path, "already-here");
    p.install("libfoo.so", &m.path, "libfoo.so");
    up.ok(&[
        "policy",
        "set-level",
        "default",
        "prompt",
        "--approve-existing",
        "--disconnected",
        "prompt",
    ]);
    // The level applies once the agent's scan is done; files created before
    // that could still be approved by it.
    up.wait_level("prompt", Duration::from_secs(10));
    let r = run(&before, &[], &[]);
    assert!(
        r.ok(),
        "present when the level was raised: approved: {r:?}\n{}",
        up.proc.stderr()
    );
    // (wanted and unwanted were present too: start again with new content.)
    let wanted2 = m.join("wanted2");
    let unwanted2 = m.join("unwanted2");
    for (src, dst) in [(&wanted, &wanted2), (&unwanted, &unwanted2)] {
        std::fs::copy(src, dst).unwrap();
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(dst)
            .unwrap()
            .write_all(b"\0new")
            .unwrap();
    }
    let r = run(&wanted2, &[], &[]);
    assert!(
        r.exec_refused(),
        "prompt blocks unknown code: {r:?}\nstatus: {}\nfile: {}\nevents: {:#?}\nup stderr:\n{}",
        up.cli(&["status", "--json"]).stdout,
        up.cli(&["file", "show", wanted2.to_str().unwrap()]).stdout,
        up.events(),
        up.proc.stderr()
    );
    let socket = up.data.path().join("agent/request.sock");
    let ask = |path: &Path| {
        let r = run(
            BIN,
            &[
                "request",
                "new",
                path.to_str().unwrap(),
                "--reason",
                "need it",
                "--socket",
                socket.to_str().unwrap(),
            ],
            &[],
        );
        assert!(r.ok(), "{r:?}");
        r.stdout
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let grant_id = ask(&wanted2);
    let deny_id = ask(&unwanted2);
    let pending = up.ok(&["request", "list"]);
    assert!(
        pending.contains("wanted2") && pending.contains("need it"),
        "{pending}"
    );
    let t = std::time::Instant::now();
    up.ok(&["request", "grant", &grant_id.to_string()]);
    let took =
        eventually(Duration::from_secs(3), || run(&wanted2, &[], &[]).ok()).map(|_| t.elapsed());
    let took = took.expect("granted: runs");
    assert!(
        took < Duration::from_secs(1) + Duration::from_millis(300),
        "granted within a second: {took:?}"
    );
    up.ok(&["request", "deny", &deny_id.to_string(), "--comment", "no"]);
    let r = run(&unwanted2, &[], &[]);
    assert!(
        r.exec_refused(),
        "denied: still refused: {r:?}\nfile: {}\nevents: {:#?}\nup stderr:\n{}",
        up.cli(&["file", "show", unwanted2.to_str().unwrap()])
            .stdout,
        up.events(),
        up.proc.stderr()
    );
    let all = up.ok(&["request", "list", "--status", "all"]);
    assert!(all.contains("granted") && all.contains("denied"), "{all}");
    // Newest first, as many as asked for.
    let one = up.ok(&[
        "request", "list", "--status", "all", "--limit", "1", "--json",
    ]);
    let one: Vec<serde_json::Value> = serde_json::from_str(&one).unwrap();
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["id"], deny_id, "{one:?}");
}

#[test]
fn folder_protection_runs_generated_scripts_only_under_their_parent() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let rmm = m.join("rmm");
    std::fs::create_dir_all(&rmm).unwrap();
    // The "RMM agent" is python3 (by hash): it writes a new script each run and starts it.
    up.ok(&[
        "folder",
        "protect",
        rmm.to_str().unwrap(),
        "--parent",
        "/usr/bin/python3",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        let script_path = rmm.join(format!("job-{i}.sh"));
        script(&script_path, &format!("#!/bin/sh\necho job {i} $$\n"));
        let code = format!(
            "import subprocess,sys; r=subprocess.run(['/bin/sh', '{p}'], capture_output=True, text=True); \
             r2=subprocess.run(['{p}'], capture_output=True, text=True); print(r.stdout + r2.stdout); sys.exit(r.returncode or r2.returncode)",
            p = script_path.display()
        );
        let r = run("/usr/bin/python3", &["-c", &code], &[]);
        assert!(
            r.ok() && r.stdout.matches(&format!("job {i}")).count() == 2,
            "new script {i} under its parent: {r:?}\n{}",
            up.proc.stderr()
        );
        // Started by anything else: blocked, though the folder is trusted for the parent.
        let direct = run(&script_path, &[], &[]);
        assert!(direct.exec_refused(), "wrong parent: {direct:?}");
        let via_bash = run("/usr/bin/bash", &[script_path.to_str().unwrap()], &[]);
        assert!(!via_bash.ok(), "wrong parent (interpreter): {via_bash:?}");
    }
}

/// `file show --json` for a hash.
fn show_json(up: &Up, sha: &str) -> serde_json::Value {
    serde_json::from_str(&up.ok(&["file", "show", "--json", sha])).unwrap()
}

/// The local state of the file's instance at `path`.
fn local_state_at(up: &Up, sha: &str, path: &Path) -> Option<String> {
    show_json(up, sha)["instances"]
        .as_array()?
        .iter()
        .find(|i| i["path"] == path.to_str().unwrap())
        .and_then(|i| i["local_state"].as_str().map(str::to_owned))
}

#[test]
fn global_and_local_states_follow_approvals_bans_and_deletions() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--lockdown", "--no-scan"]);
    let p = Programs::get();
    let tool = p.install("hello", &m.path, "tool");
    // (Read from the source: lockdown refuses to open unapproved ELF files.)
    let sha = sha256_hex(&p.path("hello"));
    // Seen (blocked): an unapproved instance.
    assert!(run(&tool, &[], &[]).exec_refused());
    let state = |want: &str| {
        eventually(Duration::from_secs(5), || {
            local_state_at(&up, &sha, &tool).as_deref() == Some(want)
        })
        .is_some()
    };
    assert!(state("unapproved"), "{:#}", show_json(&up, &sha));
    assert_eq!(show_json(&up, &sha)["global_state"], "unapproved");

    // Approved for one policy only: "approved by policy", and approved here.
    up.ok(&["file", "approve", &sha, "--policy", "default"]);
    assert_eq!(show_json(&up, &sha)["global_state"], "approved_by_policy");
    assert!(state("approved"), "{:#}", show_json(&up, &sha));
    assert!(eventually(Duration::from_secs(3), || run(&tool, &[], &[]).ok()).is_some());

    // Banned for all: the ban wins everywhere.
    up.ok(&["file", "ban", &sha]);
    assert_eq!(show_json(&up, &sha)["global_state"], "banned_for_all");
    assert!(state("banned"), "{:#}", show_json(&up, &sha));
    up.ok(&["file", "unapprove", &sha]);

    // Deleted: the agent reports the instance gone; the text output says so.
    up.ok(&["file", "approve", &sha]);
    assert!(eventually(Duration::from_secs(3), || run(&tool, &[], &[]).ok()).is_some());
    std::fs::remove_file(&tool).unwrap();
    assert!(
        state("deleted"),
        "{:#}\n{}",
        show_json(&up, &sha),
        up.proc.stderr()
    );
    let text = up.ok(&["file", "show", &sha]);
    assert!(
        text.contains("deleted") && text.contains("gone since"),
        "{text}"
    );

    // Back at the same path: present (and approved) again.
    let tool = p.install("hello", &m.path, "tool");
    assert!(run(&tool, &[], &[]).ok());
    assert!(state("approved"), "{:#}", show_json(&up, &sha));

    // A directory holding code moved away: its instances are gone from there.
    // (Code not yet known to the service, so that running it is a lookup,
    // which records the instance.)
    let dir = m.join("vendor");
    std::fs::create_dir(&dir).unwrap();
    let inner = p.install("hello2", &dir, "inner");
    let sha2 = sha256_hex(&p.path("hello2"));
    assert!(run(&inner, &[], &[]).exec_refused());
    assert!(
        eventually(Duration::from_secs(5), || local_state_at(
            &up, &sha2, &inner
        )
        .as_deref()
            == Some("unapproved"))
        .is_some(),
        "{:#}",
        show_json(&up, &sha2)
    );
    std::fs::rename(&dir, m.join("vendor-old")).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || local_state_at(
            &up, &sha2, &inner
        )
        .as_deref()
            == Some("deleted"))
        .is_some(),
        "{:#}",
        show_json(&up, &sha2)
    );
}
