//! Queries shared by the HTTP handlers, the background tasks and the offline
//! administration functions. Every statement here is portable SQL (see
//! [`crate::db`]).
use crate::db::{
    bump_counter, derived_values, list_placeholders, now_ms, rows_per_statement,
    values_placeholders, WriteTx,
};
use palisade_core::rules::PublisherFact;
use palisade_core::{
    ComputerId, FileState, Level, Levels, Operation, PolicyId, Scope, ScopedState, Sha256,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Above this many hashes in one change batch, a stream message or a
/// changes answer says `reset` instead of listing them.
pub(crate) const MAX_HASHES_PER_MESSAGE: usize = 1000;

/// Above this many new states in one transaction, one "bulk" change row
/// (hash NULL: reset) is recorded instead of one row per hash.
pub(crate) const MAX_CHANGE_ROWS_PER_TX: usize = 256;

/// What a change-log row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// A file state (or, with no hash, many file states).
    File,
    /// A policy's levels or rules; with no policy id, the rules or publisher
    /// states of every policy of the organization.
    Policy,
    /// A computer moved to another policy, or was revoked.
    Computer,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::File => "file",
            ChangeKind::Policy => "policy",
            ChangeKind::Computer => "computer",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "file" => Some(ChangeKind::File),
            "policy" => Some(ChangeKind::Policy),
            "computer" => Some(ChangeKind::Computer),
            _ => None,
        }
    }
}

/// A row of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) id: i64,
    pub(crate) org_id: i64,
    pub(crate) kind: ChangeKind,
    pub(crate) sha256: Option<Sha256>,
    pub(crate) policy_id: Option<i64>,
    pub(crate) computer_id: Option<i64>,
}

/// A change to append.
#[derive(Debug, Clone)]
pub(crate) struct NewChange {
    pub(crate) kind: ChangeKind,
    pub(crate) sha256: Option<Sha256>,
    pub(crate) policy_id: Option<i64>,
    pub(crate) computer_id: Option<i64>,
}

impl NewChange {
    /// A file-state change at `scope` (`sha256` None: many files).
    pub(crate) fn file(sha256: Option<Sha256>, scope: Scope) -> Self {
        let (policy_id, computer_id) = match scope {
            Scope::Global => (None, None),
            Scope::Policy(p) => (Some(p.0), None),
            Scope::Computer(c) => (None, Some(c.0)),
        };
        NewChange {
            kind: ChangeKind::File,
            sha256,
            policy_id,
            computer_id,
        }
    }

    pub(crate) fn policy(policy_id: i64) -> Self {
        NewChange {
            kind: ChangeKind::Policy,
            sha256: None,
            policy_id: Some(policy_id),
            computer_id: None,
        }
    }

    /// Every computer's configuration changed (rules or publishers that
    /// apply to all policies).
    pub(crate) fn all_policies() -> Self {
        NewChange {
            kind: ChangeKind::Policy,
            sha256: None,
            policy_id: None,
            computer_id: None,
        }
    }

    /// The configuration of each of `policies` changed; all of them when empty.
    pub(crate) fn policies(policies: &[i64]) -> Vec<Self> {
        if policies.is_empty() {
            vec![NewChange::all_policies()]
        } else {
            policies.iter().map(|p| NewChange::policy(*p)).collect()
        }
    }

    pub(crate) fn computer(computer_id: i64) -> Self {
        NewChange {
            kind: ChangeKind::Computer,
            sha256: None,
            policy_id: None,
            computer_id: Some(computer_id),
        }
    }
}

/// Append changes for `org_id`; returns the new revision.
pub(crate) async fn append_changes(
    tx: &mut WriteTx<'_>,
    org_id: i64,
    changes: &[NewChange],
) -> Result<i64, sqlx::Error> {
    if changes.is_empty() {
        return crate::db::revision(tx.conn()).await;
    }
    let n = i64::try_from(changes.len()).unwrap_or(i64::MAX);
    let last = bump_counter(tx.conn(), "revision", n).await?;
    let first = last - n + 1;
    let now = now_ms();
    let per = rows_per_statement(7);
    for (chunk_index, chunk) in changes.chunks(per).enumerate() {
        let sql = format!(
            "INSERT INTO changes (id, org_id, kind, sha256, policy_id, computer_id, created_ms) VALUES {}",
            values_placeholders(chunk.len(), 7, 1)
        );
        let mut q = sqlx::query(&sql);
        for (i, c) in chunk.iter().enumerate() {
            let id = first + (chunk_index * per + i) as i64;
            q = q
                .bind(id)
                .bind(org_id)
                .bind(c.kind.as_str())
                .bind(c.sha256.map(|h| h.to_hex()))
                .bind(c.policy_id)
                .bind(c.computer_id)
                .bind(now);
        }
        q.execute(tx.conn()).await?;
    }
    tx.changes_appended();
    Ok(last)
}

