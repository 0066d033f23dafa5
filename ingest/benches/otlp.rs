//! OTLP ingest against NDJSON ingest: the same real-SDK envelopes
//! (`examples/corpus/mcp-sample.ndjson`) as one NDJSON body, as OTLP logs (protobuf) whose
//! bodies are the envelopes, as OTLP logs whose bodies are the JSON-RPC messages, and as
//! OTLP spans (one per request/response pair, OTel MCP attributes) — each split or mapped
//! into records and normalised to Arrow. Throughput is in envelopes.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dunes_ingest::otlp::{Encoding, Signal, map_request};
use dunes_ingest::{IngestConfig, Normalizer};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use serde_json::Value;

fn lines() -> Vec<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/mcp-sample.ndjson");
    std::fs::read_to_string(&p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.to_string())),
    })
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: s(v),
        ..Default::default()
    }
}

fn nanos(env: &Value) -> u64 {
    env["ts"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .map_or(0, |n| n as u64)
}

/// The attributes every form shares: server, session, principal.
fn context(env: &Value) -> Vec<KeyValue> {
    let mut a = vec![kv(
        "server.address",
        env["server_id"].as_str().unwrap_or("?"),
    )];
    if let Some(x) = env["session_id"].as_str() {
        a.push(kv("mcp.session.id", x));
    }
    if let Some(x) = env["auth"]["sub"].as_str() {
        a.push(kv("user.id", x));
    }
    a
}

fn logs(records: Vec<LogRecord>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Spans of the request/response pairs (same server, session, id); returns the body and
/// the number of envelopes it maps to.
fn spans(envs: &[Value]) -> (Vec<u8>, u64) {
    let key = |e: &Value| {
        format!(
            "{}|{}|{}",
            e["server_id"], e["session_id"], e["message"]["id"]
        )
    };
    let mut responses: HashMap<String, &Value> = HashMap::new();
    for e in envs
        .iter()
        .filter(|e| e["direction"] == "s2c" && e["message"].get("method").is_none())
    {
        responses.insert(key(e), e);
    }
    let mut out = Vec::new();
    let mut n = 0u64;
    for (i, req) in envs.iter().enumerate() {
        let m = &req["message"];
        let (Some(method), Some(id)) = (m["method"].as_str(), m.get("id")) else {
            continue;
        };
        let Some(resp) = responses.get(&key(req)) else {
            continue;
        };
        let mut a = context(req);
        a.push(kv("mcp.method.name", method));
        a.push(kv("jsonrpc.request.id", &id.to_string()));
        if method == "tools/call" {
            a.push(kv(
                "gen_ai.tool.name",
                m["params"]["name"].as_str().unwrap_or(""),
            ));
            a.push(kv(
                "gen_ai.tool.call.arguments",
                &m["params"]["arguments"].to_string(),
            ));
            if let Some(r) = resp["message"].get("result") {
                a.push(kv("gen_ai.tool.call.result", &r.to_string()));
            }
        }
        if let Some(code) = resp["message"]["error"]["code"].as_i64() {
            a.push(kv("rpc.response.status_code", &code.to_string()));
        }
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        out.push(Span {
            trace_id: trace.to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: method.to_string(),
            kind: 2,
            start_time_unix_nano: nanos(req),
            end_time_unix_nano: nanos(resp),
            attributes: a,
            ..Default::default()
        });
        n += 2;
    }
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                spans: out,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec();
    (body, n)
}

fn bench(c: &mut Criterion) {
    let lines = lines();
    let envs: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let n = lines.len() as u64;
    let ndjson = bytes::Bytes::from(lines.join("\n").into_bytes());
    let passthrough = logs(
        lines
            .iter()
            .map(|l| LogRecord {
                body: s(l),
                ..Default::default()
            })
            .collect(),
    );
    let jsonrpc = logs(
        envs.iter()
            .map(|e| LogRecord {
                time_unix_nano: nanos(e),
                body: s(&e["message"].to_string()),
                attributes: context(e),
                ..Default::default()
            })
            .collect(),
    );
    let (traces, n_spans) = spans(&envs);
    let decode = |recs| {
        let mut norm = Normalizer::new(IngestConfig::default());
        black_box(norm.decode_batch(recs))
    };
    let mut g = c.benchmark_group("ingest_forms");
    g.throughput(Throughput::Elements(n));
    g.bench_function("ndjson", |b| {
        b.iter(|| decode(dunes_ingest::split_http_body(&ndjson, "b", 1 << 20).unwrap_or_default()))
    });
    g.bench_function("otlp_logs_envelope_bodies", |b| {
        b.iter(|| {
            decode(
                map_request(Signal::Logs, Encoding::Protobuf, &passthrough, "b")
                    .map(|m| m.records)
                    .unwrap_or_default(),
            )
        })
    });
    g.bench_function("otlp_logs_jsonrpc_bodies", |b| {
        b.iter(|| {
            decode(
                map_request(Signal::Logs, Encoding::Protobuf, &jsonrpc, "b")
                    .map(|m| m.records)
                    .unwrap_or_default(),
            )
        })
    });
    g.throughput(Throughput::Elements(n_spans));
    g.bench_function("otlp_spans", |b| {
        b.iter(|| {
            decode(
                map_request(Signal::Traces, Encoding::Protobuf, &traces, "b")
                    .map(|m| m.records)
                    .unwrap_or_default(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
