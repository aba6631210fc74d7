//! Admin commands of the approval model: publishers, bundles, reputation,
//! rules of every kind, folder protection, approval requests.
use super::admin::{fmt_ms, name, resolve_target, segment, AdminClient};
use crate::cli::{
    BundleCmd, CustomArgs, EventArgs, FolderCmd, PublisherCmd, ReputationCmd, RequestCmd, RuleAdd,
    RuleCmd, RuleCommon,
};
use crate::shown::shown;
use anyhow::{bail, Context, Result};
use palisade_api::admin::{
    ApprovalRequestInfo, BundleInfo, CreateRule, DecideRequest, EventAction, EventFilter,
    EventTrigger, PublisherInfo, ReputationBatch, ReputationEntry, ReputationImported, RuleBody,
    RuleRecord, SetBundle, SetPublisherState, SetPublisherTrust, REPUTATION_BATCH_MAX,
};
use palisade_core::rules::{
    Conditions, LogLevel, Operations, ProcessMatch, PublisherTrust, RuleAction, UserMatch,
};
use palisade_core::{FileState, Name, PathPattern, Sha256};
use std::path::Path;
use std::process::ExitCode;

/// Parse a value with serde's snake_case names (`not_trusted`, `would_block`).
fn enum_arg<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(v.replace('-', "_")))
        .with_context(|| format!("{what}: unknown value {v:?}"))
}

fn sha(what: &str, v: &str) -> Result<Sha256> {
    Sha256::parse(v).with_context(|| what.to_owned())
}

fn pattern(what: &str, v: &str) -> Result<PathPattern> {
    PathPattern::parse(v).with_context(|| what.to_owned())
}

fn policies(common: &RuleCommon) -> Result<Vec<Name>> {
    common
        .policies
        .iter()
        .map(|p| Name::parse(p).with_context(|| format!("--policy {p}")))
        .collect()
}

/// The most requests the service returns at once.
const REQUEST_PAGE: usize = 1000;

pub(crate) async fn publisher(cfg: Option<&Path>, cmd: PublisherCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let (a, state) = match cmd {
        PublisherCmd::Approve(a) => (a, FileState::Approved),
        PublisherCmd::Ban(a) => (a, FileState::Banned),
        PublisherCmd::Unapprove(a) => (a, FileState::Unapproved),
        other => return publisher_other(&client, other).await,
    };
    let body = SetPublisherState {
        state,
        policy: name("policy", &a.policy)?,
    };
    let p: PublisherInfo = client
        .put(
            &format!("/api/v1/publishers/{}/state", segment(&a.name)),
            &body,
        )
        .await?;
    let scope = a
        .policy
        .map(|p| format!("for policy {p}"))
        .unwrap_or_else(|| "for all computers".into());
    println!("publisher {}: {state} {scope}", shown(&p.name));
    Ok(ExitCode::SUCCESS)
}

async fn publisher_other(client: &AdminClient, cmd: PublisherCmd) -> Result<ExitCode> {
    match cmd {
        PublisherCmd::List(j) => {
            let list: Vec<PublisherInfo> = client.get("/api/v1/publishers").await?;
            if j.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<28} {:<12} {:>7}  states", "PUBLISHER", "TRUST", "FILES");
            for p in list {
                let states: Vec<String> = p
                    .states
                    .iter()
                    .map(|s| match &s.scope {
                        palisade_api::admin::ScopeRef::Policy(n) => {
                            format!("{} (policy {n})", s.state)
                        }
                        _ => s.state.to_string(),
                    })
                    .collect();
                let trust = p
                    .trust
                    .map(|t| format!("{t:?}").to_lowercase())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<28} {:<12} {:>7}  {}",
                    shown(&p.name),
                    trust,
                    p.files,
                    states.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PublisherCmd::Trust { name, trust } => {
            let trust: PublisherTrust = enum_arg("trust", &trust)?;
            let p: PublisherInfo = client
                .put(
                    &format!("/api/v1/publishers/{}/trust", segment(&name)),
                    &SetPublisherTrust { trust },
                )
                .await?;
            println!("publisher {}: trust {:?}", shown(&p.name), trust);
            Ok(ExitCode::SUCCESS)
        }
        PublisherCmd::Approve(_) | PublisherCmd::Ban(_) | PublisherCmd::Unapprove(_) => {
            bail!("publisher states are set by `publisher approve|ban|unapprove`")
        }
    }
}

