//! Palisade's wire types: what crosses HTTP between agents, the policy lookup
//! service and admin tools. JSON bodies, one module per audience.
//!
//! Architecture invariant: only data and (de)serialisation live here; no
//! transport, no storage. Values that have a core type (hashes, levels,
//! states, names) are deserialised straight into it, so a malformed field is
//! refused at the edge with a message naming it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod admin;
pub mod agent;
mod token;

pub use token::{EnrollToken, TokenError};

/// The JSON body of every error response (4xx and 5xx).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A human-readable message that says what was wrong.
    pub error: String,
    /// The request field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
