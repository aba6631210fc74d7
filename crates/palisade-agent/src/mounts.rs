//! Which filesystems the agent watches: parsing `/proc/self/mountinfo`,
//! resolving `--watch PATH` to the filesystem holding PATH, and the default
//! set (every local filesystem).
use std::io;
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Kernel mount id.
    pub mount_id: u32,
    /// Device major number of the filesystem.
    pub major: u32,
    /// Device minor number of the filesystem.
    pub minor: u32,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`ext4`, `tmpfs`, ...).
    pub fstype: String,
    /// Mount source (`/dev/vda`, `tmpfs`, ...).
    pub source: String,
}

impl Mount {
    /// The filesystem's device number, in the userspace (`st_dev`) encoding.
    pub fn st_dev(&self) -> u64 {
        rustix::fs::makedev(self.major, self.minor)
    }
}

/// Filesystem types holding local, persistent or user-writable files, which
/// the agent watches by default.
pub const LOCAL_FS_TYPES: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "bcachefs", "jfs", "reiserfs", "nilfs2", "zfs",
    "vfat", "exfat", "ntfs", "ntfs3", "tmpfs", "ramfs", "overlay", "fuseblk",
];

/// Read the mount table of the agent's mount namespace.
pub fn all() -> io::Result<Vec<Mount>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Parse mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    let (major, minor) = l.get(2)?.split_once(':')?;
    Some(Mount {
        mount_id: l.first()?.parse().ok()?,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: PathBuf::from(unescape(l.get(4)?)),
        fstype: unescape(r.first()?),
        source: unescape(r.get(1).copied().unwrap_or("")),
    })
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (the last-mounted one with the longest
/// matching mount point).
pub fn mount_of(mounts: &[Mount], path: &Path) -> io::Result<Mount> {
    let path = path.canonicalize()?;
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .cloned()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no mount holds {}", path.display()),
            )
        })
}

/// Whether a mount holds a local filesystem the agent watches by default.
fn is_local(m: &Mount) -> bool {
    LOCAL_FS_TYPES.contains(&m.fstype.as_str())
        && !["/proc", "/sys", "/dev/pts"]
            .iter()
            .any(|p| m.mount_point.starts_with(p))
}

/// The filesystems to watch: those holding `paths`, or every local
/// filesystem when `paths` is empty. One entry per filesystem (device).
pub fn watch_set(mounts: &[Mount], paths: &[PathBuf]) -> io::Result<Vec<Mount>> {
    let mut chosen: Vec<Mount> = if paths.is_empty() {
        mounts.iter().filter(|m| is_local(m)).cloned().collect()
    } else {
        paths
            .iter()
            .map(|p| mount_of(mounts, p))
            .collect::<io::Result<_>>()?
    };
    let mut seen = std::collections::HashSet::new();
    chosen.retain(|m| seen.insert((m.major, m.minor)));
    Ok(chosen)
}

/// Which filesystems mounted after the start are watched too: local ones
/// anywhere (the default scope), or local ones mounted at or under a
/// watched path (a filesystem mounted inside a watched directory would
/// otherwise carve a hole out of it).
#[derive(Debug, Clone)]
pub struct Scope {
    /// Canonical watched paths; empty: everywhere.
    roots: Vec<PathBuf>,
}

impl Scope {
    /// The scope of `--watch` `paths` (none: every local filesystem).
    pub fn new(paths: &[PathBuf]) -> Scope {
        Scope {
            roots: paths
                .iter()
                .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
                .collect(),
        }
    }

    /// The mounts of `mounts` in scope, one per filesystem (device).
    pub fn select(&self, mounts: &[Mount]) -> Vec<Mount> {
        let mut seen = std::collections::HashSet::new();
        mounts
            .iter()
            .filter(|m| is_local(m))
            .filter(|m| {
                self.roots.is_empty() || self.roots.iter().any(|r| m.mount_point.starts_with(r))
            })
            .filter(|m| seen.insert((m.major, m.minor)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:5 / /dev rw - devtmpfs devtmpfs rw
25 24 0:22 / /dev/shm rw - tmpfs tmpfs rw
40 22 0:40 / /mnt/with\\040space rw shared:1 - tmpfs none rw
41 22 0:41 / /srv/data rw - xfs /dev/vdb rw
42 22 254:0 /srv /bind rw - ext4 /dev/vda rw
broken line
";

    #[test]
    fn parses_and_unescapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 7);
        assert_eq!(m[4].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!((m[4].major, m[4].minor), (0, 40));
        assert_eq!(m[5].fstype, "xfs");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn default_set_is_local_and_deduplicated() {
        let m = parse_mountinfo(SAMPLE);
        let set = watch_set(&m, &[]).unwrap();
        let points: Vec<_> = set.iter().map(|m| m.mount_point.clone()).collect();
        // The bind mount of / shares its device: watched once.
        assert_eq!(
            points,
            ["/", "/dev/shm", "/mnt/with space", "/srv/data"].map(PathBuf::from)
        );
    }

    #[test]
    fn later_mounts_are_in_scope_under_watched_paths() {
        let m = parse_mountinfo(SAMPLE);
        let points = |scope: Scope| -> Vec<PathBuf> {
            scope
                .select(&m)
                .into_iter()
                .map(|m| m.mount_point)
                .collect()
        };
        assert_eq!(
            points(Scope::new(&[])),
            ["/", "/dev/shm", "/mnt/with space", "/srv/data"].map(PathBuf::from)
        );
        // Not canonicalizable here: taken as given.
        assert_eq!(
            points(Scope::new(&[PathBuf::from("/srv")])),
            [PathBuf::from("/srv/data")]
        );
        assert_eq!(
            points(Scope::new(&[PathBuf::from("/mnt/with space")])),
            [PathBuf::from("/mnt/with space")]
        );
        assert!(points(Scope::new(&[PathBuf::from("/nowhere")])).is_empty());
    }

    #[test]
    fn real_mount_of_root() {
        let m = all().unwrap();
        let root = mount_of(&m, Path::new("/")).unwrap();
        assert_eq!(root.mount_point, PathBuf::from("/"));
        let dev = std::fs::metadata("/").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(root.st_dev(), dev.dev());
    }
}
