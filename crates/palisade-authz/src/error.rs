//! The crate's one error type: what went wrong while parsing or constructing
//! a permission, role, network or office-hours spec.
use std::fmt;

/// Why a value could not be parsed or constructed. [`Error::kind`] says
/// which rule was broken; `Display` says it in words, quoting the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The rule an input broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A permission is not of the form `resource:operation`.
    InvalidPermission,
    /// A permission names a resource type that does not exist.
    UnknownResource,
    /// A permission names an operation that does not exist.
    UnknownOperation,
    /// A role name is not a valid [`palisade_core::Name`].
    InvalidRoleName,
    /// A custom role uses the name of a built-in role.
    ReservedRoleName,
    /// A role has no permissions at all.
    EmptyRole,
    /// A built-in role was given permissions other than its fixed ones.
    BuiltinRoleChanged,
    /// A network is not an IPv4 or IPv6 address with an optional `/prefix`.
    InvalidNetwork,
    /// A network's prefix length is longer than its address (32 or 128).
    InvalidPrefix,
    /// A network has address bits set after its prefix (`10.0.0.1/8`).
    HostBitsSet,
    /// An office-hours spec is not `DAYS HH:MM-HH:MM [±HH:MM]`.
    InvalidOfficeHours,
    /// An office-hours day list names an unknown day or is empty.
    InvalidDays,
    /// An office-hours time is not `HH:MM` between 00:00 and 24:00.
    InvalidTime,
    /// An office-hours window starts when it ends, so it is empty or ambiguous.
    EmptyWindow,
    /// An office-hours UTC offset is not `±HH:MM` within ±14:00.
    InvalidUtcOffset,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Which rule the input broke.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// At most 80 characters of hostile input, for an error message.
pub(crate) fn quote(s: &str) -> String {
    let clipped: String = s.chars().take(80).collect();
    format!("{clipped:?}")
}
