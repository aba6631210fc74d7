use palisade_authn::totp::{
    code_at, otpauth_uri, qr_svg, step_at, verify, ErrorKind, Secret, MAX_LABEL_BYTES,
};

/// The SHA-1 seed of RFC 6238 appendix B.
fn rfc_secret() -> Secret {
    Secret::from_bytes(*b"12345678901234567890")
}

/// RFC 6238 appendix B, SHA-1 rows. The RFC's codes have 8 digits; a 6-digit
/// code is the same value modulo 10^6, i.e. its last 6 digits.
const RFC6238_SHA1: &[(u64, &str)] = &[
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
];

#[test]
fn rfc6238_vectors() {
    let secret = rfc_secret();
    for &(time, code8) in RFC6238_SHA1 {
        let code = &code8[2..];
        assert_eq!(code_at(&secret, time), code, "time {time}");
        assert_eq!(
            verify(&secret, code, time, None),
            Ok(Some(step_at(time))),
            "time {time}"
        );
    }
}

#[test]
fn base32_secret() {
    let secret = rfc_secret();
    assert_eq!(secret.to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    for text in [
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        "gezdgnbvgy3tqojqgezdgnbvgy3tqojq",
        "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====",
    ] {
        assert_eq!(Secret::parse_base32(text), Ok(rfc_secret()), "{text:?}");
    }
    for bad in [
        "",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGE",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
        "GEZDGNBVGY3TQOJQ-GEZDGNBVGY3TQOJQ",
    ] {
        let err = Secret::parse_base32(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MalformedSecret, "{bad:?}");
    }
    let fresh = Secret::generate();
    assert_ne!(fresh, Secret::generate());
    assert_eq!(Secret::parse_base32(&fresh.to_base32()), Ok(fresh.clone()));
    assert_eq!(format!("{fresh:?}"), "Secret(<redacted>)");
}

#[test]
fn skew_window_is_one_step_either_side() {
    let secret = rfc_secret();
    // The code of step 40 000 000 (time 1 200 000 000).
    let step = 40_000_000u64;
    let code = code_at(&secret, step * 30);
    for (now, expect) in [
        (step * 30 - 31, None),
        (step * 30 - 30, Some(step)),
        (step * 30 - 1, Some(step)),
        (step * 30, Some(step)),
        (step * 30 + 29, Some(step)),
        (step * 30 + 59, Some(step)),
        (step * 30 + 60, None),
        (step * 30 + 89, None),
    ] {
        assert_eq!(verify(&secret, &code, now, None), Ok(expect), "now {now}");
    }
    // Near the epoch the window is clipped, not wrapped.
    assert_eq!(verify(&secret, &code_at(&secret, 0), 0, None), Ok(Some(0)));
    assert_eq!(verify(&secret, &code_at(&secret, 30), 0, None), Ok(Some(1)));
}

#[test]
fn replay_is_refused() {
    let secret = rfc_secret();
    let now = 1_700_000_000u64;
    let step = step_at(now);
    let code = code_at(&secret, now);
    let used = verify(&secret, &code, now, None).unwrap();
    assert_eq!(used, Some(step));
    // The same code again, even in the same step.
    let err = verify(&secret, &code, now, used).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Replayed);
    assert_eq!(
        verify(&secret, &code, now + 30, used).unwrap_err().kind(),
        ErrorKind::Replayed
    );
    // The previous step's code, still inside the window, is older than the
    // last used step: refused too.
    let previous = code_at(&secret, now - 30);
    assert_eq!(
        verify(&secret, &previous, now, used).unwrap_err().kind(),
        ErrorKind::Replayed
    );
    // The next step's code is fine, and then it is the last used one.
    let next = code_at(&secret, now + 30);
    assert_eq!(verify(&secret, &next, now, used), Ok(Some(step + 1)));
    assert_eq!(
        verify(&secret, &next, now + 30, Some(step + 1))
            .unwrap_err()
            .kind(),
        ErrorKind::Replayed
    );
    // A wrong code is just wrong, not a replay.
    let wrong = if code == "000000" { "000001" } else { "000000" };
    if ![code.as_str(), previous.as_str(), next.as_str()].contains(&wrong) {
        assert_eq!(verify(&secret, wrong, now, used), Ok(None));
    }
}

#[test]
fn malformed_codes() {
    let secret = rfc_secret();
    assert_eq!(verify(&secret, " 287 082 ", 59, None), Ok(Some(1)));
    for bad in ["", "28708", "2870822", "28708a", "287-082", "٢٨٧٠٨٢"] {
        let err = verify(&secret, bad, 59, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MalformedCode, "{bad:?}");
    }
}

#[test]
fn otpauth_uri_format() {
    let secret = rfc_secret();
    let uri = otpauth_uri(&secret, "Palisade Prod", "alice@example.com").unwrap();
    assert_eq!(
        uri.as_str(),
        "otpauth://totp/Palisade%20Prod:alice%40example.com\
         ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Palisade%20Prod\
         &algorithm=SHA1&digits=6&period=30"
    );
    let uri = otpauth_uri(&secret, "Ünïcode & co", "a+b/c?d=e#f").unwrap();
    assert!(
        uri.as_str().starts_with(
            "otpauth://totp/%C3%9Cn%C3%AFcode%20%26%20co:a%2Bb%2Fc%3Fd%3De%23f?secret="
        ),
        "{}",
        uri.as_str()
    );
    assert!(uri
        .as_str()
        .contains("&issuer=%C3%9Cn%C3%AFcode%20%26%20co&"));
    assert_eq!(format!("{uri:?}"), "OtpauthUri(<redacted>)");

    for (issuer, account) in [
        ("", "alice"),
        ("Palisade", ""),
        ("Pali:sade", "alice"),
        ("Palisade", "alice:admin"),
        ("Palisade", &"a".repeat(MAX_LABEL_BYTES + 1)),
    ] {
        let err = otpauth_uri(&secret, issuer, account).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidLabel,
            "{issuer:?} {account:?}"
        );
    }
}

#[test]
fn qr_code_svg() {
    let secret = rfc_secret();
    let uri = otpauth_uri(&secret, "Palisade", "alice").unwrap();
    let svg = qr_svg(&uri).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.ends_with("</svg>"));
    assert!(!svg.contains("otpauth") && !svg.contains("GEZDGNBV"));
    assert_eq!(qr_svg(&uri).unwrap(), svg, "deterministic");
    let other = otpauth_uri(&Secret::generate(), "Palisade", "alice").unwrap();
    assert_ne!(qr_svg(&other).unwrap(), svg);

    // The longest labels, every byte percent-encoded, still fit.
    let long = "é".repeat(MAX_LABEL_BYTES / 2);
    let uri = otpauth_uri(&secret, &long, &long).unwrap();
    assert!(uri.as_str().len() > 1200, "{}", uri.as_str().len());
    assert!(qr_svg(&uri).unwrap().starts_with("<svg"));
}
