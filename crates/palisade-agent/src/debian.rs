//! Facts about Debian packages: which installed package owns a file, whether
//! the file's content matches the checksum that package recorded, and which
//! signed repository (the publisher) provides that exact package version.
//!
//! [`PackageDb`] reads dpkg's database and apt's lists under a root directory
//! (`/` on a real system) and answers [`PackageDb::fact`] for an open file at
//! its canonical path. It holds no policy: the rule engine
//! ([`palisade_core::rules`]) decides what a [`PublisherFact`] is worth.
//!
//! # Sources
//!
//! * **Installed packages**: `var/lib/dpkg/status`, then the journal
//!   `var/lib/dpkg/updates/NNNN` in numeric order (dpkg writes in-progress
//!   status changes there before folding them into `status`; a later stanza
//!   for the same package and architecture replaces an earlier one). A
//!   package counts when its status is `installed`, `unpacked`,
//!   `half-configured`, `triggers-awaited`, `triggers-pending` or
//!   `half-installed`. Files are in place and recorded from `unpacked` on,
//!   and the package's own `postinst` runs while it is `half-configured`, so
//!   those must be attributed already. `half-installed` is what dpkg marks a
//!   package with *before* its `preinst` runs and new files are unpacked
//!   during an upgrade; the stanza, `.list` and `md5sums` still describe the
//!   old version until the new files are in place, so the files not yet
//!   replaced (`ls` while `coreutils` upgrades) keep verifying, and the ones
//!   already replaced do not verify until dpkg records their checksums.
//!   Attribution never implies trust: only a checksum match does.
//!   `config-files` and `not-installed` packages own nothing.
//! * **Ownership**: `var/lib/dpkg/info/<pkg>:<arch>.list` (multi-arch
//!   instances) or `<pkg>.list`, one path a line, indexed path → package.
//! * **Checksums**: `var/lib/dpkg/info/<pkg>[:<arch>].md5sums`, read lazily
//!   per package and cached until the next reload; and the `Conffiles:` field
//!   of the status stanza (the checksum of each configuration file as the
//!   package shipped it; `obsolete`, `remove-on-upgrade` and `newconffile`
//!   entries are ignored). A file with no recorded checksum is never
//!   verified.
//! * **Publishers**: apt's `var/lib/apt/lists/`. Every `*_Packages` index
//!   (plain, `.lz4` or `.gz`; `.xz`, `.zst` and `.bz2` are skipped) belongs to
//!   the `*_InRelease` or `*_Release` file whose name, less `InRelease` /
//!   `Release`, is the longest prefix of the index's name (for a `dists`
//!   repository the prefix ends `_dists_<suite>_`; for a flat repository it is
//!   the repository's own prefix). The publisher is that Release file's
//!   `Origin:` field. apt keeps a list only once its signature verified; as a
//!   second guard, only an `InRelease` that is an inline-signed message, or a
//!   `Release` with its `Release.gpg` beside it, counts: an unsigned `Release`
//!   (a `[trusted=yes]` source) publishes nothing. A Release file without an
//!   `Origin:` publishes nothing either.
//!
//! # Path aliasing and diversions
//!
//! On a merged-`/usr` system (`<root>/bin` a symlink to `usr/bin`, likewise
//! `sbin`, `lib`, `lib32`, `lib64`, `libx32`) dpkg may record `/bin/ls` for
//! the file whose canonical path is `/usr/bin/ls`, and the other way round;
//! both spellings are looked up, the exact one first. Aliasing is applied only
//! for directories that are actually merged under the root.
//!
//! Diversions (`var/lib/dpkg/diversions`): for a path `P` diverted to `T` by
//! package `D`,
//! * the file at `P` belongs to `D` when `D` ships `P`, and to no package
//!   otherwise (a local diversion, or `D` ships nothing there): the other
//!   packages that list `P` do not own the file at `P`;
//! * the file at `T` belongs to the packages other than `D` that list `P`
//!   (dpkg records them under `P`), and is checked against their checksum for
//!   `P`.
//!
//! # Change detection
//!
//! [`PackageDb::changed`] compares the identity (device, inode, size, mtime,
//! ctime) of `status`, `diversions` and the `info`, `updates` and apt `lists`
//! directories with what they were when the database was loaded (dpkg and apt
//! replace files by renaming into those directories, which changes the
//! directory). [`PackageDb::reload`] reloads dpkg's side and re-reads only
//! the apt indexes that changed.
//!
//! # Known limits
//!
//! * dpkg records MD5, not SHA-256: a verified file is one whose MD5 matches.
//!   MD5 is broken for collisions; an attacker able to get a colliding file
//!   into a package of a trusted repository could swap it. Second preimages
//!   (forging a file to match an existing package's MD5) remain infeasible.
//! * The publisher is established by package name, version and architecture,
//!   not by the hash of the `.deb` that was installed (dpkg does not record
//!   it): a package built locally with the same name and version as a
//!   repository's is attributed to that repository. If several origins
//!   provide the same version, [`PackageDb::origin`] (and so `fact`) returns
//!   the first in list-file name order; [`PackageDb::origins`] returns all.
//! * Presence in `lists/` is taken as "signed"; the signatures are not
//!   verified again here.
//! * The Packages index is kept as a set of 64-bit keyed hashes of
//!   (package, version, architecture) of every stanza, not only installed
//!   ones, so that installing a package needs no re-parse of apt's lists: a
//!   false match has probability about n/2⁶⁴ and cannot be aimed at, the key
//!   being random per process.
//! * During an upgrade, the files dpkg has already replaced match no
//!   recorded checksum until dpkg writes the new `md5sums` and status (a few
//!   milliseconds later, before `postinst`); they are not verified in that
//!   window. Trust for them has to come from elsewhere (the writer being
//!   dpkg).
//! * A package's `md5sums` is read on first use after a load; if dpkg
//!   replaced it in between, the checksums are the new ones while the
//!   version is the loaded one until the next reload. Callers check
//!   [`PackageDb::changed`] first ([`LivePackageDb`] does).
//!
//! # Cost
//!
//! On the development machine (Debian 12, 2 cores, 888 packages, 111k
//! paths, apt lists of 19 MB lz4 = 50 MB of Packages), release build: load
//! about 120 ms (dpkg side 55–60 ms, apt lists 75 ms), reload with unchanged
//! apt lists 35–45 ms, `changed()` about 15 µs (a dozen `stat`s), about
//! 18 MB resident. [`PackageDb::fact`] reads the whole file for its MD5
//! (0.3 ms for `ls`, 4 ms for the 2 MB `libc.so.6`); the caller is expected
//! to cache facts with its other per-content results.
use palisade_core::rules::PublisherFact;
use parking_lot::{Mutex, RwLock};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directories that merged-`/usr` systems alias to `/usr/<dir>`.
const MERGED_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Status words under which a package's files are attributed to it.
const LIVE_STATES: [&str; 6] = [
    "installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
    "half-installed",
];

