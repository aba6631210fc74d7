//! Rules: the rule set each computer receives, push of configuration
//! changes, bundles, validation, and the cost of a large rule set.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::{BundleInfo, PublisherInfo, RuleRecord};
use palisade_core::rules::{CompiledRules, PublisherTrust, TrustedChange, UserMatch};
use palisade_core::{FileState, ScopeKind};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(
    rule_sets_per_policy,
    rule_changes_push_config,
    bundles_enable_and_disable,
    validation_names_fields,
    webhook_urls_are_redacted_for_readers,
    config_with_1000_rules
);

fn custom(name: &str, rank: Option<i64>, policies: &[&str], path: &str) -> Value {
    let mut v = json!({
        "name": name,
        "policies": policies,
        "body": {"kind": "custom", "operations": {"execute": true, "write": false},
                 "paths": [path], "action": "block"}
    });
    if let Some(r) = rank {
        v["rank"] = json!(r);
    }
    v
}

fn custom_names(config: &palisade_api::agent::AgentConfig) -> Vec<String> {
    config.rules.custom.iter().map(|r| r.name.clone()).collect()
}

async fn rule_sets_per_policy(backend: Backend) {
    // Its event rule writes to the server's own syslog.
    let env = Env::new_with(backend, |c| c.alerts_local_syslog = true).await;
    env.admin.create_policy("servers", "lockdown").await;
    let desk = env.agent("default", "desk01").await;
    let web = env.agent("servers", "web01").await;

    let late = env
        .admin
        .create_rule(custom("late", Some(10), &[], "/opt/late/**"))
        .await;
    let early = env
        .admin
        .create_rule(custom("early", Some(1), &["servers"], "/opt/early/*"))
        .await;
    let a = env
        .admin
        .create_rule(custom("same-rank-a", Some(5), &[], "/opt/a"))
        .await;
    let b = env
        .admin
        .create_rule(custom("same-rank-b", Some(5), &[], "/opt/b"))
        .await;
    assert!(a.id < b.id);
    assert_eq!(early.policies, vec!["servers"]);
    // No rank: after the others.
    let rep = env
        .admin
        .create_rule(json!({"name": "trusted files", "policies": ["default"],
            "body": {"kind": "reputation", "min_trust": 8, "except_publishers": ["Evil"]}}))
        .await;
    assert_eq!(rep.rank, 11);
    env.admin
        .create_rule(json!({"name": "rmm", "body": {"kind": "folder",
            "dir": "/srv/rmm", "parents": [hash(9)]}}))
        .await;
    env.admin
        .create_rule(json!({"name": "dist", "policies": ["servers"],
            "body": {"kind": "trusted_directory", "dir": "/srv/dist"}}))
        .await;
    env.admin
        .create_rule(json!({"name": "deployers",
            "body": {"kind": "trusted_user", "user": {"by": "group", "name": "deploy"}}}))
        .await;
    env.admin
        .create_rule(json!({"name": "myupdater", "policies": ["servers"],
            "body": {"kind": "updater", "programs": ["myupd"]}}))
        .await;
    let event = env
        .admin
        .create_rule(json!({"name": "alert", "body": {"kind": "event",
            "filter": {"kinds": ["blocked"]}, "actions": [{"do": "syslog"}]}}))
        .await;

    // Publisher states: approved for all, banned for servers; another
    // approved for default only; trust.
    let _: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Acme/state",
            json!({"state": "approved"}),
        )
        .await;
    let _: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Acme/state",
            json!({"state": "banned", "policy": "servers"}),
        )
        .await;
    let _: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Other/state",
            json!({"state": "approved", "policy": "default"}),
        )
        .await;
    let _: PublisherInfo = env
        .admin
        .put_ok("/api/v1/publishers/Acme/trust", json!({"trust": "high"}))
        .await;

    // The desk computer (default policy).
    let c = desk.config().await;
    assert_eq!(custom_names(&c), ["same-rank-a", "same-rank-b", "late"]);
    assert_eq!(c.rules.reputation.len(), 1);
    assert_eq!(c.rules.reputation[0].min_trust, 8);
    assert_eq!(c.rules.reputation[0].except_publishers, ["Evil"]);
    assert_eq!(c.rules.folders.len(), 1);
    assert_eq!(c.rules.folders[0].dir, "/srv/rmm");
    assert!(matches!(
        c.rules.trusted_change.as_slice(),
        [TrustedChange::TrustedUser { user: UserMatch::Group(g), .. }] if g == "deploy"
    ));
    let pubs: Vec<(&str, FileState, ScopeKind)> = c
        .rules
        .publishers
        .iter()
        .map(|p| (p.name.as_str(), p.state, p.scope))
        .collect();
    assert_eq!(
        pubs,
        [
            ("Acme", FileState::Approved, ScopeKind::Global),
            ("Other", FileState::Approved, ScopeKind::Policy)
        ]
    );
    assert_eq!(
        c.rules.publisher_trust,
        vec![("Acme".to_owned(), PublisherTrust::High)]
    );
    let compiled = CompiledRules::new(c.rules.clone());
    assert_eq!(
        compiled.publisher_state("Acme"),
        Some((FileState::Approved, ScopeKind::Global))
    );

    // The web computer (servers): its own rules, and the ban wins.
    let c = web.config().await;
    assert_eq!(
        custom_names(&c),
        ["early", "same-rank-a", "same-rank-b", "late"]
    );
    assert!(c.rules.reputation.is_empty());
    let kinds: Vec<&str> = c
        .rules
        .trusted_change
        .iter()
        .map(|t| match t {
            TrustedChange::Updater { .. } => "updater",
            TrustedChange::TrustedDirectory { .. } => "dir",
            TrustedChange::TrustedUser { .. } => "user",
        })
        .collect();
    assert_eq!(kinds, ["dir", "user", "updater"]);
    assert!(c.rules.trusted_change.iter().any(|t| matches!(t,
        TrustedChange::Updater { name, programs, package_manager: false, .. }
            if name == "myupdater" && programs == &["myupd"])));
    assert_eq!(c.rules.publishers.len(), 2);
    assert!(c.rules.publishers.iter().all(|p| p.name == "Acme"));
    let compiled = CompiledRules::new(c.rules.clone());
    assert_eq!(
        compiled.publisher_state("Acme"),
        Some((FileState::Banned, ScopeKind::Policy))
    );
    assert_eq!(compiled.publisher_state("Other"), None);
    // Event rules are the service's business.
    assert!(!c.rules.custom.iter().any(|r| r.id == event.id));
    // The stream's Hello carries the same rules.
    let (_stream, hello) = web.stream_hello().await;
    assert_eq!(hello.rules, c.rules);

    // The admin list: everything, rank order.
    let all: Vec<RuleRecord> = env.admin.get_ok("/api/v1/rules").await;
    assert_eq!(all.len(), 10);
    assert_eq!(all[0].id, early.id);
    assert!(all.iter().all(|r| r.enabled && r.bundle.is_none()));
    assert!(all.iter().all(|r| r.created_by == "alice"));

    // Delete: gone from the rule set; unknown or another organization's id: 404.
    let (status, _) = env
        .admin
        .call(Method::DELETE, &format!("/api/v1/rules/{}", late.id), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        custom_names(&desk.config().await),
        ["same-rank-a", "same-rank-b"]
    );
    let e = expect_error(
        env.admin
            .call(Method::DELETE, &format!("/api/v1/rules/{}", late.id), None)
            .await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(e.field.as_deref(), Some("id"));
    let bob_token = palisade_server::bootstrap(&env.server.db, &name("globex"), &name("bob"))
        .await
        .expect("bootstrap")
        .admin_token
        .expect("token");
    let bob = Admin::new(&env.server, &bob_token);
    let e = expect_error(
        bob.call(Method::DELETE, &format!("/api/v1/rules/{}", a.id), None)
            .await,
        StatusCode::NOT_FOUND,
    );
    assert!(!e.error.contains("acme"), "{}", e.error);
    let theirs: Vec<RuleRecord> = bob.get_ok("/api/v1/rules").await;
    assert!(theirs.is_empty());
    let theirs: Vec<PublisherInfo> = bob.get_ok("/api/v1/publishers").await;
    assert!(theirs.is_empty());
    env.server.stop().await;
}

