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
//! Called from workers only: a lookup on a FUSE filesystem may wait on
//! its daemon.

use crate::files::FileId;
use rustix::fs::{self, FileType, Mode, OFlags};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

/// Links followed before giving up, as the kernel does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// Names looked up before giving up: a path is at most 4096 bytes, and
/// each link followed adds at most that much again.
const MAX_NAMES: usize = 4096;

/// The inode number of a procfs root.
const PROC_ROOT_INO: u64 = 1;

/// The file `path` names for process `pid` (as the agent's procfs numbers
/// it), or `None` if it names nothing there, cannot be resolved, or the
/// process is gone.
pub(crate) fn file_named_by(pid: u32, path: &[u8]) -> Option<FileId> {
    let root = open_dir(format!("/proc/{pid}/root"))?;
    let root_id = id_of(&root)?;
    let mut at = if path.starts_with(b"/") {
        root.try_clone().ok()?
    } else {
        open_dir(format!("/proc/{pid}/cwd"))?
    };
    let mut todo: VecDeque<Vec<u8>> = names(path).map(<[u8]>::to_vec).collect();
    let (mut links, mut looked) = (0, 0);
    while let Some(name) = todo.pop_front() {
        let name = name.as_slice();
        looked += 1;
        if looked > MAX_NAMES {
            return None;
        }
        if name == b".." {
            // Never above the caller's root.
            if id_of(&at)? != root_id {
                at = open_at(&at, b"..", OFlags::DIRECTORY)?;
            }
            continue;
        }
        let next = open_at(&at, name, OFlags::NOFOLLOW)?;
        if FileType::from_raw_mode(fs::fstat(&next).ok()?.st_mode) != FileType::Symlink {
            at = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return None;
        }
        if fs::fstatfs(&at).ok()?.f_type == fs::PROC_SUPER_MAGIC {
            if fs::fstat(&at).ok()?.st_ino != PROC_ROOT_INO {
                // A process's own link (`fd/N`, `cwd`, `root`, `exe`,
                // `map_files/…`): its object, whoever follows it.
                at = open_at(&at, name, OFlags::empty())?;
                continue;
            }
            match name {
                b"self" => {
                    at = open_dir(format!("/proc/{pid}"))?;
                    continue;
                }
                b"thread-self" => {
                    // The thread is not known; threads share descriptors
                    // unless one asked not to.
                    at = open_dir(format!("/proc/{pid}/task/{pid}"))?;
                    continue;
                }
                // Ordinary links at the root (`mounts`, `net`).
                _ => {}
            }
        }
        let target = fs::readlinkat(&at, OsStr::from_bytes(name), Vec::new())
            .ok()?
            .into_bytes();
        if target.starts_with(b"/") {
            at = root.try_clone().ok()?;
        }
        for n in names(&target).collect::<Vec<_>>().into_iter().rev() {
            todo.push_front(n.to_vec());
        }
    }
    id_of(&at)
}

fn names(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|n| !n.is_empty() && *n != b".")
}

fn open_dir(path: String) -> Option<OwnedFd> {
    fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

fn open_at(dir: &OwnedFd, name: &[u8], flags: OFlags) -> Option<OwnedFd> {
    fs::openat(
        dir,
        OsStr::from_bytes(name),
        OFlags::PATH | OFlags::CLOEXEC | flags,
        Mode::empty(),
    )
    .ok()
}

fn id_of(fd: &OwnedFd) -> Option<FileId> {
    let st = fs::fstat(fd).ok()?;
    Some(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
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

    fn id(path: &Path) -> Option<FileId> {
        let st = rustix::fs::stat(path).ok()?;
        Some(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
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
        assert!(want.is_some());
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
            assert_eq!(file_named_by(pid, path.as_bytes()), want, "{path}");
        }
    }

    /// Links in a loop, names that do not exist and `..` above the root
    /// end as the kernel would end them; a name that is not UTF-8 still
    /// names its file.
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
        assert_eq!(file_named_by(pid, b"l1"), None);
        assert_eq!(file_named_by(pid, b"missing"), None);
        assert_eq!(file_named_by(pid, b"payload/x"), None);
        assert_eq!(file_named_by(pid, b"s\xffcript"), id(&odd));
        let up = format!("/../../..{}", script.display());
        assert_eq!(file_named_by(pid, up.as_bytes()), id(&script));
        assert_eq!(file_named_by(u32::MAX, b"/etc"), None, "no such process");
    }
}
