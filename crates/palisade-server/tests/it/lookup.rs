//! Lookups: precedence of states across scopes, and latency.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::FileDetails;
use palisade_core::rules::DecidedBy;
use palisade_core::{Approval, ApprovalSource, FileState, ScopeKind, Sha256};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(lookup_precedence, lookup_latency);

#[derive(Debug, Clone, Copy, PartialEq)]
enum S {
    None,
    Approved,
    Banned,
}

/// The rule, stated independently of palisade_core::resolve: a ban at any
/// applicable scope wins, naming the most specific banning scope; then an
/// approval, naming the most specific approving scope; else unknown.
fn expected(global: S, policy: S, local: S) -> Approval {
    let scopes = [
        (local, ScopeKind::Local),
        (policy, ScopeKind::Policy),
        (global, ScopeKind::Global),
    ];
    if let Some((_, scope)) = scopes.iter().find(|(s, _)| *s == S::Banned) {
        return Approval::Banned(ApprovalSource { scope: *scope });
    }
    if let Some((_, scope)) = scopes.iter().find(|(s, _)| *s == S::Approved) {
        return Approval::Approved(ApprovalSource { scope: *scope });
    }
    Approval::Unknown
}

fn state_body(s: S, scope: Value) -> Option<Value> {
    let state = match s {
        S::None => return None,
        S::Approved => "approved",
        S::Banned => "banned",
    };
    let mut body = json!({ "state": state });
    if let (Some(o), Some(extra)) = (body.as_object_mut(), scope.as_object()) {
        o.extend(extra.clone());
    }
    Some(body)
}

