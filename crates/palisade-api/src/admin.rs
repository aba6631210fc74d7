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
//! | GET    | `/api/v1/enrollment-tokens`           |                       | `[`[`EnrollTokenInfo`]`]` |
//! | DELETE | `/api/v1/enrollment-tokens/{id}`      |                       | 204               |
//! | GET    | `/api/v1/publishers`                  |                       | `[`[`PublisherInfo`]`]` |
//! | PUT    | `/api/v1/publishers/{name}/state`     | [`SetPublisherState`] | [`PublisherInfo`] |
//! | PUT    | `/api/v1/publishers/{name}/trust`     | [`SetPublisherTrust`] | [`PublisherInfo`] |
//! | POST   | `/api/v1/reputation`                  | [`ReputationBatch`]   | [`ReputationImported`] |
//! | GET    | `/api/v1/rules`                       |                       | `[`[`RuleRecord`]`]` |
//! | POST   | `/api/v1/rules`                       | [`CreateRule`]        | [`RuleRecord`]    |
//! | DELETE | `/api/v1/rules/{id}`                  |                       | 204               |
//! | GET    | `/api/v1/bundles`                     |                       | `[`[`BundleInfo`]`]` |
//! | PUT    | `/api/v1/bundles/{name}`              | [`SetBundle`]         | [`BundleInfo`]    |
//! | GET    | `/api/v1/requests?status&before&limit` |                      | `[`[`ApprovalRequestInfo`]`]`, newest first |
//! | POST   | `/api/v1/requests/{id}/grant`         | [`DecideRequest`]     | [`ApprovalRequestInfo`] |
//! | POST   | `/api/v1/requests/{id}/deny`          | [`DecideRequest`]     | [`ApprovalRequestInfo`] |
use palisade_core::rules::{
    Conditions, CustomRule, FolderProtection, Operations, ProcessMatch, PublisherFact,
    PublisherTrust, ReputationRule, RuleAction, RuleId, UserMatch,
};
use palisade_core::{
    Approval, EventKind, FileEvent, FileState, GlobalState, Level, Levels, Name, Operation,
    PathPattern, Sha256,
};

/// Liveness answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WhoAmI {
    /// Admin name.
    pub admin: String,
    /// Organization name.
    pub organization: String,
}

/// Set a file's state at a scope: global when neither `policy` nor
/// `computer` is given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// The instance's local state on that computer.
    pub local_state: palisade_core::LocalState,
    /// When the agent reported it gone from that path, if it is.
    #[serde(default)]
    pub deleted_ms: Option<i64>,
}

/// The approval in force for a file on one computer, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// Its state across the organization (file and publisher states).
    #[serde(default = "unapproved")]
    pub global_state: GlobalState,
    /// Its reputation trust rating, 0..=10, when known.
    #[serde(default)]
    pub trust: Option<u8>,
    /// Where its reputation came from.
    #[serde(default)]
    pub trust_source: Option<String>,
    /// Packages (and publishers) agents attributed it to.
    #[serde(default)]
    pub publishers: Vec<PublisherFact>,
}

fn unapproved() -> GlobalState {
    GlobalState::Unapproved
}

/// An event as stored by the service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventRecord>,
    /// Pass as `after` to get the next page (equals the request's `after` when empty).
    pub last_id: i64,
}

/// Filters for `GET /api/v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// Last contact (ms since epoch): now while connected.
    pub last_seen_ms: Option<i64>,
    /// Certificate revoked: the agent is refused.
    pub revoked: bool,
    /// What the agent last said about itself.
    pub status: Option<crate::agent::AgentStatus>,
}

impl ComputerInfo {
    /// The agent's answer times since it started, as last reported.
    pub fn latency(&self) -> Option<&palisade_core::latency::LatencySnapshot> {
        self.status.as_ref().map(|s| &s.latency)
    }

    /// The agent's answer times in the window before its last report.
    pub fn recent_latency(&self) -> Option<&palisade_core::latency::LatencySnapshot> {
        self.status
            .as_ref()
            .and_then(|s| s.recent.as_ref())
            .map(|w| &w.latency)
    }
}

/// Move a computer to another policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MoveComputer {
    /// Destination policy.
    pub policy: Name,
}

/// A policy (security group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetLevels {
    /// Level while connected.
    pub level: Level,
    /// Level while disconnected; unchanged when absent.
    #[serde(default)]
    pub disconnected_level: Option<Level>,
    /// Approve, locally on each computer, what it already has before the
    /// new (higher) level applies.
    #[serde(default)]
    pub approve_existing: bool,
}

/// Create an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnrollTokenCreated {
    /// Its id (to revoke it).
    pub id: i64,
    /// The token's text form.
    pub token: String,
    /// Expiry (ms since epoch).
    pub expires_ms: i64,
}

