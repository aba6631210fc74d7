//! The server's configuration: parsed from TOML, then validated; every error
//! names the field at fault.
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Configuration of one server replica.
///
/// Every field has a default, so an empty TOML document is a valid
/// configuration (a server on `127.0.0.1:8443` over
/// `/var/lib/palisade/palisade.db`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port of the TLS listener (agent and admin APIs). Port 0
    /// picks a free port (see [`crate::Server::local_addr`]).
    pub listen: SocketAddr,
    /// Database URL: `sqlite:///path/palisade.db?mode=rwc` (embedded, the
    /// default) or `postgres://user:password@host:port/database`.
    pub database: String,
    /// Names (DNS names or IP addresses) put in the replica's server
    /// certificate; agents and admin tools must reach the service by one of
    /// them.
    pub tls_names: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace_secs: u64,
    /// How long the change log (the `changes` table) is kept; an agent that
    /// asks for changes older than that is told to reset its cache.
    pub change_retention_days: u64,
    /// How long events are kept, counted from their arrival: older ones are
    /// deleted, oldest first, every 10 minutes by each replica. 0 keeps
    /// them forever.
    pub event_retention_days: u64,
    /// How long the catalog keeps an instance (a hash at a path on a
    /// computer) after its agent reported it gone, deleted then like
    /// events. 0 keeps them forever.
    pub deleted_instance_retention_days: u64,
    /// Maximum number of pooled database connections.
    pub db_max_connections: u32,
    /// Capacity, in requests, of the queue between the lookup path and the
    /// catalog recorder; when full, catalog records are dropped (and counted)
    /// rather than slowing lookups.
    pub catalog_queue: usize,
    /// Whether event rules' alerts (webhooks, syslog over UDP) may go to
    /// addresses that are not public: loopback, private networks, link-local
    /// (cloud metadata services), CGNAT, unique local, multicast and the
    /// like. Off by default: an admin who may create rules could otherwise
    /// make the server reach what only the server can. Checked on the
    /// addresses resolved when each alert is sent.
    pub alerts_allow_private_addresses: bool,
    /// Whether a syslog action without an address writes to this host's
    /// `/dev/log`. Off by default.
    pub alerts_local_syslog: bool,
}

/// The host name of this machine, for the default certificate names.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && valid_dns_name(name)).then(|| name.to_owned())
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut tls_names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(String::from)
            .collect();
        if let Some(h) = host_name() {
            if !tls_names.contains(&h) {
                tls_names.push(h);
            }
        }
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            database: "sqlite:///var/lib/palisade/palisade.db?mode=rwc".to_owned(),
            tls_names,
            max_body_bytes: 8 * 1024 * 1024,
            shutdown_grace_secs: 10,
            change_retention_days: 30,
            event_retention_days: 365,
            deleted_instance_retention_days: 365,
            db_max_connections: 16,
            catalog_queue: 1024,
            alerts_allow_private_addresses: false,
            alerts_local_syslog: false,
        }
    }
}

/// A configuration error, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    message: String,
}

