//! `palisade up`: the whole system on this machine, in the foreground.
use super::admin::{AdminClient, Refused};
use crate::cli::UpArgs;
use crate::clicfg::CliConfig;
use anyhow::{Context, Result};
use palisade_agent::config::{AgentConfig, AgentConfigFile};
use palisade_agent::identity::{enroll, hostname, Identity};
use palisade_agent::{RunningAgent, StartOptions};
use palisade_api::admin::{
    CreateEnrollToken, EnrollTokenCreated, Health, PolicyInfo, SetLevels, WhoAmI,
};
use palisade_core::{Level, Levels, Name};
use palisade_server::{Db, Server, ServerConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const ORG: &str = "default";
const ADMIN: &str = "admin";
const POLICY: &str = "default";

pub(crate) async fn run(a: UpArgs) -> Result<ExitCode> {
    // 0. The agent's configuration, checked before anything is written or
    // started; its errors name the flag given, not the field it fills.
    let absolute = std::path::absolute(&a.data_dir)
        .with_context(|| format!("--data-dir {}", a.data_dir.display()))?;
    agent_config(&a, absolute.join("agent"))?;

    std::fs::create_dir_all(&a.data_dir).with_context(|| a.data_dir.display().to_string())?;
    let dir = std::fs::canonicalize(&a.data_dir)
        .with_context(|| format!("--data-dir {}", a.data_dir.display()))?;
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir).with_context(|| agent_dir.display().to_string())?;
    // The server's database, the CLI's token and the agent's key are
    // root's; users reach only `agent/request.sock`.
    for d in [&dir, &agent_dir] {
        palisade_agent::store::traverse_only(d).with_context(|| d.display().to_string())?;
    }
    let agent_cfg = agent_config(&a, agent_dir.clone())?;
    let cli_path = dir.join("cli.toml");
    let ca_path = dir.join("ca.crt");
    let db_path = dir.join("server.db");
    // Made 0600 by `Db::connect` (it holds the CA key, TOTP secrets and
    // token hashes).
    let database = sqlite_url(&db_path);

    // 1. The organization, its `default` policy and an admin. The token is
    // the one made now, or the one saved last (never `$PALISADE_TOKEN`,
    // which is the caller's), checked once the server answers.
    let org = Name::parse(ORG)?;
    let admin_name = Name::parse(ADMIN)?;
    let db = Db::connect_with(&database, 2)
        .await
        .context("opening the server database")?;
    let boot = palisade_server::bootstrap(&db, &org, &admin_name).await?;
    let first_run = boot.org_created;
    let saved_token = match boot.admin_token {
        Some(t) => Some(t),
        None => match CliConfig::load_file(&cli_path) {
            Ok(c) => Some(c.token),
            Err(e) => {
                if cli_path.exists() {
                    tracing::warn!("{e:#}; a new admin token is made");
                }
                None
            }
        },
    };

    // 2. The server.
    let mut tls_names = ServerConfig::default().tls_names;
    // Reached at the address it listens on: that must be in its certificate.
    if !a.listen.ip().is_unspecified() {
        let ip = a.listen.ip().to_string();
        if !tls_names.contains(&ip) {
            tls_names.push(ip);
        }
    }
    let config = ServerConfig {
        listen: a.listen,
        database,
        tls_names,
        // Everything runs on this one machine for its own administrator,
        // who may want alerts on it (its syslog, a receiver on loopback);
        // a served fleet (`palisade server`) keeps the defaults: public
        // receivers only.
        alerts_allow_private_addresses: true,
        alerts_local_syslog: true,
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.context("starting the server")?;
    let addr = server.local_addr();
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let url = format!(
        "https://{}",
        std::net::SocketAddr::new(host.parse()?, addr.port())
    );
    let ca_pem = server.ca_pem().to_owned();
    std::fs::write(&ca_path, &ca_pem).with_context(|| ca_path.display().to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.serve(async move {
        let _ = stop_rx.await;
    }));
    let probe = AdminClient::new(&url, &ca_pem, "")?;
    let _: Health = probe
        .get("/api/v1/health")
        .await
        .context("the server does not answer")?;

    // The saved token is reused only while the server takes it as this
    // admin's; a stale or revoked one is replaced.
    let token = match saved_token {
        Some(t) if is_admin_token(&AdminClient::new(&url, &ca_pem, &t)?).await? => t,
        _ => {
            tracing::info!("making a new admin token for {ADMIN} (none saved, or refused)");
            palisade_server::create_admin_token(&db, &org, &admin_name).await?
        }
    };
    db.close().await;
    let admin = AdminClient::new(&url, &ca_pem, &token)?;

    // 3. What the admin commands need.
    let cli = CliConfig {
        server: url.clone(),
        ca_cert: ca_path.clone(),
        token,
        agent_socket: Some(agent_dir.join("agent.sock")),
    };
    cli.save(&cli_path)?;
    let mut user_cli = None;
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".config/palisade/cli.toml");
        match cli.save(&p) {
            Ok(()) => user_cli = Some(p),
            Err(e) => tracing::warn!(
                "cannot save the admin configuration for this user: {e:#} (use --cli-config {})",
                cli_path.display()
            ),
        }
    }

    // 4. Levels. The filesystems still to scan, found as the agent will
    // find them: until the scan has approved what they hold, a level
    // asked for is enforced as monitor at most.
    let scanned_marker = agent_dir.join("scanned-filesystems.json");
    let scanned: BTreeSet<String> = std::fs::read_to_string(&scanned_marker)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let to_scan: Vec<String> = if a.no_scan {
        Vec::new()
    } else {
        let all = palisade_agent::mounts::all().context("reading the mount table")?;
        palisade_agent::mounts::watch_set(&all, &agent_cfg.watch)
            .context("resolving watched paths")?
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .filter(|m| !scanned.contains(m))
            .collect()
    };
    // A level given on the command line is set; the first run sets the
    // default (monitor); a restart without one keeps the policy's levels,
    // as an admin may have set them since (`policy set-level`).
    let asked = if a.lockdown {
        Some(Level::Lockdown)
    } else if a.monitor || first_run {
        Some(Level::Monitor)
    } else {
        None
    };
    let initial = asked.map(|target| {
        if to_scan.is_empty() {
            target
        } else {
            target.min(Level::Monitor)
        }
    });
    let levels = match initial {
        Some(level) => {
            set_levels(&admin, level).await?;
            Levels {
                connected: level,
                disconnected: level,
            }
        }
        None => {
            let policies: Vec<PolicyInfo> = admin
                .get("/api/v1/policies")
                .await
                .context("reading the policy's levels")?;
            let p = policies
                .into_iter()
                .find(|p| p.name == POLICY)
                .with_context(|| format!("no {POLICY} policy"))?;
            if !to_scan.is_empty() && p.levels.connected > Level::Monitor {
                tracing::warn!(
                    "the {POLICY} policy is at {}: the initialization scan runs under it \
                     (`--monitor` lowers it until the scan is done)",
                    p.levels.connected
                );
            }
            p.levels
        }
    };

    // 5. The local agent, enrolled on first start.
    if Identity::load(&agent_dir)?.is_none() {
        let t: EnrollTokenCreated = admin
            .post(
                "/api/v1/enrollment-tokens",
                &CreateEnrollToken {
                    policy: Name::parse(POLICY)?,
                    max_uses: Some(1),
                    ttl_secs: Some(600),
                },
            )
            .await?;
        let id = enroll(&url, &t.token, &hostname())
            .await
            .context("enrolling the local agent")?;
        id.save(&agent_dir)?;
        tracing::info!("local agent enrolled as {}", id.computer);
    }
    let agent = RunningAgent::start(
        agent_cfg,
        StartOptions {
            // For an agent with no saved levels (its first start): the
            // policy's, until the service says.
            initial_levels: Some(levels),
        },
    )
    .await?;
    if !agent.wait_connected(Duration::from_secs(15)).await {
        tracing::warn!("the local agent could not connect to the server yet");
    }

    // 6. The initialization scan, once per filesystem.
    if !to_scan.is_empty() {
        println!(
            "initialization scan of {} (bulk approval of what is installed)...",
            to_scan.join(", ")
        );
        let s = agent
            .scan(true, true)
            .await
            .context("initialization scan")?;
        println!(
            "scan: {} files, {} executables/libraries/scripts ({} MB) approved locally in {:.1} s ({} unreadable)",
            s.files_seen,
            s.code_files,
            s.bytes_hashed >> 20,
            s.elapsed_ms as f64 / 1000.0,
            s.errors
        );
        let mut all = scanned.clone();
        all.extend(
            agent
                .mounts()
                .iter()
                .map(|m| m.mount_point.display().to_string()),
        );
        std::fs::write(&scanned_marker, serde_json::to_string(&all)?)
            .with_context(|| scanned_marker.display().to_string())?;
    }
    if let Some(target) = asked {
        if initial != Some(target) {
            set_levels(&admin, target).await?;
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while agent.engine().level() != target && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    println!();
    println!("Palisade is up ({}).", agent.engine().level());
    println!(
        "  server     {url}  (SQLite database {})",
        dir.join("server.db").display()
    );
    println!("  CA         {}", ca_path.display());
    println!(
        "  agent      {} (watching {})",
        agent_dir.display(),
        agent
            .mounts()
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  admin      {}{}",
        cli_path.display(),
        user_cli
            .map(|p| format!(" (copied to {})", p.display()))
            .unwrap_or_default()
    );
    println!(
        "  console    {}/console/  (first run `palisade admin invite {ADMIN}` for a link that sets your password)",
        url.trim_end_matches('/')
    );
    println!("  switch     palisade policy set-level {POLICY} lockdown|monitor|disabled");
    println!("  try        palisade status; palisade events --follow; palisade file show <PATH>");
    println!("palisade: ready");

    super::termination().await;
    agent.shutdown().await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server_task).await;
    Ok(ExitCode::SUCCESS)
}

