//! Event rules: evaluated by the service, never by agents.
//!
//! Two triggers feed them, both read from the database off the request
//! path by one worker task per replica:
//!
//! * `event`: every event stored by `POST /agent/v1/events` (the `events`
//!   table);
//! * `file_seen`: every hash seen on a computer for the first time (a new
//!   (computer, hash) pair in the catalog), from lookups (by the catalog
//!   recorder), inventory batches and local approvals. While the
//!   organization has an enabled `file_seen` rule, the writer that records
//!   such a sighting also stores it in `event_rule_sightings`, in the same
//!   transaction ([`queue_file_seen`]).
//!
//! # Cursors, fairness, backlogs
//!
//! `event_rule_cursors` holds, per organization, the id of the last event
//! and of the last first sighting evaluated. Both ids come from a counter
//! row locked until commit, so they commit in id order and a cursor never
//! passes one that commits late (see [`crate::db`]). Each pass of the
//! worker visits every organization with triggers past its cursors, in
//! turn, and evaluates at most [`BATCH`] events and [`BATCH`] sightings of
//! each: an organization (or a compromised agent) that floods events
//! delays the others by one batch per pass, never more. The worker is woken
//! when events are stored (on any replica, through the PostgreSQL listener)
//! and when this replica stores sightings ([`EventRules::wake`]), and looks
//! anyway every [`POLL`].
//!
//! A backlog too large to be useful is skipped, counted and logged per
//! organization (`event rules: backlog skipped`): triggers beyond the
//! newest [`MAX_BACKLOG`] of an organization, and triggers stored more than
//! [`MAX_AGE`] ago. Triggers of an organization without rules for them
//! are passed over (a rule created later does not fire on older events).
//!
//! A cursor moves only after its batch was evaluated, in a transaction that
//! also deletes the sightings evaluated: a crash or a lost lease in between
//! evaluates the batch again, so a rule may fire twice for one trigger
//! (duplicate alerts; file states and moves are idempotent), never zero
//! times. Replicas share the work through a lease on the cursor row
//! ([`LEASE`]): one evaluates an organization's batch at a time.
//!
//! # Evaluation
//!
//! Each enabled event rule whose policies (empty: all) include the
//! computer's is matched against the filter: trigger, event kinds,
//! operations, trust range (the reputation of the file's hash; a bound
//! never matches a file without a rating), path pattern, computer names and
//! policy names (every list: any when empty). A match is a *firing*,
//! logged at `info` (`event rule fired`), and runs the rule's actions in
//! order:
//!
//! * `set_global_state` / `set_local_state`: the same code path as the admin
//!   API (`updated_by` = `event-rule:<id>`), so the change is pushed to the
//!   agents concerned; skipped for events without a hash. Repeated within
//!   one batch (the same rule, file and computer), they are applied once.
//! * `move_computer`: as the admin API does (once per rule and computer in
//!   a batch).
//! * `webhook`, `syslog`: an alert (see [`crate::notify`]) whose JSON is an
//!   [`AlertBody`].
//!
//! No action creates an event or a catalog sighting, so rules cannot
//! trigger one another or themselves.
use crate::db::{bump_counter, now_ms, rows_per_statement, values_placeholders, Db};
use crate::notify::{Alert, Notifier, Severity, Target};
use crate::ops::{move_computer, write_automatic_file_state, AUTOMATIC_PREFIX};
use crate::rules::active_rules;
use crate::store::{policy_by_name, trust_for, Sighting};
use palisade_api::admin::{EventAction, EventFilter, EventTrigger, RuleBody};
use palisade_core::{EventKind, FileEvent, Operation, Scope, Sha256};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Most events (and, apart, first sightings) of one organization evaluated
/// in one pass.
pub(crate) const BATCH: i64 = 256;
/// Triggers of one organization beyond its newest this many are skipped.
pub(crate) const MAX_BACKLOG: i64 = 10_000;
/// Triggers stored longer ago than this are skipped.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(3600);
/// How long a replica holds an organization while it evaluates a batch.
pub(crate) const LEASE: Duration = Duration::from_secs(60);
/// The worker looks for triggers at least this often.
pub(crate) const POLL: Duration = Duration::from_secs(2);

