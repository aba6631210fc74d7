//! The approval model: states set at a scope, and how they combine into the
//! one answer that applies to a given computer.
use crate::ids::{ComputerId, PolicyId};
use std::fmt;

/// The state an admin (or an approval mechanism) gives a file at one scope.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Allowed to run.
    Approved,
    /// Never allowed to run; beats any approval at any scope.
    Banned,
    /// Neither: the scope says nothing about the file (removes an earlier state).
    Unapproved,
}

impl FileState {
    /// The state's name in the CLI and API.
    pub const fn as_str(self) -> &'static str {
        match self {
            FileState::Approved => "approved",
            FileState::Banned => "banned",
            FileState::Unapproved => "unapproved",
        }
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a state applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Scope {
    /// Every computer of the organization.
    Global,
    /// Every computer in one policy.
    Policy(PolicyId),
    /// One computer only (a local state).
    Computer(ComputerId),
}

/// The kind of a [`Scope`], without its id: what an explanation shows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    /// Set for all computers.
    Global,
    /// Set for the computer's policy.
    Policy,
    /// Set for this computer alone.
    Local,
}

impl Scope {
    /// The scope's kind.
    pub const fn kind(self) -> ScopeKind {
        match self {
            Scope::Global => ScopeKind::Global,
            Scope::Policy(_) => ScopeKind::Policy,
            Scope::Computer(_) => ScopeKind::Local,
        }
    }

    /// Whether a state at this scope applies to `computer`, a member of `policy`.
    pub fn applies_to(self, policy: PolicyId, computer: ComputerId) -> bool {
        match self {
            Scope::Global => true,
            Scope::Policy(p) => p == policy,
            Scope::Computer(c) => c == computer,
        }
    }
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScopeKind::Global => "global",
            ScopeKind::Policy => "policy",
            ScopeKind::Local => "local",
        })
    }
}

/// A file state at a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScopedState {
    /// Where it applies.
    pub scope: Scope,
    /// What it says.
    pub state: FileState,
}

/// Which state decided an [`Approval`], for explanations and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApprovalSource {
    /// The scope of the deciding state.
    pub scope: ScopeKind,
}

/// The one answer for a file on a given computer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Approval {
    /// Approved, and not banned at any applicable scope.
    Approved(ApprovalSource),
    /// Banned at some applicable scope.
    Banned(ApprovalSource),
    /// No applicable approval or ban: unknown code.
    Unknown,
}

impl Approval {
    /// Short name: approved, banned or unknown.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Approval::Approved(_) => "approved",
            Approval::Banned(_) => "banned",
            Approval::Unknown => "unknown",
        }
    }

    /// A one-line human explanation.
    pub fn explain(&self) -> String {
        match self {
            Approval::Approved(s) => format!("approved by a {} file state", s.scope),
            Approval::Banned(s) => format!(
                "banned by a {} file state (a ban beats any approval)",
                s.scope
            ),
            Approval::Unknown => "no approval or ban applies: unknown code".to_owned(),
        }
    }
}

/// Combine the states recorded for one file into the answer for `computer`
/// (a member of `policy`).
///
/// Precedence: a ban at any applicable scope wins over every approval; then an
/// approval at any applicable scope; otherwise the file is unknown. Among
/// several states of the winning kind, the most specific scope (local, then
/// policy, then global) is named as the source.
pub fn resolve<'a>(
    states: impl IntoIterator<Item = &'a ScopedState>,
    policy: PolicyId,
    computer: ComputerId,
) -> Approval {
    let mut ban: Option<ScopeKind> = None;
    let mut approve: Option<ScopeKind> = None;
    for s in states {
        if !s.scope.applies_to(policy, computer) {
            continue;
        }
        let kind = s.scope.kind();
        let slot = match s.state {
            FileState::Banned => &mut ban,
            FileState::Approved => &mut approve,
            FileState::Unapproved => continue,
        };
        // ScopeKind orders Global < Policy < Local: keep the most specific.
        *slot = Some(slot.map_or(kind, |k| k.max(kind)));
    }
    match (ban, approve) {
        (Some(scope), _) => Approval::Banned(ApprovalSource { scope }),
        (None, Some(scope)) => Approval::Approved(ApprovalSource { scope }),
        (None, None) => Approval::Unknown,
    }
}

