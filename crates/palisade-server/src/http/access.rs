//! Zero-trust admin access: every admin API call is authorized from the
//! caller's grants as they are in the database at that moment.
//!
//! The [`AdminAuth`] extractor, for each request:
//! 1. finds the credential: an API token (`Authorization: Bearer`) or a
//!    console session (the `__Host-palisade_session` cookie, whose requests other
//!    than GET must carry the session's CSRF token in `X-CSRF-Token`),
//!    refusing unknown, revoked and expired ones (`401`), and sessions still
//!    waiting for their second factor or idle too long;
//! 2. loads, in the same query, the admin (status, lock), the
//!    organization's conditional-access settings and the stamps of the
//!    admin's grants and of the organization's custom roles, then the
//!    grants with their roles' permissions: read again whenever a stamp
//!    changed, which every write to them does ([`GrantCache`]). So a
//!    revoked grant, a disabled admin or a changed condition applies to the
//!    very next request, on every replica;
//! 3. asks the Cedar policies ([`palisade_authz::Authorizer`]) what the
//!    route needs ([`route_permission`]): routes whose target is the
//!    organization are decided here, in one evaluation that includes the
//!    account and conditional-access forbids (status, MFA, trusted
//!    networks, office hours); for the rest the extractor only checks that
//!    the account may act at all now, and the handler names its target (a
//!    policy) with [`AdminAuth::require`]. A token's scope can only narrow
//!    what the grants allow, after the grants' answer.
//!
//! Refusals are `403` with the reason; an object of another organization is
//! never a target (queries are filtered by the caller's organization, so it
//! is `404`, exactly as for an object that does not exist).
//!
//! The [`audit_layer`] middleware sees to one audit record per admin
//! request that changes something or was refused: who, what (method and
//! route), which object (the request path unless the handler names it),
//! before/after where the handler gave them ([`AdminAuth::record`]), from
//! where, and the outcome. A permitted change's record is appended in the
//! transaction that commits the change ([`pending_audit`], called by
//! `WriteTx::commit`), so a crash cannot keep one without the other, and a
//! change whose record cannot be appended fails; refusals and failures are
//! appended after the handler.
use super::extract::PeerAddr;
use super::AppState;
use crate::audit::{self, Entry};
use crate::db::{now_ms, Db};
use crate::errors::ApiError;
use crate::store::secret_hash;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use palisade_authn::token::SessionId;
use palisade_authz::{
    AccessContext, AdminFacts, AdminId, AdminStatus, Caller, Decision, DenyReason, Grant, Op,
    OrgConditions, Permission, PermissionSet, Resource, Role, Scope, Target,
};
use palisade_core::{OrgId, PolicyId};
use parking_lot::Mutex;
use sqlx::Row;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// What a route needs. `Org`: decided by the extractor against the
/// organization; `Policy`: the handler names the policy with
/// [`AdminAuth::require`]; `Signed`: any admin allowed to act at
/// all (their own identity, their own tokens); `Enroll`: the same except
/// that a required second factor is not yet needed (enrolling one);
/// `Reach`: a listing or a view, allowed with the permission on the
/// organization or on at least one policy, and filtered by the handler to
/// what [`AdminAuth::reach`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Org(Permission),
    Policy(Permission),
    Signed,
    Enroll,
    Reach(Permission),
}

const fn p(resource: Resource, op: Op) -> Permission {
    Permission::new(resource, op)
}