/// The handle held by the writers of first sightings.
#[derive(Clone)]
pub(crate) struct EventRules {
    wake: Arc<Notify>,
}

impl EventRules {
    /// The handle and its worker, which runs until `stop` turns true (after
    /// finishing the batch at hand; what is left waits in the database).
    pub(crate) fn new(
        db: Db,
        notifier: Notifier,
        stop: watch::Receiver<bool>,
    ) -> (EventRules, impl std::future::Future<Output = ()>) {
        let wake = Arc::new(Notify::new());
        let worker = Worker {
            db,
            notifier,
            me: hex::encode(rand::random::<[u8; 8]>()),
            skipped: AtomicU64::new(0),
        };
        (
            EventRules {
                wake: Arc::clone(&wake),
            },
            worker.run(wake, stop),
        )
    }

    /// First sightings were committed: look at them now rather than at the
    /// next poll.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Store first sightings for the organization's `file_seen` rules, in the
/// writer's transaction (before it writes catalog rows: the `sightings`
/// counter row is locked until commit).
pub(crate) async fn queue_file_seen(
    conn: &mut AnyConnection,
    org_id: i64,
    seen: &[Sighting],
) -> Result<(), sqlx::Error> {
    let seen: Vec<&Sighting> = seen.iter().filter(|s| s.path.is_some()).collect();
    if seen.is_empty() {
        return Ok(());
    }
    let n = seen.len() as i64;
    let mut id = bump_counter(&mut *conn, "sightings", n).await? - n + 1;
    let now = now_ms();
    for chunk in seen.chunks(rows_per_statement(7)) {
        let sql = format!(
            "INSERT INTO event_rule_sightings (id, org_id, computer_id, sha256, path, operation, \
               stored_ms) VALUES {}",
            values_placeholders(chunk.len(), 7, 1)
        );
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(id)
                .bind(org_id)
                .bind(s.computer_id)
                .bind(s.sha256.to_hex())
                .bind(s.path.as_deref().unwrap_or_default())
                .bind(s.operation.map(Operation::as_str))
                .bind(now);
            id += 1;
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Whether the organization has an enabled `file_seen` rule (writers then
/// look for new (computer, hash) pairs before recording sightings).
pub(crate) async fn wants_file_seen(
    conn: &mut AnyConnection,
    org_id: i64,
) -> Result<bool, sqlx::Error> {
    Ok(!load(conn, org_id, EventTrigger::FileSeen).await?.is_empty())
}

/// An enabled event rule.
struct Rule {
    id: i64,
    name: String,
    policy_ids: HashSet<i64>,
    filter: EventFilter,
    actions: Vec<EventAction>,
}

async fn load(
    conn: &mut AnyConnection,
    org_id: i64,
    trigger: EventTrigger,
) -> Result<Vec<Rule>, sqlx::Error> {
    let mut rules = Vec::new();
    for r in active_rules(&mut *conn, org_id, None, true).await? {
        if let RuleBody::Event { filter, actions } = r.body {
            if filter.trigger == trigger {
                rules.push(Rule {
                    id: r.id,
                    name: r.name,
                    policy_ids: HashSet::new(),
                    filter,
                    actions,
                });
            }
        }
    }
    if rules.is_empty() {
        return Ok(rules);
    }
    let rows = sqlx::query(
        "SELECT rp.rule_id, rp.policy_id FROM rule_policies rp JOIN rules r ON r.id = rp.rule_id \
         WHERE r.org_id = $1 AND r.kind = 'event'",
    )
    .bind(org_id)
    .fetch_all(conn)
    .await?;
    for row in rows {
        let (rule, policy): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(r) = rules.iter_mut().find(|r| r.id == rule) {
            r.policy_ids.insert(policy);
        }
    }
    Ok(rules)
}

/// The JSON document a webhook receives (and syslog carries as its message).
#[derive(Debug, serde::Serialize)]
pub(crate) struct AlertBody<'a> {
    /// The rule that fired.
    pub(crate) rule: AlertRule<'a>,
    /// `event` or `file_seen`.
    pub(crate) trigger: EventTrigger,
    pub(crate) organization: &'a str,
    pub(crate) computer: &'a str,
    pub(crate) policy: &'a str,
    pub(crate) sha256: Option<Sha256>,
    pub(crate) path: &'a str,
    pub(crate) operation: Option<Operation>,
    /// The hash's reputation trust rating.
    pub(crate) trust: Option<u8>,
    /// The stored event (trigger `event`).
    pub(crate) event_id: Option<i64>,
    pub(crate) event: Option<&'a FileEvent>,
    /// When the service evaluated the rule (ms since the epoch).
    pub(crate) time_ms: i64,
}

/// A rule, named in an alert.
#[derive(Debug, serde::Serialize)]
pub(crate) struct AlertRule<'a> {
    pub(crate) id: i64,
    pub(crate) name: &'a str,
}

/// One thing the rules are matched against.
struct Item {
    computer_id: i64,
    sha256: Option<Sha256>,
    path: String,
    kind: Option<EventKind>,
    operation: Option<Operation>,
    event: Option<(i64, FileEvent)>,
}

struct Computer {
    name: String,
    policy_id: i64,
    policy: String,
}

/// The worker (see the module documentation).
struct Worker {
    db: Db,
    notifier: Notifier,
    /// This worker's name in leases.
    me: String,
    /// Triggers skipped since start (backlog too large or too old).
    skipped: AtomicU64,
}

/// Where one kind of trigger is stored.
#[derive(Clone, Copy)]
struct Source {
    trigger: EventTrigger,
    table: &'static str,
    /// The column holding when the trigger was stored.
    stored: &'static str,
}

const EVENTS: Source = Source {
    trigger: EventTrigger::Event,
    table: "events",
    stored: "received_ms",
};

const SIGHTINGS: Source = Source {
    trigger: EventTrigger::FileSeen,
    table: "event_rule_sightings",
    stored: "stored_ms",
};

impl Worker {
    async fn run(self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let mut stored = self.db.events_watch();
        while !*stop.borrow() {
            let more = match self.pass(&stop).await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "event rules: evaluation failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    false
                }
            };
            if more {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = stored.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                r = stop.changed() => if r.is_err() { break },
            }
        }
        let skipped = self.skipped.load(Ordering::Relaxed);
        if skipped > 0 {
            tracing::warn!(skipped, "event rule triggers skipped while serving");
        }
    }

