//! fanotify(7): permission events, notification events, and the kernel-side
//! allow cache (inode ignore marks).
//!
//! # Groups
//! - [`Fanotify::permission_group`] (`FAN_CLASS_CONTENT`, unlimited queue and
//!   marks) delivers `FAN_OPEN_PERM` / `FAN_OPEN_EXEC_PERM` events: the
//!   process that opened or exec'd the file sleeps until the group answers.
//! - [`Fanotify::notification_group`] (`FAN_CLASS_NOTIF`, unlimited marks,
//!   default bounded queue) delivers `FAN_CLOSE_WRITE` / `FAN_MODIFY`
//!   notifications. When its queue overflows the kernel drops events and queues
//!   one [`Mask::Q_OVERFLOW`] event (no fd): the reader must then assume any
//!   file may have changed.
//!
//! Both groups are non-blocking (`FAN_NONBLOCK`): [`Fanotify::read_events`]
//! waits with poll(2) for at most its timeout; [`Fanotify::read_events_until`]
//! waits for events or a [`Stop`] request, so an idle reader thread sleeps
//! without waking up to check for shutdown.
//!
//! # Answering permission events: the invariant
//! Every permission event must be answered **exactly once** with
//! [`Fanotify::respond`], **before** the event's fd ([`Event::file`]) is
//! closed. The kernel identifies the event by the fd *number*; once the fd is
//! closed the number can be reused by a later event, and a late answer would
//! decide that other event. An event that is never answered keeps its process
//! asleep (killable) until the group is dropped, when the kernel allows every
//! unanswered event of the group. [`Fanotify`] is `Send + Sync`, so the group
//! can be shared in an `Arc` and events answered from any thread.
//!
//! # The kernel-side allow cache: ignore marks
//! [`Fanotify::ignore_inode`] puts an *evictable inode ignore mark* on one
//! file: while it exists the kernel does not generate the masked events for
//! that inode at all (even though the filesystem mark asks for them), so a
//! repeated open or exec of an approved file costs no context switch.
//! The mark is created **without** `FAN_MARK_IGNORED_SURV_MODIFY`, so the
//! kernel clears its ignore mask on the inode's first `FS_MODIFY` event.
//! Measured by `tests/it/fanotify.rs::ignore_mark_clearing` (same result on
//! Linux 6.1, 6.12 and 6.18):
//!
//! | content change                                   | clears the ignore mark |
//! |--------------------------------------------------|------------------------|
//! | `write(2)` / `pwrite(2)`                          | yes (`FS_MODIFY`)      |
//! | `ftruncate(2)`, `truncate(2)`, `open(O_TRUNC)`    | yes (`ATTR_SIZE` ⇒ `FS_MODIFY`) |
//! | `fallocate(2)`                                    | yes (`FS_MODIFY`)      |
//! | `copy_file_range(2)` into the file                | yes (`FS_MODIFY`)      |
//! | store through a `MAP_SHARED` writable mapping     | **no** (no fsnotify event at all) |
//! | `chmod(2)` (metadata only)                        | no (`FS_ATTRIB`)       |
//!
//! Writes through a shared writable mapping are therefore invisible to the
//! ignore-mark cache; the BPF guard (`crate::guard`) closes that hole by
//! dropping the inode from its `allowed` map when such a mapping is created,
//! and the agent must flush its ignore marks when the guard reports a denial
//! for an inode it believed allowed (see the crate documentation).
//!
//! Evictable marks do not pin the inode: under memory pressure the kernel may
//! evict an unused inode together with its mark, which only costs a new event.
//! [`Fanotify::flush_inode_marks`] drops every ignore mark of the group at
//! once (e.g. after a policy change).

use std::ffi::CString;
use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::stop::{poll_readable_or, Stop};

/// A set of fanotify event bits (`FAN_*` of `<linux/fanotify.h>`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mask(u64);

impl Mask {
    /// `FAN_ACCESS`: a file was read.
    pub const ACCESS: Mask = Mask(libc::FAN_ACCESS);
    /// `FAN_MODIFY`: a file was written.
    pub const MODIFY: Mask = Mask(libc::FAN_MODIFY);
    /// `FAN_CLOSE_WRITE`: a file opened for writing was closed.
    pub const CLOSE_WRITE: Mask = Mask(libc::FAN_CLOSE_WRITE);
    /// `FAN_CLOSE_NOWRITE`: a file opened read-only was closed.
    pub const CLOSE_NOWRITE: Mask = Mask(libc::FAN_CLOSE_NOWRITE);
    /// `FAN_OPEN`: a file was opened.
    pub const OPEN: Mask = Mask(libc::FAN_OPEN);
    /// `FAN_OPEN_EXEC`: a file was opened to be executed.
    pub const OPEN_EXEC: Mask = Mask(libc::FAN_OPEN_EXEC);
    /// `FAN_Q_OVERFLOW`: the notification queue overflowed; events were lost.
    pub const Q_OVERFLOW: Mask = Mask(libc::FAN_Q_OVERFLOW);
    /// `FAN_OPEN_PERM`: permission to open a file (any open(2), including the
    /// dynamic loader opening a library).
    pub const OPEN_PERM: Mask = Mask(libc::FAN_OPEN_PERM);
    /// `FAN_ACCESS_PERM`: permission to read a file.
    pub const ACCESS_PERM: Mask = Mask(libc::FAN_ACCESS_PERM);
    /// `FAN_OPEN_EXEC_PERM`: permission to open a file for execution (execve,
    /// the ELF interpreter, a shebang interpreter, `uselib`).
    pub const OPEN_EXEC_PERM: Mask = Mask(libc::FAN_OPEN_EXEC_PERM);
    /// A name was removed from a directory (name groups only).
    pub const DELETE: Mask = Mask(libc::FAN_DELETE);
    /// A name was moved out of a directory (name groups only).
    pub const MOVED_FROM: Mask = Mask(libc::FAN_MOVED_FROM);
    /// A name was moved into a directory (name groups only).
    pub const MOVED_TO: Mask = Mask(libc::FAN_MOVED_TO);
    /// A name was created in a directory: a new file, directory or hard
    /// link (name groups only).
    pub const CREATE: Mask = Mask(libc::FAN_CREATE);
    /// The event is about a directory (name groups only).
    pub const ONDIR: Mask = Mask(libc::FAN_ONDIR);
    /// Every permission event bit.
    pub const PERMISSION_EVENTS: Mask =
        Mask(libc::FAN_OPEN_PERM | libc::FAN_ACCESS_PERM | libc::FAN_OPEN_EXEC_PERM);

