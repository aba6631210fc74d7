//! The BPF LSM exec-mapping guard.
//!
//! fanotify sees every *open*, but the kernel asks it for an exec decision
//! (`FAN_OPEN_EXEC_PERM`) only when the kernel itself opens the file for
//! execution. The dynamic loader opens libraries with plain open(2) and maps
//! them `PROT_EXEC`, and so does `ld.so ./program`: for fanotify those are
//! ordinary reads. The guard closes that gap at the mapping itself.
//!
//! [`ExecGuard::load`] loads `src/bpf/guard.bpf.c` (compiled by `build.rs`)
//! and attaches its programs to these LSM hooks:
//!
//! | hook | checks |
//! |------|--------|
//! | `mmap_file` | a `PROT_EXEC` mapping of a file ([`GuardEventKind::ExecMapping`]) — libraries, `ld.so ./prog`, and the kernel's own mappings of an exec'd binary |
//! | `file_mprotect` | adding `PROT_EXEC` to a file-backed mapping ([`GuardEventKind::Mprotect`]); anonymous memory is never judged |
//! | `bprm_check_security` | execve/execveat of a file, memfd included ([`GuardEventKind::Exec`], [`GuardEventKind::MemfdExec`]), before the point of no return |
//! | `file_permission` (`MAY_WRITE`), `file_truncate`, `path_truncate`, and `mmap_file`/`file_mprotect` for shared writable mappings | content changes: remove the inode from `allowed` ([`GuardEventKind::Invalidated`]) |
//!
//! **The exec rule**, for a file on a watched device: allowed iff its inode is
//! in `allowed` *and* nobody holds it open for writing (`i_writecount > 0`)
//! *and* it has no shared writable mapping (`i_mmap_writable > 0`); otherwise
//! the guard emits an event and, in [`GuardMode::Enforce`], fails the call
//! with `EPERM`. Files on devices that are not watched are allowed at once,
//! except memfd files when [`GuardConfig::block_memfd_exec`] is set.
//!
//! Note that executing a file is also subject to the rule: the kernel maps an
//! exec'd ELF binary (and its interpreter) through `mmap_file`, and
//! `bprm_check_security` checks the file first so that a denied exec fails
//! cleanly with `EPERM` instead of killing the half-exec'd process. The agent
//! must therefore [`ExecGuard::allow`] every file on a watched device that it
//! approves for execution (binaries and scripts), not only libraries.
//!
//! The programs detach when the [`ExecGuard`] is dropped (nothing is pinned).

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, MapError, RingBuf};
use aya::programs::Lsm;
use aya::{Btf, Ebpf, EbpfLoader};

use crate::error::{Error, ErrorKind, Result};
use crate::stop::{poll_readable_or, Stop};

/// The compiled BPF object (see `build.rs`), aligned for the ELF parser.
static GUARD_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard.bpf.o"));

/// Programs of the object: (program name, LSM hook, required).
const PROGRAMS: [(&str, &str, bool); 6] = [
    ("mmap_file", "mmap_file", true),
    ("file_mprotect", "file_mprotect", true),
    ("bprm_check_security", "bprm_check_security", true),
    ("file_permission", "file_permission", true),
    // file_truncate exists since Linux 6.2 (ftruncate, open(O_TRUNC));
    // older kernels route those through path_truncate.
    ("file_truncate", "file_truncate", false),
    ("path_truncate", "path_truncate", true),
];

/// Kernel event kinds (`KIND_*` in guard.bpf.c).
const KIND_EXEC_MAPPING: u32 = 1;
const KIND_MPROTECT: u32 = 2;
const KIND_MEMFD_EXEC: u32 = 3;
const KIND_INVALIDATED: u32 = 4;
const KIND_EXEC: u32 = 5;
const KIND_USERNS_FS: u32 = 6;

/// `sizeof(struct event)` in guard.bpf.c.
const EVENT_LEN: usize = 48;

/// What the guard does with a mapping or exec that breaks the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuardMode {
    /// Judge nothing (invalidation of `allowed` still runs).
    Off,
    /// Allow, but report what [`GuardMode::Enforce`] would deny (`denied: false`).
    Report,
    /// Deny with `EPERM` and report (`denied: true`).
    Enforce,
}

