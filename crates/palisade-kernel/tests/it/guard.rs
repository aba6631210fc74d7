//! The BPF LSM exec-mapping guard, on a private tmpfs.
//!
//! The guard is configured with `agent_tgid: 0` (nobody exempt) so that this
//! test process's children are judged. Only the tmpfs device is watched, so
//! every other file on the machine (ld.so, libc, gcc) is untouched; the memfd
//! rule, which is machine-wide, is switched on only around the memfd checks.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_kernel::guard::{
    ExecGuard, GuardConfig, GuardEvent, GuardEventKind, GuardMode, InodeKey,
};
use palisade_kernel::ErrorKind;

use crate::support::{self, Tmpfs};

const DEADLINE: Duration = Duration::from_secs(10);
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";

const LIB_C: &str = "int hello(void) { return 42; }\n";

const DLOPEN_C: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 3; }
    int (*f)(void) = (int (*)(void))dlsym(h, "hello");
    if (!f || f() != 42) return 4;
    return 0;
}
"#;

const MEMFD_EXEC_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
extern char **environ;
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = memfd_create("palisade-test", MFD_EXEC);
    if (fd < 0 && errno == EINVAL) fd = memfd_create("palisade-test", 0);
    if (fd < 0) { perror("memfd_create"); return 20; }
    int src = open(argv[1], O_RDONLY);
    if (src < 0) { perror("open"); return 21; }
    char buf[65536];
    ssize_t n;
    while ((n = read(src, buf, sizeof buf)) > 0)
        if (write(fd, buf, n) != n) { perror("write"); return 22; }
    char *args[] = { argv[1], NULL };
    fexecve(fd, args, environ);
    fprintf(stderr, "fexecve: %s\n", strerror(errno));
    return errno == EPERM ? 10 : 11;
}
"#;

/// mprotect(PROT_EXEC) on a read-only private mapping of argv[1], and (JIT
/// style) on anonymous memory.
const MPROTECT_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *anon = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED) return 20;
    if (mprotect(anon, 4096, PROT_READ | PROT_EXEC) != 0) { perror("anon mprotect"); return 21; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) return 22;
    void *p = mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return 23;
    if (mprotect(p, 4096, PROT_READ | PROT_EXEC) != 0) {
        fprintf(stderr, "file mprotect: %s\n", strerror(errno));
        return errno == EPERM ? 10 : 11;
    }
    return 0;
}
"#;

struct Helpers {
    lib: PathBuf,
    dlopen: PathBuf,
    memfd_exec: PathBuf,
    mprotect: PathBuf,
}

/// Builds the helper programs beside the mount (host filesystem).
fn build_helpers(tmpfs: &Tmpfs) -> Helpers {
    let dir = tmpfs.outside();
    Helpers {
        lib: support::gcc(dir, "libhello.so", LIB_C, &["-shared", "-fPIC"]),
        dlopen: support::gcc(dir, "dlopen", DLOPEN_C, &["-ldl"]),
        memfd_exec: support::gcc(dir, "memfd_exec", MEMFD_EXEC_C, &[]),
        mprotect: support::gcc(dir, "mprotect", MPROTECT_C, &[]),
    }
}

/// A loaded guard watching the tmpfs. Declared before the tmpfs so it is
/// dropped (programs detached) before the unmount.
struct Fixture {
    guard: ExecGuard,
    tmpfs: Tmpfs,
}

