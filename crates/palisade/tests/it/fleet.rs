//! Server and agent as separate processes: the persistent cache when the
//! service is gone, agent restarts, the event spool, corrupt caches,
//! replicas over PostgreSQL.
use crate::harness::*;
use crate::require_root;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A server, an enrolled agent watching a test mount, and an admin config.
struct Fleet {
    data: tempfile::TempDir,
    database: String,
    servers: Vec<Proc>,
    urls: Vec<String>,
    agent: Option<Proc>,
    cli_config: PathBuf,
    agent_dir: PathBuf,
    watch: PathBuf,
}

fn server_proc(data: &Path, database: &str, name: &str, listen: &str) -> (Proc, String) {
    let mut p = Proc::palisade(
        name,
        &["server", "--database", database, "--listen", listen],
        &[("PALISADE_LOG", "info")],
        data,
    );
    let line = p.wait_line("listening on https://", Duration::from_secs(60));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_owned();
    (p, url)
}

impl Fleet {
    fn start(mount: &TestMount, database: Option<String>, replicas: usize) -> Fleet {
        let data = tempfile::Builder::new()
            .prefix("palisade-fleet-")
            .tempdir()
            .unwrap();
        let database = database
            .unwrap_or_else(|| format!("sqlite://{}/server.db?mode=rwc", data.path().display()));
        let init = run(
            BIN,
            &["server", "init", "--database", &database],
            &[("PALISADE_LOG", "warn")],
        );
        assert!(init.ok(), "server init: {init:?}");
        let token = init.stdout.lines().last().unwrap().trim().to_owned();
        let mut servers = Vec::new();
        let mut urls = Vec::new();
        for i in 0..replicas {
            let (p, url) =
                server_proc(data.path(), &database, &format!("server{i}"), "127.0.0.1:0");
            servers.push(p);
            urls.push(url);
        }
        let ca = run(
            BIN,
            &["server", "ca", "--database", &database],
            &[("PALISADE_LOG", "warn")],
        );
        assert!(ca.ok(), "server ca: {ca:?}");
        let ca_path = data.path().join("ca.crt");
        std::fs::write(&ca_path, &ca.stdout).unwrap();
        let agent_dir = data.path().join("agent");
        let cli_config = data.path().join("cli.toml");
        std::fs::write(
            &cli_config,
            format!(
                "server = {:?}\nca_cert = {:?}\ntoken = {:?}\nagent_socket = {:?}\n",
                urls[0],
                ca_path,
                token,
                agent_dir.join("agent.sock")
            ),
        )
        .unwrap();
        let mut f = Fleet {
            data,
            database,
            servers,
            urls,
            agent: None,
            cli_config,
            agent_dir,
            watch: mount.path.clone(),
        };
        let enroll_token = f
            .ok(&["enroll-token", "--policy", "default"])
            .trim()
            .to_owned();
        let agent_url = f.urls.last().unwrap().clone();
        let r = run(
            BIN,
            &[
                "agent",
                "enroll",
                "--server",
                &agent_url,
                "--token",
                &enroll_token,
                "--data-dir",
                f.agent_dir.to_str().unwrap(),
            ],
            &[("PALISADE_LOG", "warn")],
        );
        assert!(r.ok(), "enroll: {r:?}");
        // Used up, the token is no longer listed; a spare one is, until
        // revoked.
        let header_only = |list: String| list.lines().count() == 1;
        assert!(header_only(f.ok(&["enroll-token", "--list"])));
        f.ok(&["enroll-token", "--policy", "default", "--uses", "2"]);
        let list = f.ok(&["enroll-token", "--list"]);
        let spare = list.lines().nth(1).unwrap_or_else(|| panic!("{list}"));
        assert!(spare.contains("2/2") && spare.contains("default"), "{list}");
        let id = spare.split_whitespace().next().unwrap();
        f.ok(&["enroll-token", "--revoke", id]);
        assert!(header_only(f.ok(&["enroll-token", "--list"])));
        f.start_agent();
        f
    }

    fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// Start the agent with `toml` as its configuration file.
    fn start_agent_configured(&mut self, toml: &str) {
        let cfg = self.data.path().join("agent.toml");
        std::fs::write(&cfg, toml).unwrap();
        self.start_agent_with(&["--config", cfg.to_str().unwrap()]);
    }

