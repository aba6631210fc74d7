//! Alerts sent by event rules: webhooks and syslog.
//!
//! Rule evaluation hands alerts to a bounded queue with `try_send` (an alert
//! that does not fit is dropped and counted); a dispatcher task passes each
//! to its target's own bounded queue and worker, which delivers at most
//! [`CONCURRENCY`] at a time. So a slow or dead receiver never holds up
//! event ingest, rule evaluation, or the alerts of other receivers.
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
//! Failures are logged (`warn`) and counted; nothing is retried. When the
//! server stops, deliveries still in flight after [`SHUTDOWN_GRACE`] are
//! abandoned.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
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
    dropped: AtomicU64,
}

/// The sending half.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: mpsc::Sender<Alert>,
    stats: Arc<Stats>,
}

impl Notifier {
    /// A notifier and its worker (runs until every sender is dropped, then
    /// finishes the deliveries queued).
    pub(crate) fn new(capacity: usize) -> (Notifier, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(Stats::default());
        (
            Notifier {
                tx,
                stats: stats.clone(),
            },
            run(rx, stats),
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

/// The dispatcher: one queue and worker per target, created on first use
/// and ended after [`IDLE`] without alerts, so that a receiver that hangs
/// only delays its own alerts.
async fn run(mut rx: mpsc::Receiver<Alert>, stats: Arc<Stats>) {
    let client = match reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(WEBHOOK_TIMEOUT)
        .connect_timeout(WEBHOOK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("palisade/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client: webhooks will fail");
            None
        }
    };
    let host = hostname();
    let mut targets: HashMap<String, mpsc::Sender<Alert>> = HashMap::new();
    let mut workers = tokio::task::JoinSet::new();
    while let Some(alert) = rx.recv().await {
        let key = match &alert.target {
            Target::Webhook(u) => format!("webhook {u}"),
            Target::Syslog(Some(a)) => format!("syslog {a}"),
            Target::Syslog(None) => "syslog /dev/log".to_owned(),
        };
        let live = targets.get(&key).is_some_and(|t| !t.is_closed());
        if !live {
            let (tx, trx) = mpsc::channel(TARGET_QUEUE);
            workers.spawn(target_worker(
                key.clone(),
                trx,
                client.clone(),
                host.clone(),
                stats.clone(),
            ));
            targets.insert(key.clone(), tx);
        }
        let sent = targets.get(&key).map(|t| t.try_send(alert));
        if !matches!(sent, Some(Ok(()))) {
            let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(to = %key, dropped = n, "alert queue of a receiver full: alerts dropped");
            }
        }
        while workers.try_join_next().is_some() {}
        targets.retain(|_, t| !t.is_closed());
    }
    drop(targets);
    while workers.join_next().await.is_some() {}
    let (sent, failed, dropped) = (
        stats.sent.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
    );
    if sent + failed + dropped > 0 {
        tracing::info!(sent, failed, dropped, "alert deliveries");
    }
}

/// Deliver one target's alerts, at most [`CONCURRENCY`] at a time.
async fn target_worker(
    what: String,
    mut rx: mpsc::Receiver<Alert>,
    client: Option<reqwest::Client>,
    host: String,
    stats: Arc<Stats>,
) {
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
            match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(_) if tasks.is_empty() => {
                    rx.close();
                    closing = true;
                    continue;
                }
                Err(_) => continue,
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (client, host, stats, what) =
            (client.clone(), host.clone(), stats.clone(), what.clone());
        tasks.spawn(async move {
            let rule = alert.rule_id;
            let result = deliver(client.as_ref(), &host, alert).await;
            drop(permit);
            match result {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(rule, to = %what, "alert delivered");
                }
                Err(e) => {
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
}

async fn deliver(client: Option<&reqwest::Client>, host: &str, alert: Alert) -> Result<(), String> {
    match alert.target {
        Target::Webhook(url) => {
            let client = client.ok_or("no HTTP client")?;
            let resp = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(alert.body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("answered {}", resp.status()))
            }
        }
        Target::Syslog(address) => {
            let line = syslog_line(host, alert.severity, crate::db::now_ms(), &alert.body);
            match address {
                Some(a) => send_udp(&a, line.as_bytes()).await,
                None => {
                    let s = tokio::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
                    s.send_to(line.as_bytes(), "/dev/log")
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("/dev/log: {e}"))
                }
            }
        }
    }
}

async fn send_udp(address: &str, data: &[u8]) -> Result<(), String> {
    let target = tokio::time::timeout(WEBHOOK_TIMEOUT, tokio::net::lookup_host(address))
        .await
        .map_err(|_| "name resolution timed out".to_owned())?
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| e.to_string())?;
    socket
        .send_to(data, target)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
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
}
