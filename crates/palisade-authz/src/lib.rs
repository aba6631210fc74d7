//! Admin authorization: who may do what, where, and under which conditions.
//!
//! Every admin API call is decided here, against the admin's grants *as the
//! server loaded them for this request*. The crate is pure: no I/O, no
//! clock (the time comes in [`AccessContext`]), no async, and nothing from
//! one call survives into the next.
//!
//! # The model
//!
//! An organization holds policies (security groups), which hold computers.
//! An admin belongs to one organization and holds [`Grant`]s: a [`Role`] at
//! a [`Scope`], either the whole organization or one policy. A role is a
//! [`PermissionSet`]: [`Op`]s (create, read, update, delete) on
//! [`Resource`] types (files, rules, computers, policies, events, admins,
//! settings), written `files:update`.
//!
//! A request names a [`Permission`] and a [`Target`]: an organization-level
//! object (the organization, its admins, settings, org-wide file states...)
//! or one policy (the policy, a computer in it, a rule applied to it...). An
//! organization grant reaches every target in the organization; a policy
//! grant reaches only targets within its policy, never organization-level
//! ones. A target in another organization is always refused.
//!
//! ## Built-in roles
//!
//! | role             | files | rules | computers | policies | events | admins | settings |
//! |------------------|-------|-------|-----------|----------|--------|--------|----------|
//! | `owner`          | CRUD  | CRUD  | CRUD      | CRUD     | CRUD   | CRUD   | CRUD     |
//! | `security-admin` | CRUD  | CRUD  | CRUD      | CRUD     | CRUD   | R      | R        |
//! | `approver`       | RU    | R     | R         | R        | R      |        |          |
//! | `auditor`        | R     | R     | R         | R        | R      | R      | R        |
//!
//! `security-admin` runs the security work but cannot change who has access
//! or the organization's settings (including conditional access and custom
//! roles); `approver` reads what it needs to judge a file and changes only
//! file states (approve, ban); `auditor` reads everything and changes
//! nothing. Custom roles ([`Role::custom`]) are any non-empty permission
//! set under a name that is not a built-in one.
//!
//! # How Cedar decides
//!
//! [`Authorizer`] evaluates each request with [Cedar](https://www.cedarpolicy.com)
//! (`cedar-policy`): one `is_authorized` call over a fixed set of policies,
//! with entities and context built from the caller's live data. The admin's
//! status, grants and organization conditions are the server's to load for
//! every request ([`Caller`]); this crate never sees a database. The schema
//! is [`Authorizer::schema_source`], the policies
//! [`Authorizer::policies_source`].
//!
//! **Entities**, built for each request from what the server loaded:
//!
//! - `Admin::"<id>"`, with attributes `status` (`"active"`, `"disabled"`,
//!   `"locked"`) and `org`, and **its grants as tags**: one tag per scope
//!   the admin holds grants at, keyed `org:<id>` or `policy:<id>`, whose
//!   value is the action group of the permissions held there
//!   (`Action::"perms:<hex>"`: the union of the roles granted at that
//!   scope, named by its bits).
//! - The target: `Org::"<id>"`, or `Policy::"<id>"` whose parent is its
//!   `Org`, with attributes `scope` (its own key) and `org_scope` (its
//!   organization's key): the two scopes whose grants reach it.
//! - The requested action, `Action::"files:update"` (one action per
//!   [`Permission`], plus `Action::"sign-in"`), as a member of each of the
//!   request's action groups that include it. So a role, built-in or
//!   custom, is an action group; it exists only as the data of the requests
//!   that use it, and nothing is compiled when one is created or edited.
//!
//! **Context**, computed in Rust for each request: for each condition of
//! the organization, whether it is required and whether this request meets
//! it: `mfa_required`/`mfa_verified`, `network_restricted`/
//! `from_trusted_network`, `hours_restricted`/`in_office_hours`.
//!
//! **Policies**, parsed and validated against the schema once, in
//! [`Authorizer::new`]. The grants are decided by one permit:
//!
//! ```text
//! @id("grants")
//! permit (principal, action, resource) when {
//!   (principal.hasTag(resource.scope) && action in principal.getTag(resource.scope)) ||
//!   (principal.hasTag(resource.org_scope) && action in principal.getTag(resource.org_scope))
//! };
//! ```
//!
//! that is: the admin holds, at the target's policy or at its organization,
//! a group that includes the action. Cedar does the join (which group is
//! held where, and whether the action is in it). Everything else is a
//! `forbid` whose policy id is the [`DenyReason::code`] it reports:
//! `admin-disabled`, `admin-locked`, `mfa-required`, `untrusted-network`,
//! `outside-office-hours`, `other-organization` (`unless { resource in
//! principal.org }`); and `sign-in` permits signing in. (A request is
//! evaluated against all of them but the permit it cannot match: sign-in
//! without `grants`, everything else without `sign-in`.) Cedar's answer names
//! the forbids that hold whether or not a permit also holds, so a request
//! that no grant allows still says "MFA required" when it is; a deny naming
//! no forbid is [`DenyReason::NoGrant`]. When several reasons hold, the
//! first in [`DenyReason`]'s order is reported. A policy that fails to
//! evaluate refuses the request ([`DenyReason::PolicyError`]): Cedar skips
//! an erroring policy, and a skipped forbid must not become an allow.
//!
//! *Why not a template per role, linked per grant* (the textbook Cedar
//! RBAC shape)? It was built first and measured (`docs/authz-benchmark.md`):
//! 122 µs median per request against 27 µs for this design, on the same
//! benchmark and machine. Cedar evaluates `action in [...]` by building a
//! set value every time, and linking ten grants into a fresh policy set
//! costs about 2 µs a link. A middle version, one policy per (role, scope)
//! compiled on first use and kept in a bounded store, measured 56 µs. Here
//! the policy set never changes and the grants travel as data. The one
//! thing Rust works out that Cedar then reads as data is which groups an
//! action belongs to: that is the definition of the role, as `Policy::"7"`
//! being in `Org::"1"` is the definition of the policy.
//!
//! # Why no grant is cached across requests
//!
//! The server reads the admin's status and organization conditions from the
//! database for every request, with the stamps that tell it whether the
//! grants (with their roles' permissions) it read before are still current,
//! and hands them to [`Authorizer::authorize`] in a [`Caller`]. Only the
//! target's scope and its organization's reach the Cedar entities (entity
//! slicing: the policies read the admin's tags nowhere else).
//!
//! The [`Authorizer`] keeps the schema-checked policies, a few names, and a
//! memo of Cedar's answers by *shape*: the admin's status, whether the
//! target is in the admin's organization, the permissions held at the
//! target's policy and at its organization, the action and the
//! conditional-access facts, with every id taken out. That is everything
//! the policies read, so every request of one shape gets the same answer;
//! the memo holds answers, never an admin's grants or status. A revoked
//! grant, an edited custom role, a disabled account or a tightened
//! condition changes the request's shape, and takes effect on the very
//! next request. A test compares the memo with a fresh Cedar evaluation on
//! random requests, and the integration tests compare decisions with a
//! plain model of the rules.
//!
//! # Conditional access
//!
//! [`OrgConditions`]: require MFA; restrict admins to trusted networks
//! ([`IpNet`], IPv4 and IPv6; an IPv4-mapped IPv6 address counts as IPv4);
//! restrict them to office hours ([`OfficeHours`], `mon-fri 08:00-18:00
//! +01:00`, a fixed UTC offset; a window that crosses midnight belongs to
//! the day it starts on). Empty conditions require nothing. The same forbids
//! apply to signing in ([`Authorizer::sign_in`], the `sign-in` action), so a
//! login is refused with the same reasons before a session exists.
//!
//! # Example
//!
//! ```
//! use palisade_authz::*;
//! use palisade_core::{OrgId, PolicyId};
//!
//! let authz = Authorizer::new(); // once, at start
//!
//! // Per request, from the database and the connection:
//! let admin = AdminFacts { id: AdminId(42), org: OrgId(1), status: AdminStatus::Active };
//! let grants = [Grant { role: Role::builtin("approver").unwrap(), scope: Scope::Policy(PolicyId(7)) }];
//! let conditions = OrgConditions { require_mfa: true, ..Default::default() };
//! let context = AccessContext {
//!     mfa_verified: true,
//!     source_ip: "192.0.2.1".parse().unwrap(),
//!     now_unix_ms: 1_795_435_200_000,
//! };
//! let caller = Caller { admin: &admin, grants: &grants, conditions: &conditions, context: &context };
//!
//! let in_p7 = Target::Policy { org: OrgId(1), policy: PolicyId(7) };
//! let ban = Permission::new(Resource::Files, Op::Update);
//! assert_eq!(authz.authorize(&caller, ban, in_p7), Decision::Allow);
//! assert_eq!(
//!     authz.authorize(&caller, ban, Target::Org(OrgId(1))),
//!     Decision::Deny(DenyReason::NoGrant)
//! );
//! // What the console may show on policy 7:
//! assert_eq!(authz.allowed(&caller, in_p7).to_string(),
//!            "files:read,files:update,rules:read,computers:read,policies:read,events:read");
//! ```
//!
//! # Cost
//!
//! One [`Authorizer::authorize`] with ten grants costs about 27 µs (median,
//! on a busy two-core VM), almost all of it inside Cedar: building the
//! entities (about 1.5 µs per hierarchy edge) and evaluating seven
//! policies. [`Authorizer::allowed`] costs about 28 of those.
//! `docs/authz-benchmark.md` has the figures and `benches/authorize.rs` the
//! benchmark.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod authorizer;
mod conditions;
mod decision;
mod error;
mod model;
mod permission;
mod role;

pub use authorizer::Authorizer;
pub use conditions::{AccessContext, IpNet, OfficeHours, OrgConditions, Weekday, Weekdays};
pub use decision::{Decision, DenyReason};
pub use error::{Error, ErrorKind};
pub use model::{AdminFacts, AdminId, AdminStatus, Caller, Grant, Scope, Target};
pub use permission::{Op, Permission, PermissionSet, Resource};
pub use role::{builtin_roles, Role, BUILTIN_ROLE_NAMES};
