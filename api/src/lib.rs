//! `dunes-api`: the axum HTTP server for SOC analysts and log producers.
//!
//! Every route except `GET /healthz` requires `Authorization: Bearer <token>` (ML-DSA-65
//! signed, see [`auth`]); the role × route matrix is [`auth::allowed_roles`]; state-changing
//! routes also need an `Idempotency-Key` ([`idempotency`]). Routes:
//! - `GET  /healthz`
//! - `GET  /api/v1/incidents?level=&status=&since=&limit=`, `GET /api/v1/incidents/{id}`
//! - `POST /api/v1/incidents/{id}/ack | assign | escalate | resolve`
//! - `POST /api/v1/query` (read-only hunting SQL)
//! - `GET  /api/v1/rules`, `GET /api/v1/rules/{id}`, `POST /api/v1/rules/validate`,
//!   `POST /api/v1/rules/reload`
//! - `GET  /api/v1/ledger/checkpoint | proof/inclusion | proof/consistency | export`
//! - `GET  /api/v1/keys`, `GET /metrics`, `GET /openapi.json`
//! - `POST /v1/ingest` (NDJSON or JSON array body), `POST /v1/traces`, `POST /v1/logs`
//!   (OTLP/HTTP, protobuf or JSON)

pub mod auth;
mod console;
pub mod hunt;
pub mod idempotency;
mod ledger_routes;
mod openapi;
mod otlp_grpc;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use dunes_detect::{
    ActionKind, Disposition, Incident, IncidentAction, IncidentFilter, IncidentStatus,
    IncidentStore, Level,
};
use dunes_ingest::RawRecord;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use auth::{Claims, Role, TokenError, TokenVerifier};
pub use console::{IncidentRecords, incident_records};
pub use hunt::HuntConfig;

/// The one error type of this crate's boundary. Its HTTP form never carries
/// internal details: those are logged, not returned.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    #[error("Content-Encoding {0:?} is not accepted: send the body uncompressed")]
    UnsupportedEncoding(String),
    #[error("Content-Type {0:?} is not accepted here: {1}")]
    UnsupportedMediaType(String, &'static str),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
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
        if matches!(
            self,
            ApiError::TooLarge(_)
                | ApiError::BodyTimeout(_)
                | ApiError::UnsupportedEncoding(_)
                | ApiError::TooManyRequests { .. }
        ) {
            BLOCKED_REQUESTS.fetch_add(1, Ordering::Relaxed);
        }
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedEncoding(_) | ApiError::UnsupportedMediaType(..) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
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
        let mut resp = (status, Json(serde_json::json!({ "error": body }))).into_response();
        match &self {
            ApiError::Unauthorized => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"dunes\""),
                );
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
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

/// Why the pipeline refused an incident action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRefused {
    NotFound,
    Conflict(String),
}

/// What an applied incident action produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub action: IncidentAction,
    pub incident: Incident,
    /// Response records triggered (escalation to Level 3).
    pub responses: u64,
}

/// An incident action handed to the pipeline (the ledger's single writer); applied
/// between batches, after it is ledgered.
pub struct ActionRequest {
    pub action: IncidentAction,
    pub reply: oneshot::Sender<Result<ActionOutcome, ActionRefused>>,
}

static FORGED_TOKENS: AtomicU64 = AtomicU64::new(0);
static REVOKED_KEY_TOKENS: AtomicU64 = AtomicU64::new(0);
static BLOCKED_REQUESTS: AtomicU64 = AtomicU64::new(0);
static LEDGER_VERIFY_FAILURES: AtomicU64 = AtomicU64::new(0);

/// What the API saw since the process started that the pipeline's
/// self-monitor watches (DUNES §10.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecurityCounts {
    /// Bearer tokens refused as forgeries (bad signature, unknown key,
    /// wrong algorithm): a cryptography-compromise indicator.
    pub forged_tokens: u64,
    /// Tokens signed by a key listed in `[auth] revoked_token_keys`.
    pub revoked_key_tokens: u64,
    /// Requests refused for their volume or shape: rate limited (429),
    /// body too large (413), too slow (408), compressed (415).
    pub blocked_requests: u64,
    /// `GET /api/v1/ledger/verify` runs that found the ledger broken
    /// (a checkpoint signature, a hash chain or a proof failing).
    pub ledger_verify_failures: u64,
}

/// The counters now.
pub fn security_counts() -> SecurityCounts {
    SecurityCounts {
        forged_tokens: FORGED_TOKENS.load(Ordering::Relaxed),
        revoked_key_tokens: REVOKED_KEY_TOKENS.load(Ordering::Relaxed),
        blocked_requests: BLOCKED_REQUESTS.load(Ordering::Relaxed),
        ledger_verify_failures: LEDGER_VERIFY_FAILURES.load(Ordering::Relaxed),
    }
}