/// Loads the guard, or explains why this kernel cannot run it: `None` (the
/// test is skipped) only for [`ErrorKind::Unsupported`], and never when
/// `PALISADE_REQUIRE_GUARD=1` (set by `vm-test.sh`, whose kernel must run it).
fn load_or_skip(test: &str) -> Option<ExecGuard> {
    let required = std::env::var("PALISADE_REQUIRE_GUARD").is_ok_and(|v| v == "1");
    match ExecGuard::load() {
        Ok(guard) => Some(guard),
        Err(e) if e.kind() == ErrorKind::Unsupported && !required => {
            eprintln!("skipping {test}: BPF LSM unusable on this kernel: {e}");
            None
        }
        Err(e) => panic!("loading the guard failed: {e}"),
    }
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        let guard = load_or_skip(test)?;
        let tmpfs = Tmpfs::new();
        guard.watch_device(tmpfs.dev()).expect("watch tmpfs");
        Some(Fixture { guard, tmpfs })
    }

    fn mnt(&self) -> &Path {
        self.tmpfs.path()
    }

    fn set(&self, mode: GuardMode, block_memfd_exec: bool) {
        self.guard
            .set_config(GuardConfig {
                mode,
                agent_tgid: 0,
                block_memfd_exec,
                block_userns_fs: false,
            })
            .expect("set_config");
    }

    fn allow(&self, path: &Path) -> InodeKey {
        let key = key(path);
        self.guard.allow(key).expect("allow");
        key
    }

    /// Drops queued events.
    fn clear_events(&self) {
        while !self.guard.poll_events(Duration::ZERO).unwrap().is_empty() {}
    }

    /// Waits (up to 3 s) for an event matching `pred`; returns it and
    /// everything seen.
    fn expect_event(&self, what: &str, pred: impl Fn(&GuardEvent) -> bool) -> GuardEvent {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            for event in self.guard.poll_events(Duration::from_millis(50)).unwrap() {
                if pred(&event) {
                    return event;
                }
                seen.push(event);
            }
        }
        panic!("no {what} event; saw {seen:?}");
    }

    /// Events queued now (after giving the kernel a moment).
    fn events_now(&self) -> Vec<GuardEvent> {
        let mut all = Vec::new();
        loop {
            let batch = self.guard.poll_events(Duration::from_millis(20)).unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }
}

fn key(path: &Path) -> InodeKey {
    let (dev, ino) = support::dev_ino(path);
    InodeKey { dev, ino }
}

