//! The approval model's admin endpoints (see `palisade_api::admin` for the
//! table): publishers, reputation, rules, bundles and approval requests.
//! Every query is filtered by the token's organization; an id or name of
//! another organization's object is simply not found.
use super::access::AdminAuth;
use super::extract::{
    from_json_value, unknown_field, JsonBody, OptionalJsonBody, PathParam, QueryParams,
};
use super::AppState;
use crate::db::{derived_values, now_ms, rows_per_statement};
use crate::errors::{ApiError, ApiResult};
use crate::ops::write_file_state;
use crate::rules::{
    body_policy_refs, builtin_bundles, bundle_infos, ensure_publisher, list_rules, parse_trust,
    trust_str, validate, write_publisher_state, Deleted,
};
use crate::store::{
    append_changes, parse_sha, parse_state, policy_by_name, publisher_text_ok, NewChange,
    MAX_CHANGE_ROWS_PER_TX,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use palisade_api::admin::{
    ApprovalRequestInfo, BundleInfo, CreateRule, DecideRequest, PublisherInfo, ReputationBatch,
    ReputationImported, RequestStatus, RuleRecord, ScopeRef, SetBundle, SetPublisherState,
    SetPublisherTrust, StateRecord, REPUTATION_BATCH_MAX,
};
use palisade_core::{ComputerId, FileState, Scope, Sha256};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------
// Publishers

fn publisher_name(p: &PathParam) -> ApiResult<String> {
    if publisher_text_ok(&p.0) {
        Ok(p.0.clone())
    } else {
        Err(
            ApiError::bad_request("a publisher name is 1 to 256 bytes without control characters")
                .field("name"),
        )
    }
}

async fn publisher_infos(
    conn: &mut AnyConnection,
    org_id: i64,
    name: Option<&str>,
) -> ApiResult<Vec<PublisherInfo>> {
    let mut sql =
        "SELECT p.name, p.trust, (SELECT COUNT(DISTINCT fp.sha256) FROM file_publishers fp \
                     WHERE fp.org_id = p.org_id AND fp.publisher = p.name) \
                   FROM publishers p WHERE p.org_id = $1"
            .to_owned();
    if name.is_some() {
        sql.push_str(" AND p.name = $2");
    }
    sql.push_str(" ORDER BY p.name");
    let mut q = sqlx::query(&sql).bind(org_id);
    if let Some(n) = name {
        q = q.bind(n);
    }
    let mut out: Vec<PublisherInfo> = Vec::new();
    for r in q.fetch_all(&mut *conn).await? {
        let trust: Option<String> = r.try_get(1)?;
        out.push(PublisherInfo {
            name: r.try_get(0)?,
            trust: trust.as_deref().map(parse_trust).transpose()?,
            states: Vec::new(),
            files: r.try_get(2)?,
        });
    }
    let mut sql = "SELECT s.publisher, s.scope_kind, s.scope_id, s.state, s.updated_ms, \
                     s.updated_by, pol.name FROM publisher_states s \
                   LEFT JOIN policies pol ON s.scope_kind = 'policy' AND pol.id = s.scope_id \
                   WHERE s.org_id = $1"
        .to_owned();
    if name.is_some() {
        sql.push_str(" AND s.publisher = $2");
    }
    sql.push_str(" ORDER BY s.scope_kind, pol.name");
    let mut q = sqlx::query(&sql).bind(org_id);
    if let Some(n) = name {
        q = q.bind(n);
    }
    for r in q.fetch_all(&mut *conn).await? {
        let publisher: String = r.try_get(0)?;
        let kind: String = r.try_get(1)?;
        let id: i64 = r.try_get(2)?;
        let policy: Option<String> = r.try_get(6)?;
        let record = StateRecord {
            scope: if kind == "global" {
                ScopeRef::Global
            } else {
                ScopeRef::Policy(policy.unwrap_or_else(|| format!("#{id}")))
            },
            state: parse_state(&r.try_get::<String, _>(3)?)?,
            updated_ms: r.try_get(4)?,
            updated_by: r.try_get(5)?,
        };
        if let Some(p) = out.iter_mut().find(|p| p.name == publisher) {
            p.states.push(record);
        }
    }
    Ok(out)
}

async fn one_publisher(state: &AppState, org_id: i64, name: &str) -> ApiResult<PublisherInfo> {
    let mut conn = state.db.pool().acquire().await?;
    publisher_infos(&mut conn, org_id, Some(name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no publisher named {name:?}")))
}

/// `GET /api/v1/publishers`: every publisher agents attributed files to or
/// an admin named, with its states, trust and number of files.
pub(crate) async fn publishers(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<PublisherInfo>>> {
    let mut conn = state.db.pool().acquire().await?;
    Ok(Json(publisher_infos(&mut conn, admin.org_id, None).await?))
}

/// `PUT /api/v1/publishers/{name}/state`: approve, ban or (with
/// `unapproved`, deleting the state) leave unapproved a publisher, for all
/// computers or one policy. Agents concerned are told `config_changed`.
pub(crate) async fn set_publisher_state(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
    JsonBody(req): JsonBody<SetPublisherState>,
) -> ApiResult<Json<PublisherInfo>> {
    let name = publisher_name(&name)?;
    let policy_id = match &req.policy {
        Some(p) => {
            let mut conn = state.db.pool().acquire().await?;
            Some(
                policy_by_name(&mut conn, admin.org_id, p.as_str())
                    .await?
                    .ok_or_else(|| {
                        ApiError::not_found(format!("no policy named {:?}", p.as_str()))
                            .field("policy")
                    })?
                    .id,
            )
        }
        None => None,
    };
    let mut tx = state.db.write().await?;
    write_publisher_state(
        &mut tx,
        admin.org_id,
        &name,
        policy_id,
        req.state,
        &admin.admin,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, publisher = ?name, state = %req.state, policy = ?req.policy.as_ref().map(|p| p.as_str()), "publisher state set");
    Ok(Json(one_publisher(&state, admin.org_id, &name).await?))
}

/// `PUT /api/v1/publishers/{name}/trust`.
pub(crate) async fn set_publisher_trust(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
    JsonBody(req): JsonBody<SetPublisherTrust>,
) -> ApiResult<Json<PublisherInfo>> {
    let name = publisher_name(&name)?;
    let mut tx = state.db.write().await?;
    ensure_publisher(tx.conn(), admin.org_id, &name).await?;
    sqlx::query("UPDATE publishers SET trust = $1 WHERE org_id = $2 AND name = $3")
        .bind(trust_str(req.trust))
        .bind(admin.org_id)
        .bind(&name)
        .execute(tx.conn())
        .await?;
    crate::rules::rules_changed(&mut tx, admin.org_id, &[]).await?;
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, publisher = ?name, trust = trust_str(req.trust), "publisher trust set");
    Ok(Json(one_publisher(&state, admin.org_id, &name).await?))
}

// ---------------------------------------------------------------------------
// Reputation

/// `POST /api/v1/reputation`: an idempotent upsert of trust ratings. Only
/// ratings that are new or differ (in trust or source) are written and
/// counted; their hashes are logged as file changes (one "many files" row
/// above [`MAX_CHANGE_ROWS_PER_TX`]) so agents look them up again.
pub(crate) async fn import_reputation(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(req): JsonBody<ReputationBatch>,
) -> ApiResult<Json<ReputationImported>> {
    crate::rules::check_label("source", &req.source, 200)?;
    if req.entries.len() > REPUTATION_BATCH_MAX {
        return Err(ApiError::invalid(
            "entries",
            format!("at most {REPUTATION_BATCH_MAX} entries per batch"),
        ));
    }
    // The last rating of a hash in the batch wins.
    let mut ratings: BTreeMap<Sha256, i64> = BTreeMap::new();
    for (i, e) in req.entries.iter().enumerate() {
        if e.trust > 10 {
            return Err(ApiError::invalid(
                &format!("entries[{i}].trust"),
                "must be 0..=10",
            ));
        }
        ratings.insert(e.sha256, i64::from(e.trust));
    }
    let ratings: Vec<(Sha256, i64)> = ratings.into_iter().collect();
    let now = now_ms();
    let mut changed: Vec<Sha256> = Vec::new();
    let mut tx = state.db.write().await?;
    for chunk in ratings.chunks(rows_per_statement(2)) {
        let sql = format!(
            "INSERT INTO reputation (org_id, sha256, trust, source, updated_ms) \
             SELECT $1, v.column1, v.column2, $2, $3 FROM {} WHERE true \
             ON CONFLICT (org_id, sha256) DO UPDATE SET trust = excluded.trust, \
               source = excluded.source, updated_ms = excluded.updated_ms \
             WHERE reputation.trust <> excluded.trust OR reputation.source <> excluded.source \
             RETURNING sha256",
            derived_values(chunk.len(), 2, 4)
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql)
            .bind(admin.org_id)
            .bind(&req.source)
            .bind(now);
        for (h, t) in chunk {
            q = q.bind(h.to_hex()).bind(*t);
        }
        for s in q.fetch_all(tx.conn()).await? {
            changed.push(parse_sha(&s)?);
        }
    }
    let changes: Vec<NewChange> = if changed.len() > MAX_CHANGE_ROWS_PER_TX {
        vec![NewChange::file(None, Scope::Global)]
    } else {
        changed
            .iter()
            .map(|h| NewChange::file(Some(*h), Scope::Global))
            .collect()
    };
    append_changes(&mut tx, admin.org_id, &changes).await?;
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, source = ?req.source, entries = req.entries.len(), stored = changed.len(), "reputation imported");
    Ok(Json(ReputationImported {
        stored: changed.len() as u64,
    }))
}

// ---------------------------------------------------------------------------
// Rules

/// `GET /api/v1/rules`: every rule, rank order (disabled ones included).
/// Webhook URLs often hold a secret (in the path or query): callers who
/// may not update rules see them redacted to `scheme://host[:port]/[redacted]`.
pub(crate) async fn rules(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<RuleRecord>>> {
    let mut conn = state.db.pool().acquire().await?;
    let mut list = list_rules(&mut conn, admin.org_id, None).await?;
    let full = admin.held(None).contains(palisade_authz::Permission::new(
        palisade_authz::Resource::Rules,
        palisade_authz::Op::Update,
    ));
    if !full {
        for r in &mut list {
            crate::egress::redact_body(&mut r.body);
        }
    }
    Ok(Json(list))
}

/// `POST /api/v1/rules`: validate (422 naming the field; 404 naming it for
/// an unknown policy, or a trusted server that is no enrolled computer),
/// store, and tell the agents concerned.
pub(crate) async fn create_rule(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(raw): JsonBody<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<RuleRecord>)> {
    let req: CreateRule = from_json_value(raw.clone())?;
    // RuleBody is internally tagged, which serde cannot make refuse unknown
    // fields: compare with what was understood.
    let understood = serde_json::to_value(&req.body).map_err(|e| ApiError::internal(&e))?;
    if let Some(field) = unknown_field(&raw["body"], &understood, "body") {
        let name = field.rsplit('.').next().unwrap_or_default().to_owned();
        return Err(ApiError::invalid(
            &field,
            format!("invalid request body: unknown field `{name}`"),
        ));
    }
    validate(&req)?;
    let mut conn = state.db.pool().acquire().await?;
    let mut policy_ids = BTreeSet::new();
    for (i, p) in req.policies.iter().enumerate() {
        let row = policy_by_name(&mut conn, admin.org_id, p.as_str())
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("no policy named {:?}", p.as_str()))
                    .field(format!("policies[{i}]"))
            })?;
        policy_ids.insert(row.id);
    }
    for (field, p) in body_policy_refs(&req.body) {
        if policy_by_name(&mut conn, admin.org_id, p).await?.is_none() {
            return Err(ApiError::not_found(format!("no policy named {p:?}")).field(field));
        }
    }
    drop(conn);
    // What this server would refuse to reach whatever names resolve to
    // (each alert is checked again when sent).
    crate::egress::check_actions(&req.body, state.alerts)?;
    let policy_ids: Vec<i64> = policy_ids.into_iter().collect();
    let mut tx = state.db.write().await?;
    let id = crate::rules::insert_rule(
        &mut tx,
        admin.org_id,
        req.name.trim(),
        req.rank,
        None,
        &req.body,
        &policy_ids,
        &admin.admin,
    )
    .await?;
    crate::rules::pin_trusted_servers(&mut tx, admin.org_id, id, &req.body).await?;
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, rule = id, name = ?req.name, kind = crate::rules::kind_of(&req.body), "rule created");
    let mut conn = state.db.pool().acquire().await?;
    let record = list_rules(&mut conn, admin.org_id, Some(id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal(&"the new rule cannot be read back"))?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// `DELETE /api/v1/rules/{id}`: 204; a bundle's rule is refused (409:
/// disable the bundle).
pub(crate) async fn delete_rule(
    State(state): State<AppState>,
    admin: AdminAuth,
    id: PathParam,
) -> ApiResult<StatusCode> {
    let id = id.id("id")?;
    let mut tx = state.db.write().await?;
    match crate::rules::delete_rule(&mut tx, admin.org_id, id).await? {
        Deleted::Yes => {
            tx.commit().await?;
            tracing::info!(admin = %admin.admin, rule = id, "rule deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Deleted::NotFound => Err(ApiError::not_found(format!("no rule {id}")).field("id")),
        Deleted::InBundle(b) => Err(ApiError::conflict(format!(
            "rule {id} belongs to the bundle {b:?}: disable the bundle instead"
        ))
        .field("id")),
    }
}

// ---------------------------------------------------------------------------
// Bundles

/// `GET /api/v1/bundles`.
pub(crate) async fn bundles(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<BundleInfo>>> {
    let mut conn = state.db.pool().acquire().await?;
    Ok(Json(bundle_infos(&mut conn, admin.org_id).await?))
}

/// `PUT /api/v1/bundles/{name}`: enable or disable a built-in bundle.
pub(crate) async fn set_bundle(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
    JsonBody(req): JsonBody<SetBundle>,
) -> ApiResult<Json<BundleInfo>> {
    let bundle = builtin_bundles()
        .into_iter()
        .find(|b| b.name == name.0)
        .ok_or_else(|| {
            let known: Vec<&str> = builtin_bundles().iter().map(|b| b.name).collect();
            ApiError::not_found(format!(
                "no bundle named {:?} (built-in bundles: {})",
                name.0.chars().take(80).collect::<String>(),
                known.join(", ")
            ))
            .field("name")
        })?;
    let mut tx = state.db.write().await?;
    crate::rules::set_bundle(&mut tx, admin.org_id, &bundle, req.enabled, &admin.admin).await?;
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, bundle = bundle.name, enabled = req.enabled, "bundle set");
    let mut conn = state.db.pool().acquire().await?;
    let info = bundle_infos(&mut conn, admin.org_id)
        .await?
        .into_iter()
        .find(|b| b.name == bundle.name)
        .ok_or_else(|| ApiError::internal(&"the bundle vanished"))?;
    Ok(Json(info))
}

// ---------------------------------------------------------------------------
// Approval requests

fn status_str(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::Pending => "pending",
        RequestStatus::Granted => "granted",
        RequestStatus::Denied => "denied",
    }
}

fn parse_status(s: &str) -> Result<RequestStatus, sqlx::Error> {
    match s {
        "pending" => Ok(RequestStatus::Pending),
        "granted" => Ok(RequestStatus::Granted),
        "denied" => Ok(RequestStatus::Denied),
        other => Err(sqlx::Error::Decode(
            format!("unknown request status {other:?}").into(),
        )),
    }
}

/// Most requests listed at once (and the page size when none is asked).
pub(crate) const MAX_REQUESTS: i64 = 1000;

/// Which requests [`request_infos`] lists: newest first, from below
/// `before`.
#[derive(Debug, Clone, Copy, Default)]
struct Listing {
    status: Option<RequestStatus>,
    /// Only this one.
    id: Option<i64>,
    /// Only requests with a smaller id (the next page).
    before: Option<i64>,
    limit: i64,
}

async fn request_infos(
    conn: &mut AnyConnection,
    org_id: i64,
    listing: Listing,
    reach: Option<&[i64]>,
) -> ApiResult<Vec<ApprovalRequestInfo>> {
    let Listing {
        status,
        id,
        before,
        limit,
    } = listing;
    let mut sql = "SELECT r.id, c.name, r.sha256, r.path, r.user_name, r.reason, r.status, \
                     r.created_ms, r.decided_ms, r.decided_by, r.comment \
                   FROM approval_requests r JOIN computers c ON c.id = r.computer_id \
                   WHERE r.org_id = $1"
        .to_owned();
    sql.push_str(&super::access::policy_clause("c.policy_id", reach));
    let mut n = 2;
    if status.is_some() {
        sql.push_str(&format!(" AND r.status = ${n}"));
        n += 1;
    }
    if id.is_some() {
        sql.push_str(&format!(" AND r.id = ${n}"));
        n += 1;
    }
    if before.is_some() {
        sql.push_str(&format!(" AND r.id < ${n}"));
        n += 1;
    }
    // Newest first: oldest first, a full page of old requests hid every
    // new one.
    sql.push_str(&format!(" ORDER BY r.id DESC LIMIT ${n}"));
    let mut q = sqlx::query(&sql).bind(org_id);
    if let Some(s) = status {
        q = q.bind(status_str(s));
    }
    if let Some(i) = id {
        q = q.bind(i);
    }
    if let Some(b) = before {
        q = q.bind(b);
    }
    let mut out = Vec::new();
    for r in q.bind(limit).fetch_all(conn).await? {
        out.push(ApprovalRequestInfo {
            id: r.try_get(0)?,
            computer: r.try_get(1)?,
            sha256: parse_sha(&r.try_get::<String, _>(2)?)?,
            path: r.try_get(3)?,
            user: r.try_get(4)?,
            reason: r.try_get(5)?,
            status: parse_status(&r.try_get::<String, _>(6)?)?,
            created_ms: r.try_get(7)?,
            decided_ms: r.try_get(8)?,
            decided_by: r.try_get(9)?,
            comment: r.try_get(10)?,
        });
    }
    Ok(out)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestQuery {
    #[serde(default)]
    pub(crate) status: Option<RequestStatus>,
    /// Only requests with an id below this (the last id of the previous
    /// page).
    #[serde(default)]
    pub(crate) before: Option<i64>,
    /// Page size: 1 to [`MAX_REQUESTS`], which is the default.
    #[serde(default)]
    pub(crate) limit: Option<i64>,
}

/// `GET /api/v1/requests?status=pending|granted|denied&before&limit`:
/// newest first, a page of `limit` (default and most: [`MAX_REQUESTS`]);
/// the next page is `before` the last id.
pub(crate) async fn requests(
    State(state): State<AppState>,
    admin: AdminAuth,
    QueryParams(q): QueryParams<RequestQuery>,
) -> ApiResult<Json<Vec<ApprovalRequestInfo>>> {
    let reach = admin.reach(palisade_authz::Permission::new(
        palisade_authz::Resource::Files,
        palisade_authz::Op::Read,
    ));
    let listing = Listing {
        status: q.status,
        id: None,
        before: q.before,
        limit: q.limit.unwrap_or(MAX_REQUESTS).clamp(1, MAX_REQUESTS),
    };
    let mut conn = state.db.pool().acquire().await?;
    Ok(Json(
        request_infos(&mut conn, admin.org_id, listing, reach.as_deref()).await?,
    ))
}

/// `POST /api/v1/requests/{id}/grant`: the file is approved on the
/// requesting computer (a local state, pushed at once). `409` when the
/// file is banned for that computer (a ban is lifted first, on purpose).
pub(crate) async fn grant_request(
    State(state): State<AppState>,
    admin: AdminAuth,
    id: PathParam,
    OptionalJsonBody(req): OptionalJsonBody<DecideRequest>,
) -> ApiResult<Json<ApprovalRequestInfo>> {
    decide(state, admin, id, req, true).await
}

/// `POST /api/v1/requests/{id}/deny`: only the request's status changes.
pub(crate) async fn deny_request(
    State(state): State<AppState>,
    admin: AdminAuth,
    id: PathParam,
    OptionalJsonBody(req): OptionalJsonBody<DecideRequest>,
) -> ApiResult<Json<ApprovalRequestInfo>> {
    decide(state, admin, id, req, false).await
}

/// Where `sha` is banned for computer `computer_id` of `org_id`, if it is
/// (the most specific scope, in words).
async fn ban_over(
    conn: &mut AnyConnection,
    org_id: i64,
    computer_id: i64,
    sha: Sha256,
) -> Result<Option<&'static str>, sqlx::Error> {
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT f.scope_kind FROM file_states f \
         WHERE f.org_id = $1 AND f.sha256 = $2 AND f.state = 'banned' \
           AND (f.scope_kind = 'global' \
             OR (f.scope_kind = 'policy' \
                 AND f.scope_id = (SELECT policy_id FROM computers WHERE id = $3)) \
             OR (f.scope_kind = 'computer' AND f.scope_id = $3))",
    )
    .bind(org_id)
    .bind(sha.to_hex())
    .bind(computer_id)
    .fetch_all(conn)
    .await?;
    Ok(["computer", "policy", "global"]
        .into_iter()
        .find(|k| kinds.iter().any(|got| got == k))
        .map(|k| match k {
            "computer" => "on this computer",
            "policy" => "in this computer's policy",
            _ => "everywhere",
        }))
}

async fn decide(
    state: AppState,
    admin: AdminAuth,
    id: PathParam,
    req: DecideRequest,
    grant: bool,
) -> ApiResult<Json<ApprovalRequestInfo>> {
    let id = id.id("id")?;
    if let Some(c) = &req.comment {
        if c.len() > 2000 {
            return Err(ApiError::invalid("comment", "longer than 2000 bytes"));
        }
        if c.chars()
            .any(|ch| ch.is_control() && ch != '\n' && ch != '\t')
        {
            return Err(ApiError::invalid("comment", "contains control characters"));
        }
    }
    let status = if grant {
        RequestStatus::Granted
    } else {
        RequestStatus::Denied
    };
    let mut tx = state.db.write().await?;
    let row = sqlx::query(
        "UPDATE approval_requests SET status = $1, decided_ms = $2, decided_by = $3, comment = $4 \
         WHERE id = $5 AND org_id = $6 AND status = 'pending' RETURNING computer_id, sha256",
    )
    .bind(status_str(status))
    .bind(now_ms())
    .bind(&admin.admin)
    .bind(req.comment.as_deref())
    .bind(id)
    .bind(admin.org_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        let current: Option<String> = sqlx::query_scalar(
            "SELECT status FROM approval_requests WHERE id = $1 AND org_id = $2",
        )
        .bind(id)
        .bind(admin.org_id)
        .fetch_optional(tx.conn())
        .await?;
        return Err(match current {
            None => ApiError::not_found(format!("no approval request {id}")).field("id"),
            Some(s) => {
                ApiError::conflict(format!("approval request {id} is already {s}")).field("id")
            }
        });
    };
    let computer_id: i64 = row.try_get(0)?;
    let sha = parse_sha(&row.try_get::<String, _>(1)?)?;
    if grant {
        // A request made before the file was banned: granting it would
        // replace a ban on this computer with an approval (the state is one
        // row per scope), and under a wider ban approve nothing.
        if let Some(scope) = ban_over(tx.conn(), admin.org_id, computer_id, sha).await? {
            return Err(ApiError::conflict(format!(
                "file {sha} is banned {scope} since the request was made: lift the ban first, \
                 or deny the request"
            ))
            .field("id"));
        }
        write_file_state(
            &mut tx,
            admin.org_id,
            sha,
            Scope::Computer(ComputerId(computer_id)),
            FileState::Approved,
            &admin.admin,
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(admin = %admin.admin, request = id, sha256 = %sha, status = status_str(status), "approval request decided");
    let mut conn = state.db.pool().acquire().await?;
    let listing = Listing {
        id: Some(id),
        limit: 1,
        ..Listing::default()
    };
    request_infos(&mut conn, admin.org_id, listing, None)
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::internal(&"the request vanished"))
}