    /// Evaluate one batch of each organization with triggers waiting;
    /// whether some organization has more.
    async fn pass(&self, stop: &watch::Receiver<bool>) -> Result<bool, sqlx::Error> {
        let missing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM orgs WHERE id NOT IN (SELECT org_id FROM event_rule_cursors)",
        )
        .fetch_one(self.db.pool())
        .await?;
        if missing > 0 {
            // Organizations created since the migration: no event before.
            let mut tx = self.db.write().await?;
            sqlx::query(
                "INSERT INTO event_rule_cursors (org_id, event_id, sighting_id) \
                 SELECT id, 0, 0 FROM orgs WHERE id NOT IN (SELECT org_id FROM event_rule_cursors) \
                 ON CONFLICT (org_id) DO NOTHING",
            )
            .execute(tx.conn())
            .await?;
            tx.commit_unaudited().await?;
        }
        let waiting: Vec<i64> = sqlx::query_scalar(
            "SELECT c.org_id FROM event_rule_cursors c \
             WHERE EXISTS (SELECT 1 FROM events e WHERE e.org_id = c.org_id AND e.id > c.event_id) \
                OR EXISTS (SELECT 1 FROM event_rule_sightings s \
                           WHERE s.org_id = c.org_id AND s.id > c.sighting_id) \
             ORDER BY c.org_id",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut more = false;
        for org_id in waiting {
            if *stop.borrow() {
                break;
            }
            more |= self.org_batch(org_id).await?;
        }
        Ok(more)
    }

