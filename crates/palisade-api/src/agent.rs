//! The agent API: spoken by enrolled agents over mutual TLS, their client
//! certificate identifying the computer. Only `GET /agent/v1/ca` and
//! `POST /agent/v1/enroll` are reachable without a client certificate.
//!
//! | method | path                       | body               | answer               |
//! |--------|----------------------------|--------------------|----------------------|
//! | GET    | `/agent/v1/ca`             |                    | the service CA certificate, PEM (`application/x-pem-file`); check its DER SHA-256 against the token's fingerprint before trusting it |
//! | POST   | `/agent/v1/enroll`         | [`EnrollRequest`]  | [`EnrollResponse`]   |
//! | POST   | `/agent/v1/renew`          | [`RenewRequest`]   | [`RenewResponse`]    |
//! | GET    | `/agent/v1/config`         |                    | [`AgentConfig`]      |
//! | POST   | `/agent/v1/lookup`         | [`LookupRequest`]  | [`LookupResponse`]   |
//! | GET    | `/agent/v1/changes?since=R`|                    | [`Changes`]          |
//! | GET    | `/agent/v1/stream`         |                    | NDJSON [`StreamMessage`]s |
//! | POST   | `/agent/v1/events`         | [`EventBatch`]     | [`EventAck`]         |
//! | POST   | `/agent/v1/inventory`      | [`InventoryRequest`] | [`InventoryResponse`] |
//! | POST   | `/agent/v1/status`         | [`AgentStatus`]    | 204                  |
//! | POST   | `/agent/v1/approvals`      | [`LocalApprovals`] | [`LocalApprovalsAck`] |
//! | POST   | `/agent/v1/requests`       | [`NewApprovalRequest`] | [`ApprovalRequestCreated`] |
//! | POST   | `/agent/v1/removed`        | [`Removed`]        | [`RemovedAck`]       |
//!
//! Revisions: every change the service makes to file states or policies gets
//! a revision number, increasing over the whole database. Answers carry the
//! revision they were computed at; an agent that reconnects asks for the
//! changes since the last revision it saw.
use palisade_core::rules::{PublisherFact, RuleId, RuleSet};
use palisade_core::{
    Approval, ComputerId, FileEvent, FileKind, Levels, Operation, ProcessContext, Sha256,
};

/// Enroll a new computer with a one-time token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnrollRequest {
    /// The enrollment token's text form (see [`crate::EnrollToken`]).
    pub token: String,
    /// The computer's host name (becomes its name, made unique).
    pub hostname: String,
    /// Operating system description (`PRETTY_NAME` of os-release).
    pub os: String,
    /// Agent version.
    pub agent_version: String,
    /// PEM certificate signing request for the agent's own key pair.
    pub csr_pem: String,
}

/// The service's answer to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnrollResponse {
    /// The new computer's id.
    pub computer_id: ComputerId,
    /// The unique name given to the computer.
    pub computer: String,
    /// The agent's client certificate, signed by the service CA (PEM).
    pub certificate_pem: String,
    /// The service CA certificate (PEM); its DER SHA-256 equals the token's fingerprint.
    pub ca_pem: String,
}

/// Renew the calling computer's client certificate before it expires
/// (authenticated by the certificate it has). The new certificate is valid
/// beside the old one until the agent first uses it; from then on only the
/// new one is. An agent that lost the answer keeps using the old one and
/// asks again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RenewRequest {
    /// A PKCS#10 request (PEM) for a new key; only its public key is used.
    pub csr_pem: String,
}

/// The service's answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RenewResponse {
    /// The new client certificate, signed by the service CA (PEM).
    pub certificate_pem: String,
}

/// What an agent needs to enforce: who it is and at which levels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentConfig {
    /// This computer.
    pub computer_id: ComputerId,
    /// Its name.
    pub computer: String,
    /// Organization name.
    pub organization: String,
    /// The policy the computer is in.
    pub policy: String,
    /// Enforcement levels of that policy.
    pub levels: Levels,
    /// Revision at which this configuration was read.
    pub revision: i64,
    /// The rules that apply to this computer: its policy's and the global
    /// ones, custom rules in rank order, publisher states resolved for the
    /// policy.
    #[serde(default)]
    pub rules: RuleSet,
    /// Increased each time an admin raises the policy's level asking that
    /// what the computers already have be approved locally: an agent that
    /// sees a new value approves its existing files (a scan) before
    /// enforcing at the new level.
    #[serde(default)]
    pub approve_existing_epoch: i64,
}

