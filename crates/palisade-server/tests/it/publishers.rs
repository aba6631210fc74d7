//! Publishers, reputation, and `file show`'s global state and explanations.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::{FileDetails, PublisherInfo, ReputationImported, ScopeRef};
use palisade_api::agent::Changes;
use palisade_core::rules::PublisherTrust;
use palisade_core::{Approval, ApprovalSource, FileState, GlobalState, ScopeKind, Sha256};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(
    publisher_states_and_trust,
    reputation_import,
    file_show_explains
);

fn fact(name: Option<&str>, package: &str, verified: bool) -> Value {
    json!({"name": name, "package": package, "version": "1.0-1", "verified": verified})
}

async fn publisher(env: &Env, name: &str) -> Option<PublisherInfo> {
    let list: Vec<PublisherInfo> = env.admin.get_ok("/api/v1/publishers").await;
    list.into_iter().find(|p| p.name == name)
}

async fn publisher_states_and_trust(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;

    let p: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Debian/state",
            json!({"state": "approved"}),
        )
        .await;
    assert_eq!(p.name, "Debian");
    assert_eq!((p.trust, p.files), (None, 0));
    assert_eq!(p.states.len(), 1);
    assert_eq!(p.states[0].scope, ScopeRef::Global);
    assert_eq!(p.states[0].state, FileState::Approved);
    assert_eq!(p.states[0].updated_by, "alice");
    let p: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Debian/state",
            json!({"state": "banned", "policy": "default"}),
        )
        .await;
    assert_eq!(p.states.len(), 2);
    assert!(p
        .states
        .iter()
        .any(|s| s.scope == ScopeRef::Policy("default".into()) && s.state == FileState::Banned));
    let p: PublisherInfo = env
        .admin
        .put_ok("/api/v1/publishers/Debian/trust", json!({"trust": "high"}))
        .await;
    assert_eq!(p.trust, Some(PublisherTrust::High));
    // `unapproved` deletes the state at that scope.
    let p: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Debian/state",
            json!({"state": "unapproved", "policy": "default"}),
        )
        .await;
    assert_eq!(p.states.len(), 1);
    assert_eq!(p.states[0].scope, ScopeRef::Global);
    // Names with spaces (repository origins such as "Google LLC").
    let p: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Google%20LLC/trust",
            json!({"trust": "medium"}),
        )
        .await;
    assert_eq!(p.name, "Google LLC");

    // Agents attribute files: lookups (through the catalog recorder) and
    // inventory; publishers they name appear, with file counts.
    agent
        .lookup_items(vec![
            json!({"sha256": hash(1), "path": "/usr/bin/ls", "publisher": fact(Some("Debian"), "coreutils", true)}),
            json!({"sha256": hash(2), "path": "/usr/bin/x", "publisher": fact(Some("Other Origin"), "x", true)}),
            json!({"sha256": hash(3), "publisher": fact(Some("Debian"), "bad\u{1}pkg", true)}),
        ])
        .await;
    let _: Value = agent
        .post_ok(
            "/agent/v1/inventory",
            json!({"approve_locally": false, "files": [
                {"sha256": hash(4), "path": "/usr/bin/cat", "size": 1, "kind": {"kind": "elf", "shared": false},
                 "publisher": fact(Some("Debian"), "coreutils", true)},
                {"sha256": hash(5), "path": "/usr/local/bin/mine", "size": 1, "kind": {"kind": "elf", "shared": false},
                 "publisher": fact(None, "mine", false)}
            ]}),
        )
        .await;
    let debian = eventually(Duration::from_secs(3), "Debian counts 2 files", || async {
        publisher(&env, "Debian").await.filter(|p| p.files == 2)
    })
    .await;
    assert_eq!(debian.trust, Some(PublisherTrust::High));
    let other = publisher(&env, "Other Origin").await.expect("listed");
    assert_eq!((other.files, other.trust), (1, None));
    assert!(other.states.is_empty());
    let d: FileDetails = env
        .admin
        .get_ok(&format!("/api/v1/files/{}", hash(5)))
        .await;
    assert_eq!(d.publishers.len(), 1);
    assert_eq!(d.publishers[0].name, None);
    assert!(!d.publishers[0].verified);

    let e = expect_error(
        env.admin
            .call(
                reqwest::Method::PUT,
                "/api/v1/publishers/Debian/state",
                Some(json!({"state": "sideways"})),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(e.field.as_deref(), Some("state"));
    env.server.stop().await;
}

fn entries(range: std::ops::Range<u64>, trust: impl Fn(u64) -> u64) -> Vec<Value> {
    range
        .map(|i| json!({"sha256": hash(i), "trust": trust(i)}))
        .collect()
}

async fn reputation_import(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let (mut stream, _) = agent.stream_hello().await;

    // A small import: the changed hashes are pushed.
    let r: ReputationImported = env
        .admin
        .post_ok(
            "/api/v1/reputation",
            json!({"source": "list-1", "entries": entries(1..4, |i| i)}),
        )
        .await;
    assert_eq!(r.stored, 3);
    let c = stream.next_change(Duration::from_secs(1)).await;
    assert_eq!(c.hashes, vec![hash(1), hash(2), hash(3)]);

    // 20,000 entries in one batch.
    let body = json!({"source": "nsrl-rds-test", "entries": entries(100_000..120_000, |i| i % 11)});
    let t = Instant::now();
    let r: ReputationImported = env.admin.post_ok("/api/v1/reputation", body.clone()).await;
    let elapsed = t.elapsed();
    eprintln!(
        "[figure] {backend:?}: reputation import of 20,000 entries (one request): {elapsed:?}"
    );
    assert_eq!(r.stored, 20_000);
    let limit = match backend {
        Backend::Sqlite => Duration::from_secs(1),
        Backend::Postgres => Duration::from_secs(3),
    };
    assert!(elapsed < limit, "reputation import too slow: {elapsed:?}");
    // Many files changed: one reset.
    let c = stream.next_change(Duration::from_secs(2)).await;
    assert!(c.reset, "{c:?}");

    // Idempotent: the same batch again stores and changes nothing.
    let rev = agent.lookup(&[hash(1)]).await.revision;
    let t = Instant::now();
    let r: ReputationImported = env.admin.post_ok("/api/v1/reputation", body).await;
    eprintln!(
        "[figure] {backend:?}: the same 20,000 entries again (no change): {:?}",
        t.elapsed()
    );
    assert_eq!(r.stored, 0);
    let c: Changes = agent
        .get_ok(&format!("/agent/v1/changes?since={rev}"))
        .await;
    assert_eq!((c.revision, c.reset, c.hashes.len()), (rev, false, 0));
    stream.expect_quiet(Duration::from_millis(300)).await;

    // A changed rating and a new source count; duplicates in a batch: the last wins.
    let r: ReputationImported = env
        .admin
        .post_ok(
            "/api/v1/reputation",
            json!({"source": "nsrl-rds-test", "entries": [
                {"sha256": hash(100_005), "trust": 0},
                {"sha256": hash(100_006), "trust": 5},
                {"sha256": hash(100_007), "trust": 1},
                {"sha256": hash(100_007), "trust": 2}
            ]}),
        )
        .await;
    assert_eq!(r.stored, 2);
    let c = stream.next_change(Duration::from_secs(1)).await;
    assert_eq!(c.hashes, vec![hash(100_005), hash(100_007)]);

    // Lookups carry the trust; unknown hashes have none.
    let answer = agent
        .lookup(&[hash(100_005), hash(100_010), hash(7), hash(100_007)])
        .await;
    let trust: Vec<Option<u8>> = answer.results.iter().map(|r| r.trust).collect();
    assert_eq!(trust, [Some(0), Some(9), None, Some(2)]);
    assert!(answer
        .results
        .iter()
        .all(|r| r.approval == Approval::Unknown));
    let d: FileDetails = env
        .admin
        .get_ok(&format!("/api/v1/files/{}", hash(100_010)))
        .await;
    assert_eq!(d.trust, Some(9));
    assert_eq!(d.trust_source.as_deref(), Some("nsrl-rds-test"));
    env.server.stop().await;
}

fn effective<'a>(d: &'a FileDetails, computer: &str) -> &'a palisade_api::admin::EffectiveApproval {
    d.effective
        .iter()
        .find(|e| e.computer == computer)
        .expect("effective entry")
}

