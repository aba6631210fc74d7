//! User and group names, for rules that name them, and the groups of a
//! process. Names come from `/etc/passwd` and `/etc/group` (re-read when
//! they change); an id not there is asked of the system's name service
//! (NSS: SSSD, LDAP, systemd-userdb...), and the answer, found or not, is
//! kept a while. Without that, on a host whose users come from a
//! directory, a rule naming a user would never match: a block would fail
//! open and a trusted user would never be trusted.
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// How long a name service answer is kept.
const NSS_FOUND_TTL: Duration = Duration::from_secs(600);
/// How long "no such id" from the name service is kept.
const NSS_MISSING_TTL: Duration = Duration::from_secs(60);
/// Name service answers kept at most (per kind).
const NSS_MAX: usize = 4096;

#[derive(Default)]
struct Table {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
    passwd_mtime: Option<SystemTime>,
    group_mtime: Option<SystemTime>,
    /// Name service answers for ids the files do not have.
    nss_users: HashMap<u32, (Option<String>, Instant)>,
    nss_groups: HashMap<u32, (Option<String>, Instant)>,
}

#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
}

/// Ask the name service for the name of a user or group id.
fn nss_lookup(kind: Kind, id: u32) -> Option<String> {
    match kind {
        Kind::User => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
            .ok()
            .flatten()
            .map(|u| u.name),
        Kind::Group => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id))
            .ok()
            .flatten()
            .map(|g| g.name),
    }
}

/// Name lookups with a cache that follows the files.
#[derive(Default)]
pub struct Names {
    table: Mutex<Table>,
}

fn mtime(path: &str) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `name:x:id:...` lines: id → name.
fn parse_db(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _pw = f.next()?;
            let id = f.next()?.parse().ok()?;
            (!name.is_empty()).then(|| (id, name.to_owned()))
        })
        .collect()
}

impl Names {
    fn refresh(&self) -> parking_lot::MutexGuard<'_, Table> {
        let mut t = self.table.lock();
        let (pm, gm) = (mtime("/etc/passwd"), mtime("/etc/group"));
        if pm != t.passwd_mtime || t.users.is_empty() {
            t.users = std::fs::read_to_string("/etc/passwd")
                .map(|s| parse_db(&s))
                .unwrap_or_default();
            t.passwd_mtime = pm;
        }
        if gm != t.group_mtime || t.groups.is_empty() {
            t.groups = std::fs::read_to_string("/etc/group")
                .map(|s| parse_db(&s))
                .unwrap_or_default();
            t.group_mtime = gm;
        }
        t
    }

    /// Names of `ids`: from the files, else from the name service (asked
    /// without holding the table, as it may take a while), else `#<id>`.
    fn names(&self, kind: Kind, ids: &[u32]) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<Option<String>> = Vec::with_capacity(ids.len());
        let mut ask = Vec::new();
        {
            let t = self.refresh();
            let (files, nss) = match kind {
                Kind::User => (&t.users, &t.nss_users),
                Kind::Group => (&t.groups, &t.nss_groups),
            };
            for id in ids {
                let known = files.get(id).cloned().map(Some).or_else(|| {
                    nss.get(id)
                        .filter(|(name, at)| {
                            let ttl = if name.is_some() {
                                NSS_FOUND_TTL
                            } else {
                                NSS_MISSING_TTL
                            };
                            now.duration_since(*at) < ttl
                        })
                        .map(|(name, _)| name.clone())
                });
                if known.is_none() && !ask.contains(id) {
                    ask.push(*id);
                }
                out.push(known.flatten());
            }
        }
        if !ask.is_empty() {
            let answers: Vec<(u32, Option<String>)> =
                ask.iter().map(|&id| (id, nss_lookup(kind, id))).collect();
            let mut t = self.table.lock();
            let nss = match kind {
                Kind::User => &mut t.nss_users,
                Kind::Group => &mut t.nss_groups,
            };
            if nss.len() + answers.len() > NSS_MAX {
                nss.clear();
            }
            for (id, name) in answers {
                for (slot, _) in out.iter_mut().zip(ids).filter(|(_, i)| **i == id) {
                    slot.clone_from(&name);
                }
                nss.insert(id, (name, now));
            }
        }
        out.into_iter()
            .zip(ids)
            .map(|(name, id)| name.unwrap_or_else(|| format!("#{id}")))
            .collect()
    }

    /// Names of these users (unknown ids as `#<id>`), without duplicates.
    pub fn users(&self, ids: &[u32]) -> Vec<String> {
        let mut out = self.names(Kind::User, ids);
        out.dedup();
        out
    }

    /// Names of these groups.
    pub fn groups(&self, ids: &[u32]) -> Vec<String> {
        self.names(Kind::Group, ids)
    }
}

/// This process's effective uid (for the `palisade` binary, which has no
/// `unsafe` of its own to ask).
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective gid and supplementary groups of a process.
pub fn process_groups(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if let Some(egid) = field("Gid:").get(1) {
        out.push(*egid);
    }
    for g in field("Groups:") {
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let db = parse_db("root:x:0:0:root:/root:/bin/bash\nbad\n#c:x:1:\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        assert_eq!(db.get(&0).map(String::as_str), Some("root"));
        assert_eq!(db.get(&1000).map(String::as_str), Some("alice"));
        assert_eq!(db.len(), 2);
        let n = Names::default();
        assert_eq!(n.users(&[0, 0]), vec!["root".to_string()]);
        assert_eq!(n.users(&[4_000_000]), vec!["#4000000".to_string()]);
        // Asked once; the miss is kept.
        assert!(n
            .table
            .lock()
            .nss_users
            .get(&4_000_000)
            .is_some_and(|(name, _)| name.is_none()));
        assert_eq!(
            n.groups(&[0, 4_000_001]),
            vec!["root".to_string(), "#4000001".to_string()]
        );
    }

    /// The name service answers what the files do (here it reads them too:
    /// a host with SSSD or LDAP answers for the ids the files lack).
    #[test]
    fn the_name_service_is_asked() {
        assert_eq!(nss_lookup(Kind::User, 0).as_deref(), Some("root"));
        assert_eq!(nss_lookup(Kind::Group, 0).as_deref(), Some("root"));
        assert_eq!(nss_lookup(Kind::User, 4_000_000), None);
        assert!(process_groups(std::process::id()).contains(&rustix::process::getegid().as_raw()));
    }
}
