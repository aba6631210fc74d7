//! The decision for one load of code, given its approval and the level in force.
use crate::approval::Approval;
use crate::level::Level;
use std::fmt;

/// How code is being loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `execve` of a binary or of a script through its shebang.
    Execute,
    /// A shared object opened to be mapped (dynamic loader, `dlopen`,
    /// `LD_PRELOAD`, the loader run directly on a file).
    LoadLibrary,
    /// A script file read by an interpreter (`python3 x.py`, `bash x.sh`).
    InterpretScript,
    /// An executable mapping of a file that was not approved when mapped,
    /// reported by the kernel guard after the fact.
    MapExecutable,
    /// Code executed from memory (`memfd_create` + `fexecve`), which has no
    /// file on disk to approve.
    ExecuteMemory,
    /// Not a load: the file was found (and approved) by the initialization scan.
    Inventory,
    /// Opening a file for writing (write control by custom rules).
    Write,
}

impl Operation {
    /// The operation's name in events and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Execute => "execute",
            Operation::LoadLibrary => "load_library",
            Operation::InterpretScript => "interpret_script",
            Operation::MapExecutable => "map_executable",
            Operation::ExecuteMemory => "execute_memory",
            Operation::Inventory => "inventory",
            Operation::Write => "write",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the kernel is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let the load proceed.
    Allow,
    /// Refuse it: the process gets a permission error and none of the code runs.
    Block,
}

/// What is reported about the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Nothing worth an event.
    Nothing,
    /// The load was blocked.
    Blocked,
    /// The load was allowed only because the level does not enforce.
    WouldBlock,
    /// Allowed, and reported anyway (a `report` rule, verbose logging).
    Reported,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the kernel is told.
    pub verdict: Verdict,
    /// What is reported.
    pub report: Report,
    /// Whether the verdict depends only on the file's content and may be kept
    /// in the kernel-side cache until the file or the policy changes.
    pub cacheable: bool,
}

/// Decide one load of code with the given approval at the given level.
///
/// | approval \ level | disabled | monitor             | lockdown         |
/// |------------------|----------|---------------------|------------------|
/// | approved         | allow    | allow (cacheable)   | allow (cacheable)|
/// | banned/unknown   | allow    | allow + would-block | block + blocked  |
pub fn decide(approval: &Approval, level: Level) -> Decision {
    let approved = matches!(approval, Approval::Approved(_));
    match (level, approved) {
        (Level::Disabled, _) => Decision {
            verdict: Verdict::Allow,
            report: Report::Nothing,
            cacheable: false,
        },
        (_, true) => Decision {
            verdict: Verdict::Allow,
            report: Report::Nothing,
            cacheable: true,
        },
        (Level::Monitor, false) => Decision {
            verdict: Verdict::Allow,
            report: Report::WouldBlock,
            cacheable: false,
        },
        (Level::Lockdown | Level::Prompt, false) => Decision {
            verdict: Verdict::Block,
            report: Report::Blocked,
            cacheable: false,
        },
    }
}

/// The verdict when no decision could be reached before the deadline (the
/// file could not be hashed in time, the service and the disk cache did not
/// answer): fail closed only where the level enforces.
pub const fn on_timeout(level: Level) -> Verdict {
    match level {
        Level::Lockdown | Level::Prompt => Verdict::Block,
        Level::Monitor | Level::Disabled => Verdict::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{ApprovalSource, ScopeKind};

    #[test]
    fn decision_table() {
        let approved = Approval::Approved(ApprovalSource {
            scope: ScopeKind::Global,
        });
        let banned = Approval::Banned(ApprovalSource {
            scope: ScopeKind::Local,
        });
        let unknown = Approval::Unknown;
        let d = |a, l| {
            let d = decide(&a, l);
            (d.verdict, d.report, d.cacheable)
        };
        use Report::*;
        use Verdict::*;
        assert_eq!(d(approved, Level::Lockdown), (Allow, Nothing, true));
        assert_eq!(d(approved, Level::Monitor), (Allow, Nothing, true));
        assert_eq!(d(approved, Level::Disabled), (Allow, Nothing, false));
        assert_eq!(d(banned, Level::Lockdown), (Block, Blocked, false));
        assert_eq!(d(unknown, Level::Lockdown), (Block, Blocked, false));
        assert_eq!(d(banned, Level::Monitor), (Allow, WouldBlock, false));
        assert_eq!(d(unknown, Level::Monitor), (Allow, WouldBlock, false));
        assert_eq!(d(banned, Level::Disabled), (Allow, Nothing, false));
        assert_eq!(on_timeout(Level::Lockdown), Block);
        assert_eq!(on_timeout(Level::Monitor), Allow);
    }
}
