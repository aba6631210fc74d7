//! Admin access commands: admins and grants, roles, API tokens,
//! conditional-access settings, the audit log (`palisade_api::access`).
use super::admin::{fmt_ms, segment, AdminClient};
use crate::cli::{AccessCmd, AdminCmd, AuditCmd, RoleCmd, TokenCmd};
use crate::shown::shown;
use anyhow::{bail, Context, Result};
use palisade_api::access::{
    AccessSettings, AddAdmin, AdminInfo, AuditEntry, AuditPage, CreateToken, GrantRef, Invitation,
    RoleInfo, TokenCreated, TokenInfo,
};
use palisade_api::admin::WhoAmI;
use palisade_authn::audit::{Anchor, AuditRecord, ChainVerifier, Outcome};
use palisade_core::Name;
use std::path::Path;
use std::process::ExitCode;

fn name(field: &str, s: &str) -> Result<Name> {
    Name::parse(s).with_context(|| format!("{field} {s:?}"))
}

fn print_admin(a: &AdminInfo) {
    let grants: Vec<String> = a
        .grants
        .iter()
        .map(|g| match &g.policy {
            Some(p) => format!("{}@{}", g.role.as_str(), p.as_str()),
            None => g.role.as_str().to_owned(),
        })
        .collect();
    let lock = match a.locked_until_ms {
        Some(t) => format!(" locked until {}", fmt_ms(t)),
        None => String::new(),
    };
    println!(
        "{:<20} {:<9} tokens {:<3} {}{lock}",
        shown(&a.name),
        shown(&a.status),
        a.tokens,
        if grants.is_empty() {
            "(no grants)".to_owned()
        } else {
            grants.join(", ")
        }
    );
}

fn grant_ref(role: &str, policy: Option<&str>) -> Result<GrantRef> {
    Ok(GrantRef {
        role: name("role", role)?,
        policy: policy.map(|p| name("policy", p)).transpose()?,
    })
}

async fn print_invitation(client: &AdminClient, admin: &str) -> Result<()> {
    let inv: Invitation = client
        .post(&format!("/api/v1/admins/{}/invite", segment(admin)), &())
        .await?;
    println!(
        "invitation for {admin} (one use, until {}):\n  {}",
        fmt_ms(inv.expires_ms),
        shown(&inv.url)
    );
    Ok(())
}

/// `palisade admin ...`.
pub(crate) async fn admin(cfg: Option<&Path>, cmd: AdminCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    match cmd {
        AdminCmd::List { json } => {
            let admins: Vec<AdminInfo> = client.get("/api/v1/admins").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&admins)?);
            } else {
                admins.iter().for_each(print_admin);
            }
        }
        AdminCmd::Add { name: n, org } => {
            if let Some(org) = org {
                let me: WhoAmI = client.get("/api/v1/whoami").await?;
                if me.organization != org {
                    bail!(
                        "your token is for organization {:?}, not {org:?}: use a token of that organization",
                        me.organization
                    );
                }
            }
            let a: AdminInfo = client
                .post(
                    "/api/v1/admins",
                    &AddAdmin {
                        name: name("admin", &n)?,
                    },
                )
                .await?;
            print_admin(&a);
            print_invitation(&client, &n).await?;
        }
        AdminCmd::Invite { name: n } => print_invitation(&client, &n).await?,
        AdminCmd::Grant {
            name: n,
            role,
            policy,
        } => {
            let body = grant_ref(&role, policy.as_deref())?;
            let a: AdminInfo = client
                .post(&format!("/api/v1/admins/{}/grants", segment(&n)), &body)
                .await?;
            print_admin(&a);
        }
        AdminCmd::Revoke {
            name: n,
            role,
            policy,
        } => {
            let body = grant_ref(&role, policy.as_deref())?;
            let a: AdminInfo = client
                .post(&format!("/api/v1/admins/{}/revoke", segment(&n)), &body)
                .await?;
            print_admin(&a);
            println!("(their sessions and API tokens were ended)");
        }
        AdminCmd::Disable { name: n } => {
            let a: AdminInfo = client
                .post(&format!("/api/v1/admins/{}/disable", segment(&n)), &())
                .await?;
            print_admin(&a);
        }
        AdminCmd::Enable { name: n } => {
            let a: AdminInfo = client
                .post(&format!("/api/v1/admins/{}/enable", segment(&n)), &())
                .await?;
            print_admin(&a);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `palisade role ...`.
pub(crate) async fn role(cfg: Option<&Path>, cmd: RoleCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    match cmd {
        RoleCmd::List { json } => {
            let roles: Vec<RoleInfo> = client.get("/api/v1/roles").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&roles)?);
            } else {
                for r in roles {
                    println!(
                        "{:<16} {:<8} {}",
                        r.name.as_str(),
                        if r.builtin { "built-in" } else { "custom" },
                        r.permissions.join(" ")
                    );
                }
            }
        }
        RoleCmd::Add {
            name: n,
            permissions,
        } => {
            let r: RoleInfo = client
                .post(
                    "/api/v1/roles",
                    &RoleInfo {
                        name: name("role", &n)?,
                        permissions,
                        builtin: false,
                    },
                )
                .await?;
            println!(
                "role {} created: {}",
                r.name.as_str(),
                r.permissions.join(" ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration such as `90d`, `12h`, `30m` or `3600s` (or plain seconds).
pub(crate) fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?}: expected a number then s, m, h or d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("duration {s:?}: unknown unit {other:?} (use s, m, h or d)"),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .with_context(|| format!("duration {s:?} is out of range"))
}

/// `palisade token ...`.
pub(crate) async fn token(cfg: Option<&Path>, cmd: TokenCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    match cmd {
        TokenCmd::Create {
            admin,
            expires,
            scope,
            name: label,
        } => {
            let body = CreateToken {
                admin: admin.as_deref().map(|a| name("admin", a)).transpose()?,
                name: label,
                expires_secs: expires.as_deref().map(parse_duration).transpose()?,
                scope: (!scope.is_empty()).then_some(scope),
            };
            let t: TokenCreated = client.post("/api/v1/tokens", &body).await?;
            eprintln!(
                "token {} created{}; use it with PALISADE_TOKEN (it is not shown again)",
                t.id,
                t.expires_ms
                    .map(|e| format!(", expires {}", fmt_ms(e)))
                    .unwrap_or_default()
            );
            println!("{}", t.token);
        }
        TokenCmd::List { json } => {
            let tokens: Vec<TokenInfo> = client.get("/api/v1/tokens").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                for t in tokens {
                    let state = match (t.revoked_ms, t.expires_ms) {
                        (Some(r), _) => format!("revoked {}", fmt_ms(r)),
                        (None, Some(e)) => format!("expires {}", fmt_ms(e)),
                        (None, None) => "no expiry".to_owned(),
                    };
                    println!(
                        "{:<5} {:<16} {:<32} {}",
                        t.id,
                        shown(&t.name),
                        state,
                        t.scope
                            .map(|s| s.join(" "))
                            .unwrap_or_else(|| "(all)".into())
                    );
                }
            }
        }
        TokenCmd::Revoke { id } => {
            client.delete(&format!("/api/v1/tokens/{id}")).await?;
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `palisade access ...`: conditional access.
pub(crate) async fn access(cfg: Option<&Path>, cmd: AccessCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    let s: AccessSettings = match cmd {
        AccessCmd::Show => client.get("/api/v1/settings").await?,
        AccessCmd::Set {
            require_mfa,
            trusted_network,
            office_hours,
        } => {
            let body = AccessSettings {
                require_mfa,
                trusted_networks: trusted_network,
                office_hours: office_hours.filter(|h| !h.is_empty()),
            };
            client.put("/api/v1/settings", &body).await?
        }
    };
    println!(
        "require MFA:      {}",
        if s.require_mfa { "yes" } else { "no" }
    );
    println!(
        "trusted networks: {}",
        if s.trusted_networks.is_empty() {
            "(any)".to_owned()
        } else {
            s.trusted_networks.join(", ")
        }
    );
    println!(
        "office hours:     {}",
        s.office_hours.as_deref().unwrap_or("(any time)")
    );
    Ok(ExitCode::SUCCESS)
}

fn record_of(org: i64, e: &AuditEntry) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: e.seq,
        at_ms: e.at_ms,
        org,
        actor: e.actor.clone(),
        action: e.action.clone(),
        object: e.object.clone(),
        source: e.source.clone(),
        outcome: match e.outcome.as_str() {
            "allowed" => Outcome::Allowed,
            "denied" => Outcome::Denied,
            other => bail!("record {}: unknown outcome {other:?}", e.seq),
        },
        reason: e.reason.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
    })
}

