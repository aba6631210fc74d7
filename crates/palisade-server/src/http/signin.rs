//! Admin sign-in for the web console, and the account calls around it.
//!
//! A sign-in is two steps when the admin has a second factor:
//! 1. organization, name and password ([`password_step`]): on success
//!    without TOTP enrolled, a full session (not MFA-verified); with TOTP, a
//!    *pending* session (`stage = 'password'`, five minutes) good for
//!    nothing but step 2;
//! 2. a TOTP code or a recovery code ([`second_step`]): the pending session
//!    is ended and a new, MFA-verified one begins (a fresh id: a session id
//!    seen before the second factor is never promoted).
//!
//! Every attempt of either step goes through `palisade_authn::throttle`
//! first: per-account back-off and lockout (stored on the admin row, so all
//! replicas share it; names that are not admins are throttled the same way,
//! in `signin_attempts`, also shared, and at the same cost in database
//! writes, so neither a lock, a replica's memory nor the time taken tells
//! which names exist) and a per-source failure limit (in this replica's
//! memory; IPv6 sources by /64). While a lock lasts the admin's sessions
//! and tokens are refused too (the access layer reads the lock with every
//! credential), but the lock ends none of them: failures anyone can send
//! must not take an admin's API tokens away for good. Passwords are
//! verified on the blocking pool, at most
//! [`HASHING_CONCURRENCY`] at once. Attempts from one source, and attempts
//! on one account, take turns on this replica ([`Gates`]), and an attempt
//! claims its (organization, name) in the database for its duration
//! ([`claim_attempt`]): another replica's attempt on it meanwhile is
//! refused. So each attempt reads the throttle after the one before it has
//! counted its failure (else attempts sent at once all passed the throttle
//! before any failure was counted). Sign-ins, failures and locks go to the
//! organization's audit chain, attempts on names that are not admins of an
//! existing organization too.
//!
//! Conditional access is checked when a session begins (and again on every
//! request, by the access layer): trusted networks and office hours refuse
//! the sign-in with a reason; a required second factor that the admin has
//! not enrolled yet leaves a session that can only enroll one.
use super::access::{AdminAuth, SESSION_MAX_MS};
use super::admins::{admin_id, admin_info, check_power_over, end_credentials};
use super::extract::{JsonBody, PathParam};
use super::AppState;
use crate::audit::{self, Entry};
use crate::db::{now_ms, Db};
use crate::errors::{ApiError, ApiResult};
use crate::store::secret_hash;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use palisade_api::access::{ConfirmTotp, Invitation, Me, RecoveryCodes, TotpEnrollment};
use palisade_authn::throttle::{self, AccountState};
use palisade_authn::token::SessionId;
use palisade_authn::{password, recovery, totp};
use palisade_authz::{AccessContext, AdminFacts, AdminId, AdminStatus, Decision, DenyReason};
use palisade_core::OrgId;
use sqlx::Row;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Argon2id verifications running at once (19 MiB and ~50 ms each).
pub(crate) const HASHING_CONCURRENCY: usize = 2;
/// How long a pending (password-only) session waits for the second factor.
const PENDING_MS: i64 = 5 * 60 * 1000;
/// How long an invitation link works.
const INVITE_MS: i64 = 72 * 3600 * 1000;
/// In-memory throttle entries kept before old ones are dropped.
const MAX_TRACKED: usize = 100_000;

/// Sign-in attempts that take turns on this replica: those from one source
/// and those on one account (see the module doc).
#[derive(Default)]
pub(crate) struct Gates(parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Gates {
    /// Wait for the turn of `key`; it ends when the pass is dropped.
    async fn enter(&self, key: String) -> GatePass<'_> {
        let gate = self.0.lock().entry(key.clone()).or_default().clone();
        let turn = gate.lock_owned().await;
        GatePass {
            gates: self,
            key,
            turn: Some(turn),
        }
    }
}

/// A turn at a [`Gates`] key.
struct GatePass<'a> {
    gates: &'a Gates,
    key: String,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        drop(self.turn.take());
        // Forget the key when no one else holds or waits for it (each
        // holds a handle, taken under this lock).
        let mut gates = self.gates.0.lock();
        if gates
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(&self.key);
        }
    }
}

/// This replica's in-memory throttle state; see the module doc.
#[derive(Default)]
pub(crate) struct Throttle {
    /// Recent failure times per source.
    sources: HashMap<IpAddr, Vec<i64>>,
}

impl Throttle {
    fn source_failures(&self, source: IpAddr) -> Vec<i64> {
        self.sources.get(&source).cloned().unwrap_or_default()
    }

    fn fail_source(&mut self, source: IpAddr, now: i64, policy: &throttle::Policy) {
        let window = i64::try_from(policy.source_window.as_millis()).unwrap_or(i64::MAX);
        if self.sources.len() >= MAX_TRACKED {
            self.sources
                .retain(|_, times| times.iter().any(|&t| t.saturating_add(window) > now));
        }
        let times = self.sources.entry(source).or_default();
        times.retain(|&t| t.saturating_add(window) > now);
        times.push(now);
    }
}

