//! [`read_mapped`]: read a whole file through a read-only mapping of its
//! page cache, for the agent's hash of a large file.
//!
//! Why not `pread`: reading a file copies it from the page cache into a
//! buffer, then the hash reads the buffer again. On the benchmark host (a
//! VM, SHA-NI at 2 GB/s on data already in the CPU's caches) a 64 MiB file
//! on tmpfs hashed in 42-43 ms with one thread copying 256 KiB chunks while
//! the other hashed them, against 34 ms for the same bytes in cache. The
//! hash here reads the page cache in place, 1 KiB at a time, and asks the
//! CPU for the next 4 KiB before it needs them (software prefetch; the
//! hardware prefetchers stop at each 4 KiB page), while a helper thread
//! maps the pages ahead of it (`MADV_POPULATE_READ`, which also does any
//! disk reads): 36-37 ms. `cargo bench -p palisade-agent --bench hash`
//! measures both ways.
//!
//! # A file that shrinks while it is mapped
//!
//! Any process that may write the file can truncate it while the agent
//! reads it; touching a mapped page past the new end raises `SIGBUS`, which
//! would kill the agent. This module installs a `SIGBUS` handler (once, the
//! first time it maps a file) that looks the faulting address up in a table
//! of the mappings being read. On a hit it maps zeros over the rest of that
//! mapping (`MAP_FIXED`, async-signal-safe), records the fault and returns:
//! the read finishes on zeros and [`read_mapped`] reports
//! [`io::ErrorKind::UnexpectedEof`], so the digest is never used. Any other
//! `SIGBUS` goes to the handler that was there before (Rust's own, which
//! lets it kill the process) or, with none, to the default action: the
//! process dies of it as it would have without this module. Should other
//! code replace the handler later, [`read_mapped`] sees it (it reads the
//! action before each file) and maps nothing: the caller uses `pread`.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How much of the file each call of the reader's closure gets.
const STEP: usize = 1024;
/// How far ahead of the hash the CPU is asked to fetch.
const AHEAD: usize = 4096;
/// How much the helper maps (`MADV_POPULATE_READ`) at a time.
const POPULATE: usize = 1 << 20;
/// How many [`POPULATE`] chunks the helper may have mapped ahead of the
/// chunk being hashed (and it may be mapping one more): the lead is bounded
/// so that a file read from disk is not pulled into memory much faster than
/// it is hashed.
const LEAD: usize = 8;
/// How many files may be read through a mapping at once; more readers fall
/// back to `pread` ([`Mapped::Unavailable`]).
const SLOTS: usize = 16;

/// How [`read_mapped`] ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapped {
    /// The closure was given the whole file, in order.
    Read,
    /// `stop` said to stop: the closure was given the file only in part.
    Stopped,
    /// The file could not be mapped (a filesystem without `mmap`, a
    /// process out of address space or slots, no `SIGBUS` handler): the
    /// closure was not called, read the file with `pread` instead.
    Unavailable,
}

/// One mapping being read: its address range, and whether a `SIGBUS` hit it.
struct Slot {
    /// Claimed by a reader.
    busy: AtomicBool,
    /// First address (0: no mapping registered).
    start: AtomicUsize,
    /// One past the last address, rounded up to a page.
    end: AtomicUsize,
    /// A `SIGBUS` was raised inside the range.
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            busy: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// The page size, read once when the handler is installed.
static PAGE: AtomicUsize = AtomicUsize::new(0);
/// The `SIGBUS` action in place before ours (written before ours is
/// installed, read by the handler).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// The handler as `sigaction` stores it.
fn handler_address() -> usize {
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_sigbus;
    handler as usize
}

/// Install the handler once; whether it is in place now. Code elsewhere in
/// the process may have replaced it since (a library's own `SIGBUS`
/// handler, or the default action put back after a foreign fault): then
/// nothing is mapped, and the caller reads the file with `pread`.
fn handler_installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    if !*INSTALLED.get_or_init(install) {
        return false;
    }
    // SAFETY: an all-zero sigaction is a valid value; a null new action
    // only reads the current one into it.
    let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let read = unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut now) };
    read == 0 && now.sa_sigaction == handler_address()
}

/// Whether the `SIGBUS` handler [`read_mapped`] needs is in place (it is
/// installed at the first call): once other code has replaced it, every
/// file is [`Mapped::Unavailable`], and a caller may want to say so.
pub fn handler_in_place() -> bool {
    handler_installed()
}

/// Put the handler in place, keeping the action it replaces.
fn install() -> bool {
    // SAFETY: sysconf has no memory arguments.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page <= 0 {
        return false;
    }
    PAGE.store(page as usize, Ordering::Relaxed);
    // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no
    // flags, empty mask); sigaction(2) only writes `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a null new action only reads the current one.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
        return false;
    }
    let _ = PREVIOUS.set(old);
    // SAFETY: as above.
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = handler_address();
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `new.sa_mask` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    // SAFETY: `new` is fully initialised; `on_sigbus` has the
    // SA_SIGINFO signature and is async-signal-safe.
    unsafe { libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) == 0 }
}

