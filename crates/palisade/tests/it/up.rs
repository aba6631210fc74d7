//! `palisade up` across restarts, and what its command line asks; the
//! agent's enrollment into the directory it runs with; `events --follow`
//! across a restart of the service.
use crate::harness::*;
use crate::require_root;
use std::path::Path;
use std::time::Duration;

/// A fresh data directory.
fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("palisade-up-")
        .tempdir()
        .unwrap()
}

/// An address on a port free at the time of asking: the local agent keeps
/// the server's URL from its enrollment, so a restart must listen there
/// again for it to connect.
fn fixed_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Without terminal colours.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn levels(connected: &str, disconnected: &str) -> (String, String) {
    (connected.to_owned(), disconnected.to_owned())
}

/// The value of `key = "..."` in a `cli.toml`.
fn cli_value(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_owned()
}

/// The first start sets the documented default (monitor); a restart
/// without a level keeps the levels an admin set since; a level asked for
/// is set. Before, every `up` without `--lockdown` put the `default`
/// policy, and every agent in it, back to monitor.
#[test]
fn a_restart_keeps_the_levels_an_admin_set() {
    require_root!();
    let m = TestMount::tmpfs();
    let listen = fixed_listen();
    let up = Up::start_with(&m, data_dir(), &listen, &["--no-scan"], &[]);
    assert_eq!(up.default_levels(), levels("monitor", "monitor"));
    up.ok(&[
        "policy",
        "set-level",
        "default",
        "lockdown",
        "--disconnected",
        "monitor",
    ]);
    let up = Up::start_with(&m, up.stop(), &listen, &["--no-scan"], &[]);
    assert_eq!(up.default_levels(), levels("lockdown", "monitor"));
    up.wait_level("lockdown", Duration::from_secs(5));
    let up = Up::start_with(&m, up.stop(), &listen, &["--no-scan", "--monitor"], &[]);
    assert_eq!(up.default_levels(), levels("monitor", "monitor"));
    up.wait_level("monitor", Duration::from_secs(5));
}

/// `up --lockdown` lowers the policy to monitor only while a filesystem
/// waits for its initialization scan: restarted once the scan is done, it
/// goes straight to lockdown. Before, every restart set the policy (all
/// its agents, remote ones too) to monitor for the startup window.
#[test]
fn a_lockdown_restart_after_the_scan_does_not_lower_the_policy() {
    require_root!();
    let m = TestMount::tmpfs();
    Programs::get().install("hello", &m.path, "hello");
    let set_lines = |up: &Up, level: &str| -> Vec<String> {
        plain(&up.proc.stderr())
            .lines()
            .filter(|l| l.contains("policy levels set") && l.contains(&format!("level={level}")))
            .map(String::from)
            .collect()
    };
    let listen = fixed_listen();
    let up = Up::start_with(&m, data_dir(), &listen, &["--lockdown"], &[]);
    // The first start scans the mount, under monitor.
    assert!(
        eventually(Duration::from_secs(5), || !set_lines(&up, "lockdown")
            .is_empty())
        .is_some(),
        "{}",
        up.proc.stderr()
    );
    assert!(
        !set_lines(&up, "monitor").is_empty(),
        "{}",
        up.proc.stderr()
    );
    assert_eq!(up.default_levels(), levels("lockdown", "lockdown"));

    let up = Up::start_with(&m, up.stop(), &listen, &["--lockdown"], &[]);
    assert!(
        eventually(Duration::from_secs(5), || !set_lines(&up, "lockdown")
            .is_empty())
        .is_some(),
        "{}",
        up.proc.stderr()
    );
    assert_eq!(
        set_lines(&up, "monitor"),
        Vec::<String>::new(),
        "lowered on restart"
    );
    assert_eq!(up.default_levels(), levels("lockdown", "lockdown"));
    up.wait_level("lockdown", Duration::from_secs(5));
}

