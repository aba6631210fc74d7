//! Zero-trust admin access: role tables, live revocation, token scope and
//! expiry, cross-organization requests, conditional access, the audit chain.
use crate::both_backends;
use crate::support::*;
use palisade_api::access::{AdminInfo, AuditPage, TokenCreated};
use palisade_api::admin::WhoAmI;
use palisade_authn::audit::{AuditRecord, BreakKind, ChainVerifier, Outcome};
use palisade_core::Sha256;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

both_backends!(
    builtin_roles_allow_and_refuse_as_tabled,
    revoking_a_grant_or_disabling_ends_access_at_the_next_request,
    policy_scoped_grants_reach_only_their_policy,
    token_scope_and_expiry_are_enforced,
    other_organizations_are_not_found,
    conditional_access_refuses_with_a_reason,
    audit_chain_detects_edited_and_deleted_records,
    no_admin_grants_more_than_they_hold,
    a_change_and_its_audit_record_commit_together,
    a_token_made_for_another_admin_is_not_that_admin,
    the_file_page_shows_the_events_its_reader_may_read,
);

async fn no_admin_grants_more_than_they_hold(backend: Backend) {
    let env = Env::new(backend).await;
    add_role(
        &env,
        "admin-manager",
        &["admins:read", "admins:update", "admins:create"],
    )
    .await;
    let mgr = admin_with(&env, "mgr", "admin-manager", None).await;
    let _: AdminInfo = mgr
        .expect(
            Method::POST,
            "/api/v1/admins",
            json!({"name": "newbie"}),
            StatusCode::CREATED,
        )
        .await;
    // Granting what he holds: fine. Owner, or even auditor (reads he lacks): no.
    let _: AdminInfo = mgr
        .post_ok(
            "/api/v1/admins/newbie/grants",
            json!({"role": "admin-manager"}),
        )
        .await;
    for role in ["owner", "auditor"] {
        let (status, v) = mgr
            .call(
                Method::POST,
                "/api/v1/admins/mgr/grants",
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("do not hold"),
            "{v}"
        );
    }
    // Nor take away what he does not hold.
    let (status, v) = mgr
        .call(
            Method::POST,
            "/api/v1/admins/alice/revoke",
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    // The last owner keeps the role and cannot be disabled.
    let (status, v) = env
        .admin
        .call(
            Method::POST,
            "/api/v1/admins/alice/revoke",
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("last owner"),
        "{v}"
    );
    let _: AdminInfo = env
        .admin
        .post_ok("/api/v1/admins/newbie/grants", json!({"role": "owner"}))
        .await;
    // Nor switch off an admin who holds more than he does.
    for who in ["newbie", "alice"] {
        let (status, v) = mgr
            .call(Method::POST, &format!("/api/v1/admins/{who}/disable"), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {v}");
    }
    // A token made for an admin by another ends with its maker's
    // credentials: it was given by his power, now taken back (before, it
    // kept acting as its admin after he left). (mgr's token was made by the
    // owner, and such a token makes no tokens: this maker signs in himself.)
    let mut lead = crate::signin::invited(&env, "lead", Some("admin-manager")).await;
    let csrf = lead.csrf().await;
    let (status, v) = lead
        .api(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"admin": "mgr"})),
            Some(&csrf),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let as_mgr = Admin::new(&env.server, v["token"].as_str().expect("token"));
    let _: Vec<AdminInfo> = as_mgr.get_ok("/api/v1/admins").await;
    let (status, v) = env
        .admin
        .call(Method::POST, "/api/v1/admins/lead/disable", None)
        .await;
    assert!(status.is_success(), "{v}");
    let (status, _) = as_mgr.get("/api/v1/admins").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "made by a disabled admin");
    let _: Vec<AdminInfo> = mgr.get_ok("/api/v1/admins").await;
}

