use palisade_authn::recovery::{
    consume, generate, ErrorKind, RecoveryCode, RecoveryCodeHash, COUNT,
};

fn is_code_format(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 4
        && groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b"0123456789abcdefghjkmnpqrstvwxyz".contains(&b))
        })
}

#[test]
fn generated_codes_are_distinct_and_human_friendly() {
    let codes = generate();
    assert_eq!(codes.len(), COUNT);
    let texts: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
    for text in &texts {
        assert!(is_code_format(text), "{text}");
        assert_eq!(
            RecoveryCode::parse(text).as_ref(),
            Ok(&codes[texts.iter().position(|t| t == text).unwrap()])
        );
    }
    let mut unique = texts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), COUNT);
    assert_ne!(generate(), codes);
    assert_eq!(format!("{:?}", codes[0]), "RecoveryCode(<redacted>)");
}

#[test]
fn lenient_input_same_hash() {
    let code = RecoveryCode::parse("7kq2-m9xd-4hbt-01zr").unwrap();
    for typed in [
        "7kq2-m9xd-4hbt-01zr",
        "7KQ2-M9XD-4HBT-01ZR",
        "7kq2m9xd4hbt01zr",
        " 7kq2 m9xd 4hbt 01zr ",
        "7kq2-m9xd-4hbt-olzr",
        "7kq2-m9xd-4hbt-OIZR",
    ] {
        assert_eq!(
            RecoveryCode::parse(typed).unwrap().hash(),
            code.hash(),
            "{typed:?}"
        );
    }
    for bad in [
        "",
        "7kq2-m9xd-4hbt-01z",
        "7kq2-m9xd-4hbt-01zrr",
        "7kq2-m9xd-4hbt-01zu",
        "7kq2_m9xd_4hbt_01zr",
        "7kq2-m9xd-4hbt-01zé",
    ] {
        assert_eq!(
            RecoveryCode::parse(bad).unwrap_err().kind(),
            ErrorKind::MalformedCode,
            "{bad:?}"
        );
    }
}

#[test]
fn each_code_works_once() {
    let codes = generate();
    let mut slots: Vec<Option<RecoveryCodeHash>> = codes.iter().map(|c| Some(c.hash())).collect();

    let third = codes[3].to_string();
    assert_eq!(consume(&mut slots, &third), Ok(Some(3)));
    assert_eq!(slots[3], None);
    assert_eq!(consume(&mut slots, &third), Ok(None), "second use");
    assert_eq!(
        consume(&mut slots, &third.to_uppercase()),
        Ok(None),
        "second use, retyped"
    );

    // The others still work, in any order, once each.
    for i in [9, 0, 5] {
        assert_eq!(consume(&mut slots, &codes[i].to_string()), Ok(Some(i)));
        assert_eq!(consume(&mut slots, &codes[i].to_string()), Ok(None));
    }
    assert_eq!(slots.iter().filter(|s| s.is_some()).count(), COUNT - 4);

    // A code of another admin's set does not match.
    let other = generate();
    assert_eq!(consume(&mut slots, &other[1].to_string()), Ok(None));
    assert_eq!(
        consume(&mut slots, "not a code").unwrap_err().kind(),
        ErrorKind::MalformedCode
    );
    assert_eq!(slots.iter().filter(|s| s.is_some()).count(), COUNT - 4);
}

#[test]
fn stored_hash_hex() {
    let code = RecoveryCode::parse("0000-0000-0000-0000").unwrap();
    let hash = code.hash();
    assert_eq!(RecoveryCodeHash::parse_hex(&hash.to_hex()), Ok(hash));
    assert_eq!(
        RecoveryCodeHash::parse_hex(&hash.to_hex().to_uppercase()),
        Ok(hash)
    );
    assert_eq!(RecoveryCodeHash::from_bytes(*hash.as_bytes()), hash);
    for bad in ["", "00", &"g".repeat(64), &"0".repeat(65)] {
        assert_eq!(
            RecoveryCodeHash::parse_hex(bad).unwrap_err().kind(),
            ErrorKind::MalformedHash
        );
    }
    // Domain-separated: not the bare SHA-256 of the symbols.
    use sha2::Digest;
    let bare: [u8; 32] = sha2::Sha256::digest(b"0000000000000000").into();
    assert_ne!(hash.as_bytes(), &bare);
}
