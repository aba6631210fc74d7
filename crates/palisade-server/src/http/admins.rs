//! Admin access handlers (see `palisade_api::access` for the table): admins,
//! roles, grants, API tokens, conditional-access settings, the audit log.
//!
//! Revoking a grant or disabling an admin also ends their live console
//! sessions and API tokens (the next request of each is refused anyway,
//! because every request reads the grants afresh). A sign-in lockout ends
//! none: its credentials are refused while it lasts and work again after.
use super::access::{org_conditions, parse_permissions, role_of, AdminAuth};
use super::extract::{JsonBody, OptionalJsonBody, PathParam, QueryParams};
use super::AppState;
use crate::audit;
use crate::db::now_ms;
use crate::errors::{ApiError, ApiResult};
use crate::store::{policy_by_name, secret_hash};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use palisade_api::access::{
    AccessSettings, AddAdmin, AdminInfo, AuditEntry, AuditPage, CreateToken, GrantRef, RoleInfo,
    TokenCreated, TokenInfo,
};
use palisade_authn::audit::Outcome;
use palisade_authz::{builtin_roles, Op, Permission, PermissionSet, Resource, Role};
use palisade_core::Name;
use sqlx::{AnyConnection, Row};

/// Longest token lifetime (one year).
const MAX_TOKEN_SECS: u64 = 366 * 24 * 3600;

pub(crate) async fn admin_id(conn: &mut AnyConnection, org_id: i64, name: &str) -> ApiResult<i64> {
    sqlx::query_scalar("SELECT id FROM admins WHERE org_id = $1 AND name = $2")
        .bind(org_id)
        .bind(name)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no admin named {name:?}")))
}

pub(crate) async fn admin_info(
    conn: &mut AnyConnection,
    org_id: i64,
    name: &str,
) -> ApiResult<AdminInfo> {
    let row = sqlx::query(
        "SELECT id, status, locked_until_ms FROM admins WHERE org_id = $1 AND name = $2",
    )
    .bind(org_id)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no admin named {name:?}")))?;
    let id: i64 = row.try_get(0)?;
    let grants = sqlx::query(
        "SELECT g.role, p.name FROM admin_grants g LEFT JOIN policies p ON p.id = g.policy_id \
         WHERE g.admin_id = $1 ORDER BY g.role, p.name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| -> ApiResult<GrantRef> {
        let role: String = r.try_get(0)?;
        let policy: Option<String> = r.try_get(1)?;
        Ok(GrantRef {
            role: Name::parse(&role).map_err(|e| ApiError::internal(&e))?,
            policy: policy
                .map(|p| Name::parse(&p))
                .transpose()
                .map_err(|e| ApiError::internal(&e))?,
        })
    })
    .collect::<ApiResult<Vec<_>>>()?;
    let tokens: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM admin_tokens WHERE admin_id = $1 AND revoked_ms IS NULL \
         AND (expires_ms IS NULL OR expires_ms > $2)",
    )
    .bind(id)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await?;
    Ok(AdminInfo {
        name: name.to_owned(),
        status: row.try_get(1)?,
        locked_until_ms: row.try_get(2)?,
        grants,
        tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
    })
}