    const NAMES: [(Mask, &'static str); 15] = [
        (Mask::ACCESS, "ACCESS"),
        (Mask::MODIFY, "MODIFY"),
        (Mask::CLOSE_WRITE, "CLOSE_WRITE"),
        (Mask::CLOSE_NOWRITE, "CLOSE_NOWRITE"),
        (Mask::OPEN, "OPEN"),
        (Mask::OPEN_EXEC, "OPEN_EXEC"),
        (Mask::Q_OVERFLOW, "Q_OVERFLOW"),
        (Mask::OPEN_PERM, "OPEN_PERM"),
        (Mask::ACCESS_PERM, "ACCESS_PERM"),
        (Mask::OPEN_EXEC_PERM, "OPEN_EXEC_PERM"),
        (Mask::DELETE, "DELETE"),
        (Mask::MOVED_FROM, "MOVED_FROM"),
        (Mask::MOVED_TO, "MOVED_TO"),
        (Mask::CREATE, "CREATE"),
        (Mask::ONDIR, "ONDIR"),
    ];

    /// The empty set.
    pub const fn empty() -> Mask {
        Mask(0)
    }

    /// A mask from raw `FAN_*` bits (unknown bits are kept).
    pub const fn from_bits(bits: u64) -> Mask {
        Mask(bits)
    }

    /// The raw `FAN_*` bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Mask) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share a bit.
    pub const fn intersects(self, other: Mask) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether this is a permission event that must be answered.
    pub const fn is_permission(self) -> bool {
        self.intersects(Mask::PERMISSION_EVENTS)
    }
}

impl BitOr for Mask {
    type Output = Mask;
    fn bitor(self, rhs: Mask) -> Mask {
        Mask(self.0 | rhs.0)
    }
}

impl BitOrAssign for Mask {
    fn bitor_assign(&mut self, rhs: Mask) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        for (mask, name) in Mask::NAMES {
            if self.contains(mask) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !mask.0;
            }
        }
        if rest != 0 || first {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

/// The answer to a permission event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    /// `FAN_ALLOW`: the open/exec proceeds.
    Allow,
    /// `FAN_DENY`: the open/exec fails with `EPERM`.
    Deny,
}

/// One fanotify event.
#[derive(Debug)]
#[non_exhaustive]
pub struct Event {
    /// What happened (for a permission event, exactly one `*_PERM` bit).
    pub mask: Mask,
    /// The process that caused the event: its thread id for a
    /// [`Fanotify::permission_group`] (`FAN_REPORT_TID`), its thread-group id
    /// for a [`Fanotify::notification_group`].
    pub pid: i32,
    /// A read-only fd for the file (opened by the kernel without generating
    /// events); `None` for a queue overflow (`FAN_NOFD`). Closed on drop — for
    /// a permission event, only after [`Fanotify::respond`].
    pub file: Option<OwnedFd>,
}

impl Event {
    /// The event's fd, to answer with [`Fanotify::respond`] or to read.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.file.as_ref().map(|f| f.as_fd())
    }
}

/// `FAN_REPORT_TID` (Linux 4.20): report thread ids instead of thread-group ids.
const FAN_REPORT_TID: libc::c_uint = 0x0000_0100;

/// The length of `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;
/// The smallest read buffer [`Fanotify::read_events`] accepts.
pub const MIN_EVENT_BUFFER: usize = 4096;
/// A good read buffer size: about 2700 events per read(2).
pub const EVENT_BUFFER: usize = 64 * 1024;

/// The ways to add an inode ignore mark, newest first; the first that the
/// kernel accepts is remembered.
const IGNORE_STYLES: [u32; 3] = [
    // 6.0+: FAN_MARK_IGNORE (a mark with only an ignore mask) + evictable (5.19+).
    libc::FAN_MARK_IGNORE | libc::FAN_MARK_EVICTABLE,
    // 5.19: legacy ignored mask, evictable.
    libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_EVICTABLE,
    // older: legacy ignored mask; the mark pins the inode.
    libc::FAN_MARK_IGNORED_MASK,
];
const STYLE_UNKNOWN: u8 = u8::MAX;