fn run_ok(cmd: &mut Command) -> (u32, std::process::Output) {
    support::run(cmd, DEADLINE).unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

#[test]
fn guard_denies_unallowed_exec_mappings() {
    let Some(_lock) = support::root_test("guard_denies_unallowed_exec_mappings") else {
        return;
    };
    let Some(fx) = Fixture::new("guard_denies_unallowed_exec_mappings") else {
        return;
    };
    let helpers = build_helpers(&fx.tmpfs);
    let lib = fx.mnt().join("libhello.so");
    let prog = fx.mnt().join("dlopen");
    let stranger = fx.mnt().join("stranger");
    std::fs::copy(&helpers.lib, &lib).unwrap();
    support::install_exec(&helpers.dlopen, &prog);
    support::install_exec(&helpers.dlopen, &stranger);
    fx.set(GuardMode::Enforce, false);
    let prog_key = fx.allow(&prog);
    let lib_key = key(&lib);
    let stranger_key = key(&stranger);
    assert!(fx.guard.is_allowed(prog_key).unwrap());
    assert!(!fx.guard.is_allowed(lib_key).unwrap());

    // An allowed program runs (ld.so and libc, on the host fs, are untouched)
    // but cannot dlopen a library that is not allowed.
    let (pid, out) = run_ok(Command::new(&prog).arg(&lib));
    assert_eq!(
        out.status.code(),
        Some(3),
        "dlopen must fail: {}",
        support::stderr(&out)
    );
    assert!(
        support::stderr(&out).contains("dlopen"),
        "{}",
        support::stderr(&out)
    );
    let event = fx.expect_event("ExecMapping of the library", |e| {
        e.kind == GuardEventKind::ExecMapping && e.key == lib_key
    });
    assert!(event.denied);
    assert_eq!(event.tgid, pid);
    assert_eq!(event.comm, "dlopen");
    assert_eq!(event.uid, 0);

    // Allowed library: dlopen works.
    fx.allow(&lib);
    let (_, out) = run_ok(Command::new(&prog).arg(&lib));
    assert!(
        out.status.success(),
        "dlopen of allowed lib: {}",
        support::stderr(&out)
    );

    // The dynamic loader run directly on a file that is not allowed.
    fx.clear_events();
    let (pid, out) = run_ok(Command::new(LD_SO).arg(&stranger).arg(&lib));
    assert!(!out.status.success(), "ld.so on a stranger must fail");
    let event = fx.expect_event("ExecMapping of the stranger", |e| {
        e.kind == GuardEventKind::ExecMapping && e.key == stranger_key
    });
    assert!(event.denied);
    assert_eq!(event.tgid, pid);
    // ... and on an allowed one.
    let (_, out) = run_ok(Command::new(LD_SO).arg(&prog).arg(&lib));
    assert!(
        out.status.success(),
        "ld.so on allowed prog: {}",
        support::stderr(&out)
    );

    // execve of a file that is not allowed fails cleanly with EPERM.
    let err = support::run(&mut Command::new(&stranger), DEADLINE).expect_err("exec of stranger");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err:?}");
    let event = fx.expect_event("Exec of the stranger", |e| {
        e.kind == GuardEventKind::Exec && e.key == stranger_key
    });
    assert!(event.denied);

    // A file open for writing is not allowed, even if in `allowed`.
    let writer = OpenOptions::new().write(true).open(&lib).unwrap();
    let (_, out) = run_ok(Command::new(&prog).arg(&lib));
    assert_eq!(
        out.status.code(),
        Some(3),
        "dlopen while open for write must fail"
    );
    drop(writer);
    assert!(
        fx.guard.is_allowed(lib_key).unwrap(),
        "opening for write alone does not invalidate"
    );
    let (_, out) = run_ok(Command::new(&prog).arg(&lib));
    assert!(out.status.success(), "{}", support::stderr(&out));

    // Writing to an allowed library removes it from `allowed`.
    fx.clear_events();
    let count = fx.guard.allowed_count();
    OpenOptions::new()
        .append(true)
        .open(&lib)
        .unwrap()
        .write_all(b"\0")
        .unwrap();
    let event = fx.expect_event("Invalidated", |e| {
        e.kind == GuardEventKind::Invalidated && e.key == lib_key
    });
    assert!(!event.denied);
    assert_eq!(event.tgid, std::process::id());
    assert!(!fx.guard.is_allowed(lib_key).unwrap());
    assert_eq!(fx.guard.allowed_count(), count - 1);
    let (_, out) = run_ok(Command::new(&prog).arg(&lib));
    assert_eq!(
        out.status.code(),
        Some(3),
        "dlopen after the write must fail again"
    );

    // revoke/clear.
    fx.allow(&lib);
    assert!(fx.guard.revoke(lib_key).unwrap());
    assert!(!fx.guard.revoke(lib_key).unwrap());
    fx.allow(&lib);
    assert_eq!(fx.guard.allowed_count(), 2);
    fx.guard.clear().unwrap();
    assert_eq!(fx.guard.allowed_count(), 0);

    // Unwatched device: everything goes.
    fx.guard.unwatch_device(fx.tmpfs.dev()).unwrap();
    let (_, out) = run_ok(Command::new(&stranger).arg(&lib));
    assert!(out.status.success(), "unwatched: {}", support::stderr(&out));
    assert_eq!(fx.guard.malformed_events(), 0);
    assert_eq!(fx.guard.dropped_events(), 0);
}

