use palisade_authn::audit::{
    canonical_json, chain_hash, encode, parse_hash, verify_chain, verify_chain_against, Anchor,
    AuditRecord, BreakKind, ChainBreak, ChainVerifier, ErrorKind, Outcome, GENESIS,
};
use serde_json::json;

fn record(seq: u64) -> AuditRecord {
    AuditRecord {
        seq,
        at_ms: 1_700_000_000_000 + seq as i64 * 1_000,
        org: 1 + (seq % 2) as i64,
        actor: format!("admin{}", seq % 3),
        action: ["login", "rule.update", "token.create"][seq as usize % 3].to_owned(),
        object: format!("rule:{seq}"),
        source: "192.0.2.7".to_owned(),
        outcome: if seq.is_multiple_of(4) {
            Outcome::Denied
        } else {
            Outcome::Allowed
        },
        reason: seq
            .is_multiple_of(4)
            .then(|| "missing permission".to_owned()),
        before: seq
            .is_multiple_of(2)
            .then(|| json!({"level": "enforce", "paths": ["/usr/bin"], "n": seq})),
        after: (!seq.is_multiple_of(3))
            .then(|| json!({"level": "monitor", "nested": {"b": 1.5, "a": null}})),
    }
}

/// A chain of `n` records with their hashes, as the server stores it.
fn chain(n: u64) -> Vec<(AuditRecord, [u8; 32])> {
    let mut head = Anchor::GENESIS;
    (1..=n)
        .map(|seq| {
            let r = record(seq);
            head = head.append(&r).unwrap();
            (r, head.hash)
        })
        .collect()
}

fn head_of(rows: &[(AuditRecord, [u8; 32])]) -> Anchor {
    let (r, h) = rows.last().unwrap();
    Anchor {
        seq: r.seq,
        hash: *h,
    }
}

fn broken(seq: u64, kind: BreakKind) -> Result<(), ChainBreak> {
    Err(ChainBreak { seq, kind })
}

fn verify(rows: &[(AuditRecord, [u8; 32])]) -> Result<(), ChainBreak> {
    verify_chain(rows.iter().map(|(r, h)| (r, h))).map(|_| ())
}

/// Every break a verifier reports, going on after each.
fn all_breaks(rows: &[(AuditRecord, [u8; 32])]) -> Vec<ChainBreak> {
    let mut verifier = ChainVerifier::new();
    let mut breaks: Vec<ChainBreak> = rows
        .iter()
        .filter_map(|(r, h)| verifier.push(r, h).err())
        .collect();
    let first = verifier.finish().err();
    assert_eq!(first, breaks.first().copied());
    breaks.dedup();
    breaks
}

#[test]
fn intact_chain_verifies() {
    let rows = chain(10);
    let summary = verify_chain(rows.iter().map(|(r, h)| (r, h))).unwrap();
    assert_eq!(summary.records, 10);
    assert_eq!(summary.first_seq, Some(1));
    assert_eq!(summary.head, head_of(&rows));
    assert_eq!(summary.anchors_matched, 0);
    // Owned items work as well as borrowed ones.
    assert_eq!(verify_chain(rows.clone()).unwrap(), summary);

    let empty = verify_chain(Vec::<(AuditRecord, [u8; 32])>::new()).unwrap();
    assert_eq!(empty.records, 0);
    assert_eq!(empty.first_seq, None);
    assert_eq!(empty.head, Anchor::GENESIS);

    assert_eq!(GENESIS, [0u8; 32]);
    assert_eq!(rows[0].1, chain_hash(&GENESIS, &rows[0].0));
    assert_eq!(rows[1].1, chain_hash(&rows[0].1, &rows[1].0));
}

#[test]
fn edited_field_is_detected() {
    type Edit = fn(&mut AuditRecord);
    let edits: &[(&str, Edit)] = &[
        ("at_ms", |r| r.at_ms += 1),
        ("org", |r| r.org = 99),
        ("actor", |r| r.actor.push('x')),
        ("action", |r| r.action = "rule.delete".into()),
        ("object", |r| r.object = "rule:1".into()),
        ("source", |r| r.source = "198.51.100.1".into()),
        ("outcome", |r| {
            r.outcome = match r.outcome {
                Outcome::Allowed => Outcome::Denied,
                Outcome::Denied => Outcome::Allowed,
            }
        }),
        ("reason added", |r| r.reason = Some("because".into())),
        ("reason removed", |r| r.reason = None),
        ("before", |r| r.before = Some(json!({"level": "off"}))),
        ("before removed", |r| r.before = None),
        ("after nested", |r| {
            r.after = Some(json!({"level": "monitor", "nested": {"b": 1.5}}))
        }),
        ("after null", |r| r.after = Some(serde_json::Value::Null)),
    ];
    for (what, edit) in edits {
        for seq in [1, 4, 6, 10] {
            let mut rows = chain(10);
            let original = rows[seq - 1].0.clone();
            edit(&mut rows[seq - 1].0);
            if rows[seq - 1].0 == original {
                continue; // the edit is a no-op for this record
            }
            assert_eq!(
                verify(&rows),
                broken(seq as u64, BreakKind::Altered),
                "{what} of record {seq}"
            );
            // Only that record is reported: the next ones chain to its stored hash.
            assert_eq!(all_breaks(&rows).len(), 1, "{what} of record {seq}");
        }
    }
}