/// The throttle's notion of a source: an IPv4 address, or an IPv6 /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Why a sign-in step was refused. The message is safe to show: it never
/// says whether the organization or the name exists.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Wrong organization, name, password or code (which, is not said).
    Wrong,
    /// Too many attempts: retry after this long.
    Retry(Duration),
    /// The account is locked until then (ms since the epoch).
    Locked(i64),
    /// Credentials were right but a condition refuses the sign-in.
    Condition(DenyReason),
    /// The pending session or invitation is unknown, used or expired.
    Expired,
    /// A new password does not meet the policy.
    WeakPassword(String),
    /// Something broke; already logged.
    Internal,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Wrong => f.write_str("wrong organization, name, password or code"),
            Refusal::Retry(d) => write!(
                f,
                "too many failed attempts: try again in {} s",
                d.as_secs().max(1)
            ),
            Refusal::Locked(until) => write!(
                f,
                "this account is locked after repeated failures until {}; ask another admin to \
                 send an invitation link, or wait",
                palisade_api::format_utc_ms(*until)
            ),
            Refusal::Condition(reason) => write!(f, "sign-in refused: {reason}"),
            Refusal::Expired => f.write_str("this sign-in or link has expired; start again"),
            Refusal::WeakPassword(why) => write!(f, "password refused: {why}"),
            Refusal::Internal => f.write_str("internal error"),
        }
    }
}

impl Refusal {
    /// The HTTP status to answer with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::Wrong | Refusal::Expired => StatusCode::UNAUTHORIZED,
            Refusal::Retry(_) | Refusal::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Condition(_) => StatusCode::FORBIDDEN,
            Refusal::WeakPassword(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error during sign-in");
        Refusal::Internal
    }
}

impl From<ApiError> for Refusal {
    fn from(_: ApiError) -> Self {
        Refusal::Internal // ApiError::internal has logged it
    }
}

/// A session begun: its id (the cookie value to set).
pub(crate) struct Begun {
    pub(crate) id: SessionId,
    /// Whether the second factor is still to come.
    pub(crate) pending: bool,
}

/// How long an attempt holds its (organization, name) at most: a replica
/// that stops mid-attempt holds it no longer.
const ATTEMPT_HOLD_MS: i64 = 10_000;

/// How long the failures of a name that is not an admin are kept once its
/// last failure and lock are over.
const UNKNOWN_KEEP_MS: i64 = 24 * 3600 * 1000;

/// Claim (`org`, `name`) for one attempt, across replicas. `false`:
/// another attempt holds it (it is refused: retry in a second).
async fn claim_attempt(db: &Db, org: &str, name: &str, now: i64) -> Result<bool, Refusal> {
    let mut tx = db.write().await?;
    let claimed = sqlx::query(
        "INSERT INTO signin_attempts (org, name, busy_until_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (org, name) DO UPDATE SET busy_until_ms = excluded.busy_until_ms \
         WHERE signin_attempts.busy_until_ms IS NULL OR signin_attempts.busy_until_ms <= $4",
    )
    .bind(org)
    .bind(name)
    .bind(now + ATTEMPT_HOLD_MS)
    .bind(now)
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    tx.commit_unaudited().await?;
    Ok(claimed)
}

/// Give back a claim; the row goes when it keeps no failures. Best effort:
/// an unreleased claim lapses after [`ATTEMPT_HOLD_MS`].
async fn release_attempt(db: &Db, org: &str, name: &str) {
    let released: Result<(), sqlx::Error> = async {
        let mut tx = db.write().await?;
        sqlx::query(
            "DELETE FROM signin_attempts WHERE org = $1 AND name = $2 AND failed_logins = 0",
        )
        .bind(org)
        .bind(name)
        .execute(tx.conn())
        .await?;
        sqlx::query("UPDATE signin_attempts SET busy_until_ms = NULL WHERE org = $1 AND name = $2")
            .bind(org)
            .bind(name)
            .execute(tx.conn())
            .await?;
        tx.commit_unaudited().await
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "cannot release a sign-in attempt (it lapses by itself)");
    }
}

/// The throttle state of a name that is not an admin.
async fn unknown_state(db: &Db, org: &str, name: &str) -> Result<AccountState, Refusal> {
    let row = sqlx::query(
        "SELECT failed_logins, last_failed_ms, locked_until_ms FROM signin_attempts \
         WHERE org = $1 AND name = $2",
    )
    .bind(org)
    .bind(name)
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(r) => account_state(&r, 0)?,
        None => AccountState::default(),
    })
}