async fn lookup_precedence(backend: Backend) {
    let env = Env::new(backend).await;
    let (status, v) = env
        .admin
        .call(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "servers", "level": "lockdown"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{v}");
    let me = env.agent("default", "web01").await;
    let neighbour = env.agent("default", "web02").await;
    let elsewhere = env.agent("servers", "db01").await;

    let all = [S::None, S::Approved, S::Banned];
    let mut cases: Vec<(Sha256, Approval)> = Vec::new();
    let mut n = 0u64;
    for g in all {
        for p in all {
            for l in all {
                n += 1;
                let h = hash(n);
                let scopes = [
                    (g, json!({})),
                    (p, json!({"policy": "default"})),
                    (l, json!({"computer": me.name})),
                ];
                for (s, scope) in scopes {
                    if let Some(body) = state_body(s, scope) {
                        env.admin.set_state(h, body).await;
                    }
                }
                // Noise that must not apply to `me`: a ban in another policy,
                // a ban on another computer of the same policy.
                let noise = if n.is_multiple_of(2) {
                    json!({"state": "banned", "policy": "servers"})
                } else {
                    json!({"state": "banned", "computer": neighbour.name})
                };
                env.admin.set_state(h, noise).await;
                cases.push((h, expected(g, p, l)));
            }
        }
    }
    let hashes: Vec<Sha256> = cases.iter().map(|c| c.0).collect();
    let answer = me.lookup(&hashes).await;
    assert!(answer.revision > 0);
    assert_eq!(answer.results.len(), cases.len());
    for ((h, want), got) in cases.iter().zip(&answer.results) {
        assert_eq!(got.sha256, *h);
        assert_eq!(got.approval, *want, "hash #{}", h.short());
    }

    // The admin view explains the same answer for every computer.
    for (h, want) in cases.iter().take(27).step_by(4) {
        let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{h}")).await;
        let mine = d
            .effective
            .iter()
            .find(|e| e.computer == me.name)
            .expect("effective entry");
        assert_eq!(mine.approval, *want);
        // Explained by the agents' engine: the deciding state, then what
        // the level (monitor) makes of it.
        let decided_by = match want {
            Approval::Approved(s) => DecidedBy::FileState {
                state: FileState::Approved,
                scope: s.scope,
            },
            Approval::Banned(s) => DecidedBy::FileState {
                state: FileState::Banned,
                scope: s.scope,
            },
            Approval::Unknown => DecidedBy::Nothing,
        };
        let allowed = if matches!(want, Approval::Approved(_)) {
            "allowed at level monitor"
        } else {
            "allowed only because the level is monitor"
        };
        assert!(
            mine.explanation
                .starts_with(&format!("{}: {allowed}", decided_by.explain())),
            "{}",
            mine.explanation
        );
        assert_eq!(d.effective.len(), 3);
        assert!(!d.states.is_empty());
    }

    // A ban at the computer's policy beats a local and a global approval;
    // the same file is approved for a computer of another policy.
    let h = hash(1000);
    env.admin.set_state(h, json!({"state": "approved"})).await;
    env.admin
        .set_state(h, json!({"state": "approved", "computer": me.name}))
        .await;
    env.admin
        .set_state(h, json!({"state": "banned", "policy": "default"}))
        .await;
    assert_eq!(
        me.lookup(&[h]).await.results[0].approval,
        Approval::Banned(ApprovalSource {
            scope: ScopeKind::Policy
        })
    );
    assert_eq!(
        elsewhere.lookup(&[h]).await.results[0].approval,
        Approval::Approved(ApprovalSource {
            scope: ScopeKind::Global
        })
    );
    // `unapproved` removes a state.
    env.admin
        .set_state(h, json!({"state": "unapproved", "policy": "default"}))
        .await;
    assert_eq!(
        me.lookup(&[h]).await.results[0].approval,
        Approval::Approved(ApprovalSource {
            scope: ScopeKind::Local
        })
    );
    // Duplicates in a batch are answered in order.
    let r = me.lookup(&[h, hash(999_999), h]).await;
    assert_eq!(r.results.len(), 3);
    assert_eq!(r.results[0], r.results[2]);
    assert_eq!(r.results[1].approval, Approval::Unknown);
    env.server.stop().await;
}

async fn lookup_latency(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    // Some states among the hashes so the query finds rows.
    for i in 0..20u64 {
        let state = if i % 2 == 0 { "approved" } else { "banned" };
        env.admin
            .set_state(hash(i * 5), json!({ "state": state }))
            .await;
    }
    let hashes: Vec<Sha256> = (0..100u64).map(hash).collect();
    let files: Vec<Value> = hashes
        .iter()
        .map(|h| {
            json!({
                "sha256": h,
                "path": format!("/usr/bin/tool-{}", h.short()),
                "operation": "execute",
                "process": {"pid": 42, "uid": 1000, "euid": 1000, "loginuid": 1000,
                            "sessionid": 3, "exe": {"path": "/usr/bin/bash", "sha256": null},
                            "ancestors": []}
            })
        })
        .collect();
    let body = json!({ "files": files });
    for _ in 0..5 {
        let _: palisade_api::agent::LookupResponse =
            agent.post_ok("/agent/v1/lookup", body.clone()).await;
    }
    let mut times = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let r: palisade_api::agent::LookupResponse =
            agent.post_ok("/agent/v1/lookup", body.clone()).await;
        times.push(t.elapsed());
        assert_eq!(r.results.len(), 100);
    }
    let (median, p95) = percentiles(times);
    eprintln!(
        "[figure] {backend:?}: lookup of a 100-hash batch over TLS: median {median} us, p95 {p95} us"
    );
    assert!(median < 50_000, "lookup too slow: median {median} us");

    // The catalog is written off the response path: it shows up shortly after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d: FileDetails = env
            .admin
            .get_ok(&format!("/api/v1/files/{}", hashes[7]))
            .await;
        if let Some(i) = d.instances.first() {
            assert_eq!(i.computer, agent.name);
            assert!(i.path.starts_with("/usr/bin/tool-"));
            assert!(d.first_seen_ms.is_some());
            if i.count == 45 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "catalog never recorded the lookup"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.server.stop().await;
}

/// A transaction on `env`'s database holding the `counters` table locked
/// (PostgreSQL only: a plain `SELECT` of the revision waits for the lock).
async fn lock_counters(env: &Env) -> sqlx::PgConnection {
    use sqlx::{Connection, Executor};
    let mut c = sqlx::PgConnection::connect(&env.db.url)
        .await
        .expect("postgres");
    c.execute("BEGIN; LOCK TABLE counters IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    c
}

/// Once the server waits for `locked`'s lock (a request has read its
/// computer, and the computer's policy, by then), move computer `web01` to
/// policy `servers` in that transaction as the server would (policy,
/// revision, change row) and commit. So the request read the computer
/// before the move and the revision after it: the interleaving a move made
/// during a request can fall into.
async fn move_while_the_revision_waits(env: &Env, mut locked: sqlx::PgConnection) {
    use sqlx::{Connection, Executor};
    eventually(
        Duration::from_secs(10),
        "the server waits for the lock",
        || async {
            let waiting = query_i64s(
                Backend::Postgres,
                &env.db.url,
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND datname = current_database()",
            )
            .await;
            (waiting[0] > 0).then_some(())
        },
    )
    .await;
    locked
        .execute(
            "UPDATE computers SET policy_id = (SELECT id FROM policies WHERE name = 'servers') \
               WHERE name = 'web01'; \
             UPDATE counters SET value = value + 1 WHERE name = 'revision'; \
             INSERT INTO changes (id, org_id, kind, sha256, policy_id, computer_id, created_ms) \
               SELECT (SELECT value FROM counters WHERE name = 'revision'), org_id, 'computer', \
                      NULL, NULL, id, 0 FROM computers WHERE name = 'web01'; \
             COMMIT",
        )
        .await
        .expect("move");
    locked.close().await.ok();
}

/// Regression (PostgreSQL only; SQLite readers never wait for a writer, so
/// the interleaving cannot be made there): a lookup read the computer's
/// policy when authenticating it and the revision after; a move committed
/// in between was answered with the old policy's states, stamped with a
/// revision past the move, and the agent kept that answer. Now the policy
/// is read with the states, after the revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_during_a_move_answers_for_the_policy_of_its_revision() {
    let env = Env::new(Backend::Postgres).await;
    env.admin.create_policy("servers", "lockdown").await;
    let web = env.agent("default", "web01").await;
    env.admin
        .set_state(hash(1), json!({"state": "banned", "policy": "servers"}))
        .await;
    assert_eq!(
        web.lookup(&[hash(1)]).await.results[0].approval,
        Approval::Unknown
    );
    let one = [hash(1)];
    let locked = lock_counters(&env).await;
    let (answer, ()) = tokio::join!(
        web.lookup(&one),
        move_while_the_revision_waits(&env, locked)
    );
    assert_eq!(
        answer.results[0].approval.as_str(),
        "banned",
        "answered at revision {} for the policy before it",
        answer.revision
    );
}

/// Regression (PostgreSQL only, as above): the push stream filtered
/// changes by the policy read when authenticating the computer, while its
/// `Hello` carried the configuration and revision read after; a move in
/// between was behind the stream's revision, so the stream kept the old
/// policy and never pushed the new policy's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_during_a_move_follows_the_new_policy() {
    let env = Env::new(Backend::Postgres).await;
    env.admin.create_policy("servers", "lockdown").await;
    let web = env.agent("default", "web01").await;
    let locked = lock_counters(&env).await;
    let ((mut stream, config), ()) = tokio::join!(
        web.stream_hello(),
        move_while_the_revision_waits(&env, locked)
    );
    assert_eq!(config.policy, "servers");
    env.admin
        .set_state(hash(2), json!({"state": "banned", "policy": "servers"}))
        .await;
    let c = stream.next_change(Duration::from_secs(2)).await;
    assert_eq!(c.hashes, vec![hash(2)]);
}