    fn start_agent_with(&mut self, extra: &[&str]) {
        let mut args = vec![
            "agent",
            "--data-dir",
            self.agent_dir.to_str().unwrap(),
            "--watch",
            self.watch.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut a = Proc::palisade(
            "agent",
            &args,
            &[("PALISADE_LOG", "info")],
            self.data.path(),
        );
        a.wait_line("palisade agent: ready", Duration::from_secs(60));
        self.agent = Some(a);
    }

    /// Start the first replica again, on the address it had (after it was
    /// killed).
    fn restart_first_server(&mut self) {
        let port = self.urls[0].rsplit(':').next().unwrap().to_owned();
        let (again, _) = server_proc(
            self.data.path(),
            &self.database,
            "server-again",
            &format!("127.0.0.1:{port}"),
        );
        self.servers[0] = again;
    }

    fn stop_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
    }

    /// Set the `default` policy's level and its level while disconnected.
    fn set_default_levels(&self, connected: &str, disconnected: &str) {
        self.ok(&[
            "policy",
            "set-level",
            "default",
            connected,
            "--disconnected",
            disconnected,
        ]);
    }

    fn agent_log(&self) -> String {
        self.agent.as_ref().map(|a| a.stderr()).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Ran {
        run(
            BIN,
            args,
            &[
                ("PALISADE_CLI_CONFIG", self.cli_config.to_str().unwrap()),
                ("PALISADE_LOG", "warn"),
            ],
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.cli(args);
        assert!(r.ok(), "palisade {args:?}: {r:?}");
        r.stdout
    }

    fn status_code(&self) -> Option<i32> {
        self.cli(&["status"]).spawn.ok().and_then(|s| s.code())
    }
}

#[test]
fn the_persistent_cache_enforces_while_the_service_is_gone_even_across_restarts() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    let p = Programs::get();
    let approved = p.install("hello", &m.path, "approved");
    let banned = p.install("hello2", &m.path, "banned");
    f.set_default_levels("lockdown", "lockdown");
    f.ok(&["file", "approve", approved.to_str().unwrap()]);
    f.ok(&["file", "ban", banned.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(3), || run(&approved, &[], &[]).ok()).is_some(),
        "{}",
        f.agent_log()
    );
    assert!(run(&banned, &[], &[]).exec_refused());
    assert!(
        eventually(Duration::from_secs(3), || f.status_code() == Some(0)).is_some(),
        "status 0 while connected"
    );

    // The service disappears.
    f.servers[0].kill();
    assert!(
        eventually(Duration::from_secs(20), || f.status_code() == Some(3)).is_some(),
        "status 3 once disconnected"
    );
    assert!(
        run(&approved, &[], &[]).ok(),
        "approved code keeps running offline"
    );
    assert!(
        run(&banned, &[], &[]).exec_refused(),
        "banned code stays banned offline"
    );
    let stranger = p.install("uselib", &m.path, "stranger");
    assert!(
        run(&stranger, &[], &[]).exec_refused(),
        "unknown code is blocked offline"
    );

    // The agent restarts while the service is still gone: no kernel or
    // memory cache survives, only the persistent one.
    f.stop_agent();
    f.start_agent();
    assert!(
        run(&approved, &[], &[]).ok(),
        "persistent cache approves after restart: {}",
        f.agent_log()
    );
    assert!(
        run(&banned, &[], &[]).exec_refused(),
        "persistent cache bans after restart"
    );
    assert!(run(&stranger, &[], &[]).exec_refused());
    std::thread::sleep(Duration::from_millis(300));
    f.stop_agent(); // the offline block events are on disk now

    // The service comes back on the same address: the events recorded offline arrive.
    f.restart_first_server();
    f.start_agent();
    let arrived = eventually(Duration::from_secs(10), || {
        let out = f.ok(&["events", "--json", "--limit", "1000"]);
        out.lines()
            .filter(|l| l.contains("\"blocked\"") && l.contains("/stranger"))
            .count()
            >= 2
    });
    assert!(
        arrived.is_some(),
        "offline events uploaded after reconnect: {}",
        f.ok(&["events"])
    );
}

/// Regression: with its data directory on a full disk, the agent took the
/// failure to open its cache for corruption, moved the file aside, could
/// not make a fresh one either, and did not start: nothing was enforced.
/// Now it starts with both stores in memory (and says so), enforces, and
/// its events still reach the service.
#[test]
fn an_agent_on_a_full_disk_starts_and_enforces_with_its_stores_in_memory() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    let p = Programs::get();
    let approved = p.install("hello", &m.path, "approved");
    let unknown = p.install("hello2", &m.path, "unknown");
    f.set_default_levels("lockdown", "lockdown");
    f.ok(&["file", "approve", approved.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(5), || run(&approved, &[], &[]).ok()).is_some());
    f.stop_agent();