/// An enrollment token that may still enroll a computer (its secret is
/// never shown again).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnrollTokenInfo {
    /// Id.
    pub id: i64,
    /// Policy the computers it enrolls join.
    pub policy: String,
    /// Enrollments it allowed.
    pub max_uses: i64,
    /// Enrollments it still allows.
    pub uses_left: i64,
    /// Expiry (ms since epoch).
    pub expires_ms: i64,
    /// Creation (ms since epoch).
    pub created_ms: i64,
    /// Who created it.
    pub created_by: String,
}

/// A publisher (a signed package repository origin).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PublisherInfo {
    /// Name.
    pub name: String,
    /// Reputation trust.
    pub trust: Option<PublisherTrust>,
    /// Its states (global or per policy).
    pub states: Vec<StateRecord>,
    /// Catalogued files attributed to it.
    pub files: i64,
}

/// Approve, ban or unapprove a publisher, for all computers or one policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPublisherState {
    /// The state.
    pub state: FileState,
    /// Limit to one policy.
    #[serde(default)]
    pub policy: Option<Name>,
}

/// Set a publisher's reputation trust.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPublisherTrust {
    /// The trust.
    pub trust: PublisherTrust,
}

/// Reputation data: trust ratings for hashes, from one source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReputationBatch {
    /// Where the ratings come from (for example `nsrl-rds-2024.12.1`).
    pub source: String,
    /// At most [`REPUTATION_BATCH_MAX`] entries.
    pub entries: Vec<ReputationEntry>,
}

/// The largest reputation batch.
pub const REPUTATION_BATCH_MAX: usize = 20_000;

/// One rating.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReputationEntry {
    /// The hash.
    pub sha256: Sha256,
    /// Trust rating, 0 (known bad) ..= 10 (known good).
    pub trust: u8,
}

/// The answer to a reputation batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReputationImported {
    /// Ratings stored (new or changed).
    pub stored: u64,
}

/// What a rule does, by kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleBody {
    /// A custom rule.
    Custom {
        /// The source process; any when absent.
        #[serde(default)]
        process: Option<ProcessMatch>,
        /// The user or group; any when absent.
        #[serde(default)]
        user: Option<UserMatch>,
        /// Operations.
        operations: Operations,
        /// Files.
        paths: Vec<PathPattern>,
        /// Action.
        action: RuleAction,
        /// Conditions of an allow.
        #[serde(default)]
        conditions: Conditions,
    },
    /// A reputation approval rule.
    Reputation {
        /// Minimum trust rating.
        min_trust: u8,
        /// Minimum publisher trust.
        #[serde(default)]
        min_publisher_trust: Option<PublisherTrust>,
        /// Files excepted.
        #[serde(default)]
        except_files: Vec<Sha256>,
        /// Publishers excepted.
        #[serde(default)]
        except_publishers: Vec<String>,
    },
    /// Folder protection.
    Folder {
        /// The folder.
        dir: String,
        /// Hashes of the parent processes allowed to start code in it.
        parents: Vec<Sha256>,
    },
    /// Trusted directory: a file placed in it is approved on the computer
    /// that finds it there and, when that computer is one of `computers`
    /// (the trusted servers the directory is on), for every computer the
    /// rule applies to.
    TrustedDirectory {
        /// The directory.
        dir: String,
        /// Computers whose finds approve for every computer the rule
        /// applies to (none: each computer approves for itself only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        computers: Vec<String>,
    },
    /// Trusted user or group.
    TrustedUser {
        /// Who.
        user: UserMatch,
    },
    /// Updater.
    Updater {
        /// Program names (resolved on each computer).
        #[serde(default)]
        programs: Vec<String>,
        /// Executable hashes.
        #[serde(default)]
        hashes: Vec<Sha256>,
        /// Vouch for what the package database records.
        #[serde(default)]
        package_manager: bool,
    },
    /// Event rule.
    Event {
        /// Which events.
        filter: EventFilter,
        /// What to do.
        actions: Vec<EventAction>,
    },
}

/// Which events (or file sightings) an event rule reacts to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Trigger: reported events, or files seen for the first time on a
    /// computer (lookups, inventory).
    #[serde(default)]
    pub trigger: EventTrigger,
    /// Event kinds (any when empty).
    #[serde(default)]
    pub kinds: Vec<EventKind>,
    /// Operations (any when empty).
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Only files whose trust rating is at most this.
    #[serde(default)]
    pub max_trust: Option<u8>,
    /// Only files whose trust rating is at least this.
    #[serde(default)]
    pub min_trust: Option<u8>,
    /// Only files whose path matches.
    #[serde(default)]
    pub path: Option<PathPattern>,
    /// Only these computers (any when empty).
    #[serde(default)]
    pub computers: Vec<String>,
    /// Only computers in these policies (any when empty).
    #[serde(default)]
    pub policies: Vec<String>,
}

