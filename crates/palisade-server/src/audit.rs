//! The audit log: one hash chain per organization (`audit_log`,
//! `audit_heads`), appended to for every admin operation that changes
//! something and for every refused one; `palisade audit verify` walks it
//! with [`palisade_authn::audit::ChainVerifier`].
//!
//! Appending reads and updates the organization's head row in the same
//! transaction as the insert, so concurrent appenders (on any replica)
//! queue on that row and the chain stays linear.
use crate::db::{now_ms, Db};
use crate::errors::{Error, ErrorKind};
use palisade_authn::audit::{chain_hash, AuditRecord, Outcome, GENESIS};
use sqlx::{AnyConnection, Row};

/// One record to append (the sequence number and time are assigned here).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) org_id: i64,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) object: String,
    pub(crate) source: String,
    pub(crate) allowed: bool,
    pub(crate) reason: Option<String>,
    pub(crate) before: Option<serde_json::Value>,
    pub(crate) after: Option<serde_json::Value>,
}

/// Append `entry` to its organization's chain, in a transaction of its own.
pub(crate) async fn append(db: &Db, entry: Entry) -> Result<u64, Error> {
    let mut tx = db.write().await?;
    let seq = append_in(tx.conn(), entry).await?;
    tx.commit_unaudited().await?;
    Ok(seq)
}

/// Append `entry` to its organization's chain within the caller's
/// transaction (which then holds the chain's head row until it ends).
pub(crate) async fn append_in(conn: &mut AnyConnection, entry: Entry) -> Result<u64, sqlx::Error> {
    sqlx::query("INSERT INTO audit_heads (org_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (org_id) DO NOTHING")
        .bind(entry.org_id)
        .bind(hex::encode(GENESIS))
        .execute(&mut *conn)
        .await?;
    let row =
        sqlx::query("UPDATE audit_heads SET seq = seq + 1 WHERE org_id = $1 RETURNING seq, hash")
            .bind(entry.org_id)
            .fetch_one(&mut *conn)
            .await?;
    let seq: i64 = row.try_get(0)?;
    let prev_hex: String = row.try_get(1)?;
    let prev = palisade_authn::audit::parse_hash(&prev_hex).map_err(|e| {
        sqlx::Error::Decode(format!("audit head of organization {}: {e}", entry.org_id).into())
    })?;
    let record = AuditRecord {
        seq: u64::try_from(seq).unwrap_or(0),
        at_ms: now_ms(),
        org: entry.org_id,
        actor: entry.actor,
        action: entry.action,
        object: entry.object,
        source: entry.source,
        outcome: if entry.allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        },
        reason: entry.reason,
        before: entry.before,
        after: entry.after,
    };
    let hash = hex::encode(chain_hash(&prev, &record));
    sqlx::query(
        "INSERT INTO audit_log (org_id, seq, at_ms, actor, action, object, before_json, after_json, \
           source, outcome, reason, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(record.org)
    .bind(seq)
    .bind(record.at_ms)
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.object)
    .bind(record.before.as_ref().map(|v| v.to_string()))
    .bind(record.after.as_ref().map(|v| v.to_string()))
    .bind(&record.source)
    .bind(outcome_str(record.outcome))
    .bind(&record.reason)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_heads SET hash = $1 WHERE org_id = $2")
        .bind(&hash)
        .bind(record.org)
        .execute(&mut *conn)
        .await?;
    Ok(record.seq)
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Allowed => "allowed",
        Outcome::Denied => "denied",
    }
}

/// Records of an organization with `seq > after`, oldest first, at most
/// `limit`, each with its stored hash (hex).
pub(crate) async fn records(
    db: &Db,
    org_id: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<(AuditRecord, String)>, Error> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, actor, action, object, before_json, after_json, source, outcome, \
           reason, hash FROM audit_log WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let json = |v: Option<String>| -> Result<Option<serde_json::Value>, Error> {
            v.map(|t| {
                serde_json::from_str(&t).map_err(|e| {
                    Error::new(
                        ErrorKind::Database,
                        format!("audit record holds invalid JSON: {e}"),
                    )
                })
            })
            .transpose()
        };
        let outcome: String = r.try_get(8)?;
        let seq: i64 = r.try_get(0)?;
        out.push((
            AuditRecord {
                seq: u64::try_from(seq).unwrap_or(0),
                at_ms: r.try_get(1)?,
                org: org_id,
                actor: r.try_get(2)?,
                action: r.try_get(3)?,
                object: r.try_get(4)?,
                before: json(r.try_get(5)?)?,
                after: json(r.try_get(6)?)?,
                source: r.try_get(7)?,
                outcome: match outcome.as_str() {
                    "allowed" => Outcome::Allowed,
                    "denied" => Outcome::Denied,
                    other => {
                        return Err(Error::new(
                            ErrorKind::Database,
                            format!("audit record {seq} has an unknown outcome {other:?}"),
                        ))
                    }
                },
                reason: r.try_get(9)?,
            },
            r.try_get(10)?,
        ));
    }
    Ok(out)
}