/// A fanotify group: one fd. Dropping it closes the fd, and the kernel then
/// allows every permission event of the group that is still unanswered.
pub struct Fanotify {
    fd: OwnedFd,
    /// Index into [`IGNORE_STYLES`] of the style the kernel accepted.
    ignore_style: AtomicU8,
    malformed: AtomicU64,
}

impl fmt::Debug for Fanotify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanotify")
            .field("fd", &self.fd.as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl AsFd for Fanotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Fanotify {
    /// A group for permission events: `FAN_CLASS_CONTENT | FAN_CLOEXEC |
    /// FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS`, event fds
    /// opened `O_RDONLY | O_LARGEFILE | O_CLOEXEC`.
    ///
    /// [`ErrorKind::Unsupported`] if the kernel lacks fanotify or permission
    /// events; [`ErrorKind::PermissionDenied`] without `CAP_SYS_ADMIN`.
    ///
    /// Events report the acting *thread* (`FAN_REPORT_TID`): while it waits
    /// for the answer, `/proc/TID/syscall` shows the system call and its
    /// arguments (an `open`'s flags), which the thread group's id would not
    /// for a multi-threaded process.
    pub fn permission_group() -> Result<Fanotify> {
        Fanotify::init(
            libc::FAN_CLASS_CONTENT
                | FAN_REPORT_TID
                | libc::FAN_CLOEXEC
                | libc::FAN_NONBLOCK
                | libc::FAN_UNLIMITED_QUEUE
                | libc::FAN_UNLIMITED_MARKS,
            "fanotify_init(FAN_CLASS_CONTENT|FAN_UNLIMITED_QUEUE|FAN_UNLIMITED_MARKS)",
            true,
        )
    }

    /// A group for notifications (`FAN_CLOSE_WRITE`, `FAN_MODIFY`):
    /// `FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_MARKS`
    /// with the kernel's bounded queue (see [`Mask::Q_OVERFLOW`]).
    pub fn notification_group() -> Result<Fanotify> {
        Fanotify::init(
            libc::FAN_CLASS_NOTIF
                | libc::FAN_CLOEXEC
                | libc::FAN_NONBLOCK
                | libc::FAN_UNLIMITED_MARKS,
            "fanotify_init(FAN_CLASS_NOTIF|FAN_UNLIMITED_MARKS)",
            false,
        )
    }

    /// A group for directory-entry notifications (`FAN_DELETE`,
    /// `FAN_MOVED_FROM`): `FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME` (Linux
    /// 5.9). Its events carry no fd but the directory's file handle and the
    /// entry's name; read them with [`Fanotify::read_name_events`] and find
    /// the directory with [`open_dir_by_handle`].
    pub fn name_group() -> Result<Fanotify> {
        Fanotify::init(
            libc::FAN_CLASS_NOTIF
                | libc::FAN_REPORT_DFID_NAME
                | libc::FAN_CLOEXEC
                | libc::FAN_NONBLOCK
                | libc::FAN_UNLIMITED_MARKS,
            "fanotify_init(FAN_CLASS_NOTIF|FAN_REPORT_DFID_NAME)",
            false,
        )
    }

    fn init(flags: u32, op: &'static str, permission: bool) -> Result<Fanotify> {
        let event_f_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        // SAFETY: fanotify_init takes two integers and returns a new fd or -1;
        // no memory is shared with the kernel.
        let fd = unsafe { libc::fanotify_init(flags, event_f_flags) };
        if fd < 0 {
            let err = Error::last_os_error(op);
            return Err(match err.raw_os_error() {
                // Permission classes are rejected with EINVAL when the kernel
                // was built without CONFIG_FANOTIFY_ACCESS_PERMISSIONS.
                Some(libc::EINVAL) if permission => err.with_kind(ErrorKind::Unsupported),
                _ => err,
            });
        }
        Ok(Fanotify {
            // SAFETY: fanotify_init returned a new fd that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ignore_style: AtomicU8::new(STYLE_UNKNOWN),
            malformed: AtomicU64::new(0),
        })
    }

    /// Marks the whole filesystem holding `path` (`FAN_MARK_FILESYSTEM`): every
    /// mount of it, bind mounts included, reports `mask`.
    pub fn mark_filesystem(&self, path: &Path, mask: Mask) -> Result<()> {
        self.mark_path(
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            "FAN_MARK_ADD|FAN_MARK_FILESYSTEM",
            path,
            mask,
        )
    }

    /// Removes `mask` from the filesystem mark of the filesystem holding `path`.
    pub fn unmark_filesystem(&self, path: &Path, mask: Mask) -> Result<()> {
        self.mark_path(
            libc::FAN_MARK_REMOVE | libc::FAN_MARK_FILESYSTEM,
            "FAN_MARK_REMOVE|FAN_MARK_FILESYSTEM",
            path,
            mask,
        )
    }

    /// Marks the one mount holding `path` (`FAN_MARK_MOUNT`), a fallback for
    /// kernels or filesystems that refuse filesystem marks. Other mounts of
    /// the same filesystem (bind mounts, other namespaces) are not covered.
    pub fn mark_mount(&self, path: &Path, mask: Mask) -> Result<()> {
        self.mark_path(
            libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
            "FAN_MARK_ADD|FAN_MARK_MOUNT",
            path,
            mask,
        )
    }

    /// Removes `mask` from the mount mark of the mount holding `path`.
    pub fn unmark_mount(&self, path: &Path, mask: Mask) -> Result<()> {
        self.mark_path(
            libc::FAN_MARK_REMOVE | libc::FAN_MARK_MOUNT,
            "FAN_MARK_REMOVE|FAN_MARK_MOUNT",
            path,
            mask,
        )
    }

    fn mark_path(&self, flags: u32, flag_names: &str, path: &Path, mask: Mask) -> Result<()> {
        let op = || format!("fanotify_mark({flag_names}, {mask:?}, {path:?})");
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} (path contains NUL)", op()),
            )
        })?;
        // SAFETY: `cpath` is a valid NUL-terminated string that outlives the
        // call; the kernel only reads it.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                flags,
                mask.bits(),
                libc::AT_FDCWD,
                cpath.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(Error::last_os_error(op()));
        }
        Ok(())
    }

    fn mark_fd(
        &self,
        flags: u32,
        file: BorrowedFd<'_>,
        mask: Mask,
    ) -> std::result::Result<(), i32> {
        // SAFETY: a NULL pathname makes the kernel mark the object `file`
        // refers to; `file` is a live fd for the duration of the call.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                flags,
                mask.bits(),
                file.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(())
        }
    }

    /// Caches an allow in the kernel: adds an evictable inode ignore mark
    /// (`FAN_MARK_ADD | FAN_MARK_IGNORE | FAN_MARK_EVICTABLE`; on older kernels
    /// `FAN_MARK_IGNORED_MASK`) for `mask` on the file behind `file` — an event
    /// fd, or any open fd of the file. `O_PATH` fds are refused by the kernel
    /// (`EBADF`).
    ///
    /// The mark is made without `FAN_MARK_IGNORED_SURV_MODIFY`: the kernel
    /// clears it on the file's next modification (see the module docs for
    /// exactly which changes count).
    pub fn ignore_inode(&self, file: BorrowedFd<'_>, mask: Mask) -> Result<()> {
        let known = self.ignore_style.load(Ordering::Relaxed);
        let start = if (known as usize) < IGNORE_STYLES.len() {
            known as usize
        } else {
            0
        };
        let mut last = libc::EINVAL;
        for (index, style) in IGNORE_STYLES.iter().enumerate().skip(start) {
            match self.mark_fd(libc::FAN_MARK_ADD | style, file, mask) {
                Ok(()) => {
                    self.ignore_style.store(index as u8, Ordering::Relaxed);
                    return Ok(());
                }
                // EINVAL: this kernel does not know the flag; try an older style.
                Err(libc::EINVAL) if known == STYLE_UNKNOWN => last = libc::EINVAL,
                Err(errno) => {
                    last = errno;
                    break;
                }
            }
        }
        Err(Error::from_errno(
            format!(
                "fanotify_mark(FAN_MARK_ADD|FAN_MARK_IGNORE|FAN_MARK_EVICTABLE, {mask:?}, fd {})",
                file.as_raw_fd()
            ),
            last,
        ))
    }

    /// Removes `mask` from the ignore mark of the file behind `file`. Not an
    /// error if the file had no ignore mark.
    pub fn remove_ignore(&self, file: BorrowedFd<'_>, mask: Mask) -> Result<()> {
        let known = self.ignore_style.load(Ordering::Relaxed);
        let ignore_flag = match IGNORE_STYLES.get(known as usize) {
            Some(style) => style & (libc::FAN_MARK_IGNORE | libc::FAN_MARK_IGNORED_MASK),
            // No ignore mark was ever added through this group.
            None => return Ok(()),
        };
        match self.mark_fd(libc::FAN_MARK_REMOVE | ignore_flag, file, mask) {
            Ok(()) | Err(libc::ENOENT) => Ok(()),
            Err(errno) => Err(Error::from_errno(
                format!(
                    "fanotify_mark(FAN_MARK_REMOVE|FAN_MARK_IGNORE, {mask:?}, fd {})",
                    file.as_raw_fd()
                ),
                errno,
            )),
        }
    }

    /// Drops every inode mark of this group — every cached allow — in one call
    /// (`FAN_MARK_FLUSH` of inode marks). Filesystem and mount marks stay.
    pub fn flush_inode_marks(&self) -> Result<()> {
        // SAFETY: FAN_MARK_FLUSH does not resolve a path; the NULL pathname is
        // never read.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_FLUSH,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(Error::last_os_error("fanotify_mark(FAN_MARK_FLUSH)"));
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for events, reads what is
    /// queued into `buf`, and returns the events. An empty vector means the
    /// timeout passed, a signal interrupted the wait, or another thread read
    /// the events first.
    ///
    /// `buf` must hold at least [`MIN_EVENT_BUFFER`] bytes; [`EVENT_BUFFER`] is
    /// a good size. Malformed records are skipped and counted
    /// ([`Fanotify::malformed_events`]); this never panics on kernel input.
    pub fn read_events(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Vec<Event>> {
        self.events_from(buf, timeout, None)
    }

    /// [`Fanotify::read_events`] without a timeout: waits until events are
    /// queued or `stop` is requested (then returns what is queued, perhaps
    /// nothing). An idle reader sleeps rather than waking on a timer.
    pub fn read_events_until(&self, buf: &mut [u8], stop: &Stop) -> Result<Vec<Event>> {
        self.events_from(buf, None, Some(stop))
    }

    /// The events queued now, without waiting. Unlike [`Fanotify::read_events`],
    /// an empty vector means exactly that the queue was empty when read
    /// (an interrupted read is retried): every event queued before this call
    /// has been returned, by it or by an earlier read.
    pub fn read_queued(&self, buf: &mut [u8]) -> Result<Vec<Event>> {
        loop {
            let events = self.events_from(buf, Some(Duration::ZERO), None);
            match events {
                Ok(v) if v.is_empty() && self.has_queued()? => continue,
                other => return other,
            }
        }
    }

    /// Whether the queue holds events (`FIONREAD`: the bytes a read would
    /// return).
    fn has_queued(&self) -> Result<bool> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int to the pointer given.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
            return Err(Error::last_os_error("ioctl(FIONREAD, fanotify fd)"));
        }
        Ok(n > 0)
    }

    fn events_from(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
        stop: Option<&Stop>,
    ) -> Result<Vec<Event>> {
        let len = self.read_into(buf, timeout, stop)?;
        let mut malformed = 0;
        let events = parse_events(&buf[..len], &mut malformed)
            .into_iter()
            .map(|raw| Event {
                mask: Mask(raw.mask),
                pid: raw.pid,
                // SAFETY: a non-negative fd in a well-formed record was just
                // installed in our fd table by the kernel for this event, and
                // each record is parsed once: nothing else owns it.
                file: (raw.fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw.fd) }),
            })
            .collect();
        if malformed > 0 {
            self.malformed.fetch_add(malformed, Ordering::Relaxed);
        }
        Ok(events)
    }

    /// Reads the events of a [`Fanotify::name_group`], as
    /// [`Fanotify::read_events`] does. A record without a directory handle
    /// and name (a queue overflow is returned with an empty handle and name)
    /// or with a malformed one is skipped and counted.
    pub fn read_name_events(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<NameEvent>> {
        self.name_events_from(buf, timeout, None)
    }

    /// [`Fanotify::read_name_events`] until events arrive or `stop` is
    /// requested, as [`Fanotify::read_events_until`].
    pub fn read_name_events_until(&self, buf: &mut [u8], stop: &Stop) -> Result<Vec<NameEvent>> {
        self.name_events_from(buf, None, Some(stop))
    }

    fn name_events_from(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
        stop: Option<&Stop>,
    ) -> Result<Vec<NameEvent>> {
        let len = self.read_into(buf, timeout, stop)?;
        let mut malformed = 0;
        let events = parse_name_events(&buf[..len], &mut malformed);
        if malformed > 0 {
            self.malformed.fetch_add(malformed, Ordering::Relaxed);
        }
        Ok(events)
    }

    /// Waits up to `timeout` and reads whatever events are queued into
    /// `buf`: the number of bytes read (0 on timeout).
    fn read_into(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
        stop: Option<&Stop>,
    ) -> Result<usize> {
        if buf.len() < MIN_EVENT_BUFFER {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "fanotify read: buffer of {} bytes (need {MIN_EVENT_BUFFER})",
                    buf.len()
                ),
            ));
        }
        if !poll_readable_or(self.fd.as_raw_fd(), stop.map(Stop::raw_fd), timeout)
            .map_err(|e| Error::from_errno("poll(fanotify fd)", e))?
        {
            return Ok(0);
        }
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes for the
        // duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return match errno {
                libc::EAGAIN | libc::EINTR => Ok(0),
                _ => Err(Error::from_errno("read(fanotify fd)", errno)),
            };
        }
        Ok(usize::try_from(n).unwrap_or(0).min(buf.len()))
    }

    /// Answers the permission event whose fd is `event_fd`. Call exactly once
    /// per permission event, before closing its fd (see the module docs).
    ///
    /// [`ErrorKind::NotPending`] if `event_fd` is not a pending permission
    /// event of this group.
    pub fn respond(&self, event_fd: BorrowedFd<'_>, response: Response) -> Result<()> {
        let answer = match response {
            Response::Allow => libc::FAN_ALLOW,
            Response::Deny => libc::FAN_DENY,
        };
        // struct fanotify_response { __s32 fd; __u32 response; }
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&event_fd.as_raw_fd().to_ne_bytes());
        bytes[4..].copy_from_slice(&answer.to_ne_bytes());
        // SAFETY: `bytes` is a valid 8-byte buffer the kernel only reads.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let op = format!(
                "write(fanotify_response {{ fd: {}, {response:?} }})",
                event_fd.as_raw_fd()
            );
            let err = Error::last_os_error(op);
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) => err.with_kind(ErrorKind::NotPending),
                _ => err,
            });
        }
        Ok(())
    }

    /// How many malformed event records were skipped so far.
    pub fn malformed_events(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// One event of a [`Fanotify::name_group`]: `name` was removed from, moved
/// out of, moved into or created in the directory `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameEvent {
    /// What happened ([`Mask::DELETE`], [`Mask::MOVED_FROM`],
    /// [`Mask::MOVED_TO`], [`Mask::CREATE`], with [`Mask::ONDIR`] for a
    /// directory; or [`Mask::Q_OVERFLOW`]).
    pub mask: Mask,
    /// The process (thread-group id) that caused it.
    pub pid: i32,
    /// The directory, as a file handle for [`open_dir_by_handle`] (empty for
    /// an overflow).
    pub dir: FileHandle,
    /// The entry's name in that directory (empty for an overflow).
    pub name: std::ffi::OsString,
}

