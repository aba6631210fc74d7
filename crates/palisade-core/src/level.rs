use std::fmt;
use std::str::FromStr;

/// How strictly a policy enforces: what happens to code that is not approved.
///
/// Ordered from least to most strict, so `a < b` means "b enforces more".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No enforcement and no reporting: the agent answers every load with allow.
    Disabled,
    /// Everything runs; what lockdown would have blocked is reported as a would-block.
    Monitor,
    /// Unknown code is blocked, and the user may request its approval
    /// (explicit blocks stay blocks).
    Prompt,
    /// Only approved code runs; everything else is blocked and reported.
    Lockdown,
}

/// The level names accepted by [`Level::from_str`], for error messages.
pub const LEVEL_NAMES: &str = "disabled, monitor, prompt, lockdown";

/// Why a string is not an enforcement level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown enforcement level {got:?} (expected one of: {LEVEL_NAMES})")]
pub struct ParseLevelError {
    got: String,
}

impl Level {
    /// Every level, least strict first.
    pub const ALL: [Level; 4] = [
        Level::Disabled,
        Level::Monitor,
        Level::Prompt,
        Level::Lockdown,
    ];

    /// The level's name as used in configuration, the CLI and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Disabled => "disabled",
            Level::Monitor => "monitor",
            Level::Prompt => "prompt",
            Level::Lockdown => "lockdown",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ParseLevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| ParseLevelError {
                got: s.chars().take(40).collect(),
            })
    }
}

/// The pair of levels a policy sets: one while the agent can reach the policy
/// lookup service, one while it cannot (answering from its persistent cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Levels {
    /// Level while connected to the service.
    pub connected: Level,
    /// Level while disconnected.
    pub disconnected: Level,
}

impl Levels {
    /// The level in force given the connection state.
    pub const fn effective(self, connected: bool) -> Level {
        if connected {
            self.connected
        } else {
            self.disconnected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>().unwrap(), l);
        }
        let err = "strict".parse::<Level>().unwrap_err().to_string();
        assert!(err.contains("strict") && err.contains("lockdown"), "{err}");
        assert!(Level::Disabled < Level::Monitor && Level::Monitor < Level::Prompt);
        assert!(Level::Prompt < Level::Lockdown);
        let levels = Levels {
            connected: Level::Monitor,
            disconnected: Level::Lockdown,
        };
        assert_eq!(levels.effective(true), Level::Monitor);
        assert_eq!(levels.effective(false), Level::Lockdown);
    }
}