async fn rule_changes_push_config(backend: Backend) {
    // Its event rule's syslog receiver is on loopback.
    let env = Env::new_with(backend, |c| c.alerts_allow_private_addresses = true).await;
    env.admin.create_policy("servers", "lockdown").await;
    let desk = env.agent("default", "desk01").await;
    let web = env.agent("servers", "web01").await;
    let (mut desk_s, _) = desk.stream_hello().await;
    let (mut web_s, _) = web.stream_hello().await;
    let within = Duration::from_secs(1);
    let mut worst = Duration::ZERO;

    // A rule for servers: web is told, desk is not.
    let t = Instant::now();
    let rule = env
        .admin
        .create_rule(custom("servers only", None, &["servers"], "/opt/x"))
        .await;
    let c = web_s.next_change(within).await;
    worst = worst.max(t.elapsed());
    assert!(c.config_changed && !c.reset && c.hashes.is_empty(), "{c:?}");
    desk_s.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(custom_names(&web.config().await), ["servers only"]);

    // Changes for every policy reach both.
    let everyone: [(&str, Value); 3] = [
        ("/api/v1/publishers/Acme/state", json!({"state": "banned"})),
        ("/api/v1/publishers/Acme/trust", json!({"trust": "low"})),
        (
            "/api/v1/bundles/harden-world-writable",
            json!({"enabled": true}),
        ),
    ];
    for (path, body) in everyone {
        let t = Instant::now();
        let _: Value = env.admin.put_ok(path, body).await;
        for s in [&mut desk_s, &mut web_s] {
            let c = s.next_change(within).await;
            assert!(c.config_changed, "{path}: {c:?}");
        }
        worst = worst.max(t.elapsed());
    }
    let t = Instant::now();
    env.admin
        .create_rule(custom("everyone", None, &[], "/opt/y"))
        .await;
    for s in [&mut desk_s, &mut web_s] {
        assert!(s.next_change(within).await.config_changed);
    }
    worst = worst.max(t.elapsed());

    // A publisher state for one policy: only its computers.
    let _: Value = env
        .admin
        .put_ok(
            "/api/v1/publishers/Acme/state",
            json!({"state": "approved", "policy": "default"}),
        )
        .await;
    assert!(desk_s.next_change(within).await.config_changed);
    web_s.expect_quiet(Duration::from_millis(300)).await;

    // Deleting the servers rule.
    let t = Instant::now();
    let (status, _) = env
        .admin
        .call(Method::DELETE, &format!("/api/v1/rules/{}", rule.id), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(web_s.next_change(within).await.config_changed);
    worst = worst.max(t.elapsed());
    desk_s.expect_quiet(Duration::from_millis(300)).await;
    eprintln!("[figure] {backend:?}: rule/publisher/bundle change -> config_changed on the stream: worst {worst:?}");
    assert!(worst < within);

    // An event rule changes no agent's configuration.
    env.admin
        .create_rule(json!({"name": "alert", "body": {"kind": "event",
            "filter": {}, "actions": [{"do": "syslog", "address": "127.0.0.1:9"}]}}))
        .await;
    desk_s.expect_quiet(Duration::from_millis(300)).await;
    env.server.stop().await;
}

async fn bundles_enable_and_disable(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let list: Vec<BundleInfo> = env.admin.get_ok("/api/v1/bundles").await;
    let names: Vec<&str> = list.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["debian-packages", "harden-world-writable"]);
    assert!(list
        .iter()
        .all(|b| !b.enabled && !b.description.is_empty() && !b.rules.is_empty()));
    assert!(list[0].description.contains("dpkg") && list[0].description.contains("Debian"));
    assert!(list[1].description.contains("/tmp"));

    // An admin's own rule ranked -5; the hardening bundle goes before it.
    env.admin
        .create_rule(custom("mine", Some(-5), &[], "/opt/mine"))
        .await;
    let info: BundleInfo = env
        .admin
        .put_ok(
            "/api/v1/bundles/harden-world-writable",
            json!({"enabled": true}),
        )
        .await;
    assert!(info.enabled);
    let c = agent.config().await;
    assert_eq!(
        custom_names(&c),
        ["block execution from world-writable directories", "mine"]
    );
    let harden = &c.rules.custom[0];
    let paths: Vec<&str> = harden.paths.iter().map(|p| p.as_str()).collect();
    assert_eq!(paths, ["/tmp/**", "/var/tmp/**", "/dev/shm/**"]);
    assert!(harden.operations.execute && !harden.operations.write);
    let harden_id = harden.id;

    // Debian packages: the dpkg updater and the Debian publisher. An admin's
    // own global state for Debian is kept as it is.
    let info: BundleInfo = env
        .admin
        .put_ok("/api/v1/bundles/debian-packages", json!({"enabled": true}))
        .await;
    assert!(info.enabled && info.rules == ["dpkg"]);
    let c = agent.config().await;
    assert!(c.rules.trusted_change.iter().any(|t| matches!(t,
        TrustedChange::Updater { name, programs, package_manager: true, .. }
            if name == "dpkg" && programs == &["dpkg", "apt", "apt-get", "unattended-upgrade"])));
    let compiled = CompiledRules::new(c.rules.clone());
    assert_eq!(compiled.package_manager(), Some("dpkg"));
    assert_eq!(
        compiled.publisher_state("Debian"),
        Some((FileState::Approved, ScopeKind::Global))
    );
    let pubs: Vec<PublisherInfo> = env.admin.get_ok("/api/v1/publishers").await;
    let debian = pubs.iter().find(|p| p.name == "Debian").expect("Debian");
    assert_eq!(debian.states[0].updated_by, "bundle:debian-packages");
    let rules: Vec<RuleRecord> = env.admin.get_ok("/api/v1/rules").await;
    let dpkg = rules.iter().find(|r| r.name == "dpkg").expect("dpkg rule");
    assert_eq!(dpkg.bundle.as_deref(), Some("debian-packages"));
    assert_eq!(dpkg.created_by, "bundle:debian-packages");
    let e = expect_error(
        env.admin
            .call(Method::DELETE, &format!("/api/v1/rules/{}", dpkg.id), None)
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(e.field.as_deref(), Some("id"));
    let list: Vec<BundleInfo> = env.admin.get_ok("/api/v1/bundles").await;
    assert!(list.iter().all(|b| b.enabled));

    // Disabled: the rules leave the rule set (listed, disabled), the
    // bundle's publisher approval goes.
    let info: BundleInfo = env
        .admin
        .put_ok("/api/v1/bundles/debian-packages", json!({"enabled": false}))
        .await;
    assert!(!info.enabled);
    let info: BundleInfo = env
        .admin
        .put_ok(
            "/api/v1/bundles/harden-world-writable",
            json!({"enabled": false}),
        )
        .await;
    assert!(!info.enabled);
    let c = agent.config().await;
    assert_eq!(custom_names(&c), ["mine"]);
    assert!(c.rules.trusted_change.is_empty());
    assert!(c.rules.publishers.is_empty());
    let rules: Vec<RuleRecord> = env.admin.get_ok("/api/v1/rules").await;
    assert_eq!(rules.iter().filter(|r| !r.enabled).count(), 2);

    // An admin's ban of Debian survives enabling and disabling the bundle.
    let _: PublisherInfo = env
        .admin
        .put_ok(
            "/api/v1/publishers/Debian/state",
            json!({"state": "banned"}),
        )
        .await;
    let _: BundleInfo = env
        .admin
        .put_ok("/api/v1/bundles/debian-packages", json!({"enabled": true}))
        .await;
    let compiled = CompiledRules::new(agent.config().await.rules);
    assert_eq!(
        compiled.publisher_state("Debian"),
        Some((FileState::Banned, ScopeKind::Global))
    );
    let _: BundleInfo = env
        .admin
        .put_ok("/api/v1/bundles/debian-packages", json!({"enabled": false}))
        .await;
    let compiled = CompiledRules::new(agent.config().await.rules);
    assert_eq!(
        compiled.publisher_state("Debian"),
        Some((FileState::Banned, ScopeKind::Global))
    );

    // Re-enabled: the same rule, first again.
    let _: BundleInfo = env
        .admin
        .put_ok(
            "/api/v1/bundles/harden-world-writable",
            json!({"enabled": true}),
        )
        .await;
    let c = agent.config().await;
    assert_eq!(c.rules.custom[0].id, harden_id);
    let e = expect_error(
        env.admin
            .call(
                Method::PUT,
                "/api/v1/bundles/no-such-bundle",
                Some(json!({"enabled": true})),
            )
            .await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(e.field.as_deref(), Some("name"));
    env.server.stop().await;
}

async fn validation_names_fields(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let not_found = StatusCode::NOT_FOUND;
    let custom_body = |extra: Value| {
        let mut b = json!({"kind": "custom", "operations": {"execute": true, "write": false},
                           "paths": ["/opt/x"], "action": "block"});
        if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        b
    };
    let event = |filter: Value, actions: Value| json!({"kind": "event", "filter": filter, "actions": actions});
    let rules: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"name": " ", "body": custom_body(json!({}))}),
            unprocessable,
            "name",
        ),
        (
            json!({"name": "x", "rank": 1_000_000_000_000_000i64, "body": custom_body(json!({}))}),
            unprocessable,
            "rank",
        ),
        (
            json!({"name": "x", "policies": ["ghost"], "body": custom_body(json!({}))}),
            not_found,
            "policies[0]",
        ),
        (
            json!({"name": "x", "body": custom_body(json!({"paths": []}))}),
            unprocessable,
            "body.paths",
        ),
        (
            json!({"name": "x", "body": custom_body(json!({"operations": {"execute": false, "write": false}}))}),
            unprocessable,
            "body.operations",
        ),
        (
            json!({"name": "x", "body": custom_body(json!({"conditions": {"nice": 30}, "action": "allow"}))}),
            unprocessable,
            "body.conditions.nice",
        ),
        (
            json!({"name": "x", "body": custom_body(json!({"conditions": {"nice": 5}}))}),
            unprocessable,
            "body.conditions",
        ),
        (
            json!({"name": "x", "body": {"kind": "reputation", "min_trust": 11}}),
            unprocessable,
            "body.min_trust",
        ),
        (
            json!({"name": "x", "body": {"kind": "folder", "dir": "srv/rmm", "parents": [hash(1)]}}),
            unprocessable,
            "body.dir",
        ),
        (
            json!({"name": "x", "body": {"kind": "folder", "dir": "/srv/rmm", "parents": []}}),
            unprocessable,
            "body.parents",
        ),
        (
            json!({"name": "x", "body": {"kind": "trusted_directory", "dir": "/srv/../etc"}}),
            unprocessable,
            "body.dir",
        ),
        (
            json!({"name": "x", "body": {"kind": "trusted_directory", "dir": "/srv/x", "computers": ["web01", "not a name"]}}),
            unprocessable,
            "body.computers[1]",
        ),
        (
            json!({"name": "x", "body": {"kind": "trusted_user", "user": {"by": "user", "name": ""}}}),
            unprocessable,
            "body.user.name",
        ),
        (
            json!({"name": "x", "body": {"kind": "updater"}}),
            unprocessable,
            "body.programs",
        ),
        (
            json!({"name": "x", "body": {"kind": "updater", "programs": ["/usr/bin/apt"]}}),
            unprocessable,
            "body.programs[0]",
        ),
        (
            json!({"name": "x", "body": event(json!({}), json!([]))}),
            unprocessable,
            "body.actions",
        ),
        (
            json!({"name": "x", "body": event(json!({}), json!([{"do": "webhook", "url": "ftp://x/"}]))}),
            unprocessable,
            "body.actions[0].url",
        ),
        (
            json!({"name": "x", "body": event(json!({}), json!([{"do": "syslog"}, {"do": "syslog", "address": "nohost"}]))}),
            unprocessable,
            "body.actions[1].address",
        ),
        // What this server's configuration (the default) does not reach,
        // whatever names resolve to: non-public addresses, its own syslog.
        (
            json!({"name": "x", "body": event(json!({}), json!([{"do": "webhook", "url": "http://169.254.169.254/latest/meta-data/"}]))}),
            unprocessable,
            "body.actions[0].url",
        ),
        (
            json!({"name": "x", "body": event(json!({}), json!([{"do": "syslog", "address": "syslog.example.com:514"}, {"do": "syslog"}]))}),
            unprocessable,
            "body.actions[1].address",
        ),
        (
            json!({"name": "x", "body": event(json!({"max_trust": 11}), json!([{"do": "syslog"}]))}),
            unprocessable,
            "body.filter.max_trust",
        ),
        (
            json!({"name": "x", "body": event(json!({"min_trust": 5, "max_trust": 2}), json!([{"do": "syslog"}]))}),
            unprocessable,
            "body.filter.min_trust",
        ),
        (
            json!({"name": "x", "body": event(json!({"trigger": "file_seen", "kinds": ["blocked"]}), json!([{"do": "syslog"}]))}),
            unprocessable,
            "body.filter.kinds",
        ),
        (
            json!({"name": "x", "body": event(json!({"policies": ["ghost"]}), json!([{"do": "syslog"}]))}),
            not_found,
            "body.filter.policies[0]",
        ),
        (
            json!({"name": "x", "body": event(json!({}), json!([{"do": "move_computer", "policy": "ghost"}]))}),
            not_found,
            "body.actions[0].policy",
        ),
    ];
    for (body, status, field) in rules {
        let e = expect_error(
            env.admin
                .call(Method::POST, "/api/v1/rules", Some(body.clone()))
                .await,
            status,
        );
        assert_eq!(e.field.as_deref(), Some(field), "{body}: {}", e.error);
    }
    // Patterns, kinds and unknown fields are refused by parsing, naming the field.
    for (body, field) in [
        (
            json!({"name": "x", "body": custom_body(json!({"paths": ["relative/x"]}))}),
            "body",
        ),
        (json!({"name": "x", "body": {"kind": "nonsense"}}), "body"),
        (
            json!({"name": "x", "body": custom_body(json!({"colour": "red"}))}),
            "body.colour",
        ),
        (
            json!({"name": "x", "body": custom_body(json!({"operations": {"execute": true, "write": false, "delete": true}}))}),
            "body.operations.delete",
        ),
        (
            json!({"name": "x", "colour": "red", "body": custom_body(json!({}))}),
            "colour",
        ),
    ] {
        let e = expect_error(
            env.admin
                .call(Method::POST, "/api/v1/rules", Some(body))
                .await,
            unprocessable,
        );
        let got = e.field.as_deref().unwrap_or_default();
        assert!(
            got == field || (field == "body" && got.starts_with("body")),
            "{e:?}"
        );
    }
    let rules: Vec<RuleRecord> = env.admin.get_ok("/api/v1/rules").await;
    assert!(rules.is_empty(), "nothing invalid was stored");

    // Other endpoints of the approval model.
    let too_many: Vec<Value> = (0..20_001u64)
        .map(|i| json!({"sha256": hash(i), "trust": 5}))
        .collect();
    let admin_cases: Vec<(Method, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/reputation",
            Some(json!({"source": "", "entries": []})),
            unprocessable,
            "source",
        ),
        (
            Method::POST,
            "/api/v1/reputation",
            Some(
                json!({"source": "s", "entries": [{"sha256": hash(1), "trust": 3}, {"sha256": hash(2), "trust": 11}]}),
            ),
            unprocessable,
            "entries[1].trust",
        ),
        (
            Method::POST,
            "/api/v1/reputation",
            Some(json!({"source": "s", "entries": too_many})),
            unprocessable,
            "entries",
        ),
        (
            Method::PUT,
            "/api/v1/publishers/Acme/state",
            Some(json!({"state": "banned", "policy": "ghost"})),
            not_found,
            "policy",
        ),
        (
            Method::PUT,
            "/api/v1/publishers/Acme/trust",
            Some(json!({"trust": "enormous"})),
            unprocessable,
            "trust",
        ),
        (
            Method::PUT,
            "/api/v1/publishers/bad%01name/state",
            Some(json!({"state": "banned"})),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            Method::POST,
            "/api/v1/requests/abc/grant",
            None,
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            Method::POST,
            "/api/v1/requests/999999/deny",
            None,
            not_found,
            "id",
        ),
        (
            Method::POST,
            "/api/v1/requests/999999/grant",
            Some(json!({"comment": "x\u{1}"})),
            unprocessable,
            "comment",
        ),
        (
            Method::GET,
            "/api/v1/requests?status=bogus",
            None,
            StatusCode::BAD_REQUEST,
            "status",
        ),
        (
            Method::DELETE,
            "/api/v1/rules/x",
            None,
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            Method::PUT,
            "/api/v1/policies/default/levels",
            Some(json!({"level": "lockdown", "approve_existing": "yes"})),
            unprocessable,
            "approve_existing",
        ),
    ];
    for (method, path, body, status, field) in admin_cases {
        let e = expect_error(env.admin.call(method.clone(), path, body).await, status);
        assert_eq!(
            e.field.as_deref(),
            Some(field),
            "{method} {path}: {}",
            e.error
        );
    }
    let agent_cases: Vec<(&str, Value, &str)> = vec![
        (
            "/agent/v1/requests",
            json!({"sha256": hash(1), "path": "", "user": "alice"}),
            "path",
        ),
        (
            "/agent/v1/requests",
            json!({"sha256": hash(1), "path": "/x", "user": ""}),
            "user",
        ),
        (
            "/agent/v1/requests",
            json!({"sha256": hash(1), "path": "/x", "user": "u", "reason": "a\u{7}"}),
            "reason",
        ),
        (
            "/agent/v1/requests",
            json!({"sha256": "nope", "path": "/x", "user": "u"}),
            "sha256",
        ),
        (
            "/agent/v1/approvals",
            json!({"items": [{"sha256": hash(1), "path": "", "origin": {"by": "level_change"}}]}),
            "items[0].path",
        ),
        (
            "/agent/v1/approvals",
            json!({"items": [{"sha256": hash(1), "path": "/x", "origin": {"by": "updater", "rule": 1, "name": ""}}]}),
            "items[0].origin.name",
        ),
        (
            "/agent/v1/approvals",
            json!({"items": [{"sha256": hash(1), "path": "/x", "origin": {"by": "magic"}}]}),
            "items[0].origin.by",
        ),
    ];
    for (path, body, field) in agent_cases {
        let e = expect_error(
            agent.call(Method::POST, path, Some(body.clone())).await,
            unprocessable,
        );
        assert_eq!(
            e.field.as_deref(),
            Some(field),
            "{path} {body}: {}",
            e.error
        );
    }
    env.server.stop().await;
}

