//! Event rules: triggers (events, files seen for the first time) and
//! actions (file states, moving computers, webhooks, syslog).
use crate::both_backends;
use crate::support::*;
use palisade_api::access::AuditPage;
use palisade_api::admin::{ComputerInfo, EventPage, FileDetails, ReputationImported};
use palisade_api::agent::EventAck;
use palisade_core::{Approval, ApprovalSource, FileState, ScopeKind, Sha256};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

both_backends!(
    event_rule_bans_low_trust_files,
    file_seen_rule,
    webhook_and_syslog_alerts,
    alerts_to_private_addresses_are_refused_by_default,
    event_rule_moves_computer,
    flooding_organization_does_not_starve_another,
    events_stored_before_start_fire_their_rules,
    event_rules_never_overwrite_an_admin_or_lift_a_ban
);

async fn ratings(env: &Env, entries: &[(Sha256, u8)]) {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(h, t)| json!({"sha256": h, "trust": t}))
        .collect();
    let _: ReputationImported = env
        .admin
        .post_ok(
            "/api/v1/reputation",
            json!({"source": "test", "entries": entries}),
        )
        .await;
}

/// Wait until `sha` is banned on `agent`'s computer (a rule fired).
async fn banned_locally(agent: &Agent, sha: Sha256, within: Duration, what: &str) {
    let banned = Approval::Banned(ApprovalSource {
        scope: ScopeKind::Local,
    });
    eventually(within, what, || async {
        (agent.lookup(&[sha]).await.results[0].approval == banned).then_some(())
    })
    .await;
}

async fn upload(agent: &Agent, events: Vec<Value>) -> u64 {
    let ack: EventAck = agent
        .post_ok("/agent/v1/events", json!({ "events": events }))
        .await;
    ack.stored
}

async fn event_rule_bans_low_trust_files(backend: Backend) {
    let env = Env::new(backend).await;
    let web = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;
    let (bad, good, unrated) = (hash(1), hash(2), hash(3));
    ratings(&env, &[(bad, 1), (good, 9)]).await;
    let rule = env
        .admin
        .create_rule(json!({"name": "ban known bad", "body": {"kind": "event",
            "filter": {"kinds": ["blocked", "would_block"], "max_trust": 2},
            "actions": [{"do": "set_global_state", "state": "banned"}]}}))
        .await;
    let (mut other_s, _) = other.stream_hello().await;

    let t = Instant::now();
    let stored = upload(
        &web,
        vec![
            event_json(1, "would_block", bad, "/tmp/miner"),
            event_json(2, "would_block", good, "/usr/bin/good"),
            event_json(3, "would_block", unrated, "/usr/bin/unrated"),
            event_json(4, "blocked", bad, "/tmp/miner"),
        ],
    )
    .await;
    assert_eq!(stored, 4);
    // Banned for all computers, by the rule, and pushed.
    let c = other_s.next_change(Duration::from_secs(2)).await;
    eprintln!(
        "[figure] {backend:?}: event with a low-trust file -> global ban on another computer's stream: {:?}",
        t.elapsed()
    );
    assert_eq!(c.hashes, vec![bad]);
    let answer = other.lookup(&[bad, good, unrated]).await;
    let got: Vec<Approval> = answer.results.iter().map(|r| r.approval).collect();
    assert_eq!(
        got,
        [
            Approval::Banned(ApprovalSource {
                scope: ScopeKind::Global
            }),
            Approval::Unknown,
            Approval::Unknown
        ]
    );
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{bad}")).await;
    assert_eq!(d.states.len(), 1);
    assert_eq!(d.states[0].state, FileState::Banned);
    assert_eq!(d.states[0].updated_by, format!("event-rule:{}", rule.id));
    // Applied once, and the actions created no events.
    other_s.expect_quiet(Duration::from_millis(300)).await;
    let page: EventPage = env.admin.get_ok("/api/v1/events").await;
    assert_eq!(page.events.len(), 4);
    env.server.stop().await;
}