#[test]
fn guard_report_mode_allows_and_reports() {
    let Some(_lock) = support::root_test("guard_report_mode_allows_and_reports") else {
        return;
    };
    let Some(fx) = Fixture::new("guard_report_mode_allows_and_reports") else {
        return;
    };
    let helpers = build_helpers(&fx.tmpfs);
    let lib = fx.mnt().join("libhello.so");
    let prog = fx.mnt().join("dlopen");
    std::fs::copy(&helpers.lib, &lib).unwrap();
    support::install_exec(&helpers.dlopen, &prog);
    fx.set(GuardMode::Report, false);

    let (pid, out) = run_ok(Command::new(&prog).arg(&lib));
    assert!(
        out.status.success(),
        "report mode must allow: {}",
        support::stderr(&out)
    );
    let (prog_key, lib_key) = (key(&prog), key(&lib));
    let events = fx.events_now();
    let find = |kind, key| {
        events
            .iter()
            .find(|e| e.kind == kind && e.key == key && e.tgid == pid)
    };
    let exec =
        find(GuardEventKind::Exec, prog_key).unwrap_or_else(|| panic!("no Exec event: {events:?}"));
    let map = find(GuardEventKind::ExecMapping, lib_key)
        .unwrap_or_else(|| panic!("no lib event: {events:?}"));
    assert!(!exec.denied && !map.denied, "{events:?}");

    // Mode Off: nothing judged, nothing reported (but invalidation still runs).
    fx.set(GuardMode::Off, false);
    let (_, out) = run_ok(Command::new(&prog).arg(&lib));
    assert!(out.status.success());
    assert!(fx.events_now().is_empty());
}

#[test]
fn guard_mprotect_and_agent_exemption() {
    let Some(_lock) = support::root_test("guard_mprotect_and_agent_exemption") else {
        return;
    };
    let Some(fx) = Fixture::new("guard_mprotect_and_agent_exemption") else {
        return;
    };
    let helpers = build_helpers(&fx.tmpfs);
    let data = fx.mnt().join("data.bin");
    std::fs::write(&data, vec![0xc3u8; 4096]).unwrap(); // `ret` instructions
    let data_key = key(&data);
    fx.set(GuardMode::Enforce, false);

    // mprotect(PROT_EXEC) of a file mapping: denied unless allowed;
    // anonymous memory (JIT) is never judged.
    let (pid, out) = run_ok(Command::new(&helpers.mprotect).arg(&data));
    assert_eq!(out.status.code(), Some(10), "{}", support::stderr(&out));
    let event = fx.expect_event("Mprotect", |e| {
        e.kind == GuardEventKind::Mprotect && e.key == data_key
    });
    assert!(event.denied);
    assert_eq!(event.tgid, pid);
    fx.allow(&data);
    let (_, out) = run_ok(Command::new(&helpers.mprotect).arg(&data));
    assert!(out.status.success(), "{}", support::stderr(&out));
    fx.guard.revoke(data_key).unwrap();

    // This process maps the file PROT_EXEC: denied, unless it is the agent.
    let map_exec = || -> Result<(), i32> {
        let f = File::open(&data).unwrap();
        // SAFETY: maps one page of a one-page file read+exec; the mapping is
        // never executed or dereferenced, and is unmapped at once.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            libc::munmap(p, 4096);
        }
        Ok(())
    };
    assert_eq!(map_exec(), Err(libc::EPERM));
    fx.guard
        .set_config(GuardConfig {
            mode: GuardMode::Enforce,
            agent_tgid: std::process::id(),
            block_memfd_exec: false,
            block_userns_fs: false,
        })
        .unwrap();
    assert_eq!(map_exec(), Ok(()), "the agent's own tgid is exempt");
    // Children of the agent are not.
    let (_, out) = run_ok(Command::new(&helpers.mprotect).arg(&data));
    assert_eq!(out.status.code(), Some(10), "{}", support::stderr(&out));
}

