//! The change feed: one task per replica tails the `changes` table and
//! broadcasts what it finds to the replica's agent streams.
//!
//! It reads `changes WHERE id > last` when woken: at once when this replica
//! committed a change, on a PostgreSQL `NOTIFY palisade_changes` (sent in
//! the transaction that appended the change, so by another replica too), and
//! every [`POLL`] as a fallback (which is how two processes over one SQLite
//! file see each other's changes). On SQLite that fallback first compares
//! the database's files (a commit writes the write-ahead log) with what they
//! were at the last read, and skips the query when neither changed, for at
//! most [`SQLITE_RECHECK`]: an idle server does not run a query four times a
//! second. Because change ids are handed out under a
//! row lock held to commit (see [`crate::db`]), tailing by id never skips a
//! change. The same task prunes the change log past its retention.
use crate::db::{now_ms, Db, DbKind, CHANGES_CHANNEL, EVENTS_CHANNEL};
use crate::store::{changes_after, Change};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Fallback poll interval.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// On SQLite, the longest a poll skips the query because the files did not
/// change (a bound for filesystems whose timestamps are coarse).
const SQLITE_RECHECK: Duration = Duration::from_secs(5);
/// Most rows read (and broadcast) at once.
const BATCH: i64 = 5000;
/// How often the change log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Changes `(after, upto]`, as read by the feed.
#[derive(Debug)]
pub(crate) struct FeedBatch {
    pub(crate) upto: i64,
    pub(crate) changes: Vec<Change>,
}

/// Run the feed until `shutdown` turns true.
pub(crate) async fn run(
    db: Db,
    tx: broadcast::Sender<Arc<FeedBatch>>,
    start: i64,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = start;
    let mut last_prune: Option<std::time::Instant> = None;
    let files = db.sqlite_file().map(|f| {
        let mut wal = f.clone().into_os_string();
        wal.push("-wal");
        [f, wal.into()]
    });
    loop {
        let mut full = false;
        // Taken before the read: a commit that lands during it shows next time.
        let read_at = std::time::Instant::now();
        let seen = files.as_ref().map(stamps);
        match read(&db, last).await {
            Ok(changes) => {
                if let Some(c) = changes.last() {
                    full = changes.len() as i64 >= BATCH;
                    last = c.id;
                    // No receiver is fine: no stream is open.
                    let _ = tx.send(Arc::new(FeedBatch {
                        upto: last,
                        changes,
                    }));
                }
            }
            Err(e) => tracing::warn!(error = %e, "change feed: cannot read the change log"),
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(std::time::Instant::now());
            if let Err(e) = prune(&db, retention).await {
                tracing::warn!(error = %e, "change feed: cannot prune the change log");
            }
        }
        if full {
            continue;
        }
        loop {
            let polled = tokio::select! {
                _ = db.changed() => false,
                _ = tokio::time::sleep(POLL) => true,
                _ = shutdown.changed() => false,
            };
            if *shutdown.borrow() {
                return;
            }
            let unchanged = polled
                && read_at.elapsed() < SQLITE_RECHECK
                && files.as_ref().is_some_and(|f| Some(stamps(f)) == seen);
            if !unchanged {
                break;
            }
        }
    }
}

/// What identifies the content of each file: inode, size and modification
/// time (`None` for a file that is missing).
fn stamps(files: &[std::path::PathBuf; 2]) -> [Option<(u64, u64, i64, i64)>; 2] {
    use std::os::unix::fs::MetadataExt;
    files.each_ref().map(|f| {
        std::fs::metadata(f)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    })
}

async fn read(db: &Db, after: i64) -> Result<Vec<Change>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    changes_after(&mut conn, after, BATCH).await
}

/// Delete changes older than `retention`, remembering (in the
/// `changes_pruned` counter) the highest id deleted, so that a reader asking
/// for changes since an older revision is told to reset.
pub(crate) async fn prune(db: &Db, retention: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
    let mut tx = db.write().await?;
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM changes WHERE created_ms <= $1")
        .bind(cutoff)
        .fetch_one(tx.conn())
        .await?;
    let Some(max) = max else {
        return Ok(0);
    };
    sqlx::query("UPDATE counters SET value = $1 WHERE name = 'changes_pruned' AND value < $1")
        .bind(max)
        .execute(tx.conn())
        .await?;
    let deleted = sqlx::query("DELETE FROM changes WHERE id <= $1")
        .bind(max)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// On PostgreSQL: hold a `LISTEN` connection and turn notifications into
/// local wake-ups (change feed, event long polls). Reconnects on failure;
/// the feed's polling covers the gaps.
pub(crate) async fn listen(db: Db, mut shutdown: watch::Receiver<bool>) {
    if db.kind() != DbKind::Postgres {
        return;
    }
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(db.url()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the PostgreSQL LISTEN connection");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        if let Err(e) = listener.listen_all([CHANGES_CHANNEL, EVENTS_CHANNEL]).await {
            tracing::warn!(error = %e, "cannot LISTEN on PostgreSQL");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => {
                        if n.channel() == CHANGES_CHANNEL {
                            db.notify_changed();
                        } else {
                            db.notify_events();
                        }
                    }
                    // Connection lost: the listener reconnects on the next call;
                    // anything missed meanwhile is caught by polling.
                    Ok(None) => {
                        db.notify_changed();
                        db.notify_events();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "PostgreSQL LISTEN connection failed");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
