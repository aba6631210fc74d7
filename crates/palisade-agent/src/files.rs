//! File identity and content: what the agent reads from the file behind a
//! permission event's descriptor (never by path, which could be swapped).
use palisade_core::Sha256;
use rustix::fd::{AsFd, BorrowedFd};
use sha2::Digest;
use std::io;

/// Which inode: stable while the file exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device (`st_dev`, userspace encoding).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// What changes whenever the content may have changed. `ctime` cannot be set
/// by unprivileged users (unlike `mtime`), and changes on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status change time (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

/// The facts `fstat` gives about an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Which inode.
    pub id: FileId,
    /// Its change stamp.
    pub stamp: Stamp,
    /// Whether it is a regular file.
    pub regular: bool,
    /// Whether any execute bit is set.
    pub executable: bool,
    /// Owner uid.
    pub uid: u32,
    /// How many names (hard links) it has.
    pub nlink: u64,
    /// Whether the stamp was older than [`SETTLE`] when read: only then
    /// does every later write move it. A file's times come from a clock
    /// that advances once a tick (up to 10 ms, and the kernel skips the
    /// update when the time has not moved), so a write in the same tick as
    /// the last one leaves the stamp as it was. Facts about a file whose
    /// stamp had not settled hold for the decision that read them and are
    /// not cached (identity, kernel-side allow).
    pub settled: bool,
}

/// How old a stamp must be to have settled: twice the longest clock tick
/// (`HZ=100`).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether a change time read at `now` (both since the epoch, seconds and
/// nanoseconds) is older than [`SETTLE`]; one in the future is not.
fn settled_at(ctime: (i64, i64), now: (i64, i64)) -> bool {
    unsettled_for(ctime, now).is_zero()
}

/// How long until a change time read at `now` is older than [`SETTLE`]
/// (all of it for one in the future: the clock may have been set back).
fn unsettled_for(ctime: (i64, i64), now: (i64, i64)) -> std::time::Duration {
    let ns = |(s, n): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(n);
    let age = ns(now) - ns(ctime);
    let settle = SETTLE.as_nanos() as i128;
    if age > settle {
        std::time::Duration::ZERO
    } else if age < 0 {
        SETTLE
    } else {
        std::time::Duration::from_nanos((settle - age) as u64 + 1)
    }
}

/// The time of day, as file times count it (seconds and nanoseconds since
/// the epoch; before it, negative seconds).
fn wall_clock() -> (i64, i64) {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(e) => (-(e.duration().as_secs() as i64) - 1, 0),
    }
}

impl Identity {
    /// How long until this stamp settles, from now (zero once it has).
    pub fn unsettled_for(&self) -> std::time::Duration {
        if self.settled {
            return std::time::Duration::ZERO;
        }
        unsettled_for(self.stamp.ctime, wall_clock())
    }
}

/// `fstat` an open file.
pub fn identify(fd: impl AsFd) -> io::Result<Identity> {
    let st = rustix::fs::fstat(fd)?;
    let now = wall_clock();
    let mode = rustix::fs::FileType::from_raw_mode(st.st_mode);
    Ok(Identity {
        id: FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        stamp: Stamp {
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        },
        regular: mode == rustix::fs::FileType::RegularFile,
        executable: st.st_mode & 0o111 != 0,
        uid: st.st_uid,
        nlink: st.st_nlink as u64,
        settled: settled_at((st.st_ctime, st.st_ctime_nsec as i64), now),
    })
}

