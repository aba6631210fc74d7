//! Push: streams, changes since a revision, replicas, shutdown.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::ComputerInfo;
use palisade_api::agent::{Changes, StreamMessage, HEARTBEAT_SECS};
use palisade_core::{Approval, Level};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

both_backends!(
    stream_pushes_a_ban,
    ban_reaches_a_stream_on_another_replica,
    changes_since,
    shutdown_ends_streams,
    an_idle_fleet_costs_one_row_write_per_replica,
    a_revocation_the_feed_missed_closes_the_stream_within_an_interval,
    a_forgotten_replica_writes_itself_and_its_connections_again,
    a_computer_holds_at_most_four_streams_on_a_replica
);

async fn hello(stream: &mut StreamReader) -> i64 {
    match stream.next(Duration::from_secs(5)).await {
        Next::Msg(StreamMessage::Hello { revision, config }) => {
            assert_eq!(config.revision, revision);
            revision
        }
        other => panic!("expected Hello, got {other:?}"),
    }
}

async fn connected(env: &Env, name: &str) -> bool {
    let list: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    list.iter()
        .find(|c| c.name == name)
        .expect("listed")
        .connected
}

async fn stream_pushes_a_ban(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let bystander = env.agent("default", "web02").await;
    assert!(!connected(&env, &agent.name).await);
    let mut stream = agent.stream().await;
    let r0 = hello(&mut stream).await;
    assert!(connected(&env, &agent.name).await);

    // A global ban is pushed within a second.
    let h = hash(1);
    let t = Instant::now();
    env.admin.set_state(h, json!({"state": "banned"})).await;
    let c = stream.next_change(Duration::from_secs(1)).await;
    let elapsed = t.elapsed();
    eprintln!("[figure] {backend:?}: ban -> stream push on the same replica: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1));
    assert_eq!(c.hashes, vec![h]);
    assert!(!c.reset && !c.config_changed);
    assert!(c.revision > r0);
    assert_eq!(
        agent.lookup(&[h]).await.results[0].approval.as_str(),
        "banned"
    );

    // A local state on another computer is not pushed to this one; the next
    // relevant change is.
    env.admin
        .set_state(
            hash(2),
            json!({"state": "approved", "computer": bystander.name}),
        )
        .await;
    env.admin
        .set_state(
            hash(3),
            json!({"state": "approved", "computer": agent.name}),
        )
        .await;
    let c = stream.next_change(Duration::from_secs(2)).await;
    assert_eq!(c.hashes, vec![hash(3)]);

    // A level change of its policy is a configuration change.
    let (status, v) = env
        .admin
        .call(
            Method::PUT,
            "/api/v1/policies/default/levels",
            Some(json!({"level": "lockdown"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["levels"]["connected"], "lockdown");
    assert_eq!(v["levels"]["disconnected"], "monitor");
    let c = stream.next_change(Duration::from_secs(2)).await;
    assert!(c.config_changed && c.hashes.is_empty());
    let config: palisade_api::agent::AgentConfig = agent.get_ok("/agent/v1/config").await;
    assert_eq!(config.levels.connected, Level::Lockdown);

    // Moving the computer: configuration changed and cache reset.
    let (status, v) = env
        .admin
        .call(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "quarantine"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = env
        .admin
        .call(
            Method::PUT,
            &format!("/api/v1/computers/{}/policy", agent.name),
            Some(json!({"policy": "quarantine"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["policy"], "quarantine");
    let c = stream.next_change(Duration::from_secs(2)).await;
    assert!(c.config_changed && c.reset);
    // Policy-scoped states now follow the new policy.
    env.admin
        .set_state(hash(4), json!({"state": "banned", "policy": "quarantine"}))
        .await;
    let c = stream.next_change(Duration::from_secs(2)).await;
    assert_eq!(c.hashes, vec![hash(4)]);

    // Revocation closes the stream and the computer is no longer connected.
    let (status, _) = env
        .admin
        .call(
            Method::POST,
            &format!("/api/v1/computers/{}/revoke", agent.name),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    stream.expect_eof(Duration::from_secs(2)).await;
    assert!(!connected(&env, &agent.name).await);
    env.server.stop().await;
}

async fn ban_reaches_a_stream_on_another_replica(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Started together on an empty database: one migration, one CA.
    let (a, b) = tokio::join!(TestServer::start(&db), TestServer::start(&db));
    assert_eq!(a.ca_pem, b.ca_pem, "replicas share the CA");
    let token = palisade_server::bootstrap(&a.db, &name("acme"), &name("alice"))
        .await
        .expect("bootstrap")
        .admin_token
        .expect("token");
    let admin_a = Admin::new(&a, &token);
    let admin_b = Admin::new(&b, &token);
    // Enrolled through A, streaming from B.
    let agent = enroll(&a, &admin_a.enroll_token("default", 1).await, "web01").await;
    let on_b = agent.on(&b);
    let mut stream = on_b.stream().await;
    hello(&mut stream).await;
    let list: Vec<ComputerInfo> = admin_a.get_ok("/api/v1/computers").await;
    assert!(
        list[0].connected,
        "connected is visible through the other replica"
    );

    let mut worst = Duration::ZERO;
    for i in 0..5u64 {
        let h = hash(100 + i);
        let t = Instant::now();
        admin_a.set_state(h, json!({"state": "banned"})).await;
        let c = stream.next_change(Duration::from_secs(1)).await;
        let elapsed = t.elapsed();
        worst = worst.max(elapsed);
        assert_eq!(c.hashes, vec![h]);
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }
    eprintln!(
        "[figure] {backend:?}: ban via replica A -> stream on replica B: worst of 5 {worst:?}"
    );
    // And the other way round: a ban through B reaches a stream on A.
    let mut stream_a = agent.stream().await;
    hello(&mut stream_a).await;
    let h = hash(200);
    let t = Instant::now();
    admin_b.set_state(h, json!({"state": "banned"})).await;
    let c = stream_a.next_change(Duration::from_secs(1)).await;
    assert_eq!(c.hashes, vec![h]);
    eprintln!(
        "[figure] {backend:?}: ban via replica B -> stream on replica A: {:?}",
        t.elapsed()
    );
    // Revocation through A closes the stream on B.
    let (status, _) = admin_a
        .call(
            Method::POST,
            &format!("/api/v1/computers/{}/revoke", agent.name),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    stream.expect_eof(Duration::from_secs(2)).await;
    a.stop().await;
    b.stop().await;
}

async fn changes_since(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;
    let r0 = agent.lookup(&[hash(1)]).await.revision;

    env.admin
        .set_state(hash(1), json!({"state": "banned"}))
        .await;
    env.admin
        .set_state(hash(2), json!({"state": "approved", "policy": "default"}))
        .await;
    env.admin
        .set_state(
            hash(3),
            json!({"state": "approved", "computer": other.name}),
        )
        .await;
    env.admin
        .set_state(hash(1), json!({"state": "approved"}))
        .await;
    let c: Changes = agent.get_ok(&format!("/agent/v1/changes?since={r0}")).await;
    assert_eq!(
        c.hashes,
        vec![hash(1), hash(2)],
        "deduplicated, in order, only relevant"
    );
    assert!(!c.reset && !c.config_changed);
    let r1 = c.revision;
    assert!(r1 >= r0 + 4);

    // Nothing since the latest revision.
    let c: Changes = agent.get_ok(&format!("/agent/v1/changes?since={r1}")).await;
    assert_eq!((c.hashes.len(), c.reset, c.revision), (0, false, r1));
    // A revision from the future (another database?): reset.
    let c: Changes = agent
        .get_ok(&format!("/agent/v1/changes?since={}", r1 + 100))
        .await;
    assert!(c.reset);
    assert_eq!(c.revision, r1);

    palisade_server::set_policy_levels(
        &env.server.db,
        &name("acme"),
        &name("default"),
        palisade_core::Levels {
            connected: Level::Lockdown,
            disconnected: Level::Lockdown,
        },
    )
    .await
    .expect("levels");
    let c: Changes = agent.get_ok(&format!("/agent/v1/changes?since={r1}")).await;
    assert!(c.config_changed && !c.reset);
    let r2 = c.revision;

    // After pruning, an old revision is told to reset; the latest is fine.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pruned = palisade_server::prune_changes(&env.server.db, Duration::ZERO)
        .await
        .expect("prune");
    assert!(pruned >= 5, "pruned {pruned}");
    let c: Changes = agent.get_ok(&format!("/agent/v1/changes?since={r0}")).await;
    assert!(c.reset, "{c:?}");
    let c: Changes = agent.get_ok(&format!("/agent/v1/changes?since={r2}")).await;
    assert!(!c.reset, "{c:?}");
    env.admin
        .set_state(hash(9), json!({"state": "banned"}))
        .await;
    let c: Changes = agent.get_ok(&format!("/agent/v1/changes?since={r2}")).await;
    assert_eq!(c.hashes, vec![hash(9)]);
    assert_eq!(
        agent.lookup(&[hash(9)]).await.results[0].approval.as_str(),
        "banned"
    );
    assert!(matches!(
        agent.lookup(&[hash(2)]).await.results[0].approval,
        Approval::Approved(_)
    ));
    env.server.stop().await;
}

async fn shutdown_ends_streams(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let mut stream = agent.stream().await;
    hello(&mut stream).await;
    // A long poll in flight as well.
    let poll = {
        let client = env.admin.client.clone();
        let url = env.server.url("/api/v1/events?wait_ms=30000");
        let token = env.admin.token.clone();
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Env {
        server,
        admin: _admin,
        db: _db,
    } = env;
    let took = server.stop().await;
    eprintln!(
        "[figure] {backend:?}: graceful shutdown with an open stream and a long poll: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    stream.expect_eof(Duration::from_secs(1)).await;
    let resp = poll.await.expect("poll task").expect("long poll answered");
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Every column of the `computers` rows of `ids` that a server writes on
/// its own (`last_seen_ms`, `connected_until_ms`), in that order.
async fn computer_writes(env: &Env, backend: Backend, ids: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        for col in ["last_seen_ms", "connected_until_ms"] {
            let sql = format!("SELECT COALESCE({col}, 0) FROM computers WHERE id = {id}");
            out.push(query_i64s(backend, &env.db.url, &sql).await[0]);
        }
    }
    out
}

async fn replicas_alive_until(env: &Env, backend: Backend) -> Vec<i64> {
    query_i64s(
        backend,
        &env.db.url,
        "SELECT alive_until_ms FROM replicas ORDER BY id",
    )
    .await
}

async fn an_idle_fleet_costs_one_row_write_per_replica(backend: Backend) {
    let env = Env::new(backend).await;
    let mut agents = Vec::new();
    let mut streams = Vec::new();
    for host in ["web01", "web02", "web03"] {
        let agent = env.agent("default", host).await;
        let mut stream = agent.stream().await;
        hello(&mut stream).await;
        agents.push(agent);
        streams.push(stream);
    }
    let ids: Vec<i64> = agents.iter().map(|a| a.id).collect();
    let rows = computer_writes(&env, backend, &ids).await;
    let alive = replicas_alive_until(&env, backend).await;
    assert_eq!(alive.len(), 1, "one replica");

    // An interval later the replica has pushed its own row ahead; the
    // computers' rows are as they were.
    let within = Duration::from_secs(HEARTBEAT_SECS + 3);
    eventually(within, "the replica's row pushed ahead", || async {
        (replicas_alive_until(&env, backend).await[0] > alive[0]).then_some(())
    })
    .await;
    assert_eq!(
        computer_writes(&env, backend, &ids).await,
        rows,
        "no computer row written while its stream stays open"
    );
    for agent in &agents {
        assert!(connected(&env, &agent.name).await);
    }
    // The agents still get their heartbeats.
    for stream in &mut streams {
        match stream.next(Duration::from_secs(HEARTBEAT_SECS + 2)).await {
            Next::Msg(StreamMessage::Heartbeat { .. }) => {}
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    // A computer with two streams stays connected until the last one closes.
    let first = agents[0].name.clone();
    let mut again = agents[0].stream().await;
    hello(&mut again).await;
    drop(streams.remove(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(connected(&env, &first).await, "its second stream is open");
    drop(again);
    eventually(Duration::from_secs(3), "disconnected", || async {
        (!connected(&env, &first).await).then_some(())
    })
    .await;
    assert!(connected(&env, &agents[1].name).await);

    // A replica that stops takes its computers with it at once.
    let name = agents[1].name.clone();
    let Env { server, admin, db } = env;
    server.stop().await;
    let server = TestServer::start(&db).await;
    let admin = Admin::new(&server, &admin.token);
    let env = Env { server, admin, db };
    assert!(!connected(&env, &name).await);
    drop(streams);
    env.server.stop().await;
}

async fn a_revocation_the_feed_missed_closes_the_stream_within_an_interval(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let bystander = env.agent("default", "web02").await;
    let mut stream = agent.stream().await;
    hello(&mut stream).await;
    let mut other = bystander.stream().await;
    hello(&mut other).await;
    // Revoked behind the server's back: no change is logged, so only the
    // liveness refresh can notice.
    exec_sql(
        backend,
        &env.db.url,
        &format!("UPDATE computers SET revoked = 1 WHERE id = {}", agent.id),
    )
    .await;
    let t = Instant::now();
    stream
        .expect_eof(Duration::from_secs(HEARTBEAT_SECS + 3))
        .await;
    eprintln!(
        "[figure] {backend:?}: unlogged revocation -> stream closed in {:?}",
        t.elapsed()
    );
    // The other computer's stream is untouched.
    match other.next(Duration::from_secs(HEARTBEAT_SECS + 2)).await {
        Next::Msg(StreamMessage::Heartbeat { .. }) => {}
        o => panic!("expected the bystander's heartbeat, got {o:?}"),
    }
    assert!(connected(&env, &bystander.name).await);
    env.server.stop().await;
}

/// Another replica forgets this one (what it does at its start to replicas
/// dead for a day, here done by hand while this one still runs): the next
/// refresh writes the replica's row and its computers' connections again,
/// and the connection it writes still belongs to the open stream, so closing
/// that stream disconnects the computer.
async fn a_forgotten_replica_writes_itself_and_its_connections_again(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let mut stream = agent.stream().await;
    hello(&mut stream).await;
    assert!(connected(&env, &agent.name).await);
    // Connections first: a refresh between the two statements then only
    // pushes the row that goes next, and the one after writes both again.
    exec_sql(backend, &env.db.url, "DELETE FROM connections").await;
    exec_sql(backend, &env.db.url, "DELETE FROM replicas").await;
    let t = Instant::now();
    eventually(
        Duration::from_secs(2 * HEARTBEAT_SECS + 3),
        "the replica and its connection written again",
        || async {
            let replicas = replicas_alive_until(&env, backend).await;
            let conns = query_i64s(
                backend,
                &env.db.url,
                &format!(
                    "SELECT COUNT(*) FROM connections WHERE computer_id = {}",
                    agent.id
                ),
            )
            .await;
            (replicas.len() == 1 && conns[0] == 1).then_some(())
        },
    )
    .await;
    eprintln!(
        "[figure] {backend:?}: forgotten replica written again in {:?}",
        t.elapsed()
    );
    assert!(connected(&env, &agent.name).await);
    match stream.next(Duration::from_secs(HEARTBEAT_SECS + 2)).await {
        Next::Msg(StreamMessage::Heartbeat { .. }) => {}
        o => panic!("expected a heartbeat, got {o:?}"),
    }
    drop(stream);
    eventually(Duration::from_secs(3), "disconnected", || async {
        (!connected(&env, &agent.name).await).then_some(())
    })
    .await;
    let conns = query_i64s(backend, &env.db.url, "SELECT COUNT(*) FROM connections").await;
    assert_eq!(
        conns,
        vec![0],
        "the rewritten connection was the stream's own"
    );
    env.server.stop().await;
}

/// A computer may hold four streams on a replica; a fifth closes the
/// oldest (the newest win: an agent whose old connections died unseen is
/// never locked out). The others keep working, and once they close the
/// computer is disconnected: the displaced stream was taken off already.
async fn a_computer_holds_at_most_four_streams_on_a_replica(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut s = agent.stream().await;
        hello(&mut s).await;
        streams.push(s);
    }
    let mut fifth = agent.stream().await;
    hello(&mut fifth).await;
    let mut oldest = streams.remove(0);
    oldest.expect_eof(Duration::from_secs(2)).await;
    streams.push(fifth);
    env.admin
        .set_state(hash(1), json!({"state": "banned"}))
        .await;
    for s in &mut streams {
        assert_eq!(
            s.next_change(Duration::from_secs(2)).await.hashes,
            vec![hash(1)]
        );
    }
    assert!(connected(&env, &agent.name).await);
    drop(streams);
    eventually(Duration::from_secs(3), "disconnected", || async {
        (!connected(&env, &agent.name).await).then_some(())
    })
    .await;
    env.server.stop().await;
}

/// The database load of an idle fleet on one replica (PostgreSQL's own
/// transaction counter for the test database). A measurement, not a check:
/// `cargo test -p palisade-server --test it -- --ignored idle_fleet --nocapture`
/// after `source scripts/postgres.sh`; `PALISADE_FLEET_AGENTS` (default 200)
/// and `PALISADE_FLEET_SECS` (default 30) size it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about a minute); run by hand"]
async fn idle_fleet_database_load() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = var("PALISADE_FLEET_AGENTS", 200) as usize;
    let secs = var("PALISADE_FLEET_SECS", 30);
    let backend = Backend::Postgres;
    let env = Env::new(backend).await;
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let agent = env.agent("default", &format!("host{i:05}")).await;
        let mut stream = agent.stream().await;
        hello(&mut stream).await;
        streams.push(stream);
    }
    let db_name = env
        .db
        .url
        .rsplit('/')
        .next()
        .expect("name")
        .split('?')
        .next()
        .expect("name")
        .to_owned();
    let commits = |sql: String| {
        let url = env.db.url.clone();
        async move { query_i64s(backend, &url, &sql).await[0] }
    };
    let sql =
        format!("SELECT (xact_commit)::bigint FROM pg_stat_database WHERE datname = '{db_name}'");
    let updates = "SELECT (n_tup_upd)::bigint FROM pg_stat_user_tables WHERE relname = 'computers'"
        .to_owned();
    // Past the opens' writes, and let the statistics catch up.
    tokio::time::sleep(Duration::from_secs(HEARTBEAT_SECS + 2)).await;
    let (c0, u0) = (commits(sql.clone()).await, commits(updates.clone()).await);
    let t = Instant::now();
    // Keep the streams read so none is dropped as too slow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        for s in &mut streams {
            let _ = s.next(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Statistics reach the view within about a second of a backend going idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c1, u1) = (commits(sql).await, commits(updates).await);
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "[figure] idle fleet of {n} agents on one replica over {s:.0} s: \
         {:.1} committed transactions/s, {:.1} computer row updates/s",
        (c1 - c0) as f64 / s,
        (u1 - u0) as f64 / s
    );
    drop(streams);
    env.server.stop().await;
}
