//! Alerts sent by event rules: webhooks and syslog.
//!
//! Rule evaluation hands alerts to a bounded queue with `try_send` (an alert
//! that does not fit is dropped and counted); a dispatcher task passes each
//! to its target's own bounded queue and worker, which delivers at most
//! [`CONCURRENCY`] at a time. So a slow or dead receiver never holds up
//! event ingest, rule evaluation, or the alerts of other receivers. A
//! webhook's target is its receiver (`scheme://host:port`), a syslog
//! target its `host:port`. A worker ends after [`IDLE`] without alerts,
//! and the dispatcher then forgets its queue.
//!
//! * **Webhook**: `POST` of the alert's JSON (`Content-Type:
//!   application/json`), [`WEBHOOK_TIMEOUT`] for the whole exchange, no
//!   redirects; any answer but 2xx is a failure.
//! * **Syslog**: one RFC 5424 message, facility `authpriv` (10), severity
//!   warning for blocks and notice otherwise, app-name `palisade`, msgid
//!   `event-rule`, no structured data, the alert's JSON as the message;
//!   sent as one UDP datagram to `host:port`, or as one datagram to the
//!   local `/dev/log` socket when the action names no address.
//!
//! Where alerts may go is checked as each is sent, on the addresses its
//! target resolves to then (see `egress`: by default public addresses
//! only, no proxy, and no `/dev/log`): a refused alert is never sent; it
//! is logged (`warn`, "alert refused") and counted.
//!
//! Failures are logged (`warn`) and counted; nothing is retried. Logs name
//! a webhook by its receiver and rule only: the path and query of its URL
//! often hold a secret, and errors are logged without the URL. When the
//! server stops, deliveries still in flight after [`SHUTDOWN_GRACE`] are
//! abandoned.
use crate::egress::{self, AlertReach, ResolveError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};

/// Deliveries in flight at once, per target.
pub(crate) const CONCURRENCY: usize = 4;
/// Alerts queued per target.
const TARGET_QUEUE: usize = 256;
/// A target's worker ends after this long without alerts.
const IDLE: Duration = Duration::from_secs(60);
/// Time allowed for one webhook call.
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long deliveries in flight may finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The syslog facility: authpriv (security/authorization messages).
const FACILITY: u8 = 10;

/// Where an alert goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Webhook(String),
    /// `host:port`, or `/dev/log` when `None`.
    Syslog(Option<String>),
}

impl Target {
    /// The target's worker, and how logs name it: never a webhook's path or
    /// query.
    fn key(&self) -> String {
        match self {
            Target::Webhook(u) => format!("webhook {}", egress::origin(u)),
            Target::Syslog(Some(a)) => format!("syslog {a}"),
            Target::Syslog(None) => "syslog /dev/log".to_owned(),
        }
    }
}

/// Syslog severities used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Severity {
    Warning = 4,
    Notice = 5,
}

/// One alert to deliver.
#[derive(Debug)]
pub(crate) struct Alert {
    pub(crate) target: Target,
    pub(crate) rule_id: i64,
    pub(crate) severity: Severity,
    /// The JSON document.
    pub(crate) body: String,
}

#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    /// Targets the dispatcher holds a queue for (one worker each).
    targets: AtomicUsize,
}

/// The sending half.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: mpsc::Sender<Alert>,
    stats: Arc<Stats>,
}

impl Notifier {
    /// A notifier and its worker (runs until every sender is dropped, then
    /// finishes the deliveries queued); alerts go where `reach` allows.
    pub(crate) fn new(
        capacity: usize,
        reach: AlertReach,
    ) -> (Notifier, impl std::future::Future<Output = ()>) {
        Notifier::with_idle(capacity, reach, IDLE)
    }

    fn with_idle(
        capacity: usize,
        reach: AlertReach,
        idle: Duration,
    ) -> (Notifier, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(Stats::default());
        (
            Notifier {
                tx,
                stats: stats.clone(),
            },
            run(rx, stats, reach, idle),
        )
    }

