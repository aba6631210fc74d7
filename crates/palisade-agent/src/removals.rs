//! Names that come and go on the watched filesystems.
//!
//! - Instances that disappear: which files holding code are deleted or moved
//!   away from where the agent saw them, so the service can show their local
//!   state as `deleted` (and stop explaining them as present).
//! - Names that arrive (a rename, a new hard link): handed to [`Arrivals`],
//!   the engine, whose kernel-side cache knows inodes and must not let an
//!   allow made under one name cover a name that a rule looks at.
//!
//! A fanotify name group (`FAN_REPORT_DFID_NAME`, Linux 5.9) reports every
//! `unlink`/`rename` on the watched filesystems as (directory handle, name);
//! the directory is opened by its handle (`O_PATH`, which raises no
//! permission event) to learn its path. Only paths the agent knows to hold
//! code ([`CodePaths`]: hashed at a decision, on write, or by the scan since
//! it started) are reported, so temporary files cost nothing but the
//! event; a directory moved away is always reported (everything seen under
//! it is gone from there). Filesystems that cannot report names (those
//! without file handles: ramfs, tmpfs on older kernels, some network
//! filesystems) are logged and skipped; [`start`] returns the devices it
//! follows.
use crate::cache::Cache;
use crate::mounts::Mount;
use palisade_api::agent::RemovedPath;
use palisade_kernel::fanotify::{self, Fanotify, Mask};
use palisade_kernel::Stop;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Paths known to hold code (bounded: two generations of 65,536), and
/// those reported removed (so that code appearing there again is reported
/// too, and the service revives the instance).
pub struct CodePaths {
    present: Mutex<Cache<String, ()>>,
    removed: Mutex<Cache<String, ()>>,
}

impl Default for CodePaths {
    fn default() -> Self {
        CodePaths {
            present: Mutex::new(Cache::new(65_536)),
            removed: Mutex::new(Cache::new(16_384)),
        }
    }
}

impl CodePaths {
    /// `path` holds code. True when it had been reported removed.
    pub fn note(&self, path: &str) -> bool {
        let key = path.to_owned();
        let mut present = self.present.lock();
        if present.get(&key).is_none() {
            present.insert(key.clone(), ());
        }
        drop(present);
        self.removed.lock().remove(&key).is_some()
    }

    /// Whether `path` was known to hold code; if so it is now removed.
    pub fn take(&self, path: &str) -> bool {
        let key = path.to_owned();
        let known = self.present.lock().remove(&key).is_some();
        if known {
            self.removed.lock().insert(key, ());
        }
        known
    }
}

/// Who is told of names arriving (see the module docs).
pub trait Arrivals: Send + Sync {
    /// Whether arrivals matter now (cheap; checked before the directory of
    /// an event is looked up).
    fn wanted(&self) -> bool;
    /// A name arrived (see [`Arrival`]).
    fn arrived(&self, arrival: Arrival<'_>);
    /// A file's name went from `path` (deleted, or renamed away) by
    /// process `pid`; checked only while [`Arrivals::wanted`].
    fn departed(&self, path: &str, pid: i32);
    /// Events were lost (queue overflow): any name may have arrived anywhere.
    fn missed(&self);
}

/// A name that arrived in a directory.
pub struct Arrival<'a> {
    /// The directory, open.
    pub dir: BorrowedFd<'a>,
    /// The name in it.
    pub name: &'a std::ffi::OsStr,
    /// Its path.
    pub path: &'a str,
    /// A directory (moved there: new ones are not reported).
    pub is_dir: bool,
    /// Moved there by a rename (else created: a new file, or a new link).
    pub moved: bool,
    /// The process that did it.
    pub pid: i32,
}

/// What [`start`] set up.
pub struct Started {
    /// The thread reading the events, if any filesystem can report names.
    pub thread: Option<std::thread::JoinHandle<()>>,
    /// The marks, to follow arrivals while they matter (with the thread).
    pub watch: Option<Arc<NameWatch>>,
}

/// Arrivals (`FAN_CREATE`, `FAN_MOVED_TO`) are reported only while asked
/// for: every file created on a watched filesystem would otherwise wake the
/// thread (about 9 µs of CPU per file here) for nothing when no rule looks
/// at paths.
pub struct NameWatch {
    fan: Arc<Fanotify>,
    /// Mount points marked, with their device (`st_dev`).
    mounts: Vec<(std::path::PathBuf, u64)>,
    /// The devices arrivals are followed on now.
    following: Mutex<HashSet<u64>>,
}

impl NameWatch {
    /// Report arrivals (`on`) or stop; the devices on which they are
    /// reported from now on (a filesystem that refuses is logged and left
    /// out).
    pub fn follow_arrivals(&self, on: bool) -> HashSet<u64> {
        let arrivals = Mask::MOVED_TO | Mask::CREATE;
        let mut following = self.following.lock();
        for (mount_point, dev) in &self.mounts {
            if on == following.contains(dev) {
                continue;
            }
            let done = if on {
                self.fan
                    .mark_filesystem(mount_point, arrivals | Mask::ONDIR)
            } else {
                // ONDIR stays: the removals need it.
                self.fan.unmark_filesystem(mount_point, arrivals)
            };
            match done {
                Ok(()) if on => {
                    following.insert(*dev);
                }
                Ok(()) => {
                    following.remove(dev);
                }
                Err(e) => tracing::warn!(
                    "{}: cannot {} renames and links: {e}",
                    mount_point.display(),
                    if on { "follow" } else { "stop following" }
                ),
            }
        }
        following.clone()
    }
}