/// Whom an attempt is about.
enum Who<'a> {
    /// An admin.
    Admin(&'a Account),
    /// A name that is not an admin (of an organization that may not exist).
    Unknown {
        org: &'a str,
        name: &'a str,
        state: AccountState,
    },
}

/// The admin an attempt is about, with their throttle state.
struct Account {
    id: i64,
    org_id: i64,
    org: String,
    name: String,
    state: AccountState,
}

fn account_state(row: &sqlx::any::AnyRow, first: usize) -> Result<AccountState, sqlx::Error> {
    let failures: i64 = row.try_get(first)?;
    Ok(AccountState {
        consecutive_failures: u32::try_from(failures).unwrap_or(u32::MAX),
        last_failure_at_ms: row.try_get(first + 1)?,
        locked_until_ms: row.try_get(first + 2)?,
    })
}

/// Refuse before checking anything when the throttle says so.
fn throttled(
    state: &AppState,
    account: &AccountState,
    source: IpAddr,
    now: i64,
) -> Result<(), Refusal> {
    let failures = state.logins.lock().source_failures(source_key(source));
    match throttle::check(&state.login_policy, account, &failures, now) {
        throttle::Decision::Allow => Ok(()),
        throttle::Decision::Refuse { retry_after, .. } => Err(Refusal::Retry(retry_after)),
        throttle::Decision::Locked { until_ms } => Err(Refusal::Locked(until_ms)),
    }
}

/// Count a failed attempt on `who` and its source; lock and audit as
/// needed. A name that is not an admin costs the same writes
/// as an admin (its state, an audit record when the organization exists).
async fn failed(state: &AppState, who: Who<'_>, source: IpAddr, step: &str, now: i64) -> Refusal {
    let policy = state.login_policy;
    let account = match who {
        Who::Admin(account) => account,
        Who::Unknown {
            org,
            name,
            state: before,
        } => return failed_unknown(state, (org, name), before, source, step, now).await,
    };
    state
        .logins
        .lock()
        .fail_source(source_key(source), now, &policy);
    let after = throttle::record_failure(&policy, &account.state, now);
    let newly_locked = after.is_locked(now) && !account.state.is_locked(now);
    let stored: Result<(), ApiError> = async {
        let mut tx = state.db.write().await?;
        sqlx::query(
            "UPDATE admins SET failed_logins = $2, last_failed_ms = $3, locked_until_ms = $4 \
             WHERE id = $1",
        )
        .bind(account.id)
        .bind(i64::from(after.consecutive_failures))
        .bind(after.last_failure_at_ms)
        .bind(after.locked_until_ms)
        .execute(tx.conn())
        .await?;
        Ok(tx.commit().await?)
    }
    .await;
    if stored.is_err() {
        tracing::error!(admin = %account.name, "cannot record a failed sign-in");
    }
    let reason = if newly_locked {
        format!("{step}: wrong; account locked")
    } else {
        format!("{step}: wrong")
    };
    record(state, account, source, false, Some(reason)).await;
    if newly_locked {
        Refusal::Locked(after.locked_until_ms.unwrap_or(now))
    } else {
        Refusal::Wrong
    }
}