/// `GET /api/v1/admins`.
pub(crate) async fn list(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<AdminInfo>>> {
    let mut conn = state.db.pool().acquire().await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM admins WHERE org_id = $1 ORDER BY name")
            .bind(admin.org_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        out.push(admin_info(&mut conn, admin.org_id, &n).await?);
    }
    Ok(Json(out))
}

/// `POST /api/v1/admins`.
pub(crate) async fn add(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(body): JsonBody<AddAdmin>,
) -> ApiResult<(StatusCode, Json<AdminInfo>)> {
    let mut tx = state.db.write().await?;
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO admins (org_id, name, created_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (org_id, name) DO NOTHING RETURNING id",
    )
    .bind(admin.org_id)
    .bind(body.name.as_str())
    .bind(now_ms())
    .fetch_optional(tx.conn())
    .await?;
    if created.is_none() {
        return Err(ApiError::conflict(format!(
            "admin {:?} already exists",
            body.name.as_str()
        )));
    }
    let info = admin_info(tx.conn(), admin.org_id, body.name.as_str()).await?;
    admin.record(
        format!("admin {}", body.name.as_str()),
        None,
        serde_json::to_value(&info).ok(),
    );
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// The role named in a grant must exist: built-in or custom.
/// The role named in a grant (built-in or custom); `422` when none.
async fn find_role(conn: &mut AnyConnection, org_id: i64, role: &str) -> ApiResult<Role> {
    if let Some(r) = Role::builtin(role) {
        return Ok(r);
    }
    let custom: Option<String> =
        sqlx::query_scalar("SELECT permissions FROM roles WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(role)
            .fetch_optional(conn)
            .await?;
    custom
        .and_then(|perms| role_of(role, Some(&perms)))
        .ok_or_else(|| ApiError::invalid("role", format!("no role named {role:?}")))
}

/// No escalation: an admin grants only permissions they hold themselves
/// where the grant applies.
fn check_no_escalation(admin: &AdminAuth, role: &Role, policy_id: i64) -> ApiResult<()> {
    let held = admin.held((policy_id != 0).then_some(policy_id));
    let missing: Vec<String> = role
        .permissions()
        .iter()
        .filter(|p| !held.contains(*p))
        .map(|p| p.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "not permitted: role {} grants what you do not hold there: {}",
            role.name().as_str(),
            missing.join(" ")
        )))
    }
}

async fn grant_policy(
    conn: &mut AnyConnection,
    org_id: i64,
    policy: Option<&Name>,
) -> ApiResult<i64> {
    match policy {
        None => Ok(0),
        Some(p) => Ok(policy_by_name(conn, org_id, p.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no policy named {:?}", p.as_str())))?
            .id),
    }
}

/// End an admin's live credentials: console sessions and API tokens,
/// including the tokens they made for other admins (given by their power,
/// which is what is being taken back).
pub(crate) async fn end_credentials(conn: &mut AnyConnection, admin_id: i64) -> ApiResult<()> {
    let now = now_ms();
    sqlx::query(
        "UPDATE admin_tokens SET revoked_ms = $2 \
         WHERE (admin_id = $1 OR created_by = $1) AND revoked_ms IS NULL",
    )
    .bind(admin_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE admin_sessions SET revoked_ms = $2 WHERE admin_id = $1 AND revoked_ms IS NULL",
    )
    .bind(admin_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `POST /api/v1/admins/{name}/grants`.
pub(crate) async fn grant(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
    JsonBody(body): JsonBody<GrantRef>,
) -> ApiResult<Json<AdminInfo>> {
    let name = name.name("name")?;
    let mut tx = state.db.write().await?;
    let id = admin_id(tx.conn(), admin.org_id, name.as_str()).await?;
    let role = find_role(tx.conn(), admin.org_id, body.role.as_str()).await?;
    let policy_id = grant_policy(tx.conn(), admin.org_id, body.policy.as_ref()).await?;
    check_no_escalation(&admin, &role, policy_id)?;
    let before = admin_info(tx.conn(), admin.org_id, name.as_str()).await?;
    sqlx::query(
        "INSERT INTO admin_grants (admin_id, role, policy_id, created_ms, created_by) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (admin_id, role, policy_id) DO NOTHING",
    )
    .bind(id)
    .bind(body.role.as_str())
    .bind(policy_id)
    .bind(now_ms())
    .bind(&admin.admin)
    .execute(tx.conn())
    .await?;
    let after = admin_info(tx.conn(), admin.org_id, name.as_str()).await?;
    admin.record(
        format!("admin {}", name.as_str()),
        serde_json::to_value(&before.grants).ok(),
        serde_json::to_value(&after.grants).ok(),
    );
    tx.commit().await?;
    Ok(Json(after))
}

/// `POST /api/v1/admins/{name}/revoke`: also ends the admin's sessions
/// and tokens.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
    JsonBody(body): JsonBody<GrantRef>,
) -> ApiResult<Json<AdminInfo>> {
    let name = name.name("name")?;
    let mut tx = state.db.write().await?;
    let id = admin_id(tx.conn(), admin.org_id, name.as_str()).await?;
    let policy_id = grant_policy(tx.conn(), admin.org_id, body.policy.as_ref()).await?;
    // Taking a role away is as much a use of power as giving it: only over
    // roles whose permissions the caller holds there.
    if let Ok(role) = find_role(tx.conn(), admin.org_id, body.role.as_str()).await {
        check_no_escalation(&admin, &role, policy_id)?;
    }
    if body.role.as_str() == "owner"
        && policy_id == 0
        && other_owners(tx.conn(), admin.org_id, id).await? == 0
    {
        return Err(ApiError::invalid(
            "role",
            "the organization's last owner keeps the owner role",
        ));
    }
    let before = admin_info(tx.conn(), admin.org_id, name.as_str()).await?;
    let gone = sqlx::query(
        "DELETE FROM admin_grants WHERE admin_id = $1 AND role = $2 AND policy_id = $3",
    )
    .bind(id)
    .bind(body.role.as_str())
    .bind(policy_id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if gone == 0 {
        return Err(ApiError::not_found(format!(
            "admin {:?} holds no such grant",
            name.as_str()
        )));
    }
    end_credentials(tx.conn(), id).await?;
    let after = admin_info(tx.conn(), admin.org_id, name.as_str()).await?;
    admin.record(
        format!("admin {}", name.as_str()),
        serde_json::to_value(&before.grants).ok(),
        serde_json::to_value(&after.grants).ok(),
    );
    tx.commit().await?;
    Ok(Json(after))
}

/// Active admins other than `admin_id` holding the owner role for the
/// whole organization.
async fn other_owners(conn: &mut AnyConnection, org_id: i64, admin_id: i64) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM admin_grants g JOIN admins a ON a.id = g.admin_id \
         WHERE a.org_id = $1 AND g.role = 'owner' AND g.policy_id = 0 AND a.status = 'active' \
           AND a.id <> $2",
    )
    .bind(org_id)
    .bind(admin_id)
    .fetch_one(conn)
    .await?)
}

