//! Removed paths: instances an agent reports gone become `deleted`, a later
//! sighting revives them, directories moved away take their contents with
//! them, and bad reports are refused, named.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::FileDetails;
use palisade_api::agent::{InventoryResponse, RemovedAck};
use palisade_core::{LocalState, Sha256};
use reqwest::StatusCode;
use serde_json::{json, Value};

both_backends!(removed_paths_mark_instances_deleted);

fn inventory(files: &[(Sha256, &str)]) -> Value {
    let files: Vec<Value> = files
        .iter()
        .map(|(h, p)| json!({"sha256": h, "path": p, "size": 1, "kind": {"kind": "elf", "shared": false}}))
        .collect();
    json!({"files": files, "approve_locally": false})
}

async fn removed_paths_mark_instances_deleted(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;
    let (a, b) = (hash(1), hash(2));
    let _: InventoryResponse = agent
        .post_ok(
            "/agent/v1/inventory",
            inventory(&[
                (a, "/opt/x/tool"),
                (b, "/opt/vendor/lib/libv.so"),
                (b, "/opt/vendorx/libv.so"),
            ]),
        )
        .await;
    let _: InventoryResponse = other
        .post_ok("/agent/v1/inventory", inventory(&[(a, "/opt/x/tool")]))
        .await;
    let states = |d: &FileDetails| -> Vec<(String, String, LocalState)> {
        let mut v: Vec<_> = d
            .instances
            .iter()
            .map(|i| (i.computer.clone(), i.path.clone(), i.local_state))
            .collect();
        v.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        v
    };
    // Removals are stamped no later than the server's clock: report one
    // made just now, after the sightings above.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = palisade_server_now();

    // A file deleted on one computer: only that instance.
    let ack: RemovedAck = agent
        .post_ok(
            "/agent/v1/removed",
            json!({"items": [{"path": "/opt/x/tool", "at_ms": now}]}),
        )
        .await;
    assert_eq!(ack.instances, 1);
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{a}")).await;
    assert_eq!(
        states(&d),
        [
            ("web01".into(), "/opt/x/tool".into(), LocalState::Deleted),
            ("web02".into(), "/opt/x/tool".into(), LocalState::Unapproved),
        ]
    );
    assert!(d.instances.iter().any(|i| i.deleted_ms == Some(now)));
    // Reported twice: nothing more to mark.
    let ack: RemovedAck = agent
        .post_ok(
            "/agent/v1/removed",
            json!({"items": [{"path": "/opt/x/tool", "at_ms": now + 1}]}),
        )
        .await;
    assert_eq!(ack.instances, 0);

    // Seen there again later: present again.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let _: InventoryResponse = agent
        .post_ok("/agent/v1/inventory", inventory(&[(a, "/opt/x/tool")]))
        .await;
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{a}")).await;
    assert!(d
        .instances
        .iter()
        .all(|i| i.local_state == LocalState::Unapproved && i.deleted_ms.is_none()));

    // A directory moved away: what was under it, not its namesakes.
    let ack: RemovedAck = agent
        .post_ok(
            "/agent/v1/removed",
            json!({"items": [{"path": "/opt/vendor", "dir": true, "at_ms": palisade_server_now()}]}),
        )
        .await;
    assert_eq!(ack.instances, 1);
    let d: FileDetails = env.admin.get_ok(&format!("/api/v1/files/{b}")).await;
    assert_eq!(
        states(&d),
        [
            (
                "web01".into(),
                "/opt/vendor/lib/libv.so".into(),
                LocalState::Deleted
            ),
            (
                "web01".into(),
                "/opt/vendorx/libv.so".into(),
                LocalState::Unapproved
            ),
        ]
    );

    // A removal older than the last sighting changes nothing.
    let ack: RemovedAck = other
        .post_ok(
            "/agent/v1/removed",
            json!({"items": [{"path": "/opt/x/tool", "at_ms": 1}]}),
        )
        .await;
    assert_eq!(ack.instances, 0);

    // Bad reports: refused with the field's name, nothing applied.
    for (body, field) in [
        (
            json!({"items": [{"path": "relative", "at_ms": 5}]}),
            "items[0].path",
        ),
        (
            json!({"items": [{"path": "/a", "at_ms": 0}]}),
            "items[0].at_ms",
        ),
        (
            json!({"items": [{"path": "/a\u{0}b", "at_ms": 5}]}),
            "items[0].path",
        ),
    ] {
        let err = expect_error(
            agent
                .call(reqwest::Method::POST, "/agent/v1/removed", Some(body))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        assert_eq!(err.field.as_deref(), Some(field), "{err:?}");
    }
    let too_many: Vec<Value> = (0..palisade_api::agent::INVENTORY_BATCH_MAX + 1)
        .map(|i| json!({"path": format!("/x/{i}"), "at_ms": 5}))
        .collect();
    let err = expect_error(
        agent
            .call(
                reqwest::Method::POST,
                "/agent/v1/removed",
                Some(json!({"items": too_many})),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(err.field.as_deref(), Some("items"), "{err:?}");
}

fn palisade_server_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
