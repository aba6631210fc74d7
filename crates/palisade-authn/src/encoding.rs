//! Small helpers shared by the modules: RFC 4648 base32 (no padding, for
//! TOTP secrets),
//! random bytes from the kernel, SHA-256.

use rand::RngCore;
use sha2::Digest;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, upper case.
pub(crate) fn base32_encode(bytes: &[u8]) -> String {
    let alphabet = ALPHABET;
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(alphabet[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(alphabet[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Why [`base32_decode`] refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base32Error {
    /// A character outside the accepted alphabet.
    Character,
    /// A length no byte string encodes to, or non-zero trailing bits (a
    /// non-canonical encoding).
    Length,
}

/// Decodes RFC 4648 base32 without padding, in either case. Canonical: every
/// byte string has exactly one accepted encoding per case.
pub(crate) fn base32_decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    // 2, 4, 5 and 7 symbols are the only valid lengths of a final group.
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return Err(Base32Error::Length);
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(Base32Error::Character),
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    if buffer != 0 {
        return Err(Base32Error::Length);
    }
    Ok(out)
}

/// `N` bytes from the kernel's CSPRNG (`getrandom(2)` through `OsRng`).
///
/// `OsRng` panics if `getrandom(2)` fails. On Linux it blocks until the pool
/// is initialised at boot and cannot fail afterwards, so this cannot panic on
/// a running server; and continuing without randomness would be worse.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Parses 64 hex digits (either case) into 32 bytes.
pub(crate) fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 section 10, without the padding.
    #[test]
    fn rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), encoded);
            assert_eq!(base32_decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                base32_decode(&encoded.to_ascii_lowercase()).unwrap(),
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn decode_refuses_bad_input() {
        assert_eq!(base32_decode("MZ1W6"), Err(Base32Error::Character));
        assert_eq!(base32_decode("MZ8W6"), Err(Base32Error::Character));
        assert_eq!(base32_decode("MZXW6YQ="), Err(Base32Error::Character));
        assert_eq!(base32_decode("MZX"), Err(Base32Error::Length));
        // "MY" is "f"; "MZ" sets a trailing bit, so is not canonical.
        assert_eq!(base32_decode("MZ"), Err(Base32Error::Length));
    }

    #[test]
    fn round_trip_all_lengths() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..40 {
            let encoded = base32_encode(&data[..len]);
            assert_eq!(base32_decode(&encoded).unwrap(), &data[..len]);
        }
    }
}
