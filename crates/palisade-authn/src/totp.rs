//! Time-based one-time passwords (RFC 6238) for the admins' second factor.
//!
//! Fixed profile, the one every authenticator app supports: HMAC-SHA-1,
//! 6 digits, 30-second steps, counted from the Unix epoch. A [`Secret`] is
//! 160 random bits (RFC 4226's recommended length), shown to the admin as
//! RFC 4648 base32 and inside an `otpauth://` URI ([`otpauth_uri`]) rendered
//! as a QR code ([`qr_svg`]).
//!
//! # Verification and replay
//!
//! [`verify`] accepts the code of the current step and of one step either
//! side ([`SKEW_STEPS`]), to tolerate clock drift and typing time: a code is
//! usable for 60 to 90 seconds. It refuses any step at or before the last one
//! accepted for the account, so a code seen over a shoulder or in a proxy log
//! cannot be used again, and returns the step to store in its place. The
//! server stores that step in the same transaction that completes the login,
//! conditionally on the stored value not having changed, or two concurrent
//! logins can both use one code.
//!
//! Six digits are a million values: without throttling, an attacker who has
//! the password guesses a code in about 333,000 tries (3 valid codes per
//! window). Count wrong codes as login failures in [`crate::throttle`].
//!
//! # Storage
//!
//! The server must keep the secret itself to compute codes, so it stores it
//! reversibly (ideally encrypted with a key outside the database). Anyone who
//! reads it can produce codes; that is inherent to TOTP.

use std::fmt;

use hmac::{Hmac, Mac};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::encoding::{base32_decode, base32_encode, random_bytes};
use crate::error::module_error;

/// What kind of failure a TOTP [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A secret is not base32 for exactly 20 bytes.
    #[error("malformed TOTP secret: expected 32 base32 characters (160 bits)")]
    MalformedSecret,
    /// A code is not 6 decimal digits (spaces aside).
    #[error("malformed TOTP code: expected 6 digits")]
    MalformedCode,
    /// The code is right but belongs to a step already used: a replay.
    #[error("TOTP code already used")]
    Replayed,
    /// An issuer or account name is empty, too long, or contains a colon.
    #[error("invalid otpauth label")]
    InvalidLabel,
    /// The QR code could not be built (the URI is too long for one).
    #[error("cannot render the QR code")]
    QrCode,
}

module_error!("TOTP");

/// Length of a step, in seconds.
pub const PERIOD_S: u64 = 30;
/// Digits in a code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: u64 = 1;
/// Longest issuer or account name accepted in an `otpauth://` URI, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;

/// A TOTP shared secret: 160 random bits.
///
/// Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 20]);

impl Secret {
    /// A fresh secret from the kernel's CSPRNG.
    pub fn generate() -> Secret {
        Secret(random_bytes())
    }

    /// The secret with these bytes (for test vectors and stored secrets).
    pub const fn from_bytes(bytes: [u8; 20]) -> Secret {
        Secret(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The secret as 32 upper-case base32 characters, no padding: what an
    /// admin types when they cannot scan the QR code.
    pub fn to_base32(&self) -> String {
        base32_encode(&self.0)
    }

    /// Parses base32 as [`Secret::to_base32`] writes it; also accepts lower
    /// case, spaces and `=` padding, as people retype it.
    pub fn parse_base32(text: &str) -> Result<Secret> {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let compact = compact.trim_end_matches('=');
        let bytes = base32_decode(compact).map_err(|_| Error::from(ErrorKind::MalformedSecret))?;
        let bytes: [u8; 20] = bytes
            .try_into()
            .map_err(|_| Error::from(ErrorKind::MalformedSecret))?;
        Ok(Secret(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An `otpauth://totp/` key URI, as [`otpauth_uri`] builds it. It contains the
/// secret: show it to the enrolling admin only, never log it (its `Debug`
/// output is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct OtpauthUri(String);

impl OtpauthUri {
    /// The URI text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OtpauthUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpauthUri(<redacted>)")
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn check_label(what: &'static str, text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(Error::new(ErrorKind::InvalidLabel, format!("empty {what}")));
    }
    if text.len() > MAX_LABEL_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidLabel,
            format!("{what} longer than {MAX_LABEL_BYTES} bytes"),
        ));
    }
    if text.contains(':') {
        return Err(Error::new(
            ErrorKind::InvalidLabel,
            format!("{what} contains a colon"),
        ));
    }
    Ok(())
}

/// The key URI for `secret`, in the format authenticator apps read
/// (Google Authenticator's "Key Uri Format"):
///
/// `otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=SHA1&digits=6&period=30`
///
/// `issuer` (e.g. `Palisade` or the deployment's name) and `account` (the
/// admin's login) are percent-encoded (UTF-8, everything but `A-Za-z0-9-._~`),
/// including spaces as `%20`. Neither may be empty, longer than
/// [`MAX_LABEL_BYTES`], or contain `:` (the format's separator).
pub fn otpauth_uri(secret: &Secret, issuer: &str, account: &str) -> Result<OtpauthUri> {
    check_label("issuer", issuer)?;
    check_label("account", account)?;
    let mut uri = String::from("otpauth://totp/");
    percent_encode(issuer, &mut uri);
    uri.push(':');
    percent_encode(account, &mut uri);
    uri.push_str("?secret=");
    uri.push_str(&secret.to_base32());
    uri.push_str("&issuer=");
    percent_encode(issuer, &mut uri);
    uri.push_str(&format!(
        "&algorithm=SHA1&digits={DIGITS}&period={PERIOD_S}"
    ));
    Ok(OtpauthUri(uri))
}

/// The QR code of `uri` as an SVG document (black on white, with the
/// standard quiet zone, error correction level M, at least 240 px wide),
/// without the XML declaration so that it can be inlined in an HTML page.
///
/// The SVG holds only a rectangle and one path: no text from the URI, so
/// inlining it cannot inject markup. It contains the secret: serve it with
/// `Cache-Control: no-store`.
pub fn qr_svg(uri: &OtpauthUri) -> Result<String> {
    let code = QrCode::with_error_correction_level(uri.as_str().as_bytes(), EcLevel::M)
        .map_err(|e| Error::new(ErrorKind::QrCode, e.to_string()))?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    // The renderer starts with `<?xml ...?>`; HTML wants the `<svg>` element.
    match image.find("<svg") {
        Some(start) => Ok(image[start..].to_owned()),
        None => Err(Error::new(ErrorKind::QrCode, "renderer produced no <svg>")),
    }
}

/// HOTP (RFC 4226): the `digits`-digit code of `counter` under `key`.
pub(crate) fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset],
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]) & 0x7fff_ffff;
    binary % 10u32.pow(digits)
}

