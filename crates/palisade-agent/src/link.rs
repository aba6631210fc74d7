//! The agent's link to the policy lookup service (mutual TLS), run on a
//! tokio runtime:
//!
//! - the **stream** task holds `/agent/v1/stream` open, catches up with
//!   `/agent/v1/changes` after every (re)connection, and applies changes to
//!   the engine (invalidate, then prefetch the new answers); the link is
//!   "connected" while the stream delivers messages at least every three
//!   heartbeats;
//! - the **batcher** coalesces lookups from the engine's workers into
//!   batched `/agent/v1/lookup` calls;
//! - the **uploader** sends spooled events and deletes them once acknowledged;
//! - **status** reports what the agent is doing.
use crate::engine::{Engine, Lookup, LookupError};
use crate::identity::Identity;
use crate::store::{CachedApproval, PersistentCache, Spool};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use palisade_api::agent::{
    AgentConfig, AgentEvent, AgentStatus, ApprovalRequestCreated, Changes, EventAck, EventBatch,
    InventoryItem, InventoryRequest, InventoryResponse, LatencyWindow, LocalApproval,
    LocalApprovals, LocalApprovalsAck, LookupItem, LookupRequest, LookupResponse,
    NewApprovalRequest, Removed, RemovedAck, RemovedPath, RenewRequest, RenewResponse,
    StreamMessage, EVENT_BATCH_MAX, HEARTBEAT_SECS, LOOKUP_BATCH_MAX,
};
use palisade_api::ErrorBody;
use palisade_core::{Approval, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Refuse a service URL that is not `https://`: the agent API and the
/// admin API carry tokens, approvals and levels, and must not go in the
/// clear (the clients below also refuse any other scheme, as a backstop;
/// this says why, naming the URL).
pub fn require_https(url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => Ok(()),
        Ok(u) => bail!(
            "{url}: the service must be reached over https://, not {}://",
            u.scheme()
        ),
        Err(e) => bail!("{url}: not a URL ({e})"),
    }
}

/// A reqwest client trusting only `ca_pem`, optionally presenting a client
/// identity (certificate + key PEM). HTTPS only.
pub fn ca_client(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("CA certificate")?,
        )
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}\n{key}");
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).context("client identity")?);
    }
    Ok(b.build()?)
}