pub(crate) fn count_ledger_verify_failure() {
    LEDGER_VERIFY_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// One authenticated API request, ledgered by the pipeline as an `access`
/// record (kind 10): who read or changed what, and what they got back.
#[derive(Clone, Debug, Serialize)]
pub struct AccessRecord {
    /// Always `"api_access"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the answer was sent (RFC 3339, UTC).
    pub at: String,
    pub sub: String,
    pub role: Role,
    pub jti: String,
    pub ip: String,
    pub method: String,
    /// The route template (`/api/v1/incidents/{id}`).
    pub route: String,
    /// The request path as sent.
    pub path: String,
    /// BLAKE3 (hex) of the query string, a 0x00 byte and the body.
    pub params_blake3: String,
    /// The hunting query's SQL text (`POST /api/v1/query`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    pub status: u16,
    /// Response body size, when known before it is sent.
    pub result_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A GDPR erasure of one ledger record's payload, handed to the pipeline (the ledger's
/// single writer): a signed `redaction` record naming `reason` and the requesting subject,
/// then an `action` record saying who asked.
pub struct RedactionRequest {
    pub index: u64,
    pub reason: String,
    pub actor: String,
    pub role: String,
    pub jti: String,
    pub reply: oneshot::Sender<Result<RedactionOutcome, String>>,
}

/// A record the pipeline (the ledger's single writer) appends for an API caller: a
/// regulator report's digest (`POST /api/v1/reports/digest`), ledgered as an `action`
/// record; answered with its index once the ledger is synced.
pub struct RecordRequest {
    pub payload: serde_json::Value,
    pub reply: oneshot::Sender<Result<u64, String>>,
}

/// What an applied redaction wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RedactionOutcome {
    /// The record whose payload was erased.
    pub index: u64,
    /// The signed `redaction` record.
    pub redaction_index: u64,
    /// The `action` record ledgering the request.
    pub action_index: u64,
}

/// `[auth]` settings: authentication, rate limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Local development only: every request is treated as `admin` (logged loudly).
    pub disabled: bool,
    /// Longest token lifetime accepted and issued, in seconds (default 900).
    pub max_token_ttl_secs: i64,
    /// Requests per second per token (`jti`), and burst.
    pub per_token_rps: u32,
    pub per_token_burst: u32,
    /// Requests per second per client IP, and burst.
    pub per_ip_rps: u32,
    pub per_ip_burst: u32,
    /// Body limit of the JSON routes (actions, query, validate), in bytes.
    pub max_json_body_bytes: usize,
    /// A request body must arrive completely within this many milliseconds
    /// (slow-loris bodies get 408).
    pub body_read_timeout_ms: u64,
    /// Retired token keys (base64 of the raw ML-DSA-65 public key, as `GET
    /// /api/v1/keys` shows it): a token one of them signed is refused and
    /// raises a Level 3 incident at once.
    pub revoked_token_keys: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            disabled: false,
            max_token_ttl_secs: auth::DEFAULT_MAX_TTL_SECS,
            per_token_rps: 200,
            per_token_burst: 400,
            per_ip_rps: 1000,
            per_ip_burst: 2000,
            max_json_body_bytes: 256 * 1024,
            body_read_timeout_ms: 30_000,
            revoked_token_keys: Vec::new(),
        }
    }
}

/// Authentication state shared by every request.
pub struct AuthState {
    pub cfg: AuthConfig,
    pub verifier: TokenVerifier,
    /// Responses of state-changing requests by (token, `Idempotency-Key`).
    pub idempotency: idempotency::IdempotencyStore,
    pub token_public_key: Vec<u8>,
    per_token: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    checks: std::sync::atomic::AtomicU64,
}