/// The permission each admin route needs. A route missing here is refused
/// (`403`): fail closed. Only routes whose handler names its target policy
/// are `Policy`; the others need the permission on the whole organization
/// (so far: policy-scoped grants reach file states, computer moves and
/// policy levels).
pub(crate) fn route_permission(method: &Method, route: &str) -> Option<Need> {
    use Need::{Enroll, Org, Policy, Reach, Signed};
    use Op::{Create, Delete, Read, Update};
    use Resource::{Admins, Computers, Events, Files, Policies, Rules, Settings};
    let m = method.as_str();
    Some(match (m, route) {
        ("GET", "/api/v1/whoami") => Signed,
        ("GET", "/api/v1/me") => Enroll,
        ("POST", "/api/v1/me/totp") => Enroll,
        ("POST", "/api/v1/me/totp/confirm") => Enroll,
        ("POST", "/api/v1/admins/{name}/invite") => Org(p(Admins, Update)),
        ("GET", "/api/v1/files/{sha256}") => Reach(p(Files, Read)),
        ("PUT", "/api/v1/files/{sha256}/state") => Policy(p(Files, Update)),
        ("GET", "/api/v1/events") => Reach(p(Events, Read)),
        ("GET", "/api/v1/computers") => Reach(p(Computers, Read)),
        ("PUT", "/api/v1/computers/{name}/policy") => Policy(p(Computers, Update)),
        ("POST", "/api/v1/computers/{name}/revoke") => Org(p(Computers, Delete)),
        ("GET", "/api/v1/policies") => Org(p(Policies, Read)),
        ("POST", "/api/v1/policies") => Org(p(Policies, Create)),
        ("PUT", "/api/v1/policies/{name}/levels") => Policy(p(Policies, Update)),
        ("POST", "/api/v1/enrollment-tokens") => Org(p(Computers, Create)),
        ("GET", "/api/v1/enrollment-tokens") => Org(p(Computers, Read)),
        ("DELETE", "/api/v1/enrollment-tokens/{id}") => Org(p(Computers, Delete)),
        ("GET", "/api/v1/publishers") => Org(p(Rules, Read)),
        ("PUT", "/api/v1/publishers/{name}/state") => Org(p(Rules, Update)),
        ("PUT", "/api/v1/publishers/{name}/trust") => Org(p(Rules, Update)),
        ("POST", "/api/v1/reputation") => Org(p(Rules, Create)),
        ("GET", "/api/v1/rules") => Org(p(Rules, Read)),
        ("POST", "/api/v1/rules") => Org(p(Rules, Create)),
        ("DELETE", "/api/v1/rules/{id}") => Org(p(Rules, Delete)),
        ("GET", "/api/v1/bundles") => Org(p(Rules, Read)),
        ("PUT", "/api/v1/bundles/{name}") => Org(p(Rules, Update)),
        ("GET", "/api/v1/requests") => Reach(p(Files, Read)),
        ("POST", "/api/v1/requests/{id}/grant") => Org(p(Files, Update)),
        ("POST", "/api/v1/requests/{id}/deny") => Org(p(Files, Update)),
        ("GET", "/api/v1/admins") => Org(p(Admins, Read)),
        ("POST", "/api/v1/admins") => Org(p(Admins, Create)),
        ("POST", "/api/v1/admins/{name}/grants") => Org(p(Admins, Update)),
        ("POST", "/api/v1/admins/{name}/revoke") => Org(p(Admins, Update)),
        ("POST", "/api/v1/admins/{name}/disable") => Org(p(Admins, Update)),
        ("POST", "/api/v1/admins/{name}/enable") => Org(p(Admins, Update)),
        ("GET", "/api/v1/roles") => Org(p(Admins, Read)),
        ("POST", "/api/v1/roles") => Org(p(Admins, Create)),
        ("POST", "/api/v1/tokens") => Signed,
        ("GET", "/api/v1/tokens") => Signed,
        ("DELETE", "/api/v1/tokens/{id}") => Signed,
        ("GET", "/api/v1/settings") => Org(p(Settings, Read)),
        ("PUT", "/api/v1/settings") => Org(p(Settings, Update)),
        ("GET", "/api/v1/audit") => Org(p(Admins, Read)),
        // Console pages: the permission to read what the page shows.
        ("GET", "/console/") => Signed,
        ("GET", "/console/account") => Enroll,
        ("GET", "/console/events") => Reach(p(Events, Read)),
        ("GET", "/console/files") => Reach(p(Files, Read)),
        ("GET", "/console/files/{sha256}") => Reach(p(Files, Read)),
        ("GET", "/console/requests") => Reach(p(Files, Read)),
        ("GET", "/console/rules") => Org(p(Rules, Read)),
        ("GET", "/console/computers") => Reach(p(Computers, Read)),
        ("GET", "/console/policies") => Org(p(Policies, Read)),
        ("GET", "/console/admins") => Org(p(Admins, Read)),
        ("GET", "/console/audit") => Org(p(Admins, Read)),
        _ => return None,
    })
}

/// What the audit middleware learns about the request from the extractor
/// and the handler.
#[derive(Debug, Default)]
struct AuditNote {
    /// `METHOD route` and the request path (the default object).
    action: String,
    path: String,
    org_id: Option<i64>,
    actor: String,
    source: String,
    denied: Option<String>,
    object: Option<String>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    /// The record went into the transaction of the request's first commit.
    written: bool,
}

/// Shared between the middleware and the request's extractor/handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditSlot(Arc<Mutex<AuditNote>>);

tokio::task_local! {
    /// The audit slot of the admin request this task is handling (set by
    /// [`audit_layer`] around requests that may change something).
    static REQUEST_AUDIT: AuditSlot;
}

