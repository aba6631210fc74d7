//! The local control socket: `palisade status` asks the running agent what
//! it is doing. One JSON document per connection; root only (0600).
pub use crate::asuser::Requester;
use crate::engine::StatsSnapshot;
use crate::latency::LatencySnapshot;
use anyhow::{Context, Result};
use palisade_core::{Level, Levels};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the agent says about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ControlStatus {
    /// Agent version.
    pub version: String,
    /// This computer's name at the service.
    pub computer: String,
    /// Service URL.
    pub server: String,
    /// Policy, as last heard from the service.
    pub policy: Option<String>,
    /// Whether the link to the service is up.
    pub connected: bool,
    /// The level in force.
    pub level: Level,
    /// The policy's levels.
    pub levels: Levels,
    /// Whether permission events are being read and answered.
    pub enforcing: bool,
    /// Whether the BPF guard is loaded.
    pub guard_active: bool,
    /// Mount points watched.
    pub watched: Vec<String>,
    /// Counters.
    pub stats: StatsSnapshot,
    /// How long answers took (absent from older agents).
    #[serde(default)]
    pub latency: LatencySnapshot,
    /// Events waiting on disk for upload.
    pub spool_pending: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Events the service refused, kept in `events-refused.jsonl`.
    #[serde(default)]
    pub events_set_aside: u64,
    /// Approvals cached in memory.
    pub cached_approvals: usize,
    /// On-disk stores (cache, spool) kept in memory because their file
    /// could not be used: what they hold is lost at a restart.
    #[serde(default)]
    pub stores_in_memory: Vec<String>,
    /// When the client certificate stops being valid, and when it is
    /// renewed (Unix seconds; 0 when unknown: an older agent).
    #[serde(default)]
    pub certificate_expires: i64,
    /// See `certificate_expires`.
    #[serde(default)]
    pub certificate_renewal_due: i64,
}

/// Serve `status()` on `path` until the process exits.
pub fn serve(path: &Path, status: impl Fn() -> ControlStatus + Send + 'static) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("palisade-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let body = serde_json::to_vec(&status()).unwrap_or_default();
                let _ = conn.write_all(&body);
            }
        })?;
    Ok(())
}

/// Ask the agent listening on `path`.
pub fn query(path: &Path) -> Result<ControlStatus> {
    let mut conn = UnixStream::connect(path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = Vec::new();
    conn.read_to_end(&mut body)?;
    serde_json::from_slice(&body).context("malformed answer from the agent")
}

/// A local user's approval request, as sent on the request socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LocalRequest {
    /// The blocked file (absolute path).
    pub path: String,
    /// Why the user needs it.
    #[serde(default)]
    pub reason: String,
    /// Only hash the file and say its SHA-256; file nothing. `palisade
    /// file approve|show PATH` asks this when its own read of the file is
    /// refused: without the BPF guard, an ELF file read on a watched mount
    /// is judged as a library load, and the agent no longer lets its own
    /// program's process load anything unknown (`LD_PRELOAD` would have
    /// ridden along).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hash_only: bool,
}

/// The agent's answer on the request socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum LocalRequestAnswer {
    /// Filed: the request's id at the service.
    Filed {
        /// Request id.
        id: i64,
    },
    /// Refused, with the reason.
    Refused {
        /// Why.
        error: String,
    },
    /// Hashed (a `hash_only` request).
    Hashed {
        /// The file's SHA-256.
        sha256: palisade_core::Sha256,
        /// The file, as the agent resolved it.
        path: String,
    },
}

/// Approval requests filed per user per minute.
const REQUESTS_PER_MINUTE: usize = 10;

/// Connections per user per minute, hashing included.
const CONNECTIONS_PER_MINUTE: usize = 60;

/// Requests handled at once (each on a thread of its own: hashing a large
/// file or a slow service holds up no other user), at most one per user.
/// Beyond it, a request is refused as busy: one user's requests (silent
/// clients, or files hashed one after another) hold one place, never all.
const REQUESTS_AT_ONCE: usize = 4;