/// [`failed`] for a name that is not an admin.
async fn failed_unknown(
    state: &AppState,
    (org, name): (&str, &str),
    before: AccountState,
    source: IpAddr,
    step: &str,
    now: i64,
) -> Refusal {
    let policy = state.login_policy;
    state
        .logins
        .lock()
        .fail_source(source_key(source), now, &policy);
    let after = throttle::record_failure(&policy, &before, now);
    let newly_locked = after.is_locked(now) && !before.is_locked(now);
    let stored: Result<Option<i64>, sqlx::Error> = async {
        let mut tx = state.db.write().await?;
        sqlx::query(
            "UPDATE signin_attempts SET failed_logins = $3, last_failed_ms = $4, \
               locked_until_ms = $5 WHERE org = $1 AND name = $2",
        )
        .bind(org)
        .bind(name)
        .bind(i64::from(after.consecutive_failures))
        .bind(after.last_failure_at_ms)
        .bind(after.locked_until_ms)
        .execute(tx.conn())
        .await?;
        // Names tried long ago, no longer locked, and not being tried.
        sqlx::query(
            "DELETE FROM signin_attempts WHERE last_failed_ms < $1 \
               AND (locked_until_ms IS NULL OR locked_until_ms < $2) \
               AND (busy_until_ms IS NULL OR busy_until_ms < $2)",
        )
        .bind(now - UNKNOWN_KEEP_MS)
        .bind(now)
        .execute(tx.conn())
        .await?;
        let org_id: Option<i64> = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(org)
            .fetch_optional(tx.conn())
            .await?;
        tx.commit_unaudited().await?;
        Ok(org_id)
    }
    .await;
    match stored {
        Ok(Some(org_id)) => {
            let reason = if newly_locked {
                format!("{step}: wrong; no such admin; name locked")
            } else {
                format!("{step}: wrong; no such admin")
            };
            let entry = Entry {
                org_id,
                actor: name.to_owned(),
                action: "SIGN-IN console".into(),
                object: format!("admin {name}"),
                source: source.to_string(),
                allowed: false,
                reason: Some(reason),
                before: None,
                after: None,
            };
            if let Err(e) = audit::append(&state.db, entry).await {
                tracing::error!(error = %e, "cannot append to the audit log");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot record a failed sign-in"),
    }
    // As for an admin: a lock says so.
    if newly_locked {
        Refusal::Locked(after.locked_until_ms.unwrap_or(now))
    } else {
        Refusal::Wrong
    }
}

/// One audit record of a sign-in step.
async fn record(
    state: &AppState,
    account: &Account,
    source: IpAddr,
    allowed: bool,
    reason: Option<String>,
) {
    let entry = Entry {
        org_id: account.org_id,
        actor: account.name.clone(),
        action: "SIGN-IN console".into(),
        object: format!("admin {}", account.name),
        source: source.to_string(),
        allowed,
        reason,
        before: None,
        after: None,
    };
    if let Err(e) = audit::append(&state.db, entry).await {
        tracing::error!(error = %e, "cannot append to the audit log");
    }
}

/// Run an Argon2id job on the blocking pool, at most
/// [`HASHING_CONCURRENCY`] at once.
async fn hashing<T: Send + 'static>(
    state: &AppState,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    let _permit = state
        .hashing
        .acquire()
        .await
        .map_err(|_| Refusal::Internal)?;
    tokio::task::spawn_blocking(job).await.map_err(|e| {
        tracing::error!(error = %e, "password hashing task failed");
        Refusal::Internal
    })
}

/// Step 1: organization, name and password.
pub(crate) async fn password_step(
    state: &AppState,
    org: &str,
    name: &str,
    given: String,
    source: IpAddr,
) -> Result<Begun, Refusal> {
    // No organization or admin has a name that is not a valid name: it is
    // neither claimed nor stored (any string would otherwise go into the
    // database), but the source still pays for the attempt.
    if palisade_core::Name::parse(org).is_err() || palisade_core::Name::parse(name).is_err() {
        let now = now_ms();
        throttled(state, &AccountState::default(), source, now)?;
        state
            .logins
            .lock()
            .fail_source(source_key(source), now, &state.login_policy);
        return Err(Refusal::Wrong);
    }
    // Turns first: the account's state below is then read after every
    // earlier attempt's failure was written.
    let _source_turn = state
        .login_gates
        .enter(format!("source {}", source_key(source)))
        .await;
    let _account_turn = state
        .login_gates
        .enter(format!("account {org}\n{name}"))
        .await;
    let now = now_ms();
    // One attempt at a time on a name, across replicas.
    if !claim_attempt(&state.db, org, name, now).await? {
        return Err(Refusal::Retry(Duration::from_secs(1)));
    }
    let result = password_attempt(state, org, name, given, source, now).await;
    release_attempt(&state.db, org, name).await;
    result
}

/// [`password_step`] once the attempt holds its name.
async fn password_attempt(
    state: &AppState,
    org: &str,
    name: &str,
    given: String,
    source: IpAddr,
    now: i64,
) -> Result<Begun, Refusal> {
    let row = sqlx::query(
        "SELECT a.id, a.org_id, a.password_phc, a.totp_secret, a.failed_logins, a.last_failed_ms, \
           a.locked_until_ms \
         FROM admins a JOIN orgs o ON o.id = a.org_id WHERE o.name = $1 AND a.name = $2",
    )
    .bind(org)
    .bind(name)
    .fetch_optional(state.db.pool())
    .await?;
    let (account, phc, has_totp) = match &row {
        Some(r) => (
            Some(Account {
                id: r.try_get(0)?,
                org_id: r.try_get(1)?,
                org: org.to_owned(),
                name: name.to_owned(),
                state: account_state(r, 4)?,
            }),
            r.try_get::<Option<String>, _>(2)?,
            r.try_get::<Option<String>, _>(3)?.is_some(),
        ),
        None => (None, None, false),
    };
    let throttle_state = match &account {
        Some(a) => a.state,
        None => unknown_state(&state.db, org, name).await?,
    };
    throttled(state, &throttle_state, source, now)?;
    // The same work whether or not the account (or its password) exists.
    let ok = hashing(state, move || match phc {
        Some(phc) => password::verify_password(&phc, &given).unwrap_or(false),
        None => {
            password::verify_dummy(&given);
            false
        }
    })
    .await?;
    let account = match account {
        Some(account) if ok => account,
        Some(account) => {
            return Err(failed(state, Who::Admin(&account), source, "password", now).await)
        }
        None => {
            let who = Who::Unknown {
                org,
                name,
                state: throttle_state,
            };
            return Err(failed(state, who, source, "password", now).await);
        }
    };
    if has_totp {
        let id = create_session(&state.db, account.id, "password", false, source, now).await?;
        return Ok(Begun { id, pending: true });
    }
    succeeded(state, &account, false, source, now).await
}

/// Step 2: a TOTP code or a recovery code, with the pending session of step 1.
pub(crate) async fn second_step(
    state: &AppState,
    pending: &SessionId,
    code: &str,
    source: IpAddr,
) -> Result<Begun, Refusal> {
    let read = || async {
        let row = sqlx::query(
            "SELECT s.id, s.expires_ms, s.revoked_ms, s.stage, a.id, a.org_id, a.name, o.name, \
               a.totp_secret, a.totp_last_step, a.failed_logins, a.last_failed_ms, \
               a.locked_until_ms \
             FROM admin_sessions s JOIN admins a ON a.id = s.admin_id \
               JOIN orgs o ON o.id = a.org_id \
             WHERE s.secret_sha256 = $1",
        )
        .bind(pending.storage_key().to_hex())
        .fetch_optional(state.db.pool())
        .await?;
        row.ok_or(Refusal::Expired)
    };
    // Turns, as for the password (the account is known from the pending
    // session); then the row again, read after every earlier failure.
    let _source_turn = state
        .login_gates
        .enter(format!("source {}", source_key(source)))
        .await;
    let first = read().await?;
    let (org, name): (String, String) = (first.try_get(7)?, first.try_get(6)?);
    let _account_turn = state
        .login_gates
        .enter(format!("account {org}\n{name}"))
        .await;
    // One attempt at a time on a name, across replicas.
    if !claim_attempt(&state.db, &org, &name, now_ms()).await? {
        return Err(Refusal::Retry(Duration::from_secs(1)));
    }
    let result = second_attempt(state, read().await, pending, code, source).await;
    release_attempt(&state.db, &org, &name).await;
    result
}

/// [`second_step`] once the attempt holds its name; `row` is the pending
/// session and its admin, read after the claim.
async fn second_attempt(
    state: &AppState,
    row: Result<sqlx::any::AnyRow, Refusal>,
    pending: &SessionId,
    code: &str,
    source: IpAddr,
) -> Result<Begun, Refusal> {
    let row = row?;
    let now = now_ms();
    let expires: i64 = row.try_get(1)?;
    let revoked: Option<i64> = row.try_get(2)?;
    let stage: String = row.try_get(3)?;
    if revoked.is_some() || expires <= now || stage != "password" {
        return Err(Refusal::Expired);
    }
    let account = Account {
        id: row.try_get(4)?,
        org_id: row.try_get(5)?,
        name: row.try_get(6)?,
        org: row.try_get(7)?,
        state: account_state(&row, 10)?,
    };
    let secret: Option<String> = row.try_get(8)?;
    let last_step: Option<i64> = row.try_get(9)?;
    throttled(state, &account.state, source, now)?;
    let code = code.trim();
    let ok = if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let secret = secret
            .as_deref()
            .and_then(|s| totp::Secret::parse_base32(s).ok());
        let step = secret.and_then(|secret| {
            let now_s = u64::try_from(now / 1000).unwrap_or(0);
            let last = last_step.and_then(|l| u64::try_from(l).ok());
            totp::verify(&secret, code, now_s, last).ok().flatten()
        });
        match step {
            // Claim the step atomically: a code is good once, on any replica.
            Some(step) => claim_step(&state.db, account.id, step).await?,
            None => false,
        }
    } else {
        use_recovery_code(&state.db, account.id, code).await?
    };
    if !ok {
        return Err(failed(state, Who::Admin(&account), source, "second factor", now).await);
    }
    end_session(&state.db, pending).await?;
    succeeded(state, &account, true, source, now).await
}

