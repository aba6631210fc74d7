//! fanotify permission events and ignore marks, on a private tmpfs.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_kernel::fanotify::{Fanotify, Mask, Response, EVENT_BUFFER};
use palisade_kernel::ErrorKind;

use crate::support::{self, Tmpfs};

/// What the reader thread saw and how it answered.
#[derive(Clone, Debug)]
struct Seen {
    mask: Mask,
    pid: i32,
    ino: u64,
    response: Option<Response>,
}

type Policy = dyn Fn(Mask, i32, u64) -> Response + Send + Sync;

/// A permission group marking a private tmpfs, with a reader thread that
/// answers every event (the test process's own always with Allow) and
/// forwards what it saw.
struct Fixture {
    // Field order is drop order: stop and join the reader (it keeps answering
    // until then), close the group (the kernel allows anything left), then
    // unmount.
    reader: Reader,
    fan: Arc<Fanotify>,
    barrier: PathBuf,
    tmpfs: Tmpfs,
}

struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    rx: Receiver<Seen>,
    policy: Arc<Mutex<Arc<Policy>>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Fixture {
    fn new(mask: Mask) -> Fixture {
        let tmpfs = Tmpfs::new();
        let barrier = tmpfs.path().join(".barrier");
        std::fs::write(&barrier, b"barrier").expect("create barrier file");
        let fan = Arc::new(Fanotify::permission_group().expect("fanotify_init"));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let allow_all: Arc<Policy> = Arc::new(|_, _, _| Response::Allow);
        let policy = Arc::new(Mutex::new(allow_all));
        let thread = {
            let (fan, stop, policy) = (fan.clone(), stop.clone(), policy.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; EVENT_BUFFER];
                // Keep answering until told to stop; never exit with events
                // unanswered while the group is alive.
                while !stop.load(Ordering::SeqCst) {
                    let events = match fan.read_events(&mut buf, Some(Duration::from_millis(20))) {
                        Ok(events) => events,
                        Err(e) => {
                            eprintln!("read_events: {e}");
                            continue;
                        }
                    };
                    for event in events {
                        let ino = event
                            .file
                            .as_ref()
                            .and_then(|f| File::from(f.try_clone().ok()?).metadata().ok())
                            .map_or(0, |m| m.ino());
                        let mut response = None;
                        if event.mask.is_permission() {
                            // Permission events carry the thread id.
                            let decision = if is_own_thread(event.pid) {
                                Response::Allow
                            } else {
                                let policy =
                                    policy.lock().unwrap_or_else(|p| p.into_inner()).clone();
                                policy(event.mask, event.pid, ino)
                            };
                            if let Some(fd) = event.fd() {
                                fan.respond(fd, decision).expect("respond");
                                response = Some(decision);
                            }
                        }
                        let _ = tx.send(Seen {
                            mask: event.mask,
                            pid: event.pid,
                            ino,
                            response,
                        });
                    }
                }
            })
        };
        fan.mark_filesystem(tmpfs.path(), mask).expect("mark tmpfs");
        Fixture {
            reader: Reader {
                stop,
                thread: Some(thread),
                rx,
                policy,
            },
            fan,
            barrier,
            tmpfs,
        }
    }

    fn mnt(&self) -> &Path {
        self.tmpfs.path()
    }

    fn set_policy(&self, policy: impl Fn(Mask, i32, u64) -> Response + Send + Sync + 'static) {
        *self.reader.policy.lock().unwrap() = Arc::new(policy);
    }

    /// Everything the reader forwarded up to a barrier: opens the barrier
    /// file from this process and collects events until its OPEN_PERM comes
    /// through. Events are queued in order, so everything caused before the
    /// barrier is in the result.
    fn drain(&self) -> Vec<Seen> {
        let barrier_ino = support::dev_ino(&self.barrier).1;
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        drop(File::open(&self.barrier).expect("open barrier"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reader.rx.recv_timeout(left) {
                Ok(s) if s.ino == barrier_ino && s.pid == me => return seen,
                Ok(s) => seen.push(s),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("barrier event never arrived; saw {seen:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("reader thread died; saw {seen:?}"),
            }
        }
    }
}

/// Whether `tid` is a thread of this (test) process.
fn is_own_thread(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

fn events_for(seen: &[Seen], ino: u64) -> Vec<Seen> {
    seen.iter().filter(|s| s.ino == ino).cloned().collect()
}

/// A read-only fd of `path` (fanotify_mark refuses O_PATH fds with EBADF).
/// Opening it is itself an OPEN_PERM event from this process, which the
/// reader allows; the caller drains it.
fn open_fd(path: &Path) -> OwnedFd {
    File::open(path)
        .unwrap_or_else(|e| panic!("open {path:?}: {e}"))
        .into()
}

const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn exec_and_open_produce_permission_events_and_deny_blocks_exec() {
    let Some(_lock) =
        support::root_test("exec_and_open_produce_permission_events_and_deny_blocks_exec")
    else {
        return;
    };
    let fx = Fixture::new(Mask::OPEN_PERM | Mask::OPEN_EXEC_PERM);
    let prog = fx.mnt().join("true");
    support::install_exec(Path::new("/bin/true"), &prog);
    let data = fx.mnt().join("data");
    std::fs::write(&data, b"hello").unwrap();
    let prog_ino = support::dev_ino(&prog).1;
    let data_ino = support::dev_ino(&data).1;
    fx.drain();

    // Allowed exec: OPEN_EXEC_PERM from the exec'ing process.
    let (pid, out) = support::run(&mut Command::new(&prog), DEADLINE).expect("allowed exec runs");
    assert!(out.status.success());
    let seen = events_for(&fx.drain(), prog_ino);
    assert!(
        seen.iter().any(|s| s.mask.contains(Mask::OPEN_EXEC_PERM)
            && s.pid == pid as i32
            && s.response == Some(Response::Allow)),
        "no OPEN_EXEC_PERM from pid {pid}: {seen:?}"
    );

    // Denied exec fails with EPERM/EACCES before the program runs.
    fx.set_policy(move |mask, _, ino| {
        if ino == prog_ino && mask.contains(Mask::OPEN_EXEC_PERM) {
            Response::Deny
        } else {
            Response::Allow
        }
    });
    let err = support::run(&mut Command::new(&prog), DEADLINE).expect_err("denied exec must fail");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)),
        "denied exec failed with {err:?}"
    );
    let seen = events_for(&fx.drain(), prog_ino);
    assert!(
        seen.iter()
            .any(|s| s.mask.contains(Mask::OPEN_EXEC_PERM) && s.response == Some(Response::Deny)),
        "{seen:?}"
    );

    // A plain open from another process: OPEN_PERM with its pid.
    fx.set_policy(|_, _, _| Response::Allow);
    let (pid, out) = support::run(Command::new("/bin/cat").arg(&data), DEADLINE).expect("cat runs");
    assert_eq!(out.stdout, b"hello");
    let seen = events_for(&fx.drain(), data_ino);
    assert!(
        seen.iter()
            .any(|s| s.mask == Mask::OPEN_PERM && s.pid == pid as i32),
        "no OPEN_PERM from cat (pid {pid}): {seen:?}"
    );

    // A denied open fails with EPERM.
    fx.set_policy(move |_, _, ino| {
        if ino == data_ino {
            Response::Deny
        } else {
            Response::Allow
        }
    });
    let (_, out) = support::run(Command::new("/bin/cat").arg(&data), DEADLINE).expect("cat runs");
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("Operation not permitted"),
        "{}",
        support::stderr(&out)
    );
    fx.drain();
}

