//! The admin API handlers (see `palisade_api::admin` for the table). Every
//! query is filtered by the token's organization; names of another
//! organization's objects are simply not found.
use super::access::{policy_clause, AdminAuth};
use super::extract::{JsonBody, PathParam, QueryParams};
use super::AppState;
use crate::db::now_ms;
use crate::errors::{ApiError, ApiResult};
use crate::ops::{insert_enroll_token, insert_policy, update_levels, write_file_state};
use crate::rules::RuleCache;
use crate::store::{
    append_changes, computer_id_by_name, parse_level, parse_state, policy_by_name, policy_from_row,
    record_sightings, scope_columns, scope_from_columns, NewChange, Sighting,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use palisade_api::admin::{
    ComputerInfo, CreateEnrollToken, CreatePolicy, EffectiveApproval, EnrollTokenCreated,
    EnrollTokenInfo, EventPage, EventQuery, EventRecord, FileDetails, FileInstance, Health,
    MoveComputer, PolicyInfo, ScopeRef, SetFileState, SetLevels, StateRecord, WhoAmI,
};
use palisade_api::agent::AgentStatus;
use palisade_authz::{Op, Permission, Resource};
use palisade_core::rules::{
    evaluate, local_state, CompiledRules, FileFacts, PublisherFact, Request, RuleSet, Subject,
};
use palisade_core::{
    resolve, Approval, ComputerId, FileEvent, Level, Levels, LocalState, Operation, PolicyId,
    ProcessContext, Report, Scope, ScopedState, Sha256, Verdict,
};
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::time::Duration;

/// Longest accepted path.
const MAX_PATH: usize = 4096;
/// Most instances listed in file details.
const MAX_INSTANCES: i64 = 1000;

/// `GET /api/v1/health` (no token).
pub(crate) async fn health(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<Health>)> {
    let ok = sqlx::query_scalar::<_, i64>("SELECT 1")
        .fetch_one(state.db.pool())
        .await
        .is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(Health {
            status: if ok { "ok" } else { "database unavailable" }.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            database: state.db.kind().as_str().to_owned(),
        }),
    ))
}

/// `GET /api/v1/whoami`.
pub(crate) async fn whoami(admin: AdminAuth) -> Json<WhoAmI> {
    Json(WhoAmI {
        admin: admin.admin,
        organization: admin.org,
    })
}

/// `GET /api/v1/files/{sha256}`.
pub(crate) async fn file(
    State(state): State<AppState>,
    admin: AdminAuth,
    sha: PathParam,
) -> ApiResult<Json<FileDetails>> {
    let sha = sha.sha256()?;
    let reach = admin.reach(Permission::new(Resource::Files, Op::Read));
    let mut conn = state.db.pool().acquire().await?;
    Ok(Json(
        file_details(
            &mut conn,
            &state.rule_cache,
            admin.org_id,
            sha,
            reach.as_deref(),
        )
        .await?,
    ))
}