#[test]
fn guard_memfd_exec_rule() {
    let Some(_lock) = support::root_test("guard_memfd_exec_rule") else {
        return;
    };
    let Some(fx) = Fixture::new("guard_memfd_exec_rule") else {
        return;
    };
    let helpers = build_helpers(&fx.tmpfs);
    let run_memfd = || run_ok(Command::new(&helpers.memfd_exec).arg("/bin/true"));

    // Rule off: memfd exec works and is not reported.
    fx.set(GuardMode::Enforce, false);
    let (_, out) = run_memfd();
    assert!(
        out.status.success(),
        "memfd exec with the rule off: {}",
        support::stderr(&out)
    );

    // Enforce + block: fexecve fails with EPERM, reported.
    fx.set(GuardMode::Enforce, true);
    let result = run_memfd();
    fx.set(GuardMode::Enforce, false);
    let (pid, out) = result;
    assert_eq!(
        out.status.code(),
        Some(10),
        "memfd exec must fail with EPERM: {}",
        support::stderr(&out)
    );
    let event = fx.expect_event("MemfdExec", |e| {
        e.kind == GuardEventKind::MemfdExec && e.tgid == pid
    });
    assert!(event.denied);
    assert_eq!(event.comm, "memfd_exec");

    // Report + block: runs, reported with denied=false.
    fx.clear_events();
    fx.set(GuardMode::Report, true);
    let result = run_memfd();
    fx.set(GuardMode::Off, false);
    let (pid, out) = result;
    assert!(
        out.status.success(),
        "report mode: {}",
        support::stderr(&out)
    );
    let event = fx.expect_event("MemfdExec (report)", |e| {
        e.kind == GuardEventKind::MemfdExec && e.tgid == pid
    });
    assert!(!event.denied);
}

/// One way to (maybe) change an allowed file's content, and whether the
/// guard must drop it from `allowed`.
struct Change {
    name: &'static str,
    apply: fn(&Path),
    invalidates: bool,
}

fn pwrite(path: &Path) {
    use std::os::unix::fs::FileExt;
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(b"X", 0)
        .unwrap();
}

fn ftruncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(100)
        .unwrap();
}

fn truncate_path(path: &Path) {
    let c = support::cstr(path);
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 100) }, 0);
}

fn open_trunc(path: &Path) {
    File::create(path).unwrap();
}

fn fallocate(path: &Path) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    // SAFETY: valid fd; fallocate has no memory arguments.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 16384) }, 0);
}

fn shared_mmap_write(path: &Path) {
    crate::fanotify::shared_mmap_write(path);
}

/// Maps MAP_SHARED read-only from an O_RDWR fd, then mprotect(PROT_WRITE).
fn shared_mprotect_write(path: &Path) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: one page of a file at least one page long; unmapped before the
    // fd is closed; never dereferenced.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_WRITE),
            0
        );
        libc::munmap(p, 4096);
    }
}

fn private_mmap_write(path: &Path) {
    let f = File::open(path).unwrap();
    // SAFETY: one private page of a file at least one page long, written
    // within bounds (copy-on-write: the file is unchanged), then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        *(p as *mut u8) = b'P';
        libc::munmap(p, 4096);
    }
}

fn read_only(path: &Path) {
    drop(std::fs::read(path).unwrap());
}

fn open_for_write_only(path: &Path) {
    drop(OpenOptions::new().write(true).open(path).unwrap());
}