/// How long a request may take to arrive, in all.
const REQUEST_ARRIVAL: Duration = Duration::from_secs(5);

/// The largest request read.
const REQUEST_MAX: usize = 64 * 1024;

/// Serve approval requests from local users on `path` (mode 0666: any user
/// may ask). The requester is identified by the socket's peer credentials
/// (taken when it connected), never by what they send, and the file is
/// opened with the requester's own permissions
/// ([`crate::asuser::open_as`]). `handle` answers one request, on a thread
/// of background priority; at most [`REQUESTS_PER_MINUTE`] filing
/// requests per user reach it, and one request per user at a time.
pub fn serve_requests(
    path: &Path,
    handle: impl Fn(&Requester, LocalRequest, &dyn Fn() -> bool) -> Result<LocalRequestAnswer, String>
        + Send
        + Sync
        + 'static,
) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let handle = std::sync::Arc::new(handle);
    let connections = std::sync::Arc::new(RecentRequests::new(CONNECTIONS_PER_MINUTE));
    let filed = std::sync::Arc::new(RecentRequests::new(REQUESTS_PER_MINUTE));
    let active = std::sync::Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let closer = Closer::start()?;
    std::thread::Builder::new()
        .name("palisade-requests".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                let refuse = |mut conn: UnixStream, error: String| {
                    let answer = LocalRequestAnswer::Refused { error };
                    let _ = conn.write_all(&serde_json::to_vec(&answer).unwrap_or_default());
                    closer.hold(conn);
                };
                let cred = match rustix::net::sockopt::socket_peercred(&conn) {
                    Ok(cred) => cred,
                    Err(e) => {
                        refuse(conn, format!("cannot identify the requester: {e}"));
                        continue;
                    }
                };
                let uid = cred.uid.as_raw();
                if !connections.admit(uid) {
                    refuse(conn, "too many requests; try again in a minute".into());
                    continue;
                }
                let slot = match Slot::take(&active, uid) {
                    Ok(slot) => slot,
                    Err(Busy::Yours) => {
                        refuse(
                            conn,
                            "the agent is busy with another request of yours; try again when it is answered".into(),
                        );
                        continue;
                    }
                    Err(Busy::Full) => {
                        refuse(
                            conn,
                            "the agent is busy with other requests; try again".into(),
                        );
                        continue;
                    }
                };
                let handle = handle.clone();
                let filed = filed.clone();
                let pid = cred.pid.as_raw_nonzero().get() as u32;
                let spawned = std::thread::Builder::new()
                    .name("palisade-request".into())
                    .spawn(move || {
                        // Given back however the thread ends.
                        let _slot = slot;
                        // A user's hashing must not hold a CPU that a
                        // process waiting on a decision needs.
                        crate::engine::background_priority();
                        let who = Requester::peer(pid, uid, cred.gid.as_raw());
                        let answer = match read_request(&mut conn) {
                            Err(error) => LocalRequestAnswer::Refused { error },
                            Ok(req) if !req.hash_only && !filed.admit(uid) => {
                                LocalRequestAnswer::Refused {
                                    error: "too many requests; try again in a minute".into(),
                                }
                            }
                            // The handler may ask whether the requester
                            // hung up, and stop hashing for nobody.
                            Ok(req) => handle(&who, req, &|| requester_gone(&conn))
                                .unwrap_or_else(|error| LocalRequestAnswer::Refused { error }),
                        };
                        let _ = conn.write_all(&serde_json::to_vec(&answer).unwrap_or_default());
                    });
                if let Err(e) = spawned {
                    tracing::warn!("request socket: cannot start a thread: {e}");
                }
            }
        })?;
    Ok(())
}

