//! The agent API handlers (see `palisade_api::agent` for the table).
use super::extract::{AgentAuth, JsonBody, QueryParams};
use super::AppState;
use crate::ca::Ca;
use crate::db::{
    bump_counter, counter, derived_values, list_placeholders, now_ms, revision, rows_per_statement,
    values_placeholders,
};
use crate::errors::{ApiError, ApiResult};
use crate::eventrules::{queue_file_seen, wants_file_seen};
use crate::store::{
    append_changes, record_publishers, record_sightings, relevant_changes, scope_columns,
    secret_hash, stored_path, unseen_instances, NewChange, Relevance, Sighting,
    MAX_CHANGE_ROWS_PER_TX, MAX_HASHES_PER_MESSAGE,
};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use palisade_api::admin::RuleBody;
use palisade_api::agent::{
    AgentConfig, AgentStatus, ApprovalOrigin, ApprovalRequestCreated, Changes, EnrollRequest,
    EnrollResponse, EventAck, EventBatch, InventoryRequest, InventoryResponse, LocalApprovals,
    LocalApprovalsAck, LookupRequest, LookupResponse, LookupResult, NewApprovalRequest, Removed,
    RemovedAck, EVENT_BATCH_MAX, INVENTORY_BATCH_MAX, LOOKUP_BATCH_MAX,
};
use palisade_api::EnrollToken;
use palisade_core::rules::{PublisherFact, RuleId, RuleSet, TrustedChange};
use palisade_core::{resolve, ComputerId, Operation, PolicyId, Scope, Sha256};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Longest accepted path in an event or inventory item.
const MAX_PATH: usize = 4096;
/// Largest event stored, serialized (its reason, executable paths and
/// ancestors included). An agent's largest (32 ancestors, each with a
/// 4096-byte path) is well under it; events are listed a thousand at a time.
const MAX_EVENT_JSON: usize = 256 * 1024;

/// `GET /agent/v1/ca` (no authentication): the CA certificate, PEM. A new
/// agent checks its DER SHA-256 against its enrollment token before
/// trusting it.
pub(crate) async fn ca(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/x-pem-file")],
        state.ca.cert_pem().to_owned(),
    )
}