/// The `SIGBUS` handler: zeros over a registered mapping, else the previous
/// action. Only atomics and system calls: async-signal-safe.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed).max(1);
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        let end = slot.end.load(Ordering::Acquire);
        if addr >= end {
            continue;
        }
        let from = addr & !(page - 1);
        // SAFETY: [from, end) lies inside a mapping this module made and has
        // not unmapped (the slot is cleared before munmap); replacing it
        // with private zero pages leaves it readable.
        let r = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::Release);
            return;
        }
        break;
    }
    match PREVIOUS.get() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: with SA_SIGINFO the kernel accepted this pointer
                // as a three-argument handler.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO it is a one-argument handler.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // Back to the default action; the access faults again on return
            // and the process dies of the SIGBUS, as it would have.
            // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
            let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: `dfl` is a valid action.
            unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) };
        }
    }
}

/// A registered, read-only mapping of the first `len` bytes of a file;
/// unregistered and unmapped on drop.
struct Mapping {
    slot: &'static Slot,
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize) -> Option<Mapping> {
        let slot = TABLE.iter().find(|s| {
            s.busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })?;
        // SAFETY: a fresh read-only shared mapping chosen by the kernel; the
        // result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            slot.busy.store(false, Ordering::Release);
            return None;
        }
        let page = PAGE.load(Ordering::Relaxed);
        slot.faulted.store(false, Ordering::Relaxed);
        slot.end
            .store(addr as usize + len.div_ceil(page) * page, Ordering::Release);
        slot.start.store(addr as usize, Ordering::Release);
        Some(Mapping { slot, addr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `addr` is a live PROT_READ mapping of `len` bytes until
        // drop. Pages past a shrunken end are replaced by zeros by the
        // SIGBUS handler, so every byte stays readable. Another process may
        // change the bytes meanwhile; they are only hashed, and the caller
        // checks the file's identity afterwards.
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }

    fn faulted(&self) -> bool {
        self.slot.faulted.load(Ordering::Acquire)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.slot.start.store(0, Ordering::Release);
        self.slot.end.store(0, Ordering::Release);
        // SAFETY: unmaps exactly what `new` mapped (the handler may have
        // replaced part of it with anonymous pages, which go too).
        unsafe { libc::munmap(self.addr, self.len) };
        self.slot.busy.store(false, Ordering::Release);
    }
}

/// Ask the CPU to fetch `bytes` into its caches.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch of an address inside a live slice; it never
        // faults and changes nothing but the caches.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Give `each` the first `len` bytes of the open file `fd`, in order, read