async fn file_seen_rule(backend: Backend) {
    let env = Env::new(backend).await;
    let web = env.agent("default", "web01").await;
    let db = env.agent("default", "db01").await;
    let rule = env
        .admin
        .create_rule(
            json!({"name": "nothing from /tmp", "body": {"kind": "event",
            "filter": {"trigger": "file_seen", "path": "/tmp/**"},
            "actions": [{"do": "set_local_state", "state": "banned"}]}}),
        )
        .await;
    // An event rule for events does not fire on sightings.
    env.admin
        .create_rule(json!({"name": "other trigger", "body": {"kind": "event",
            "filter": {"path": "/usr/**"},
            "actions": [{"do": "set_global_state", "state": "banned"}]}}))
        .await;
    let banned_local = Approval::Banned(ApprovalSource {
        scope: ScopeKind::Local,
    });
    let (tmp, usr, inv) = (hash(1), hash(2), hash(3));
    web.lookup_items(vec![
        json!({"sha256": tmp, "path": "/tmp/x", "operation": "execute"}),
        json!({"sha256": usr, "path": "/usr/bin/y", "operation": "execute"}),
    ])
    .await;
    let t = Instant::now();
    banned_locally(&web, tmp, Duration::from_secs(3), "/tmp file banned").await;
    eprintln!(
        "[figure] {backend:?}: first sighting (lookup) -> local ban by a file_seen rule: {:?}",
        t.elapsed()
    );
    assert_eq!(
        web.lookup(&[usr]).await.results[0].approval,
        Approval::Unknown
    );
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{tmp}")).await;
    assert_eq!(d.states[0].updated_by, format!("event-rule:{}", rule.id));
    assert_eq!(
        d.states[0].scope,
        palisade_api::admin::ScopeRef::Computer("web01".into())
    );
    // The same file first seen on another computer (inventory): banned there too.
    let _: Value = db
        .post_ok(
            "/agent/v1/inventory",
            json!({"approve_locally": false, "files": [
                {"sha256": tmp, "path": "/tmp/x", "size": 1, "kind": {"kind": "elf", "shared": false}},
                {"sha256": inv, "path": "/tmp/inv", "size": 1, "kind": {"kind": "elf", "shared": false}}
            ]}),
        )
        .await;
    eventually(
        Duration::from_secs(3),
        "inventory sightings banned on db01",
        || async {
            let r = db.lookup(&[tmp, inv]).await.results;
            r.iter().all(|r| r.approval == banned_local).then_some(())
        },
    )
    .await;
    assert_eq!(
        web.lookup(&[inv]).await.results[0].approval,
        Approval::Unknown
    );
    env.server.stop().await;
}

/// A minimal HTTP/1.1 server: each request's body goes to the channel;
/// with `hang`, it never answers.
async fn http_sink(hang: bool) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    buf.drain(..end + 4 + len);
                    let _ = tx.send(body);
                    if hang {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (port, rx)
}