/// Everything known about `sha` in organization `org_id`, as seen from
/// `reach` (see [`AdminAuth::reach`]): `None` shows the whole organization;
/// policies shows only their computers (instances, effective approvals),
/// the global states and those of the policies and their computers, and
/// the first sighting among those computers. Reputation and publishers are
/// facts about the content, shown to anyone who may read the file.
async fn file_details(
    conn: &mut AnyConnection,
    cache: &RuleCache,
    org_id: i64,
    sha: Sha256,
    reach: Option<&[i64]>,
) -> ApiResult<FileDetails> {
    let hex = sha.to_hex();
    // The computers the caller may see (`None`: all of them).
    let visible: Option<std::collections::HashSet<i64>> = match reach {
        None => None,
        Some(policies) => {
            let sql = format!(
                "SELECT id FROM computers WHERE org_id = $1{}",
                policy_clause("policy_id", Some(policies))
            );
            Some(
                sqlx::query_scalar::<_, i64>(&sql)
                    .bind(org_id)
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .collect(),
            )
        }
    };
    let sees_computer = |id: i64| visible.as_ref().is_none_or(|v| v.contains(&id));
    let sees_scope = |scope: Scope| match (reach, scope) {
        (None, _) | (_, Scope::Global) => true,
        (Some(policies), Scope::Policy(p)) => policies.contains(&p.0),
        (Some(_), Scope::Computer(c)) => sees_computer(c.0),
    };
    let mut first_seen_ms: Option<i64> =
        sqlx::query_scalar("SELECT first_seen_ms FROM files WHERE org_id = $1 AND sha256 = $2")
            .bind(org_id)
            .bind(&hex)
            .fetch_optional(&mut *conn)
            .await?;
    let rows = sqlx::query(
        "SELECT i.computer_id, c.name, i.path, i.first_seen_ms, i.last_seen_ms, i.count, \
           i.deleted_ms \
         FROM file_instances i LEFT JOIN computers c ON c.id = i.computer_id \
         WHERE i.org_id = $1 AND i.sha256 = $2 ORDER BY i.last_seen_ms DESC LIMIT $3",
    )
    .bind(org_id)
    .bind(&hex)
    .bind(MAX_INSTANCES)
    .fetch_all(&mut *conn)
    .await?;
    let mut instances = Vec::with_capacity(rows.len());
    let mut instance_computers = Vec::with_capacity(rows.len());
    // The most recent path of the file on each computer.
    let mut paths: HashMap<i64, String> = HashMap::new();
    if reach.is_some() {
        // The first sighting the caller may know of.
        first_seen_ms = None;
    }
    for r in rows {
        let computer_id: i64 = r.try_get(0)?;
        // Instance 0 is an admin's record, not a computer's.
        if reach.is_some() && (computer_id == 0 || !sees_computer(computer_id)) {
            continue;
        }
        if reach.is_some() {
            let seen: i64 = r.try_get(3)?;
            first_seen_ms = Some(first_seen_ms.map_or(seen, |f: i64| f.min(seen)));
        }
        let name: Option<String> = r.try_get(1)?;
        let path: String = r.try_get(2)?;
        let deleted_ms: Option<i64> = r.try_get(6)?;
        if deleted_ms.is_none() {
            paths.entry(computer_id).or_insert_with(|| path.clone());
        }
        instance_computers.push(computer_id);
        instances.push(FileInstance {
            computer: match (computer_id, name) {
                (0, _) => "(admin)".to_owned(),
                (_, Some(n)) => n,
                (id, None) => format!("#{id}"),
            },
            path,
            first_seen_ms: r.try_get(3)?,
            last_seen_ms: r.try_get(4)?,
            count: r.try_get(5)?,
            // Set below, once the computers' rules are known.
            local_state: if deleted_ms.is_some() {
                LocalState::Deleted
            } else {
                LocalState::Unapproved
            },
            deleted_ms,
        });
    }
    let rows = sqlx::query(
        "SELECT s.scope_kind, s.scope_id, s.state, s.updated_ms, s.updated_by, p.name, c.name \
         FROM file_states s \
         LEFT JOIN policies p ON s.scope_kind = 'policy' AND p.id = s.scope_id \
         LEFT JOIN computers c ON s.scope_kind = 'computer' AND c.id = s.scope_id \
         WHERE s.org_id = $1 AND s.sha256 = $2 ORDER BY s.scope_kind, s.scope_id",
    )
    .bind(org_id)
    .bind(&hex)
    .fetch_all(&mut *conn)
    .await?;
    let mut states = Vec::with_capacity(rows.len());
    let mut scoped = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get(0)?;
        let id: i64 = r.try_get(1)?;
        let state = parse_state(&r.try_get::<String, _>(2)?)?;
        let policy: Option<String> = r.try_get(5)?;
        let computer: Option<String> = r.try_get(6)?;
        let scope = scope_from_columns(&kind, id)?;
        if !sees_scope(scope) {
            continue;
        }
        scoped.push(ScopedState { scope, state });
        states.push(StateRecord {
            scope: match scope {
                Scope::Global => ScopeRef::Global,
                Scope::Policy(_) => ScopeRef::Policy(policy.unwrap_or_else(|| format!("#{id}"))),
                Scope::Computer(_) => {
                    ScopeRef::Computer(computer.unwrap_or_else(|| format!("#{id}")))
                }
            },
            state,
            updated_ms: r.try_get(3)?,
            updated_by: r.try_get(4)?,
        });
    }
    let reputation =
        sqlx::query("SELECT trust, source FROM reputation WHERE org_id = $1 AND sha256 = $2")
            .bind(org_id)
            .bind(&hex)
            .fetch_optional(&mut *conn)
            .await?;
    let (trust, trust_source) = match reputation {
        Some(r) => (
            Some(u8::try_from(r.try_get::<i64, _>(0)?.clamp(0, 10)).unwrap_or(0)),
            Some(r.try_get::<String, _>(1)?),
        ),
        None => (None, None),
    };
    let rows = sqlx::query(
        "SELECT publisher, package, version, verified FROM file_publishers \
         WHERE org_id = $1 AND sha256 = $2 ORDER BY last_seen_ms DESC, package, version",
    )
    .bind(org_id)
    .bind(&hex)
    .fetch_all(&mut *conn)
    .await?;
    let mut publishers = Vec::with_capacity(rows.len());
    for r in rows {
        publishers.push(PublisherFact {
            name: r.try_get(0)?,
            package: r.try_get(1)?,
            version: r.try_get(2)?,
            verified: r.try_get::<i64, _>(3)? != 0,
        });
    }
    // The global state: the file's own states and those of every publisher
    // agents verifiably attributed it to.
    let rows = sqlx::query(
        "SELECT scope_kind, scope_id, state FROM publisher_states \
         WHERE org_id = $1 AND publisher IN (SELECT publisher FROM file_publishers \
           WHERE org_id = $1 AND sha256 = $2 AND verified = 1 AND publisher IS NOT NULL)",
    )
    .bind(org_id)
    .bind(&hex)
    .fetch_all(&mut *conn)
    .await?;
    let mut publisher_states = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get(0)?;
        publisher_states.push(ScopedState {
            scope: scope_from_columns(&kind, r.try_get(1)?)?,
            state: parse_state(&r.try_get::<String, _>(2)?)?,
        });
    }
    let global_state = palisade_core::combine_global(
        palisade_core::global_state(&scoped),
        palisade_core::global_state(&publisher_states),
    );
    let fact = publishers
        .iter()
        .find(|p| p.verified && p.name.is_some())
        .or_else(|| publishers.iter().find(|p| p.verified))
        .or_else(|| publishers.first());
    let rows = sqlx::query(
        "SELECT c.id, c.name, c.policy_id, p.name, p.level FROM computers c \
         JOIN policies p ON p.id = c.policy_id \
         WHERE c.org_id = $1 AND c.revoked = 0 ORDER BY c.name",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    let version = crate::rules::rules_version(&mut *conn, org_id).await?;
    let mut compiled: HashMap<i64, CompiledRules> = HashMap::new();
    let mut effective = Vec::with_capacity(rows.len());
    for r in rows {
        let computer_id: i64 = r.try_get(0)?;
        if !sees_computer(computer_id) {
            continue;
        }
        let policy_id: i64 = r.try_get(2)?;
        let level = parse_level(&r.try_get::<String, _>(4)?)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = compiled.entry(policy_id) {
            let set = cache.get(&mut *conn, org_id, policy_id, version).await?;
            slot.insert(CompiledRules::new(RuleSet::clone(&set)));
        }
        let rules = &compiled[&policy_id];
        let approval = resolve(&scoped, PolicyId(policy_id), ComputerId(computer_id));
        let explanation = explain(
            rules,
            sha,
            approval,
            trust,
            fact,
            paths.get(&computer_id).map(String::as_str),
            level,
        );
        let local = local_state(
            rules,
            FileFacts {
                sha256: Some(sha),
                approval,
                trust,
                publisher: fact,
            },
        );
        for (i, c) in instances.iter_mut().zip(&instance_computers) {
            if *c == computer_id && i.local_state != LocalState::Deleted {
                i.local_state = local;
            }
        }
        effective.push(EffectiveApproval {
            computer: r.try_get(1)?,
            policy: r.try_get(3)?,
            explanation,
            approval,
        });
    }
    Ok(FileDetails {
        sha256: sha,
        first_seen_ms,
        instances,
        states,
        effective,
        global_state,
        trust,
        trust_source,
        publishers,
    })
}

