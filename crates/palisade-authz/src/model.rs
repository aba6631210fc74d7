//! Who asks (admin, grants) and what the request touches (target).
use crate::conditions::{AccessContext, OrgConditions};
use crate::role::Role;
use palisade_core::{OrgId, PolicyId};
use std::fmt;

/// An admin account.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct AdminId(pub i64);

impl fmt::Display for AdminId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether an admin account may be used at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminStatus {
    /// The account works (its grants and the organization's conditions decide).
    Active,
    /// Switched off by an admin; refused everything.
    Disabled,
    /// Locked (for example after failed sign-ins); refused everything.
    Locked,
}

impl AdminStatus {
    /// The lower-case name (`active`, `disabled`, `locked`), as in Cedar's
    /// `principal.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminStatus::Active => "active",
            AdminStatus::Disabled => "disabled",
            AdminStatus::Locked => "locked",
        }
    }
}

/// The facts about the admin making a request, as loaded for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminFacts {
    /// The admin.
    pub id: AdminId,
    /// The organization the admin belongs to (one per admin).
    pub org: OrgId,
    /// Whether the account may be used.
    pub status: AdminStatus,
}

/// Where a grant applies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The admin's whole organization: every target in it.
    Org,
    /// One policy of the admin's organization: targets within that policy.
    Policy(PolicyId),
}

/// One role held by an admin at one scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// What the grant allows.
    pub role: Role,
    /// Where it allows it.
    pub scope: Scope,
}

/// What an operation touches, as far as authorization cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// An organization-level object: the organization itself, its admins,
    /// settings and custom roles, org-wide file states and rules, events
    /// listed across policies. Only organization-scoped grants reach it.
    Org(OrgId),
    /// One policy, or an object within it: the policy, a computer in it, a
    /// rule or file state applied to it, its events. Grants scoped to this
    /// policy or to the organization reach it.
    Policy {
        /// The organization the policy belongs to (from the database, not
        /// from the request).
        org: OrgId,
        /// The policy.
        policy: PolicyId,
    },
}

impl Target {
    /// The organization the target belongs to.
    pub fn org(&self) -> OrgId {
        match *self {
            Target::Org(org) | Target::Policy { org, .. } => org,
        }
    }
}

/// Everything about the caller that authorization needs, loaded for this
/// request: the admin, the admin's grants as they are now, the admin's
/// organization's conditions, and this request's facts.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The admin.
    pub admin: &'a AdminFacts,
    /// The admin's grants, read from the database for this request.
    pub grants: &'a [Grant],
    /// The conditional-access requirements of the admin's organization.
    pub conditions: &'a OrgConditions,
    /// This request's MFA state, address and time.
    pub context: &'a AccessContext,
}