async fn claim_step(db: &Db, admin_id: i64, step: u64) -> Result<bool, Refusal> {
    let step = i64::try_from(step).map_err(|_| Refusal::Internal)?;
    let mut tx = db.write().await?;
    let claimed = sqlx::query(
        "UPDATE admins SET totp_last_step = $2 \
         WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
    )
    .bind(admin_id)
    .bind(step)
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(claimed)
}

async fn use_recovery_code(db: &Db, admin_id: i64, code: &str) -> Result<bool, Refusal> {
    let Ok(code) = recovery::RecoveryCode::parse(code) else {
        return Ok(false);
    };
    let mut tx = db.write().await?;
    let used = sqlx::query("DELETE FROM recovery_codes WHERE admin_id = $1 AND code_sha256 = $2")
        .bind(admin_id)
        .bind(code.hash().to_hex())
        .execute(tx.conn())
        .await?
        .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(used)
}

/// Credentials are right: clear the failure streak, check the conditions,
/// begin a full session.
async fn succeeded(
    state: &AppState,
    account: &Account,
    mfa: bool,
    source: IpAddr,
    now: i64,
) -> Result<Begun, Refusal> {
    let row = sqlx::query(
        "SELECT a.status, o.require_mfa, o.trusted_networks, o.office_hours \
         FROM admins a JOIN orgs o ON o.id = a.org_id WHERE a.id = $1",
    )
    .bind(account.id)
    .fetch_one(state.db.pool())
    .await?;
    let status: String = row.try_get(0)?;
    let require_mfa: i64 = row.try_get(1)?;
    let mut conditions = super::access::org_conditions(
        require_mfa != 0,
        &row.try_get::<String, _>(2)?,
        &row.try_get::<String, _>(3)?,
    )
    .map_err(|e| {
        tracing::error!(org = %account.org, error = %e, "stored conditions are invalid");
        Refusal::Internal
    })?;
    // Without a second factor enrolled, the session may only enroll one;
    // the access layer refuses everything else while MFA is required.
    conditions.require_mfa &= mfa;
    let facts = AdminFacts {
        id: AdminId(account.id),
        org: OrgId(account.org_id),
        status: if status == "active" {
            AdminStatus::Active
        } else {
            AdminStatus::Disabled
        },
    };
    let context = AccessContext {
        mfa_verified: mfa,
        source_ip: source,
        now_unix_ms: now,
    };
    if let Decision::Deny(reason) = state.authorizer.sign_in(&facts, &conditions, &context) {
        record(state, account, source, false, Some(format!("{reason}"))).await;
        return Err(Refusal::Condition(reason));
    }
    let mut tx = state.db.write().await?;
    sqlx::query(
        "UPDATE admins SET failed_logins = 0, last_failed_ms = NULL, locked_until_ms = NULL \
         WHERE id = $1",
    )
    .bind(account.id)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    let id = create_session(&state.db, account.id, "full", mfa, source, now).await?;
    let how = if mfa {
        "password and second factor"
    } else {
        "password"
    };
    record(state, account, source, true, Some(how.to_owned())).await;
    Ok(Begun { id, pending: false })
}