/// An installed package instance that owns a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Package name (`coreutils`).
    pub package: String,
    /// Architecture (`amd64`, `all`, ...).
    pub arch: String,
    /// Installed version, as in the status file (with epoch, if any).
    pub version: String,
    /// The path under which dpkg recorded the file: the queried path, its
    /// merged-`/usr` alias, or the original path of a diverted file. Use it
    /// with [`PackageDb::recorded_md5`].
    pub recorded_path: String,
}

/// Identity of a file or directory, to notice replacement or modification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// One installed package instance.
#[derive(Debug)]
struct Package {
    name: String,
    arch: String,
    version: String,
    /// File name stem of its info files (`name` or `name:arch`), once found.
    stem: Option<String>,
    /// Conffile checksums from the status stanza.
    conffiles: HashMap<Box<str>, [u8; 16]>,
}

/// Paths recorded by one package's `md5sums`, with leading `/`.
type Md5Sums = HashMap<Box<str>, [u8; 16]>;

/// A diversion as seen from one of its two paths.
#[derive(Debug, Clone)]
struct Diversion {
    /// The other path (divert-to for a `from` entry, original for a `to`).
    other: Box<str>,
    /// The diverting package; `None` for a local diversion.
    package: Option<Box<str>>,
}

/// Hasher for keys that are already keyed hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeySet = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// One parsed `*_Packages` index.
#[derive(Debug)]
struct PackagesIndex {
    /// File name in the lists directory.
    file: String,
    stamp: Option<Stamp>,
    /// Keyed hashes of (package, version, architecture) of every stanza.
    keys: Arc<KeySet>,
    /// Origin of the signed Release file it belongs to.
    origin: String,
}

/// The dpkg database and apt's metadata under one root, indexed.
#[derive(Debug)]
pub struct PackageDb {
    root: PathBuf,
    stamps: Vec<(PathBuf, Option<Stamp>)>,
    packages: Vec<Package>,
    /// Path as recorded → first owning package (index into `packages`).
    files: HashMap<Box<str>, u32>,
    /// Further owners of paths listed by more than one package.
    more_owners: HashMap<Box<str>, Vec<u32>>,
    div_from: HashMap<Box<str>, Diversion>,
    div_to: HashMap<Box<str>, Diversion>,
    /// Top-level directories that are symlinks into `usr/`.
    merged: Vec<&'static str>,
    /// Packages indexes in list-file name order.
    indexes: Vec<PackagesIndex>,
    key: RandomState,
    md5_cache: Mutex<HashMap<u32, Arc<Md5Sums>>>,
}

