//! Which file a path names for another process, resolved as that process
//! would resolve it: from its working directory or its root, in its mount
//! namespace, with its own descriptors behind `/proc/self/fd/N` (and so
//! `/dev/fd/N`, `/dev/stdin`), whatever symbolic links lead there.
//!
//! The kernel resolves `/proc/self` for whoever resolves the path. So a
//! path the agent resolves for an interpreter, when it asks whether the
//! file being read is the script on its command line, would name the
//! agent's own descriptors wherever it reaches `/proc/self`: directly,
//! or through a link the caller made (`ln -s /proc/self/fd/3 x; python3 x
//! 3<payload`). Resolution inside the caller's root with `openat2` cannot
//! help: it refuses the magic links behind `/proc/PID/fd/N` altogether.
//! So this walks the path one name at a time, as the kernel would for the
//! caller: ordinary links are read and followed in the caller's root,
//! `self` and `thread-self` at the root of a procfs stand for the caller,
//! and the magic links of a process's directory (`fd/N`, `cwd`, `root`,
//! `exe`) are followed by the kernel, since they name their object
//! whoever follows them.
//!
//! Nothing is asked of a FUSE filesystem, whose daemon need never answer:
//! each place reached is examined with `AT_STATX_DONT_SYNC` and its type
//! read from the caller's mount table, and a walk reaching FUSE ends, not
//! known (to the script check, a match: it fails closed).

use crate::files::FileId;
use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

/// Links followed before giving up, as the kernel does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// The inode number of a procfs root.
const PROC_ROOT_INO: u64 = 1;

/// What a path names for a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    /// This file.
    File(FileId),
    /// Nothing: no such name, or not a directory on the way.
    Nothing,
    /// Not known: the walk met a limit (links, the event's budget), a
    /// filesystem it does not enter (FUSE), or another error. A caller
    /// that must not fail open takes it as a match.
    Unknown,
}

/// The work one decision may spend resolving paths, over all of them:
/// names looked up, and time. A command line may hold 2 MiB of arguments,
/// each a path of 40 links of 4 KiB: without a bound, one process could
/// keep a worker for minutes.
pub(crate) struct Budget {
    names: usize,
    until: Instant,
    /// The caller's mount table, read when first needed and again once
    /// for a mount not in it.
    mounts: Option<MountTypes>,
}

/// A thread's mount table: mount id -> filesystem type.
struct MountTypes {
    tid: u32,
    types: HashMap<u64, String>,
    /// Times read for this thread.
    reads: u32,
}

impl Budget {
    /// `names` lookups, until `time` from now.
    pub(crate) fn new(names: usize, time: Duration) -> Budget {
        Budget {
            names,
            until: Instant::now() + time,
            mounts: None,
        }
    }

    /// The type of the filesystem mounted as `mnt` for `tid`, from its
    /// mount table: known without asking the filesystem anything (a
    /// `statfs` of a FUSE filesystem waits on its daemon, which need
    /// never answer). A mount in no table it can read is not known.
    fn fstype(&mut self, tid: u32, mnt: u64) -> Result<&str, Stop> {
        let (known, reads) = match &self.mounts {
            Some(m) if m.tid == tid => (m.types.contains_key(&mnt), m.reads),
            _ => (false, 0),
        };
        if !known {
            if reads >= 2 {
                return Err(Stop::Unknown);
            }
            let text = std::fs::read_to_string(format!("/proc/{tid}/mountinfo"))
                .map_err(|_| Stop::Unknown)?;
            let types = crate::mounts::parse_mountinfo(&text)
                .into_iter()
                .map(|m| (u64::from(m.mount_id), m.fstype))
                .collect();
            self.mounts = Some(MountTypes {
                tid,
                types,
                reads: reads + 1,
            });
        }
        self.mounts
            .as_ref()
            .and_then(|m| m.types.get(&mnt))
            .map(String::as_str)
            .ok_or(Stop::Unknown)
    }

    fn spend(&mut self) -> Result<(), Stop> {
        if self.names == 0 || Instant::now() > self.until {
            return Err(Stop::Unknown);
        }
        self.names -= 1;
        Ok(())
    }
}

