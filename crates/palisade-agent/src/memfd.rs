//! Blocking code execution from memory (`memfd_create` + `fexecve`) with the
//! kernel's `vm.memfd_noexec` sysctl, for kernels where the BPF guard cannot
//! run (and as a second layer where it can).
//!
//! At 2, every new memfd is created non-executable and sealed so
//! (`MFD_NOEXEC_SEAL`), and `memfd_create(MFD_EXEC)` is refused: a payload
//! copied into a memfd cannot be `fexecve`d. The setting is host-wide (per
//! pid namespace), so it is held only while some agent enforces, and the
//! original value comes back when the last one stops wanting it. Several
//! agents (tests, a restart overlapping the old process) coordinate through
//! `/run/palisade/memfd-noexec/`: one file per agent pid that wants the
//! setting, the value found before the first one raised it, and a lock.
//! Files of dead pids are ignored, so a crashed agent cannot pin it forever;
//! until another agent starts and stops, a crash leaves it raised (failing
//! closed).
//!
//! What it does not do: report. The kernel refuses the exec without telling
//! anyone; only the BPF guard sees and reports memory execution.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const SYSCTL: &str = "/proc/sys/vm/memfd_noexec";
const ENFORCE: u32 = 2;

/// The coordination directory.
fn registry() -> PathBuf {
    PathBuf::from("/run/palisade/memfd-noexec")
}

fn read_sysctl() -> io::Result<u32> {
    fs::read_to_string(SYSCTL)?
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "malformed vm.memfd_noexec"))
}

fn write_sysctl(v: u32) -> io::Result<()> {
    fs::write(SYSCTL, format!("{v}\n"))
}

/// Whether this kernel has the setting.
pub fn supported() -> bool {
    Path::new(SYSCTL).exists()
}

/// Hold an exclusive lock on the registry while `f` runs.
fn locked<T>(dir: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    fs::create_dir_all(dir)?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let out = f();
    let _ = rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock);
    out
}

fn live_holders(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("pid-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            out.push(pid);
        } else {
            let _ = fs::remove_file(dir.join(&name));
        }
    }
    Ok(out)
}

/// Say whether this process wants memory execution blocked, and apply the
/// resulting host-wide setting.
pub fn want(block: bool) -> io::Result<()> {
    want_in(&registry(), std::process::id(), block)
}

fn want_in(dir: &Path, pid: u32, block: bool) -> io::Result<()> {
    if !supported() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel has no vm.memfd_noexec (Linux 6.3+)",
        ));
    }
    locked(dir, || {
        let mine = dir.join(format!("pid-{pid}"));
        let original = dir.join("original");
        if block {
            // Recorded once, by the first holder: a holder that died
            // without releasing left its record, the value from before
            // it raised the setting (read now, the setting would be its
            // raise, and the last release would restore that: seen in CI).
            if !original.exists() {
                fs::write(&original, read_sysctl()?.to_string())?;
            }
            fs::write(&mine, b"")?;
            if read_sysctl()? < ENFORCE {
                write_sysctl(ENFORCE)?;
            }
        } else {
            let _ = fs::remove_file(&mine);
            if live_holders(dir)?.is_empty() && original.exists() {
                let v: u32 = fs::read_to_string(&original)?.trim().parse().unwrap_or(0);
                write_sysctl(v.min(ENFORCE))?;
                fs::remove_file(&original)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_of_dead_pids_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pid-4000000000"), b"").unwrap();
        fs::write(dir.path().join("pid-1"), b"").unwrap();
        fs::write(dir.path().join("other"), b"").unwrap();
        assert_eq!(live_holders(dir.path()).unwrap(), vec![1]);
        assert!(!dir.path().join("pid-4000000000").exists());
    }

    /// Regression: after a holder died without releasing (killed), the next
    /// one took the raised setting for the original and restored it at its
    /// release: the host was left at 2 with no agent holding it.
    #[test]
    fn a_dead_holder_s_raise_is_not_restored() {
        if !supported() || crate::users::effective_uid() != 0 {
            return;
        }
        let Ok(before) = read_sysctl() else { return };
        if before != 0 {
            return; // another agent enforces on this host
        }
        let dir = tempfile::tempdir().unwrap();
        // The dead holder raised it from 0 and never released.
        fs::write(dir.path().join("original"), b"0").unwrap();
        fs::write(dir.path().join("pid-4000000000"), b"").unwrap();
        if write_sysctl(ENFORCE).is_err() {
            return;
        }
        want_in(dir.path(), std::process::id(), true).unwrap();
        want_in(dir.path(), std::process::id(), false).unwrap();
        let after = read_sysctl().unwrap();
        let _ = write_sysctl(before);
        assert_eq!(after, 0, "the value from before the dead holder");
    }
}
