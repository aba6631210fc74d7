//! Palisade's agent: the policy enforcement point on one host.
//!
//! It answers every fanotify permission event on the watched filesystems
//! (exec, and opens of libraries and scripts) with the seed's lookup order:
//! the kernel-side cache (fanotify ignore marks and the BPF guard's allowed
//! map), the agent's memory cache, the policy lookup service, and the
//! persistent on-disk cache when the service is unreachable. See
//! [`engine`] for the threads and the decision path, [`link`] for the
//! service side, [`store`] for what is kept on disk.
//!
//! Architecture invariant: no `unsafe` here (the kernel is reached through
//! `palisade-kernel`), and nothing on the decision path waits on the network,
//! the disk or logging without a deadline.
#![forbid(unsafe_code)]

pub mod agent;
pub mod asuser;
pub mod cache;
mod callerpath;
pub mod conditions;
pub mod config;
pub mod control;
pub mod debian;
pub mod engine;
pub mod files;
pub mod identity;
pub mod latency;
pub mod link;
pub mod memfd;
pub mod mounts;
pub mod procfs;
pub mod removals;
pub mod report;
pub mod scan;
pub mod store;
pub mod syscall;
pub mod users;

pub use agent::{RunningAgent, StartOptions};
pub use config::{AgentConfig, AgentConfigFile, ConfigError};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
