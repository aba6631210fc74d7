//! The replica's TLS configuration, and its server certificate, reissued
//! while the replica runs.
//!
//! A server certificate lives [`SERVER_CERT_LIFETIME`] (90 days). A replica
//! used to issue itself one at start and keep it: after 90 days of uptime
//! every handshake failed. Now rustls asks [`ServerCert`] for the
//! certificate at each handshake, and [`renew`] (one task per replica)
//! issues a new one with a fresh key at two thirds of the current one's
//! lifetime and swaps it in: connections open keep the one they shook hands
//! with, new ones get the new one. The task sleeps until then (60 days), so
//! an idle replica is not woken by it. Issuing needs only the CA in memory;
//! should it fail, the task tries again in an hour (or sooner, near the end
//! of the certificate's life) and logs each failure.
use crate::ca::Ca;
use crate::errors::{Error, ErrorKind};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Lifetime of a replica's server certificate.
pub(crate) const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// Longest wait before trying again when issuing failed.
const RETRY_MAX: Duration = Duration::from_secs(3600);

/// The server certificate handed out at each handshake.
#[derive(Debug)]
pub(crate) struct ServerCert {
    current: parking_lot::RwLock<Arc<CertifiedKey>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

impl ServerCert {
    /// A certificate for `names`, valid `lifetime` from now.
    fn issue(
        ca: &Ca,
        names: &[String],
        lifetime: Duration,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, Error> {
        let (chain, key) = ca.issue_server_cert(names, lifetime)?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| Error::with_source(ErrorKind::Tls, "the server key is unusable", e))?;
        Ok(Arc::new(CertifiedKey::new(chain, key)))
    }
}

/// The replica's TLS configuration, serving a certificate for `names`
/// valid `lifetime`, and the handle [`renew`] swaps it through.
pub(crate) fn config(
    ca: &Ca,
    names: &[String],
    lifetime: Duration,
) -> Result<(rustls::ServerConfig, Arc<ServerCert>), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| Error::with_source(ErrorKind::Tls, "the CA certificate is unusable", e))?;
    // Client certificates are optional at the TLS layer: enrollment and the
    // admin API have none. Agent endpoints require one (see AgentAuth).
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::with_source(ErrorKind::Tls, "cannot build the client verifier", e))?;
    let cert = Arc::new(ServerCert {
        current: parking_lot::RwLock::new(ServerCert::issue(ca, names, lifetime, &provider)?),
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::with_source(ErrorKind::Tls, "no usable TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, cert))
}

/// Reissue `cert` at two thirds of each certificate's `lifetime`, until
/// `stop` turns true. Sleeps in between (no polling).
pub(crate) async fn renew(
    ca: Arc<Ca>,
    names: Vec<String>,
    cert: Arc<ServerCert>,
    lifetime: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let renew_after = lifetime * 2 / 3;
    let mut issued = tokio::time::Instant::now();
    let mut next = issued + renew_after;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match ServerCert::issue(&ca, &names, lifetime, &cert.provider) {
            Ok(new) => {
                *cert.current.write() = new;
                issued = tokio::time::Instant::now();
                next = issued + renew_after;
                tracing::info!(
                    tls_names = ?names,
                    valid_secs = lifetime.as_secs(),
                    next_in_secs = renew_after.as_secs(),
                    "server certificate reissued"
                );
            }
            Err(e) => {
                // The current one is still valid for a third of its life:
                // try again within an hour, and several times before it ends.
                let left =
                    (issued + lifetime).saturating_duration_since(tokio::time::Instant::now());
                let retry = (left / 8).clamp(Duration::from_millis(100), RETRY_MAX);
                tracing::error!(error = %e, retry_in_secs = retry.as_secs(), "cannot reissue the server certificate");
                next = tokio::time::Instant::now() + retry;
            }
        }
    }
}
