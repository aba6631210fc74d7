//! User and group names, for rules that name them (`/etc/passwd`,
//! `/etc/group`, re-read when they change), and the groups of a process.
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::SystemTime;

#[derive(Default)]
struct Table {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
    passwd_mtime: Option<SystemTime>,
    group_mtime: Option<SystemTime>,
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

    /// Names of these users (unknown ids as `#<id>`), without duplicates.
    pub fn users(&self, ids: &[u32]) -> Vec<String> {
        let t = self.refresh();
        let mut out: Vec<String> = ids
            .iter()
            .map(|id| t.users.get(id).cloned().unwrap_or_else(|| format!("#{id}")))
            .collect();
        out.dedup();
        out
    }

    /// Names of these groups.
    pub fn groups(&self, ids: &[u32]) -> Vec<String> {
        let t = self.refresh();
        ids.iter()
            .map(|id| {
                t.groups
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| format!("#{id}"))
            })
            .collect()
    }
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
        assert!(process_groups(std::process::id()).contains(&rustix::process::getegid().as_raw()));
    }
}
