//! Single-use recovery codes, for an admin who lost their TOTP device.
//!
//! Enrollment generates [`COUNT`] codes ([`generate`]), shows them once and
//! stores only their hashes ([`RecoveryCode::hash`]). A code looks like
//! `7kq2-m9xd-4hbt-0wzr`: 16 symbols from Crockford's base32 alphabet
//! (`0-9a-z` without `i l o u`), 80 random bits. Input is read leniently:
//! either case, hyphens and spaces anywhere, `o` read as `0`, `i` and `l` as
//! `1`.
//!
//! # Why plain SHA-256
//!
//! A password needs a slow, salted hash because people choose guessable
//! ones. These codes are uniformly random 80-bit values: an offline search
//! needs about 2^79 SHA-256 evaluations per code, beyond any attacker, so
//! a slow hash would add nothing but login latency. A domain-separation
//! prefix (`palisade recovery code v1\0`) keeps the hashes from matching
//! SHA-256 tables of anything else. Each hash is over the normalised 16
//! symbols, so every way of typing a code gives the same hash.
//!
//! # Consuming a code
//!
//! [`consume`] checks an input against the account's unused slots, clears
//! the slot that matched and returns its index. The server persists that
//! (e.g. `UPDATE recovery_code SET used_at = $now WHERE id = $id AND used_at
//! IS NULL`) and accepts the login only if that update changed a row, so that
//! two concurrent logins cannot both use one code. A recovery code replaces
//! the TOTP code, not the password; count wrong ones as login failures.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::encoding::{hex32, random_bytes, sha256};
use crate::error::module_error;

/// What kind of failure a recovery-code [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is not 16 symbols of the recovery alphabet (hyphens and
    /// spaces aside).
    #[error("malformed recovery code: expected 16 letters and digits, like xxxx-xxxx-xxxx-xxxx")]
    MalformedCode,
    /// A stored hash is not 64 hex digits.
    #[error("malformed recovery code hash: expected 64 hex digits")]
    MalformedHash,
}

module_error!("recovery code");

/// How many codes [`generate`] makes.
pub const COUNT: usize = 10;

/// Symbols in a code.
const SYMBOLS: usize = 16;

/// Crockford's base32 alphabet, lower case.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

const DOMAIN: &[u8] = b"palisade recovery code v1\0";

/// One recovery code, in its display form (`xxxx-xxxx-xxxx-xxxx`).
///
/// Show it once, at enrollment; store [`RecoveryCode::hash`]. Its `Debug`
/// output is redacted; `Display` shows the code.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode {
    /// The 16 normalised symbols, without hyphens.
    symbols: [u8; SYMBOLS],
}

impl RecoveryCode {
    /// Parses a code as an admin types it (see the module doc).
    pub fn parse(input: &str) -> Result<RecoveryCode> {
        let mut symbols = [0u8; SYMBOLS];
        let mut len = 0;
        for c in input.chars() {
            if c == '-' || c.is_ascii_whitespace() {
                continue;
            }
            let c = match c.to_ascii_lowercase() {
                'o' => '0',
                'i' | 'l' => '1',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || len == SYMBOLS {
                return Err(ErrorKind::MalformedCode.into());
            }
            symbols[len] = c as u8;
            len += 1;
        }
        if len != SYMBOLS {
            return Err(ErrorKind::MalformedCode.into());
        }
        Ok(RecoveryCode { symbols })
    }

    /// The hash to store for this code.
    pub fn hash(&self) -> RecoveryCodeHash {
        RecoveryCodeHash(sha256(&[DOMAIN, &self.symbols]))
    }
}

impl fmt::Display for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.symbols.chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for &b in group {
                write!(f, "{}", char::from(b))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

/// The stored form of a recovery code: SHA-256 of its normalised symbols
/// (see the module doc). Serialised as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecoveryCodeHash([u8; 32]);

impl RecoveryCodeHash {
    /// Parses 64 hex digits, as [`RecoveryCodeHash::to_hex`] writes them.
    pub fn parse_hex(text: &str) -> Result<RecoveryCodeHash> {
        hex32(text)
            .map(RecoveryCodeHash)
            .ok_or_else(|| ErrorKind::MalformedHash.into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Wraps raw bytes (e.g. from a `BYTEA` column).
    pub const fn from_bytes(bytes: [u8; 32]) -> RecoveryCodeHash {
        RecoveryCodeHash(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RecoveryCodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryCodeHash({})", self.to_hex())
    }
}

/// [`COUNT`] fresh codes from the kernel's CSPRNG, distinct.
pub fn generate() -> Vec<RecoveryCode> {
    let mut codes: Vec<RecoveryCode> = Vec::with_capacity(COUNT);
    while codes.len() < COUNT {
        // 10 random bytes are 80 bits: exactly 16 symbols of 5 bits.
        let bytes: [u8; 10] = random_bytes();
        let mut bits = u128::from_be_bytes({
            let mut wide = [0u8; 16];
            wide[6..].copy_from_slice(&bytes);
            wide
        });
        let mut symbols = [0u8; SYMBOLS];
        for s in symbols.iter_mut().rev() {
            *s = ALPHABET[(bits & 31) as usize];
            bits >>= 5;
        }
        let code = RecoveryCode { symbols };
        // A repeat has probability ~2^-77; skip it rather than store it twice.
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// Checks `input` against the unused codes in `slots` (`None` for a used
/// slot) and, on a match, clears that slot and returns its index.
///
/// `Ok(None)`: no unused code matches (wrong, or already used). Every unused
/// slot is compared, in constant time.
pub fn consume(slots: &mut [Option<RecoveryCodeHash>], input: &str) -> Result<Option<usize>> {
    let hash = RecoveryCode::parse(input)?.hash();
    let mut found = None;
    for (i, slot) in slots.iter().enumerate() {
        if let Some(stored) = slot {
            let matches: bool = stored.0.ct_eq(&hash.0).into();
            if matches && found.is_none() {
                found = Some(i);
            }
        }
    }
    if let Some(i) = found {
        slots[i] = None;
    }
    Ok(found)
}
