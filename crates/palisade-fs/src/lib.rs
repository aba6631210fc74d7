//! Files that hold secrets, for the server and the agent alike: the
//! server's SQLite database holds the CA's private key, TOTP secrets and
//! token hashes; the agent's databases say what runs, by whom.
//!
//! Architecture invariant: local files only, std only; no policy. It is a
//! crate of its own because both the server and the agent need it and
//! neither depends on the other, while `palisade-core`, which both do
//! depend on, knows nothing of files.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Whether [`private_database`] creates a missing database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Create it empty, 0600, before SQLite opens it (SQLite would make it
    /// with the umask's permissions, 0644 usually).
    Create,
    /// Leave it missing: whoever opens it refuses a missing database.
    Leave,
}

/// Make the SQLite database at `path` its owner's alone: created 0600 when
/// missing and `missing` says so, and group and others' permissions taken
/// from it and its `-wal` and `-shm` files if they have any (files of older
/// versions, made with the umask's 0644). SQLite creates a database's
/// `-wal` and `-shm` with the database file's own permissions, so they
/// follow from then on. Links are not followed: a symbolic link at any of
/// these paths is left as it is.
pub fn private_database(path: &Path, missing: Missing) -> std::io::Result<()> {
    if missing == Missing::Create {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_file() && m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_database_is_created_private_and_old_files_are_made_so() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        private_database(&db, Missing::Leave).unwrap();
        assert!(!db.exists(), "left missing");
        private_database(&db, Missing::Create).unwrap();
        assert_eq!(mode(&db), 0o600);
        for name in ["a.db", "a.db-wal", "a.db-shm"] {
            let p = dir.path().join(name);
            std::fs::write(&p, b"").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        private_database(&db, Missing::Leave).unwrap();
        for name in ["a.db", "a.db-wal", "a.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
    }
}