/// through a mapping (see the module documentation). Meant for large files
/// (megabytes): mapping and the helper thread cost tens of microseconds.
/// `stop` is asked before each MiB; once it says yes, reading ends there
/// ([`Mapped::Stopped`]).
///
/// # Errors
/// [`io::ErrorKind::UnexpectedEof`] when the file shrank below `len` while it
/// was read: `each` was given zeros for the missing part, and whatever it
/// computed must be thrown away.
pub fn read_mapped(
    fd: BorrowedFd<'_>,
    len: u64,
    each: &mut dyn FnMut(&[u8]),
    stop: &dyn Fn() -> bool,
) -> io::Result<Mapped> {
    let Ok(len) = usize::try_from(len) else {
        return Ok(Mapped::Unavailable);
    };
    if len == 0 || !handler_installed() {
        return Ok(Mapped::Unavailable);
    }
    let Some(map) = Mapping::new(fd, len) else {
        return Ok(Mapped::Unavailable);
    };
    let bytes = map.bytes();
    let (mapped_tx, mapped_rx) = std::sync::mpsc::sync_channel::<()>(LEAD);
    let stopped = std::thread::scope(|s| {
        // Owned here: dropped when this closure returns (before the scope
        // waits for the helper), which ends a helper blocked on a full
        // channel.
        let mapped_rx = mapped_rx;
        // The helper maps the pages ahead of the hash. If it cannot start,
        // or MADV_POPULATE_READ fails (kernels before 5.14; a file that
        // shrank), the hash faults the pages in itself.
        let helper = std::thread::Builder::new()
            .name("palisade-map".into())
            .spawn_scoped(s, move || {
                for chunk in bytes.chunks(POPULATE) {
                    // SAFETY: advice over a range of the live mapping;
                    // MADV_POPULATE_READ reports failures instead of
                    // raising SIGBUS.
                    let r = unsafe {
                        libc::madvise(
                            chunk.as_ptr() as *mut libc::c_void,
                            chunk.len(),
                            libc::MADV_POPULATE_READ,
                        )
                    };
                    if r != 0 || mapped_tx.send(()).is_err() {
                        return;
                    }
                }
            });
        let mut helping = helper.is_ok();
        prefetch(&bytes[..AHEAD.min(len)]);
        for (i, chunk) in bytes.chunks(POPULATE).enumerate() {
            if stop() {
                return true;
            }
            if helping && mapped_rx.recv().is_err() {
                helping = false;
            }
            let base = i * POPULATE;
            for (j, step) in chunk.chunks(STEP).enumerate() {
                let ahead = (base + j * STEP + AHEAD).min(len);
                prefetch(&bytes[ahead..(ahead + STEP).min(len)]);
                each(step);
            }
        }
        false
    });
    if map.faulted() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while it was read",
        ));
    }
    Ok(if stopped {
        Mapped::Stopped
    } else {
        Mapped::Read
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn read_all(file: &std::fs::File, len: u64) -> io::Result<(Mapped, Vec<u8>)> {
        let mut got = Vec::new();
        let how = read_mapped(
            std::os::fd::AsFd::as_fd(file),
            len,
            &mut |b: &[u8]| got.extend_from_slice(b),
            &|| false,
        )?;
        Ok((how, got))
    }

    #[test]
    fn gives_every_byte_in_order() {
        for len in [1, STEP - 1, AHEAD + 3, POPULATE * 3 + 12345] {
            let mut f = tempfile::tempfile().unwrap();
            let want = content(len);
            f.write_all(&want).unwrap();
            let (how, got) = read_all(&f, len as u64).unwrap();
            assert_eq!(how, Mapped::Read);
            assert!(got == want, "{len} bytes read back differ");
        }
    }

    #[test]
    fn an_empty_or_unmappable_file_is_unavailable() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(read_all(&f, 0).unwrap().0, Mapped::Unavailable);
        let (r, _w) = std::io::pipe().unwrap();
        let mut called = false;
        let how = read_mapped(
            std::os::fd::AsFd::as_fd(&r),
            4096,
            &mut |_| called = true,
            &|| false,
        )
        .unwrap();
        assert_eq!(how, Mapped::Unavailable);
        assert!(!called);
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_an_error_not_a_crash() {
        let len = POPULATE * 4;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&content(len)).unwrap();
        let mut seen = 0usize;
        let mut sum = 0u64;
        let mut shrunk = false;
        let res = read_mapped(
            std::os::fd::AsFd::as_fd(&f),
            len as u64,
            &mut |b: &[u8]| {
                // Every byte is read, as a hash would.
                sum += b.iter().map(|&x| u64::from(x)).sum::<u64>();
                seen += b.len();
                if !shrunk && seen >= POPULATE / 2 {
                    f.set_len(0).unwrap();
                    shrunk = true;
                }
            },
            &|| false,
        );
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(seen, len, "the read went on, over zeros");
        assert!(sum > 0);
        // The slot was given back and the handler still works.
        f.set_len(len as u64).unwrap();
        let (how, _) = read_all(&f, len as u64).unwrap();
        assert_eq!(how, Mapped::Read);
    }

    #[test]
    fn stops_between_mebibytes_when_asked() {
        // Long enough for the helper to fill its channel and wait: it must
        // end too.
        let len = POPULATE * (LEAD + 12);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&content(len)).unwrap();
        let seen = std::cell::Cell::new(0usize);
        let how = read_mapped(
            std::os::fd::AsFd::as_fd(&f),
            len as u64,
            &mut |b: &[u8]| seen.set(seen.get() + b.len()),
            &|| seen.get() >= 3 * POPULATE,
        )
        .unwrap();
        assert_eq!(how, Mapped::Stopped);
        assert_eq!(seen.get(), 3 * POPULATE);
    }

    /// A `SIGBUS` outside the mappings being read still kills the process,
    /// and with the handler replaced nothing is mapped (checked in a child:
    /// this test binary run again on this test alone).
    #[test]
    fn a_sigbus_elsewhere_still_kills() {
        const CHILD: &str = "PALISADE_TEST_SIGBUS_CHILD";
        if std::env::var_os(CHILD).is_some() {
            fault_outside_the_table();
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "mapped::tests::a_sigbus_elsewhere_still_kills",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("handler installed"), "{stdout}");
        assert!(stdout.contains("unavailable once replaced"), "{stdout}");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(libc::SIGBUS),
            "{:?}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn fault_outside_the_table() -> ! {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit for this process.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        // Should the handler swallow the fault and loop on it, SIGALRM ends
        // the child (and the parent sees the wrong signal) instead of a hang.
        // SAFETY: no memory arguments.
        unsafe { libc::alarm(10) };
        let len = 8192;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&content(len)).unwrap();
        assert_eq!(read_all(&f, len as u64).unwrap().0, Mapped::Read);
        println!("handler installed");
        // Replaced (here by the default action): nothing is mapped, the
        // caller reads the file otherwise.
        // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
        let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `dfl` is a valid action.
        assert_eq!(
            unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) },
            0
        );
        assert_eq!(read_all(&f, len as u64).unwrap().0, Mapped::Unavailable);
        println!("unavailable once replaced");
        // SAFETY: a fresh mapping of the file, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        f.set_len(0).unwrap();
        // SAFETY: the page is mapped; past the end of the file, reading it
        // raises the SIGBUS this test is about.
        let byte = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
        panic!("reading past the end gave {byte} instead of SIGBUS");
    }
}