/// A client that accepts any server certificate: only for fetching the CA
/// at enrollment, whose content is then checked against the token.
pub fn insecure_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .danger_accept_invalid_certs(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// The service answered with an error status.
#[derive(Debug, thiserror::Error)]
#[error("service answered {status}: {message}")]
pub struct ServiceAnswer {
    /// The status.
    pub status: reqwest::StatusCode,
    /// The service's message.
    pub message: String,
}

impl ServiceAnswer {
    /// Whether the service refuses the request's content (malformed, too
    /// large, not acceptable): sending it again unchanged cannot succeed.
    /// Authentication, rate limits and server errors are not such answers.
    pub fn refuses_content(&self) -> bool {
        use reqwest::StatusCode as S;
        matches!(
            self.status,
            S::BAD_REQUEST | S::PAYLOAD_TOO_LARGE | S::UNPROCESSABLE_ENTITY
        )
    }
}

/// A typed client of the agent API.
#[derive(Clone)]
pub struct ServiceClient {
    /// Replaced when the agent's certificate is renewed
    /// ([`ServiceClient::use_identity`]); every clone sees the new one.
    http: Arc<parking_lot::RwLock<reqwest::Client>>,
    base: String,
    /// How long the stream's answer may take to start ([`STREAM_OPEN`]).
    stream_open: Duration,
}

impl ServiceClient {
    /// A client for an enrolled identity.
    pub fn new(identity: &Identity) -> Result<ServiceClient> {
        require_https(&identity.server)?;
        Ok(ServiceClient {
            http: Arc::new(parking_lot::RwLock::new(Self::http_for(identity)?)),
            base: identity.server.clone(),
            stream_open: STREAM_OPEN,
        })
    }

    fn http_for(identity: &Identity) -> Result<reqwest::Client> {
        ca_client(
            &identity.ca_pem,
            Some((&identity.cert_pem, &identity.key_pem)),
        )
    }

    /// The HTTP client (cheap: a handle on a shared one).
    fn http(&self) -> reqwest::Client {
        self.http.read().clone()
    }

    /// Talk with `identity`'s certificate from now on (renewed: see
    /// [`crate::identity::renew`]). Requests in flight end with the old one.
    pub fn use_identity(&self, identity: &Identity) -> Result<()> {
        *self.http.write() = Self::http_for(identity)?;
        Ok(())
    }

    /// `POST /agent/v1/renew`.
    pub async fn renew(&self, csr_pem: String) -> Result<RenewResponse> {
        self.post(
            "/agent/v1/renew",
            &RenewRequest { csr_pem },
            Duration::from_secs(30),
        )
        .await
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // Enough of the body for a message, never all of whatever comes.
        let mut body = Vec::new();
        let mut resp = resp;
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = ERROR_BODY_MAX - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() == ERROR_BODY_MAX {
                break;
            }
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or(body);
        Err(ServiceAnswer { status, message }.into())
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T> {
        let resp = self
            .http()
            .get(format!("{}{path}", self.base))
            .timeout(timeout)
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T> {
        let resp = self
            .http()
            .post(format!("{}{path}", self.base))
            .timeout(timeout)
            .json(body)
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// `GET /agent/v1/config`.
    pub async fn config(&self) -> Result<AgentConfig> {
        self.get("/agent/v1/config", Duration::from_secs(10)).await
    }

    /// `POST /agent/v1/lookup`.
    pub async fn lookup(
        &self,
        files: Vec<LookupItem>,
        timeout: Duration,
    ) -> Result<LookupResponse> {
        self.post("/agent/v1/lookup", &LookupRequest { files }, timeout)
            .await
    }

    /// `GET /agent/v1/changes?since=R`.
    pub async fn changes(&self, since: i64) -> Result<Changes> {
        self.get(
            &format!("/agent/v1/changes?since={since}"),
            Duration::from_secs(30),
        )
        .await
    }

    /// `POST /agent/v1/events`.
    pub async fn upload(&self, events: Vec<AgentEvent>) -> Result<EventAck> {
        self.post(
            "/agent/v1/events",
            &EventBatch { events },
            Duration::from_secs(30),
        )
        .await
    }

    /// `POST /agent/v1/removed`.
    pub async fn removed(&self, items: Vec<RemovedPath>) -> Result<RemovedAck> {
        self.post(
            "/agent/v1/removed",
            &Removed { items },
            Duration::from_secs(30),
        )
        .await
    }

    /// `POST /agent/v1/inventory`.
    pub async fn inventory(&self, req: &InventoryRequest) -> Result<InventoryResponse> {
        self.post("/agent/v1/inventory", req, Duration::from_secs(120))
            .await
    }

    /// `POST /agent/v1/approvals`.
    pub async fn local_approvals(&self, items: Vec<LocalApproval>) -> Result<LocalApprovalsAck> {
        self.post(
            "/agent/v1/approvals",
            &LocalApprovals { items },
            Duration::from_secs(30),
        )
        .await
    }

    /// `POST /agent/v1/requests`.
    pub async fn request(&self, req: &NewApprovalRequest) -> Result<ApprovalRequestCreated> {
        self.post("/agent/v1/requests", req, Duration::from_secs(10))
            .await
    }

    /// `POST /agent/v1/status`.
    pub async fn status(&self, status: &AgentStatus) -> Result<()> {
        let resp = self
            .http()
            .post(format!("{}/agent/v1/status", self.base))
            .timeout(Duration::from_secs(10))
            .json(status)
            .send()
            .await?;
        Self::check(resp).await.map(drop)
    }

    /// Open `/agent/v1/stream`: a stream of messages, one per NDJSON line.
    /// The answer's headers must come within [`STREAM_OPEN`]: a replica
    /// that takes the connection and then says nothing would otherwise
    /// keep the agent disconnected for good (the heartbeat watch starts
    /// only with the body).
    pub async fn stream(&self) -> Result<MessageStream> {
        let within = self.stream_open;
        // The refusal's body too: a replica (or a proxy) that answers an
        // error and then stalls its body must not hold the reconnection.
        let resp = tokio::time::timeout(within, async {
            let resp = self
                .http()
                .get(format!("{}/agent/v1/stream", self.base))
                .send()
                .await?;
            Self::check(resp).await
        })
        .await
        .map_err(|_| anyhow!("the service did not open the stream within {within:?}"))??;
        let bytes = resp.bytes_stream();
        let lines = futures_util::stream::unfold(
            (bytes, Vec::<u8>::new(), false),
            |(mut bytes, mut buf, done)| async move {
                loop {
                    if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let line = &line[..line.len() - 1];
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let msg = serde_json::from_slice::<StreamMessage>(line)
                            .map_err(|e| anyhow!("malformed stream message: {e}"));
                        return Some((msg, (bytes, buf, done)));
                    }
                    if done {
                        return None;
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) if buf.len() + chunk.len() <= MAX_LINE => {
                            buf.extend_from_slice(&chunk)
                        }
                        Some(Ok(_)) => {
                            return Some((
                                Err(anyhow!("stream line too long")),
                                (bytes, Vec::new(), true),
                            ))
                        }
                        Some(Err(e)) => return Some((Err(e.into()), (bytes, Vec::new(), true))),
                        None => return None,
                    }
                }
            },
        );
        Ok(Box::pin(lines))
    }
}

/// The longest stream line accepted.
const MAX_LINE: usize = 16 << 20;

/// Most of an error answer's body read for its message.
const ERROR_BODY_MAX: usize = 64 << 10;

/// How long the stream's answer may take to start: as long as the silence
/// tolerated between its messages.
const STREAM_OPEN: Duration = Duration::from_secs(3 * HEARTBEAT_SECS);

/// Messages of `/agent/v1/stream`.
pub type MessageStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<StreamMessage>> + Send>>;

/// One lookup waiting for the batcher.
struct LookupJob {
    item: LookupItem,
    reply: crossbeam_channel::Sender<Result<CachedApproval, LookupError>>,
}

/// The engine's [`Lookup`], backed by the batcher task.
pub struct LinkLookup {
    tx: mpsc::Sender<LookupJob>,
}

impl Lookup for LinkLookup {
    fn lookup(&self, item: LookupItem, timeout: Duration) -> Result<CachedApproval, LookupError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.tx
            .try_send(LookupJob { item, reply })
            .map_err(|_| LookupError::Unreachable)?;
        rx.recv_timeout(timeout).map_err(|_| LookupError::Timeout)?
    }
}

/// The size of a lookup batch's body the agent aims under: well below the
/// service's smallest body limit (4 MiB), so that items carrying long
/// process chains (32 ancestors with paths of 4 KiB each, which any user
/// can arrange) cannot make one body too large, failing every other
/// process's lookup batched with them.
const LOOKUP_BATCH_BYTES: usize = 1 << 20;

/// The size of `item` in a request body.
fn lookup_item_bytes(item: &LookupItem) -> usize {
    serde_json::to_vec(item).map_or(usize::MAX, |v| v.len() + 1)
}

/// A batch: `first`, then what `more` has at once, up to `max_items`
/// items and `max_bytes` bytes (`first` goes even if larger alone). The
/// job that did not fit is returned, to start the next batch.
fn take_batch<J>(
    first: J,
    mut more: impl FnMut() -> Option<J>,
    bytes: impl Fn(&J) -> usize,
    max_items: usize,
    max_bytes: usize,
) -> (Vec<J>, Option<J>) {
    let mut total = bytes(&first);
    let mut jobs = vec![first];
    while jobs.len() < max_items {
        let Some(job) = more() else { break };
        let size = bytes(&job);
        if total.saturating_add(size) > max_bytes {
            return (jobs, Some(job));
        }
        total += size;
        jobs.push(job);
    }
    (jobs, None)
}

/// Start the batcher on `rt`; returns the engine's side.
pub fn start_batcher(
    rt: &tokio::runtime::Handle,
    client: ServiceClient,
    timeout: Duration,
) -> LinkLookup {
    let (tx, mut rx) = mpsc::channel::<LookupJob>(8192);
    rt.spawn(async move {
        let mut carried: Option<LookupJob> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            let jobs;
            (jobs, carried) = take_batch(
                first,
                || rx.try_recv().ok(),
                |j| lookup_item_bytes(&j.item),
                LOOKUP_BATCH_MAX,
                LOOKUP_BATCH_BYTES,
            );
            let client = client.clone();
            tokio::spawn(async move {
                let items = jobs.iter().map(|j| j.item.clone()).collect();
                match client.lookup(items, timeout).await {
                    Ok(resp) if resp.results.len() == jobs.len() => {
                        for (job, res) in jobs.into_iter().zip(resp.results) {
                            let answer = if res.sha256 == job.item.sha256 {
                                Ok(CachedApproval {
                                    approval: res.approval,
                                    trust: res.trust,
                                    revision: resp.revision,
                                })
                            } else {
                                Err(LookupError::Service("answer for another hash".into()))
                            };
                            let _ = job.reply.try_send(answer);
                        }
                    }
                    Ok(_) => {
                        for job in jobs {
                            let _ = job.reply.try_send(Err(LookupError::Service(
                                "answer of the wrong length".into(),
                            )));
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        for job in jobs {
                            let _ = job.reply.try_send(Err(LookupError::Service(msg.clone())));
                        }
                    }
                }
            });
        }
    });
    LinkLookup { tx }
}

/// What the stream task needs.
pub struct LinkParts {
    /// Agent API client.
    pub client: ServiceClient,
    /// The engine to apply changes to.
    pub engine: Arc<Engine>,
    /// Where the configuration is remembered.
    pub persistent: Arc<PersistentCache>,
    /// What the agent watches (for status reports).
    pub watched: Vec<String>,
    /// Whether the reader is enforcing.
    pub enforcing: Arc<std::sync::atomic::AtomicBool>,
    /// Latest configuration received (shared with the control socket).
    pub config: Arc<parking_lot::Mutex<Option<AgentConfig>>>,
    /// What a scan needs (to approve what the computer has when its level
    /// is raised).
    pub scan: ScanParams,
    /// How often, at most, the agent sends the service its status again
    /// while connected, when it received events since the last report
    /// (checked at the service's heartbeats).
    pub status_every: Duration,
}

/// What a scan of the watched filesystems needs.
#[derive(Clone)]
pub struct ScanParams {
    /// The watched filesystems.
    pub mounts: Vec<crate::mounts::Mount>,
    /// Script extensions.
    pub script_extensions: Vec<String>,
    /// The package database.
    pub packages: Option<Arc<dyn crate::engine::PackageFacts>>,
}

/// The stream task's state: its parts, and whether a scan approving what
/// the computer has is running (see [`apply_config`]).
struct Link {
    parts: LinkParts,
    approving: parking_lot::Mutex<Approving>,
}

/// A scan approving what the computer has, and the levels it holds back.
#[derive(Debug, Default, Clone, Copy)]
struct Approving {
    /// The scan runs.
    scanning: bool,
    /// Configurations' levels wait for it: from its start until it is
    /// done, or [`APPROVE_EXISTING_WAIT`] has passed.
    holding: bool,
}

/// How long, at most, a scan approving what the computer has holds back
/// the levels it was started for (and those of later configurations).
///
/// Applying a raised level before the scan has approved what is installed
/// would block installed software, so the levels wait for it; but users own
/// files on the scanned filesystems, and however cheap each file is made
/// (see [`crate::scan`]), many of them can keep a scan going for long: a
/// user must not be able to keep the computer out of lockdown that way.
/// Past this bound the newest levels apply and the scan goes on: what it
/// has not reached yet is blocked until it approves it.
const APPROVE_EXISTING_WAIT: Duration = Duration::from_secs(10 * 60);

impl std::ops::Deref for Link {
    type Target = LinkParts;

    fn deref(&self) -> &LinkParts {
        &self.parts
    }
}

/// Run the stream task forever (reconnecting with backoff).
pub async fn run_stream(parts: LinkParts) {
    let parts = Arc::new(Link {
        parts,
        approving: parking_lot::Mutex::new(Approving::default()),
    });
    let mut backoff = Duration::from_millis(100);
    // The last status report, across reconnections.
    let mut reported = None;
    loop {
        match connect_once(&parts, &mut reported).await {
            Ok(()) => {}
            Err(e) => tracing::warn!("link to the service lost: {e:#}"),
        }
        if parts.engine.connected() {
            parts.engine.set_connected(false);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(3));
        if backoff == Duration::from_secs(3) {
            backoff = Duration::from_millis(500);
        }
    }
}

async fn connect_once(parts: &Arc<Link>, reported: &mut Option<Reported>) -> Result<()> {
    let mut stream = parts.client.stream().await?;
    let silence = Duration::from_secs(3 * HEARTBEAT_SECS);
    let first = tokio::time::timeout(silence, stream.next())
        .await
        .map_err(|_| anyhow!("no hello from the service"))?
        .ok_or_else(|| anyhow!("stream closed"))??;
    let StreamMessage::Hello { revision, config } = first else {
        bail!("the stream did not start with hello");
    };
    // Catch up with what changed while we were away, before trusting caches.
    let since: i64 = parts
        .persistent
        .meta("revision")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if since != revision {
        let changes = parts.client.changes(since).await.context("catching up")?;
        apply_changes(parts, changes).await;
    }
    apply_config(parts, config).await;
    tracing::info!("connected to the service at revision {revision}");
    report_status(parts, reported).await;
    loop {
        let msg = tokio::time::timeout(silence, stream.next())
            .await
            .map_err(|_| anyhow!("no heartbeat for {silence:?}"))?
            .ok_or_else(|| anyhow!("stream closed by the service"))??;
        match msg {
            StreamMessage::Changed(changes) => {
                let config_changed = changes.config_changed;
                apply_changes(parts, changes).await;
                if config_changed {
                    let config = parts.client.config().await?;
                    apply_config(parts, config).await;
                    report_status(parts, reported).await;
                }
            }
            StreamMessage::Heartbeat { .. } => {
                // Answer times for the fleet view: no more often than
                // `status_every`, and not at all while no event came
                // (an idle agent writes nothing).
                let due = reported.as_ref().is_none_or(|r| {
                    r.at.elapsed() >= parts.status_every
                        && events_received(&parts.engine) != r.events
                });
                if due {
                    report_status(parts, reported).await;
                }
            }
            StreamMessage::Hello { .. } => {}
        }
    }
}

/// Apply a configuration from the service: rules at once, levels at once
/// too unless the policy asks that what the computer has be approved first
/// (a new `approve_existing_epoch`). That scan runs as a task of its own,
/// so that changes (bans) keep arriving while it runs; the levels of the
/// newest configuration apply when it is done, or once
/// [`APPROVE_EXISTING_WAIT`] has passed, whichever comes first. (A newer
/// epoch arriving after that bound, while the scan still runs, applies its
/// levels at once too; its own scan follows the running one.)
async fn apply_config(parts: &Arc<Link>, config: AgentConfig) {
    // Rules first (resolving updater programs reads executables: not on
    // the async threads), then levels.
    let engine = parts.engine.clone();
    let rules = config.rules.clone();
    let _ = tokio::task::spawn_blocking(move || engine.set_rules(rules)).await;
    if let Ok(json) = serde_json::to_string(&config) {
        let p = parts.persistent.clone();
        let _ = tokio::task::spawn_blocking(move || p.set_meta("config", &json)).await;
    }
    let seen = approved_epoch(parts).await;
    let epoch = config.approve_existing_epoch;
    let levels = config.levels;
    {
        let mut approving = parts.approving.lock();
        *parts.config.lock() = Some(config);
        if approving.holding {
            // The running scan applies the newest levels when it is done
            // (or at its bound).
            parts.engine.set_connected(true);
            return;
        }
        if seen.is_some_and(|s| epoch > s) {
            if approving.scanning {
                // Past its bound: these levels apply now, as they would
                // have at the bound; the scan starts over for this epoch
                // when it is done.
                parts.engine.set_levels(levels, true);
                return;
            }
            *approving = Approving {
                scanning: true,
                holding: true,
            };
            parts.engine.set_connected(true);
            tokio::spawn(approve_existing(parts.clone(), epoch));
            return;
        }
        parts.engine.set_levels(levels, true);
    }
    if seen != Some(epoch) {
        // A computer that never saw an epoch (new, or upgraded) records
        // the current one and approves nothing.
        record_approved_epoch(parts, epoch).await;
    }
}

/// The epoch of the last approval of what the computer has.
async fn approved_epoch(parts: &LinkParts) -> Option<i64> {
    let p = parts.persistent.clone();
    tokio::task::spawn_blocking(move || p.meta("approve_epoch"))
        .await
        .ok()
        .flatten()
        .and_then(|v| v.parse::<i64>().ok())
}

async fn record_approved_epoch(parts: &LinkParts, epoch: i64) {
    let p = parts.persistent.clone();
    let v = epoch.to_string();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.set_meta("approve_epoch", &v)).await {
        tracing::warn!("cannot record the approval epoch: {e}");
    }
}