/// Start watching `watch` for names that go (each removed code path goes to
/// `tx`) and names that arrive (to `arrivals`).
pub fn start(
    watch: &[Mount],
    paths: Arc<CodePaths>,
    tx: tokio::sync::mpsc::Sender<RemovedPath>,
    arrivals: Arc<dyn Arrivals>,
    stop: Arc<Stop>,
) -> Started {
    let nothing = Started {
        thread: None,
        watch: None,
    };
    let fan = match Fanotify::name_group() {
        Ok(f) => Arc::new(f),
        Err(e) => {
            tracing::info!("deleted, moved and linked files are not tracked: {e}");
            return nothing;
        }
    };
    let mut marked = Vec::new();
    // Handles are per filesystem: the event's fsid picks the mount to
    // decode them on.
    let mut mounts: HashMap<[i32; 2], OwnedFd> = HashMap::new();
    for m in watch {
        // A real open (open_by_handle_at refuses an O_PATH mount fd): the
        // agent's own opens are always allowed, and directories raise no
        // permission events.
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = match rustix::fs::open(&m.mount_point, flags, Mode::empty()) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!("deletions on {} not tracked: {e}", m.mount_point.display());
                continue;
            }
        };
        let fsid = match fanotify::fsid(dir.as_fd()) {
            Ok(f) => f,
            Err(e) => {
                tracing::info!("deletions on {} not tracked: {e}", m.mount_point.display());
                continue;
            }
        };
        match fan.mark_filesystem(
            &m.mount_point,
            Mask::DELETE | Mask::MOVED_FROM | Mask::ONDIR,
        ) {
            Ok(()) => {
                if let Ok(st) = rustix::fs::fstat(&dir) {
                    marked.push((m.mount_point.clone(), st.st_dev));
                }
                mounts.insert(fsid, dir);
            }
            Err(e) => tracing::info!(
                "deletions, renames and links on {} not tracked (this filesystem cannot report names): {e}",
                m.mount_point.display()
            ),
        }
    }
    if mounts.is_empty() {
        return nothing;
    }
    let watch = Arc::new(NameWatch {
        fan: fan.clone(),
        mounts: marked,
        following: Mutex::default(),
    });
    let own = std::process::id() as i32;
    let thread = std::thread::Builder::new()
        .name("palisade-names".into())
        .spawn(move || {
            let mut buf = vec![0u8; fanotify::EVENT_BUFFER];
            while !stop.requested() {
                let events = match fan.read_name_events_until(&mut buf, &stop) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::debug!("removal events: {e}");
                        stop.sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                for ev in events {
                    if ev.mask.contains(Mask::Q_OVERFLOW) {
                        tracing::warn!("name events overflowed: some deletions not reported");
                        arrivals.missed();
                        continue;
                    }
                    if ev.pid == own {
                        continue;
                    }
                    let is_dir = ev.mask.contains(Mask::ONDIR);
                    if ev.mask.intersects(Mask::MOVED_TO | Mask::CREATE) {
                        // A new directory is empty: only one moved here
                        // brings names with it.
                        if (is_dir && !ev.mask.contains(Mask::MOVED_TO)) || !arrivals.wanted() {
                            continue;
                        }
                        if let Some(mount) = mounts.get(&ev.dir.fsid) {
                            let moved = ev.mask.contains(Mask::MOVED_TO);
                            arrive(&*arrivals, mount, &ev, is_dir, moved);
                        }
                        continue;
                    }
                    if is_dir && !ev.mask.contains(Mask::MOVED_FROM) {
                        continue; // rmdir: only an empty directory can go
                    }
                    let Some(mount) = mounts.get(&ev.dir.fsid) else {
                        continue;
                    };
                    let Some(path) = resolve(mount, &ev.dir, &ev.name) else {
                        continue;
                    };
                    if !is_dir && arrivals.wanted() {
                        arrivals.departed(&path, ev.pid);
                    }
                    if !is_dir && !paths.take(&path) {
                        continue;
                    }
                    let item = RemovedPath {
                        path,
                        dir: is_dir,
                        at_ms: crate::now_ms(),
                    };
                    if tx.try_send(item).is_err() {
                        tracing::debug!("removal queue full: a deletion not reported");
                    }
                }
            }
        })
        .ok();
    Started {
        // Nobody reads the events without the thread: nothing is followed.
        watch: thread.is_some().then_some(watch),
        thread,
    }
}

/// Hand an arrival to `arrivals` with its directory open and its path.
fn arrive(
    arrivals: &dyn Arrivals,
    mount: &OwnedFd,
    ev: &fanotify::NameEvent,
    is_dir: bool,
    moved: bool,
) {
    let Ok(fd) = fanotify::open_dir_by_handle(mount.as_fd(), &ev.dir) else {
        return;
    };
    if let Some(path) = path_in(&fd, &ev.name) {
        arrivals.arrived(Arrival {
            dir: fd.as_fd(),
            name: &ev.name,
            path: &path,
            is_dir,
            moved,
            pid: ev.pid,
        });
    }
}

/// The path of `name` in the directory `dir` (a handle on `mount`'s
/// filesystem); `None` if the directory is gone too.
fn resolve(mount: &OwnedFd, dir: &fanotify::FileHandle, name: &std::ffi::OsStr) -> Option<String> {
    let fd = fanotify::open_dir_by_handle(mount.as_fd(), dir).ok()?;
    path_in(&fd, name)
}

/// The path of `name` in the open directory `dir`; `None` if the directory
/// was removed.
fn path_in(dir: &OwnedFd, name: &std::ffi::OsStr) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
    let bytes = link.as_os_str().as_bytes();
    if bytes.ends_with(b" (deleted)") || !bytes.starts_with(b"/") {
        return None;
    }
    let full = Path::new(&link).join(name);
    full.to_str().map(str::to_owned)
}