/// Why the file would be allowed or blocked if run on a computer, by the
/// agents' own engine: the computer's rules and level, the file's resolved
/// approval, trust and publisher, its path there, and a subject nobody
/// matches (rules that name a process or user do not apply to it).
fn explain(
    rules: &CompiledRules,
    sha: Sha256,
    approval: Approval,
    trust: Option<u8>,
    publisher: Option<&PublisherFact>,
    path: Option<&str>,
    level: Level,
) -> String {
    let process = ProcessContext::unknown(0);
    let subject = Subject::of_process(&process);
    let request = Request {
        operation: Operation::Execute,
        path: path.unwrap_or_default(),
        file: FileFacts {
            sha256: Some(sha),
            approval,
            trust,
            publisher,
        },
        subject,
        starter: None,
        // The admin names the path: nothing to doubt.
        path_verified: true,
    };
    let e = evaluate(rules, &request, level);
    let outcome = match (e.verdict, e.report) {
        _ if level == Level::Disabled => "allowed: enforcement is disabled".to_owned(),
        (Verdict::Allow, Report::WouldBlock) => {
            format!("allowed only because the level is {level} (reported as a would-block)")
        }
        (Verdict::Allow, _) => format!("allowed at level {level}"),
        (Verdict::Block, _) if e.requestable => {
            format!("blocked at level {level}; the user may request approval")
        }
        (Verdict::Block, _) => format!("blocked at level {level}"),
    };
    let mut s = format!("{}: {outcome}", e.decided_by.explain());
    match path {
        None => s.push_str("; not seen on this computer, so rules on paths were not evaluated"),
        Some(p) if rules.path_has_rules(p) => s.push_str(&format!(
            "; custom rules or folder protection apply to {p}: the decision may differ by process and user"
        )),
        Some(_) => {}
    }
    s
}