async fn create_session(
    db: &Db,
    admin_id: i64,
    stage: &str,
    mfa: bool,
    source: IpAddr,
    now: i64,
) -> Result<SessionId, Refusal> {
    let id = SessionId::generate();
    let lifetime = if stage == "full" {
        SESSION_MAX_MS
    } else {
        PENDING_MS
    };
    let mut tx = db.write().await?;
    sqlx::query(
        "INSERT INTO admin_sessions (admin_id, secret_sha256, mfa, source, created_ms, \
           last_seen_ms, expires_ms, stage) VALUES ($1, $2, $3, $4, $5, $5, $6, $7)",
    )
    .bind(admin_id)
    .bind(id.storage_key().to_hex())
    .bind(i64::from(mfa))
    .bind(source.to_string())
    .bind(now)
    .bind(now + lifetime)
    .bind(stage)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// End a session (sign-out, or a pending session replaced by a full one).
pub(crate) async fn end_session(db: &Db, id: &SessionId) -> Result<(), Refusal> {
    let mut tx = db.write().await?;
    sqlx::query(
        "UPDATE admin_sessions SET revoked_ms = $2 WHERE secret_sha256 = $1 AND revoked_ms IS NULL",
    )
    .bind(id.storage_key().to_hex())
    .bind(now_ms())
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Sign a console session out, and audit it (`SIGN-OUT console`).
/// `allowed`: the request proved it came from the console's own page (its
/// CSRF token); when not, nothing ends and the refusal is audited: another
/// site tried it with the admin's cookie. A session that is not live (ended,
/// expired, unknown) signs nothing out and leaves no record.
pub(crate) async fn sign_out(
    state: &AppState,
    id: &SessionId,
    source: IpAddr,
    allowed: bool,
) -> Result<(), Refusal> {
    let now = now_ms();
    let key = id.storage_key().to_hex();
    let mut tx = state.db.write().await?;
    let row = sqlx::query(
        "SELECT a.name, a.org_id FROM admin_sessions s JOIN admins a ON a.id = s.admin_id \
         WHERE s.secret_sha256 = $1 AND s.revoked_ms IS NULL AND s.expires_ms > $2",
    )
    .bind(&key)
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let (name, org_id): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
    if allowed {
        sqlx::query("UPDATE admin_sessions SET revoked_ms = $2 WHERE secret_sha256 = $1")
            .bind(&key)
            .bind(now)
            .execute(tx.conn())
            .await?;
    }
    let entry = Entry {
        org_id,
        actor: name.clone(),
        action: "SIGN-OUT console".into(),
        object: format!("admin {name}"),
        source: source.to_string(),
        allowed,
        reason: (!allowed).then(|| "missing or wrong CSRF token".into()),
        before: None,
        after: None,
    };
    audit::append_in(tx.conn(), entry).await?;
    tx.commit_unaudited().await?;
    Ok(())
}

/// Accept an invitation: set the password, start over without a second
/// factor, end every other credential, begin a session.
pub(crate) async fn accept_invite(
    state: &AppState,
    secret: &str,
    new_password: String,
    source: IpAddr,
) -> Result<Begun, Refusal> {
    let now = now_ms();
    let hash = secret_hash(secret.as_bytes());
    let row = sqlx::query(
        "SELECT a.id, a.org_id, a.name, o.name, a.invite_expires_ms \
         FROM admins a JOIN orgs o ON o.id = a.org_id WHERE a.invite_sha256 = $1",
    )
    .bind(&hash)
    .fetch_optional(state.db.pool())
    .await?
    .ok_or(Refusal::Expired)?;
    let expires: Option<i64> = row.try_get(4)?;
    if expires.is_none_or(|e| e <= now) {
        return Err(Refusal::Expired);
    }
    let account = Account {
        id: row.try_get(0)?,
        org_id: row.try_get(1)?,
        name: row.try_get(2)?,
        org: row.try_get(3)?,
        state: AccountState::default(),
    };
    password::check_policy(&new_password).map_err(|e| Refusal::WeakPassword(e.to_string()))?;
    let phc = hashing(state, move || password::hash_password(&new_password))
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot hash a password");
            Refusal::Internal
        })?;
    let mut tx = state.db.write().await?;
    let taken = sqlx::query(
        "UPDATE admins SET password_phc = $2, invite_sha256 = NULL, invite_expires_ms = NULL, \
           totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL, failed_logins = 0, \
           last_failed_ms = NULL, locked_until_ms = NULL \
         WHERE id = $1 AND invite_sha256 = $3",
    )
    .bind(account.id)
    .bind(phc)
    .bind(&hash)
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    if !taken {
        return Err(Refusal::Expired); // used meanwhile
    }
    sqlx::query("DELETE FROM recovery_codes WHERE admin_id = $1")
        .bind(account.id)
        .execute(tx.conn())
        .await?;
    end_credentials(tx.conn(), account.id).await?;
    tx.commit().await?;
    record(
        state,
        &account,
        source,
        true,
        Some(
            "invitation accepted: password set, second factor and other credentials removed".into(),
        ),
    )
    .await;
    succeeded(state, &account, false, source, now).await
}