#[test]
fn ignore_mark_caches_allow_until_write_flush_or_removal() {
    let Some(_lock) = support::root_test("ignore_mark_caches_allow_until_write_flush_or_removal")
    else {
        return;
    };
    let fx = Fixture::new(Mask::OPEN_PERM | Mask::OPEN_EXEC_PERM);
    let prog = fx.mnt().join("true");
    support::install_exec(Path::new("/bin/true"), &prog);
    let ino = support::dev_ino(&prog).1;
    let perm = Mask::OPEN_PERM | Mask::OPEN_EXEC_PERM;
    let ignore = || {
        let fd = open_fd(&prog);
        fx.drain();
        fx.fan.ignore_inode(fd.as_fd(), perm).expect("ignore_inode");
    };
    let exec_events = || {
        let (_, out) = support::run(&mut Command::new(&prog), DEADLINE).expect("exec");
        assert!(out.status.success());
        events_for(&fx.drain(), ino)
    };

    assert!(
        !exec_events().is_empty(),
        "exec without ignore mark must be seen"
    );

    // Cached allow: the kernel no longer asks.
    ignore();
    assert_eq!(
        exec_events().len(),
        0,
        "ignored inode still produced events"
    );
    assert_eq!(
        exec_events().len(),
        0,
        "ignore mark must survive exec/close"
    );

    // A write (append a byte: harmless for an ELF file) clears the mark.
    OpenOptions::new()
        .append(true)
        .open(&prog)
        .unwrap()
        .write_all(b"\0")
        .unwrap();
    assert!(
        !exec_events().is_empty(),
        "write must clear the ignore mark"
    );

    // FAN_MARK_FLUSH drops every cached allow.
    ignore();
    assert_eq!(exec_events().len(), 0);
    fx.fan.flush_inode_marks().expect("flush");
    assert!(
        !exec_events().is_empty(),
        "flush must clear the ignore mark"
    );

    // remove_ignore drops one; removing twice is not an error.
    ignore();
    assert_eq!(exec_events().len(), 0);
    let fd = open_fd(&prog);
    fx.drain();
    fx.fan
        .remove_ignore(fd.as_fd(), perm)
        .expect("remove_ignore");
    assert!(
        !exec_events().is_empty(),
        "remove_ignore must bring events back"
    );
    fx.fan
        .remove_ignore(fd.as_fd(), perm)
        .expect("second remove_ignore");
    drop(fd);

    // fanotify_mark cannot take an O_PATH fd.
    let o_path: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&prog)
        .unwrap()
        .into();
    let err = fx
        .fan
        .ignore_inode(o_path.as_fd(), perm)
        .expect_err("O_PATH fd");
    assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");

    // The mark outlives the fd it was set through.
    ignore();
    assert_eq!(exec_events().len(), 0);
}

