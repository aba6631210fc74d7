//! The agent's two on-disk stores, each a SQLite file in the data directory:
//!
//! - [`PersistentCache`] (`cache.db`): the last approval the service gave for
//!   each hash, the last revision seen and the last configuration. Read only
//!   when the service cannot be reached; written off the decision path.
//! - [`Spool`] (`events.db`): events waiting to be uploaded. They stay on disk
//!   until the service acknowledges them, across restarts.
//! - [`LevelsFile`] (`levels.json`): the enforcement levels last received from
//!   the service, kept apart from the cache so that rebuilding the cache does
//!   not lose them.
//!
//! The databases are the agent's own (0600, with their `-wal` and `-shm`:
//! `palisade_fs::private_database`): the data directory stays open to all, as users
//! reach the request socket there, and the cache and spool tell what runs
//! on the computer, by whom, with which arguments.
//!
//! A file that fails `PRAGMA quick_check`, or starts failing with
//! corruption errors, is moved aside (`*.corrupt-<ms>`, with its WAL) and
//! recreated; the agent keeps enforcing from memory meanwhile and the cache
//! refills from the service. The spool's rebuild keeps every event still
//! readable (all but those on the damaged pages), with its sequence number;
//! the cache's keeps its metadata but the revision. A file that cannot be
//! used for another reason (a full or read-only disk), or whose rebuild
//! fails, is left alone and the store kept in memory until a restart.
//!
//! The service takes an event whose number it has stored for the computer
//! for a retry. A spool that starts afresh (a new file: first start, or the
//! old one lost; or a rebuilt one) therefore does not number from 1, where
//! the spool before it did: it starts at a random point below 2^39, or,
//! after a rebuild that kept events, 2^31 to 2^32 past the last one kept
//! (past any event lost with the damaged pages), so that its numbers do
//! not meet those the service has from earlier spools. (The uploader puts
//! the agent's spool id from bit 40 up; numbers stay below it. The service
//! also tells events apart by their time.)
use palisade_core::{Approval, FileEvent, Levels, Sha256};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of the on-disk stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// A file beside the store could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store was busy past the caller's deadline.
    #[error("{0}: busy past the deadline")]
    Busy(PathBuf),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a store file holds, and how far its commits are made durable.
#[derive(Debug)]
struct Kind {
    schema: &'static str,
    /// `PRAGMA synchronous`: `FULL` where a commit must survive a power
    /// loss (the spool: once written, an event is held nowhere else),
    /// `NORMAL` where losing the last commits costs a refill (the cache).
    synchronous: &'static str,
}

/// How a store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// The file, as it was.
    Kept,
    /// The file was corrupt: moved aside and made afresh.
    Rebuilt,
    /// The file could not be used and not for corruption (a full or
    /// read-only disk, an I/O error, a directory in its place): left as it
    /// is, and the store kept in memory until the agent restarts.
    Memory,
}

/// Rows read from a damaged store, put back in the one made afresh.
#[derive(Debug, Clone, Default)]
struct Salvaged {
    /// The spool's events, with their sequence numbers (an upload in
    /// flight acknowledges by them).
    events: Vec<(i64, String)>,
    /// The cache's metadata.
    meta: Vec<(String, String)>,
}

/// Open a SQLite file of `kind`. A corrupt file is moved aside and made
/// afresh, keeping what `salvage` can still read from it. Any
/// other failure leaves the file alone (it may be whole: a disk that is
/// full or read-only now may not be at the next start) and keeps the
/// store in memory, as does a rebuild that fails: the agent enforces with
/// or without its stores, never refusing to start for them.
fn open_rescuing(
    path: &Path,
    kind: &Kind,
    salvage: fn(&Connection) -> Salvaged,
) -> Result<(Connection, Opened), StoreError> {
    let why = match try_open(path, kind) {
        Ok(c) => return Ok((c, Opened::Kept)),
        Err(e) if is_corruption(&e) => {
            // Read what can still be read, then let the file go.
            let kept = Connection::open(path)
                .map(|old| salvage(&old))
                .unwrap_or_default();
            match rebuild(path, kind, &e, &kept) {
                Ok(c) => return Ok((c, Opened::Rebuilt)),
                Err(err) => return in_memory(path, kind, &err, &kept),
            }
        }
        Err(e) => e,
    };
    in_memory(path, kind, &why, &Salvaged::default())
}

/// The store of `path` in memory, holding `kept` (see [`open_rescuing`]).
fn in_memory(
    path: &Path,
    kind: &Kind,
    why: &dyn std::fmt::Display,
    kept: &Salvaged,
) -> Result<(Connection, Opened), StoreError> {
    tracing::error!(
        "{}: cannot be used ({why}); kept in memory until the agent restarts: what it holds from now on is lost at a restart",
        path.display()
    );
    let mut c = Connection::open_in_memory().map_err(|e| sqlite_error(path, e))?;
    c.execute_batch(kind.schema)
        .and_then(|()| put_back(&mut c, kept))
        .map_err(|e| sqlite_error(path, e))?;
    Ok((c, Opened::Memory))
}

/// Put what was `kept` back.
fn put_back(c: &mut Connection, kept: &Salvaged) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    if !kept.events.is_empty() {
        let mut st = tx.prepare("INSERT OR IGNORE INTO events (seq, event) VALUES (?1, ?2)")?;
        for (seq, event) in &kept.events {
            st.execute(params![seq, event])?;
        }
    }
    if !kept.meta.is_empty() {
        let mut st = tx.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        for (key, value) in &kept.meta {
            st.execute([key, value])?;
        }
    }
    tx.commit()
}

fn try_open(path: &Path, kind: &Kind) -> rusqlite::Result<Connection> {
    if let Err(e) = palisade_fs::private_database(path, palisade_fs::Missing::Create) {
        // Not a reason to run without a cache or spool; said loudly.
        tracing::warn!(
            "{}: cannot make it readable by root only: {e}",
            path.display()
        );
    }
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_millis(200))?;
    let check: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(check),
        ));
    }
    c.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={};",
        kind.synchronous
    ))?;
    c.execute_batch(kind.schema)?;
    Ok(c)
}