/// The saved admin token is reused while the server takes it, replaced
/// when it does not (here: garbage; revoked or expired alike), and
/// `$PALISADE_TOKEN` (the caller's own) is never saved as it. Before,
/// `up` saved `$PALISADE_TOKEN` and failed with 401 on a stale token.
#[test]
fn a_stale_saved_admin_token_is_replaced() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--no-scan"]);
    let cfg = up.cli_config.clone();
    let first = cli_value(&cfg, "token");
    let up = Up::start_in(&m, up.stop(), &["--no-scan"]);
    assert_eq!(cli_value(&cfg, "token"), first, "a valid token is kept");
    let data = up.stop();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace(&first, "stale-token")).unwrap();
    let up = Up::start_with(
        &m,
        data,
        "127.0.0.1:0",
        &["--no-scan"],
        &[("PALISADE_TOKEN", "the-caller-s-token")],
    );
    let token = cli_value(&cfg, "token");
    assert!(
        token != "stale-token" && token != "the-caller-s-token" && token != first,
        "{token}"
    );
    up.ok(&["policy", "list"]);
    let user_cfg = up.data.path().join("home/.config/palisade/cli.toml");
    assert_eq!(cli_value(&user_cfg, "token"), token);
}

/// `up --listen` on a given address puts it in the server's certificate.
/// Before, only localhost, the loopback addresses 127.0.0.1 and ::1 and the
/// host name were there, and `up` failed its own health check.
#[test]
fn up_listens_on_a_given_address() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start_with(&m, data_dir(), "127.0.0.2:0", &["--no-scan"], &[]);
    assert!(
        cli_value(&up.cli_config, "server").starts_with("https://127.0.0.2:"),
        "{}",
        cli_value(&up.cli_config, "server")
    );
    up.ok(&["policy", "list"]);
}

/// A bad agent flag is refused, named as typed, before `up` writes or
/// starts anything. Before, the error named the configuration field and
/// came after the database, the server, the levels and the enrollment.
#[test]
fn up_refuses_a_bad_agent_flag_before_anything_else() {
    for (args, flag) in [
        (["--deadline-ms", "10"], "--deadline-ms"),
        (["--watch", "relative/path"], "--watch"),
        (["--package-root", "relative"], "--package-root"),
    ] {
        let data = data_dir();
        let d = data.path().to_str().unwrap();
        let home = data.path().join("home");
        let mut all = vec!["up", "--data-dir", d, "--listen", "127.0.0.1:0"];
        all.extend_from_slice(&args);
        let r = run(
            BIN,
            &all,
            &[("HOME", home.to_str().unwrap()), ("PALISADE_LOG", "warn")],
        );
        assert!(!r.ok(), "{args:?}: {r:?}");
        assert!(r.stderr.contains(flag), "{args:?}: {}", r.stderr);
        let left: Vec<_> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{args:?}: left {left:?}");
    }
}

