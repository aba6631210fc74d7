//! The approval model's rules and the one engine that evaluates them.
//!
//! The service keeps every rule of an organization; each agent receives the
//! [`RuleSet`] that applies to its computer's policy, compiles it
//! ([`CompiledRules`]) and evaluates every load, and every write to a
//! controlled path, with [`evaluate`]. Per-file facts ([`FileFacts`]) come from
//! the service (file states, reputation) and from the agent itself
//! (publisher); the subject ([`Subject`]) from the kernel and `/proc`.
//!
//! # Precedence
//!
//! The first step that decides wins:
//!
//! 1. **Custom rules**, in rank order (the order of [`RuleSet::custom`]): the
//!    first whose process, user, operation and path all match decides with
//!    its action (`allow`, `block`, `prompt`, `approve`). A `report` rule
//!    decides nothing but makes the load reported, and evaluation goes on.
//!    Custom rules are the admin's most specific statements, so they can make
//!    exceptions to everything below, bans included.
//! 2. **Bans**: a file banned at any applicable scope is blocked.
//! 3. **Folder protection**: a file inside a protected folder runs only when
//!    started by one of the folder's parent processes (by hash), whatever its
//!    own hash (dynamically generated scripts); started by anything else it
//!    is blocked, approved or not.
//! 4. **File approvals** (global, policy, local). A local approval (made on
//!    the computer by trusted change or the initialization scan) does not
//!    outrank a banned publisher: banning a publisher blocks what dpkg
//!    installed from it, while an admin's approval of that exact hash for
//!    all computers or a policy still wins.
//! 5. **Publishers**: a banned publisher blocks; an approved publisher
//!    approves files it verifiably published (content matches the package's
//!    recorded checksum). Then **package-manager updaters** (dpkg): a file
//!    whose content matches the checksum its package recorded was installed
//!    by the package manager and is approved.
//! 6. **Reputation rules**: a file whose trust rating reaches the rule's
//!    threshold (and, if set, whose publisher's trust does) is approved,
//!    unless the file or its publisher is an exception. Manual states (2, 4,
//!    5) always come first.
//! 7. Nothing decided: the file is **unknown**.
//!
//! Then the level: a block (or unknown) blocks in `lockdown`, blocks and
//! may be requested in `prompt`, is allowed and reported as a would-block in
//! `monitor`; `disabled` allows everything. Writes are controlled only by
//! custom rules: a write no rule decides is allowed.
use crate::approval::{Approval, FileState, LocalState, ScopeKind};
use crate::context::ProcessContext;
use crate::decision::{Operation, Report};
use crate::level::Level;
use crate::pattern::{ancestor_dirs, PathPattern};
use crate::sha256::Sha256;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A rule's id at the service.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct RuleId(pub i64);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How much a publisher is trusted by reputation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PublisherTrust {
    /// Known bad or untrusted.
    NotTrusted,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

/// What the agent established about the package a file belongs to, and its
/// publisher.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PublisherFact {
    /// The publisher: the origin of the signed repository the package came
    /// from; `None` for a package no signed repository provides (a local
    /// `.deb`).
    pub name: Option<String>,
    /// The package that installed the file.
    pub package: String,
    /// Its version.
    pub version: String,
    /// The file's content matches the checksum the package recorded.
    pub verified: bool,
}

/// Which processes a custom rule is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
pub enum ProcessMatch {
    /// The process's executable has this hash.
    Hash(Sha256),
    /// The process's executable path matches.
    Path(PathPattern),
    /// The process's executable was published by this publisher (verified).
    Publisher(String),
}

/// Which users a rule is about: the user who logged in (audit login uid) or
/// the effective user, by name; or any of the process's groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "by", content = "name", rename_all = "snake_case")]
pub enum UserMatch {
    /// A user name.
    User(String),
    /// A group name.
    Group(String),
}

/// Operations a custom rule controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Operations {
    /// Loading code (exec, libraries, scripts).
    pub execute: bool,
    /// Writing files (opening them for writing).
    pub write: bool,
}

/// What a matching custom rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Allow (with the rule's conditions).
    Allow,
    /// Block.
    Block,
    /// Block, and let the user request approval.
    Prompt,
    /// Allow, and approve (locally) what the process writes: trusted change.
    Approve,
    /// Decide nothing, but report the operation.
    Report,
}