    /// Queue an alert; never waits.
    pub(crate) fn send(&self, alert: Alert) {
        if self.tx.try_send(alert).is_err() {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "alert queue full: event rule alerts dropped");
            }
        }
    }
}

/// The HTTP client of webhooks.
fn webhook_client(reach: AlertReach) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(WEBHOOK_TIMEOUT)
        .connect_timeout(WEBHOOK_TIMEOUT)
        // A redirect would lead where no rule said, past the address check
        // of the URL's own host.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("palisade/", env!("CARGO_PKG_VERSION")));
    if !reach.private_addresses {
        // Names resolve to allowed addresses only; a proxy would resolve
        // and connect beyond that check.
        builder = builder
            .dns_resolver(Arc::new(egress::PublicResolver))
            .no_proxy();
    }
    builder.build()
}

/// The dispatcher: one queue and worker per target, created on first use;
/// a worker ends after `idle` without alerts, and its queue is forgotten,
/// so that a receiver that hangs only delays its own alerts and targets no
/// longer used cost nothing.
async fn run(mut rx: mpsc::Receiver<Alert>, stats: Arc<Stats>, reach: AlertReach, idle: Duration) {
    let client = match webhook_client(reach) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client: webhooks will fail");
            None
        }
    };
    let host = hostname();
    let mut targets: HashMap<String, mpsc::Sender<Alert>> = HashMap::new();
    // Each worker ends with its target's key.
    let mut workers: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
    loop {
        let alert = tokio::select! {
            alert = rx.recv() => match alert {
                Some(a) => a,
                None => break,
            },
            Some(ended) = workers.join_next(), if !workers.is_empty() => {
                match ended {
                    // Unless a new worker already took its target over.
                    Ok(key) => {
                        if targets.get(&key).is_some_and(|t| t.is_closed()) {
                            targets.remove(&key);
                        }
                    }
                    Err(_) => targets.retain(|_, t| !t.is_closed()),
                }
                stats.targets.store(targets.len(), Ordering::Relaxed);
                continue;
            }
        };
        let key = alert.target.key();
        let alert = match targets.get(&key) {
            Some(queue) => match queue.try_send(alert) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => {
                    let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(to = %key, dropped = n, "alert queue of a receiver full: alerts dropped");
                    }
                    continue;
                }
                // Its worker just ended, idle.
                Err(TrySendError::Closed(a)) => a,
            },
            None => alert,
        };
        let (tx, trx) = mpsc::channel(TARGET_QUEUE);
        workers.spawn(target_worker(
            key.clone(),
            trx,
            client.clone(),
            host.clone(),
            stats.clone(),
            reach,
            idle,
        ));
        // A new queue has room.
        let _ = tx.try_send(alert);
        targets.insert(key, tx);
        stats.targets.store(targets.len(), Ordering::Relaxed);
    }
    drop(targets);
    while workers.join_next().await.is_some() {}
    let (sent, failed, refused, dropped) = (
        stats.sent.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
    );
    if sent + failed + refused + dropped > 0 {
        tracing::info!(sent, failed, refused, dropped, "alert deliveries");
    }
}

