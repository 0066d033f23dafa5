//! Ledger proof and export routes:
//! - `GET /api/v1/ledger/proof/inclusion?index=I[&tree_size=N]`
//! - `GET /api/v1/ledger/proof/consistency?first=M[&second=N]`
//! - `GET /api/v1/ledger/export[?from=A&to=B]`: a signed export bundle as JSON
//!
//! Default tree size / second: the latest signed checkpoint, whose signed note is included.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;

use crate::{ApiError, AppState, RedactionRequest};

/// Body of `POST /api/v1/ledger/redact`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedactBody {
    /// Index of the record whose payload is erased.
    index: u64,
    /// Why (e.g. the erasure request's reference); 1–1024 bytes, no control characters.
    reason: String,
}

/// GDPR erasure of one record's payload (admin only): the ledger appends a `redaction` record
/// signed by its active key, naming the reason and the token's subject, then an `action`
/// record of the request; the record's hash, the chain and every signature stay valid.
#[utoipa::path(post, path = "/api/v1/ledger/redact", tag = "ledger",
    params(("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")),
    request_body(content = RedactBody, description = "`{index, reason}`"),
    responses((status = 200, description = "`{index, redaction_index, action_index}`"), (status = 400), (status = 403)),
    security(("bearer" = [])))]
pub(crate) async fn redact(
    State(st): State<AppState>,
    axum::Extension(c): axum::Extension<crate::auth::Claims>,
    body: axum::body::Bytes,
) -> Result<Json<crate::RedactionOutcome>, ApiError> {
    let b: RedactBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("body must be {{\"index\", \"reason\"}}: {e}"))
    })?;
    let Some(tx) = st.redactions.clone() else {
        return Err(ApiError::Unavailable);
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    tx.send(RedactionRequest {
        index: b.index,
        reason: b.reason,
        actor: c.sub,
        role: c.role.to_string(),
        jti: c.jti,
        reply,
    })
    .await
    .map_err(|_| ApiError::Unavailable)?;
    rx.await
        .map_err(|_| ApiError::Unavailable)?
        .map(Json)
        .map_err(ApiError::BadRequest)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/ledger/proof/inclusion", get(inclusion))
        .route("/api/v1/ledger/proof/consistency", get(consistency))
        .route("/api/v1/ledger/export", get(export))
}

#[derive(Deserialize)]
pub(crate) struct ExportQuery {
    from: Option<u64>,
    to: Option<u64>,
}

/// Builds the export bundle (`dunes export`) in a private temporary directory and returns
/// every file of it (base64) with the summary; `dunes verify` checks the bundle once the
/// files are written back (see docs/api.md).
#[utoipa::path(get, path = "/api/v1/ledger/export", tag = "ledger",
    params(("from" = Option<u64>, Query, description = "first record index"), ("to" = Option<u64>, Query, description = "last record index, inclusive")),
    responses((status = 200, description = "`{summary, files: [{path, base64}]}`"), (status = 400)),
    security(("bearer" = [])))]
pub(crate) async fn export(
    State(st): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dir = st.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        use base64::Engine as _;
        let tmp = std::env::temp_dir().join(format!("dunes-export-{}", uuid::Uuid::new_v4()));
        let out = tmp.join("bundle");
        let res = (|| {
            let summary = dunes_ledger::export(&dir, q.from, q.to, &out).map_err(map_err)?;
            let mut files = Vec::new();
            let mut stack = vec![out.clone()];
            while let Some(d) = stack.pop() {
                let rd = std::fs::read_dir(&d).map_err(|e| ApiError::Internal(e.to_string()))?;
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        let bytes =
                            std::fs::read(&p).map_err(|e| ApiError::Internal(e.to_string()))?;
                        let rel = p.strip_prefix(&out).unwrap_or(&p).display().to_string();
                        files.push(serde_json::json!({
                            "path": rel,
                            "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
                        }));
                    }
                }
            }
            files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
            Ok(serde_json::json!({ "summary": summary, "files": files }))
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        res
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map(Json)
}

#[derive(Deserialize)]
pub(crate) struct InclusionQuery {
    index: u64,
    tree_size: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct ConsistencyQuery {
    first: u64,
    second: Option<u64>,
}

fn map_err(e: dunes_ledger::LedgerError) -> ApiError {
    match e {
        dunes_ledger::LedgerError::InvalidInput(m) => ApiError::BadRequest(m),
        other => ApiError::Internal(other.to_string()),
    }
}

#[utoipa::path(get, path = "/api/v1/ledger/proof/inclusion", tag = "ledger",
    params(("index" = u64, Query), ("tree_size" = Option<u64>, Query)),
    responses((status = 200, description = "RFC 9162 inclusion proof (BLAKE3 Merkle tree)"), (status = 400)),
    security(("bearer" = [])))]
pub(crate) async fn inclusion(
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

#[utoipa::path(get, path = "/api/v1/ledger/proof/consistency", tag = "ledger",
    params(("first" = u64, Query), ("second" = Option<u64>, Query)),
    responses((status = 200, description = "RFC 9162 consistency proof"), (status = 400)),
    security(("bearer" = [])))]
pub(crate) async fn consistency(
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
        let auth = crate::AuthState::open(&dir, crate::AuthConfig::default()).expect("auth");
        let app = routes().with_state(AppState::new(
            Arc::new(IncidentStore::new()),
            dir.clone(),
            Arc::new(auth),
        ));

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
