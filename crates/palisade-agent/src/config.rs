//! Agent configuration: a TOML file and command-line overrides, parsed, then
//! validated into an [`AgentConfig`]. Every error names the field at fault.
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration was refused.
#[derive(Debug)]
pub struct ConfigError {
    /// The field at fault (dotted path); empty when the text is not TOML
    /// at all (the message then says where it stops being TOML).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid agent configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid agent configuration: {}: {}",
                self.field, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parse TOML into `T`. A value the type refuses (an unknown or missing
/// field, a value of the wrong type) is a [`ConfigError`] naming its field
/// (dotted path); text that is not TOML names no field but the line and
/// column where it stops being TOML. (The offending line itself is not
/// quoted: in `cli.toml` it may hold a token.)
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().to_owned();
        match field_of(&path, &message) {
            Some(field) => ConfigError::new(&field, message),
            None => ConfigError::new("", at_position(text, inner.span(), &message)),
        }
    })
}

/// The field a serde error from a TOML document is about: the path where it
/// happened, extended by the field's name for "unknown field" and "missing
/// field" (reported at the enclosing table, and by serde_path_to_error
/// sometimes with the name already appended). `None` when there is no path
/// and no named field: the document did not parse.
fn field_of(path: &str, message: &str) -> Option<String> {
    let base = if path == "." { "" } else { path };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(name) if base == name || base.ends_with(&format!(".{name}")) => Some(base.to_owned()),
        Some(name) if base.is_empty() => Some(name.to_owned()),
        Some(name) => Some(format!("{base}.{name}")),
        None if base.is_empty() => None,
        None => Some(base.to_owned()),
    }
}

/// `message` prefixed by the 1-based line and column (in characters) where
/// `span` starts in `text`.
fn at_position(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let Some(start) = span.map(|s| s.start).filter(|&s| text.is_char_boundary(s)) else {
        return format!("not valid TOML: {message}");
    };
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("not valid TOML at line {line}, column {column}: {message}")
}

/// The configuration file as written (every field optional).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfigFile {
    /// Where the agent keeps its identity, caches and event spool.
    pub data_dir: Option<PathBuf>,
    /// Paths whose filesystems are watched; empty: every local filesystem.
    pub watch: Option<Vec<PathBuf>>,
    /// Deadline to answer a permission event, in milliseconds.
    pub decision_deadline_ms: Option<u64>,
    /// Deadline for one lookup at the service, in milliseconds.
    pub lookup_timeout_ms: Option<u64>,
    /// Worker threads deciding events that miss the caches.
    pub workers: Option<usize>,
    /// Interpreter program names (globs with `*`) whose reads of scripts are controlled.
    pub interpreters: Option<Vec<String>>,
    /// File name extensions that mark a file as a script when an interpreter reads it.
    pub script_extensions: Option<Vec<String>>,
    /// Refuse execution of code from memory (memfd) while enforcing.
    pub block_memfd_exec: Option<bool>,
    /// Let code run from filesystems mounted inside user namespaces (rootless
    /// containers), which the agent cannot see to watch. Only the BPF guard
    /// can refuse it; by default it does, while enforcing.
    pub allow_user_namespace_filesystems: Option<bool>,
    /// Hash executable files when they are written, so their first run needs no hashing.
    pub hash_on_write: Option<bool>,
    /// Path of the local control socket (`palisade status`).
    pub control_socket: Option<PathBuf>,
    /// Path of the socket local users file approval requests on.
    pub request_socket: Option<PathBuf>,
    /// Root of the system whose package database (dpkg, apt lists) vouches
    /// for installed files (default `/`; another root for a chroot).
    pub package_root: Option<PathBuf>,
    /// Seconds between status reports to the service while connected,
    /// when the agent answered events since the last one (its answer
    /// times, for the fleet view). Default 300.
    pub status_interval_secs: Option<u64>,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the agent keeps its identity, caches and event spool.
    pub data_dir: PathBuf,
    /// Paths whose filesystems are watched; empty: every local filesystem.
    pub watch: Vec<PathBuf>,
    /// Deadline to answer a permission event.
    pub decision_deadline: Duration,
    /// Deadline for one lookup at the service.
    pub lookup_timeout: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Interpreter name globs.
    pub interpreters: Vec<String>,
    /// Script extensions, lowercase, without the dot.
    pub script_extensions: Vec<String>,
    /// Refuse memfd execution while enforcing.
    pub block_memfd_exec: bool,
    /// Let code on filesystems mounted inside user namespaces run.
    pub allow_user_namespace_filesystems: bool,
    /// Hash executable files when written.
    pub hash_on_write: bool,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Request socket path (any local user may connect).
    pub request_socket: PathBuf,
    /// Root of the package database.
    pub package_root: PathBuf,
    /// Status reports while connected: at most this often.
    pub status_interval: Duration,
}

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/palisade/agent";

/// Interpreters controlled by default.
pub const DEFAULT_INTERPRETERS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "ksh93",
    "mksh",
    "csh",
    "tcsh",
    "fish",
    "busybox",
    "python",
    "python2*",
    "python3",
    "python3.*",
    "pypy*",
    "perl",
    "perl5*",
    "ruby",
    "ruby*",
    "php",
    "php*",
    "node",
    "nodejs",
    "lua",
    "lua5*",
    "luajit",
    "tclsh",
    "tclsh*",
    "wish*",
    "awk",
    "gawk",
    "mawk",
    "Rscript",
    "osascript",
    "pwsh",
];

/// Script extensions recognised by default.
pub const DEFAULT_SCRIPT_EXTENSIONS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "csh", "fish", "py", "pyc", "pyo", "pyw", "pl", "pm", "rb",
    "php", "phar", "js", "mjs", "cjs", "lua", "tcl", "awk", "r", "ps1",
];