impl PackageDb {
    /// Load from a root directory: `/` on a real system; tests use a
    /// temporary root holding `var/lib/dpkg` and `var/lib/apt/lists`.
    /// Missing files and directories mean "nothing known"; an error is
    /// returned only when `var/lib/dpkg/status` exists but cannot be read.
    pub fn load(root: &Path) -> io::Result<PackageDb> {
        PackageDb {
            root: root.to_path_buf(),
            stamps: Vec::new(),
            packages: Vec::new(),
            files: HashMap::new(),
            more_owners: HashMap::new(),
            div_from: HashMap::new(),
            div_to: HashMap::new(),
            merged: Vec::new(),
            indexes: Vec::new(),
            key: RandomState::new(),
            md5_cache: Mutex::new(HashMap::new()),
        }
        .reloaded()
    }

    /// The root this database was loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn watched(&self) -> Vec<PathBuf> {
        let dpkg = self.root.join("var/lib/dpkg");
        vec![
            dpkg.join("status"),
            dpkg.join("info"),
            dpkg.join("updates"),
            dpkg.join("diversions"),
            self.root.join("var/lib/apt/lists"),
        ]
    }

    /// Whether dpkg's or apt's state changed since the last load: a cheap
    /// `stat` of `status`, `diversions`, `info/`, `updates/`, apt's `lists/`
    /// and the Release and Packages files read from it. Call before
    /// answering and [`reload`](Self::reload) when true.
    pub fn changed(&self) -> bool {
        self.stamps.iter().any(|(p, s)| stamp(p) != *s)
    }

    /// Re-read dpkg's database; re-read apt's Packages indexes whose file
    /// changed (unchanged ones are kept). On error the database is left as
    /// it was.
    pub fn reload(&mut self) -> io::Result<()> {
        *self = self.reloaded()?;
        Ok(())
    }

    /// A freshly loaded copy of this database, sharing the unchanged apt
    /// indexes; `self` is untouched, so readers can go on using it until the
    /// new one is swapped in.
    pub fn reloaded(&self) -> io::Result<PackageDb> {
        // Stamps first: a change while loading shows as `changed()` later.
        let mut stamps: Vec<_> = self
            .watched()
            .into_iter()
            .map(|p| {
                let s = stamp(&p);
                (p, s)
            })
            .collect();
        let dpkg = self.root.join("var/lib/dpkg");
        let mut packages = read_installed(&dpkg)?;
        let (files, more_owners) = index_lists(&dpkg.join("info"), &mut packages);
        let (div_from, div_to) = read_diversions(&dpkg.join("diversions"));
        let merged = MERGED_DIRS
            .iter()
            .copied()
            .filter(|d| is_merged(&self.root, d))
            .collect();
        let (indexes, list_stamps) = read_apt_lists(
            &self.root.join("var/lib/apt/lists"),
            &self.key,
            &self.indexes,
        );
        stamps.extend(list_stamps);
        Ok(PackageDb {
            root: self.root.clone(),
            stamps,
            packages,
            files,
            more_owners,
            div_from,
            div_to,
            merged,
            indexes,
            key: self.key.clone(),
            md5_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Number of installed package instances and of paths they own.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.packages.len(),
            self.files.len(), // distinct recorded paths
        )
    }

    /// The facts for the file at canonical `path` whose open descriptor is
    /// `file`: owning package, version, whether its content (read through
    /// `file` with `pread`, the offset untouched) matches the recorded
    /// checksum, and the publisher. `None` when no installed package owns
    /// the path. When several packages own it, the first whose checksum
    /// matches is reported, else the first.
    pub fn fact(&self, path: &str, file: BorrowedFd<'_>) -> Option<PublisherFact> {
        let candidates = self.candidates(path);
        let first = *candidates.first()?;
        let mut digest: Option<Option<[u8; 16]>> = None;
        let mut chosen = (first, false);
        for &(pkg, recorded) in &candidates {
            let Some(want) = self.recorded_by(pkg, recorded) else {
                continue;
            };
            let got = *digest.get_or_insert_with(|| md5_fd(file).ok());
            if got == Some(want) {
                chosen = ((pkg, recorded), true);
                break;
            }
        }
        let ((pkg, _), verified) = chosen;
        let p = self.packages.get(pkg as usize)?;
        Some(PublisherFact {
            name: self.origin(&p.name, &p.version, &p.arch),
            package: p.name.clone(),
            version: p.version.clone(),
            verified,
        })
    }

    /// The installed package owning `path` (the first, when several do),
    /// after merged-`/usr` aliasing and diversions.
    pub fn owner(&self, path: &str) -> Option<Owner> {
        self.owners(path).into_iter().next()
    }

    /// Every installed package owning `path`, in the order `fact` tries
    /// them.
    pub fn owners(&self, path: &str) -> Vec<Owner> {
        self.candidates(path)
            .into_iter()
            .filter_map(|(i, recorded)| {
                let p = self.packages.get(i as usize)?;
                Some(Owner {
                    package: p.name.clone(),
                    arch: p.arch.clone(),
                    version: p.version.clone(),
                    recorded_path: recorded.to_owned(),
                })
            })
            .collect()
    }

    /// The MD5 that installed `package` (`name` or `name:arch`) recorded for
    /// `path` as dpkg recorded it (see [`Owner::recorded_path`]): from its
    /// `md5sums`, or from its conffiles. `None` if it recorded none.
    pub fn recorded_md5(&self, package: &str, path: &str) -> Option<[u8; 16]> {
        let (name, arch) = match package.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (package, None),
        };
        let i = self
            .packages
            .iter()
            .position(|p| p.name == name && arch.is_none_or(|a| a == p.arch))?;
        self.recorded_by(u32::try_from(i).ok()?, path)
    }

    /// The publisher of `package` at `version` for `arch`: the `Origin:` of
    /// the first signed repository (in list-file name order) whose Packages
    /// index has a stanza with that name, version and architecture (or
    /// architecture `all`). `None` when no signed list provides it.
    pub fn origin(&self, package: &str, version: &str, arch: &str) -> Option<String> {
        self.matching(package, version, arch).next().cloned()
    }

    /// All distinct origins providing `package` at `version` for `arch`, in
    /// list-file name order.
    pub fn origins(&self, package: &str, version: &str, arch: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for o in self.matching(package, version, arch) {
            if !out.contains(o) {
                out.push(o.clone());
            }
        }
        out
    }

    fn matching<'s>(
        &'s self,
        package: &str,
        version: &str,
        arch: &str,
    ) -> impl Iterator<Item = &'s String> + 's {
        let exact = key_of(
            &self.key,
            package.as_bytes(),
            version.as_bytes(),
            arch.as_bytes(),
        );
        let all = key_of(&self.key, package.as_bytes(), version.as_bytes(), b"all");
        self.indexes
            .iter()
            .filter(move |ix| ix.keys.contains(&exact) || ix.keys.contains(&all))
            .map(|ix| &ix.origin)
    }

    fn recorded_by(&self, pkg: u32, path: &str) -> Option<[u8; 16]> {
        let p = self.packages.get(pkg as usize)?;
        if let Some(sum) = self.md5sums(pkg).get(path) {
            return Some(*sum);
        }
        p.conffiles.get(path).copied()
    }

    fn md5sums(&self, pkg: u32) -> Arc<Md5Sums> {
        if let Some(m) = self.md5_cache.lock().get(&pkg) {
            return m.clone();
        }
        let sums = self
            .packages
            .get(pkg as usize)
            .and_then(|p| p.stem.as_deref())
            .and_then(|stem| {
                fs::read(self.root.join(format!("var/lib/dpkg/info/{stem}.md5sums"))).ok()
            })
            .map(|b| parse_md5sums(&b))
            .unwrap_or_default();
        let sums = Arc::new(sums);
        self.md5_cache.lock().insert(pkg, sums.clone());
        sums
    }

    /// The path itself, then its merged-`/usr` alias.
    fn aliases<'p>(&self, path: &'p str) -> Vec<std::borrow::Cow<'p, str>> {
        let mut out = vec![std::borrow::Cow::Borrowed(path)];
        for d in &self.merged {
            if let Some(rest) = path.strip_prefix("/usr/").and_then(|r| r.strip_prefix(d)) {
                if rest.is_empty() || rest.starts_with('/') {
                    out.push(format!("/{d}{rest}").into());
                }
            } else if let Some(rest) = path.strip_prefix('/').and_then(|r| r.strip_prefix(d)) {
                if rest.is_empty() || rest.starts_with('/') {
                    out.push(format!("/usr/{d}{rest}").into());
                }
            }
        }
        out
    }

    /// Owners of `path` exactly as recorded, with the recorded key.
    fn recorded_owners(&self, path: &str) -> Vec<(u32, &str)> {
        let mut out = Vec::new();
        if let Some((k, &i)) = self.files.get_key_value(path) {
            out.push((i, &**k));
            if let Some(more) = self.more_owners.get(path) {
                out.extend(more.iter().map(|&j| (j, &**k)));
            }
        }
        out
    }

    /// Candidate (package, recorded path) pairs for the file at `path`.
    fn candidates(&self, path: &str) -> Vec<(u32, &str)> {
        fn push<'a>(c: (u32, &'a str), out: &mut Vec<(u32, &'a str)>) {
            if !out.iter().any(|o| o.0 == c.0) {
                out.push(c);
            }
        }
        let mut out: Vec<(u32, &str)> = Vec::new();
        // Every alias names the same file, so a diversion of any alias
        // applies to it.
        let aliases = self.aliases(path);
        if let Some(d) = aliases.iter().find_map(|a| self.div_from.get(&**a)) {
            // Diverted away: only the diverting package's own file is here.
            if let Some(by) = &d.package {
                for a in &aliases {
                    for c in self.recorded_owners(a) {
                        if self.name_of(c.0) == Some(&**by) {
                            push(c, &mut out);
                        }
                    }
                }
            }
            return out;
        }
        if let Some(d) = aliases.iter().find_map(|a| self.div_to.get(&**a)) {
            // Holds the diverted original, which dpkg records under `from`.
            for from in self.aliases(&d.other) {
                for c in self.recorded_owners(&from) {
                    if d.package.as_deref() != self.name_of(c.0) {
                        push(c, &mut out);
                    }
                }
            }
            return out;
        }
        for a in &aliases {
            for c in self.recorded_owners(a) {
                push(c, &mut out);
            }
        }
        out
    }

    fn name_of(&self, pkg: u32) -> Option<&str> {
        self.packages.get(pkg as usize).map(|p| p.name.as_str())
    }
}

