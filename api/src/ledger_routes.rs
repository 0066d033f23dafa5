//! Ledger proof routes:
//! - `GET /api/v1/ledger/proof/inclusion?index=I[&tree_size=N]`
//! - `GET /api/v1/ledger/proof/consistency?first=M[&second=N]`
//!
//! Default tree size / second: the latest signed checkpoint, whose signed note is included.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;

use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/ledger/proof/inclusion", get(inclusion))
        .route("/api/v1/ledger/proof/consistency", get(consistency))
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: u64,
    tree_size: Option<u64>,
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    first: u64,
    second: Option<u64>,
}

fn map_err(e: dunes_ledger::LedgerError) -> ApiError {
    match e {
        dunes_ledger::LedgerError::InvalidInput(m) => ApiError::BadRequest(m),
        other => ApiError::Internal(other.to_string()),
    }
}

async fn inclusion(
    State(st): State<AppState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<dunes_ledger::InclusionProof>, ApiError> {
    let dir = st.data_dir.clone();
    tokio::task::spawn_blocking(move || dunes_ledger::inclusion_proof(&dir, q.index, q.tree_size))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(Json)
        .map_err(map_err)
}

async fn consistency(
    State(st): State<AppState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<dunes_ledger::ConsistencyProof>, ApiError> {
    let dir = st.data_dir.clone();
    tokio::task::spawn_blocking(move || dunes_ledger::consistency_proof(&dir, q.first, q.second))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(Json)
        .map_err(map_err)
}