/// Regression (PostgreSQL only, as above): a computer-scope file state
/// was permitted by the computer's policy read before the write; a move
/// committed in between let an admin of the old policy set a state on a
/// computer now in a policy she may not touch. The write reads the policy
/// again, under the computer's row lock, and checks the permission there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_moved_during_a_state_change_is_checked_in_its_new_policy() {
    use sqlx::{Connection, Executor};
    let env = Env::new(Backend::Postgres).await;
    env.admin.create_policy("servers", "lockdown").await;
    let web = env.agent("default", "web01").await;
    let erin = crate::access::admin_with(&env, "erin", "security-admin", Some("default")).await;
    // The server's catalog write waits for this lock: after its check.
    let mut locked = sqlx::PgConnection::connect(&env.db.url)
        .await
        .expect("postgres");
    locked
        .execute("BEGIN; LOCK TABLE files IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let path = format!("/api/v1/files/{}/state", hash(1));
    let body = json!({"state": "banned", "computer": "web01", "path": "/usr/bin/x"});
    let ((status, v), ()) = tokio::join!(
        erin.call(Method::PUT, &path, Some(body)),
        move_while_the_revision_waits(&env, locked)
    );
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{v}");
    let d: FileDetails = env
        .admin
        .get_ok(&format!("/api/v1/files/{}", hash(1)))
        .await;
    assert!(d.states.is_empty(), "{:?}", d.states);
    assert_eq!(
        web.lookup(&[hash(1)]).await.results[0].approval,
        Approval::Unknown
    );
    // In her policy, and not moving, it is hers to set.
    env.agent("default", "web02").await;
    let _: Value = erin
        .put_ok(&path, json!({"state": "banned", "computer": "web02"}))
        .await;
}