impl AuthState {
    /// Loads (or generates) the token key of `data_dir`.
    pub fn open(data_dir: &std::path::Path, cfg: AuthConfig) -> Result<AuthState, ApiError> {
        let key = auth::load_or_generate_key(data_dir)?;
        if cfg.disabled {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED ([auth] disabled = true): every request is treated as admin; never use this outside local development"
            );
        }
        let nz = |v: u32| NonZeroU32::new(v.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(AuthState {
            verifier: TokenVerifier::new(&key, cfg.max_token_ttl_secs)
                .with_revoked(&cfg.revoked_token_keys)
                .map_err(|e| ApiError::BadRequest(format!("[auth] {e}")))?,
            idempotency: idempotency::IdempotencyStore::open(
                &auth::token_key_dir(data_dir),
                chrono::Utc::now().timestamp(),
            )?,
            token_public_key: key.public_key().to_vec(),
            per_token: RateLimiter::keyed(
                Quota::per_second(nz(cfg.per_token_rps)).allow_burst(nz(cfg.per_token_burst)),
            ),
            per_ip: RateLimiter::keyed(
                Quota::per_second(nz(cfg.per_ip_rps)).allow_burst(nz(cfg.per_ip_burst)),
            ),
            checks: std::sync::atomic::AtomicU64::new(0),
            cfg,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub incidents: Arc<IncidentStore>,
    pub data_dir: PathBuf,
    pub ingest: Option<mpsc::Sender<IngestRequest>>,
    pub max_line_bytes: usize,
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    pub auth: Arc<AuthState>,
    pub actions: Option<mpsc::Sender<ActionRequest>>,
    /// Ledger redactions (admin only).
    pub redactions: Option<mpsc::Sender<RedactionRequest>>,
    /// Report digests to ledger (auditor, admin).
    pub records: Option<mpsc::Sender<RecordRequest>>,
    /// Access audit: every authenticated request but ingest, ledgered as an
    /// `access` record (None: not recorded, e.g. no pipeline attached).
    pub access: Option<mpsc::Sender<AccessRecord>>,
    /// The running rules (published by the pipeline at start and on every reload).
    pub rules: Arc<RwLock<Vec<serde_json::Value>>>,
    pub hunt: HuntConfig,
    /// Webhook delivery state (None: no webhook configured).
    pub outputs: Option<Arc<dyn OutputsView>>,
    /// Regulatory notification regimes (clocks of Level 3 incidents).
    pub notification: Arc<dunes_detect::notification::NotificationClocks>,
    /// Set to true when the server begins shutting down: long-lived answers (the
    /// console's live stream) end, so that the graceful shutdown does not wait for them.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Delivery state of one webhook destination (`GET /api/v1/outputs`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    pub name: String,
    /// `scheme://host[:port]` (the path may hold a secret and is not shown).
    pub endpoint: String,
    pub format: String,
    /// Queued, not yet delivered (persisted across restarts).
    pub pending: u64,
    /// Delivered since start.
    pub delivered: u64,
    /// Failed attempts since start (each is retried with backoff).
    pub failed_attempts: u64,
    /// Deliveries given up on, in all (their bodies are in the dead letters).
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the pipeline's outputs tell the API.
pub trait OutputsView: Send + Sync {
    fn webhooks(&self) -> Vec<WebhookStatus>;
    /// The newest `limit` dead letters of destination `name` (None: no such destination).
    fn dead_letters(&self, name: &str, limit: usize) -> Option<Vec<serde_json::Value>>;
}

impl AppState {
    /// A state with no pipeline attached (ingest, reload and actions answer 503/501).
    pub fn new(incidents: Arc<IncidentStore>, data_dir: PathBuf, auth: Arc<AuthState>) -> Self {
        AppState {
            incidents,
            data_dir,
            ingest: None,
            max_line_bytes: 1024 * 1024,
            reload: None,
            auth,
            actions: None,
            redactions: None,
            records: None,
            access: None,
            rules: Arc::default(),
            hunt: HuntConfig::default(),
            outputs: None,
            notification: Arc::default(),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

/// Limits of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// A second listener serving only `GET /metrics`, without authentication,
    /// for a stock Prometheus scraper (keep it on loopback or a private
    /// network); `None`: metrics only on the API, with an auditor token.
    pub metrics_listen: Option<SocketAddr>,
    /// A connection must send its request line and headers within this time
    /// (slow-loris clients are disconnected).
    pub header_read_timeout: std::time::Duration,
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static H: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    H.get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let _ = prometheus();
    let json_limit = DefaultBodyLimit::max(state.auth.cfg.max_json_body_bytes);
    let (grpc_traces, grpc_logs) = otlp_grpc::services(state.clone(), max_body_bytes);
    Router::new()
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/incidents/{id}/ack", post(ack).layer(json_limit))
        .route(
            "/api/v1/incidents/{id}/assign",
            post(assign).layer(json_limit),
        )
        .route(
            "/api/v1/incidents/{id}/escalate",
            post(escalate).layer(json_limit),
        )
        .route(
            "/api/v1/incidents/{id}/resolve",
            post(resolve).layer(json_limit),
        )
        .route(
            "/api/v1/incidents/{id}/notify",
            post(notify).layer(json_limit),
        )
        .route(
            "/api/v1/incidents/{id}/comment",
            post(comment).layer(json_limit),
        )
        .route(
            "/api/v1/incidents/{id}/deescalate",
            post(deescalate).layer(json_limit),
        )
        .route(
            "/api/v1/incidents/{id}/suppress",
            post(suppress).layer(json_limit),
        )
        .route("/api/v1/incidents/stream", get(console::stream))
        .route(
            "/api/v1/incidents/{id}/ledger",
            get(console::incident_ledger),
        )
        .route("/api/v1/session", get(console::session))
        .route("/api/v1/overview", get(console::overview))
        .route("/api/v1/ledger/verify", get(console::verify_ledger))
        .route("/api/v1/notifications", get(list_notifications))
        .route(
            "/api/v1/reports/digest",
            post(report_digest).layer(json_limit),
        )
        .route("/api/v1/query", post(query).layer(json_limit))
        .route("/api/v1/rules", get(list_rules))
        .route("/api/v1/rules/{id}", get(get_rule))
        .route(
            "/api/v1/rules/validate",
            post(validate_rule).layer(json_limit),
        )
        .route("/api/v1/rules/reload", post(reload_rules))
        .route("/api/v1/keys", get(keys))
        .route("/api/v1/outputs", get(outputs_status))
        .route(
            "/api/v1/outputs/webhooks/{name}/dead-letters",
            get(webhook_dead_letters),
        )
        .route("/api/v1/ledger/checkpoint", get(checkpoint))
        .route(
            "/api/v1/ledger/redact",
            post(ledger_routes::redact).layer(json_limit),
        )
        .merge(ledger_routes::routes())
        .route(
            "/v1/ingest",
            post(ingest).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route(
            "/v1/traces",
            post(otlp_traces).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route(
            "/v1/logs",
            post(otlp_logs).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route_service(otlp_grpc::TRACES_PATH, grpc_traces)
        .route_service(otlp_grpc::LOGS_PATH, grpc_logs)
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi::openapi_json))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), max_body_bytes),
            guard,
        ))
        .route("/healthz", get(healthz))
        .merge(console::assets())
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
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
    let metrics = match cfg.metrics_listen {
        None => None,
        Some(m) => {
            let l = tokio::net::TcpListener::bind(m)
                .await
                .map_err(|source| ApiError::Bind { addr: m, source })?;
            let at = l.local_addr().map_err(ApiError::Serve)?;
            tracing::info!(addr = %at, "Prometheus metrics listening (GET /metrics, no authentication)");
            Some(l)
        }
    };
    tracing::info!(%addr, "HTTP API listening");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let closing = state.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    let api = serve_http(
        listener,
        router(state, cfg.max_body_bytes),
        cfg.header_read_timeout,
        shutdown,
    );
    let Some(metrics) = metrics else {
        return api.await.map_err(ApiError::Serve);
    };
    let scrape = serve_http(
        metrics,
        metrics_router(),
        cfg.header_read_timeout,
        std::future::pending::<()>(),
    );
    // the metrics listener closes with the API
    tokio::select! {
        r = api => r.map_err(ApiError::Serve),
        r = scrape => r.map_err(ApiError::Serve),
    }
}

/// HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on `listener` until `shutdown` resolves, then waits for the open
/// connections to finish their requests. Like `axum::serve`, plus a header
/// read timeout (axum's own server sets no timer, so a client that never
/// finishes its headers held its connection forever). Each request carries
/// the peer address as `ConnectInfo<SocketAddr>`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // e.g. out of file descriptors: back off, keep serving
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let svc = app
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            });
        // HTTP/1.1, and HTTP/2 with prior knowledge (OTLP/gRPC exporters).
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The unauthenticated scrape endpoint of [`ServerConfig::metrics_listen`].
pub fn metrics_router() -> Router {
    let _ = prometheus();
    Router::new()
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
}

/// Error responses produced outside our handlers (extractor rejections, 405, 413) are
/// plain text that may echo parser details: they become `{"error": "<reason>"}`.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let mut out = (status, Json(serde_json::json!({ "error": reason }))).into_response();
    for h in [header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::ALLOW] {
        if let Some(v) = resp.headers().get(&h) {
            out.headers_mut().insert(h, v.clone());
        }
    }
    out
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn retry_after(nu: &governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
    let wait = nu.wait_time_from(DefaultClock::default().now());
    ApiError::TooManyRequests {
        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

/// Authentication, rate limiting, authorisation and (state-changing routes) replay
/// protection of every route but `/healthz`, in that order; also the request metrics.
async fn guard(
    State((st, max_body_bytes)): State<(AppState, usize)>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let limit = if auth::is_ingest_route(&route) {
        max_body_bytes
    } else {
        st.auth.cfg.max_json_body_bytes
    };
    let authz = authorize(&st, &mut req, &route, &method);
    // set once the token is valid, even when the role check then refused it
    let claims = req.extensions().get::<Claims>().cloned();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let ip = client_ip(&req);
    let idempotency_key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| k.chars().take(idempotency::MAX_KEY_LEN).collect::<String>());
    let mut body = axum::body::Bytes::new();
    let resp = match authz {
        Ok(()) => match read_body(req, limit, st.auth.cfg.body_read_timeout_ms).await {
            Ok((req, bytes)) => {
                body = bytes;
                if auth::state_changing(&method, &route) {
                    match idempotent(&st, req, &body, next).await {
                        Ok(r) => r,
                        Err(e) => e.into_response(),
                    }
                } else {
                    next.run(req).await
                }
            }
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    // Access audit: authenticated requests (refused ones included) but
    // ingest (its events are ledgered themselves) and rate-limit refusals
    // (a flood must not become ledger records).
    if let (Some(c), Some(tx)) = (claims, &st.access)
        && !auth::is_ingest_route(&route)
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        let mut h = blake3::Hasher::new();
        h.update(query.as_bytes());
        h.update(&[0]);
        h.update(&body);
        let sql = (route == "/api/v1/query")
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| v.get("sql").and_then(|s| s.as_str()).map(str::to_owned));
        let rec = AccessRecord {
            kind: "api_access",
            at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            sub: c.sub,
            role: c.role,
            jti: c.jti,
            ip: ip.to_string(),
            method: method.to_string(),
            route: route.clone(),
            path,
            params_blake3: h.finalize().to_hex().to_string(),
            sql,
            status: status.as_u16(),
            result_bytes: axum::body::HttpBody::size_hint(resp.body()).exact(),
            idempotency_key,
        };
        // waits when the pipeline is behind: an access is never dropped
        if tx.send(rec).await.is_err() {
            tracing::error!(%route, "access audit: the pipeline is gone, the access is not ledgered");
        }
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", resp.status().as_u16().to_string()),
    ];
    metrics::counter!("dunes_http_requests_total", &labels).increment(1);
    metrics::histogram!("dunes_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    resp
}

fn authorize(
    st: &AppState,
    req: &mut Request,
    route: &str,
    method: &Method,
) -> Result<(), ApiError> {
    let a = &st.auth;
    if a.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000 == 9_999 {
        a.per_ip.retain_recent();
        a.per_token.retain_recent();
    }
    let ip = client_ip(req);
    a.per_ip.check_key(&ip).map_err(|nu| retry_after(&nu))?;
    let now = Utc::now();
    let claims = if a.cfg.disabled {
        Claims {
            iss: "dunes/auth-disabled".into(),
            sub: "anonymous-dev".into(),
            role: Role::Admin,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + 60,
            jti: uuid::Uuid::new_v4().to_string(),
        }
    } else {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(TokenError::Missing);
        match token.and_then(|t| a.verifier.verify(t, now)) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(%ip, %route, reason = %e, "request refused: 401");
                metrics::counter!("dunes_auth_failures_total", "reason" => e.to_string())
                    .increment(1);
                match e {
                    TokenError::BadSignature | TokenError::WrongKey | TokenError::WrongAlg => {
                        FORGED_TOKENS.fetch_add(1, Ordering::Relaxed);
                    }
                    TokenError::RevokedKey => {
                        tracing::error!(%ip, %route, "a bearer token signed by a REVOKED token key was presented");
                        REVOKED_KEY_TOKENS.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                return Err(ApiError::Unauthorized);
            }
        }
    };
    // known from here on, also when the checks below refuse the request
    req.extensions_mut().insert(claims.clone());
    a.per_token
        .check_key(&claims.jti)
        .map_err(|nu| retry_after(&nu))?;
    if !auth::allowed_roles(method, route).contains(&claims.role) {
        tracing::info!(%ip, %route, sub = %claims.sub, role = %claims.role, "request refused: 403");
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// Reads the whole body of an authorised request before its handler runs:
/// compressed bodies are refused (nothing is ever inflated, so no
/// decompression bomb), a body over `limit` gets 413 once `limit` bytes are
/// read (memory stays bounded), and one that does not
/// arrive within `timeout_ms` (a slow-loris client) gets 408.
async fn read_body(
    req: Request,
    limit: usize,
    timeout_ms: u64,
) -> Result<(Request, axum::body::Bytes), ApiError> {
    if let Some(enc) = req.headers().get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("?").trim();
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(ApiError::UnsupportedEncoding(
                enc.chars().take(64).collect(),
            ));
        }
    }
    // No early refusal on Content-Length: a client still writing its body
    // would get a broken pipe instead of the 413; reading stops at the limit.
    let (parts, body) = req.into_parts();
    let wait = std::time::Duration::from_millis(timeout_ms);
    match tokio::time::timeout(wait, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::BodyTimeout(timeout_ms)),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::TooLarge(limit))
            } else {
                Err(ApiError::BadRequest(format!(
                    "cannot read the request body: {inner}"
                )))
            }
        }
        Ok(Ok(bytes)) => Ok((Request::from_parts(parts, bytes.clone().into()), bytes)),
    }
}

