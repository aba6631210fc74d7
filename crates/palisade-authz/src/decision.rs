//! The answer: allow, or deny with a reason.
use std::fmt;

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Decision {
    /// The operation may proceed.
    Allow,
    /// The operation is refused, for this reason.
    Deny(DenyReason),
}

impl Decision {
    /// Whether the operation may proceed.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Why a request was refused.
///
/// When several reasons hold, the first in this list is reported: the
/// account's status, then the organization's conditions, then the target's
/// organization, then the grants. So a disabled admin learns nothing else,
/// and a request outside office hours says so whatever it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DenyReason {
    /// The admin account is disabled.
    AdminDisabled,
    /// The admin account is locked.
    AdminLocked,
    /// The organization requires MFA and this session has not verified it.
    MfaRequired,
    /// The organization restricts admins to trusted networks and the request
    /// comes from outside them.
    UntrustedNetwork,
    /// The organization restricts admins to office hours and it is outside them.
    OutsideOfficeHours,
    /// The target is not in the admin's organization. Says nothing about the
    /// target: the server should answer as it does for an object that does
    /// not exist.
    OtherOrganization,
    /// No grant of the admin allows this operation on this target.
    NoGrant,
    /// The policies could not be evaluated (an internal fault); refused
    /// rather than risk allowing.
    PolicyError,
}

impl DenyReason {
    /// Every reason, in reporting order.
    pub const ALL: [DenyReason; 8] = [
        DenyReason::AdminDisabled,
        DenyReason::AdminLocked,
        DenyReason::MfaRequired,
        DenyReason::UntrustedNetwork,
        DenyReason::OutsideOfficeHours,
        DenyReason::OtherOrganization,
        DenyReason::NoGrant,
        DenyReason::PolicyError,
    ];

    /// A stable machine-readable code. For the reasons decided by a Cedar
    /// `forbid` policy, it is that policy's id.
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::AdminDisabled => "admin-disabled",
            DenyReason::AdminLocked => "admin-locked",
            DenyReason::MfaRequired => "mfa-required",
            DenyReason::UntrustedNetwork => "untrusted-network",
            DenyReason::OutsideOfficeHours => "outside-office-hours",
            DenyReason::OtherOrganization => "other-organization",
            DenyReason::NoGrant => "no-grant",
            DenyReason::PolicyError => "policy-error",
        }
    }

    /// The reason whose [`code`](Self::code) is `code`.
    pub fn from_code(code: &str) -> Option<DenyReason> {
        DenyReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::AdminDisabled => "this admin account is disabled",
            DenyReason::AdminLocked => "this admin account is locked",
            DenyReason::MfaRequired => {
                "your organization requires multi-factor authentication; verify your second factor"
            }
            DenyReason::UntrustedNetwork => {
                "your organization allows admin access only from its trusted networks"
            }
            DenyReason::OutsideOfficeHours => {
                "your organization allows admin access only during office hours"
            }
            DenyReason::OtherOrganization => "no such object in your organization",
            DenyReason::NoGrant => "your roles do not allow this operation here",
            DenyReason::PolicyError => "authorization failed; the request was refused",
        })
    }
}
