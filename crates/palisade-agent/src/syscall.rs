//! Whether a blocked `open` is an open for writing.
//!
//! A fanotify permission event says that a file is being opened, not how.
//! While the opening thread waits for the agent's answer it is stopped inside
//! the system call, and `/proc/TID/syscall` shows the call's number and
//! arguments; the open flags are one of them (`openat2` passes them in a
//! structure, read from `/proc/TID/mem`). Anything else (io_uring, an
//! unknown call, a thread that moved on) is [`OpenIntent::Unknown`], which
//! callers treat as a possible write where it matters.
use std::io::Read;

/// How a file is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenIntent {
    /// Read only.
    Read,
    /// For writing (write access, or truncation).
    Write,
    /// Cannot tell.
    Unknown,
}

// x86_64 system call numbers.
const SYS_OPEN: u64 = 2;
const SYS_CREAT: u64 = 85;
const SYS_OPENAT: u64 = 257;
const SYS_OPEN_BY_HANDLE_AT: u64 = 304;
const SYS_OPENAT2: u64 = 437;

const O_ACCMODE: u64 = 0o3;
const O_RDONLY: u64 = 0;
const O_TRUNC: u64 = 0o1000;

fn intent_of_flags(flags: u64) -> OpenIntent {
    if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 {
        OpenIntent::Write
    } else {
        OpenIntent::Read
    }
}

/// Parse the text of `/proc/TID/syscall`: `NR arg0 .. arg5 sp pc`, numbers
/// in decimal (NR) and hex (the rest). Returns the call and its arguments.
fn parse(text: &str) -> Option<(u64, [u64; 6])> {
    let mut it = text.split_whitespace();
    let nr: u64 = it.next()?.parse().ok()?;
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr, args))
}

/// Where [`open_intent`] may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// `/proc/TID/syscall` only: for the reader, which must never wait on
    /// anything another user controls. `openat2` is then `Unknown`.
    Registers,
    /// Also the thread's memory, for `openat2`'s `struct open_how`, when it
    /// lies in anonymous memory (a page of a file mapping would be read from
    /// its filesystem, which may be a FUSE daemon of the caller's that never
    /// answers).
    Memory,
}

/// How thread `tid` is opening a file, judged from the system call it is
/// stopped in.
pub fn open_intent(tid: u32, look: Look) -> OpenIntent {
    if !cfg!(target_arch = "x86_64") {
        return OpenIntent::Unknown;
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/syscall")) else {
        return OpenIntent::Unknown;
    };
    let Some((nr, args)) = parse(&text) else {
        return OpenIntent::Unknown;
    };
    match nr {
        SYS_OPEN => intent_of_flags(args[1]),
        SYS_OPENAT | SYS_OPEN_BY_HANDLE_AT => intent_of_flags(args[2]),
        SYS_CREAT => OpenIntent::Write,
        SYS_OPENAT2 if look == Look::Memory => {
            openat2_flags(tid, args[2]).map_or(OpenIntent::Unknown, intent_of_flags)
        }
        _ => OpenIntent::Unknown,
    }
}

/// The `flags` field (first u64) of the `struct open_how` at `addr` in the
/// thread's memory, when those 8 bytes lie in one anonymous mapping.
fn openat2_flags(tid: u32, addr: u64) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{tid}/maps")).ok()?;
    if !crate::procfs::in_anonymous_mapping(&maps, addr, 8) {
        return None;
    }
    let mut mem = std::fs::File::open(format!("/proc/{tid}/mem")).ok()?;
    mem.seek(SeekFrom::Start(addr)).ok()?;
    let mut buf = [0u8; 8];
    mem.read_exact(&mut buf).ok()?;
    Some(u64::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::in_anonymous_mapping;

    #[test]
    fn parses_proc_syscall_lines() {
        // openat(AT_FDCWD, path, O_WRONLY|O_CREAT|O_TRUNC, 0644)
        let (nr, a) =
            parse("257 0xffffff9c 0x7ffd1c0 0x241 0x1a4 0x0 0x0 0x7ffd000 0x7f00").unwrap();
        assert_eq!(nr, 257);
        assert_eq!(intent_of_flags(a[2]), OpenIntent::Write);
        // openat(AT_FDCWD, path, O_RDONLY|O_CLOEXEC)
        let (_, a) = parse("257 0xffffff9c 0x55 0x80000 0x0 0x0 0x0 0x7ffd 0x7f").unwrap();
        assert_eq!(intent_of_flags(a[2]), OpenIntent::Read);
        assert_eq!(
            intent_of_flags(0o1000),
            OpenIntent::Write,
            "O_RDONLY|O_TRUNC truncates"
        );
        assert!(parse("running").is_none());
        assert!(parse("-1 0x7ffd 0x7f").is_none());
    }

    #[test]
    fn a_thread_that_is_not_in_a_syscall_is_unknown() {
        // This thread is running (reading its own syscall file shows the read).
        let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        assert_eq!(open_intent(me, Look::Memory), OpenIntent::Unknown);
    }

    #[test]
    fn only_anonymous_memory_is_read() {
        let maps = "\
55d0c0000000-55d0c0021000 r--p 00000000 fe:01 1234 /usr/bin/x
55d0c1000000-55d0c1022000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 rw-s 00000000 00:2d 99 /mnt/fuse/page
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert!(in_anonymous_mapping(maps, 0x55d0c1000010, 8), "heap");
        assert!(in_anonymous_mapping(maps, 0x7ffd00000100, 8), "stack");
        assert!(
            !in_anonymous_mapping(maps, 0x7f0000000010, 8),
            "a file's page"
        );
        assert!(!in_anonymous_mapping(maps, 0x55d0c0000010, 8), "the binary");
        assert!(
            !in_anonymous_mapping(maps, 0x55d0c1021ffc, 8),
            "runs past the end"
        );
        assert!(!in_anonymous_mapping(maps, 0x1000, 8), "unmapped");
        assert!(!in_anonymous_mapping(maps, u64::MAX - 2, 8), "overflow");
    }

    #[test]
    fn openat2_is_read_from_memory_by_workers_only() {
        // A thread stopped in openat2(O_WRONLY) on a FIFO nobody reads.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        let t = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get() as u32)
                .unwrap();
            // Blocks until the test opens the FIFO for reading.
            rustix::fs::openat2(
                rustix::fs::CWD,
                &path,
                rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::empty(),
                rustix::fs::ResolveFlags::empty(),
            )
        });
        let tid = rx.recv().unwrap();
        let intent = |look| {
            for _ in 0..200 {
                let i = open_intent(tid, look);
                if i != OpenIntent::Unknown {
                    return i;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            OpenIntent::Unknown
        };
        assert_eq!(intent(Look::Memory), OpenIntent::Write);
        assert_eq!(open_intent(tid, Look::Registers), OpenIntent::Unknown);
        let _reader = std::fs::File::open(&fifo).unwrap();
        t.join().unwrap().unwrap();
    }
}