/// A file's state across the organization (Carbon Black's "global state"),
/// from its own states and its publisher's, ignoring local (computer) states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum GlobalState {
    /// Approved for every computer.
    ApprovedForAll,
    /// Approved for some policies, unapproved for others.
    ApprovedByPolicy,
    /// Neither approved nor banned anywhere.
    Unapproved,
    /// Banned for every computer.
    BannedForAll,
    /// Banned for some policies, unapproved for others.
    BannedByPolicy,
    /// Banned for some, approved for others.
    Mixed,
}

/// The state of one instance of a file (a path on a computer), as the seed
/// defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum LocalState {
    /// It may run there (an approval, its publisher, an updater, reputation).
    Approved,
    /// It is blocked there by a ban (of the file or of its publisher).
    Banned,
    /// Neither: unknown code on that computer.
    Unapproved,
    /// The agent reported it gone from that path.
    Deleted,
}

impl LocalState {
    /// The state's name in the CLI and API.
    pub const fn as_str(self) -> &'static str {
        match self {
            LocalState::Approved => "approved",
            LocalState::Banned => "banned",
            LocalState::Unapproved => "unapproved",
            LocalState::Deleted => "deleted",
        }
    }
}

impl GlobalState {
    /// The state's name in the CLI and API.
    pub const fn as_str(self) -> &'static str {
        match self {
            GlobalState::ApprovedForAll => "approved for all",
            GlobalState::ApprovedByPolicy => "approved by policy",
            GlobalState::Unapproved => "unapproved",
            GlobalState::BannedForAll => "banned for all",
            GlobalState::BannedByPolicy => "banned by policy",
            GlobalState::Mixed => "mixed",
        }
    }
}

/// Derive the global state from the states of the file and of its publisher
/// (each at global or policy scope; computer-scope states are local and do
/// not count).
pub fn global_state<'a>(states: impl IntoIterator<Item = &'a ScopedState>) -> GlobalState {
    let (mut ban_all, mut approve_all, mut ban_some, mut approve_some) =
        (false, false, false, false);
    for s in states {
        match (s.scope, s.state) {
            (Scope::Global, FileState::Banned) => ban_all = true,
            (Scope::Global, FileState::Approved) => approve_all = true,
            (Scope::Policy(_), FileState::Banned) => ban_some = true,
            (Scope::Policy(_), FileState::Approved) => approve_some = true,
            _ => {}
        }
    }
    match (ban_all, approve_all, ban_some, approve_some) {
        (true, ..) => GlobalState::BannedForAll,
        (false, true, false, _) => GlobalState::ApprovedForAll,
        (false, true, true, _) | (false, false, true, true) => GlobalState::Mixed,
        (false, false, true, false) => GlobalState::BannedByPolicy,
        (false, false, false, true) => GlobalState::ApprovedByPolicy,
        (false, false, false, false) => GlobalState::Unapproved,
    }
}

