//! The tamper-evident audit log: every record is chained to the one before
//! it by a SHA-256 hash.
//!
//! # The chain
//!
//! Records carry consecutive sequence numbers starting at 1. Each has a hash:
//!
//! ```text
//! hash(1) = SHA-256(GENESIS  || encode(record 1))
//! hash(n) = SHA-256(hash(n-1) || encode(record n))
//! ```
//!
//! where [`GENESIS`] is 32 zero bytes and `encode` is the byte encoding
//! below ([`encode`], [`chain_hash`]). The server stores each record with its
//! hash and appends with [`Anchor::append`]. Appends must be serialised (one
//! writer, or a lock on the chain head) and `seq` must be the primary key: two
//! records must never claim the same place. Do not take `seq` from a database
//! sequence, which skips values on rollback; a skipped value reads as a
//! removed record.
//!
//! # Encoding (version 1)
//!
//! ```text
//! encode(r) = "palisade audit v1" 0x00
//!             u64(seq) i64(at_ms) i64(org)
//!             str(actor) str(action) str(object) str(source)
//!             u8(outcome: 1 = allowed, 2 = denied)
//!             opt(str, reason) opt(json, before) opt(json, after)
//! u64, i64 = 8 bytes, big-endian (two's complement for i64)
//! str(s)   = u64(byte length of s) || UTF-8 bytes of s
//! opt(f, x)= 0x00 when absent | 0x01 || f(x)
//! json(v)  = str(canonical_json(v))
//! ```
//!
//! Every variable-length field is length-prefixed, so no two records share
//! an encoding. [`canonical_json`] writes a JSON value without whitespace,
//! object keys sorted by their UTF-8 bytes (duplicates cannot occur in a
//! `serde_json::Value`), strings escaped minimally (`\"`, `\\`, `\b`, `\f`,
//! `\n`, `\r`, `\t`, other control characters as `\u00xx`, everything else
//! literal), numbers as `serde_json` 1.x prints them (integers in decimal, floats
//! in the shortest form that reads back to the same value, e.g. `0.1`,
//! `1.0`, `1e+300`). Parsing that
//! text with `serde_json` and writing it again gives the same text, so store
//! `before` and `after` as the canonical text (a `TEXT` column), not as
//! PostgreSQL `jsonb`, which may rewrite numbers.
//!
//! # What verification detects, and what it cannot
//!
//! [`verify_chain`] (or [`ChainVerifier`], record by record) recomputes the
//! chain over records read in `seq` order and reports the first
//! [`ChainBreak`]:
//!
//! - a record whose fields, or whose stored hash, were edited
//!   ([`BreakKind::Altered`]), including a changed `seq`;
//! - records removed from the start or the middle ([`BreakKind::Removed`]: a
//!   gap in `seq`);
//! - a record whose `seq` is not above its predecessor's, as when a forged
//!   record is slipped in later under an old number
//!   ([`BreakKind::OutOfOrder`]).
//!
//! The hash is unkeyed, so it protects against an attacker who edits rows
//! but not against one who rewrites the whole chain from the edit onwards
//! (recomputing every later hash), nor against removing the newest records
//! (truncation leaves a valid, shorter chain). Both are caught only by
//! comparing with an [`Anchor`] (a `seq` and its hash) kept outside the
//! database: printed by `palisade audit verify`, sent to syslog or another
//! machine, written down. [`ChainVerifier::with_anchor`] checks that the
//! chain reaches every given anchor ([`BreakKind::Truncated`]) and agrees
//! with it ([`BreakKind::AnchorMismatch`]).

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::encoding::{hex32, sha256};
use crate::error::module_error;

/// What kind of failure an audit [`Error`] is (chain verification reports
/// [`ChainBreak`] instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A record appended to an anchor does not carry the next `seq`.
    #[error("audit record out of sequence")]
    NotNext,
    /// An anchor's text is not `<seq>:<64 hex digits>`.
    #[error("malformed audit anchor: expected <seq>:<64 hex digits>")]
    MalformedAnchor,
    /// A stored hash is not 64 hex digits.
    #[error("malformed audit hash: expected 64 hex digits")]
    MalformedHash,
}

module_error!("audit");

/// The value the first record is chained to: 32 zero bytes.
pub const GENESIS: [u8; 32] = [0; 32];

/// The version tag that starts every encoding.
const TAG: &[u8] = b"palisade audit v1\0";