impl AuditSlot {
    /// The record of this request, if it is an authenticated, permitted
    /// request whose record is not written yet.
    fn pending(&self) -> Option<Entry> {
        let note = self.0.lock();
        if note.written || note.denied.is_some() {
            return None;
        }
        Some(Entry {
            org_id: note.org_id?,
            actor: note.actor.clone(),
            action: note.action.clone(),
            object: note.object.clone().unwrap_or_else(|| note.path.clone()),
            source: note.source.clone(),
            allowed: true,
            reason: None,
            before: note.before.clone(),
            after: note.after.clone(),
        })
    }
}

/// The audit record the current admin request still owes, to be written in
/// the transaction about to commit its change (see [`WriteTx::commit`]), and
/// the slot to mark once that commit succeeded.
///
/// [`WriteTx::commit`]: crate::db::WriteTx::commit
pub(crate) fn pending_audit() -> Option<(AuditSlot, Entry)> {
    REQUEST_AUDIT
        .try_with(|slot| slot.pending().map(|entry| (slot.clone(), entry)))
        .ok()
        .flatten()
}

/// Mark the record of `slot`'s request as written (its commit succeeded).
pub(crate) fn audit_written(slot: &AuditSlot) {
    slot.0.lock().written = true;
}

/// The caller's live facts, loaded for this request.
#[derive(Debug)]
struct Live {
    facts: AdminFacts,
    grants: Arc<[Grant]>,
    conditions: OrgConditions,
    context: AccessContext,
    /// The token's scope (`None`: everything the grants allow).
    scope: Option<PermissionSet>,
    /// The token's expiry (`None`: a session, or a token that does not
    /// expire).
    token_expires_ms: Option<i64>,
}

/// An admin, authenticated and allowed to act now; see the module doc.
#[derive(Clone)]
pub(crate) struct AdminAuth {
    pub(crate) admin: String,
    pub(crate) admin_id: i64,
    pub(crate) org_id: i64,
    pub(crate) org: String,
    /// Whether the credential was obtained with a verified second factor.
    pub(crate) mfa: bool,
    /// The console session this request came with (`None`: an API token).
    pub(crate) session: Option<i64>,
    /// The API token this request came with (`None`: a console session).
    pub(crate) token: Option<i64>,
    /// The admin who made this API token for the admin it acts as (`None`:
    /// the admin's own credential). See [`AdminAuth::require_own_credential`].
    pub(crate) made_by: Option<i64>,
    live: Arc<Live>,
    state: AppState,
    slot: AuditSlot,
}