/// Why a walk ended without a file.
enum Stop {
    Nothing,
    Unknown,
}

impl From<Errno> for Stop {
    /// What names nothing for the caller either: no such name, not a
    /// directory on the way, a name too long to be one (`python3 -c` with
    /// a long program: its text is an argument, and names no file).
    fn from(e: Errno) -> Stop {
        if e == Errno::NOENT || e == Errno::NOTDIR || e == Errno::NAMETOOLONG {
            Stop::Nothing
        } else {
            Stop::Unknown
        }
    }
}

/// Whether a filesystem of this type is FUSE's, whose daemon (any user's
/// program) need never answer what the kernel asks it for the agent.
fn is_fuse(fstype: &str) -> bool {
    fstype == "fuse" || fstype.starts_with("fuse.") || fstype == "fuseblk"
}

/// Process `pid`'s executable, as [`open_exe`] found it.
#[derive(Debug)]
pub(crate) enum Exe {
    /// Open for reading.
    Open(std::fs::File),
    /// On FUSE: not opened.
    OnFuse,
    /// Not to be had (the process is gone, or its mount table unreadable).
    Unavailable,
}

/// Process `pid`'s executable, open for reading, unless it lives on FUSE
/// (opening and reading it would ask the filesystem's daemon, which need
/// never answer: a user running a program from a FUSE filesystem of their
/// own could otherwise keep an agent worker waiting for ever, at each
/// event of that process) or cannot be placed. The file is first opened
/// with `O_PATH` (no request to any filesystem), placed with
/// `AT_STATX_DONT_SYNC` and the process's mount table, then opened for
/// reading through that very descriptor: a process that runs another
/// program meanwhile cannot swap a FUSE file in.
pub(crate) fn open_exe(pid: u32) -> Exe {
    let Ok(path) = fs::open(
        format!("/proc/{pid}/exe"),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return Exe::Unavailable;
    };
    let Ok(st) = fs::statx(
        &path,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::MNT_ID,
    ) else {
        return Exe::Unavailable;
    };
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Exe::Unavailable;
    }
    match Budget::new(0, Duration::ZERO).fstype(pid, st.stx_mnt_id) {
        Ok(t) if is_fuse(t) => return Exe::OnFuse,
        Ok(_) => {}
        Err(_) => return Exe::Unavailable,
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&path);
    match fs::open(
        format!("/proc/self/fd/{fd}"),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(f) => Exe::Open(f.into()),
        Err(_) => Exe::Unavailable,
    }
}

/// Whether `path`, resolved in the agent's own namespace, names the file
/// `id`: how the agent checks that a process's executable is where the
/// kernel's name for it says. Resolved a name at a time, never entering
/// FUSE (a path through FUSE is not known, and so not here), with a small
/// budget.
pub(crate) fn names_here(path: &str, id: FileId) -> bool {
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let mut budget = Budget::new(1_000, Duration::from_millis(100));
    file_named_by(tid, path.as_bytes(), &mut budget) == Named::File(id)
}

/// What `path` names for the thread `tid` (as the agent's procfs numbers
/// it), spending from `budget`.
pub(crate) fn file_named_by(tid: u32, path: &[u8], budget: &mut Budget) -> Named {
    match walk(tid, path, budget) {
        Ok(id) => Named::File(id),
        Err(Stop::Nothing) => Named::Nothing,
        Err(Stop::Unknown) => Named::Unknown,
    }
}

