//! HTTP: the router, shared state, and the TLS accept loop that hands each
//! connection's client certificate to the handlers.
pub(crate) mod access;
pub(crate) mod admins;
pub(crate) mod agent;
pub(crate) mod api;
pub(crate) mod approvals;
pub(crate) mod console;
pub(crate) mod extract;
pub(crate) mod openapi;
pub(crate) mod renew;
pub(crate) mod signin;
pub(crate) mod stream;

use crate::ca::{sha256, Ca};
use crate::catalog::Recorder;
use crate::config::ServerConfig;
use crate::db::Db;
use crate::errors::ApiError;
use crate::eventrules::EventRules;
use crate::feed::FeedBatch;
use crate::rules::RuleCache;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::routing::{delete, get, post, put};
use axum::Router;
use extract::{PeerAddr, PeerCert};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tower::ServiceExt;

/// Everything a handler may need; one per replica.
pub(crate) struct Shared {
    pub(crate) db: Db,
    pub(crate) ca: Arc<Ca>,
    pub(crate) feed: broadcast::Sender<Arc<FeedBatch>>,
    pub(crate) recorder: Recorder,
    pub(crate) event_rules: EventRules,
    pub(crate) rule_cache: RuleCache,
    /// The Cedar policies every admin request is decided by.
    pub(crate) authorizer: palisade_authz::Authorizer,
    /// Console sign-in throttling: this replica's in-memory part, and the
    /// parameters.
    pub(crate) logins: parking_lot::Mutex<signin::Throttle>,
    /// Sign-in attempts taking turns (per source, per account).
    pub(crate) login_gates: signin::Gates,
    pub(crate) login_policy: palisade_authn::throttle::Policy,
    /// Bounds the Argon2id work running at once.
    pub(crate) hashing: tokio::sync::Semaphore,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Which computers have streams here; writes their liveness.
    pub(crate) liveness: Arc<crate::liveness::Liveness>,
    /// Where event rules' alerts may go (checked again when each is sent).
    pub(crate) alerts: crate::egress::AlertReach,
}

pub(crate) type AppState = Arc<Shared>;

/// The API routes.
pub(crate) fn router(state: AppState, config: &ServerConfig) -> Router {
    Router::new()
        // Agent API.
        .route("/agent/v1/ca", get(agent::ca))
        .route("/agent/v1/enroll", post(agent::enroll))
        .route("/agent/v1/renew", post(renew::renew))
        .route("/agent/v1/config", get(agent::config))
        .route("/agent/v1/lookup", post(agent::lookup))
        .route("/agent/v1/changes", get(agent::changes))
        .route("/agent/v1/stream", get(stream::stream))
        .route("/agent/v1/events", post(agent::events))
        .route("/agent/v1/inventory", post(agent::inventory))
        .route("/agent/v1/status", post(agent::status))
        .route("/agent/v1/approvals", post(agent::approvals))
        .route("/agent/v1/requests", post(agent::request_approval))
        .route("/agent/v1/removed", post(agent::removed))
        // Admin API.
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/whoami", get(api::whoami))
        .route("/api/v1/files/{sha256}", get(api::file))
        .route("/api/v1/files/{sha256}/state", put(api::set_file_state))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/computers", get(api::computers))
        .route("/api/v1/computers/{name}/policy", put(api::move_computer))
        .route(
            "/api/v1/computers/{name}/revoke",
            post(api::revoke_computer),
        )
        .route(
            "/api/v1/policies",
            get(api::policies).post(api::create_policy),
        )
        .route("/api/v1/policies/{name}/levels", put(api::set_levels))
        .route(
            "/api/v1/enrollment-tokens",
            get(api::enroll_tokens).post(api::create_enroll_token),
        )
        .route(
            "/api/v1/enrollment-tokens/{id}",
            delete(api::revoke_enroll_token),
        )
        .route("/api/v1/publishers", get(approvals::publishers))
        .route(
            "/api/v1/publishers/{name}/state",
            put(approvals::set_publisher_state),
        )
        .route(
            "/api/v1/publishers/{name}/trust",
            put(approvals::set_publisher_trust),
        )
        .route("/api/v1/reputation", post(approvals::import_reputation))
        .route(
            "/api/v1/rules",
            get(approvals::rules).post(approvals::create_rule),
        )
        .route("/api/v1/rules/{id}", delete(approvals::delete_rule))
        .route("/api/v1/bundles", get(approvals::bundles))
        .route("/api/v1/bundles/{name}", put(approvals::set_bundle))
        .route("/api/v1/requests", get(approvals::requests))
        .route(
            "/api/v1/requests/{id}/grant",
            post(approvals::grant_request),
        )
        .route("/api/v1/requests/{id}/deny", post(approvals::deny_request))
        .route("/api/v1/admins", get(admins::list).post(admins::add))
        .route("/api/v1/admins/{name}/grants", post(admins::grant))
        .route("/api/v1/admins/{name}/revoke", post(admins::revoke))
        .route("/api/v1/admins/{name}/disable", post(admins::disable))
        .route("/api/v1/admins/{name}/enable", post(admins::enable))
        .route(
            "/api/v1/roles",
            get(admins::roles).post(admins::create_role),
        )
        .route(
            "/api/v1/tokens",
            get(admins::tokens).post(admins::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(admins::revoke_token))
        .route(
            "/api/v1/settings",
            get(admins::settings).put(admins::set_settings),
        )
        .route("/api/v1/audit", get(admins::audit))
        .route("/api/v1/admins/{name}/invite", post(signin::invite))
        .route("/api/v1/me", get(signin::me))
        .route("/api/v1/me/totp", post(signin::start_totp))
        .route("/api/v1/me/totp/confirm", post(signin::confirm_totp))
        .merge(console::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::audit_layer,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept TLS connections until `shutdown` turns true, then let in-flight
/// requests finish within `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)));
    loop {
        let (tcp, peer_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer_addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer_addr, "TLS handshake timed out");
                    return;
                }
            };
            let peer = PeerCert(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| sha256(cert)),
            );
            let addr = PeerAddr(peer_addr.ip());
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                req.extensions_mut().insert(addr);
                router.clone().oneshot(req)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %peer_addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing");
        }
    }
}