/// Approve locally what the computer has (a scan), for `epoch` and for any
/// newer one arriving meanwhile; then apply the newest configuration's
/// levels and record the epoch. The levels apply at
/// [`APPROVE_EXISTING_WAIT`] if the scan is not done by then.
async fn approve_existing(parts: Arc<Link>, mut epoch: i64) {
    loop {
        tracing::info!("the policy's level was raised with approval of what is here: scanning");
        let scan = tokio::spawn(scan_and_learn(parts.clone()));
        let scanned = wait_bounded(scan, APPROVE_EXISTING_WAIT, || {
            let mut approving = parts.approving.lock();
            approving.holding = false;
            if let Some(config) = parts.config.lock().as_ref() {
                parts.engine.set_policy_levels(config.levels);
            }
            tracing::warn!(
                "approving what is here still runs after {APPROVE_EXISTING_WAIT:?}: \
                 the policy's levels apply now; what it has not reached yet is \
                 blocked until it approves it"
            );
        })
        .await;
        if let Err(e) = scanned {
            tracing::error!("approving what is here failed: {e}");
        }
        record_approved_epoch(&parts, epoch).await;
        let mut approving = parts.approving.lock();
        let Some(config) = parts.config.lock().clone() else {
            *approving = Approving::default();
            return;
        };
        if config.approve_existing_epoch > epoch {
            epoch = config.approve_existing_epoch;
            continue;
        }
        parts.engine.set_policy_levels(config.levels);
        *approving = Approving::default();
        return;
    }
}

