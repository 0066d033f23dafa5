//! The role × route matrix and token refusals, over the real router (no network).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::Utc;
use dunes_api::auth::{self, Claims, Role};
use dunes_api::{AppState, AuthConfig, AuthState};
use dunes_detect::IncidentStore;
use tower::ServiceExt as _;

/// Every protected route, by name, with a request that reaches its handler.
const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("incidents.list", "GET", "/api/v1/incidents", ""),
    ("incidents.get", "GET", "/api/v1/incidents/inc-none", ""),
    (
        "incidents.ack",
        "POST",
        "/api/v1/incidents/inc-none/ack",
        "",
    ),
    (
        "incidents.assign",
        "POST",
        "/api/v1/incidents/inc-none/assign",
        r#"{"assignee":"bob"}"#,
    ),
    (
        "incidents.escalate",
        "POST",
        "/api/v1/incidents/inc-none/escalate",
        "",
    ),
    (
        "incidents.resolve",
        "POST",
        "/api/v1/incidents/inc-none/resolve",
        r#"{"disposition":"benign","note":"n"}"#,
    ),
    (
        "incidents.comment",
        "POST",
        "/api/v1/incidents/inc-none/comment",
        r#"{"note":"n"}"#,
    ),
    (
        "incidents.deescalate",
        "POST",
        "/api/v1/incidents/inc-none/deescalate",
        "",
    ),
    (
        "incidents.suppress",
        "POST",
        "/api/v1/incidents/inc-none/suppress",
        r#"{"hours":4}"#,
    ),
    (
        "incidents.ledger",
        "GET",
        "/api/v1/incidents/inc-none/ledger",
        "",
    ),
    ("session", "GET", "/api/v1/session", ""),
    (
        "reports.digest",
        "POST",
        "/api/v1/reports/digest",
        r#"{"report":"compliance","blake3":"00","from":"2026-01-01T00:00:00Z","to":"2026-02-01T00:00:00Z"}"#,
    ),
    ("overview", "GET", "/api/v1/overview", ""),
    ("ledger.verify", "GET", "/api/v1/ledger/verify", ""),
    (
        "query",
        "POST",
        "/api/v1/query",
        r#"{"sql":"SELECT 1 AS one"}"#,
    ),
    ("rules.list", "GET", "/api/v1/rules", ""),
    ("rules.get", "GET", "/api/v1/rules/none", ""),
    (
        "rules.validate",
        "POST",
        "/api/v1/rules/validate",
        "id: [broken",
    ),
    ("rules.reload", "POST", "/api/v1/rules/reload", ""),
    ("keys", "GET", "/api/v1/keys", ""),
    ("ledger.checkpoint", "GET", "/api/v1/ledger/checkpoint", ""),
    (
        "ledger.inclusion",
        "GET",
        "/api/v1/ledger/proof/inclusion?index=0",
        "",
    ),
    (
        "ledger.consistency",
        "GET",
        "/api/v1/ledger/proof/consistency?first=1",
        "",
    ),
    ("ledger.export", "GET", "/api/v1/ledger/export", ""),
    ("metrics", "GET", "/metrics", ""),
    ("openapi", "GET", "/openapi.json", ""),
    ("ingest", "POST", "/v1/ingest", "{}"),
    ("otlp.traces", "POST", "/v1/traces", "{}"),
    ("otlp.logs", "POST", "/v1/logs", "{}"),
    (
        "otlp.grpc.traces",
        "POST",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "",
    ),
    (
        "otlp.grpc.logs",
        "POST",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        "",
    ),
];

/// The routes that take events: the ingest role's, nobody else's.
const INGEST: &[&str] = &[
    "ingest",
    "otlp.traces",
    "otlp.logs",
    "otlp.grpc.traces",
    "otlp.grpc.logs",
];

