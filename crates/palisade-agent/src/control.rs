//! The local control socket: `palisade status` asks the running agent what
//! it is doing. One JSON document per connection; root only (0600).
use crate::engine::StatsSnapshot;
use anyhow::{Context, Result};
use palisade_core::{Level, Levels};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// What the agent says about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ControlStatus {
    /// Agent version.
    pub version: String,
    /// This computer's name at the service.
    pub computer: String,
    /// Service URL.
    pub server: String,
    /// Policy, as last heard from the service.
    pub policy: Option<String>,
    /// Whether the link to the service is up.
    pub connected: bool,
    /// The level in force.
    pub level: Level,
    /// The policy's levels.
    pub levels: Levels,
    /// Whether permission events are being read and answered.
    pub enforcing: bool,
    /// Whether the BPF guard is loaded.
    pub guard_active: bool,
    /// Mount points watched.
    pub watched: Vec<String>,
    /// Counters.
    pub stats: StatsSnapshot,
    /// Events waiting on disk for upload.
    pub spool_pending: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Approvals cached in memory.
    pub cached_approvals: usize,
}

/// Serve `status()` on `path` until the process exits.
pub fn serve(path: &Path, status: impl Fn() -> ControlStatus + Send + 'static) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("palisade-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let body = serde_json::to_vec(&status()).unwrap_or_default();
                let _ = conn.write_all(&body);
            }
        })?;
    Ok(())
}

/// Ask the agent listening on `path`.
pub fn query(path: &Path) -> Result<ControlStatus> {
    let mut conn = UnixStream::connect(path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = Vec::new();
    conn.read_to_end(&mut body)?;
    serde_json::from_slice(&body).context("malformed answer from the agent")
}
