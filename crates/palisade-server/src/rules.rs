//! Rules: how they are stored and validated, the [`RuleSet`] each computer
//! receives, publishers' trust, and the built-in bundles.
//!
//! # Storage
//!
//! A rule is a row of `rules` whose `body_json` is an
//! [`palisade_api::admin::RuleBody`] and `kind` its tag; it applies to every
//! policy unless `rule_policies` names some. `rank` orders custom rules
//! (lower first, then by id). Rules a bundle created carry its name and are
//! disabled (`enabled = 0`), not deleted, when the bundle is. A trusted
//! directory's trusted servers (`computers`) are also pinned by id in
//! `rule_computers` when it is created ([`pin_trusted_servers`]): only
//! computers enrolled then, and only those computers, not whoever takes
//! their names later, approve for every computer the rule covers.
//!
//! # The rule set of a computer
//!
//! [`rule_set`] assembles what `GET /agent/v1/config` (and the stream's
//! `Hello`) carries: every enabled rule whose policies are empty or include
//! the computer's, by kind — custom rules in rank order, reputation rules,
//! protected folders, trusted change (updaters, trusted directories, trusted
//! users) — plus the publisher states set for all computers or for that
//! policy (each saying which; the agent's engine lets a ban win) and the
//! publishers' trust. Event rules are evaluated by the service and are not
//! sent.
//!
//! Any change to rules, bundles, publisher states or publisher trust logs a
//! `policy` change (for the policies concerned, or for all with a NULL
//! policy), so every affected agent is told `config_changed`, and bumps the
//! organization's `rules_version`, which each replica's [`RuleCache`] of
//! assembled rule sets is keyed by.
//!
//! # Built-in bundles
//!
//! | bundle | rules |
//! |--------|-------|
//! | `debian-packages` | updater `dpkg` (programs `dpkg`, `apt`, `apt-get`, `unattended-upgrade`; `package_manager`: files whose content matches the checksum their package recorded are approved); publisher `Debian` approved for all computers (unless an admin set its global state) |
//! | `harden-world-writable` | custom rule, ranked before every other rule: block execution of `/tmp/**`, `/var/tmp/**`, `/dev/shm/**` |
//!
//! Enabling a bundle creates its rules (tagged with the bundle's name), or
//! re-enables them and refreshes their bodies; disabling disables them and
//! removes the publisher states the bundle set.
use crate::db::{now_ms, WriteTx};
use crate::errors::{ApiError, ApiResult};
use crate::store::{append_changes, NewChange};
use palisade_api::admin::{
    custom_rule, folder_rule, reputation_rule, BundleInfo, CreateRule, EventAction, EventTrigger,
    RuleBody, RuleRecord,
};
use palisade_core::rules::{
    Operations, PublisherState, PublisherTrust, RuleAction, RuleId, RuleSet, TrustedChange,
    UserMatch,
};
use palisade_core::{FileState, Name, PathPattern, ScopeKind};
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

/// Longest rule name.
const MAX_RULE_NAME: usize = 128;
/// Most items in one list of a rule (paths, hashes, exceptions, actions).
const MAX_RULE_LIST: usize = 10_000;
/// Ranks are kept well inside i64 so "before all" and "after all" never overflow.
pub(crate) const MAX_RANK: i64 = 1_000_000_000_000;

/// The `kind` column of a rule body.
pub(crate) fn kind_of(body: &RuleBody) -> &'static str {
    match body {
        RuleBody::Custom { .. } => "custom",
        RuleBody::Reputation { .. } => "reputation",
        RuleBody::Folder { .. } => "folder",
        RuleBody::TrustedDirectory { .. } => "trusted_directory",
        RuleBody::TrustedUser { .. } => "trusted_user",
        RuleBody::Updater { .. } => "updater",
        RuleBody::Event { .. } => "event",
    }
}

pub(crate) fn trust_str(t: PublisherTrust) -> &'static str {
    match t {
        PublisherTrust::NotTrusted => "not_trusted",
        PublisherTrust::Low => "low",
        PublisherTrust::Medium => "medium",
        PublisherTrust::High => "high",
    }
}

pub(crate) fn parse_trust(s: &str) -> Result<PublisherTrust, sqlx::Error> {
    match s {
        "not_trusted" => Ok(PublisherTrust::NotTrusted),
        "low" => Ok(PublisherTrust::Low),
        "medium" => Ok(PublisherTrust::Medium),
        "high" => Ok(PublisherTrust::High),
        other => Err(sqlx::Error::Decode(
            format!("unknown publisher trust {other:?}").into(),
        )),
    }
}

fn decode(e: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

// ---------------------------------------------------------------------------
// Validation

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(field, message)
}

