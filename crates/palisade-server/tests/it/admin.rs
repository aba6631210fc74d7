//! Admin API: organizations are isolated from one another.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::{ComputerInfo, EventPage, FileDetails, PolicyInfo, WhoAmI};
use palisade_api::agent::EventAck;
use palisade_core::{Approval, ApprovalSource, ScopeKind};
use reqwest::{Method, StatusCode};
use serde_json::json;

both_backends!(organizations_are_isolated);

async fn organizations_are_isolated(backend: Backend) {
    let env = Env::new(backend).await;
    let acme_agent = env.agent("default", "web01").await;
    let h = hash(77);
    env.admin
        .set_state(h, json!({"state": "approved", "path": "/opt/acme/tool"}))
        .await;
    let ack: EventAck = acme_agent
        .post_ok(
            "/agent/v1/events",
            json!({"events": [{"seq": 1, "event": {
                "time_ms": 1, "kind": "blocked", "operation": "execute",
                "sha256": h, "path": "/opt/acme/tool",
                "approval": {"state": "unknown"}, "level": "lockdown",
                "process": {"pid": 1, "uid": 0, "euid": 0, "loginuid": null,
                            "sessionid": null, "exe": null, "ancestors": []},
                "reason": "x"}}]}),
        )
        .await;
    assert_eq!(ack.stored, 1);

    let globex_token = palisade_server::bootstrap(&env.server.db, &name("globex"), &name("bob"))
        .await
        .expect("bootstrap globex")
        .admin_token
        .expect("token");
    let bob = Admin::new(&env.server, &globex_token);
    let who: WhoAmI = bob.get_ok("/api/v1/whoami").await;
    assert_eq!(
        (who.admin.as_str(), who.organization.as_str()),
        ("bob", "globex")
    );

    // Bob sees none of acme's computers, states, catalog or events.
    let computers: Vec<ComputerInfo> = bob.get_ok("/api/v1/computers").await;
    assert!(computers.is_empty());
    let d: FileDetails = bob.get_ok(&format!("/api/v1/files/{h}")).await;
    assert!(d.states.is_empty() && d.instances.is_empty() && d.effective.is_empty());
    assert_eq!(d.first_seen_ms, None);
    let page: EventPage = bob.get_ok("/api/v1/events").await;
    assert!(page.events.is_empty());
    let policies: Vec<PolicyInfo> = bob.get_ok("/api/v1/policies").await;
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].computers, 0);

    // Acting on acme's computer by name: not found, and the message says
    // nothing about acme.
    let checks = [
        (
            Method::PUT,
            format!("/api/v1/files/{h}/state"),
            Some(json!({"state": "banned", "computer": acme_agent.name})),
        ),
        (
            Method::PUT,
            format!("/api/v1/computers/{}/policy", acme_agent.name),
            Some(json!({"policy": "default"})),
        ),
        (
            Method::POST,
            format!("/api/v1/computers/{}/revoke", acme_agent.name),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/events?computer={}", acme_agent.name),
            None,
        ),
    ];
    for (method, path, body) in checks {
        let e = expect_error(bob.call(method, &path, body).await, StatusCode::NOT_FOUND);
        assert!(!e.error.contains("acme"), "{e:?}");
    }

    // Bob's global ban applies to globex only.
    bob.set_state(h, json!({"state": "banned"})).await;
    assert_eq!(
        acme_agent.lookup(&[h]).await.results[0].approval,
        Approval::Approved(ApprovalSource {
            scope: ScopeKind::Global
        })
    );
    // A globex token enrolls into globex; its computers never see acme's states.
    let globex_agent = enroll(&env.server, &bob.enroll_token("default", 1).await, "web01").await;
    assert_eq!(
        globex_agent.name, "web01",
        "names are unique per organization only"
    );
    assert_eq!(
        globex_agent.lookup(&[h]).await.results[0].approval,
        Approval::Banned(ApprovalSource {
            scope: ScopeKind::Global
        })
    );
    let computers: Vec<ComputerInfo> = env.admin.get_ok("/api/v1/computers").await;
    assert_eq!(computers.len(), 1);

    // Acme's view of the file: its own state and instance, the admin path.
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{h}")).await;
    assert_eq!(d.states.len(), 1);
    assert_eq!(d.states[0].updated_by, "alice");
    assert!(d
        .instances
        .iter()
        .any(|i| i.path == "/opt/acme/tool" && i.computer == "(admin)"));

    // Creating what exists: 409 naming the field.
    let e = expect_error(
        env.admin
            .call(
                Method::POST,
                "/api/v1/policies",
                Some(json!({"name": "default"})),
            )
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(e.field.as_deref(), Some("name"));
    env.server.stop().await;
}
