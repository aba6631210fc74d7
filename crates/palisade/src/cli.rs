//! Command-line definitions.
use clap::{Args, Parser, Subcommand};
use palisade_core::Level;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Palisade: zero-trust application control for Linux.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// More logging (-v debug, -vv trace). PALISADE_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Admin CLI configuration (server URL, CA, token); default: $PALISADE_CLI_CONFIG,
    /// then ~/.config/palisade/cli.toml, then /etc/palisade/cli.toml.
    #[arg(long, global = true, env = "PALISADE_CLI_CONFIG")]
    pub(crate) cli_config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the whole system on this machine: server on SQLite, local agent, scan.
    Up(UpArgs),
    /// Run the policy lookup service, or administer its database offline.
    Server(ServerArgs),
    /// Run the enforcement agent, or enroll it.
    Agent(AgentArgs),
    /// Approve, ban, unapprove or inspect a file (by path or SHA-256).
    #[command(subcommand)]
    File(FileCmd),
    /// List events; --follow to keep listening.
    Events(EventsArgs),
    /// List enrolled computers.
    Computers(JsonFlag),
    /// Manage policies (security groups) and their enforcement levels.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Exit 0 when the local agent is connected and enforcing at its policy's level.
    Status(StatusArgs),
    /// Create a one-time enrollment token for new computers.
    EnrollToken {
        /// Policy the new computers join.
        #[arg(long, default_value = "default")]
        policy: String,
        /// How many computers may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where everything is kept (server database, CA, agent state).
    #[arg(long, default_value = "/var/lib/palisade")]
    pub(crate) data_dir: PathBuf,
    /// Watch only the filesystem holding PATH (repeatable); default: every local filesystem.
    #[arg(long = "watch", value_name = "PATH")]
    pub(crate) watch: Vec<PathBuf>,
    /// Enforce: block what is not approved (default: monitor).
    #[arg(long)]
    pub(crate) lockdown: bool,
    /// Skip the initialization scan (bulk approval of what is installed).
    #[arg(long)]
    pub(crate) no_scan: bool,
    /// Address of the service.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub(crate) listen: SocketAddr,
    /// Deadline to answer a permission event, in milliseconds.
    #[arg(long)]
    pub(crate) deadline_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    #[command(subcommand)]
    pub(crate) command: Option<ServerCmd>,
    /// Server configuration file (TOML).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Database URL: sqlite:///path/file.db or postgres://user:pass@host/db.
    #[arg(long)]
    pub(crate) database: Option<String>,
    /// Listen address.
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// Names (DNS or IP) for the server certificate (repeatable).
    #[arg(long = "tls-name")]
    pub(crate) tls_names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServerCmd {
    /// Create an organization with a `default` policy and an admin; print the admin token.
    Init {
        /// Database URL.
        #[arg(long)]
        database: String,
        /// Organization name.
        #[arg(long, default_value = "default")]
        org: String,
        /// Admin name.
        #[arg(long, default_value = "admin")]
        admin: String,
    },
    /// Print the service CA certificate (PEM), for admin tools and agents.
    Ca {
        /// Database URL.
        #[arg(long)]
        database: String,
    },
    /// Print a new API token for an admin.
    AdminToken {
        /// Database URL.
        #[arg(long)]
        database: String,
        /// Organization name.
        #[arg(long, default_value = "default")]
        org: String,
        /// Admin name.
        #[arg(long, default_value = "admin")]
        admin: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    pub(crate) command: Option<AgentCmd>,
    /// Agent configuration file (TOML).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (identity, caches, event spool).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Watch only the filesystem holding PATH (repeatable).
    #[arg(long = "watch", value_name = "PATH")]
    pub(crate) watch: Vec<PathBuf>,
    /// Run the initialization scan (bulk approval) after connecting.
    #[arg(long)]
    pub(crate) scan: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCmd {
    /// Enroll this computer with a one-time token.
    Enroll {
        /// Service URL, e.g. https://palisade.example:8443.
        #[arg(long)]
        server: String,
        /// Enrollment token (plt1....).
        #[arg(long, env = "PALISADE_ENROLL_TOKEN")]
        token: String,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FileCmd {
    /// Approve a file (globally, or for a policy or computer).
    Approve(FileStateArgs),
    /// Ban a file: a ban beats every approval.
    Ban(FileStateArgs),
    /// Remove an approval or ban at a scope.
    Unapprove(FileStateArgs),
    /// Show what is known about a file and why it is allowed or blocked.
    Show {
        /// Path of a local file, or a SHA-256.
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct FileStateArgs {
    /// Paths of local files, or SHA-256 hashes (several allowed).
    #[arg(required = true)]
    pub(crate) targets: Vec<String>,
    /// Only for computers in this policy.
    #[arg(long)]
    pub(crate) policy: Option<String>,
    /// Only on this computer (a local state).
    #[arg(long)]
    pub(crate) computer: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Keep listening for new events.
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Only this kind: blocked, would_block, approved.
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// Only this computer.
    #[arg(long)]
    pub(crate) computer: Option<String>,
    /// How many recent events to show first.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
    /// List policies.
    List(JsonFlag),
    /// Create a policy.
    Create {
        /// Name.
        name: String,
        /// Level while connected.
        #[arg(long, default_value = "monitor")]
        level: Level,
        /// Level while disconnected (default: same).
        #[arg(long)]
        disconnected: Option<Level>,
    },
    /// Set a policy's enforcement level: disabled, monitor or lockdown.
    SetLevel {
        /// Policy name.
        policy: String,
        /// Level while connected.
        level: Level,
        /// Level while disconnected (default: unchanged).
        #[arg(long)]
        disconnected: Option<Level>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The agent's control socket (default: from the CLI configuration).
    #[arg(long)]
    pub(crate) socket: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}
