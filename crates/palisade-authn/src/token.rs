//! Bearer secrets: API tokens for the CLI, session ids and CSRF tokens for
//! the web console.
//!
//! # API tokens
//!
//! Text form `plta2.<id>.<secret>`: the prefix names the kind and version
//! (`plta1.` was the server's first, id-less admin token; `plt1.` is the
//! enrollment token), `<id>` is 16 lowercase hex digits (64 random bits), a
//! public handle, and `<secret>` is 64 lowercase hex digits (256 random bits).
//! The distinctive prefix lets secret scanners find leaked tokens.
//!
//! The server stores, per token: the [`TokenId`] (unique, indexed; shown in
//! listings and used to revoke), the [`SecretHash`] (SHA-256 of the 32 secret
//! bytes), and beside them what this crate does not interpret: the admin, the
//! scopes, the creation time. [`StoredToken::authenticate`] checks a
//! presented token against its row: secret (constant-time), then revocation,
//! then expiry. Whether the token's scopes allow the request is
//! authorisation, decided by the caller.
//!
//! A fast hash suffices for the same reason as for recovery codes: the secret
//! is 256 uniformly random bits, not something a person chose. A database
//! reader learns no usable token.
//!
//! # Sessions
//!
//! A console session is identified by a [`SessionId`] (256 random bits, 64 hex
//! digits) in a cookie. The server stores only its [`SessionKey`] (SHA-256),
//! so a database reader cannot ride live sessions. Cookie attributes: name
//! `__Host-palisade_session`, `Secure; HttpOnly; SameSite=Strict; Path=/`.
//!
//! # CSRF
//!
//! Every state-changing console form carries a CSRF token derived from the
//! session: HMAC-SHA-256 keyed with the session id's 32 bytes over the fixed
//! message `palisade csrf v1`, as 64 hex digits ([`SessionId::csrf_token`]).
//! Another site's page can make the browser send the cookie but cannot read
//! it, so it cannot compute the token; the server needs no extra key or
//! storage, and the token changes with the session (log in again, new token).
//! The HMAC is one-way, so a leaked CSRF token (e.g. in a `Referer`) does not
//! reveal the session id. `SameSite=Strict` is a second, independent barrier.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::encoding::{hex32, random_bytes, sha256};
use crate::error::module_error;

/// What kind of failure a token [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not an API token of this format (the detail says which
    /// part is wrong, never the text).
    #[error("malformed API token")]
    MalformedToken,
    /// The text is not 64 hex digits (a session id, session key, secret hash
    /// or CSRF token).
    #[error("malformed value: expected 64 hex digits")]
    MalformedHex,
    /// The text is not 16 hex digits (a token id).
    #[error("malformed token id: expected 16 hex digits")]
    MalformedId,
    /// The token's secret does not match the stored hash (or the token is for
    /// another record).
    #[error("wrong API token")]
    WrongSecret,
    /// The token was revoked.
    #[error("API token revoked")]
    Revoked,
    /// The token expired.
    #[error("API token expired")]
    Expired,
}

module_error!("token");

/// The prefix of API tokens in this format.
pub const API_TOKEN_PREFIX: &str = "plta2.";

/// The public handle of an API token: 64 random bits, 16 lowercase hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId([u8; 8]);

impl TokenId {
    /// Parses 16 hex digits.
    pub fn parse(text: &str) -> Result<TokenId> {
        let mut out = [0u8; 8];
        if text.len() != 16 || hex::decode_to_slice(text, &mut out).is_err() {
            return Err(ErrorKind::MalformedId.into());
        }
        Ok(TokenId(out))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// SHA-256 of a token secret: what the server stores. 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Parses 64 hex digits.
    pub fn parse_hex(text: &str) -> Result<SecretHash> {
        hex32(text)
            .map(SecretHash)
            .ok_or_else(|| ErrorKind::MalformedHex.into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Wraps raw bytes (e.g. from a `BYTEA` column).
    pub const fn from_bytes(bytes: [u8; 32]) -> SecretHash {
        SecretHash(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({})", self.to_hex())
    }
}

/// An API token: id and secret. Its `Debug` output shows the id only; the
/// full text comes only from [`ApiToken::reveal`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    id: TokenId,
    secret: [u8; 32],
}

impl ApiToken {
    /// A fresh token from the kernel's CSPRNG.
    pub fn generate() -> ApiToken {
        ApiToken {
            id: TokenId(random_bytes()),
            secret: random_bytes(),
        }
    }

    /// Parses `plta2.<16 hex>.<64 hex>`; surrounding ASCII whitespace (a
    /// token file's newline) is ignored. Hex digits may be in either case.
    pub fn parse(text: &str) -> Result<ApiToken> {
        let malformed = |detail: &'static str| Error::new(ErrorKind::MalformedToken, detail);
        let text = text.trim_ascii();
        let Some(rest) = text.strip_prefix(API_TOKEN_PREFIX) else {
            return Err(malformed(if text.starts_with("plta1.") {
                "this is a first-version token (plta1.); create a new one"
            } else {
                "expected it to start with plta2."
            }));
        };
        let mut parts = rest.split('.');
        let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("expected plta2.<id>.<secret>"));
        };
        let id = TokenId::parse(id).map_err(|_| malformed("the id is not 16 hex digits"))?;
        let secret = hex32(secret).ok_or_else(|| malformed("the secret is not 64 hex digits"))?;
        Ok(ApiToken { id, secret })
    }

    /// The token's id.
    pub fn id(&self) -> TokenId {
        self.id
    }

    /// The hash to store.
    pub fn secret_hash(&self) -> SecretHash {
        SecretHash(sha256(&[&self.secret]))
    }

    /// Whether the token's secret matches `stored`, in constant time.
    pub fn matches(&self, stored: &SecretHash) -> bool {
        self.secret_hash().0.ct_eq(&stored.0).into()
    }

    /// The token's text, to show once to the admin who created it.
    pub fn reveal(&self) -> String {
        format!("{API_TOKEN_PREFIX}{}.{}", self.id, hex::encode(self.secret))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken(id={}, secret=<redacted>)", self.id)
    }
}

/// What the server keeps about one API token, as far as authentication goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredToken {
    /// The token's id.
    pub id: TokenId,
    /// SHA-256 of its secret.
    pub secret_hash: SecretHash,
    /// When it stops being valid (Unix ms), if ever.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked (Unix ms), if it was.
    pub revoked_at_ms: Option<i64>,
}