    /// Take the organization's lease, evaluate one batch of each source and
    /// move its cursors; whether it has more waiting.
    async fn org_batch(&self, org_id: i64) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let mut tx = self.db.write().await?;
        let claimed: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE event_rule_cursors SET lease_until_ms = $1, leased_by = $2 \
             WHERE org_id = $3 AND (lease_until_ms < $4 OR leased_by = $2) \
             RETURNING event_id, sighting_id",
        )
        .bind(now + LEASE.as_millis() as i64)
        .bind(self.me.as_str())
        .bind(org_id)
        .bind(now)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit_unaudited().await?;
        // Another replica is at it.
        let Some((event_id, sighting_id)) = claimed else {
            return Ok(false);
        };
        let evaluated = async {
            let events = self.source_batch(org_id, EVENTS, event_id).await?;
            let sightings = self.source_batch(org_id, SIGHTINGS, sighting_id).await?;
            Ok::<_, sqlx::Error>((events, sightings))
        }
        .await;
        let mut tx = self.db.write().await?;
        let ((event_id, more_events), (sighting_id, more_sightings)) = match evaluated {
            Ok(done) => done,
            Err(e) => {
                // Give the organization back as it was (tried again next pass).
                sqlx::query(
                    "UPDATE event_rule_cursors SET lease_until_ms = 0, leased_by = NULL \
                     WHERE org_id = $1 AND leased_by = $2",
                )
                .bind(org_id)
                .bind(self.me.as_str())
                .execute(tx.conn())
                .await?;
                tx.commit_unaudited().await?;
                return Err(e);
            }
        };
        let moved = sqlx::query(
            "UPDATE event_rule_cursors SET event_id = $1, sighting_id = $2, lease_until_ms = 0, \
               leased_by = NULL WHERE org_id = $3 AND leased_by = $4",
        )
        .bind(event_id)
        .bind(sighting_id)
        .bind(org_id)
        .bind(self.me.as_str())
        .execute(tx.conn())
        .await?
        .rows_affected();
        if moved == 0 {
            tracing::warn!(
                org = org_id,
                "event rules: lease lost while evaluating; another replica evaluates the batch again"
            );
            return Ok(false);
        }
        sqlx::query("DELETE FROM event_rule_sightings WHERE org_id = $1 AND id <= $2")
            .bind(org_id)
            .bind(sighting_id)
            .execute(tx.conn())
            .await?;
        tx.commit_unaudited().await?;
        Ok(more_events || more_sightings)
    }

    /// Evaluate up to [`BATCH`] triggers of `source` past `cursor`; the new
    /// cursor and whether more are waiting.
    async fn source_batch(
        &self,
        org_id: i64,
        source: Source,
        cursor: i64,
    ) -> Result<(i64, bool), sqlx::Error> {
        let Source {
            trigger,
            table,
            stored,
        } = source;
        let mut conn = self.db.pool().acquire().await?;
        let rules = load(&mut conn, org_id, trigger).await?;
        if rules.is_empty() {
            let sql = format!("SELECT MAX(id) FROM {table} WHERE org_id = $1 AND id > $2");
            let last: Option<i64> = sqlx::query_scalar(&sql)
                .bind(org_id)
                .bind(cursor)
                .fetch_one(&mut *conn)
                .await?;
            return Ok((last.unwrap_or(cursor).max(cursor), false));
        }
        let mut cursor = cursor;
        let sql = format!(
            "SELECT id FROM {table} WHERE org_id = $1 AND id > $2 ORDER BY id DESC LIMIT 1 OFFSET $3"
        );
        let cut: Option<i64> = sqlx::query_scalar(&sql)
            .bind(org_id)
            .bind(cursor)
            .bind(MAX_BACKLOG)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(cut) = cut {
            let sql =
                format!("SELECT COUNT(*) FROM {table} WHERE org_id = $1 AND id > $2 AND id <= $3");
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(org_id)
                .bind(cursor)
                .bind(cut)
                .fetch_one(&mut *conn)
                .await?;
            self.skip(org_id, trigger, n, "more than MAX_BACKLOG waiting");
            cursor = cut;
        }
        let columns = match trigger {
            EventTrigger::Event => "event_json, NULL, NULL, NULL",
            EventTrigger::FileSeen => "NULL, sha256, path, operation",
        };
        let sql = format!(
            "SELECT id, computer_id, {stored}, {columns} FROM {table} \
             WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id)
            .bind(cursor)
            .bind(BATCH)
            .fetch_all(&mut *conn)
            .await?;
        drop(conn);
        let more = rows.len() as i64 == BATCH;
        let oldest = now_ms() - MAX_AGE.as_millis() as i64;
        let (mut old, mut unreadable) = (0i64, 0i64);
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get(0)?;
            cursor = cursor.max(id);
            if row.try_get::<i64, _>(2)? < oldest {
                old += 1;
                continue;
            }
            match item(trigger, id, row) {
                Some(i) => items.push(i),
                None => unreadable += 1,
            }
        }
        self.skip(org_id, trigger, old, "stored more than MAX_AGE ago");
        self.skip(org_id, trigger, unreadable, "unreadable");
        if !items.is_empty() {
            evaluate(&self.db, &self.notifier, org_id, trigger, &rules, &items).await?;
        }
        Ok((cursor, more))
    }

    /// Count and log triggers passed over.
    fn skip(&self, org_id: i64, trigger: EventTrigger, n: i64, reason: &'static str) {
        if n <= 0 {
            return;
        }
        let total = self.skipped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        tracing::warn!(
            org = org_id,
            trigger = ?trigger,
            skipped = n,
            total,
            reason,
            max_backlog = MAX_BACKLOG,
            max_age_secs = MAX_AGE.as_secs(),
            "event rules: backlog skipped"
        );
    }
}