/// How much is reported about allowed loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Blocks and would-blocks only.
    #[default]
    Normal,
    /// Every matching load, allowed ones included.
    Verbose,
}

/// Conditions an allow can carry, applied by the agent to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Conditions {
    /// Scheduling priority (nice value, -20..19) to give the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i8>,
    /// Kill the process after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_secs: Option<u32>,
    /// Reporting of allowed runs.
    #[serde(default)]
    pub log: LogLevel,
}

impl Conditions {
    /// Whether there is anything to apply.
    pub fn is_empty(&self) -> bool {
        self.nice.is_none() && self.max_runtime_secs.is_none() && self.log == LogLevel::Normal
    }
}

/// "If this process and/or this user attempts this operation on these files,
/// then this action."
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CustomRule {
    /// Id.
    pub id: RuleId,
    /// Name, for explanations.
    pub name: String,
    /// The source process; any when absent.
    #[serde(default)]
    pub process: Option<ProcessMatch>,
    /// The user or group; any when absent.
    #[serde(default)]
    pub user: Option<UserMatch>,
    /// The operations.
    pub operations: Operations,
    /// The files (at least one pattern).
    pub paths: Vec<PathPattern>,
    /// The action.
    pub action: RuleAction,
    /// Conditions of an allow.
    #[serde(default)]
    pub conditions: Conditions,
}

/// A folder whose code runs only when started by named parent processes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FolderProtection {
    /// Id.
    pub id: RuleId,
    /// The folder (absolute, canonical).
    pub dir: String,
    /// Hashes of the processes allowed to start code in it.
    pub parents: Vec<Sha256>,
}

/// "Approve files whose trust rating is at least ...".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReputationRule {
    /// Id.
    pub id: RuleId,
    /// Minimum file trust rating, 0..=10.
    pub min_trust: u8,
    /// Also require the publisher's trust to be at least this.
    #[serde(default)]
    pub min_publisher_trust: Option<PublisherTrust>,
    /// Files never approved by this rule.
    #[serde(default)]
    pub except_files: Vec<Sha256>,
    /// Publishers whose files are never approved by this rule.
    #[serde(default)]
    pub except_publishers: Vec<String>,
}

/// A publisher's state as it applies to one policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PublisherState {
    /// Publisher name.
    pub name: String,
    /// Approved or banned.
    pub state: FileState,
    /// Set for all computers or for this policy.
    pub scope: ScopeKind,
}

/// Trusted change: files written by these are approved when written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrustedChange {
    /// An approved updater: what it writes is approved on the computer.
    /// `package_manager` updaters also vouch for what their package database
    /// records (dpkg: a file whose content matches the checksum its package
    /// recorded is approved, checked when it is loaded).
    Updater {
        /// Id.
        id: RuleId,
        /// Name (`dpkg`, `apt`, ...).
        name: String,
        /// Program names, resolved by each agent to the hashes of the
        /// programs of that name in the system's binary directories.
        #[serde(default)]
        programs: Vec<String>,
        /// Executable hashes of the updater.
        #[serde(default)]
        hashes: Vec<Sha256>,
        /// Files recorded by the system package database are approved when
        /// their content matches the recorded checksum.
        #[serde(default)]
        package_manager: bool,
    },
    /// Files placed in this directory are approved on this computer, and
    /// reported: the service approves them for every computer the rule
    /// applies to only when this computer is one of the trusted servers
    /// the rule names.
    TrustedDirectory {
        /// Id.
        id: RuleId,
        /// The directory.
        dir: String,
    },
    /// Code written by this user or group is approved on this computer.
    TrustedUser {
        /// Id.
        id: RuleId,
        /// The user or group.
        user: UserMatch,
    },
}

/// The rules that apply to one computer (its policy's and the global ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RuleSet {
    /// Publisher states (approved/banned) applying to this policy.
    #[serde(default)]
    pub publishers: Vec<PublisherState>,
    /// Publisher trust levels from reputation.
    #[serde(default)]
    pub publisher_trust: Vec<(String, PublisherTrust)>,
    /// Reputation approval rules.
    #[serde(default)]
    pub reputation: Vec<ReputationRule>,
    /// Custom rules, in rank order.
    #[serde(default)]
    pub custom: Vec<CustomRule>,
    /// Protected folders.
    #[serde(default)]
    pub folders: Vec<FolderProtection>,
    /// Trusted change rules.
    #[serde(default)]
    pub trusted_change: Vec<TrustedChange>,
}

