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

/// The real uid of a process (`/proc/PID/status`; nothing there waits on
/// the process's memory or files).
pub fn real_uid(pid: u32) -> io::Result<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_uids(&status)
        .map(|(uid, _)| uid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid in /proc/PID/status"))
}

/// `(ppid, start time)` of a process: one small read.
pub fn read_stat(pid: u32) -> io::Result<(u32, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

/// The command line of a process, one entry per argument (`None` where it
/// is not safe to read: [`cmdline_bytes`]).
pub fn cmdline(pid: u32) -> io::Result<Option<Vec<String>>> {
    Ok(cmdline_bytes(pid)?.map(|args| {
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }))
}

/// The command line of a process as the bytes it was given: where an
/// argument names a file, a name that is not UTF-8 must still name it.
/// `None` when the memory it is read from is not anonymous (see
/// [`strings_are_anonymous`]).
pub fn cmdline_bytes(pid: u32) -> io::Result<Option<Vec<Vec<u8>>>> {
    if !strings_are_anonymous(pid, Strings::Arguments)? {
        return Ok(None);
    }
    let raw = fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    ))
}

/// The directories of a process's `PATH`, in order (an empty entry is its
/// working directory, as the shell takes it); none if it has no `PATH` or
/// its environment cannot be read; `None` when it is not safe to read (see
/// [`strings_are_anonymous`]).
pub fn search_path(pid: u32) -> Option<Vec<Vec<u8>>> {
    if !strings_are_anonymous(pid, Strings::Environment).unwrap_or(true) {
        return None;
    }
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return Some(Vec::new());
    };
    Some(
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
            .unwrap_or_default(),
    )
}

/// The strings of a process that `/proc/PID/cmdline` and `environ` read
/// out of its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    Arguments,
    Environment,
}

/// Whether the memory `/proc/PID/cmdline` (or `environ`) would read lies
/// in one anonymous mapping, as it does from `execve` on (the top of the
/// stack). A process may map a file there instead (`mmap` with
/// `MAP_FIXED`, or `PR_SET_MM_ARG_START`), and reading a page of a file
/// asks its filesystem: one on FUSE, whose daemon need never answer, would
/// keep the reading agent thread waiting for ever. Such strings are not
/// read; the caller fails closed. (A thread of the process could still map
/// a file there between this look and the read.) An area the agent may
/// not see (fields 48-51 of `/proc/PID/stat` read as 0) is not read
/// either.
pub fn strings_are_anonymous(pid: u32, which: Strings) -> io::Result<bool> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let Some([arg_start, arg_end, env_start, env_end]) = parse_string_areas(&stat) else {
        return Ok(false);
    };
    let (start, end) = match which {
        Strings::Arguments => (arg_start, arg_end),
        Strings::Environment => (env_start, env_end),
    };
    if start == 0 || end < start {
        return Ok(false);
    }
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(in_anonymous_mapping(&maps, start, end - start))
}

/// `arg_start, arg_end, env_start, env_end`: fields 48 to 51 of
/// `/proc/PID/stat` (counted, as in [`parse_stat`], from the last `)`).
fn parse_string_areas(stat: &str) -> Option<[u64; 4]> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some([field(48)?, field(49)?, field(50)?, field(51)?])
}

/// Whether `[addr, addr + len)` lies in one mapping of `maps` (the text of
/// `/proc/PID/maps`) that no file backs: inode 0 (the heap, the stack,
/// anonymous mappings; a shared anonymous mapping is backed by an internal
/// shmem file, but that one is not any filesystem's a user can mount).
pub(crate) fn in_anonymous_mapping(maps: &str, addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    maps.lines().any(|line| {
        let mut it = line.split_whitespace();
        let (Some(range), Some(_perms), Some(_offset), Some(_dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return false;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            return false;
        };
        lo <= addr && end <= hi && inode == "0"
    })
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
        assert!(!cmdline(std::process::id()).unwrap().unwrap().is_empty());
        assert!(search_path(std::process::id()).is_some());
        assert!(read(u32::MAX - 1).is_err());
    }

    #[test]
    fn string_areas_are_fields_48_to_51() {
        let mut stat = String::from("99 (a) b) S");
        for n in 4..=52 {
            stat.push_str(&format!(" {n}"));
        }
        assert_eq!(parse_string_areas(&stat), Some([48, 49, 50, 51]));
        assert_eq!(parse_string_areas("99 (x) S 1 2"), None);
        let me = std::process::id();
        assert!(strings_are_anonymous(me, Strings::Arguments).unwrap());
        assert!(strings_are_anonymous(me, Strings::Environment).unwrap());
    }

    /// A process whose arguments are in a file's pages (it mapped a file
    /// over them with `MAP_FIXED`, as any user may) does not have them
    /// read: on FUSE the read would wait on the filesystem's daemon.
    #[test]
    fn arguments_in_a_files_pages_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("pages");
        std::fs::write(&page, vec![b'x'; 64 << 10]).unwrap();
        let program = "import ctypes, os, sys, time\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             libc.mmap.restype = ctypes.c_void_p\n\
             libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, \
               ctypes.c_int, ctypes.c_int, ctypes.c_long]\n\
             st = open('/proc/self/stat').read()\n\
             f = st[st.rfind(')') + 1:].split()\n\
             lo, hi = int(f[45]) & ~4095, (int(f[46]) + 4095) & ~4095\n\
             fd = os.open(sys.argv[1], os.O_RDONLY)\n\
             # PROT_READ, MAP_SHARED | MAP_FIXED\n\
             print(libc.mmap(lo, hi - lo, 1, 0x11, fd, 0) == lo, flush=True)\n\
             time.sleep(60)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", program])
            .arg(&page)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = child.id();
        let result = (
            strings_are_anonymous(pid, Strings::Arguments).unwrap(),
            cmdline_bytes(pid).unwrap(),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line.trim(), "True", "mapped over its arguments");
        assert_eq!(result, (false, None));
    }
}
