//! Admin passwords: a minimum policy, Argon2id hashes as PHC strings, and
//! verification whose timing does not reveal whether the account exists.
//!
//! # Parameters
//!
//! New hashes use Argon2id, version 0x13, **m = 19456 KiB (19 MiB), t = 2,
//! p = 1**, a 16-byte random salt and a 32-byte output: the first of OWASP's
//! Password Storage Cheat Sheet's equivalent Argon2id settings, and the
//! `argon2` crate's default. The result is a PHC string such as
//! `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>` that carries its own
//! parameters, so they can be raised later: [`needs_rehash`] tells when a
//! stored hash was made with other parameters (rehash it at the next
//! successful login, when the plaintext is at hand).
//!
//! # Cost
//!
//! One hash or verification costs 19 MiB of memory and about 30 ms of one
//! core (measured in release on a 2-vCPU AMD EPYC virtual machine under
//! load: 27-39 ms per hash or verification, the dummy verification within
//! the same range). It is CPU-bound and
//! blocking: an async server runs it on a blocking thread pool
//! (`tokio::task::spawn_blocking`) and bounds how many run at once, or a burst
//! of logins starves the runtime and costs 19 MiB each.
//!
//! # Policy
//!
//! [`check_policy`] (which [`hash_password`] applies) refuses passwords shorter
//! than [`MIN_CHARS`] characters (Unicode scalar values), longer than
//! [`MAX_BYTES`] bytes, or made of a single repeated character. Passwords are
//! hashed as their exact UTF-8 bytes: no trimming, no Unicode normalisation.
//!
//! # Unknown accounts
//!
//! A login for an account that does not exist must take as long as one for an
//! account that does, or the response time tells an attacker which admin
//! names are real. Call [`verify_dummy`] in that case: it runs one
//! verification with the same parameters against a fixed hash and always
//! fails.

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};

use crate::encoding::random_bytes;
use crate::error::module_error;

/// What kind of failure a password [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The password is shorter than [`MIN_CHARS`] characters.
    #[error("password too short: at least 12 characters are required")]
    TooShort,
    /// The password is longer than [`MAX_BYTES`] bytes.
    #[error("password too long: at most 1024 bytes are accepted")]
    TooLong,
    /// The password is one character repeated.
    #[error("password refused: it repeats a single character")]
    SingleCharacter,
    /// The stored hash is not a well-formed Argon2 PHC string.
    #[error("malformed password hash")]
    MalformedHash,
    /// The stored hash is a PHC string, but not Argon2id version 0x13, or its
    /// cost parameters exceed the limits this crate will run.
    #[error("unsupported password hash")]
    UnsupportedHash,
    /// Argon2 itself failed (not expected with this crate's parameters).
    #[error("password hashing failed")]
    Hashing,
}

module_error!("password");

/// The shortest password accepted, in characters (Unicode scalar values).
pub const MIN_CHARS: usize = 12;

/// The longest password accepted, in bytes of UTF-8.
pub const MAX_BYTES: usize = 1024;

/// Argon2id memory cost of new hashes, in KiB (19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Argon2id time cost (passes) of new hashes.
pub const T_COST: u32 = 2;
/// Argon2id parallelism of new hashes.
pub const P_COST: u32 = 1;

/// The largest memory cost [`verify_password`] will run (256 MiB), so a
/// doctored hash row cannot make a login allocate gigabytes.
const MAX_M_COST_KIB: u32 = 256 * 1024;
/// The largest time cost [`verify_password`] will run.
const MAX_T_COST: u32 = 16;
/// The largest parallelism [`verify_password`] will run.
const MAX_P_COST: u32 = 8;

/// What [`verify_dummy`] checks against: a well-formed Argon2id PHC string
/// with the parameters above whose output is random bytes, the hash of no
/// known password. A test keeps its parameters equal to the constants above.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$cGFsaXNhZGUtZHVtbXk$\
                          gTPv9GmdNLRSBVu7ROaAOTZuE7M+fzWxzNVVk1mAW+Y";

