//! Administration without a running server: what `palisade server init` and
//! `palisade up` do before (or beside) serving, and what the admin API
//! handlers share with them.
use crate::ca::Ca;
use crate::db::{now_ms, Db, WriteTx};
use crate::errors::{Error, ErrorKind};
use crate::store::{
    append_changes, insert_admin_token, org_id_by_name, policy_by_name, scope_columns, secret_hash,
    NewChange,
};
use palisade_api::EnrollToken;
use palisade_core::{FileState, Level, Levels, Name, Scope, Sha256};
use std::time::Duration;

/// The name of the policy [`bootstrap`] creates.
pub const DEFAULT_POLICY: &str = "default";

/// What [`bootstrap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The organization did not exist and was created.
    pub org_created: bool,
    /// A fresh API token for the admin, when the admin was created by this
    /// call (`None` when it already existed: tokens are stored hashed and
    /// cannot be shown again; use [`create_admin_token`]).
    pub admin_token: Option<String>,
}

/// The service CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    /// PEM text.
    pub pem: String,
    /// SHA-256 of the DER encoding (what enrollment tokens carry).
    pub fingerprint: Sha256,
}

fn not_found(what: &str, name: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no {what} named {name:?}"))
}

async fn org_id(db: &Db, org: &Name) -> Result<i64, Error> {
    let mut conn = db.pool().acquire().await?;
    org_id_by_name(&mut conn, org.as_str())
        .await?
        .ok_or_else(|| not_found("organization", org.as_str()))
}

/// Create (if absent) the organization `org`, its policy `default` (monitor
/// while connected and disconnected) and the admin `admin` with a fresh API
/// token. Idempotent: a second call changes nothing.
pub async fn bootstrap(db: &Db, org: &Name, admin: &Name) -> Result<Bootstrap, Error> {
    let now = now_ms();
    let mut tx = db.write().await?;
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO orgs (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(org.as_str())
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    let org_created = created.is_some();
    let org_id = match created {
        Some(id) => id,
        None => org_id_by_name(tx.conn(), org.as_str())
            .await?
            .ok_or_else(|| not_found("organization", org.as_str()))?,
    };
    sqlx::query(
        "INSERT INTO policies (org_id, name, level, disconnected_level, created_ms) \
         VALUES ($1, $2, $3, $3, $4) ON CONFLICT (org_id, name) DO NOTHING",
    )
    .bind(org_id)
    .bind(DEFAULT_POLICY)
    .bind(Level::Monitor.as_str())
    .bind(now)
    .execute(tx.conn())
    .await?;
    let admin_id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO admins (org_id, name, created_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (org_id, name) DO NOTHING RETURNING id",
    )
    .bind(org_id)
    .bind(admin.as_str())
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    let admin_token = match admin_id {
        Some(id) => {
            grant_owner(tx.conn(), id, now).await?;
            Some(insert_admin_token(tx.conn(), id).await?)
        }
        None => None,
    };
    tx.commit().await?;
    Ok(Bootstrap {
        org_created,
        admin_token,
    })
}

/// Make a new admin created by the server's operator (who holds the
/// database) an owner of their organization.
async fn grant_owner(conn: &mut sqlx::AnyConnection, admin_id: i64, now: i64) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO admin_grants (admin_id, role, policy_id, created_ms, created_by) \
         VALUES ($1, 'owner', 0, $2, 'server operator') ON CONFLICT (admin_id, role, policy_id) DO NOTHING",
    )
    .bind(admin_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A new API token for `admin` of `org` (creating the admin, as an owner,
/// if needed; an existing admin keeps their grants).
/// The organization must exist.
pub async fn create_admin_token(db: &Db, org: &Name, admin: &Name) -> Result<String, Error> {
    let org_id = org_id(db, org).await?;
    let mut tx = db.write().await?;
    let now = now_ms();
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO admins (org_id, name, created_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (org_id, name) DO NOTHING RETURNING id",
    )
    .bind(org_id)
    .bind(admin.as_str())
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(id) = created {
        grant_owner(tx.conn(), id, now).await?;
    }
    let admin_id: i64 = sqlx::query_scalar("SELECT id FROM admins WHERE org_id = $1 AND name = $2")
        .bind(org_id)
        .bind(admin.as_str())
        .fetch_one(tx.conn())
        .await?;
    let token = insert_admin_token(tx.conn(), admin_id).await?;
    tx.commit().await?;
    Ok(token)
}

/// Create a policy. Fails with [`ErrorKind::Conflict`] if it exists.
pub async fn create_policy(
    db: &Db,
    org: &Name,
    policy: &Name,
    levels: Levels,
) -> Result<(), Error> {
    let org_id = org_id(db, org).await?;
    insert_policy(db, org_id, policy, levels)
        .await?
        .map(|_| ())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                format!("policy {:?} already exists", policy.as_str()),
            )
        })
}

