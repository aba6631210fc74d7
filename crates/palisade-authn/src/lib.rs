//! Palisade's admin authentication: the logic and cryptography behind admin
//! logins, the web console's sessions, the CLI's API tokens and the audit
//! log.
//!
//! Architecture invariant: pure functions and values. No database, no
//! network, no files, no clock (the caller passes the time in: Unix
//! milliseconds, or seconds for TOTP), no async, no threads. What to store is
//! stated per module; storing it, and doing so atomically, is the server's
//! job. Randomness comes from the kernel (`getrandom(2)`) where a function
//! generates a secret.
//!
//! # Modules
//!
//! - [`password`]: a minimum password policy, Argon2id hashes as PHC strings
//!   (m = 19456 KiB, t = 2, p = 1), constant-time verification, a dummy
//!   verification for unknown accounts, and when to rehash.
//! - [`totp`]: RFC 6238 one-time passwords (SHA-1, 6 digits, 30 s):
//!   160-bit secrets, the `otpauth://` URI and its QR code as SVG, and
//!   verification with ±1 step of skew that refuses replayed steps.
//! - [`recovery`]: ten single-use recovery codes per admin, stored as
//!   SHA-256 hashes, verified and consumed.
//! - [`token`]: API tokens for the CLI (`plta2.<id>.<secret>`, 256-bit
//!   secret, stored as SHA-256, revocable, expiring), console session ids
//!   (stored hashed) and CSRF tokens derived from them.
//! - [`throttle`]: login back-off, account lockout and a per-source failure
//!   limit, as pure decisions over state the server keeps.
//! - [`audit`]: the audit record, its canonical encoding, the SHA-256 hash
//!   chain, and verification that tells an altered record from a removed or
//!   out-of-order one, with anchors to detect truncation and rewriting.
//!
//! # Errors
//!
//! Each fallible module has its own `Error` (a `kind()` and a message for
//! humans) and `#[non_exhaustive] ErrorKind`. Messages never contain the
//! secret being checked. [`throttle`] cannot fail. Audit chain verification
//! reports [`audit::ChainBreak`] rather than an error.
//!
//! # Blocking work
//!
//! Everything is cheap except [`password::hash_password`],
//! [`password::verify_password`] and [`password::verify_dummy`], which are
//! deliberately slow and memory-hard (19 MiB each): an async server runs them
//! on a blocking pool with bounded concurrency.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod encoding;
mod error;

pub mod audit;
pub mod password;
pub mod recovery;
pub mod throttle;
pub mod token;
pub mod totp;