fn walk(tid: u32, path: &[u8], budget: &mut Budget) -> Result<FileId, Stop> {
    // The caller's own places: not reaching them is not knowing.
    let root = open_dir(format!("/proc/{tid}/root")).map_err(|_| Stop::Unknown)?;
    let root_at = Place::of(&root, tid, budget)?;
    let (mut at, mut here) = if path.starts_with(b"/") {
        (root.try_clone().map_err(|_| Stop::Unknown)?, root_at)
    } else {
        let cwd = open_dir(format!("/proc/{tid}/cwd")).map_err(|_| Stop::Unknown)?;
        let here = Place::of(&cwd, tid, budget)?;
        (cwd, here)
    };
    let mut todo: VecDeque<Vec<u8>> = names(path).map(<[u8]>::to_vec).collect();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        let name = name.as_slice();
        budget.spend()?;
        if name == b".." {
            // Never above the caller's root: the same place, mount
            // included (a bind mount of the root has its device and inode).
            if here.same(&root_at) {
                continue;
            }
            at = open_at(&at, b"..", OFlags::DIRECTORY)?;
            here = Place::of(&at, tid, budget)?;
            continue;
        }
        // `at` is on no FUSE filesystem (checked when reached): this
        // lookup asks no user's daemon.
        let next = open_at(&at, name, OFlags::NOFOLLOW)?;
        let there = Place::of(&next, tid, budget)?;
        if !there.symlink {
            (at, here) = (next, there);
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Stop::Unknown);
        }
        if here.proc {
            if here.ino != PROC_ROOT_INO {
                // A process's own link (`fd/N`, `cwd`, `root`, `exe`,
                // `map_files/…`): its object, whoever follows it.
                at = open_at(&at, name, OFlags::empty())?;
                here = Place::of(&at, tid, budget)?;
                continue;
            }
            let thread = match name {
                b"self" => Some(false),
                b"thread-self" => Some(true),
                // Ordinary links at the root (`mounts`, `net`).
                _ => None,
            };
            if let Some(thread) = thread {
                at = caller_in(&at, tid, thread)?;
                here = Place::of(&at, tid, budget)?;
                continue;
            }
        }
        let target = fs::readlinkat(&at, OsStr::from_bytes(name), Vec::new())?.into_bytes();
        if target.starts_with(b"/") {
            at = root.try_clone().map_err(|_| Stop::Unknown)?;
            here = root_at;
        }
        for n in names(&target).collect::<Vec<_>>().into_iter().rev() {
            todo.push_front(n.to_vec());
        }
    }
    Ok(FileId {
        dev: rustix::fs::makedev(here.major, here.minor),
        ino: here.ino,
    })
}

/// Where an open file is (mount, device, inode), what it is, and what
/// filesystem holds it: read with `AT_STATX_DONT_SYNC` and the caller's
/// mount table, so that nothing is asked of the filesystem itself. One on
/// FUSE ends the walk, not known.
#[derive(Debug, Clone, Copy)]
struct Place {
    mnt: u64,
    major: u32,
    minor: u32,
    ino: u64,
    symlink: bool,
    proc: bool,
}

impl Place {
    fn of(fd: &OwnedFd, tid: u32, budget: &mut Budget) -> Result<Place, Stop> {
        let st = fs::statx(
            fd,
            "",
            AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
            StatxFlags::MNT_ID | StatxFlags::INO | StatxFlags::TYPE,
        )?;
        if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
            return Err(Stop::Unknown);
        }
        let fstype = budget.fstype(tid, st.stx_mnt_id)?;
        if is_fuse(fstype) {
            return Err(Stop::Unknown);
        }
        Ok(Place {
            mnt: st.stx_mnt_id,
            major: st.stx_dev_major,
            minor: st.stx_dev_minor,
            ino: st.stx_ino,
            symlink: FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Symlink,
            proc: fstype == "proc",
        })
    }

    /// The same directory, reached through the same mount.
    fn same(&self, other: &Place) -> bool {
        (self.mnt, self.major, self.minor, self.ino)
            == (other.mnt, other.major, other.minor, other.ino)
    }
}