/// A file handle as the kernel reports it (`struct file_handle`), with the
/// id of the filesystem it belongs to (handles are only meaningful there).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FileHandle {
    /// The filesystem's id (`statfs`'s `f_fsid`); see [`fsid`].
    pub fsid: [i32; 2],
    /// `handle_type`.
    pub handle_type: i32,
    /// `f_handle`.
    pub bytes: Vec<u8>,
}

/// The id of the filesystem `fd` is on (`fstatfs`'s `f_fsid`), as name
/// events report it in [`FileHandle::fsid`].
pub fn fsid(fd: BorrowedFd<'_>) -> Result<[i32; 2]> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `st` is a writable statfs the kernel fills on success.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(Error::last_os_error("fstatfs"));
    }
    // SAFETY: fstatfs succeeded, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    // fsid_t's field is private in libc; it is two C ints.
    const _: () = assert!(std::mem::size_of::<libc::fsid_t>() == 8);
    // SAFETY: fsid_t is `struct { int val[2]; }`: 8 bytes of plain data.
    let raw: [i32; 2] = unsafe { std::mem::transmute(st.f_fsid) };
    Ok(raw)
}

/// Opens (`O_PATH`) the directory a [`NameEvent`] names, on the filesystem
/// that `mount` (any open file or directory of it) is on; check first that
/// its [`fsid`] is the handle's, a handle decoded on another filesystem
/// means nothing. Needs
/// `CAP_DAC_READ_SEARCH`. `mount` must be a real open (the kernel refuses
/// an `O_PATH` fd there); the directory itself is opened `O_PATH`, which
/// raises no fanotify event.
pub fn open_dir_by_handle(mount: BorrowedFd<'_>, handle: &FileHandle) -> Result<OwnedFd> {
    const HEADER: usize = std::mem::size_of::<libc::file_handle>();
    let handle_bytes = u32::try_from(handle.bytes.len())
        .ok()
        .filter(|n| *n > 0 && *n <= 128) // MAX_HANDLE_SZ
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "file handle of a bad size"))?;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; },
    // built in a u64 buffer so that it is aligned for the header's fields.
    let mut words = vec![0u64; (HEADER + handle.bytes.len()).div_ceil(8)];
    {
        // SAFETY: `words` spans at least HEADER + bytes.len() bytes; viewing
        // initialized u64s as bytes is always valid.
        let raw: &mut [u8] = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        raw[..4].copy_from_slice(&handle_bytes.to_ne_bytes());
        raw[4..8].copy_from_slice(&handle.handle_type.to_ne_bytes());
        raw[HEADER..HEADER + handle.bytes.len()].copy_from_slice(&handle.bytes);
    }
    // SAFETY: the buffer holds a well-formed, aligned file_handle whose
    // handle_bytes matches the bytes that follow; the kernel only reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            words.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::last_os_error("open_by_handle_at"));
    }
    // SAFETY: open_by_handle_at returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Parses the records of a name group: metadata (whose fd is `FAN_NOFD`)