/// One scan approving what the computer has, its answers learnt.
async fn scan_and_learn(parts: Arc<Link>) {
    let p = &parts.scan;
    match crate::scan::scan(
        &parts.client,
        &p.mounts,
        &p.script_extensions,
        p.packages.clone(),
        true,
        false,
    )
    .await
    {
        Ok(s) => {
            let hashes: Vec<Sha256> = s.files.iter().map(|f| f.sha256).collect();
            parts.engine.learn_scanned(&s.files);
            prefetch(&parts.client, &parts.engine, &hashes).await;
            tracing::info!(
                "approved {} files present before the level was raised",
                s.approved
            );
        }
        Err(e) => tracing::error!("approving what is here failed: {e:#}"),
    }
}

/// Wait for `work`. If it is not done within `bound`, call `late` (once)
/// and keep waiting.
async fn wait_bounded<T>(
    work: impl std::future::Future<Output = T>,
    bound: Duration,
    late: impl FnOnce(),
) -> T {
    tokio::pin!(work);
    match tokio::time::timeout(bound, &mut work).await {
        Ok(done) => done,
        Err(_) => {
            late();
            work.await
        }
    }
}

async fn apply_changes(parts: &LinkParts, changes: Changes) {
    let engine = &parts.engine;
    if changes.reset {
        let known = engine.reset(changes.revision);
        prefetch(&parts.client, engine, &known).await;
        return;
    }
    if changes.hashes.is_empty() {
        engine.synced(changes.revision);
        return;
    }
    engine.invalidate(&changes.hashes, changes.revision);
    // Fetch the new answers right away, so the next load needs no round trip
    // and the persistent cache is right if the link drops.
    prefetch(&parts.client, engine, &changes.hashes).await;
}

/// Look up `hashes` and record the answers.
pub async fn prefetch(client: &ServiceClient, engine: &Engine, hashes: &[Sha256]) {
    for chunk in hashes.chunks(LOOKUP_BATCH_MAX) {
        match look_up(client, chunk).await {
            Ok((answers, revision)) => engine.prefetched(&answers, revision),
            Err(e) => {
                tracing::warn!("prefetch failed: {e:#}");
                return;
            }
        }
    }
}

/// The service's answers for `hashes` (at most [`LOOKUP_BATCH_MAX`]),
/// without context, and the revision they are at.
async fn look_up(
    client: &ServiceClient,
    hashes: &[Sha256],
) -> Result<(Vec<(Sha256, Approval, Option<u8>)>, i64)> {
    let items = hashes
        .iter()
        .map(|h| LookupItem {
            sha256: *h,
            path: None,
            operation: None,
            process: None,
            publisher: None,
        })
        .collect();
    let resp = client.lookup(items, Duration::from_secs(10)).await?;
    let answers = resp
        .results
        .iter()
        .map(|r| (r.sha256, r.approval, r.trust))
        .collect();
    Ok((answers, resp.revision))
}

/// When the agent last told the service its status, how many events it
/// had received then, and the answer times it sent.
pub struct Reported {
    at: std::time::Instant,
    events: u64,
    latency: palisade_core::latency::LatencySnapshot,
}