fn chmod(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn guard_invalidation() {
    let Some(_lock) = support::root_test("guard_invalidation") else {
        return;
    };
    let table = [
        Change {
            name: "pwrite",
            apply: pwrite,
            invalidates: true,
        },
        Change {
            name: "ftruncate",
            apply: ftruncate,
            invalidates: true,
        },
        Change {
            name: "truncate",
            apply: truncate_path,
            invalidates: true,
        },
        Change {
            name: "open_trunc",
            apply: open_trunc,
            invalidates: true,
        },
        Change {
            name: "fallocate",
            apply: fallocate,
            invalidates: true,
        },
        Change {
            name: "shared_mmap_write",
            apply: shared_mmap_write,
            invalidates: true,
        },
        Change {
            name: "shared_mprotect_write",
            apply: shared_mprotect_write,
            invalidates: true,
        },
        Change {
            name: "private_mmap_write",
            apply: private_mmap_write,
            invalidates: false,
        },
        Change {
            name: "read",
            apply: read_only,
            invalidates: false,
        },
        Change {
            name: "open_for_write_only",
            apply: open_for_write_only,
            invalidates: false,
        },
        Change {
            name: "chmod",
            apply: chmod,
            invalidates: false,
        },
    ];
    let Some(fx) = Fixture::new("guard_invalidation") else {
        return;
    };
    // Invalidation runs in every mode, Off included.
    fx.set(GuardMode::Off, false);
    for change in &table {
        let path = fx.mnt().join(change.name);
        std::fs::write(&path, vec![b'a'; 8192]).unwrap();
        let key = fx.allow(&path);
        fx.clear_events();
        (change.apply)(&path);
        let still = fx.guard.is_allowed(key).unwrap();
        assert_eq!(
            !still, change.invalidates,
            "{}: invalidated={}",
            change.name, !still
        );
        let events: Vec<_> = fx
            .events_now()
            .into_iter()
            .filter(|e| e.kind == GuardEventKind::Invalidated && e.key == key)
            .collect();
        assert_eq!(
            events.len(),
            usize::from(change.invalidates),
            "{}: {events:?}",
            change.name
        );
    }
    // Files off the watched device are never touched.
    let outside = fx.tmpfs.outside().join("outside");
    std::fs::write(&outside, b"x").unwrap();
    let outside_key = key(&outside);
    fx.guard.allow(outside_key).unwrap();
    pwrite(&outside);
    assert!(fx.guard.is_allowed(outside_key).unwrap());
}

/// On a kernel without a usable BPF LSM the guard must say so with
/// `ErrorKind::Unsupported` and a message naming the cause — never panic or
/// report a generic BPF error. (This is what the CI VM does today: its kernel
/// refuses LSM and fentry programs with EPERM before verification.)
#[test]
fn guard_load_works_or_reports_unsupported() {
    let Some(_lock) = support::root_test("guard_load_works_or_reports_unsupported") else {
        return;
    };
    match ExecGuard::load() {
        Ok(guard) => {
            eprintln!("guard attached to {:?}", guard.hooks());
            for hook in [
                "mmap_file",
                "file_mprotect",
                "bprm_check_security",
                "file_permission",
                "path_truncate",
            ] {
                assert!(
                    guard.hooks().contains(&hook),
                    "{hook} not attached: {:?}",
                    guard.hooks()
                );
            }
            // Freshly loaded: inert.
            assert_eq!(guard.allowed_count(), 0);
            assert!(guard.poll_events(Duration::ZERO).unwrap().is_empty());
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            let text = e.to_string();
            assert!(text.contains("BPF LSM") || text.contains("BTF"), "{text}");
            eprintln!("guard unsupported here: {text}");
        }
    }
}

/// A filesystem mounted inside a user namespace is in no mount table the
/// agent reads: with `block_userns_fs`, nothing on it runs while enforcing;
/// without, the guard leaves it alone (it is not watched).
#[test]
fn guard_refuses_code_on_user_namespace_filesystems_when_asked() {
    let Some(_lock) = support::root_test("guard_refuses_code_on_user_namespace_filesystems") else {
        return;
    };
    let Some(fx) = Fixture::new("guard_refuses_code_on_user_namespace_filesystems") else {
        return;
    };
    let dir = fx.tmpfs.outside().join("userns-mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "mount -t tmpfs none {d} && cp /bin/true {d}/t && {d}/t && echo RAN",
        d = dir.display()
    );
    let attempt = |block_userns_fs: bool| {
        fx.guard
            .set_config(GuardConfig {
                mode: GuardMode::Enforce,
                agent_tgid: 0,
                block_memfd_exec: false,
                block_userns_fs,
            })
            .expect("set_config");
        let (_, out) = run_ok(Command::new("unshare").args(["-Urm", "sh", "-c", &script]));
        (
            String::from_utf8_lossy(&out.stdout).contains("RAN"),
            support::stderr(&out),
        )
    };
    let (ran, err) = attempt(false);
    if !ran {
        eprintln!("skipping: no user namespace with a tmpfs here ({err})");
        return;
    }
    let (ran, err) = attempt(true);
    assert!(!ran, "code on a user namespace's tmpfs ran");
    assert!(err.contains("not permitted"), "{err}");
    let events = fx.guard.poll_events(Duration::from_secs(2)).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == GuardEventKind::UserNamespaceFs && e.denied),
        "reported: {events:?}"
    );
    fx.set(GuardMode::Off, false);
}