/// Whether the audited action was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It was allowed and done.
    Allowed,
    /// It was refused (failed login, missing permission, ...).
    Denied,
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1, consecutive.
    pub seq: u64,
    /// When it happened (Unix ms, the server's clock).
    pub at_ms: i64,
    /// The organisation it belongs to.
    pub org: i64,
    /// Who acted: an admin's login, a token id, `system`.
    pub actor: String,
    /// What was attempted, e.g. `rule.update`, `login`.
    pub action: String,
    /// What it was done to, e.g. `rule:42`.
    pub object: String,
    /// Where the request came from: an address, `cli`, `console`.
    pub source: String,
    /// Whether it was carried out.
    pub outcome: Outcome,
    /// Why it was denied, or a comment.
    pub reason: Option<String>,
    /// The object before the change, if any.
    pub before: Option<Value>,
    /// The object after the change, if any.
    pub after: Option<Value>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// The canonical byte encoding of `record` (see the module doc).
pub fn encode(record: &AuditRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(TAG);
    out.extend_from_slice(&record.seq.to_be_bytes());
    out.extend_from_slice(&record.at_ms.to_be_bytes());
    out.extend_from_slice(&record.org.to_be_bytes());
    put_str(&mut out, &record.actor);
    put_str(&mut out, &record.action);
    put_str(&mut out, &record.object);
    put_str(&mut out, &record.source);
    out.push(match record.outcome {
        Outcome::Allowed => 1,
        Outcome::Denied => 2,
    });
    put_opt_str(&mut out, record.reason.as_deref());
    put_opt_str(
        &mut out,
        record.before.as_ref().map(canonical_json).as_deref(),
    );
    put_opt_str(
        &mut out,
        record.after.as_ref().map(canonical_json).as_deref(),
    );
    out
}

/// The canonical JSON text of `value` (see the module doc).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(key, out);
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The hash of `record` chained to `prev` (the previous record's hash, or
/// [`GENESIS`] for the first): SHA-256(prev || encode(record)).
pub fn chain_hash(prev: &[u8; 32], record: &AuditRecord) -> [u8; 32] {
    sha256(&[prev, &encode(record)])
}

/// Parses a stored hash written as 64 hex digits.
pub fn parse_hash(text: &str) -> Result<[u8; 32]> {
    hex32(text).ok_or_else(|| ErrorKind::MalformedHash.into())
}

/// A position in the chain: a record's `seq` and hash. Written
/// `<seq>:<64 lowercase hex digits>` (`Display`, `FromStr`, serde).
///
/// Kept outside the database, it pins the chain: a later verification must
/// reach `seq` and find the same hash there.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Anchor {
    /// The record's `seq`; 0 for the empty chain.
    pub seq: u64,
    /// The record's hash; [`GENESIS`] for the empty chain.
    pub hash: [u8; 32],
}

impl Anchor {
    /// The empty chain: `seq` 0, hash [`GENESIS`]. The first record appended
    /// to it has `seq` 1.
    pub const GENESIS: Anchor = Anchor {
        seq: 0,
        hash: GENESIS,
    };

    /// The chain's new head after appending `record` to the chain whose head
    /// is `self`: checks that `record.seq` is `self.seq + 1` and hashes it.
    /// Store `record` with the returned anchor's `hash`.
    pub fn append(&self, record: &AuditRecord) -> Result<Anchor> {
        if Some(record.seq) != self.seq.checked_add(1) {
            return Err(Error::new(
                ErrorKind::NotNext,
                format!(
                    "expected seq {}, got {}",
                    self.seq.saturating_add(1),
                    record.seq
                ),
            ));
        }
        Ok(Anchor {
            seq: record.seq,
            hash: chain_hash(&self.hash, record),
        })
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex::encode(self.hash))
    }
}

impl fmt::Debug for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Anchor({self})")
    }
}

impl FromStr for Anchor {
    type Err = Error;

    fn from_str(text: &str) -> Result<Anchor> {
        let malformed = || Error::from(ErrorKind::MalformedAnchor);
        let (seq, hash) = text.trim_ascii().split_once(':').ok_or_else(malformed)?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        Ok(Anchor {
            seq: seq.parse().map_err(|_| malformed())?,
            hash: hex32(hash).ok_or_else(malformed)?,
        })
    }
}

impl TryFrom<String> for Anchor {
    type Error = Error;

    fn try_from(text: String) -> Result<Anchor> {
        text.parse()
    }
}

impl From<Anchor> for String {
    fn from(anchor: Anchor) -> String {
        anchor.to_string()
    }
}

