//! Admin commands: thin clients of the admin API.
use crate::cli::{EventsArgs, FileCmd, FileStateArgs, PolicyCmd, StatusArgs};
use crate::clicfg::CliConfig;
use crate::shown::shown;
use anyhow::{bail, Context, Result};
use palisade_api::admin::{
    ComputerInfo, CreatePolicy, EventPage, EventRecord, FileDetails, PolicyInfo, ScopeRef,
    SetFileState, SetLevels,
};
use palisade_api::ErrorBody;
use palisade_core::latency::{human_ns, total, HistogramSnapshot};
use palisade_core::{FileState, Name, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The service answered a request with an error status.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: reqwest::StatusCode,
    /// Its message, escaped for the terminal.
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

/// A client of the admin API.
pub(crate) struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub(crate) fn new(server: &str, ca_pem: &str, token: &str) -> Result<AdminClient> {
        // The token must not go in the clear.
        palisade_agent::link::require_https(server).context("server in the CLI configuration")?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("CA certificate")?,
            )
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(AdminClient {
            http,
            base: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    pub(crate) fn from_config(explicit: Option<&Path>) -> Result<(AdminClient, CliConfig)> {
        let cfg = CliConfig::load(explicit)?;
        let ca = std::fs::read_to_string(&cfg.ca_cert)
            .with_context(|| cfg.ca_cert.display().to_string())?;
        Ok((AdminClient::new(&cfg.server, &ca, &cfg.token)?, cfg))
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the service at {}", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| match b.field {
                    Some(f) => format!("{} (field {f})", b.error),
                    None => b.error,
                })
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(Refused {
                status,
                message: shown(&msg).into_owned(),
            }
            .into());
        }
        serde_json::from_slice(&body).context("malformed answer from the service")
    }

    pub(crate) async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .timeout(Duration::from_secs(60)),
        )
        .await
    }

    pub(crate) async fn put<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .json(body)
                .timeout(Duration::from_secs(30)),
        )
        .await
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the service at {}", self.base))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        let msg = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {}", shown(&msg))
    }

    pub(crate) async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .json(body)
                .timeout(Duration::from_secs(30)),
        )
        .await
    }
}

/// Percent-encode one URL path segment (publisher names may hold spaces).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a file argument names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// A SHA-256 (64 hex digits, no `/`).
    Hash(Sha256),
    /// A file, hashed here.
    Path(&'a Path),
}

/// A file argument: 64 hex digits are a SHA-256, even where a file has
/// that name (an admin working in a directory others can write to, such
/// as `/tmp`, must not ban or approve a decoy planted under a hash's
/// name); anything else is a path. A file named like a hash is given as
/// `./NAME`.
fn target_of(target: &str) -> Target<'_> {
    if !target.contains('/') {
        if let Ok(sha) = Sha256::parse(target) {
            return Target::Hash(sha);
        }
    }
    Target::Path(Path::new(target))
}