#[test]
fn edited_stored_hash_is_detected() {
    let mut rows = chain(5);
    rows[2].1[0] ^= 1;
    assert_eq!(verify(&rows), broken(3, BreakKind::Altered));
    // The next record chains to the real hash, so it breaks too.
    assert_eq!(
        all_breaks(&rows),
        [
            ChainBreak {
                seq: 3,
                kind: BreakKind::Altered
            },
            ChainBreak {
                seq: 4,
                kind: BreakKind::Altered
            }
        ]
    );
}

#[test]
fn json_key_order_is_not_a_change() {
    let mut rows = chain(4);
    rows[1].0.before =
        Some(serde_json::from_str(r#"{"paths":["/usr/bin"],"n":2,"level":"enforce"}"#).unwrap());
    assert_eq!(verify(&rows), Ok(()));
}

#[test]
fn removed_records_are_detected() {
    let check = |remove: &[usize], expect: ChainBreak| {
        let mut rows = chain(8);
        for &i in remove.iter().rev() {
            rows.remove(i - 1);
        }
        assert_eq!(verify(&rows), Err(expect), "removing {remove:?}");
    };
    let removed = |seq, through| ChainBreak {
        seq,
        kind: BreakKind::Removed { through },
    };
    check(&[1], removed(1, 1));
    check(&[1, 2, 3], removed(1, 3));
    check(&[4], removed(4, 4));
    check(&[4, 5], removed(4, 5));
    check(&[2, 6], removed(2, 2));
    // Removing the last record leaves a valid chain: see the anchor tests.
    let mut rows = chain(8);
    rows.pop();
    assert_eq!(verify(&rows), Ok(()));
}

#[test]
fn renumbering_after_a_removal_is_an_alteration() {
    // Record 4 deleted and the later ones renumbered to close the gap.
    let mut rows = chain(6);
    rows.remove(3);
    for row in &mut rows[3..] {
        row.0.seq -= 1;
    }
    assert_eq!(verify(&rows), broken(4, BreakKind::Altered));
}

#[test]
fn reordered_records_are_detected() {
    // Two records swap places by exchanging their seq numbers; read in seq
    // order, each now sits where the other's hash is expected.
    let mut rows = chain(5);
    rows[1].0.seq = 3;
    rows[2].0.seq = 2;
    rows.swap(1, 2);
    assert_eq!(verify(&rows), broken(2, BreakKind::Altered));

    // Rows delivered out of seq order (1, 3, 2, 4): the early 3 reads as a
    // gap, the late 2 as out of order; 4 chains to 3 and verifies.
    let rows = chain(4);
    let shuffled = vec![
        rows[0].clone(),
        rows[2].clone(),
        rows[1].clone(),
        rows[3].clone(),
    ];
    assert_eq!(
        verify(&shuffled),
        broken(2, BreakKind::Removed { through: 2 })
    );
    assert_eq!(
        all_breaks(&shuffled),
        [
            ChainBreak {
                seq: 2,
                kind: BreakKind::Removed { through: 2 }
            },
            ChainBreak {
                seq: 2,
                kind: BreakKind::OutOfOrder { previous: 3 }
            },
        ]
    );
}

#[test]
fn record_appended_out_of_order_is_detected() {
    // A forged record slipped in at the end under an old number.
    let mut rows = chain(5);
    let mut forged = record(3);
    forged.action = "token.revoke".into();
    let hash = chain_hash(&rows[1].1, &forged);
    rows.push((forged, hash));
    assert_eq!(
        verify(&rows),
        broken(3, BreakKind::OutOfOrder { previous: 5 })
    );
    // A duplicate of the last one.
    let mut rows = chain(5);
    rows.push(rows[4].clone());
    assert_eq!(
        verify(&rows),
        broken(5, BreakKind::OutOfOrder { previous: 5 })
    );
}

#[test]
fn tail_truncation_needs_an_anchor() {
    let rows = chain(10);
    let saved = head_of(&rows);
    let ok = verify_chain_against(rows.iter().map(|(r, h)| (r, h)), saved).unwrap();
    assert_eq!(ok.anchors_matched, 1);
    assert_eq!(ok.head, saved);

    let truncated = &rows[..7];
    assert_eq!(verify(truncated), Ok(()), "undetectable without an anchor");
    let err = verify_chain_against(truncated.iter().map(|(r, h)| (r, h)), saved).unwrap_err();
    assert_eq!(
        err,
        ChainBreak {
            seq: 8,
            kind: BreakKind::Truncated { anchor_seq: 10 }
        }
    );
    assert_eq!(
        err.to_string(),
        "the audit chain was truncated: it ends at record 7, before the saved anchor at 10"
    );
    let err = verify_chain_against(Vec::<(AuditRecord, [u8; 32])>::new(), saved).unwrap_err();
    assert_eq!(
        err,
        ChainBreak {
            seq: 1,
            kind: BreakKind::Truncated { anchor_seq: 10 }
        }
    );

    // Records appended after the anchor are fine.
    let longer = chain(12);
    assert_eq!(
        verify_chain_against(longer.iter().map(|(r, h)| (r, h)), saved).map(|s| s.anchors_matched),
        Ok(1)
    );
}

#[test]
fn rewritten_chain_needs_an_anchor() {
    // An attacker edits record 3 and recomputes every hash from there on.
    let rows = chain(10);
    let saved = head_of(&rows);
    let mut head = Anchor {
        seq: 2,
        hash: rows[1].1,
    };
    let rewritten: Vec<_> = rows
        .iter()
        .map(|(r, h)| {
            if r.seq < 3 {
                return (r.clone(), *h);
            }
            let mut r = r.clone();
            if r.seq == 3 {
                r.outcome = Outcome::Allowed;
                r.actor = "someone-else".into();
            }
            head = head.append(&r).unwrap();
            (r, head.hash)
        })
        .collect();
    assert_eq!(verify(&rewritten), Ok(()), "undetectable without an anchor");
    let err = verify_chain_against(rewritten.iter().map(|(r, h)| (r, h)), saved).unwrap_err();
    assert_eq!(
        err,
        ChainBreak {
            seq: 10,
            kind: BreakKind::AnchorMismatch
        }
    );
    // An anchor in the middle pins the chain there.
    let middle = Anchor {
        seq: 5,
        hash: rows[4].1,
    };
    let err = verify_chain_against(rewritten.iter().map(|(r, h)| (r, h)), middle).unwrap_err();
    assert_eq!(
        err,
        ChainBreak {
            seq: 5,
            kind: BreakKind::AnchorMismatch
        }
    );
}

#[test]
fn resume_from_a_saved_head() {
    let rows = chain(10);
    let first = verify_chain(rows[..6].iter().map(|(r, h)| (r, h))).unwrap();
    let mut verifier = ChainVerifier::resume(first.head).with_anchor(first.head);
    for (r, h) in &rows[6..] {
        verifier.push(r, h).unwrap();
    }
    let rest = verifier.finish().unwrap();
    assert_eq!(rest.records, 4);
    assert_eq!(rest.first_seq, Some(7));
    assert_eq!(rest.head, head_of(&rows));
    assert_eq!(rest.anchors_matched, 1);

    // From a wrong starting hash, the first record breaks.
    let wrong = Anchor {
        seq: 6,
        hash: [7; 32],
    };
    let mut verifier = ChainVerifier::resume(wrong);
    assert_eq!(
        verifier.push(&rows[6].0, &rows[6].1),
        broken(7, BreakKind::Altered)
    );
    // An anchor from before the starting point that is not it cannot be checked.
    let older = Anchor {
        seq: 3,
        hash: rows[2].1,
    };
    assert_eq!(
        ChainVerifier::resume(first.head)
            .with_anchor(older)
            .finish(),
        Err(ChainBreak {
            seq: 3,
            kind: BreakKind::AnchorMismatch
        })
    );
}

#[test]
fn anchor_text_and_append() {
    let rows = chain(3);
    let anchor = head_of(&rows);
    let text = anchor.to_string();
    assert_eq!(text, format!("3:{}", hex::encode(rows[2].1)));
    assert_eq!(text.parse::<Anchor>(), Ok(anchor));
    assert_eq!(format!(" {text}\n").parse::<Anchor>(), Ok(anchor));
    let json = serde_json::to_string(&anchor).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<Anchor>(&json).unwrap(), anchor);
    assert!(serde_json::from_str::<Anchor>("\"3:00\"").is_err());

    let hash = hex::encode(rows[2].1);
    for bad in [
        String::new(),
        "3".into(),
        hash.clone(),
        format!(":{hash}"),
        format!("-3:{hash}"),
        format!("+3:{hash}"),
        format!("3:{}", &hash[1..]),
        format!("3:{hash}0"),
        format!("18446744073709551616:{hash}"),
        format!("3 :{hash}"),
    ] {
        let err = bad.parse::<Anchor>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MalformedAnchor, "{bad:?}");
    }
    assert_eq!(parse_hash(&hash), Ok(rows[2].1));
    assert_eq!(
        parse_hash("00").unwrap_err().kind(),
        ErrorKind::MalformedHash
    );

    for seq in [0, 1, 3, 5] {
        let err = anchor.append(&record(seq)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotNext);
        assert_eq!(
            err.to_string(),
            format!("audit record out of sequence: expected seq 4, got {seq}")
        );
    }
    assert_eq!(anchor.append(&record(4)).unwrap().seq, 4);
}