/// Text without control characters, 1..=max bytes.
pub(crate) fn check_label(field: &str, s: &str, max: usize) -> ApiResult<()> {
    if s.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

/// An absolute, canonical directory: `/a/b` (no `.`/`..`, empty segments,
/// trailing slash, NUL), not `/` itself.
pub(crate) fn check_dir(field: &str, dir: &str) -> ApiResult<()> {
    let why = if !dir.starts_with('/') {
        Some("must be an absolute path")
    } else if dir == "/" {
        Some("must not be the root directory")
    } else if dir.len() > 4096 || dir.contains('\0') {
        Some("too long or contains NUL")
    } else if dir.ends_with('/') {
        Some("must not end with /")
    } else if dir[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        Some("must be canonical (no empty, . or .. segments)")
    } else {
        None
    };
    match why {
        Some(w) => Err(invalid(field, format!("{dir:?}: {w}"))),
        None => Ok(()),
    }
}

/// Patterns are matched against file paths, which never end with `/`:
/// `/opt/app/` would match the directory `/opt/app` alone, not what is in
/// it, which is surely not what was meant.
fn check_not_dir_slash(field: &str, p: &PathPattern) -> ApiResult<()> {
    let text = p.as_str();
    if text.len() > 1 && text.ends_with('/') {
        let dir = text.trim_end_matches('/');
        return Err(invalid(
            field,
            format!(
                "{text:?} ends with /: it would match the directory itself only; write {dir}/** for everything under it, or {dir}/* for what is directly in it"
            ),
        ));
    }
    Ok(())
}

fn check_computer_names(field: &str, names: &[String]) -> ApiResult<()> {
    for (i, c) in names.iter().enumerate() {
        if Name::parse(c).is_err() {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!("{c:?} is not a computer name"),
            ));
        }
    }
    Ok(())
}

fn check_list_len<T>(field: &str, v: &[T]) -> ApiResult<()> {
    if v.len() > MAX_RULE_LIST {
        return Err(invalid(field, format!("at most {MAX_RULE_LIST} items")));
    }
    Ok(())
}

fn check_user(field: &str, u: &UserMatch) -> ApiResult<()> {
    let name = match u {
        UserMatch::User(n) | UserMatch::Group(n) => n,
    };
    check_label(field, name, 64)?;
    if name.contains([':', '/', ' ']) {
        return Err(invalid(field, "not a user or group name"));
    }
    Ok(())
}

