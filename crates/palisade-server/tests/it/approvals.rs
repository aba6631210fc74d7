//! Approvals made on computers (trusted change, level changes), users'
//! approval requests, and the approve-existing epoch.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::{ApprovalRequestInfo, FileDetails, RequestStatus, ScopeRef};
use palisade_api::agent::{ApprovalRequestCreated, LocalApprovalsAck};
use palisade_core::rules::TrustedChange;
use palisade_core::{Approval, ApprovalSource, Level, ScopeKind};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(
    local_approvals,
    trusted_directory_scopes,
    trusted_servers_are_enrolled_computers_pinned_by_id,
    trusted_directory_claims_follow_the_rule_as_it_is_now,
    approval_requests,
    a_ban_answers_pending_requests_and_is_never_granted_over,
    new_requests_show_past_a_thousand,
    pending_requests_per_computer_are_capped,
    approve_existing_epoch
);

const LOCAL: Approval = Approval::Approved(ApprovalSource {
    scope: ScopeKind::Local,
});
const GLOBAL: Approval = Approval::Approved(ApprovalSource {
    scope: ScopeKind::Global,
});
const POLICY: Approval = Approval::Approved(ApprovalSource {
    scope: ScopeKind::Policy,
});

async fn local_approvals(backend: Backend) {
    let env = Env::new(backend).await;
    env.admin.create_policy("servers", "lockdown").await;
    let web = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;
    let elsewhere = env.agent("servers", "db01").await;
    let dist = env
        .admin
        .create_rule(json!({"name": "dist", "policies": ["default"],
            "body": {"kind": "trusted_directory", "dir": "/srv/dist", "computers": ["web01"]}}))
        .await;
    let config = web.config().await;
    assert!(matches!(
        config.rules.trusted_change.as_slice(),
        [TrustedChange::TrustedDirectory { dir, .. }] if dir == "/srv/dist"
    ));
    let (mut other_s, _) = other.stream_hello().await;
    let (mut web_s, _) = web.stream_hello().await;

    let item = |n: u64, path: &str, origin: Value| json!({"sha256": hash(n), "path": path, "origin": origin});
    let body = json!({"items": [
        item(1, "/usr/bin/new", json!({"by": "updater", "rule": 7, "name": "dpkg"})),
        item(2, "/srv/dist/tool", json!({"by": "trusted_directory", "rule": dist.id, "dir": "/srv/dist"})),
        // Outside the directory, a wrong directory, an unknown rule, a path
        // climbing out: refused.
        item(3, "/tmp/tool", json!({"by": "trusted_directory", "rule": dist.id, "dir": "/srv/dist"})),
        item(3, "/srv/other/tool", json!({"by": "trusted_directory", "rule": dist.id, "dir": "/srv/other"})),
        item(3, "/srv/dist/tool", json!({"by": "trusted_directory", "rule": 999_999, "dir": "/srv/dist"})),
        item(3, "/srv/dist/../etc/tool", json!({"by": "trusted_directory", "rule": dist.id, "dir": "/srv/dist"})),
        item(4, "/opt/app/bin", json!({"by": "level_change"})),
        item(5, "/home/alice/bin/x", json!({"by": "trusted_user", "rule": 8, "user": "alice"})),
        item(6, "/opt/app/lib.so", json!({"by": "custom_rule", "rule": 9}))
    ]});
    let t = Instant::now();
    let ack: LocalApprovalsAck = web.post_ok("/agent/v1/approvals", body.clone()).await;
    assert_eq!(ack.approved, 5);
    // The trusted directory's approval (its rule is limited to `default`,
    // web01 its trusted server) reaches every computer of that policy...
    let c = other_s.next_change(Duration::from_secs(1)).await;
    eprintln!(
        "[figure] {backend:?}: trusted-directory approval -> another computer's stream: {:?}",
        t.elapsed()
    );
    assert_eq!(c.hashes, vec![hash(2)]);
    let c = web_s.next_change(Duration::from_secs(1)).await;
    let mut pushed = c.hashes.clone();
    pushed.sort();
    assert_eq!(pushed, vec![hash(1), hash(2), hash(4), hash(5), hash(6)]);

    let mine = web
        .lookup(&[hash(1), hash(2), hash(3), hash(4), hash(5), hash(6)])
        .await;
    let got: Vec<Approval> = mine.results.iter().map(|r| r.approval).collect();
    assert_eq!(got, [LOCAL, POLICY, Approval::Unknown, LOCAL, LOCAL, LOCAL]);
    // ...the local ones only this one; a computer of another policy neither.
    for (a, dist) in [(&other, POLICY), (&elsewhere, Approval::Unknown)] {
        let got: Vec<Approval> = a
            .lookup(&[hash(1), hash(2)])
            .await
            .results
            .iter()
            .map(|r| r.approval)
            .collect();
        assert_eq!(got, [Approval::Unknown, dist], "{}", a.name);
    }
    for (n, by) in [
        (1, "updater:dpkg@web01".to_owned()),
        (2, "trusted-directory:/srv/dist@web01".to_owned()),
        (4, "level-change@web01".to_owned()),
        (5, "trusted-user:alice@web01".to_owned()),
        (6, "custom-rule:9@web01".to_owned()),
    ] {
        let d: FileDetails = env
            .admin
            .get_ok(&format!("/api/v1/files/{}", hash(n)))
            .await;
        assert_eq!(d.states.len(), 1, "{n}");
        assert_eq!(d.states[0].updated_by, by);
        assert_eq!(d.instances[0].computer, "web01", "catalogued");
    }

    // Sent again: counted, nothing new pushed.
    let ack: LocalApprovalsAck = web.post_ok("/agent/v1/approvals", body).await;
    assert_eq!(ack.approved, 5);
    web_s.expect_quiet(Duration::from_millis(300)).await;

    // An admin's local ban is never replaced by a local approval.
    env.admin
        .set_state(hash(10), json!({"state": "banned", "computer": web.name}))
        .await;
    let _ = web_s.next_change(Duration::from_secs(1)).await;
    let ack: LocalApprovalsAck = web
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [item(10, "/usr/bin/evil", json!({"by": "level_change"}))]}),
        )
        .await;
    assert_eq!(ack.approved, 0);
    assert_eq!(
        web.lookup(&[hash(10)]).await.results[0].approval.as_str(),
        "banned"
    );
    env.server.stop().await;
}