impl AdminAuth {
    fn caller(&self) -> Caller<'_> {
        Caller {
            admin: &self.live.facts,
            grants: &self.live.grants,
            conditions: &self.live.conditions,
            context: &self.live.context,
        }
    }

    /// The decision for `permission` on `target`, the token's scope applied.
    pub(crate) fn decide(&self, permission: Permission, target: Target) -> Decision {
        scoped(
            self.state
                .authorizer
                .authorize(&self.caller(), permission, target),
            self.live.scope,
            permission,
        )
    }

    /// `Ok` when the caller may do `permission` on `target`; otherwise a
    /// `403` naming the reason (and the refusal goes to the audit log).
    pub(crate) fn require(&self, permission: Permission, target: Target) -> Result<(), ApiError> {
        match self.decide(permission, target) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(self.refuse(permission, reason)),
        }
    }

    /// [`AdminAuth::require`] on a policy of the caller's organization.
    pub(crate) fn require_policy(
        &self,
        permission: Permission,
        policy_id: i64,
    ) -> Result<(), ApiError> {
        self.require(permission, self.policy(policy_id))
    }

    /// [`AdminAuth::require`] on the organization.
    pub(crate) fn require_org(&self, permission: Permission) -> Result<(), ApiError> {
        self.require(permission, Target::Org(OrgId(self.org_id)))
    }

    /// Every permission the caller holds on the organization (or on
    /// policy `policy_id`) right now, the token's scope applied.
    /// The limits of the API token this request came with (scope, expiry):
    /// a credential it makes must stay within them. `(None, None)` for a
    /// console session or an unlimited token.
    pub(crate) fn token_limits(&self) -> (Option<PermissionSet>, Option<i64>) {
        (self.live.scope, self.live.token_expires_ms)
    }

    pub(crate) fn held(&self, policy_id: Option<i64>) -> PermissionSet {
        let target = match policy_id {
            Some(p) => self.policy(p),
            None => Target::Org(OrgId(self.org_id)),
        };
        let set = self.state.authorizer.allowed(&self.caller(), target);
        match self.live.scope {
            Some(scope) => set.intersection(scope),
            None => set,
        }
    }

    /// Where the caller holds `permission` now: `None` on the whole
    /// organization, else the policies (possibly none) where a
    /// policy-scoped grant gives it.
    pub(crate) fn reach(&self, permission: Permission) -> Option<Vec<i64>> {
        let org = Target::Org(OrgId(self.org_id));
        if matches!(self.decide(permission, org), Decision::Allow) {
            return None;
        }
        // Only a policy named in a grant can be reached by one.
        let mut ids: Vec<i64> = self
            .live
            .grants
            .iter()
            .filter_map(|g| match g.scope {
                Scope::Policy(PolicyId(p)) => Some(p),
                Scope::Org => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|&p| matches!(self.decide(permission, self.policy(p)), Decision::Allow));
        Some(ids)
    }

    fn policy(&self, policy_id: i64) -> Target {
        Target::Policy {
            org: OrgId(self.org_id),
            policy: PolicyId(policy_id),
        }
    }

    /// Why this request would be refused under `conditions` (as the
    /// organization's new settings), if it would.
    pub(crate) fn refused_under(&self, conditions: &OrgConditions) -> Option<DenyReason> {
        match self
            .state
            .authorizer
            .sign_in(&self.live.facts, conditions, &self.live.context)
        {
            Decision::Allow => None,
            Decision::Deny(reason) => Some(reason),
        }
    }

    /// Give the audit record of this request its object and before/after
    /// states. Call it before the commit of the change: the record is
    /// written in that transaction.
    pub(crate) fn record(
        &self,
        object: impl Into<String>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) {
        let mut note = self.slot.0.lock();
        note.object = Some(object.into());
        note.before = before;
        note.after = after;
    }

    /// `Ok` unless this request came with a token another admin made for
    /// the caller: such a token acts with the caller's permissions (as far
    /// as its maker's reach), but it is not the caller, so it may not act on
    /// the caller's own account (reset their password, replace their second
    /// factor, make or revoke their tokens). Otherwise whoever holds
    /// `admins:update` over them could take their account over. A `403`
    /// naming `action`, recorded as a refusal.
    pub(crate) fn require_own_credential(&self, action: &str) -> Result<(), ApiError> {
        if self.made_by.is_none() {
            return Ok(());
        }
        let reason = format!("{action}: a token made by another admin cannot do this");
        self.slot.0.lock().denied = Some(reason.clone());
        Err(ApiError::forbidden(format!("not permitted: {reason}")))
    }

    fn refuse(&self, permission: Permission, reason: DenyReason) -> ApiError {
        self.slot.0.lock().denied = Some(format!("{permission}: {reason}"));
        if reason == DenyReason::OtherOrganization {
            return ApiError::not_found("not found");
        }
        ApiError::forbidden(format!("not permitted: {permission}: {reason}"))
    }
}

/// Parse a stored role permission list.
pub(crate) fn parse_permissions(text: &str) -> Result<PermissionSet, String> {
    let mut set = PermissionSet::EMPTY;
    for word in text.split_whitespace() {
        set.insert(word.parse().map_err(|e| format!("{e}"))?);
    }
    Ok(set)
}

/// The role named `name` for organization `org_id`: built-in, or custom
/// with the permissions stored for it.
pub(crate) fn role_of(name: &str, custom: Option<&str>) -> Option<Role> {
    if let Some(r) = Role::builtin(name) {
        return Some(r);
    }
    let perms = parse_permissions(custom?).ok()?;
    Role::parse(name, perms).ok()
}

/// The name of the console's session cookie.
/// `__Host-`: the browser takes it only from this host, over TLS, with
/// `Path=/` and no `Domain`, so a sibling subdomain cannot plant a session
/// (and force a victim into the attacker's account).
pub(crate) const SESSION_COOKIE: &str = "__Host-palisade_session";
/// The header carrying a console session's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// A console session ends after this long without a request...
pub(crate) const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
/// ...and this long after sign-in in any case.
pub(crate) const SESSION_MAX_MS: i64 = 12 * 3600 * 1000;
/// How stale `last_seen_ms` may get before a request refreshes it.
const SESSION_TOUCH_MS: i64 = 60 * 1000;

