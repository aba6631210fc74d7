//! The admin CLI's configuration: where the service is, which CA to trust,
//! which token to present, and where the local agent's control socket is.
//! `palisade up` writes it; admin commands read it.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// `cli.toml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CliConfig {
    /// Service base URL.
    pub(crate) server: String,
    /// PEM file of the service CA.
    pub(crate) ca_cert: PathBuf,
    /// Admin API token (PALISADE_TOKEN overrides).
    pub(crate) token: String,
    /// The local agent's control socket.
    #[serde(default)]
    pub(crate) agent_socket: Option<PathBuf>,
}

/// Where `cli.toml` is looked for, in order.
pub(crate) fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    let mut out = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        out.push(PathBuf::from(home).join(".config/palisade/cli.toml"));
    }
    out.push(PathBuf::from("/etc/palisade/cli.toml"));
    out
}

impl CliConfig {
    /// Load the first configuration found, its token replaced by
    /// `$PALISADE_TOKEN` when that is set.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<CliConfig> {
        let paths = candidates(explicit);
        for p in &paths {
            if p.exists() {
                let mut cfg = CliConfig::load_file(p)?;
                if let Ok(t) = std::env::var("PALISADE_TOKEN") {
                    if !t.is_empty() {
                        cfg.token = t;
                    }
                }
                return Ok(cfg);
            }
        }
        bail!(
            "no admin configuration found (looked at {}); run `palisade up` or pass --cli-config",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Read `path` as it is, without `$PALISADE_TOKEN`.
    pub(crate) fn load_file(path: &Path) -> Result<CliConfig> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        palisade_agent::config::parse_toml(&text).with_context(|| path.display().to_string())
    }

    /// Write to `path` (0600: it holds a token).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        palisade_agent::store::write_file_atomically(path, toml::to_string(self)?.as_bytes(), 0o600)
            .with_context(|| path.display().to_string())
    }
}