/// Runs a state-changing request at most once per (token, `Idempotency-Key`);
/// see [`idempotency`].
/// `body` is the request's body, already read by [`read_body`].
async fn idempotent(
    st: &AppState,
    req: Request,
    body: &[u8],
    next: Next,
) -> Result<Response, ApiError> {
    use idempotency::{Begin, Stored};
    let claims = req
        .extensions()
        .get::<Claims>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("no claims on an authorised request".into()))?;
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "state-changing requests need an Idempotency-Key header (a new one per action, e.g. a UUID)".into(),
            )
        })?;
    if !idempotency::valid_key(&key) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1-{} visible ASCII characters without spaces",
            idempotency::MAX_KEY_LEN
        )));
    }
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let fp = idempotency::fingerprint(req.method().as_str(), target, body);
    let store = &st.auth.idempotency;
    match store.begin(&claims.jti, claims.exp, &key, &fp, Utc::now().timestamp())? {
        Begin::Proceed => {}
        Begin::Replay(s) => {
            let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::OK);
            let mut resp = (status, s.body).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(resp);
        }
        Begin::InFlight => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still running".into(),
            ));
        }
        Begin::Unknown => {
            return Err(ApiError::Conflict(
                "the request first sent with this Idempotency-Key was cut off by a restart; check its effect (incident history, ledger) and send it with a new key".into(),
            ));
        }
        Begin::Mismatch => {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was already used for a different request".into(),
            ));
        }
    }
    let resp = next.run(req).await;
    let (rparts, rbody) = resp.into_parts();
    let rbytes = axum::body::to_bytes(rbody, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot read a response body: {e}")))?;
    store.complete(
        &claims.jti,
        &key,
        Stored {
            status: rparts.status.as_u16(),
            body: rbytes.to_vec(),
        },
    )?;
    Ok(Response::from_parts(rparts, rbytes.into()))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ok\"}`; the only route without authentication")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Deserialize)]