fn change_from_row(row: &AnyRow) -> Result<Change, sqlx::Error> {
    let kind: String = row.try_get(2)?;
    let sha: Option<String> = row.try_get(3)?;
    Ok(Change {
        id: row.try_get(0)?,
        org_id: row.try_get(1)?,
        kind: ChangeKind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown change kind {kind:?}").into()))?,
        sha256: match sha {
            Some(s) => Some(Sha256::parse(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))?),
            None => None,
        },
        policy_id: row.try_get(4)?,
        computer_id: row.try_get(5)?,
    })
}

/// Changes with `after < id <= upto` (all organizations), oldest first, at
/// most `limit`.
pub(crate) async fn changes_after(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<Change>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, org_id, kind, sha256, policy_id, computer_id FROM changes \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(change_from_row).collect()
}

/// The changes of one organization relevant to one computer in
/// `after < id <= upto`, oldest first, at most `limit`.
pub(crate) async fn relevant_changes(
    conn: &mut AnyConnection,
    who: &Who,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<Change>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, org_id, kind, sha256, policy_id, computer_id FROM changes \
         WHERE org_id = $1 AND id > $2 AND id <= $3 AND ( \
           (kind = 'file' AND ((policy_id IS NULL AND computer_id IS NULL) OR policy_id = $4 OR computer_id = $5)) \
           OR (kind = 'policy' AND (policy_id IS NULL OR policy_id = $4)) \
           OR (kind = 'computer' AND computer_id = $5)) \
         ORDER BY id LIMIT $6",
    )
    .bind(who.org_id)
    .bind(after)
    .bind(upto)
    .bind(who.policy_id)
    .bind(who.computer_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(change_from_row).collect()
}

/// The identity a change's relevance is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Who {
    pub(crate) org_id: i64,
    pub(crate) policy_id: i64,
    pub(crate) computer_id: i64,
}

/// What a set of changes means to one computer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Relevance {
    pub(crate) hashes: Vec<Sha256>,
    pub(crate) config_changed: bool,
    pub(crate) reset: bool,
    /// A `computer` change for this computer (moved or revoked).
    pub(crate) computer_changed: bool,
}

impl Relevance {
    pub(crate) fn any(&self) -> bool {
        !self.hashes.is_empty() || self.config_changed || self.reset
    }

    /// Fold `changes` (any organization) in.
    pub(crate) fn add(&mut self, who: &Who, changes: &[Change]) {
        let mut seen: HashSet<Sha256> = self.hashes.iter().copied().collect();
        for c in changes {
            if c.org_id != who.org_id {
                continue;
            }
            match c.kind {
                ChangeKind::File => {
                    let applies = match (c.policy_id, c.computer_id) {
                        (None, None) => true,
                        (Some(p), _) => p == who.policy_id,
                        (None, Some(id)) => id == who.computer_id,
                    };
                    if !applies {
                        continue;
                    }
                    match c.sha256 {
                        Some(h) => {
                            if seen.insert(h) {
                                self.hashes.push(h);
                            }
                        }
                        None => self.reset = true,
                    }
                }
                ChangeKind::Policy => {
                    if c.policy_id.is_none_or(|p| p == who.policy_id) {
                        self.config_changed = true;
                    }
                }
                ChangeKind::Computer => {
                    if c.computer_id == Some(who.computer_id) {
                        // Moved (the applicable policy states differ) or revoked.
                        self.config_changed = true;
                        self.reset = true;
                        self.computer_changed = true;
                    }
                }
            }
        }
        if self.hashes.len() > MAX_HASHES_PER_MESSAGE {
            self.reset = true;
        }
        if self.reset {
            self.hashes.clear();
        }
    }
}

