//! The agent's identity after enrollment: the service URL, its computer id
//! and name, its client certificate and key, and the service CA, all kept in
//! the data directory (`identity.toml`, `client.crt`, `client.key` (0600),
//! `ca.crt`).
//!
//! The certificate is renewed by the agent itself ([`renew`], at two
//! thirds of its life: [`renewal_due`]). A renewed certificate and its key
//! are first written together to `client-next.pem` (one atomic write),
//! then to `client.crt` and `client.key`; a start that finds
//! `client-next.pem` (the agent stopped between) finishes the swap, so the
//! key and certificate on disk never belong to different renewals.
use anyhow::{bail, Context, Result};
use palisade_api::agent::{EnrollRequest, EnrollResponse};
use palisade_api::EnrollToken;
use palisade_core::{ComputerId, Sha256};
use std::path::Path;

/// An enrolled agent's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Base URL of the service (`https://host:port`).
    pub server: String,
    /// Computer id.
    pub computer_id: ComputerId,
    /// Computer name.
    pub computer: String,
    /// Client certificate (PEM).
    pub cert_pem: String,
    /// Client key (PEM).
    pub key_pem: String,
    /// Service CA (PEM).
    pub ca_pem: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    server: String,
    computer_id: ComputerId,
    computer: String,
}

impl Identity {
    /// Load the identity from `dir`; `None` if the agent is not enrolled.
    pub fn load(dir: &Path) -> Result<Option<Identity>> {
        let file = dir.join("identity.toml");
        if !file.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        let f: IdentityFile =
            toml::from_str(&text).with_context(|| format!("{}: malformed", file.display()))?;
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("{}: missing", dir.join(name).display()))
        };
        let mut identity = Identity {
            server: f.server,
            computer_id: f.computer_id,
            computer: f.computer,
            cert_pem: String::new(),
            key_pem: String::new(),
            ca_pem: read("ca.crt")?,
        };
        let next = dir.join(NEXT);
        match std::fs::read_to_string(&next) {
            Ok(pair) => {
                let (cert, key) =
                    split_pair(&pair).with_context(|| format!("{}: malformed", next.display()))?;
                (identity.cert_pem, identity.key_pem) = (cert.to_owned(), key.to_owned());
                identity.save_pair(dir)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                identity.cert_pem = read("client.crt")?;
                identity.key_pem = read("client.key")?;
            }
            Err(e) => return Err(e).with_context(|| next.display().to_string()),
        }
        Ok(Some(identity))
    }

    /// Write a renewed certificate and key to `dir` so that a stop at any
    /// point leaves a matching pair (see the module documentation).
    pub fn save_renewed(&self, dir: &Path) -> Result<()> {
        let pair = format!("{}\n{}", self.cert_pem.trim_end(), self.key_pem);
        write_in(dir, NEXT, &pair, 0o600)?;
        self.save_pair(dir)
    }

    /// `client.key` and `client.crt` from this identity, then the renewal's
    /// file gone.
    fn save_pair(&self, dir: &Path) -> Result<()> {
        write_in(dir, "client.key", &self.key_pem, 0o600)?;
        write_in(dir, "client.crt", &self.cert_pem, 0o644)?;
        match std::fs::remove_file(dir.join(NEXT)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| dir.join(NEXT).display().to_string())
            }
            _ => Ok(()),
        }
    }

    /// Write the identity to `dir` (the key readable by root only).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let write = |name: &str, text: &str, mode: u32| write_in(dir, name, text, mode);
        write("client.key", &self.key_pem, 0o600)?;
        write("client.crt", &self.cert_pem, 0o644)?;
        write("ca.crt", &self.ca_pem, 0o644)?;
        let file = IdentityFile {
            server: self.server.clone(),
            computer_id: self.computer_id,
            computer: self.computer.clone(),
        };
        write("identity.toml", &toml::to_string(&file)?, 0o644)
    }
}

/// SHA-256 of the first certificate in a PEM text (its DER encoding).
pub fn pem_fingerprint(pem: &str) -> Result<Sha256> {
    let der = first_pem_der(pem)?;
    use sha2::Digest;
    Ok(Sha256::from_bytes(sha2::Sha256::digest(&der).into()))
}

fn first_pem_der(pem: &str) -> Result<Vec<u8>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(item) => Ok(item.context("malformed PEM certificate")?.to_vec()),
        None => bail!("no certificate in PEM text"),
    }
}