/// What each role may do, written from the issue's role list (independently of
/// `auth::allowed_roles`).
fn expected(role: Role) -> BTreeSet<&'static str> {
    // the console's incident page shows the rule that fired: rules are readable by all readers
    let read = [
        "incidents.list",
        "incidents.get",
        "incidents.ledger",
        "overview",
        "rules.list",
        "rules.get",
        "session",
        "openapi",
    ];
    let analyst = [
        "query",
        "incidents.ack",
        "incidents.assign",
        "incidents.comment",
        "incidents.suppress",
        "incidents.resolve",
    ];
    let all: Vec<&str> = ROUTES.iter().map(|r| r.0).collect();
    let set: Vec<&'static str> = match role {
        Role::Viewer => read.to_vec(),
        Role::Analyst => [&read[..], &analyst[..]].concat(),
        Role::Responder => [
            &read[..],
            &analyst[..],
            &["incidents.escalate", "incidents.deescalate"][..],
        ]
        .concat(),
        Role::Admin => all.into_iter().filter(|r| !INGEST.contains(r)).collect(),
        Role::Auditor => [
            &read[..],
            &[
                "keys",
                "reports.digest",
                "ledger.verify",
                "ledger.checkpoint",
                "ledger.inclusion",
                "ledger.consistency",
                "ledger.export",
                "metrics",
            ][..],
        ]
        .concat(),
        Role::Ingest => [INGEST, &["openapi", "session"][..]].concat(),
    };
    set.into_iter().collect()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    app: Router,
    key: dunes_ledger::StandaloneKey,
}

fn fixture(cfg: AuthConfig) -> Fixture {
    let tmp = tempfile::tempdir().expect("tmp");
    let auth = AuthState::open(tmp.path(), cfg).expect("auth");
    let key = auth::load_or_generate_key(tmp.path()).expect("key");
    let state = AppState::new(
        Arc::new(IncidentStore::new()),
        tmp.path().to_path_buf(),
        Arc::new(auth),
    );
    Fixture {
        app: dunes_api::router(state, 1 << 20),
        _tmp: tmp,
        key,
    }
}

fn token(key: &dunes_ledger::StandaloneKey, role: Role) -> String {
    auth::issue(key, "dunes/test", "tester", role, Utc::now(), 300).expect("issue")
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: &str,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    call_with(
        app,
        method,
        uri,
        body,
        token,
        Some(&uuid::Uuid::new_v4().to_string()),
    )
    .await
}

/// [`call`] with a chosen `Idempotency-Key` (or none).
async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    body: &str,
    token: Option<&str>,
    idempotency_key: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(k) = idempotency_key {
        b = b.header("idempotency-key", k);
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::from(body.to_string())).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