/// Index from a literal directory to the items whose pattern starts there.
#[derive(Debug, Default)]
struct DirIndex {
    by_dir: HashMap<String, Vec<usize>>,
}

impl DirIndex {
    fn add(&mut self, dir: &str, item: usize) {
        self.by_dir.entry(dir.to_owned()).or_default().push(item);
    }

    /// Items filed under `path`'s ancestor directories, nearest first.
    fn candidates<'a>(&'a self, path: &'a str) -> impl Iterator<Item = usize> + 'a {
        ancestor_dirs(path)
            .filter_map(|d| self.by_dir.get(d))
            .flat_map(|v| v.iter().copied())
    }

    /// Items filed under `path`'s ancestor directories, in ascending order
    /// (each bucket is kept sorted; buckets are merged only when several
    /// ancestors have items).
    fn sorted_candidates(&self, path: &str) -> std::borrow::Cow<'_, [usize]> {
        let mut buckets = ancestor_dirs(path).filter_map(|d| self.by_dir.get(d));
        let Some(first) = buckets.next() else {
            return std::borrow::Cow::Borrowed(&[]);
        };
        match buckets.next() {
            None => std::borrow::Cow::Borrowed(first.as_slice()),
            Some(second) => {
                let mut all: Vec<usize> = first.iter().chain(second).copied().collect();
                for b in buckets {
                    all.extend_from_slice(b);
                }
                all.sort_unstable();
                std::borrow::Cow::Owned(all)
            }
        }
    }
}

/// A [`RuleSet`] indexed for evaluation.
#[derive(Debug, Default)]
pub struct CompiledRules {
    set: RuleSet,
    /// (rule index, pattern index) by the pattern's literal directory.
    custom_index: DirIndex,
    custom_patterns: Vec<(usize, usize)>,
    folder_index: DirIndex,
    publisher_state: HashMap<String, (FileState, ScopeKind)>,
    publisher_trust: HashMap<String, PublisherTrust>,
    reputation_except: Vec<(HashSet<Sha256>, HashSet<String>)>,
}

impl CompiledRules {
    /// Index a rule set.
    pub fn new(set: RuleSet) -> CompiledRules {
        let mut c = CompiledRules::default();
        for (ri, rule) in set.custom.iter().enumerate() {
            for (pi, pat) in rule.paths.iter().enumerate() {
                c.custom_index
                    .add(pat.literal_dir(), c.custom_patterns.len());
                c.custom_patterns.push((ri, pi));
            }
        }
        for (fi, folder) in set.folders.iter().enumerate() {
            c.folder_index.add(folder.dir.trim_end_matches('/'), fi);
        }
        for p in &set.publishers {
            let slot = c
                .publisher_state
                .entry(p.name.clone())
                .or_insert((p.state, p.scope));
            // A ban anywhere applicable wins; then the most specific scope.
            let better = match (p.state, slot.0) {
                (FileState::Banned, FileState::Banned) => p.scope > slot.1,
                (FileState::Banned, _) => true,
                (_, FileState::Banned) => false,
                (FileState::Approved, FileState::Unapproved) => true,
                _ => false,
            };
            if better {
                *slot = (p.state, p.scope);
            }
        }
        c.publisher_trust = set.publisher_trust.iter().cloned().collect();
        c.reputation_except = set
            .reputation
            .iter()
            .map(|r| {
                (
                    r.except_files.iter().copied().collect(),
                    r.except_publishers.iter().cloned().collect(),
                )
            })
            .collect();
        c.set = set;
        c
    }

    /// Whether any decision can depend on a file's path: custom rules,
    /// folder protection or trusted directories exist. When not, the agent
    /// settles a first exec without looking the path up first.
    pub fn path_matters(&self) -> bool {
        !self.set.custom.is_empty()
            || !self.set.folders.is_empty()
            || self
                .set
                .trusted_change
                .iter()
                .any(|t| matches!(t, TrustedChange::TrustedDirectory { .. }))
    }