fn check_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(ApiError::invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// The computer name derived from a host name: invalid characters become
/// `-`, at most 56 characters (room for a `-NNN` suffix).
fn base_name(hostname: &str) -> String {
    let mapped: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = trimmed.chars().take(56).collect();
    if name.is_empty() {
        name = "computer".to_owned();
    }
    name
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `POST /agent/v1/enroll`.
pub(crate) async fn enroll(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    let token: EnrollToken = req
        .token
        .parse()
        .map_err(|e| ApiError::unauthorized(format!("{e}")).field("token"))?;
    if token.ca_fingerprint != state.ca.fingerprint() {
        return Err(ApiError::unauthorized(
            "this enrollment token was issued by a different Palisade service (CA fingerprint mismatch)",
        )
        .field("token"));
    }
    if req.hostname.trim().is_empty() {
        return Err(ApiError::invalid("hostname", "must not be empty"));
    }
    check_text("hostname", &req.hostname, 253)?;
    check_text("os", &req.os, 256)?;
    check_text("agent_version", &req.agent_version, 64)?;
    let csr =
        Ca::parse_csr(&req.csr_pem).map_err(|e| ApiError::bad_request(e.0).field("csr_pem"))?;
    let secret = secret_hash(&token.secret);
    // Anyone may call this: a token that cannot be used (unknown, used up,
    // expired) is refused from a read, so a flood of made-up secrets never
    // takes, nor waits for, the write lock other writers queue on. The
    // conditional update below still decides among concurrent uses.
    if let Some(refusal) = token_refusal(&state, &secret, now_ms()).await? {
        return Err(refusal);
    }
    let base = base_name(req.hostname.trim());
    // A concurrent enrollment may take the chosen name first (PostgreSQL):
    // retry with the next free one.
    for _attempt in 0..5 {
        let mut tx = state.db.write().await?;
        let now = now_ms();
        let consumed = sqlx::query(
            "UPDATE enroll_tokens SET uses_left = uses_left - 1 \
             WHERE secret_sha256 = $1 AND uses_left > 0 AND expires_ms > $2 \
             RETURNING org_id, policy_id",
        )
        .bind(&secret)
        .bind(now)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = consumed else {
            drop(tx);
            // Used up or expired since the read above.
            return Err(token_refusal(&state, &secret, now)
                .await?
                .unwrap_or_else(|| {
                    ApiError::unauthorized("this enrollment token cannot be used now")
                        .field("token")
                }));
        };
        let org_id: i64 = row.try_get(0)?;
        let policy_id: i64 = row.try_get(1)?;
        let name = free_name(tx.conn(), org_id, &base).await?;
        let (certificate_pem, fingerprint) = state
            .ca
            .sign_client(&csr, &name)
            .map_err(|e| ApiError::bad_request(e.0).field("csr_pem"))?;
        let inserted = sqlx::query(
            "INSERT INTO computers (org_id, policy_id, name, hostname, os, agent_version, \
               cert_fingerprint, revoked, enrolled_ms, last_seen_ms, connected_until_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, 0) RETURNING id",
        )
        .bind(org_id)
        .bind(policy_id)
        .bind(&name)
        .bind(req.hostname.trim())
        .bind(&req.os)
        .bind(&req.agent_version)
        .bind(fingerprint.to_hex())
        .bind(now)
        .fetch_one(tx.conn())
        .await;
        let computer_id: i64 = match inserted {
            Ok(row) => row.try_get(0)?,
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        tracing::info!(computer = %name, computer_id, "computer enrolled");
        return Ok(Json(EnrollResponse {
            computer_id: ComputerId(computer_id),
            computer: name,
            certificate_pem,
            ca_pem: state.ca.cert_pem().to_owned(),
        }));
    }
    Err(ApiError::conflict(
        "could not find a free computer name; try again",
    ))
}

/// Why a token cannot be used at `now`, as a 401; `None` when it can (a
/// read, outside any write transaction).
async fn token_refusal(state: &AppState, secret: &str, now: i64) -> ApiResult<Option<ApiError>> {
    let row =
        sqlx::query("SELECT uses_left, expires_ms FROM enroll_tokens WHERE secret_sha256 = $1")
            .bind(secret)
            .fetch_optional(state.db.pool())
            .await?;
    let message = match row {
        None => "unknown enrollment token",
        Some(row) => {
            let uses_left: i64 = row.try_get(0)?;
            let expires: i64 = row.try_get(1)?;
            if uses_left <= 0 {
                "this enrollment token has already been used"
            } else if expires <= now {
                "this enrollment token has expired"
            } else {
                return Ok(None);
            }
        }
    };
    Ok(Some(ApiError::unauthorized(message).field("token")))
}

/// `base`, or `base-2`, `base-3`, ... whichever is free in the organization.
async fn free_name(
    conn: &mut AnyConnection,
    org_id: i64,
    base: &str,
) -> Result<String, sqlx::Error> {
    let taken: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM computers WHERE org_id = $1 AND (name = $2 OR name LIKE $3)",
    )
    .bind(org_id)
    .bind(base)
    .bind(format!("{base}-%"))
    .fetch_all(conn)
    .await?;
    let taken: HashSet<String> = taken.into_iter().collect();
    if !taken.contains(base) {
        return Ok(base.to_owned());
    }
    let mut n = 2u64;
    loop {
        let candidate = format!("{base}-{n}");
        if !taken.contains(&candidate) {
            return Ok(candidate);
        }
        n += 1;
    }
}

/// The configuration of a computer, stamped with `revision`.
pub(crate) async fn load_config(
    conn: &mut AnyConnection,
    cache: &crate::rules::RuleCache,
    computer_id: i64,
    revision: i64,
) -> ApiResult<AgentConfig> {
    Ok(load_config_and_policy(conn, cache, computer_id, revision)
        .await?
        .0)
}

/// [`load_config`] and the id of the policy it is that of.
pub(crate) async fn load_config_and_policy(
    conn: &mut AnyConnection,
    cache: &crate::rules::RuleCache,
    computer_id: i64,
    revision: i64,
) -> ApiResult<(AgentConfig, i64)> {
    let row = sqlx::query(
        "SELECT c.id, c.name, o.name, p.name, p.level, p.disconnected_level, \
           p.approve_existing_epoch, c.org_id, c.policy_id, o.rules_version \
         FROM computers c JOIN orgs o ON o.id = c.org_id JOIN policies p ON p.id = c.policy_id \
         WHERE c.id = $1",
    )
    .bind(computer_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::forbidden("this computer no longer exists"))?;
    let level: String = row.try_get(4)?;
    let disconnected: String = row.try_get(5)?;
    let rules = cache
        .get(conn, row.try_get(7)?, row.try_get(8)?, row.try_get(9)?)
        .await?;
    let config = AgentConfig {
        computer_id: ComputerId(row.try_get(0)?),
        computer: row.try_get(1)?,
        organization: row.try_get(2)?,
        policy: row.try_get(3)?,
        levels: palisade_core::Levels {
            connected: crate::store::parse_level(&level)?,
            disconnected: crate::store::parse_level(&disconnected)?,
        },
        revision,
        rules: RuleSet::clone(&rules),
        approve_existing_epoch: row.try_get(6)?,
    };
    Ok((config, row.try_get(8)?))
}

/// `GET /agent/v1/config`.
pub(crate) async fn config(
    State(state): State<AppState>,
    agent: AgentAuth,
) -> ApiResult<Json<AgentConfig>> {
    let mut conn = state.db.pool().acquire().await?;
    let rev = revision(&mut conn).await?;
    Ok(Json(
        load_config(&mut conn, &state.rule_cache, agent.computer_id, rev).await?,
    ))
}

/// `POST /agent/v1/lookup`: one indexed query for the whole batch (states
/// and reputation); the catalog and publisher facts are written by the
/// recorder task afterwards.
pub(crate) async fn lookup(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(req): JsonBody<LookupRequest>,
) -> ApiResult<Json<LookupResponse>> {
    if req.files.len() > LOOKUP_BATCH_MAX {
        return Err(ApiError::invalid(
            "files",
            format!("at most {LOOKUP_BATCH_MAX} files per lookup"),
        ));
    }
    let who = agent.who();
    let mut seen = HashSet::new();
    let unique: Vec<Sha256> = req
        .files
        .iter()
        .map(|f| f.sha256)
        .filter(|h| seen.insert(*h))
        .collect();
    let mut conn = state.db.pool().acquire().await?;
    // The revision first: every change up to it is visible to the next
    // query, the computer's policy included (the one read when the request
    // was authenticated may be older than the revision: a move committed
    // in between was answered with the old policy's states, stamped with a
    // revision past the move, so the agent never asked again).
    let rev = revision(&mut conn).await?;
    let (policy, states, trust) =
        crate::store::lookup_facts(&mut conn, who.org_id, who.computer_id, &unique).await?;
    drop(conn);
    let policy = match policy {
        Some(p) => PolicyId(p),
        None if unique.is_empty() => PolicyId(who.policy_id),
        None => return Err(ApiError::forbidden("this computer no longer exists")),
    };
    let computer = ComputerId(who.computer_id);
    let results = req
        .files
        .iter()
        .map(|f| LookupResult {
            sha256: f.sha256,
            approval: resolve(
                states.get(&f.sha256).map(Vec::as_slice).unwrap_or_default(),
                policy,
                computer,
            ),
            trust: trust.get(&f.sha256).copied(),
        })
        .collect();
    state
        .recorder
        .lookups(who.org_id, who.computer_id, req.files);
    Ok(Json(LookupResponse {
        revision: rev,
        results,
    }))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct ChangesQuery {
    since: i64,
}

/// Most change rows examined by one `changes` answer before answering `reset`.
const CHANGES_SCAN_MAX: i64 = 4 * MAX_HASHES_PER_MESSAGE as i64;

/// `GET /agent/v1/changes?since=R`.
pub(crate) async fn changes(
    State(state): State<AppState>,
    agent: AgentAuth,
    QueryParams(q): QueryParams<ChangesQuery>,
) -> ApiResult<Json<Changes>> {
    let who = agent.who();
    let reset = |revision| {
        Json(Changes {
            revision,
            hashes: Vec::new(),
            config_changed: true,
            reset: true,
        })
    };
    let mut conn = state.db.pool().acquire().await?;
    let current = revision(&mut conn).await?;
    if q.since > current {
        return Ok(reset(current));
    }
    let rows = relevant_changes(&mut conn, &who, q.since, current, CHANGES_SCAN_MAX + 1).await?;
    // The prune mark is read after the rows: a prune committed before the
    // rows were read (some of them deleted) shows in it, and the answer is
    // a reset, not a partial list.
    let pruned = counter(&mut conn, "changes_pruned").await?;
    if q.since < pruned {
        return Ok(reset(current));
    }
    let mut rel = Relevance::default();
    rel.add(&who, &rows);
    if rows.len() as i64 > CHANGES_SCAN_MAX {
        rel.reset = true;
        rel.hashes.clear();
    }
    Ok(Json(Changes {
        revision: current,
        hashes: rel.hashes,
        config_changed: rel.config_changed,
        reset: rel.reset,
    }))
}

/// `POST /agent/v1/events`: idempotent per (computer, seq, event time): a
/// batch re-sent after a lost answer carries the very same events, while
/// an agent whose spool was rebuilt may number new events as it numbered
/// old ones (their times differ), and they must not be taken for
/// duplicates. Newly stored events (not duplicates) go to the catalog and
/// the event rules after commit.
pub(crate) async fn events(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(batch): JsonBody<EventBatch>,
) -> ApiResult<Json<EventAck>> {
    if batch.events.len() > EVENT_BATCH_MAX {
        return Err(ApiError::invalid(
            "events",
            format!("at most {EVENT_BATCH_MAX} events per batch"),
        ));
    }
    let mut rows = Vec::with_capacity(batch.events.len());
    let mut seqs = HashSet::new();
    for (i, e) in batch.events.iter().enumerate() {
        let seq = i64::try_from(e.seq)
            .map_err(|_| ApiError::invalid(&format!("events[{i}].seq"), "too large"))?;
        if e.event.path.len() > MAX_PATH {
            return Err(ApiError::invalid(
                &format!("events[{i}].event.path"),
                format!("longer than {MAX_PATH} bytes"),
            ));
        }
        if !seqs.insert((seq, e.event.time_ms)) {
            continue;
        }
        let json = serde_json::to_string(&e.event).map_err(|e| ApiError::internal(&e))?;
        if json.len() > MAX_EVENT_JSON {
            return Err(ApiError::invalid(
                &format!("events[{i}].event"),
                format!("larger than {MAX_EVENT_JSON} bytes"),
            ));
        }
        rows.push((seq, e, json));
    }
    let mut stored = 0u64;
    // (id, event) of each event newly stored; a duplicate (re-sent after a
    // lost answer) goes neither to the event rules nor to the catalog.
    let mut stored_events: Vec<(i64, palisade_core::FileEvent)> = Vec::new();
    if !rows.is_empty() {
        let received = now_ms();
        let mut tx = state.db.write().await?;
        // Ids under the counter's row lock: events commit in id order.
        let n = rows.len() as i64;
        let last = bump_counter(tx.conn(), "events", n).await?;
        let mut next_id = last - n + 1;
        let mut existing: HashSet<(i64, i64)> = HashSet::new();
        for chunk in rows.chunks(rows_per_statement(1)) {
            let sql = format!(
                "SELECT seq, time_ms FROM events WHERE computer_id = $1 AND seq IN ({})",
                list_placeholders(chunk.len(), 2)
            );
            let mut q = sqlx::query_as::<_, (i64, i64)>(&sql).bind(agent.computer_id);
            for (seq, _, _) in chunk {
                q = q.bind(*seq);
            }
            existing.extend(q.fetch_all(tx.conn()).await?);
        }
        let fresh: Vec<_> = rows
            .iter()
            .filter(|(seq, e, _)| !existing.contains(&(*seq, e.event.time_ms)))
            .collect();
        let mut inserted: HashSet<i64> = HashSet::new();
        let mut by_id: Vec<(i64, &palisade_api::agent::AgentEvent)> = Vec::new();
        for chunk in fresh.chunks(rows_per_statement(10)) {
            let sql = format!(
                "INSERT INTO events (id, org_id, computer_id, seq, received_ms, time_ms, kind, \
                   sha256, path, event_json) VALUES {} ON CONFLICT (computer_id, seq, time_ms) DO NOTHING \
                 RETURNING id",
                values_placeholders(chunk.len(), 10, 1)
            );
            let mut q = sqlx::query_scalar::<_, i64>(&sql);
            for (seq, e, json) in chunk {
                q = q
                    .bind(next_id)
                    .bind(agent.org_id)
                    .bind(agent.computer_id)
                    .bind(*seq)
                    .bind(received)
                    .bind(e.event.time_ms)
                    .bind(e.event.kind.as_str())
                    .bind(e.event.sha256.map(|h| h.to_hex()))
                    .bind(&e.event.path)
                    .bind(json.as_str());
                by_id.push((next_id, *e));
                next_id += 1;
            }
            inserted.extend(q.fetch_all(tx.conn()).await?);
        }
        stored = inserted.len() as u64;
        if stored > 0 {
            tx.events_stored();
        }
        tx.commit().await?;
        stored_events = by_id
            .into_iter()
            .filter(|(id, _)| inserted.contains(id))
            .map(|(id, e)| (id, e.event.clone()))
            .collect();
    }
    state.recorder.events(
        agent.org_id,
        agent.computer_id,
        agent.enrolled_ms,
        stored_events.iter().map(|(_, e)| e.clone()).collect(),
    );
    // The event rules read the stored events themselves (woken by the
    // commit's `events_stored`).
    Ok(Json(EventAck { stored }))
}

/// `POST /agent/v1/inventory`: catalog the batch (with the publisher facts
/// it carries) and, with `approve_locally`, approve each file on this
/// computer (never replacing a state an admin set there), all in one
/// transaction of multi-row inserts. Hashes new to this computer are handed
/// to `file_seen` event rules (operation `inventory`) after commit.
pub(crate) async fn inventory(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(req): JsonBody<InventoryRequest>,
) -> ApiResult<Json<InventoryResponse>> {
    if req.files.len() > INVENTORY_BATCH_MAX {
        return Err(ApiError::invalid(
            "files",
            format!("at most {INVENTORY_BATCH_MAX} files per batch"),
        ));
    }
    for (i, f) in req.files.iter().enumerate() {
        if f.path.is_empty() || f.path.len() > MAX_PATH {
            return Err(ApiError::invalid(
                &format!("files[{i}].path"),
                format!("must be 1 to {MAX_PATH} bytes"),
            ));
        }
    }
    let now = now_ms();
    let sightings: Vec<Sighting> = req
        .files
        .iter()
        .map(|f| Sighting {
            sha256: f.sha256,
            computer_id: agent.computer_id,
            path: Some(f.path.clone()),
            operation: None,
            process_json: None,
            at_ms: now,
        })
        .collect();
    let hashes: BTreeSet<Sha256> = req.files.iter().map(|f| f.sha256).collect();
    let facts: Vec<(Sha256, &PublisherFact)> = req
        .files
        .iter()
        .filter_map(|f| f.publisher.as_ref().map(|p| (f.sha256, p)))
        .collect();
    let mut tx = state.db.write().await?;
    let mut first_seen = if wants_file_seen(tx.conn(), agent.org_id).await? {
        unseen_instances(tx.conn(), agent.org_id, &sightings).await?
    } else {
        Vec::new()
    };
    for s in &mut first_seen {
        s.operation = Some(Operation::Inventory);
    }
    queue_file_seen(tx.conn(), agent.org_id, &first_seen).await?;
    let new_hashes = record_sightings(tx.conn(), agent.org_id, &sightings).await?;
    record_publishers(tx.conn(), agent.org_id, &facts, now).await?;
    let mut approved: Vec<Sha256> = Vec::new();
    if req.approve_locally {
        let scope = Scope::Computer(ComputerId(agent.computer_id));
        let (kind, scope_id) = scope_columns(scope);
        let by = format!("scan:{}", agent.name);
        let hashes: Vec<Sha256> = hashes.into_iter().collect();
        for chunk in hashes.chunks(rows_per_statement(1)) {
            let sql = format!(
                "INSERT INTO file_states (org_id, sha256, scope_kind, scope_id, state, updated_ms, \
                   updated_by) SELECT $1, v.column1, $2, $3, $4, $5, $6 FROM {} WHERE true \
                 ON CONFLICT (org_id, sha256, scope_kind, scope_id) DO NOTHING RETURNING sha256",
                derived_values(chunk.len(), 1, 7)
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql)
                .bind(agent.org_id)
                .bind(kind)
                .bind(scope_id)
                .bind("approved")
                .bind(now)
                .bind(by.as_str());
            for h in chunk {
                q = q.bind(h.to_hex());
            }
            for s in q.fetch_all(tx.conn()).await? {
                if let Ok(h) = Sha256::parse(&s) {
                    approved.push(h);
                }
            }
        }
        let changes: Vec<NewChange> = if approved.len() > MAX_CHANGE_ROWS_PER_TX {
            vec![NewChange::file(None, scope)]
        } else {
            approved
                .iter()
                .map(|h| NewChange::file(Some(*h), scope))
                .collect()
        };
        append_changes(&mut tx, agent.org_id, &changes).await?;
    }
    let rev = revision(tx.conn()).await?;
    tx.commit().await?;
    if !first_seen.is_empty() {
        state.event_rules.wake();
    }
    Ok(Json(InventoryResponse {
        new_hashes,
        approved: approved.len() as u64,
        revision: rev,
    }))
}

/// Who an approval made on a computer is recorded as made by.
fn origin_author(origin: &ApprovalOrigin, computer: &str) -> String {
    match origin {
        ApprovalOrigin::Updater { name, .. } => format!("updater:{name}@{computer}"),
        ApprovalOrigin::TrustedUser { user, .. } => format!("trusted-user:{user}@{computer}"),
        ApprovalOrigin::TrustedDirectory { dir, .. } => {
            format!("trusted-directory:{dir}@{computer}")
        }
        ApprovalOrigin::CustomRule { rule } => format!("custom-rule:{rule}@{computer}"),
        ApprovalOrigin::LevelChange => format!("level-change@{computer}"),
    }
}

/// Approvals to write at one scope: each file, with who made it.
type Approvals = BTreeMap<Sha256, String>;

/// Insert approvals at `scope` unless a state is set there already (an
/// admin's ban or approval stays); returns the hashes newly approved.
async fn insert_approvals(
    tx: &mut crate::db::WriteTx<'_>,
    org_id: i64,
    scope: Scope,
    rows: &[(Sha256, String)],
    now: i64,
) -> Result<Vec<Sha256>, sqlx::Error> {
    let (kind, scope_id) = scope_columns(scope);
    let mut out = Vec::new();
    for chunk in rows.chunks(rows_per_statement(2)) {
        let sql = format!(
            "INSERT INTO file_states (org_id, sha256, scope_kind, scope_id, state, updated_ms, \
               updated_by) SELECT $1, v.column1, $2, $3, 'approved', $4, v.column2 FROM {} \
             WHERE true ON CONFLICT (org_id, sha256, scope_kind, scope_id) DO NOTHING \
             RETURNING sha256",
            derived_values(chunk.len(), 2, 5)
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql)
            .bind(org_id)
            .bind(kind)
            .bind(scope_id)
            .bind(now);
        for (h, by) in chunk {
            q = q.bind(h.to_hex()).bind(by.as_str());
        }
        for s in q.fetch_all(tx.conn()).await? {
            out.push(crate::store::parse_sha(&s)?);
        }
    }
    Ok(out)
}

/// A trusted-directory rule as the database has it now.
struct TrustedDirNow {
    dir: String,
    /// The policies it is limited to (empty: every policy).
    policies: BTreeSet<i64>,
    /// The computers whose finds approve beyond themselves: those its
    /// `computers` named when it was created (`rule_computers`), by id.
    trusted_servers: BTreeSet<i64>,
}

/// The enabled trusted-directory rules among `rules`, as the database has
/// them now. One statement, so the rule and its policy list are read
/// together (read apart, a rule deleted in between looked like a rule
/// limited to no policy: one for every computer).
async fn trusted_directories(
    conn: &mut AnyConnection,
    org_id: i64,
    rules: impl Iterator<Item = i64>,
) -> Result<HashMap<i64, TrustedDirNow>, sqlx::Error> {
    let rules: Vec<i64> = rules.collect();
    let mut out: HashMap<i64, TrustedDirNow> = HashMap::new();
    for chunk in rules.chunks(rows_per_statement(1)) {
        let sql = format!(
            "SELECT r.id, r.body_json, rp.policy_id FROM rules r \
             LEFT JOIN rule_policies rp ON rp.rule_id = r.id \
             WHERE r.org_id = $1 AND r.enabled = 1 AND r.kind = 'trusted_directory' \
               AND r.id IN ({})",
            list_placeholders(chunk.len(), 2)
        );
        let mut q = sqlx::query(&sql).bind(org_id);
        for r in chunk {
            q = q.bind(*r);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let id: i64 = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            let Ok(RuleBody::TrustedDirectory { dir, .. }) = serde_json::from_str(&body) else {
                tracing::warn!(rule = id, "stored trusted-directory rule is unreadable");
                continue;
            };
            let now = out.entry(id).or_insert_with(|| TrustedDirNow {
                dir,
                policies: BTreeSet::new(),
                trusted_servers: BTreeSet::new(),
            });
            if let Some(policy) = row.try_get::<Option<i64>, _>(2)? {
                now.policies.insert(policy);
            }
        }
        // In the same transaction as the rules (rows are never changed,
        // only deleted with their rule).
        let sql = format!(
            "SELECT rule_id, computer_id FROM rule_computers WHERE rule_id IN ({})",
            list_placeholders(chunk.len(), 1)
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q.bind(*r);
        }
        for row in q.fetch_all(&mut *conn).await? {
            if let Some(now) = out.get_mut(&row.try_get::<i64, _>(0)?) {
                now.trusted_servers.insert(row.try_get(1)?);
            }
        }
    }
    Ok(out)
}

/// How many of `hashes` are approved at `scope`.
async fn approved_at(
    conn: &mut AnyConnection,
    org_id: i64,
    scope: Scope,
    hashes: &[Sha256],
) -> Result<u64, sqlx::Error> {
    let (kind, scope_id) = scope_columns(scope);
    let mut n = 0u64;
    for chunk in hashes.chunks(rows_per_statement(1)) {
        let sql = format!(
            "SELECT COUNT(*) FROM file_states WHERE org_id = $1 AND scope_kind = $2 \
             AND scope_id = $3 AND state = 'approved' AND sha256 IN ({})",
            list_placeholders(chunk.len(), 4)
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql)
            .bind(org_id)
            .bind(kind)
            .bind(scope_id);
        for h in chunk {
            q = q.bind(h.to_hex());
        }
        n += u64::try_from(q.fetch_one(&mut *conn).await?).unwrap_or(0);
    }
    Ok(n)
}

/// `POST /agent/v1/approvals`: approvals the computer made by trusted
/// change or when its level was raised. Each is a local (computer-scope)
/// approval, except a file placed in a trusted directory by a computer the
/// rule names as one of its trusted servers, which is approved
/// for every computer the rule applies to: for all computers (global
/// scope) when the rule applies to every policy, else for each of the
/// policies it is limited to (policy scope) — so a computer of one policy
/// never approves for another policy the rule does not cover. Such a claim
/// is accepted only when the item names an enabled trusted-directory rule
/// that applies to this computer, with its directory, and the path is
/// inside it, both in the computer's rule set and as the rule is read again
/// in the transaction that writes the approvals (other claims are skipped
/// and logged). A state already set at
/// the scope is never replaced. Paths go to the catalog; new approvals are
/// logged as changes (pushed). `approved` counts (scope, file) pairs.
pub(crate) async fn approvals(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(req): JsonBody<LocalApprovals>,
) -> ApiResult<Json<LocalApprovalsAck>> {
    if req.items.len() > INVENTORY_BATCH_MAX {
        return Err(ApiError::invalid(
            "items",
            format!("at most {INVENTORY_BATCH_MAX} approvals per batch"),
        ));
    }
    for (i, it) in req.items.iter().enumerate() {
        if it.path.is_empty() || it.path.len() > MAX_PATH || it.path.contains('\0') {
            return Err(ApiError::invalid(
                &format!("items[{i}].path"),
                format!("must be 1 to {MAX_PATH} bytes without NUL"),
            ));
        }
        let (field, text, max) = match &it.origin {
            ApprovalOrigin::Updater { name, .. } => ("name", name, 256),
            ApprovalOrigin::TrustedUser { user, .. } => ("user", user, 256),
            ApprovalOrigin::TrustedDirectory { dir, .. } => ("dir", dir, MAX_PATH),
            ApprovalOrigin::CustomRule { .. } | ApprovalOrigin::LevelChange => continue,
        };
        let field = format!("items[{i}].origin.{field}");
        if text.is_empty() {
            return Err(ApiError::invalid(&field, "must not be empty"));
        }
        check_text(&field, text, max)?;
    }
    let trusted_dirs: HashMap<RuleId, String> = if req
        .items
        .iter()
        .any(|i| matches!(i.origin, ApprovalOrigin::TrustedDirectory { .. }))
    {
        let mut conn = state.db.pool().acquire().await?;
        let version = crate::rules::rules_version(&mut conn, agent.org_id).await?;
        state
            .rule_cache
            .get(&mut conn, agent.org_id, agent.policy_id, version)
            .await?
            .trusted_change
            .iter()
            .filter_map(|t| match t {
                TrustedChange::TrustedDirectory { id, dir } => Some((*id, dir.clone())),
                _ => None,
            })
            .collect()
    } else {
        HashMap::new()
    };
    let now = now_ms();
    // Trusted-directory claims by rule (with its directory); their scopes
    // are the rule's.
    let mut by_rule: BTreeMap<i64, (&str, BTreeMap<Sha256, String>)> = BTreeMap::new();
    let mut local: BTreeMap<Sha256, String> = BTreeMap::new();
    let mut sightings = Vec::with_capacity(req.items.len());
    for it in &req.items {
        let by = origin_author(&it.origin, &agent.name);
        if let ApprovalOrigin::TrustedDirectory { rule, dir } = &it.origin {
            let inside = it
                .path
                .strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
                && !it.path.split('/').any(|seg| seg == ".." || seg == ".");
            if trusted_dirs.get(rule) != Some(dir) || !inside {
                tracing::warn!(computer = %agent.name, rule = %rule, dir = ?dir, path = ?it.path, sha256 = %it.sha256,
                    "trusted-directory approval refused: no such rule for this computer, or the path is outside it");
                continue;
            }
            by_rule
                .entry(rule.0)
                .or_insert_with(|| (dir.as_str(), BTreeMap::new()))
                .1
                .entry(it.sha256)
                .or_insert(by);
        } else {
            local.entry(it.sha256).or_insert(by);
        }
        sightings.push(Sighting {
            sha256: it.sha256,
            computer_id: agent.computer_id,
            path: Some(it.path.clone()),
            operation: None,
            process_json: it
                .process
                .as_ref()
                .and_then(|p| serde_json::to_string(p).ok()),
            at_ms: now,
        });
    }
    let local_scope = Scope::Computer(ComputerId(agent.computer_id));
    let mut tx = state.db.write().await?;
    let first_seen = if wants_file_seen(tx.conn(), agent.org_id).await? {
        unseen_instances(tx.conn(), agent.org_id, &sightings).await?
    } else {
        Vec::new()
    };
    queue_file_seen(tx.conn(), agent.org_id, &first_seen).await?;
    record_sightings(tx.conn(), agent.org_id, &sightings).await?;
    // Scopes in a fixed order (concurrent writers lock file states alike).
    let mut scoped: BTreeMap<(&'static str, i64), (Scope, Approvals)> = BTreeMap::new();
    // The rule as it is now, read in this transaction: the rule set above
    // may be older (a rule deleted, disabled, moved or narrowed since).
    let now_rules = trusted_directories(tx.conn(), agent.org_id, by_rule.keys().copied()).await?;
    for (rule, (dir, rows)) in by_rule {
        let applies = now_rules.get(&rule).filter(|now| {
            now.dir == dir && (now.policies.is_empty() || now.policies.contains(&agent.policy_id))
        });
        let Some(now) = applies else {
            tracing::warn!(computer = %agent.name, rule, files = rows.len(),
                "trusted-directory approvals refused: the rule is gone, disabled, changed, or no longer applies to this computer's policy");
            continue;
        };
        // One computer's word approves for others only where the rule
        // names it as a trusted server of the directory: this computer, by
        // id, not whoever bears the name now.
        let scopes: Vec<Scope> = if !now.trusted_servers.contains(&agent.computer_id) {
            vec![local_scope]
        } else if now.policies.is_empty() {
            vec![Scope::Global]
        } else {
            now.policies
                .iter()
                .map(|p| Scope::Policy(PolicyId(*p)))
                .collect()
        };
        for scope in scopes {
            let (_, at) = scoped
                .entry(scope_columns(scope))
                .or_insert_with(|| (scope, BTreeMap::new()));
            for (h, by) in &rows {
                at.entry(*h).or_insert_with(|| by.clone());
            }
        }
    }
    let (_, at) = scoped
        .entry(scope_columns(local_scope))
        .or_insert_with(|| (local_scope, BTreeMap::new()));
    for (h, by) in local {
        at.entry(h).or_insert(by);
    }
    let mut approved = 0u64;
    let mut changes = Vec::new();
    for (scope, rows) in scoped.into_values() {
        if rows.is_empty() {
            continue;
        }
        let rows: Vec<(Sha256, String)> = rows.into_iter().collect();
        let fresh = insert_approvals(&mut tx, agent.org_id, scope, &rows, now).await?;
        let hashes: Vec<Sha256> = rows.iter().map(|r| r.0).collect();
        approved += approved_at(tx.conn(), agent.org_id, scope, &hashes).await?;
        if fresh.len() > MAX_CHANGE_ROWS_PER_TX {
            changes.push(NewChange::file(None, scope));
        } else {
            changes.extend(fresh.iter().map(|h| NewChange::file(Some(*h), scope)));
        }
    }
    append_changes(&mut tx, agent.org_id, &changes).await?;
    let rev = revision(tx.conn()).await?;
    tx.commit().await?;
    if !first_seen.is_empty() {
        state.event_rules.wake();
    }
    if !changes.is_empty() {
        tracing::info!(computer = %agent.name, approved, new = changes.len(), "local approvals recorded");
    }
    Ok(Json(LocalApprovalsAck {
        approved,
        revision: rev,
    }))
}

/// Longest reason of an approval request.
const MAX_REASON: usize = 2000;
/// Most pending approval requests of one computer: past that, a new one is
/// refused (429) until an admin decides some, so that one computer cannot
/// bury the organization's requests.
const MAX_PENDING_REQUESTS: i64 = 100;

/// `POST /agent/v1/requests`: a user asks for a blocked file to be
/// approved on this computer. A pending request for the same file on the
/// same computer is answered with its id (200) instead of a new one (201);
/// a computer with [`MAX_PENDING_REQUESTS`] pending is refused a new one
/// (429: the agent tells the user, who may ask again once some are
/// decided; nothing retries it).
pub(crate) async fn request_approval(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(req): JsonBody<NewApprovalRequest>,
) -> ApiResult<(StatusCode, Json<ApprovalRequestCreated>)> {
    if req.path.is_empty() || req.path.len() > MAX_PATH || req.path.contains('\0') {
        return Err(ApiError::invalid(
            "path",
            format!("must be 1 to {MAX_PATH} bytes without NUL"),
        ));
    }
    if req.user.trim().is_empty() {
        return Err(ApiError::invalid("user", "must not be empty"));
    }
    check_text("user", &req.user, 256)?;
    if req.reason.len() > MAX_REASON {
        return Err(ApiError::invalid(
            "reason",
            format!("longer than {MAX_REASON} bytes"),
        ));
    }
    if req
        .reason
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::invalid("reason", "contains control characters"));
    }
    let process = req
        .process
        .as_ref()
        .and_then(|p| serde_json::to_string(p).ok());
    let mut tx = state.db.write().await?;
    // The computer's requests take turns (the row lock of a write that
    // changes nothing; on SQLite every write does): the duplicate check and
    // the cap below then see every request filed before.
    sqlx::query("UPDATE computers SET last_seen_ms = last_seen_ms WHERE id = $1")
        .bind(agent.computer_id)
        .execute(tx.conn())
        .await?;
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM approval_requests WHERE computer_id = $1 AND sha256 = $2 \
         AND status = 'pending' ORDER BY id LIMIT 1",
    )
    .bind(agent.computer_id)
    .bind(req.sha256.to_hex())
    .fetch_optional(tx.conn())
    .await?;
    if let Some(id) = existing {
        return Ok((StatusCode::OK, Json(ApprovalRequestCreated { id })));
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM approval_requests WHERE computer_id = $1 AND status = 'pending'",
    )
    .bind(agent.computer_id)
    .fetch_one(tx.conn())
    .await?;
    if pending >= MAX_PENDING_REQUESTS {
        tracing::warn!(computer = %agent.name, pending, "approval request refused: too many pending");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this computer already has {pending} pending approval requests (at most \
                 {MAX_PENDING_REQUESTS}): ask again once an administrator has decided some"
            ),
        ));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO approval_requests (org_id, computer_id, sha256, path, user_name, reason, \
           process_json, status, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8) \
         RETURNING id",
    )
    .bind(agent.org_id)
    .bind(agent.computer_id)
    .bind(req.sha256.to_hex())
    .bind(&req.path)
    .bind(&req.user)
    .bind(&req.reason)
    .bind(process)
    .bind(now_ms())
    .fetch_one(tx.conn())
    .await?;
    tx.commit().await?;
    tracing::info!(computer = %agent.name, id, sha256 = %req.sha256, path = ?req.path, user = ?req.user, "approval requested");
    Ok((StatusCode::CREATED, Json(ApprovalRequestCreated { id })))
}

