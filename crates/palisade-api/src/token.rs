use palisade_core::Sha256;
use std::fmt;
use std::str::FromStr;

/// A one-time enrollment token: a secret plus the SHA-256 fingerprint of the
/// service's CA certificate (DER), so that a new agent can pin the CA before it
/// has any other trust anchor.
///
/// Text form: `plt1.<32 hex secret>.<64 hex CA fingerprint>`.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// The secret (16 random bytes) the service checks and consumes.
    pub secret: [u8; 16],
    /// SHA-256 of the CA certificate's DER encoding.
    pub ca_fingerprint: Sha256,
}

/// Why a string is not an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed enrollment token: expected plt1.<32 hex>.<64 hex>")]
pub struct TokenError;

impl fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plt1.{}.{}",
            hex::encode(self.secret),
            self.ca_fingerprint
        )
    }
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "EnrollToken(ca={})", self.ca_fingerprint.short())
    }
}

impl FromStr for EnrollToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let mut parts = s.trim().split('.');
        let (Some("plt1"), Some(secret), Some(fp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError);
        };
        let mut out = [0u8; 16];
        hex::decode_to_slice(secret, &mut out).map_err(|_| TokenError)?;
        let ca_fingerprint = Sha256::parse(fp).map_err(|_| TokenError)?;
        Ok(EnrollToken {
            secret: out,
            ca_fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = EnrollToken {
            secret: [7; 16],
            ca_fingerprint: Sha256::from_bytes([9; 32]),
        };
        let s = t.to_string();
        assert_eq!(s.parse::<EnrollToken>().unwrap(), t);
        assert!(!format!("{t:?}").contains("0707"));
        for bad in [
            "",
            "plt1",
            "plt2.00.00",
            &s.replace("plt1", "x"),
            &format!("{s}.x"),
        ] {
            assert!(bad.parse::<EnrollToken>().is_err(), "{bad}");
        }
    }
}
