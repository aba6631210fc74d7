//! The catalog recorder: lookups and events report where files were seen,
//! but writing that down must never slow an answer. Handlers hand their
//! items to a bounded queue with `try_send` (dropping, and counting, when it
//! is full) and one background task per replica writes them in batched
//! transactions: sightings, the publisher facts lookups carry
//! (`file_publishers`), and, when the organization has `file_seen` event
//! rules, which sightings are a hash's first on its computer (stored for
//! the event rules in the same transaction, which wakes them after commit).
use crate::db::{now_ms, Db};
use crate::eventrules::{queue_file_seen, wants_file_seen, EventRules};
use crate::store::{record_publishers, record_sightings, stored_path, unseen_instances, Sighting};
use palisade_api::agent::LookupItem;
use palisade_core::rules::PublisherFact;
use palisade_core::FileEvent;
use palisade_core::Sha256;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most sightings written in one transaction.
const MAX_BATCH: usize = 5000;

enum Msg {
    Lookups {
        org_id: i64,
        computer_id: i64,
        at_ms: i64,
        items: Vec<LookupItem>,
    },
    Events {
        org_id: i64,
        computer_id: i64,
        enrolled_ms: i64,
        at_ms: i64,
        events: Vec<FileEvent>,
    },
    Touch {
        computer_id: i64,
        at_ms: i64,
    },
}

impl Msg {
    fn computer_id(&self) -> i64 {
        match self {
            Msg::Lookups { computer_id, .. }
            | Msg::Events { computer_id, .. }
            | Msg::Touch { computer_id, .. } => *computer_id,
        }
    }

    fn weight(&self) -> usize {
        match self {
            Msg::Lookups { items, .. } => items.len(),
            Msg::Events { events, .. } => events.len(),
            Msg::Touch { .. } => 1,
        }
    }
}