/// Move the damaged file at `path` aside (`*.corrupt-<ms>`, with its
/// `-wal`, which may hold commits the salvage could not read: all kept for
/// a post-mortem), create it afresh as `kind`, and put back what was
/// `kept`. No connection to the old file may be open.
fn rebuild(
    path: &Path,
    kind: &Kind,
    why: &rusqlite::Error,
    kept: &Salvaged,
) -> Result<Connection, StoreError> {
    let err = |source| sqlite_error(path, source);
    let aside = path.with_extension(format!("db.corrupt-{}", now_ms()));
    tracing::warn!(
        "{}: unusable ({why}); moved aside to {} and rebuilt, {} events and {} settings kept",
        path.display(),
        aside.display(),
        kept.events.len(),
        kept.meta.len()
    );
    for suffix in ["", "-wal", "-shm"] {
        let with = |p: &Path| {
            let mut p = p.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let (from, to) = (with(path), with(&aside));
        if std::fs::rename(&from, &to).is_ok() {
            use std::os::unix::fs::PermissionsExt;
            // Kept for a post-mortem, not for other users to read.
            let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600));
        } else {
            // Never left to be replayed into the fresh file.
            let _ = std::fs::remove_file(&from);
        }
    }
    let mut c = try_open(path, kind).map_err(err)?;
    put_back(&mut c, kept).map_err(err)?;
    Ok(c)
}

/// The cache's metadata still readable in a damaged file, but the revision
/// to catch up from: the answers it goes with are not kept, and refill
/// from the service. Without the saved configuration a restart while the
/// service is away would enforce the answers it gets back with none of
/// the rules that may restrict them; without the spool id, events waiting
/// would be numbered anew.
fn salvage_meta(conn: &Connection) -> Salvaged {
    let meta = conn
        .prepare("SELECT key, value FROM meta WHERE key <> 'revision'")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .unwrap_or_default();
    Salvaged {
        meta,
        ..Salvaged::default()
    }
}

/// The spool's events still readable in a damaged file: in order from the
/// first up to the damage, and backwards from the last down to it, so one
/// bad page loses only the rows it held.
fn salvage_events(conn: &Connection) -> Salvaged {
    Salvaged {
        events: readable_events(conn),
        ..Salvaged::default()
    }
}

fn readable_events(conn: &Connection) -> Vec<(i64, String)> {
    let read = |order: &str, after: i64| -> Vec<(i64, String)> {
        let sql = format!("SELECT seq, event FROM events WHERE seq > ?1 ORDER BY seq {order}");
        let Ok(mut st) = conn.prepare(&sql) else {
            return Vec::new();
        };
        let Ok(rows) = st.query_map([after], |r| Ok((r.get(0)?, r.get(1)?))) else {
            return Vec::new();
        };
        rows.map_while(Result::ok).collect()
    };
    let mut kept = read("ASC", i64::MIN);
    let last_good = kept.last().map_or(i64::MIN, |(seq, _)| *seq);
    let mut tail = read("DESC", last_good);
    tail.reverse();
    kept.extend(tail);
    kept
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

const CACHE: Kind = Kind {
    schema: "
CREATE TABLE IF NOT EXISTS approvals (
    sha256 TEXT PRIMARY KEY NOT NULL,
    approval TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
",
    synchronous: "NORMAL",
};

/// The persistent approval cache.
#[derive(Debug)]
pub struct PersistentCache {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Kept in memory: its file could not be used ([`open_rescuing`]).
    in_memory: std::sync::atomic::AtomicBool,
}

/// One cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedApproval {
    /// The approval.
    pub approval: Approval,
    /// The reputation trust rating, when known.
    pub trust: Option<u8>,
    /// The revision it was computed at.
    pub revision: i64,
}

/// How an answer is kept in the `approval` column (JSON). Rows written before
/// trust was kept hold a bare `Approval`, still read.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAnswer {
    approval: Approval,
    #[serde(default)]
    trust: Option<u8>,
}

fn decode_answer(json: &str) -> Option<(Approval, Option<u8>)> {
    serde_json::from_str::<StoredAnswer>(json)
        .map(|a| (a.approval, a.trust))
        .or_else(|_| serde_json::from_str::<Approval>(json).map(|a| (a, None)))
        .ok()
}

fn encode_answer(c: &CachedApproval) -> String {
    serde_json::to_string(&StoredAnswer {
        approval: c.approval,
        trust: c.trust,
    })
    .unwrap_or_default()
}

impl PersistentCache {
    /// Open (or create, or rebuild) the cache at `path`.
    /// Returns whether it started without its answers (rebuilt, or kept
    /// in memory: see [`open_rescuing`]).
    pub fn open(path: &Path) -> Result<(Self, bool), StoreError> {
        let (conn, opened) = open_rescuing(path, &CACHE, salvage_meta)?;
        Ok((
            PersistentCache {
                path: path.to_owned(),
                conn: Mutex::new(conn),
                in_memory: (opened == Opened::Memory).into(),
            },
            opened != Opened::Kept,
        ))
    }

