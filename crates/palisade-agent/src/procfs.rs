//! Reading processes from `/proc`: the facts behind a [`ProcessContext`].
//!
//! Everything here reads a process that may exit at any moment: every read
//! is fallible and a vanished process yields what could be read.
use std::fs;
use std::io;
use std::path::PathBuf;

/// `(u32)-1`: the kernel's value for an unset login uid or session id.
const UNSET: u32 = u32::MAX;

/// What `/proc/PID` says about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id (the thread group's, when read through a thread id).
    pub pid: u32,
    /// Parent process id (0 for init and kernel threads).
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Audit login uid, if set.
    pub loginuid: Option<u32>,
    /// Audit session id, if set.
    pub sessionid: Option<u32>,
    /// Start time in clock ticks since boot (distinguishes a reused pid).
    pub start_time: u64,
    /// Path of the executable, as `/proc/PID/exe` names it.
    pub exe: Option<PathBuf>,
}

/// Read one process.
pub fn read(pid: u32) -> io::Result<ProcInfo> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat = fs::read_to_string(base.join("stat"))?;
    let (ppid, start_time) = parse_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))?;
    let status = fs::read_to_string(base.join("status"))?;
    let (uid, euid) = parse_status_uids(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid in /proc/PID/status"))?;
    // A thread id resolves to its process (the thread group).
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(pid);
    let read_id = |name: &str| {
        fs::read_to_string(base.join(name))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&v| v != UNSET)
    };
    Ok(ProcInfo {
        pid: tgid,
        ppid,
        uid,
        euid,
        loginuid: read_id("loginuid"),
        sessionid: read_id("sessionid"),
        start_time,
        exe: fs::read_link(base.join("exe")).ok(),
    })
}

/// `(ppid, start time)` of a process: one small read.
pub fn read_stat(pid: u32) -> io::Result<(u32, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

/// The command line of a process, one entry per argument.
pub fn cmdline(pid: u32) -> io::Result<Vec<String>> {
    Ok(cmdline_bytes(pid)?
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// The command line of a process as the bytes it was given: where an
/// argument names a file, a name that is not UTF-8 must still name it.
pub fn cmdline_bytes(pid: u32) -> io::Result<Vec<Vec<u8>>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The directories of a process's `PATH`, in order (an empty entry is its
/// working directory, as the shell takes it); none if it has no `PATH` or
/// its environment cannot be read.
pub fn search_path(pid: u32) -> Vec<Vec<u8>> {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    env.split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"PATH="))
        .map(|path| {
            path.split(|&b| b == b':')
                .map(|d| {
                    if d.is_empty() {
                        b".".to_vec()
                    } else {
                        d.to_vec()
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The current working directory of a process.
pub fn cwd(pid: u32) -> io::Result<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd"))
}

/// `(ppid, starttime)` from `/proc/PID/stat`. The command name (field 2) is
/// in parentheses and may itself contain spaces and parentheses, so fields
/// are counted from the last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

fn parse_status_uids(status: &str) -> Option<(u32, u32)> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut it = line["Uid:".len()..].split_whitespace();
    let uid = it.next()?.parse().ok()?;
    let euid = it.next()?.parse().ok()?;
    Some((uid, euid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let stat =
            "1234 (a) b) (c) S 77 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100";
        assert_eq!(parse_stat(stat), Some((77, 98765)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn reads_itself() {
        let me = read(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert_eq!(me.uid, rustix::process::getuid().as_raw());
        assert!(me.exe.is_some());
        assert!(me.start_time > 0);
        assert!(!cmdline(std::process::id()).unwrap().is_empty());
        assert!(read(u32::MAX - 1).is_err());
    }
}