#[tokio::test]
async fn every_role_gets_exactly_its_routes() {
    let f = fixture(AuthConfig::default());
    let (s, _, _) = call(&f.app, "GET", "/healthz", "", None).await;
    assert_eq!(s, StatusCode::OK, "/healthz is public");
    for role in Role::ALL {
        let want = expected(role);
        for (name, method, uri, body) in ROUTES {
            let t = token(&f.key, role);
            let (s, _, json) = call(&f.app, method, uri, body, Some(&t)).await;
            if want.contains(name) {
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{role} should reach {name} ({method} {uri}), got {s} {json}"
                );
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{role} on {name}: {json}");
                assert_eq!(json["error"], "forbidden");
            }
            // No token at all: 401 with a JSON error and a WWW-Authenticate challenge.
            let (s, h, json) = call(&f.app, method, uri, body, None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{name} without a token");
            assert_eq!(json["error"], "unauthorized");
            assert!(h.get("www-authenticate").is_some());
        }
    }
    // Unknown routes answer 404 whoever asks.
    let (s, _, _) = call(&f.app, "GET", "/api/v1/nope", "", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn craft(key: &dunes_ledger::StandaloneKey, header: &serde_json::Value, claims: &Claims) -> String {
    let input = format!(
        "{}.{}",
        B64URL.encode(serde_json::to_vec(header).expect("json")),
        B64URL.encode(serde_json::to_vec(claims).expect("json"))
    );
    let sig = key.sign(input.as_bytes(), b"").expect("sign");
    format!("{input}.{}", B64URL.encode(sig))
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let f = fixture(AuthConfig::default());
    let other = fixture(AuthConfig::default());
    let now = Utc::now().timestamp();
    let claims = |iat: i64, nbf: i64, exp: i64| Claims {
        iss: "dunes/test".into(),
        sub: "mallory".into(),
        role: Role::Admin,
        iat,
        nbf,
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let good = token(&f.key, Role::Admin);
    let (s, _, _) = call(&f.app, "GET", "/api/v1/incidents", "", Some(&good)).await;
    assert_eq!(s, StatusCode::OK);
    let forged_before = dunes_api::security_counts().forged_tokens;
    let hdr = serde_json::json!({"alg": "ML-DSA-65", "typ": "JWT"});
    let parts: Vec<&str> = good.split('.').collect();
    let bad: Vec<(&str, String)> = vec![
        (
            "expired",
            auth::sign_claims(&f.key, &claims(now - 900, now - 900, now - 60)).expect("s"),
        ),
        (
            "not yet valid",
            auth::sign_claims(&f.key, &claims(now + 600, now + 600, now + 900)).expect("s"),
        ),
        (
            "nbf in the future",
            auth::sign_claims(&f.key, &claims(now, now + 120, now + 300)).expect("s"),
        ),
        (
            "lifetime over 15 min",
            auth::sign_claims(&f.key, &claims(now, now, now + 3600)).expect("s"),
        ),
        ("wrong key", token(&other.key, Role::Admin)),
        (
            "wrong key, no kid",
            craft(&other.key, &hdr, &claims(now, now, now + 300)),
        ),
        (
            "wrong alg HS256",
            craft(
                &f.key,
                &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
                &claims(now, now, now + 300),
            ),
        ),
        (
            "wrong alg ML-DSA-44",
            craft(
                &f.key,
                &serde_json::json!({"alg": "ML-DSA-44"}),
                &claims(now, now, now + 300),
            ),
        ),
        (
            "alg none",
            format!("{}.{}.", B64URL.encode(br#"{"alg":"none"}"#), parts[1]),
        ),
        (
            "crit header",
            craft(
                &f.key,
                &serde_json::json!({"alg": "ML-DSA-65", "crit": ["exp"]}),
                &claims(now, now, now + 300),
            ),
        ),
        (
            "tampered claims",
            format!(
                "{}.{}.{}",
                parts[0],
                B64URL.encode(serde_json::to_vec(&claims(now, now, now + 300)).expect("j")),
                parts[2]
            ),
        ),
        (
            "truncated signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() / 2]
            ),
        ),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{good}.x")),
        ("not base64", "!!!.???.***".into()),
        ("garbage", "hello".into()),
        ("empty", String::new()),
        ("huge", "a".repeat(20_000)),
    ];
    for (what, t) in &bad {
        let (s, _, json) = call(&f.app, "GET", "/api/v1/incidents", "", Some(t)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} accepted: {json}");
        assert_eq!(
            json["error"], "unauthorized",
            "{what}: the error leaks details"
        );
    }
    // Wrong key (x2), wrong alg (x3) and tampered claims are counted as
    // forgeries for the self-monitor; expired or malformed tokens are not
    // forgeries (other tests may add to the process-wide count meanwhile).
    let forged = dunes_api::security_counts().forged_tokens - forged_before;
    assert!(forged >= 6, "{forged} forged tokens counted");
    // Not a bearer scheme.
    let req = Request::get("/api/v1/incidents")
        .header("authorization", format!("Basic {good}"))
        .body(Body::empty())
        .expect("req");
    let resp = f.app.clone().oneshot(req).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_are_reusable_and_state_changes_are_replay_protected_by_idempotency_keys() {
    let f = fixture(AuthConfig::default());
    // One analyst token runs many hunting queries (no key needed: read-only).
    let t = token(&f.key, Role::Analyst);
    let body = r#"{"sql":"SELECT 1 AS one"}"#;
    for _ in 0..5 {
        let (s, _, json) = call_with(&f.app, "POST", "/api/v1/query", body, Some(&t), None).await;
        assert_eq!(s, StatusCode::OK, "{json}");
        assert_eq!(json["rows"][0]["one"], 1);
        let (s, _, _) = call(&f.app, "GET", "/api/v1/incidents", "", Some(&t)).await;
        assert_eq!(s, StatusCode::OK);
    }
    // One ingest token posts many batches (this router has no pipeline: 501
    // each time, past authentication).
    let i = token(&f.key, Role::Ingest);
    for _ in 0..5 {
        let (s, _, json) = call_with(&f.app, "POST", "/v1/ingest", "{}", Some(&i), None).await;
        assert_eq!(s, StatusCode::NOT_IMPLEMENTED, "{json}");
    }
    // State-changing: refused without a key, or with a malformed one.
    let ack = "/api/v1/incidents/inc-none/ack";
    let (s, _, json) = call_with(&f.app, "POST", ack, "", Some(&t), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("Idempotency-Key")),
        "{json}"
    );
    let (s, _, _) = call_with(&f.app, "POST", ack, "", Some(&t), Some("has space")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The first request with a key runs; the same key replays its answer.
    let (s1, h1, j1) = call_with(&f.app, "POST", ack, "", Some(&t), Some("k-1")).await;
    assert!(h1.get("idempotent-replayed").is_none());
    let (s2, h2, j2) = call_with(&f.app, "POST", ack, "", Some(&t), Some("k-1")).await;
    assert_eq!(
        (s2, &j2),
        (s1, &j1),
        "the replay answers what the first request did"
    );
    assert_eq!(
        h2.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    // The same key for a different request: 422; another token's "k-1" is its own.
    let other = "/api/v1/incidents/inc-other/ack";
    let (s, _, _) = call_with(&f.app, "POST", other, "", Some(&t), Some("k-1")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let t2 = token(&f.key, Role::Analyst);
    let (s, h, _) = call_with(&f.app, "POST", other, "", Some(&t2), Some("k-1")).await;
    assert!(s != StatusCode::UNPROCESSABLE_ENTITY && h.get("idempotent-replayed").is_none());
    // The OpenAPI document names the header on exactly the state-changing routes.
    let (_, _, doc) = call(&f.app, "GET", "/openapi.json", "", Some(&t)).await;
    let mut with_key: Vec<String> = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if params
                .iter()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
            {
                with_key.push(format!("{method} {path}"));
            }
        }
    }
    with_key.sort();
    assert_eq!(
        with_key,
        [
            "post /api/v1/incidents/{id}/ack",
            "post /api/v1/incidents/{id}/assign",
            "post /api/v1/incidents/{id}/comment",
            "post /api/v1/incidents/{id}/deescalate",
            "post /api/v1/incidents/{id}/escalate",
            "post /api/v1/incidents/{id}/notify",
            "post /api/v1/incidents/{id}/resolve",
            "post /api/v1/incidents/{id}/suppress",
            "post /api/v1/ledger/redact",
            "post /api/v1/reports/digest",
            "post /api/v1/rules/reload",
        ]
    );
}

#[tokio::test]
async fn rate_limits_and_body_limits() {
    let f = fixture(AuthConfig {
        per_ip_rps: 1,
        per_ip_burst: 3,
        max_json_body_bytes: 1024,
        ..AuthConfig::default()
    });
    let t = token(&f.key, Role::Viewer);
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..5 {
        let (s, h, json) = call(&f.app, "GET", "/api/v1/incidents", "", Some(&t)).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            retry = h.get("retry-after").cloned();
            assert_eq!(json["error"], "too many requests");
        }
        statuses.push(s.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let secs: u64 = retry
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&secs), "{secs}");

    let f = fixture(AuthConfig {
        per_token_rps: 1,
        per_token_burst: 2,
        max_json_body_bytes: 1024,
        ..AuthConfig::default()
    });
    let t = token(&f.key, Role::Viewer);
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                call(&f.app, "GET", "/api/v1/incidents", "", Some(&t))
                    .await
                    .0
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(codes, [200, 200, 429]);
    // Another token of the same user is limited separately.
    let t2 = token(&f.key, Role::Analyst);
    let big = format!(r#"{{"sql":"SELECT '{}'"}}"#, "x".repeat(4096));
    let (s, _, json) = call(&f.app, "POST", "/api/v1/query", &big, Some(&t2)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert_eq!(json["error"], "request body larger than 1024 bytes");
}

#[tokio::test]
async fn hunting_refuses_writes_and_file_access_over_http() {
    let f = fixture(AuthConfig::default());
    for sql in [
        "DROP TABLE events",
        "INSERT INTO events SELECT * FROM events",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/dunes-hunt-escape.csv'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT 1; SELECT 2",
        "SET datafusion.catalog.information_schema = true",
    ] {
        let t = token(&f.key, Role::Analyst);
        let body = serde_json::json!({ "sql": sql }).to_string();
        let (s, _, json) = call(&f.app, "POST", "/api/v1/query", &body, Some(&t)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{sql}: {json}");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused")),
            "{sql}: {json}"
        );
    }
    assert!(!std::path::Path::new("/tmp/dunes-hunt-escape.csv").exists());
    // Row limit and NDJSON.
    let t = token(&f.key, Role::Analyst);
    let body = r#"{"sql":"SELECT * FROM (VALUES (1),(2),(3),(4)) AS t(n)","max_rows":2,"format":"ndjson"}"#;
    let req = Request::post("/api/v1/query")
        .header("authorization", format!("Bearer {t}"))
        .body(Body::from(body))
        .expect("req");
    let resp = f.app.clone().oneshot(req).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-dunes-truncated"], "true");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("b");
    let text = String::from_utf8(bytes.to_vec()).expect("utf8");
    assert_eq!(text.lines().count(), 2, "{text}");
}

/// `GET path` over a real socket (HTTP/1.1, connection closed); the raw answer.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn the_metrics_listener_serves_prometheus_without_a_token() {
    let tmp = tempfile::tempdir().expect("tmp");
    let auth = AuthState::open(tmp.path(), AuthConfig::default()).expect("auth");
    let state = AppState::new(
        Arc::new(IncidentStore::new()),
        tmp.path().to_path_buf(),
        Arc::new(auth),
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let metrics_addr = free.local_addr().expect("addr");
    drop(free);
    let cfg = dunes_api::ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        max_body_bytes: 1 << 20,
        metrics_listen: Some(metrics_addr),
        header_read_timeout: std::time::Duration::from_secs(10),
    };
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dunes_api::serve(cfg, state, Some(bound_tx), async move {
        let _ = stop_rx.await;
    }));
    let api_addr = bound_rx.await.expect("bound");
    let _ = dunes_api::prometheus();
    metrics::counter!("dunes_test_scrapes_total").increment(1);
    let scrape = raw_get(metrics_addr, "/metrics").await;
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(scrape.contains("dunes_test_scrapes_total 1"), "{scrape}");
    // only /metrics there; the API itself still wants a token for it
    assert!(
        raw_get(metrics_addr, "/api/v1/incidents")
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        raw_get(api_addr, "/metrics")
            .await
            .starts_with("HTTP/1.1 401")
    );
    let _ = stop_tx.send(());
    server.await.expect("join").expect("served");
    assert!(
        tokio::net::TcpStream::connect(metrics_addr).await.is_err(),
        "the metrics listener closes with the API"
    );
}

/// Serves a fresh fixture on a loopback port with the given timeouts.
async fn served(
    header_read_timeout: std::time::Duration,
    body_read_timeout_ms: u64,
) -> (
    std::net::SocketAddr,
    dunes_ledger::StandaloneKey,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = AuthConfig {
        body_read_timeout_ms,
        ..AuthConfig::default()
    };
    let auth = AuthState::open(tmp.path(), cfg).expect("auth");
    let key = auth::load_or_generate_key(tmp.path()).expect("key");
    let state = AppState::new(
        Arc::new(IncidentStore::new()),
        tmp.path().to_path_buf(),
        Arc::new(auth),
    );
    let scfg = dunes_api::ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        max_body_bytes: 1 << 20,
        metrics_listen: None,
        header_read_timeout,
    };
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dunes_api::serve(scfg, state, Some(bound_tx), async move {
        let _ = stop_rx.await;
    }));
    (bound_rx.await.expect("bound"), key, stop_tx, tmp)
}