async fn webhook_and_syslog_alerts(backend: Backend) {
    // The receivers are on loopback.
    let env = Env::new_with(backend, |c| c.alerts_allow_private_addresses = true).await;
    env.admin.create_policy("servers", "lockdown").await;
    let web = env.agent("servers", "web01").await;
    let desk = env.agent("default", "desk01").await;
    let (hook_port, mut hooks) = http_sink(false).await;
    let (hang_port, mut hung) = http_sink(true).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let udp_port = udp.local_addr().expect("addr").port();
    let rule = env
        .admin
        .create_rule(
            json!({"name": "blocks on servers", "body": {"kind": "event",
            "filter": {"kinds": ["blocked"], "policies": ["servers"]},
            "actions": [
                {"do": "webhook", "url": format!("http://127.0.0.1:{hang_port}/hang")},
                {"do": "webhook", "url": format!("http://127.0.0.1:{hook_port}/hook")},
                {"do": "syslog", "address": format!("127.0.0.1:{udp_port}")}
            ]}}),
        )
        .await;
    ratings(&env, &[(hash(1), 3)]).await;

    let t = Instant::now();
    upload(&web, vec![event_json(1, "blocked", hash(1), "/tmp/miner")]).await;
    let body = tokio::time::timeout(Duration::from_secs(3), hooks.recv())
        .await
        .expect("webhook within 3 s")
        .expect("webhook body");
    eprintln!(
        "[figure] {backend:?}: blocked event -> webhook delivered: {:?}",
        t.elapsed()
    );
    let v: Value = serde_json::from_str(&body).expect("webhook JSON");
    assert_eq!(v["rule"]["id"], json!(rule.id.0));
    assert_eq!(v["rule"]["name"], "blocks on servers");
    assert_eq!(v["trigger"], "event");
    assert_eq!(v["organization"], "acme");
    assert_eq!(v["computer"], "web01");
    assert_eq!(v["policy"], "servers");
    assert_eq!(v["sha256"], json!(hash(1)));
    assert_eq!(v["path"], "/tmp/miner");
    assert_eq!(v["trust"], 3);
    assert_eq!(v["event"]["kind"], "blocked");
    assert!(v["event_id"].as_i64().is_some());

    let mut datagram = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(3), udp.recv(&mut datagram))
        .await
        .expect("syslog within 3 s")
        .expect("recv");
    let line = String::from_utf8_lossy(&datagram[..n]).into_owned();
    // RFC 5424: <authpriv.warning>1 TIMESTAMP HOST palisade PROCID event-rule - MSG
    assert!(line.starts_with("<84>1 "), "{line}");
    let fields: Vec<&str> = line.splitn(8, ' ').collect();
    assert!(
        fields[1].ends_with('Z') && fields[1].contains('T'),
        "{line}"
    );
    assert_eq!(
        (fields[3], fields[5], fields[6]),
        ("palisade", "event-rule", "-")
    );
    let msg: Value = serde_json::from_str(fields[7]).expect("syslog message is the JSON");
    assert_eq!(msg["path"], "/tmp/miner");

    // The hung receiver holds its delivery; ingest does not wait for it.
    tokio::time::timeout(Duration::from_secs(3), hung.recv())
        .await
        .expect("hung receiver got its request");
    let t = Instant::now();
    for seq in 2..12u64 {
        upload(&web, vec![event_json(seq, "blocked", hash(seq), "/tmp/x")]).await;
    }
    let ingest = t.elapsed();
    eprintln!("[figure] {backend:?}: 10 event uploads while a webhook receiver hangs: {ingest:?}");
    assert!(ingest < Duration::from_secs(2), "{ingest:?}");
    for _ in 2..12 {
        tokio::time::timeout(Duration::from_secs(3), hooks.recv())
            .await
            .expect("other webhooks keep flowing");
    }

    // Another policy's blocks and other kinds: no alert.
    upload(&desk, vec![event_json(1, "blocked", hash(50), "/tmp/y")]).await;
    upload(
        &web,
        vec![event_json(20, "would_block", hash(51), "/tmp/z")],
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), hooks.recv())
            .await
            .is_err(),
        "no alert expected"
    );
    env.server.stop().await;
}