/// Connections refused before their request was read. Closing a Unix
/// socket with data unread resets it, and the client would lose the
/// answer: so each is kept open, on one thread, until the client has sent
/// its request (or a second has passed), and what it sends is discarded.
struct Closer(std::sync::mpsc::SyncSender<UnixStream>);

impl Closer {
    /// Connections held at once (more are closed at once).
    const HELD: usize = 64;
    /// How long one is held.
    const HOLD: Duration = Duration::from_secs(1);

    fn start() -> std::io::Result<Closer> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<UnixStream>(Self::HELD);
        std::thread::Builder::new()
            .name("palisade-request-close".into())
            .spawn(move || {
                let mut held: Vec<(UnixStream, Instant)> = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let wait = if held.is_empty() {
                        Duration::from_secs(3600)
                    } else {
                        Duration::from_millis(20)
                    };
                    match rx.recv_timeout(wait) {
                        Ok(conn)
                            if held.len() < Self::HELD && conn.set_nonblocking(true).is_ok() =>
                        {
                            held.push((conn, Instant::now() + Self::HOLD));
                        }
                        Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    held.retain_mut(|(conn, until)| {
                        if Instant::now() >= *until {
                            return false;
                        }
                        loop {
                            match conn.read(&mut buf) {
                                Ok(0) => return false,
                                Ok(_) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    return true
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                                Err(_) => return false,
                            }
                        }
                    });
                }
            })?;
        Ok(Closer(tx))
    }

    /// Hold `conn` until its client is done sending (closed at once when
    /// too many are held already).
    fn hold(&self, conn: UnixStream) {
        let _ = self.0.try_send(conn);
    }
}

/// The users whose request is being handled (one each).
type Active = std::sync::Arc<parking_lot::Mutex<HashSet<u32>>>;

/// One of the [`REQUESTS_AT_ONCE`] places, held by a user; given back when
/// dropped.
struct Slot(Active, u32);

/// Why a request found no place.
#[derive(Debug, PartialEq, Eq)]
enum Busy {
    /// The user has a request in flight already.
    Yours,
    /// Every place is taken.
    Full,
}

impl Slot {
    fn take(active: &Active, uid: u32) -> Result<Slot, Busy> {
        let mut users = active.lock();
        if users.contains(&uid) {
            return Err(Busy::Yours);
        }
        if users.len() >= REQUESTS_AT_ONCE {
            return Err(Busy::Full);
        }
        users.insert(uid);
        Ok(Slot(active.clone(), uid))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Each user's requests of the last minute, at most `.1` each.
struct RecentRequests(parking_lot::Mutex<HashMap<u32, Vec<Instant>>>, usize);

impl RecentRequests {
    fn new(per_minute: usize) -> RecentRequests {
        RecentRequests(parking_lot::Mutex::default(), per_minute)
    }

    /// Count a request from `uid`, unless it made its share this minute.
    fn admit(&self, uid: u32) -> bool {
        let mut recent = self.0.lock();
        recent.retain(|_, times| {
            times.retain(|t| t.elapsed() < Duration::from_secs(60));
            !times.is_empty()
        });
        let times = recent.entry(uid).or_default();
        if times.len() >= self.1 {
            return false;
        }
        times.push(Instant::now());
        true
    }
}

/// Read one request: all of it within [`REQUEST_ARRIVAL`] (a client
/// trickling bytes is cut off, not waited for byte by byte), at most
/// [`REQUEST_MAX`] bytes.
/// Whether the client of `conn` closed its end: it has sent its request
/// (and shut its sending side), so only a full close raises `POLLHUP`.
fn requester_gone(conn: &UnixStream) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(conn, PollFlags::empty())];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR),
        Err(_) => false,
    }
}

fn read_request(conn: &mut UnixStream) -> Result<LocalRequest, String> {
    let end = Instant::now() + REQUEST_ARRIVAL;
    let mut body = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let timed_out = || format!("the request did not arrive within {REQUEST_ARRIVAL:?}");
        if left.is_zero() {
            return Err(timed_out());
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if body.len() + n > REQUEST_MAX => {
                return Err(format!("request larger than {REQUEST_MAX} bytes"))
            }
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("malformed request: {e}"))
}