/// The guard's configuration (the BPF `config` map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuardConfig {
    /// What to do with violations.
    pub mode: GuardMode,
    /// The agent's tgid (its `std::process::id()`, in the initial pid
    /// namespace): its own mappings and execs are never judged. 0 exempts
    /// nobody.
    pub agent_tgid: u32,
    /// Also report (and in [`GuardMode::Enforce`], deny) every execution and
    /// executable mapping of a memfd (`memfd_create` + `fexecve`, fileless
    /// malware), machine-wide. Off by default: some runtimes map memfds
    /// executable for W^X JIT code (.NET), and container runtimes (runc)
    /// re-exec themselves from a memfd.
    pub block_memfd_exec: bool,
    /// Also report (and in [`GuardMode::Enforce`], deny) every execution and
    /// executable mapping of a file on a filesystem mounted inside a user
    /// namespace ([`GuardEventKind::UserNamespaceFs`]), machine-wide. Any user
    /// may create a user namespace (where the kernel allows it) and mount a
    /// tmpfs there: no mount table the agent reads shows it, so no one
    /// watches it. Rootless containers run from such filesystems.
    pub block_userns_fs: bool,
}

impl GuardConfig {
    /// Everything off: the guard judges nothing.
    pub const OFF: GuardConfig = GuardConfig {
        mode: GuardMode::Off,
        agent_tgid: 0,
        block_memfd_exec: false,
        block_userns_fs: false,
    };

    fn to_bytes(self) -> [u8; 16] {
        let mode: u32 = match self.mode {
            GuardMode::Off => 0,
            GuardMode::Report => 1,
            GuardMode::Enforce => 2,
        };
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&mode.to_ne_bytes());
        b[4..8].copy_from_slice(&self.agent_tgid.to_ne_bytes());
        b[8..12].copy_from_slice(&u32::from(self.block_memfd_exec).to_ne_bytes());
        b[12..16].copy_from_slice(&u32::from(self.block_userns_fs).to_ne_bytes());
        b
    }
}

/// An inode, as userspace names it: `st_dev` (glibc encoding, as returned by
/// stat(2)) and `st_ino`.
///
/// The guard keys on `inode->i_sb->s_dev` and `inode->i_ino`, which equal
/// `st_dev`/`st_ino` on ordinary filesystems (ext4, xfs, tmpfs). They differ
/// on btrfs subvolumes (stat reports a per-subvolume device) and for
/// overlayfs files: the guard cannot protect such filesystems by this key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    /// `st_dev` of the file (userspace encoding).
    pub dev: u64,
    /// `st_ino` of the file.
    pub ino: u64,
}

impl InodeKey {
    /// The key of an open file (fstat).
    pub fn of_file(file: &impl std::os::fd::AsFd) -> Result<InodeKey> {
        let meta = std::fs::File::from(
            file.as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::from_errno("dup(fd)", e.raw_os_error().unwrap_or(0)))?,
        )
        .metadata()
        .map_err(|e| Error::from_errno("fstat(fd)", e.raw_os_error().unwrap_or(0)))?;
        use std::os::unix::fs::MetadataExt;
        Ok(InodeKey {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn to_bytes(self) -> Result<[u8; 16]> {
        let dev = kernel_dev(self.dev)?;
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&dev.to_ne_bytes());
        b[8..16].copy_from_slice(&self.ino.to_ne_bytes());
        Ok(b)
    }
}

/// Userspace `st_dev` (glibc `makedev` encoding) to the kernel's internal
/// `dev_t` (`MKDEV(major, minor)` = `major << 20 | minor`), or `None` if the
/// numbers do not fit the kernel's 12-bit major / 20-bit minor.
pub fn kernel_dev_from_st_dev(st_dev: u64) -> Option<u32> {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    if major >= 1 << 12 || minor >= 1 << 20 {
        return None;
    }
    Some((major << 20) | minor)
}

/// The kernel's internal `dev_t` to userspace `st_dev` (glibc encoding).
pub fn st_dev_from_kernel_dev(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & ((1 << 20) - 1))
}

fn kernel_dev(st_dev: u64) -> Result<u32> {
    kernel_dev_from_st_dev(st_dev).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("guard: device {st_dev:#x} (no kernel dev_t has this major/minor)"),
        )
    })
}