/// Regression: the rule of a trusted-directory claim was checked in the
/// computer's rule set, then its policies read again when writing; a rule
/// deleted in between had no policies, so the approval was written for
/// every computer of the organization. The server cannot be paused between
/// the two reads, so the test makes the same state: the rule set is read
/// and kept (cached under the rules' version), then the rule is deleted,
/// disabled or moved in the database behind the server's back without
/// moving that version. Each claim is now refused.
async fn trusted_directory_claims_follow_the_rule_as_it_is_now(backend: Backend) {
    let env = Env::new(backend).await;
    env.admin.create_policy("dev", "monitor").await;
    env.admin.create_policy("prod", "lockdown").await;
    let dev = env.agent("dev", "dev01").await;
    let prod = env.agent("prod", "prod01").await;
    let mut rules = Vec::new();
    for (name, dir) in [
        ("gone", "/srv/gone"),
        ("off", "/srv/off"),
        ("moved", "/srv/moved"),
    ] {
        rules.push(
            env.admin
                .create_rule(json!({"name": name, "policies": ["dev"],
                    "body": {"kind": "trusted_directory", "dir": dir}}))
                .await,
        );
    }
    // The rule set with the three rules is read (and kept).
    assert_eq!(dev.config().await.rules.trusted_change.len(), 3);
    let (gone, off, moved) = (rules[0].id.0, rules[1].id.0, rules[2].id.0);
    for sql in [
        format!("DELETE FROM rule_policies WHERE rule_id = {gone}"),
        format!("DELETE FROM rules WHERE id = {gone}"),
        format!("UPDATE rules SET enabled = 0 WHERE id = {off}"),
        format!(
            "UPDATE rules SET body_json = '{{\"kind\":\"trusted_directory\",\"dir\":\"/srv/elsewhere\"}}' \
             WHERE id = {moved}"
        ),
    ] {
        exec_sql(backend, &env.db.url, &sql).await;
    }
    let ack: LocalApprovalsAck = dev
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [
                dir_item(1, "/srv/gone/tool", gone, "/srv/gone"),
                dir_item(2, "/srv/off/tool", off, "/srv/off"),
                dir_item(3, "/srv/moved/tool", moved, "/srv/moved"),
            ]}),
        )
        .await;
    assert_eq!(ack.approved, 0);
    for a in [&dev, &prod] {
        let got = approvals_of(a, &[hash(1), hash(2), hash(3)]).await;
        assert_eq!(got, [Approval::Unknown; 3], "{}", a.name);
    }
}

