use crate::sha256::Sha256;

/// A program image: where it was loaded from and what it contained.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Executable {
    /// Path of the executable as the kernel reports it (`/proc/PID/exe`).
    pub path: String,
    /// Content hash, when it could be computed.
    pub sha256: Option<Sha256>,
}

/// One ancestor in a process's parent chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Ancestor {
    /// Process id.
    pub pid: u32,
    /// Real user id.
    pub uid: u32,
    /// Its executable, when readable.
    pub exe: Option<Executable>,
}

/// Who is loading code: the process context sent with every request
/// (the patent's "process context": the process, its authenticated user and
/// the chain of parents up to the session's task parent).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProcessContext {
    /// Process (thread group) id.
    pub pid: u32,
    /// Real user id.
    pub uid: u32,
    /// Effective user id.
    pub euid: u32,
    /// The audit login uid: the user who authenticated, inherited down the
    /// process tree and unchanged by `su`/`sudo`. `None` when unset.
    pub loginuid: Option<u32>,
    /// The audit session id. `None` when unset.
    pub sessionid: Option<u32>,
    /// The process's current executable (for an exec, the image doing the exec).
    pub exe: Option<Executable>,
    /// Parent, grandparent, ... up to (excluding) pid 0, nearest first.
    pub ancestors: Vec<Ancestor>,
}

impl ProcessContext {
    /// A context that knows only the pid (the process vanished before it
    /// could be read).
    pub fn unknown(pid: u32) -> Self {
        ProcessContext {
            pid,
            uid: u32::MAX,
            euid: u32::MAX,
            loginuid: None,
            sessionid: None,
            exe: None,
            ancestors: Vec::new(),
        }
    }
}