impl ConfigError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The field at fault (a dotted path such as `tls_names[1]`; empty when
    /// the document itself is unreadable).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid server configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid server configuration: field `{}`: {}",
                self.field, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// Parse and validate a TOML document. Unknown fields are refused.
    pub fn from_toml(text: &str) -> Result<ServerConfig, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: ServerConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_owned();
            let field = field_from_serde(&path, &message);
            // No field: the text is not TOML. Say where it stops being
            // TOML (the position, not the line: it may hold a password).
            let message = if field.is_empty() {
                at_position(text, inner.span(), &message)
            } else {
                message
            };
            ConfigError { field, message }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Check the values that parsing alone does not (for a configuration
    /// built in code or embedded in a larger document).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let db = self.database.as_str();
        let db_ok = db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://");
        if !db_ok {
            return Err(ConfigError::new(
                "database",
                "expected a URL starting with sqlite: or postgres://",
            ));
        }
        if self.tls_names.is_empty() {
            return Err(ConfigError::new(
                "tls_names",
                "at least one DNS name or IP address is needed for the server certificate",
            ));
        }
        for (i, name) in self.tls_names.iter().enumerate() {
            if name.parse::<IpAddr>().is_err() && !valid_dns_name(name) {
                return Err(ConfigError::new(
                    &format!("tls_names[{i}]"),
                    format!("{name:?} is neither an IP address nor a DNS name"),
                ));
            }
        }
        if self.max_body_bytes < MIN_BODY_BYTES {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!(
                    "must be at least {MIN_BODY_BYTES} (4 MiB): an agent's batches (2000 \
                     inventory items, 500 events) and `palisade reputation import`'s \
                     requests (20000 entries) need that room"
                ),
            ));
        }
        if self.shutdown_grace_secs > 3600 {
            return Err(ConfigError::new(
                "shutdown_grace_secs",
                "must be at most 3600",
            ));
        }
        if self.change_retention_days == 0 {
            return Err(ConfigError::new(
                "change_retention_days",
                "must be at least 1",
            ));
        }
        if self.event_retention_days > MAX_RETENTION_DAYS {
            return Err(ConfigError::new(
                "event_retention_days",
                format!("must be at most {MAX_RETENTION_DAYS} (100 years; 0 keeps events forever)"),
            ));
        }
        if self.deleted_instance_retention_days > MAX_RETENTION_DAYS {
            return Err(ConfigError::new(
                "deleted_instance_retention_days",
                format!(
                    "must be at most {MAX_RETENTION_DAYS} (100 years; 0 keeps instances forever)"
                ),
            ));
        }
        if !(1..=1000).contains(&self.db_max_connections) {
            return Err(ConfigError::new(
                "db_max_connections",
                "must be between 1 and 1000",
            ));
        }
        if !(1..=MAX_CATALOG_QUEUE).contains(&self.catalog_queue) {
            return Err(ConfigError::new(
                "catalog_queue",
                format!("must be between 1 and {MAX_CATALOG_QUEUE}"),
            ));
        }
        Ok(())
    }
}

/// Smallest `max_body_bytes`: room for the largest requests the agent and
/// the CLI send.
const MIN_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Largest `catalog_queue` (messages; each holds one request's sightings).
const MAX_CATALOG_QUEUE: usize = 1 << 20;

/// The longest `event_retention_days` and
/// `deleted_instance_retention_days`: 100 years.
const MAX_RETENTION_DAYS: u64 = 36_500;

/// The field a serde error is about: the path where it happened, extended by
/// the field name for "unknown field" / "missing field" messages (which serde
/// reports at the enclosing table).
pub(crate) fn field_from_serde(path: &str, message: &str) -> String {
    let base = if path == "." { "" } else { path };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match named {
        // serde_path_to_error already ends the path with an unknown field's name.
        Some(name) if base == name || base.ends_with(&format!(".{name}")) => base.to_owned(),
        Some(name) if base.is_empty() => name.to_owned(),
        Some(name) => format!("{base}.{name}"),
        None => base.to_owned(),
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

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names() {
        assert_eq!(field_from_serde(".", "unknown field `x`, expected y"), "x");
        assert_eq!(field_from_serde("x", "unknown field `x`, expected y"), "x");
        assert_eq!(
            field_from_serde("a.x", "unknown field `x`, expected y"),
            "a.x"
        );
        assert_eq!(field_from_serde("a[1]", "missing field `b`"), "a[1].b");
        assert_eq!(field_from_serde("listen", "invalid"), "listen");
        assert!(valid_dns_name("palisade.example.com"));
        assert!(!valid_dns_name("bad name"));
    }

    /// Text that is not TOML names no field but where it stops being TOML
    /// (before, only the parser's message was kept: no line, no column).
    #[test]
    fn syntax_errors_say_where() {
        let e = ServerConfig::from_toml("workers 4\n").unwrap_err();
        assert_eq!(e.field(), "", "{e}");
        assert!(e.to_string().contains("line 1, column 9"), "{e}");
        let e = ServerConfig::from_toml(
            "listen = \"127.0.0.1:8443\"\ntls_names = [\"a.example\",\ndatabase = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field(), "", "{e}");
        assert!(e.to_string().contains("line 3, column 1"), "{e}");
        // A field's error still names it.
        let e = ServerConfig::from_toml("listen = 1\n").unwrap_err();
        assert_eq!(e.field(), "listen", "{e}");
    }
}