/// Open a file given on the command line to hash it: never waiting on a
/// FIFO or a device, and only a regular file.
fn open_to_hash(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// A file argument ([`target_of`]): a hash, or a file hashed here (by the
/// local agent when this process may not read it).
pub(crate) fn resolve_target(cfg: Option<&Path>, target: &str) -> Result<(Sha256, Option<String>)> {
    let p = match target_of(target) {
        Target::Hash(sha) => return Ok((sha, None)),
        Target::Path(p) => p,
    };
    if p.exists() {
        let abs = std::fs::canonicalize(p)?;
        let sha = match open_to_hash(&abs).and_then(palisade_agent::files::hash) {
            Ok(sha) => sha,
            // Refused by the agent: without the BPF guard an unapproved ELF
            // file on a watched mount cannot even be read here. The agent
            // hashes it for us, opened with our own permissions.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => hash_by_agent(cfg, &abs)
                .with_context(|| {
                    format!(
                        "hashing {} (reading it: {e})",
                        shown(&abs.to_string_lossy())
                    )
                })?,
            Err(e) => {
                return Err(e).with_context(|| format!("hashing {}", shown(&abs.to_string_lossy())))
            }
        };
        return Ok((sha, Some(abs.to_string_lossy().into_owned())));
    }
    bail!("{}: no such file, and not a SHA-256", shown(target))
}

/// The local agent's request socket: beside its control socket when the
/// CLI configuration names one, otherwise in the agent's default data
/// directory.
fn request_socket(cfg: Option<&Path>) -> PathBuf {
    CliConfig::load(cfg)
        .ok()
        .and_then(|c| c.agent_socket)
        .and_then(|s| s.parent().map(|d| d.join("request.sock")))
        .unwrap_or_else(|| Path::new(palisade_agent::config::DEFAULT_DATA_DIR).join("request.sock"))
}

/// Have the local agent hash `path` (opened with this process's ids).
fn hash_by_agent(cfg: Option<&Path>, path: &Path) -> Result<Sha256> {
    use palisade_agent::control::{request, LocalRequest, LocalRequestAnswer};
    let socket = request_socket(cfg);
    let ask = LocalRequest {
        path: path.to_string_lossy().into_owned(),
        reason: String::new(),
        hash_only: true,
    };
    match request(&socket, &ask).context("asking the local agent to hash it")? {
        LocalRequestAnswer::Hashed { sha256, .. } => Ok(sha256),
        LocalRequestAnswer::Refused { error } => {
            bail!("the local agent refused: {}", shown(&error))
        }
        LocalRequestAnswer::Filed { .. } => bail!("the local agent filed a request instead"),
    }
}

pub(crate) fn name(field: &str, s: &Option<String>) -> Result<Option<Name>> {
    s.as_deref()
        .map(|v| Name::parse(v).with_context(|| format!("--{field}")))
        .transpose()
}

pub(crate) async fn file(cfg: Option<&Path>, cmd: FileCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let (args, state): (FileStateArgs, FileState) = match cmd {
        FileCmd::Approve(a) => (a, FileState::Approved),
        FileCmd::Ban(a) => (a, FileState::Banned),
        FileCmd::Unapprove(a) => (a, FileState::Unapproved),
        FileCmd::Show { target, json } => {
            let (sha, _) = resolve_target(cfg, &target)?;
            let details: FileDetails = client.get(&format!("/api/v1/files/{sha}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&details)?);
            } else {
                print_details(&details);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let policy = name("policy", &args.policy)?;
    let computer = name("computer", &args.computer)?;
    for target in &args.targets {
        let (sha, path) = resolve_target(cfg, target)?;
        let body = SetFileState {
            state,
            policy: policy.clone(),
            computer: computer.clone(),
            path: path.clone(),
        };
        let _: FileDetails = client
            .put(&format!("/api/v1/files/{sha}/state"), &body)
            .await?;
        let scope = match (&policy, &computer) {
            (_, Some(c)) => format!("on computer {c}"),
            (Some(p), None) => format!("for policy {p}"),
            (None, None) => "for all computers".to_owned(),
        };
        println!(
            "{state} {scope}: {sha}{}",
            path.map(|p| format!("  {}", shown(&p))).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) use palisade_api::format_utc_ms as fmt_ms;

fn print_details(d: &FileDetails) {
    println!("sha256      {}", d.sha256);
    match d.first_seen_ms {
        Some(ms) => println!("first seen  {}", fmt_ms(ms)),
        None => println!("first seen  never reported by an agent"),
    }
    println!("\nstates:");
    if d.states.is_empty() {
        println!("  (none: the file is unapproved everywhere)");
    }
    for s in &d.states {
        let scope = match &s.scope {
            ScopeRef::Global => "global".to_owned(),
            ScopeRef::Policy(p) => format!("policy {p}"),
            ScopeRef::Computer(c) => format!("computer {c}"),
        };
        println!(
            "  {:<11} {:<24} by {} at {}",
            s.state.as_str(),
            shown(&scope),
            shown(&s.updated_by),
            fmt_ms(s.updated_ms)
        );
    }
    println!("\non computers:");
    if d.effective.is_empty() {
        println!("  (no computers)");
    }
    for e in &d.effective {
        println!(
            "  {:<20} policy {:<14} {:<9} {}",
            shown(&e.computer),
            shown(&e.policy),
            e.approval.as_str(),
            shown(&e.explanation)
        );
    }
    println!("\nseen at (local state of each instance):");
    if d.instances.is_empty() {
        println!("  (nowhere yet)");
    }
    for i in &d.instances {
        let gone = i
            .deleted_ms
            .map(|t| format!(", gone since {}", fmt_ms(t)))
            .unwrap_or_default();
        println!(
            "  {:<20} {:<10} {}  ({} times, last {}{gone})",
            shown(&i.computer),
            i.local_state.as_str(),
            shown(&i.path),
            i.count,
            fmt_ms(i.last_seen_ms)
        );
    }
}

fn print_event(r: &EventRecord, json: bool) {
    if json {
        if let Ok(s) = serde_json::to_string(r) {
            println!("{s}");
        }
        return;
    }
    let e = &r.event;
    let exe = e
        .process
        .exe
        .as_ref()
        .map(|x| x.path.as_str())
        .unwrap_or("?");
    println!(
        "{:>6} {} {:<12} {:<11} {:<16} {} sha256={} pid={} uid={} exe={} ({})",
        r.id,
        fmt_ms(e.time_ms),
        shown(&r.computer),
        e.kind.as_str(),
        e.operation.as_str(),
        shown(&e.path),
        e.sha256.map(|s| s.short()).unwrap_or_else(|| "-".into()),
        e.process.pid,
        e.process.uid,
        shown(exe),
        shown(&e.reason)
    );
}

pub(crate) async fn events(cfg: Option<&Path>, a: EventsArgs) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let mut filters = String::new();
    if let Some(k) = &a.kind {
        filters.push_str(&format!("&kind={k}"));
    }
    if let Some(c) = &a.computer {
        filters.push_str(&format!("&computer={c}"));
    }
    // Find where the last `limit` events start: page through ids.
    let mut after = 0i64;
    let mut all: Vec<EventRecord> = Vec::new();
    loop {
        let page: EventPage = client
            .get(&format!("/api/v1/events?after={after}&limit=1000{filters}"))
            .await?;
        if page.events.is_empty() {
            break;
        }
        after = page.last_id;
        all.extend(page.events);
        let keep = a.limit as usize;
        if all.len() > keep {
            all.drain(..all.len() - keep);
        }
    }
    for r in &all {
        print_event(r, a.json);
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Following outlives the service's restarts and the network's
    // hiccups: a failed poll is retried from the same event, sooner first;
    // a refusal (401, 403, any 4xx but a timeout or throttling) ends it.
    let mut backoff = FOLLOW_RETRY_MIN;
    let mut disconnected = false;
    loop {
        let got: Result<EventPage> = client
            .get(&format!(
                "/api/v1/events?after={after}&limit=1000&wait_ms=25000{filters}"
            ))
            .await;
        match got {
            Ok(page) => {
                if disconnected {
                    eprintln!("palisade events: reconnected");
                    disconnected = false;
                }
                backoff = FOLLOW_RETRY_MIN;
                for r in &page.events {
                    print_event(r, a.json);
                }
                after = page.last_id.max(after);
            }
            Err(e) if !follow_retries(&e) => return Err(e),
            Err(e) => {
                if !disconnected {
                    eprintln!(
                        "palisade events: {}; retrying",
                        format!("{e:#}").replace('\n', " ")
                    );
                    disconnected = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(FOLLOW_RETRY_MAX);
            }
        }
    }
}

/// The first wait after a failed poll of `events --follow`, doubled at
/// each failure up to [`FOLLOW_RETRY_MAX`].
const FOLLOW_RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest wait between polls of `events --follow` while the service
/// cannot be reached.
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(15);

/// Whether `events --follow` retries after `e`: yes, unless the service
/// refused the request itself (a client error, 401 and 403 included) or
/// answered what this client cannot read, which the same request would
/// meet again; a timeout (408) or throttling (429) passes.
fn follow_retries(e: &anyhow::Error) -> bool {
    if e.downcast_ref::<serde_json::Error>().is_some() {
        return false;
    }
    match e.downcast_ref::<Refused>() {
        Some(r) => {
            !r.status.is_client_error()
                || r.status == reqwest::StatusCode::REQUEST_TIMEOUT
                || r.status == reqwest::StatusCode::TOO_MANY_REQUESTS
        }
        None => true,
    }
}

pub(crate) async fn computers(cfg: Option<&Path>, json: bool) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let list: Vec<ComputerInfo> = client.get("/api/v1/computers").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<14} {:<9} {:<9} {:<10} {:>9} {:>10} {:>10} {:>11}  last seen",
        "NAME", "POLICY", "LEVEL", "OFFLINE", "LINK", "ANSWERS", "MEDIAN", "P99", "RECENT P99"
    );
    let at_most = |h: &HistogramSnapshot, q: f64| {
        h.quantile(q)
            .map_or_else(|| "–".into(), |ns| format!("≤{}", human_ns(ns)))
    };
    for c in &list {
        let all = c.latency().map(|l| l.all()).unwrap_or_default();
        let recent = c.recent_latency().map(|l| l.all()).unwrap_or_default();
        println!(
            "{:<20} {:<14} {:<9} {:<9} {:<10} {:>9} {:>10} {:>10} {:>11}  {}",
            shown(&c.name),
            shown(&c.policy),
            c.levels.connected.as_str(),
            c.levels.disconnected.as_str(),
            if c.revoked {
                "revoked"
            } else if c.connected {
                "connected"
            } else {
                "offline"
            },
            all.count,
            at_most(&all, 0.5),
            at_most(&all, 0.99),
            at_most(&recent, 0.99),
            c.last_seen_ms.map(fmt_ms).unwrap_or_else(|| "never".into())
        );
    }
    // Events that will not reach the service, where a computer has some.
    for c in &list {
        if let Some(lost) = c
            .status
            .as_ref()
            .map(|s| s.event_losses)
            .filter(|l| l.any())
        {
            println!(
                "{}: events lost: {} dropped (queue full), {} refused by the service (kept on the computer in events-refused.jsonl)",
                shown(&c.name), lost.dropped, lost.set_aside
            );
        }
    }
    // Every computer's answers added up: the fleet's answer time, since
    // each agent started and in each one's last report window.
    for (what, (sum, reporting)) in [
        (
            "since each agent started",
            total(list.iter().filter_map(ComputerInfo::latency)),
        ),
        (
            "in each one's last report window",
            total(list.iter().filter_map(ComputerInfo::recent_latency)),
        ),
    ] {
        if reporting > 0 {
            println!(
                "answer time over {reporting} computer{}, {what}: {}",
                if reporting == 1 { "" } else { "s" },
                latency_line(&sum)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn policy(cfg: Option<&Path>, cmd: PolicyCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    match cmd {
        PolicyCmd::List(j) => {
            let list: Vec<PolicyInfo> = client.get("/api/v1/policies").await?;
            if j.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<20} {:<9} {:<12} computers",
                    "NAME", "LEVEL", "DISCONNECTED"
                );
                for p in list {
                    println!(
                        "{:<20} {:<9} {:<12} {}",
                        p.name,
                        p.levels.connected.as_str(),
                        p.levels.disconnected.as_str(),
                        p.computers
                    );
                }
            }
        }
        PolicyCmd::Create {
            name,
            level,
            disconnected,
        } => {
            let body = CreatePolicy {
                name: Name::parse(&name).context("policy name")?,
                level: Some(level),
                disconnected_level: disconnected,
            };
            let p: PolicyInfo = client.post("/api/v1/policies", &body).await?;
            println!(
                "created policy {} ({} / disconnected {})",
                p.name, p.levels.connected, p.levels.disconnected
            );
        }
        PolicyCmd::SetLevel {
            policy,
            level,
            disconnected,
            approve_existing,
        } => {
            let name = Name::parse(&policy).context("policy name")?;
            let body = SetLevels {
                level,
                disconnected_level: disconnected,
                approve_existing,
            };
            let p: PolicyInfo = client
                .put(&format!("/api/v1/policies/{name}/levels"), &body)
                .await?;
            println!(
                "policy {}: level {} (disconnected: {}); agents switch within a second",
                p.name, p.levels.connected, p.levels.disconnected
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn enroll_token(
    cfg: Option<&Path>,
    policy: &str,
    uses: u32,
    ttl: u64,
) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let body = palisade_api::admin::CreateEnrollToken {
        policy: Name::parse(policy).context("--policy")?,
        max_uses: Some(uses),
        ttl_secs: Some(ttl),
    };
    let t: palisade_api::admin::EnrollTokenCreated =
        client.post("/api/v1/enrollment-tokens", &body).await?;
    println!("{}", t.token);
    eprintln!(
        "(token {}; revoke with: palisade enroll-token --revoke {})",
        t.id, t.id
    );
    Ok(ExitCode::SUCCESS)
}

/// The enrollment tokens that may still enroll a computer.
pub(crate) async fn enroll_tokens(cfg: Option<&Path>) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let tokens: Vec<palisade_api::admin::EnrollTokenInfo> =
        client.get("/api/v1/enrollment-tokens").await?;
    println!(
        "{:>5} {:<16} {:>9} {:<24} created by",
        "id", "policy", "uses left", "expires"
    );
    for t in tokens {
        println!(
            "{:>5} {:<16} {:>9} {:<24} {}",
            t.id,
            shown(&t.policy),
            format!("{}/{}", t.uses_left, t.max_uses),
            fmt_ms(t.expires_ms),
            shown(&t.created_by)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Revoke an enrollment token.
pub(crate) async fn revoke_enroll_token(cfg: Option<&Path>, id: i64) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    client
        .delete(&format!("/api/v1/enrollment-tokens/{id}"))
        .await?;
    println!("enrollment token {id} revoked");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn status(cfg: Option<&Path>, a: StatusArgs) -> Result<ExitCode> {
    let loaded = CliConfig::load(cfg).ok();
    let socket = a
        .socket
        .clone()
        .or_else(|| loaded.as_ref().and_then(|c| c.agent_socket.clone()))
        .unwrap_or_else(|| Path::new(palisade_agent::config::DEFAULT_DATA_DIR).join("agent.sock"));
    let st = tokio::task::spawn_blocking(move || palisade_agent::control::query(&socket)).await??;
    // The policy's level as the service states it, when we can ask.
    let mut stated = None;
    if loaded.is_some() {
        if let Ok((client, _)) = AdminClient::from_config(cfg) {
            if let Ok(list) = client.get::<Vec<ComputerInfo>>("/api/v1/computers").await {
                stated = list
                    .into_iter()
                    .find(|c| c.name == st.computer)
                    .map(|c| c.levels);
            }
        }
    }
    let expected = stated.unwrap_or(st.levels).connected;
    let ok = st.connected && st.enforcing && st.level == expected;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        println!(
            "computer     {} ({})",
            shown(&st.computer),
            shown(&st.server)
        );
        println!(
            "policy       {}",
            shown(st.policy.as_deref().unwrap_or("?"))
        );
        println!(
            "link         {}",
            if st.connected {
                "connected"
            } else {
                "DISCONNECTED"
            }
        );
        if st.certificate_expires > 0 {
            println!(
                "certificate  valid until {}, renewed from {}",
                fmt_ms(st.certificate_expires.saturating_mul(1000)),
                fmt_ms(st.certificate_renewal_due.saturating_mul(1000))
            );
        }
        println!("enforcing    {}", if st.enforcing { "yes" } else { "NO" });
        println!(
            "level        {} (policy states {}; {} while disconnected)",
            st.level, expected, st.levels.disconnected
        );
        println!(
            "guard        {}",
            if st.guard_active {
                "BPF LSM active (libraries, ld.so, memfd controlled)"
            } else {
                "INACTIVE: libraries and memory execution not controlled"
            }
        );
        println!("watching     {}", shown(&st.watched.join(", ")));
        println!(
            "decisions    {} events, {} from caches, {} allowed, {} blocked, {} timeouts",
            st.stats.events,
            st.stats.fast_path,
            st.stats.allowed,
            st.stats.blocked,
            st.stats.timeouts
        );
        println!(
            "workers      {} running; {} started since the agent started because others were \
             held past a deadline{}",
            st.stats.workers,
            st.stats.workers_added,
            match st.stats.workers_capped {
                0 => String::new(),
                n => format!("; {n} times none could start (at the cap)"),
            }
        );
        for (name, h) in [
            ("answer time  reader ", &st.latency.reader),
            ("             workers", &st.latency.workers),
        ] {
            println!("{name} {}", latency_line(h));
        }
        println!(
            "events       {} waiting for upload, {} dropped, {} refused by the service (set aside)",
            st.spool_pending, st.events_dropped, st.events_set_aside
        );
        for store in &st.stores_in_memory {
            println!(
                "WARNING      {store} cannot be used: kept in memory, lost at a restart (see the agent's log)"
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// "n answers, mean …, median ≤ …, p99 ≤ …, max …" for `palisade status`
/// and the fleet's line under `palisade computers`.
fn latency_line(h: &HistogramSnapshot) -> String {
    let or_dash = |ns: Option<u64>| ns.map_or_else(|| "–".to_owned(), human_ns);
    match h.count {
        0 => "no answers yet".to_owned(),
        n => format!(
            "{n} answers, mean {}, median ≤ {}, p99 ≤ {}, max {}",
            or_dash(h.mean()),
            or_dash(h.quantile(0.5)),
            or_dash(h.quantile(0.99)),
            human_ns(h.max_ns)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 hex digits are a hash even where a file of that name exists (a
    /// decoy planted in a shared directory); `./NAME` names the file.
    #[test]
    fn a_hash_argument_is_a_hash_even_beside_a_file_so_named() {
        let hex = "ab".repeat(32);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(&hex), b"decoy").unwrap();
        let cwd = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        let as_hash = resolve_target(None, &hex);
        let dotted = format!("./{hex}");
        let as_file = resolve_target(None, &dotted);
        std::env::set_current_dir(cwd).unwrap();
        assert_eq!(as_hash.unwrap(), (Sha256::parse(&hex).unwrap(), None));
        let (sha, path) = as_file.unwrap();
        assert_eq!(
            sha,
            palisade_agent::files::hash_path(&dir.path().join(&hex)).unwrap()
        );
        assert!(path.unwrap().ends_with(&hex));

        assert_eq!(target_of(&hex), Target::Hash(Sha256::parse(&hex).unwrap()));
        let upper = hex.to_uppercase();
        assert_eq!(
            target_of(&upper),
            match Sha256::parse(&upper) {
                Ok(sha) => Target::Hash(sha),
                Err(_) => Target::Path(Path::new(&upper)),
            }
        );
        for path in [
            "./x",
            "/usr/bin/ls",
            "ls",
            &hex[1..],
            &format!("/tmp/{hex}"),
        ] {
            assert_eq!(target_of(path), Target::Path(Path::new(path)), "{path}");
        }
        let e = resolve_target(None, "/definitely/not/\x1b[2Jhere").unwrap_err();
        assert!(e.to_string().contains("\\x1b[2J"), "{e}");
    }
}