/// followed by info records `{ u8 type; u8 pad; u16 len; ... }`; the
/// `FAN_EVENT_INFO_TYPE_DFID_NAME` record is
/// `{ fsid (8 bytes); u32 handle_bytes; i32 handle_type; handle; name\0 }`.
fn parse_name_events(mut bytes: &[u8], malformed: &mut u64) -> Vec<NameEvent> {
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let Some(header) = bytes.get(..METADATA_LEN) else {
            *malformed += 1;
            break;
        };
        let event_len = u32_at(header, 0) as usize;
        let metadata_len = u16::from_ne_bytes([header[6], header[7]]) as usize;
        if event_len < METADATA_LEN || event_len > bytes.len() {
            *malformed += 1;
            break;
        }
        let record = &bytes[..event_len];
        bytes = &bytes[event_len..];
        if header[4] != libc::FANOTIFY_METADATA_VERSION
            || metadata_len < METADATA_LEN
            || metadata_len > event_len
        {
            *malformed += 1;
            continue;
        }
        let mask = Mask(u64::from_ne_bytes(
            header[8..16].try_into().unwrap_or([0; 8]),
        ));
        let pid = i32::from_ne_bytes(header[20..24].try_into().unwrap_or([0; 4]));
        if mask.contains(Mask::Q_OVERFLOW) {
            events.push(NameEvent {
                mask,
                pid,
                dir: FileHandle::default(),
                name: Default::default(),
            });
            continue;
        }
        let mut info = &record[metadata_len..];
        let mut found = None;
        while info.len() >= 4 {
            let kind = info[0];
            let len = u16::from_ne_bytes([info[2], info[3]]) as usize;
            if len < 4 || len > info.len() {
                break;
            }
            if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                found = parse_dfid_name(&info[4..len]);
                break;
            }
            info = &info[len..];
        }
        match found {
            Some((dir, name)) => events.push(NameEvent {
                mask,
                pid,
                dir,
                name,
            }),
            None => *malformed += 1,
        }
    }
    events
}