    // The data directory on a filesystem of its own: its identity and
    // levels only (no cache, no spool yet), then full.
    let keep = tempfile::tempdir().unwrap();
    let mut kept = Vec::new();
    for e in std::fs::read_dir(&f.agent_dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_file() && !name.contains(".db") {
            std::fs::copy(e.path(), keep.path().join(&name)).unwrap();
            kept.push(name);
        }
    }
    assert!(kept.iter().any(|n| n.contains("levels")), "{kept:?}");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .args(["-l", self.0.to_str().unwrap()])
                .status();
        }
    }
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0711", "palisade-full"])
        .arg(&f.agent_dir)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = Unmount(f.agent_dir.clone());
    for name in &kept {
        std::fs::copy(keep.path().join(name), f.agent_dir.join(name)).unwrap();
    }
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(f.agent_dir.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
    }

    f.start_agent();
    // (Connected or not yet: `status` exits 3 until it is.)
    let status: serde_json::Value =
        serde_json::from_str(&f.cli(&["status", "--json"]).stdout).unwrap();
    let in_memory = status["stores_in_memory"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(in_memory.len(), 2, "{status}\n{}", f.agent_log());
    assert!(f.cli(&["status"]).stdout.contains("kept in memory"));
    assert!(
        eventually(Duration::from_secs(5), || run(&approved, &[], &[]).ok()).is_some(),
        "{}",
        f.agent_log()
    );
    assert!(run(&unknown, &[], &[]).exec_refused());
    let arrived = eventually(Duration::from_secs(10), || {
        f.ok(&["events", "--json", "--limit", "1000"])
            .lines()
            .any(|l| l.contains("\"blocked\"") && l.contains("/unknown"))
    });
    assert!(arrived.is_some(), "{}", f.ok(&["events"]));
    f.stop_agent();
}

/// An agent's client certificate is renewed with the one it has (before,
/// nothing renewed it: every agent was cut off a year after enrolling).
/// Saved, the new one is what the agent talks with after a restart; its
/// first use retires the old one.
#[test]
fn a_renewed_certificate_replaces_the_old_one() {
    require_root!();
    use palisade_agent::identity::{renew, Identity};
    use palisade_agent::link::ServiceClient;
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    f.stop_agent();
    let old = Identity::load(&f.agent_dir).unwrap().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let renewed = rt.block_on(async {
        let client = ServiceClient::new(&old).unwrap();
        let renewed = renew(&client, &old)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", f.servers[0].stderr()));
        renewed.save_renewed(&f.agent_dir).unwrap();
        // Not used yet: the old one still works.
        client.config().await.unwrap();
        renewed
    });
    assert_ne!(renewed.cert_pem, old.cert_pem);
    let (before, after) = palisade_agent::identity::validity(&renewed.cert_pem).unwrap();
    assert!(after - before > 300 * 86_400, "a year's certificate");
    let loaded = Identity::load(&f.agent_dir).unwrap().unwrap();
    assert_eq!(loaded.cert_pem, renewed.cert_pem);

    f.start_agent();
    assert!(
        eventually(Duration::from_secs(10), || f.status_code() == Some(0)).is_some(),
        "connected with the renewed certificate: {:?}\n{}",
        f.cli(&["status"]),
        f.agent_log()
    );
    let status: serde_json::Value = serde_json::from_str(&f.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["certificate_expires"], after, "{status}");
    let due = palisade_agent::identity::renewal_due(before, after);
    assert_eq!(status["certificate_renewal_due"], due, "{status}");
    assert!(f.ok(&["status"]).contains("certificate  valid until"));
    let refused = rt.block_on(async { ServiceClient::new(&old).unwrap().config().await });
    let e = format!("{:#}", refused.unwrap_err());
    assert!(e.contains("does not belong"), "{e}");
}