impl StoredToken {
    /// The record to store for a freshly generated `token`.
    pub fn new(token: &ApiToken, expires_at_ms: Option<i64>) -> StoredToken {
        StoredToken {
            id: token.id(),
            secret_hash: token.secret_hash(),
            expires_at_ms,
            revoked_at_ms: None,
        }
    }

    /// Checks `presented` against this record at `now_ms`: the secret first,
    /// so that a wrong secret learns nothing about revocation or expiry; then
    /// revocation (effective from `revoked_at_ms` on); then expiry (invalid
    /// from `expires_at_ms` on).
    pub fn authenticate(&self, presented: &ApiToken, now_ms: i64) -> Result<()> {
        let secret_ok = presented.matches(&self.secret_hash);
        if !(secret_ok && presented.id == self.id) {
            return Err(ErrorKind::WrongSecret.into());
        }
        if self.revoked_at_ms.is_some_and(|at| now_ms >= at) {
            return Err(ErrorKind::Revoked.into());
        }
        if self.expires_at_ms.is_some_and(|at| now_ms >= at) {
            return Err(ErrorKind::Expired.into());
        }
        Ok(())
    }
}

/// A console session id: 256 random bits, carried in a cookie as 64 lowercase
/// hex digits. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; 32]);

/// The fixed message of the CSRF HMAC.
const CSRF_MESSAGE: &[u8] = b"palisade csrf v1";

impl SessionId {
    /// A fresh session id from the kernel's CSPRNG.
    pub fn generate() -> SessionId {
        SessionId(random_bytes())
    }

    /// Parses a cookie value (64 hex digits).
    pub fn parse(cookie_value: &str) -> Result<SessionId> {
        hex32(cookie_value)
            .map(SessionId)
            .ok_or_else(|| ErrorKind::MalformedHex.into())
    }

    /// The cookie value.
    pub fn to_cookie_value(&self) -> String {
        hex::encode(self.0)
    }

    /// The key to store and look the session up by: SHA-256 of the id.
    pub fn storage_key(&self) -> SessionKey {
        SessionKey(sha256(&[&self.0]))
    }

    fn csrf_mac(&self) -> [u8; 32] {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(CSRF_MESSAGE);
        mac.finalize().into_bytes().into()
    }

    /// The session's CSRF token (see the module doc), 64 lowercase hex digits:
    /// put it in a hidden field of every form.
    pub fn csrf_token(&self) -> String {
        hex::encode(self.csrf_mac())
    }

    /// Whether `presented` is this session's CSRF token, in constant time.
    /// Anything but 64 hex digits is simply wrong.
    pub fn verify_csrf(&self, presented: &str) -> bool {
        match hex32(presented) {
            Some(bytes) => self.csrf_mac().ct_eq(&bytes).into(),
            None => false,
        }
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// What the server stores for a session: SHA-256 of its id, 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// Parses 64 hex digits.
    pub fn parse_hex(text: &str) -> Result<SessionKey> {
        hex32(text)
            .map(SessionKey)
            .ok_or_else(|| ErrorKind::MalformedHex.into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Wraps raw bytes (e.g. from a `BYTEA` column).
    pub const fn from_bytes(bytes: [u8; 32]) -> SessionKey {
        SessionKey(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.to_hex())
    }
}