/// `POST /api/v1/admins/{name}/invite`: a one-time link to set the admin's
/// password. Resetting someone's credentials is power over their account:
/// it needs everything they hold.
pub(crate) async fn invite(
    State(state): State<AppState>,
    admin: AdminAuth,
    uri: Uri,
    headers: HeaderMap,
    name: PathParam,
) -> ApiResult<(StatusCode, Json<Invitation>)> {
    let name = name.name("name")?;
    let mut tx = state.db.write().await?;
    let id = admin_id(tx.conn(), admin.org_id, name.as_str()).await?;
    if id != admin.admin_id {
        let target = admin_info(tx.conn(), admin.org_id, name.as_str()).await?;
        check_power_over(tx.conn(), &admin, &target).await?;
    } else {
        admin.require_own_credential("resetting the password")?;
        if !admin.mfa && totp_enrolled(tx.conn(), id).await? {
            // Accepting the invitation clears the second factor: as for
            // replacing it, a credential made without it may not.
            return Err(ApiError::forbidden(
                "resetting your own credentials needs a sign-in made with your second factor",
            ));
        }
    }
    let secret = SessionId::generate().to_cookie_value();
    let expires_ms = now_ms() + INVITE_MS;
    sqlx::query("UPDATE admins SET invite_sha256 = $2, invite_expires_ms = $3 WHERE id = $1")
        .bind(id)
        .bind(secret_hash(secret.as_bytes()))
        .bind(expires_ms)
        .execute(tx.conn())
        .await?;
    admin.record(
        format!("admin {}", name.as_str()),
        None,
        Some(serde_json::json!({ "invitation_expires_ms": expires_ms })),
    );
    tx.commit().await?;
    let host = match authority(&uri, &headers) {
        "" => "localhost",
        h => h,
    };
    let url = format!("https://{host}/console/invite/{secret}");
    Ok((StatusCode::CREATED, Json(Invitation { url, expires_ms })))
}

