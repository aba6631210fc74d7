//! `POST /agent/v1/renew`: an enrolled agent's client certificate renewed
//! before it expires, by the agent itself (over the certificate it has).
//!
//! The new certificate's fingerprint goes to `next_cert_fingerprint`, where
//! [`AgentAuth`] accepts it beside the one it renews; its first use moves
//! it to `cert_fingerprint`, and the old one is refused from then on. So an
//! agent that renewed but never got (or never saved) the answer keeps the
//! certificate it has, and asks again; a revocation covers both.
use super::extract::{AgentAuth, JsonBody};
use super::AppState;
use crate::ca::Ca;
use crate::errors::{ApiError, ApiResult};
use axum::extract::State;
use axum::Json;
use palisade_api::agent::{RenewRequest, RenewResponse};

/// `POST /agent/v1/renew`.
pub(crate) async fn renew(
    State(state): State<AppState>,
    agent: AgentAuth,
    JsonBody(req): JsonBody<RenewRequest>,
) -> ApiResult<Json<RenewResponse>> {
    let csr =
        Ca::parse_csr(&req.csr_pem).map_err(|e| ApiError::bad_request(e.0).field("csr_pem"))?;
    let (certificate_pem, fingerprint) = state
        .ca
        .sign_client(&csr, &agent.name)
        .map_err(|e| ApiError::bad_request(e.0).field("csr_pem"))?;
    let mut tx = state.db.write().await?;
    let updated = sqlx::query(
        "UPDATE computers SET next_cert_fingerprint = $1 WHERE id = $2 AND revoked = 0",
    )
    .bind(fingerprint.to_hex())
    .bind(agent.computer_id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if updated == 0 {
        // Revoked (or removed) since the request was authenticated.
        return Err(ApiError::forbidden(
            "this computer's certificate has been revoked",
        ));
    }
    tx.commit().await?;
    tracing::info!(computer = %agent.name, "client certificate renewed");
    Ok(Json(RenewResponse { certificate_pem }))
}
