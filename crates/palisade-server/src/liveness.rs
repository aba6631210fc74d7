//! Which computers are connected: kept per replica, not per computer.
//!
//! Each replica has a row in `replicas` (a random id for the life of the
//! process) whose `alive_until_ms` it pushes [`SLACK_MS`] ahead every
//! [`HEARTBEAT_SECS`], and a row in `connections` for every computer with a
//! stream open on it. A computer is *connected* while one of its
//! `connections` rows names a replica that is alive. So an idle fleet costs
//! the database one row write per replica and interval, whatever its size
//! (one write per stream heartbeat cost 2 000 a second for 10 000 agents),
//! and a computer's rows are written only when its first stream on a replica
//! opens (`last_seen_ms`, the connection) and when its last one closes.
//! A replica that stops or dies takes its computers with it within
//! [`SLACK_MS`] (at once when it stops cleanly).
//!
//! Every interval the replica also looks for its computers that were
//! revoked and tells their streams to close, so a revocation ends them
//! within an interval even if its change was missed (the change feed
//! normally ends them at once).
//!
//! A computer holds at most [`MAX_STREAMS_PER_COMPUTER`] streams on a
//! replica; one more closes its oldest.
use crate::db::{now_ms, Db, WriteTx};
use palisade_api::agent::HEARTBEAT_SECS;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Mutex, Notify};

/// How far ahead of now a replica keeps its `alive_until_ms`.
pub(crate) const SLACK_MS: i64 = 3 * HEARTBEAT_SECS as i64 * 1000;
/// A replica dead for this long is forgotten, with its connections, by the
/// next replica to start.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// Streams one computer may hold open on one replica. An agent keeps one,
/// but a reconnect can overlap streams the server has not found dead yet (a
/// connection that vanished without a close is noticed only when a write to
/// it fails, which can take minutes). The newest win: opening one more
/// closes the oldest. So neither a computer nor whoever holds its
/// certificate can pile up tasks and buffers on a replica, and an agent is
/// never locked out by streams of its own that died unseen.
pub(crate) const MAX_STREAMS_PER_COMPUTER: usize = 4;

struct Entry {
    /// Streams of this computer open on this replica, oldest first: each
    /// one's id and what tells it to close when newer ones displace it.
    streams: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Written into the computer's `connections` row by the stream that
    /// created this entry; the row is deleted only with this token.
    token: i64,
    /// Set when a refresh finds the computer revoked.
    revoked: watch::Sender<bool>,
}

/// This replica's row and its live computers.
pub(crate) struct Liveness {
    db: Db,
    replica: String,
    /// The `alive_until_ms` this replica last wrote.
    alive_until: AtomicI64,
    live: Mutex<HashMap<i64, Entry>>,
    wake: Notify,
    /// The id of the next stream to open.
    next_stream: AtomicU64,
}

/// A stream registered by [`Liveness::open`].
pub(crate) struct Opened {
    /// Its id, for [`Liveness::close`].
    pub(crate) id: u64,
    /// Changes when a later refresh finds the computer revoked.
    pub(crate) revoked: watch::Receiver<bool>,
    /// Resolves when newer streams of the computer displaced this one.
    pub(crate) displaced: oneshot::Receiver<()>,
}

/// What a refresh did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refreshed {
    /// Computers with a stream here.
    pub(crate) live: usize,
    /// Of those, found revoked; their streams were told to close.
    pub(crate) revoked: usize,
    /// Whether this replica's row had gone (forgotten by another replica
    /// after a long outage) and was written again with its connections.
    pub(crate) rewritten: bool,
}

impl Liveness {
    /// Register a new replica; forget replicas dead for a day.
    pub(crate) async fn start(db: Db) -> Result<Liveness, sqlx::Error> {
        let replica = hex::encode(rand::random::<[u8; 8]>());
        let now = now_ms();
        let mut tx = db.write().await?;
        sqlx::query(
            "DELETE FROM connections WHERE replica_id IN \
             (SELECT id FROM replicas WHERE alive_until_ms < $1)",
        )
        .bind(now - FORGET_AFTER_MS)
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM replicas WHERE alive_until_ms < $1")
            .bind(now - FORGET_AFTER_MS)
            .execute(tx.conn())
            .await?;
        sqlx::query("INSERT INTO replicas (id, started_ms, alive_until_ms) VALUES ($1, $2, $3)")
            .bind(&replica)
            .bind(now)
            .bind(now + SLACK_MS)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        tracing::debug!(replica = %replica, "replica registered");
        Ok(Liveness {
            db,
            replica,
            alive_until: AtomicI64::new(now + SLACK_MS),
            live: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            next_stream: AtomicU64::new(0),
        })
    }

