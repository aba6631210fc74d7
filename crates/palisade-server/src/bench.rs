//! Hooks for the authorization benchmark (`benches/authz.rs`); not an API.
use crate::db::{now_ms, Db};
use crate::errors::Error;
use crate::store::insert_admin_token;
use palisade_authz::{Authorizer, Decision, Permission, Target};
use palisade_core::{OrgId, PolicyId};

/// One admin request's authorization path, as the admin API runs it: load
/// the token, admin, conditions and grants from the database, then decide
/// `permission` on `policy` (or the organization) with Cedar.
pub async fn authorize(
    db: &Db,
    authorizer: &Authorizer,
    token: &str,
    permission: Permission,
    policy: Option<i64>,
) -> Result<bool, String> {
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let loaded = crate::http::access::load(db, crate::http::access::Credential::Token(token), ip)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let target = match policy {
        Some(p) => Target::Policy {
            org: OrgId(loaded.org_id),
            policy: PolicyId(p),
        },
        None => Target::Org(OrgId(loaded.org_id)),
    };
    Ok(matches!(
        loaded.decide(authorizer, permission, target),
        Decision::Allow
    ))
}

/// Fill organization `org_id` with `policies` policies, `admins` admins
/// holding `grants_per_admin` grants each (built-in and custom roles, at
/// organization or policy scope, chosen by a fixed pseudo-random sequence)
/// and one API token each. Returns the tokens and the policy ids.
pub async fn seed(
    db: &Db,
    org_id: i64,
    admins: usize,
    grants_per_admin: usize,
    policies: usize,
) -> Result<(Vec<String>, Vec<i64>), Error> {
    let now = now_ms();
    let mut tx = db.write().await?;
    sqlx::query(
        "INSERT INTO roles (org_id, name, permissions, created_ms) VALUES \
         ($1, 'bench-reader', 'files:read events:read computers:read', $2), \
         ($1, 'bench-editor', 'files:read files:update rules:read rules:update', $2)",
    )
    .bind(org_id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    let mut policy_ids = Vec::with_capacity(policies);
    for i in 0..policies {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO policies (org_id, name, level, disconnected_level, created_ms) \
             VALUES ($1, $2, 'monitor', 'monitor', $3) RETURNING id",
        )
        .bind(org_id)
        .bind(format!("bench-p{i}"))
        .bind(now)
        .fetch_one(tx.conn())
        .await?;
        policy_ids.push(id);
    }
    let roles = [
        "owner",
        "security-admin",
        "approver",
        "auditor",
        "bench-reader",
        "bench-editor",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut tokens = Vec::with_capacity(admins);
    for a in 0..admins {
        let admin_id: i64 = sqlx::query_scalar(
            "INSERT INTO admins (org_id, name, created_ms) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(org_id)
        .bind(format!("bench-a{a}"))
        .bind(now)
        .fetch_one(tx.conn())
        .await?;
        for g in 0..grants_per_admin {
            let r = next();
            let role = roles[(r % roles.len() as u64) as usize];
            // One admin in ten has an organization-wide grant; the other
            // grants name distinct policies (so none is a duplicate).
            let policy = if g == 0 && a % 10 == 0 {
                0
            } else {
                policy_ids[(a + g * 5) % policy_ids.len()]
            };
            sqlx::query(
                "INSERT INTO admin_grants (admin_id, role, policy_id, created_ms, created_by) \
                 VALUES ($1, $2, $3, $4, 'bench') ON CONFLICT (admin_id, role, policy_id) DO NOTHING",
            )
            .bind(admin_id)
            .bind(role)
            .bind(policy)
            .bind(now)
            .execute(tx.conn())
            .await?;
        }
        tokens.push(insert_admin_token(tx.conn(), admin_id).await?);
    }
    tx.commit().await?;
    Ok((tokens, policy_ids))
}

/// The id of organization `name` (panics when absent: bench only).
pub async fn org_id(db: &Db, name: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
        .bind(name)
        .fetch_one(db.pool())
        .await
        .expect("organization")
}

/// How many grants there are.
pub async fn grant_count(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM admin_grants")
        .fetch_one(db.pool())
        .await
        .expect("count")
}

/// The database part of [`authorize`] alone.
pub async fn load_only(db: &Db, token: &str) {
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let _ = crate::http::access::load(db, crate::http::access::Credential::Token(token), ip).await;
}

/// Forget every admin's grants read so far (the next request of each reads
/// them again, as after a change).
pub fn forget_grants(db: &Db) {
    db.grant_cache().clear();
}

/// The floor of any query: `SELECT 1` through the same pool.
pub async fn ping(db: &Db) {
    let _: Result<i64, _> = sqlx::query_scalar("SELECT 1").fetch_one(db.pool()).await;
}

/// The token query through sqlx's native PostgreSQL driver instead of
/// `Any` (to tell the driver's cost from the database's).
pub async fn native_postgres_query(pool: &sqlx::PgPool, token: &str) -> usize {
    sqlx::query(crate::http::access::TOKEN_QUERY)
        .bind(crate::store::secret_hash(token.as_bytes()))
        .fetch_all(pool)
        .await
        .map(|rows| rows.len())
        .unwrap_or(0)
}

/// Create a fresh PostgreSQL database next to `base`'s.
pub async fn fresh_postgres(base: &str) -> String {
    use sqlx::{Connection, Executor};
    let name = format!("palisade_bench_{}", std::process::id());
    let mut c = sqlx::PgConnection::connect(base).await.expect("postgres");
    let _ = c
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
    c.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    c.close().await.ok();
    name
}

/// The URL of database `name` on `base`'s server.
pub fn postgres_url(base: &str, name: &str) -> String {
    let (prefix, query) = match base.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (base, None),
    };
    let root = prefix.rsplit_once('/').map_or(prefix, |(r, _)| r);
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// Drop database `name`.
pub async fn drop_postgres(base: &str, name: &str) {
    use sqlx::{Connection, Executor};
    if let Ok(mut c) = sqlx::PgConnection::connect(base).await {
        let _ = c
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        c.close().await.ok();
    }
}
