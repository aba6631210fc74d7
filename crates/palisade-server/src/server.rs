//! One server replica: bind, then serve until told to stop.
use crate::ca::Ca;
use crate::catalog::Recorder;
use crate::config::ServerConfig;
use crate::db::{revision, Db};
use crate::egress::AlertReach;
use crate::errors::{Error, ErrorKind};
use crate::eventrules::EventRules;
use crate::http::{self, Shared};
use crate::notify::Notifier;
use palisade_core::Sha256;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// Capacity of the feed's broadcast channel, in batches; a stream that
/// falls further behind is told to reset.
const FEED_CAPACITY: usize = 256;
/// Capacity, in alerts, of the queue in front of webhook and syslog delivery.
const ALERT_QUEUE: usize = 1024;

/// A bound, not yet serving, replica.
pub struct Server {
    config: ServerConfig,
    db: Db,
    ca: Arc<Ca>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cert: Arc<crate::tls::ServerCert>,
    cert_lifetime: Duration,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("database", &self.db.kind())
            .field("ca", &self.ca.fingerprint())
            .finish()
    }
}

impl Server {
    /// Validate the configuration, connect to the database (migrating it),
    /// load or create the CA, issue this replica's server certificate (and
    /// again at two thirds of each one's lifetime while serving: see `tls`)
    /// and bind the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, Error> {
        Server::bind_with_cert_lifetime(config, crate::tls::SERVER_CERT_LIFETIME).await
    }

    /// [`Server::bind`] with server certificates valid `cert_lifetime`
    /// (tests of their renewal).
    pub(crate) async fn bind_with_cert_lifetime(
        config: ServerConfig,
        cert_lifetime: Duration,
    ) -> Result<Server, Error> {
        config.validate()?;
        let db = Db::connect_with(&config.database, config.db_max_connections).await?;
        let ca = Arc::new(Ca::load_or_create(&db).await?);
        let (tls, cert) = crate::tls::config(&ca, &config.tls_names, cert_lifetime)?;
        let tls = Arc::new(tls);
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot listen on {}", config.listen),
                e,
            )
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::with_source(ErrorKind::Io, "cannot read the bound address", e))?;
        tracing::info!(
            listen = %local_addr,
            database = db.kind().as_str(),
            tls_names = ?config.tls_names,
            ca = %ca.fingerprint(),
            max_body_bytes = config.max_body_bytes,
            change_retention_days = config.change_retention_days,
            event_retention_days = config.event_retention_days,
            deleted_instance_retention_days = config.deleted_instance_retention_days,
            alerts_allow_private_addresses = config.alerts_allow_private_addresses,
            alerts_local_syslog = config.alerts_local_syslog,
            "palisade server bound"
        );
        Ok(Server {
            config,
            db,
            ca,
            listener,
            tls,
            cert,
            cert_lifetime,
            local_addr,
        })
    }

    /// The address the listener is bound to (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// SHA-256 of the CA certificate's DER encoding (what enrollment tokens carry).
    pub fn ca_fingerprint(&self) -> Sha256 {
        self.ca.fingerprint()
    }

    /// The database handle (for offline administration beside the server).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The effective configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Serve until `shutdown` completes; then stop accepting, end agent
    /// streams and long polls, let in-flight requests finish within
    /// `shutdown_grace_secs`, flush the catalog queue and close the pool.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Server {
            config,
            db,
            ca,
            listener,
            tls,
            cert,
            cert_lifetime,
            local_addr,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (feed_tx, _) = broadcast::channel(FEED_CAPACITY);
        let start = {
            let mut conn = db.pool().acquire().await?;
            revision(&mut conn).await?
        };
        let retention = Duration::from_secs(config.change_retention_days.saturating_mul(86_400));
        let feed = tokio::spawn(crate::feed::run(
            db.clone(),
            feed_tx.clone(),
            start,
            retention,
            (config.event_retention_days > 0)
                .then(|| Duration::from_secs(config.event_retention_days.saturating_mul(86_400))),
            (config.deleted_instance_retention_days > 0).then(|| {
                Duration::from_secs(
                    config
                        .deleted_instance_retention_days
                        .saturating_mul(86_400),
                )
            }),
            stop_rx.clone(),
        ));
        let listen = tokio::spawn(crate::feed::listen(db.clone(), stop_rx.clone()));
        let renew = tokio::spawn(crate::tls::renew(
            Arc::clone(&ca),
            config.tls_names.clone(),
            cert,
            cert_lifetime,
            stop_rx.clone(),
        ));
        let alerts = AlertReach::of(&config);
        let (notifier, notifier_task) = Notifier::new(ALERT_QUEUE, alerts);
        let notifier_task = tokio::spawn(notifier_task);
        let (event_rules, event_rules_task) =
            EventRules::new(db.clone(), notifier, stop_rx.clone());
        let event_rules_task = tokio::spawn(event_rules_task);
        let (recorder, recorder_task) =
            Recorder::new(db.clone(), config.catalog_queue, event_rules.clone());
        let recorder_task = tokio::spawn(recorder_task);
        let liveness = Arc::new(crate::liveness::Liveness::start(db.clone()).await?);
        let liveness_task = tokio::spawn({
            let liveness = Arc::clone(&liveness);
            let stop = stop_rx.clone();
            async move { liveness.run(stop).await }
        });
        let shared = Arc::new(Shared {
            db: db.clone(),
            ca,
            feed: feed_tx,
            recorder: recorder.clone(),
            event_rules,
            rule_cache: Default::default(),
            authorizer: palisade_authz::Authorizer::new(),
            logins: Default::default(),
            login_gates: Default::default(),
            login_policy: Default::default(),
            hashing: tokio::sync::Semaphore::new(http::signin::HASHING_CONCURRENCY),
            shutdown: stop_rx.clone(),
            liveness,
            alerts,
        });
        let router = http::router(shared, &config);
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let accept = tokio::spawn(http::serve(listener, tls, router, stop_rx, grace));
        tracing::info!(listen = %local_addr, "palisade server serving");

        shutdown.await;
        tracing::info!("shutting down: draining connections");
        let _ = stop_tx.send(true);
        if let Err(e) = accept.await {
            tracing::warn!(error = %e, "accept loop ended abnormally");
        }
        let _ = feed.await;
        let _ = listen.await;
        let _ = renew.await;
        let _ = liveness_task.await;
        // The router (and its recorder handles) are gone with the accept
        // loop; dropping the last sender lets the recorder drain and stop.
        let dropped = recorder.dropped();
        drop(recorder);
        if tokio::time::timeout(Duration::from_secs(5), recorder_task)
            .await
            .is_err()
        {
            tracing::warn!("catalog recorder did not finish in time");
        }
        if dropped > 0 {
            tracing::warn!(dropped, "catalog sightings dropped while serving");
        }
        // The event rule worker stopped with the accept loop (after the
        // batch at hand; what is left waits in the database), dropping the
        // last handle on the notifier, which drains its queue and stops.
        for (task, what) in [
            (event_rules_task, "event rule worker"),
            (notifier_task, "alert worker"),
        ] {
            if tokio::time::timeout(Duration::from_secs(6), task)
                .await
                .is_err()
            {
                tracing::warn!("{what} did not finish in time");
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), db.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy at exit");
        }
        tracing::info!("palisade server stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::RootCertStore;
    use std::time::Instant;

    /// The leaf certificate a TLS client verifying against `ca_pem` is
    /// served at `addr` (the handshake fails on an expired one).
    async fn served(addr: SocketAddr, ca_pem: &str) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
            .expect("CA");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake with a valid certificate");
        tls.get_ref().1.peer_certificates().expect("certificates")[0].clone()
    }

    /// Regression: the server certificate was issued once, at bind, so a
    /// replica up longer than its lifetime (90 days) failed every
    /// handshake. Here certificates live 6 s: a new one is served from
    /// two thirds of that (4 s) on, to new connections, without a restart,
    /// and not before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_certificate_is_reissued_while_serving() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database: format!("sqlite://{}/palisade.db?mode=rwc", dir.path().display()),
            tls_names: vec!["localhost".into()],
            shutdown_grace_secs: 1,
            ..ServerConfig::default()
        };
        let lifetime = Duration::from_secs(6);
        let server = Server::bind_with_cert_lifetime(config, lifetime)
            .await
            .expect("bind");
        let start = Instant::now();
        let (addr, ca_pem) = (server.local_addr(), server.ca_pem().to_owned());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        let first = served(addr, &ca_pem).await;
        let second = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = served(addr, &ca_pem).await;
            if now != first {
                break now;
            }
            assert!(
                start.elapsed() < Duration::from_millis(5500),
                "still the first certificate after {:?}",
                start.elapsed()
            );
        };
        let at = start.elapsed();
        assert!(at >= lifetime * 2 / 3, "reissued early, at {at:?}");
        // And the next one two thirds of the new one's life later: not yet.
        assert_eq!(served(addr, &ca_pem).await, second);
        let _ = stop.send(());
        task.await.expect("serve task").expect("serve");
    }
}