/// Deliver one target's alerts, at most [`CONCURRENCY`] at a time; ends
/// after `idle` without alerts (or when the dispatcher stops) and returns
/// the target's key.
async fn target_worker(
    what: String,
    mut rx: mpsc::Receiver<Alert>,
    client: Option<reqwest::Client>,
    host: String,
    stats: Arc<Stats>,
    reach: AlertReach,
    idle: Duration,
) -> String {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let mut closing = false;
    loop {
        let alert = if closing {
            // Alerts queued before the queue closed are still delivered.
            match rx.recv().await {
                Some(a) => a,
                None => break,
            }
        } else {
            match tokio::time::timeout(idle, rx.recv()).await {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(_) => {
                    // A finished delivery stays in the set until joined:
                    // without this, a worker that ever delivered would
                    // never find itself idle.
                    while tasks.try_join_next().is_some() {}
                    if tasks.is_empty() {
                        rx.close();
                        closing = true;
                    }
                    continue;
                }
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (client, host, stats, what) =
            (client.clone(), host.clone(), stats.clone(), what.clone());
        tasks.spawn(async move {
            let rule = alert.rule_id;
            let result = deliver(client.as_ref(), &host, reach, alert).await;
            drop(permit);
            match result {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(rule, to = %what, "alert delivered");
                }
                Err(Failure::Refused(why)) => {
                    let refused = stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(rule, to = %what, reason = %why, refused,
                        "alert refused: its receiver is not allowed");
                }
                Err(Failure::Failed(e)) => {
                    let failed = stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(rule, to = %what, error = %e, failed, "alert not delivered");
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    // Idle, or shutting down: give deliveries in flight a moment, then drop
    // them.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(to = %what, "alerts still in flight at shutdown were abandoned");
    }
    what
}

/// Why an alert was not delivered. Neither says a webhook's URL.
#[derive(Debug)]
enum Failure {
    /// Its target is not allowed (see `egress`): nothing was sent.
    Refused(String),
    /// Sending failed, or the receiver did not take it.
    Failed(String),
}

async fn deliver(
    client: Option<&reqwest::Client>,
    host: &str,
    reach: AlertReach,
    alert: Alert,
) -> Result<(), Failure> {
    match alert.target {
        Target::Webhook(url) => {
            let client = client.ok_or_else(|| Failure::Failed("no HTTP client".to_owned()))?;
            // A parse error does not quote the URL.
            let url = reqwest::Url::parse(&url)
                .map_err(|e| Failure::Failed(format!("unusable URL: {e}")))?;
            if !reach.private_addresses {
                // The client connects to an IP literal without asking its
                // resolver, which checks names.
                egress::check_literal(&url).map_err(|r| Failure::Refused(r.to_string()))?;
            }
            let resp = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(alert.body)
                .send()
                .await
                .map_err(webhook_failure)?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(Failure::Failed(format!("answered {}", resp.status())))
            }
        }
        Target::Syslog(address) => {
            let line = syslog_line(host, alert.severity, crate::db::now_ms(), &alert.body);
            match address {
                Some(a) => send_udp(&a, line.as_bytes(), reach).await,
                None if !reach.local_syslog => Err(Failure::Refused(
                    egress::Refused::local_syslog().to_string(),
                )),
                None => {
                    let fail = |e: std::io::Error| Failure::Failed(format!("/dev/log: {e}"));
                    let s = tokio::net::UnixDatagram::unbound().map_err(fail)?;
                    s.send_to(line.as_bytes(), "/dev/log")
                        .await
                        .map(|_| ())
                        .map_err(fail)
                }
            }
        }
    }
}

/// A webhook call that failed, said without its URL (reqwest's errors
/// repeat it); a refusal by the resolver is a refusal.
fn webhook_failure(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<egress::Refused>() {
            return Failure::Refused(r.to_string());
        }
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    Failure::Failed(text)
}

async fn send_udp(address: &str, data: &[u8], reach: AlertReach) -> Result<(), Failure> {
    let targets = egress::resolve_allowed(address, reach, WEBHOOK_TIMEOUT)
        .await
        .map_err(|e| match e {
            ResolveError::Refused(r) => Failure::Refused(r.to_string()),
            ResolveError::Failed(e) => Failure::Failed(e),
        })?;
    let Some(&target) = targets.first() else {
        return Err(Failure::Failed(format!("{address} resolves to no address")));
    };
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let fail = |e: std::io::Error| Failure::Failed(e.to_string());
    let socket = tokio::net::UdpSocket::bind(local).await.map_err(fail)?;
    socket.send_to(data, target).await.map(|_| ()).map_err(fail)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
        .unwrap_or_else(|| "-".to_owned())
}

/// An RFC 5424 message: `<PRI>1 TIMESTAMP HOST palisade PROCID event-rule - MSG`.
pub(crate) fn syslog_line(host: &str, severity: Severity, time_ms: i64, msg: &str) -> String {
    let pri = u16::from(FACILITY) * 8 + severity as u16;
    format!(
        "<{pri}>1 {} {host} palisade {} event-rule - {msg}",
        rfc3339(time_ms),
        std::process::id()
    )
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since the epoch (UTC).
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_lines() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        let line = syslog_line("web01", Severity::Warning, 0, "{}");
        assert!(
            line.starts_with("<84>1 1970-01-01T00:00:00.000Z web01 palisade "),
            "{line}"
        );
        assert!(line.ends_with(" event-rule - {}"), "{line}");
    }

    fn alert(target: Target) -> Alert {
        Alert {
            target,
            rule_id: 7,
            severity: Severity::Notice,
            body: "{}".to_owned(),
        }
    }

    const OPEN: AlertReach = AlertReach {
        private_addresses: true,
        local_syslog: true,
    };

    /// By default, a webhook to loopback, by address or by name, is refused
    /// before anything is sent; allowed, it reaches the receiver.
    #[tokio::test]
    async fn webhooks_to_loopback_are_refused_unless_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let strict = AlertReach::default();
        let client = webhook_client(strict).expect("client");
        for url in [
            format!("http://127.0.0.1:{port}/services/SECRET"),
            format!("http://[::ffff:127.0.0.1]:{port}/services/SECRET"),
            format!("http://localhost:{port}/services/SECRET"),
        ] {
            let got = deliver(
                Some(&client),
                "h",
                strict,
                alert(Target::Webhook(url.clone())),
            )
            .await;
            match got {
                Err(Failure::Refused(why)) => {
                    assert!(!why.contains("SECRET"), "{why}");
                    assert!(why.contains("alerts_allow_private_addresses"), "{why}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(200), listener.accept())
                .await
                .is_err(),
            "nothing may connect"
        );
        match deliver(None, "h", strict, alert(Target::Syslog(None))).await {
            Err(Failure::Refused(why)) => assert!(why.contains("alerts_local_syslog"), "{why}"),
            other => panic!("{other:?}"),
        }

        let client = webhook_client(OPEN).expect("client");
        let url = format!("http://localhost:{port}/hook");
        let call = tokio::spawn(async move {
            deliver(Some(&client), "h", OPEN, alert(Target::Webhook(url))).await
        });
        tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("allowed: the receiver is called")
            .expect("accept");
        call.abort();
    }

    /// A failed call is said without its URL.
    #[tokio::test]
    async fn failures_do_not_quote_the_url() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let client = webhook_client(OPEN).expect("client");
        let url = format!("http://127.0.0.1:{port}/services/SECRET?token=SECRET");
        match deliver(Some(&client), "h", OPEN, alert(Target::Webhook(url))).await {
            Err(Failure::Failed(e)) => {
                assert!(!e.contains("SECRET") && !e.contains("/services"), "{e}");
                assert!(e.contains("error sending request"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Target::Webhook("https://hooks.example/services/SECRET?t=1".into()).key(),
            "webhook https://hooks.example:443"
        );
    }

    /// A target's worker ends once idle, and the dispatcher forgets it; the
    /// next alert to the target starts a new one. (Before: a worker that had
    /// delivered once never ended, and its queue stayed in the map.)
    #[tokio::test]
    async fn idle_workers_end_and_are_forgotten() {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp");
        let address = udp.local_addr().expect("addr").to_string();
        let (notifier, task) = Notifier::with_idle(16, OPEN, Duration::from_millis(100));
        let task = tokio::spawn(task);
        let mut buf = vec![0u8; 65536];
        for round in 0..2 {
            notifier.send(alert(Target::Syslog(Some(address.clone()))));
            tokio::time::timeout(Duration::from_secs(3), udp.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("round {round}: delivered"))
                .expect("recv");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while notifier.stats.targets.load(Ordering::Relaxed) != 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: the idle worker is still there"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(notifier.stats.sent.load(Ordering::Relaxed), 2);
        drop(notifier);
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("the dispatcher ends")
            .expect("task");
    }
}
