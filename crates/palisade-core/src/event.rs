use crate::approval::Approval;
use crate::context::ProcessContext;
use crate::decision::Operation;
use crate::level::Level;
use crate::sha256::Sha256;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A load was blocked.
    Blocked,
    /// A load would have been blocked at a stricter level.
    WouldBlock,
    /// A file was approved on the computer (initialization scan, local approval).
    Approved,
    /// A load or write was allowed and reported anyway (a `report` rule,
    /// verbose logging).
    Allowed,
}

impl EventKind {
    /// The kind's name in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Blocked => "blocked",
            EventKind::WouldBlock => "would_block",
            EventKind::Approved => "approved",
            EventKind::Allowed => "allowed",
        }
    }
}

/// A decision worth reporting, as the agent records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileEvent {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// How the code was being loaded.
    pub operation: Operation,
    /// The content hash; `None` only for code without a file (memory execution).
    pub sha256: Option<Sha256>,
    /// Path of the file as seen by the agent.
    pub path: String,
    /// The approval that decided.
    pub approval: Approval,
    /// The level in force.
    pub level: Level,
    /// Who loaded it.
    pub process: ProcessContext,
    /// Free-text reason (for example "persistent cache: service unreachable").
    pub reason: String,
}