#[test]
fn canonical_json_is_sorted_compact_and_stable() {
    let value = json!({
        "b": [1, -2, 3.25, 1e300, true, null],
        "a": {"z": "quote \" backslash \\ newline \n tab \t bell \u{7} é 😀", "y": {}},
        "B": [],
        "é": 0,
    });
    let text = canonical_json(&value);
    assert_eq!(
        text,
        r#"{"B":[],"a":{"y":{},"z":"quote \" backslash \\ newline \n tab \t bell \u0007 é 😀"},"b":[1,-2,3.25,1e+300,true,null],"é":0}"#
    );
    // Reading the text back and writing it again changes nothing.
    let reread: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reread, value);
    assert_eq!(canonical_json(&reread), text);
    for v in [
        json!(0.1),
        json!(-0.0),
        json!(1.0),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(2.5e-8),
    ] {
        let t = canonical_json(&v);
        assert_eq!(canonical_json(&serde_json::from_str(&t).unwrap()), t, "{v}");
    }
}

#[test]
fn encoding_is_unambiguous() {
    // The same characters split differently between fields.
    let mut a = record(1);
    let mut b = record(1);
    a.actor = "ab".into();
    a.action = "c".into();
    b.actor = "a".into();
    b.action = "bc".into();
    assert_ne!(encode(&a), encode(&b));
    // An absent reason differs from an empty one, and an absent `before`
    // from a JSON null.
    let mut c = record(1);
    c.reason = None;
    let mut d = c.clone();
    d.reason = Some(String::new());
    assert_ne!(encode(&c), encode(&d));
    let mut e = record(1);
    e.before = None;
    let mut f = e.clone();
    f.before = Some(serde_json::Value::Null);
    assert_ne!(encode(&e), encode(&f));
    // A reason that looks like JSON is not the `before` field.
    let mut g = record(1);
    g.reason = None;
    g.before = Some(json!("x"));
    let mut h = g.clone();
    h.reason = Some("\"x\"".into());
    h.before = None;
    assert_ne!(encode(&g), encode(&h));
}