pub(crate) async fn bundle(cfg: Option<&Path>, cmd: BundleCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let (name, enabled) = match cmd {
        BundleCmd::List(j) => {
            let list: Vec<BundleInfo> = client.get("/api/v1/bundles").await?;
            if j.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for b in list {
                    println!(
                        "{} [{}]\n  {}",
                        shown(&b.name),
                        if b.enabled { "enabled" } else { "disabled" },
                        shown(&b.description)
                    );
                    for r in &b.rules {
                        println!("  - {}", shown(r));
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        BundleCmd::Enable { name } => (name, true),
        BundleCmd::Disable { name } => (name, false),
    };
    let b: BundleInfo = client
        .put(
            &format!("/api/v1/bundles/{}", segment(&name)),
            &SetBundle { enabled },
        )
        .await?;
    println!(
        "bundle {} {}",
        shown(&b.name),
        if b.enabled { "enabled" } else { "disabled" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Read a reputation file into (hash, rating) pairs.
fn read_reputation(file: &Path, format: Option<&str>, rating: u8) -> Result<Vec<ReputationEntry>> {
    let mut head = [0u8; 16];
    let n = std::fs::File::open(file)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .with_context(|| file.display().to_string())?;
    let detected = if &head[..n] == b"SQLite format 3\0" {
        "nsrl"
    } else {
        "sha256-list"
    };
    match format.unwrap_or(detected) {
        "nsrl" => read_nsrl(file, rating),
        _ => read_sha256_list(file, rating),
    }
}

/// NSRL RDS version 3 (a SQLite database; the `FILE` table has a `sha256`
/// column). Every hash in it is known software: it gets `rating`.
fn read_nsrl(file: &Path, rating: u8) -> Result<Vec<ReputationEntry>> {
    let db =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("{}: not an NSRL RDS database", file.display()))?;
    let mut st = db
        .prepare(
            "SELECT DISTINCT lower(sha256) FROM FILE WHERE sha256 IS NOT NULL AND sha256 <> ''",
        )
        .with_context(|| {
            format!(
                "{}: no FILE table with a sha256 column (NSRL RDS v3 expected)",
                file.display()
            )
        })?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        let v = row?;
        if let Ok(sha256) = Sha256::parse(&v) {
            out.push(ReputationEntry {
                sha256,
                trust: rating,
            });
        }
    }
    Ok(out)
}

/// Lines `SHA256 [RATING]` (space, tab or comma separated); `#` comments.
fn read_sha256_list(file: &Path, rating: u8) -> Result<Vec<ReputationEntry>> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty());
        let (Some(h), r) = (parts.next(), parts.next()) else {
            continue;
        };
        let sha256 = Sha256::parse(h)
            .with_context(|| format!("{}:{}: not a SHA-256", file.display(), i + 1))?;
        let trust =
            match r {
                Some(r) => r.parse::<u8>().ok().filter(|t| *t <= 10).with_context(|| {
                    format!("{}:{}: rating must be 0-10", file.display(), i + 1)
                })?,
                None => rating,
            };
        out.push(ReputationEntry { sha256, trust });
    }
    Ok(out)
}

pub(crate) async fn reputation(cfg: Option<&Path>, cmd: ReputationCmd) -> Result<ExitCode> {
    let ReputationCmd::Import {
        file,
        format,
        rating,
        source,
    } = cmd;
    if rating > 10 {
        bail!("--rating must be 0-10");
    }
    let (client, _) = AdminClient::from_config(cfg)?;
    let entries = read_reputation(&file, format.as_deref(), rating)?;
    let source = source.unwrap_or_else(|| {
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "import".into())
    });
    let mut stored = 0;
    for chunk in entries.chunks(REPUTATION_BATCH_MAX) {
        let r: ReputationImported = client
            .post(
                "/api/v1/reputation",
                &ReputationBatch {
                    source: source.clone(),
                    entries: chunk.to_vec(),
                },
            )
            .await?;
        stored += r.stored;
    }
    println!(
        "{} ratings read from {}, {stored} stored (source {source})",
        entries.len(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn create(
    client: &AdminClient,
    common: &RuleCommon,
    default_name: String,
    rank: Option<i64>,
    body: RuleBody,
) -> Result<ExitCode> {
    let r: RuleRecord = client
        .post(
            "/api/v1/rules",
            &CreateRule {
                name: common.name.clone().unwrap_or(default_name),
                policies: policies(common)?,
                rank,
                body,
            },
        )
        .await?;
    println!("rule {} added: {}", r.id, shown(&r.name));
    Ok(ExitCode::SUCCESS)
}

fn custom_body(a: &CustomArgs) -> Result<RuleBody> {
    let process = match (&a.process_hash, &a.process_path, &a.process_publisher) {
        (Some(h), _, _) => Some(ProcessMatch::Hash(sha("--process-hash", h)?)),
        (_, Some(p), _) => Some(ProcessMatch::Path(pattern("--process-path", p)?)),
        (_, _, Some(p)) => Some(ProcessMatch::Publisher(p.clone())),
        _ => None,
    };
    let user = match (&a.user, &a.group) {
        (Some(u), _) => Some(UserMatch::User(u.clone())),
        (_, Some(g)) => Some(UserMatch::Group(g.clone())),
        _ => None,
    };
    let operations = match a.op.as_str() {
        "write" => Operations {
            execute: false,
            write: true,
        },
        "both" => Operations {
            execute: true,
            write: true,
        },
        _ => Operations {
            execute: true,
            write: false,
        },
    };
    let paths = a
        .paths
        .iter()
        .map(|p| pattern("--path", p))
        .collect::<Result<Vec<_>>>()?;
    let action: RuleAction = enum_arg("--action", &a.action)?;
    Ok(RuleBody::Custom {
        process,
        user,
        operations,
        paths,
        action,
        conditions: Conditions {
            nice: a.nice,
            max_runtime_secs: a.max_runtime,
            log: if a.log_allowed {
                LogLevel::Verbose
            } else {
                LogLevel::Normal
            },
        },
    })
}

fn event_body(a: &EventArgs) -> Result<RuleBody> {
    let state = |what: &str, v: &str| enum_arg::<FileState>(what, v);
    let mut actions = Vec::new();
    if let Some(s) = &a.set_global {
        actions.push(EventAction::SetGlobalState {
            state: state("--set-global", s)?,
        });
    }
    if let Some(s) = &a.set_local {
        actions.push(EventAction::SetLocalState {
            state: state("--set-local", s)?,
        });
    }
    if let Some(p) = &a.move_to {
        actions.push(EventAction::MoveComputer {
            policy: Name::parse(p).context("--move-to")?,
        });
    }
    if let Some(url) = &a.webhook {
        actions.push(EventAction::Webhook { url: url.clone() });
    }
    if let Some(addr) = &a.syslog {
        actions.push(EventAction::Syslog {
            address: (addr != "local").then(|| addr.clone()),
        });
    }
    if actions.is_empty() {
        bail!(
            "give at least one action: --set-global, --set-local, --move-to, --webhook or --syslog"
        );
    }
    Ok(RuleBody::Event {
        filter: EventFilter {
            trigger: if a.trigger == "file-seen" {
                EventTrigger::FileSeen
            } else {
                EventTrigger::Event
            },
            kinds: a
                .kinds
                .iter()
                .map(|k| enum_arg("--kind", k))
                .collect::<Result<_>>()?,
            operations: a
                .operations
                .iter()
                .map(|o| enum_arg("--operation", o))
                .collect::<Result<_>>()?,
            max_trust: a.max_trust,
            min_trust: a.min_trust,
            path: a
                .path
                .as_deref()
                .map(|p| pattern("--path", p))
                .transpose()?,
            computers: a.computers.clone(),
            policies: a.in_policies.clone(),
        },
        actions,
    })
}

pub(crate) async fn rule(cfg: Option<&Path>, cmd: RuleCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    match cmd {
        RuleCmd::List(j) => {
            let list: Vec<RuleRecord> = client.get("/api/v1/rules").await?;
            if j.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:>5} {:>5} {:<8} {:<30} {:<18} RULE",
                "ID", "RANK", "ENABLED", "NAME", "POLICIES"
            );
            for r in list {
                let policies = if r.policies.is_empty() {
                    "all".into()
                } else {
                    r.policies.join(",")
                };
                let body = serde_json::to_string(&r.body).unwrap_or_default();
                // (The body's JSON escapes control characters, not bidi
                // overrides.)
                println!(
                    "{:>5} {:>5} {:<8} {:<30} {:<18} {}{}",
                    r.id,
                    r.rank,
                    if r.enabled { "yes" } else { "no" },
                    shown(&r.name),
                    shown(&policies),
                    shown(&body),
                    r.bundle
                        .map(|b| format!("  (bundle {})", shown(&b)))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RuleCmd::Remove { id } => {
            client.delete(&format!("/api/v1/rules/{id}")).await?;
            println!("rule {id} removed");
            Ok(ExitCode::SUCCESS)
        }
        RuleCmd::Add(add) => match *add {
            RuleAdd::TrustedDir {
                dir,
                computers,
                common,
            } => {
                let body = RuleBody::TrustedDirectory {
                    dir: dir.clone(),
                    computers,
                };
                create(
                    &client,
                    &common,
                    format!("trusted directory {dir}"),
                    None,
                    body,
                )
                .await
            }
            RuleAdd::TrustedUser {
                user: name,
                group,
                common,
            } => {
                let user = if group {
                    UserMatch::Group(name.clone())
                } else {
                    UserMatch::User(name.clone())
                };
                let label = if group {
                    format!("trusted group {name}")
                } else {
                    format!("trusted user {name}")
                };
                create(
                    &client,
                    &common,
                    label,
                    None,
                    RuleBody::TrustedUser { user },
                )
                .await
            }
            RuleAdd::Updater {
                updater,
                programs,
                hashes,
                package_manager,
                common,
            } => {
                let hashes = hashes
                    .iter()
                    .map(|h| sha("--hash", h))
                    .collect::<Result<_>>()?;
                let body = RuleBody::Updater {
                    programs,
                    hashes,
                    package_manager,
                };
                create(&client, &common, format!("updater {updater}"), None, body).await
            }
            RuleAdd::Reputation {
                min_trust,
                min_publisher_trust,
                except_files,
                except_publishers,
                common,
            } => {
                let body = RuleBody::Reputation {
                    min_trust,
                    min_publisher_trust: min_publisher_trust
                        .as_deref()
                        .map(|t| enum_arg("--min-publisher-trust", t))
                        .transpose()?,
                    except_files: except_files
                        .iter()
                        .map(|h| sha("--except-file", h))
                        .collect::<Result<_>>()?,
                    except_publishers,
                };
                create(
                    &client,
                    &common,
                    format!("approve if trust >= {min_trust}"),
                    None,
                    body,
                )
                .await
            }
            RuleAdd::Custom(a) => {
                let body = custom_body(&a)?;
                let label = format!("{} {}", a.action, a.paths.join(" "));
                create(&client, &a.common, label, a.rank, body).await
            }
            RuleAdd::Event(a) => {
                let body = event_body(&a)?;
                create(&client, &a.common, "event rule".into(), None, body).await
            }
        },
    }
}

pub(crate) async fn folder(cfg: Option<&Path>, cmd: FolderCmd) -> Result<ExitCode> {
    let FolderCmd::Protect {
        dir,
        parents,
        common,
    } = cmd;
    let (client, _) = AdminClient::from_config(cfg)?;
    let dir = match std::fs::canonicalize(&dir) {
        Ok(d) => d.to_string_lossy().into_owned(),
        Err(_) => dir,
    };
    let parents = parents
        .iter()
        .map(|p| resolve_target(cfg, p).map(|(h, _)| h))
        .collect::<Result<Vec<_>>>()?;
    let body = RuleBody::Folder {
        dir: dir.clone(),
        parents,
    };
    create(
        &client,
        &common,
        format!("protected folder {dir}"),
        None,
        body,
    )
    .await
}

fn print_request(r: &ApprovalRequestInfo) {
    println!(
        "{:>5} {:<9} {:<16} {:<12} {} {}  {}{}",
        r.id,
        format!("{:?}", r.status).to_lowercase(),
        shown(&r.computer),
        shown(&r.user),
        fmt_ms(r.created_ms),
        shown(&r.path),
        r.sha256.short(),
        if r.reason.is_empty() {
            String::new()
        } else {
            format!("  \"{}\"", shown(&r.reason))
        }
    );
}

pub(crate) async fn request(cfg: Option<&Path>, cmd: RequestCmd) -> Result<ExitCode> {
    if let RequestCmd::New {
        path,
        reason,
        socket,
    } = cmd
    {
        let path = std::fs::canonicalize(&path).with_context(|| path.display().to_string())?;
        let req = palisade_agent::control::LocalRequest {
            path: path.to_string_lossy().into_owned(),
            reason,
            hash_only: false,
        };
        let answer =
            tokio::task::spawn_blocking(move || palisade_agent::control::request(&socket, &req))
                .await??;
        return match answer {
            palisade_agent::control::LocalRequestAnswer::Filed { id } => {
                println!("request {id} filed: an administrator will grant or deny it");
                Ok(ExitCode::SUCCESS)
            }
            palisade_agent::control::LocalRequestAnswer::Refused { error } => {
                bail!("request refused: {}", shown(&error))
            }
            palisade_agent::control::LocalRequestAnswer::Hashed { .. } => {
                bail!("the agent hashed the file instead of filing the request")
            }
        };
    }
    let (client, _) = AdminClient::from_config(cfg)?;
    match cmd {
        RequestCmd::List {
            status,
            limit,
            json,
        } => {
            // The service answers a page (at most REQUEST_PAGE) at a time.
            let mut list: Vec<ApprovalRequestInfo> = Vec::new();
            let want = limit.unwrap_or(usize::MAX);
            while list.len() < want {
                let page_size = REQUEST_PAGE.min(want - list.len());
                let mut path = format!("/api/v1/requests?limit={page_size}");
                if status != "all" {
                    path.push_str(&format!("&status={}", segment(&status)));
                }
                if let Some(last) = list.last() {
                    path.push_str(&format!("&before={}", last.id));
                }
                let page: Vec<ApprovalRequestInfo> = client.get(&path).await?;
                let full = page.len() == page_size;
                list.extend(page);
                if !full {
                    break;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for r in &list {
                    print_request(r);
                }
            }
        }
        RequestCmd::Grant { id, comment } => {
            let r: ApprovalRequestInfo = client
                .post(
                    &format!("/api/v1/requests/{id}/grant"),
                    &DecideRequest { comment },
                )
                .await?;
            print_request(&r);
        }
        RequestCmd::Deny { id, comment } => {
            let r: ApprovalRequestInfo = client
                .post(
                    &format!("/api/v1/requests/{id}/deny"),
                    &DecideRequest { comment },
                )
                .await?;
            print_request(&r);
        }
        // Filed through the agent's socket above.
        RequestCmd::New { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}