/// With the default configuration, alerts reach public addresses only: a
/// rule naming a private address or the server's own syslog is refused when
/// saved, and a name that resolves to loopback is refused when the alert is
/// sent (before: delivered, so an admin who may create rules could make the
/// server call its own network, or a cloud metadata service).
async fn alerts_to_private_addresses_are_refused_by_default(backend: Backend) {
    let env = Env::new(backend).await;
    let web = env.agent("default", "web01").await;
    let (hook_port, mut hooks) = http_sink(false).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let udp_port = udp.local_addr().expect("addr").port();
    for (action, field) in [
        (
            json!({"do": "webhook", "url": format!("http://127.0.0.1:{hook_port}/hook")}),
            "body.actions[0].url",
        ),
        (
            json!({"do": "webhook", "url": "http://169.254.169.254/latest/meta-data/"}),
            "body.actions[0].url",
        ),
        (
            json!({"do": "webhook", "url": format!("http://[::ffff:127.0.0.1]:{hook_port}/hook")}),
            "body.actions[0].url",
        ),
        (
            json!({"do": "syslog", "address": format!("127.0.0.1:{udp_port}")}),
            "body.actions[0].address",
        ),
        (
            json!({"do": "syslog", "address": "[fd00::1]:514"}),
            "body.actions[0].address",
        ),
        (json!({"do": "syslog"}), "body.actions[0].address"),
    ] {
        let e = expect_error(
            env.admin
                .call(
                    Method::POST,
                    "/api/v1/rules",
                    Some(json!({"name": "x", "body": {"kind": "event", "filter": {},
                        "actions": [action.clone()]}})),
                )
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        assert_eq!(e.field.as_deref(), Some(field), "{action}: {}", e.error);
        assert!(
            e.error.contains("alerts_"),
            "names the setting: {}",
            e.error
        );
    }
    // A name is checked as the alert is sent, on what it resolves to then.
    // The local ban shows the rule fired; its alerts come after it.
    env.admin
        .create_rule(json!({"name": "to localhost", "body": {"kind": "event",
        "filter": {"kinds": ["blocked"]},
        "actions": [
            {"do": "set_local_state", "state": "banned"},
            {"do": "webhook", "url": format!("http://localhost:{hook_port}/hook?token=SECRET")},
            {"do": "syslog", "address": format!("localhost:{udp_port}")}
        ]}}))
        .await;
    upload(&web, vec![event_json(1, "blocked", hash(1), "/tmp/x")]).await;
    let banned = Approval::Banned(ApprovalSource {
        scope: ScopeKind::Local,
    });
    eventually(Duration::from_secs(3), "the rule fired", || async {
        (web.lookup(&[hash(1)]).await.results[0].approval == banned).then_some(())
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), hooks.recv())
            .await
            .is_err(),
        "a webhook to loopback must not be delivered"
    );
    let mut datagram = vec![0u8; 65536];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), udp.recv(&mut datagram))
            .await
            .is_err(),
        "a syslog datagram to loopback must not be sent"
    );
    env.server.stop().await;
}

async fn event_rule_moves_computer(backend: Backend) {
    let env = Env::new(backend).await;
    env.admin.create_policy("quarantine", "lockdown").await;
    let web = env.agent("default", "web01").await;
    ratings(&env, &[(hash(1), 0)]).await;
    env.admin
        .create_rule(
            json!({"name": "quarantine miners", "body": {"kind": "event",
            "filter": {"kinds": ["blocked", "would_block"], "max_trust": 1, "path": "/tmp/**"},
            "actions": [{"do": "move_computer", "policy": "quarantine"}]}}),
        )
        .await;
    let (mut stream, config) = web.stream_hello().await;
    assert_eq!(config.policy, "default");
    let t = Instant::now();
    upload(
        &web,
        vec![
            event_json(1, "would_block", hash(1), "/tmp/miner"),
            event_json(2, "would_block", hash(1), "/tmp/miner"),
        ],
    )
    .await;
    let c = stream.next_change(Duration::from_secs(2)).await;
    eprintln!(
        "[figure] {backend:?}: event -> computer moved, agent told: {:?}",
        t.elapsed()
    );
    assert!(c.config_changed && c.reset, "{c:?}");
    let config = web.config().await;
    assert_eq!(config.policy, "quarantine");
    let list: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    assert_eq!(list[0].policy, "quarantine");
    env.server.stop().await;
}