/// Ask for the approval of a batch of files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LookupRequest {
    /// The files, at most [`LOOKUP_BATCH_MAX`].
    pub files: Vec<LookupItem>,
}

/// The largest batch a lookup may carry.
pub const LOOKUP_BATCH_MAX: usize = 1024;

/// One file to look up, with the request's context (recorded in the file catalog).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LookupItem {
    /// Content hash.
    pub sha256: Sha256,
    /// Where the agent saw it.
    #[serde(default)]
    pub path: Option<String>,
    /// How it is being loaded.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// Who is loading it.
    #[serde(default)]
    pub process: Option<ProcessContext>,
    /// The package and publisher the agent established for it.
    #[serde(default)]
    pub publisher: Option<PublisherFact>,
}

/// Approvals for a batch, in request order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LookupResponse {
    /// Revision the answers were computed at (read before the states, so an
    /// answer reflects every change up to its revision, and possibly later ones).
    pub revision: i64,
    /// One result per requested file, same order.
    pub results: Vec<LookupResult>,
}

/// The approval of one file for the asking computer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LookupResult {
    /// The hash asked about.
    pub sha256: Sha256,
    /// Its approval on this computer (file states).
    pub approval: Approval,
    /// Its reputation trust rating, 0..=10, when known.
    #[serde(default)]
    pub trust: Option<u8>,
}

/// What changed since a revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Changes {
    /// The latest revision included.
    pub revision: i64,
    /// Hashes whose approval may have changed for this computer.
    pub hashes: Vec<Sha256>,
    /// The agent's configuration (policy, levels) changed: fetch it again.
    pub config_changed: bool,
    /// The change log no longer reaches back to the asked revision (or
    /// something broad changed): drop every cached approval.
    pub reset: bool,
}

/// One line of the `/agent/v1/stream` NDJSON stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[allow(
    clippy::large_enum_variant,
    reason = "one Hello per stream; boxing would only complicate (de)serialisation"
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamMessage {
    /// First message: the current revision and configuration.
    Hello {
        /// Current revision.
        revision: i64,
        /// Current configuration.
        config: AgentConfig,
    },
    /// Something relevant changed.
    Changed(Changes),
    /// Nothing changed; sent every few seconds so both ends notice a dead link.
    Heartbeat {
        /// Current revision.
        revision: i64,
    },
}

/// Seconds between heartbeats on the stream; an agent that hears nothing for
/// three intervals considers the link dead.
pub const HEARTBEAT_SECS: u64 = 5;

/// Events uploaded by an agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventBatch {
    /// At most [`EVENT_BATCH_MAX`] events.
    pub events: Vec<AgentEvent>,
}

/// The largest event batch.
pub const EVENT_BATCH_MAX: usize = 500;

/// An event with the agent's own sequence number, so a batch re-sent after a
/// lost answer is stored once: the service takes an event whose sequence
/// number and time (`event.time_ms`) it has stored for the computer for a
/// retry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentEvent {
    /// Agent-local sequence number, unique per computer (with the event's
    /// time: a spool rebuilt on the agent may number afresh).
    pub seq: u64,
    /// The event.
    pub event: FileEvent,
}

/// Acknowledgement of an event batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventAck {
    /// Events newly stored (duplicates are acknowledged but not counted).
    pub stored: u64,
}

/// Files found by the initialization scan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InventoryRequest {
    /// At most [`INVENTORY_BATCH_MAX`] files.
    pub files: Vec<InventoryItem>,
    /// Approve each file locally on this computer (bulk approval).
    pub approve_locally: bool,
}

/// The largest inventory batch.
pub const INVENTORY_BATCH_MAX: usize = 2000;

/// One file found by the scan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InventoryItem {
    /// Content hash.
    pub sha256: Sha256,
    /// Where it was found.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: FileKind,
    /// The package and publisher the agent established for it.
    #[serde(default)]
    pub publisher: Option<PublisherFact>,
}

/// The service's answer to an inventory batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InventoryResponse {
    /// Hashes the catalog had never seen before.
    pub new_hashes: u64,
    /// Local approvals created.
    pub approved: u64,
    /// Revision after the batch.
    pub revision: i64,
}

