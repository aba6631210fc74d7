//! The change feed: one task per replica tails the `changes` table and
//! broadcasts what it finds to the replica's agent streams.
//!
//! It reads `changes WHERE id > last` when woken: at once when this replica
//! committed a change, on a PostgreSQL `NOTIFY palisade_changes` (sent in
//! the transaction that appended the change, so by another replica too), and
//! every [`POLL`] as a fallback (which is how two processes over one SQLite
//! file see each other's changes). On SQLite an inotify watch on the
//! database's directory replaces that poll: a commit writes the write-ahead
//! log, which wakes the feed (at most every [`FILES_GAP`]; so does an overflow
//! of the watch's queue, which may have dropped such a write), and the poll
//! falls back to every [`SQLITE_RECHECK`]. Either way the feed first compares
//! the database files with what they were at the last read and skips the
//! query when neither changed (for at most [`SQLITE_RECHECK`]): an idle
//! server neither queries nor wakes several times a second. Because change
//! ids are handed out under a row lock held to commit (see [`crate::db`]),
//! tailing by id never skips a change. The same task prunes the change log
//! past its retention.
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
/// On SQLite, the shortest time between two reads woken by the files (a
/// bound on the queries another process's stream of commits can cause).
const FILES_GAP: Duration = Duration::from_millis(50);
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
    event_retention: Option<Duration>,
    instance_retention: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = start;
    let mut last_prune: Option<std::time::Instant> = None;
    let files = db.sqlite_file().map(|f| {
        let mut wal = f.clone().into_os_string();
        wal.push("-wal");
        [f, wal.into()]
    });
    let mut watch = files.as_ref().and_then(|f| match FileWatch::new(&f[0]) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "change feed: cannot watch the database files; polling");
            None
        }
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
            if let Some(keep) = event_retention {
                match prune_events(&db, keep).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "events past their retention deleted"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot delete events past their retention")
                    }
                }
            }
            if let Some(keep) = instance_retention {
                match prune_deleted_instances(&db, keep).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        deleted = n,
                        "catalog instances gone past their retention deleted"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "cannot delete catalog instances gone past their retention"
                    ),
                }
            }
        }
        if full {
            continue;
        }
        loop {
            let poll = if watch.is_some() {
                SQLITE_RECHECK
            } else {
                POLL
            };
            // Biased: a commit of this replica is read at once even when its
            // write to the files is seen at the same moment.
            let mut woke = tokio::select! {
                biased;
                _ = db.changed() => Wake::Committed,
                _ = tokio::time::sleep(poll) => Wake::Timer,
                r = files_changed(watch.as_ref()) => Wake::Files(r),
                _ = shutdown.changed() => Wake::Committed,
            };
            if *shutdown.borrow() {
                return;
            }
            if let Wake::Files(r) = &woke {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "change feed: database file watch failed; polling");
                    watch = None;
                }
                // At most one read per FILES_GAP for the files; a commit of
                // this replica still cuts the wait short.
                tokio::select! {
                    biased;
                    _ = db.changed() => woke = Wake::Committed,
                    _ = tokio::time::sleep_until((read_at + FILES_GAP).into()) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            let unchanged = !matches!(woke, Wake::Committed)
                && read_at.elapsed() < SQLITE_RECHECK
                && files.as_ref().is_some_and(|f| Some(stamps(f)) == seen);
            if !unchanged {
                break;
            }
        }
    }
}

/// Why the feed woke.
enum Wake {
    /// This replica committed a change (or NOTIFY, or shutdown).
    Committed,
    /// The fallback poll.
    Timer,
    /// A database file changed (or the watch failed).
    Files(std::io::Result<()>),
}

/// Until `watch` sees a database file change; never without a watch.
async fn files_changed(watch: Option<&FileWatch>) -> std::io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// An inotify watch on the directory of a SQLite database, reporting writes
/// to the database's own files (`NAME`, `NAME-wal`, ...) only.
struct FileWatch {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    name: Vec<u8>,
}

