//! Event rules: evaluated by the service, never by agents.
//!
//! Two triggers feed them, both off the request path through a bounded
//! queue (a trigger that does not fit is dropped and counted) and one
//! worker task per replica:
//!
//! * `event`: every event newly stored by `POST /agent/v1/events`;
//! * `file_seen`: every hash seen on a computer for the first time (a new
//!   (computer, hash) pair in the catalog), from lookups (by the catalog
//!   recorder), inventory batches and local approvals.
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
use crate::db::Db;
use crate::notify::{Alert, Notifier, Severity, Target};
use crate::ops::{move_computer, write_file_state};
use crate::rules::active_rules;
use crate::store::{policy_by_name, trust_for, Sighting};
use palisade_api::admin::{EventAction, EventFilter, EventTrigger, RuleBody};
use palisade_core::{EventKind, FileEvent, Operation, Scope, Sha256};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Something that may fire event rules.
pub(crate) enum Trigger {
    Events {
        org_id: i64,
        computer_id: i64,
        /// (event id, event).
        events: Vec<(i64, FileEvent)>,
    },
    FileSeen {
        org_id: i64,
        seen: Vec<Sighting>,
    },
}

/// The sending half, held by handlers and the catalog recorder.
#[derive(Clone)]
pub(crate) struct EventRules {
    tx: mpsc::Sender<Trigger>,
    dropped: Arc<AtomicU64>,
}

impl EventRules {
    /// The queue and its worker (runs until every sender is dropped, after
    /// draining the queue).
    pub(crate) fn new(
        db: Db,
        notifier: Notifier,
        capacity: usize,
    ) -> (EventRules, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            EventRules {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            run(db, notifier, rx),
        )
    }

    fn send(&self, t: Trigger) {
        if self.tx.try_send(t).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "event rule queue full: triggers dropped so ingest stays fast"
                );
            }
        }
    }

    /// Newly stored events of one computer.
    pub(crate) fn events(&self, org_id: i64, computer_id: i64, events: Vec<(i64, FileEvent)>) {
        if !events.is_empty() {
            self.send(Trigger::Events {
                org_id,
                computer_id,
                events,
            });
        }
    }

    /// Hashes seen on computers for the first time.
    pub(crate) fn file_seen(&self, org_id: i64, seen: Vec<Sighting>) {
        if !seen.is_empty() {
            self.send(Trigger::FileSeen { org_id, seen });
        }
    }
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

async fn run(db: Db, notifier: Notifier, mut rx: mpsc::Receiver<Trigger>) {
    while let Some(t) = rx.recv().await {
        if let Err(e) = process(&db, &notifier, t).await {
            tracing::warn!(error = %e, "event rules: evaluation failed");
        }
    }
}

async fn process(db: &Db, notifier: &Notifier, trigger: Trigger) -> Result<(), sqlx::Error> {
    let (org_id, kind, items) = match trigger {
        Trigger::Events {
            org_id,
            computer_id,
            events,
        } => (
            org_id,
            EventTrigger::Event,
            events
                .into_iter()
                .map(|(id, e)| Item {
                    computer_id,
                    sha256: e.sha256,
                    path: e.path.clone(),
                    kind: Some(e.kind),
                    operation: Some(e.operation),
                    event: Some((id, e)),
                })
                .collect::<Vec<_>>(),
        ),
        Trigger::FileSeen { org_id, seen } => (
            org_id,
            EventTrigger::FileSeen,
            seen.into_iter()
                .map(|s| Item {
                    computer_id: s.computer_id,
                    sha256: Some(s.sha256),
                    path: s.path.unwrap_or_default(),
                    kind: None,
                    operation: s.operation,
                    event: None,
                })
                .collect(),
        ),
    };
    let mut conn = db.pool().acquire().await?;
    let rules = load(&mut conn, org_id, kind).await?;
    if rules.is_empty() || items.is_empty() {
        return Ok(());
    }
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
    for item in &items {
        let Some(computer) = computers.get(&item.computer_id) else {
            continue;
        };
        let t = item.sha256.and_then(|h| trust.get(&h).copied());
        for rule in &rules {
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
    let by = format!("event-rule:{}", rule.id);
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
            write_file_state(&mut tx, org_id, sha, scope, *state, &by).await?;
            tx.commit().await?;
            tracing::info!(rule = rule.id, sha256 = %sha, state = %state, scope = ?scope.kind(), "event rule set a file state");
        }
        EventAction::MoveComputer { policy } => {
            let mut tx = db.write().await?;
            let Some(p) = policy_by_name(tx.conn(), org_id, policy.as_str()).await? else {
                tracing::warn!(rule = rule.id, policy = %policy, "event rule: no such policy; computer not moved");
                return Ok(());
            };
            if move_computer(&mut tx, org_id, item.computer_id, p.id).await? {
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

fn severity(item: &Item) -> Severity {
    if item.kind == Some(EventKind::Blocked) {
        Severity::Warning
    } else {
        Severity::Notice
    }
}