/// Parse a level stored by this crate.
pub(crate) fn parse_level(s: &str) -> Result<Level, sqlx::Error> {
    s.parse::<Level>()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn parse_state(s: &str) -> Result<FileState, sqlx::Error> {
    match s {
        "approved" => Ok(FileState::Approved),
        "banned" => Ok(FileState::Banned),
        other => Err(sqlx::Error::Decode(
            format!("unknown file state {other:?}").into(),
        )),
    }
}

pub(crate) fn scope_columns(scope: Scope) -> (&'static str, i64) {
    match scope {
        Scope::Global => ("global", 0),
        Scope::Policy(p) => ("policy", p.0),
        Scope::Computer(c) => ("computer", c.0),
    }
}

pub(crate) fn scope_from_columns(kind: &str, id: i64) -> Result<Scope, sqlx::Error> {
    match kind {
        "global" => Ok(Scope::Global),
        "policy" => Ok(Scope::Policy(PolicyId(id))),
        "computer" => Ok(Scope::Computer(ComputerId(id))),
        other => Err(sqlx::Error::Decode(
            format!("unknown scope kind {other:?}").into(),
        )),
    }
}

/// Longest path the catalog stores (`file_instances.path`), in bytes; a
/// longer one is cut at a character boundary. The path is part of the
/// table's primary key, and PostgreSQL's B-tree entries hold at most about
/// 2700 bytes, so a deep path (Linux allows 4095 bytes) would fail the
/// whole statement there while SQLite took it: both store this much.
pub(crate) const MAX_STORED_PATH: usize = 2048;

/// `path` as the catalog stores it (see [`MAX_STORED_PATH`]).
pub(crate) fn stored_path(path: &str) -> &str {
    if path.len() <= MAX_STORED_PATH {
        return path;
    }
    let mut end = MAX_STORED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// One sighting of a file, for the catalog.
#[derive(Debug, Clone)]
pub(crate) struct Sighting {
    pub(crate) sha256: Sha256,
    pub(crate) computer_id: i64,
    pub(crate) path: Option<String>,
    pub(crate) operation: Option<Operation>,
    pub(crate) process_json: Option<String>,
    pub(crate) at_ms: i64,
}

/// Record sightings of one organization in the catalog: `files` rows
/// (insert if absent) and `file_instances` (insert, or bump count and
/// last-seen). Returns how many hashes were new to the organization.
///
/// Rows are sorted and de-duplicated first: PostgreSQL refuses to touch one
/// row twice in a statement, and a fixed order keeps concurrent writers
/// from deadlocking.
pub(crate) async fn record_sightings(
    conn: &mut AnyConnection,
    org_id: i64,
    sightings: &[Sighting],
) -> Result<u64, sqlx::Error> {
    let mut files: BTreeMap<Sha256, i64> = BTreeMap::new();
    // (sha, computer, path) -> (count, first, last, operation, process)
    type Inst<'a> = (i64, i64, i64, Option<&'static str>, Option<&'a str>);
    let mut instances: BTreeMap<(Sha256, i64, &str), Inst<'_>> = BTreeMap::new();
    for s in sightings {
        let f = files.entry(s.sha256).or_insert(s.at_ms);
        *f = (*f).min(s.at_ms);
        if let Some(path) = s.path.as_deref().map(stored_path) {
            let e = instances
                .entry((s.sha256, s.computer_id, path))
                .or_insert((0, s.at_ms, s.at_ms, None, None));
            e.0 += 1;
            e.1 = e.1.min(s.at_ms);
            if s.at_ms >= e.2 || e.3.is_none() {
                e.2 = e.2.max(s.at_ms);
                if s.operation.is_some() {
                    e.3 = s.operation.map(Operation::as_str);
                }
                if s.process_json.is_some() {
                    e.4 = s.process_json.as_deref();
                }
            }
        }
    }
    // Each hash with its own earliest sighting.
    let mut new_hashes = 0u64;
    let files: Vec<(Sha256, i64)> = files.into_iter().collect();
    for chunk in files.chunks(rows_per_statement(2)) {
        let sql = format!(
            "INSERT INTO files (org_id, sha256, first_seen_ms) \
             SELECT $1, v.column1, v.column2 FROM {} WHERE true \
             ON CONFLICT (org_id, sha256) DO NOTHING",
            derived_values(chunk.len(), 2, 2)
        );
        let mut q = sqlx::query(&sql).bind(org_id);
        for (sha, first_seen) in chunk {
            q = q.bind(sha.to_hex()).bind(*first_seen);
        }
        new_hashes += q.execute(&mut *conn).await?.rows_affected();
    }
    let instances: Vec<_> = instances.into_iter().collect();
    for chunk in instances.chunks(rows_per_statement(8)) {
        let sql = format!(
            "INSERT INTO file_instances (org_id, sha256, computer_id, path, first_seen_ms, \
               last_seen_ms, count, operation, process_json) \
             SELECT $1, v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
               v.column7, v.column8 FROM {} WHERE true \
             ON CONFLICT (org_id, sha256, computer_id, path) DO UPDATE SET \
               last_seen_ms = CASE WHEN excluded.last_seen_ms > file_instances.last_seen_ms \
                 THEN excluded.last_seen_ms ELSE file_instances.last_seen_ms END, \
               count = file_instances.count + excluded.count, \
               operation = COALESCE(excluded.operation, file_instances.operation), \
               process_json = COALESCE(excluded.process_json, file_instances.process_json), \
               deleted_ms = CASE WHEN file_instances.deleted_ms < excluded.last_seen_ms \
                 THEN NULL ELSE file_instances.deleted_ms END",
            derived_values(chunk.len(), 8, 2)
        );
        let mut q = sqlx::query(&sql).bind(org_id);
        for ((sha, computer, path), (count, first, last, op, process)) in chunk {
            q = q
                .bind(sha.to_hex())
                .bind(*computer)
                .bind(path.to_string())
                .bind(*first)
                .bind(*last)
                .bind(*count)
                .bind(op.map(str::to_owned))
                .bind(process.map(str::to_owned));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(new_hashes)
}

/// A policy row.
#[derive(Debug, Clone)]
pub(crate) struct PolicyRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) levels: Levels,
}

pub(crate) async fn policy_by_name(
    conn: &mut AnyConnection,
    org_id: i64,
    name: &str,
) -> Result<Option<PolicyRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, name, level, disconnected_level FROM policies WHERE org_id = $1 AND name = $2",
    )
    .bind(org_id)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.map(|r| policy_from_row(&r)).transpose()
}