/// Overwrite the agent's persistent cache (and its WAL) with garbage.
fn corrupt_the_cache(agent_dir: &Path) {
    for name in ["cache.db", "cache.db-wal", "cache.db-shm"] {
        let p = agent_dir.join(name);
        if p.exists() {
            std::fs::write(&p, b"garbage, not a database ".repeat(100)).unwrap();
        }
    }
}

#[test]
fn a_corrupt_persistent_cache_is_rebuilt_while_enforcing() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    let approved = Programs::get().install("hello", &m.path, "approved");
    f.set_default_levels("lockdown", "lockdown");
    f.ok(&["file", "approve", approved.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(3), || run(&approved, &[], &[]).ok()).is_some());
    f.stop_agent();
    corrupt_the_cache(&f.agent_dir);
    // Installed while no agent runs; tried as soon as the agent is ready,
    // before it need have reached the service.
    let stranger = Programs::get().install("hello2", &m.path, "stranger");
    f.start_agent();
    assert!(
        run(&stranger, &[], &[]).exec_refused(),
        "blocking from the start: {}",
        f.agent_log()
    );
    assert!(
        eventually(Duration::from_secs(5), || run(&approved, &[], &[]).ok()).is_some(),
        "the cache refills from the service: {}",
        f.agent_log()
    );
    assert!(run(&stranger, &[], &[]).exec_refused(), "still blocking");
    assert!(
        f.agent_log().contains("rebuilt"),
        "the rebuild is logged: {}",
        f.agent_log()
    );
    assert!(
        std::fs::read_dir(&f.agent_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("corrupt")),
        "the corrupt file is kept aside"
    );
}

/// The levels outlive the cache: an agent whose cache is corrupt, started
/// while the service is away, enforces the policy's disconnected level (not
/// its default, monitor); with both the cache and the levels file gone it
/// fails closed.
#[test]
fn the_levels_survive_a_corrupt_cache_while_the_service_is_away() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    let stranger = Programs::get().install("hello", &m.path, "stranger");
    f.set_default_levels("lockdown", "lockdown");
    assert!(
        eventually(Duration::from_secs(3), || run(&stranger, &[], &[])
            .exec_refused())
        .is_some()
    );
    assert!(
        eventually(Duration::from_secs(3), || f
            .agent_dir
            .join("levels.json")
            .exists())
        .is_some(),
        "the levels are saved beside the cache"
    );
    f.stop_agent();
    f.servers[0].kill();
    corrupt_the_cache(&f.agent_dir);
    f.start_agent();
    assert!(
        run(&stranger, &[], &[]).exec_refused(),
        "the disconnected level after the rebuild: {}",
        f.agent_log()
    );
    f.stop_agent();
    corrupt_the_cache(&f.agent_dir);
    std::fs::remove_file(f.agent_dir.join("levels.json")).unwrap();
    f.start_agent();
    assert!(
        run(&stranger, &[], &[]).exec_refused(),
        "fails closed when the levels were lost too: {}",
        f.agent_log()
    );
    assert!(f
        .agent_log()
        .contains("enforcing lockdown until the service sets them"));
}

#[test]
fn the_disconnected_level_applies_while_disconnected() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    let stranger = Programs::get().install("hello", &m.path, "stranger");
    f.set_default_levels("lockdown", "monitor");
    assert!(
        eventually(Duration::from_secs(3), || run(&stranger, &[], &[])
            .exec_refused())
        .is_some()
    );
    f.servers[0].kill();
    assert!(
        eventually(Duration::from_secs(20), || run(&stranger, &[], &[]).ok()).is_some(),
        "monitor while disconnected: {}",
        f.agent_log()
    );
}