/// Permission events received so far.
fn events_received(engine: &Engine) -> u64 {
    engine
        .stats
        .events
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Tell the service what the agent is doing, with its answer times since
/// it started and since `last`, which this report replaces once the
/// service has it. (A failed report's window maximum is lost: the next
/// report's is then kept inside its highest bucket.)
async fn report_status(parts: &LinkParts, last: &mut Option<Reported>) {
    let at = std::time::Instant::now();
    let events = events_received(&parts.engine);
    let (latency, recent) = parts
        .engine
        .latency
        .report(last.as_ref().map(|r| &r.latency));
    let recent = recent.zip(last.as_ref()).map(|(latency, r)| LatencyWindow {
        secs: at.duration_since(r.at).as_secs(),
        latency,
    });
    let status = AgentStatus {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        level_in_force: parts.engine.level(),
        enforcing: parts.enforcing.load(std::sync::atomic::Ordering::Relaxed),
        guard_active: parts.engine.guard_active(),
        watched: parts.watched.clone(),
        latency: latency.clone(),
        recent,
        event_losses: parts.engine.event_losses(),
    };
    match parts.client.status(&status).await {
        Ok(()) => {
            *last = Some(Reported {
                at,
                events,
                latency,
            });
        }
        // The next heartbeat tries again, its window covering this one's.
        Err(e) => tracing::debug!("status report failed: {e:#}"),
    }
}

/// How long an uploader with an empty spool sleeps when `wake` does not
/// fire. Every write to the spool fires it (the reporter's spool thread is
/// the only writer; events left from an earlier run are read at start), so
/// this is a safety net, kept long so that an idle agent does not wake.
const UPLOAD_RECHECK: Duration = Duration::from_secs(60);

/// Back-off of the uploader's retries: from this, doubling, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Upload spooled events forever: whenever `wake` fires, and at least every
/// [`UPLOAD_RECHECK`].
pub async fn run_uploader(
    client: ServiceClient,
    spool: Arc<Spool>,
    spool_id: u64,
    wake: Arc<Notify>,
) {
    let peek = |limit: usize| {
        let s = spool.clone();
        on_spool(move || s.peek(limit))
    };
    let upload = |batch: Vec<(u64, palisade_core::FileEvent)>| {
        let client = client.clone();
        async move {
            let events = batch
                .into_iter()
                .map(|(seq, event)| AgentEvent {
                    seq: (spool_id << 40) | seq,
                    event,
                })
                .collect();
            client.upload(events).await.map(drop).map_err(|e| {
                let refused = e
                    .downcast_ref::<ServiceAnswer>()
                    .is_some_and(ServiceAnswer::refuses_content);
                let why = format!("{e:#}");
                if refused {
                    UploadError::Refused(why)
                } else {
                    UploadError::Retry(why)
                }
            })
        }
    };
    let ack = |last: u64| {
        let s = spool.clone();
        async move {
            let done = on_spool(move || s.ack(last)).await;
            if let Err(e) = &done {
                tracing::warn!("event spool: acknowledging up to {last}: {e}");
            }
            done.is_ok()
        }
    };
    let set_aside = |(seq, event): (u64, palisade_core::FileEvent), why: String| {
        let s = spool.clone();
        async move {
            match on_spool(move || s.set_aside(seq, &event, &why)).await {
                Ok(path) => {
                    tracing::error!(
                        "the service refused spooled event {seq}; kept in {}",
                        path.display()
                    );
                    true
                }
                Err(e) => {
                    tracing::error!("event spool: setting event {seq} aside: {e}");
                    false
                }
            }
        }
    };
    upload_loop(peek, upload, ack, set_aside, EVENT_BATCH_MAX, &wake).await
}

/// Run a spool operation off the async threads; its error (or the blocking
/// task's) as text.
async fn on_spool<R: Send + 'static>(
    op: impl FnOnce() -> std::result::Result<R, crate::store::StoreError> + Send + 'static,
) -> std::result::Result<R, String> {
    match tokio::task::spawn_blocking(op).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why an upload failed.
#[derive(Debug)]
enum UploadError {
    /// The service (or the way to it) failed: the same batch later.
    Retry(String),
    /// The service refuses the batch's content: sent again unchanged it
    /// would be refused again, and would hold up every event behind it.
    Refused(String),
}

/// The uploader's loop, over its four operations: read up to a number of
/// `(sequence, event)` from the spool, upload them, acknowledge up to a
/// sequence, set one event aside. A spool that cannot be read now (busy,
/// being rebuilt) and an upload that fails are each retried with back-off
/// (200 ms doubling to 5 s), and so is an acknowledgement or a setting
/// aside that fails (they return whether they were done: the events stay
/// in the spool and are sent again, not as fast as the round trips go);
/// an empty spool waits for `wake` or
/// [`UPLOAD_RECHECK`]. A batch whose content the service refuses is halved
/// until the refused event is alone; that event is set aside (kept on disk
/// outside the queue) and the events behind it go on, the batch growing
/// back to `max` as uploads succeed.
async fn upload_loop<T, P, PF, U, UF, A, AF, X, XF>(
    mut peek: P,
    mut upload: U,
    mut ack: A,
    mut set_aside: X,
    max: usize,
    wake: &Notify,
) where
    T: Clone,
    P: FnMut(usize) -> PF,
    PF: std::future::Future<Output = std::result::Result<Vec<(u64, T)>, String>>,
    U: FnMut(Vec<(u64, T)>) -> UF,
    UF: std::future::Future<Output = std::result::Result<(), UploadError>>,
    A: FnMut(u64) -> AF,
    AF: std::future::Future<Output = bool>,
    X: FnMut((u64, T), String) -> XF,
    XF: std::future::Future<Output = bool>,
{
    let mut read_retry = RETRY_FIRST;
    let mut upload_retry = RETRY_FIRST;
    let mut write_retry = RETRY_FIRST;
    let mut limit = max;
    loop {
        let batch = match peek(limit).await {
            Ok(batch) => {
                read_retry = RETRY_FIRST;
                batch
            }
            Err(e) => {
                tracing::debug!("event spool not readable (retrying): {e}");
                tokio::time::sleep(read_retry).await;
                read_retry = (read_retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        let Some(last) = batch.last().map(|(seq, _)| *seq) else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(UPLOAD_RECHECK) => {}
            }
            continue;
        };
        let size = batch.len();
        let single = (size == 1).then(|| batch[0].clone());
        let written = match upload(batch).await {
            Ok(()) => {
                upload_retry = RETRY_FIRST;
                limit = (limit * 2).min(max);
                ack(last).await
            }
            Err(UploadError::Refused(why)) => match single {
                Some(event) => set_aside(event, why).await,
                None => {
                    tracing::warn!("the service refused a batch of {size} events, halving: {why}");
                    limit = (size / 2).max(1);
                    true
                }
            },
            Err(UploadError::Retry(e)) => {
                tracing::debug!("event upload failed (kept on disk): {e}");
                tokio::time::sleep(upload_retry).await;
                upload_retry = (upload_retry * 2).min(RETRY_MAX);
                true
            }
        };
        if written {
            write_retry = RETRY_FIRST;
        } else {
            tokio::time::sleep(write_retry).await;
            write_retry = (write_retry * 2).min(RETRY_MAX);
        }
    }
}

/// Longest sleep of the certificate renewal between two looks at the
/// clock (a clock set forward is noticed within it).
const RENEWAL_NAP: Duration = Duration::from_secs(6 * 3600);

/// Renew the agent's client certificate when it is due
/// ([`crate::identity::renewal_due`]), save it in `dir` and talk with it
/// from then on; a failed renewal (the service away) is tried again after
/// a minute, doubling to an hour. Sleeps in between: no wake-up while idle
/// but every [`RENEWAL_NAP`].
/// `shown` gets the certificate's end and renewal time (for `status`).
pub async fn run_renewal(
    client: ServiceClient,
    mut identity: Identity,
    dir: std::path::PathBuf,
    shown: Arc<parking_lot::Mutex<(i64, i64)>>,
) {
    let mut retry = Duration::from_secs(60);
    loop {
        let (not_before, not_after) = match crate::identity::validity(&identity.cert_pem) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("the client certificate cannot be read ({e:#}): it is not renewed");
                return;
            }
        };
        let due = crate::identity::renewal_due(not_before, not_after);
        *shown.lock() = (not_after, due);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if now < due {
            let wait = Duration::from_secs((due - now) as u64).min(RENEWAL_NAP);
            tokio::time::sleep(wait).await;
            continue;
        }
        let renewed = match crate::identity::renew(&client, &identity).await {
            Ok(renewed) => renewed,
            Err(e) => {
                let left = (not_after - now).max(0) / 86_400;
                tracing::warn!(
                    "the client certificate expires in {left} days and could not be renewed yet ({e:#}); retrying in {retry:?}"
                );
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(3600));
                continue;
            }
        };
        let saved = {
            let (renewed, dir) = (renewed.clone(), dir.clone());
            tokio::task::spawn_blocking(move || renewed.save_renewed(&dir)).await
        };
        // Not used unsaved: a restart would come back with the old one,
        // which the service refuses once the new one was used.
        let failed = match saved {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            tracing::error!(
                "the renewed client certificate cannot be saved ({e}); retrying in {retry:?}"
            );
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(Duration::from_secs(3600));
            continue;
        }
        if let Err(e) = client.use_identity(&renewed) {
            tracing::error!("the renewed client certificate cannot be used ({e:#}); it is used from the next start");
            return;
        }
        tracing::info!("client certificate renewed");
        identity = renewed;
        retry = Duration::from_secs(60);
    }
}