/// A trusted-directory approval item for file `n`.
fn dir_item(n: u64, path: &str, rule: i64, dir: &str) -> Value {
    json!({"sha256": hash(n), "path": path,
           "origin": {"by": "trusted_directory", "rule": rule, "dir": dir}})
}

/// How `a` finds `hashes` approved.
async fn approvals_of(a: &Agent, hashes: &[palisade_core::Sha256]) -> Vec<Approval> {
    a.lookup(hashes)
        .await
        .results
        .iter()
        .map(|r| r.approval)
        .collect()
}

/// Regression: a trusted-directory approval was written for all computers
/// even when its rule was limited to some policies, so a computer of a
/// monitor-mode policy approved files for lockdown computers of another.
/// It is written for each policy the rule is limited to, and for all
/// computers only when the rule applies to every policy; and only when the
/// claim comes from a trusted server the rule names: any other computer's
/// approves for itself alone (one agent's word approved everywhere).
async fn trusted_directory_scopes(backend: Backend) {
    let env = Env::new(backend).await;
    env.admin.create_policy("dev", "monitor").await;
    env.admin.create_policy("qa", "lockdown").await;
    env.admin.create_policy("prod", "lockdown").await;
    let dev = env.agent("dev", "dev01").await;
    let qa = env.agent("qa", "qa01").await;
    let prod = env.agent("prod", "prod01").await;
    let limited = env
        .admin
        .create_rule(json!({"name": "builds", "policies": ["dev", "qa"],
            "body": {"kind": "trusted_directory", "dir": "/srv/builds", "computers": ["dev01"]}}))
        .await;
    let everywhere = env
        .admin
        .create_rule(json!({"name": "dist",
            "body": {"kind": "trusted_directory", "dir": "/srv/dist", "computers": ["dev01"]}}))
        .await;
    let qa_only = env
        .admin
        .create_rule(json!({"name": "qa-tools", "policies": ["qa"],
            "body": {"kind": "trusted_directory", "dir": "/srv/qa"}}))
        .await;
    let ack: LocalApprovalsAck = dev
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [
                dir_item(1, "/srv/builds/app", limited.id.0, "/srv/builds"),
                dir_item(2, "/srv/dist/tool", everywhere.id.0, "/srv/dist"),
                // A rule that does not apply to dev's policy: refused.
                dir_item(3, "/srv/qa/tool", qa_only.id.0, "/srv/qa"),
            ]}),
        )
        .await;
    // hash 1 for dev and for qa, hash 2 for all.
    assert_eq!(ack.approved, 3);
    for (a, want) in [
        (&dev, [POLICY, GLOBAL, Approval::Unknown]),
        (&qa, [POLICY, GLOBAL, Approval::Unknown]),
        (&prod, [Approval::Unknown, GLOBAL, Approval::Unknown]),
    ] {
        let got = approvals_of(a, &[hash(1), hash(2), hash(3)]).await;
        assert_eq!(got, want, "{}", a.name);
    }
    let d: FileDetails = env
        .admin
        .get_ok(&format!("/api/v1/files/{}", hash(1)))
        .await;
    let scopes: Vec<&ScopeRef> = d.states.iter().map(|s| &s.scope).collect();
    assert_eq!(scopes.len(), 2, "{scopes:?}");
    for p in ["dev", "qa"] {
        assert!(
            scopes.contains(&&ScopeRef::Policy(p.to_owned())),
            "{scopes:?}"
        );
    }
    // Not a trusted server of the rule (a rule naming none has none): its
    // finds are approved on it alone.
    let ack: LocalApprovalsAck = qa
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [
                dir_item(4, "/srv/builds/app", limited.id.0, "/srv/builds"),
                dir_item(5, "/srv/dist/tool", everywhere.id.0, "/srv/dist"),
                dir_item(6, "/srv/qa/tool", qa_only.id.0, "/srv/qa"),
            ]}),
        )
        .await;
    assert_eq!(ack.approved, 3);
    for (a, want) in [
        (&qa, [LOCAL; 3]),
        (&dev, [Approval::Unknown; 3]),
        (&prod, [Approval::Unknown; 3]),
    ] {
        let got = approvals_of(a, &[hash(4), hash(5), hash(6)]).await;
        assert_eq!(got, want, "{}", a.name);
    }
    env.server.stop().await;
}

