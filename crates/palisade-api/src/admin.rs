//! The admin API: spoken by the `palisade` CLI (and later the console) with a
//! bearer token (`Authorization: Bearer <token>`) over TLS. Every answer that
//! is not 2xx carries an [`crate::ErrorBody`].
//!
//! | method | path                                  | body                  | answer            |
//! |--------|---------------------------------------|-----------------------|-------------------|
//! | GET    | `/api/v1/health`  (no token)          |                       | [`Health`]        |
//! | GET    | `/api/v1/whoami`                      |                       | [`WhoAmI`]        |
//! | GET    | `/api/v1/files/{sha256}`              |                       | [`FileDetails`]   |
//! | PUT    | `/api/v1/files/{sha256}/state`        | [`SetFileState`]      | [`FileDetails`]   |
//! | GET    | `/api/v1/events?after&limit&wait_ms&computer&kind` |          | [`EventPage`]     |
//! | GET    | `/api/v1/computers`                   |                       | `[`[`ComputerInfo`]`]` |
//! | PUT    | `/api/v1/computers/{name}/policy`     | [`MoveComputer`]      | [`ComputerInfo`]  |
//! | POST   | `/api/v1/computers/{name}/revoke`     |                       | [`ComputerInfo`]  |
//! | GET    | `/api/v1/policies`                    |                       | `[`[`PolicyInfo`]`]` |
//! | POST   | `/api/v1/policies`                    | [`CreatePolicy`]      | [`PolicyInfo`]    |
//! | PUT    | `/api/v1/policies/{name}/levels`      | [`SetLevels`]         | [`PolicyInfo`]    |
//! | POST   | `/api/v1/enrollment-tokens`           | [`CreateEnrollToken`] | [`EnrollTokenCreated`] |
use palisade_core::{Approval, EventKind, FileEvent, FileState, Level, Levels, Name, Sha256};

/// Liveness answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// `"ok"`.
    pub status: String,
    /// Server version.
    pub version: String,
    /// Database kind: `sqlite` or `postgres`.
    pub database: String,
}

/// Who the token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WhoAmI {
    /// Admin name.
    pub admin: String,
    /// Organization name.
    pub organization: String,
}

/// Set a file's state at a scope: global when neither `policy` nor
/// `computer` is given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFileState {
    /// The new state.
    pub state: FileState,
    /// Limit to one policy.
    #[serde(default)]
    pub policy: Option<Name>,
    /// Limit to one computer (a local state).
    #[serde(default)]
    pub computer: Option<Name>,
    /// Where the admin's copy of the file is (recorded in the catalog).
    #[serde(default)]
    pub path: Option<String>,
}

/// Where a state applies, by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum ScopeRef {
    /// All computers.
    Global,
    /// One policy.
    Policy(String),
    /// One computer.
    Computer(String),
}

/// A file state as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateRecord {
    /// Where it applies.
    pub scope: ScopeRef,
    /// The state.
    pub state: FileState,
    /// When it was set (ms since epoch).
    pub updated_ms: i64,
    /// Who set it (admin name, or `scan:<computer>` for scan approvals).
    pub updated_by: String,
}

/// Where and how often a file was seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileInstance {
    /// Computer name.
    pub computer: String,
    /// Path on that computer.
    pub path: String,
    /// First report (ms since epoch).
    pub first_seen_ms: i64,
    /// Latest report.
    pub last_seen_ms: i64,
    /// Number of reports (lookups, inventory, events).
    pub count: i64,
}

/// The approval in force for a file on one computer, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EffectiveApproval {
    /// Computer name.
    pub computer: String,
    /// Its policy.
    pub policy: String,
    /// The approval.
    pub approval: Approval,
    /// Why, in one line.
    pub explanation: String,
}

/// Everything known about one hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDetails {
    /// The hash.
    pub sha256: Sha256,
    /// First time anyone reported it; `None` if never seen.
    pub first_seen_ms: Option<i64>,
    /// Where it was seen.
    pub instances: Vec<FileInstance>,
    /// Explicit states.
    pub states: Vec<StateRecord>,
    /// Its approval on every computer of the organization.
    pub effective: Vec<EffectiveApproval>,
}

/// An event as stored by the service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    /// Service-wide event id (increasing).
    pub id: i64,
    /// Reporting computer.
    pub computer: String,
    /// When the service received it (ms since epoch).
    pub received_ms: i64,
    /// The event as the agent reported it.
    pub event: FileEvent,
}

/// A page of events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventRecord>,
    /// Pass as `after` to get the next page (equals the request's `after` when empty).
    pub last_id: i64,
}

/// Filters for `GET /api/v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventQuery {
    /// Only events with an id greater than this.
    #[serde(default)]
    pub after: Option<i64>,
    /// Page size (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Long poll: when no event matches, wait up to this long (at most 30000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// Only this computer.
    #[serde(default)]
    pub computer: Option<String>,
    /// Only this kind.
    #[serde(default)]
    pub kind: Option<EventKind>,
}

/// An enrolled computer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComputerInfo {
    /// Name.
    pub name: String,
    /// Host name it enrolled with.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// Policy name.
    pub policy: String,
    /// The policy's levels.
    pub levels: Levels,
    /// Whether the agent holds a live stream to some server replica.
    pub connected: bool,
    /// Last contact (ms since epoch).
    pub last_seen_ms: Option<i64>,
    /// Certificate revoked: the agent is refused.
    pub revoked: bool,
    /// What the agent last said about itself.
    pub status: Option<crate::agent::AgentStatus>,
}

/// Move a computer to another policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveComputer {
    /// Destination policy.
    pub policy: Name,
}

/// A policy (security group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyInfo {
    /// Name.
    pub name: String,
    /// Levels.
    pub levels: Levels,
    /// Number of computers in it.
    pub computers: i64,
}

/// Create a policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// Name, unique in the organization.
    pub name: Name,
    /// Level while connected (default monitor).
    #[serde(default)]
    pub level: Option<Level>,
    /// Level while disconnected (default: same as `level`).
    #[serde(default)]
    pub disconnected_level: Option<Level>,
}

/// Change a policy's levels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLevels {
    /// Level while connected.
    pub level: Level,
    /// Level while disconnected; unchanged when absent.
    #[serde(default)]
    pub disconnected_level: Option<Level>,
}

/// Create an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollToken {
    /// Policy new computers join.
    pub policy: Name,
    /// How many enrollments it allows (default 1).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Lifetime in seconds (default 86400).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A created enrollment token (shown once).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollTokenCreated {
    /// The token's text form.
    pub token: String,
    /// Expiry (ms since epoch).
    pub expires_ms: i64,
}