    /// The rule set.
    pub fn rules(&self) -> &RuleSet {
        &self.set
    }

    /// Custom rules with a pattern matching `path`, in rank order, matched
    /// lazily: the caller stops at the first rule that decides. (Pattern
    /// entries are numbered in rule order, so ascending entry numbers are
    /// rank order.)
    ///
    /// A path the kernel could not give (not absolute: the agent's `?`, for
    /// a name too long or not reachable) matches every rule that restricts
    /// or reports, and none that grants: where the file is cannot be known,
    /// so it may be where a block rule says. The empty path matches nothing
    /// (no path at all: [`local_state`]).
    fn custom_for<'a>(&'a self, path: &'a str) -> impl Iterator<Item = usize> + 'a {
        let unknown = !path.is_empty() && !path.starts_with('/');
        let candidates = if unknown {
            std::borrow::Cow::Owned(
                (0..self.custom_patterns.len())
                    .filter(|&e| {
                        let (ri, _) = self.custom_patterns[e];
                        matches!(
                            self.set.custom[ri].action,
                            RuleAction::Block | RuleAction::Prompt | RuleAction::Report
                        )
                    })
                    .collect(),
            )
        } else {
            self.custom_index.sorted_candidates(path)
        };
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < candidates.len() {
                let (ri, _) = self.custom_patterns[candidates[i]];
                let mut hit = false;
                while i < candidates.len() && self.custom_patterns[candidates[i]].0 == ri {
                    let (_, pi) = self.custom_patterns[candidates[i]];
                    hit = hit || unknown || self.set.custom[ri].paths[pi].matches(path);
                    i += 1;
                }
                if hit {
                    return Some(ri);
                }
            }
            None
        })
    }

    /// The protected folder holding `path`, if any (the nearest).
    pub fn folder_for(&self, path: &str) -> Option<&FolderProtection> {
        self.folder_index
            .candidates(path)
            .next()
            .map(|i| &self.set.folders[i])
    }

    /// Every protection of the folder `dir` (several rules may protect one
    /// folder, each naming its parents: any of them may start its code).
    fn folders_at<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a FolderProtection> + 'a {
        self.folder_index
            .by_dir
            .get(dir.trim_end_matches('/'))
            .into_iter()
            .flatten()
            .map(|&i| &self.set.folders[i])
    }

    /// Whether some custom rule could apply to `path`, whoever acts: such a
    /// path's decisions depend on the subject and are not cached by inode.
    pub fn path_has_rules(&self, path: &str) -> bool {
        self.custom_for(path).next().is_some() || self.folder_for(path).is_some()
    }

    /// The trusted-change rules.
    pub fn trusted_change(&self) -> &[TrustedChange] {
        &self.set.trusted_change
    }

    /// Whether a custom rule controls writes to `path` (its opens for
    /// writing must be judged).
    pub fn write_sensitive(&self, path: &str) -> bool {
        self.custom_for(path)
            .any(|ri| self.set.custom[ri].operations.write)
    }

    /// Whether writers are tracked at all: trusted users, updaters, or
    /// custom rules that approve what a process writes.
    pub fn tracks_writers(&self) -> bool {
        self.set
            .custom
            .iter()
            .any(|r| r.action == RuleAction::Approve && r.operations.write)
            || self.set.trusted_change.iter().any(|t| {
                matches!(
                    t,
                    TrustedChange::TrustedUser { .. } | TrustedChange::Updater { .. }
                )
            })
    }

    /// Whether decisions can depend on a file's package or publisher.
    pub fn needs_publishers(&self) -> bool {
        !self.set.publishers.is_empty()
            || self.package_manager().is_some()
            || self
                .set
                .reputation
                .iter()
                .any(|r| r.min_publisher_trust.is_some() || !r.except_publishers.is_empty())
    }

    /// Whether a file's package/publisher fact can change the decision for a
    /// file with this approval (so whether the agent must establish it):
    /// bans and admin approvals decide before publishers; a local approval
    /// yields only to a banned publisher.
    pub fn publisher_matters(&self, approval: Approval) -> bool {
        match approval {
            Approval::Banned(_) => false,
            Approval::Approved(src) => {
                src.scope == ScopeKind::Local
                    && self
                        .publisher_state
                        .values()
                        .any(|(state, _)| *state == FileState::Banned)
            }
            Approval::Unknown => self.needs_publishers(),
        }
    }

    /// Whether custom rules match processes by their executable's publisher.
    pub fn needs_process_publishers(&self) -> bool {
        self.set
            .custom
            .iter()
            .any(|r| matches!(r.process, Some(ProcessMatch::Publisher(_))))
    }

    /// The trusted directory holding `path`, if any.
    pub fn trusted_directory_for(&self, path: &str) -> Option<(RuleId, &str)> {
        self.set.trusted_change.iter().find_map(|t| match t {
            TrustedChange::TrustedDirectory { id, dir } => {
                let dir = dir.trim_end_matches('/');
                (path.len() > dir.len()
                    && path.starts_with(dir)
                    && path.as_bytes()[dir.len()] == b'/')
                    .then_some((*id, dir))
            }
            _ => None,
        })
    }

    /// The trusted user or group rule the subject matches, if any.
    pub fn trusted_user(&self, users: &[String], groups: &[String]) -> Option<(RuleId, String)> {
        self.set.trusted_change.iter().find_map(|t| match t {
            TrustedChange::TrustedUser {
                id,
                user: UserMatch::User(u),
            } if users.contains(u) => Some((*id, u.clone())),
            TrustedChange::TrustedUser {
                id,
                user: UserMatch::Group(g),
            } if groups.contains(g) => Some((*id, format!("group {g}"))),
            _ => None,
        })
    }

    /// The name of the package-manager updater rule, if one applies.
    pub fn package_manager(&self) -> Option<&str> {
        self.set.trusted_change.iter().find_map(|t| match t {
            TrustedChange::Updater {
                name,
                package_manager: true,
                ..
            } => Some(name.as_str()),
            _ => None,
        })
    }

    /// A publisher's state for this computer.
    pub fn publisher_state(&self, name: &str) -> Option<(FileState, ScopeKind)> {
        self.publisher_state.get(name).copied()
    }
}