struct IncidentQuery {
    level: Option<u8>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    /// `summary`: no evidence rows or event ids (the console's queue).
    view: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents",
    params(("level" = Option<u8>, Query, description = "1, 2 or 3"),
           ("status" = Option<String>, Query, description = "open, acknowledged or resolved"),
           ("since" = Option<String>, Query, description = "RFC 3339: detected at or after"),
           ("limit" = Option<usize>, Query, description = "default 1000, max 10000 (100000 with view=summary)"),
           ("view" = Option<String>, Query, description = "`full` (default) or `summary`: without evidence and event ids, with `principal`, `tool_name`, `assignee`, `disposition` and the store `revision` to stream changes from")),
    responses((status = 200, description = "`{count, incidents}` newest first"), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
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
    // read before the list: a change made in between is sent again by the stream
    let revision = st.incidents.revision();
    let filter = IncidentFilter {
        level,
        status,
        since,
        // summaries are small: the console's queue holds up to 100,000
        limit: Some(
            q.limit
                .unwrap_or(1000)
                .min(if q.view.as_deref() == Some("summary") {
                    100_000
                } else {
                    10_000
                }),
        ),
    };
    let list = st.incidents.list(&filter);
    match q.view.as_deref() {
        None | Some("full") => Ok(Json(
            serde_json::json!({ "count": list.len(), "incidents": list }),
        )),
        Some("summary") => {
            let rows: Vec<serde_json::Value> = list
                .iter()
                .map(|i| console::summary(i, &st.incidents.history(&i.incident_id)))
                .collect();
            Ok(Json(
                serde_json::json!({ "count": rows.len(), "revision": revision, "incidents": rows }),
            ))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "view must be full or summary, got {other:?}"
        ))),
    }
}

/// An incident with its lifecycle: assignee, disposition, the ledgered
/// actions and (Level 3) its regulatory notification clocks.
fn incident_view(st: &AppState, inc: &Incident, history: &[IncidentAction]) -> serde_json::Value {
    let mut v = serde_json::to_value(inc).unwrap_or_default();
    let (assignee, disposition) = console::assignee_and_disposition(history);
    if let Some(o) = v.as_object_mut() {
        o.insert("assignee".into(), serde_json::json!(assignee));
        o.insert("disposition".into(), serde_json::json!(disposition));
        o.insert("history".into(), serde_json::json!(history));
        o.insert(
            "notification".into(),
            serde_json::json!(st.notification.of(inc, history, Utc::now())),
        );
    }
    v
}

#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents",
    params(("id" = String, Path, description = "incident id")),
    responses((status = 200, description = "the incident with `assignee`, `disposition` and `history` (ledgered actions)"), (status = 404)),
    security(("bearer" = [])))]
async fn get_incident(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let inc = st.incidents.get(&id).ok_or(ApiError::NotFound)?;
    Ok(Json(incident_view(&st, &inc, &st.incidents.history(&id))))
}

/// Body of the incident actions (every field optional except where noted).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// `assign`: who takes the incident (required).
    pub assignee: Option<String>,
    /// `resolve`: true_positive, false_positive or benign (required).
    #[schema(value_type = Option<String>)]
    pub disposition: Option<Disposition>,
    pub note: Option<String>,
    /// `notify`: the regime (e.g. `nis2`; required).
    pub regime: Option<String>,
    /// `notify`: the stage submitted (e.g. `early-warning`; required).
    pub stage: Option<String>,
    /// `suppress`: for how many hours similar incidents are not raised (1 to 720; required).
    pub hours: Option<u32>,
}

const MAX_NOTE_CHARS: usize = 4096;

async fn act(
    st: AppState,
    claims: Claims,
    id: String,
    kind: ActionKind,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|_| {
            ApiError::BadRequest(
                "body must be a JSON object: assignee, disposition, note, regime, stage, hours"
                    .into(),
            )
        })?
    };
    if b.note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
        || b.assignee.as_ref().is_some_and(|n| n.chars().count() > 256)
    {
        return Err(ApiError::BadRequest("note or assignee too long".into()));
    }
    if kind == ActionKind::Assign && b.assignee.as_deref().is_none_or(|a| a.trim().is_empty()) {
        return Err(ApiError::BadRequest("assign needs an assignee".into()));
    }
    if kind == ActionKind::Resolve && b.disposition.is_none() {
        return Err(ApiError::BadRequest(
            "resolve needs a disposition: true_positive, false_positive or benign".into(),
        ));
    }
    if kind == ActionKind::Comment && b.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(ApiError::BadRequest("comment needs a note".into()));
    }
    if kind == ActionKind::Suppress && !b.hours.is_some_and(|h| (1..=720).contains(&h)) {
        return Err(ApiError::BadRequest(
            "suppress needs hours between 1 and 720".into(),
        ));
    }
    if kind == ActionKind::Notify {
        let (Some(r), Some(s)) = (b.regime.as_deref(), b.stage.as_deref()) else {
            return Err(ApiError::BadRequest(
                "notify needs a regime and a stage".into(),
            ));
        };
        if !st.notification.knows(r, s) {
            return Err(ApiError::BadRequest(format!(
                "{r}/{s} is not a configured notification stage"
            )));
        }
    }
    if !st.incidents.contains(&id) {
        return Err(ApiError::NotFound);
    }
    let Some(tx) = st.actions.clone() else {
        return Err(ApiError::Unavailable);
    };
    let at = Utc::now();
    let action = IncidentAction {
        record_type: "incident_action".into(),
        action_id: format!("act-{}", uuid::Uuid::now_v7().simple()),
        incident_id: id,
        action: kind,
        actor: claims.sub,
        role: claims.role.to_string(),
        jti: claims.jti,
        at,
        assignee: if kind == ActionKind::Assign {
            b.assignee.map(|a| a.trim().to_string())
        } else {
            None
        },
        disposition: if kind == ActionKind::Resolve {
            b.disposition
        } else {
            None
        },
        note: b.note,
        regime: (kind == ActionKind::Notify).then_some(b.regime).flatten(),
        stage: (kind == ActionKind::Notify).then_some(b.stage).flatten(),
        suppress_until: (kind == ActionKind::Suppress)
            .then(|| b.hours.map(|h| at + chrono::Duration::hours(i64::from(h))))
            .flatten(),
        ledger_index: None,
    };
    let (reply, rx) = oneshot::channel();
    tx.send(ActionRequest { action, reply })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    match rx.await.map_err(|_| ApiError::Unavailable)? {
        Ok(out) => {
            let history = st.incidents.history(&out.incident.incident_id);
            Ok(Json(serde_json::json!({
                "action": out.action,
                "responses": out.responses,
                "incident": incident_view(&st, &out.incident, &history),
            })))
        }
        Err(ActionRefused::NotFound) => Err(ApiError::NotFound),
        Err(ActionRefused::Conflict(m)) => Err(ApiError::Conflict(m)),
    }
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/ack", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "optional `note`"),
    responses((status = 200, description = "`{action, responses, incident}`; the action is in the ledger"), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn ack(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Ack, body).await
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/assign", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "`assignee` required"),
    responses((status = 200), (status = 400), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn assign(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Assign, body).await
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/escalate", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "optional `note`"),
    responses((status = 200, description = "Level 2 → Level 3; the Level 3 response (isolate_server + notification) is issued"), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn escalate(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Escalate, body).await
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/notify", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "`regime` and `stage` required (a configured stage), optional `note`"),
    responses((status = 200, description = "the submission is ledgered; the incident's `notification` clocks show the stage submitted (on time or late)"), (status = 400), (status = 404), (status = 409, description = "not a Level 3 incident")),
    security(("bearer" = [])))]
async fn notify(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Notify, body).await
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/comment", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "`note` required"),
    responses((status = 200, description = "the comment is ledgered (also on a resolved incident)"), (status = 400), (status = 404)),
    security(("bearer" = [])))]