/// How the chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakKind {
    /// The record's recomputed hash differs from its stored hash: a field
    /// (its `seq` included) or the stored hash was edited.
    Altered,
    /// Records `seq ..= through` are missing (deleted from the start or the
    /// middle of the chain).
    Removed {
        /// The last missing `seq`.
        through: u64,
    },
    /// The record's `seq` is not above the previous record's: read out of
    /// order, a duplicate, or a forged record appended under an old number.
    OutOfOrder {
        /// The previous record's `seq`.
        previous: u64,
    },
    /// The chain verifies on its own but disagrees with an external anchor
    /// at `seq`: it was rewritten (hashes recomputed) up to there.
    AnchorMismatch,
    /// The chain ends before an external anchor's `seq`: the newest records
    /// (from `seq` on) were removed.
    Truncated {
        /// The anchor's `seq`.
        anchor_seq: u64,
    },
}

/// Where and how the chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainBreak {
    /// The `seq` of the first record concerned: the altered or out-of-order
    /// record, the first removed one, the anchor's.
    pub seq: u64,
    /// What is wrong there.
    pub kind: BreakKind,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match self.kind {
            BreakKind::Altered => write!(
                f,
                "audit record {seq} was altered: its content does not match its hash"
            ),
            BreakKind::Removed { through } if through == seq => {
                write!(f, "audit record {seq} was removed")
            }
            BreakKind::Removed { through } => {
                write!(f, "audit records {seq} to {through} were removed")
            }
            BreakKind::OutOfOrder { previous } => write!(
                f,
                "audit record {seq} is out of order: it follows record {previous}"
            ),
            BreakKind::AnchorMismatch => write!(
                f,
                "the audit chain disagrees with the saved anchor at record {seq}: it was rewritten"
            ),
            BreakKind::Truncated { anchor_seq } => write!(
                f,
                "the audit chain was truncated: it ends at record {}, before the saved anchor at {anchor_seq}",
                seq.saturating_sub(1)
            ),
        }
    }
}

impl std::error::Error for ChainBreak {}

/// What a successful verification covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedSummary {
    /// How many records were verified.
    pub records: u64,
    /// The `seq` of the first one, if any.
    pub first_seq: Option<u64>,
    /// The chain's head: the last record's `seq` and hash (the starting
    /// anchor when there were no records). Save it to check later
    /// verifications against.
    pub head: Anchor,
    /// How many external anchors were reached and matched.
    pub anchors_matched: usize,
}

/// Verifies a chain record by record, for callers that stream records from
/// a database.
///
/// After a break, [`ChainVerifier::push`] resynchronises (after an altered
/// record, on its stored hash; after a gap, on the first record after it;
/// an out-of-order record is skipped) so that a caller may go on to list
/// every break; [`ChainVerifier::finish`] still fails, with the first one.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    head: Anchor,
    anchors: Vec<Anchor>,
    anchors_matched: usize,
    records: u64,
    first_seq: Option<u64>,
    first_break: Option<ChainBreak>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier::new()
    }
}

impl ChainVerifier {
    /// Verifies a whole chain, from [`GENESIS`]: the first record must have
    /// `seq` 1.
    pub fn new() -> ChainVerifier {
        ChainVerifier::resume(Anchor::GENESIS)
    }

    /// Verifies the records after a trusted anchor (e.g. the head saved by
    /// the previous verification): the first must have `seq` `from.seq + 1`
    /// and chain to `from.hash`. Read them with `WHERE seq > from.seq`.
    pub fn resume(from: Anchor) -> ChainVerifier {
        ChainVerifier {
            head: from,
            anchors: Vec::new(),
            anchors_matched: 0,
            records: 0,
            first_seq: None,
            first_break: None,
        }
    }

    /// Also requires the chain to reach `anchor.seq` and to have
    /// `anchor.hash` there.
    ///
    /// An anchor at or before the point a [resumed](ChainVerifier::resume)
    /// verification starts from can only be compared with that starting
    /// anchor: if it is not the same, verification fails with
    /// [`BreakKind::AnchorMismatch`].
    pub fn with_anchor(mut self, anchor: Anchor) -> ChainVerifier {
        if self.records == 0 && anchor.seq <= self.head.seq {
            if anchor == self.head {
                self.anchors_matched += 1;
            } else {
                self.first_break.get_or_insert(ChainBreak {
                    seq: anchor.seq,
                    kind: BreakKind::AnchorMismatch,
                });
            }
        } else {
            self.anchors.push(anchor);
        }
        self
    }