/// A helpdesk admin (`admins:read admins:update`) resets accounts of
/// admins below them. Before, they could make a token for the owner (only
/// `admins:update` was asked) and, with it acting as the owner, ask for the
/// owner's password-reset link or replace the owner's second factor: the
/// account was theirs. Now making a token for someone needs power over
/// everything they hold, and a token made by another admin does nothing to
/// its admin's own account, nor counts as made with a second factor.
async fn a_token_made_for_another_admin_is_not_that_admin(backend: Backend) {
    use crate::signin::{enroll_totp, invited};
    use palisade_api::access::Me;
    let env = Env::new(backend).await;
    add_role(&env, "helpdesk", &["admins:read", "admins:update"]).await;
    // The helpdesk admin signs in with password and second factor.
    let mut hd = invited(&env, "hd", Some("helpdesk")).await;
    let _ = enroll_totp(&mut hd).await;
    let csrf = hd.csrf().await;
    let (status, v) = hd
        .api(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"admin": "alice"})),
            Some(&csrf),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a token acting as the owner: {v}"
    );
    assert!(v.to_string().contains("do not hold"), "{v}");
    // Someone the helpdesk does hold power over: a token for them is fine...
    let _: AdminInfo = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/admins",
            json!({"name": "peer"}),
            StatusCode::CREATED,
        )
        .await;
    let _: AdminInfo = env
        .admin
        .post_ok("/api/v1/admins/peer/grants", json!({"role": "helpdesk"}))
        .await;
    let (status, v) = hd
        .api(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"admin": "peer"})),
            Some(&csrf),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let made: TokenCreated = from_value(v);
    let as_peer = Admin::new(&env.server, &made.token);
    let _: Vec<AdminInfo> = as_peer.get_ok("/api/v1/admins").await;
    // ...but it is not peer: no second factor of theirs was shown...
    let me: Me = as_peer.get_ok("/api/v1/me").await;
    assert!(!me.mfa_verified, "the maker's second factor is not peer's");
    // ...and it cannot reset peer's password, enroll a second factor for
    // them, make tokens, or revoke peer's other tokens.
    let other: TokenCreated = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/tokens",
            json!({"admin": "peer"}),
            StatusCode::CREATED,
        )
        .await;
    for (method, path, body) in [
        (Method::POST, "/api/v1/admins/peer/invite".to_owned(), None),
        (Method::POST, "/api/v1/me/totp".to_owned(), Some(json!({}))),
        (
            Method::POST,
            "/api/v1/me/totp/confirm".to_owned(),
            Some(json!({"code": "000000"})),
        ),
        (Method::POST, "/api/v1/tokens".to_owned(), Some(json!({}))),
        (Method::DELETE, format!("/api/v1/tokens/{}", other.id), None),
    ] {
        let (status, v) = as_peer.call(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert!(
            v.to_string().contains("made by another admin"),
            "{method} {path}: {v}"
        );
    }
    let _: WhoAmI = Admin::new(&env.server, &other.token)
        .get_ok("/api/v1/whoami")
        .await;
    // The refusals are audited.
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let refused = page
        .records
        .iter()
        .filter(|r| r.actor == "peer" && r.outcome == "denied")
        .count();
    assert_eq!(refused, 5, "{:#?}", page.records);
    // It may still revoke itself.
    let (status, v) = as_peer
        .call(Method::DELETE, &format!("/api/v1/tokens/{}", made.id), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, _) = as_peer.get("/api/v1/whoami").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Create custom role `name` with `permissions`, as the owner.
async fn add_role(env: &Env, name: &str, permissions: &[&str]) {
    let _: Value = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/roles",
            json!({"name": name, "permissions": permissions}),
            StatusCode::CREATED,
        )
        .await;
}

/// Add `who` with `role` (org-wide or on `policy`) and return a client
/// with a fresh token for them, made by the owner.
pub(crate) async fn admin_with(env: &Env, who: &str, role: &str, policy: Option<&str>) -> Admin {
    let (status, v) = env
        .admin
        .call(Method::POST, "/api/v1/admins", Some(json!({"name": who})))
        .await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::CONFLICT,
        "add {who}: {v}"
    );
    let mut grant = json!({"role": role});
    if let Some(p) = policy {
        grant["policy"] = json!(p);
    }
    let _: AdminInfo = env
        .admin
        .post_ok(&format!("/api/v1/admins/{who}/grants"), grant)
        .await;
    let t: TokenCreated = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/tokens",
            json!({"admin": who, "name": "test"}),
            StatusCode::CREATED,
        )
        .await;
    Admin::new(&env.server, &t.token)
}