/// `POST /agent/v1/status`.
pub(crate) async fn status(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(status): JsonBody<AgentStatus>,
) -> ApiResult<StatusCode> {
    check_text("agent_version", &status.agent_version, 64)?;
    if status.watched.len() > 4096 {
        return Err(ApiError::invalid("watched", "at most 4096 mount points"));
    }
    for w in &status.watched {
        check_text("watched", w, 4096)?;
    }
    let recent = status.recent.as_ref().map(|w| &w.latency);
    for (name, h) in [
        ("latency.reader", Some(&status.latency.reader)),
        ("latency.workers", Some(&status.latency.workers)),
        ("recent.latency.reader", recent.map(|l| &l.reader)),
        ("recent.latency.workers", recent.map(|l| &l.workers)),
    ] {
        if let Some(h) = h {
            h.check()
                .map_err(|e| ApiError::invalid(name, e.to_string()))?;
        }
    }
    let json = serde_json::to_string(&status).map_err(|e| ApiError::internal(&e))?;
    let mut tx = state.db.write().await?;
    sqlx::query(
        "UPDATE computers SET status_json = $1, agent_version = $2, last_seen_ms = $3 WHERE id = $4",
    )
    .bind(json)
    .bind(&status.agent_version)
    .bind(now_ms())
    .bind(agent.computer_id)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /agent/v1/removed`: paths gone from the agent's computer. Each
/// instance of the computer at such a path (or, for a directory moved away,
/// under it) seen before the removal becomes `deleted`.
///
/// The batch is applied as [`coalesced_removals`] makes it: a path reported
/// more than once counts once, at its latest time, and a directory inside
/// another one removed no earlier adds nothing. A directory's contents are
/// a range of the `(org_id, computer_id, path)` index (bytewise, see
/// [`prefix_range_end`]), so each removal reads only the instances under
/// it: a full batch of directories (an unprivileged user renaming them in a
/// loop) holds the write lock for milliseconds, not a scan of the
/// computer's instances per item.
pub(crate) async fn removed(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(req): JsonBody<Removed>,
) -> ApiResult<Json<RemovedAck>> {
    if req.items.len() > INVENTORY_BATCH_MAX {
        return Err(ApiError::invalid(
            "items",
            format!("at most {INVENTORY_BATCH_MAX} paths per batch"),
        ));
    }
    for (i, it) in req.items.iter().enumerate() {
        if !it.path.starts_with('/') || it.path.len() > MAX_PATH || it.path.contains('\0') {
            return Err(ApiError::invalid(
                &format!("items[{i}].path"),
                format!("must be an absolute path of at most {MAX_PATH} bytes without NUL"),
            ));
        }
        if it.at_ms <= 0 {
            return Err(ApiError::invalid(
                &format!("items[{i}].at_ms"),
                "must be a time in milliseconds since the epoch",
            ));
        }
    }
    let Removals { files, dirs } = coalesced_removals(&req.items, now_ms());
    // Paths compare bytewise: PostgreSQL's index is COLLATE "C" (migration
    // 12), SQLite's BINARY.
    let bytewise = match state.db.kind() {
        crate::DbKind::Postgres => " COLLATE \"C\"",
        crate::DbKind::Sqlite => "",
    };
    let file_sql = format!(
        "UPDATE file_instances SET deleted_ms = $1 \
         WHERE org_id = $2 AND computer_id = $3 AND path{bytewise} = $4 \
           AND last_seen_ms <= $1 AND deleted_ms IS NULL"
    );
    let dir_sql = format!(
        "UPDATE file_instances SET deleted_ms = $1 \
         WHERE org_id = $2 AND computer_id = $3 AND path{bytewise} >= $4 AND path{bytewise} < $5 \
           AND last_seen_ms <= $1 AND deleted_ms IS NULL"
    );
    let mut tx = state.db.write().await?;
    let mut instances = 0u64;
    for (path, at_ms) in &files {
        let done = sqlx::query(&file_sql)
            .bind(*at_ms)
            .bind(agent.org_id)
            .bind(agent.computer_id)
            .bind(path.as_str())
            .execute(tx.conn())
            .await?;
        instances += done.rows_affected();
    }
    for (prefix, at_ms) in &dirs {
        let done = sqlx::query(&dir_sql)
            .bind(*at_ms)
            .bind(agent.org_id)
            .bind(agent.computer_id)
            .bind(prefix.as_str())
            .bind(prefix_range_end(prefix))
            .execute(tx.conn())
            .await?;
        instances += done.rows_affected();
    }
    tx.commit().await?;
    Ok(Json(RemovedAck { instances }))
}

/// The updates a batch of removals comes to, each path with the time it
/// counts from.
#[derive(Debug)]
struct Removals {
    /// Stored paths.
    files: Vec<(String, i64)>,
    /// Stored prefixes, ending in `/` unless cut short by [`stored_path`],
    /// innermost first.
    dirs: Vec<(String, i64)>,
}

/// The [`Removals`] of a batch, no time later than `now` (an agent clock
/// ahead of ours must not stamp the future).
///
/// A path reported more than once counts once, at its latest time: that
/// covers every instance the earlier reports covered (those seen by then),
/// stamped by the last removal. A directory under another directory removed
/// no earlier is dropped: the outer one marks all it would. Directories are
/// listed innermost first, so an instance several cover is stamped by the
/// latest of them either way.
fn coalesced_removals(items: &[palisade_api::agent::RemovedPath], now: i64) -> Removals {
    let mut files: BTreeMap<&str, i64> = BTreeMap::new();
    let mut dirs: BTreeMap<String, i64> = BTreeMap::new();
    for it in items {
        let at_ms = it.at_ms.min(now);
        if it.dir {
            let prefix = format!("{}/", it.path.trim_end_matches('/'));
            let at = dirs.entry(stored_path(&prefix).to_owned()).or_insert(at_ms);
            *at = (*at).max(at_ms);
        } else {
            let at = files.entry(stored_path(&it.path)).or_insert(at_ms);
            *at = (*at).max(at_ms);
        }
    }
    // In byte order a directory comes before everything under it, so the
    // directories that hold the one at hand are on the stack, each with the
    // latest time of it and those holding it.
    let mut kept = Vec::new();
    let mut holders: Vec<(&str, i64)> = Vec::new();
    for (prefix, &at_ms) in &dirs {
        while holders.last().is_some_and(|(h, _)| !prefix.starts_with(h)) {
            holders.pop();
        }
        let held_until = holders.last().map_or(i64::MIN, |&(_, t)| t);
        if held_until >= at_ms {
            continue;
        }
        holders.push((prefix, at_ms.max(held_until)));
        kept.push((prefix.clone(), at_ms));
    }
    kept.reverse();
    let files = files.into_iter().map(|(p, t)| (p.to_owned(), t)).collect();
    Removals { files, dirs: kept }
}

/// The least string above every string that starts with `prefix`, in byte
/// order (which is code point order for UTF-8): `prefix` with its last
/// character raised by one, dropping trailing U+10FFFF first. The strings
/// that start with `prefix` are then exactly those in `prefix..end`.
/// `prefix` starts with `/`, so there is always a character to raise.
fn prefix_range_end(prefix: &str) -> String {
    let mut end: Vec<char> = prefix.chars().collect();
    while let Some(c) = end.pop() {
        let next = match c {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            end.push(next);
            return end.into_iter().collect();
        }
    }
    // Only U+10FFFF: no string of valid text is above it (not reached: a
    // prefix starts with `/`); the empty range.
    prefix.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::Name;

    #[test]
    fn base_names_are_valid_names() {
        for h in [
            "web01",
            "web 01",
            "-x",
            "",
            "é",
            &"a".repeat(300),
            "db.example.com",
        ] {
            assert!(
                Name::parse(&base_name(h)).is_ok(),
                "{h:?} -> {}",
                base_name(h)
            );
        }
        assert_eq!(base_name("web 01"), "web-01");
        assert_eq!(base_name(""), "computer");
    }

    #[test]
    fn prefix_ranges_hold_exactly_what_starts_with_the_prefix() {
        assert_eq!(prefix_range_end("/opt/vendor/"), "/opt/vendor0");
        assert_eq!(prefix_range_end("/a\u{D7FF}"), "/a\u{E000}");
        assert_eq!(prefix_range_end("/a\u{10FFFF}\u{10FFFF}"), "/b");
        let prefix = "/opt/vé/";
        let end = prefix_range_end(prefix);
        for s in ["/opt/vé/", "/opt/vé/x", "/opt/vé/\u{10FFFF}", "/opt/vé/é/z"] {
            assert!(prefix <= s && s < end.as_str(), "{s:?}");
        }
        for s in [
            "/opt/vé",
            "/opt/vé.",
            "/opt/vé0",
            "/opt/véx/y",
            "/opt/vf/",
            "/opt/v/",
        ] {
            assert!(!(prefix <= s && s < end.as_str()), "{s:?}");
        }
    }

    #[test]
    fn removals_are_coalesced() {
        use palisade_api::agent::RemovedPath;
        let item = |path: &str, dir: bool, at_ms: i64| RemovedPath {
            path: path.to_owned(),
            dir,
            at_ms,
        };
        let Removals { files, dirs } = coalesced_removals(
            &[
                item("/f", false, 5),
                item("/f", false, 3),
                item("/a/b", true, 4),
                item("/a/", true, 6),
                item("/a", true, 2),
                item("/a/b/c", true, 7),
                item("/a/b/d", true, 6),
                item("/ab", true, 1),
                item("/x", true, 100),
                item("/x/y", true, 50),
            ],
            60,
        );
        assert_eq!(files, [("/f".to_owned(), 5)]);
        // /a/b (4) and /a/b/d (6) are covered by /a (6), /x/y by /x (clamped
        // to now, 60); /a/b/c (7) is not; /ab is no child of /a.
        let dirs: Vec<(&str, i64)> = dirs.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        assert_eq!(dirs, [("/x/", 60), ("/ab/", 1), ("/a/b/c/", 7), ("/a/", 6)]);
    }
}