/// Whether the admin has a second factor enrolled.
async fn totp_enrolled(conn: &mut sqlx::AnyConnection, id: i64) -> Result<bool, sqlx::Error> {
    let secret: Option<String> = sqlx::query_scalar("SELECT totp_secret FROM admins WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok(secret.is_some())
}

/// The host (and port) the client reached us by: the request's authority
/// (HTTP/2) or its `Host` header (HTTP/1.1), if it is a plausible host name
/// or address; empty otherwise.
pub(crate) fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .filter(|h| {
            h.len() < 256
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("")
}

/// `GET /api/v1/me`.
pub(crate) async fn me(State(state): State<AppState>, admin: AdminAuth) -> ApiResult<Json<Me>> {
    let row = sqlx::query(
        "SELECT a.totp_secret IS NOT NULL, o.require_mfa, \
           (SELECT COUNT(*) FROM recovery_codes r WHERE r.admin_id = a.id) \
         FROM admins a JOIN orgs o ON o.id = a.org_id WHERE a.id = $1",
    )
    .bind(admin.admin_id)
    .fetch_one(state.db.pool())
    .await?;
    let totp: bool = row.try_get::<bool, _>(0).or_else(|_| {
        row.try_get::<i64, _>(0).map(|v| v != 0) // SQLite answers an integer
    })?;
    let require_mfa: i64 = row.try_get(1)?;
    let codes: i64 = row.try_get(2)?;
    Ok(Json(Me {
        admin: admin.admin.clone(),
        organization: admin.org.clone(),
        totp,
        recovery_codes: u32::try_from(codes).unwrap_or(0),
        mfa_verified: admin.mfa,
        require_mfa: require_mfa != 0,
        console_session: admin.session.is_some(),
    }))
}

/// `POST /api/v1/me/totp`: begin (or restart) TOTP enrollment. Replacing an
/// enrolled factor needs a credential obtained with it.
pub(crate) async fn start_totp(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> ApiResult<Json<TotpEnrollment>> {
    admin.require_own_credential("enrolling a second factor")?;
    let mut tx = state.db.write().await?;
    if !admin.mfa && totp_enrolled(tx.conn(), admin.admin_id).await? {
        return Err(ApiError::forbidden(
            "replacing the second factor needs a sign-in made with the current one",
        ));
    }
    let secret = totp::Secret::generate();
    let account = format!("{}@{}", admin.admin, admin.org);
    let uri = totp::otpauth_uri(&secret, "Palisade", &account)
        .map_err(|e| ApiError::invalid("name", e.to_string()))?;
    let qr_svg = totp::qr_svg(&uri).map_err(|e| ApiError::internal(&e))?;
    sqlx::query("UPDATE admins SET totp_pending = $2 WHERE id = $1")
        .bind(admin.admin_id)
        .bind(secret.to_base32())
        .execute(tx.conn())
        .await?;
    admin.record(format!("admin {}", admin.admin), None, None);
    tx.commit().await?;
    Ok(Json(TotpEnrollment {
        secret: secret.to_base32(),
        uri: uri.as_str().to_owned(),
        qr_svg,
    }))
}

/// `POST /api/v1/me/totp/confirm`: the app's code proves the secret was
/// taken; the factor is enrolled, fresh recovery codes are issued (shown
/// once), and the console session making the call counts as MFA-verified.
pub(crate) async fn confirm_totp(
    State(state): State<AppState>,
    admin: AdminAuth,
    JsonBody(body): JsonBody<ConfirmTotp>,
) -> ApiResult<Json<RecoveryCodes>> {
    admin.require_own_credential("enrolling a second factor")?;
    let mut tx = state.db.write().await?;
    let pending: Option<String> =
        sqlx::query_scalar("SELECT totp_pending FROM admins WHERE id = $1")
            .bind(admin.admin_id)
            .fetch_one(tx.conn())
            .await?;
    let secret = pending
        .as_deref()
        .and_then(|s| totp::Secret::parse_base32(s).ok())
        .ok_or_else(|| ApiError::conflict("no TOTP enrollment in progress: start one first"))?;
    let now_s = u64::try_from(now_ms() / 1000).unwrap_or(0);
    let step = totp::verify(&secret, &body.code, now_s, None)
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::invalid("code", "wrong code: use the app's current code"))?;
    sqlx::query(
        "UPDATE admins SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $2 \
         WHERE id = $1",
    )
    .bind(admin.admin_id)
    .bind(i64::try_from(step).unwrap_or(i64::MAX))
    .execute(tx.conn())
    .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE admin_id = $1")
        .bind(admin.admin_id)
        .execute(tx.conn())
        .await?;
    let codes = recovery::generate();
    for code in &codes {
        sqlx::query("INSERT INTO recovery_codes (admin_id, code_sha256) VALUES ($1, $2)")
            .bind(admin.admin_id)
            .bind(code.hash().to_hex())
            .execute(tx.conn())
            .await?;
    }
    if let Some(session) = admin.session {
        sqlx::query("UPDATE admin_sessions SET mfa = 1 WHERE id = $1")
            .bind(session)
            .execute(tx.conn())
            .await?;
    }
    admin.record(
        format!("admin {}", admin.admin),
        None,
        Some(serde_json::json!({ "totp": true, "recovery_codes": codes.len() })),
    );
    tx.commit().await?;
    Ok(Json(RecoveryCodes {
        codes: codes.iter().map(ToString::to_string).collect(),
    }))
}
