//! The crate's one error type.

use std::borrow::Cow;
use std::fmt;
use std::io;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is, for callers that react differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The running kernel lacks the facility: fanotify permission events
    /// (`CONFIG_FANOTIFY_ACCESS_PERMISSIONS`), kernel BTF, or an active BPF LSM
    /// (`bpf` missing from the `lsm=` list).
    Unsupported,
    /// The caller lacks a privilege the operation needs (`CAP_SYS_ADMIN` for
    /// fanotify, `CAP_BPF` + `CAP_MAC_ADMIN` or root for the guard).
    PermissionDenied,
    /// A path the operation names does not exist.
    NotFound,
    /// A fanotify response named an fd that is not a pending permission event
    /// of this group: it was already answered, or never was one.
    NotPending,
    /// An argument was rejected, by this crate or by the kernel (`EINVAL`).
    InvalidInput,
    /// A kernel table is full: the guard's `allowed` map, or a fanotify limit.
    CapacityExceeded,
    /// Loading, verifying or attaching the BPF program failed for a reason
    /// other than the ones above (the message carries aya's explanation).
    Bpf,
    /// Any other system call failure; [`Error::raw_os_error`] tells which.
    Io,
}

/// A failed kernel operation: which operation, what kind of failure, and the
/// errno when the kernel gave one.
pub struct Error {
    kind: ErrorKind,
    op: Cow<'static, str>,
    errno: Option<i32>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    hint: Option<Cow<'static, str>>,
}

impl Error {
    /// An error of `kind` while doing `op`, without an errno.
    pub(crate) fn new(kind: ErrorKind, op: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            op: op.into(),
            errno: None,
            source: None,
            hint: None,
        }
    }

    /// The error of a system call that failed with `errno`, classified by
    /// errno.
    pub(crate) fn from_errno(op: impl Into<Cow<'static, str>>, errno: i32) -> Self {
        let kind = match errno {
            libc::EPERM | libc::EACCES => ErrorKind::PermissionDenied,
            libc::ENOENT => ErrorKind::NotFound,
            libc::EINVAL => ErrorKind::InvalidInput,
            libc::ENOSPC | libc::E2BIG | libc::EMFILE | libc::ENFILE => ErrorKind::CapacityExceeded,
            libc::ENOSYS | libc::EOPNOTSUPP => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        };
        Error {
            kind,
            op: op.into(),
            errno: Some(errno),
            source: None,
            hint: None,
        }
    }

    /// The error of the system call that just failed, from `errno`.
    pub(crate) fn last_os_error(op: impl Into<Cow<'static, str>>) -> Self {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Error::from_errno(op, errno)
    }

    /// Replaces the kind (the errno-based guess is not always right).
    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Attaches the underlying error (aya's, for the guard).
    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Adds an explanation of the cause or the remedy, shown last.
    pub(crate) fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed, e.g. `fanotify_mark(FAN_MARK_ADD|FAN_MARK_FILESYSTEM, "/srv")`.
    pub fn operation(&self) -> &str {
        &self.op
    }

    /// The errno the kernel returned, when there was one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.op)?;
        if let Some(errno) = self.errno {
            write!(f, ": {}", io::Error::from_raw_os_error(errno))?;
        }
        if let Some(source) = &self.source {
            // aya nests the errno one or two levels down; show the chain,
            // minus the OS error already printed above.
            let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(cause) = next {
                let same_errno = self.errno.is_some()
                    && cause
                        .downcast_ref::<io::Error>()
                        .and_then(io::Error::raw_os_error)
                        == self.errno;
                let text = cause.to_string();
                if !same_errno && !text.is_empty() {
                    write!(f, ": {}", text.trim_end_matches([':', ' ']))?;
                }
                next = cause.source();
            }
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("op", &self.op)
            .field("errno", &self.errno)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .field("hint", &self.hint)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        match err.errno {
            Some(errno) => io::Error::new(io::Error::from_raw_os_error(errno).kind(), err),
            None => io::Error::other(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_and_errno() {
        let err = Error::from_errno("fanotify_init(FAN_CLASS_CONTENT)", libc::EPERM);
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let text = err.to_string();
        assert!(
            text.starts_with("fanotify_init(FAN_CLASS_CONTENT) failed: "),
            "{text}"
        );
        assert!(text.contains("os error 1"), "{text}");
    }

    #[test]
    fn errno_classification() {
        let check = |errno, kind| assert_eq!(Error::from_errno("op", errno).kind(), kind);
        check(libc::EACCES, ErrorKind::PermissionDenied);
        check(libc::ENOENT, ErrorKind::NotFound);
        check(libc::EINVAL, ErrorKind::InvalidInput);
        check(libc::E2BIG, ErrorKind::CapacityExceeded);
        check(libc::ENOSYS, ErrorKind::Unsupported);
        check(libc::EIO, ErrorKind::Io);
    }

    #[test]
    fn error_is_send_sync() {
        fn assert<T: Send + Sync + std::error::Error + 'static>() {}
        assert::<Error>();
    }
}