/// Send the approvals made on this computer to the service, in batches,
/// retrying with back-off while it is away. Once the service has them, it
/// is asked what they are now: it may have kept none of them (the file
/// banned there, the rule gone or narrowed meanwhile), which no change
/// would tell, and the approval in memory would stand until evicted.
pub async fn run_local_approvals(
    client: ServiceClient,
    engine: Arc<Engine>,
    rx: mpsc::Receiver<LocalApproval>,
) {
    send_batches(rx, "local approvals", |items| {
        let client = client.clone();
        let engine = engine.clone();
        async move {
            let mut hashes: Vec<Sha256> = items.iter().map(|i| i.sha256).collect();
            hashes.sort_unstable();
            hashes.dedup();
            client.local_approvals(items).await?;
            // The service may keep none of them (a ban there, a rule
            // disabled or narrowed meanwhile), and no change would say so:
            // what it answers now replaces the approval in memory, and
            // where that is not an approval, the kernel's allows go too.
            // Unanswered (the service gone again), the approval stands
            // until the next change or restart asks again.
            for chunk in hashes.chunks(LOOKUP_BATCH_MAX) {
                match look_up(&client, chunk).await {
                    Ok((answers, revision)) => {
                        let withdrawn: Vec<Sha256> = answers
                            .iter()
                            .filter(|(_, a, _)| !matches!(a, Approval::Approved(_)))
                            .map(|(sha, _, _)| *sha)
                            .collect();
                        engine.forget(&withdrawn);
                        engine.prefetched(&answers, revision);
                    }
                    Err(e) => {
                        tracing::warn!("looking up local approvals again failed: {e:#}");
                        break;
                    }
                }
            }
            Ok(())
        }
    })
    .await;
}

/// Send package/publisher facts established at decisions to the service,
/// as inventory (without approving anything), retrying while it is away.
pub async fn run_facts(client: ServiceClient, rx: mpsc::Receiver<InventoryItem>) {
    send_batches(rx, "package facts", |files| {
        let client = client.clone();
        async move {
            let req = InventoryRequest {
                files,
                approve_locally: false,
            };
            client.inventory(&req).await.map(drop)
        }
    })
    .await;
}

/// Send the code paths removed from this computer to the service, retrying
/// while it is away.
pub async fn run_removed(client: ServiceClient, rx: mpsc::Receiver<RemovedPath>) {
    send_batches(rx, "removed paths", |items| {
        let client = client.clone();
        async move { client.removed(items).await.map(drop) }
    })
    .await;
}