/// What a request authenticates with.
pub(crate) enum Credential<'a> {
    /// An API token (`plt...`), as presented.
    Token(&'a str),
    /// A console session.
    Session(&'a SessionId),
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The console session the request carries, if any (a malformed cookie is
/// no session).
pub(crate) fn session_of(headers: &HeaderMap) -> Option<SessionId> {
    cookie(headers, SESSION_COOKIE).and_then(|v| SessionId::parse(v).ok())
}

fn bearer(header: &axum::http::HeaderValue) -> Result<&str, ApiError> {
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

/// The caller of one request as the database has it now.
pub(crate) struct Loaded {
    pub(crate) admin: String,
    pub(crate) admin_id: i64,
    pub(crate) org_id: i64,
    pub(crate) org: String,
    pub(crate) mfa: bool,
    pub(crate) session: Option<i64>,
    pub(crate) token: Option<i64>,
    pub(crate) made_by: Option<i64>,
    live: Live,
}

impl Loaded {
    /// The decision for `permission` on `target` (token scope applied), as
    /// the extractor and [`AdminAuth::require`] make it.
    pub(crate) fn decide(
        &self,
        authorizer: &palisade_authz::Authorizer,
        permission: Permission,
        target: Target,
    ) -> Decision {
        let caller = Caller {
            admin: &self.live.facts,
            grants: &self.live.grants,
            conditions: &self.live.conditions,
            context: &self.live.context,
        };
        scoped(
            authorizer.authorize(&caller, permission, target),
            self.live.scope,
            permission,
        )
    }
}

/// A decision narrowed by a token's scope: the grants' answer (with its
/// reason) first, then the scope.
fn scoped(decision: Decision, scope: Option<PermissionSet>, permission: Permission) -> Decision {
    match decision {
        Decision::Allow if scope.is_some_and(|s| !s.contains(permission)) => {
            Decision::Deny(DenyReason::NoGrant)
        }
        d => d,
    }
}

/// The caller's admin and organization: the part of [`load`]'s query after
/// the credential's own columns. The admin's grants come from the
/// [`GrantCache`] when the two stamps read here are those they were read
/// under, else from [`GRANTS_QUERY`].
macro_rules! caller_query {
    ($credential_columns:literal, $from:literal, $key:literal) => {
        concat!(
            "SELECT ",
            $credential_columns,
            ", a.id, a.name, a.status, a.locked_until_ms, o.id, o.name, o.require_mfa, \
               o.trusted_networks, o.office_hours, a.grants_stamp, o.roles_stamp \
             FROM ",
            $from,
            " t JOIN admins a ON a.id = t.admin_id JOIN orgs o ON o.id = a.org_id \
             WHERE t.",
            $key,
            " = $1"
        )
    };
}

/// Columns 0..8 are the credential's: id, scope, expires, revoked, mfa,
/// stage, last use, maker (a token made for the admin by another admin).
pub(crate) const TOKEN_QUERY: &str = caller_query!(
    "t.id, t.scope, t.expires_ms, t.revoked_ms, t.mfa, 'full', t.created_ms, t.created_by",
    "admin_tokens",
    "token_sha256"
);
const SESSION_QUERY: &str = caller_query!(
    "t.id, CAST(NULL AS TEXT), t.expires_ms, t.revoked_ms, t.mfa, t.stage, t.last_seen_ms, \
     CAST(NULL AS BIGINT)",
    "admin_sessions",
    "secret_sha256"
);

/// An admin's grants with their custom roles' permissions, and the stamps
/// they were read under (one row per grant, or one with NULL grant
/// columns).
const GRANTS_QUERY: &str =
    "SELECT a.grants_stamp, o.roles_stamp, g.role, g.policy_id, r.permissions \
     FROM admins a JOIN orgs o ON o.id = a.org_id \
       LEFT JOIN admin_grants g ON g.admin_id = a.id \
       LEFT JOIN roles r ON r.org_id = a.org_id AND r.name = g.role \
     WHERE a.id = $1";

/// Admins' grants as this process last read them, each with the stamps it
/// was read under (`admins.grants_stamp`, `orgs.roles_stamp`).
///
/// Not a cache that can let a revoked grant through: every write to an
/// admin's grants or to the organization's custom roles sets a new random
/// stamp in the same transaction (database triggers, schema v5), every
/// request reads the current stamps with its credential, and an entry is
/// used only when both match; otherwise the grants are read again. So each
/// request still decides on the grants as the database has them at that
/// moment, on any replica, whoever wrote them; it just does not transfer
/// and decode them again while they are unchanged.
#[derive(Default)]
pub(crate) struct GrantCache {
    entries: Mutex<std::collections::HashMap<i64, CachedGrants>>,
}

#[derive(Clone)]
struct CachedGrants {
    grants_stamp: i64,
    roles_stamp: i64,
    grants: Arc<[Grant]>,
}

/// Entries kept at most; past it the cache starts over (admins' grants are
/// read again on their next request).
const GRANT_CACHE_MAX: usize = 100_000;

impl GrantCache {
    fn get(&self, admin_id: i64, grants_stamp: i64, roles_stamp: i64) -> Option<Arc<[Grant]>> {
        let entries = self.entries.lock();
        let entry = entries.get(&admin_id)?;
        (entry.grants_stamp == grants_stamp && entry.roles_stamp == roles_stamp)
            .then(|| entry.grants.clone())
    }

    /// Forget every entry.
    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }

    fn put(&self, admin_id: i64, entry: CachedGrants) {
        let mut entries = self.entries.lock();
        if entries.len() >= GRANT_CACHE_MAX && !entries.contains_key(&admin_id) {
            entries.clear();
        }
        entries.insert(admin_id, entry);
    }
}

/// The grants of admin `admin_id` (named `admin` in logs) under the given
/// stamps: from the cache when they match, else read (and cached under the
/// stamps read with them, which may be newer).
async fn grants_of(
    db: &Db,
    admin_id: i64,
    admin: &str,
    grants_stamp: i64,
    roles_stamp: i64,
) -> Result<Arc<[Grant]>, ApiError> {
    let cache = db.grant_cache();
    if let Some(grants) = cache.get(admin_id, grants_stamp, roles_stamp) {
        return Ok(grants);
    }
    let rows = sqlx::query(GRANTS_QUERY)
        .bind(admin_id)
        .fetch_all(db.pool())
        .await?;
    let Some(first) = rows.first() else {
        // The admin was deleted since the credential was read.
        return Ok(Arc::from(Vec::new()));
    };
    let read_grants_stamp: i64 = first.try_get(0)?;
    let read_roles_stamp: i64 = first.try_get(1)?;
    let mut grants = Vec::with_capacity(rows.len());
    for r in &rows {
        let Some(name) = r.try_get::<Option<String>, _>(2)? else {
            continue; // no grant at all
        };
        let policy_id: i64 = r.try_get(3)?;
        let custom: Option<String> = r.try_get(4)?;
        let Some(role) = role_of(&name, custom.as_deref()) else {
            tracing::warn!(admin = %admin, role = ?name, "grant of an unknown role ignored");
            continue;
        };
        grants.push(Grant {
            role,
            scope: if policy_id == 0 {
                Scope::Org
            } else {
                Scope::Policy(PolicyId(policy_id))
            },
        });
    }
    let grants: Arc<[Grant]> = Arc::from(grants);
    cache.put(
        admin_id,
        CachedGrants {
            grants_stamp: read_grants_stamp,
            roles_stamp: read_roles_stamp,
            grants: grants.clone(),
        },
    );
    Ok(grants)
}

/// Load the caller of a request made with `credential` from `source_ip`:
/// the token or session, the admin, the organization's conditions and the
/// admin's grants, as they are now (one query while the grants are
/// unchanged, see [`GrantCache`]). `401` for an unknown, revoked or expired
/// credential, and for a session that is idle too long or still waiting for
/// its second factor.
pub(crate) async fn load(
    db: &Db,
    credential: Credential<'_>,
    source_ip: IpAddr,
) -> Result<Loaded, ApiError> {
    let now = now_ms();
    // One round trip: the credential's row with its admin and organization.
    let (query, key, what) = match credential {
        Credential::Token(token) => (TOKEN_QUERY, secret_hash(token.as_bytes()), "API token"),
        Credential::Session(id) => (SESSION_QUERY, id.storage_key().to_hex(), "session"),
    };
    let row = sqlx::query(query)
        .bind(key)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| ApiError::unauthorized(format!("invalid or revoked {what}")))?;
    let expires: Option<i64> = row.try_get(2)?;
    let revoked: Option<i64> = row.try_get(3)?;
    if revoked.is_some() || expires.is_some_and(|e| e <= now) {
        return Err(ApiError::unauthorized(format!(
            "invalid, revoked or expired {what}"
        )));
    }
    let credential_id: i64 = row.try_get(0)?;
    let scope: Option<String> = row.try_get(1)?;
    let mfa: i64 = row.try_get(4)?;
    let stage: String = row.try_get(5)?;
    let last_seen: i64 = row.try_get(6)?;
    let session = match credential {
        Credential::Token(_) => None,
        Credential::Session(_) => {
            if stage != "full" {
                return Err(ApiError::unauthorized(
                    "sign-in is not complete: the second factor is missing",
                ));
            }
            if last_seen + SESSION_IDLE_MS <= now {
                return Err(ApiError::unauthorized("session ended after inactivity"));
            }
            if last_seen + SESSION_TOUCH_MS <= now {
                touch_session(db, credential_id, now).await;
            }
            Some(credential_id)
        }
    };
    let made_by: Option<i64> = row.try_get(7)?;
    let admin_id: i64 = row.try_get(8)?;
    let admin: String = row.try_get(9)?;
    let status: String = row.try_get(10)?;
    let locked_until: Option<i64> = row.try_get(11)?;
    let org_id: i64 = row.try_get(12)?;
    let org: String = row.try_get(13)?;
    let require_mfa: i64 = row.try_get(14)?;
    let networks: String = row.try_get(15)?;
    let hours: String = row.try_get(16)?;
    let grants_stamp: i64 = row.try_get(17)?;
    let roles_stamp: i64 = row.try_get(18)?;
    let conditions = org_conditions(require_mfa != 0, &networks, &hours)
        .map_err(|e| ApiError::internal(&format!("organization {org}: {e}")))?;
    let status = if status != "active" {
        AdminStatus::Disabled
    } else if locked_until.is_some_and(|t| t > now) {
        AdminStatus::Locked
    } else {
        AdminStatus::Active
    };
    let grants = grants_of(db, admin_id, &admin, grants_stamp, roles_stamp).await?;
    let scope = match scope {
        None => None,
        Some(text) => Some(
            parse_permissions(&text)
                .map_err(|e| ApiError::internal(&format!("token {credential_id} scope: {e}")))?,
        ),
    };
    Ok(Loaded {
        admin,
        admin_id,
        org_id,
        org,
        mfa: mfa != 0,
        session,
        token: session.is_none().then_some(credential_id),
        made_by: made_by.filter(|&maker| maker != admin_id),
        live: Live {
            facts: AdminFacts {
                id: AdminId(admin_id),
                org: OrgId(org_id),
                status,
            },
            grants,
            conditions,
            context: AccessContext {
                mfa_verified: mfa != 0,
                source_ip,
                now_unix_ms: now,
            },
            scope,
            token_expires_ms: match credential {
                Credential::Token(_) => expires,
                Credential::Session(_) => None,
            },
        },
    })
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let slot = parts
            .extensions
            .get::<AuditSlot>()
            .cloned()
            .unwrap_or_default();
        let source_ip = parts
            .extensions
            .get::<PeerAddr>()
            .map(|a| a.0)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let session_id;
        let mut csrf_ok = true;
        let credential = match parts.headers.get(AUTHORIZATION) {
            Some(header) => Credential::Token(bearer(header)?),
            None => {
                session_id = session_of(&parts.headers).ok_or_else(|| {
                    ApiError::unauthorized(
                        "missing Authorization: Bearer <token> header (or console session)",
                    )
                })?;
                // A cookie rides along with any request the browser makes:
                // changes must prove they come from the console's own page.
                if !matches!(parts.method, Method::GET | Method::HEAD) {
                    let csrf = parts
                        .headers
                        .get(CSRF_HEADER)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("");
                    csrf_ok = session_id.verify_csrf(csrf);
                }
                Credential::Session(&session_id)
            }
        };
        let loaded = load(&state.db, credential, source_ip).await?;
        {
            let mut note = slot.0.lock();
            note.org_id = Some(loaded.org_id);
            note.actor = loaded.admin.clone();
            note.source = source_ip.to_string();
            // Refused, and recorded as such (the session is known by now):
            // another site sending the admin's cookie is worth knowing of.
            if !csrf_ok {
                note.denied = Some("missing or wrong X-CSRF-Token header".into());
            }
        }
        if !csrf_ok {
            return Err(ApiError::forbidden(
                "missing or wrong X-CSRF-Token header for this session",
            ));
        }
        let auth = AdminAuth {
            admin: loaded.admin,
            admin_id: loaded.admin_id,
            org_id: loaded.org_id,
            org: loaded.org,
            mfa: loaded.mfa,
            session: loaded.session,
            token: loaded.token,
            made_by: loaded.made_by,
            live: Arc::new(loaded.live),
            state: state.clone(),
            slot,
        };
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        match route_permission(&parts.method, &route) {
            None => {
                auth.slot.0.lock().denied = Some("route without a permission".into());
                Err(ApiError::forbidden(
                    "not permitted: this route has no permission",
                ))
            }
            // One Cedar evaluation: the account and conditional-access
            // forbids are part of it.
            Some(Need::Org(permission)) => {
                auth.require_org(permission)?;
                Ok(auth)
            }
            // A listing: the organization, or at least one policy.
            Some(Need::Reach(permission)) => {
                match auth.decide(permission, Target::Org(OrgId(auth.org_id))) {
                    Decision::Allow => Ok(auth),
                    Decision::Deny(DenyReason::NoGrant)
                        if auth.reach(permission).is_some_and(|r| !r.is_empty()) =>
                    {
                        Ok(auth)
                    }
                    Decision::Deny(reason) => Err(auth.refuse(permission, reason)),
                }
            }
            // The handler decides on its target; may this account act at
            // all, now, from here?
            Some(need @ (Need::Policy(_) | Need::Signed | Need::Enroll)) => {
                let mut conditions = auth.live.conditions.clone();
                if need == Need::Enroll {
                    conditions.require_mfa = false;
                }
                if let Some(reason) = auth.refused_under(&conditions) {
                    auth.slot.0.lock().denied = Some(format!("sign-in: {reason}"));
                    return Err(ApiError::forbidden(format!("not permitted: {reason}")));
                }
                Ok(auth)
            }
        }
    }
}

/// SQL narrowing rows whose policy id is `column` to `reach` (see
/// [`AdminAuth::reach`]): nothing for the whole organization. The ids are
/// integers from the caller's own grants.
pub(crate) fn policy_clause(column: &str, reach: Option<&[i64]>) -> String {
    match reach {
        None => String::new(),
        Some([]) => " AND 1 = 0".to_owned(),
        Some(ids) => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!(" AND {column} IN ({})", list.join(", "))
        }
    }
}