/// Enroll with the service at `server` using `token`: fetch the service CA
/// and check it against the token's fingerprint before trusting it, create a
/// key pair, send a CSR with the token, and return the identity (not yet
/// saved).
pub async fn enroll(server: &str, token: &str, hostname: &str) -> Result<Identity> {
    let token: EnrollToken = token.parse().context("enrollment token")?;
    let server = server.trim_end_matches('/').to_owned();
    // The CA is fetched without verification: what authenticates it is the
    // fingerprint carried by the token, checked before anything is sent.
    let insecure = crate::link::insecure_client()?;
    let ca_pem = insecure
        .get(format!("{server}/agent/v1/ca"))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?
        .error_for_status()?
        .text()
        .await?;
    let fp = pem_fingerprint(&ca_pem)?;
    if fp != token.ca_fingerprint {
        bail!(
            "the service at {server} presented a CA ({}) that does not match the enrollment token ({}); refusing to enroll",
            fp.short(),
            token.ca_fingerprint.short()
        );
    }
    let key = rcgen::KeyPair::generate().context("generating the agent key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let csr = params.serialize_request(&key)?.pem()?;
    let client = crate::link::ca_client(&ca_pem, None)?;
    let request = EnrollRequest {
        token: token.to_string(),
        hostname: hostname.to_owned(),
        os: os_pretty_name(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        csr_pem: csr,
    };
    let resp = client
        .post(format!("{server}/agent/v1/enroll"))
        .json(&request)
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<palisade_api::ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or(body);
        bail!("enrollment refused ({status}): {msg}");
    }
    let resp: EnrollResponse = resp.json().await.context("malformed enrollment answer")?;
    if pem_fingerprint(&resp.ca_pem)? != token.ca_fingerprint {
        bail!("enrollment answer carries a different CA; refusing it");
    }
    Ok(Identity {
        server,
        computer_id: resp.computer_id,
        computer: resp.computer,
        cert_pem: resp.certificate_pem,
        key_pem: key.serialize_pem(),
        ca_pem: resp.ca_pem,
    })
}

/// Replace `dir/name` with `text` atomically, with `mode`.
fn write_in(dir: &Path, name: &str, text: &str, mode: u32) -> Result<()> {
    let path = dir.join(name);
    crate::store::write_file_atomically(&path, text.as_bytes(), mode)
        .with_context(|| path.display().to_string())
}

/// A renewed certificate and its key, before they are `client.crt` and
/// `client.key` (see the module documentation).
const NEXT: &str = "client-next.pem";

/// The certificate and the key of a `client-next.pem`.
fn split_pair(pair: &str) -> Option<(&str, &str)> {
    let at = pair.find("-----BEGIN PRIVATE KEY-----")?;
    let (cert, key) = pair.split_at(at);
    cert.contains("-----BEGIN CERTIFICATE-----")
        .then_some((cert, key))
}

/// A new key and certificate for `identity`, from the service, asked for
/// with the certificate it has (through `client`, which talks with it).
/// The caller saves it ([`Identity::save_renewed`]) and then has `client`
/// use it: the old certificate stays valid until the new one is used.
pub async fn renew(client: &crate::link::ServiceClient, identity: &Identity) -> Result<Identity> {
    let key = rcgen::KeyPair::generate().context("generating the agent key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.computer.as_str());
    let csr = params.serialize_request(&key)?.pem()?;
    let answer = client
        .renew(csr)
        .await
        .context("renewing the certificate")?;
    let renewed = Identity {
        cert_pem: answer.certificate_pem,
        key_pem: key.serialize_pem(),
        ..identity.clone()
    };
    // Signed by the service CA for this key, or not taken.
    let (not_before, not_after) = validity(&renewed.cert_pem)?;
    if not_after <= not_before {
        bail!("the renewed certificate is valid for no time");
    }
    Ok(renewed)
}

/// When a certificate (PEM) becomes valid and stops being valid, in Unix
/// seconds.
pub fn validity(cert_pem: &str) -> Result<(i64, i64)> {
    let der = first_pem_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("reading the client certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// When a certificate valid from `not_before` to `not_after` (Unix
/// seconds) is renewed: at two thirds of its life (a year's certificate
/// four months before it expires, so an agent off for weeks still gets a
/// new one in time).
pub fn renewal_due(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) / 3 * 2
}

/// `PRETTY_NAME` from os-release, or "Linux".
pub fn os_pretty_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// This machine's host name.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn identity(cert_pem: String, key_pem: String) -> Identity {
        Identity {
            server: "https://service.example:8443".into(),
            computer_id: ComputerId(7),
            computer: "web01".into(),
            cert_pem,
            key_pem,
            ca_pem: pair("ca").0,
        }
    }

    /// A certificate is renewed at two thirds of its life, read from the
    /// certificate itself.
    #[test]
    fn renewal_is_due_at_two_thirds_of_the_certificates_life() {
        let (cert, _) = pair("web01");
        let (not_before, not_after) = validity(&cert).unwrap();
        assert_eq!(not_before, 1_767_225_600); // 2026-01-01
        assert_eq!(not_after, 1_798_761_600); // 2027-01-01
        let due = renewal_due(not_before, not_after);
        assert_eq!(due - not_before, (not_after - not_before) / 3 * 2);
        assert_eq!(renewal_due(100, 50), 100, "no life left: due now");
        assert!(validity("not a certificate").is_err());
    }

    /// A renewal written but not finished (the agent stopped between
    /// `client-next.pem` and the pair) is finished at the next load: the
    /// key and the certificate on disk are always of the same renewal.
    #[test]
    fn a_renewal_interrupted_is_finished_at_the_next_load() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("old");
        let old = identity(cert, key);
        old.save(dir.path()).unwrap();
        let (cert, key) = pair("new");
        let new = identity(cert, key);
        // Stopped after the renewal's own file: the old pair still there.
        let both = format!("{}\n{}", new.cert_pem.trim_end(), new.key_pem);
        std::fs::write(dir.path().join(NEXT), both).unwrap();
        let loaded = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.cert_pem.trim(), new.cert_pem.trim());
        assert_eq!(loaded.key_pem.trim(), new.key_pem.trim());
        assert!(!dir.path().join(NEXT).exists(), "the swap finished");
        let again = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(again.cert_pem.trim(), new.cert_pem.trim());
        // The whole way: nothing left over, the new pair in place.
        let (cert, key) = pair("newer");
        let newer = identity(cert, key);
        newer.save_renewed(dir.path()).unwrap();
        assert!(!dir.path().join(NEXT).exists());
        let loaded = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.key_pem, newer.key_pem);
        // A damaged renewal file is said, not taken for a pair.
        std::fs::write(dir.path().join(NEXT), "garbage").unwrap();
        let e = Identity::load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("client-next.pem"), "{e:#}");
    }
}
