//! The initialization scan: inventory the executables, libraries and
//! scripts already on the watched filesystems, report them to the service
//! and (bulk approval) approve them locally on this computer.
//!
//! Users own files on the filesystems scanned (`/tmp`, `/dev/shm`, their
//! homes), so the scan must not be theirs to stall: a file is opened
//! without following a symbolic link and without waiting (a FIFO or a
//! device renamed over a listed file is not a regular file once `fstat`
//! looks at it, and is skipped), and a file larger than [`HASH_MAX`] is
//! not hashed (a sparse `+x` file of 8 EiB costs its owner nothing and
//! would take the scan years); such files are counted in
//! [`ScanSummary::too_large`]. Its threads run as background work
//! ([`crate::engine::background_priority`]).
use crate::files;
use crate::link::ServiceClient;
use crate::mounts::Mount;
use anyhow::Result;
use palisade_api::agent::{InventoryItem, InventoryRequest, INVENTORY_BATCH_MAX};
use palisade_core::{classify, FileKind, CLASSIFY_HEADER_LEN};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a scan did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScanSummary {
    /// Regular files looked at.
    pub files_seen: u64,
    /// Executables, libraries and scripts found (and hashed).
    pub code_files: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Hashes the service had never seen.
    pub new_hashes: u64,
    /// Local approvals created.
    pub approved: u64,
    /// Files that could not be read.
    pub errors: u64,
    /// Code files not hashed because they are larger than [`HASH_MAX`]
    /// (not inventoried, so not approved).
    #[serde(default)]
    pub too_large: u64,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// The files inventoried.
    #[serde(skip)]
    pub files: Vec<ScannedFile>,
}

/// One file the scan inventoried: what it is and which file version was hashed.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// Content hash.
    pub sha256: palisade_core::Sha256,
    /// Path.
    pub path: String,
    /// File identity and stamp when hashed.
    pub identity: files::Identity,
    /// Kind.
    pub kind: FileKind,
    /// Package and publisher, when the package database knows it.
    pub publisher: Option<palisade_core::rules::PublisherFact>,
}

/// Whether a file is code the scan inventories: ELF objects, scripts (by
/// shebang or extension) and anything with an execute bit.
fn wanted(path: &Path, executable: bool, kind: &FileKind, script_extensions: &[String]) -> bool {
    if kind.is_code() || executable {
        return true;
    }
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| script_extensions.contains(&e))
}

/// The largest file the agent hashes ([`crate::files::HASH_MAX`], 8 GiB).
pub use crate::files::HASH_MAX;

/// What [`inspect`] found.
#[derive(Debug)]
enum Inspected {
    /// Code, hashed.
    Code(Box<(InventoryItem, files::Identity)>),
    /// Code (or a file with an execute bit) larger than [`HASH_MAX`].
    TooLarge,
    /// Not code, not a regular file, or changed while read.
    Skipped,
}

/// Open `path` for the scan: read only, never following a symbolic link
/// (the walker saw a regular file there; whatever replaced it since is not
/// what it listed), never waiting (a FIFO's open would wait for a writer,
/// a device's may block), never becoming a controlling terminal.
fn open_listed(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(std::fs::File::from(fd))
}

/// Inspect one file: hashed if it is code of at most `max` bytes.
fn inspect(
    path: &Path,
    script_extensions: &[String],
    packages: Option<&dyn crate::engine::PackageFacts>,
    max: u64,
) -> std::io::Result<Inspected> {
    use std::os::fd::AsFd;
    let file = open_listed(path)?;
    let ident = files::identify(&file)?;
    if !ident.regular {
        return Ok(Inspected::Skipped);
    }
    let header = files::read_header(&file, CLASSIFY_HEADER_LEN)?;
    let kind = classify(&header);
    if !wanted(path, ident.executable, &kind, script_extensions) {
        return Ok(Inspected::Skipped);
    }
    if ident.stamp.size > max {
        return Ok(Inspected::TooLarge);
    }
    let sha256 = files::hash(&file)?;
    if files::identify(&file)?.stamp != ident.stamp {
        // Changed while it was read: not a version we can vouch for.
        return Ok(Inspected::Skipped);
    }
    Ok(Inspected::Code(Box::new((
        InventoryItem {
            sha256,
            path: path.to_string_lossy().into_owned(),
            size: ident.stamp.size,
            kind,
            publisher: packages.and_then(|db| db.fact(&path.to_string_lossy(), file.as_fd())),
        },
        ident,
    ))))
}