fn hasher() -> Result<Argon2<'static>> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(32))
        .map_err(|e| Error::new(ErrorKind::Hashing, e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks `password` against the minimum policy (see the module doc).
pub fn check_policy(password: &str) -> Result<()> {
    if password.len() > MAX_BYTES {
        return Err(ErrorKind::TooLong.into());
    }
    if password.chars().count() < MIN_CHARS {
        return Err(ErrorKind::TooShort.into());
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(ErrorKind::SingleCharacter.into());
    }
    Ok(())
}

/// Hashes `password` with Argon2id and a fresh random salt, after
/// [`check_policy`]; returns the PHC string to store.
///
/// Blocking and slow on purpose (see the module doc).
pub fn hash_password(password: &str) -> Result<String> {
    check_policy(password)?;
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| Error::new(ErrorKind::Hashing, e.to_string()))?;
    let hash = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| Error::new(ErrorKind::Hashing, e.to_string()))?;
    Ok(hash.to_string())
}

/// Parses a stored PHC string and checks that this crate will run it.
fn parse(phc: &str) -> Result<(PasswordHash<'_>, Params)> {
    let hash =
        PasswordHash::new(phc).map_err(|e| Error::new(ErrorKind::MalformedHash, e.to_string()))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(Error::new(
            ErrorKind::UnsupportedHash,
            format!("algorithm {} (only argon2id is accepted)", hash.algorithm),
        ));
    }
    if hash.version != Some(Version::V0x13.into()) {
        return Err(Error::new(
            ErrorKind::UnsupportedHash,
            "version (only v=19 is accepted)",
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(Error::new(ErrorKind::MalformedHash, "no salt or no hash"));
    }
    let params =
        Params::try_from(&hash).map_err(|e| Error::new(ErrorKind::MalformedHash, e.to_string()))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
        || !params.keyid().is_empty()
        || !params.data().is_empty()
    {
        return Err(Error::new(
            ErrorKind::UnsupportedHash,
            format!(
                "parameters m={},t={},p={} exceed the limits m={MAX_M_COST_KIB},t={MAX_T_COST},p={MAX_P_COST} or carry keyid/data",
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            ),
        ));
    }
    Ok((hash, params))
}

/// Whether `password` matches the stored PHC string `phc`.
///
/// `Ok(false)` is a wrong password; `Err` means the stored hash is unusable
/// ([`ErrorKind::MalformedHash`], [`ErrorKind::UnsupportedHash`]) and the
/// login must fail too. The final comparison is constant-time; the Argon2
/// work does not depend on the password. The policy is not applied: a
/// password accepted once stays usable if the policy is raised.
pub fn verify_password(phc: &str, password: &str) -> Result<bool> {
    let (hash, _) = parse(phc)?;
    // The parameters, algorithm and version come from `hash`, not from the
    // `Argon2` value (argon2's `PasswordVerifier` contract); `Output`'s
    // equality is constant-time.
    match Argon2::default().verify_password(password.as_bytes(), &hash) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(Error::new(ErrorKind::Hashing, e.to_string())),
    }
}

/// Runs one verification of `password` against a fixed hash, with the
/// parameters of new hashes, and discards the result: call it when the
/// account does not exist, so that the response takes as long as a real
/// verification.
pub fn verify_dummy(password: &str) {
    // The result is always false (nobody knows the dummy's password) or an
    // error that cannot happen with a constant hash a test parses.
    let _ = verify_password(DUMMY_HASH, password);
}

/// Whether a stored hash was made with parameters other than those of new
/// hashes ([`M_COST_KIB`], [`T_COST`], [`P_COST`], 32-byte output), so it
/// should be replaced by [`hash_password`] at the next successful login.
pub fn needs_rehash(phc: &str) -> Result<bool> {
    let (hash, params) = parse(phc)?;
    let output_len = hash.hash.map(|h| h.len());
    Ok(params.m_cost() != M_COST_KIB
        || params.t_cost() != T_COST
        || params.p_cost() != P_COST
        || output_len != Some(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_is_current() {
        assert_eq!(needs_rehash(DUMMY_HASH), Ok(false));
        assert_eq!(
            verify_password(DUMMY_HASH, "not the dummy password"),
            Ok(false)
        );
    }
}