impl FileWatch {
    fn new(db_file: &std::path::Path) -> std::io::Result<FileWatch> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        use std::os::unix::ffi::OsStrExt;
        let dir = match db_file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let name = db_file
            .file_name()
            .ok_or_else(|| std::io::Error::other("database path has no file name"))?
            .as_bytes()
            .to_vec();
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            dir,
            WatchFlags::MODIFY
                | WatchFlags::CLOSE_WRITE
                | WatchFlags::CREATE
                | WatchFlags::MOVED_TO,
        )?;
        // `AsyncFd::new` is deprecated because a borrowed descriptor could be
        // closed behind the reactor's back; this one is owned by the AsyncFd
        // and closed only with it. (`register`, the replacement, is `unsafe`,
        // which this crate does not use.)
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::new(fd)?;
        Ok(FileWatch { fd, name })
    }

    /// Wait until one of the database's files changes. Cancel-safe: events
    /// are only consumed after the last await point.
    async fn changed(&self) -> std::io::Result<()> {
        use rustix::fs::inotify::ReadFlags;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        loop {
            let mut ready = self.fd.readable().await?;
            let mut hit = false;
            let mut reader = rustix::fs::inotify::Reader::new(self.fd.get_ref(), &mut buf);
            loop {
                match reader.next() {
                    Ok(ev) => {
                        // A full queue drops events: any of them may have
                        // been a change to the database.
                        hit |= ev.events().contains(ReadFlags::QUEUE_OVERFLOW)
                            || ev
                                .file_name()
                                .is_some_and(|n| n.to_bytes().starts_with(&self.name));
                    }
                    Err(rustix::io::Errno::AGAIN) => {
                        ready.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if hit {
                return Ok(());
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

/// Events deleted per transaction by [`prune_events`]: short write
/// transactions, so uploads (and, on SQLite, every other writer) wait
/// little.
const PRUNE_EVENTS_BATCH: i64 = 5000;

/// Delete the events that arrived more than `retention` ago, oldest (lowest
/// id) first, in transactions of at most [`PRUNE_EVENTS_BATCH`]; stops at
/// the first event that is not that old. Ids follow arrival (they are
/// taken under one counter's lock), so each batch reads the head of the
/// primary key and never scans the table. Returns how many were deleted.
pub(crate) async fn prune_events(db: &Db, retention: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
    let mut deleted = 0;
    loop {
        let mut tx = db.write().await?;
        let head: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, received_ms FROM events ORDER BY id LIMIT $1")
                .bind(PRUNE_EVENTS_BATCH)
                .fetch_all(tx.conn())
                .await?;
        let old = head.iter().take_while(|(_, at)| *at <= cutoff).count();
        let Some(&(upto, _)) = old.checked_sub(1).and_then(|i| head.get(i)) else {
            return Ok(deleted);
        };
        deleted += sqlx::query("DELETE FROM events WHERE id <= $1")
            .bind(upto)
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        if old < head.len() || (head.len() as i64) < PRUNE_EVENTS_BATCH {
            return Ok(deleted);
        }
    }
}

/// Delete the catalog's instances that their agent reported gone more than
/// `retention` ago, longest gone first, in transactions of about
/// [`PRUNE_EVENTS_BATCH`] (instances reported gone at the same millisecond
/// go together: one report's). Each batch reads the head of the partial
/// index on `deleted_ms` (migration 11). Returns how many were deleted.
pub(crate) async fn prune_deleted_instances(
    db: &Db,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
    let mut deleted = 0;
    loop {
        let mut tx = db.write().await?;
        // The batch's last instance, if there are more than a batch.
        let edge: Option<i64> = sqlx::query_scalar(
            "SELECT deleted_ms FROM file_instances \
             WHERE deleted_ms IS NOT NULL AND deleted_ms <= $1 \
             ORDER BY deleted_ms LIMIT 1 OFFSET $2",
        )
        .bind(cutoff)
        .bind(PRUNE_EVENTS_BATCH - 1)
        .fetch_optional(tx.conn())
        .await?;
        deleted += sqlx::query(
            "DELETE FROM file_instances WHERE deleted_ms IS NOT NULL AND deleted_ms <= $1",
        )
        .bind(edge.unwrap_or(cutoff))
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        if edge.is_none() {
            return Ok(deleted);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn wakes(watch: &FileWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(200), watch.changed())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    #[tokio::test]
    async fn the_watch_wakes_for_the_database_s_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("server.db");
        let watch = FileWatch::new(&db).unwrap();
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        assert!(
            !wakes(&watch).await,
            "a change to another file woke the feed"
        );
        std::fs::write(dir.path().join("server.db-wal"), b"x").unwrap();
        assert!(
            wakes(&watch).await,
            "a write to the log did not wake the feed"
        );
    }

    #[tokio::test]
    async fn a_queue_overflow_wakes_the_watch() {
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384);
        let dir = tempfile::tempdir().unwrap();
        let watch = FileWatch::new(&dir.path().join("server.db")).unwrap();
        // Only changes to another file, but more than the queue holds: the
        // events dropped could have been the database's.
        // (Two files in turn: the kernel merges an event with the one
        // queued just before it when they are the same.)
        let mut a = std::fs::File::create(dir.path().join("a")).unwrap();
        let mut b = std::fs::File::create(dir.path().join("b")).unwrap();
        for _ in 0..max / 2 + 64 {
            a.write_all(b"x").unwrap();
            b.write_all(b"x").unwrap();
        }
        assert!(wakes(&watch).await, "an overflow did not wake the feed");
    }
}