/// Regression: a trusted directory's trusted servers were names, checked
/// for syntax only, and matched against the approving computer's name: an
/// admin naming a computer not enrolled yet (or misspelled) let whoever
/// enrolled later under that host name approve hashes for every computer
/// the rule covers. A rule must now name enrolled, unrevoked computers
/// (404 / 422 naming the field), and trust goes to those computers by id:
/// another computer bearing the name later is trusted for itself only.
/// Migration 13 pins existing rules to the computers of those names that
/// had enrolled by the rule's creation.
async fn trusted_servers_are_enrolled_computers_pinned_by_id(backend: Backend) {
    let env = Env::new(backend).await;
    let build = env.agent("default", "build01").await;
    let web = env.agent("default", "web01").await;
    let old = env.agent("default", "old01").await;
    let rule = |name: &str, dir: &str, computers: Value| json!({"name": name, "body": {"kind": "trusted_directory", "dir": dir, "computers": computers}});
    for (computers, field, status, says) in [
        (
            json!(["buidl01"]),
            "body.computers[0]",
            StatusCode::NOT_FOUND,
            "\"buidl01\"",
        ),
        (
            json!(["build01", "later01"]),
            "body.computers[1]",
            StatusCode::NOT_FOUND,
            "\"later01\"",
        ),
    ] {
        let e = expect_error(
            env.admin
                .call(
                    Method::POST,
                    "/api/v1/rules",
                    Some(rule("r", "/srv/dist", computers)),
                )
                .await,
            status,
        );
        assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
        assert!(
            e.error.contains(says) && e.error.contains("enrolled"),
            "{e:?}"
        );
    }
    let (status, v) = env
        .admin
        .call(Method::POST, "/api/v1/computers/old01/revoke", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let e = expect_error(
        env.admin
            .call(
                Method::POST,
                "/api/v1/rules",
                Some(rule("r", "/srv/dist", json!(["old01"]))),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(e.field.as_deref(), Some("body.computers[0]"), "{e:?}");
    assert!(e.error.contains("revoked"), "{e:?}");
    drop(old);
    let rules: Vec<Value> = env.admin.get_ok("/api/v1/rules").await;
    assert!(rules.is_empty(), "nothing stored: {rules:?}");

    let dist = env
        .admin
        .create_rule(rule("dist", "/srv/dist", json!(["build01"])))
        .await;
    let ack: LocalApprovalsAck = build
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [dir_item(1, "/srv/dist/a", dist.id.0, "/srv/dist")]}),
        )
        .await;
    assert_eq!(ack.approved, 1);
    assert_eq!(approvals_of(&web, &[hash(1)]).await, [GLOBAL]);

    // The name freed and taken by a computer enrolling later (nothing in
    // the API frees a name today: done behind the server's back).
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE computers SET name = 'build01-retired' WHERE name = 'build01'",
    )
    .await;
    let impostor = env.agent("default", "build01").await;
    assert_eq!(impostor.name, "build01");
    let ack: LocalApprovalsAck = impostor
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [dir_item(2, "/srv/dist/b", dist.id.0, "/srv/dist")]}),
        )
        .await;
    assert_eq!(ack.approved, 1);
    assert_eq!(approvals_of(&impostor, &[hash(2)]).await, [LOCAL]);
    assert_eq!(approvals_of(&web, &[hash(2)]).await, [Approval::Unknown]);

    // Migration 13 on rules made before it: "ok" names web01, enrolled
    // before it; "late" is dated before web01 enrolled; "dist" names a
    // computer enrolled after it.
    let ok = env
        .admin
        .create_rule(rule("ok", "/srv/ok", json!(["web01"])))
        .await;
    let late = env
        .admin
        .create_rule(rule("late", "/srv/late", json!(["web01"])))
        .await;
    for sql in [
        format!("UPDATE rules SET created_ms = 1 WHERE id = {}", late.id.0),
        "DROP TABLE rule_computers".to_owned(),
        // And what migration 14 added, which runs again after it.
        "DROP INDEX computers_next_cert".to_owned(),
        "ALTER TABLE computers DROP COLUMN next_cert_fingerprint".to_owned(),
        "UPDATE schema_version SET version = 12".to_owned(),
    ] {
        exec_sql(backend, &env.db.url, &sql).await;
    }
    let migrated = TestServer::start(&env.db).await;
    assert_eq!(migrated.db.schema_version().await.expect("version"), 14);
    let (web, impostor, build) = (
        web.on(&migrated),
        impostor.on(&migrated),
        build.on(&migrated),
    );
    let ack: LocalApprovalsAck = web
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [
                dir_item(3, "/srv/ok/a", ok.id.0, "/srv/ok"),
                dir_item(4, "/srv/late/a", late.id.0, "/srv/late"),
            ]}),
        )
        .await;
    assert_eq!(ack.approved, 2);
    let ack: LocalApprovalsAck = impostor
        .post_ok(
            "/agent/v1/approvals",
            json!({"items": [dir_item(5, "/srv/dist/c", dist.id.0, "/srv/dist")]}),
        )
        .await;
    assert_eq!(ack.approved, 1);
    assert_eq!(
        approvals_of(&build, &[hash(3), hash(4), hash(5)]).await,
        [GLOBAL, Approval::Unknown, Approval::Unknown]
    );
    migrated.stop().await;
    env.server.stop().await;
}

