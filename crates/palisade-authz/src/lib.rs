//! Admin authorization (placeholder doc, written below).
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
