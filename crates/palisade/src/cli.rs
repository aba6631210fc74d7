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
    /// Publishers (signed package repositories): list, approve, ban, trust.
    #[command(subcommand)]
    Publisher(PublisherCmd),
    /// Curated rule bundles.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Import reputation data (trust ratings for hashes).
    #[command(subcommand)]
    Reputation(ReputationCmd),
    /// Rules: trusted directories and users, updaters, reputation, custom and event rules.
    #[command(subcommand)]
    Rule(RuleCmd),
    /// Folder protection: code in a folder runs only under named parent processes.
    #[command(subcommand)]
    Folder(FolderCmd),
    /// Approval requests (prompt level): list, grant, deny; or file one as a local user.
    #[command(subcommand)]
    Request(RequestCmd),
    /// Admins of your organization: list, add, grant and revoke roles, disable.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Roles (sets of permissions): list, add custom ones.
    #[command(subcommand)]
    Role(RoleCmd),
    /// API tokens for the CLI (PALISADE_TOKEN): create, list, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Conditional access for admins: MFA, trusted networks, office hours.
    #[command(subcommand)]
    Access(AccessCmd),
    /// The tamper-evident audit log of admin operations.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Create a one-time enrollment token for new computers (or, with
    /// --list, show those that may still enroll; --revoke ID ends one).
    EnrollToken {
        /// List the tokens that may still enroll a computer.
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke this token (by the id --list shows).
        #[arg(long, value_name = "ID")]
        revoke: Option<i64>,
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
    /// Set the `default` policy to lockdown (after the initialization scan,
    /// if one is due). Without --lockdown or --monitor, the first start sets
    /// monitor and a restart keeps the policy's levels.
    #[arg(long, conflicts_with = "monitor")]
    pub(crate) lockdown: bool,
    /// Set the `default` policy to monitor.
    #[arg(long)]
    pub(crate) monitor: bool,
    /// Skip the initialization scan (bulk approval of what is installed).
    #[arg(long)]
    pub(crate) no_scan: bool,
    /// Address of the service.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub(crate) listen: SocketAddr,
    /// Deadline to answer a permission event, in milliseconds.
    #[arg(long)]
    pub(crate) deadline_ms: Option<u64>,
    /// Root of the system whose package database vouches for installed files
    /// (default `/`; for a chroot).
    #[arg(long)]
    pub(crate) package_root: Option<PathBuf>,
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
        /// Service URL, e.g. https://palisade.example:8443 (https only).
        #[arg(long)]
        server: String,
        /// Enrollment token (plt1....).
        #[arg(long, env = "PALISADE_ENROLL_TOKEN")]
        token: String,
        /// Data directory (default: `agent --data-dir`, else the
        /// configuration's `data_dir`, else /var/lib/palisade/agent).
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
        /// A SHA-256 (64 hex digits), or the path of a local file. A file
        /// whose name is 64 hex digits is given as ./NAME: the bare name is
        /// taken as the hash.
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct FileStateArgs {
    /// SHA-256 hashes (64 hex digits) or paths of local files (several
    /// allowed). A file whose name is 64 hex digits is given as ./NAME:
    /// the bare name is taken as the hash.
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
    /// Set a policy's enforcement level: disabled, monitor, prompt or lockdown.
    SetLevel {
        /// Policy name.
        policy: String,
        /// Level while connected.
        level: Level,
        /// Level while disconnected (default: unchanged).
        #[arg(long)]
        disconnected: Option<Level>,
        /// Approve, locally on each computer, what it already has before the new level applies.
        #[arg(long)]
        approve_existing: bool,
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

#[derive(Debug, Subcommand)]
pub(crate) enum PublisherCmd {
    /// List publishers with their states and trust.
    List(JsonFlag),
    /// Approve a publisher (its verified files run).
    Approve(PublisherStateArgs),
    /// Ban a publisher.
    Ban(PublisherStateArgs),
    /// Remove an approval or ban.
    Unapprove(PublisherStateArgs),
    /// Set a publisher's reputation trust: high, medium, low, not_trusted.
    Trust {
        /// Publisher name.
        name: String,
        /// Trust.
        trust: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PublisherStateArgs {
    /// Publisher name (the repository's Origin, e.g. Debian).
    pub(crate) name: String,
    /// Only for computers in this policy.
    #[arg(long)]
    pub(crate) policy: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BundleCmd {
    /// List bundles.
    List(JsonFlag),
    /// Enable a bundle.
    Enable {
        /// Bundle name.
        name: String,
    },
    /// Disable a bundle.
    Disable {
        /// Bundle name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReputationCmd {
    /// Import a hash set: NSRL RDS (v3, SQLite) or a list of SHA-256 with ratings.
    Import {
        /// The file.
        file: PathBuf,
        /// Its format (default: detected).
        #[arg(long, value_parser = ["nsrl", "sha256-list"])]
        format: Option<String>,
        /// Trust rating for hashes without one (NSRL: known software), 0-10.
        #[arg(long, default_value_t = 8)]
        rating: u8,
        /// Source name recorded with the ratings (default: the file name).
        #[arg(long)]
        source: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RuleCmd {
    /// List rules.
    List(JsonFlag),
    /// Remove a rule.
    Remove {
        /// Rule id.
        id: i64,
    },
    /// Add a rule.
    #[command(subcommand)]
    Add(Box<RuleAdd>),
}

#[derive(Debug, Args)]
pub(crate) struct RuleCommon {
    /// Rule name (default: derived from the rule).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Policies it applies to (repeatable; default: all).
    #[arg(long = "policy")]
    pub(crate) policies: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RuleAdd {
    /// Files placed in DIR are approved on the computer that finds them there;
    /// found by one of --computer, for every computer the rule applies to.
    TrustedDir {
        /// The directory.
        dir: String,
        /// A trusted server the directory is on: what it finds there is
        /// approved for every computer the rule applies to (repeatable).
        #[arg(long = "computer", value_name = "NAME")]
        computers: Vec<String>,
        #[command(flatten)]
        common: RuleCommon,
    },
    /// Code written by this user (or --group) is approved on that computer.
    TrustedUser {
        /// User name (or a group with --group).
        user: String,
        /// USER is a group.
        #[arg(long)]
        group: bool,
        #[command(flatten)]
        common: RuleCommon,
    },
    /// What this updater writes is approved.
    Updater {
        /// Updater name.
        updater: String,
        /// Program names (repeatable).
        #[arg(long = "program")]
        programs: Vec<String>,
        /// Executable hashes (repeatable).
        #[arg(long = "hash")]
        hashes: Vec<String>,
        /// Also vouch for what the system package database records (dpkg).
        #[arg(long)]
        package_manager: bool,
        #[command(flatten)]
        common: RuleCommon,
    },
    /// Approve files whose trust rating reaches a threshold.
    Reputation {
        /// Minimum trust rating, 0-10.
        #[arg(long)]
        min_trust: u8,
        /// Minimum publisher trust: high, medium, low, not_trusted.
        #[arg(long)]
        min_publisher_trust: Option<String>,
        /// Files never approved by this rule (SHA-256, repeatable).
        #[arg(long = "except-file")]
        except_files: Vec<String>,
        /// Publishers never approved by this rule (repeatable).
        #[arg(long = "except-publisher")]
        except_publishers: Vec<String>,
        #[command(flatten)]
        common: RuleCommon,
    },
    /// If this process and/or user attempts this operation on these files, then this action.
    Custom(CustomArgs),
    /// When an event matching a filter occurs, take an action.
    Event(EventArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CustomArgs {
    /// Source process by executable hash.
    #[arg(long, conflicts_with_all = ["process_path", "process_publisher"])]
    pub(crate) process_hash: Option<String>,
    /// Source process by executable path pattern.
    #[arg(long, conflicts_with = "process_publisher")]
    pub(crate) process_path: Option<String>,
    /// Source process by publisher.
    #[arg(long)]
    pub(crate) process_publisher: Option<String>,
    /// User name.
    #[arg(long, conflicts_with = "group")]
    pub(crate) user: Option<String>,
    /// Group name.
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// The operation: execute, write or both.
    #[arg(long = "op", value_parser = ["execute", "write", "both"], default_value = "execute")]
    pub(crate) op: String,
    /// File path patterns (repeatable; `*`, `?`, `**`).
    #[arg(long = "path", required = true)]
    pub(crate) paths: Vec<String>,
    /// allow, block, prompt, approve or report.
    #[arg(long, value_parser = ["allow", "block", "prompt", "approve", "report"])]
    pub(crate) action: String,
    /// Nice value for allowed processes.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) nice: Option<i8>,
    /// Kill allowed processes after this many seconds.
    #[arg(long)]
    pub(crate) max_runtime: Option<u32>,
    /// Report allowed runs too (verbose logging for this rule).
    #[arg(long)]
    pub(crate) log_allowed: bool,
    /// Rank among custom rules (lower first).
    #[arg(long)]
    pub(crate) rank: Option<i64>,
    #[command(flatten)]
    pub(crate) common: RuleCommon,
}

#[derive(Debug, Args)]
pub(crate) struct EventArgs {
    /// React to reported events, or to files seen for the first time.
    #[arg(long, value_parser = ["event", "file-seen"], default_value = "event")]
    pub(crate) trigger: String,
    /// Event kinds (repeatable): blocked, would_block, approved, allowed.
    #[arg(long = "kind")]
    pub(crate) kinds: Vec<String>,
    /// Operations (repeatable).
    #[arg(long = "operation")]
    pub(crate) operations: Vec<String>,
    /// Only files with a trust rating at most this.
    #[arg(long)]
    pub(crate) max_trust: Option<u8>,
    /// Only files with a trust rating at least this.
    #[arg(long)]
    pub(crate) min_trust: Option<u8>,
    /// Only files whose path matches.
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// Only these computers (repeatable).
    #[arg(long = "computer")]
    pub(crate) computers: Vec<String>,
    /// Only computers in these policies (repeatable).
    #[arg(long = "in-policy")]
    pub(crate) in_policies: Vec<String>,
    /// Action: set the file's global state (approved, banned, unapproved).
    #[arg(long)]
    pub(crate) set_global: Option<String>,
    /// Action: set the file's state on the computer.
    #[arg(long)]
    pub(crate) set_local: Option<String>,
    /// Action: move the computer to this policy.
    #[arg(long)]
    pub(crate) move_to: Option<String>,
    /// Action: POST the event to this URL.
    #[arg(long)]
    pub(crate) webhook: Option<String>,
    /// Action: send to syslog (host:port over UDP, or "local" for /dev/log).
    #[arg(long)]
    pub(crate) syslog: Option<String>,
    #[command(flatten)]
    pub(crate) common: RuleCommon,
}

#[derive(Debug, Subcommand)]
pub(crate) enum FolderCmd {
    /// Protect a folder: its code runs only when started by one of the parents.
    Protect {
        /// The folder.
        dir: String,
        /// Parent process: a program path or its SHA-256 (repeatable).
        #[arg(long = "parent", required = true)]
        parents: Vec<String>,
        #[command(flatten)]
        common: RuleCommon,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RequestCmd {
    /// List approval requests, newest first (every one, a page at a time).
    List {
        /// pending (default), granted, denied or all.
        #[arg(long, default_value = "pending")]
        status: String,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Grant a request: the file is approved on the requester's computer.
    Grant {
        /// Request id.
        id: i64,
        /// Comment for the requester.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a request.
    Deny {
        /// Request id.
        id: i64,
        /// Comment for the requester.
        #[arg(long)]
        comment: Option<String>,
    },
    /// As a local user: ask for a blocked file to be approved on this computer.
    New {
        /// The file.
        path: PathBuf,
        /// Why you need it.
        #[arg(long, default_value = "")]
        reason: String,
        /// The agent's request socket.
        #[arg(long, default_value = "/var/lib/palisade/agent/request.sock")]
        socket: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap checks argument definitions only when a command is parsed; this
    /// walks every subcommand so a clash (two `--name`s, a flag shadowing a
    /// global one) fails here rather than at an operator's prompt.
    #[test]
    fn every_subcommand_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCmd {
    /// List the organization's admins with their grants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add an admin (without grants) and print their invitation link.
    Add {
        /// Admin name.
        name: String,
        /// Organization (must be your token's).
        #[arg(long)]
        org: Option<String>,
    },
    /// Grant a role, for the whole organization or one policy.
    Grant {
        /// Admin name.
        name: String,
        /// Role: owner, security-admin, approver, auditor, or a custom role.
        role: String,
        /// Limit the grant to this policy.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Revoke a grant; also ends the admin's sessions and API tokens.
    Revoke {
        /// Admin name.
        name: String,
        /// Role.
        role: String,
        /// The policy the grant is limited to.
        #[arg(long)]
        policy: Option<String>,
    },
    /// Disable an admin; also ends their sessions and API tokens.
    Disable {
        /// Admin name.
        name: String,
    },
    /// Enable a disabled admin.
    Enable {
        /// Admin name.
        name: String,
    },
    /// Print a one-time console link (valid 72 hours) with which the admin
    /// sets a new password; using it removes their second factor and ends
    /// their sessions and tokens (for a new admin, or one who lost theirs).
    Invite {
        /// Admin name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoleCmd {
    /// List built-in and custom roles.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a custom role.
    Add {
        /// Role name.
        name: String,
        /// Permissions such as files:read files:update (resources: files, rules,
        /// computers, policies, events, admins, settings; operations: create,
        /// read, update, delete).
        #[arg(required = true)]
        permissions: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Create an API token and print it.
    Create {
        /// For another admin (needs admins:update and all they hold; the
        /// token cannot touch their password, second factor or tokens).
        #[arg(long)]
        admin: Option<String>,
        /// Lifetime: 90d, 12h, 30m, 3600s.
        #[arg(long)]
        expires: Option<String>,
        /// Limit the token to these permissions (repeatable).
        #[arg(long)]
        scope: Vec<String>,
        /// A label.
        #[arg(long)]
        name: Option<String>,
    },
    /// List your tokens.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// Token id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AccessCmd {
    /// Show the organization's conditional-access settings.
    Show,
    /// Replace them.
    Set {
        /// Refuse credentials obtained without a verified second factor.
        #[arg(long)]
        require_mfa: bool,
        /// Only from this network (CIDR; repeatable).
        #[arg(long)]
        trusted_network: Vec<String>,
        /// Only during these hours, e.g. "mon-fri 08:00-18:00 +01:00".
        #[arg(long)]
        office_hours: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// List audit records, oldest first.
    List {
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Verify the hash chain of the organization's audit log (exit 1 when broken).
    Verify {
        /// An anchor saved earlier (seq:hash): the chain must still contain it.
        #[arg(long)]
        anchor: Option<PathBuf>,
        /// Save the head of the verified chain as an anchor.
        #[arg(long)]
        save_anchor: Option<PathBuf>,
    },
}