/// What a [`GuardEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GuardEventKind {
    /// A `PROT_EXEC` mapping of a watched file that is not allowed (library
    /// via ld.so/dlopen/LD_PRELOAD, `ld.so ./prog`, an exec'd binary).
    ExecMapping,
    /// An mprotect adding `PROT_EXEC` to a mapping of a watched file that is
    /// not allowed.
    Mprotect,
    /// An exec or executable mapping of a memfd (only with
    /// [`GuardConfig::block_memfd_exec`]).
    MemfdExec,
    /// An allowed inode was removed from `allowed` because its content can
    /// change (write, truncate, shared writable mapping). Emitted whatever the
    /// mode; `denied` is always false.
    Invalidated,
    /// An execve/execveat of a watched file that is not allowed, caught before
    /// the point of no return (the exec fails with `EPERM` when enforcing).
    Exec,
    /// An exec or executable mapping of a file on a filesystem mounted
    /// inside a user namespace (only with [`GuardConfig::block_userns_fs`]).
    UserNamespaceFs,
}

/// One report from the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardEvent {
    /// What happened.
    pub kind: GuardEventKind,
    /// The acting process (thread-group id, initial pid namespace).
    pub tgid: u32,
    /// The acting thread.
    pub pid: u32,
    /// Its real uid.
    pub uid: u32,
    /// The file (for a memfd: the kernel-internal shmem device and inode).
    pub key: InodeKey,
    /// Whether the operation was refused with `EPERM`.
    pub denied: bool,
    /// The task's `comm` (at most 15 bytes, lossy UTF-8).
    pub comm: String,
}

impl GuardEvent {
    /// Decodes one ring-buffer record; `None` if malformed.
    fn parse(b: &[u8]) -> Option<GuardEvent> {
        let b = b.get(..EVENT_LEN)?;
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let kind = match u32_at(0)? {
            KIND_EXEC_MAPPING => GuardEventKind::ExecMapping,
            KIND_MPROTECT => GuardEventKind::Mprotect,
            KIND_MEMFD_EXEC => GuardEventKind::MemfdExec,
            KIND_INVALIDATED => GuardEventKind::Invalidated,
            KIND_EXEC => GuardEventKind::Exec,
            KIND_USERNS_FS => GuardEventKind::UserNamespaceFs,
            _ => return None,
        };
        let ino = u64::from_ne_bytes(b.get(24..32)?.try_into().ok()?);
        let comm = b.get(32..48)?;
        let comm_len = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
        Some(GuardEvent {
            kind,
            tgid: u32_at(4)?,
            pid: u32_at(8)?,
            uid: u32_at(12)?,
            key: InodeKey {
                dev: st_dev_from_kernel_dev(u32_at(16)?),
                ino,
            },
            denied: u32_at(20)? != 0,
            comm: String::from_utf8_lossy(&comm[..comm_len]).into_owned(),
        })
    }
}

/// The loaded and attached guard. `Send + Sync`: every method takes `&self`
/// and may be called from several threads. Dropping it detaches the programs.
pub struct ExecGuard {
    // Declared first so it drops first: detaching the programs before the
    // maps' fds close (the kernel keeps the maps alive for the programs anyway).
    _ebpf: Ebpf,
    watched: Mutex<HashMap<MapData, u32, u8>>,
    allowed: Mutex<HashMap<MapData, [u8; 16], u32>>,
    config: Mutex<Array<MapData, [u8; 16]>>,
    counters: Mutex<Array<MapData, u64>>,
    events: Mutex<RingBuf<MapData>>,
    events_fd: RawFd,
    hooks: Vec<&'static str>,
    malformed: AtomicU64,
}

impl fmt::Debug for ExecGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecGuard")
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

fn bpf_err(
    op: impl Into<std::borrow::Cow<'static, str>>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    let mut errno = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&source);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            errno = io.raw_os_error();
            break;
        }
        cause = c.source();
    }
    let kind = match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::E2BIG) | Some(libc::ENOSPC) => ErrorKind::CapacityExceeded,
        _ => ErrorKind::Bpf,
    };
    let err = match errno {
        Some(errno) => Error::from_errno(op, errno),
        None => Error::new(kind, op),
    };
    err.with_kind(kind).with_source(source)
}

