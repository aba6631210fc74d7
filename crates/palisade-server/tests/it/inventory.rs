//! Inventory: bulk local approval of an initialization scan.
use crate::both_backends;
use crate::support::*;
use palisade_api::admin::FileDetails;
use palisade_api::agent::{InventoryResponse, StreamMessage, INVENTORY_BATCH_MAX};
use palisade_core::{Approval, ApprovalSource, ScopeKind, Sha256};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(
    inventory_bulk_approval,
    file_states_and_inventory_do_not_deadlock
);

fn batch(hashes: &[Sha256], approve: bool) -> Value {
    let files: Vec<Value> = hashes
        .iter()
        .map(|h| {
            json!({
                "sha256": h,
                "path": format!("/usr/lib/x86_64-linux-gnu/lib{}.so", h.short()),
                "size": 12345,
                "kind": {"kind": "elf", "shared": true}
            })
        })
        .collect();
    json!({ "files": files, "approve_locally": approve })
}

async fn inventory_bulk_approval(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    let other = env.agent("default", "web02").await;
    let mut stream = agent.stream().await;
    assert!(matches!(
        stream.next(Duration::from_secs(5)).await,
        Next::Msg(StreamMessage::Hello { .. })
    ));

    let hashes: Vec<Sha256> = (0..10_000u64).map(|i| hash(1_000_000 + i)).collect();
    let t = Instant::now();
    let mut new_hashes = 0;
    let mut approved = 0;
    for chunk in hashes.chunks(INVENTORY_BATCH_MAX) {
        let r: InventoryResponse = agent
            .post_ok("/agent/v1/inventory", batch(chunk, true))
            .await;
        new_hashes += r.new_hashes;
        approved += r.approved;
    }
    let elapsed = t.elapsed();
    eprintln!(
        "[figure] {backend:?}: inventory of 10,000 files with local approval ({} requests): {elapsed:?}",
        hashes.len().div_ceil(INVENTORY_BATCH_MAX)
    );
    assert_eq!((new_hashes, approved), (10_000, 10_000));
    assert!(
        elapsed < Duration::from_secs(5),
        "inventory too slow: {elapsed:?}"
    );

    // The flood reached the stream as a few reset messages, not 10,000 lines.
    let mut messages = 0;
    loop {
        match stream.next(Duration::from_millis(700)).await {
            Next::Msg(StreamMessage::Changed(c)) => {
                messages += 1;
                assert!(c.reset && c.hashes.is_empty(), "{c:?}");
            }
            Next::Msg(StreamMessage::Heartbeat { .. }) => {}
            Next::Timeout => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((1..=5).contains(&messages), "{messages} messages");

    // Approved here, unknown on the other computer.
    let sample: Vec<Sha256> = hashes.iter().step_by(100).copied().collect();
    let local = Approval::Approved(ApprovalSource {
        scope: ScopeKind::Local,
    });
    assert!(agent
        .lookup(&sample)
        .await
        .results
        .iter()
        .all(|r| r.approval == local));
    assert!(other
        .lookup(&sample)
        .await
        .results
        .iter()
        .all(|r| r.approval == Approval::Unknown));

    // Sent again: nothing new, nothing approved twice.
    let r: InventoryResponse = agent
        .post_ok(
            "/agent/v1/inventory",
            batch(&hashes[..INVENTORY_BATCH_MAX], true),
        )
        .await;
    assert_eq!((r.new_hashes, r.approved), (0, 0));

    // A small scan lists its hashes on the stream; an admin's local ban is
    // never replaced by a scan approval, and a global ban beats the local approval.
    let small: Vec<Sha256> = (0..10u64).map(|i| hash(5_000_000 + i)).collect();
    env.admin
        .set_state(small[0], json!({"state": "banned", "computer": agent.name}))
        .await;
    let _ = stream.next_change(Duration::from_secs(2)).await;
    let r: InventoryResponse = agent
        .post_ok("/agent/v1/inventory", batch(&small, true))
        .await;
    assert_eq!((r.new_hashes, r.approved), (9, 9));
    let c = stream.next_change(Duration::from_secs(2)).await;
    assert_eq!(c.hashes, small[1..].to_vec());
    assert_eq!(
        agent.lookup(&small[..1]).await.results[0].approval.as_str(),
        "banned"
    );
    env.admin
        .set_state(hashes[0], json!({"state": "banned"}))
        .await;
    assert_eq!(
        agent.lookup(&hashes[..1]).await.results[0].approval,
        Approval::Banned(ApprovalSource {
            scope: ScopeKind::Global
        })
    );

    // The catalog and the state's author.
    let d: FileDetails = env
        .admin
        .get_ok(&format!("/api/v1/files/{}", hashes[1]))
        .await;
    assert_eq!(d.instances.len(), 1);
    assert_eq!(d.instances[0].computer, agent.name);
    assert_eq!(d.states.len(), 1);
    assert_eq!(d.states[0].updated_by, format!("scan:{}", agent.name));

    // Without approval: catalogued only.
    let plain: Vec<Sha256> = (0..5u64).map(|i| hash(6_000_000 + i)).collect();
    let r: InventoryResponse = other
        .post_ok("/agent/v1/inventory", batch(&plain, false))
        .await;
    assert_eq!((r.new_hashes, r.approved), (5, 0));
    assert_eq!(
        other.lookup(&plain).await.results[0].approval,
        Approval::Unknown
    );
    env.server.stop().await;
}

/// Regression: an admin setting a file state took the revision counter's
/// row lock before cataloguing the file, while an agent's inventory
/// catalogues first and takes the counter last; on PostgreSQL the two
/// deadlocked on a file new to both (one of them failed with a 500).
async fn file_states_and_inventory_do_not_deadlock(backend: Backend) {
    let env = Env::new(backend).await;
    let agent = env.agent("default", "web01").await;
    for round in 0..20u64 {
        let hashes: Vec<Sha256> = (0..500)
            .map(|i| hash(9_000_000 + round * 1000 + i))
            .collect();
        let inventory = agent.call(
            Method::POST,
            "/agent/v1/inventory",
            Some(batch(&hashes, true)),
        );
        let admin = async {
            let mut out = Vec::new();
            for h in hashes.iter().step_by(50) {
                out.push(
                    env.admin
                        .call(
                            Method::PUT,
                            &format!("/api/v1/files/{h}/state"),
                            Some(json!({"state": "banned", "path": "/opt/x"})),
                        )
                        .await,
                );
            }
            out
        };
        let ((status, v), states) = tokio::join!(inventory, admin);
        assert_eq!(status, StatusCode::OK, "round {round}: inventory: {v}");
        for (status, v) in states {
            assert_eq!(status, StatusCode::OK, "round {round}: file state: {v}");
        }
    }
    env.server.stop().await;
}