async fn comment(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Comment, body).await
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/deescalate", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "optional `note` (the reason)"),
    responses((status = 200, description = "Level 3 → 2 or 2 → 1"), (status = 404), (status = 409, description = "already Level 1, or resolved")),
    security(("bearer" = [])))]
async fn deescalate(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Deescalate, body).await
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/suppress", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "`hours` required (1-720), optional `note`"),
    responses((status = 200, description = "new incidents of the same rule and entity are not raised for `hours` (their events are still ledgered)"), (status = 400), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn suppress(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Suppress, body).await
}

/// A regulator report's digest to ledger.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestBody {
    /// The report kind (`compliance`, …): 1-64 of `a-z`, `0-9`, `-`, `_`.
    pub report: String,
    /// BLAKE3 of the report's JSON document, 64 lowercase hex digits.
    pub blake3: String,
    /// The period the report covers.
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/v1/reports/digest", tag = "ledger",
    params(("Idempotency-Key" = String, Header, description = "a new key per report; the same key replays the first answer")),
    request_body = DigestBody,
    responses((status = 200, description = "`{ledger_index}`: an `action` record `{type: report_digest, report, blake3, from, to, actor, role, jti, at}` is in the ledger (synced)"), (status = 400), (status = 503)),
    security(("bearer" = [])))]
async fn report_digest(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: DigestBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::BadRequest("body must be {\"report\", \"blake3\", \"from\", \"to\"}".into())
    })?;
    let kind_ok = !b.report.is_empty()
        && b.report.len() <= 64
        && b.report
            .bytes()
            .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-' || x == b'_');
    let hex_ok = b.blake3.len() == 64
        && b.blake3
            .bytes()
            .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x));
    if !kind_ok || !hex_ok || b.from >= b.to {
        return Err(ApiError::BadRequest(
            "report: 1-64 of a-z 0-9 - _; blake3: 64 lowercase hex digits; from before to".into(),
        ));
    }
    let Some(tx) = st.records.clone() else {
        return Err(ApiError::Unavailable);
    };
    let payload = serde_json::json!({
        "type": "report_digest", "report": b.report, "blake3": b.blake3,
        "from": b.from, "to": b.to, "actor": c.sub, "role": c.role, "jti": c.jti,
        "at": Utc::now(),
    });
    let (reply, rx) = oneshot::channel();
    tx.send(RecordRequest { payload, reply })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    match rx.await.map_err(|_| ApiError::Unavailable)? {
        Ok(idx) => Ok(Json(serde_json::json!({ "ledger_index": idx }))),
        Err(m) => Err(ApiError::Conflict(m)),
    }
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "incidents",
    responses((status = 200, description = "`{count, clocks}`: every stage clock of every Level 3 incident (incident_id, title, regime, stage, deadline, state, submitted_at), open stages first by deadline")),
    security(("bearer" = [])))]
async fn list_notifications(State(st): State<AppState>) -> Json<serde_json::Value> {
    let mut rows = Vec::new();
    for (inc, c) in st.notification.all(&st.incidents, Utc::now()) {
        let done = c.submitted_at.is_some();
        let mut v = serde_json::to_value(&c).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("incident_id".into(), serde_json::json!(inc.incident_id));
            o.insert("title".into(), serde_json::json!(inc.title));
        }
        rows.push((done, c.deadline, v));
    }
    // Open stages first, soonest deadline first; waiting stages (no deadline yet) last.
    rows.sort_by_key(|(done, d, _)| (*done, d.is_none(), *d));
    let clocks: Vec<serde_json::Value> = rows.into_iter().map(|(_, _, v)| v).collect();
    Json(serde_json::json!({ "count": clocks.len(), "clocks": clocks }))
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")), request_body(content = ActionBody, description = "`disposition` required, optional `note`"),
    responses((status = 200), (status = 400), (status = 404), (status = 409)),
    security(("bearer" = [])))]
async fn resolve(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    act(st, c, id, ActionKind::Resolve, body).await
}

/// A hunting query.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One read-only SELECT / WITH statement over `events`, `tool_defs`, `incidents`.
    pub sql: String,
    /// `json` (default) or `ndjson`.
    pub format: Option<String>,
    /// Row limit (capped by `[hunt] max_rows`).
    pub max_rows: Option<usize>,
}

#[utoipa::path(post, path = "/api/v1/query", tag = "hunting", request_body = QueryBody,
    responses((status = 200, description = "JSON `{columns, rows, row_count, truncated, elapsed_ms}` or NDJSON (one object per row)"),
              (status = 400, description = "refused (not read-only, unknown table, table function) or failed"),
              (status = 408, description = "time limit exceeded")),
    security(("bearer" = [])))]
