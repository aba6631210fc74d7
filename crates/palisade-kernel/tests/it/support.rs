//! Shared fixtures: root check, a private tmpfs, serialized root tests,
//! child processes with deadlines, helper programs built with gcc.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Every root test takes this lock: they fork children and write files that
/// the others' kernel hooks would see (a write fd inherited by a concurrent
/// fork makes `i_writecount` > 0 or an exec fail with ETXTBSY), and 2 cores
/// gain nothing from running them at once.
static ROOT_TESTS: Mutex<()> = Mutex::new(());

/// `Some(lock)` when running as root; otherwise prints why the test is skipped.
pub(crate) fn root_test(name: &str) -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {name}: needs root (fanotify/BPF LSM); CI runs it as root");
        return None;
    }
    Some(ROOT_TESTS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A fresh tmpfs mounted on `<tempdir>/mnt`, lazily unmounted on drop (also
/// when the test panics). Whatever holds fanotify groups or BPF guards that
/// watch it must be dropped before it (declare it last).
pub(crate) struct Tmpfs {
    mnt: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(crate) fn new() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("palisade-kernel-it.")
            .tempdir()
            .expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        let target = cstr(&mnt);
        // SAFETY: all pointers are valid NUL-terminated strings that outlive
        // the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=64m,mode=0755".as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs on {mnt:?}: {}",
            io::Error::last_os_error()
        );
        Tmpfs { mnt, dir }
    }

    /// The mount point.
    pub(crate) fn path(&self) -> &Path {
        &self.mnt
    }

    /// A directory beside the mount (same temp dir, host filesystem) for
    /// files that must not be on the tmpfs.
    pub(crate) fn outside(&self) -> &Path {
        self.dir.path()
    }

    /// `st_dev` of the tmpfs.
    pub(crate) fn dev(&self) -> u64 {
        std::fs::metadata(&self.mnt).expect("stat mnt").dev()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = cstr(&self.mnt);
        // SAFETY: `target` is a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!("umount2({:?}): {}", self.mnt, io::Error::last_os_error());
        }
    }
}

pub(crate) fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// `(st_dev, st_ino)` of a path.
pub(crate) fn dev_ino(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
    (m.dev(), m.ino())
}

/// Copies `from` to `to` and makes it executable.
pub(crate) fn install_exec(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from:?} -> {to:?}: {e}"));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Runs `cmd` to completion with a deadline: `Err` if it could not be
/// started (e.g. the exec was denied), the output otherwise. A child still
/// running at the deadline is killed (by its pid) and the test fails.
/// Retries a spawn that failed with ETXTBSY (a racing fork in this process
/// briefly held a write fd of a file we just wrote).
pub(crate) fn run(cmd: &mut Command, deadline: Duration) -> io::Result<(u32, Output)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tries = 0;
    let child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => {
            let _ = waiter.join();
            out.map(|o| (pid, o))
        }
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been
            // reaped yet (the waiter thread is still waiting on it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = waiter.join();
            panic!("{cmd:?} (pid {pid}) still running after {deadline:?}; killed");
        }
    }
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Compiles C `source` with gcc into `dir/name` (extra args appended).
pub(crate) fn gcc(dir: &Path, name: &str, source: &str, args: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("write C source");
    let out = dir.join(name);
    let result = Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(args)
        .output()
        .expect("run gcc (apt-get install gcc)");
    assert!(
        result.status.success(),
        "gcc {name} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}