/// Sends `head` (and nothing more), then reads what the server answers
/// within `within`: `None` if the connection is still open and silent.
async fn send_and_wait(
    addr: std::net::SocketAddr,
    head: &str,
    within: std::time::Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_loris_headers_and_bodies_are_cut_off() {
    let ms = std::time::Duration::from_millis;
    let (addr, key, stop, _tmp) = served(ms(300), 300).await;
    // Headers never finished: the connection is closed after the header timeout.
    let t = std::time::Instant::now();
    let answer = send_and_wait(addr, "GET /healthz HTTP/1.1\r\nhost: x\r\n", ms(5000)).await;
    assert!(answer.is_some(), "a slow-loris connection stayed open");
    assert!(t.elapsed() < ms(3000), "closed after {:?}", t.elapsed());
    // A whole request on another connection is served.
    let ok = raw_get(addr, "/healthz").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // A body announced but trickled: 408 after the body timeout.
    let t = token(&key, Role::Analyst);
    let head = format!(
        "POST /api/v1/query HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"sql\":"
    );
    let answer = send_and_wait(addr, &head, ms(5000))
        .await
        .expect("answered, not left hanging");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 300 ms"), "{answer}");
    let _ = stop.send(());
}

#[tokio::test]
async fn compressed_bodies_are_refused_and_oversized_ones_cut_at_the_limit() {
    let f = fixture(AuthConfig::default());
    let t = token(&f.key, Role::Ingest);
    // a gzip bomb is never inflated: any Content-Encoding but identity is refused
    let bomb = Request::post("/v1/ingest")
        .header("authorization", format!("Bearer {t}"))
        .header("content-encoding", "gzip")
        .body(Body::from(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0]))
        .expect("req");
    let resp = f.app.clone().oneshot(bomb).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .expect("body");
    assert!(String::from_utf8_lossy(&body).contains("send the body uncompressed"));
    // a body over the JSON limit (no declared length): 413 once the limit is read
    let a = token(&f.key, Role::Analyst);
    let chunks = futures::stream::iter(
        (0..400).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1024]))),
    );
    let big = Request::post("/api/v1/query")
        .header("authorization", format!("Bearer {a}"))
        .body(Body::from_stream(chunks))
        .expect("req");
    let resp = f.app.clone().oneshot(big).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