/// A [`PackageDb`] shared by the decision threads, reloaded when dpkg's or
/// apt's state changed: each query first checks [`PackageDb::changed`]
/// (a few `stat`s); the first thread to see a change loads a new database
/// while the others wait for it (so files a running `dpkg -i` just unpacked
/// are attributed as soon as dpkg recorded them), then swaps it in.
#[derive(Debug)]
pub struct LivePackageDb {
    current: RwLock<Arc<PackageDb>>,
    reloading: Mutex<()>,
}

impl LivePackageDb {
    /// Load the database under `root`.
    pub fn load(root: &Path) -> io::Result<LivePackageDb> {
        Ok(LivePackageDb::new(PackageDb::load(root)?))
    }

    /// Share an already loaded database.
    pub fn new(db: PackageDb) -> LivePackageDb {
        LivePackageDb {
            current: RwLock::new(Arc::new(db)),
            reloading: Mutex::new(()),
        }
    }

    /// The current database, reloaded first if anything changed. A failed
    /// reload keeps the previous database (and is retried next time).
    pub fn current(&self) -> Arc<PackageDb> {
        let db = self.current.read().clone();
        if !db.changed() {
            return db;
        }
        let _one = self.reloading.lock();
        let db = self.current.read().clone();
        if !db.changed() {
            return db;
        }
        match db.reloaded() {
            Ok(new) => {
                let new = Arc::new(new);
                *self.current.write() = new.clone();
                new
            }
            Err(e) => {
                tracing::warn!(error = %e, "reloading the dpkg database failed");
                db
            }
        }
    }