/// One organization's flood of events does not keep another's rule from
/// firing (before: one in-memory queue of 1024 batches for every
/// organization; a trigger that did not fit was dropped, so the other
/// organization's alert never fired).
async fn flooding_organization_does_not_starve_another(backend: Backend) {
    let env = Env::new(backend).await;
    let bob = env.org_admin("globex", "bob").await;
    let rule = json!({"name": "ban blocked files here", "body": {"kind": "event",
        "filter": {"kinds": ["blocked"]},
        "actions": [{"do": "set_local_state", "state": "banned"}]}});
    env.admin.create_rule(rule.clone()).await;
    bob.create_rule(rule).await;
    let victim = enroll(&env.server, &bob.enroll_token("default", 1).await, "g01").await;
    let mut flooders = Vec::new();
    for i in 0..4 {
        flooders.push(env.agent("default", &format!("flood{i}")).await);
    }
    // Each upload matches the rule with distinct files: evaluating it costs
    // far more than storing it, so the evaluation falls far behind.
    const UPLOADS: u64 = 320;
    const PER_UPLOAD: u64 = 20;
    let t = Instant::now();
    let floods = flooders.into_iter().enumerate().map(|(i, agent)| {
        tokio::spawn(async move {
            for u in 0..UPLOADS {
                let events = (0..PER_UPLOAD)
                    .map(|k| {
                        let seq = u * PER_UPLOAD + k + 1;
                        let h = hash(1_000_000 * (i as u64 + 1) + seq);
                        event_json(seq, "blocked", h, "/tmp/flood")
                    })
                    .collect();
                assert_eq!(upload(&agent, events).await, PER_UPLOAD);
            }
        })
    });
    for f in floods.collect::<Vec<_>>() {
        f.await.expect("flood task");
    }
    eprintln!(
        "[figure] {backend:?}: {} uploads of {PER_UPLOAD} events flooded in {:?}",
        4 * UPLOADS,
        t.elapsed()
    );
    let target = hash(42);
    assert_eq!(
        upload(&victim, vec![event_json(1, "blocked", target, "/tmp/x")]).await,
        1
    );
    let t = Instant::now();
    let within = Duration::from_secs(20);
    banned_locally(&victim, target, within, "the other org's rule fired").await;
    eprintln!(
        "[figure] {backend:?}: other organization's event -> rule fired during the flood's backlog: {:?}",
        t.elapsed()
    );
    env.server.stop().await;
}

/// Events stored but not evaluated when the server stopped (a crash between
/// commit and evaluation) fire their rules once it is back (before: the
/// triggers lived in the stopped replica's memory).
async fn events_stored_before_start_fire_their_rules(backend: Backend) {
    let Env { server, admin, db } = Env::new(backend).await;
    let web = {
        let token = admin.enroll_token("default", 1).await;
        enroll(&server, &token, "web01").await
    };
    admin
        .create_rule(
            json!({"name": "ban blocked files", "body": {"kind": "event",
            "filter": {"kinds": ["blocked"]},
            "actions": [{"do": "set_local_state", "state": "banned"}]}}),
        )
        .await;
    // Stored, and no match.
    assert_eq!(
        upload(&web, vec![event_json(1, "would_block", hash(1), "/tmp/x")]).await,
        1
    );
    server.stop().await;
    // Stored after it (as the stopped replica would have), not evaluated.
    exec_sql(
        backend,
        &db.url,
        "INSERT INTO events (id, org_id, computer_id, seq, received_ms, time_ms, kind, sha256, \
           path, event_json) \
         SELECT id + 100, org_id, computer_id, seq + 100, received_ms, time_ms, 'blocked', \
           sha256, path, REPLACE(event_json, '\"kind\":\"would_block\"', '\"kind\":\"blocked\"') \
         FROM events",
    )
    .await;
    exec_sql(
        backend,
        &db.url,
        "UPDATE counters SET value = value + 100 WHERE name = 'events'",
    )
    .await;
    let server = TestServer::start(&db).await;
    banned_locally(
        &web.on(&server),
        hash(1),
        Duration::from_secs(5),
        "the stored event fired its rule after the start",
    )
    .await;
    server.stop().await;
}

/// The global state of `sha`: (state, set by), if any.
async fn global_state(env: &Env, sha: Sha256) -> Option<(FileState, String)> {
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{sha}")).await;
    d.states
        .iter()
        .find(|s| s.scope == palisade_api::admin::ScopeRef::Global)
        .map(|s| (s.state, s.updated_by.clone()))
}