/// Acting on another admin's account as a whole (disabling it, resetting
/// its credentials) needs every permission they hold, where they hold it.
pub(crate) async fn check_power_over(
    conn: &mut AnyConnection,
    admin: &AdminAuth,
    target: &AdminInfo,
) -> ApiResult<()> {
    for g in &target.grants {
        let policy_id = grant_policy(&mut *conn, admin.org_id, g.policy.as_ref()).await?;
        if let Ok(role) = find_role(&mut *conn, admin.org_id, g.role.as_str()).await {
            check_no_escalation(admin, &role, policy_id)?;
        }
    }
    Ok(())
}

async fn set_status(
    state: &AppState,
    admin: &AdminAuth,
    name: &Name,
    status: &str,
) -> ApiResult<Json<AdminInfo>> {
    let mut tx = state.db.write().await?;
    let id = admin_id(tx.conn(), admin.org_id, name.as_str()).await?;
    let before = admin_info(tx.conn(), admin.org_id, name.as_str()).await?;
    // Switching an admin off is a use of power over everything they hold.
    check_power_over(tx.conn(), admin, &before).await?;
    let is_owner = before
        .grants
        .iter()
        .any(|g| g.role.as_str() == "owner" && g.policy.is_none());
    if status != "active" && is_owner && other_owners(tx.conn(), admin.org_id, id).await? == 0 {
        return Err(ApiError::invalid(
            "name",
            "the organization's last active owner cannot be disabled",
        ));
    }
    sqlx::query("UPDATE admins SET status = $1 WHERE id = $2")
        .bind(status)
        .bind(id)
        .execute(tx.conn())
        .await?;
    if status != "active" {
        end_credentials(tx.conn(), id).await?;
    }
    let after = admin_info(tx.conn(), admin.org_id, name.as_str()).await?;
    admin.record(
        format!("admin {}", name.as_str()),
        Some(serde_json::json!({ "status": before.status })),
        Some(serde_json::json!({ "status": after.status })),
    );
    tx.commit().await?;
    Ok(Json(after))
}