    /// [`PackageDb::fact`] on the current database.
    pub fn fact(&self, path: &str, file: BorrowedFd<'_>) -> Option<PublisherFact> {
        self.current().fact(path, file)
    }
}

fn is_merged(root: &Path, dir: &str) -> bool {
    let link = root.join(dir);
    match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => fs::read_link(&link).is_ok_and(|t| {
            let t = t.to_string_lossy();
            let t = t.trim_end_matches('/');
            t == format!("usr/{dir}") || t == format!("/usr/{dir}")
        }),
        _ => false,
    }
}

/// MD5 of the whole content behind `fd`, read with `pread` from offset 0.
fn md5_fd(fd: BorrowedFd<'_>) -> io::Result<[u8; 16]> {
    use md5::Digest;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off: u64 = 0;
    loop {
        match rustix::io::pread(fd, &mut buf[..], off) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                off += n as u64;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(h.finalize().into())
}

fn key_of(key: &RandomState, package: &[u8], version: &[u8], arch: &[u8]) -> u64 {
    let mut h = key.build_hasher();
    h.write(package);
    h.write_u8(0xff);
    h.write(version);
    h.write_u8(0xff);
    h.write(arch);
    h.finish()
}

fn hex16(s: &[u8]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Split deb822 text into stanzas of (field, value) where continuation lines
/// are appended to the value with their newline. Invalid UTF-8 lines are
/// dropped.
fn stanzas(text: &str) -> impl Iterator<Item = Vec<(&str, String)>> + '_ {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || {
        // Skip blank lines between stanzas.
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        lines.peek()?;
        let mut fields: Vec<(&str, String)> = Vec::new();
        while let Some(line) = lines.next_if(|l| !l.trim().is_empty()) {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push('\n');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim(), v.trim().to_owned()));
            }
        }
        Some(fields)
    })
}

