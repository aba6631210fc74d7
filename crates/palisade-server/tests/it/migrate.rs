//! Schema migrations: a database created by schema version 1 is brought
//! forward, keeping its data.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::{
    ComputerInfo, EventPage, FileDetails, PolicyInfo, PublisherInfo, RuleRecord,
};
use palisade_api::agent::EventAck;
use palisade_core::{Approval, ApprovalSource, GlobalState, Level, ScopeKind};
use serde_json::json;
use sqlx::{Connection, Executor};

both_backends!(migrates_a_version_1_database);

/// The version-1 DDL, as the first release of the schema created it.
const V1_SQLITE: &str = include_str!("../../schema/sqlite.sql");
const V1_POSTGRES: &str = include_str!("../../schema/postgres.sql");

fn statements(ddl: &str) -> Vec<String> {
    ddl.lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Version-1 data: an organization, two policies, a computer, states.
fn v1_data() -> Vec<String> {
    vec![
        "INSERT INTO orgs (name, created_ms) VALUES ('acme', 1)".to_owned(),
        "INSERT INTO policies (org_id, name, level, disconnected_level, created_ms) VALUES \
         (1, 'default', 'monitor', 'monitor', 1), (1, 'servers', 'lockdown', 'monitor', 2)"
            .to_owned(),
        format!(
            "INSERT INTO computers (org_id, policy_id, name, hostname, os, agent_version, \
               cert_fingerprint, revoked, enrolled_ms, last_seen_ms, connected_until_ms) \
             VALUES (1, 2, 'db01', 'db01', 'Debian', '0.0.0', '{}', 0, 1, 1, 0)",
            hash(999)
        ),
        format!(
            "INSERT INTO files (org_id, sha256, first_seen_ms) VALUES (1, '{}', 5), (1, '{}', 6)",
            hash(1),
            hash(2)
        ),
        format!(
            "INSERT INTO file_states (org_id, sha256, scope_kind, scope_id, state, updated_ms, \
               updated_by) VALUES (1, '{}', 'global', 0, 'banned', 7, 'alice'), \
               (1, '{}', 'computer', 1, 'approved', 8, 'scan:db01')",
            hash(1),
            hash(2)
        ),
        "UPDATE counters SET value = 2 WHERE name = 'revision'".to_owned(),
        // Received a minute ago: within `event_retention_days` (an event
        // received in 1970 would be deleted at the server's first start).
        format!(
            "INSERT INTO events (id, org_id, computer_id, seq, received_ms, time_ms, kind, \
               sha256, path, event_json) VALUES (1, 1, 1, 1, {}, 9, 'blocked', '{}', \
               '/tmp/old', '{}')",
            now_ms() - 60_000,
            hash(3),
            event_json(1, "blocked", hash(3), "/tmp/old")["event"]
        ),
        "UPDATE counters SET value = 1 WHERE name = 'events'".to_owned(),
        "CREATE TABLE schema_version (version BIGINT NOT NULL)".to_owned(),
        "INSERT INTO schema_version (version) VALUES (1)".to_owned(),
    ]
}

async fn create_v1(backend: Backend, url: &str) {
    let mut stmts = match backend {
        Backend::Sqlite => statements(V1_SQLITE),
        Backend::Postgres => statements(V1_POSTGRES),
    };
    stmts.extend(v1_data());
    match backend {
        Backend::Sqlite => {
            let path = url
                .strip_prefix("sqlite://")
                .and_then(|r| r.split('?').next())
                .expect("sqlite path");
            std::fs::create_dir_all(std::path::Path::new(path).parent().expect("dir"))
                .expect("mkdir");
            let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
            for s in &stmts {
                c.execute(s.as_str()).await.expect(s);
            }
            c.close().await.ok();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
            for s in &stmts {
                c.execute(s.as_str()).await.expect(s);
            }
            c.close().await.ok();
        }
    }
}

async fn migrates_a_version_1_database(backend: Backend) {
    let db = TestDb::new(backend).await;
    create_v1(backend, &db.url).await;
    // Two replicas start together on the old database: one migration.
    let (server, second) = tokio::join!(TestServer::start(&db), TestServer::start(&db));
    second.stop().await;
    assert_eq!(server.db.schema_version().await.expect("version"), 14);
    let token = palisade_server::bootstrap(&server.db, &name("acme"), &name("alice"))
        .await
        .expect("bootstrap")
        .admin_token
        .expect("token for the new admin");
    let admin = Admin::new(&server, &token);

    // The data is all there.
    let policies: Vec<PolicyInfo> = admin.get_ok("/api/v1/policies").await;
    let summary: Vec<(&str, Level, i64)> = policies
        .iter()
        .map(|p| (p.name.as_str(), p.levels.connected, p.computers))
        .collect();
    assert_eq!(
        summary,
        [
            ("default", Level::Monitor, 0),
            ("servers", Level::Lockdown, 1)
        ]
    );
    let computers: Vec<ComputerInfo> = admin.get_ok("/api/v1/computers").await;
    assert_eq!(computers.len(), 1);
    assert_eq!(
        (computers[0].name.as_str(), computers[0].policy.as_str()),
        ("db01", "servers")
    );
    let d: FileDetails = admin.get_ok(&format!("/api/v1/files/{}", hash(1))).await;
    assert_eq!(d.global_state, GlobalState::BannedForAll);
    assert_eq!(d.first_seen_ms, Some(5));
    let d: FileDetails = admin.get_ok(&format!("/api/v1/files/{}", hash(2))).await;
    assert_eq!(
        d.effective[0].approval,
        Approval::Approved(ApprovalSource {
            scope: ScopeKind::Local
        })
    );
    assert_eq!(d.states[0].updated_by, "scan:db01");

    // And version 2 works on it: the prompt level, the epoch, new policies
    // (ids continue), rules, publishers, a new computer.
    let p: PolicyInfo = admin
        .put_ok(
            "/api/v1/policies/servers/levels",
            json!({"level": "prompt", "approve_existing": true}),
        )
        .await;
    assert_eq!(p.levels.connected, Level::Prompt);
    admin.create_policy("new", "monitor").await;
    let rule: RuleRecord = admin
        .create_rule(json!({"name": "r", "policies": ["new"],
            "body": {"kind": "trusted_directory", "dir": "/srv/dist"}}))
        .await;
    assert_eq!(rule.policies, ["new"]);
    let _: PublisherInfo = admin
        .put_ok(
            "/api/v1/publishers/Debian/state",
            json!({"state": "approved", "policy": "servers"}),
        )
        .await;
    let agent = enroll(&server, &admin.enroll_token("new", 1).await, "web01").await;
    let config = agent.config().await;
    assert_eq!(
        (config.policy.as_str(), config.rules.trusted_change.len()),
        ("new", 1)
    );
    // Events kept (migration 8 rebuilt the table on SQLite), with their
    // new identity: the same number at another time is another event.
    let page: EventPage = admin.get_ok("/api/v1/events").await;
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].event.path, "/tmp/old");
    let ack: EventAck = agent
        .post_ok(
            "/agent/v1/events",
            json!({"events": [event_json(1, "blocked", hash(3), "/tmp/new")]}),
        )
        .await;
    assert_eq!(ack.stored, 1);
    let moved: ComputerInfo = admin
        .put_ok("/api/v1/computers/db01/policy", json!({"policy": "new"}))
        .await;
    assert_eq!(moved.policy, "new");
    server.stop().await;

    // Restarting on the migrated database changes nothing.
    let server = TestServer::start(&db).await;
    assert_eq!(server.db.schema_version().await.expect("version"), 14);
    let admin = Admin::new(&server, &token);
    let policies: Vec<PolicyInfo> = admin.get_ok("/api/v1/policies").await;
    assert_eq!(policies.len(), 3);
    server.stop().await;
}