    /// Whether the cache is kept in memory (its file could not be used).
    pub fn in_memory(&self) -> bool {
        self.in_memory.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Rebuild the file if `e` says it is corrupt and its check agrees
    /// (see [`salvage_meta`] for what is kept).
    fn heal(&self, conn: &mut Connection, e: &rusqlite::Error) {
        if !is_corruption(e) {
            return;
        }
        // No connection to the old file may be open while it is moved.
        let Ok(placeholder) = Connection::open_in_memory() else {
            return;
        };
        drop(std::mem::replace(conn, placeholder));
        match open_rescuing(&self.path, &CACHE, salvage_meta) {
            Ok((fresh, opened)) => {
                *conn = fresh;
                self.in_memory.store(
                    opened == Opened::Memory,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Err(err) => tracing::error!("{err}"),
        }
    }

    /// Look one hash up, waiting at most `deadline` for the store.
    pub fn get(
        &self,
        sha: &Sha256,
        deadline: Duration,
    ) -> Result<Option<CachedApproval>, StoreError> {
        let mut conn = self
            .conn
            .try_lock_for(deadline)
            .ok_or_else(|| StoreError::Busy(self.path.clone()))?;
        let row = conn
            .query_row(
                "SELECT approval, revision FROM approvals WHERE sha256 = ?1",
                [sha.to_hex()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional();
        match row {
            // A row we cannot read is no answer; it will be overwritten.
            Ok(Some((json, revision))) => {
                Ok(
                    decode_answer(&json).map(|(approval, trust)| CachedApproval {
                        approval,
                        trust,
                        revision,
                    }),
                )
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.heal(&mut conn, &e);
                Err(self.sqlite(e))
            }
        }
    }

    /// Store answers. An answer that says nothing (unknown, no trust
    /// rating) is not kept but removes the one before it: reading it back
    /// would tell no more than finding nothing, and every distinct file any
    /// user runs gets one, so keeping them would let a user grow the file
    /// (and the agent's start, which reads it all) without bound.
    pub fn put_many(&self, entries: &[(Sha256, CachedApproval)]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let res = (|| {
            let tx = conn.transaction()?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT INTO approvals (sha256, approval, revision, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(sha256) DO UPDATE SET approval = excluded.approval,
                        revision = excluded.revision, updated_ms = excluded.updated_ms
                     WHERE excluded.revision >= approvals.revision",
                )?;
                let mut forget = tx
                    .prepare_cached("DELETE FROM approvals WHERE sha256 = ?1 AND revision <= ?2")?;
                let now = now_ms();
                for (sha, c) in entries {
                    if c.approval == Approval::Unknown && c.trust.is_none() {
                        forget.execute(params![sha.to_hex(), c.revision])?;
                    } else {
                        let json = encode_answer(c);
                        put.execute(params![sha.to_hex(), json, c.revision, now])?;
                    }
                }
            }
            tx.commit()
        })();
        res.map_err(|e| {
            self.heal(&mut conn, &e);
            self.sqlite(e)
        })
    }

    /// Forget answers (their approval changed).
    pub fn remove_many(&self, hashes: &[Sha256]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let res = (|| {
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare_cached("DELETE FROM approvals WHERE sha256 = ?1")?;
                for sha in hashes {
                    st.execute([sha.to_hex()])?;
                }
            }
            tx.commit()
        })();
        res.map_err(|e| {
            self.heal(&mut conn, &e);
            self.sqlite(e)
        })
    }

    /// Forget every answer.
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        conn.execute("DELETE FROM approvals", [])
            .map(drop)
            .map_err(|e| {
                self.heal(&mut conn, &e);
                self.sqlite(e)
            })
    }

    /// Every stored answer (loaded into memory at start).
    pub fn all(&self) -> Result<Vec<(Sha256, CachedApproval)>, StoreError> {
        let mut conn = self.conn.lock();
        let mut undecodable = 0usize;
        let read = (|| {
            let mut st = conn.prepare("SELECT sha256, approval, revision FROM approvals")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (sha, answer, revision) = row?;
                let (Ok(sha), Some((approval, trust))) =
                    (Sha256::parse(&sha), decode_answer(&answer))
                else {
                    undecodable += 1;
                    continue;
                };
                out.push((
                    sha,
                    CachedApproval {
                        approval,
                        trust,
                        revision,
                    },
                ));
            }
            Ok(out)
        })();
        if undecodable > 0 {
            // Not an answer: looked up again when needed, and overwritten.
            tracing::warn!(
                "{}: {undecodable} cached answers unreadable; ignored",
                self.path.display()
            );
        }
        read.map_err(|e| {
            self.heal(&mut conn, &e);
            self.sqlite(e)
        })
    }

    /// Number of stored answers.
    pub fn len(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        conn.query_row("SELECT COUNT(*) FROM approvals", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sqlite(e))
    }

    /// Whether no answer is stored.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Read a metadata value.
    pub fn meta(&self, key: &str) -> Option<String> {
        let conn = self.conn.lock();
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .ok()
            .flatten()
    }

    /// The service's configuration saved last (under `config`), for a start
    /// before the service answers. One that cannot be read (damaged, or
    /// written by a version whose rules this one does not know) is not
    /// started without silently: its rules are unknown, and among them
    /// may be restrictions on approved code (custom block rules, banned
    /// publishers over local approvals). So the cached answers go too, as
    /// when the cache is rebuilt, and the revision to catch up from with
    /// them; both refill from the service.
    ///
    /// Answers kept with no configuration at all (its row lost with a
    /// damaged page, while the answers' pages were read) go the same way.
    pub fn saved_config<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        // `null`: dropped before (below), nothing saved since.
        let read = self
            .meta("config")
            .map(|raw| serde_json::from_str::<Option<T>>(&raw));
        let why = match read {
            Some(Ok(Some(config))) => return Ok(Some(config)),
            Some(Err(e)) => format!("the saved configuration cannot be read ({e})"),
            None | Some(Ok(None)) if self.is_empty()? => return Ok(None),
            None | Some(Ok(None)) => "answers are cached but no configuration is".to_owned(),
        };
        tracing::error!(
            "{why}: its rules are unknown, so the cached approvals they may restrict are dropped; both refill from the service"
        );
        self.clear()?;
        self.set_meta("revision", "0")?;
        self.set_meta("config", "null")?;
        Ok(None)
    }

    /// Write a metadata value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )
        .map(drop)
        .map_err(|e| {
            self.heal(&mut conn, &e);
            self.sqlite(e)
        })
    }
}

/// Take group and others' read and write permissions from a directory of
/// ours (`0755` becomes `0711`): users may still pass through it to the
/// agent's request socket, but not list it or put anything in it. A
/// directory that is not ours, or that everyone may write to (`/tmp`
/// given as the data directory), is left alone: its files are protected
/// each by its own mode.
pub fn traverse_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)?;
    let mode = meta.mode() & 0o7777;
    let ours = meta.uid() == crate::users::effective_uid();
    if ours && mode & 0o002 == 0 && mode & 0o066 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o066))?;
    }
    Ok(())
}

/// Replace `path` with `bytes` so that a reader (or a crash) sees either the
/// old file or the new one, never a torn one: write a temporary file beside
/// it with `mode`, `fsync` it, rename it over `path`, `fsync` the directory.
/// The temporary file is made new (a file or link left at its name, by a
/// crash or by another user in a directory all may write to, is removed,
/// never opened): the bytes (a key, a token) go to no other file and get
/// no other mode.
pub fn write_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The enforcement levels the service set last, in a file of their own
/// (`levels.json` in the data directory) as well as in the cache's metadata.
/// A cache that is corrupt or missing is rebuilt empty; without this file the
/// agent would then start in its default level (monitor) and stay there until
/// it reached the service again.
#[derive(Debug, Clone)]
pub struct LevelsFile {
    path: PathBuf,
}

impl LevelsFile {
    /// The file in the data directory `dir`.
    pub fn in_dir(dir: &Path) -> LevelsFile {
        LevelsFile {
            path: dir.join("levels.json"),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The levels saved last: `None` when there is no file, or (logged) when
    /// it cannot be read or does not hold levels.
    pub fn load(&self) -> Option<Levels> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("{}: unreadable ({e}); ignored", self.path.display());
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(levels) => Some(levels),
            Err(e) => {
                tracing::warn!(
                    "{}: not a pair of levels ({e}); ignored",
                    self.path.display()
                );
                None
            }
        }
    }

