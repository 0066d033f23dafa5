//! The webhook sink over TLS (rustls, a private CA via `ca_file`) against a
//! real HTTPS receiver, and the shared incident fixture.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use dunes_detect::{Incident, IncidentStatus, Level, Severity};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;

use super::{WebhookConfig, Webhooks};
use crate::sinks::lifecycle::Change;
use crate::sinks::ocsf;

pub(crate) fn incident() -> Incident {
    let t = |s: i64| {
        Utc.timestamp_opt(1_764_700_000 + s, 0)
            .single()
            .expect("time")
    };
    let mut row = serde_json::Map::new();
    row.insert("event_id".into(), json!("ev-2"));
    row.insert("principal".into(), json!("user:mallory"));
    row.insert("src_ip".into(), json!("203.0.113.9"));
    row.insert("tool_name".into(), json!("fetch_url"));
    row.insert("user_agent".into(), json!("curl/8.5 <script>"));
    row.insert(
        "args_urls".into(),
        json!(["http://169.254.169.254/latest/meta-data/"]),
    );
    row.insert("args_url_hosts".into(), json!(["169.254.169.254"]));
    Incident {
        incident_id: "inc-0123456789abcdef01234567".into(),
        rule_id: "ssrf-internal-or-dangerous-url".into(),
        rule_sha256: "9f".repeat(32),
        level: Level::Analyst,
        severity: Severity::High,
        title: "SSRF: tool call targets an internal or metadata address".into(),
        tags: vec![
            "owasp-mcp:MCP05".into(),
            "atlas:AML.T0049".into(),
            "atlas:AML.T0051.001".into(),
        ],
        entity: BTreeMap::from([
            ("principal".to_string(), json!("user:mallory")),
            ("server_id".to_string(), json!("srv-fetch")),
        ]),
        session_id: Some("sess-42".into()),
        server_id: Some("srv-fetch <!here>".into()),
        first_ts: t(0),
        last_ts: t(7),
        event_ids: vec!["ev-1".into(), "ev-2".into()],
        match_count: 2,
        evidence: vec![row],
        status: IncidentStatus::Open,
        detected_at: t(9),
        backfill: false,
    }
}

/// What the HTTPS receiver saw: (path, signature header present).
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// An HTTPS server on loopback with a leaf certificate for `localhost`
/// issued by a fresh CA; returns its port and the CA's PEM.
fn https_receiver(rt: &tokio::runtime::Runtime, seen: Seen) -> (u16, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let signed = req.headers().contains_key("x-dunes-signature");
                            let _ = req.into_body().collect().await;
                            seen.lock().expect("lock").push((path, signed));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca.pem())
}

#[test]
fn delivers_over_tls_to_a_private_ca_and_refuses_an_unknown_issuer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let seen: Seen = Arc::default();
    let (port, ca_pem) = https_receiver(&rt, seen.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write CA");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123\n").expect("write secret");
    let dest = |name: &str, ca: bool| WebhookConfig {
        name: name.into(),
        url: format!("https://localhost:{port}/{name}"),
        ca_file: ca.then(|| ca_file.clone()),
        secret_file: Some(secret.clone()),
        timeout_ms: 2_000,
        backoff_initial_ms: 50,
        backoff_max_ms: 200,
        ..WebhookConfig::default()
    };
    let hooks = Webhooks::start(
        &[dest("private-ca", true), dest("public-roots", false)],
        &dir.path().join("data"),
    )
    .expect("start")
    .expect("destinations");
    let inc = incident();
    let json = serde_json::to_vec(&inc).expect("encode");
    let change = Change::created(&inc, &json);
    hooks
        .enqueue(std::slice::from_ref(&change), &[ocsf::finding(&change)])
        .expect("enqueue");
    let view = hooks.view();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st: BTreeMap<String, _> = view
            .webhooks()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let ok = &st["private-ca"];
        let refused = &st["public-roots"];
        if ok.delivered == 1 && refused.failed_attempts >= 2 {
            assert_eq!(ok.pending, 0);
            assert_eq!(refused.pending, 1, "an untrusted server gets nothing");
            let err = refused.last_error.clone().unwrap_or_default();
            assert!(err.to_lowercase().contains("certificate"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "{:?} {:?}", ok, refused);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![("/private-ca".to_string(), true)]
    );
}