/// `palisade agent [--config C] [--data-dir D] enroll` saves the identity
/// where `palisade agent` with the same options will look for it:
/// `enroll --data-dir`, else `agent --data-dir`, else the configuration's
/// `data_dir`. A configuration the agent would refuse is refused before
/// the one-use token is spent. Before, enroll saved it in the default
/// directory unless given its own `--data-dir`.
#[test]
fn agent_enroll_saves_the_identity_where_the_agent_looks() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--no-scan"]);
    let server = cli_value(&up.cli_config, "server");
    let dirs = tempfile::tempdir().unwrap();
    let config = dirs.path().join("agent.toml");
    let from_config = dirs.path().join("from-config");
    std::fs::write(&config, format!("data_dir = {from_config:?}\n")).unwrap();
    let config = config.to_str().unwrap();
    let from_flag = dirs.path().join("from-flag");
    let from_enroll = dirs.path().join("from-enroll");
    let bad = dirs.path().join("bad.toml");
    std::fs::write(&bad, "workers = 0\n").unwrap();
    let enroll = |before: &[&str], after: &[&str], token: &str| {
        let mut args = vec!["agent"];
        args.extend_from_slice(before);
        args.extend_from_slice(&["enroll", "--server", &server, "--token", token]);
        args.extend_from_slice(after);
        run(BIN, &args, &[("PALISADE_LOG", "warn")])
    };
    let token = || {
        up.ok(&["enroll-token", "--policy", "default"])
            .trim()
            .to_owned()
    };

    let t = token();
    let r = enroll(&["--config", bad.to_str().unwrap()], &[], &t);
    assert!(!r.ok() && r.stderr.contains("workers"), "{r:?}");
    let r = enroll(&["--data-dir", from_flag.to_str().unwrap()], &[], &t);
    assert!(r.ok(), "the token is still good: {r:?}");
    assert!(from_flag.join("client.key").exists(), "{r:?}");

    let r = enroll(&["--config", config], &[], &token());
    assert!(r.ok(), "{r:?}");
    assert!(from_config.join("client.key").exists(), "{r:?}");

    std::fs::remove_dir_all(&from_flag).unwrap();
    let r = enroll(
        &[
            "--config",
            config,
            "--data-dir",
            from_flag.to_str().unwrap(),
        ],
        &["--data-dir", from_enroll.to_str().unwrap()],
        &token(),
    );
    assert!(r.ok(), "{r:?}");
    assert!(from_enroll.join("client.key").exists(), "{r:?}");
    assert!(!from_flag.exists(), "{r:?}");
}

/// `events --follow` outlives a restart of the service: it says on stderr
/// that it lost the service, and goes on from the last event it printed.
/// A refused token ends it. Before, it ended at the first failed poll.
#[test]
fn events_follow_outlives_a_restart_of_the_service() {
    require_root!();
    let m = TestMount::tmpfs();
    let listen = fixed_listen();
    let up = Up::start_with(&m, data_dir(), &listen, &["--lockdown", "--no-scan"], &[]);
    let cfg = up.cli_config.clone();
    let logs = tempfile::tempdir().unwrap();
    let mut follow = Proc::palisade(
        "follow",
        &["events", "--follow", "--json"],
        &[
            ("PALISADE_CLI_CONFIG", cfg.to_str().unwrap()),
            ("PALISADE_LOG", "warn"),
        ],
        logs.path(),
    );
    let one = Programs::get().install("hello", &m.path, "one");
    assert!(run(&one, &[], &[]).exec_refused());
    follow.wait_line("/one", Duration::from_secs(20));

    let data = up.stop();
    assert!(
        eventually(Duration::from_secs(10), || follow
            .stderr()
            .contains("retrying"))
        .is_some(),
        "no notice: {}",
        follow.stderr()
    );
    assert!(
        follow.child.try_wait().unwrap().is_none(),
        "ended: {}",
        follow.stderr()
    );
    assert_eq!(follow.stderr().lines().count(), 1, "{}", follow.stderr());

    let up = Up::start_with(&m, data, &listen, &["--lockdown", "--no-scan"], &[]);
    let two = Programs::get().install("hello", &m.path, "two");
    assert!(run(&two, &[], &[]).exec_refused());
    follow.wait_line("/two", Duration::from_secs(40));
    assert!(
        eventually(Duration::from_secs(5), || follow
            .stderr()
            .contains("reconnected"))
        .is_some(),
        "{}",
        follow.stderr()
    );

    // A token the service refuses ends it at once.
    let bad = logs.path().join("cli.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&bad, text.replace(&cli_value(&cfg, "token"), "refused")).unwrap();
    let r = run(
        BIN,
        &["events", "--follow"],
        &[
            ("PALISADE_CLI_CONFIG", bad.to_str().unwrap()),
            ("PALISADE_LOG", "warn"),
        ],
    );
    assert!(!r.ok() && r.stderr.contains("401"), "{r:?}");
    drop(up);
}