/// What the agent reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentStatus {
    /// Agent version.
    pub agent_version: String,
    /// The level the agent is applying right now.
    pub level_in_force: palisade_core::Level,
    /// Whether permission events are being received and answered.
    pub enforcing: bool,
    /// Whether the BPF LSM guard (library and memory-execution control) is active.
    pub guard_active: bool,
    /// Mount points of the watched filesystems.
    pub watched: Vec<String>,
    /// How long the agent took to answer permission events since it
    /// started (empty from agents older than this field). The service
    /// refuses a report whose histograms are malformed.
    #[serde(default)]
    pub latency: palisade_core::latency::LatencySnapshot,
    /// The answers since the agent's previous report (none in its first
    /// report after starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<LatencyWindow>,
    /// Events that will not reach the service (zero from agents older than
    /// this field).
    #[serde(default)]
    pub event_losses: EventLosses,
}

/// Events an agent recorded that will not reach the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventLosses {
    /// Dropped because the agent's event queue was full (since it started).
    pub dropped: u64,
    /// Refused by the service as content and kept on the computer, in
    /// `events-refused.jsonl` beside the event spool.
    pub set_aside: u64,
}

impl EventLosses {
    /// Whether any event was lost.
    pub fn any(&self) -> bool {
        self.dropped > 0 || self.set_aside > 0
    }
}

/// Answer times over the window that ends at a status report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LatencyWindow {
    /// The window's length in seconds: since the previous report.
    pub secs: u64,
    /// The answers given in it.
    pub latency: palisade_core::latency::LatencySnapshot,
}

/// Approvals made on the computer by trusted change (updaters, trusted users,
/// trusted directories, approving custom rules) or by approving what a
/// computer has when its level is raised.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LocalApprovals {
    /// At most [`INVENTORY_BATCH_MAX`] approvals.
    pub items: Vec<LocalApproval>,
}

/// One approval made on the computer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LocalApproval {
    /// The file's hash.
    pub sha256: Sha256,
    /// Where it was written.
    pub path: String,
    /// Why it is approved.
    pub origin: ApprovalOrigin,
    /// The process that wrote it.
    #[serde(default)]
    pub process: Option<ProcessContext>,
}

/// Why a file was approved on a computer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum ApprovalOrigin {
    /// Written by an approved updater (local approval).
    Updater {
        /// The rule.
        rule: RuleId,
        /// The updater's name.
        name: String,
    },
    /// Written by a trusted user or group (local approval).
    TrustedUser {
        /// The rule.
        rule: RuleId,
        /// The user or group.
        user: String,
    },
    /// Placed in a trusted directory (approval for every computer the rule
    /// applies to: all, or those of the policies it is limited to).
    TrustedDirectory {
        /// The rule.
        rule: RuleId,
        /// The directory.
        dir: String,
    },
    /// Written by a process an `approve` custom rule promotes (local approval).
    CustomRule {
        /// The rule.
        rule: RuleId,
    },
    /// Already on the computer when its level was raised (local approval).
    LevelChange,
}

/// The service's answer to [`LocalApprovals`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LocalApprovalsAck {
    /// Approvals recorded (existing ones included).
    pub approved: u64,
    /// Revision after the batch.
    pub revision: i64,
}

/// A user asks for a blocked file to be approved (prompt level).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NewApprovalRequest {
    /// The file's hash.
    pub sha256: Sha256,
    /// Its path.
    pub path: String,
    /// The requesting user (name).
    pub user: String,
    /// Why they need it.
    #[serde(default)]
    pub reason: String,
    /// The process that was blocked, when known.
    #[serde(default)]
    pub process: Option<ProcessContext>,
}

/// The id of a created request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApprovalRequestCreated {
    /// Request id.
    pub id: i64,
}

/// Files gone from the computer (deleted, or moved away from the path where
/// they were seen): their instances' local state becomes `deleted`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Removed {
    /// At most [`INVENTORY_BATCH_MAX`] paths.
    pub items: Vec<RemovedPath>,
}

/// One removed path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RemovedPath {
    /// Absolute path.
    pub path: String,
    /// A directory was moved away: everything seen under it is gone from
    /// where it was seen.
    #[serde(default)]
    pub dir: bool,
    /// When (ms since the epoch). A sighting after this revives the instance.
    pub at_ms: i64,
}

/// The answer to [`Removed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RemovedAck {
    /// Instances marked deleted.
    pub instances: u64,
}