/// A stored trigger as the rules see it (`None`: unreadable).
fn item(trigger: EventTrigger, id: i64, row: &sqlx::any::AnyRow) -> Option<Item> {
    let computer_id: i64 = row.try_get(1).ok()?;
    match trigger {
        EventTrigger::Event => {
            let json: String = row.try_get(3).ok()?;
            let e: FileEvent = serde_json::from_str(&json).ok()?;
            Some(Item {
                computer_id,
                sha256: e.sha256,
                path: e.path.clone(),
                kind: Some(e.kind),
                operation: Some(e.operation),
                event: Some((id, e)),
            })
        }
        EventTrigger::FileSeen => {
            let sha: String = row.try_get(4).ok()?;
            let operation: Option<String> = row.try_get(6).ok()?;
            Some(Item {
                computer_id,
                sha256: Some(Sha256::parse(&sha).ok()?),
                path: row.try_get(5).ok()?,
                kind: None,
                operation: match operation {
                    Some(o) => Some(serde_json::from_value(serde_json::Value::String(o)).ok()?),
                    None => None,
                },
                event: None,
            })
        }
    }
}

/// Match `items` of one organization against its `rules` and act.
async fn evaluate(
    db: &Db,
    notifier: &Notifier,
    org_id: i64,
    kind: EventTrigger,
    rules: &[Rule],
    items: &[Item],
) -> Result<(), sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let org: String = sqlx::query_scalar("SELECT name FROM orgs WHERE id = $1")
        .bind(org_id)
        .fetch_one(&mut *conn)
        .await?;
    let ids: BTreeSet<i64> = items.iter().map(|i| i.computer_id).collect();
    let mut computers: HashMap<i64, Computer> = HashMap::new();
    for id in ids {
        let row = sqlx::query(
            "SELECT c.name, c.policy_id, p.name FROM computers c \
             JOIN policies p ON p.id = c.policy_id WHERE c.id = $1 AND c.org_id = $2",
        )
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(r) = row {
            computers.insert(
                id,
                Computer {
                    name: r.try_get(0)?,
                    policy_id: r.try_get(1)?,
                    policy: r.try_get(2)?,
                },
            );
        }
    }
    let hashes: Vec<Sha256> = items
        .iter()
        .filter_map(|i| i.sha256)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let trust = trust_for(&mut conn, org_id, &hashes).await?;
    drop(conn);

    // (rule, action index, hash, computer) already applied in this batch.
    let mut applied: HashSet<(i64, usize, Option<Sha256>, i64)> = HashSet::new();
    let now = crate::db::now_ms();
    for item in items {
        let Some(computer) = computers.get(&item.computer_id) else {
            continue;
        };
        let t = item.sha256.and_then(|h| trust.get(&h).copied());
        for rule in rules {
            if !matches(rule, item, computer, t) {
                continue;
            }
            tracing::info!(
                rule = rule.id,
                name = ?rule.name,
                trigger = ?kind,
                computer = %computer.name,
                sha256 = ?item.sha256.map(|h| h.to_hex()),
                path = ?item.path,
                "event rule fired"
            );
            let body = AlertBody {
                rule: AlertRule {
                    id: rule.id,
                    name: &rule.name,
                },
                trigger: kind,
                organization: &org,
                computer: &computer.name,
                policy: &computer.policy,
                sha256: item.sha256,
                path: &item.path,
                operation: item.operation,
                trust: t,
                event_id: item.event.as_ref().map(|e| e.0),
                event: item.event.as_ref().map(|e| &e.1),
                time_ms: now,
            };
            for (ai, action) in rule.actions.iter().enumerate() {
                let key = match action {
                    EventAction::MoveComputer { .. } => (rule.id, ai, None, item.computer_id),
                    _ => (rule.id, ai, item.sha256, item.computer_id),
                };
                let once = matches!(
                    action,
                    EventAction::SetGlobalState { .. }
                        | EventAction::SetLocalState { .. }
                        | EventAction::MoveComputer { .. }
                );
                if once && !applied.insert(key) {
                    continue;
                }
                if let Err(e) = act(db, notifier, org_id, rule, item, &body, action).await {
                    tracing::warn!(rule = rule.id, error = %e, "event rule action failed");
                }
            }
        }
    }
    Ok(())
}

