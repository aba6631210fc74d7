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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// A human-readable message that says what was wrong.
    pub error: String,
    /// The request field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn format_utc_ms(ms: i64) -> String {
    let secs = ms / 1000;
    let (d, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
