//! Which computers are connected: `computers.connected_until_ms`, kept ahead
//! of now for every computer with an open agent stream.
//!
//! A computer is *connected* while some stream, on any replica, keeps its
//! `connected_until_ms` ahead of now. Each replica keeps the set of
//! computers it has streams for and, every [`HEARTBEAT_SECS`], pushes the
//! deadline [`SLACK_MS`] ahead for all of them in one write transaction
//! (statements of up to [`CHUNK`] computers). An idle fleet of *n* agents on
//! one replica therefore costs one write every heartbeat interval, not *n*
//! (which is what one write per stream heartbeat cost: 2 000 writes a second
//! for 10 000 agents).
//!
//! The write is conditional on the computer not being revoked; a computer
//! it did not update (revoked, or deleted) has its streams told to close,
//! so a revocation ends them within an interval even if its change was
//! missed (the change feed normally ends them at once).
//!
//! A stream that opens marks its computer connected at once (one write,
//! which is also where a revoked computer is refused); the last stream of a
//! computer to close on this replica marks it disconnected, unless a stream
//! elsewhere has pushed the deadline past what this replica wrote.
use crate::db::{now_ms, Db};
use palisade_api::agent::HEARTBEAT_SECS;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{watch, Mutex, Notify};

/// How far ahead of now a live computer's `connected_until_ms` is kept.
pub(crate) const SLACK_MS: i64 = 3 * HEARTBEAT_SECS as i64 * 1000;
/// Computers per `UPDATE` statement of a refresh.
pub(crate) const CHUNK: usize = 500;

struct Entry {
    /// Streams of this computer open on this replica.
    streams: usize,
    /// The latest deadline this replica wrote for it.
    until: i64,
    /// Set when a refresh finds the computer revoked.
    revoked: watch::Sender<bool>,
}

/// This replica's live computers.
pub(crate) struct Liveness {
    db: Db,
    live: Mutex<HashMap<i64, Entry>>,
    wake: Notify,
}

/// What a refresh did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refreshed {
    /// Computers whose deadline was pushed.
    pub(crate) kept: usize,
    /// Computers found revoked or gone; their streams were told to close.
    pub(crate) revoked: usize,
    /// `UPDATE` statements run.
    pub(crate) statements: usize,
}

impl Liveness {
    pub(crate) fn new(db: Db) -> Liveness {
        Liveness {
            db,
            live: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// A stream of `computer_id` opened: mark it connected now. `None` when
    /// the computer is revoked (the stream must close); otherwise a receiver
    /// that changes when a later refresh finds it revoked. Every `Some` must
    /// be matched by one [`Liveness::close`].
    pub(crate) async fn open(
        &self,
        computer_id: i64,
    ) -> Result<Option<watch::Receiver<bool>>, sqlx::Error> {
        let now = now_ms();
        let until = now + SLACK_MS;
        let mut tx = self.db.write().await?;
        let n = sqlx::query(
            "UPDATE computers SET connected_until_ms = $1, last_seen_ms = $2 \
             WHERE id = $3 AND revoked = 0",
        )
        .bind(until)
        .bind(now)
        .bind(computer_id)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        if n == 0 {
            return Ok(None);
        }
        let mut live = self.live.lock().await;
        let entry = live.entry(computer_id).or_insert_with(|| Entry {
            streams: 0,
            until,
            revoked: watch::channel(false).0,
        });
        entry.streams += 1;
        entry.until = entry.until.max(until);
        let rx = entry.revoked.subscribe();
        drop(live);
        self.wake.notify_one();
        Ok(Some(rx))
    }

    /// A stream that [`Liveness::open`] accepted closed. The last one of its
    /// computer on this replica marks the computer disconnected, unless a
    /// stream elsewhere pushed the deadline further than this replica did.
    pub(crate) async fn close(&self, computer_id: i64) {
        let until = {
            let mut live = self.live.lock().await;
            let Some(entry) = live.get_mut(&computer_id) else {
                // Found revoked by a refresh, which forgot it.
                return;
            };
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams > 0 {
                return;
            }
            let until = entry.until;
            live.remove(&computer_id);
            until
        };
        // A stream that opened since has written a later deadline, which
        // this leaves alone.
        let result = async {
            let mut tx = self.db.write().await?;
            sqlx::query(
                "UPDATE computers SET connected_until_ms = $1 \
                 WHERE id = $2 AND connected_until_ms <= $3",
            )
            .bind(now_ms())
            .bind(computer_id)
            .bind(until)
            .execute(tx.conn())
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, computer_id, "cannot mark the computer disconnected");
        }
    }

    /// Push the deadline of every live computer ahead, in one transaction;
    /// tell the streams of computers found revoked to close.
    pub(crate) async fn refresh(&self) -> Result<Refreshed, sqlx::Error> {
        // Held across the write, so a stream closing meanwhile marks its
        // computer disconnected after this, not before.
        let mut live = self.live.lock().await;
        if live.is_empty() {
            return Ok(Refreshed::default());
        }
        let now = now_ms();
        let until = now + SLACK_MS;
        let ids: Vec<i64> = live.keys().copied().collect();
        let mut kept: HashSet<i64> = HashSet::with_capacity(ids.len());
        let mut statements = 0;
        let mut tx = self.db.write().await?;
        for chunk in ids.chunks(CHUNK) {
            let sql = refresh_sql(chunk.len());
            let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(until).bind(now);
            for id in chunk {
                q = q.bind(*id);
            }
            kept.extend(q.fetch_all(tx.conn()).await?);
            statements += 1;
        }
        tx.commit().await?;
        let mut revoked = 0;
        live.retain(|id, entry| {
            if kept.contains(id) {
                entry.until = until;
                true
            } else {
                entry.revoked.send_replace(true);
                revoked += 1;
                false
            }
        });
        Ok(Refreshed {
            kept: kept.len(),
            revoked,
            statements,
        })
    }

    /// Refresh every [`HEARTBEAT_SECS`] while any stream is open; sleep
    /// while none is. Returns when `stop` turns true.
    pub(crate) async fn run(&self, mut stop: watch::Receiver<bool>) {
        let period = Duration::from_secs(HEARTBEAT_SECS);
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            let idle = self.live.lock().await.is_empty();
            if idle {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.changed() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            match self.refresh().await {
                Ok(r) if r.revoked > 0 => {
                    tracing::info!(
                        revoked = r.revoked,
                        "liveness: streams of revoked computers closed"
                    );
                }
                Ok(r) => tracing::trace!(
                    kept = r.kept,
                    statements = r.statements,
                    "liveness refreshed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "liveness: cannot refresh connected computers")
                }
            }
        }
    }
}

/// `UPDATE … WHERE id IN ($3, …) RETURNING id` for `n` computers.
fn refresh_sql(n: usize) -> String {
    let mut sql = String::from(
        "UPDATE computers SET connected_until_ms = $1, last_seen_ms = $2 \
         WHERE revoked = 0 AND id IN (",
    );
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('$');
        sql.push_str(&(i + 3).to_string());
    }
    sql.push_str(") RETURNING id");
    sql
}

#[cfg(test)]
mod tests {
    use super::refresh_sql;

    #[test]
    fn the_refresh_statement_numbers_its_parameters_after_the_two_times() {
        assert_eq!(
            refresh_sql(3),
            "UPDATE computers SET connected_until_ms = $1, last_seen_ms = $2 \
             WHERE revoked = 0 AND id IN ($3, $4, $5) RETURNING id"
        );
    }
}
