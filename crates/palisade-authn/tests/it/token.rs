use palisade_authn::token::{
    ApiToken, ErrorKind, SecretHash, SessionId, SessionKey, StoredToken, TokenId, API_TOKEN_PREFIX,
};
use sha2::Digest;

const ID: &str = "0123456789abcdef";
const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn generate_reveal_parse() {
    let token = ApiToken::generate();
    let text = token.reveal();
    assert!(text.starts_with(API_TOKEN_PREFIX));
    let parts: Vec<&str> = text.split('.').collect();
    assert_eq!(parts.len(), 3, "{text}");
    assert_eq!(parts[0], "plta2");
    assert_eq!(parts[1].len(), 16);
    assert_eq!(parts[2].len(), 64);
    assert!(text[6..]
        .bytes()
        .all(|b| b == b'.' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(parts[1], token.id().to_string());

    assert_eq!(ApiToken::parse(&text), Ok(token.clone()));
    assert_eq!(ApiToken::parse(&format!("{text}\n")), Ok(token.clone()));
    assert_eq!(
        ApiToken::parse(&text.to_uppercase().replace("PLTA2", "plta2")),
        Ok(token.clone())
    );
    assert_ne!(ApiToken::generate(), token);

    let debug = format!("{token:?}");
    assert!(!debug.contains(parts[2]), "{debug}");
    assert!(debug.contains(parts[1]), "{debug}");
}

#[test]
fn parse_errors() {
    let check = |text: &str, detail: &str| {
        let err = ApiToken::parse(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MalformedToken, "{text:?}");
        let message = err.to_string();
        assert_eq!(
            message,
            format!("malformed API token: {detail}"),
            "{text:?}"
        );
        assert!(!message.contains(SECRET) && !message.contains("deadbeef"));
    };
    check("", "expected it to start with plta2.");
    check(
        "Bearer plta2.0123456789abcdef.deadbeef",
        "expected it to start with plta2.",
    );
    check(
        &format!("plta1.{SECRET}"),
        "this is a first-version token (plta1.); create a new one",
    );
    check(
        &format!("PLTA2.{ID}.{SECRET}"),
        "expected it to start with plta2.",
    );
    check("plta2.", "expected plta2.<id>.<secret>");
    check(&format!("plta2.{ID}"), "expected plta2.<id>.<secret>");
    check(
        &format!("plta2.{ID}.{SECRET}.deadbeef"),
        "expected plta2.<id>.<secret>",
    );
    check(
        &format!("plta2.0123456789abcde.{SECRET}"),
        "the id is not 16 hex digits",
    );
    check(
        &format!("plta2.0123456789abcdeg.{SECRET}"),
        "the id is not 16 hex digits",
    );
    check(&format!("plta2..{SECRET}"), "the id is not 16 hex digits");
    check(
        &format!("plta2.{ID}.{}", &SECRET[1..]),
        "the secret is not 64 hex digits",
    );
    check(
        &format!("plta2.{ID}.{SECRET}0"),
        "the secret is not 64 hex digits",
    );
    check(
        &format!("plta2.{ID}.deadbeef"),
        "the secret is not 64 hex digits",
    );
    check(
        &format!("plta2.{ID}. {SECRET}"),
        "the secret is not 64 hex digits",
    );

    assert_eq!(TokenId::parse(ID).unwrap().to_string(), ID);
    assert_eq!(
        TokenId::parse("0123").unwrap_err().kind(),
        ErrorKind::MalformedId
    );
}

#[test]
fn stored_hash_is_sha256_of_the_secret() {
    let token = ApiToken::parse(&format!("plta2.{ID}.{SECRET}")).unwrap();
    let expected: [u8; 32] = sha2::Sha256::digest(hex::decode(SECRET).unwrap()).into();
    assert_eq!(token.secret_hash().as_bytes(), &expected);
    assert_eq!(
        SecretHash::parse_hex(&token.secret_hash().to_hex()),
        Ok(token.secret_hash())
    );
    assert_eq!(SecretHash::from_bytes(expected), token.secret_hash());
    assert_eq!(
        SecretHash::parse_hex("abc").unwrap_err().kind(),
        ErrorKind::MalformedHex
    );
    assert!(token.matches(&token.secret_hash()));
    assert!(!ApiToken::generate().matches(&token.secret_hash()));
}

#[test]
fn authenticate_against_stored_record() {
    let token = ApiToken::generate();
    let same_id_other_secret = ApiToken::parse(&format!("plta2.{}.{SECRET}", token.id())).unwrap();
    let other = ApiToken::generate();
    let base = StoredToken::new(&token, Some(10_000));
    let revoked = StoredToken {
        revoked_at_ms: Some(5_000),
        ..base
    };
    let check =
        |record: &StoredToken, presented: &ApiToken, now: i64, expect: Option<ErrorKind>| {
            assert_eq!(
                record
                    .authenticate(presented, now)
                    .map_err(|e| e.kind())
                    .err(),
                expect,
                "{record:?} {presented:?} at {now}"
            );
        };
    check(&base, &token, 0, None);
    check(&base, &token, 9_999, None);
    check(&base, &token, 10_000, Some(ErrorKind::Expired));
    check(
        &base,
        &same_id_other_secret,
        0,
        Some(ErrorKind::WrongSecret),
    );
    check(&base, &other, 0, Some(ErrorKind::WrongSecret));
    check(&revoked, &token, 4_999, None);
    check(&revoked, &token, 5_000, Some(ErrorKind::Revoked));
    check(&revoked, &token, 20_000, Some(ErrorKind::Revoked));
    // A wrong secret learns nothing about revocation or expiry.
    check(&revoked, &other, 20_000, Some(ErrorKind::WrongSecret));
    // A record under another id with the same hash (a copied row) refuses.
    let moved = StoredToken {
        id: other.id(),
        ..base
    };
    check(&moved, &token, 0, Some(ErrorKind::WrongSecret));
    let forever = StoredToken::new(&token, None);
    check(&forever, &token, i64::MAX, None);
}

#[test]
fn sessions_and_csrf() {
    let session = SessionId::generate();
    let cookie = session.to_cookie_value();
    assert_eq!(cookie.len(), 64);
    assert_eq!(SessionId::parse(&cookie), Ok(session.clone()));
    assert_eq!(
        SessionId::parse("").unwrap_err().kind(),
        ErrorKind::MalformedHex
    );
    assert_eq!(
        SessionId::parse(&cookie[1..]).unwrap_err().kind(),
        ErrorKind::MalformedHex
    );
    assert_eq!(format!("{session:?}"), "SessionId(<redacted>)");

    let key = session.storage_key();
    let expected: [u8; 32] = sha2::Sha256::digest(hex::decode(&cookie).unwrap()).into();
    assert_eq!(key.as_bytes(), &expected);
    assert_eq!(SessionKey::parse_hex(&key.to_hex()), Ok(key));
    assert_eq!(SessionKey::from_bytes(expected), key);
    assert_ne!(key.to_hex(), cookie);

    let csrf = session.csrf_token();
    assert_eq!(csrf.len(), 64);
    assert_ne!(csrf, cookie);
    assert_eq!(csrf, session.csrf_token(), "stable for the session");
    assert!(session.verify_csrf(&csrf));
    assert!(session.verify_csrf(&csrf.to_uppercase()));
    let other = SessionId::generate();
    assert!(!other.verify_csrf(&csrf));
    assert!(!session.verify_csrf(&other.csrf_token()));
    for bad in ["", "abc", &csrf[1..], &format!("{csrf}0"), &cookie] {
        assert!(!session.verify_csrf(bad), "{bad:?}");
    }

    // HMAC-SHA-256 keyed with the session id over "palisade csrf v1" (RFC 2104).
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, b) in hex::decode(&cookie).unwrap().into_iter().enumerate() {
        ipad[i] ^= b;
        opad[i] ^= b;
    }
    let inner = sha2::Sha256::new()
        .chain_update(ipad)
        .chain_update(b"palisade csrf v1")
        .finalize();
    let outer = sha2::Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    assert_eq!(csrf, hex::encode(outer));
}