/// A file's global state from that of its own states (`file`) and that of
/// its publisher's (`publisher`), by the rule engine's precedence: the file's
/// own states come first, so a file approved or banned for all is that
/// whatever its publisher; an unapproved file takes its publisher's state;
/// otherwise the two agree or the result is mixed.
pub fn combine_global(file: GlobalState, publisher: GlobalState) -> GlobalState {
    use GlobalState::*;
    match (file, publisher) {
        (BannedForAll | ApprovedForAll, _) => file,
        (Unapproved, p) => p,
        (f, Unapproved) => f,
        (ApprovedByPolicy, ApprovedForAll | ApprovedByPolicy) => publisher,
        (BannedByPolicy, BannedForAll | BannedByPolicy) => publisher,
        _ => Mixed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_state_combines_file_then_publisher() {
        use GlobalState::*;
        let all = [
            ApprovedForAll,
            ApprovedByPolicy,
            Unapproved,
            BannedForAll,
            BannedByPolicy,
            Mixed,
        ];
        for p in all {
            assert_eq!(combine_global(BannedForAll, p), BannedForAll);
            assert_eq!(combine_global(ApprovedForAll, p), ApprovedForAll);
            assert_eq!(combine_global(Unapproved, p), p);
        }
        for f in all {
            if f != Unapproved {
                assert_eq!(combine_global(f, Unapproved), f);
            }
        }
        assert_eq!(
            combine_global(ApprovedByPolicy, ApprovedForAll),
            ApprovedForAll
        );
        assert_eq!(combine_global(BannedByPolicy, BannedForAll), BannedForAll);
        assert_eq!(combine_global(ApprovedByPolicy, BannedForAll), Mixed);
        assert_eq!(combine_global(BannedByPolicy, ApprovedByPolicy), Mixed);
        assert_eq!(combine_global(Mixed, ApprovedForAll), Mixed);
    }

    const P: PolicyId = PolicyId(1);
    const OTHER_P: PolicyId = PolicyId(2);
    const C: ComputerId = ComputerId(10);
    const OTHER_C: ComputerId = ComputerId(11);

    fn st(scope: Scope, state: FileState) -> ScopedState {
        ScopedState { scope, state }
    }

    fn check(states: &[ScopedState], expect: Approval) {
        assert_eq!(resolve(states, P, C), expect, "{states:?}");
    }

    #[test]
    fn precedence_table() {
        use FileState::*;
        use Scope::*;
        let approved = |scope| Approval::Approved(ApprovalSource { scope });
        let banned = |scope| Approval::Banned(ApprovalSource { scope });
        check(&[], Approval::Unknown);
        check(&[st(Global, Approved)], approved(ScopeKind::Global));
        check(&[st(Policy(P), Approved)], approved(ScopeKind::Policy));
        check(&[st(Policy(OTHER_P), Approved)], Approval::Unknown);
        check(&[st(Computer(C), Approved)], approved(ScopeKind::Local));
        check(&[st(Computer(OTHER_C), Approved)], Approval::Unknown);
        // A ban anywhere applicable beats approvals everywhere.
        check(
            &[st(Computer(C), Approved), st(Global, Banned)],
            banned(ScopeKind::Global),
        );
        check(
            &[st(Global, Approved), st(Policy(P), Banned)],
            banned(ScopeKind::Policy),
        );
        check(
            &[st(Global, Approved), st(Policy(OTHER_P), Banned)],
            approved(ScopeKind::Global),
        );
        // Unapproved at a scope says nothing.
        check(
            &[st(Global, Unapproved), st(Policy(P), Approved)],
            approved(ScopeKind::Policy),
        );
        // The most specific source is named.
        check(
            &[st(Global, Approved), st(Computer(C), Approved)],
            approved(ScopeKind::Local),
        );
    }
}

#[cfg(test)]
mod global_tests {
    use super::*;

    #[test]
    fn global_state_table() {
        use FileState::*;
        let g = |v: &[(Scope, FileState)]| {
            let states: Vec<ScopedState> = v
                .iter()
                .map(|&(scope, state)| ScopedState { scope, state })
                .collect();
            global_state(&states)
        };
        let p1 = Scope::Policy(PolicyId(1));
        let p2 = Scope::Policy(PolicyId(2));
        let local = Scope::Computer(ComputerId(9));
        assert_eq!(g(&[]), GlobalState::Unapproved);
        assert_eq!(
            g(&[(local, Approved)]),
            GlobalState::Unapproved,
            "local states are not global"
        );
        assert_eq!(g(&[(Scope::Global, Approved)]), GlobalState::ApprovedForAll);
        assert_eq!(g(&[(p1, Approved)]), GlobalState::ApprovedByPolicy);
        assert_eq!(g(&[(p1, Banned)]), GlobalState::BannedByPolicy);
        assert_eq!(g(&[(p1, Banned), (p2, Approved)]), GlobalState::Mixed);
        assert_eq!(
            g(&[(Scope::Global, Approved), (p2, Banned)]),
            GlobalState::Mixed
        );
        assert_eq!(
            g(&[(Scope::Global, Banned), (p2, Approved)]),
            GlobalState::BannedForAll
        );
        assert_eq!(g(&[(Scope::Global, Unapproved)]), GlobalState::Unapproved);
    }
}
