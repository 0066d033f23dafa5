//! `dunes-api`: the axum HTTP server for SOC analysts and log producers.
//!
//! Routes (walking skeleton; authentication arrives with the API issue):
//! - `GET  /healthz`
//! - `GET  /api/v1/incidents?level=&status=&since=&limit=`
//! - `GET  /api/v1/incidents/{id}`
//! - `GET  /api/v1/ledger/checkpoint`
//! - `GET  /api/v1/ledger/proof/inclusion?index=&tree_size=`
//! - `GET  /api/v1/ledger/proof/consistency?first=&second=`
//! - `POST /v1/ingest` (NDJSON or JSON array body)
//! - `POST /api/v1/rules/reload` (hot reload of the rules directory)

mod ledger_routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use dunes_detect::{IncidentFilter, IncidentStatus, IncidentStore, Level};
use dunes_ingest::RawRecord;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// The one error type of this crate's boundary. Its HTTP form never carries
/// internal details: those are logged, not returned.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("ingest is not enabled on this instance")]
    IngestDisabled,
    #[error("the pipeline is shutting down")]
    Unavailable,
    /// A rule reload was refused; the message names the file and line.
    #[error("{0}")]
    Unprocessable(String),
    #[error("internal error")]
    Internal(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::IngestDisabled => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error while serving a request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Bind { .. } | ApiError::Serve(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = match &self {
            ApiError::Internal(_) | ApiError::Bind { .. } | ApiError::Serve(_) => {
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        (status, Json(serde_json::json!({ "error": body }))).into_response()
    }
}

/// What the pipeline says back for one ingest request, once every record
/// in it has been processed and the ledger synced.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestAck {
    pub accepted: u64,
    pub rejected: u64,
    pub incidents: u64,
    pub responses: u64,
}

/// One HTTP ingest request handed to the pipeline.
pub struct IngestRequest {
    pub records: Vec<RawRecord>,
    pub reply: oneshot::Sender<IngestAck>,
}

/// What a successful rule reload says back.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadAck {
    /// Version hash of the rule set now running.
    pub version: String,
    pub rules: u64,
    /// False when the reloaded files equal the running set.
    pub changed: bool,
    /// Stateful rules (unchanged id and SHA-256) whose state was kept.
    pub kept_state: Vec<String>,
}

/// A rule reload request handed to the pipeline; answered between batches
/// with the new version or the rule error (file:line: reason).
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<ReloadAck, String>>,
}

#[derive(Clone)]
pub struct AppState {
    pub incidents: Arc<IncidentStore>,
    pub data_dir: PathBuf,
    pub ingest: Option<mpsc::Sender<IngestRequest>>,
    pub max_line_bytes: usize,
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
}

/// Limits of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/ledger/checkpoint", get(checkpoint))
        .merge(ledger_routes::routes())
        .route("/v1/ingest", post(ingest))
        .route("/api/v1/rules/reload", post(reload_rules))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Binds and serves until `shutdown` resolves. Returns the bound address
/// through `bound` (useful with port 0).
pub async fn serve(
    cfg: ServerConfig,
    state: AppState,
    bound: Option<oneshot::Sender<SocketAddr>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ApiError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ApiError::Serve)?;
    tracing::info!(%addr, "HTTP API listening");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    axum::serve(listener, router(state, cfg.max_body_bytes))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ApiError::Serve)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Deserialize)]
struct IncidentQuery {
    level: Option<u8>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn list_incidents(
    State(st): State<AppState>,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let level = q
        .level
        .map(Level::try_from)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let status = q
        .status
        .as_deref()
        .map(|s| match s {
            "open" => Ok(IncidentStatus::Open),
            "acknowledged" => Ok(IncidentStatus::Acknowledged),
            "resolved" => Ok(IncidentStatus::Resolved),
            other => Err(ApiError::BadRequest(format!(
                "status must be open, acknowledged or resolved, got {other:?}"
            ))),
        })
        .transpose()?;
    let since = q
        .since
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::BadRequest(format!("since must be RFC 3339, got {s:?}")))
        })
        .transpose()?;
    let filter = IncidentFilter {
        level,
        status,
        since,
        limit: Some(q.limit.unwrap_or(1000).min(10_000)),
    };
    let list = st.incidents.list(&filter);
    Ok(Json(
        serde_json::json!({ "count": list.len(), "incidents": list }),
    ))
}

async fn get_incident(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<dunes_detect::Incident>, ApiError> {
    st.incidents.get(&id).map(Json).ok_or(ApiError::NotFound)
}

async fn checkpoint(State(st): State<AppState>) -> Result<Response, ApiError> {
    let dir = st.data_dir.clone();
    let cp = tokio::task::spawn_blocking(move || dunes_ledger::read_latest_checkpoint(&dir))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match cp {
        Some(cp) => Ok(Json(cp).into_response()),
        None => Err(ApiError::NotFound),
    }
}

async fn ingest(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<IngestAck>), ApiError> {
    let Some(tx) = st.ingest.clone() else {
        return Err(ApiError::IngestDisabled);
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(uuid_like);
    let records = dunes_ingest::split_http_body(&body, &request_id, st.max_line_bytes)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (reply, rx) = oneshot::channel();
    tx.send(IngestRequest { records, reply })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let ack = rx.await.map_err(|_| ApiError::Unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(ack)))
}

async fn reload_rules(State(st): State<AppState>) -> Result<Json<ReloadAck>, ApiError> {
    let Some(tx) = st.reload.clone() else {
        return Err(ApiError::Unavailable);
    };
    let (reply, rx) = oneshot::channel();
    tx.send(ReloadRequest { reply })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    match rx.await.map_err(|_| ApiError::Unavailable)? {
        Ok(ack) => Ok(Json(ack)),
        Err(e) => Err(ApiError::Unprocessable(e)),
    }
}

/// A request id unique within this process: start time plus a counter.
fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| Utc::now().timestamp_micros());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("http-{start:x}-{n}")
}