/// `{ fsid (8 bytes); u32 handle_bytes; i32 handle_type; handle; name\0 pad }`.
fn parse_dfid_name(body: &[u8]) -> Option<(FileHandle, std::ffi::OsString)> {
    use std::os::unix::ffi::OsStringExt;
    let fsid = [
        i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?),
        i32::from_ne_bytes(body.get(4..8)?.try_into().ok()?),
    ];
    let handle_bytes = u32_at(body.get(8..12)?, 0) as usize;
    let handle_type = i32::from_ne_bytes(body.get(12..16)?.try_into().ok()?);
    let handle = body.get(16..16 + handle_bytes)?.to_vec();
    let rest = body.get(16 + handle_bytes..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    if end == 0 {
        return None;
    }
    Some((
        FileHandle {
            fsid,
            handle_type,
            bytes: handle,
        },
        std::ffi::OsString::from_vec(rest[..end].to_vec()),
    ))
}

/// One record of the read buffer, before its fd is owned.
#[derive(Debug, PartialEq, Eq)]
struct RawEvent {
    mask: u64,
    fd: i32,
    pid: i32,
}

/// Parses `struct fanotify_event_metadata` records:
/// `{ u32 event_len; u8 vers; u8 reserved; u16 metadata_len; u64 mask; s32 fd; s32 pid; }`
/// followed by optional info records up to `event_len`.
///
/// A record with an unknown version is skipped (its fd cannot be trusted);
/// a record whose lengths do not fit ends the parse (the next record cannot
/// be found). Both count as malformed.
fn parse_events(mut bytes: &[u8], malformed: &mut u64) -> Vec<RawEvent> {
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let Some(header) = bytes.get(..METADATA_LEN) else {
            *malformed += 1;
            break;
        };
        let event_len = u32_at(header, 0) as usize;
        let vers = header[4];
        let metadata_len = u16::from_ne_bytes([header[6], header[7]]) as usize;
        if event_len < METADATA_LEN || event_len > bytes.len() {
            *malformed += 1;
            break;
        }
        if vers != libc::FANOTIFY_METADATA_VERSION
            || metadata_len < METADATA_LEN
            || metadata_len > event_len
        {
            *malformed += 1;
            bytes = &bytes[event_len..];
            continue;
        }
        let mask = u64::from_ne_bytes(header[8..16].try_into().unwrap_or([0; 8]));
        let fd = i32::from_ne_bytes(header[16..20].try_into().unwrap_or([0xff; 4]));
        let pid = i32::from_ne_bytes(header[20..24].try_into().unwrap_or([0; 4]));
        if fd < libc::FAN_NOFD {
            // Not an fd and not FAN_NOFD: nothing we can own or answer.
            *malformed += 1;
            bytes = &bytes[event_len..];
            continue;
        }
        events.push(RawEvent { mask, fd, pid });
        bytes = &bytes[event_len..];
    }
    events
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_ne_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        event_len: u32,
        vers: u8,
        metadata_len: u16,
        mask: u64,
        fd: i32,
        pid: i32,
    ) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&event_len.to_ne_bytes());
        r.push(vers);
        r.push(0);
        r.extend_from_slice(&metadata_len.to_ne_bytes());
        r.extend_from_slice(&mask.to_ne_bytes());
        r.extend_from_slice(&fd.to_ne_bytes());
        r.extend_from_slice(&pid.to_ne_bytes());
        r.resize(event_len.max(24) as usize, 0);
        r
    }

    fn good(mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        record(24, 3, 24, mask, fd, pid)
    }

    fn check(input: Vec<u8>, expect: Vec<RawEvent>, expect_malformed: u64) {
        let mut malformed = 0;
        assert_eq!(parse_events(&input, &mut malformed), expect);
        assert_eq!(malformed, expect_malformed);
    }

    fn ev(mask: u64, fd: i32, pid: i32) -> RawEvent {
        RawEvent { mask, fd, pid }
    }

    /// A name-group record: metadata, then a DFID_NAME info record.
    fn name_record(mask: u64, handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut info = Vec::new();
        info.extend_from_slice(&[0u8; 8]); // fsid
        info.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        info.extend_from_slice(&1i32.to_ne_bytes());
        info.extend_from_slice(handle);
        info.extend_from_slice(name);
        info.push(0);
        while (info.len() + 4) % 4 != 0 {
            info.push(0);
        }
        let info_len = (info.len() + 4) as u16;
        // The metadata alone, then its length patched to cover the info record.
        let mut r = record(
            24,
            libc::FANOTIFY_METADATA_VERSION,
            24,
            mask,
            libc::FAN_NOFD,
            7,
        );
        r[..4].copy_from_slice(&(24 + u32::from(info_len)).to_ne_bytes());
        r.push(libc::FAN_EVENT_INFO_TYPE_DFID_NAME);
        r.push(0);
        r.extend_from_slice(&info_len.to_ne_bytes());
        r.extend_from_slice(&info);
        r
    }

    #[test]
    fn name_records_parse_and_hostile_ones_are_skipped() {
        let mut bytes = name_record(libc::FAN_DELETE, &[1, 2, 3, 4, 5, 6, 7, 8], b"libx.so");
        bytes.extend(name_record(libc::FAN_MOVED_FROM, &[9; 12], b"a"));
        let mut malformed = 0;
        let evs = parse_name_events(&bytes, &mut malformed);
        assert_eq!(malformed, 0);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].mask, Mask::DELETE);
        assert_eq!(evs[0].dir.bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(evs[0].name, "libx.so");
        assert_eq!(evs[0].pid, 7);
        assert_eq!(evs[1].name, "a");
        // A handle longer than its record, an empty name, no info record at
        // all: skipped and counted, and the records after them still parse.
        let mut bad = name_record(libc::FAN_DELETE, &[1; 8], b"x");
        bad[24 + 4 + 8..24 + 4 + 12].copy_from_slice(&200u32.to_ne_bytes());
        let mut bytes = bad;
        bytes.extend(name_record(libc::FAN_DELETE, &[1; 8], b""));
        bytes.extend(record(
            24,
            libc::FANOTIFY_METADATA_VERSION,
            24,
            libc::FAN_DELETE,
            libc::FAN_NOFD,
            1,
        ));
        bytes.extend(name_record(libc::FAN_DELETE, &[2; 8], b"ok"));
        let mut malformed = 0;
        let evs = parse_name_events(&bytes, &mut malformed);
        assert_eq!(malformed, 3);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].name, "ok");
        // Truncated buffer: stops, counted.
        let whole = name_record(libc::FAN_DELETE, &[2; 8], b"ok");
        let mut malformed = 0;
        assert!(parse_name_events(&whole[..30], &mut malformed).is_empty());
        assert_eq!(malformed, 1);
        // Overflow: reported, without a directory.
        let mut malformed = 0;
        let ov = record(
            24,
            libc::FANOTIFY_METADATA_VERSION,
            24,
            libc::FAN_Q_OVERFLOW,
            libc::FAN_NOFD,
            0,
        );
        let evs = parse_name_events(&ov, &mut malformed);
        assert_eq!(evs.len(), 1);
        assert!(evs[0].mask.contains(Mask::Q_OVERFLOW) && evs[0].name.is_empty());
    }

    #[test]
    fn parses_well_formed_records() {
        let mut buf = good(libc::FAN_OPEN_PERM, 7, 100);
        buf.extend(good(libc::FAN_OPEN_EXEC_PERM, 8, 101));
        buf.extend(good(libc::FAN_Q_OVERFLOW, -1, 0));
        check(
            buf,
            vec![
                ev(libc::FAN_OPEN_PERM, 7, 100),
                ev(libc::FAN_OPEN_EXEC_PERM, 8, 101),
                ev(libc::FAN_Q_OVERFLOW, -1, 0),
            ],
            0,
        );
    }

    #[test]
    fn skips_info_records_by_event_len() {
        let mut buf = record(40, 3, 24, libc::FAN_OPEN_PERM, 7, 1);
        buf.extend(good(libc::FAN_OPEN_PERM, 8, 2));
        check(
            buf,
            vec![ev(libc::FAN_OPEN_PERM, 7, 1), ev(libc::FAN_OPEN_PERM, 8, 2)],
            0,
        );
    }

    #[test]
    fn malformed_records_are_skipped_and_counted() {
        // Truncated header.
        check(good(1, 3, 4)[..10].to_vec(), vec![], 1);
        // event_len shorter than the header: cannot advance.
        check(record(8, 3, 24, 1, 3, 4), vec![], 1);
        // event_len beyond the buffer.
        let mut buf = good(1, 5, 6);
        buf.extend(&record(48, 3, 24, 1, 3, 4)[..24]);
        check(buf, vec![ev(1, 5, 6)], 1);
        // Wrong version: skipped, the next record is still read.
        let mut buf = record(24, 2, 24, 1, 3, 4);
        buf.extend(good(1, 5, 6));
        check(buf, vec![ev(1, 5, 6)], 1);
        // metadata_len larger than event_len.
        let mut buf = record(24, 3, 32, 1, 3, 4);
        buf.extend(good(1, 5, 6));
        check(buf, vec![ev(1, 5, 6)], 1);
        // Negative fd other than FAN_NOFD.
        check(good(1, -7, 4), vec![], 1);
        // Empty buffer.
        check(Vec::new(), vec![], 0);
    }

    #[test]
    fn mask_ops() {
        let m = Mask::OPEN_PERM | Mask::OPEN_EXEC_PERM;
        assert!(m.contains(Mask::OPEN_PERM));
        assert!(!m.contains(Mask::OPEN_PERM | Mask::CLOSE_WRITE));
        assert!(m.is_permission());
        assert!(!Mask::CLOSE_WRITE.is_permission());
        assert_eq!(format!("{m:?}"), "OPEN_PERM|OPEN_EXEC_PERM");
        assert_eq!(format!("{:?}", Mask::from_bits(1 << 40)), "0x10000000000");
        assert_eq!(format!("{:?}", Mask::empty()), "0x0");
    }

    #[test]
    fn fanotify_is_send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<Fanotify>();
        assert::<Event>();
    }
}