/// One operation of the table: (label, method, path, body, permission it needs).
fn operations() -> Vec<(&'static str, Method, String, Option<Value>)> {
    let h = hash(4242);
    vec![
        (
            "computers:read",
            Method::GET,
            "/api/v1/computers".into(),
            None,
        ),
        (
            "files:read",
            Method::GET,
            format!("/api/v1/files/{h}"),
            None,
        ),
        (
            "files:update",
            Method::PUT,
            format!("/api/v1/files/{h}/state"),
            Some(json!({"state": "approved"})),
        ),
        (
            "events:read",
            Method::GET,
            "/api/v1/events?limit=1".into(),
            None,
        ),
        (
            "policies:read",
            Method::GET,
            "/api/v1/policies".into(),
            None,
        ),
        (
            "policies:create",
            Method::POST,
            "/api/v1/policies".into(),
            Some(json!({"name": "p-NAME", "level": "monitor"})),
        ),
        (
            "policies:update",
            Method::PUT,
            "/api/v1/policies/default/levels".into(),
            Some(json!({"level": "monitor"})),
        ),
        ("rules:read", Method::GET, "/api/v1/rules".into(), None),
        (
            "rules:create",
            Method::POST,
            "/api/v1/rules".into(),
            Some(
                json!({"name": "NAME", "body": {"kind": "trusted_directory", "dir": "/opt/NAME"}}),
            ),
        ),
        ("admins:read", Method::GET, "/api/v1/admins".into(), None),
        (
            "admins:create",
            Method::POST,
            "/api/v1/admins".into(),
            Some(json!({"name": "new-NAME"})),
        ),
        (
            "settings:read",
            Method::GET,
            "/api/v1/settings".into(),
            None,
        ),
        (
            "settings:update",
            Method::PUT,
            "/api/v1/settings".into(),
            Some(json!({"require_mfa": false})),
        ),
        (
            "audit (admins:read)",
            Method::GET,
            "/api/v1/audit".into(),
            None,
        ),
    ]
}

async fn builtin_roles_allow_and_refuse_as_tabled(backend: Backend) {
    let env = Env::new(backend).await;
    // role → the labels of `operations()` it may do.
    let table: &[(&str, &[&str])] = &[
        (
            "owner",
            &[
                "computers:read",
                "files:read",
                "files:update",
                "events:read",
                "policies:read",
                "policies:create",
                "policies:update",
                "rules:read",
                "rules:create",
                "admins:read",
                "admins:create",
                "settings:read",
                "settings:update",
                "audit (admins:read)",
            ],
        ),
        (
            "security-admin",
            &[
                "computers:read",
                "files:read",
                "files:update",
                "events:read",
                "policies:read",
                "policies:create",
                "policies:update",
                "rules:read",
                "rules:create",
                "admins:read",
                "settings:read",
                "audit (admins:read)",
            ],
        ),
        (
            "approver",
            &[
                "computers:read",
                "files:read",
                "files:update",
                "events:read",
                "policies:read",
                "rules:read",
            ],
        ),
        (
            "auditor",
            &[
                "computers:read",
                "files:read",
                "events:read",
                "policies:read",
                "rules:read",
                "admins:read",
                "settings:read",
                "audit (admins:read)",
            ],
        ),
    ];
    for (role, allowed) in table {
        let who = format!("a-{role}");
        let client = admin_with(&env, &who, role, None).await;
        for (label, method, path, body) in operations() {
            let body = body
                .map(|b| serde_json::from_str(&b.to_string().replace("NAME", &who)).expect("json"));
            let (status, v) = client.call(method.clone(), &path, body).await;
            let want_allowed = allowed.contains(&label);
            if want_allowed {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role} should be allowed {label} ({method} {path}): {status} {v}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} should be refused {label} ({method} {path}): {v}"
                );
                let msg = v["error"].as_str().unwrap_or_default();
                assert!(msg.contains("not permitted"), "{role} {label}: {msg}");
            }
        }
    }
}