/// Drain `rx` in batches of at most [`INVENTORY_BATCH_MAX`] items, handing
/// each to `send` until it succeeds (back-off 200 ms doubling to 5 s).
/// Returns when every sender is gone and everything was sent.
async fn send_batches<T: Clone, F, Fut>(mut rx: mpsc::Receiver<T>, what: &str, send: F)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut pending: Vec<T> = Vec::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(a) => pending.push(a),
                None => return,
            }
        }
        while pending.len() < palisade_api::agent::INVENTORY_BATCH_MAX {
            match rx.try_recv() {
                Ok(a) => pending.push(a),
                Err(_) => break,
            }
        }
        match send(pending.clone()).await {
            Ok(()) => {
                pending.clear();
                backoff = Duration::from_millis(200);
            }
            Err(e) => {
                tracing::debug!("{what} not sent yet ({} waiting): {e:#}", pending.len());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod uploader_tests {
    use super::{upload_loop, UploadError, UPLOAD_RECHECK};
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Notify;
    use tokio::time::Instant;

    /// A spool in memory whose reads and uploads fail on demand, recording
    /// when each upload arrived.
    #[derive(Default)]
    struct Fake {
        spooled: Vec<(u64, &'static str)>,
        failing_reads: u32,
        failing_uploads: u32,
        /// Acknowledgements and settings aside that fail (a full disk).
        failing_writes: u32,
        /// Events the service refuses (any batch holding one).
        refused: Vec<u64>,
        reads: u32,
        uploaded: Vec<(Duration, Vec<u64>)>,
        /// Batch sizes sent, refused or not.
        sent: Vec<usize>,
        set_aside: Vec<u64>,
    }

    type Shared = Arc<Mutex<Fake>>;

    /// Start the uploader over `fake`; times are measured from the start.
    fn start(fake: Fake, wake: Arc<Notify>) -> (Shared, tokio::task::JoinHandle<()>) {
        let fake = Arc::new(Mutex::new(fake));
        let start = Instant::now();
        let (f1, f2, f3, f4) = (fake.clone(), fake.clone(), fake.clone(), fake.clone());
        let task = tokio::spawn(async move {
            upload_loop(
                move |limit: usize| {
                    let f = f1.clone();
                    async move {
                        let mut f = f.lock();
                        f.reads += 1;
                        if f.failing_reads > 0 {
                            f.failing_reads -= 1;
                            return Err("database is locked".to_owned());
                        }
                        Ok(f.spooled.iter().take(limit).cloned().collect())
                    }
                },
                move |batch: Vec<(u64, &'static str)>| {
                    let f = f2.clone();
                    async move {
                        let mut f = f.lock();
                        f.sent.push(batch.len());
                        if f.failing_uploads > 0 {
                            f.failing_uploads -= 1;
                            return Err(UploadError::Retry("connection refused".to_owned()));
                        }
                        if batch.iter().any(|(s, _)| f.refused.contains(s)) {
                            return Err(UploadError::Refused("422: bad event".to_owned()));
                        }
                        let seqs = batch.iter().map(|(s, _)| *s).collect();
                        f.uploaded.push((start.elapsed(), seqs));
                        Ok(())
                    }
                },
                move |last: u64| {
                    let f = f3.clone();
                    async move {
                        let mut f = f.lock();
                        if f.failing_writes > 0 {
                            f.failing_writes -= 1;
                            return false;
                        }
                        f.spooled.retain(|(s, _)| *s > last);
                        true
                    }
                },
                move |(seq, _): (u64, &'static str), why: String| {
                    let f = f4.clone();
                    async move {
                        assert!(why.contains("bad event"), "{why}");
                        let mut f = f.lock();
                        if f.failing_writes > 0 {
                            f.failing_writes -= 1;
                            return false;
                        }
                        f.set_aside.push(seq);
                        f.spooled.retain(|(s, _)| *s != seq);
                        true
                    }
                },
                8,
                &wake,
            )
            .await
        });
        (fake, task)
    }

    /// Let virtual time run until `uploads` uploads were made or `within`
    /// passed.
    async fn wait(fake: &Shared, uploads: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && fake.lock().uploaded.len() < uploads {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Start, wait as [`wait`], stop; returns the fake.
    async fn run(fake: Fake, wake: Arc<Notify>, uploads: usize, within: Duration) -> Fake {
        let (fake, task) = start(fake, wake);
        wait(&fake, uploads, within).await;
        task.abort();
        let _ = task.await;
        Arc::try_unwrap(fake).ok().expect("task gone").into_inner()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_spool_is_retried_with_back_off_not_at_the_recheck() {
        let fake = Fake {
            spooled: vec![(1, "a"), (2, "b")],
            failing_reads: 3,
            ..Fake::default()
        };
        let f = run(fake, Arc::new(Notify::new()), 1, Duration::from_secs(10)).await;
        assert_eq!(f.uploaded.len(), 1, "uploaded once the spool reads again");
        let (at, seqs) = &f.uploaded[0];
        assert_eq!(seqs, &vec![1, 2]);
        // Three failed reads: 200 + 400 + 800 ms of back-off.
        assert!(
            *at >= Duration::from_millis(1400) && *at < Duration::from_millis(1500),
            "{at:?}"
        );
        assert!(f.spooled.is_empty(), "acknowledged events leave the spool");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_upload_keeps_the_events_and_backs_off_to_five_seconds() {
        let fake = Fake {
            spooled: vec![(7, "a")],
            failing_uploads: 6,
            ..Fake::default()
        };
        let f = run(fake, Arc::new(Notify::new()), 1, Duration::from_secs(60)).await;
        assert_eq!(f.uploaded.len(), 1);
        let (at, seqs) = &f.uploaded[0];
        assert_eq!(seqs, &vec![7], "the same events, not lost");
        // 200 + 400 + 800 + 1600 + 3200 + 5000 (capped) ms.
        assert!(
            *at >= Duration::from_millis(11_200) && *at < Duration::from_millis(11_400),
            "{at:?}"
        );
        // Each retry reads the spool again: six failed uploads, the one that
        // went through, and the read that found the spool empty after it.
        assert_eq!(f.reads, 8);
    }

    /// An event the service refuses does not hold up the queue: batches
    /// halve until it is alone, it is set aside, and everything else is
    /// uploaded, in order, with no back-off.
    #[tokio::test(start_paused = true)]
    async fn a_refused_event_is_set_aside_and_the_rest_goes_on() {
        let fake = Fake {
            spooled: (1..=20).map(|n| (n, "e")).collect(),
            refused: vec![6],
            ..Fake::default()
        };
        let f = run(fake, Arc::new(Notify::new()), 100, Duration::from_secs(1)).await;
        assert_eq!(f.set_aside, vec![6]);
        assert!(f.spooled.is_empty(), "{:?}", f.spooled);
        let uploaded: Vec<u64> = f.uploaded.iter().flat_map(|(_, s)| s.clone()).collect();
        let expected: Vec<u64> = (1..=20).filter(|n| *n != 6).collect();
        assert_eq!(uploaded, expected, "every other event, in order, once");
        assert!(
            f.uploaded
                .iter()
                .all(|(at, _)| *at < Duration::from_millis(10)),
            "no back-off"
        );
        // 8 (refused), 4 (refused: 5..8 still holds 6)... then growing back.
        assert_eq!(f.sent[..2], [8, 4]);
        assert!(f.sent[2..].contains(&8), "grows back: {:?}", f.sent);
    }

    /// A refused batch shorter than the limit halves from its own size:
    /// three events (limit 8) go 3 (refused), 1 (event 1), 2 (growing back:
    /// refused), 1 (event 2, set aside), 1 (event 3).
    /// Regression: an acknowledgement or a setting aside that fails (a full
    /// disk) was not waited on: the same events went to the service again
    /// as fast as round trips allowed. Now it backs off like a read.
    #[tokio::test(start_paused = true)]
    async fn a_spool_that_cannot_be_written_is_retried_with_back_off() {
        for refused in [vec![], vec![1]] {
            let fake = Fake {
                spooled: vec![(1, "a")],
                refused,
                failing_writes: 1000,
                ..Fake::default()
            };
            let (fake, task) = start(fake, Arc::new(Notify::new()));
            tokio::time::sleep(Duration::from_secs(10)).await;
            task.abort();
            let _ = task.await;
            let f = fake.lock();
            // 200 + 400 + 800 + 1600 + 3200 ms of back-off, then 5 s.
            assert!(
                (5..=8).contains(&f.sent.len()),
                "sent {} times in 10 s",
                f.sent.len()
            );
            assert_eq!(f.spooled, vec![(1, "a")], "kept until written");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_refused_batch_halves_from_its_size() {
        let fake = Fake {
            spooled: vec![(1, "a"), (2, "b"), (3, "c")],
            refused: vec![2],
            ..Fake::default()
        };
        let f = run(fake, Arc::new(Notify::new()), 2, Duration::from_secs(1)).await;
        assert_eq!(f.set_aside, vec![2]);
        assert_eq!(f.sent, [3, 1, 2, 1, 1]);
        let uploaded: Vec<u64> = f.uploaded.iter().flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(uploaded, vec![1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_spool_waits_for_its_wake_and_rechecks_rarely() {
        let wake = Arc::new(Notify::new());
        let (fake, task) = start(Fake::default(), wake.clone());
        // Idle for 50 s: one read, at the start.
        wait(&fake, 1, Duration::from_secs(50)).await;
        assert_eq!(fake.lock().reads, 1, "an idle uploader does not poll");
        // An event spooled with a wake is uploaded at once.
        fake.lock().spooled.push((3, "c"));
        wake.notify_one();
        wait(&fake, 1, Duration::from_secs(1)).await;
        {
            let f = fake.lock();
            assert_eq!(f.uploaded.len(), 1);
            let at = f.uploaded[0].0;
            assert!(
                at >= Duration::from_secs(50) && at < Duration::from_millis(50_050),
                "{at:?}"
            );
        }
        // One spooled without a wake (not expected: every spool write wakes
        // it) is found by the recheck.
        fake.lock().spooled.push((4, "d"));
        wait(&fake, 2, UPLOAD_RECHECK + Duration::from_secs(1)).await;
        {
            let f = fake.lock();
            assert_eq!(f.uploaded.len(), 2);
            let at = f.uploaded[1].0;
            assert!(
                at >= UPLOAD_RECHECK + Duration::from_secs(50)
                    && at <= UPLOAD_RECHECK + Duration::from_millis(50_100),
                "{at:?}"
            );
        }
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only `https://` service URLs are taken, with an error naming the
    /// scheme; the clients refuse anything else too.
    #[tokio::test]
    async fn plain_http_is_refused() {
        require_https("https://palisade.example:8443").unwrap();
        let e = require_https("http://palisade.example:8443").unwrap_err();
        assert!(
            e.to_string()
                .contains("must be reached over https://, not http://"),
            "{e}"
        );
        assert!(require_https("palisade.example").is_err());
        let client = insecure_client().unwrap();
        let e = client.get("http://127.0.0.1:9/").send().await.unwrap_err();
        assert!(e.is_builder(), "{e:?}");
    }

    /// A service that takes the connection, completes TLS, reads the
    /// request and then says nothing: the stream is given up at its bound
    /// (the agent reconnects), instead of waiting for ever.
    #[tokio::test]
    async fn a_stream_whose_answer_never_starts_is_given_up() {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let config = config.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut buf = [0u8; 4096];
                    let _ = std::io::Read::read(&mut tls, &mut buf);
                    std::thread::sleep(Duration::from_secs(30));
                });
            }
        });
        let identity = Identity {
            server: format!("https://127.0.0.1:{port}"),
            computer_id: palisade_core::ComputerId(1),
            computer: "test".into(),
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
            ca_pem: ck.cert.pem(),
        };
        let mut client = ServiceClient::new(&identity).unwrap();
        client.stream_open = Duration::from_secs(1);
        let started = std::time::Instant::now();
        let opened = tokio::time::timeout(Duration::from_secs(10), client.stream())
            .await
            .expect("the stream must give up by itself");
        let e = opened.err().expect("no stream from a silent service");
        assert!(e.to_string().contains("did not open the stream"), "{e:#}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Batches are cut by count and by size; a job too large for any
    /// batch goes alone, and the job that did not fit starts the next one.
    #[test]
    fn lookup_batches_stay_under_their_size() {
        let cut = |sizes: &[usize], max_items, max_bytes| {
            let mut rest = sizes.iter().copied();
            let mut batches = Vec::new();
            let mut carried = None;
            while let Some(first) = carried.take().or_else(|| rest.next()) {
                let (batch, next) = take_batch(first, || rest.next(), |s| *s, max_items, max_bytes);
                batches.push(batch);
                carried = next;
            }
            batches
        };
        assert_eq!(
            cut(&[1, 2, 3, 4, 5], 3, 100),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        assert_eq!(
            cut(&[40, 40, 40, 500, 10, 10], 10, 100),
            vec![vec![40, 40], vec![40], vec![500], vec![10, 10]]
        );
        assert_eq!(
            cut(&[usize::MAX, 1], 10, 100),
            vec![vec![usize::MAX], vec![1]]
        );

        // A real item with a long process chain is counted as sent.
        let long = "/x".repeat(2000);
        let item = LookupItem {
            sha256: Sha256::from_bytes([1; 32]),
            path: Some(long.clone()),
            operation: None,
            process: None,
            publisher: None,
        };
        let n = lookup_item_bytes(&item);
        assert!(n > long.len() && n < long.len() + 300, "{n}");
    }

    /// The levels a scan holds back apply at its bound if it is not done
    /// by then, and the scan is still waited for.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_scan_holds_the_levels_back_only_until_its_bound() {
        let started = tokio::time::Instant::now();
        let late = std::sync::Mutex::new(None);
        let out = wait_bounded(
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                7
            },
            APPROVE_EXISTING_WAIT,
            || *late.lock().unwrap() = Some(started.elapsed()),
        )
        .await;
        assert_eq!(out, 7);
        assert_eq!(*late.lock().unwrap(), Some(APPROVE_EXISTING_WAIT));
        assert!(started.elapsed() >= Duration::from_secs(3600));

        // Done in time: nothing is released early.
        let mut called = false;
        wait_bounded(
            tokio::time::sleep(Duration::from_secs(1)),
            APPROVE_EXISTING_WAIT,
            || called = true,
        )
        .await;
        assert!(!called);
    }
}