/// What is known about the file being loaded or written.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts<'a> {
    /// Content hash (`None` for a write to a file that does not exist yet).
    pub sha256: Option<Sha256>,
    /// File states, resolved for this computer.
    pub approval: Approval,
    /// Reputation trust rating, 0..=10.
    pub trust: Option<u8>,
    /// Publisher, as the agent established it.
    pub publisher: Option<&'a PublisherFact>,
}

/// Who acts.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The process context.
    pub process: &'a ProcessContext,
    /// Names of its login user and effective user.
    pub users: &'a [String],
    /// Names of its groups.
    pub groups: &'a [String],
    /// Publisher of its executable, when established and verified.
    pub publisher: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// A subject known by its process context alone: no user or group
    /// names, no publisher (rules about those do not match it).
    pub fn of_process(process: &'a ProcessContext) -> Subject<'a> {
        Subject {
            process,
            users: &[],
            groups: &[],
            publisher: None,
        }
    }
}

/// One load or write to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// What is attempted.
    pub operation: Operation,
    /// The file (absolute, canonical path).
    pub path: &'a str,
    /// Facts about it.
    pub file: FileFacts<'a>,
    /// Who attempts it.
    pub subject: Subject<'a>,
    /// The executable hash of the process that started the code: for an
    /// exec, the process calling exec; for a script read by an interpreter,
    /// the interpreter's parent. Folder protection checks it.
    pub starter: Option<Sha256>,
    /// Whether `path` is known to name the file for everyone: the agent
    /// found this very file (device and inode) at that path itself. The
    /// kernel names a file as the acting process's mount namespace sees it,
    /// and in a user namespace of its own any user can bind-mount a file
    /// of theirs at a trusted path. When `false`, rules that grant by path
    /// (allow, approve) do not apply; rules that restrict (block, prompt,
    /// report, folder protection) still do.
    pub path_verified: bool,
}

/// The outcome before the level is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed (approved, or allowed by a rule).
    Allow,
    /// Explicitly blocked (ban, rule, folder protection).
    Block,
    /// A rule asks for prompting.
    Prompt,
    /// Nothing decided.
    Unknown,
}