/// `PUT /api/v1/files/{sha256}/state`: set (or, with `unapproved`, clear) a
/// state at a scope, record the admin's path in the catalog, and append a
/// change so connected agents are pushed.
pub(crate) async fn set_file_state(
    State(state): State<AppState>,
    admin: AdminAuth,
    sha: PathParam,
    JsonBody(req): JsonBody<SetFileState>,
) -> ApiResult<Json<FileDetails>> {
    let sha = sha.sha256()?;
    if let Some(path) = &req.path {
        if path.is_empty() || path.len() > MAX_PATH || path.contains('\0') {
            return Err(ApiError::invalid(
                "path",
                format!("must be 1 to {MAX_PATH} bytes without NUL"),
            ));
        }
    }
    let mut conn = state.db.pool().acquire().await?;
    let scope = match (&req.policy, &req.computer) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "computer",
                "give either policy or computer, not both",
            ))
        }
        (Some(p), None) => {
            let p = policy_by_name(&mut conn, admin.org_id, p.as_str())
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("no policy named {:?}", p.as_str())).field("policy")
                })?;
            Scope::Policy(PolicyId(p.id))
        }
        (None, Some(c)) => {
            let id = computer_id_by_name(&mut conn, admin.org_id, c.as_str())
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("no computer named {:?}", c.as_str()))
                        .field("computer")
                })?;
            Scope::Computer(ComputerId(id))
        }
        (None, None) => Scope::Global,
    };
    let update = Permission::new(Resource::Files, Op::Update);
    // The policy a computer-scope state was permitted by.
    let mut checked = None;
    match scope {
        Scope::Global => admin.require_org(update)?,
        Scope::Policy(p) => admin.require_policy(update, p.0)?,
        Scope::Computer(c) => {
            let policy: i64 = sqlx::query_scalar("SELECT policy_id FROM computers WHERE id = $1")
                .bind(c.0)
                .fetch_one(&mut *conn)
                .await?;
            admin.require_policy(update, policy)?;
            checked = Some((c.0, policy));
        }
    }
    drop(conn);
    let (kind, _) = scope_columns(scope);
    let now = now_ms();
    let mut tx = state.db.write().await?;
    // The catalog first: writing the state takes the revision counter's row
    // lock, which must be the last lock taken (agents' inventory and
    // approvals lock `files` rows, then the counter; the other order
    // deadlocks with them on PostgreSQL).
    record_sightings(
        tx.conn(),
        admin.org_id,
        &[Sighting {
            sha256: sha,
            computer_id: 0,
            path: req.path.clone(),
            operation: None,
            process_json: None,
            at_ms: now,
        }],
    )
    .await?;
    // The computer may have moved since the check: the permission must
    // hold in the policy it is in now (after the catalog's rows, before
    // the counter: see `policy_of_locked`).
    if let Some((computer, checked)) = checked {
        match crate::ops::policy_of_locked(&mut tx, computer).await? {
            Some(now) if now == checked => {}
            Some(now) => admin.require_policy(update, now)?,
            None => {
                return Err(
                    ApiError::not_found("the computer was removed meanwhile").field("computer")
                )
            }
        }
    }
    write_file_state(&mut tx, admin.org_id, sha, scope, req.state, &admin.admin).await?;
    admin.record(
        format!("file {sha}"),
        None,
        Some(serde_json::json!({ "state": req.state.to_string(), "scope": kind, "policy": req.policy.as_ref().map(|p| p.as_str()), "computer": req.computer.as_ref().map(|c| c.as_str()) })),
    );
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, org = %admin.org, sha256 = %sha, state = %req.state, scope = kind, "file state set");
    let mut conn = state.db.pool().acquire().await?;
    Ok(Json(
        file_details(
            &mut conn,
            &state.rule_cache,
            admin.org_id,
            sha,
            // The answer shows what the caller may read, no more.
            admin
                .reach(Permission::new(Resource::Files, Op::Read))
                .as_deref(),
        )
        .await?,
    ))
}