/// Event rules act on what agents report: such a report must not replace
/// what an admin decided (an agent could otherwise turn an admin's ban
/// into an approval), and no rule lifts a ban, an event rule's included.
async fn event_rules_never_overwrite_an_admin_or_lift_a_ban(backend: Backend) {
    let env = Env::new(backend).await;
    let web = env.agent("default", "web01").await;
    let approve = env
        .admin
        .create_rule(
            json!({"name": "approve what ran from /opt", "body": {"kind": "event",
            "filter": {"kinds": ["would_block"], "path": "/opt/**"},
            "actions": [{"do": "set_global_state", "state": "approved"}]}}),
        )
        .await;
    let ban = env
        .admin
        .create_rule(
            json!({"name": "ban what ran from /tmp", "body": {"kind": "event",
            "filter": {"kinds": ["would_block"], "path": "/tmp/**"},
            "actions": [{"do": "set_global_state", "state": "banned"}]}}),
        )
        .await;
    let (admin_banned, admin_approved, fresh) = (hash(1), hash(2), hash(3));
    env.admin
        .set_state(admin_banned, json!({"state": "banned"}))
        .await;
    env.admin
        .set_state(admin_approved, json!({"state": "approved"}))
        .await;
    let admin = global_state(&env, admin_banned).await.unwrap().1;
    assert!(!admin.starts_with("event-rule:"), "{admin}");

    // The admin's states stand; an unset file is approved by the rule.
    upload(
        &web,
        vec![
            event_json(1, "would_block", admin_banned, "/opt/x"),
            event_json(2, "would_block", admin_approved, "/tmp/y"),
            event_json(3, "would_block", fresh, "/opt/z"),
        ],
    )
    .await;
    let by_approve = format!("event-rule:{}", approve.id);
    eventually(Duration::from_secs(5), "the rule approves", || async {
        (global_state(&env, fresh).await == Some((FileState::Approved, by_approve.clone())))
            .then_some(())
    })
    .await;
    assert_eq!(
        global_state(&env, admin_banned).await,
        Some((FileState::Banned, admin.clone()))
    );
    assert_eq!(
        global_state(&env, admin_approved).await,
        Some((FileState::Approved, admin.clone()))
    );

    // A rule's approval gives way to a rule's ban; no rule lifts it.
    let by_ban = format!("event-rule:{}", ban.id);
    upload(&web, vec![event_json(4, "would_block", fresh, "/tmp/z")]).await;
    eventually(Duration::from_secs(5), "the rule bans", || async {
        (global_state(&env, fresh).await == Some((FileState::Banned, by_ban.clone()))).then_some(())
    })
    .await;
    let other = hash(4);
    upload(
        &web,
        vec![
            event_json(5, "would_block", fresh, "/opt/z"),
            event_json(6, "would_block", other, "/opt/w"),
        ],
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the later event is acted on",
        || async { global_state(&env, other).await.map(|_| ()) },
    )
    .await;
    assert_eq!(
        global_state(&env, fresh).await,
        Some((FileState::Banned, by_ban.clone()))
    );
    // Each change a rule made is audited, naming the rule and the
    // computer whose report set it off; what it left alone is not.
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let by_rules: Vec<(&str, &str, Option<&Value>, Option<&Value>)> = page
        .records
        .iter()
        .filter(|r| r.actor.starts_with("event-rule:"))
        .map(|r| {
            assert_eq!(r.action, "EVENT-RULE set_global_state");
            assert!(r.source.contains("web01"), "{r:?}");
            (
                r.actor.as_str(),
                r.object.as_str(),
                r.before.as_ref(),
                r.after.as_ref(),
            )
        })
        .collect();
    let (fresh_obj, other_obj) = (format!("file {fresh}"), format!("file {other}"));
    let approved = json!({"state": "approved", "scope": "global", "computer": null});
    let banned = json!({"state": "banned", "scope": "global", "computer": null});
    let was_approved = json!({"state": "approved", "scope": "global"});
    assert_eq!(
        by_rules,
        vec![
            (
                by_approve.as_str(),
                fresh_obj.as_str(),
                None,
                Some(&approved)
            ),
            (
                by_ban.as_str(),
                fresh_obj.as_str(),
                Some(&was_approved),
                Some(&banned)
            ),
            (
                by_approve.as_str(),
                other_obj.as_str(),
                None,
                Some(&approved)
            ),
        ]
    );
    env.server.stop().await;
}