impl AgentConfigFile {
    /// Parse TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        parse_toml(text)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("<file>", format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Validate into an [`AgentConfig`], filling defaults.
    pub fn validate(self) -> Result<AgentConfig, ConfigError> {
        let data_dir = self.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        if !data_dir.is_absolute() {
            return Err(ConfigError::new("data_dir", "must be an absolute path"));
        }
        let watch = self.watch.unwrap_or_default();
        for w in &watch {
            if !w.is_absolute() {
                return Err(ConfigError::new(
                    "watch",
                    format!("{} is not an absolute path", w.display()),
                ));
            }
        }
        let deadline = self.decision_deadline_ms.unwrap_or(3000);
        if !(50..=60_000).contains(&deadline) {
            return Err(ConfigError::new(
                "decision_deadline_ms",
                "must be between 50 and 60000",
            ));
        }
        let lookup = self.lookup_timeout_ms.unwrap_or(deadline.min(1500));
        if lookup == 0 || lookup > deadline {
            return Err(ConfigError::new(
                "lookup_timeout_ms",
                format!("must be between 1 and decision_deadline_ms ({deadline})"),
            ));
        }
        let workers = self.workers.unwrap_or(4);
        if !(1..=64).contains(&workers) {
            return Err(ConfigError::new("workers", "must be between 1 and 64"));
        }
        let interpreters = self
            .interpreters
            .unwrap_or_else(|| DEFAULT_INTERPRETERS.iter().map(|s| s.to_string()).collect());
        if let Some(bad) = interpreters
            .iter()
            .find(|s| s.is_empty() || s.contains('/'))
        {
            return Err(ConfigError::new(
                "interpreters",
                format!("{bad:?} must be a program name (glob allowed), not a path"),
            ));
        }
        let script_extensions: Vec<String> = self
            .script_extensions
            .unwrap_or_else(|| {
                DEFAULT_SCRIPT_EXTENSIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .into_iter()
            .map(|s| s.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        if script_extensions.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::new("script_extensions", "empty extension"));
        }
        let control_socket = self
            .control_socket
            .unwrap_or_else(|| data_dir.join("agent.sock"));
        let request_socket = self
            .request_socket
            .unwrap_or_else(|| data_dir.join("request.sock"));
        let status_interval = self.status_interval_secs.unwrap_or(300);
        if !(5..=86_400).contains(&status_interval) {
            return Err(ConfigError::new(
                "status_interval_secs",
                "must be between 5 and 86400",
            ));
        }
        Ok(AgentConfig {
            data_dir,
            watch,
            decision_deadline: Duration::from_millis(deadline),
            lookup_timeout: Duration::from_millis(lookup),
            workers,
            interpreters,
            script_extensions,
            block_memfd_exec: self.block_memfd_exec.unwrap_or(true),
            allow_user_namespace_filesystems: self
                .allow_user_namespace_filesystems
                .unwrap_or(false),
            hash_on_write: self.hash_on_write.unwrap_or(true),
            control_socket,
            request_socket,
            package_root: match self.package_root {
                Some(p) if !p.is_absolute() => {
                    return Err(ConfigError::new("package_root", "must be an absolute path"))
                }
                Some(p) => p,
                None => PathBuf::from("/"),
            },
            status_interval: Duration::from_secs(status_interval),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        AgentConfigFile::parse(text)
            .and_then(|f| f.validate())
            .unwrap_err()
    }

    #[test]
    fn defaults_are_valid() {
        let c = AgentConfigFile::parse("").unwrap().validate().unwrap();
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.watch.is_empty());
        assert!(c.lookup_timeout <= c.decision_deadline);
    }

    /// Text that is not TOML names no field (before, the first backquoted
    /// word of the parser's message was taken for one: "`.`") but where it
    /// stops being TOML.
    #[test]
    fn syntax_errors_say_where() {
        let e = err("workers 4\n");
        assert_eq!(e.field, "", "{e}");
        assert!(e.to_string().contains("line 1, column 9"), "{e}");
        let e = err("data_dir = \"/var/lib/palisade\"\nwatch = [\"/srv\",\nworkers = 4\n");
        assert_eq!(e.field, "", "{e}");
        assert!(e.to_string().contains("line 3, column"), "{e}");
        // A field's error still names the field, nested or not.
        let e =
            parse_toml::<std::collections::BTreeMap<String, AgentConfigFile>>("[a]\nwatch = 1\n")
                .unwrap_err();
        assert_eq!(e.field, "a.watch", "{e}");
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code, reason = "only the error is looked at")]
        struct Needs {
            token: String,
        }
        assert_eq!(parse_toml::<Needs>("").unwrap_err().field, "token");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err("wathc = []").field, "wathc");
        assert_eq!(err("workers = \"four\"").field, "workers");
        assert_eq!(err("workers = 0").field, "workers");
        assert_eq!(
            err("decision_deadline_ms = 10").field,
            "decision_deadline_ms"
        );
        assert_eq!(
            err("decision_deadline_ms = 500\nlookup_timeout_ms = 900").field,
            "lookup_timeout_ms"
        );
        assert_eq!(err("watch = [\"relative\"]").field, "watch");
        assert_eq!(err("data_dir = \"x\"").field, "data_dir");
        assert_eq!(
            err("status_interval_secs = 1").field,
            "status_interval_secs"
        );
        assert_eq!(
            err("interpreters = [\"/usr/bin/python3\"]").field,
            "interpreters"
        );
        let e = err("wathc = []").to_string();
        assert!(e.contains("wathc"), "{e}");
    }
}