    fn fail(&mut self, found: ChainBreak) -> Result<(), ChainBreak> {
        self.first_break.get_or_insert(found);
        Err(found)
    }

    /// Checks the next record, read in `seq` order, against its stored hash.
    pub fn push(&mut self, record: &AuditRecord, stored_hash: &[u8; 32]) -> Result<(), ChainBreak> {
        let expected = self.head.seq.saturating_add(1);
        if record.seq < expected {
            return self.fail(ChainBreak {
                seq: record.seq,
                kind: BreakKind::OutOfOrder {
                    previous: self.head.seq,
                },
            });
        }
        self.records += 1;
        self.first_seq.get_or_insert(record.seq);
        if record.seq > expected {
            // Anchors inside the gap are covered by this break.
            self.anchors.retain(|a| a.seq > record.seq);
            self.head = Anchor {
                seq: record.seq,
                hash: *stored_hash,
            };
            return self.fail(ChainBreak {
                seq: expected,
                kind: BreakKind::Removed {
                    through: record.seq - 1,
                },
            });
        }
        let computed = chain_hash(&self.head.hash, record);
        if computed != *stored_hash {
            self.anchors.retain(|a| a.seq != record.seq);
            self.head = Anchor {
                seq: record.seq,
                hash: *stored_hash,
            };
            return self.fail(ChainBreak {
                seq: record.seq,
                kind: BreakKind::Altered,
            });
        }
        self.head = Anchor {
            seq: record.seq,
            hash: computed,
        };
        let before = self.anchors.len();
        let mut mismatch = false;
        self.anchors.retain(|a| {
            if a.seq != record.seq {
                return true;
            }
            mismatch |= a.hash != computed;
            false
        });
        let reached = before - self.anchors.len();
        if mismatch {
            return self.fail(ChainBreak {
                seq: record.seq,
                kind: BreakKind::AnchorMismatch,
            });
        }
        self.anchors_matched += reached;
        Ok(())
    }

    /// Ends the verification: the first break met, or a truncation if an
    /// anchor lies beyond the last record, or the summary.
    pub fn finish(self) -> Result<VerifiedSummary, ChainBreak> {
        if let Some(found) = self.first_break {
            return Err(found);
        }
        if let Some(anchor) = self.anchors.iter().min_by_key(|a| a.seq) {
            // Anchors the records passed were removed from the list as they
            // were met; one left at or before the head was added after
            // records had passed its `seq`, so it could not be checked.
            return Err(if anchor.seq <= self.head.seq {
                ChainBreak {
                    seq: anchor.seq,
                    kind: BreakKind::AnchorMismatch,
                }
            } else {
                ChainBreak {
                    seq: self.head.seq.saturating_add(1),
                    kind: BreakKind::Truncated {
                        anchor_seq: anchor.seq,
                    },
                }
            });
        }
        Ok(VerifiedSummary {
            records: self.records,
            first_seq: self.first_seq,
            head: self.head,
            anchors_matched: self.anchors_matched,
        })
    }
}

/// Verifies a whole chain, from [`GENESIS`], given its records in `seq` order
/// with their stored hashes; stops at the first break.
pub fn verify_chain<I, R, H>(records: I) -> Result<VerifiedSummary, ChainBreak>
where
    I: IntoIterator<Item = (R, H)>,
    R: Borrow<AuditRecord>,
    H: Borrow<[u8; 32]>,
{
    verify_with(ChainVerifier::new(), records)
}

/// Like [`verify_chain`], and also checks the chain against an `anchor` kept
/// outside the database (see the module doc).
pub fn verify_chain_against<I, R, H>(
    records: I,
    anchor: Anchor,
) -> Result<VerifiedSummary, ChainBreak>
where
    I: IntoIterator<Item = (R, H)>,
    R: Borrow<AuditRecord>,
    H: Borrow<[u8; 32]>,
{
    verify_with(ChainVerifier::new().with_anchor(anchor), records)
}

fn verify_with<I, R, H>(
    mut verifier: ChainVerifier,
    records: I,
) -> Result<VerifiedSummary, ChainBreak>
where
    I: IntoIterator<Item = (R, H)>,
    R: Borrow<AuditRecord>,
    H: Borrow<[u8; 32]>,
{
    for (record, hash) in records {
        verifier.push(record.borrow(), hash.borrow())?;
    }
    verifier.finish()
}