/// Insert a policy; `None` if the name is taken.
pub(crate) async fn insert_policy(
    db: &Db,
    org_id: i64,
    policy: &Name,
    levels: Levels,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = db.write().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO policies (org_id, name, level, disconnected_level, created_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, name) DO NOTHING RETURNING id",
    )
    .bind(org_id)
    .bind(policy.as_str())
    .bind(levels.connected.as_str())
    .bind(levels.disconnected.as_str())
    .bind(now_ms())
    .fetch_optional(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Set a policy's levels; agents in it are told (a `policy` change).
pub async fn set_policy_levels(
    db: &Db,
    org: &Name,
    policy: &Name,
    levels: Levels,
) -> Result<(), Error> {
    let org_id = org_id(db, org).await?;
    let mut conn = db.pool().acquire().await?;
    let p = policy_by_name(&mut conn, org_id, policy.as_str())
        .await?
        .ok_or_else(|| not_found("policy", policy.as_str()))?;
    drop(conn);
    update_levels(db, org_id, p.id, levels, false).await?;
    Ok(())
}

/// Set a policy's levels; with `approve_existing`, also bump its
/// `approve_existing_epoch` (agents seeing a new value approve what they
/// have before enforcing the new level).
pub(crate) async fn update_levels(
    db: &Db,
    org_id: i64,
    policy_id: i64,
    levels: Levels,
    approve_existing: bool,
) -> Result<(), sqlx::Error> {
    let mut tx = db.write().await?;
    sqlx::query(
        "UPDATE policies SET level = $1, disconnected_level = $2, \
           approve_existing_epoch = approve_existing_epoch + $3 WHERE id = $4 AND org_id = $5",
    )
    .bind(levels.connected.as_str())
    .bind(levels.disconnected.as_str())
    .bind(i64::from(approve_existing))
    .bind(policy_id)
    .bind(org_id)
    .execute(tx.conn())
    .await?;
    append_changes(&mut tx, org_id, &[NewChange::policy(policy_id)]).await?;
    tx.commit().await
}

/// Set (or, with `unapproved`, clear) a file's state at a scope and log the
/// change, inside `tx`: the one code path of the admin API, approval
/// requests and event rules.
pub(crate) async fn write_file_state(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    sha: Sha256,
    scope: Scope,
    state: FileState,
    by: &str,
) -> Result<(), sqlx::Error> {
    let (kind, scope_id) = scope_columns(scope);
    match state {
        FileState::Unapproved => {
            sqlx::query(
                "DELETE FROM file_states WHERE org_id = $1 AND sha256 = $2 \
                 AND scope_kind = $3 AND scope_id = $4",
            )
            .bind(org_id)
            .bind(sha.to_hex())
            .bind(kind)
            .bind(scope_id)
            .execute(tx.conn())
            .await?;
        }
        s => {
            sqlx::query(
                "INSERT INTO file_states (org_id, sha256, scope_kind, scope_id, state, \
                   updated_ms, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (org_id, sha256, scope_kind, scope_id) DO UPDATE SET \
                   state = excluded.state, updated_ms = excluded.updated_ms, \
                   updated_by = excluded.updated_by",
            )
            .bind(org_id)
            .bind(sha.to_hex())
            .bind(kind)
            .bind(scope_id)
            .bind(s.as_str())
            .bind(now_ms())
            .bind(by)
            .execute(tx.conn())
            .await?;
        }
    }
    if state == FileState::Banned {
        close_requests_under_ban(tx, org_id, sha, scope, by).await?;
    }
    append_changes(tx, org_id, &[NewChange::file(Some(sha), scope)]).await?;
    Ok(())
}

/// What an automatic writer (an event rule, acting on facts an agent
/// reported) may do to a file's state at one scope: write where nothing is
/// set, or where automation set it, but never replace what an admin set
/// (an agent reporting a sighting would otherwise overwrite the admin's
/// ban or approval), and never lift a ban, whoever set it. Returns the
/// state replaced (`Some(None)`: none was set), or `None` where it wrote
/// nothing; in the caller's transaction, so the state read is the one
/// replaced.
pub(crate) async fn write_automatic_file_state(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    sha: Sha256,
    scope: Scope,
    state: FileState,
    by: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let (kind, scope_id) = scope_columns(scope);
    let now: Option<(String, String)> = sqlx::query_as(
        "SELECT state, updated_by FROM file_states WHERE org_id = $1 AND sha256 = $2 \
         AND scope_kind = $3 AND scope_id = $4",
    )
    .bind(org_id)
    .bind(sha.to_hex())
    .bind(kind)
    .bind(scope_id)
    .fetch_optional(tx.conn())
    .await?;
    if let Some((current, set_by)) = &now {
        if current == state.as_str()
            || !set_by.starts_with(AUTOMATIC_PREFIX)
            || current == FileState::Banned.as_str()
        {
            return Ok(None);
        }
    }
    write_file_state(tx, org_id, sha, scope, state, by).await?;
    Ok(Some(now.map(|(current, _)| current)))
}

/// How `updated_by` names an automatic writer: `event-rule:ID`.
pub(crate) const AUTOMATIC_PREFIX: &str = "event-rule:";

/// Deny the pending approval requests for `sha` from the computers a ban
/// at `scope` covers: the ban answers them (granting one later would
/// replace a computer's ban, or approve nothing under a wider one).
async fn close_requests_under_ban(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    sha: Sha256,
    scope: Scope,
    by: &str,
) -> Result<(), sqlx::Error> {
    let (kind, scope_id) = scope_columns(scope);
    let covered = match kind {
        // Every computer (the scope id, 0, is bound all the same).
        "global" => "$6 = $6",
        "policy" => "computer_id IN (SELECT id FROM computers WHERE policy_id = $6)",
        _ => "computer_id = $6",
    };
    sqlx::query(&format!(
        "UPDATE approval_requests SET status = 'denied', decided_ms = $3, decided_by = $4, \
           comment = $5 \
         WHERE org_id = $1 AND sha256 = $2 AND status = 'pending' AND {covered}"
    ))
    .bind(org_id)
    .bind(sha.to_hex())
    .bind(now_ms())
    .bind(by)
    .bind("closed: the file was banned")
    .bind(scope_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Move a computer of `org_id` to a policy (of the same organization) and
/// log the change, inside `tx`. False when there is no such computer.
/// The policy computer `computer_id` is in, holding its row until the
/// transaction ends (a write that changes nothing: the row lock on
/// PostgreSQL; SQLite's write transaction excludes every other writer
/// anyway); `None` if it is gone. An admin's permission over a computer is
/// checked by its policy before the write transaction, and a move
/// committed in between would let the write act on a computer of a policy
/// the admin may not touch: the write checks again with this. Take it
/// after any catalog (`files`) rows and before the revision counter: the
/// catalog recorder takes files, then computers.
pub(crate) async fn policy_of_locked(
    tx: &mut WriteTx<'_>,
    computer_id: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE computers SET policy_id = policy_id WHERE id = $1 RETURNING policy_id",
    )
    .bind(computer_id)
    .fetch_optional(tx.conn())
    .await
}

pub(crate) async fn move_computer(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    computer_id: i64,
    policy_id: i64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE computers SET policy_id = $1 WHERE org_id = $2 AND id = $3")
        .bind(policy_id)
        .bind(org_id)
        .bind(computer_id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    append_changes(tx, org_id, &[NewChange::computer(computer_id)]).await?;
    Ok(true)
}

/// The CA certificate, creating the CA if no replica has yet.
pub async fn ca_certificate(db: &Db) -> Result<CaCertificate, Error> {
    let ca = Ca::load_or_create(db).await?;
    Ok(CaCertificate {
        pem: ca.cert_pem().to_owned(),
        fingerprint: ca.fingerprint(),
    })
}

/// A new enrollment token for `policy` of `org`: `max_uses` enrollments
/// within `ttl`. Creates the CA first if needed (the token carries its
/// fingerprint).
pub async fn create_enroll_token(
    db: &Db,
    org: &Name,
    policy: &Name,
    max_uses: u32,
    ttl: Duration,
) -> Result<EnrollToken, Error> {
    if max_uses == 0 {
        return Err(Error::new(
            ErrorKind::Invalid,
            "max_uses must be at least 1",
        ));
    }
    let ca = ca_certificate(db).await?;
    let org_id = org_id(db, org).await?;
    let mut conn = db.pool().acquire().await?;
    let p = policy_by_name(&mut conn, org_id, policy.as_str())
        .await?
        .ok_or_else(|| not_found("policy", policy.as_str()))?;
    drop(conn);
    let (token, _, _) =
        insert_enroll_token(db, org_id, p.id, max_uses, ttl, "cli", ca.fingerprint).await?;
    Ok(token)
}

/// Insert an enrollment token; returns it, its expiry and its id.
pub(crate) async fn insert_enroll_token(
    db: &Db,
    org_id: i64,
    policy_id: i64,
    max_uses: u32,
    ttl: Duration,
    created_by: &str,
    ca_fingerprint: Sha256,
) -> Result<(EnrollToken, i64, i64), sqlx::Error> {
    let token = EnrollToken {
        secret: rand::random(),
        ca_fingerprint,
    };
    let now = now_ms();
    let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let mut tx = db.write().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO enroll_tokens (org_id, policy_id, secret_sha256, max_uses, uses_left, \
           expires_ms, created_ms, created_by) VALUES ($1, $2, $3, $4, $4, $5, $6, $7) \
         RETURNING id",
    )
    .bind(org_id)
    .bind(policy_id)
    .bind(secret_hash(&token.secret))
    .bind(i64::from(max_uses))
    .bind(expires)
    .bind(now)
    .bind(created_by)
    .fetch_one(tx.conn())
    .await?;
    tx.commit().await?;
    Ok((token, expires, id))
}

/// Delete change-log rows older than `older_than` (each replica also does
/// this periodically with the configured retention). Agents asking for
/// changes since a pruned revision are told to reset. Returns the number of
/// rows deleted.
pub async fn prune_changes(db: &Db, older_than: Duration) -> Result<u64, Error> {
    Ok(crate::feed::prune(db, older_than).await?)
}

/// Delete events that arrived more than `older_than` ago (each replica also
/// does this periodically with `event_retention_days`). Returns the number
/// of events deleted.
pub async fn prune_events(db: &Db, older_than: Duration) -> Result<u64, Error> {
    Ok(crate::feed::prune_events(db, older_than).await?)
}

/// Delete the catalog's instances (where a hash was seen) that their agent
/// reported gone more than `older_than` ago (each replica also does this
/// periodically with `deleted_instance_retention_days`). Returns the number
/// of instances deleted.
pub async fn prune_deleted_instances(db: &Db, older_than: Duration) -> Result<u64, Error> {
    Ok(crate::feed::prune_deleted_instances(db, older_than).await?)
}