async fn query(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let q: QueryBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("body must be {\"sql\": \"...\"}".into()))?;
    let ndjson = match q.format.as_deref() {
        Some("ndjson") => true,
        Some("json") => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/x-ndjson")),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be json or ndjson, got {other:?}"
            )));
        }
    };
    let max_rows = q.max_rows.unwrap_or(st.hunt.max_rows);
    let res = hunt::run(&q.sql, &st.data_dir, &st.incidents, &st.hunt, max_rows).await;
    let res = match res {
        Ok(r) => r,
        Err(hunt::HuntError::Timeout(ms)) => {
            metrics::counter!("dunes_hunt_queries_total", "outcome" => "timeout").increment(1);
            let body =
                serde_json::json!({"error": format!("query exceeded the time limit of {ms} ms")});
            return Ok((StatusCode::REQUEST_TIMEOUT, Json(body)).into_response());
        }
        Err(e) => {
            metrics::counter!("dunes_hunt_queries_total", "outcome" => "refused").increment(1);
            return Err(ApiError::BadRequest(e.to_string()));
        }
    };
    metrics::counter!("dunes_hunt_queries_total", "outcome" => "ok").increment(1);
    let mut rows = Vec::with_capacity(res.rows);
    for b in &res.batches {
        rows.extend(
            dunes_detect::incident::batch_to_json_rows(b)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
    }
    if ndjson {
        let mut out = Vec::new();
        for r in &rows {
            serde_json::to_writer(&mut out, r).map_err(|e| ApiError::Internal(e.to_string()))?;
            out.push(b'\n');
        }
        let mut resp = out.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if res.truncated {
            resp.headers_mut()
                .insert("x-dunes-truncated", HeaderValue::from_static("true"));
        }
        return Ok(resp);
    }
    Ok(Json(serde_json::json!({
        "columns": res.columns,
        "rows": rows,
        "row_count": res.rows,
        "truncated": res.truncated,
        "elapsed_ms": res.elapsed.as_millis() as u64,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/api/v1/outputs", tag = "outputs",
    responses((status = 200, description = "`{webhooks: [WebhookStatus]}`: per destination, queued, delivered, failed attempts, dead-lettered, last error", body = Vec<WebhookStatus>)),
    security(("bearer" = [])))]
async fn outputs_status(State(st): State<AppState>) -> Json<serde_json::Value> {
    let webhooks = st
        .outputs
        .as_ref()
        .map(|o| o.webhooks())
        .unwrap_or_default();
    Json(serde_json::json!({ "webhooks": webhooks }))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct DeadLetterParams {
    /// Most dead letters returned, newest first (default 100, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/outputs/webhooks/{name}/dead-letters", tag = "outputs",
    params(("name" = String, Path), DeadLetterParams),
    responses((status = 200, description = "`{name, dead_letters}`: id, event, incident_id, attempts, reason, body, queued/dead times"), (status = 404)),
    security(("bearer" = [])))]
async fn webhook_dead_letters(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(p): Query<DeadLetterParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = p.limit.unwrap_or(100).min(1000);
    let list = st
        .outputs
        .as_ref()
        .and_then(|o| o.dead_letters(&name, limit))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(
        serde_json::json!({ "name": name, "dead_letters": list }),
    ))
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    responses((status = 200, description = "`{count, rules}`: id, title, level, severity, kind, tags, file, sha256, source_format (native | sigma), sigma (the Sigma metadata kept)")),
    security(("bearer" = [])))]
async fn list_rules(State(st): State<AppState>) -> Json<serde_json::Value> {
    let rules = match st.rules.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    Json(serde_json::json!({ "count": rules.len(), "rules": rules }))
}

#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path)), responses((status = 200, description = "the rule, with its SQL"), (status = 404)),
    security(("bearer" = [])))]
async fn get_rule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rules = match st.rules.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    rules
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .map(Json)
        .ok_or(ApiError::NotFound)
}

#[utoipa::path(post, path = "/api/v1/rules/validate", tag = "rules",
    request_body(content = String, content_type = "application/yaml", description = "one rule file (YAML): native, or a Sigma file (all its documents; `rules` lists each converted rule)"),
    responses((status = 200, description = "`{valid: true, id, ...}`: parsed, validated and planned; nothing is installed"),
              (status = 422, description = "`{error: \"<line>: <reason>\"}`")),
    security(("bearer" = [])))]
async fn validate_rule(body: axum::body::Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let path = std::path::Path::new("submitted-rule.yaml");
    let unprocessable = |e: dunes_detect::DetectError| ApiError::Unprocessable(e.to_string());
    if dunes_detect::sigma::is_sigma(&body) {
        // A Sigma file: every document converted and planned, or the first refusal.
        let mut rules = Vec::new();
        for o in dunes_detect::sigma::convert(&[(path.to_path_buf(), body.to_vec())]) {
            if let Some(rule) = o.result.map_err(unprocessable)? {
                rules.push(rule);
            }
        }
        let engine = dunes_detect::Engine::new(rules)
            .await
            .map_err(unprocessable)?;
        let rules: Vec<serde_json::Value> = engine.rules().iter().map(rule_summary).collect();
        return Ok(Json(serde_json::json!({
            "valid": true,
            "rule": rules.first().cloned().unwrap_or_default(),
            "rules": rules,
        })));
    }
    let rule = dunes_detect::LoadedRule::from_bytes(path, &body).map_err(unprocessable)?;
    let engine = dunes_detect::Engine::new(vec![rule])
        .await
        .map_err(unprocessable)?;
    let r = engine.rules().first().map(rule_summary).unwrap_or_default();
    Ok(Json(serde_json::json!({ "valid": true, "rule": r })))
}

/// The public description of a planned rule (served by the rules routes).
pub fn rule_summary(r: &dunes_detect::PlannedRule) -> serde_json::Value {
    let c = &r.rule.config;
    serde_json::json!({
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "level": c.level.as_u8(),
        "severity": c.severity.to_string(),
        "kind": c.kind,
        "tags": c.tags,
        "entity": c.entity,
        "query": c.query,
        "file": r.rule.path.display().to_string(),
        "sha256": r.rule.sha256,
        "source_format": r.rule.source_format(),
        "sigma": c.sigma,
    })
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, description = "token verification key (ML-DSA-65) and the ledger's public key files")),
    security(("bearer" = [])))]