/// A webhook URL often holds a secret (a Slack or Teams token in its path
/// or query): admins who may not update rules see it redacted, in the API
/// and the console; those who may, see it whole. (Before: every reader saw
/// it whole.)
async fn webhook_urls_are_redacted_for_readers(backend: Backend) {
    let env = Env::new(backend).await;
    let url = "https://hooks.example.com/services/T000/B000/SECRETTOKEN?token=SECRET2";
    env.admin
        .create_rule(json!({"name": "tell chat", "body": {"kind": "event",
            "filter": {"kinds": ["blocked"]},
            "actions": [{"do": "webhook", "url": url},
                        {"do": "syslog", "address": "syslog.example.com:514"}]}}))
        .await;
    let webhook_of = |list: &[RuleRecord]| -> String {
        let body = serde_json::to_value(&list[0].body).expect("json");
        body["actions"][0]["url"].as_str().expect("url").to_owned()
    };
    let full: Vec<RuleRecord> = env.admin.get_ok("/api/v1/rules").await;
    assert_eq!(webhook_of(&full), url);
    let sec = crate::access::admin_with(&env, "sam", "security-admin", None).await;
    let list: Vec<RuleRecord> = sec.get_ok("/api/v1/rules").await;
    assert_eq!(webhook_of(&list), url, "rules:update sees the whole URL");
    for (who, role) in [("aud", "auditor"), ("appr", "approver")] {
        let reader = crate::access::admin_with(&env, who, role, None).await;
        let (status, v) = reader.get("/api/v1/rules").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(!v.to_string().contains("SECRET"), "{role}: {v}");
        let list: Vec<RuleRecord> = from_value(v);
        assert_eq!(
            webhook_of(&list),
            "https://hooks.example.com/[redacted]",
            "{role}"
        );
        // The rest of the rule is as it was.
        let body = serde_json::to_value(&list[0].body).expect("json");
        assert_eq!(body["actions"][1]["address"], "syslog.example.com:514");
    }
    // The console's rules page renders what the API gives.
    let mut olga = crate::signin::invited(&env, "olga", Some("auditor")).await;
    let (status, _, html) = olga.page("/console/rules").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("tell chat"), "{html}");
    assert!(
        !html.contains("SECRET") && html.contains("hooks.example.com/[redacted]"),
        "{html}"
    );
    env.server.stop().await;
}

