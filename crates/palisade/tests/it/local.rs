//! What a local user can do to the system around enforcement: read the
//! state `palisade up` keeps, or put text on an admin's terminal.
use crate::harness::*;
use crate::require_root;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The files that hold secrets (the server's database with the CA key,
/// TOTP secrets and password hashes; the agent's key; the CLI's token)
/// and the agent's databases (what runs, by whom) are root's alone,
/// their WAL files included; files an older version left readable are
/// made so at the next start. The data directory may be passed through
/// (users reach the request socket), not listed.
#[test]
fn the_state_palisade_up_keeps_is_roots_alone() {
    require_root!();
    let m = TestMount::tmpfs();
    let up = Up::start(&m, &["--no-scan"]);
    let data = up.data.path().to_owned();
    // Writes to both databases while they are open, so that their WAL
    // files exist.
    let tool = Programs::get().install("hello", &m.path, "tool");
    up.ok(&["file", "approve", tool.to_str().unwrap()]);
    assert!(run(&tool, &[], &[]).ok());
    let private = [
        "server.db",
        "server.db-wal",
        "server.db-shm",
        "cli.toml",
        "agent/client.key",
        "agent/cache.db",
        "agent/cache.db-wal",
        "agent/cache.db-shm",
        "agent/events.db",
        "agent/events.db-wal",
        "agent/events.db-shm",
    ];
    let check = |when: &str| {
        for name in private {
            let p = data.join(name);
            if name.ends_with("-wal") || name.ends_with("-shm") {
                // Checkpointed and removed at a clean stop.
                if !p.exists() {
                    continue;
                }
            }
            assert_eq!(mode(&p) & 0o077, 0, "{when}: {name} is {:o}", mode(&p));
        }
        for dir in [data.clone(), data.join("agent")] {
            assert_eq!(
                mode(&dir) & 0o066,
                0,
                "{when}: {} is {:o}",
                dir.display(),
                mode(&dir)
            );
        }
    };
    check("first start");
    for name in ["server.db", "agent/cache.db", "agent/events.db"] {
        assert!(data.join(name).exists(), "{name}");
    }

    // An older version's databases: readable by all. (Its key was 0600
    // already; `cli.toml` is written anew at every start.)
    let Up {
        mut proc,
        data: tmp,
        ..
    } = up;
    proc.stop();
    for name in private.iter().filter(|n| n.contains(".db")) {
        let p = data.join(name);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    for dir in [data.clone(), data.join("agent")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let up = Up::start_in(&m, tmp, &["--no-scan"]);
    assert!(run(&tool, &[], &[]).ok());
    check("after a start over an older version's files");
    // The request socket is still reachable by users.
    assert_eq!(mode(&data.join("agent/request.sock")) & 0o777, 0o666);
    drop(up);
}

/// A data directory whose name holds what a URL gives a meaning to (`?`,
/// `#`, `%`) holds the server's database, root's alone. Before, the
/// database URL was built without encoding and `up` failed.
#[test]
fn a_data_directory_may_hold_url_characters() {
    require_root!();
    let m = TestMount::tmpfs();
    let data = tempfile::Builder::new()
        .prefix("palisade-up-a?b#c%41 d-")
        .tempdir()
        .unwrap();
    let up = Up::start_in(&m, data, &["--no-scan"]);
    let db = up.data.path().join("server.db");
    assert_eq!(mode(&db) & 0o077, 0, "{:o}", mode(&db));
    up.ok(&["policy", "list"]);
}

/// A path a user chose (here with an escape sequence that sets the
/// terminal's title and a right-to-left override) reaches the admin's
/// terminal escaped, in `palisade events` and `palisade file show`;
/// `--json` keeps it as it is.
#[test]
fn paths_from_agents_reach_the_terminal_escaped() {
    require_root!();
    let m = TestMount::tmpfs();
    let (up, hello) = Up::lockdown_with_approved_hello(&m);
    let evil = m.join("evil\x1b]0;owned\x07\u{202e}hs.txt");
    std::fs::copy(&hello, &evil).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&evil)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\0other"))
        .unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(run(&evil, &[], &[]).exec_refused());
    let event = up
        .wait_event(|e| {
            e["event"]["path"]
                .as_str()
                .is_some_and(|p| p.contains("evil"))
        })
        .expect("the blocked run is reported");
    assert_eq!(event["event"]["path"], evil.to_str().unwrap(), "JSON as is");
    let escaped = "evil\\x1b]0;owned\\x07\\u{202e}hs.txt";
    let events = up.ok(&["events"]);
    assert!(events.contains(escaped), "{events}");
    let sha = event["event"]["sha256"].as_str().unwrap().to_owned();
    let shown = up.ok(&["file", "show", &sha]);
    assert!(shown.contains(escaped), "{shown}");
    for out in [&events, &shown] {
        assert!(!out.contains('\x1b') && !out.contains('\u{202e}'), "{out}");
    }
}