/// One way to change a file's content (or not), and whether it must clear an
/// ignore mark.
struct Change {
    name: &'static str,
    apply: fn(&Path),
    clears: bool,
}

fn pwrite(path: &Path) {
    use std::os::unix::fs::FileExt;
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(b"X", 0)
        .unwrap();
}

fn ftruncate(path: &Path) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + 1).unwrap();
}

fn truncate_path(path: &Path) {
    let c = support::cstr(path);
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 100) }, 0);
}

fn open_trunc(path: &Path) {
    File::create(path).unwrap();
}

fn fallocate(path: &Path) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    // SAFETY: valid fd; fallocate has no memory arguments.
    assert_eq!(
        unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 16384) },
        0,
        "{}",
        std::io::Error::last_os_error()
    );
}

fn copy_file_range(path: &Path) {
    let src_path = path.with_extension("src");
    std::fs::write(&src_path, b"replacement").unwrap();
    let src = File::open(&src_path).unwrap();
    let dst = OpenOptions::new().write(true).open(path).unwrap();
    let (mut off_in, mut off_out) = (0i64, 0i64);
    // SAFETY: valid fds and pointers to two live i64 offsets.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            5,
            0,
        )
    };
    assert_eq!(n, 5, "{}", std::io::Error::last_os_error());
}