/// Longest long poll.
const MAX_WAIT_MS: u64 = 30_000;

/// `GET /api/v1/events`: a page of events, oldest first; with `wait_ms`, a
/// long poll woken by events stored through this replica at once, through
/// others by NOTIFY (PostgreSQL) or by polling.
pub(crate) async fn events(
    State(state): State<AppState>,
    admin: AdminAuth,
    QueryParams(q): QueryParams<EventQuery>,
) -> ApiResult<Json<EventPage>> {
    let after = q.after.unwrap_or(0);
    let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let computer = match &q.computer {
        Some(name) => {
            let mut conn = state.db.pool().acquire().await?;
            Some(
                computer_id_by_name(&mut conn, admin.org_id, name)
                    .await?
                    .ok_or_else(|| {
                        ApiError::not_found(format!("no computer named {name:?}")).field("computer")
                    })?,
            )
        }
        None => None,
    };
    let reach = admin.reach(Permission::new(Resource::Events, Op::Read));
    let mut sql = "SELECT e.id, c.name, e.received_ms, e.event_json FROM events e \
                   JOIN computers c ON c.id = e.computer_id \
                   WHERE e.org_id = $1 AND e.id > $2"
        .to_owned();
    sql.push_str(&policy_clause("c.policy_id", reach.as_deref()));
    let mut n = 3;
    if computer.is_some() {
        sql.push_str(&format!(" AND e.computer_id = ${n}"));
        n += 1;
    }
    if q.kind.is_some() {
        sql.push_str(&format!(" AND e.kind = ${n}"));
        n += 1;
    }
    sql.push_str(&format!(" ORDER BY e.id LIMIT ${n}"));

    let deadline = tokio::time::Instant::now() + wait;
    let mut watch = state.db.events_watch();
    let mut shutdown = state.shutdown.clone();
    loop {
        watch.borrow_and_update();
        let mut query = sqlx::query(&sql).bind(admin.org_id).bind(after);
        if let Some(c) = computer {
            query = query.bind(c);
        }
        if let Some(k) = q.kind {
            query = query.bind(k.as_str());
        }
        let rows = query.bind(limit).fetch_all(state.db.pool()).await?;
        let now = tokio::time::Instant::now();
        if !rows.is_empty() || now >= deadline || *shutdown.borrow() {
            let mut events = Vec::with_capacity(rows.len());
            let mut last_id = after;
            for r in rows {
                let id: i64 = r.try_get(0)?;
                last_id = last_id.max(id);
                let json: String = r.try_get(3)?;
                match serde_json::from_str::<FileEvent>(&json) {
                    Ok(event) => events.push(EventRecord {
                        id,
                        computer: r.try_get(1)?,
                        received_ms: r.try_get(2)?,
                        event,
                    }),
                    Err(e) => tracing::warn!(id, error = %e, "stored event is unreadable; skipped"),
                }
            }
            return Ok(Json(EventPage { events, last_id }));
        }
        let nap = (deadline - now).min(crate::feed::POLL);
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep(nap) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn computer_infos(
    conn: &mut AnyConnection,
    org_id: i64,
    name: Option<&str>,
    reach: Option<&[i64]>,
) -> ApiResult<Vec<ComputerInfo>> {
    // Connected: some connection through a replica that is alive (see
    // `src/liveness.rs`).
    let mut sql = "SELECT c.name, c.hostname, c.os, p.name, p.level, p.disconnected_level, \
                     (SELECT MAX(r.alive_until_ms) FROM connections x \
                      JOIN replicas r ON r.id = x.replica_id WHERE x.computer_id = c.id), \
                     c.last_seen_ms, c.revoked, c.status_json \
                   FROM computers c JOIN policies p ON p.id = c.policy_id \
                   WHERE c.org_id = $1"
        .to_owned();
    sql.push_str(&policy_clause("c.policy_id", reach));
    if name.is_some() {
        sql.push_str(" AND c.name = $2");
    }
    sql.push_str(" ORDER BY c.name");
    let mut q = sqlx::query(&sql).bind(org_id);
    if let Some(n) = name {
        q = q.bind(n);
    }
    let now = now_ms();
    let mut out = Vec::new();
    for r in q.fetch_all(conn).await? {
        let level: String = r.try_get(4)?;
        let disconnected: String = r.try_get(5)?;
        let until: Option<i64> = r.try_get(6)?;
        let revoked: i64 = r.try_get(8)?;
        let status: Option<String> = r.try_get(9)?;
        let connected = revoked == 0 && until.is_some_and(|u| u > now);
        // A connected computer's row is not written while it stays so.
        let last_seen: Option<i64> = r.try_get(7)?;
        let last_seen = if connected { Some(now) } else { last_seen };
        out.push(ComputerInfo {
            name: r.try_get(0)?,
            hostname: r.try_get(1)?,
            os: r.try_get(2)?,
            policy: r.try_get(3)?,
            levels: Levels {
                connected: parse_level(&level)?,
                disconnected: parse_level(&disconnected)?,
            },
            connected,
            last_seen_ms: last_seen,
            revoked: revoked != 0,
            status: status.and_then(|s| serde_json::from_str::<AgentStatus>(&s).ok()),
        });
    }
    Ok(out)
}

/// `GET /api/v1/computers`.
pub(crate) async fn computers(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<ComputerInfo>>> {
    let mut conn = state.db.pool().acquire().await?;
    let reach = admin.reach(Permission::new(Resource::Computers, Op::Read));
    Ok(Json(
        computer_infos(&mut conn, admin.org_id, None, reach.as_deref()).await?,
    ))
}

async fn one_computer(state: &AppState, org_id: i64, name: &str) -> ApiResult<ComputerInfo> {
    let mut conn = state.db.pool().acquire().await?;
    computer_infos(&mut conn, org_id, Some(name), None)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no computer named {name:?}")))
}

/// `PUT /api/v1/computers/{name}/policy`.
pub(crate) async fn move_computer(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
    JsonBody(req): JsonBody<MoveComputer>,
) -> ApiResult<Json<ComputerInfo>> {
    let name = name.name("name")?;
    let mut conn = state.db.pool().acquire().await?;
    let policy = policy_by_name(&mut conn, admin.org_id, req.policy.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no policy named {:?}", req.policy.as_str()))
                .field("policy")
        })?;
    let row = sqlx::query("SELECT c.policy_id, p.name FROM computers c JOIN policies p ON p.id = c.policy_id WHERE c.org_id = $1 AND c.name = $2")
        .bind(admin.org_id)
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no computer named {:?}", name.as_str())))?;
    let from: i64 = row.try_get(0)?;
    let from_name: String = row.try_get(1)?;
    drop(conn);
    // Moving takes the computer out of one policy and into another: both
    // must be the caller's to change.
    let update = Permission::new(Resource::Computers, Op::Update);
    admin.require_policy(update, from)?;
    admin.require_policy(update, policy.id)?;
    let mut tx = state.db.write().await?;
    let id = computer_id_by_name(tx.conn(), admin.org_id, name.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no computer named {:?}", name.as_str())))?;
    if crate::ops::policy_of_locked(&mut tx, id).await? != Some(from) {
        return Err(ApiError::conflict(format!(
            "computer {:?} moved to another policy meanwhile; nothing changed, try again",
            name.as_str()
        ))
        .field("name"));
    }
    crate::ops::move_computer(&mut tx, admin.org_id, id, policy.id).await?;
    admin.record(
        format!("computer {}", name.as_str()),
        Some(serde_json::json!({ "policy": from_name })),
        Some(serde_json::json!({ "policy": policy.name })),
    );
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, computer = %name, policy = %policy.name, "computer moved");
    Ok(Json(
        one_computer(&state, admin.org_id, name.as_str()).await?,
    ))
}

/// `POST /api/v1/computers/{name}/revoke`: the agent is refused from the
/// next request on, and its stream (on any replica) is closed.
pub(crate) async fn revoke_computer(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
) -> ApiResult<Json<ComputerInfo>> {
    let name = name.name("name")?;
    let mut tx = state.db.write().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE computers SET revoked = 1 WHERE org_id = $1 AND name = $2 RETURNING id",
    )
    .bind(admin.org_id)
    .bind(name.as_str())
    .fetch_optional(tx.conn())
    .await?;
    let id =
        id.ok_or_else(|| ApiError::not_found(format!("no computer named {:?}", name.as_str())))?;
    append_changes(&mut tx, admin.org_id, &[NewChange::computer(id)]).await?;
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, computer = %name, "computer revoked");
    Ok(Json(
        one_computer(&state, admin.org_id, name.as_str()).await?,
    ))
}