/// Read up to `len` bytes from the start of the file (without moving its offset).
pub fn read_header(fd: impl AsFd, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match rustix::io::pread(fd.as_fd(), &mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Chunk size for hashing reads.
const CHUNK: usize = 1 << 20;

/// Largest file [`header_and_hash`] reads in one go.
pub const ONE_READ_MAX: u64 = CHUNK as u64;

/// The first `header_len` bytes and the SHA-256 of a small file of `size`
/// bytes (from [`identify`]), from one `pread` into a per-thread buffer: the
/// reader thread's path for a first exec. Reading stops at `size`; a file
/// that grew meanwhile is caught by the caller comparing identities after.
pub fn header_and_hash(
    fd: impl AsFd,
    size: u64,
    header_len: usize,
) -> io::Result<(Vec<u8>, Sha256)> {
    let fd = fd.as_fd();
    if size > ONE_READ_MAX {
        let header = read_header(fd, header_len)?;
        return Ok((header, hash(fd)?));
    }
    // `size` fits the buffer (checked above).
    let want = size as usize;
    SMALL_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut got = 0usize;
        while got < want {
            match rustix::io::pread(fd, &mut buf[got..want], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let header = buf[..got.min(header_len)].to_vec();
        let digest = sha2::Sha256::digest(&buf[..got]);
        Ok((header, Sha256::from_bytes(digest.into())))
    })
}

thread_local! {
    /// One buffer per thread, allocated once: no zeroing per file.
    static SMALL_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
}

/// SHA-256 of the whole file (never moving the descriptor's offset). Files
/// larger than a few chunks are read in place through a mapping
/// ([`palisade_kernel::mapped`]), or, where that is not available, by
/// `pread` with reading and hashing overlapped on two threads.
pub fn hash(fd: impl AsFd) -> io::Result<Sha256> {
    hash_unless(fd, &|| false)
}

/// The largest file the agent hashes, anywhere: for a decision, when a
/// file is written, for a scan or for a user's request (8 GiB). Hashing
/// runs at about 1.5-1.9 GB/s, so one file costs seconds at most; real code
/// stays well below it (the largest shared libraries in the wild, CUDA's
/// and machine-learning frameworks', are 1-3 GiB), while a sparse file
/// costs its owner nothing at any size: without the cap, any user could
/// keep an agent thread hashing a terabyte of holes for ten minutes.
pub const HASH_MAX: u64 = 8 << 30;

/// Files larger than this are hashed in place ([`hash_in_place`]), smaller
/// ones through one buffer ([`hash_buffered`]). Up to 4 MiB `pread` into one
/// buffer is as fast as the mapping, which costs a thread and an `mmap`:
/// `cargo bench -p palisade-agent --bench hash` times both at 1, 4, 8 and
/// 64 MiB (figures in `docs/benchmarks-hash.md`).
pub const IN_PLACE_ABOVE: u64 = 4 * CHUNK as u64;

/// [`hash`], asking `stop` before each MiB: once it says yes (nobody waits
/// for the digest any more), the hash ends with an error that
/// [`is_stopped`] recognises.
pub fn hash_unless(fd: impl AsFd, stop: &dyn Fn() -> bool) -> io::Result<Sha256> {
    let fd = fd.as_fd();
    let size = rustix::fs::fstat(fd)?.st_size as u64;
    if size <= IN_PLACE_ABOVE {
        hash_buffered(fd, stop)
    } else {
        hash_in_place(fd, size, stop)
    }
}

/// SHA-256 of the file read with `pread`, a MiB at a time, into this
/// thread's buffer, asking `stop` before each MiB.
pub fn hash_buffered(fd: BorrowedFd<'_>, stop: &dyn Fn() -> bool) -> io::Result<Sha256> {
    SMALL_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut h = sha2::Sha256::new();
        let mut off = 0u64;
        loop {
            if stop() {
                return Err(stopped());
            }
            let n = match rustix::io::pread(fd, &mut buf[..], off) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        Ok(Sha256::from_bytes(h.finalize().into()))
    })
}

/// SHA-256 of a file of `size` bytes (from `fstat`) read in place through
/// a mapping ([`palisade_kernel::mapped`]), or, where that is unavailable,
/// with [`hash_pipelined`]. A file whose size changed meanwhile gives an
/// error, as does one that shrank under the mapping.
///
/// A file with holes is hashed with [`hash_pipelined`] instead: through a
/// shared mapping, tmpfs allocates every hole read, charged to the agent
/// and kept as long as the file, so any user could have the agent fill
/// `/dev/shm` with their sparse files; there `pread` gives a hole's zeros
/// and allocates nothing (ramfs, which cannot say where its holes are,
/// allocates them either way).
pub fn hash_in_place(fd: BorrowedFd<'_>, size: u64, stop: &dyn Fn() -> bool) -> io::Result<Sha256> {
    if has_holes(fd, size) {
        return hash_pipelined(fd, stop);
    }
    let mut h = sha2::Sha256::new();
    match palisade_kernel::mapped::read_mapped(fd, size, &mut |b| h.update(b), stop)? {
        palisade_kernel::mapped::Mapped::Read => {
            // The mapping covered the size read at the start: bytes
            // appended meanwhile were not read.
            if rustix::fs::fstat(fd)?.st_size as u64 != size {
                return Err(io::Error::other("the file changed size while it was read"));
            }
            Ok(Sha256::from_bytes(h.finalize().into()))
        }
        palisade_kernel::mapped::Mapped::Stopped => Err(stopped()),
        palisade_kernel::mapped::Mapped::Unavailable => {
            if !palisade_kernel::mapped::handler_in_place() {
                warn_no_sigbus_handler();
            }
            hash_pipelined(fd, stop)
        }
    }
}

/// Whether the first `size` bytes of the file hold a hole: fewer blocks
/// than `size` are allocated (a dense file pays one `fstat`), and
/// `SEEK_HOLE` finds one (a compressed file has fewer blocks and no hole;
/// on tmpfs this walk of the page cache costs 0.2 ms for 64 MiB). ramfs
/// answers `SEEK_HOLE` with the end of the file, and allocates the holes a
/// `pread` reads as well. Moves the descriptor's offset, which nothing
/// here reads through.
fn has_holes(fd: BorrowedFd<'_>, size: u64) -> bool {
    let Ok(st) = rustix::fs::fstat(fd) else {
        return false;
    };
    (st.st_blocks as u64).saturating_mul(512) < size
        && matches!(rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(0)), Ok(at) if at < size)
}