async fn file_show_explains(backend: Backend) {
    let env = Env::new(backend).await;
    env.admin.create_policy("servers", "lockdown").await;
    let desk = env.agent("default", "desk01").await;
    let web = env.agent("servers", "web01").await;
    let h: Sha256 = hash(1);
    desk.lookup_items(vec![json!({
        "sha256": h, "path": "/usr/bin/tool", "operation": "execute",
        "publisher": fact(Some("Debian"), "tool", true)
    })])
    .await;
    let show = || async {
        let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{h}")).await;
        d
    };
    let d = eventually(Duration::from_secs(3), "publisher recorded", || async {
        let d = show().await;
        (!d.publishers.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(d.global_state, GlobalState::Unapproved);
    assert_eq!(d.publishers[0].name.as_deref(), Some("Debian"));
    assert_eq!(d.trust, None);
    let e = effective(&d, &desk.name);
    assert_eq!(e.approval, Approval::Unknown);
    assert!(
        e.explanation.starts_with(
            "no approval, ban or rule applies: unknown code: allowed only because the level is monitor"
        ),
        "{}",
        e.explanation
    );
    let e = effective(&d, &web.name);
    assert!(
        e.explanation.contains("blocked at level lockdown")
            && e.explanation.contains("not seen on this computer"),
        "{}",
        e.explanation
    );

    // The publisher approved for all computers: the file is approved for
    // all (global state), and explained by the publisher.
    let _: Value = env
        .admin
        .put_ok(
            "/api/v1/publishers/Debian/state",
            json!({"state": "approved"}),
        )
        .await;
    let d = show().await;
    assert_eq!(d.global_state, GlobalState::ApprovedForAll);
    let e = effective(&d, &desk.name);
    assert!(
        e.explanation
            .starts_with("publisher \"Debian\" is approved: allowed at level monitor"),
        "{}",
        e.explanation
    );
    // Banned for servers: mixed; the ban decides on web01.
    env.admin
        .set_state(h, json!({"state": "banned", "policy": "servers"}))
        .await;
    let d = show().await;
    assert_eq!(d.global_state, GlobalState::Mixed);
    let e = effective(&d, &web.name);
    assert_eq!(
        e.approval,
        Approval::Banned(ApprovalSource {
            scope: ScopeKind::Policy
        })
    );
    assert!(
        e.explanation
            .starts_with("banned by a policy file state: blocked at level lockdown"),
        "{}",
        e.explanation
    );

    // A custom rule on the file's path decides before everything; the
    // explanation says the subject matters there.
    let rule = env
        .admin
        .create_rule(json!({"name": "no tools", "policies": ["default"], "body": {
            "kind": "custom", "operations": {"execute": true, "write": false}, "paths": ["/usr/bin/*"],
            "action": "block"}}))
        .await;
    let d = show().await;
    let e = effective(&d, &desk.name);
    assert!(
        e.explanation.starts_with(&format!(
            "custom rule {} (\"no tools\"): block: allowed only because the level is monitor",
            rule.id
        )) && e
            .explanation
            .contains("apply to /usr/bin/tool: the decision may differ by process and user"),
        "{}",
        e.explanation
    );

    // Reputation: a rule for servers approves a trusted file; prompt level.
    let h2 = hash(2);
    let _: ReputationImported = env
        .admin
        .post_ok(
            "/api/v1/reputation",
            json!({"source": "list", "entries": [{"sha256": h2, "trust": 9}]}),
        )
        .await;
    let rep = env
        .admin
        .create_rule(json!({"name": "trusted", "policies": ["servers"],
            "body": {"kind": "reputation", "min_trust": 8}}))
        .await;
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{h2}")).await;
    assert_eq!(
        (d.trust, d.trust_source.as_deref()),
        (Some(9), Some("list"))
    );
    assert!(effective(&d, &web.name).explanation.starts_with(&format!(
        "reputation rule {}: trust rating 9: allowed at level lockdown",
        rep.id
    )));
    let _: Value = env
        .admin
        .put_ok(
            "/api/v1/policies/servers/levels",
            json!({"level": "prompt"}),
        )
        .await;
    let d: FileDetails = env
        .admin
        .get_ok(&format!("/api/v1/files/{}", hash(3)))
        .await;
    assert!(
        effective(&d, &web.name)
            .explanation
            .contains("blocked at level prompt; the user may request approval"),
        "{}",
        effective(&d, &web.name).explanation
    );
    env.server.stop().await;
}