async fn keys(State(st): State<AppState>) -> Json<serde_json::Value> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut ledger = Vec::new();
    if let Ok(rd) = std::fs::read_dir(st.data_dir.join("keys")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".pub")
                && let Ok(bytes) = std::fs::read(e.path())
            {
                ledger.push(serde_json::json!({"file": name, "public_key": b64.encode(bytes)}));
            }
        }
    }
    ledger.sort_by(|a, b| a["file"].as_str().cmp(&b["file"].as_str()));
    Json(serde_json::json!({
        "token_key": {
            "alg": auth::TOKEN_ALG,
            "kid": st.auth.verifier.kid(),
            "public_key": b64.encode(&st.auth.token_public_key),
        },
        "ledger_keys": ledger,
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")),
    security(("bearer" = [])))]
async fn metrics_text() -> Response {
    let text = prometheus().map(|h| h.render()).unwrap_or_default();
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

#[utoipa::path(get, path = "/api/v1/ledger/checkpoint", tag = "ledger",
    responses((status = 200, description = "the latest signed checkpoint"), (status = 404)),
    security(("bearer" = [])))]
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

#[derive(Deserialize)]
struct IngestQuery {
    format: Option<String>,
}

#[utoipa::path(post, path = "/v1/ingest", tag = "ingest",
    params(("format" = Option<String>, Query, description = "envelope (default), agentgateway or tyk: the body is that gateway's access log, one record per line (docs/schema.md#gateway-logs)")),
    request_body(content = String, content_type = "application/x-ndjson", description = "NDJSON or a JSON array of envelopes, or gateway access-log lines"),
    responses((status = 202, description = "`{accepted, rejected, incidents, responses}` once ledgered"), (status = 400), (status = 413)),
    security(("bearer" = [])))]
async fn ingest(
    State(st): State<AppState>,
    Query(q): Query<IngestQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<IngestAck>), ApiError> {
    let Some(tx) = st.ingest.clone() else {
        return Err(ApiError::IngestDisabled);
    };
    let format = match q.format.as_deref() {
        None => dunes_ingest::InputFormat::Envelope,
        Some(f) => f.parse().map_err(ApiError::BadRequest)?,
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(uuid_like);
    let records = dunes_ingest::split_http_body(&body, &request_id, st.max_line_bytes)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let records = dunes_ingest::gateway::adapt_records(format, records);
    if records.is_empty() {
        // Nothing but skipped gateway lines.
        return Ok((StatusCode::ACCEPTED, Json(IngestAck::default())));
    }
    let (reply, rx) = oneshot::channel();
    tx.send(IngestRequest { records, reply })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let ack = rx.await.map_err(|_| ApiError::Unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(ack)))
}

#[utoipa::path(post, path = "/v1/traces", tag = "ingest",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "OTLP/HTTP ExportTraceServiceRequest (protobuf, or OTLP/JSON as application/json); MCP spans become envelopes (docs/schema.md#otlp)"),
    responses((status = 200, description = "ExportTraceServiceResponse once ledgered; partial_success counts dead-lettered envelopes"), (status = 400), (status = 413), (status = 415)),
    security(("bearer" = [])))]
async fn otlp_traces(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    otlp(st, &headers, &body, dunes_ingest::otlp::Signal::Traces).await
}

#[utoipa::path(post, path = "/v1/logs", tag = "ingest",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "OTLP/HTTP ExportLogsServiceRequest (protobuf, or OTLP/JSON as application/json); log records whose body is a JSON-RPC message or an envelope (docs/schema.md#otlp)"),
    responses((status = 200, description = "ExportLogsServiceResponse once ledgered; partial_success counts dead-lettered envelopes"), (status = 400), (status = 413), (status = 415)),
    security(("bearer" = [])))]
async fn otlp_logs(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    otlp(st, &headers, &body, dunes_ingest::otlp::Signal::Logs).await
}

/// Hand mapped OTLP envelopes to the pipeline and wait until they are ledgered: the number
/// dead-lettered and the partial-success message.
async fn otlp_hand_over(
    st: &AppState,
    mapped: dunes_ingest::otlp::Mapped,
) -> Result<(u64, String), ApiError> {
    let Some(tx) = st.ingest.clone() else {
        return Err(ApiError::IngestDisabled);
    };
    metrics::counter!("dunes_otlp_ignored_total").increment(mapped.ignored);
    let ack = if mapped.records.is_empty() {
        IngestAck::default()
    } else {
        let (reply, rx) = oneshot::channel();
        tx.send(IngestRequest {
            records: mapped.records,
            reply,
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
        rx.await.map_err(|_| ApiError::Unavailable)?
    };
    let message = if ack.rejected > 0 {
        format!(
            "{} envelope(s) dead-lettered (reasons in the dead letter); {} accepted",
            ack.rejected, ack.accepted
        )
    } else {
        String::new()
    };
    Ok((ack.rejected, message))
}

/// OTLP/HTTP: map the export request to envelopes, hand them to the pipeline like an
/// ingest request, answer once they are ledgered (at-least-once: an exporter retries
/// anything but a success, and event ids make the retry a duplicate).
async fn otlp(
    st: AppState,
    headers: &HeaderMap,
    body: &[u8],
    signal: dunes_ingest::otlp::Signal,
) -> Result<Response, ApiError> {
    use dunes_ingest::otlp;
    if st.ingest.is_none() {
        return Err(ApiError::IngestDisabled);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = otlp::Encoding::from_content_type(ct) else {
        return Err(ApiError::UnsupportedMediaType(
            ct.to_string(),
            "OTLP/HTTP takes application/x-protobuf or application/json",
        ));
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(uuid_like);
    let mapped = otlp::map_request(signal, encoding, body, &request_id)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (rejected, message) = otlp_hand_over(&st, mapped).await?;
    let mut resp = otlp::response(signal, encoding, rejected, &message).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    Ok(resp)
}

#[utoipa::path(post, path = "/api/v1/rules/reload", tag = "rules",
    params(("Idempotency-Key" = String, Header, description = "a new key per action; the same key replays the first answer")),
    responses((status = 200, description = "`{version, rules, changed, kept_state}`"), (status = 422, description = "a rule is refused; the running rules stay")),
    security(("bearer" = [])))]
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
