//! Palisade's pure core.
//!
//! Everything here is a value or a pure function: content identities
//! ([`Sha256`]), the approval model ([`FileState`], [`Scope`], [`Approval`]),
//! enforcement levels ([`Level`]), the decision a policy enforcement point
//! takes for one load of code ([`decide`]), the process context that travels
//! with each request ([`ProcessContext`]) and file-content classification
//! ([`FileKind`]), and answer-time histograms ([`latency`]).
//!
//! Architecture invariant: this crate knows nothing of fanotify, BPF, HTTP,
//! SQL, files, clocks or threads. It cannot fail on I/O, so the agent and the
//! server can call it anywhere, including on the kernel decision path.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod approval;
mod context;
mod decision;
mod event;
mod filekind;
mod ids;
pub mod latency;
mod level;
mod pattern;
pub mod rules;
#[cfg(feature = "schema")]
mod schema;
mod sha256;

pub use approval::{
    combine_global, global_state, resolve, Approval, ApprovalSource, FileState, GlobalState,
    LocalState, Scope, ScopeKind, ScopedState,
};
pub use context::{Ancestor, Executable, ProcessContext};
pub use decision::{decide, on_timeout, Decision, Operation, Report, Verdict};
pub use event::{EventKind, FileEvent};
pub use filekind::{classify, FileKind, CLASSIFY_HEADER_LEN};
pub use ids::{ComputerId, Name, NameError, OrgId, PolicyId};
pub use level::{Level, Levels, ParseLevelError, LEVEL_NAMES};
pub use pattern::{ancestor_dirs, PathPattern, PatternError};
pub use sha256::{ParseSha256Error, Sha256};
