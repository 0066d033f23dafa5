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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use dunes_detect::IncidentStore;
    use dunes_ledger::{ConsistencyProof, InclusionProof, Ledger, LedgerConfig, RecordKind};
    use tower::ServiceExt as _;

    use super::*;

    async fn get(app: &Router, uri: &str) -> (StatusCode, Vec<u8>) {
        let resp = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn proof_routes_serve_verifiable_proofs() {
        let dir = std::env::temp_dir().join(format!(
            "dunes-api-proof-test-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ));
        let mut cfg = LedgerConfig::new(&dir, "dunes/api-test");
        cfg.rotate_every = None;
        let mut l = Ledger::open(cfg).expect("open");
        for i in 0..20 {
            l.append(RecordKind::Event, i, b"{}", &[]).expect("append");
            if i == 6 {
                l.checkpoint().expect("checkpoint");
            }
        }
        l.close().expect("close");
        let app = routes().with_state(AppState {
            incidents: Arc::new(IncidentStore::new()),
            data_dir: dir.clone(),
            ingest: None,
            max_line_bytes: 1024,
            reload: None,
        });

        let (s, b) = get(&app, "/api/v1/ledger/proof/inclusion?index=3").await;
        assert_eq!(s, StatusCode::OK);
        let p: InclusionProof = serde_json::from_slice(&b).expect("json");
        assert_eq!(p.tree_size, 21);
        assert!(p.checkpoint.is_some());
        assert!(p.verify());

        let (s, b) = get(&app, "/api/v1/ledger/proof/consistency?first=8").await;
        assert_eq!(s, StatusCode::OK);
        let c: ConsistencyProof = serde_json::from_slice(&b).expect("json");
        assert!(c.first_checkpoint.is_some() && c.verify());

        let (s, _) = get(&app, "/api/v1/ledger/proof/inclusion?index=99").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = get(&app, "/api/v1/ledger/proof/consistency?first=0").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = get(&app, "/api/v1/ledger/proof/inclusion").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