#[test]
fn a_hung_service_cannot_stall_a_decision_past_the_deadline() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    f.stop_agent();
    f.start_agent_configured("decision_deadline_ms = 1500\nlookup_timeout_ms = 400\n");
    let p = Programs::get();
    let approved = p.install("hello", &m.path, "approved");
    f.set_default_levels("lockdown", "lockdown");
    f.ok(&["file", "approve", approved.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(3), || run(&approved, &[], &[]).ok()).is_some());

    // Freeze the service: connections are accepted by the kernel, nothing answers.
    let server = f.servers[0].pid();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    let stranger = p.install("hello2", &m.path, "stranger");
    let t = std::time::Instant::now();
    let r = run(&stranger, &[], &[]);
    let took = t.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(server, libc::SIGCONT) };
    assert!(
        r.exec_refused(),
        "unknown code is refused even when the service hangs: {r:?}"
    );
    assert!(
        took < Duration::from_millis(1500 + 700),
        "answered within the deadline: {took:?}"
    );
    eprintln!(
        "decision with a hung service took {took:?} (lookup timeout 400 ms, deadline 1500 ms)"
    );
    assert!(run(&approved, &[], &[]).ok(), "approved code unaffected");
}

fn postgres_url() -> String {
    std::env::var("PALISADE_TEST_POSTGRES")
        .expect("PALISADE_TEST_POSTGRES is not set: run `source scripts/postgres.sh` (scripts/test.sh does)")
}