/// Regression: granting a request made before the file was banned on the
/// computer replaced the ban with an approval (one state row per scope),
/// and a ban left the file's pending requests open to that grant. A ban
/// now denies the pending requests it covers, and a grant under a ban is
/// refused (409) with the ban in place.
async fn a_ban_answers_pending_requests_and_is_never_granted_over(backend: Backend) {
    let env = Env::new(backend).await;
    env.admin.create_policy("servers", "prompt").await;
    let web = env.agent("default", "web01").await;
    let web2 = env.agent("default", "web02").await;
    let db = env.agent("servers", "db01").await;
    // A request arriving after a ban: its grant is refused, the ban kept.
    env.admin
        .set_state(hash(3), json!({"state": "banned", "computer": "web01"}))
        .await;
    let late = ask_approval(&web, 3).await;
    let (status, v) = env
        .admin
        .call(
            Method::POST,
            &format!("/api/v1/requests/{late}/grant"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("banned on this computer"), "{v}");
    assert_eq!(status_of(&env, late).await.0, RequestStatus::Pending);
    assert_eq!(
        web.lookup(&[hash(3)]).await.results[0].approval.as_str(),
        "banned"
    );
    let on_web = ask_approval(&web, 1).await;
    let on_web2 = ask_approval(&web2, 1).await;
    let on_db = ask_approval(&db, 1).await;
    // Banned on web01: its request is answered, the others stay pending.
    env.admin
        .set_state(hash(1), json!({"state": "banned", "computer": "web01"}))
        .await;
    let (status, comment) = status_of(&env, on_web).await;
    assert_eq!(status, RequestStatus::Denied);
    assert!(comment.is_some_and(|c| c.contains("banned")));
    assert_eq!(status_of(&env, on_web2).await.0, RequestStatus::Pending);
    // Banned for the policy of db01: its request too; web02's stays.
    env.admin
        .set_state(hash(1), json!({"state": "banned", "policy": "servers"}))
        .await;
    assert_eq!(status_of(&env, on_db).await.0, RequestStatus::Denied);
    assert_eq!(status_of(&env, on_web2).await.0, RequestStatus::Pending);
    // web02's request, under no ban, is granted.
    let _: ApprovalRequestInfo = env
        .admin
        .post_ok(&format!("/api/v1/requests/{on_web2}/grant"), json!({}))
        .await;
    assert_eq!(
        web2.lookup(&[hash(1)]).await.results[0].approval.as_str(),
        "approved"
    );
}

/// `a` asks for file `n` to be approved; the new request's id.
async fn ask_approval(a: &Agent, n: u64) -> i64 {
    let body = json!({"sha256": hash(n), "path": format!("/opt/tool{n}"), "user": "alice",
                      "reason": "please", "process": null});
    let (status, v) = a.call(Method::POST, "/agent/v1/requests", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    from_value::<ApprovalRequestCreated>(v).id
}

/// The status and comment of request `id`.
async fn status_of(env: &Env, id: i64) -> (RequestStatus, Option<String>) {
    let all: Vec<ApprovalRequestInfo> = env.admin.get_ok("/api/v1/requests").await;
    let r = all.into_iter().find(|r| r.id == id).expect("request");
    (r.status, r.comment)
}

async fn approval_requests(backend: Backend) {
    let env = Env::new(backend).await;
    let _: Value = env
        .admin
        .put_ok(
            "/api/v1/policies/default/levels",
            json!({"level": "prompt"}),
        )
        .await;
    let web = env.agent("default", "web01").await;
    let (mut stream, config) = web.stream_hello().await;
    assert_eq!(config.levels.connected, Level::Prompt);

    let request = |n: u64| {
        json!({"sha256": hash(n), "path": format!("/home/alice/bin/tool{n}"), "user": "alice",
               "reason": "I need it\nfor the release", "process": {"pid": 9, "uid": 1000, "euid": 1000,
               "loginuid": 1000, "sessionid": 3, "exe": null, "ancestors": []}})
    };
    let (status, v) = web
        .call(Method::POST, "/agent/v1/requests", Some(request(1)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let created: ApprovalRequestCreated = from_value(v);
    // Asked again while pending: the same request.
    let (status, v) = web
        .call(Method::POST, "/agent/v1/requests", Some(request(1)))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(from_value::<ApprovalRequestCreated>(v).id, created.id);
    let (status, v) = web
        .call(Method::POST, "/agent/v1/requests", Some(request(2)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let second: ApprovalRequestCreated = from_value(v);

    let pending: Vec<ApprovalRequestInfo> =
        env.admin.get_ok("/api/v1/requests?status=pending").await;
    assert_eq!(pending.len(), 2);
    // Newest first.
    assert_eq!(pending[0].id, second.id);
    let r = &pending[1];
    assert_eq!(
        (r.id, r.computer.as_str(), r.user.as_str()),
        (created.id, "web01", "alice")
    );
    assert_eq!(r.sha256, hash(1));
    assert_eq!(r.path, "/home/alice/bin/tool1");
    assert_eq!(r.reason, "I need it\nfor the release");
    assert_eq!(
        (r.status, r.decided_by.as_deref()),
        (RequestStatus::Pending, None)
    );

    // Another organization cannot decide it.
    let bob_token = palisade_server::bootstrap(&env.server.db, &name("globex"), &name("bob"))
        .await
        .expect("bootstrap")
        .admin_token
        .expect("token");
    let bob = Admin::new(&env.server, &bob_token);
    let e = expect_error(
        bob.call(
            Method::POST,
            &format!("/api/v1/requests/{}/grant", created.id),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(e.field.as_deref(), Some("id"));
    let theirs: Vec<ApprovalRequestInfo> = bob.get_ok("/api/v1/requests").await;
    assert!(theirs.is_empty());

    // Granted: the computer is told within a second, and its lookup says
    // approved (locally).
    let t = Instant::now();
    let granted: ApprovalRequestInfo = env
        .admin
        .post_ok(
            &format!("/api/v1/requests/{}/grant", created.id),
            json!({"comment": "ok for the release"}),
        )
        .await;
    let c = stream.next_change(Duration::from_secs(1)).await;
    let elapsed = t.elapsed();
    eprintln!("[figure] {backend:?}: request granted -> agent stream: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1));
    assert_eq!(c.hashes, vec![hash(1)]);
    assert_eq!(granted.status, RequestStatus::Granted);
    assert_eq!(granted.decided_by.as_deref(), Some("alice"));
    assert_eq!(granted.comment.as_deref(), Some("ok for the release"));
    assert!(granted.decided_ms.is_some());
    assert_eq!(web.lookup(&[hash(1)]).await.results[0].approval, LOCAL);
    // Decided once.
    let e = expect_error(
        env.admin
            .call(
                Method::POST,
                &format!("/api/v1/requests/{}/deny", created.id),
                None,
            )
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(e.field.as_deref(), Some("id"));

    // Denied (no body): only the status changes.
    let (status, v) = env
        .admin
        .call(
            Method::POST,
            &format!("/api/v1/requests/{}/deny", second.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let denied: ApprovalRequestInfo = from_value(v);
    assert_eq!(
        (denied.status, denied.comment),
        (RequestStatus::Denied, None)
    );
    stream.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(
        web.lookup(&[hash(2)]).await.results[0].approval,
        Approval::Unknown
    );
    for (status, n) in [("pending", 0), ("granted", 1), ("denied", 1)] {
        let list: Vec<ApprovalRequestInfo> = env
            .admin
            .get_ok(&format!("/api/v1/requests?status={status}"))
            .await;
        assert_eq!(list.len(), n, "{status}");
    }
    let all: Vec<ApprovalRequestInfo> = env.admin.get_ok("/api/v1/requests").await;
    assert_eq!(all.len(), 2);
    // A new request for a denied file is a new request.
    let (status, _) = web
        .call(Method::POST, "/agent/v1/requests", Some(request(2)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    env.server.stop().await;
}

/// A request body for `/agent/v1/requests`.
fn ask(n: u64) -> Value {
    json!({"sha256": hash(n), "path": format!("/home/alice/bin/tool{n}"), "user": "alice",
           "reason": "", "process": null})
}

/// Requests are listed newest first, a page at a time: with more than a
/// thousand requests in the organization, a new one is still the first
/// listed (before: oldest first, limited to 1000, so no new request was
/// ever shown again), and paging with `before` walks all of them once.
async fn new_requests_show_past_a_thousand(backend: Backend) {
    let env = Env::new(backend).await;
    let web = env.agent("default", "web01").await;
    let org = query_i64s(
        backend,
        &env.db.url,
        &format!("SELECT org_id FROM computers WHERE id = {}", web.id),
    )
    .await[0];
    exec_sql(
        backend,
        &env.db.url,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1001) \
             INSERT INTO approval_requests (org_id, computer_id, sha256, path, user_name, \
               reason, status, created_ms, decided_ms, decided_by) \
             SELECT {org}, {}, '{}', '/old/' || i, 'alice', '', 'denied', 1000 + i, 2000 + i, \
               'alice' FROM n",
            web.id,
            hash(7).to_hex()
        ),
    )
    .await;
    let (status, v) = web
        .call(Method::POST, "/agent/v1/requests", Some(ask(1)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let new: ApprovalRequestCreated = from_value(v);

    let all: Vec<ApprovalRequestInfo> = env.admin.get_ok("/api/v1/requests").await;
    assert_eq!(all.len(), 1000);
    assert_eq!(all[0].id, new.id, "the new request comes first");
    let pending: Vec<ApprovalRequestInfo> =
        env.admin.get_ok("/api/v1/requests?status=pending").await;
    assert_eq!(pending.iter().map(|r| r.id).collect::<Vec<_>>(), [new.id]);
    // Pages of 400, each below the last id of the one before.
    let mut seen: Vec<i64> = Vec::new();
    let mut path = "/api/v1/requests?limit=400".to_owned();
    loop {
        let page: Vec<ApprovalRequestInfo> = env.admin.get_ok(&path).await;
        assert!(page.len() <= 400);
        let Some(last) = page.last() else { break };
        path = format!("/api/v1/requests?limit=400&before={}", last.id);
        seen.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(seen.len(), 1002);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, once each"
    );
    assert_eq!(seen[0], new.id);
    let (status, _) = env.admin.get("/api/v1/requests?before=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The console's page: the new request first, and a link to older ones.
    let mut olga = crate::signin::invited(&env, "olga", Some("auditor")).await;
    let (status, _, html) = olga.page("/console/requests").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("/home/alice/bin/tool1"), "{html}");
    let marker = "/console/requests?before=";
    let at = html.find(marker).expect("a link to older requests") + marker.len();
    let before: i64 = html[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .expect("before id");
    assert!(before < new.id);
    let (status, _, older) = olga.page(&format!("{marker}{before}")).await;
    assert_eq!(status, StatusCode::OK, "{older}");
    assert!(!older.contains("/home/alice/bin/tool1") && older.contains("/old/"));
    let (status, _, html) = olga.page("/console/requests?status=pending").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("/home/alice/bin/tool1") && !html.contains("/old/"));
    env.server.stop().await;
}

/// One computer may have at most 100 pending requests: the next is
/// refused (429, saying why) until some are decided; asking again for a
/// file already pending still answers its request, and other computers
/// are not affected.
async fn pending_requests_per_computer_are_capped(backend: Backend) {
    let env = Env::new(backend).await;
    let web = env.agent("default", "web01").await;
    let desk = env.agent("default", "desk01").await;
    let mut first = None;
    for n in 1..=100 {
        let (status, v) = web
            .call(Method::POST, "/agent/v1/requests", Some(ask(n)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{n}: {v}");
        first.get_or_insert(from_value::<ApprovalRequestCreated>(v).id);
    }
    let e = expect_error(
        web.call(Method::POST, "/agent/v1/requests", Some(ask(101)))
            .await,
        StatusCode::TOO_MANY_REQUESTS,
    );
    assert!(e.error.contains("100 pending"), "{}", e.error);
    let (status, v) = web
        .call(Method::POST, "/agent/v1/requests", Some(ask(1)))
        .await;
    assert_eq!(status, StatusCode::OK, "already pending: {v}");
    let (status, v) = desk
        .call(Method::POST, "/agent/v1/requests", Some(ask(101)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "another computer: {v}");
    let first = first.expect("first id");
    let _: ApprovalRequestInfo = env
        .admin
        .post_ok(&format!("/api/v1/requests/{first}/deny"), json!({}))
        .await;
    let (status, v) = web
        .call(Method::POST, "/agent/v1/requests", Some(ask(101)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "one decided: room again: {v}");
    env.server.stop().await;
}

async fn approve_existing_epoch(backend: Backend) {
    let env = Env::new(backend).await;
    let web = env.agent("default", "web01").await;
    let (mut stream, config) = web.stream_hello().await;
    assert_eq!(config.approve_existing_epoch, 0);
    let set = |body: Value| {
        let env = &env;
        async move {
            let _: Value = env
                .admin
                .put_ok("/api/v1/policies/default/levels", body)
                .await;
        }
    };
    set(json!({"level": "lockdown", "approve_existing": true})).await;
    assert!(
        stream
            .next_change(Duration::from_secs(1))
            .await
            .config_changed
    );
    let c = web.config().await;
    assert_eq!(
        (c.levels.connected, c.approve_existing_epoch),
        (Level::Lockdown, 1)
    );
    set(json!({"level": "prompt"})).await;
    assert!(
        stream
            .next_change(Duration::from_secs(1))
            .await
            .config_changed
    );
    let c = web.config().await;
    assert_eq!(
        (c.levels.connected, c.approve_existing_epoch),
        (Level::Prompt, 1)
    );
    set(json!({"level": "lockdown", "disconnected_level": "prompt", "approve_existing": true}))
        .await;
    let c = web.config().await;
    assert_eq!(c.approve_existing_epoch, 2);
    assert_eq!(c.levels.disconnected, Level::Prompt);
    // Another policy's epoch is its own.
    env.admin.create_policy("servers", "monitor").await;
    let db = env.agent("servers", "db01").await;
    assert_eq!(db.config().await.approve_existing_epoch, 0);
    env.server.stop().await;
}