/// Send a request to the agent listening on `path`.
pub fn request(path: &Path, req: &LocalRequest) -> Result<LocalRequestAnswer> {
    let mut conn = UnixStream::connect(path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(&serde_json::to_vec(req)?)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut body = Vec::new();
    conn.read_to_end(&mut body)?;
    serde_json::from_slice(&body).context("malformed answer from the agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request server whose `file` answers with the requester's uid,
    /// after `delay`.
    fn server(dir: &Path, delay: Duration) -> std::path::PathBuf {
        let path = dir.join("request.sock");
        serve_requests(&path, move |who, _, _| {
            std::thread::sleep(delay);
            Ok(LocalRequestAnswer::Filed {
                id: i64::from(who.uid),
            })
        })
        .unwrap();
        path
    }

    fn ask(path: &Path) -> LocalRequestAnswer {
        request(
            path,
            &LocalRequest {
                path: "/bin/true".into(),
                reason: "test".into(),
                hash_only: false,
            },
        )
        .unwrap()
    }

    /// A client that connects and sends nothing holds up no other user,
    /// and is cut off once its time to send is over.
    #[test]
    fn a_silent_client_holds_up_no_other_request() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to connect as another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = server(dir.path(), Duration::ZERO);
        // Another user's (the peer's credentials are taken at connect).
        let mut silent = {
            let path = path.clone();
            std::thread::spawn(move || {
                let _as = crate::asuser::Switched::to(&Requester {
                    uid: 65534,
                    gid: 65534,
                    groups: Vec::new(),
                })
                .unwrap();
                UnixStream::connect(&path).unwrap()
            })
            .join()
            .unwrap()
        };
        let started = Instant::now();
        let uid = rustix::process::getuid().as_raw();
        assert!(matches!(ask(&path), LocalRequestAnswer::Filed { id } if id == i64::from(uid)));
        assert!(started.elapsed() < Duration::from_secs(2));
        let mut answer = String::new();
        silent.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("did not arrive within"), "{answer}");
        let took = started.elapsed();
        assert!(
            took >= REQUEST_ARRIVAL && took < REQUEST_ARRIVAL + Duration::from_secs(2),
            "{took:?}"
        );
    }

    /// [`ask`] from a thread of its own, switched to `uid` (as root).
    fn ask_as(path: &Path, uid: u32) -> std::thread::JoinHandle<LocalRequestAnswer> {
        let path = path.to_owned();
        std::thread::spawn(move || {
            let who = Requester {
                uid,
                gid: uid,
                groups: Vec::new(),
            };
            let _switched = crate::asuser::Switched::to(&who).unwrap();
            ask(&path)
        })
    }

    fn refused(answer: LocalRequestAnswer) -> String {
        match answer {
            LocalRequestAnswer::Refused { error } => error,
            other => panic!("not refused: {other:?}"),
        }
    }

    /// A request over the size limit is refused as such; requests beyond
    /// those handled at once are refused as busy, not queued.
    #[test]
    fn oversized_and_excess_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = server(dir.path(), Duration::from_secs(3));
        let mut big = UnixStream::connect(&path).unwrap();
        let _ = big.write_all(&vec![b' '; REQUEST_MAX + 1]);
        let _ = big.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        big.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("larger than"), "{answer}");

        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped the rest: needs root to ask as several users");
            return;
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Each takes 3 s in `handle`: REQUESTS_AT_ONCE users fill the
        // server.
        let slow: Vec<_> = (0..REQUESTS_AT_ONCE as u32)
            .map(|i| ask_as(&path, 60_000 + i))
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let error = refused(ask_as(&path, 61_000).join().unwrap());
        assert!(error.contains("busy with other requests"), "{error}");
        for (i, t) in slow.into_iter().enumerate() {
            assert!(matches!(
                t.join().unwrap(),
                LocalRequestAnswer::Filed { id } if id == 60_000 + i as i64
            ));
        }
    }

    /// One user has one request handled at a time: a second is refused as
    /// busy while the first is in flight (so one user's requests, however
    /// many, never take every place), and another user is still served.
    #[test]
    fn one_request_per_user_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = server(dir.path(), Duration::from_secs(2));
        let first = {
            let path = path.clone();
            std::thread::spawn(move || ask(&path))
        };
        std::thread::sleep(Duration::from_millis(500));
        let error = refused(ask(&path));
        assert!(
            error.contains("busy with another request of yours"),
            "{error}"
        );
        if rustix::process::geteuid().is_root() {
            assert!(matches!(
                ask_as(&path, 65534).join().unwrap(),
                LocalRequestAnswer::Filed { id: 65534 }
            ));
        }
        assert!(matches!(
            first.join().unwrap(),
            LocalRequestAnswer::Filed { .. }
        ));
        // Its place is given back.
        assert!(matches!(ask(&path), LocalRequestAnswer::Filed { .. }));
    }

    /// A handler can tell a requester that waits from one that hung up
    /// (the agent stops hashing for nobody).
    #[test]
    fn a_handler_sees_its_requester_hang_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("request.sock");
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = parking_lot::Mutex::new(tx);
        serve_requests(&path, move |_, _, gone| {
            // First while the requester waits, then until it hangs up.
            let _ = tx.lock().send(gone());
            let until = Instant::now() + Duration::from_secs(10);
            while !gone() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.lock().send(gone());
            Err("gone".into())
        })
        .unwrap();
        let mut conn = UnixStream::connect(&path).unwrap();
        let body = serde_json::to_vec(&LocalRequest {
            path: "/bin/true".into(),
            reason: String::new(),
            hash_only: true,
        })
        .unwrap();
        conn.write_all(&body).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let wait = Duration::from_secs(20);
        assert!(
            !rx.recv_timeout(wait).unwrap(),
            "a requester that waits is not gone"
        );
        let closed = Instant::now();
        drop(conn);
        assert!(
            rx.recv_timeout(wait).unwrap(),
            "the hang-up was not seen in 10 s"
        );
        assert!(closed.elapsed() < Duration::from_secs(5));
    }

    /// A user files at most REQUESTS_PER_MINUTE requests a minute, but may
    /// still have files hashed (the CLI's fallback when its read is
    /// refused), up to CONNECTIONS_PER_MINUTE.
    #[test]
    fn filing_is_limited_apart_from_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("request.sock");
        serve_requests(&path, |_, req, _| {
            Ok(if req.hash_only {
                LocalRequestAnswer::Hashed {
                    sha256: palisade_core::Sha256::from_bytes([7; 32]),
                    path: req.path,
                }
            } else {
                LocalRequestAnswer::Filed { id: 1 }
            })
        })
        .unwrap();
        for _ in 0..REQUESTS_PER_MINUTE {
            assert!(matches!(ask(&path), LocalRequestAnswer::Filed { .. }));
        }
        match ask(&path) {
            LocalRequestAnswer::Refused { error } => assert!(error.contains("too many"), "{error}"),
            other => panic!("{other:?}"),
        }
        let hash = LocalRequest {
            path: "/bin/true".into(),
            reason: String::new(),
            hash_only: true,
        };
        let left = CONNECTIONS_PER_MINUTE - REQUESTS_PER_MINUTE - 1;
        for _ in 0..left {
            assert!(matches!(
                request(&path, &hash).unwrap(),
                LocalRequestAnswer::Hashed { .. }
            ));
        }
        match request(&path, &hash).unwrap() {
            LocalRequestAnswer::Refused { error } => assert!(error.contains("too many"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