/// A fresh PostgreSQL database, dropped on drop.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    fn new() -> PgDb {
        let admin_url = postgres_url();
        let name = format!("palisade_it_{}_{}", std::process::id(), rand_suffix());
        let r = run(
            "psql",
            &[&admin_url, "-qc", &format!("CREATE DATABASE {name}")],
            &[],
        );
        assert!(r.ok(), "create database: {r:?}");
        let url = match admin_url.rfind('/') {
            Some(i) => format!("{}/{name}", &admin_url[..i]),
            None => panic!("bad PALISADE_TEST_POSTGRES"),
        };
        PgDb {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = run(
            "psql",
            &[
                &self.admin_url,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ],
            &[],
        );
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[test]
fn replicas_over_postgres_push_a_ban_to_an_agent_on_the_other_replica() {
    require_root!();
    let pg = PgDb::new();
    let m = TestMount::tmpfs();
    // Admin commands go to replica 0; the agent is connected to replica 1.
    let f = Fleet::start(&m, Some(pg.url.clone()), 2);
    let hello = Programs::get().install("hello", &m.path, "hello");
    f.ok(&["policy", "set-level", "default", "lockdown"]);
    f.ok(&["file", "approve", hello.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(3), || run(&hello, &[], &[]).ok()).is_some(),
        "{}",
        f.agent_log()
    );
    let t = std::time::Instant::now();
    f.ok(&["file", "ban", hello.to_str().unwrap()]);
    let took = eventually(Duration::from_secs(5), || {
        run(&hello, &[], &[]).exec_refused()
    })
    .map(|_| t.elapsed());
    let took = took.expect("ban through replica 0 reaches the agent on replica 1");
    eprintln!("cross-replica ban took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let computers = f.ok(&["computers"]);
    assert!(computers.contains("connected"), "{computers}");
}

#[test]
fn each_computers_answer_times_reach_the_fleet_view() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    f.stop_agent();
    f.start_agent_configured("status_interval_secs = 5\n");
    let hello = Programs::get().install("hello", &m.path, "hello");
    f.set_default_levels("lockdown", "lockdown");
    f.ok(&["file", "approve", hello.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(3), || run(&hello, &[], &[]).ok()).is_some(),
        "{}",
        f.agent_log()
    );
    let answered = |v: &serde_json::Value| {
        ["reader", "workers"]
            .iter()
            .map(|w| v[w]["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let mut reported = serde_json::Value::Null;
    let mut service_count = |at_least: u64| {
        eventually(Duration::from_secs(25), || {
            reported = serde_json::from_str(&f.ok(&["computers", "--json"])).unwrap();
            answered(&reported[0]["status"]["latency"]) >= at_least
        })
        .unwrap_or_else(|| panic!("no answer times reached the service\n{}", f.agent_log()));
        answered(&reported[0]["status"]["latency"])
    };
    // The level change made the agent report (with the answers until then).
    let before = service_count(1);
    // New answers with nothing else changing: the agent reports again at a
    // heartbeat once the interval has passed.
    let local_count = || {
        let local: serde_json::Value = serde_json::from_str(&f.ok(&["status", "--json"])).unwrap();
        answered(&local["latency"])
    };
    let other = Programs::get().install("hello2", &m.path, "other");
    f.ok(&["file", "approve", other.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(3), || run(&other, &[], &[]).ok()).is_some());
    let now = local_count();
    assert!(now > before, "the agent answered the new program's events");
    let t = std::time::Instant::now();
    let after = service_count(now);
    eprintln!(
        "answer times reached the fleet view {:?} after the run ({before} -> {after} answers)",
        t.elapsed()
    );
    assert!(
        after <= local_count(),
        "the service has at most what the agent counted"
    );
    let latency = &reported[0]["status"]["latency"];
    assert!(
        ["reader", "workers"]
            .iter()
            .any(|w| latency[w]["max_ns"].as_u64() > Some(0)),
        "{latency}"
    );
    let table = f.ok(&["computers"]);
    eprintln!("{table}");
    assert!(table.contains("P99"), "{table}");
    assert!(
        table.contains("answer time over 1 computer, since each agent started: ")
            && table.contains("answers, mean"),
        "{table}"
    );
    // The report made at a heartbeat carries the window since the one
    // before: at least the interval long, and no more answers than in all.
    let recent = &reported[0]["status"]["recent"];
    assert!(recent["secs"].as_u64().unwrap() >= 5, "{recent}");
    assert!(answered(&recent["latency"]) <= after, "{recent}");
}

/// A file approved on this computer while the service was away (here by a
/// trusted directory) is sent to the service once it is back; if the
/// service does not keep it (the rule was disabled meanwhile), no change
/// says so, and the agent must ask: the approval it made in memory does
/// not stand.
#[test]
fn a_local_approval_the_service_does_not_keep_is_withdrawn() {
    require_root!();
    let m = TestMount::tmpfs();
    let mut f = Fleet::start(&m, None, 1);
    let dist = m.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    f.set_default_levels("lockdown", "lockdown");
    f.ok(&["rule", "add", "trusted-dir", dist.to_str().unwrap()]);
    // The rule has reached the agent once a file placed there runs.
    let first = Programs::get().install("hello2", &dist, "first");
    assert!(
        eventually(Duration::from_secs(5), || run(&first, &[], &[]).ok()).is_some(),
        "{}",
        f.agent_log()
    );

    f.servers[0].kill();
    assert!(
        eventually(Duration::from_secs(20), || f.status_code() == Some(3)).is_some(),
        "disconnected"
    );
    let tool = Programs::get().install("hello", &dist, "tool");
    assert!(
        eventually(Duration::from_secs(5), || run(&tool, &[], &[]).ok()).is_some(),
        "approved on this computer while the service is away: {}",
        f.agent_log()
    );

    // The rule is disabled while the service is down (as by another
    // replica), and the service comes back on the same address.
    let db = f.database.trim_start_matches("sqlite://");
    let db = db.split('?').next().unwrap();
    let r = run(
        "/usr/bin/python3",
        &[
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             n = c.execute(\"UPDATE rules SET enabled = 0 WHERE kind = 'trusted_directory'\").rowcount\n\
             c.commit()\n\
             assert n == 1, n",
            db,
        ],
        &[],
    );
    assert!(r.ok(), "{r:?}");
    f.restart_first_server();
    assert!(
        eventually(Duration::from_secs(20), || f.status_code() == Some(0)).is_some(),
        "connected again"
    );
    assert!(
        eventually(Duration::from_secs(10), || run(&tool, &[], &[])
            .exec_refused())
        .is_some(),
        "an approval the service did not keep stood: {}",
        f.agent_log()
    );
}

/// An agent with `workers` workers and a deadline of `deadline_ms`, in
/// lockdown, over a mount holding `padded-0..2` (approved, one content, and
/// above the size the reader hashes itself, so a worker decides each first
/// run; `padded-0` has run) and `big-0..bigs` (unknown, 2 GiB of holes,
/// hashed in about a second). Everything is written while no agent runs,
/// so nothing is hashed when written.
fn workers_fleet(
    m: &TestMount,
    workers: usize,
    deadline_ms: u64,
    bigs: usize,
) -> (Fleet, Vec<PathBuf>, Vec<PathBuf>) {
    let mut f = Fleet::start(m, None, 1);
    f.stop_agent();
    let p = Programs::get();
    let first = p.install("hello", &m.path, "padded-0");
    {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&first)
            .unwrap();
        w.write_all(&vec![0u8; 1 << 20]).unwrap();
    }
    let mut padded = vec![first.clone()];
    for i in 1..3 {
        let to = m.path.join(format!("padded-{i}"));
        std::fs::copy(&first, &to).unwrap();
        padded.push(to);
    }
    let big: Vec<_> = (0..bigs)
        .map(|i| {
            let big = p.install("hello2", &m.path, &format!("big-{i}"));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&big)
                .unwrap()
                .set_len(2 << 30)
                .unwrap();
            big
        })
        .collect();
    f.start_agent_configured(&format!(
        "workers = {workers}\ndecision_deadline_ms = {deadline_ms}\nlookup_timeout_ms = 300\n"
    ));
    f.set_default_levels("lockdown", "lockdown");
    f.ok(&["file", "approve", first.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(3), || run(&first, &[], &[]).ok()).is_some(),
        "{}",
        f.agent_log()
    );
    (f, padded, big)
}

impl Fleet {
    /// The agent's counters.
    fn stats(&self) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&self.ok(&["status", "--json"])).unwrap()["stats"]
            .clone()
    }
}

/// Run `program` as `uid` on a thread of its own (its exec waits for the agent).
fn run_as(program: &Path, uid: u32) -> std::thread::JoinHandle<Ran> {
    use std::os::unix::process::CommandExt;
    let program = program.to_owned();
    std::thread::spawn(move || {
        let spawn = std::process::Command::new(&program)
            .uid(uid)
            .gid(uid)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut c| c.wait());
        Ran {
            spawn,
            stdout: String::new(),
            stderr: String::new(),
        }
    })
}