fn field<'a>(fields: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parsed status stanza: (name, arch) → (status word, version, conffiles).
type StatusEntry = (String, String, HashMap<Box<str>, [u8; 16]>);

fn apply_status(text: &str, into: &mut HashMap<(String, String), StatusEntry>) {
    for st in stanzas(text) {
        let Some(name) = field(&st, "Package").filter(|n| !n.is_empty()) else {
            continue;
        };
        let arch = field(&st, "Architecture").unwrap_or_default().to_owned();
        let state = field(&st, "Status")
            .and_then(|s| s.split_whitespace().nth(2))
            .unwrap_or_default()
            .to_owned();
        let version = field(&st, "Version").unwrap_or_default().to_owned();
        let mut conffiles = HashMap::new();
        for line in field(&st, "Conffiles").unwrap_or_default().lines() {
            let mut parts = line.split_whitespace();
            if let (Some(p), Some(h), None) = (parts.next(), parts.next(), parts.next()) {
                if let Some(sum) = hex16(h.as_bytes()) {
                    conffiles.insert(Box::from(p), sum);
                }
            }
        }
        into.insert((name.to_owned(), arch), (state, version, conffiles));
    }
}

/// The live package instances from `status` and the `updates` journal.
fn read_installed(dpkg: &Path) -> io::Result<Vec<Package>> {
    let mut all: HashMap<(String, String), StatusEntry> = HashMap::new();
    match fs::read(dpkg.join("status")) {
        Ok(b) => apply_status(&String::from_utf8_lossy(&b), &mut all),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut journal: Vec<(u64, PathBuf)> = fs::read_dir(dpkg.join("updates"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((name.parse().ok()?, e.path()))
        })
        .collect();
    journal.sort();
    for (_, path) in journal {
        if let Ok(b) = fs::read(path) {
            apply_status(&String::from_utf8_lossy(&b), &mut all);
        }
    }
    let mut out: Vec<Package> = all
        .into_iter()
        .filter(|(_, (state, version, _))| {
            LIVE_STATES.contains(&state.as_str()) && !version.is_empty()
        })
        .map(|((name, arch), (_, version, conffiles))| Package {
            name,
            arch,
            version,
            stem: None,
            conffiles,
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    Ok(out)
}

type Owners = (HashMap<Box<str>, u32>, HashMap<Box<str>, Vec<u32>>);

/// Read each live package's `.list` and index path → package.
fn index_lists(info: &Path, packages: &mut [Package]) -> Owners {
    let mut files: HashMap<Box<str>, u32> = HashMap::with_capacity(128 * 1024);
    let mut more: HashMap<Box<str>, Vec<u32>> = HashMap::new();
    for (i, p) in packages.iter_mut().enumerate() {
        let Ok(idx) = u32::try_from(i) else { break };
        for stem in [format!("{}:{}", p.name, p.arch), p.name.clone()] {
            let Ok(bytes) = fs::read(info.join(format!("{stem}.list"))) else {
                continue;
            };
            p.stem = Some(stem);
            for line in bytes.split(|&b| b == b'\n') {
                let Ok(path) = std::str::from_utf8(line) else {
                    continue;
                };
                if !path.starts_with('/') || path == "/." {
                    continue;
                }
                match files.get(path) {
                    None => {
                        files.insert(Box::from(path), idx);
                    }
                    Some(&first) if first != idx => {
                        let v = more.entry(Box::from(path)).or_default();
                        if !v.contains(&idx) {
                            v.push(idx);
                        }
                    }
                    Some(_) => {}
                }
            }
            break;
        }
    }
    (files, more)
}

fn parse_md5sums(bytes: &[u8]) -> Md5Sums {
    let mut out = HashMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.len() < 34 {
            continue;
        }
        let (hash, rest) = line.split_at(32);
        let Some(sum) = hex16(hash) else { continue };
        let Ok(rest) = std::str::from_utf8(rest) else {
            continue;
        };
        // `<md5>  <path>`; paths are relative to the root.
        let Some(path) = rest.strip_prefix(' ') else {
            continue;
        };
        let path = path.strip_prefix(' ').unwrap_or(path);
        let path = path.trim_end_matches('\r');
        if path.is_empty() {
            continue;
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        out.insert(format!("/{path}").into_boxed_str(), sum);
    }
    out
}

type Diversions = (HashMap<Box<str>, Diversion>, HashMap<Box<str>, Diversion>);

fn read_diversions(path: &Path) -> Diversions {
    let mut from_map = HashMap::new();
    let mut to_map = HashMap::new();
    let Ok(bytes) = fs::read(path) else {
        return (from_map, to_map);
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    for triple in lines.chunks_exact(3) {
        let (from, to, by) = (triple[0], triple[1], triple[2]);
        if !from.starts_with('/') || !to.starts_with('/') || by.is_empty() {
            continue;
        }
        let package: Option<Box<str>> = (by != ":").then(|| Box::from(by));
        from_map.insert(
            Box::from(from),
            Diversion {
                other: Box::from(to),
                package: package.clone(),
            },
        );
        to_map.insert(
            Box::from(to),
            Diversion {
                other: Box::from(from),
                package,
            },
        );
    }
    (from_map, to_map)
}

/// How a Packages index is compressed, from its name; `None` if unsupported.
enum Compression {
    Plain,
    Lz4,
    Gzip,
}

fn packages_compression(name: &str) -> Option<Compression> {
    let (_, tail) = name.rsplit_once("_Packages")?;
    match tail {
        "" => Some(Compression::Plain),
        ".lz4" => Some(Compression::Lz4),
        ".gz" => Some(Compression::Gzip),
        _ => None,
    }
}

/// The `Origin:` of a Release or InRelease file, if it is signed.
fn release_origin(dir: &Path, name: &str, names: &HashSet<String>) -> Option<String> {
    let bytes = fs::read(dir.join(name)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    if name.ends_with("_InRelease") {
        let mut lines = text.lines();
        if lines.next()?.trim_end() != "-----BEGIN PGP SIGNED MESSAGE-----" {
            return None;
        }
        // Armor headers (`Hash: ...`) end at the first blank line.
        for l in lines.by_ref() {
            if l.trim().is_empty() {
                break;
            }
        }
        let body: Vec<&str> = lines.collect();
        if !body
            .iter()
            .any(|l| l.trim_end() == "-----BEGIN PGP SIGNATURE-----")
        {
            return None;
        }
        origin_field(body.into_iter())
    } else if names.contains(&format!("{name}.gpg")) {
        origin_field(text.lines())
    } else {
        None
    }
}

/// The `Origin:` field of a Release file's first paragraph.
fn origin_field<'a>(lines: impl Iterator<Item = &'a str>) -> Option<String> {
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with("-----BEGIN PGP SIGNATURE") {
            break;
        }
        // Dash-escaped lines of a cleartext signature start with "- ".
        let line = line.strip_prefix("- ").unwrap_or(line);
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("Origin") {
                let v = v.trim();
                return (!v.is_empty()).then(|| v.to_owned());
            }
        }
    }
    None
}

/// The files a load depended on, with their identity before reading.
type Stamps = Vec<(PathBuf, Option<Stamp>)>;

/// Index apt's lists: each supported Packages file with the origin of its
/// signed Release. Unchanged files found in `previous` are not re-read.
/// Also returns the stamps of the files read.
fn read_apt_lists(
    dir: &Path,
    key: &RandomState,
    previous: &[PackagesIndex],
) -> (Vec<PackagesIndex>, Stamps) {
    let names: HashSet<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // The identity of every file this load depends on, before reading it.
    let stamps: HashMap<&str, Option<Stamp>> = names
        .iter()
        .filter(|n| {
            n.ends_with("Release")
                || n.ends_with("Release.gpg")
                || packages_compression(n).is_some()
        })
        .map(|n| (n.as_str(), stamp(&dir.join(n))))
        .collect();
    // Release prefix → origin (None if unsigned or without Origin).
    let mut releases: HashMap<&str, Option<String>> = HashMap::new();
    for n in &names {
        if let Some(prefix) = n.strip_suffix("InRelease").filter(|p| p.ends_with('_')) {
            releases.insert(prefix, release_origin(dir, n, &names));
        }
    }
    for n in &names {
        if let Some(prefix) = n.strip_suffix("Release") {
            // InRelease wins when both exist.
            if !prefix.ends_with('_') || releases.contains_key(prefix) {
                continue;
            }
            releases.insert(prefix, release_origin(dir, n, &names));
        }
    }
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let mut out = Vec::new();
    for name in sorted {
        let Some(compression) = packages_compression(name) else {
            continue;
        };
        let origin = releases
            .iter()
            .filter(|(p, _)| name.starts_with(**p))
            .max_by_key(|(p, _)| p.len())
            .and_then(|(_, o)| o.clone());
        let Some(origin) = origin else { continue };
        let path = dir.join(name);
        let st = stamps.get(name.as_str()).copied().flatten();
        let keys = match previous
            .iter()
            .find(|p| &p.file == name && st.is_some() && p.stamp == st)
        {
            Some(prev) => prev.keys.clone(),
            None => match parse_packages(&path, compression, key) {
                Ok(k) => Arc::new(k),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable apt Packages index");
                    continue;
                }
            },
        };
        out.push(PackagesIndex {
            file: name.clone(),
            stamp: st,
            keys,
            origin,
        });
    }
    let stamps = stamps
        .into_iter()
        .map(|(n, st)| (dir.join(n), st))
        .collect();
    (out, stamps)
}

/// Stream a Packages index and collect the keyed hash of every stanza's
/// (Package, Version, Architecture). A decoding error discards the file.
fn parse_packages(path: &Path, compression: Compression, key: &RandomState) -> io::Result<KeySet> {
    let file = fs::File::open(path)?;
    let reader: Box<dyn Read> = match compression {
        Compression::Plain => Box::new(file),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(file)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut keys = KeySet::default();
    let mut line = Vec::with_capacity(256);
    let (mut name, mut version, mut arch) = (Vec::new(), Vec::new(), Vec::new());
    let mut flush = |name: &mut Vec<u8>, version: &mut Vec<u8>, arch: &mut Vec<u8>| {
        if !name.is_empty() && !version.is_empty() && !arch.is_empty() {
            keys.insert(key_of(key, name, version, arch));
        }
        name.clear();
        version.clear();
        arch.clear();
    };
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            flush(&mut name, &mut version, &mut arch);
            break;
        }
        let l = line.trim_ascii_end();
        if l.is_empty() {
            flush(&mut name, &mut version, &mut arch);
            continue;
        }
        let target = match l.first() {
            Some(b'P') if l.starts_with(b"Package:") => &mut name,
            Some(b'V') if l.starts_with(b"Version:") => &mut version,
            Some(b'A') if l.starts_with(b"Architecture:") => &mut arch,
            _ => continue,
        };
        let value = l.splitn(2, |&b| b == b':').nth(1).unwrap_or_default();
        target.clear();
        target.extend_from_slice(value.trim_ascii());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PackageDb>();
        send_sync::<LivePackageDb>();
    }

    #[test]
    fn md5sums_lines() {
        let m = parse_md5sums(
            b"7a4179e324c784b99e98fedee05260f7  bin/cat\n\
              zz  bin/x\n\
              short\n\
              db0817401cfd9c5a818ae919d10ba7c5  usr/share/a b\r\n\
              db0817401cfd9c5a818ae919d10ba7c5 \n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.get("/bin/cat").map(hex::encode).as_deref(),
            Some("7a4179e324c784b99e98fedee05260f7")
        );
        assert!(m.contains_key("/usr/share/a b"));
    }

    #[test]
    fn status_and_conffiles() {
        let mut all = HashMap::new();
        apply_status(
            "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2-3\n\
             Conffiles:\n /etc/a cc3493ecd2d09837ffdcc3e25fdfff18\n /etc/b 11a06baf8245fd8d690b99024d228c1f obsolete\n /etc/c newconffile\n\n\
             Package: b\nStatus: deinstall ok config-files\nVersion: 1\n\n\n\
             garbage without colon\n: \nPackage:\n",
            &mut all,
        );
        let a = &all[&("a".to_owned(), "amd64".to_owned())];
        assert_eq!(a.0, "installed");
        assert_eq!(a.1, "1:2-3");
        assert_eq!(a.2.len(), 1);
        assert!(a.2.contains_key("/etc/a"));
        assert_eq!(all[&("b".to_owned(), String::new())].0, "config-files");
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn compression_from_name() {
        assert!(matches!(
            packages_compression("h_dists_s_main_binary-amd64_Packages"),
            Some(Compression::Plain)
        ));
        assert!(matches!(
            packages_compression("h_dists_s_main_binary-amd64_Packages.lz4"),
            Some(Compression::Lz4)
        ));
        assert!(matches!(
            packages_compression("h_Packages.gz"),
            Some(Compression::Gzip)
        ));
        assert!(packages_compression("h_Packages.xz").is_none());
        assert!(packages_compression("h_i18n_Translation-en").is_none());
    }

    #[test]
    fn diversions_triples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("diversions");
        fs::write(
            &p,
            "/bin/sh\n/bin/sh.distrib\ndash\n/usr/bin/x\n/usr/bin/x.orig\n:\nbroken\n",
        )
        .unwrap();
        let (from, to) = read_diversions(&p);
        assert_eq!(from.len(), 2);
        assert_eq!(from["/bin/sh"].package.as_deref(), Some("dash"));
        assert_eq!(&*to["/usr/bin/x.orig"].other, "/usr/bin/x");
        assert!(to["/usr/bin/x.orig"].package.is_none());
    }
}
