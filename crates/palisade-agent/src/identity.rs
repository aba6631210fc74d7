//! The agent's identity after enrollment: the service URL, its computer id
//! and name, its client certificate and key, and the service CA, all kept in
//! the data directory (`identity.toml`, `client.crt`, `client.key` (0600),
//! `ca.crt`).
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
        Ok(Some(Identity {
            server: f.server,
            computer_id: f.computer_id,
            computer: f.computer,
            cert_pem: read("client.crt")?,
            key_pem: read("client.key")?,
            ca_pem: read("ca.crt")?,
        }))
    }

    /// Write the identity to `dir` (the key readable by root only).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let write = |name: &str, text: &str, mode: u32| -> Result<()> {
            let path = dir.join(name);
            crate::store::write_file_atomically(&path, text.as_bytes(), mode)
                .with_context(|| path.display().to_string())
        };
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