/// A worker held past its event's deadline (here hashing 2 GiB) is
/// replaced at that deadline: the event behind it is decided by the new
/// worker, not left to wait for its own deadline. When the held one comes
/// back, the pool returns to its size. (With no replacement, the second
/// program waits for the deadline and is refused: checked.)
#[test]
fn a_worker_held_past_the_deadline_is_replaced() {
    require_root!();
    let m = TestMount::tmpfs();
    // Two workers: one of them is kept for users with nothing in progress
    // (see the next test), so one user's second event waits for a new one.
    let (f, padded, big) = workers_fleet(&m, 2, 500, 1);
    let before = f.stats();
    assert_eq!(before["workers"], 2, "{before}");
    // A worker hashes `big` (unknown: refused at its deadline).
    let held = run_as(&big[0], 0);
    std::thread::sleep(Duration::from_millis(250));
    let t = std::time::Instant::now();
    let r = run(&padded[1], &[], &[]);
    let took = t.elapsed();
    assert!(
        r.ok(),
        "decided by a new worker: {r:?} after {took:?}\n{}",
        f.agent_log()
    );
    let during = f.stats();
    assert!(held.join().unwrap().exec_refused());
    assert_eq!(
        during["timeouts"].as_u64(),
        before["timeouts"].as_u64().map(|n| n + 1),
        "only the held event waited for its deadline: {during}"
    );
    assert!(during["workers_added"].as_u64() >= Some(1), "{during}");
    assert!(
        f.agent_log()
            .contains("workers held past an event's deadline"),
        "{}",
        f.agent_log()
    );
    // Once the hash is done, two workers again, and they decide.
    assert!(
        eventually(Duration::from_secs(20), || f.stats()["workers"] == 2).is_some(),
        "{}",
        f.stats()
    );
    assert!(run(&padded[2], &[], &[]).ok());
}

/// One user cannot hold every worker: with three files that take seconds
/// to decide run by `nobody` on two workers, root's program is decided at
/// once by the worker kept for users with nothing in progress. (With one
/// queue for all it waited for the first deadline, 1.5 s: checked.)
#[test]
fn one_user_cannot_hold_every_worker() {
    require_root!();
    let m = TestMount::tmpfs();
    let (f, padded, big) = workers_fleet(&m, 2, 1500, 3);
    let nobody: Vec<_> = big.iter().map(|b| run_as(b, 65534)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    let r = run(&padded[1], &[], &[]);
    let took = t.elapsed();
    assert!(r.ok(), "{r:?}\n{}", f.agent_log());
    assert!(
        took < Duration::from_millis(700),
        "root's program waited {took:?} behind nobody's"
    );
    for n in nobody {
        assert!(n.join().unwrap().exec_refused());
    }
}