/// The encoding is a stored format: existing chains must keep verifying. If
/// this test fails, the format changed; version it instead.
#[test]
fn encoding_known_answer() {
    let r = AuditRecord {
        seq: 1,
        at_ms: 1_700_000_000_000,
        org: 1,
        actor: "alice".into(),
        action: "login".into(),
        object: "admin:alice".into(),
        source: "192.0.2.7".into(),
        outcome: Outcome::Denied,
        reason: Some("wrong password".into()),
        before: None,
        after: Some(json!({"b": 1, "a": [true]})),
    };
    let mut expected = b"palisade audit v1\0".to_vec();
    expected.extend_from_slice(&1u64.to_be_bytes());
    expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    expected.extend_from_slice(&1i64.to_be_bytes());
    for s in ["alice", "login", "admin:alice", "192.0.2.7"] {
        expected.extend_from_slice(&(s.len() as u64).to_be_bytes());
        expected.extend_from_slice(s.as_bytes());
    }
    expected.push(2);
    expected.push(1);
    expected.extend_from_slice(&14u64.to_be_bytes());
    expected.extend_from_slice(b"wrong password");
    expected.push(0);
    expected.push(1);
    expected.extend_from_slice(&18u64.to_be_bytes());
    expected.extend_from_slice(br#"{"a":[true],"b":1}"#);
    assert_eq!(encode(&r), expected);
    assert_eq!(hex::encode(chain_hash(&GENESIS, &r)), KNOWN_HASH,);
    // Serde form of a record, for the server's and CLI's JSON.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["outcome"], "denied");
    assert_eq!(serde_json::from_value::<AuditRecord>(json).unwrap(), r);
}

const KNOWN_HASH: &str = "9080823d4267fa1392302fca19a40a9b02cb18e8474d1e376a76cf3df232dfe1";
