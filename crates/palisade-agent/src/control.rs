//! The local control socket: `palisade status` asks the running agent what
//! it is doing. One JSON document per connection; root only (0600).
use crate::engine::StatsSnapshot;
use crate::latency::LatencySnapshot;
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
    /// How long answers took (absent from older agents).
    #[serde(default)]
    pub latency: LatencySnapshot,
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

/// A local user's approval request, as sent on the request socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LocalRequest {
    /// The blocked file (absolute path).
    pub path: String,
    /// Why the user needs it.
    #[serde(default)]
    pub reason: String,
}

/// The agent's answer on the request socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum LocalRequestAnswer {
    /// Filed: the request's id at the service.
    Filed {
        /// Request id.
        id: i64,
    },
    /// Refused, with the reason.
    Refused {
        /// Why.
        error: String,
    },
}

/// Requests per user per minute.
const REQUESTS_PER_MINUTE: usize = 10;

/// Serve approval requests from local users on `path` (mode 0666: any user
/// may ask; the requester is identified by the socket's peer credentials,
/// never by what they send). `file` answers one request for a uid.
pub fn serve_requests(
    path: &Path,
    file: impl Fn(u32, LocalRequest) -> Result<i64, String> + Send + 'static,
) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    std::thread::Builder::new()
        .name("palisade-requests".into())
        .spawn(move || {
            let mut recent: std::collections::HashMap<u32, Vec<std::time::Instant>> =
                Default::default();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                let answer = match rustix::net::sockopt::socket_peercred(&conn) {
                    Err(e) => LocalRequestAnswer::Refused {
                        error: format!("cannot identify the requester: {e}"),
                    },
                    Ok(cred) => {
                        let uid = cred.uid.as_raw();
                        let times = recent.entry(uid).or_default();
                        times.retain(|t| t.elapsed() < Duration::from_secs(60));
                        if times.len() >= REQUESTS_PER_MINUTE {
                            LocalRequestAnswer::Refused {
                                error: "too many requests; try again in a minute".into(),
                            }
                        } else {
                            times.push(std::time::Instant::now());
                            let mut body = Vec::new();
                            let _ = (&mut conn).take(64 * 1024).read_to_end(&mut body);
                            match serde_json::from_slice::<LocalRequest>(&body) {
                                Err(e) => LocalRequestAnswer::Refused {
                                    error: format!("malformed request: {e}"),
                                },
                                Ok(req) => match file(uid, req) {
                                    Ok(id) => LocalRequestAnswer::Filed { id },
                                    Err(error) => LocalRequestAnswer::Refused { error },
                                },
                            }
                        }
                    }
                };
                let _ = conn.write_all(&serde_json::to_vec(&answer).unwrap_or_default());
            }
        })?;
    Ok(())
}

/// Send a request to the agent listening on `path`.
pub fn request(path: &Path, req: &LocalRequest) -> Result<LocalRequestAnswer> {
    let mut conn = UnixStream::connect(path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(&serde_json::to_vec(req)?)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut body = Vec::new();
    conn.read_to_end(&mut body)?;
    serde_json::from_slice(&body).context("malformed answer from the agent")
}