/// The caller's directory in the procfs whose root is `proc`: what its
/// `self` (or, with `thread`, `thread-self`) names there. That procfs may
/// number processes in another pid namespace than the agent's: the
/// caller's number in each namespace it is in (`NStgid`, `NSpid`) is
/// tried, and the one whose process started when the caller's did is it.
fn caller_in(proc: &OwnedFd, tid: u32, thread: bool) -> Result<OwnedFd, Stop> {
    let status =
        std::fs::read_to_string(format!("/proc/{tid}/status")).map_err(|_| Stop::Unknown)?;
    let ids = |key: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (tgids, tids) = (ids("NStgid:"), ids("NSpid:"));
    let leader = tgids.first().ok_or(Stop::Unknown)?;
    let started = start_time(&open_dir(format!("/proc/{leader}"))?)?;
    // Innermost namespace first: the likeliest for a procfs of its own.
    for (level, tgid) in tgids.iter().enumerate().rev() {
        let Ok(dir) = open_at(proc, tgid.as_bytes(), OFlags::DIRECTORY) else {
            continue;
        };
        if start_time(&dir).ok() != Some(started) {
            continue;
        }
        if !thread {
            return Ok(dir);
        }
        let task = format!("task/{}", tids.get(level).ok_or(Stop::Unknown)?);
        return open_at(&dir, task.as_bytes(), OFlags::DIRECTORY);
    }
    Err(Stop::Unknown)
}

/// The start time of the process whose procfs directory is `dir`.
fn start_time(dir: &OwnedFd) -> Result<u64, Stop> {
    let stat = fs::openat(dir, "stat", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(stat), &mut text)
        .map_err(|_| Stop::Unknown)?;
    crate::procfs::parse_stat(&text)
        .map(|(_, start)| start)
        .ok_or(Stop::Unknown)
}

fn names(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|n| !n.is_empty() && *n != b".")
}

