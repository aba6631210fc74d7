//! Whether anyone holds a file open for writing, now.
//!
//! The kernel counts a file's writers (`i_writecount`) but shows the count to
//! no one, except through leases: a read lease (`F_SETLEASE`, `F_RDLCK`) is
//! refused with `EAGAIN` while the file is open for writing anywhere (a
//! shared writable mapping holds its file open too). [`open_for_writing`]
//! takes such a lease and gives it back at once.
//!
//! While the lease is held (two system calls), an open for writing of the
//! file breaks it: the opener waits until the lease is given back (an
//! `O_NONBLOCK` opener gets `EWOULDBLOCK`), and the kernel signals the lease
//! holder with `SIGIO`, whose default action ends the process. Call
//! [`ignore_lease_breaks`] once, before the first [`open_for_writing`].

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Whether the file `fd` refers to is open for writing by anyone (`fd` must
/// be open read-only, on a regular file; the caller needs `CAP_LEASE` or to
/// own the file). A writer that has just closed the file may still be
/// counted for a moment after its close notification: callers that ask on
/// such a notification should ask again shortly before concluding.
///
/// Errors when leases are refused altogether: `EINVAL` for a filesystem
/// without leases (or `fs.leases-enable = 0`), `EACCES` without the
/// capability. Such a file's writers are unknown.
pub fn open_for_writing(fd: BorrowedFd<'_>) -> Result<bool> {
    // SAFETY: F_SETLEASE takes an int argument and touches no memory of ours.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if r != 0 {
        let e = Error::last_os_error("fcntl(F_SETLEASE, F_RDLCK)");
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(true),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    if r != 0 {
        // The lease goes with the descriptor's last close anyway.
        return Err(Error::last_os_error("fcntl(F_SETLEASE, F_UNLCK)"));
    }
    Ok(false)
}

/// Ignores `SIGIO` in this process, so that a lease broken while
/// [`open_for_writing`] holds it cannot end the process. `SIGIO` is
/// otherwise sent only to processes that asked for it (`O_ASYNC`, `F_SETOWN`).
pub fn ignore_lease_breaks() -> Result<()> {
    // SAFETY: installing SIG_IGN runs no code of ours in a signal context.
    if unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(Error::last_os_error("signal(SIGIO, SIG_IGN)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn writers_are_seen_while_they_hold_the_file() {
        let dir = std::env::temp_dir().join(format!("palisade-writers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"x").unwrap();
        ignore_lease_breaks().unwrap();
        let reader = std::fs::File::open(&path).unwrap();
        match open_for_writing(reader.as_fd()) {
            // Leases refused here (not owner without CAP_LEASE, or a
            // filesystem without them): nothing to check.
            Err(e) => eprintln!("skipped: {e}"),
            Ok(busy) => {
                assert!(!busy, "no writer yet");
                let writer = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                assert!(
                    open_for_writing(reader.as_fd()).unwrap(),
                    "a writer holds it"
                );
                drop(writer);
                assert!(
                    !open_for_writing(reader.as_fd()).unwrap(),
                    "the writer is gone"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