async fn policy_infos(
    conn: &mut AnyConnection,
    org_id: i64,
    name: Option<&str>,
) -> ApiResult<Vec<PolicyInfo>> {
    let mut sql = "SELECT p.id, p.name, p.level, p.disconnected_level, \
                     (SELECT COUNT(*) FROM computers c WHERE c.policy_id = p.id AND c.revoked = 0) \
                   FROM policies p WHERE p.org_id = $1"
        .to_owned();
    if name.is_some() {
        sql.push_str(" AND p.name = $2");
    }
    sql.push_str(" ORDER BY p.name");
    let mut q = sqlx::query(&sql).bind(org_id);
    if let Some(n) = name {
        q = q.bind(n);
    }
    let mut out = Vec::new();
    for r in q.fetch_all(conn).await? {
        let p = policy_from_row(&r)?;
        out.push(PolicyInfo {
            name: p.name,
            levels: p.levels,
            computers: r.try_get(4)?,
        });
    }
    Ok(out)
}

/// `GET /api/v1/policies`.
pub(crate) async fn policies(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<PolicyInfo>>> {
    let mut conn = state.db.pool().acquire().await?;
    Ok(Json(policy_infos(&mut conn, admin.org_id, None).await?))
}

async fn one_policy(state: &AppState, org_id: i64, name: &str) -> ApiResult<PolicyInfo> {
    let mut conn = state.db.pool().acquire().await?;
    policy_infos(&mut conn, org_id, Some(name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no policy named {name:?}")))
}

/// `POST /api/v1/policies`.
pub(crate) async fn create_policy(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(req): JsonBody<CreatePolicy>,
) -> ApiResult<(StatusCode, Json<PolicyInfo>)> {
    let connected = req.level.unwrap_or(Level::Monitor);
    let levels = Levels {
        connected,
        disconnected: req.disconnected_level.unwrap_or(connected),
    };
    insert_policy(&state.db, admin.org_id, &req.name, levels)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(format!("policy {:?} already exists", req.name.as_str()))
                .field("name")
        })?;
    tracing::info!(admin = %admin.admin, policy = %req.name, "policy created");
    Ok((
        StatusCode::CREATED,
        Json(one_policy(&state, admin.org_id, req.name.as_str()).await?),
    ))
}

/// `PUT /api/v1/policies/{name}/levels`.
pub(crate) async fn set_levels(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
    JsonBody(req): JsonBody<SetLevels>,
) -> ApiResult<Json<PolicyInfo>> {
    let name = name.name("name")?;
    let mut conn = state.db.pool().acquire().await?;
    let p = policy_by_name(&mut conn, admin.org_id, name.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no policy named {:?}", name.as_str())))?;
    admin.require_policy(Permission::new(Resource::Policies, Op::Update), p.id)?;
    drop(conn);
    let levels = Levels {
        connected: req.level,
        disconnected: req.disconnected_level.unwrap_or(p.levels.disconnected),
    };
    update_levels(&state.db, admin.org_id, p.id, levels, req.approve_existing).await?;
    tracing::info!(admin = %admin.admin, policy = %name, level = %levels.connected, disconnected = %levels.disconnected, approve_existing = req.approve_existing, "policy levels set");
    Ok(Json(one_policy(&state, admin.org_id, name.as_str()).await?))
}

/// Longest enrollment-token lifetime.
const MAX_TOKEN_TTL_SECS: u64 = 365 * 86_400;
/// Most enrollments one token allows.
const MAX_TOKEN_USES: u32 = 100_000;

/// `POST /api/v1/enrollment-tokens`.
pub(crate) async fn create_enroll_token(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(req): JsonBody<CreateEnrollToken>,
) -> ApiResult<(StatusCode, Json<EnrollTokenCreated>)> {
    let max_uses = req.max_uses.unwrap_or(1);
    if !(1..=MAX_TOKEN_USES).contains(&max_uses) {
        return Err(ApiError::invalid(
            "max_uses",
            format!("must be between 1 and {MAX_TOKEN_USES}"),
        ));
    }
    let ttl = req.ttl_secs.unwrap_or(86_400);
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl_secs",
            format!("must be between 1 and {MAX_TOKEN_TTL_SECS}"),
        ));
    }
    let mut conn = state.db.pool().acquire().await?;
    let p = policy_by_name(&mut conn, admin.org_id, req.policy.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("no policy named {:?}", req.policy.as_str()))
                .field("policy")
        })?;
    drop(conn);
    let (token, expires_ms, id) = insert_enroll_token(
        &state.db,
        admin.org_id,
        p.id,
        max_uses,
        Duration::from_secs(ttl),
        &admin.admin,
        state.ca.fingerprint(),
    )
    .await?;
    tracing::info!(admin = %admin.admin, policy = %p.name, max_uses, ttl, "enrollment token created");
    Ok((
        StatusCode::CREATED,
        Json(EnrollTokenCreated {
            id,
            token: token.to_string(),
            expires_ms,
        }),
    ))
}