fn open_dir(path: String) -> Result<OwnedFd, Stop> {
    Ok(fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_at(dir: &OwnedFd, name: &[u8], flags: OFlags) -> Result<OwnedFd, Stop> {
    Ok(fs::openat(
        dir,
        OsStr::from_bytes(name),
        OFlags::PATH | OFlags::CLOEXEC | flags,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// A process with `script` open as its descriptor 3 and `dir` as its
    /// working directory; killed and reaped on drop.
    struct Caller(std::process::Child);

    impl Caller {
        fn start(dir: &Path, script: &Path) -> Caller {
            let child = std::process::Command::new("/bin/sh")
                .args(["-c", "exec 3<\"$0\"; exec sleep 60"])
                .arg(script)
                .current_dir(dir)
                .spawn()
                .unwrap();
            let pid = child.id();
            let end = Instant::now() + Duration::from_secs(10);
            while std::fs::read_link(format!("/proc/{pid}/fd/3"))
                .ok()
                .as_deref()
                != Some(script)
                || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
                    != "sleep\n"
            {
                assert!(Instant::now() < end, "the caller did not start");
                std::thread::sleep(Duration::from_millis(5));
            }
            Caller(child)
        }
    }

    impl Drop for Caller {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn id(path: &Path) -> Named {
        let st = rustix::fs::stat(path).unwrap();
        Named::File(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    fn named(pid: u32, path: &[u8]) -> Named {
        file_named_by(pid, path, &mut Budget::new(1000, Duration::from_secs(10)))
    }

    /// Every way of reaching the caller's descriptor names the caller's
    /// file, not what the agent has open under that number; links the
    /// caller made to `/proc/self` included (these named the agent's own
    /// descriptors before).
    #[test]
    fn paths_through_the_callers_descriptors_name_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("payload");
        std::fs::write(&script, "print('x')\n").unwrap();
        // What this process has as descriptor 3 must not be the answer.
        let _decoy = std::fs::File::open("/proc/self/stat").unwrap();
        symlink("/proc/self/fd/3", dir.path().join("x")).unwrap();
        symlink("/proc/self/fd", dir.path().join("d")).unwrap();
        symlink("/proc/self", dir.path().join("me")).unwrap();
        symlink("x", dir.path().join("y")).unwrap();
        symlink("/dev/fd/3", dir.path().join("z")).unwrap();
        let caller = Caller::start(dir.path(), &script);
        let pid = caller.0.id();
        let want = id(&script);
        let pid_fd = format!("/proc/{pid}/fd/3");
        let abs_x = dir.path().join("x");
        for path in [
            "x",
            "y",
            "z",
            "d/3",
            "me/fd/3",
            "me/cwd/payload",
            "/proc/self/fd/3",
            "/proc/thread-self/fd/3",
            "/dev/fd/3",
            pid_fd.as_str(),
            abs_x.to_str().unwrap(),
            "./sub/../payload",
        ] {
            if path.starts_with("./sub") {
                std::fs::create_dir_all(dir.path().join("sub")).unwrap();
            }
            assert_eq!(named(pid, path.as_bytes()), want, "{path}");
        }
    }

    /// Names that do not exist and `..` above the root end as the kernel
    /// would end them; a name that is not UTF-8 still names its file; a
    /// loop of links, or a process that is gone, is not known.
    #[test]
    fn resolution_ends_where_the_kernels_would() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("payload");
        std::fs::write(&script, "print('x')\n").unwrap();
        symlink("l2", dir.path().join("l1")).unwrap();
        symlink("l1", dir.path().join("l2")).unwrap();
        let odd = dir.path().join(OsStr::from_bytes(b"s\xffcript"));
        std::fs::write(&odd, "print('y')\n").unwrap();
        let caller = Caller::start(dir.path(), &script);
        let pid = caller.0.id();
        assert_eq!(named(pid, b"l1"), Named::Unknown);
        assert_eq!(named(pid, b"missing"), Named::Nothing);
        assert_eq!(named(pid, b"payload/x"), Named::Nothing);
        let program = "print('x'); ".repeat(40);
        assert_eq!(
            named(pid, program.as_bytes()),
            Named::Nothing,
            "a long name"
        );
        assert_eq!(named(pid, b"s\xffcript"), id(&odd));
        let up = format!("/../../..{}", script.display());
        assert_eq!(named(pid, up.as_bytes()), id(&script));
        assert_eq!(named(u32::MAX, b"/etc"), Named::Unknown, "no such process");
    }

    /// A path longer than the budget allows is not known (and so, to an
    /// interpreter's check, a script): one process's command line cannot
    /// keep a worker busy. The budget is shared by every path of one
    /// decision.
    #[test]
    fn a_walk_past_its_budget_is_not_known() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("payload");
        std::fs::write(&script, "print('x')\n").unwrap();
        let caller = Caller::start(dir.path(), &script);
        let pid = caller.0.id();
        let long = "./".repeat(10) + &"sub/../".repeat(600) + "payload";
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut budget = Budget::new(100_000, Duration::from_secs(10));
        assert_eq!(
            file_named_by(pid, long.as_bytes(), &mut budget),
            id(&script)
        );
        let mut budget = Budget::new(1_000, Duration::from_secs(10));
        assert_eq!(
            file_named_by(pid, long.as_bytes(), &mut budget),
            Named::Unknown
        );
        let mut budget = Budget::new(3, Duration::from_secs(10));
        assert_eq!(file_named_by(pid, b"payload", &mut budget), id(&script));
        assert_eq!(
            file_named_by(pid, b"sub/../payload", &mut budget),
            Named::Unknown
        );
        let mut budget = Budget::new(100_000, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(file_named_by(pid, b"payload", &mut budget), Named::Unknown);
    }

    /// A FUSE filesystem served by a thread of this test: it answers the
    /// kernel's `INIT` and `ACCESS` (so a process can make it its working
    /// directory) and writes down every other request, answering `ENOSYS`.
    /// A real daemon need never answer: any request the agent's walk sent
    /// it could keep an agent thread waiting for ever. Unmounted on drop.
    struct Fuse {
        mount: std::path::PathBuf,
        asked: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    }

    const FUSE_INIT: u32 = 26;
    const FUSE_ACCESS: u32 = 34;
    const FUSE_FORGET: u32 = 2;
    const FUSE_BATCH_FORGET: u32 = 42;
    const FUSE_INTERRUPT: u32 = 36;

    impl Fuse {
        /// Mounted on `mount` (an empty directory), or `None` where this
        /// machine has no `/dev/fuse`.
        fn mount(mount: &Path) -> Option<Fuse> {
            use std::io::{Read, Write};
            use std::os::fd::AsRawFd;
            let dev = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => panic!("/dev/fuse: {e}"),
            };
            let options = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
            rustix::mount::mount(
                "palisade-test",
                mount,
                "fuse.palisade-test",
                rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
                Some(std::ffi::CString::new(options).unwrap().as_c_str()),
            )
            .expect("mount a FUSE filesystem");
            let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let log = asked.clone();
            // Ends when the filesystem is gone (the read fails).
            std::thread::spawn(move || {
                let mut dev = dev;
                let mut buf = vec![0u8; (1 << 20) + 4096];
                while let Ok(n) = dev.read(&mut buf) {
                    if n < 40 {
                        continue;
                    }
                    let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
                    let opcode = u32_at(4);
                    let unique = u64::from_ne_bytes(buf[8..16].try_into().unwrap());
                    let (error, body): (i32, Vec<u8>) = match opcode {
                        FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => continue,
                        FUSE_INIT => {
                            // fuse_init_out: protocol 7.31, the kernel's
                            // readahead, no flags, 4 KiB writes.
                            let mut out = Vec::with_capacity(64);
                            for v in [7u32, 31, u32_at(48), 0] {
                                out.extend_from_slice(&v.to_ne_bytes());
                            }
                            out.extend_from_slice(&[0u8; 4]);
                            for v in [4096u32, 1] {
                                out.extend_from_slice(&v.to_ne_bytes());
                            }
                            out.resize(64, 0);
                            (0, out)
                        }
                        FUSE_ACCESS => (0, Vec::new()),
                        other => {
                            log.lock().unwrap().push(other);
                            (-(rustix::io::Errno::NOSYS.raw_os_error()), Vec::new())
                        }
                    };
                    let mut reply = Vec::with_capacity(16 + body.len());
                    reply.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
                    reply.extend_from_slice(&error.to_ne_bytes());
                    reply.extend_from_slice(&unique.to_ne_bytes());
                    reply.extend_from_slice(&body);
                    let _ = dev.write_all(&reply);
                }
            });
            Some(Fuse {
                mount: mount.to_owned(),
                asked,
            })
        }

        /// The requests other than `INIT` and `ACCESS` so far.
        fn asked(&self) -> Vec<u32> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Drop for Fuse {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.mount, rustix::mount::UnmountFlags::DETACH);
        }
    }

    /// A walk that reaches a FUSE filesystem, from the caller's working
    /// directory or through an absolute path, ends there, not known (to
    /// the script check, a match), without asking the filesystem's daemon
    /// anything: the type comes from the caller's mount table and the
    /// place from `statx` with `AT_STATX_DONT_SYNC`. (Without the check
    /// of the type, `..` names the directory above, and the daemon is
    /// asked for lookups: checked.)
    #[test]
    fn a_walk_reaching_fuse_asks_its_daemon_nothing() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (CI runs it as root)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("payload");
        std::fs::write(&script, "print('x')\n").unwrap();
        let mount = dir.path().join("fuse");
        std::fs::create_dir(&mount).unwrap();
        let Some(fuse) = Fuse::mount(&mount) else {
            eprintln!("skipped: no /dev/fuse on this machine");
            return;
        };
        let caller = Caller::start(&mount, &script);
        let pid = caller.0.id();
        let before = fuse.asked();
        let through = mount.join("a/b");
        for path in [
            b"payload".as_slice(),
            b"./x/../y",
            b"..",
            through.as_os_str().as_bytes(),
        ] {
            let t = Instant::now();
            assert_eq!(
                named(pid, path),
                Named::Unknown,
                "{}",
                String::from_utf8_lossy(path)
            );
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        assert_eq!(
            fuse.asked(),
            before,
            "requests the walks sent to the daemon (FUSE opcodes)"
        );
        // Paths that stay off FUSE still resolve for that caller.
        assert_eq!(named(pid, script.as_os_str().as_bytes()), id(&script));
        assert_eq!(named(pid, b"/proc/self/fd/3"), id(&script));
        drop(caller);
    }
}