/// Scan `mounts` (each within its own filesystem), hashing on all cores, and
/// upload the inventory in batches. `approve`: bulk-approve locally.
/// `progress`: draw a progress bar on stderr (when it is a terminal).
pub async fn scan(
    client: &ServiceClient,
    mounts: &[Mount],
    script_extensions: &[String],
    packages: Option<std::sync::Arc<dyn crate::engine::PackageFacts>>,
    approve: bool,
    progress: bool,
) -> Result<ScanSummary> {
    let started = Instant::now();
    let roots: Vec<PathBuf> = mounts.iter().map(|m| m.mount_point.clone()).collect();
    let seen = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let too_large = Arc::new(AtomicU64::new(0));
    let (path_tx, path_rx) = crossbeam_channel::bounded::<PathBuf>(4096);
    let (item_tx, mut item_rx) =
        tokio::sync::mpsc::channel::<(InventoryItem, files::Identity)>(4096);

    // Walker: one thread, staying on each root's filesystem.
    {
        let seen = seen.clone();
        std::thread::Builder::new()
            .name("palisade-scan-walk".into())
            .spawn(move || {
                crate::engine::background_priority();
                for root in roots {
                    let walk = walkdir::WalkDir::new(&root)
                        .same_file_system(true)
                        .follow_links(false);
                    for entry in walk.into_iter().filter_map(Result::ok) {
                        if entry.file_type().is_file() {
                            seen.fetch_add(1, Ordering::Relaxed);
                            if path_tx.send(entry.into_path()).is_err() {
                                return;
                            }
                        }
                    }
                }
            })?;
    }
    // Hashers: one per core.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    for i in 0..threads {
        let rx = path_rx.clone();
        let tx = item_tx.clone();
        let errors = errors.clone();
        let too_large = too_large.clone();
        let exts = script_extensions.to_vec();
        let packages = packages.clone();
        std::thread::Builder::new()
            .name(format!("palisade-scan-hash-{i}"))
            .spawn(move || {
                crate::engine::background_priority();
                while let Ok(path) = rx.recv() {
                    match inspect(&path, &exts, packages.as_deref(), HASH_MAX) {
                        Ok(Inspected::Code(item)) => {
                            if tx.blocking_send(*item).is_err() {
                                return;
                            }
                        }
                        Ok(Inspected::TooLarge) => {
                            too_large.fetch_add(1, Ordering::Relaxed);
                            // Counted, and said once at the end: whoever
                            // made thousands must not flood the log.
                            tracing::debug!("{}: too large to hash", path.display());
                        }
                        Ok(Inspected::Skipped) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })?;
    }
    drop(item_tx);

    let bar = (progress && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} scanning: {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let mut summary = ScanSummary::default();
    let mut batch = Vec::with_capacity(INVENTORY_BATCH_MAX);
    loop {
        let item = item_rx.recv().await;
        let done = item.is_none();
        if let Some((item, identity)) = item {
            summary.code_files += 1;
            summary.bytes_hashed += item.size;
            summary.files.push(ScannedFile {
                sha256: item.sha256,
                path: item.path.clone(),
                identity,
                kind: item.kind.clone(),
                publisher: item.publisher.clone(),
            });
            batch.push(item);
        }
        if batch.len() >= INVENTORY_BATCH_MAX || (done && !batch.is_empty()) {
            let req = InventoryRequest {
                files: std::mem::take(&mut batch),
                approve_locally: approve,
            };
            let resp = client.inventory(&req).await?;
            summary.new_hashes += resp.new_hashes;
            summary.approved += resp.approved;
        }
        if let Some(b) = &bar {
            b.set_message(format!(
                "{} files, {} code files, {} MB hashed",
                seen.load(Ordering::Relaxed),
                summary.code_files,
                summary.bytes_hashed >> 20
            ));
        }
        if done {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary.files_seen = seen.load(Ordering::Relaxed);
    summary.errors = errors.load(Ordering::Relaxed);
    summary.too_large = too_large.load(Ordering::Relaxed);
    if summary.too_large > 0 {
        tracing::warn!(
            "scan: {} code files larger than {} GiB were not hashed, so not approved",
            summary.too_large,
            HASH_MAX >> 30
        );
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_scan_wants() {
        let exts = vec!["py".to_string(), "sh".to_string()];
        let other = FileKind::Other;
        assert!(wanted(Path::new("/x/tool"), true, &other, &exts));
        assert!(wanted(Path::new("/x/mod.py"), false, &other, &exts));
        assert!(wanted(Path::new("/x/MOD.PY"), false, &other, &exts));
        assert!(wanted(
            Path::new("/x/lib.so"),
            false,
            &FileKind::Elf { shared: true },
            &exts
        ));
        assert!(!wanted(Path::new("/x/notes.txt"), false, &other, &exts));
    }

    /// `inspect` on another thread, failing (instead of hanging) when it
    /// does not answer within two seconds.
    fn inspect_within(path: &Path) -> std::io::Result<Inspected> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_owned();
        std::thread::spawn(move || {
            let _ = tx.send(inspect(&path, &[], None, HASH_MAX));
        });
        rx.recv_timeout(Duration::from_secs(2))
            .expect("inspect must not wait on a file a user controls")
    }

    /// What a user can leave where the scan looks does not stall it: a
    /// FIFO (an open would wait for a writer), a huge sparse executable
    /// (hashing it would take years), a symbolic link swapped in for a
    /// listed file. A small executable is hashed as before.
    #[test]
    fn the_scan_does_not_wait_on_what_users_leave() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o777),
            0,
        )
        .unwrap();
        assert!(matches!(inspect_within(&fifo), Ok(Inspected::Skipped)));

        let huge = dir.path().join("huge");
        let f = std::fs::File::create(&huge).unwrap();
        // As large as the filesystem allows, and above the limit (8 EiB on
        // tmpfs; 16 TiB on ext4).
        let size = [i64::MAX as u64, 1 << 44, HASH_MAX + 1]
            .into_iter()
            .find(|s| f.set_len(*s).is_ok())
            .unwrap();
        assert!(size > HASH_MAX);
        f.set_permissions(std::fs::Permissions::from_mode(0o755))
            .unwrap();
        drop(f);
        assert!(matches!(inspect_within(&huge), Ok(Inspected::TooLarge)));

        let tool = dir.path().join("tool");
        std::fs::write(&tool, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        match inspect_within(&tool) {
            Ok(Inspected::Code(item)) => assert_eq!(item.0.size, 18),
            other => panic!("{other:?}"),
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&tool, &link).unwrap();
        let e = inspect_within(&link).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error()),
            "{e}"
        );
    }
}