/// Every record of the caller's organization, oldest first.
async fn all_records(client: &AdminClient) -> Result<(i64, Vec<AuditEntry>)> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let page: AuditPage = client
            .get(&format!("/api/v1/audit?after={after}&limit=1000"))
            .await?;
        let Some(last) = page.records.last() else {
            return Ok((page.org_id, out));
        };
        after = last.seq;
        out.extend(page.records);
    }
}

/// `palisade audit ...`.
pub(crate) async fn audit(cfg: Option<&Path>, cmd: AuditCmd) -> Result<ExitCode> {
    let (client, _) = AdminClient::from_config(cfg)?;
    match cmd {
        AuditCmd::List { after, limit, json } => {
            let page: AuditPage = client
                .get(&format!("/api/v1/audit?after={after}&limit={limit}"))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.records)?);
                return Ok(ExitCode::SUCCESS);
            }
            for r in page.records {
                println!(
                    "{:>6} {} {:<12} {:<7} {:<40} {} from {}{}",
                    r.seq,
                    fmt_ms(r.at_ms),
                    shown(&r.actor),
                    shown(&r.outcome),
                    shown(&r.action),
                    shown(&r.object),
                    shown(&r.source),
                    r.reason
                        .map(|x| format!(" ({})", shown(&x)))
                        .unwrap_or_default()
                );
            }
        }
        AuditCmd::Verify {
            anchor,
            save_anchor,
        } => {
            let (org, records) = all_records(&client).await?;
            let mut verifier = ChainVerifier::new();
            if let Some(path) = &anchor {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("anchor {}", path.display()))?;
                let a: Anchor = text
                    .trim()
                    .parse()
                    .with_context(|| format!("anchor {}", path.display()))?;
                verifier = verifier.with_anchor(a);
            }
            for e in &records {
                let rec = record_of(org, e)?;
                let hash = palisade_authn::audit::parse_hash(&e.hash)
                    .with_context(|| format!("record {}: stored hash", e.seq))?;
                if let Err(b) = verifier.push(&rec, &hash) {
                    println!("audit chain BROKEN: {b}");
                    return Ok(ExitCode::from(1));
                }
            }
            match verifier.finish() {
                Ok(summary) => {
                    println!(
                        "audit chain intact: {} records, head {}",
                        summary.records, summary.head
                    );
                    if let Some(path) = save_anchor {
                        std::fs::write(&path, format!("{}\n", summary.head))
                            .with_context(|| format!("write {}", path.display()))?;
                        println!("anchor saved to {}", path.display());
                    }
                }
                Err(b) => {
                    println!("audit chain BROKEN: {b}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