/// Which rule or state decided, for explanations and events.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum DecidedBy {
    /// A custom rule.
    CustomRule {
        /// Its id.
        id: RuleId,
        /// Its name.
        name: String,
        /// Its action.
        action: RuleAction,
    },
    /// A file state.
    FileState {
        /// Banned or approved.
        state: FileState,
        /// At which scope.
        scope: ScopeKind,
    },
    /// A protected folder.
    FolderProtection {
        /// Its id.
        id: RuleId,
        /// The folder.
        dir: String,
        /// Whether the starter was one of the folder's parents.
        parent_allowed: bool,
    },
    /// A publisher state.
    Publisher {
        /// Publisher name.
        name: String,
        /// Its state.
        state: FileState,
    },
    /// Installed by an approved package-manager updater.
    Updater {
        /// The updater rule's name.
        name: String,
        /// The package.
        package: String,
    },
    /// A reputation rule.
    Reputation {
        /// Its id.
        id: RuleId,
        /// The file's trust rating.
        trust: u8,
    },
    /// Nothing: unknown code (or, for a write, no rule).
    Nothing,
}

impl DecidedBy {
    /// One line for humans.
    pub fn explain(&self) -> String {
        match self {
            DecidedBy::CustomRule { id, name, action } => {
                format!("custom rule {id} ({name:?}): {}", serde_plain(action))
            }
            DecidedBy::FileState { state, scope } => format!("{state} by a {scope} file state"),
            DecidedBy::FolderProtection {
                dir,
                parent_allowed: true,
                ..
            } => {
                format!("protected folder {dir}: started by an allowed parent process")
            }
            DecidedBy::FolderProtection {
                dir,
                parent_allowed: false,
                ..
            } => {
                format!("protected folder {dir}: not started by one of its parent processes")
            }
            DecidedBy::Publisher { name, state } => format!("publisher {name:?} is {state}"),
            DecidedBy::Updater { name, package } => {
                format!(
                    "installed by updater {name} (package {package}, content matches its checksum)"
                )
            }
            DecidedBy::Reputation { id, trust } => {
                format!("reputation rule {id}: trust rating {trust}")
            }
            DecidedBy::Nothing => "no approval, ban or rule applies: unknown code".to_owned(),
        }
    }
}

fn serde_plain(a: &RuleAction) -> &'static str {
    match a {
        RuleAction::Allow => "allow",
        RuleAction::Block => "block",
        RuleAction::Prompt => "prompt",
        RuleAction::Approve => "approve",
        RuleAction::Report => "report",
    }
}

/// The final decision for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Outcome of the rules, before the level.
    pub outcome: Outcome,
    /// What the kernel is told.
    pub verdict: crate::decision::Verdict,
    /// The user may request approval of this file (prompt).
    pub requestable: bool,
    /// What is reported.
    pub report: Report,
    /// Whether the verdict depends only on the file (it may be cached by
    /// inode in the kernel until the file or the policy changes).
    pub cacheable: bool,
    /// Which rule or state decided.
    pub decided_by: DecidedBy,
    /// Conditions to apply to an allowed process.
    pub conditions: Conditions,
    /// The process is an approving writer: approve what it writes.
    pub approve_writes: bool,
}

/// The local state of a file on a computer whose rules are `rules`: what its
/// own facts (file states, publisher, package, reputation) make of it, by the
/// same precedence as [`evaluate`] but without the rules that depend on who
/// runs it and where (custom rules, folder protection). A deleted instance is
/// the caller's to know.
pub fn local_state(rules: &CompiledRules, file: FileFacts<'_>) -> LocalState {
    let process = ProcessContext::unknown(0);
    let req = Request {
        operation: Operation::Execute,
        // No pattern matches an empty path: path rules stay out of it.
        path: "",
        file,
        subject: Subject::of_process(&process),
        starter: None,
        path_verified: false,
    };
    match evaluate(rules, &req, Level::Lockdown).decided_by {
        DecidedBy::FileState {
            state: FileState::Banned,
            ..
        }
        | DecidedBy::Publisher {
            state: FileState::Banned,
            ..
        } => LocalState::Banned,
        DecidedBy::FileState {
            state: FileState::Approved,
            ..
        }
        | DecidedBy::Publisher {
            state: FileState::Approved,
            ..
        }
        | DecidedBy::Updater { .. }
        | DecidedBy::Reputation { .. } => LocalState::Approved,
        DecidedBy::FileState {
            state: FileState::Unapproved,
            ..
        }
        | DecidedBy::Publisher {
            state: FileState::Unapproved,
            ..
        }
        | DecidedBy::CustomRule { .. }
        | DecidedBy::FolderProtection { .. }
        | DecidedBy::Nothing => LocalState::Unapproved,
    }
}