pub(crate) fn policy_from_row(r: &AnyRow) -> Result<PolicyRow, sqlx::Error> {
    let level: String = r.try_get(2)?;
    let disconnected: String = r.try_get(3)?;
    Ok(PolicyRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        levels: Levels {
            connected: parse_level(&level)?,
            disconnected: parse_level(&disconnected)?,
        },
    })
}

pub(crate) async fn org_id_by_name(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

pub(crate) async fn computer_id_by_name(
    conn: &mut AnyConnection,
    org_id: i64,
    name: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM computers WHERE org_id = $1 AND name = $2")
        .bind(org_id)
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// SHA-256 hex of a secret (tokens are stored hashed).
pub(crate) fn secret_hash(secret: &[u8]) -> String {
    crate::ca::sha256(secret).to_hex()
}

/// Create an admin API token for an existing admin; returns its text.
pub(crate) async fn insert_admin_token(
    conn: &mut AnyConnection,
    admin_id: i64,
) -> Result<String, sqlx::Error> {
    let secret: [u8; 32] = rand::random();
    let token = format!("plta1.{}", hex::encode(secret));
    sqlx::query(
        "INSERT INTO admin_tokens (admin_id, token_sha256, created_ms) VALUES ($1, $2, $3)",
    )
    .bind(admin_id)
    .bind(secret_hash(token.as_bytes()))
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(token)
}

pub(crate) fn parse_sha(s: &str) -> Result<Sha256, sqlx::Error> {
    Sha256::parse(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The states of a batch of hashes that apply to a computer, by hash.
pub(crate) type StatesByHash = BTreeMap<Sha256, Vec<ScopedState>>;

/// What a lookup needs about a batch of hashes for computer `computer_id`
/// of `org_id`: the computer's policy, the states that apply to it and the
/// reputation trust ratings, in one indexed query, so the policy and the
/// states are those of one moment (read after the revision the answer
/// carries: a move committed before it is in both). The policy is `None`
/// when the computer is gone or `hashes` is empty. The IN list is padded to
/// a power of two (repeating the last hash) so that a handful of prepared
/// statements serve every batch size.
pub(crate) async fn lookup_facts(
    conn: &mut AnyConnection,
    org_id: i64,
    computer_id: i64,
    hashes: &[Sha256],
) -> Result<(Option<i64>, StatesByHash, BTreeMap<Sha256, u8>), sqlx::Error> {
    let mut states: StatesByHash = BTreeMap::new();
    let mut trust: BTreeMap<Sha256, u8> = BTreeMap::new();
    let mut policy = None;
    let Some(last) = hashes.last() else {
        return Ok((policy, states, trust));
    };
    let padded = hashes.len().next_power_of_two();
    let list = list_placeholders(padded, 3);
    let sql = format!(
        "SELECT '', 'policy_of', policy_id, '' FROM computers WHERE id = $2 AND org_id = $1 \
         UNION ALL \
         SELECT sha256, scope_kind, scope_id, state FROM file_states \
         WHERE org_id = $1 AND (scope_kind = 'global' \
           OR (scope_kind = 'policy' \
               AND scope_id = (SELECT policy_id FROM computers WHERE id = $2)) \
           OR (scope_kind = 'computer' AND scope_id = $2)) \
           AND sha256 IN ({list}) \
         UNION ALL \
         SELECT sha256, 'trust', trust, '' FROM reputation \
         WHERE org_id = $1 AND sha256 IN ({list})"
    );
    let mut q = sqlx::query(&sql).bind(org_id).bind(computer_id);
    for i in 0..padded {
        q = q.bind(hashes.get(i).unwrap_or(last).to_hex());
    }
    for row in q.fetch_all(conn).await? {
        let kind: String = row.try_get(1)?;
        let id: i64 = row.try_get(2)?;
        if kind == "policy_of" {
            policy = Some(id);
            continue;
        }
        let sha = parse_sha(&row.try_get::<String, _>(0)?)?;
        if kind == "trust" {
            trust.insert(sha, u8::try_from(id.clamp(0, 10)).unwrap_or(0));
            continue;
        }
        let state: String = row.try_get(3)?;
        states.entry(sha).or_default().push(ScopedState {
            scope: scope_from_columns(&kind, id)?,
            state: parse_state(&state)?,
        });
    }
    Ok((policy, states, trust))
}

/// The reputation trust ratings of `hashes` known to `org_id`.
pub(crate) async fn trust_for(
    conn: &mut AnyConnection,
    org_id: i64,
    hashes: &[Sha256],
) -> Result<BTreeMap<Sha256, u8>, sqlx::Error> {
    let mut out = BTreeMap::new();
    for chunk in hashes.chunks(rows_per_statement(1)) {
        let sql = format!(
            "SELECT sha256, trust FROM reputation WHERE org_id = $1 AND sha256 IN ({})",
            list_placeholders(chunk.len(), 2)
        );
        let mut q = sqlx::query(&sql).bind(org_id);
        for h in chunk {
            q = q.bind(h.to_hex());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let sha = parse_sha(&row.try_get::<String, _>(0)?)?;
            let t: i64 = row.try_get(1)?;
            out.insert(sha, u8::try_from(t.clamp(0, 10)).unwrap_or(0));
        }
    }
    Ok(out)
}

/// Longest publisher, package or version name recorded.
pub(crate) const MAX_PUBLISHER_TEXT: usize = 256;

/// Whether a publisher, package or version name is acceptable: 1 to
/// [`MAX_PUBLISHER_TEXT`] bytes, no control characters.
pub(crate) fn publisher_text_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_PUBLISHER_TEXT && !s.chars().any(char::is_control)
}

/// Record what agents attributed hashes to (`file_publishers`), and the
/// publishers named (`publishers`, insert if absent). Facts with unusable
/// text are skipped: metadata never fails a lookup.
pub(crate) async fn record_publishers(
    conn: &mut AnyConnection,
    org_id: i64,
    facts: &[(Sha256, &PublisherFact)],
    at_ms: i64,
) -> Result<(), sqlx::Error> {
    // (sha, package, version) -> (publisher, verified); the last one wins.
    let mut rows: BTreeMap<(Sha256, &str, &str), (Option<&str>, bool)> = BTreeMap::new();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (sha, f) in facts {
        let name_ok = f.name.as_deref().is_none_or(publisher_text_ok);
        if !publisher_text_ok(&f.package) || !publisher_text_ok(&f.version) || !name_ok {
            tracing::debug!(sha256 = %sha, "unusable publisher fact skipped");
            continue;
        }
        rows.insert(
            (*sha, f.package.as_str(), f.version.as_str()),
            (f.name.as_deref(), f.verified),
        );
        if let Some(n) = f.name.as_deref() {
            names.insert(n);
        }
    }
    let names: Vec<&str> = names.into_iter().collect();
    for chunk in names.chunks(rows_per_statement(1)) {
        let sql = format!(
            "INSERT INTO publishers (org_id, name, trust, created_ms) \
             SELECT $1, v.column1, NULL, $2 FROM {} WHERE true \
             ON CONFLICT (org_id, name) DO NOTHING",
            derived_values(chunk.len(), 1, 3)
        );
        let mut q = sqlx::query(&sql).bind(org_id).bind(at_ms);
        for n in chunk {
            q = q.bind(n.to_string());
        }
        q.execute(&mut *conn).await?;
    }
    let rows: Vec<_> = rows.into_iter().collect();
    for chunk in rows.chunks(rows_per_statement(5)) {
        let sql = format!(
            "INSERT INTO file_publishers (org_id, sha256, package, version, publisher, verified, \
               first_seen_ms, last_seen_ms) \
             SELECT $1, v.column1, v.column2, v.column3, v.column4, v.column5, $2, $2 \
             FROM {} WHERE true \
             ON CONFLICT (org_id, sha256, package, version) DO UPDATE SET \
               publisher = excluded.publisher, verified = excluded.verified, \
               last_seen_ms = CASE WHEN excluded.last_seen_ms > file_publishers.last_seen_ms \
                 THEN excluded.last_seen_ms ELSE file_publishers.last_seen_ms END",
            derived_values(chunk.len(), 5, 3)
        );
        let mut q = sqlx::query(&sql).bind(org_id).bind(at_ms);
        for ((sha, package, version), (publisher, verified)) in chunk {
            q = q
                .bind(sha.to_hex())
                .bind(package.to_string())
                .bind(version.to_string())
                .bind(publisher.map(str::to_owned))
                .bind(i64::from(*verified));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The sightings that are the first of their hash on their computer: no
/// `file_instances` row exists yet for (hash, computer). One per pair;
/// admin sightings (computer 0) and sightings without a path are not
/// instances. Call before [`record_sightings`] in the same transaction.
pub(crate) async fn unseen_instances(
    conn: &mut AnyConnection,
    org_id: i64,
    sightings: &[Sighting],
) -> Result<Vec<Sighting>, sqlx::Error> {
    let mut by_computer: BTreeMap<i64, BTreeMap<Sha256, &Sighting>> = BTreeMap::new();
    for s in sightings {
        if s.computer_id == 0 || s.path.is_none() {
            continue;
        }
        by_computer
            .entry(s.computer_id)
            .or_default()
            .entry(s.sha256)
            .or_insert(s);
    }
    let mut out = Vec::new();
    for (computer, firsts) in by_computer {
        let hashes: Vec<Sha256> = firsts.keys().copied().collect();
        let mut known: HashSet<Sha256> = HashSet::new();
        for chunk in hashes.chunks(rows_per_statement(1)) {
            let sql = format!(
                "SELECT DISTINCT sha256 FROM file_instances \
                 WHERE org_id = $1 AND computer_id = $2 AND sha256 IN ({})",
                list_placeholders(chunk.len(), 3)
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql)
                .bind(org_id)
                .bind(computer);
            for h in chunk {
                q = q.bind(h.to_hex());
            }
            for s in q.fetch_all(&mut *conn).await? {
                known.insert(parse_sha(&s)?);
            }
        }
        out.extend(
            firsts
                .into_iter()
                .filter(|(h, _)| !known.contains(h))
                .map(|(_, s)| s.clone()),
        );
    }
    Ok(out)
}