fn matches(rule: &Rule, item: &Item, computer: &Computer, trust: Option<u8>) -> bool {
    let f = &rule.filter;
    (rule.policy_ids.is_empty() || rule.policy_ids.contains(&computer.policy_id))
        && (f.kinds.is_empty() || item.kind.is_some_and(|k| f.kinds.contains(&k)))
        && (f.operations.is_empty() || item.operation.is_some_and(|o| f.operations.contains(&o)))
        && f.max_trust.is_none_or(|m| trust.is_some_and(|t| t <= m))
        && f.min_trust.is_none_or(|m| trust.is_some_and(|t| t >= m))
        && f.path.as_ref().is_none_or(|p| p.matches(&item.path))
        && (f.computers.is_empty() || f.computers.contains(&computer.name))
        && (f.policies.is_empty() || f.policies.contains(&computer.policy))
}

async fn act(
    db: &Db,
    notifier: &Notifier,
    org_id: i64,
    rule: &Rule,
    item: &Item,
    body: &AlertBody<'_>,
    action: &EventAction,
) -> Result<(), sqlx::Error> {
    let by = format!("{AUTOMATIC_PREFIX}{}", rule.id);
    match action {
        EventAction::SetGlobalState { state } | EventAction::SetLocalState { state } => {
            let Some(sha) = item.sha256 else {
                return Ok(());
            };
            let scope = match action {
                EventAction::SetGlobalState { .. } => Scope::Global,
                _ => Scope::Computer(palisade_core::ComputerId(item.computer_id)),
            };
            let mut tx = db.write().await?;
            if let Some(before) =
                write_automatic_file_state(&mut tx, org_id, sha, scope, *state, &by).await?
            {
                let (kind, _) = crate::store::scope_columns(scope);
                let entry = rule_audit(
                    org_id,
                    &by,
                    rule,
                    action,
                    format!("file {sha}"),
                    body,
                    (
                        before.map(|s| serde_json::json!({ "state": s, "scope": kind })),
                        Some(
                            serde_json::json!({ "state": state.to_string(), "scope": kind, "computer": (kind == "computer").then_some(body.computer) }),
                        ),
                    ),
                );
                crate::audit::append_in(tx.conn(), entry).await?;
                tx.commit().await?;
                tracing::info!(rule = rule.id, sha256 = %sha, state = %state, scope = ?scope.kind(), "event rule set a file state");
            } else {
                tracing::info!(rule = rule.id, sha256 = %sha, state = %state, scope = ?scope.kind(), "event rule left a file state as it was (set by an admin, a ban, or already so)");
            }
        }
        EventAction::MoveComputer { policy } => {
            let mut tx = db.write().await?;
            let Some(p) = policy_by_name(tx.conn(), org_id, policy.as_str()).await? else {
                tracing::warn!(rule = rule.id, policy = %policy, "event rule: no such policy; computer not moved");
                return Ok(());
            };
            if move_computer(&mut tx, org_id, item.computer_id, p.id).await? {
                let entry = rule_audit(
                    org_id,
                    &by,
                    rule,
                    action,
                    format!("computer {}", body.computer),
                    body,
                    (
                        Some(serde_json::json!({ "policy": body.policy })),
                        Some(serde_json::json!({ "policy": policy.as_str() })),
                    ),
                );
                crate::audit::append_in(tx.conn(), entry).await?;
                tx.commit().await?;
                tracing::info!(rule = rule.id, computer = %body.computer, policy = %policy, "event rule moved a computer");
            }
        }
        EventAction::Webhook { url } => notifier.send(Alert {
            target: Target::Webhook(url.clone()),
            rule_id: rule.id,
            severity: severity(item),
            body: serde_json::to_string(body).unwrap_or_default(),
        }),
        EventAction::Syslog { address } => notifier.send(Alert {
            target: Target::Syslog(address.clone()),
            rule_id: rule.id,
            severity: severity(item),
            body: serde_json::to_string(body).unwrap_or_default(),
        }),
    }
    Ok(())
}

/// The audit record of a change an event rule made: the rule is its actor,
/// the computer whose report set it off its source (the record says which
/// agent's word a change rests on).
fn rule_audit(
    org_id: i64,
    by: &str,
    rule: &Rule,
    action: &EventAction,
    object: String,
    body: &AlertBody<'_>,
    (before, after): (Option<serde_json::Value>, Option<serde_json::Value>),
) -> crate::audit::Entry {
    let what = match action {
        EventAction::SetGlobalState { .. } => "set_global_state",
        EventAction::SetLocalState { .. } => "set_local_state",
        EventAction::MoveComputer { .. } => "move_computer",
        EventAction::Webhook { .. } => "webhook",
        EventAction::Syslog { .. } => "syslog",
    };
    crate::audit::Entry {
        org_id,
        actor: by.to_owned(),
        action: format!("EVENT-RULE {what}"),
        object,
        source: format!("{:?} from computer {}", body.trigger, body.computer),
        allowed: true,
        reason: Some(format!("rule {:?}", rule.name)),
        before,
        after,
    }
}

fn severity(item: &Item) -> Severity {
    if item.kind == Some(EventKind::Blocked) {
        Severity::Warning
    } else {
        Severity::Notice
    }
}