fn map_err(op: impl Into<std::borrow::Cow<'static, str>>, source: MapError) -> Error {
    bpf_err(op, source)
}

fn is_enoent(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a BPF map handle in a
    // broken state (all state is in the kernel), so poisoning is ignored.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether this process has the effective capabilities to load BPF LSM
/// programs (CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON).
fn has_bpf_privileges() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Whether the BPF LSM is active, from securityfs. Without it the programs
/// would load and attach but never run, so "cannot tell" is an error too.
fn check_bpf_lsm_active() -> Result<()> {
    const LSM_LIST: &str = "/sys/kernel/security/lsm";
    let op = "guard: checking that the BPF LSM is active";
    let list = std::fs::read_to_string(LSM_LIST).map_err(|e| {
        Error::new(ErrorKind::Unsupported, op).with_source(e).with_hint(format!(
            "cannot read {LSM_LIST}; mount securityfs: mount -t securityfs securityfs /sys/kernel/security"
        ))
    })?;
    if list.trim().split(',').any(|lsm| lsm == "bpf") {
        return Ok(());
    }
    Err(Error::new(ErrorKind::Unsupported, op).with_hint(format!(
        "`bpf` is missing from {LSM_LIST} ({}); the kernel needs CONFIG_BPF_LSM=y and `bpf` in its lsm= boot parameter",
        list.trim()
    )))
}

impl ExecGuard {
    /// Loads the BPF object, relocates it against the kernel's BTF, and
    /// attaches every program. The guard starts in [`GuardMode::Off`] with no
    /// watched device: inert until [`ExecGuard::set_config`].
    ///
    /// [`ErrorKind::Unsupported`] if the BPF LSM is not active (or securityfs
    /// is not mounted, so that cannot be checked), the kernel has no BTF, or
    /// the kernel refuses LSM programs even to a fully privileged process;
    /// [`ErrorKind::PermissionDenied`] without the privileges.
    pub fn load() -> Result<ExecGuard> {
        check_bpf_lsm_active()?;
        let btf = Btf::from_sys_fs().map_err(|e| {
            bpf_err("guard: reading kernel BTF from /sys/kernel/btf/vmlinux", e)
                .with_kind(ErrorKind::Unsupported)
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(GUARD_OBJ)
            .map_err(|e| bpf_err("guard: loading the BPF object", e))?;

        let mut hooks = Vec::new();
        for (name, hook, required) in PROGRAMS {
            let program = ebpf.program_mut(name).ok_or_else(|| {
                Error::new(
                    ErrorKind::Bpf,
                    format!("guard: program `{name}` missing from the object"),
                )
            })?;
            let lsm: &mut Lsm = program.try_into().map_err(|e| {
                bpf_err(format!("guard: program `{name}` is not an LSM program"), e)
            })?;
            match lsm.load(hook, &btf) {
                Ok(()) => {}
                Err(_) if !required => continue,
                Err(e) => {
                    let err = bpf_err(format!("guard: loading LSM program `{hook}`"), e);
                    return Err(
                        if err.kind() == ErrorKind::PermissionDenied && has_bpf_privileges() {
                            // Fully privileged and still EPERM before the verifier
                            // ran: the kernel refuses BPF LSM (trampoline) programs
                            // by policy. Seen on hardened/VM kernels that lock
                            // down kernel text patching.
                            err.with_kind(ErrorKind::Unsupported).with_hint(
                                "the kernel refuses BPF LSM programs although this process has \
                             CAP_SYS_ADMIN (or CAP_BPF and CAP_PERFMON)",
                            )
                        } else {
                            err
                        },
                    );
                }
            }
            lsm.attach()
                .map_err(|e| bpf_err(format!("guard: attaching LSM program `{hook}`"), e))?;
            hooks.push(hook);
        }

        let mut take = |name: &str| {
            ebpf.take_map(name).ok_or_else(|| {
                Error::new(
                    ErrorKind::Bpf,
                    format!("guard: map `{name}` missing from the object"),
                )
            })
        };
        let watched =
            HashMap::try_from(take("watched")?).map_err(|e| map_err("guard: map `watched`", e))?;
        let allowed =
            HashMap::try_from(take("allowed")?).map_err(|e| map_err("guard: map `allowed`", e))?;
        let config =
            Array::try_from(take("config")?).map_err(|e| map_err("guard: map `config`", e))?;
        let counters =
            Array::try_from(take("counters")?).map_err(|e| map_err("guard: map `counters`", e))?;
        let events =
            RingBuf::try_from(take("events")?).map_err(|e| map_err("guard: map `events`", e))?;
        let events_fd = events.as_raw_fd();

        Ok(ExecGuard {
            _ebpf: ebpf,
            watched: Mutex::new(watched),
            allowed: Mutex::new(allowed),
            config: Mutex::new(config),
            counters: Mutex::new(counters),
            events: Mutex::new(events),
            events_fd,
            hooks,
            malformed: AtomicU64::new(0),
        })
    }

    /// The LSM hooks the guard is attached to (`file_truncate` is missing on
    /// kernels older than 6.2).
    pub fn hooks(&self) -> &[&'static str] {
        &self.hooks
    }

    /// Sets mode, exempt agent tgid and the memfd rule, atomically for the
    /// programs (one map element).
    pub fn set_config(&self, config: GuardConfig) -> Result<()> {
        lock(&self.config)
            .set(0, config.to_bytes(), 0)
            .map_err(|e| map_err("guard: updating map `config`", e))
    }

    /// Puts the device `st_dev` (from stat(2)) under the exec rule.
    pub fn watch_device(&self, st_dev: u64) -> Result<()> {
        let dev = kernel_dev(st_dev)?;
        lock(&self.watched)
            .insert(dev, 1, 0)
            .map_err(|e| map_err(format!("guard: watching device {st_dev:#x}"), e))
    }

    /// Takes the device `st_dev` out of the exec rule (no error if it was not
    /// watched).
    pub fn unwatch_device(&self, st_dev: u64) -> Result<()> {
        let dev = kernel_dev(st_dev)?;
        match lock(&self.watched).remove(&dev) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(e) => Err(map_err(format!("guard: unwatching device {st_dev:#x}"), e)),
        }
    }

    /// Allows the inode to be executed and mapped executable, until
    /// [`ExecGuard::revoke`], [`ExecGuard::clear`], or the kernel invalidates
    /// it because its content may change.
    ///
    /// [`ErrorKind::CapacityExceeded`] when `allowed` is full (262144 inodes).
    pub fn allow(&self, key: InodeKey) -> Result<()> {
        let bytes = key.to_bytes()?;
        lock(&self.allowed)
            .insert(bytes, 1, 0)
            .map_err(|e| map_err(format!("guard: allowing {key:?}"), e))
    }

    /// Removes the inode from `allowed`; returns whether it was there.
    pub fn revoke(&self, key: InodeKey) -> Result<bool> {
        let bytes = key.to_bytes()?;
        match lock(&self.allowed).remove(&bytes) {
            Ok(()) => Ok(true),
            Err(e) if is_enoent(&e) => Ok(false),
            Err(e) => Err(map_err(format!("guard: revoking {key:?}"), e)),
        }
    }

    /// Whether the inode is currently in `allowed`.
    pub fn is_allowed(&self, key: InodeKey) -> Result<bool> {
        let bytes = key.to_bytes()?;
        match lock(&self.allowed).get(&bytes, 0) {
            Ok(_) => Ok(true),
            Err(e) if is_enoent(&e) => Ok(false),
            Err(e) => Err(map_err(format!("guard: looking up {key:?}"), e)),
        }
    }

    /// Empties `allowed` (one syscall per entry: up to a second when full).
    pub fn clear(&self) -> Result<()> {
        let mut allowed = lock(&self.allowed);
        let keys: Vec<[u8; 16]> = allowed.keys().filter_map(|k| k.ok()).collect();
        for key in keys {
            match allowed.remove(&key) {
                Ok(()) => {}
                Err(e) if is_enoent(&e) => {}
                Err(e) => return Err(map_err("guard: clearing `allowed`", e)),
            }
        }
        Ok(())
    }

    /// How many inodes are in `allowed` (walks the map: O(n) syscalls).
    pub fn allowed_count(&self) -> usize {
        lock(&self.allowed).keys().filter(|k| k.is_ok()).count()
    }

    /// Waits up to `timeout` for guard events and returns all that are queued
    /// (empty on timeout). Malformed records are skipped and counted.
    pub fn poll_events(&self, timeout: Duration) -> Result<Vec<GuardEvent>> {
        self.events_within(Some(timeout), None)
    }

    /// [`Guard::poll_events`] without a timeout: waits until events are
    /// queued or `stop` is requested.
    pub fn poll_events_until(&self, stop: &Stop) -> Result<Vec<GuardEvent>> {
        self.events_within(None, Some(stop))
    }

    fn events_within(
        &self,
        timeout: Option<Duration>,
        stop: Option<&Stop>,
    ) -> Result<Vec<GuardEvent>> {
        let events = self.drain();
        if !events.is_empty() {
            return Ok(events);
        }
        poll_readable_or(self.events_fd, stop.map(Stop::raw_fd), timeout)
            .map_err(|e| Error::from_errno("poll(guard ring buffer)", e))?;
        Ok(self.drain())
    }

    fn drain(&self) -> Vec<GuardEvent> {
        let mut ring = lock(&self.events);
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            match GuardEvent::parse(&item) {
                Some(event) => out.push(event),
                None => {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        out
    }

    /// Events the kernel dropped because the ring buffer (256 KiB) was full.
    pub fn dropped_events(&self) -> u64 {
        lock(&self.counters).get(&0, 0).unwrap_or(0)
    }

    /// Ring-buffer records skipped as malformed.
    pub fn malformed_events(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_conversion_matches_glibc_makedev() {
        let check = |major: u32, minor: u32| {
            let st_dev = libc::makedev(major, minor);
            let kernel = kernel_dev_from_st_dev(st_dev).expect("fits");
            assert_eq!(kernel, (major << 20) | minor, "MKDEV({major}, {minor})");
            assert_eq!(st_dev_from_kernel_dev(kernel), st_dev);
            assert_eq!(libc::major(st_dev_from_kernel_dev(kernel)), major);
            assert_eq!(libc::minor(st_dev_from_kernel_dev(kernel)), minor);
        };
        check(0, 0);
        check(0, 45); // tmpfs-style anonymous device
        check(8, 1); // /dev/sda1
        check(259, 3); // nvme partition (minor > 255 in some setups)
        check(253, 70000); // large minor
        check(4095, (1 << 20) - 1);
        assert_eq!(kernel_dev_from_st_dev(libc::makedev(4096, 0)), None);
        assert_eq!(kernel_dev_from_st_dev(libc::makedev(1, 1 << 20)), None);
    }

    #[test]
    fn dev_conversion_of_a_real_file() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata("/").expect("stat /");
        let kernel = kernel_dev_from_st_dev(meta.dev()).expect("fits");
        assert_eq!(st_dev_from_kernel_dev(kernel), meta.dev());
    }

    #[test]
    fn event_parse() {
        let mut b = Vec::new();
        for v in [KIND_EXEC_MAPPING, 10, 11, 0, (8 << 20) | 1, 1] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&42u64.to_ne_bytes());
        b.extend_from_slice(b"prog\0\0\0\0\0\0\0\0\0\0\0\0");
        let e = GuardEvent::parse(&b).expect("well formed");
        assert_eq!(e.kind, GuardEventKind::ExecMapping);
        assert_eq!((e.tgid, e.pid, e.uid), (10, 11, 0));
        assert_eq!(
            e.key,
            InodeKey {
                dev: libc::makedev(8, 1),
                ino: 42
            }
        );
        assert!(e.denied);
        assert_eq!(e.comm, "prog");
        assert_eq!(GuardEvent::parse(&b[..47]), None);
        let mut bad = b.clone();
        bad[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(GuardEvent::parse(&bad), None);
    }

    #[test]
    fn config_layout() {
        let b = GuardConfig {
            mode: GuardMode::Enforce,
            agent_tgid: 7,
            block_memfd_exec: true,
            block_userns_fs: true,
        }
        .to_bytes();
        assert_eq!(b[0..4], 2u32.to_ne_bytes());
        assert_eq!(b[4..8], 7u32.to_ne_bytes());
        assert_eq!(b[8..12], 1u32.to_ne_bytes());
        assert_eq!(b[12..16], 1u32.to_ne_bytes());
    }

    #[test]
    fn guard_is_send_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<ExecGuard>();
    }
}