/// `host:port` (a name or an IP address, and a port).
pub(crate) fn valid_host_port(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok_and(|p| p != 0)
        && !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// An `http(s)://` URL with a host.
pub(crate) fn valid_webhook_url(s: &str) -> bool {
    s.len() <= 2048
        && reqwest::Url::parse(s)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// Check what parsing alone does not (patterns already parsed). Every
/// error is a 422 naming the field (`body.paths`, `body.actions[1].url`...).
/// Policy names are resolved by the caller.
pub(crate) fn validate(req: &CreateRule) -> ApiResult<()> {
    check_label("name", &req.name, MAX_RULE_NAME)?;
    if let Some(r) = req.rank {
        if !(-MAX_RANK..=MAX_RANK).contains(&r) {
            return Err(invalid("rank", format!("must be within ±{MAX_RANK}")));
        }
    }
    match &req.body {
        RuleBody::Custom {
            process,
            user,
            operations,
            paths,
            action,
            conditions,
        } => {
            if paths.is_empty() {
                return Err(invalid("body.paths", "give at least one path pattern"));
            }
            check_list_len("body.paths", paths)?;
            for (i, p) in paths.iter().enumerate() {
                check_not_dir_slash(&format!("body.paths[{i}]"), p)?;
            }
            if let Some(palisade_core::rules::ProcessMatch::Path(p)) = process {
                check_not_dir_slash("body.process.value", p)?;
            }
            if *operations == Operations::default() {
                return Err(invalid(
                    "body.operations",
                    "give at least one operation (execute, write)",
                ));
            }
            if let Some(palisade_core::rules::ProcessMatch::Publisher(p)) = process {
                check_label("body.process.value", p, 256)?;
            }
            if let Some(u) = user {
                check_user("body.user.name", u)?;
            }
            if let Some(n) = conditions.nice {
                if !(-20..=19).contains(&n) {
                    return Err(invalid("body.conditions.nice", "must be within -20..=19"));
                }
            }
            if conditions.max_runtime_secs == Some(0) {
                return Err(invalid(
                    "body.conditions.max_runtime_secs",
                    "must be at least 1",
                ));
            }
            if !conditions.is_empty() && matches!(action, RuleAction::Block | RuleAction::Prompt) {
                return Err(invalid(
                    "body.conditions",
                    "conditions apply to what a rule allows, not to block or prompt",
                ));
            }
        }
        RuleBody::Reputation {
            min_trust,
            except_files,
            except_publishers,
            ..
        } => {
            if *min_trust > 10 {
                return Err(invalid("body.min_trust", "must be 0..=10"));
            }
            check_list_len("body.except_files", except_files)?;
            check_list_len("body.except_publishers", except_publishers)?;
            for (i, p) in except_publishers.iter().enumerate() {
                check_label(&format!("body.except_publishers[{i}]"), p, 256)?;
            }
        }
        RuleBody::Folder { dir, parents } => {
            check_dir("body.dir", dir)?;
            if parents.is_empty() {
                return Err(invalid(
                    "body.parents",
                    "give at least one parent process hash (a folder no process may start code from is a block rule)",
                ));
            }
            check_list_len("body.parents", parents)?;
        }
        RuleBody::TrustedDirectory { dir, computers } => {
            check_dir("body.dir", dir)?;
            check_list_len("body.computers", computers)?;
            check_computer_names("body.computers", computers)?;
        }
        RuleBody::TrustedUser { user } => check_user("body.user.name", user)?,
        RuleBody::Updater {
            programs, hashes, ..
        } => {
            if programs.is_empty() && hashes.is_empty() {
                return Err(invalid(
                    "body.programs",
                    "give at least one program name or executable hash",
                ));
            }
            check_list_len("body.programs", programs)?;
            check_list_len("body.hashes", hashes)?;
            for (i, p) in programs.iter().enumerate() {
                let field = format!("body.programs[{i}]");
                check_label(&field, p, 255)?;
                if p.contains(['/', ' ']) || p == "." || p == ".." {
                    return Err(invalid(&field, "a program name, without a directory"));
                }
            }
        }
        RuleBody::Event { filter, actions } => {
            for (field, t) in [
                ("body.filter.min_trust", filter.min_trust),
                ("body.filter.max_trust", filter.max_trust),
            ] {
                if t.is_some_and(|t| t > 10) {
                    return Err(invalid(field, "must be 0..=10"));
                }
            }
            if let (Some(lo), Some(hi)) = (filter.min_trust, filter.max_trust) {
                if lo > hi {
                    return Err(invalid(
                        "body.filter.min_trust",
                        "must not exceed max_trust",
                    ));
                }
            }
            if filter.trigger == EventTrigger::FileSeen && !filter.kinds.is_empty() {
                return Err(invalid(
                    "body.filter.kinds",
                    "a file_seen trigger has no event kind",
                ));
            }
            check_computer_names("body.filter.computers", &filter.computers)?;
            if actions.is_empty() {
                return Err(invalid("body.actions", "give at least one action"));
            }
            if actions.len() > 16 {
                return Err(invalid("body.actions", "at most 16 actions"));
            }
            for (i, a) in actions.iter().enumerate() {
                match a {
                    EventAction::Webhook { url } if !valid_webhook_url(url) => {
                        return Err(invalid(
                            &format!("body.actions[{i}].url"),
                            "must be an http:// or https:// URL with a host",
                        ));
                    }
                    EventAction::Syslog { address: Some(a) } if !valid_host_port(a) => {
                        return Err(invalid(
                            &format!("body.actions[{i}].address"),
                            "must be host:port",
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// The policy names an event rule's body refers to, with their field.
pub(crate) fn body_policy_refs(body: &RuleBody) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    if let RuleBody::Event { filter, actions } = body {
        for (i, p) in filter.policies.iter().enumerate() {
            out.push((format!("body.filter.policies[{i}]"), p.as_str()));
        }
        for (i, a) in actions.iter().enumerate() {
            if let EventAction::MoveComputer { policy } = a {
                out.push((format!("body.actions[{i}].policy"), policy.as_str()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Storage

/// Record, inside `tx`, that what the rule sets of `policies` (all when
/// empty) are built from changed: bump `orgs.rules_version` (which the
/// replicas' [`RuleCache`]s are keyed by) and log the configuration change.
pub(crate) async fn rules_changed(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    policies: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orgs SET rules_version = rules_version + 1 WHERE id = $1")
        .bind(org_id)
        .execute(tx.conn())
        .await?;
    append_changes(tx, org_id, &NewChange::policies(policies)).await?;
    Ok(())
}

/// Assembled rule sets by (organization, policy), valid while the
/// organization's `rules_version` is the one they were built at. A config
/// fan-out (every agent of a policy fetching its configuration after a
/// change) then builds each rule set once per replica.
#[derive(Default)]
pub(crate) struct RuleCache {
    sets: std::sync::Mutex<CachedSets>,
}

/// (organization, policy) -> (rules_version, rule set).
type CachedSets = HashMap<(i64, i64), (i64, Arc<RuleSet>)>;

/// Most rule sets a replica caches.
const RULE_CACHE_MAX: usize = 4096;

impl RuleCache {
    /// The rule set of `policy_id`; `version` is the organization's
    /// `rules_version`, read before this call.
    pub(crate) async fn get(
        &self,
        conn: &mut AnyConnection,
        org_id: i64,
        policy_id: i64,
        version: i64,
    ) -> Result<Arc<RuleSet>, sqlx::Error> {
        if let Some((v, set)) = self.lock().get(&(org_id, policy_id)) {
            if *v == version {
                return Ok(set.clone());
            }
        }
        // Built from rows at least as new as `version`: never older than
        // what a later reader of the same version expects.
        let set = Arc::new(rule_set(conn, org_id, policy_id).await?);
        let mut sets = self.lock();
        if sets.len() >= RULE_CACHE_MAX {
            sets.clear();
        }
        sets.insert((org_id, policy_id), (version, set.clone()));
        Ok(set)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CachedSets> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The organization's `rules_version`.
pub(crate) async fn rules_version(
    conn: &mut AnyConnection,
    org_id: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT rules_version FROM orgs WHERE id = $1")
        .bind(org_id)
        .fetch_one(conn)
        .await
}

/// Insert a rule (rank: after every other rule when `None`), limited to
/// `policy_ids` (all when empty), and log the configuration change for the
/// agents it concerns. Returns its id.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_rule(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    name: &str,
    rank: Option<i64>,
    bundle: Option<&str>,
    body: &RuleBody,
    policy_ids: &[i64],
    by: &str,
) -> Result<i64, sqlx::Error> {
    let rank = match rank {
        Some(r) => r,
        None => next_rank(tx.conn(), org_id).await?,
    };
    let json = serde_json::to_string(body).map_err(decode)?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO rules (org_id, name, kind, rank, enabled, bundle, body_json, created_ms, \
           created_by) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8) RETURNING id",
    )
    .bind(org_id)
    .bind(name)
    .bind(kind_of(body))
    .bind(rank)
    .bind(bundle)
    .bind(json)
    .bind(now_ms())
    .bind(by)
    .fetch_one(tx.conn())
    .await?;
    for p in policy_ids {
        sqlx::query(
            "INSERT INTO rule_policies (rule_id, policy_id) VALUES ($1, $2) \
             ON CONFLICT (rule_id, policy_id) DO NOTHING",
        )
        .bind(id)
        .bind(*p)
        .execute(tx.conn())
        .await?;
    }
    if kind_of(body) != "event" {
        rules_changed(tx, org_id, policy_ids).await?;
    }
    Ok(id)
}

/// Pin, inside `tx`, the trusted servers a new trusted-directory rule
/// `rule_id` names to the computers that bear those names now: 404 naming
/// the field for a name no computer of the organization has (a misspelling,
/// a computer not enrolled yet: whoever enrolled later under that name
/// would approve for every computer the rule covers), 422 for a revoked
/// one. Other kinds of rule: nothing.
pub(crate) async fn pin_trusted_servers(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    rule_id: i64,
    body: &RuleBody,
) -> ApiResult<()> {
    let RuleBody::TrustedDirectory { computers, .. } = body else {
        return Ok(());
    };
    for (i, name) in computers.iter().enumerate() {
        let field = format!("body.computers[{i}]");
        let row = sqlx::query("SELECT id, revoked FROM computers WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_optional(tx.conn())
            .await?;
        let Some(row) = row else {
            return Err(ApiError::not_found(format!(
                "no computer named {name:?} is enrolled in this organization: a trusted server \
                 must be enrolled before a rule names it"
            ))
            .field(field));
        };
        if row.try_get::<i64, _>(1)? != 0 {
            return Err(invalid(
                &field,
                format!("the computer {name:?} is revoked: it cannot be a trusted server"),
            ));
        }
        sqlx::query(
            "INSERT INTO rule_computers (rule_id, computer_id) VALUES ($1, $2) \
             ON CONFLICT (rule_id, computer_id) DO NOTHING",
        )
        .bind(rule_id)
        .bind(row.try_get::<i64, _>(0)?)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// One more than the highest rank in the organization.
async fn next_rank(conn: &mut AnyConnection, org_id: i64) -> Result<i64, sqlx::Error> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(rank) FROM rules WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(conn)
        .await?;
    Ok(max.map_or(0, |m| (m + 1).min(MAX_RANK)))
}

/// What deleting a rule did.
pub(crate) enum Deleted {
    /// Deleted.
    Yes,
    /// No such rule in the organization.
    NotFound,
    /// It belongs to this bundle.
    InBundle(String),
}

/// Delete a rule of `org_id` (not one a bundle created) and log the change.
pub(crate) async fn delete_rule(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    id: i64,
) -> Result<Deleted, sqlx::Error> {
    let row = sqlx::query("SELECT kind, bundle FROM rules WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let Some(row) = row else {
        return Ok(Deleted::NotFound);
    };
    let kind: String = row.try_get(0)?;
    if let Some(b) = row.try_get::<Option<String>, _>(1)? {
        return Ok(Deleted::InBundle(b));
    }
    let policies: Vec<i64> =
        sqlx::query_scalar("SELECT policy_id FROM rule_policies WHERE rule_id = $1")
            .bind(id)
            .fetch_all(tx.conn())
            .await?;
    for table in ["rule_policies", "rule_computers"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE rule_id = $1"))
            .bind(id)
            .execute(tx.conn())
            .await?;
    }
    sqlx::query("DELETE FROM rules WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(tx.conn())
        .await?;
    if kind != "event" {
        rules_changed(tx, org_id, &policies).await?;
    }
    Ok(Deleted::Yes)
}

/// The rules of an organization (or the one with id `only`), rank order.
pub(crate) async fn list_rules(
    conn: &mut AnyConnection,
    org_id: i64,
    only: Option<i64>,
) -> Result<Vec<RuleRecord>, sqlx::Error> {
    let mut sql = "SELECT id, name, rank, enabled, bundle, body_json, created_ms, created_by \
                   FROM rules WHERE org_id = $1"
        .to_owned();
    if only.is_some() {
        sql.push_str(" AND id = $2");
    }
    sql.push_str(" ORDER BY rank, id");
    let mut q = sqlx::query(&sql).bind(org_id);
    if let Some(id) = only {
        q = q.bind(id);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut policies: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut sql = "SELECT rp.rule_id, p.name FROM rule_policies rp \
                   JOIN rules r ON r.id = rp.rule_id JOIN policies p ON p.id = rp.policy_id \
                   WHERE r.org_id = $1"
        .to_owned();
    if only.is_some() {
        sql.push_str(" AND r.id = $2");
    }
    sql.push_str(" ORDER BY p.name");
    let mut q = sqlx::query(&sql).bind(org_id);
    if let Some(id) = only {
        q = q.bind(id);
    }
    let prow = q.fetch_all(&mut *conn).await?;
    for r in prow {
        policies
            .entry(r.try_get(0)?)
            .or_default()
            .push(r.try_get(1)?);
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let json: String = r.try_get(5)?;
        let body: RuleBody = match serde_json::from_str(&json) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(rule = id, error = %e, "stored rule is unreadable; skipped");
                continue;
            }
        };
        let enabled: i64 = r.try_get(3)?;
        out.push(RuleRecord {
            id: RuleId(id),
            name: r.try_get(1)?,
            policies: policies.remove(&id).unwrap_or_default(),
            rank: r.try_get(2)?,
            enabled: enabled != 0,
            bundle: r.try_get(4)?,
            body,
            created_ms: r.try_get(6)?,
            created_by: r.try_get(7)?,
        });
    }
    Ok(out)
}

/// An enabled rule that applies to a policy, as stored.
pub(crate) struct ActiveRule {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) body: RuleBody,
}

/// Enabled rules (event rules, or all the others) applying to `policy_id`
/// (any policy when `None`), in rank order. One statement, each rule with
/// the policies it is limited to, the policy filter applied here (no plan
/// depends on the database's statistics): read in two, a rule made or
/// limited between them was taken for one limited to no policy, and went
/// into the rule set of every policy.
pub(crate) async fn active_rules(
    conn: &mut AnyConnection,
    org_id: i64,
    policy_id: Option<i64>,
    event_rules: bool,
) -> Result<Vec<ActiveRule>, sqlx::Error> {
    let kind_filter = if event_rules {
        "r.kind = 'event'"
    } else {
        "r.kind <> 'event'"
    };
    let sql = format!(
        "SELECT r.id, r.name, r.body_json, rp.policy_id FROM rules r \
         LEFT JOIN rule_policies rp ON rp.rule_id = r.id \
         WHERE r.org_id = $1 AND r.enabled = 1 AND {kind_filter} \
         ORDER BY r.rank, r.id"
    );
    // (rule, name, body, the policies it is limited to), in rank order.
    let mut rows: Vec<(i64, String, String, Vec<i64>)> = Vec::new();
    for r in sqlx::query(&sql).bind(org_id).fetch_all(conn).await? {
        let id: i64 = r.try_get(0)?;
        let limit: Option<i64> = r.try_get(3)?;
        match rows.last_mut() {
            Some(last) if last.0 == id => last.3.extend(limit),
            _ => rows.push((
                id,
                r.try_get(1)?,
                r.try_get(2)?,
                limit.into_iter().collect(),
            )),
        }
    }
    let mut out = Vec::new();
    for (id, name, json, limits) in rows {
        if policy_id.is_some_and(|p| !limits.is_empty() && !limits.contains(&p)) {
            continue;
        }
        match serde_json::from_str::<RuleBody>(&json) {
            Ok(body) => out.push(ActiveRule { id, name, body }),
            Err(e) => tracing::warn!(rule = id, error = %e, "stored rule is unreadable; skipped"),
        }
    }
    Ok(out)
}

/// The rule set of a computer in `policy_id` (see the module documentation).
pub(crate) async fn rule_set(
    conn: &mut AnyConnection,
    org_id: i64,
    policy_id: i64,
) -> Result<RuleSet, sqlx::Error> {
    let mut set = RuleSet::default();
    for rule in active_rules(&mut *conn, org_id, Some(policy_id), false).await? {
        let id = RuleId(rule.id);
        match rule.body {
            ref b @ RuleBody::Custom { .. } => set.custom.extend(custom_rule(id, &rule.name, b)),
            ref b @ RuleBody::Reputation { .. } => set.reputation.extend(reputation_rule(id, b)),
            ref b @ RuleBody::Folder { .. } => set.folders.extend(folder_rule(id, b)),
            RuleBody::TrustedDirectory { dir, .. } => set
                .trusted_change
                .push(TrustedChange::TrustedDirectory { id, dir }),
            RuleBody::TrustedUser { user } => set
                .trusted_change
                .push(TrustedChange::TrustedUser { id, user }),
            RuleBody::Updater {
                programs,
                hashes,
                package_manager,
            } => set.trusted_change.push(TrustedChange::Updater {
                id,
                name: rule.name,
                programs,
                hashes,
                package_manager,
            }),
            RuleBody::Event { .. } => {}
        }
    }
    let rows = sqlx::query(
        "SELECT publisher, scope_kind, state FROM publisher_states \
         WHERE org_id = $1 AND (scope_kind = 'global' OR scope_id = $2) \
         ORDER BY publisher, scope_kind",
    )
    .bind(org_id)
    .bind(policy_id)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let kind: String = r.try_get(1)?;
        set.publishers.push(PublisherState {
            name: r.try_get(0)?,
            state: crate::store::parse_state(&r.try_get::<String, _>(2)?)?,
            scope: if kind == "global" {
                ScopeKind::Global
            } else {
                ScopeKind::Policy
            },
        });
    }
    let rows = sqlx::query(
        "SELECT name, trust FROM publishers WHERE org_id = $1 AND trust IS NOT NULL ORDER BY name",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        set.publisher_trust
            .push((r.try_get(0)?, parse_trust(&r.try_get::<String, _>(1)?)?));
    }
    Ok(set)
}

// ---------------------------------------------------------------------------
// Publishers

/// Insert a publisher if absent.
pub(crate) async fn ensure_publisher(
    conn: &mut AnyConnection,
    org_id: i64,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO publishers (org_id, name, trust, created_ms) VALUES ($1, $2, NULL, $3) \
         ON CONFLICT (org_id, name) DO NOTHING",
    )
    .bind(org_id)
    .bind(name)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Set (or, with `unapproved`, clear) a publisher's state for all computers
/// (`policy_id` None) or one policy, and log the configuration change.
pub(crate) async fn write_publisher_state(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    name: &str,
    policy_id: Option<i64>,
    state: FileState,
    by: &str,
) -> Result<(), sqlx::Error> {
    ensure_publisher(tx.conn(), org_id, name).await?;
    let (kind, scope_id) = match policy_id {
        Some(p) => ("policy", p),
        None => ("global", 0),
    };
    match state {
        FileState::Unapproved => {
            sqlx::query(
                "DELETE FROM publisher_states WHERE org_id = $1 AND publisher = $2 \
                 AND scope_kind = $3 AND scope_id = $4",
            )
            .bind(org_id)
            .bind(name)
            .bind(kind)
            .bind(scope_id)
            .execute(tx.conn())
            .await?;
        }
        s => {
            sqlx::query(
                "INSERT INTO publisher_states (org_id, publisher, scope_kind, scope_id, state, \
                   updated_ms, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (org_id, publisher, scope_kind, scope_id) DO UPDATE SET \
                   state = excluded.state, updated_ms = excluded.updated_ms, \
                   updated_by = excluded.updated_by",
            )
            .bind(org_id)
            .bind(name)
            .bind(kind)
            .bind(scope_id)
            .bind(s.as_str())
            .bind(now_ms())
            .bind(by)
            .execute(tx.conn())
            .await?;
        }
    }
    let policies: Vec<i64> = policy_id.into_iter().collect();
    rules_changed(tx, org_id, &policies).await
}

// ---------------------------------------------------------------------------
// Bundles

/// A rule of a bundle.
pub(crate) struct BundleRule {
    pub(crate) name: &'static str,
    /// Ranked before every other rule when enabled.
    pub(crate) first: bool,
    pub(crate) body: RuleBody,
}

/// A built-in bundle.
pub(crate) struct Bundle {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) rules: Vec<BundleRule>,
    /// Publishers approved for all computers while the bundle is enabled.
    pub(crate) approved_publishers: &'static [&'static str],
}

impl Bundle {
    /// The `updated_by` of what the bundle sets.
    pub(crate) fn author(&self) -> String {
        format!("bundle:{}", self.name)
    }
}

fn pattern(s: &str) -> PathPattern {
    // Constant patterns, checked by the unit test below.
    PathPattern::parse(s).expect("built-in pattern")
}

/// The bundles that ship with Palisade.
pub(crate) fn builtin_bundles() -> Vec<Bundle> {
    vec![
        Bundle {
            name: "debian-packages",
            description: "Debian package management as trusted change: dpkg, apt, apt-get and \
                          unattended-upgrade are approved updaters (what they write is approved \
                          on the computer), dpkg vouches for what its database records (a file \
                          whose content matches the checksum its package recorded is approved), \
                          and the publisher \"Debian\" is approved for all computers.",
            rules: vec![BundleRule {
                name: "dpkg",
                first: false,
                body: RuleBody::Updater {
                    programs: ["dpkg", "apt", "apt-get", "unattended-upgrade"]
                        .map(String::from)
                        .to_vec(),
                    hashes: Vec::new(),
                    package_manager: true,
                },
            }],
            approved_publishers: &["Debian"],
        },
        Bundle {
            name: "harden-world-writable",
            description: "Hardening: blocks execution of anything under the world-writable \
                          directories /tmp, /var/tmp and /dev/shm, whatever its approval; the \
                          rule is ranked before every other custom rule.",
            rules: vec![BundleRule {
                name: "block execution from world-writable directories",
                first: true,
                body: RuleBody::Custom {
                    process: None,
                    user: None,
                    operations: Operations {
                        execute: true,
                        write: false,
                    },
                    paths: vec![
                        pattern("/tmp/**"),
                        pattern("/var/tmp/**"),
                        pattern("/dev/shm/**"),
                    ],
                    action: RuleAction::Block,
                    conditions: Default::default(),
                },
            }],
            approved_publishers: &[],
        },
    ]
}

/// The built-in bundles with their state in the organization.
pub(crate) async fn bundle_infos(
    conn: &mut AnyConnection,
    org_id: i64,
) -> Result<Vec<BundleInfo>, sqlx::Error> {
    let rows = sqlx::query("SELECT name, enabled FROM bundles WHERE org_id = $1")
        .bind(org_id)
        .fetch_all(conn)
        .await?;
    let mut enabled: BTreeMap<String, bool> = BTreeMap::new();
    for r in rows {
        enabled.insert(r.try_get(0)?, r.try_get::<i64, _>(1)? != 0);
    }
    Ok(builtin_bundles()
        .into_iter()
        .map(|b| BundleInfo {
            name: b.name.to_owned(),
            description: b.description.to_owned(),
            enabled: enabled.get(b.name).copied().unwrap_or(false),
            rules: b.rules.iter().map(|r| r.name.to_owned()).collect(),
        })
        .collect())
}

/// Enable or disable a bundle (see the module documentation), logging the
/// configuration change for every policy.
pub(crate) async fn set_bundle(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    bundle: &Bundle,
    enabled: bool,
    by: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO bundles (org_id, name, enabled, updated_ms, updated_by) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, name) DO UPDATE SET \
           enabled = excluded.enabled, updated_ms = excluded.updated_ms, \
           updated_by = excluded.updated_by",
    )
    .bind(org_id)
    .bind(bundle.name)
    .bind(i64::from(enabled))
    .bind(now)
    .bind(by)
    .execute(tx.conn())
    .await?;
    let author = bundle.author();
    if enabled {
        for rule in &bundle.rules {
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM rules WHERE org_id = $1 AND bundle = $2 AND name = $3",
            )
            .bind(org_id)
            .bind(bundle.name)
            .bind(rule.name)
            .fetch_optional(tx.conn())
            .await?;
            let rank = if rule.first {
                let min: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(rank) FROM rules WHERE org_id = $1 \
                     AND (bundle IS NULL OR bundle <> $2)",
                )
                .bind(org_id)
                .bind(bundle.name)
                .fetch_one(tx.conn())
                .await?;
                Some(min.map_or(0, |m| (m - 1).max(-MAX_RANK)))
            } else {
                None
            };
            match existing {
                Some(id) => {
                    let json = serde_json::to_string(&rule.body).map_err(decode)?;
                    sqlx::query(
                        "UPDATE rules SET enabled = 1, body_json = $1, kind = $2, \
                           rank = COALESCE($3, rank) WHERE id = $4",
                    )
                    .bind(json)
                    .bind(kind_of(&rule.body))
                    .bind(rank)
                    .bind(id)
                    .execute(tx.conn())
                    .await?;
                }
                None => {
                    insert_rule(
                        tx,
                        org_id,
                        rule.name,
                        rank,
                        Some(bundle.name),
                        &rule.body,
                        &[],
                        &author,
                    )
                    .await?;
                }
            }
        }
        for p in bundle.approved_publishers {
            ensure_publisher(tx.conn(), org_id, p).await?;
            // An admin's own global state for the publisher stays.
            sqlx::query(
                "INSERT INTO publisher_states (org_id, publisher, scope_kind, scope_id, state, \
                   updated_ms, updated_by) VALUES ($1, $2, 'global', 0, 'approved', $3, $4) \
                 ON CONFLICT (org_id, publisher, scope_kind, scope_id) DO NOTHING",
            )
            .bind(org_id)
            .bind(*p)
            .bind(now)
            .bind(&author)
            .execute(tx.conn())
            .await?;
        }
    } else {
        sqlx::query("UPDATE rules SET enabled = 0 WHERE org_id = $1 AND bundle = $2")
            .bind(org_id)
            .bind(bundle.name)
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "DELETE FROM publisher_states WHERE org_id = $1 AND scope_kind = 'global' \
             AND updated_by = $2",
        )
        .bind(org_id)
        .bind(&author)
        .execute(tx.conn())
        .await?;
    }
    rules_changed(tx, org_id, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_valid_rules() {
        let names: Vec<_> = builtin_bundles().iter().map(|b| b.name).collect();
        assert_eq!(names, ["debian-packages", "harden-world-writable"]);
        for b in builtin_bundles() {
            assert!(!b.description.is_empty());
            for r in b.rules {
                let req = CreateRule {
                    name: r.name.to_owned(),
                    policies: Vec::new(),
                    rank: None,
                    body: r.body,
                };
                assert!(validate(&req).is_ok(), "{}", r.name);
            }
        }
    }

    #[test]
    fn a_pattern_ending_with_a_slash_is_refused() {
        let rule = |path: &str| CreateRule {
            name: "r".into(),
            policies: Vec::new(),
            rank: None,
            body: RuleBody::Custom {
                process: None,
                user: None,
                operations: Operations {
                    execute: true,
                    write: false,
                },
                paths: vec![PathPattern::parse(path).unwrap()],
                action: RuleAction::Allow,
                conditions: Default::default(),
            },
        };
        assert!(validate(&rule("/opt/app/**")).is_ok());
        assert!(validate(&rule("/opt/app/tool")).is_ok());
        let e = validate(&rule("/opt/app/")).unwrap_err();
        let text = format!("{e:?}");
        assert!(text.contains("/opt/app/**"), "{text}");
    }

    #[test]
    fn dirs_and_addresses() {
        for ok in ["/srv/dist", "/opt/a b/c"] {
            assert!(check_dir("d", ok).is_ok(), "{ok}");
        }
        for bad in ["", "srv", "/", "/srv/", "/a//b", "/a/../b", "/a/./b"] {
            assert!(check_dir("d", bad).is_err(), "{bad}");
        }
        assert!(valid_host_port("127.0.0.1:514"));
        assert!(valid_host_port("[::1]:514"));
        assert!(valid_host_port("logs.example.com:6514"));
        assert!(!valid_host_port("logs.example.com"));
        assert!(!valid_host_port("logs:0"));
        assert!(valid_webhook_url("https://hooks.example.com/x?y=1"));
        assert!(valid_webhook_url("http://127.0.0.1:8080/"));
        assert!(!valid_webhook_url("ftp://x/"));
        assert!(!valid_webhook_url("/relative"));
    }
}