/// The agent's configuration from `up`'s flags, with `data_dir`; an error
/// names the flag.
fn agent_config(a: &UpArgs, data_dir: PathBuf) -> Result<AgentConfig> {
    AgentConfigFile {
        data_dir: Some(data_dir),
        watch: Some(a.watch.clone()),
        decision_deadline_ms: a.deadline_ms,
        package_root: a.package_root.clone(),
        ..AgentConfigFile::default()
    }
    .validate()
    .map_err(|e| {
        let flag = match e.field.as_str() {
            "data_dir" => "--data-dir",
            "watch" => "--watch",
            "decision_deadline_ms" => "--deadline-ms",
            "package_root" => "--package-root",
            // Not set by a flag: the defaults are valid.
            other => other,
        };
        anyhow::anyhow!("{flag}: {}", e.message)
    })
}

/// Whether `client`'s token is accepted as this admin's, in this
/// organization: `false` when the server refuses it (401: unknown,
/// revoked or expired) or it is another admin's.
async fn is_admin_token(client: &AdminClient) -> Result<bool> {
    match client.get::<WhoAmI>("/api/v1/whoami").await {
        Ok(w) => Ok(w.admin == ADMIN && w.organization == ORG),
        Err(e)
            if e.downcast_ref::<Refused>()
                .is_some_and(|r| r.status == reqwest::StatusCode::UNAUTHORIZED) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.context("checking the saved admin token")),
    }
}

/// The `sqlite://` URL (created if missing) of the database file at the
/// absolute `path`, percent-encoded: sqlx decodes the path, and reads
/// `?` and `#` as the URL's query and fragment.
fn sqlite_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("sqlite://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    url
}

async fn set_levels(admin: &AdminClient, level: Level) -> Result<()> {
    let _: PolicyInfo = admin
        .put(
            &format!("/api/v1/policies/{POLICY}/levels"),
            &SetLevels {
                level,
                disconnected_level: Some(level),
                approve_existing: false,
            },
        )
        .await
        .context("setting the policy's level")?;
    Ok(())
}
