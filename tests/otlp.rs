//! OTLP input: an MCP server's OpenTelemetry SDK (Python, the real OTLP exporters) reports one
//! MCP exchange as spans (OTel MCP semantic conventions) and log records; a second `dunes run`
//! takes the same exchange as the envelopes a gateway logs. Both must ledger every message
//! and raise the same incidents. The exchange is `tests/otlp/mcp_exchange.py`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bearer, dunes, read_ndjson, sigterm_and_wait, start_run, token};
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/mcp_exchange.py");

fn python(args: &[&str]) {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "mcp_exchange.py {args:?} failed (the OTel SDK comes from `pip install opentelemetry-sdk \
         opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc`, as \
         .ci/run does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn incidents(base: &str, dir: &Path) -> Vec<Value> {
    let mut resp = ureq::get(&format!("{base}/api/v1/incidents?limit=500"))
        .header("authorization", &bearer(dir, "viewer"))
        .call()
        .expect("list incidents");
    let v: Value = resp.body_mut().read_json().expect("json");
    v["incidents"].as_array().cloned().unwrap_or_default()
}

/// What must be equal between the two forms: rule, level, and the entity it fired on.
fn summary(incidents: &[Value]) -> BTreeSet<String> {
    incidents
        .iter()
        .map(|i| {
            format!(
                "{} L{} {}",
                i["rule_id"].as_str().unwrap_or("?"),
                i["level"],
                i["entity"]
            )
        })
        .collect()
}

/// Incidents once their number has stopped changing for a second (at most 20 s).
fn settled(base: &str, dir: &Path) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = incidents(base, dir);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = incidents(base, dir);
        if (now.len() == last.len() && !now.is_empty()) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The envelopes in the ledger (event records).
fn ledgered_messages(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    dunes_ledger::for_each_record(dir, 0, |r| {
        if r.kind.as_str() == "event" {
            out.push(serde_json::from_slice(r.payload).expect("an event record is JSON"));
        }
    })
    .expect("read ledger");
    out
}

#[test]
fn otel_sdk_export_over_http_raises_the_same_incidents_as_envelopes() {
    same_incidents_as_envelopes("http");
}

#[test]
fn otel_sdk_export_over_grpc_raises_the_same_incidents_as_envelopes() {
    same_incidents_as_envelopes("grpc");
}

fn same_incidents_as_envelopes(protocol: &str) {
    let tmp = tempfile::tempdir().expect("tmp");

    // The envelope form, through /v1/ingest.
    let nd = tmp.path().join("exchange.ndjson");
    python(&["envelopes", nd.to_str().expect("utf8 path")]);
    let envelopes = read_ndjson(&nd);
    let env_dir = tmp.path().join("envelopes");
    let (mut a, base_a) = start_run(dunes(), None, &env_dir);
    let body = std::fs::read(&nd).expect("read");
    let mut resp = ureq::post(&format!("{base_a}/v1/ingest"))
        .header("authorization", &bearer(&env_dir, "ingest"))
        .header("content-type", "application/x-ndjson")
        .send(&body[..])
        .expect("ingest");
    let ack: Value = resp.body_mut().read_json().expect("ack");
    assert_eq!(ack["accepted"], envelopes.len(), "{ack}");
    let want = settled(&base_a, &env_dir);

    // The OTLP form, exported by the OpenTelemetry SDK.
    let otlp_dir = tmp.path().join("otlp");
    let (mut b, base_b) = start_run(dunes(), None, &otlp_dir);
    python(&["otlp", &base_b, &token(&otlp_dir, "ingest"), protocol]);
    let got = settled(&base_b, &otlp_dir);

    sigterm_and_wait(&mut a);
    sigterm_and_wait(&mut b);

    assert!(
        want.len() >= 4,
        "the exchange holds four attacks: {:#?}",
        summary(&want)
    );
    assert_eq!(summary(&got), summary(&want), "OTLP vs envelope incidents");
    eprintln!("{protocol}: incidents of both forms: {:#?}", summary(&got));

    // Every message of the exchange was ledgered once, nothing dead-lettered.
    let dead = otlp_dir.join("dead-letter.ndjson");
    assert!(
        !dead.exists() || read_ndjson(&dead).is_empty(),
        "dead letter: {:?}",
        read_ndjson(&dead)
    );
    let msgs = |v: &[Value]| -> BTreeSet<String> {
        v.iter()
            .map(|e| {
                let m = &e["message"];
                format!("{} {} {} {}", e["direction"], e["ts"], m["id"], m["method"])
            })
            .collect()
    };
    let ledgered = ledgered_messages(&otlp_dir);
    assert_eq!(ledgered.len(), envelopes.len(), "{ledgered:#?}");
    assert_eq!(msgs(&ledgered), msgs(&envelopes));
}

/// OTLP/JSON straight from a client: an MCP span is ledgered, a non-MCP span skipped, an
/// MCP span that cannot be mapped dead-lettered with its reason and counted in
/// `partialSuccess`; a body in another encoding is refused with 415.
#[test]
fn otlp_json_partial_success_and_dead_letter() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let (mut mon, base) = start_run(dunes(), None, &dir);
    let span = |id: &str, attrs: Value| {
        serde_json::json!({
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": id, "name": "x", "kind": 2,
            "startTimeUnixNano": "1796000000000000000", "endTimeUnixNano": "1796000000100000000",
            "attributes": attrs,
        })
    };
    let kv = |k: &str, v: &str| serde_json::json!({"key": k, "value": {"stringValue": v}});
    let body = serde_json::json!({"resourceSpans": [{
    "resource": {"attributes": [kv("service.name", "calc-mcp")]},
    "scopeSpans": [{"spans": [
        span("00000000000000a1", serde_json::json!([kv("mcp.method.name", "tools/call"),
            kv("jsonrpc.request.id", "1"), kv("gen_ai.tool.name", "add"),
            kv("gen_ai.tool.call.arguments", "{\"a\":1,\"b\":2}"),
            kv("gen_ai.tool.call.result", "3")])),
        span("00000000000000a2", serde_json::json!([kv("http.request.method", "POST")])),
        span("00000000000000a3", serde_json::json!([kv("mcp.method.name", "tools/call"),
            kv("jsonrpc.request.id", "2")])),
    ]}]}]});
    let auth = bearer(&dir, "ingest");
    let mut resp = ureq::post(&format!("{base}/v1/traces"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .send(serde_json::to_vec(&body).expect("json").as_slice())
        .expect("export");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let answer: Value = resp
        .body_mut()
        .read_json()
        .expect("ExportTraceServiceResponse");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 1, "{answer}");

    let refused = ureq::post(&format!("{base}/v1/traces"))
        .header("authorization", &auth)
        .header("content-type", "text/plain")
        .config()
        .http_status_as_error(false)
        .build()
        .send(&b"hello"[..])
        .expect("answer");
    assert_eq!(refused.status(), 415);
    sigterm_and_wait(&mut mon);

    let ledgered = ledgered_messages(&dir);
    let ids: Vec<&str> = ledgered
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "otlp-5b8efff798038103d269b633813fc60c-00000000000000a1-q",
            "otlp-5b8efff798038103d269b633813fc60c-00000000000000a1-r"
        ]
    );
    assert_eq!(ledgered[0]["message"]["params"]["arguments"]["b"], 2);
    let dead = read_ndjson(&dir.join("dead-letter.ndjson"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("tools/call without gen_ai.tool.name")),
        "{}",
        dead[0]
    );
}
