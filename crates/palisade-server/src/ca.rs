//! The service CA: kept in the database so every replica signs with the same
//! key, it issues each replica's server certificate and every agent's client
//! certificate.
//!
//! Storing the CA key in the database is deliberate: replicas are stateless
//! and interchangeable, any of them may enroll an agent, and an agent
//! enrolled through one must be accepted by all. The database is therefore
//! as sensitive as the CA key (it is anyway: it holds every policy). The key
//! is an ECDSA P-256 key in PKCS#8 PEM.
use crate::db::{now_ms, Db};
use crate::errors::{Error, ErrorKind};
use palisade_core::Sha256;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest;
use std::time::Duration;

/// Lifetime of an agent's client certificate.
const CLIENT_CERT_DAYS: u32 = 365;
/// Lifetime of the CA.
const CA_YEARS: u32 = 20;

/// The loaded CA.
pub(crate) struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    fingerprint: Sha256,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Why a CSR was refused.
#[derive(Debug)]
pub(crate) struct CsrError(pub(crate) String);

fn tls_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Tls, what.to_owned(), e)
}

pub(crate) fn sha256(data: &[u8]) -> Sha256 {
    Sha256::from_bytes(sha2::Sha256::digest(data).into())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(300)).into();
    params.not_after = (now + lifetime).into();
}

const DAY: Duration = Duration::from_secs(86_400);

impl Ca {
    /// Load the CA from the database, creating it if this is the first
    /// replica ever to start (race-safe: insert-if-absent, then read back
    /// whichever CA won).
    pub(crate) async fn load_or_create(db: &Db) -> Result<Ca, Error> {
        if let Some(ca) = Self::load(db).await? {
            return Ok(ca);
        }
        let (cert_pem, key_pem) = Self::generate()?;
        let mut tx = db.write().await?;
        sqlx::query(
            "INSERT INTO ca (id, cert_pem, key_pem, created_ms) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&cert_pem)
        .bind(&key_pem)
        .bind(now_ms())
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Self::load(db)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Database, "the CA row vanished after insert"))
    }

    async fn load(db: &Db) -> Result<Option<Ca>, Error> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT cert_pem, key_pem FROM ca WHERE id = 1")
                .fetch_optional(db.pool())
                .await?;
        let Some((cert_pem, key_pem)) = row else {
            return Ok(None);
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| tls_err("the stored CA key is unreadable", e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| tls_err("the stored CA certificate is unreadable", e))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| tls_err("the stored CA certificate is not PEM", e))?;
        let fingerprint = sha256(&cert_der);
        Ok(Some(Ca {
            cert_pem,
            cert_der,
            fingerprint,
            issuer,
        }))
    }

    fn generate() -> Result<(String, String), Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| tls_err("cannot generate the CA key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Palisade");
        dn.push(DnType::CommonName, "Palisade service CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, DAY * (CA_YEARS * 365));
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_err("cannot self-sign the CA", e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub(crate) fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub(crate) fn fingerprint(&self) -> Sha256 {
        self.fingerprint
    }

    /// Issue a server certificate for `names` (DNS names or IP addresses)
    /// with a fresh key, valid `lifetime` (see `tls` for its renewal).
    pub(crate) fn issue_server_cert(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| tls_err("cannot generate the server key", e))?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| tls_err("invalid server certificate name", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("palisade", |n| n.as_str()),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, lifetime);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_err("cannot sign the server certificate", e))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone()], key))
    }

    /// Parse and verify (self-signature) an agent's PEM CSR.
    pub(crate) fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, CsrError> {
        if csr_pem.len() > 16 * 1024 {
            return Err(CsrError("the CSR is larger than 16 KiB".into()));
        }
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CsrError(format!("not a valid PEM certificate signing request: {e}")))
    }

    /// Sign an agent's CSR: a client-authentication certificate for
    /// `common_name`, valid a year. Only the CSR's public key is used; the
    /// subject and extensions are the service's choice. Returns the PEM
    /// certificate and the SHA-256 of its DER.
    pub(crate) fn sign_client(
        &self,
        csr: &CertificateSigningRequestParams,
        common_name: &str,
    ) -> Result<(String, Sha256), CsrError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Palisade agent");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, DAY * CLIENT_CERT_DAYS);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CsrError(format!("cannot sign a certificate for this CSR's key: {e}")))?;
        Ok((cert.pem(), sha256(cert.der())))
    }
}