/// The step that contains `unix_s`.
pub const fn step_at(unix_s: u64) -> u64 {
    unix_s / PERIOD_S
}

/// The code an authenticator app shows at `unix_s`, zero-padded to 6 digits.
///
/// For tests and tools (e.g. a server's integration tests logging in); a
/// login checks codes with [`verify`].
pub fn code_at(secret: &Secret, unix_s: u64) -> String {
    format!(
        "{:0width$}",
        hotp(&secret.0, step_at(unix_s), DIGITS),
        width = DIGITS as usize
    )
}

/// Parses a code as typed: 6 ASCII digits, ASCII spaces anywhere ignored.
fn parse_code(code: &str) -> Result<u32> {
    let mut value = 0u32;
    let mut digits = 0u32;
    for c in code.chars() {
        match c {
            '0'..='9' if digits < DIGITS => {
                value = value * 10 + (c as u32 - '0' as u32);
                digits += 1;
            }
            c if c.is_ascii_whitespace() => {}
            _ => return Err(ErrorKind::MalformedCode.into()),
        }
    }
    if digits != DIGITS {
        return Err(ErrorKind::MalformedCode.into());
    }
    Ok(value)
}

/// Checks `code` against `secret` at time `now_unix_s`.
///
/// Accepts the codes of steps `step_at(now_unix_s) ± SKEW_STEPS`, except
/// those at or before `last_used_step` (the value this function returned at
/// the account's previous successful check, `None` if there was none).
///
/// - `Ok(Some(step))`: the code is valid; store `step` as the account's new
///   last used step (see the module doc on concurrency).
/// - `Ok(None)`: the code is wrong.
/// - `Err` of kind [`ErrorKind::Replayed`]: the code is right but its step
///   was already used. Refuse the login and audit it: someone else has seen
///   the code.
/// - `Err` of kind [`ErrorKind::MalformedCode`]: not 6 digits; refuse and
///   count it as a failure like a wrong code.
///
/// Every candidate step is computed and compared in constant time, whatever
/// matches.
pub fn verify(
    secret: &Secret,
    code: &str,
    now_unix_s: u64,
    last_used_step: Option<u64>,
) -> Result<Option<u64>> {
    let code = parse_code(code)?;
    let now = step_at(now_unix_s);
    let mut accepted = None;
    let mut replayed = false;
    for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
        let matches: bool = hotp(&secret.0, step, DIGITS).ct_eq(&code).into();
        if matches {
            if last_used_step.is_some_and(|last| step <= last) {
                replayed = true;
            } else if accepted.is_none() {
                accepted = Some(step);
            }
        }
    }
    match accepted {
        Some(step) => Ok(Some(step)),
        None if replayed => Err(ErrorKind::Replayed.into()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4226 appendix D: HOTP values for the ASCII key "12345678901234567890".
    #[test]
    fn rfc4226_hotp_vectors() {
        let key = b"12345678901234567890";
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(hotp(key, counter as u64, 6), code, "counter {counter}");
        }
    }

    /// RFC 6238 appendix B, the SHA-1 rows (8 digits).
    #[test]
    fn rfc6238_sha1_vectors() {
        let key = b"12345678901234567890";
        for (time, code) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(key, step_at(time), 8), code, "time {time}");
        }
    }

    #[test]
    fn code_parsing() {
        assert_eq!(parse_code("012345"), Ok(12345));
        assert_eq!(parse_code(" 123 456 "), Ok(123456));
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", "123-456"] {
            assert_eq!(
                parse_code(bad).map_err(|e| e.kind()),
                Err(ErrorKind::MalformedCode),
                "{bad:?}"
            );
        }
    }
}