async fn revoking_a_grant_or_disabling_ends_access_at_the_next_request(backend: Backend) {
    let env = Env::new(backend).await;
    let bob = admin_with(&env, "bob", "security-admin", None).await;
    let h = hash(1);
    let _: Value = bob
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "approved"}),
        )
        .await;
    // A second, independent credential of bob's.
    let t: TokenCreated = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/tokens",
            json!({"admin": "bob"}),
            StatusCode::CREATED,
        )
        .await;
    let bob2 = Admin::new(&env.server, &t.token);
    let _: WhoAmI = bob2.get_ok("/api/v1/whoami").await;

    let info: AdminInfo = env
        .admin
        .post_ok(
            "/api/v1/admins/bob/revoke",
            json!({"role": "security-admin"}),
        )
        .await;
    assert!(info.grants.is_empty());
    assert_eq!(info.tokens, 0, "revoking ends bob's tokens");
    for c in [&bob, &bob2] {
        let (status, v) = c
            .call(
                Method::PUT,
                &format!("/api/v1/files/{h}/state"),
                Some(json!({"state": "banned"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    }

    // A token made after the revocation: bob has no grant, so it can do
    // nothing but say who he is.
    let carol = admin_with(&env, "carol", "approver", None).await;
    let _: Value = carol
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "banned"}),
        )
        .await;
    // Remove carol's grant directly in the database (no token ending): the
    // very next request is still refused, since grants are read per request.
    exec_sql(
        backend,
        &env.db.url,
        "DELETE FROM admin_grants WHERE admin_id = (SELECT id FROM admins WHERE name = 'carol')",
    )
    .await;
    let (status, v) = carol
        .call(
            Method::PUT,
            &format!("/api/v1/files/{h}/state"),
            Some(json!({"state": "approved"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("do not allow"),
        "{v}"
    );

    // A custom role narrowed directly in the database: its holder's very
    // next request is decided on the role's new permissions.
    add_role(&env, "file-setter", &["files:read", "files:update"]).await;
    let erin = admin_with(&env, "erin", "file-setter", None).await;
    let _: Value = erin
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "approved"}),
        )
        .await;
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE roles SET permissions = 'files:read' WHERE name = 'file-setter'",
    )
    .await;
    let (status, v) = erin
        .call(
            Method::PUT,
            &format!("/api/v1/files/{h}/state"),
            Some(json!({"state": "banned"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    // And a grant added in the database counts at once too.
    exec_sql(
        backend,
        &env.db.url,
        "INSERT INTO admin_grants (admin_id, role, policy_id, created_ms, created_by) \
         SELECT id, 'approver', 0, 0, 'test' FROM admins WHERE name = 'erin'",
    )
    .await;
    let _: Value = erin
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "banned"}),
        )
        .await;

    // Disabling: refused at once, tokens ended.
    let dave = admin_with(&env, "dave", "auditor", None).await;
    let _: Value = dave.get_ok("/api/v1/computers").await;
    let info: AdminInfo = env
        .admin
        .post_ok("/api/v1/admins/dave/disable", json!({}))
        .await;
    assert_eq!(info.status, "disabled");
    let (status, _) = dave.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A disabled admin whose token survived (restored in the database) is
    // still refused, with the reason.
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE admin_tokens SET revoked_ms = NULL WHERE admin_id = (SELECT id FROM admins WHERE name = 'dave')",
    )
    .await;
    let (status, v) = dave.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("disabled"),
        "{v}"
    );
    // Nobody disables themselves.
    let (status, _) = env
        .admin
        .call(Method::POST, "/api/v1/admins/alice/disable", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Regression: the console's file page showed its recent events to an
/// admin holding `events:read` on the whole organization only, and then
/// only on the computers where they could read files; an admin reading
/// events in one policy saw none. They are now those the admin may read
/// (`events:read`, where held), and none without it.
async fn the_file_page_shows_the_events_its_reader_may_read(backend: Backend) {
    use crate::signin::invited;
    let env = Env::new(backend).await;
    let h = hash(8);
    web_and_laptop_events(&env, h, ["/srv/web-tool", "/home/lap-tool"]).await;
    add_role(&env, "file-reader", &["files:read"]).await;
    add_role(&env, "event-reader", &["events:read"]).await;
    // Files everywhere, events on laptops only.
    let mut vic = invited(&env, "vic", Some("file-reader")).await;
    let _: AdminInfo = env
        .admin
        .post_ok(
            "/api/v1/admins/vic/grants",
            json!({"role": "event-reader", "policy": "laptops"}),
        )
        .await;
    // Files everywhere, no events.
    let mut fay = invited(&env, "fay", Some("file-reader")).await;
    let events_table = |body: &str| {
        body.split_once("id=\"file-events\"")
            .map(|(_, rest)| rest.split_once("</table>").map_or(rest, |t| t.0).to_owned())
    };
    let (status, _, body) = vic.page(&format!("/console/files/{h}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let table = events_table(&body).expect("vic reads laptops' events");
    assert!(table.contains("/home/lap-tool"), "{table}");
    assert!(!table.contains("/srv/web-tool"), "{table}");
    let (status, _, body) = fay.page(&format!("/console/files/{h}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(events_table(&body), None, "fay reads no events");
}

/// Policies `servers` and `laptops` with a computer each, `web01` and
/// `lap01`, each of which uploaded an event for `h` at its path of `paths`.
async fn web_and_laptop_events(env: &Env, h: Sha256, paths: [&str; 2]) {
    env.admin.create_policy("servers", "monitor").await;
    env.admin.create_policy("laptops", "monitor").await;
    let web = env.agent("servers", "web01").await;
    let lap = env.agent("laptops", "lap01").await;
    for (agent, path) in [(&web, paths[0]), (&lap, paths[1])] {
        let _: Value = agent
            .post_ok(
                "/agent/v1/events",
                json!({ "events": [event_json(1, "blocked", h, path)] }),
            )
            .await;
    }
}

async fn policy_scoped_grants_reach_only_their_policy(backend: Backend) {
    let env = Env::new(backend).await;
    let h = hash(7);
    web_and_laptop_events(&env, h, ["/srv/web", "/home/lap"]).await;
    let erin = admin_with(&env, "erin", "security-admin", Some("servers")).await;
    // Listings show her policy's computers and their events only.
    let computers: Vec<Value> = erin.get_ok("/api/v1/computers").await;
    let names: Vec<&str> = computers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["web01"]);
    let all: Vec<Value> = env.admin.get_ok("/api/v1/computers").await;
    assert_eq!(all.len(), 2);
    let page: Value = erin.get_ok("/api/v1/events").await;
    let paths: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"]["path"].as_str())
        .collect();
    assert_eq!(paths, ["/srv/web"]);
    let page: Value = env.admin.get_ok("/api/v1/events").await;
    assert_eq!(page["events"].as_array().expect("events").len(), 2);
    // Files in her policy: yes; in another policy or globally: no.
    let _: Value = erin
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "approved", "policy": "servers"}),
        )
        .await;
    let _: Value = erin
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "banned", "computer": "web01"}),
        )
        .await;
    for body in [
        json!({"state": "approved", "policy": "laptops"}),
        json!({"state": "approved", "computer": "lap01"}),
        json!({"state": "approved"}),
    ] {
        let (status, v) = erin
            .call(
                Method::PUT,
                &format!("/api/v1/files/{h}/state"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}: {v}");
    }
    // The file's story as she may see it: her policy's computer and states,
    // not the laptops'. The owner sees both (sightings are recorded off the
    // request path: wait for them).
    let _: Value = env
        .admin
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "approved", "policy": "laptops"}),
        )
        .await;
    let computers_of = |v: &Value, key: &str| -> Vec<String> {
        let mut names: Vec<String> = v[key]
            .as_array()
            .expect(key)
            .iter()
            .filter_map(|i| i["computer"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let full: Value = env.admin.get_ok(&format!("/api/v1/files/{h}")).await;
        if computers_of(&full, "instances") == ["lap01", "web01"] {
            assert_eq!(computers_of(&full, "effective"), ["lap01", "web01"]);
            assert!(full["states"].to_string().contains("laptops"), "{full}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sightings: {full}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mine: Value = erin.get_ok(&format!("/api/v1/files/{h}")).await;
    assert_eq!(computers_of(&mine, "instances"), ["web01"], "{mine}");
    assert_eq!(computers_of(&mine, "effective"), ["web01"], "{mine}");
    let states = mine["states"].to_string();
    assert!(
        states.contains("servers") && states.contains("web01"),
        "{mine}"
    );
    assert!(!mine.to_string().contains("lap"), "{mine}");
    // So is the answer to a change she makes.
    let answer: Value = erin
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "approved", "policy": "servers"}),
        )
        .await;
    assert_eq!(computers_of(&answer, "effective"), ["web01"], "{answer}");
    assert!(!answer.to_string().contains("lap"), "{answer}");
    // The console's catalog and file page, the same, for a console admin
    // with the same grant.
    let mut fay = crate::signin::invited(&env, "fay", None).await;
    let _: AdminInfo = env
        .admin
        .post_ok(
            "/api/v1/admins/fay/grants",
            json!({"role": "security-admin", "policy": "servers"}),
        )
        .await;
    let (status, _, html) = fay.page("/console/files").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("/srv/web") && !html.contains("/home/lap"),
        "{html}"
    );
    let (status, _, html) = fay.page(&format!("/console/files/{h}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("web01") && !html.contains("lap01"), "{html}");
    // Levels of her policy only.
    let _: Value = erin
        .put_ok(
            "/api/v1/policies/servers/levels",
            json!({"level": "lockdown"}),
        )
        .await;
    let (status, _) = erin
        .call(
            Method::PUT,
            "/api/v1/policies/laptops/levels",
            Some(json!({"level": "lockdown"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Moving a computer needs both policies.
    let (status, _) = erin
        .call(
            Method::PUT,
            "/api/v1/computers/web01/policy",
            Some(json!({"policy": "laptops"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let _: AdminInfo = env
        .admin
        .post_ok(
            "/api/v1/admins/erin/grants",
            json!({"role": "security-admin", "policy": "laptops"}),
        )
        .await;
    let moved: Value = erin
        .put_ok(
            "/api/v1/computers/web01/policy",
            json!({"policy": "laptops"}),
        )
        .await;
    assert_eq!(moved["policy"], "laptops");
    // Organization-wide objects stay out of reach.
    let (status, _) = erin.get("/api/v1/admins").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn token_scope_and_expiry_are_enforced(backend: Backend) {
    let env = Env::new(backend).await;
    let t: TokenCreated = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/tokens",
            json!({"scope": ["files:read", "computers:read"], "expires_secs": 3600}),
            StatusCode::CREATED,
        )
        .await;
    assert!(t.expires_ms.is_some());
    let narrow = Admin::new(&env.server, &t.token);
    let h = hash(3);
    let _: Value = narrow.get_ok("/api/v1/computers").await;
    let (status, v) = narrow
        .call(
            Method::PUT,
            &format!("/api/v1/files/{h}/state"),
            Some(json!({"state": "approved"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, _) = narrow.get("/api/v1/admins").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A token made with the narrow token is no wider, and expires no later,
    // whatever it asks for.
    for ask in [
        json!({}),
        json!({"scope": ["admins:read", "computers:read"], "expires_secs": 86_400}),
    ] {
        let (status, v) = narrow
            .call(Method::POST, "/api/v1/tokens", Some(ask.clone()))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ask}: {v}");
        let minted: TokenCreated = serde_json::from_value(v).unwrap();
        assert!(
            minted
                .expires_ms
                .is_some_and(|e| e <= t.expires_ms.unwrap()),
            "{ask}: {minted:?}"
        );
        let minted = Admin::new(&env.server, &minted.token);
        let (status, _) = minted.get("/api/v1/admins").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{ask}: wider than its maker");
        let _: Value = minted.get_ok("/api/v1/computers").await;
    }
    // Bad scope and lifetime are refused, named.
    let (status, v) = env
        .admin
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"scope": ["files:fly"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "scope");
    let (status, _) = env
        .admin
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"expires_secs": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Expiry.
    exec_sql(
        backend,
        &env.db.url,
        &format!("UPDATE admin_tokens SET expires_ms = 1 WHERE id = {}", t.id),
    )
    .await;
    let (status, _) = narrow.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Revocation by id.
    let t: TokenCreated = env
        .admin
        .expect(
            Method::POST,
            "/api/v1/tokens",
            json!({}),
            StatusCode::CREATED,
        )
        .await;
    let other = Admin::new(&env.server, &t.token);
    let _: WhoAmI = other.get_ok("/api/v1/whoami").await;
    let (status, _) = env
        .admin
        .call(Method::DELETE, &format!("/api/v1/tokens/{}", t.id), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = other.get("/api/v1/whoami").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn other_organizations_are_not_found(backend: Backend) {
    let env = Env::new(backend).await;
    let _ = admin_with(&env, "bob", "auditor", None).await;
    let token = palisade_server::bootstrap(&env.server.db, &name("globex"), &name("mallory"))
        .await
        .expect("bootstrap")
        .admin_token
        .expect("token");
    let mallory = Admin::new(&env.server, &token);
    // Acme's admin "bob" and a name that exists nowhere answer alike.
    for who in ["bob", "nobody-at-all"] {
        let (status, v) = mallory
            .call(
                Method::POST,
                &format!("/api/v1/admins/{who}/grants"),
                Some(json!({"role": "owner"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"], format!("no admin named {who:?}"));
    }
    let admins: Vec<AdminInfo> = mallory.get_ok("/api/v1/admins").await;
    assert_eq!(
        admins.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        vec!["mallory"]
    );
    let page: AuditPage = mallory.get_ok("/api/v1/audit").await;
    assert!(
        page.records.iter().all(|r| r.actor == "mallory"),
        "globex sees only its own audit chain"
    );
    // Acme's token ids are not globex's to revoke.
    let acme_tokens: Vec<Value> = env.admin.get_ok("/api/v1/tokens").await;
    let id = acme_tokens[0]["id"].as_i64().expect("id");
    let (status, v) = mallory
        .call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v2) = mallory
        .call(Method::DELETE, "/api/v1/tokens/999999", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        v["error"].as_str().map(|s| s.replace(&id.to_string(), "N")),
        v2["error"].as_str().map(|s| s.replace("999999", "N"))
    );
}

async fn conditional_access_refuses_with_a_reason(backend: Backend) {
    let env = Env::new(backend).await;
    let bob = admin_with(&env, "bob", "security-admin", None).await;
    // A change that would lock the caller out is refused.
    let (status, v) = env
        .admin
        .call(
            Method::PUT,
            "/api/v1/settings",
            Some(json!({"trusted_networks": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("lock you out"),
        "{v}"
    );
    let (status, v) = env
        .admin
        .call(
            Method::PUT,
            "/api/v1/settings",
            Some(json!({"trusted_networks": ["10.0.0.300/8"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // Allowed networks include the loopback: fine.
    let _: Value = env
        .admin
        .put_ok(
            "/api/v1/settings",
            json!({"trusted_networks": ["10.0.0.0/8", "127.0.0.0/8", "::1/128"]}),
        )
        .await;
    let _: Value = bob.get_ok("/api/v1/computers").await;
    // Outside the trusted networks (set behind the API's back).
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE orgs SET trusted_networks = '10.0.0.0/8'",
    )
    .await;
    let (status, v) = bob.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("network"),
        "{v}"
    );
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE orgs SET trusted_networks = ''",
    )
    .await;
    // Outside office hours: a window that is never now (a one-minute window
    // twelve hours away).
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 60
        % 1440) as u32;
    let start = (now_min + 720) % 1440;
    let end = start + 1;
    let spec = format!(
        "mon-sun {:02}:{:02}-{:02}:{:02} +00:00",
        start / 60,
        start % 60,
        end / 60,
        end % 60
    );
    exec_sql(
        backend,
        &env.db.url,
        &format!("UPDATE orgs SET office_hours = '{spec}'"),
    )
    .await;
    let (status, v) = bob.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("office hours"),
        "{v}"
    );
    exec_sql(backend, &env.db.url, "UPDATE orgs SET office_hours = ''").await;
    // MFA required: the owner's token comes from the server operator (counts
    // as verified); bob's was made for him by the owner, so bob showed no
    // second factor for it.
    let _: Value = env
        .admin
        .put_ok("/api/v1/settings", json!({"require_mfa": true}))
        .await;
    let (status, v) = bob.get("/api/v1/computers").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("multi-factor"),
        "{v}"
    );
    let _: Value = env.admin.get_ok("/api/v1/computers").await;
    // Every refusal is in the audit log with its reason.
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let denied: Vec<_> = page
        .records
        .iter()
        .filter(|r| r.actor == "bob" && r.outcome == "denied")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:#?}");
}

fn record_of(org: i64, e: &palisade_api::access::AuditEntry) -> AuditRecord {
    AuditRecord {
        seq: e.seq,
        at_ms: e.at_ms,
        org,
        actor: e.actor.clone(),
        action: e.action.clone(),
        object: e.object.clone(),
        source: e.source.clone(),
        outcome: if e.outcome == "allowed" {
            Outcome::Allowed
        } else {
            Outcome::Denied
        },
        reason: e.reason.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
    }
}

/// Verify the chain as `palisade audit verify` does.
async fn verify(admin: &Admin) -> Result<u64, BreakKind> {
    let page: AuditPage = admin.get_ok("/api/v1/audit").await;
    let mut v = ChainVerifier::new();
    for e in &page.records {
        let hash = palisade_authn::audit::parse_hash(&e.hash).expect("hash");
        v.push(&record_of(page.org_id, e), &hash)
            .map_err(|b| b.kind)?;
    }
    v.finish().map(|s| s.records).map_err(|b| b.kind)
}

async fn audit_chain_detects_edited_and_deleted_records(backend: Backend) {
    let env = Env::new(backend).await;
    let _ = admin_with(&env, "bob", "approver", None).await;
    for i in 0..3 {
        let _: Value = env
            .admin
            .put_ok(
                &format!("/api/v1/files/{}/state", hash(i)),
                json!({"state": "approved"}),
            )
            .await;
    }
    let n = verify(&env.admin).await.expect("intact chain");
    assert!(n >= 6, "records: {n}");
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let grant = page
        .records
        .iter()
        .find(|r| r.action.contains("grants"))
        .expect("grant recorded");
    assert_eq!(grant.actor, "alice");
    assert_eq!(grant.outcome, "allowed");
    assert!(grant.after.is_some() && grant.before.is_some());
    assert_eq!(grant.source, "127.0.0.1");

    // Edit a row: the verifier names it.
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3",
    )
    .await;
    assert!(matches!(verify(&env.admin).await, Err(BreakKind::Altered)));
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE audit_log SET actor = 'alice' WHERE seq = 3",
    )
    .await;
    verify(&env.admin).await.expect("restored");
    // Delete a row.
    exec_sql(backend, &env.db.url, "DELETE FROM audit_log WHERE seq = 4").await;
    assert!(matches!(
        verify(&env.admin).await,
        Err(BreakKind::Removed { .. })
    ));
}

/// A permitted change is recorded in the transaction that makes it: one
/// record per change, with the handler's object and after-state, and a
/// change whose record cannot be appended does not happen.
async fn a_change_and_its_audit_record_commit_together(backend: Backend) {
    let env = Env::new(backend).await;
    let count = |page: &AuditPage| page.records.len();
    let start: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    let h = hash(7);
    let _: Value = env
        .admin
        .put_ok(
            &format!("/api/v1/files/{h}/state"),
            json!({"state": "approved"}),
        )
        .await;
    let page: AuditPage = env.admin.get_ok("/api/v1/audit").await;
    assert_eq!(count(&page), count(&start) + 1, "one record per change");
    let last = page.records.last().expect("a record");
    assert_eq!(last.object, format!("file {h}"));
    assert_eq!(last.outcome, "allowed");
    assert!(last.after.is_some(), "{last:?}");
    verify(&env.admin).await.expect("intact chain");

    // The chain's head made unreadable: the record cannot be appended, so
    // the ban is refused and the file stays approved.
    exec_sql(
        backend,
        &env.db.url,
        "UPDATE audit_heads SET hash = 'not a hash'",
    )
    .await;
    let (status, v) = env
        .admin
        .call(
            Method::PUT,
            &format!("/api/v1/files/{h}/state"),
            Some(json!({"state": "banned"})),
        )
        .await;
    assert!(status.is_server_error(), "{status}: {v}");
    let file: Value = env.admin.get_ok(&format!("/api/v1/files/{h}")).await;
    let states = file["states"].as_array().expect("states");
    assert_eq!(states.len(), 1, "{file}");
    assert_eq!(states[0]["state"], "approved", "{file}");
}
