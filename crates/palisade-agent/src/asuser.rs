//! Opening a file with a local user's permissions, for the request socket.
//! The agent runs as root; a user asking for a file to be approved must not
//! get it read (hashed, its path sent to the service), nor learn whether it
//! exists, when they could not reach it themselves.
//!
//! The calling thread's effective ids and supplementary groups are switched
//! to the user's for the path's resolution and the open, then switched back.
//! On Linux these are per thread (the raw system calls, not libc's
//! process-wide wrappers), so the rest of the agent keeps its own.
use rustix::fs::{FileType, Mode, OFlags};
use rustix::process::{Gid, Uid};
use std::fs::File;
use std::path::PathBuf;

/// Who asks: the uid and gid of the socket's peer, and its supplementary
/// groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Requester {
    /// The peer of a connection: `uid` and `gid` from its socket
    /// credentials; the supplementary groups of process `pid` when that
    /// process still runs as `uid` (its ids are checked after the groups
    /// are read, so a pid reused by another user's process gives none:
    /// fewer groups can only refuse more).
    pub fn peer(pid: u32, uid: u32, gid: u32) -> Requester {
        let groups = crate::users::process_groups(pid)
            .into_iter()
            .filter(|g| *g != gid)
            .collect();
        let same_user = crate::procfs::read(pid).is_ok_and(|p| p.uid == uid && p.euid == uid);
        Requester {
            uid,
            gid,
            groups: if same_user { groups } else { Vec::new() },
        }
    }
}

/// Resolve `path` (absolute) and open it for reading with `who`'s
/// permissions. Never waits on a FIFO or a device (non-blocking open);
/// returns only a regular file, with the path resolved.
pub fn open_as(who: &Requester, path: &str) -> Result<(PathBuf, File), String> {
    if !path.starts_with('/') {
        return Err(format!("{path}: not an absolute path"));
    }
    let opened = {
        let _as_user = Switched::to(who)
            .map_err(|e| format!("cannot take the requester's permissions: {e}"))?;
        std::fs::canonicalize(path)
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|real| {
                rustix::fs::open(
                    &real,
                    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map(|fd| (real.clone(), File::from(fd)))
                .map_err(|e| format!("{}: {}", real.display(), std::io::Error::from(e)))
            })
    };
    let (real, file) = opened?;
    let st = rustix::fs::fstat(&file).map_err(|e| format!("{}: {e}", real.display()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(format!("{} is not a regular file", real.display()));
    }
    Ok((real, file))
}

/// The thread's ids and groups while switched to a requester's; switched
/// back when dropped.
struct Switched {
    euid: Uid,
    egid: Gid,
    groups: Vec<Gid>,
}

impl Switched {
    fn to(who: &Requester) -> std::io::Result<Switched> {
        let back = Switched {
            euid: rustix::process::geteuid(),
            egid: rustix::process::getegid(),
            groups: rustix::process::getgroups()?,
        };
        let groups: Vec<Gid> = who.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        // Groups and gid first (changing them needs the ids it has now),
        // the uid last. From here on `back` restores whatever was changed.
        rustix::thread::set_thread_groups(&groups)?;
        rustix::thread::set_thread_res_gid(None, Gid::from_raw(who.gid), None)?;
        rustix::thread::set_thread_res_uid(None, Uid::from_raw(who.uid), None)?;
        Ok(back)
    }
}

impl Drop for Switched {
    fn drop(&mut self) {
        // The effective uid first: back to root, changing the rest is
        // allowed again (the real and saved ids never changed).
        let restored = rustix::thread::set_thread_res_uid(None, self.euid, None)
            .and_then(|()| rustix::thread::set_thread_res_gid(None, self.egid, None))
            .and_then(|()| rustix::thread::set_thread_groups(&self.groups));
        if let Err(e) = restored {
            // This thread must not go on with another user's ids (nor with
            // fewer rights than the agent's): end it.
            panic!("cannot take back the agent's own ids on this thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOBODY: Requester = Requester {
        uid: 65534,
        gid: 65534,
        groups: Vec::new(),
    };

    fn chmod(path: &std::path::Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// As root: a user reaches through the agent only what they could
    /// reach themselves; the thread is root again after every call, and
    /// a FIFO is refused without waiting for a writer.
    #[test]
    fn a_file_is_opened_with_the_requesters_permissions() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (CI runs it as root)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let open = dir.path().join("open");
        std::fs::write(&open, b"#!/bin/sh\n").unwrap();
        chmod(&open, 0o755);
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        chmod(&private, 0o700);
        let hidden = private.join("tool");
        std::fs::write(&hidden, b"#!/bin/sh\n").unwrap();
        chmod(&hidden, 0o755);
        let unreadable = dir.path().join("unreadable");
        std::fs::write(&unreadable, b"secret").unwrap();
        chmod(&unreadable, 0o600);
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        let ids = || {
            (
                rustix::process::geteuid(),
                rustix::process::getegid(),
                rustix::process::getgroups().unwrap(),
            )
        };
        let before = ids();
        let as_nobody = |p: &std::path::Path| open_as(&NOBODY, p.to_str().unwrap());

        let (real, _) = as_nobody(&open).expect("readable by all");
        assert_eq!(real, open.canonicalize().unwrap());
        assert_eq!(ids(), before);
        for refused in [&hidden, &unreadable] {
            let e = as_nobody(refused).unwrap_err();
            assert!(
                e.contains("Permission denied"),
                "{}: {e}",
                refused.display()
            );
            assert_eq!(ids(), before);
        }
        // No existence oracle behind a directory the user cannot search.
        let e = as_nobody(&private.join("no-such-file")).unwrap_err();
        assert!(e.contains("Permission denied"), "{e}");
        // Root reaches it (the ids really were switched above).
        assert!(open_as(
            &Requester {
                uid: 0,
                gid: 0,
                groups: Vec::new()
            },
            hidden.to_str().unwrap()
        )
        .is_ok());
        assert_eq!(ids(), before);

        let started = std::time::Instant::now();
        let e = as_nobody(&fifo).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            as_nobody(std::path::Path::new("relative")).unwrap_err(),
            "relative: not an absolute path"
        );
        assert_eq!(ids(), before);
    }

    /// Another thread of the process keeps root's ids while one is switched.
    #[test]
    fn the_switch_is_per_thread() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        // Started before the switch (a thread inherits its creator's ids).
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            wait.recv().unwrap();
            rustix::process::geteuid()
        });
        let switched = Switched::to(&NOBODY).unwrap();
        assert_eq!(rustix::process::geteuid().as_raw(), 65534);
        go.send(()).unwrap();
        assert!(other.join().unwrap().is_root());
        drop(switched);
        assert!(rustix::process::geteuid().is_root());
    }
}