    /// Save `levels`, replacing the file atomically.
    pub fn save(&self, levels: Levels) -> std::io::Result<()> {
        let json = serde_json::to_vec(&levels).map_err(std::io::Error::other)?;
        write_file_atomically(&self.path, &json, 0o644)
    }
}

/// The levels to enforce from the start, before the service says anything:
/// those saved last (the levels file, then the cache's copy, which agents
/// before the file had); else, when the cache had to be rebuilt (state was
/// lost, so this is not a first start), `lockdown` both ways, failing
/// closed; else `initial` (what `palisade up` asks for); else `monitor`.
pub fn starting_levels(
    saved: Option<Levels>,
    in_cache: Option<Levels>,
    cache_rebuilt: bool,
    initial: Option<Levels>,
) -> Levels {
    use palisade_core::Level;
    if let Some(l) = saved.or(in_cache) {
        return l;
    }
    if cache_rebuilt {
        tracing::error!(
            "the enforcement levels were lost with the cache; enforcing lockdown until the service sets them"
        );
        return Levels {
            connected: Level::Lockdown,
            disconnected: Level::Lockdown,
        };
    }
    initial.unwrap_or(Levels {
        connected: Level::Monitor,
        disconnected: Level::Monitor,
    })
}

const SPOOL: Kind = Kind {
    schema: "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL
);
",
    synchronous: "FULL",
};

/// A spool that starts afresh numbers its first event below this.
const FRESH_SPOOL_BELOW: i64 = 1 << 39;
/// A rebuilt spool numbers its first new event half this to this far past
/// the last event it kept.
const REBUILT_SPOOL_GAP: i64 = 1 << 32;

/// Whether the spool in `conn` has numbered an event yet (`sqlite_sequence`
/// remembers the last number even when every event is gone).
fn has_numbered(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'events'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Start the numbering of a spool that starts afresh (see the module
/// documentation): the next event is numbered at a random point, after
/// the events it holds.
fn start_numbering(conn: &Connection) -> rusqlite::Result<()> {
    use rand::Rng;
    let last: Option<i64> = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
    let mut rng = rand::thread_rng();
    let base = match last {
        None => rng.gen_range(0..FRESH_SPOOL_BELOW),
        Some(last) => last + rng.gen_range(REBUILT_SPOOL_GAP / 2..REBUILT_SPOOL_GAP),
    };
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'events'", [])?;
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?1)",
        [base],
    )?;
    Ok(())
}

/// Events waiting for upload.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Events set aside (lines of `events-refused.jsonl`), since the file
    /// was started.
    set_aside: std::sync::atomic::AtomicU64,
    /// Kept in memory: its file could not be used ([`open_rescuing`]).
    in_memory: std::sync::atomic::AtomicBool,
    /// See [`Spool::set_max_bytes`].
    max_bytes: std::sync::atomic::AtomicU64,
}

/// The most the spool holds by default (256 MiB of pages in use, some
/// hundreds of thousands of events): while the service is away, events
/// beyond it are counted as lost rather than written, so that a user who
/// makes events as fast as they can does not fill the disk the agent,
/// its cache and the rest of the system write to.
pub const SPOOL_MAX_BYTES: u64 = 256 << 20;

/// Bytes of the database's pages in use (not on its free list).
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| -> rusqlite::Result<u64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
    };
    Ok(pragma("page_count")?.saturating_sub(pragma("freelist_count")?) * pragma("page_size")?)
}

