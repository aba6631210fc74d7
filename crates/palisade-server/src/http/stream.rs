//! `GET /agent/v1/stream`: a long-lived NDJSON response per connected agent.
//!
//! The handler subscribes to the replica's change feed *before* reading the
//! revision it announces in `Hello`, so no change falls between the two; it
//! then spawns a task that filters feed batches for this computer and writes
//! `Changed` lines (hashes batched per feed batch; `reset` above
//! [`crate::store::MAX_HASHES_PER_MESSAGE`] or when the task fell behind),
//! and a `Heartbeat` every [`HEARTBEAT_SECS`] (so the agent can tell a dead
//! connection). Liveness is not written per heartbeat: the stream registers
//! its computer with the replica's [`Liveness`](crate::liveness::Liveness)
//! at open (the computer's connection row through this replica) and leaves
//! at close, and the replica keeps only its own row alive; that also closes
//! the stream of a computer it finds revoked, so a revocation ends the
//! stream within an interval even if its change were missed (it is normally
//! seen at once).
use super::agent::load_config_and_policy;
use super::extract::AgentAuth;
use super::AppState;
use crate::db::revision;
use crate::errors::ApiResult;
use crate::feed::FeedBatch;
use crate::liveness::Opened;
use crate::store::{Relevance, Who};
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use palisade_api::agent::{Changes, StreamMessage, HEARTBEAT_SECS};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A client that does not take a line within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) async fn stream(State(state): State<AppState>, agent: AgentAuth) -> ApiResult<Response> {
    let feed = state.feed.subscribe();
    let mut conn = state.db.pool().acquire().await?;
    let rev = revision(&mut conn).await?;
    // The policy the configuration was read with, after the revision: the
    // one read when the request was authenticated may be older (a move
    // committed in between, at or before `rev`, is not in the feed this
    // stream will see, and changes for the new policy were filtered out).
    let (config, policy_id) =
        load_config_and_policy(&mut conn, &state.rule_cache, agent.computer_id, rev).await?;
    drop(conn);
    let opened = state.liveness.open(agent.computer_id).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let hello = line(&StreamMessage::Hello {
        revision: rev,
        config,
    });
    // The channel is empty: this cannot fail.
    let _ = tx.try_send(hello);
    tracing::debug!(computer = %agent.name, revision = rev, "agent stream opened");
    let who = Who {
        policy_id,
        ..agent.who()
    };
    tokio::spawn(run(state, who, agent.name, rev, opened, feed, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    Ok((
        [
            (CONTENT_TYPE, "application/x-ndjson"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

fn line(msg: &StreamMessage) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

enum Step {
    Continue,
    Close(&'static str),
}

async fn run(
    state: AppState,
    mut who: Who,
    name: String,
    hello_revision: i64,
    opened: Option<Opened>,
    mut feed: broadcast::Receiver<Arc<FeedBatch>>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut shutdown = state.shutdown.clone();
    let mut last_revision = hello_revision;
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(HEARTBEAT_SECS),
        Duration::from_secs(HEARTBEAT_SECS),
    );
    let registered = opened.as_ref().map(|o| o.id);
    let reason = match opened {
        None => "revoked",
        Some(_) if *shutdown.borrow_and_update() => "server shutting down",
        Some(Opened {
            mut revoked,
            mut displaced,
            ..
        }) => loop {
            let step = tokio::select! {
                batch = feed.recv() => match batch {
                    Ok(batch) => on_batch(&state, &mut who, &mut last_revision, &batch, &tx).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        on_lag(&state, &mut last_revision, &tx).await
                    }
                    Err(broadcast::error::RecvError::Closed) => Step::Close("server shutting down"),
                },
                _ = heartbeat.tick() => {
                    send(&tx, &StreamMessage::Heartbeat { revision: last_revision }).await
                }
                // Set (or dropped) only when a liveness refresh found the
                // computer revoked.
                _ = revoked.changed() => Step::Close("revoked"),
                _ = &mut displaced => Step::Close("displaced by newer streams of this computer"),
                _ = shutdown.changed() => Step::Close("server shutting down"),
                _ = tx.closed() => Step::Close("client went away"),
            };
            if let Step::Close(reason) = step {
                break reason;
            }
        },
    };
    tracing::debug!(computer = %name, reason, "agent stream closed");
    if let Some(id) = registered {
        state.liveness.close(who.computer_id, id).await;
    }
}

async fn send(tx: &mpsc::Sender<Bytes>, msg: &StreamMessage) -> Step {
    match tokio::time::timeout(WRITE_TIMEOUT, tx.send(line(msg))).await {
        Ok(Ok(())) => Step::Continue,
        Ok(Err(_)) => Step::Close("client went away"),
        Err(_) => Step::Close("client too slow"),
    }
}

async fn on_batch(
    state: &AppState,
    who: &mut Who,
    last_revision: &mut i64,
    batch: &FeedBatch,
    tx: &mpsc::Sender<Bytes>,
) -> Step {
    if batch.upto <= *last_revision {
        return Step::Continue;
    }
    let fresh: Vec<_> = batch
        .changes
        .iter()
        .filter(|c| c.id > *last_revision)
        .cloned()
        .collect();
    *last_revision = batch.upto;
    let mut rel = Relevance::default();
    rel.add(who, &fresh);
    if rel.computer_changed {
        // Moved or revoked: re-read the computer.
        let row = sqlx::query("SELECT policy_id, revoked FROM computers WHERE id = $1")
            .bind(who.computer_id)
            .fetch_optional(state.db.pool())
            .await;
        match row {
            Ok(Some(row)) => {
                let revoked: i64 = row.try_get(1).unwrap_or(1);
                if revoked != 0 {
                    return Step::Close("revoked");
                }
                if let Ok(p) = row.try_get::<i64, _>(0) {
                    who.policy_id = p;
                }
            }
            Ok(None) => return Step::Close("computer deleted"),
            Err(e) => tracing::warn!(error = %e, "stream: cannot re-read the computer"),
        }
    }
    if !rel.any() {
        return Step::Continue;
    }
    send(
        tx,
        &StreamMessage::Changed(Changes {
            revision: batch.upto,
            hashes: rel.hashes,
            config_changed: rel.config_changed,
            reset: rel.reset,
        }),
    )
    .await
}

/// The stream fell behind the feed: some changes were not seen, so tell the
/// agent to drop its cache.
async fn on_lag(state: &AppState, last_revision: &mut i64, tx: &mpsc::Sender<Bytes>) -> Step {
    let rev = match state.db.pool().acquire().await {
        Ok(mut c) => revision(&mut c).await.unwrap_or(*last_revision),
        Err(_) => *last_revision,
    };
    *last_revision = rev.max(*last_revision);
    send(
        tx,
        &StreamMessage::Changed(Changes {
            revision: *last_revision,
            hashes: Vec::new(),
            config_changed: true,
            reset: true,
        }),
    )
    .await
}