/// Say once that large files are copied out instead of read in place
/// because the `SIGBUS` handler is not in place: slower
/// (`docs/benchmarks-hash.md`), never wrong.
fn warn_no_sigbus_handler() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "the SIGBUS handler for reading files in place is not in place (other code \
             replaced it, or it could not be installed): large files are hashed with \
             pread (slower)"
        );
    });
}

/// The error of a [`hash_unless`] that its `stop` stopped.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hashing stopped: nobody waits for the digest any more")
    }
}

impl std::error::Error for Stopped {}

fn stopped() -> io::Error {
    io::Error::other(Stopped)
}

/// Whether `e` is [`hash_unless`] stopped by its `stop`.
pub fn is_stopped(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

/// Chunk size of [`hash_pipelined`]: the three chunks in flight stay in
/// the CPUs' caches between the copy on one and the hash on the other. With
/// 1 MiB chunks (as for [`CHUNK`]) a 64 MiB file on tmpfs hashed in a median
/// 48.1 ms on the benchmark host, with 256 KiB in 41.0 ms (128 KiB 44.1,
/// 512 KiB 46.7; one thread reading and hashing 256 KiB at a time 45.9; 15
/// interleaved runs each, 2026-11-24).
const PIPE_CHUNK: usize = 256 << 10;

/// Large files: one thread reads chunk N+1 while the caller hashes chunk N.
/// [`hash`]'s fallback where a file cannot be mapped (public for the
/// benchmark, `cargo bench -p palisade-agent --bench hash`). `stop` as for
/// [`hash_unless`], asked before each chunk.
pub fn hash_pipelined(fd: BorrowedFd<'_>, stop: &dyn Fn() -> bool) -> io::Result<Sha256> {
    let (full_tx, full_rx) = crossbeam_channel::bounded::<io::Result<Vec<u8>>>(2);
    let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(vec![0u8; PIPE_CHUNK]);
    }
    std::thread::scope(|s| {
        // Owned by this closure: on any early return they are dropped
        // before the scope waits for the reader, which then ends.
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        s.spawn(move || {
            let mut off = 0u64;
            while let Ok(mut buf) = empty_rx.recv() {
                buf.resize(PIPE_CHUNK, 0);
                let res = loop {
                    match rustix::io::pread(fd, &mut buf, off) {
                        Err(rustix::io::Errno::INTR) => continue,
                        other => break other,
                    }
                };
                match res {
                    Ok(0) => {
                        buf.clear();
                        let _ = full_tx.send(Ok(buf));
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        off += n as u64;
                        if full_tx.send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = full_tx.send(Err(e.into()));
                        return;
                    }
                }
            }
        });
        let mut h = sha2::Sha256::new();
        loop {
            if stop() {
                return Err(stopped());
            }
            let buf = full_rx
                .recv()
                .map_err(|_| io::Error::other("hash reader stopped"))??;
            if buf.is_empty() {
                break;
            }
            h.update(&buf);
            // The reader may already have finished; a closed channel is fine.
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        Ok(Sha256::from_bytes(h.finalize().into()))
    })
}

/// SHA-256 of a file by path (used by the scan and the CLI, never on the
/// decision path).
pub fn hash_path(path: &std::path::Path) -> io::Result<Sha256> {
    hash(std::fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn reference(data: &[u8]) -> Sha256 {
        Sha256::from_bytes(sha2::Sha256::digest(data).into())
    }

    #[test]
    fn stamps_settle_after_two_ticks() {
        let ms = |n: i64| (100, n * 1_000_000);
        assert!(!settled_at(ms(0), ms(5)), "within a tick");
        assert!(!settled_at(ms(0), ms(20)), "exactly SETTLE");
        assert!(settled_at(ms(0), ms(21)));
        assert!(settled_at((99, 999_000_000), ms(20)), "across a second");
        assert!(!settled_at(ms(30), ms(5)), "in the future");
        assert_eq!(
            unsettled_for(ms(0), ms(5)),
            Duration::from_nanos(15_000_001)
        );
        assert_eq!(unsettled_for(ms(30), ms(5)), SETTLE);
        assert_eq!(unsettled_for(ms(0), ms(40)), Duration::ZERO);
        // A file just written has not settled; it has a moment later.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"x").unwrap();
        let fresh = identify(&f).unwrap();
        assert!(!fresh.settled && fresh.unsettled_for() <= SETTLE);
        std::thread::sleep(fresh.unsettled_for());
        assert!(identify(&f).unwrap().settled);
    }

    #[test]
    fn hashes_small_and_large_files() {
        for size in [0usize, 1, CHUNK - 1, CHUNK, 4 * CHUNK + 1, 9 * CHUNK + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&data).unwrap();
            assert_eq!(hash(&f).unwrap(), reference(&data), "size {size}");
            let header = read_header(&f, 256).unwrap();
            assert_eq!(header, data[..size.min(256)]);
        }
    }

    #[test]
    fn the_pread_pipeline_hashes_what_cannot_be_mapped() {
        // The fallback of `hash` for large files, called directly: a
        // regular file here could be mapped.
        for size in [1usize, PIPE_CHUNK, 9 * CHUNK + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&data).unwrap();
            assert_eq!(
                hash_pipelined(f.as_fd(), &|| false).unwrap(),
                reference(&data),
                "size {size}"
            );
        }
    }

    /// A sparse file on tmpfs hashes to its bytes' digest and stays
    /// sparse: a mapping would have allocated every hole it read.
    #[test]
    fn holes_are_hashed_without_allocating_them() {
        let dir = std::path::Path::new("/dev/shm");
        let Ok(mut f) = tempfile::tempfile_in(dir) else {
            eprintln!("skipped: cannot write in {}", dir.display());
            return;
        };
        let size = 64 * CHUNK;
        let data: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        // Data, a hole of 62 MiB, data: larger than what is hashed in one buffer.
        f.write_all(&data).unwrap();
        f.set_len(size as u64).unwrap();
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start((size - CHUNK) as u64)).unwrap();
        f.write_all(&data).unwrap();
        use std::os::unix::fs::MetadataExt;
        let blocks = || f.metadata().unwrap().blocks();
        let allocated = blocks();
        if allocated >= (size / 512) as u64 {
            eprintln!("skipped: {} does not keep holes", dir.display());
            return;
        }
        let mut whole = data.clone();
        whole.resize(size - CHUNK, 0);
        whole.extend_from_slice(&data);
        assert_eq!(hash(&f).unwrap(), reference(&whole), "{}", dir.display());
        assert_eq!(
            blocks(),
            allocated,
            "the holes stay holes in {}",
            dir.display()
        );
    }

    #[test]
    fn a_hash_nobody_waits_for_stops() {
        let data = vec![7u8; 16 * CHUNK];
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        // The second question says stop: each way of hashing gives up.
        let after_one = || {
            let asked = std::cell::Cell::new(0);
            move || {
                asked.set(asked.get() + 1);
                asked.get() > 1
            }
        };
        for size in [16 * CHUNK, 2 * CHUNK] {
            f.set_len(size as u64).unwrap();
            let err = hash_unless(&f, &after_one()).unwrap_err();
            assert!(is_stopped(&err), "{size}: {err}");
            assert_eq!(
                hash_unless(&f, &|| false).unwrap(),
                reference(&data[..size])
            );
        }
        let err = hash_pipelined(f.as_fd(), &after_one()).unwrap_err();
        assert!(is_stopped(&err), "{err}");
        assert!(!is_stopped(&io::Error::other(
            "hashing stopped: nobody waits for the digest any more"
        )));
    }

    #[test]
    fn a_large_file_that_shrinks_or_grows_while_hashed_gives_no_digest() {
        let size = 64 * CHUNK;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        // Another descriptor of the same file changes its size while the
        // hash runs (64 MiB takes tens of milliseconds); whichever change
        // lands during the hash, no digest comes back.
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
        let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for new_len in [size as u64 / 2, size as u64 * 2] {
            // Up to 5 tries for the change to land during a hash (it starts
            // 2 ms into one that takes tens of milliseconds).
            let mut refused = false;
            for _ in 0..5 {
                other.set_len(size as u64).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&other, &data, 0).unwrap();
                let res = std::thread::scope(|s| {
                    s.spawn(|| {
                        std::thread::sleep(Duration::from_millis(2));
                        other.set_len(new_len).unwrap();
                    });
                    hash(&f)
                });
                match res {
                    // The change came after the hash ended: it must then
                    // be the digest of the whole file as it was.
                    Ok(sha) => assert_eq!(sha, reference(&data), "to {new_len} bytes"),
                    Err(_) => {
                        refused = true;
                        break;
                    }
                }
            }
            assert!(refused, "no change to {new_len} bytes landed during a hash");
        }
    }

    #[test]
    fn identity_changes_with_content() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let a = identify(f.as_file()).unwrap();
        assert!(a.regular);
        std::thread::sleep(std::time::Duration::from_millis(20));
        f.write_all(b"x").unwrap();
        let b = identify(f.as_file()).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.stamp, b.stamp);
    }
}