/// The sending half, held by the HTTP handlers.
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// A recorder writing to `db`, and its task (run it until the sender
    /// side is dropped; it drains the queue before returning).
    pub(crate) fn new(
        db: Db,
        capacity: usize,
        rules: EventRules,
    ) -> (Recorder, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        (Recorder { tx, dropped }, run(db, rx, rules))
    }

    fn send(&self, msg: Msg) {
        let weight = msg.weight() as u64;
        if self.tx.try_send(msg).is_err() {
            let before = self.dropped.fetch_add(weight, Ordering::Relaxed);
            if before == 0 || (before + weight).ilog2() != before.max(1).ilog2() {
                tracing::warn!(
                    dropped = before + weight,
                    "catalog queue full: sightings dropped so lookups stay fast"
                );
            }
        }
    }

    /// Record the files of a lookup.
    pub(crate) fn lookups(&self, org_id: i64, computer_id: i64, items: Vec<LookupItem>) {
        if items.is_empty() {
            return;
        }
        self.send(Msg::Lookups {
            org_id,
            computer_id,
            at_ms: now_ms(),
            items,
        });
    }

    /// Record the files named by events of a computer enrolled at
    /// `enrolled_ms`.
    pub(crate) fn events(
        &self,
        org_id: i64,
        computer_id: i64,
        enrolled_ms: i64,
        events: Vec<FileEvent>,
    ) {
        if events.is_empty() {
            return;
        }
        self.send(Msg::Events {
            org_id,
            computer_id,
            enrolled_ms,
            at_ms: now_ms(),
            events,
        });
    }

    /// Refresh a computer's `last_seen_ms`.
    pub(crate) fn touch(&self, computer_id: i64, at_ms: i64) {
        self.send(Msg::Touch { computer_id, at_ms });
    }

    /// Sightings dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Msg>, rules: EventRules) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut weight = batch[0].weight();
        while weight < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    weight += m.weight();
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = flush(&db, &batch, &rules).await {
            // One bad message must not lose every agent's records: write
            // them one by one, so only a message that fails alone is lost.
            tracing::warn!(error = %e, messages = batch.len(), "cannot record catalog sightings");
            if batch.len() > 1 {
                for m in &batch {
                    if let Err(e) = flush(&db, std::slice::from_ref(m), &rules).await {
                        tracing::warn!(error = %e, computer = m.computer_id(), "catalog sightings lost");
                    }
                }
            }
            // Back off a little so a failing database is not hammered.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn flush(db: &Db, batch: &[Msg], rules: &EventRules) -> Result<(), sqlx::Error> {
    let mut by_org: BTreeMap<i64, Vec<Sighting>> = BTreeMap::new();
    let mut facts: BTreeMap<i64, Vec<(Sha256, PublisherFact)>> = BTreeMap::new();
    let mut touches: BTreeMap<i64, i64> = BTreeMap::new();
    for msg in batch {
        match msg {
            Msg::Lookups {
                org_id,
                computer_id,
                at_ms,
                items,
            } => {
                let (org_id, computer_id, at_ms) = (*org_id, *computer_id, *at_ms);
                let out = by_org.entry(org_id).or_default();
                for item in items {
                    if let Some(f) = &item.publisher {
                        facts
                            .entry(org_id)
                            .or_default()
                            .push((item.sha256, f.clone()));
                    }
                    out.push(Sighting {
                        sha256: item.sha256,
                        computer_id,
                        path: item.path.as_deref().map(|p| stored_path(p).to_owned()),
                        operation: item.operation,
                        process_json: item
                            .process
                            .as_ref()
                            .and_then(|p| serde_json::to_string(p).ok()),
                        at_ms,
                    });
                }
                let t = touches.entry(computer_id).or_insert(at_ms);
                *t = (*t).max(at_ms);
            }
            Msg::Events {
                org_id,
                computer_id,
                enrolled_ms,
                at_ms,
                events,
            } => {
                let (org_id, computer_id, at_ms) = (*org_id, *computer_id, *at_ms);
                let not_before = (*enrolled_ms).clamp(0, at_ms);
                let out = by_org.entry(org_id).or_default();
                for e in events {
                    let Some(sha256) = e.sha256 else { continue };
                    out.push(Sighting {
                        sha256,
                        computer_id,
                        path: (!e.path.is_empty()).then(|| stored_path(&e.path).to_owned()),
                        operation: Some(e.operation),
                        process_json: serde_json::to_string(&e.process).ok(),
                        // When the agent saw it (an event may be uploaded
                        // long after, from the offline spool), never later
                        // than its arrival: so a removal reported in between
                        // is not undone by the late upload. Never earlier
                        // than the computer's enrollment either: an agent's
                        // clock (or a compromised agent) cannot make a file
                        // look older in the catalog than the computer is.
                        at_ms: e.time_ms.clamp(not_before, at_ms),
                    });
                }
            }
            Msg::Touch { computer_id, at_ms } => {
                let (computer_id, at_ms) = (*computer_id, *at_ms);
                let t = touches.entry(computer_id).or_insert(at_ms);
                *t = (*t).max(at_ms);
            }
        }
    }
    let mut tx = db.write().await?;
    // Every organization's first sightings before any catalog row: the
    // `sightings` counter row is taken before catalog rows by every writer.
    let mut first_seen = false;
    for (org_id, sightings) in &by_org {
        if wants_file_seen(tx.conn(), *org_id).await? {
            let seen = unseen_instances(tx.conn(), *org_id, sightings).await?;
            queue_file_seen(tx.conn(), *org_id, &seen).await?;
            first_seen |= !seen.is_empty();
        }
    }
    for (org_id, sightings) in &by_org {
        record_sightings(tx.conn(), *org_id, sightings).await?;
    }
    let now = now_ms();
    for (org_id, facts) in &facts {
        let refs: Vec<(Sha256, &PublisherFact)> = facts.iter().map(|(h, f)| (*h, f)).collect();
        record_publishers(tx.conn(), *org_id, &refs, now).await?;
    }
    for (computer_id, at_ms) in touches {
        sqlx::query(
            "UPDATE computers SET last_seen_ms = $1 WHERE id = $2 \
             AND (last_seen_ms IS NULL OR last_seen_ms < $1)",
        )
        .bind(at_ms)
        .bind(computer_id)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    if first_seen {
        rules.wake();
    }
    Ok(())
}