async fn config_with_1000_rules(backend: Backend) {
    let env = Env::new(backend).await;
    env.admin.create_policy("servers", "lockdown").await;
    let agent = env.agent("servers", "web01").await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let client = env.admin.client.clone();
        let token = env.admin.token.clone();
        let url = env.server.url("/api/v1/rules");
        tasks.push(tokio::spawn(async move {
            for i in 0..125u64 {
                let n = w * 125 + i;
                let policies: Vec<&str> = if n % 2 == 0 { vec![] } else { vec!["servers"] };
                let body = json!({
                    "name": format!("rule {n}"),
                    "policies": policies,
                    "rank": n,
                    "body": {"kind": "custom", "operations": {"execute": true, "write": n % 3 == 0},
                             "process": {"by": "path", "value": format!("/opt/app{n}/bin/*")},
                             "user": {"by": "group", "name": "staff"},
                             "paths": [format!("/srv/app{n}/**"), format!("/opt/app{n}/lib/*.so")],
                             "action": if n % 2 == 0 { "allow" } else { "block" }}
                });
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("create rule");
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        }));
    }
    for t in tasks {
        t.await.expect("creator");
    }
    eprintln!(
        "[figure] {backend:?}: 1,000 rules created through the API (8 clients): {:?}",
        t.elapsed()
    );
    // Time to the last byte of the answer (the client's own parsing apart):
    // cold = the first fetch after a change (the rule set is assembled),
    // warm = later fetches (the replica's cached rule set).
    let fetch = || async {
        let t = Instant::now();
        let bytes = agent
            .client
            .get(env.server.url("/agent/v1/config"))
            .send()
            .await
            .expect("config")
            .bytes()
            .await
            .expect("body");
        (t.elapsed(), bytes)
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut last = bytes::Bytes::new();
    for i in 0..5 {
        let _: Value = env
            .admin
            .put_ok(
                "/api/v1/publishers/Acme/trust",
                json!({"trust": if i % 2 == 0 { "high" } else { "low" }}),
            )
            .await;
        cold.push(fetch().await.0);
        for _ in 0..4 {
            let (t, b) = fetch().await;
            warm.push(t);
            last = b;
        }
    }
    let config: palisade_api::agent::AgentConfig = serde_json::from_slice(&last).expect("config");
    assert_eq!(config.rules.custom.len(), 1000);
    let ranks_ok = config.rules.custom.windows(2).all(|w| {
        w[0].name.trim_start_matches("rule ").parse::<u64>().ok()
            < w[1].name.trim_start_matches("rule ").parse::<u64>().ok()
    });
    assert!(ranks_ok, "rank order");
    let (cold_median, _) = percentiles(cold);
    let (median, p95) = percentiles(warm);
    eprintln!(
        "[figure] {backend:?}: GET /agent/v1/config with 1,000 rules ({} bytes JSON): assembled {cold_median} µs (median of 5); cached: median {median} µs, p95 {p95} µs",
        last.len()
    );
    assert!(
        cold_median < 500_000,
        "config assembly too slow: {cold_median} µs"
    );
    env.server.stop().await;
}