    /// A stream of `computer_id` opened: mark the computer connected through
    /// this replica. `None` when the computer is revoked (the stream must
    /// close). Every `Some` must be matched by one [`Liveness::close`] with
    /// its id. Beyond [`MAX_STREAMS_PER_COMPUTER`], the computer's oldest
    /// stream here is told to close.
    pub(crate) async fn open(&self, computer_id: i64) -> Result<Option<Opened>, sqlx::Error> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (displace, displaced) = oneshot::channel();
        let (token, revoked, evicted) = {
            let mut live = self.live.lock().await;
            let entry = live.entry(computer_id).or_insert_with(|| Entry {
                streams: VecDeque::new(),
                token: rand::random::<i64>(),
                revoked: watch::channel(false).0,
            });
            entry.streams.push_back((id, displace));
            let mut evicted = 0;
            while entry.streams.len() > MAX_STREAMS_PER_COMPUTER {
                if let Some((_, oldest)) = entry.streams.pop_front() {
                    // A stream that already ended has dropped its receiver.
                    let _ = oldest.send(());
                    evicted += 1;
                }
            }
            (entry.token, entry.revoked.subscribe(), evicted)
        };
        if evicted > 0 {
            tracing::info!(
                computer_id,
                "a computer opened more than {MAX_STREAMS_PER_COMPUTER} streams on this replica: its oldest closed"
            );
        }
        self.wake.notify_one();
        let written = self.connect(computer_id, token).await;
        match written {
            Ok(true) => Ok(Some(Opened {
                id,
                revoked,
                displaced,
            })),
            Ok(false) => {
                self.close(computer_id, id).await;
                Ok(None)
            }
            Err(e) => {
                self.close(computer_id, id).await;
                Err(e)
            }
        }
    }

    /// Check that the computer is not revoked, note it seen, and write its
    /// connection (with this replica's row, when that may have lapsed).
    /// `false`: revoked.
    async fn connect(&self, computer_id: i64, token: i64) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let mut tx = self.db.write().await?;
        let n = sqlx::query("UPDATE computers SET last_seen_ms = $1 WHERE id = $2 AND revoked = 0")
            .bind(now)
            .bind(computer_id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        upsert_connection(&mut tx, computer_id, &self.replica, now, token).await?;
        let period_ms = HEARTBEAT_SECS as i64 * 1000;
        if self.alive_until.load(Ordering::Relaxed) < now + period_ms {
            self.keep_alive(&mut tx, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The stream `id` that [`Liveness::open`] registered closed. The last
    /// one of its computer on this replica deletes the computer's connection
    /// here (the row its own entry wrote, not one written since by a newer
    /// stream). A stream displaced by newer ones was taken off already.
    pub(crate) async fn close(&self, computer_id: i64, id: u64) {
        let token = {
            let mut live = self.live.lock().await;
            let Some(entry) = live.get_mut(&computer_id) else {
                return;
            };
            entry.streams.retain(|(s, _)| *s != id);
            if !entry.streams.is_empty() {
                return;
            }
            let token = entry.token;
            live.remove(&computer_id);
            token
        };
        let result = async {
            let mut tx = self.db.write().await?;
            let n = sqlx::query(
                "DELETE FROM connections WHERE computer_id = $1 AND replica_id = $2 AND token = $3",
            )
            .bind(computer_id)
            .bind(&self.replica)
            .bind(token)
            .execute(tx.conn())
            .await?
            .rows_affected();
            if n > 0 {
                sqlx::query("UPDATE computers SET last_seen_ms = $1 WHERE id = $2")
                    .bind(now_ms())
                    .bind(computer_id)
                    .execute(tx.conn())
                    .await?;
            }
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, computer_id, "cannot mark the computer disconnected");
        }
    }

    /// Push this replica's deadline ahead (one row); close the streams of
    /// its computers found revoked.
    pub(crate) async fn refresh(&self) -> Result<Refreshed, sqlx::Error> {
        let now = now_ms();
        let mut tx = self.db.write().await?;
        let rewritten = self.keep_alive(&mut tx, now).await?;
        tx.commit().await?;
        let revoked_ids: Vec<i64> = sqlx::query_scalar(
            "SELECT c.id FROM connections x JOIN computers c ON c.id = x.computer_id \
             WHERE x.replica_id = $1 AND c.revoked <> 0",
        )
        .bind(&self.replica)
        .fetch_all(self.db.pool())
        .await?;
        let live = self.live.lock().await;
        let mut revoked = 0;
        for id in revoked_ids {
            if let Some(entry) = live.get(&id) {
                entry.revoked.send_replace(true);
                revoked += 1;
            }
        }
        Ok(Refreshed {
            live: live.len(),
            revoked,
            rewritten,
        })
    }

    /// Push this replica's row [`SLACK_MS`] ahead of `now`. When it had gone
    /// (forgotten by another replica after a long outage of this one),
    /// write it and every live computer's connection again: `true`.
    async fn keep_alive(&self, tx: &mut WriteTx<'_>, now: i64) -> Result<bool, sqlx::Error> {
        let until = now + SLACK_MS;
        let n = sqlx::query("UPDATE replicas SET alive_until_ms = $1 WHERE id = $2")
            .bind(until)
            .bind(&self.replica)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if n == 0 {
            sqlx::query(
                "INSERT INTO replicas (id, started_ms, alive_until_ms) VALUES ($1, $2, $3)",
            )
            .bind(&self.replica)
            .bind(now)
            .bind(until)
            .execute(tx.conn())
            .await?;
            let entries: Vec<(i64, i64)> = {
                let live = self.live.lock().await;
                live.iter().map(|(id, e)| (*id, e.token)).collect()
            };
            for (id, token) in entries {
                upsert_connection(tx, id, &self.replica, now, token).await?;
            }
        }
        // Stored before the commit: if it rolls back, the row may lapse
        // until the next refresh (at most one interval after a stream opens).
        self.alive_until.store(until, Ordering::Relaxed);
        Ok(n == 0)
    }

    /// Refresh every [`HEARTBEAT_SECS`] while streams are open; while none
    /// is, sleep (the next stream to open pushes the row itself). Returns
    /// when `stop` turns true, after marking this replica dead so its
    /// computers are disconnected at once.
    pub(crate) async fn run(&self, mut stop: watch::Receiver<bool>) {
        let period = Duration::from_secs(HEARTBEAT_SECS);
        loop {
            if *stop.borrow_and_update() {
                break;
            }
            let idle = self.live.lock().await.is_empty();
            if idle {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.changed() => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow_and_update() {
                break;
            }
            match self.refresh().await {
                Ok(r) if r.revoked > 0 || r.rewritten => {
                    tracing::info!(
                        revoked = r.revoked,
                        rewritten = r.rewritten,
                        "liveness: streams of revoked computers closed, or the replica's row written again"
                    );
                }
                Ok(r) => tracing::trace!(live = r.live, "liveness refreshed"),
                Err(e) => tracing::warn!(error = %e, "liveness: cannot refresh this replica"),
            }
        }
        let result = async {
            let mut tx = self.db.write().await?;
            sqlx::query("UPDATE replicas SET alive_until_ms = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(&self.replica)
                .execute(tx.conn())
                .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot mark this replica stopped");
        }
    }
}

/// Write (or take over) `computer_id`'s connection through `replica`.
async fn upsert_connection(
    tx: &mut WriteTx<'_>,
    computer_id: i64,
    replica: &str,
    now: i64,
    token: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO connections (computer_id, replica_id, since_ms, token) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (computer_id, replica_id) \
         DO UPDATE SET since_ms = excluded.since_ms, token = excluded.token",
    )
    .bind(computer_id)
    .bind(replica)
    .bind(now)
    .bind(token)
    .execute(tx.conn())
    .await?;
    Ok(())
}