/// Record that session `id` was used at `now` (best effort: a failure only
/// makes the idle timeout count from the previous use).
async fn touch_session(db: &Db, id: i64, now: i64) {
    let result = async {
        let mut tx = db.write().await?;
        sqlx::query("UPDATE admin_sessions SET last_seen_ms = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(tx.conn())
            .await?;
        // Bookkeeping of the credential, not the request's change.
        tx.commit_unaudited().await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, session = id, "cannot record the session's last use");
    }
}

/// An organization's conditions from its stored settings.
pub(crate) fn org_conditions(
    require_mfa: bool,
    networks: &str,
    hours: &str,
) -> Result<OrgConditions, String> {
    let trusted_networks = networks
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| format!("trusted network {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let office_hours = if hours.trim().is_empty() {
        None
    } else {
        Some(
            hours
                .parse()
                .map_err(|e| format!("office hours {hours:?}: {e}"))?,
        )
    };
    Ok(OrgConditions {
        require_mfa,
        trusted_networks,
        office_hours,
    })
}

/// Middleware: one audit record per admin request that changed something
/// (any method but GET/HEAD) or was refused.
///
/// A permitted change is recorded inside the transaction that commits it:
/// the handler runs with the request's slot as a task-local, and
/// [`WriteTx::commit`](crate::db::WriteTx::commit) appends the record
/// before committing, so the change and its record are durable together or
/// not at all. What no commit recorded (a refusal, a failure before any
/// change, a handler that wrote nothing) is appended here afterwards.
pub(crate) async fn audit_layer(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let slot = AuditSlot::default();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    {
        let mut note = slot.0.lock();
        note.action = format!("{method} {route}");
        note.path = path;
    }
    req.extensions_mut().insert(slot.clone());
    let changed = !matches!(method, Method::GET | Method::HEAD);
    let response = if changed {
        REQUEST_AUDIT.scope(slot.clone(), next.run(req)).await
    } else {
        next.run(req).await
    };
    let note = std::mem::take(&mut *slot.0.lock());
    let Some(org_id) = note.org_id else {
        return response; // not an authenticated admin request
    };
    let status = response.status();
    let denied = note.denied.is_some();
    if note.written || (!changed && !denied) {
        return response;
    }
    // The outcome is the authorization's; a permitted call that then failed
    // says so in the reason.
    let allowed = !denied;
    let reason = note
        .denied
        .or_else(|| (!status.is_success()).then(|| format!("failed: {}", status.as_u16())));
    let entry = Entry {
        org_id,
        actor: note.actor,
        action: note.action,
        object: note.object.unwrap_or(note.path),
        source: note.source,
        allowed,
        reason,
        before: note.before,
        after: note.after,
    };
    if let Err(e) = audit::append(&state.db, entry).await {
        // The operation happened; losing its record is logged loudly.
        tracing::error!(error = %e, "cannot append to the audit log");
    }
    response
}