/// `GET /api/v1/enrollment-tokens`: the tokens that may still enroll a
/// computer (unexpired, with uses left), newest first.
pub(crate) async fn enroll_tokens(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<EnrollTokenInfo>>> {
    let mut conn = state.db.pool().acquire().await?;
    let rows = sqlx::query(
        "SELECT t.id, p.name, t.max_uses, t.uses_left, t.expires_ms, t.created_ms, t.created_by \
         FROM enroll_tokens t JOIN policies p ON p.id = t.policy_id \
         WHERE t.org_id = $1 AND t.uses_left > 0 AND t.expires_ms > $2 ORDER BY t.id DESC",
    )
    .bind(admin.org_id)
    .bind(crate::db::now_ms())
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(EnrollTokenInfo {
            id: r.try_get(0)?,
            policy: r.try_get(1)?,
            max_uses: r.try_get(2)?,
            uses_left: r.try_get(3)?,
            expires_ms: r.try_get(4)?,
            created_ms: r.try_get(5)?,
            created_by: r.try_get(6)?,
        });
    }
    Ok(Json(out))
}

/// `DELETE /api/v1/enrollment-tokens/{id}`: revoke a token (a leaked one
/// must stop enrolling before it expires). Computers it enrolled stay.
pub(crate) async fn revoke_enroll_token(
    State(state): State<AppState>,
    admin: AdminAuth,
    id: PathParam,
) -> ApiResult<StatusCode> {
    let id = id.id("id")?;
    let mut tx = state.db.write().await?;
    let n = sqlx::query("DELETE FROM enroll_tokens WHERE org_id = $1 AND id = $2")
        .bind(admin.org_id)
        .bind(id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found(format!("no enrollment token {id}")).field("id"));
    }
    admin.record(format!("enrollment token {id}"), None, None);
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, token = id, "enrollment token revoked");
    Ok(StatusCode::NO_CONTENT)
}
