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
    /// credentials (`SO_PEERCRED`, taken when it connected); the
    /// supplementary groups of process `pid` only while every one of its
    /// user and group ids (real, effective, saved, filesystem) still is
    /// `uid` and `gid`. A client that runs a set-group-id program after
    /// connecting (its process then has another effective gid, and the
    /// groups are read now) gets none, nor does a pid reused by another
    /// user's process: fewer groups can only refuse more.
    ///
    /// (`SO_PEERGROUPS` would give the groups as they were at connect, but
    /// needs a `getsockopt` that neither rustix nor nix wraps, and this
    /// crate has no `unsafe`.)
    pub fn peer(pid: u32, uid: u32, gid: u32) -> Requester {
        let groups = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|status| groups_if_same_ids(&status, uid, gid))
            .unwrap_or_default();
        Requester { uid, gid, groups }
    }
}

/// The supplementary groups in a `/proc/PID/status` text (one snapshot of
/// the process's credentials), other than `gid`, when its four user ids
/// are all `uid` and its four group ids all `gid`; none otherwise.
fn groups_if_same_ids(status: &str, uid: u32, gid: u32) -> Vec<u32> {
    let field = |name: &str| -> Option<Vec<u32>> {
        let rest = status.lines().find_map(|l| l.strip_prefix(name))?;
        rest.split_whitespace().map(|v| v.parse().ok()).collect()
    };
    let all_are = |ids: Option<Vec<u32>>, want: u32| {
        ids.is_some_and(|ids| ids.len() == 4 && ids.iter().all(|id| *id == want))
    };
    if !all_are(field("Uid:"), uid) || !all_are(field("Gid:"), gid) {
        return Vec::new();
    }
    let mut groups = field("Groups:").unwrap_or_default();
    groups.retain(|g| *g != gid);
    groups.dedup();
    groups
}

/// Resolve `path` (absolute) and open it for reading with `who`'s
/// permissions. Never waits on a FIFO or a device (non-blocking open);
/// returns only a regular file, with the path resolved, and of at most
/// [`crate::scan::HASH_MAX`] bytes: the agent hashes what it returns, and
/// a user's sparse file of any size costs them nothing.
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
    let max = crate::scan::HASH_MAX;
    if st.st_size as u64 > max {
        return Err(format!(
            "{} is larger than the {} GiB the agent hashes ({} bytes); ask an administrator to approve it by its SHA-256",
            real.display(),
            max >> 30,
            st.st_size
        ));
    }
    Ok((real, file))
}

/// The thread's ids and groups while switched to a requester's; switched
/// back when dropped.
pub(crate) struct Switched {
    euid: Uid,
    egid: Gid,
    groups: Vec<Gid>,
}

impl Switched {
    pub(crate) fn to(who: &Requester) -> std::io::Result<Switched> {
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

    /// The groups come with credentials that are all the peer's: a status
    /// whose effective (or saved) group is another one gives no groups.
    #[test]
    fn groups_only_while_the_ids_are_those_of_the_connection() {
        let status = |uids: &str, gids: &str| {
            format!("Name:\tx\nUid:\t{uids}\nGid:\t{gids}\nGroups:\t7 100 1000 \n")
        };
        let same = status("1000\t1000\t1000\t1000", "1000\t1000\t1000\t1000");
        assert_eq!(groups_if_same_ids(&same, 1000, 1000), [7, 100]);
        for (uids, gids) in [
            ("1000\t1000\t1000\t1000", "1000\t5\t5\t5"),
            ("1000\t1000\t1000\t1000", "1000\t1000\t5\t1000"),
            ("1000\t0\t0\t0", "1000\t1000\t1000\t1000"),
            ("1001\t1001\t1001\t1001", "1000\t1000\t1000\t1000"),
        ] {
            assert_eq!(
                groups_if_same_ids(&status(uids, gids), 1000, 1000),
                Vec::<u32>::new(),
                "{uids} / {gids}"
            );
        }
        assert_eq!(
            groups_if_same_ids("Uid:\t1000\n", 1000, 1000),
            Vec::<u32>::new()
        );
    }

    /// A client that runs a set-group-id program after connecting (here:
    /// a process whose effective gid is 5, its connection's 1000) does not
    /// get the program's group for the agent's open, nor its groups.
    #[test]
    fn a_set_group_id_program_run_after_connecting_gives_no_group() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (CI runs it as root)");
            return;
        }
        let start = |gids: &[&str]| {
            let mut args = vec!["--reuid=1000", "--groups=100,7"];
            args.extend_from_slice(gids);
            args.extend_from_slice(&["sleep", "10"]);
            let child = std::process::Command::new("setpriv")
                .args(&args)
                .spawn()
                .expect("setpriv");
            // Until it runs `sleep` with the ids asked for.
            let pid = child.id();
            let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < end {
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if s.contains("Name:\tsleep") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            child
        };
        let mut plain = start(&["--regid=1000"]);
        let mut setgid = start(&["--rgid=1000", "--egid=5"]);
        let who = Requester::peer(plain.id(), 1000, 1000);
        let after = Requester::peer(setgid.id(), 1000, 1000);
        for c in [&mut plain, &mut setgid] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(who.groups, [7, 100]);
        assert!(!after.groups.contains(&5), "{after:?}");
        assert_eq!(after.groups, Vec::<u32>::new());
    }

    /// A file larger than the agent hashes is refused at once, named.
    #[test]
    fn a_file_too_large_to_hash_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (CI runs it as root)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge");
        let f = File::create(&huge).unwrap();
        f.set_len(crate::scan::HASH_MAX + 1).unwrap();
        drop(f);
        let me = Requester {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            groups: Vec::new(),
        };
        let e = open_as(&me, huge.to_str().unwrap()).unwrap_err();
        assert!(e.contains("larger than the 8 GiB the agent hashes"), "{e}");
        let small = dir.path().join("small");
        std::fs::write(&small, b"#!/bin/sh\n").unwrap();
        assert!(open_as(&me, small.to_str().unwrap()).is_ok());
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