/// `POST /api/v1/admins/{name}/disable`: also ends the admin's sessions and
/// tokens.
pub(crate) async fn disable(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
) -> ApiResult<Json<AdminInfo>> {
    let name = name.name("name")?;
    if name.as_str() == admin.admin {
        return Err(ApiError::invalid(
            "name",
            "an admin cannot disable themselves",
        ));
    }
    set_status(&state, &admin, &name, "disabled").await
}

/// `POST /api/v1/admins/{name}/enable`.
pub(crate) async fn enable(
    State(state): State<AppState>,
    admin: AdminAuth,
    name: PathParam,
) -> ApiResult<Json<AdminInfo>> {
    let name = name.name("name")?;
    set_status(&state, &admin, &name, "active").await
}

fn role_info(role: &Role) -> ApiResult<RoleInfo> {
    Ok(RoleInfo {
        name: role.name().clone(),
        permissions: role.permissions().iter().map(|p| p.to_string()).collect(),
        builtin: role.is_builtin(),
    })
}

/// `GET /api/v1/roles`: built-in then custom roles.
pub(crate) async fn roles(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<RoleInfo>>> {
    let mut out = builtin_roles()
        .iter()
        .map(role_info)
        .collect::<ApiResult<Vec<_>>>()?;
    let rows = sqlx::query("SELECT name, permissions FROM roles WHERE org_id = $1 ORDER BY name")
        .bind(admin.org_id)
        .fetch_all(state.db.pool())
        .await?;
    for r in rows {
        let name: String = r.try_get(0)?;
        let perms: String = r.try_get(1)?;
        if let Some(role) = role_of(&name, Some(&perms)) {
            out.push(role_info(&role)?);
        }
    }
    Ok(Json(out))
}

fn permission_set(field: &str, list: &[String]) -> ApiResult<PermissionSet> {
    parse_permissions(&list.join(" ")).map_err(|e| ApiError::invalid(field, e))
}

/// `POST /api/v1/roles`.
pub(crate) async fn create_role(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(body): JsonBody<RoleInfo>,
) -> ApiResult<(StatusCode, Json<RoleInfo>)> {
    let perms = permission_set("permissions", &body.permissions)?;
    let role = Role::custom(body.name.clone(), perms)
        .map_err(|e| ApiError::invalid("name", e.to_string()))?;
    let text: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
    let mut tx = state.db.write().await?;
    let created = sqlx::query(
        "INSERT INTO roles (org_id, name, permissions, created_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id, name) DO NOTHING",
    )
    .bind(admin.org_id)
    .bind(body.name.as_str())
    .bind(text.join(" "))
    .bind(now_ms())
    .execute(tx.conn())
    .await?
    .rows_affected();
    if created == 0 {
        return Err(ApiError::conflict(format!(
            "role {:?} already exists",
            body.name.as_str()
        )));
    }
    let info = role_info(&role)?;
    admin.record(
        format!("role {}", body.name.as_str()),
        None,
        serde_json::to_value(&info).ok(),
    );
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /api/v1/tokens`: a token for the caller, or (with `admins:update`
/// and power over everything they hold, as for disabling them) for another
/// admin. Its scope is checked against the permissions of the admin it is
/// for at each request, so it never grants more than they hold; made with
/// an API token, it is also limited to that token's scope and expires no
/// later (a stolen narrow token cannot mint a wide one).
///
/// A token made for another admin is marked with its maker: it cannot act
/// on that admin's own account ([`AdminAuth::require_own_credential`]),
/// counts as made without a second factor (the admin it acts as proved
/// none), and ends with its maker's credentials. A token made that way
/// makes no tokens itself.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    admin: AdminAuth,
    OptionalJsonBody(body): OptionalJsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    admin.require_own_credential("making tokens")?;
    let for_other = body
        .admin
        .as_ref()
        .is_some_and(|a| a.as_str() != admin.admin);
    if for_other {
        admin.require_org(Permission::new(Resource::Admins, Op::Update))?;
    }
    let mut scope = match &body.scope {
        None => None,
        Some(list) => Some(permission_set("scope", list)?),
    };
    if for_other {
        // Acting for another admin never reaches beyond what the caller
        // holds on the organization: the token is limited to that.
        let held = admin.held(None);
        scope = Some(scope.map_or(held, |s| s.intersection(held)));
    }
    let (caller_scope, caller_expires_ms) = admin.token_limits();
    if let Some(limit) = caller_scope {
        scope = Some(scope.map_or(limit, |s| s.intersection(limit)));
    }
    let scope = scope.map(|set| {
        set.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let expires_ms = match body.expires_secs {
        None => None,
        Some(s) if s == 0 || s > MAX_TOKEN_SECS => {
            return Err(ApiError::invalid(
                "expires_secs",
                format!("must be between 1 and {MAX_TOKEN_SECS}"),
            ))
        }
        Some(s) => Some(now_ms() + i64::try_from(s).unwrap_or(i64::MAX / 2) * 1000),
    };
    let expires_ms = match (expires_ms, caller_expires_ms) {
        (Some(e), Some(limit)) => Some(e.min(limit)),
        (e, limit) => e.or(limit),
    };
    let mut tx = state.db.write().await?;
    let target_name = body
        .admin
        .as_ref()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| admin.admin.clone());
    let id = admin_id(tx.conn(), admin.org_id, &target_name).await?;
    let for_other = id != admin.admin_id;
    if for_other {
        // A token acts as its admin: making one is power over their account.
        let target = admin_info(tx.conn(), admin.org_id, &target_name).await?;
        check_power_over(tx.conn(), &admin, &target).await?;
    }
    let secret: [u8; 32] = rand::random();
    let token = format!("plta1.{}", hex::encode(secret));
    let name = body.name.clone().unwrap_or_default();
    let token_id: i64 = sqlx::query_scalar(
        "INSERT INTO admin_tokens \
           (admin_id, token_sha256, created_ms, name, scope, expires_ms, mfa, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(id)
    .bind(secret_hash(token.as_bytes()))
    .bind(now_ms())
    .bind(&name)
    .bind(&scope)
    .bind(expires_ms)
    .bind(i64::from(admin.mfa && !for_other))
    .bind(for_other.then_some(admin.admin_id))
    .fetch_one(tx.conn())
    .await?;
    admin.record(
        format!("token {token_id} of {target_name}"),
        None,
        Some(serde_json::json!({ "name": name, "scope": scope, "expires_ms": expires_ms })),
    );
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id: token_id,
            token,
            expires_ms,
        }),
    ))
}

/// `GET /api/v1/tokens`: the caller's tokens.
pub(crate) async fn tokens(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let rows = sqlx::query(
        "SELECT id, name, scope, created_ms, expires_ms, revoked_ms FROM admin_tokens \
         WHERE admin_id = $1 ORDER BY id",
    )
    .bind(admin.admin_id)
    .fetch_all(state.db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let scope: Option<String> = r.try_get(2)?;
        out.push(TokenInfo {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            scope: scope.map(|s| s.split_whitespace().map(str::to_owned).collect()),
            created_ms: r.try_get(3)?,
            expires_ms: r.try_get(4)?,
            revoked_ms: r.try_get(5)?,
        });
    }
    Ok(Json(out))
}

/// `DELETE /api/v1/tokens/{id}`: one of the caller's tokens, or (with
/// `admins:update`) any token of the organization. A token made by another
/// admin revokes only itself among its admin's tokens.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    admin: AdminAuth,
    id: PathParam,
) -> ApiResult<StatusCode> {
    let id: i64 =
        id.0.parse()
            .map_err(|_| ApiError::bad_request("the token id must be a number"))?;
    let owner: Option<i64> = sqlx::query_scalar(
        "SELECT t.admin_id FROM admin_tokens t JOIN admins a ON a.id = t.admin_id \
         WHERE t.id = $1 AND a.org_id = $2",
    )
    .bind(id)
    .bind(admin.org_id)
    .fetch_optional(state.db.pool())
    .await?;
    let owner = owner.ok_or_else(|| ApiError::not_found(format!("no token {id}")))?;
    if owner != admin.admin_id {
        admin.require_org(Permission::new(Resource::Admins, Op::Update))?;
    } else if admin.token != Some(id) {
        admin.require_own_credential("revoking tokens")?;
    }
    let mut tx = state.db.write().await?;
    sqlx::query("UPDATE admin_tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
        .bind(id)
        .bind(now_ms())
        .execute(tx.conn())
        .await?;
    admin.record(format!("token {id}"), None, None);
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read_settings(conn: &mut AnyConnection, org_id: i64) -> ApiResult<AccessSettings> {
    let row =
        sqlx::query("SELECT require_mfa, trusted_networks, office_hours FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_one(conn)
            .await?;
    let require_mfa: i64 = row.try_get(0)?;
    let networks: String = row.try_get(1)?;
    let hours: String = row.try_get(2)?;
    Ok(AccessSettings {
        require_mfa: require_mfa != 0,
        trusted_networks: networks.split_whitespace().map(str::to_owned).collect(),
        office_hours: (!hours.is_empty()).then_some(hours),
    })
}

/// `GET /api/v1/settings`.
pub(crate) async fn settings(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<AccessSettings>> {
    let mut conn = state.db.pool().acquire().await?;
    Ok(Json(read_settings(&mut conn, admin.org_id).await?))
}

/// `PUT /api/v1/settings`: validated before it is stored, so a typo cannot
/// lock every admin out with an unreadable condition.
pub(crate) async fn set_settings(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(body): JsonBody<AccessSettings>,
) -> ApiResult<Json<AccessSettings>> {
    let networks = body.trusted_networks.join(" ");
    let hours = body.office_hours.clone().unwrap_or_default();
    let conditions = org_conditions(body.require_mfa, &networks, &hours)
        .map_err(|e| ApiError::invalid("settings", e))?;
    // Refuse a change that would refuse the very admin making it.
    if let Some(reason) = admin.refused_under(&conditions) {
        return Err(ApiError::invalid(
            "settings",
            format!("this change would lock you out ({reason}); sign in from where it allows, or change it from there"),
        ));
    }
    let mut tx = state.db.write().await?;
    let before = read_settings(tx.conn(), admin.org_id).await?;
    sqlx::query(
        "UPDATE orgs SET require_mfa = $1, trusted_networks = $2, office_hours = $3 WHERE id = $4",
    )
    .bind(i64::from(body.require_mfa))
    .bind(&networks)
    .bind(&hours)
    .bind(admin.org_id)
    .execute(tx.conn())
    .await?;
    let after = read_settings(tx.conn(), admin.org_id).await?;
    admin.record(
        "settings",
        serde_json::to_value(&before).ok(),
        serde_json::to_value(&after).ok(),
    );
    tx.commit().await?;
    Ok(Json(after))
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    pub(crate) after: Option<i64>,
    #[serde(default)]
    pub(crate) limit: Option<i64>,
}

/// Most records per page.
const MAX_AUDIT_PAGE: i64 = 1000;

/// `GET /api/v1/audit?after&limit`.
pub(crate) async fn audit(
    State(state): State<AppState>,
    admin: AdminAuth,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(MAX_AUDIT_PAGE).clamp(1, MAX_AUDIT_PAGE);
    let rows = audit::records(&state.db, admin.org_id, q.after.unwrap_or(0), limit)
        .await
        .map_err(ApiError::from)?;
    let records = rows
        .into_iter()
        .map(|(r, hash)| AuditEntry {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            object: r.object,
            source: r.source,
            outcome: match r.outcome {
                Outcome::Allowed => "allowed",
                Outcome::Denied => "denied",
            }
            .to_owned(),
            reason: r.reason,
            before: r.before,
            after: r.after,
            hash,
        })
        .collect();
    Ok(Json(AuditPage {
        org_id: admin.org_id,
        records,
    }))
}