/// Evaluate one request (see the module doc for the precedence).
pub fn evaluate(rules: &CompiledRules, req: &Request<'_>, level: Level) -> Evaluation {
    let write = req.operation == Operation::Write;
    let folder = if write {
        None
    } else {
        rules.folder_for(req.path)
    };
    let mut reported = false;
    let mut decided: Option<(Outcome, DecidedBy, Conditions, bool)> = None;

    // 1. Custom rules: the first decisive one in rank order.
    let mut path_has_customs = false;
    for ri in rules.custom_for(req.path) {
        path_has_customs = true;
        let rule = &rules.set.custom[ri];
        let op_ok = if write {
            rule.operations.write
        } else {
            rule.operations.execute
        };
        if !op_ok
            || !process_matches(rule.process.as_ref(), &req.subject)
            || !user_matches(rule.user.as_ref(), &req.subject)
        {
            continue;
        }
        let by = DecidedBy::CustomRule {
            id: rule.id,
            name: rule.name.clone(),
            action: rule.action,
        };
        let outcome = match rule.action {
            RuleAction::Report => {
                reported = true;
                continue;
            }
            // A path seen only by the process that acts grants nothing.
            RuleAction::Allow | RuleAction::Approve if !req.path_verified => continue,
            RuleAction::Allow => Outcome::Allow,
            RuleAction::Approve => Outcome::Allow,
            RuleAction::Block => Outcome::Block,
            RuleAction::Prompt => Outcome::Prompt,
        };
        decided = Some((
            outcome,
            by,
            rule.conditions,
            rule.action == RuleAction::Approve,
        ));
        break;
    }

    if decided.is_none() && write {
        decided = Some((
            Outcome::Allow,
            DecidedBy::Nothing,
            Conditions::default(),
            false,
        ));
    }

    let f = &req.file;
    // 2. Bans.
    if decided.is_none() {
        if let Approval::Banned(src) = f.approval {
            decided = Some((
                Outcome::Block,
                DecidedBy::FileState {
                    state: FileState::Banned,
                    scope: src.scope,
                },
                Conditions::default(),
                false,
            ));
        }
    }
    // 3. Folder protection.
    if decided.is_none() {
        if let Some(folder) = folder {
            // Its parents' grant needs the path to be the file's for sure.
            let ok = req.path_verified
                && req.starter.is_some_and(|s| {
                    rules
                        .folders_at(&folder.dir)
                        .any(|f| f.parents.contains(&s))
                });
            decided = Some((
                if ok { Outcome::Allow } else { Outcome::Block },
                DecidedBy::FolderProtection {
                    id: folder.id,
                    dir: folder.dir.clone(),
                    parent_allowed: ok,
                },
                Conditions::default(),
                false,
            ));
        }
    }
    // 4. File approvals.
    let verified = f.publisher.filter(|p| p.verified);
    let publisher_banned = verified
        .and_then(|p| p.name.as_deref())
        .and_then(|n| rules.publisher_state(n))
        .is_some_and(|(state, _)| state == FileState::Banned);
    if decided.is_none() {
        let approved = match f.approval {
            Approval::Approved(src) if !(src.scope == ScopeKind::Local && publisher_banned) => {
                Some(src)
            }
            _ => None,
        };
        if let Some(src) = approved {
            decided = Some((
                Outcome::Allow,
                DecidedBy::FileState {
                    state: FileState::Approved,
                    scope: src.scope,
                },
                Conditions::default(),
                false,
            ));
        }
    }
    // 5. Publishers, then package-manager updaters.
    if decided.is_none() {
        if let Some(p) = verified {
            let name = p.name.as_deref().unwrap_or_default();
            match p.name.as_deref().and_then(|n| rules.publisher_state(n)) {
                Some((FileState::Banned, _)) => {
                    decided = Some((
                        Outcome::Block,
                        DecidedBy::Publisher {
                            name: name.to_owned(),
                            state: FileState::Banned,
                        },
                        Conditions::default(),
                        false,
                    ))
                }
                Some((FileState::Approved, _)) => {
                    decided = Some((
                        Outcome::Allow,
                        DecidedBy::Publisher {
                            name: name.to_owned(),
                            state: FileState::Approved,
                        },
                        Conditions::default(),
                        false,
                    ))
                }
                _ => {
                    if let Some(updater) = rules.package_manager() {
                        decided = Some((
                            Outcome::Allow,
                            DecidedBy::Updater {
                                name: updater.to_owned(),
                                package: p.package.clone(),
                            },
                            Conditions::default(),
                            false,
                        ));
                    }
                }
            }
        }
    }
    // 6. Reputation.
    if decided.is_none() {
        if let (Some(trust), Some(sha)) = (f.trust, f.sha256) {
            let publisher = verified.and_then(|p| p.name.as_deref());
            for (i, rule) in rules.set.reputation.iter().enumerate() {
                let (except_files, except_publishers) = &rules.reputation_except[i];
                if trust < rule.min_trust || except_files.contains(&sha) {
                    continue;
                }
                if publisher.is_some_and(|p| except_publishers.contains(p)) {
                    continue;
                }
                if let Some(min) = rule.min_publisher_trust {
                    let pt = publisher.and_then(|p| rules.publisher_trust.get(p).copied());
                    if pt.is_none_or(|t| t < min) {
                        continue;
                    }
                }
                decided = Some((
                    Outcome::Allow,
                    DecidedBy::Reputation { id: rule.id, trust },
                    Conditions::default(),
                    false,
                ));
                break;
            }
        }
    }
    let (outcome, decided_by, conditions, approve_writes) = decided.unwrap_or((
        Outcome::Unknown,
        DecidedBy::Nothing,
        Conditions::default(),
        false,
    ));

    // The level.
    use crate::decision::Verdict;
    let (verdict, requestable, mut report) = match (level, outcome) {
        (Level::Disabled, _) => (Verdict::Allow, false, Report::Nothing),
        (_, Outcome::Allow) => (Verdict::Allow, false, Report::Nothing),
        (Level::Monitor, _) => (Verdict::Allow, false, Report::WouldBlock),
        (Level::Prompt, Outcome::Block) => (Verdict::Block, false, Report::Blocked),
        (Level::Prompt, _) => (Verdict::Block, true, Report::Blocked),
        (Level::Lockdown, Outcome::Prompt) => (Verdict::Block, true, Report::Blocked),
        (Level::Lockdown, _) => (Verdict::Block, false, Report::Blocked),
    };
    let verbose = conditions.log == LogLevel::Verbose;
    if report == Report::Nothing && level != Level::Disabled && (reported || verbose) {
        report = Report::Reported;
    }
    let cacheable = verdict == Verdict::Allow
        && level != Level::Disabled
        && !write
        && report == Report::Nothing
        && conditions.is_empty()
        && !approve_writes
        && !path_has_customs
        && folder.is_none();
    Evaluation {
        outcome,
        verdict,
        requestable,
        report,
        cacheable,
        decided_by,
        conditions,
        approve_writes,
    }
}

fn process_matches(m: Option<&ProcessMatch>, s: &Subject<'_>) -> bool {
    let Some(m) = m else { return true };
    let exe = s.process.exe.as_ref();
    match m {
        ProcessMatch::Hash(h) => exe.and_then(|e| e.sha256).is_some_and(|x| x == *h),
        ProcessMatch::Path(p) => exe.is_some_and(|e| p.matches(&e.path)),
        ProcessMatch::Publisher(name) => s.publisher.is_some_and(|p| p == name),
    }
}

fn user_matches(m: Option<&UserMatch>, s: &Subject<'_>) -> bool {
    match m {
        None => true,
        Some(UserMatch::User(u)) => s.users.iter().any(|x| x == u),
        Some(UserMatch::Group(g)) => s.groups.iter().any(|x| x == g),
    }
}

#[cfg(test)]
mod tests;