fn sqlite_error(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Lines in `path` (0 when it does not exist or cannot be read).
fn count_lines(path: &Path) -> u64 {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    while let Ok(len) = f.read(&mut buf) {
        if len == 0 {
            break;
        }
        n += buf[..len].iter().filter(|b| **b == b'\n').count() as u64;
    }
    n
}

impl Spool {
    /// Open (or create, or rebuild) the spool at `path`.
    /// Returns whether it started without its file as it was (rebuilt, or
    /// kept in memory: see [`open_rescuing`]).
    pub fn open(path: &Path) -> Result<(Self, bool), StoreError> {
        let (conn, opened) = open_rescuing(path, &SPOOL, salvage_events)?;
        let fresh =
            opened != Opened::Kept || !has_numbered(&conn).map_err(|e| sqlite_error(path, e))?;
        if fresh {
            start_numbering(&conn).map_err(|e| sqlite_error(path, e))?;
        }
        Ok((
            Spool {
                path: path.to_owned(),
                conn: Mutex::new(conn),
                set_aside: count_lines(&Self::set_aside_file(path)).into(),
                in_memory: (opened == Opened::Memory).into(),
                max_bytes: SPOOL_MAX_BYTES.into(),
            },
            opened != Opened::Kept,
        ))
    }

    /// Whether the spool is kept in memory (its file could not be used).
    pub fn in_memory(&self) -> bool {
        self.in_memory.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        sqlite_error(&self.path, source)
    }

    /// Append events (one transaction, synchronous to disk), as many as fit
    /// below the spool's limit ([`Spool::set_max_bytes`]); returns how many
    /// did not (the oldest are kept: the first signs of what happened
    /// while the service was away, rather than the end of a flood).
    pub fn push(&self, events: &[FileEvent]) -> Result<usize, StoreError> {
        let max = self.max_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.conn.lock();
        let res = (|| {
            let mut used = used_bytes(&conn)?;
            let tx = conn.transaction()?;
            let mut refused = 0;
            {
                let mut st = tx.prepare_cached("INSERT INTO events (event) VALUES (?1)")?;
                for e in events {
                    let json = serde_json::to_string(e).unwrap_or_default();
                    used += json.len() as u64;
                    if used > max {
                        refused += 1;
                        continue;
                    }
                    st.execute([json])?;
                }
            }
            tx.commit()?;
            Ok(refused)
        })();
        res.map_err(|e| {
            self.heal(&mut conn, &e);
            self.sqlite(e)
        })
    }

    /// Set the most the spool holds (its pages in use, in bytes; default
    /// [`SPOOL_MAX_BYTES`]).
    pub fn set_max_bytes(&self, max: u64) {
        self.max_bytes
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Rebuild the file if `e` says it is corrupt, keeping the events that
    /// can still be read. Until the fresh file opens, events go to memory.
    fn heal(&self, conn: &mut Connection, e: &rusqlite::Error) {
        if !is_corruption(e) {
            return;
        }
        let kept = salvage_events(conn);
        let Ok(memory) = Connection::open_in_memory() else {
            return;
        };
        drop(std::mem::replace(conn, memory));
        let (fresh, opened) = match rebuild(&self.path, &SPOOL, e, &kept) {
            Ok(fresh) => (fresh, Opened::Rebuilt),
            Err(err) => match in_memory(&self.path, &SPOOL, &err, &kept) {
                Ok(memory) => memory,
                Err(err) => {
                    tracing::error!("{err}");
                    return;
                }
            },
        };
        *conn = fresh;
        self.in_memory.store(
            opened == Opened::Memory,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Err(err) = start_numbering(conn) {
            tracing::error!(
                "{}: numbering the rebuilt spool afresh: {err}",
                self.path.display()
            );
        }
    }

    /// The oldest `limit` events, with their sequence numbers. Rows that do
    /// not parse are dropped (logged), so they cannot block the queue.
    /// A file that fails while being read is rebuilt (see [`Spool::heal`])
    /// and the error returned: the next call reads the rebuilt file.
    pub fn peek(&self, limit: usize) -> Result<Vec<(u64, FileEvent)>, StoreError> {
        let mut conn = self.conn.lock();
        let read = |conn: &Connection| -> rusqlite::Result<Vec<(i64, String)>> {
            let mut st =
                conn.prepare_cached("SELECT seq, event FROM events ORDER BY seq LIMIT ?1")?;
            let rows = st.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        let rows = match read(&conn) {
            Ok(rows) => rows,
            Err(e) => {
                self.heal(&mut conn, &e);
                return Err(self.sqlite(e));
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, json) in rows {
            match serde_json::from_str(&json) {
                Ok(ev) => out.push((seq as u64, ev)),
                Err(e) => {
                    tracing::warn!("spool: dropping unreadable event {seq}: {e}");
                    let _ = conn.execute("DELETE FROM events WHERE seq = ?1", [seq]);
                }
            }
        }
        Ok(out)
    }

    /// Remove events up to and including `seq` (acknowledged by the service).
    pub fn ack(&self, seq: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let res = conn.execute("DELETE FROM events WHERE seq <= ?1", [seq as i64]);
        res.map(drop).map_err(|e| {
            self.heal(&mut conn, &e);
            self.sqlite(e)
        })
    }

    /// Take one event the service refuses out of the queue, keeping it: it
    /// is appended (with `why`) as a JSON line to `events-refused.jsonl`
    /// next to the spool, synced, and only then removed. Returns that file.
    pub fn set_aside(&self, seq: u64, event: &FileEvent, why: &str) -> Result<PathBuf, StoreError> {
        let file = Self::set_aside_file(&self.path);
        let line = serde_json::json!({ "seq": seq, "refused": why, "event": event });
        let io = |e: std::io::Error| StoreError::Io {
            path: file.clone(),
            source: e,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&file)
            .map_err(io)?;
        writeln!(f, "{line}").map_err(io)?;
        f.sync_data().map_err(io)?;
        self.set_aside
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.conn.lock();
        let res = conn.execute("DELETE FROM events WHERE seq = ?1", [seq as i64]);
        res.map(drop).map_err(|e| {
            self.heal(&mut conn, &e);
            self.sqlite(e)
        })?;
        Ok(file)
    }

    /// Where events the service refused are kept, beside the spool at `path`.
    fn set_aside_file(path: &Path) -> PathBuf {
        path.with_file_name("events-refused.jsonl")
    }

    /// Events set aside so far (kept in `events-refused.jsonl`, across
    /// restarts).
    pub fn set_aside_count(&self) -> u64 {
        self.set_aside.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of events waiting.
    pub fn len(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sqlite(e))
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{ApprovalSource, EventKind, Level, Operation, ProcessContext, ScopeKind};

    /// A saved configuration that cannot be read takes the cached answers
    /// and the revision with it, once; a readable one is given back.
    #[test]
    fn an_unreadable_saved_configuration_drops_the_cached_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = PersistentCache::open(&dir.path().join("cache.db")).unwrap();
        let answer = CachedApproval {
            approval: Approval::Approved(ApprovalSource {
                scope: ScopeKind::Global,
            }),
            trust: None,
            revision: 7,
        };
        c.put_many(&[(sha(1), answer)]).unwrap();
        c.set_meta("revision", "7").unwrap();
        c.set_meta("config", r#"{"rules":[1]}"#).unwrap();
        assert!(c.saved_config::<serde_json::Value>().unwrap().is_some());
        assert!(c.get(&sha(1), Duration::from_secs(1)).unwrap().is_some());
        assert_eq!(
            c.saved_config::<Vec<u8>>().ok(),
            Some(None),
            "a configuration of another shape"
        );
        assert_eq!(c.get(&sha(1), Duration::from_secs(1)).unwrap(), None);
        assert_eq!(c.meta("revision").as_deref(), Some("0"));
        // Nothing saved and nothing cached: nothing to drop.
        assert_eq!(c.saved_config::<Vec<u8>>().unwrap(), None);
        assert_eq!(c.meta("config").as_deref(), Some("null"));
        // Answers cached with no configuration (its row lost while theirs
        // were kept, or cached before the service sent one) go the same way.
        c.put_many(&[(sha(1), answer)]).unwrap();
        c.set_meta("revision", "7").unwrap();
        assert_eq!(c.saved_config::<Vec<u8>>().unwrap(), None);
        assert_eq!(c.get(&sha(1), Duration::from_secs(1)).unwrap(), None);
        assert_eq!(c.meta("revision").as_deref(), Some("0"));
        // With one saved, they are kept.
        c.put_many(&[(sha(1), answer)]).unwrap();
        c.set_meta("config", "[1,2]").unwrap();
        assert_eq!(c.saved_config::<Vec<u8>>().unwrap(), Some(vec![1, 2]));
        assert!(c.get(&sha(1), Duration::from_secs(1)).unwrap().is_some());
    }

    /// A data directory of ours loses group and others' read and write
    /// (they still pass through to the request socket); one everyone may
    /// write to is left to its files' own modes.
    /// A link (or file) at the temporary name is replaced, not written
    /// through: before, the temporary file was opened with O_CREAT|O_TRUNC,
    /// so a link planted in a directory all may write to had root write
    /// the bytes (a key) into the file it pointed to.
    #[test]
    fn an_atomic_write_does_not_follow_a_link_at_its_temporary_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().join("client.key");
        std::os::unix::fs::symlink(&victim, dir.path().join(".client.key.tmp")).unwrap();
        write_file_atomically(&path, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A file left there with other permissions (a crash) does not
        // lend them.
        let tmp = dir.path().join(".client.key.tmp");
        std::fs::write(&tmp, b"old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_file_atomically(&path, b"again", 0o600).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
    }

    #[test]
    fn a_data_directory_is_made_traverse_only() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        set(&data, 0o755);
        traverse_only(&data).unwrap();
        assert_eq!(mode(&data), 0o711);
        set(&data, 0o700);
        traverse_only(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        set(&data, 0o1777);
        traverse_only(&data).unwrap();
        assert_eq!(mode(&data), 0o1777);
        assert!(traverse_only(&dir.path().join("missing")).is_err());
    }

    fn sha(n: u8) -> Sha256 {
        Sha256::from_bytes([n; 32])
    }

    #[test]
    fn cache_round_trip_and_revision_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let (c, rebuilt) = PersistentCache::open(&path).unwrap();
        assert!(!rebuilt);
        let approved = Approval::Approved(ApprovalSource {
            scope: ScopeKind::Global,
        });
        c.put_many(&[(
            sha(1),
            CachedApproval {
                approval: approved,
                trust: Some(9),
                revision: 5,
            },
        )])
        .unwrap();
        // An older answer never overwrites a newer one.
        c.put_many(&[(
            sha(1),
            CachedApproval {
                approval: Approval::Unknown,
                trust: None,
                revision: 4,
            },
        )])
        .unwrap();
        let got = c.get(&sha(1), Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(got.approval, approved);
        c.set_meta("revision", "5").unwrap();
        drop(c);
        let (c, _) = PersistentCache::open(&path).unwrap();
        assert_eq!(c.meta("revision").as_deref(), Some("5"));
        assert_eq!(c.all().unwrap().len(), 1);
        c.remove_many(&[sha(1)]).unwrap();
        assert!(c.get(&sha(1), Duration::from_secs(1)).unwrap().is_none());
    }

    #[test]
    fn corrupt_files_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        std::fs::write(
            &path,
            b"this is not a sqlite database, it is garbage ".repeat(200),
        )
        .unwrap();
        let (c, rebuilt) = PersistentCache::open(&path).unwrap();
        assert!(rebuilt);
        assert!(c.is_empty().unwrap());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
            .collect();
        assert_eq!(aside.len(), 1, "the corrupt file is kept for inspection");
    }

    #[test]
    fn spool_keeps_events_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let ev = FileEvent {
            time_ms: 1,
            kind: EventKind::Blocked,
            operation: Operation::Execute,
            sha256: Some(sha(2)),
            path: "/x".into(),
            approval: Approval::Unknown,
            level: Level::Lockdown,
            process: ProcessContext::unknown(1),
            reason: String::new(),
        };
        let (s, _) = Spool::open(&path).unwrap();
        s.push(&[ev.clone(), ev.clone(), ev.clone()]).unwrap();
        drop(s);
        let (s, _) = Spool::open(&path).unwrap();
        let batch = s.peek(2).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].1, ev);
        s.ack(batch[1].0).unwrap();
        assert_eq!(s.len().unwrap(), 1);
    }

    /// The cache and the spool, their `-wal` and `-shm` included, are
    /// root's alone: created so, and files of older versions (0644, from
    /// the umask) are made so when opened.
    #[test]
    fn the_databases_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode()
                & 0o777
        };
        // An older version's cache, left with its WAL files.
        let cache = dir.path().join("cache.db");
        Connection::open(&cache)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        for name in ["cache.db", "cache.db-wal", "cache.db-shm"] {
            let p = dir.path().join(name);
            if !p.exists() {
                std::fs::write(&p, b"").unwrap();
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let (c, _) = PersistentCache::open(&cache).unwrap();
        c.set_meta("k", "v").unwrap();
        let (s, _) = Spool::open(&dir.path().join("events.db")).unwrap();
        s.push(&[numbered_event(1)]).unwrap();
        for name in [
            "cache.db",
            "cache.db-wal",
            "cache.db-shm",
            "events.db",
            "events.db-wal",
            "events.db-shm",
        ] {
            assert_eq!(mode(name), 0o600, "{name}");
        }
    }

    fn numbered_event(n: usize) -> FileEvent {
        FileEvent {
            time_ms: n as i64,
            kind: EventKind::Blocked,
            operation: Operation::Execute,
            sha256: Some(sha(3)),
            path: format!("/events/{n:05}/{}", "x".repeat(200)),
            approval: Approval::Unknown,
            level: Level::Lockdown,
            process: ProcessContext::unknown(1),
            reason: String::new(),
        }
    }

    fn corrupt_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
            .count()
    }

    /// A spool damaged on disk is rebuilt with every event still readable,
    /// numbered as before: one bad page loses only its own rows.
    #[test]
    fn a_damaged_spool_keeps_its_readable_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let (s, _) = Spool::open(&path).unwrap();
        let all: Vec<FileEvent> = (1..=2000).map(numbered_event).collect();
        s.push(&all).unwrap();
        // Event n is numbered base + n.
        let base = s.peek(1).unwrap()[0].0 - 1;
        drop(s); // the last connection checkpoints the WAL into the file
                 // Overwrite a page in the middle of the table's leaves.
        let mut bytes = std::fs::read(&path).unwrap();
        let pages = bytes.len() / 4096;
        assert!(pages > 40, "{pages} pages");
        let page = pages / 2;
        bytes[page * 4096..(page + 1) * 4096].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();

        let (s, rebuilt) = Spool::open(&path).unwrap();
        assert!(rebuilt);
        assert_eq!(corrupt_files(dir.path()), 1, "kept for inspection");
        let left = s.len().unwrap();
        assert!((1900..2000).contains(&left), "{left} events kept");
        let batch = s.peek(2000).unwrap();
        assert_eq!(batch.len() as u64, left);
        assert_eq!(batch[0], (base + 1, numbered_event(1)), "numbers kept");
        assert_eq!(*batch.last().unwrap(), (base + 2000, numbered_event(2000)));
        assert!(batch
            .iter()
            .all(|(seq, e)| *e == numbered_event((*seq - base) as usize)));
        // New events come after the kept ones, far past any number the
        // damaged spool gave.
        s.push(&[numbered_event(2001)]).unwrap();
        let next = s.peek(3000).unwrap().last().unwrap().0;
        assert!(next > base + 2000 + (1 << 30), "{next}");
    }

    /// Corruption found while the agent runs rebuilds the spool at once,
    /// keeping its events and their numbers (an upload in flight
    /// acknowledges by them).
    #[test]
    fn corruption_found_at_run_time_rebuilds_the_spool_keeping_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let (s, _) = Spool::open(&path).unwrap();
        s.push(&(1..=10).map(numbered_event).collect::<Vec<_>>())
            .unwrap();
        // Event n is numbered b + n.
        let b = s.peek(1).unwrap()[0].0 - 1;
        s.ack(b + 4).unwrap();
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        s.heal(&mut s.conn.lock(), &corrupt);
        assert_eq!(corrupt_files(dir.path()), 1);
        let batch = s.peek(100).unwrap();
        assert_eq!(
            batch.iter().map(|(seq, _)| *seq - b).collect::<Vec<_>>(),
            (5..=10).collect::<Vec<_>>()
        );
        s.ack(b + 7).unwrap();
        s.push(&[numbered_event(11)]).unwrap();
        let seqs: Vec<u64> = s.peek(100).unwrap().iter().map(|(q, _)| *q).collect();
        assert_eq!(seqs[..3], [b + 8, b + 9, b + 10]);
        assert!(seqs[3] > b + 10 + (1 << 30), "numbered afresh: {seqs:?}");
        // An event the service refuses leaves the queue for a file of its own.
        let aside = s
            .set_aside(b + 9, &numbered_event(9), "422: refused")
            .unwrap();
        let seqs: Vec<u64> = s.peek(100).unwrap().iter().map(|(q, _)| *q).collect();
        assert_eq!(seqs[..2], [b + 8, b + 10]);
        assert_eq!(seqs.len(), 3);
        let kept: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&aside).unwrap().trim()).unwrap();
        assert_eq!(kept["seq"], b + 9);
        assert_eq!(kept["refused"], "422: refused");
        // Counted, across restarts (from the file).
        assert_eq!(s.set_aside_count(), 1);
        assert_eq!(Spool::open(&s.path).unwrap().0.set_aside_count(), 1);
        assert_eq!(
            serde_json::from_value::<FileEvent>(kept["event"].clone()).unwrap(),
            numbered_event(9)
        );
        // Errors that are not corruption leave the file alone.
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        s.heal(&mut s.conn.lock(), &busy);
        assert_eq!(corrupt_files(dir.path()), 1);
    }

    /// Regression: any failure to open a store was taken for corruption:
    /// a whole file was moved aside (its answers, its events gone), and
    /// when the fresh one could not be made either (the same full or
    /// read-only disk) the agent did not start, enforcing nothing. Now a
    /// store that cannot be opened, and not for corruption, is left alone
    /// and kept in memory.
    #[test]
    fn a_store_that_cannot_be_opened_is_kept_in_memory_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["cache.db", "events.db"] {
            // Not a database SQLite can open, nor a damaged one.
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("keep"), b"x").unwrap();
        }
        let (c, lost) = PersistentCache::open(&dir.path().join("cache.db")).unwrap();
        assert!(lost && c.in_memory());
        let (s, lost) = Spool::open(&dir.path().join("events.db")).unwrap();
        assert!(lost && s.in_memory());
        assert_eq!(corrupt_files(dir.path()), 0, "nothing moved aside");
        for name in ["cache.db", "events.db"] {
            assert!(
                dir.path().join(name).join("keep").exists(),
                "{name} left alone"
            );
        }
        // Both work, in memory.
        let answer = CachedApproval {
            approval: Approval::Banned(ApprovalSource {
                scope: ScopeKind::Global,
            }),
            trust: None,
            revision: 1,
        };
        c.put_many(&[(sha(1), answer)]).unwrap();
        assert_eq!(
            c.get(&sha(1), Duration::from_secs(1)).unwrap(),
            Some(answer)
        );
        s.push(&[numbered_event(1)]).unwrap();
        assert_eq!(s.peek(10).unwrap().len(), 1);
    }

    /// Regression: a cache rebuilt (found corrupt at start or while
    /// running) lost its metadata with its answers: the saved configuration
    /// (so a restart while the service was away enforced the answers that
    /// refilled with none of the rules restricting them) and the spool id
    /// (events waiting were numbered anew). Now what can be read of it is
    /// kept, but the revision, which goes with the answers.
    #[test]
    fn a_rebuilt_cache_keeps_its_settings_but_not_its_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let answer = CachedApproval {
            approval: Approval::Approved(ApprovalSource {
                scope: ScopeKind::Global,
            }),
            trust: None,
            revision: 9,
        };
        let fill = || {
            let (c, _) = PersistentCache::open(&path).unwrap();
            c.set_meta("config", r#"{"rules":[]}"#).unwrap();
            c.set_meta("spool_id", "1234").unwrap();
            c.set_meta("revision", "9").unwrap();
            let answers: Vec<_> = (0..3000u32)
                .map(|n| {
                    let mut b = [0u8; 32];
                    b[..4].copy_from_slice(&n.to_be_bytes());
                    (Sha256::from_bytes(b), answer)
                })
                .collect();
            c.put_many(&answers).unwrap();
            // The last connection checkpoints the WAL into the file.
        };
        let damage = || {
            let mut bytes = std::fs::read(&path).unwrap();
            let pages = bytes.len() / 4096;
            assert!(pages > 40, "{pages} pages");
            let page = pages / 2;
            bytes[page * 4096..(page + 1) * 4096].fill(0xA5);
            std::fs::write(&path, &bytes).unwrap();
        };
        let check = |c: &PersistentCache| {
            assert_eq!(c.meta("config").as_deref(), Some(r#"{"rules":[]}"#));
            assert_eq!(c.meta("spool_id").as_deref(), Some("1234"));
            assert_eq!(c.meta("revision"), None, "caught up from the start");
            assert!(c.is_empty().unwrap(), "the answers refill from the service");
        };
        // Found at start.
        fill();
        damage();
        let (c, rebuilt) = PersistentCache::open(&path).unwrap();
        assert!(rebuilt && !c.in_memory());
        assert_eq!(corrupt_files(dir.path()), 1);
        check(&c);
        drop(c);
        std::fs::remove_file(&path).unwrap();
        // Found while running.
        fill();
        let (c, rebuilt) = PersistentCache::open(&path).unwrap();
        assert!(!rebuilt);
        damage();
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        c.heal(&mut c.conn.lock(), &corrupt);
        assert_eq!(corrupt_files(dir.path()), 2);
        check(&c);
    }

    /// An answer that says nothing is not kept (every distinct file any
    /// user runs gets one: kept, they would grow the file without bound),
    /// but it still replaces an older answer.
    #[test]
    fn unknown_answers_are_not_kept_but_replace_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = PersistentCache::open(&dir.path().join("cache.db")).unwrap();
        let at = |approval, revision| CachedApproval {
            approval,
            trust: None,
            revision,
        };
        let approved = Approval::Approved(ApprovalSource {
            scope: ScopeKind::Global,
        });
        let unknowns: Vec<_> = (0..100u8)
            .map(|n| (sha(n), at(Approval::Unknown, 1)))
            .collect();
        c.put_many(&unknowns).unwrap();
        assert_eq!(c.len().unwrap(), 0);
        c.put_many(&[(sha(1), at(approved, 5)), (sha(2), at(approved, 5))])
            .unwrap();
        // Newer: the approval goes; older: it stays.
        c.put_many(&[(sha(1), at(Approval::Unknown, 6))]).unwrap();
        c.put_many(&[(sha(2), at(Approval::Unknown, 4))]).unwrap();
        assert_eq!(c.get(&sha(1), Duration::from_secs(1)).unwrap(), None);
        assert_eq!(
            c.get(&sha(2), Duration::from_secs(1)).unwrap(),
            Some(at(approved, 5))
        );
        // A trust rating is something to keep.
        let rated = CachedApproval {
            trust: Some(7),
            ..at(Approval::Unknown, 6)
        };
        c.put_many(&[(sha(3), rated)]).unwrap();
        assert_eq!(c.get(&sha(3), Duration::from_secs(1)).unwrap(), Some(rated));
    }

    /// The spool holds at most its limit: beyond it, events are refused
    /// (the caller counts them as lost), the oldest kept; room made by
    /// uploads takes events again.
    #[test]
    fn the_spool_refuses_events_beyond_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(&dir.path().join("events.db")).unwrap();
        s.set_max_bytes(256 << 10);
        let refused = s
            .push(&(1..=2000).map(numbered_event).collect::<Vec<_>>())
            .unwrap();
        let kept = s.len().unwrap();
        assert_eq!(kept + refused as u64, 2000);
        // About 450 bytes an event: some hundreds fit, not all.
        assert!((300..1000).contains(&kept), "{kept} kept");
        let batch = s.peek(5000).unwrap();
        assert_eq!(batch[0].1, numbered_event(1), "the oldest kept");
        assert_eq!(s.push(&[numbered_event(2001)]).unwrap(), 1, "still full");
        s.ack(batch.last().unwrap().0).unwrap();
        assert_eq!(s.push(&[numbered_event(2002)]).unwrap(), 0, "room again");
        assert_eq!(s.peek(10).unwrap()[0].1, numbered_event(2002));
    }

    /// Regression: a spool that started afresh (its file lost, or rebuilt
    /// with nothing readable) numbered its events from 1 again; the
    /// service took each for a retry of the earlier spool's event of that
    /// number, acknowledged it unstored, and the agent deleted it.
    #[test]
    fn a_spool_started_afresh_does_not_reuse_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let numbers = |s: &Spool| -> Vec<u64> {
            s.push(&(1..=3).map(numbered_event).collect::<Vec<_>>())
                .unwrap();
            let seqs: Vec<u64> = s.peek(100).unwrap().iter().map(|(q, _)| *q).collect();
            s.ack(*seqs.last().unwrap()).unwrap();
            assert!(seqs.iter().all(|q| *q < 1 << 40), "{seqs:?}");
            seqs
        };
        let (s, _) = Spool::open(&path).unwrap();
        let first = numbers(&s);
        drop(s);
        // Reopened: numbering goes on.
        let (s, rebuilt) = Spool::open(&path).unwrap();
        assert!(!rebuilt);
        let second = numbers(&s);
        assert_eq!(second[0], first[2] + 1);
        drop(s);
        // The file is lost: a new spool, numbered elsewhere.
        for f in ["events.db", "events.db-wal", "events.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let (s, _) = Spool::open(&path).unwrap();
        let third = numbers(&s);
        drop(s);
        // The file is garbage (nothing to keep): rebuilt, numbered elsewhere.
        std::fs::write(&path, b"not a database".repeat(500)).unwrap();
        let (s, rebuilt) = Spool::open(&path).unwrap();
        assert!(rebuilt);
        let fourth = numbers(&s);
        let mut all: Vec<u64> = [first, second, third, fourth].concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 12, "a number was given twice: {all:?}");
    }

    fn levels(connected: Level, disconnected: Level) -> Levels {
        Levels {
            connected,
            disconnected,
        }
    }

    #[test]
    fn levels_file_round_trip_and_bad_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = LevelsFile::in_dir(dir.path());
        assert_eq!(f.load(), None, "no file yet");
        let l = levels(Level::Lockdown, Level::Monitor);
        f.save(l).unwrap();
        assert_eq!(f.load(), Some(l));
        let l2 = levels(Level::Monitor, Level::Disabled);
        f.save(l2).unwrap();
        assert_eq!(LevelsFile::in_dir(dir.path()).load(), Some(l2));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["levels.json"], "no temporary file left behind");
        std::fs::write(f.path(), b"{\"connected\":\"strict\"}").unwrap();
        assert_eq!(f.load(), None, "an unknown level is not a pair of levels");
        std::fs::write(f.path(), b"\0\0garbage").unwrap();
        assert_eq!(f.load(), None);
        f.save(l).unwrap();
        assert_eq!(f.load(), Some(l), "a bad file is replaced by the next save");
    }

    #[test]
    fn starting_levels_prefer_what_was_saved_and_fail_closed_when_it_was_lost() {
        let saved = levels(Level::Lockdown, Level::Monitor);
        let cached = levels(Level::Monitor, Level::Monitor);
        let asked = levels(Level::Disabled, Level::Disabled);
        let lockdown = levels(Level::Lockdown, Level::Lockdown);
        let monitor = levels(Level::Monitor, Level::Monitor);
        assert_eq!(
            starting_levels(Some(saved), Some(cached), true, Some(asked)),
            saved
        );
        assert_eq!(
            starting_levels(None, Some(cached), false, Some(asked)),
            cached
        );
        assert_eq!(starting_levels(None, None, true, Some(asked)), lockdown);
        assert_eq!(starting_levels(None, None, false, Some(asked)), asked);
        assert_eq!(starting_levels(None, None, false, None), monitor);
    }
}
