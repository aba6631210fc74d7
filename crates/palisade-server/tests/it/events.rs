//! Events: idempotent upload, paging, filters, long poll; agent status.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::{ComputerInfo, EventPage, FileDetails};
use palisade_api::agent::EventAck;
use palisade_core::{Approval, EventKind, FileEvent, Level, Operation, ProcessContext};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(
    events_upload_and_long_poll,
    retried_events_are_catalogued_once,
    renumbered_events_are_not_taken_for_retries,
    events_past_their_retention_are_deleted_oldest_first,
    agent_status
);

fn event(seq: u64, kind: EventKind) -> Value {
    let e = FileEvent {
        time_ms: 1_700_000_000_000 + seq as i64,
        kind,
        operation: Operation::Execute,
        sha256: Some(hash(seq)),
        path: format!("/tmp/dropped-{seq}"),
        approval: Approval::Unknown,
        level: Level::Lockdown,
        process: ProcessContext::unknown(4242),
        reason: "test".to_owned(),
    };
    json!({ "seq": seq, "event": e })
}

fn upload(seqs: &[(u64, EventKind)]) -> Value {
    json!({ "events": seqs.iter().map(|(s, k)| event(*s, *k)).collect::<Vec<_>>() })
}

async fn events_upload_and_long_poll(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;
    use EventKind::*;

    let ack: EventAck = agent
        .post_ok(
            "/agent/v1/events",
            upload(&[(1, Blocked), (2, WouldBlock), (3, Blocked)]),
        )
        .await;
    assert_eq!(ack.stored, 3);
    // Re-sent after a lost answer: stored once.
    let ack: EventAck = agent
        .post_ok(
            "/agent/v1/events",
            upload(&[(1, Blocked), (2, WouldBlock), (3, Blocked)]),
        )
        .await;
    assert_eq!(ack.stored, 0);
    let ack: EventAck = agent
        .post_ok(
            "/agent/v1/events",
            upload(&[(3, Blocked), (4, Approved), (4, Approved)]),
        )
        .await;
    assert_eq!(ack.stored, 1);
    // Sequence numbers are per computer.
    let ack: EventAck = other
        .post_ok("/agent/v1/events", upload(&[(1, Blocked)]))
        .await;
    assert_eq!(ack.stored, 1);

    let page: EventPage = env.admin.get_ok("/api/v1/events").await;
    assert_eq!(page.events.len(), 5);
    let ids: Vec<i64> = page.events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(page.last_id, *ids.last().expect("ids"));
    assert_eq!(page.events[0].computer, agent.name);
    assert_eq!(page.events[0].event.path, "/tmp/dropped-1");

    let page: EventPage = env.admin.get_ok("/api/v1/events?kind=blocked").await;
    assert_eq!(page.events.len(), 3);
    let page: EventPage = env
        .admin
        .get_ok(&format!(
            "/api/v1/events?computer={}&kind=blocked",
            other.name
        ))
        .await;
    assert_eq!(page.events.len(), 1);
    let page: EventPage = env.admin.get_ok("/api/v1/events?limit=2").await;
    assert_eq!(page.events.len(), 2);
    let next: EventPage = env
        .admin
        .get_ok(&format!("/api/v1/events?limit=2&after={}", page.last_id))
        .await;
    assert_eq!(next.events[0].id, ids[2]);
    let e = expect_error(
        env.admin.get("/api/v1/events?computer=ghost").await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(e.field.as_deref(), Some("computer"));

    // Long poll with nothing to report: waits, then answers empty.
    let last = ids[4];
    let t = Instant::now();
    let empty: EventPage = env
        .admin
        .get_ok(&format!("/api/v1/events?after={last}&wait_ms=300"))
        .await;
    assert!(empty.events.is_empty());
    assert_eq!(empty.last_id, last);
    assert!(t.elapsed() >= Duration::from_millis(290));

    // Long poll woken by an upload.
    let poll = {
        let client = env.admin.client.clone();
        let url = env
            .server
            .url(&format!("/api/v1/events?after={last}&wait_ms=10000"));
        let token = env.admin.token.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("poll");
            let page: EventPage = r.json().await.expect("page");
            (page, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let ack: EventAck = agent
        .post_ok("/agent/v1/events", upload(&[(5, Blocked)]))
        .await;
    assert_eq!(ack.stored, 1);
    let (page, _) = poll.await.expect("poll task");
    let woke = t.elapsed();
    eprintln!("[figure] {backend:?}: event upload -> long poll answered: {woke:?}");
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].event.path, "/tmp/dropped-5");
    assert!(woke < Duration::from_secs(1), "{woke:?}");
    env.server.stop().await;
}

/// Regressions: an event batch re-sent after a lost answer (nothing stored
/// the second time) was catalogued again, counting each file twice; the
/// catalog gave every file new in one write the earliest sighting of all;
/// and an event dated before its computer enrolled (a wrong clock, or a
/// compromised agent) made its file look that old in the catalog.
async fn retried_events_are_catalogued_once(backend: Backend) {
    let env = Env::new(backend).await;
    let before_enrollment = now_ms();
    let agent = env.agent("default", "web01").await;
    // Sightings dated after the enrollment and before the upload.
    let t0 = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let dated = |seq: u64, path: &str, time_ms: i64| {
        let mut e = event_json(seq, "blocked", hash(seq), path);
        e["event"]["time_ms"] = json!(time_ms);
        e
    };
    let batch = json!({"events": [
        dated(1, "/tmp/one", t0 + 1),
        dated(2, "/tmp/two", t0 + 2),
    ]});
    let details = |n: u64| {
        let admin = &env.admin;
        async move {
            let d: FileDetails = admin.get_ok(&format!("/api/v1/files/{}", hash(n))).await;
            d
        }
    };
    let ack: EventAck = agent.post_ok("/agent/v1/events", batch.clone()).await;
    assert_eq!(ack.stored, 2);
    for n in [1, 2] {
        let d = eventually(Duration::from_secs(5), "catalogued", || async {
            // (The details read `files` and `file_instances` apart.)
            Some(details(n).await).filter(|d| !d.instances.is_empty() && d.first_seen_ms.is_some())
        })
        .await;
        // Each file's own sighting.
        assert_eq!(d.first_seen_ms, Some(t0 + n as i64), "{n}");
        assert_eq!(d.instances[0].count, 1);
    }
    let ack: EventAck = agent.post_ok("/agent/v1/events", batch).await;
    assert_eq!(ack.stored, 0);
    // The catalog is written in order: once the next batch shows, the
    // retry has been dealt with.
    let ack: EventAck = agent
        .post_ok(
            "/agent/v1/events",
            json!({"events": [event_json(3, "blocked", hash(3), "/tmp/three")]}),
        )
        .await;
    assert_eq!(ack.stored, 1);
    eventually(Duration::from_secs(5), "third batch catalogued", || async {
        Some(details(3).await)
            .filter(|d| !d.instances.is_empty())
            .map(drop)
    })
    .await;
    for n in [1, 2] {
        assert_eq!(details(n).await.instances[0].count, 1, "{n}");
    }
    // Dated 2023 (event_json's time), by a computer enrolled just now: the
    // catalog dates the sighting no earlier than the enrollment.
    let ack: EventAck = agent
        .post_ok(
            "/agent/v1/events",
            json!({"events": [event_json(4, "blocked", hash(4), "/tmp/four")]}),
        )
        .await;
    assert_eq!(ack.stored, 1);
    let d = eventually(Duration::from_secs(5), "backdated catalogued", || async {
        Some(details(4).await).filter(|d| !d.instances.is_empty() && d.first_seen_ms.is_some())
    })
    .await;
    let first = d.first_seen_ms.unwrap();
    assert!(
        (before_enrollment..=t0).contains(&first),
        "first seen {first}, enrolled between {before_enrollment} and {t0}"
    );
    assert_eq!(d.instances[0].first_seen_ms, first);
    env.server.stop().await;
}

/// `event_retention_days`: events that arrived longer ago are deleted,
/// lowest id first, in batches (more than one here: 5,100 old events),
/// stopping at the first that is not that old; the others stay readable.
async fn events_past_their_retention_are_deleted_oldest_first(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let old = 5_100u64;
    let kinds: Vec<(u64, EventKind)> = (1..=old + 3).map(|s| (s, EventKind::Blocked)).collect();
    for chunk in kinds.chunks(palisade_api::agent::EVENT_BATCH_MAX) {
        let ack: EventAck = agent.post_ok("/agent/v1/events", upload(chunk)).await;
        assert_eq!(ack.stored, chunk.len() as u64);
    }
    // Arrived 400 days ago: the first `old`, and one after a newer one.
    let year = 365 * 86_400_000i64;
    exec_sql(
        backend,
        &env.db.url,
        &format!(
            "UPDATE events SET received_ms = received_ms - {} WHERE seq <= {old} OR seq = {}",
            400 * 86_400_000i64,
            old + 2
        ),
    )
    .await;
    let keep = Duration::from_millis(year as u64);
    let deleted = palisade_server::prune_events(&env.server.db, keep)
        .await
        .expect("prune");
    assert_eq!(deleted, old);
    let page: EventPage = env.admin.get_ok("/api/v1/events").await;
    let seqs: Vec<String> = page.events.iter().map(|e| e.event.path.clone()).collect();
    let want: Vec<String> = (old + 1..=old + 3)
        .map(|s| format!("/tmp/dropped-{s}"))
        .collect();
    assert_eq!(seqs, want, "the newer one stops the deletion");
    assert_eq!(
        palisade_server::prune_events(&env.server.db, keep)
            .await
            .expect("prune again"),
        0
    );
    // New uploads go on as before.
    let ack: EventAck = agent
        .post_ok("/agent/v1/events", upload(&[(old + 4, EventKind::Blocked)]))
        .await;
    assert_eq!(ack.stored, 1);
    env.server.stop().await;
}

/// Regression: an agent whose event spool was rebuilt numbers its events
/// afresh; the service took each new event whose number it had stored for
/// a retry, answered `stored: 0`, and the agent deleted it.
async fn renumbered_events_are_not_taken_for_retries(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let at = |seq: u64, time_ms: i64, path: &str| {
        let mut e = event_json(seq, "blocked", hash(seq), path);
        e["event"]["time_ms"] = json!(time_ms);
        e
    };
    let before = json!({"events": [at(1, 1_000, "/tmp/a"), at(2, 2_000, "/tmp/b")]});
    let ack: EventAck = agent.post_ok("/agent/v1/events", before.clone()).await;
    assert_eq!(ack.stored, 2);
    // The spool is rebuilt: new events, numbered from 1 again.
    let after = json!({"events": [at(1, 5_000, "/tmp/c"), at(2, 6_000, "/tmp/d")]});
    let ack: EventAck = agent.post_ok("/agent/v1/events", after.clone()).await;
    assert_eq!(ack.stored, 2);
    // Retries of either are still stored once.
    for batch in [before, after] {
        let ack: EventAck = agent.post_ok("/agent/v1/events", batch).await;
        assert_eq!(ack.stored, 0);
    }
    let page: EventPage = env.admin.get_ok("/api/v1/events").await;
    let paths: Vec<&str> = page.events.iter().map(|e| e.event.path.as_str()).collect();
    assert_eq!(paths, ["/tmp/a", "/tmp/b", "/tmp/c", "/tmp/d"]);
    env.server.stop().await;
}

async fn agent_status(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let status = json!({
        "agent_version": "1.2.3",
        "level_in_force": "monitor",
        "enforcing": true,
        "guard_active": false,
        "watched": ["/", "/home"]
    });
    let (code, body) = agent
        .call(Method::POST, "/agent/v1/status", Some(status))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let list: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    let me = list.iter().find(|c| c.name == agent.name).expect("listed");
    let s = me.status.as_ref().expect("status stored");
    assert_eq!(s.agent_version, "1.2.3");
    assert_eq!(s.watched, vec!["/", "/home"]);
    assert!(me.last_seen_ms.is_some());
    assert!(!me.revoked);
    assert_eq!(me.hostname, "web01");
    // A report from an agent that predates answer times: empty histograms.
    assert_eq!(s.latency.all().count, 0);

    // Answer times travel to the fleet view as reported.
    let with_latency = |reader: serde_json::Value| {
        json!({
            "agent_version": "1.2.4",
            "level_in_force": "lockdown",
            "enforcing": true,
            "guard_active": false,
            "watched": ["/"],
            "latency": {
                "reader": reader,
                "workers": {"count": 1, "sum_ns": 40000000, "max_ns": 40000000,
                            "buckets": [[41943040, 1]]}
            }
        })
    };
    let reader = json!({"count": 3, "sum_ns": 62000, "max_ns": 22000,
                        "buckets": [[20480, 2], [22528, 1]]});
    let (code, body) = agent
        .call(Method::POST, "/agent/v1/status", Some(with_latency(reader)))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let list: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    let me = list.iter().find(|c| c.name == agent.name).expect("listed");
    let l = &me.status.as_ref().expect("status stored").latency;
    assert_eq!(l.reader.count, 3);
    assert_eq!(l.reader.buckets, vec![(20480, 2), (22528, 1)]);
    assert_eq!(l.all().count, 4);
    assert_eq!(l.all().quantile(0.5), Some(20480));
    assert_eq!(l.all().max_ns, 40_000_000);

    // A malformed histogram is refused, naming it, and the stored status
    // stays as it was.
    for (bad, fault) in [
        (
            json!({"count": 5, "sum_ns": 1, "max_ns": 300, "buckets": [[320, 1]]}),
            "count 5",
        ),
        (
            json!({"count": 1, "sum_ns": 1, "max_ns": 300, "buckets": [[321, 1]]}),
            "not a bucket bound",
        ),
        (
            json!({"count": 2, "sum_ns": 1, "max_ns": 300, "buckets": [[352, 1], [320, 1]]}),
            "ascending",
        ),
        (
            json!({"count": 1, "sum_ns": 1, "max_ns": 9000, "buckets": [[320, 1]]}),
            "highest bucket",
        ),
        (json!({"count": "many"}), ""),
    ] {
        let (code, body) = agent
            .call(
                Method::POST,
                "/agent/v1/status",
                Some(with_latency(bad.clone())),
            )
            .await;
        let body = body.to_string();
        assert!(code.is_client_error(), "{bad}: {code} {body}");
        assert!(body.contains("latency.reader"), "{bad}: {body}");
        assert!(body.contains(fault), "{bad}: {body}");
    }
    // So is a malformed window.
    let mut windowed = with_latency(json!({}));
    windowed["recent"] =
        json!({"secs": 300, "latency": {"workers": {"count": 2, "buckets": [[320, 1]]}}});
    let (code, body) = agent
        .call(Method::POST, "/agent/v1/status", Some(windowed.clone()))
        .await;
    assert!(code.is_client_error(), "{code} {body}");
    assert!(
        body.to_string().contains("recent.latency.workers"),
        "{body}"
    );
    let list: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    let me = list.iter().find(|c| c.name == agent.name).expect("listed");
    assert_eq!(me.status.as_ref().unwrap().latency, *l);
    // A well-formed window is kept with the status.
    windowed["recent"] = json!({"secs": 300, "latency": {"workers": {"count": 1, "sum_ns": 300,
        "max_ns": 300, "buckets": [[320, 1]]}}});
    let (code, body) = agent
        .call(Method::POST, "/agent/v1/status", Some(windowed))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let list: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    let me = list.iter().find(|c| c.name == agent.name).expect("listed");
    assert_eq!(me.recent_latency().unwrap().workers.max_ns, 300);
    assert_eq!(
        me.status.as_ref().unwrap().recent.as_ref().unwrap().secs,
        300
    );
    env.server.stop().await;
}