/// Stores through a MAP_SHARED writable mapping; asserts the content changed.
pub(crate) fn shared_mmap_write(path: &Path) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: maps one page of a file at least one page long; the mapping is
    // written within bounds and unmapped before the fd is closed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        *(p as *mut u8) = b'M';
        assert_eq!(libc::msync(p, 4096, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, 4096), 0);
    }
    drop(f);
    assert_eq!(
        std::fs::read(path).unwrap()[0],
        b'M',
        "mmap store did not reach the file"
    );
}

fn chmod(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn read_only(path: &Path) {
    drop(std::fs::read(path).unwrap());
}

#[test]
fn ignore_mark_clearing() {
    let Some(_lock) = support::root_test("ignore_mark_clearing") else {
        return;
    };
    let table = [
        Change {
            name: "pwrite",
            apply: pwrite,
            clears: true,
        },
        Change {
            name: "ftruncate",
            apply: ftruncate,
            clears: true,
        },
        Change {
            name: "truncate",
            apply: truncate_path,
            clears: true,
        },
        Change {
            name: "open_trunc",
            apply: open_trunc,
            clears: true,
        },
        Change {
            name: "fallocate",
            apply: fallocate,
            clears: true,
        },
        Change {
            name: "copy_file_range",
            apply: copy_file_range,
            clears: true,
        },
        Change {
            name: "shared_mmap_write",
            apply: shared_mmap_write,
            clears: false,
        },
        Change {
            name: "chmod",
            apply: chmod,
            clears: false,
        },
        Change {
            name: "read",
            apply: read_only,
            clears: false,
        },
    ];
    let fx = Fixture::new(Mask::OPEN_PERM);
    let mut results = HashMap::new();
    for change in &table {
        let path = fx.mnt().join(change.name);
        std::fs::write(&path, vec![b'a'; 8192]).unwrap();
        let ino = support::dev_ino(&path).1;
        let opened = |fx: &Fixture| {
            drop(File::open(&path).unwrap());
            !events_for(&fx.drain(), ino).is_empty()
        };
        assert!(
            opened(&fx),
            "{}: open without mark must be seen",
            change.name
        );
        let fd = open_fd(&path);
        fx.drain();
        fx.fan.ignore_inode(fd.as_fd(), Mask::OPEN_PERM).unwrap();
        drop(fd);
        assert!(
            !opened(&fx),
            "{}: ignore mark must suppress the open",
            change.name
        );
        (change.apply)(&path);
        fx.drain();
        let cleared = opened(&fx);
        results.insert(change.name, cleared);
    }
    eprintln!("ignore mark cleared by: {results:?}");
    for change in &table {
        assert_eq!(
            results[change.name], change.clears,
            "{}: expected clears={} (all: {results:?})",
            change.name, change.clears
        );
    }
}

#[test]
fn respond_to_unknown_fd_is_not_pending() {
    let Some(_lock) = support::root_test("respond_to_unknown_fd_is_not_pending") else {
        return;
    };
    let fan = Fanotify::permission_group().unwrap();
    let devnull = File::open("/dev/null").unwrap();
    let err = fan
        .respond(devnull.as_fd(), Response::Allow)
        .expect_err("not an event fd");
    assert_eq!(err.kind(), ErrorKind::NotPending, "{err}");
    assert!(err.to_string().contains("fanotify_response"), "{err}");

    // Nothing is queued: a read with a short timeout returns no events.
    let mut buf = vec![0u8; EVENT_BUFFER];
    assert!(fan
        .read_events(&mut buf, Some(Duration::from_millis(10)))
        .unwrap()
        .is_empty());
    let mut small = [0u8; 16];
    assert_eq!(
        fan.read_events(&mut small, Some(Duration::ZERO))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(fan.malformed_events(), 0);
}

#[test]
fn notification_group_reports_close_write() {
    let Some(_lock) = support::root_test("notification_group_reports_close_write") else {
        return;
    };
    let tmpfs = Tmpfs::new();
    let fan = Fanotify::notification_group().unwrap();
    fan.mark_mount(tmpfs.path(), Mask::CLOSE_WRITE)
        .expect("mark mount");
    let path = tmpfs.path().join("written");
    std::fs::write(&path, b"x").unwrap();
    let ino = support::dev_ino(&path).1;
    let mut buf = vec![0u8; EVENT_BUFFER];
    let mut found = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !found && Instant::now() < deadline {
        for event in fan
            .read_events(&mut buf, Some(Duration::from_millis(100)))
            .unwrap()
        {
            assert!(!event.mask.is_permission());
            let file = File::from(event.file.expect("notification carries an fd"));
            if event.mask.contains(Mask::CLOSE_WRITE) && file.metadata().unwrap().ino() == ino {
                assert_eq!(event.pid, std::process::id() as i32);
                found = true;
            }
        }
    }
    assert!(found, "no CLOSE_WRITE for {path:?}");
    fan.unmark_mount(tmpfs.path(), Mask::CLOSE_WRITE)
        .expect("unmark mount");
    drop(fan);
}

#[test]
fn name_group_reports_deleted_moved_and_linked_entries_with_their_directory() {
    let Some(_lock) = support::root_test("name_group_reports_deleted_and_moved_entries") else {
        return;
    };
    let tmpfs = Tmpfs::new();
    let fan = Fanotify::name_group().expect("fanotify_init(FAN_REPORT_DFID_NAME)");
    if let Err(e) = fan.mark_filesystem(
        tmpfs.path(),
        Mask::DELETE | Mask::MOVED_FROM | Mask::MOVED_TO | Mask::CREATE,
    ) {
        // Name reporting needs file handles, which tmpfs lacks on older
        // kernels (the mark is refused with EOPNOTSUPP or ENODEV).
        eprintln!("skipped: this kernel cannot report names on tmpfs: {e}");
        return;
    }
    let sub = tmpfs.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("gone"), b"x").unwrap();
    std::fs::write(sub.join("moved"), b"x").unwrap();
    std::fs::remove_file(sub.join("gone")).unwrap();
    std::fs::rename(sub.join("moved"), tmpfs.path().join("elsewhere")).unwrap();
    std::fs::hard_link(tmpfs.path().join("elsewhere"), sub.join("link")).unwrap();
    let mount = File::open(tmpfs.path()).unwrap();
    let mut buf = vec![0u8; EVENT_BUFFER];
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = |seen: &[(Mask, PathBuf, i32)], mask: Mask, path: &Path| {
        seen.iter().any(|(m, p, _)| m.contains(mask) && p == path)
    };
    let expected = [
        (Mask::DELETE, sub.join("gone")),
        (Mask::MOVED_FROM, sub.join("moved")),
        (Mask::MOVED_TO, tmpfs.path().join("elsewhere")),
        (Mask::CREATE, sub.join("link")),
    ];
    while !expected.iter().all(|(m, p)| want(&seen, *m, p)) && Instant::now() < deadline {
        for ev in fan
            .read_name_events(&mut buf, Some(Duration::from_millis(100)))
            .unwrap()
        {
            assert_eq!(
                ev.dir.fsid,
                palisade_kernel::fanotify::fsid(mount.as_fd()).unwrap()
            );
            let dir = palisade_kernel::fanotify::open_dir_by_handle(mount.as_fd(), &ev.dir)
                .expect("open the event's directory by handle");
            let dir_path =
                std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).unwrap();
            seen.push((ev.mask, dir_path.join(&ev.name), ev.pid));
        }
    }
    let me = std::process::id() as i32;
    assert!(
        seen.iter()
            .any(|(m, p, pid)| m.contains(Mask::DELETE) && *p == sub.join("gone") && *pid == me),
        "{seen:?}"
    );
    for (mask, path) in &expected {
        assert!(want(&seen, *mask, path), "{mask:?} {path:?}: {seen:?}");
    }
    assert_eq!(fan.malformed_events(), 0);
}