/// What an event rule reacts to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventTrigger {
    /// An event reported by an agent.
    #[default]
    Event,
    /// A file seen on a computer for the first time.
    FileSeen,
}

/// What an event rule does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum EventAction {
    /// Set the file's global state. Like every rule's state action, it
    /// never replaces a state an admin set, nor lifts a ban.
    SetGlobalState {
        /// The state.
        state: FileState,
    },
    /// Set the file's state on the computer of the event.
    SetLocalState {
        /// The state.
        state: FileState,
    },
    /// Move the computer to another policy.
    MoveComputer {
        /// The policy.
        policy: Name,
    },
    /// POST the event as JSON to a URL.
    Webhook {
        /// The URL (http or https).
        url: String,
    },
    /// Send the event to syslog (RFC 5424 over UDP to `address`, or the
    /// local `/dev/log` when absent).
    Syslog {
        /// `host:port`.
        #[serde(default)]
        address: Option<String>,
    },
}

/// Create a rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRule {
    /// Name.
    pub name: String,
    /// Policies it applies to (all when empty).
    #[serde(default)]
    pub policies: Vec<Name>,
    /// Rank among custom rules (lower first; default: after the others).
    #[serde(default)]
    pub rank: Option<i64>,
    /// The rule.
    pub body: RuleBody,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RuleRecord {
    /// Id.
    pub id: RuleId,
    /// Name.
    pub name: String,
    /// Policies (all when empty).
    pub policies: Vec<String>,
    /// Rank.
    pub rank: i64,
    /// Enabled (rules of a disabled bundle are not).
    pub enabled: bool,
    /// The bundle it belongs to, if any.
    pub bundle: Option<String>,
    /// The rule.
    pub body: RuleBody,
    /// When it was created (ms since epoch).
    pub created_ms: i64,
    /// By whom.
    pub created_by: String,
}

/// A curated rule bundle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BundleInfo {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Whether it is enabled in the organization.
    pub enabled: bool,
    /// Its rules.
    pub rules: Vec<String>,
}

/// Enable or disable a bundle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetBundle {
    /// Enabled.
    pub enabled: bool,
}

/// The state of an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for an admin.
    Pending,
    /// Granted: the file is approved on the computer.
    Granted,
    /// Denied.
    Denied,
}

/// An approval request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApprovalRequestInfo {
    /// Id.
    pub id: i64,
    /// Computer.
    pub computer: String,
    /// File hash.
    pub sha256: Sha256,
    /// Path.
    pub path: String,
    /// Requesting user.
    pub user: String,
    /// Their reason.
    pub reason: String,
    /// Status.
    pub status: RequestStatus,
    /// Created (ms since epoch).
    pub created_ms: i64,
    /// Decided (ms since epoch).
    pub decided_ms: Option<i64>,
    /// Decided by.
    pub decided_by: Option<String>,
    /// The admin's comment.
    pub comment: Option<String>,
}

/// Grant or deny a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// A comment for the requester.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Compile a stored custom rule into the core type (used by the service to
/// build agents' rule sets).
pub fn custom_rule(id: RuleId, name: &str, body: &RuleBody) -> Option<CustomRule> {
    match body {
        RuleBody::Custom {
            process,
            user,
            operations,
            paths,
            action,
            conditions,
        } => Some(CustomRule {
            id,
            name: name.to_owned(),
            process: process.clone(),
            user: user.clone(),
            operations: *operations,
            paths: paths.clone(),
            action: *action,
            conditions: *conditions,
        }),
        _ => None,
    }
}

/// Compile a stored reputation rule.
pub fn reputation_rule(id: RuleId, body: &RuleBody) -> Option<ReputationRule> {
    match body {
        RuleBody::Reputation {
            min_trust,
            min_publisher_trust,
            except_files,
            except_publishers,
        } => Some(ReputationRule {
            id,
            min_trust: *min_trust,
            min_publisher_trust: *min_publisher_trust,
            except_files: except_files.clone(),
            except_publishers: except_publishers.clone(),
        }),
        _ => None,
    }
}

/// Compile a stored folder protection.
pub fn folder_rule(id: RuleId, body: &RuleBody) -> Option<FolderProtection> {
    match body {
        RuleBody::Folder { dir, parents } => Some(FolderProtection {
            id,
            dir: dir.clone(),
            parents: parents.clone(),
        }),
        _ => None,
    }
}
