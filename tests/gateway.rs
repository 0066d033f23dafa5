//! Gateway access logs as input (`--format agentgateway|tyk`, `POST /v1/ingest?format=`):
//! an attack written only into a gateway's access log (method, primitive name, principal,
//! session, status — no arguments or results) raises the incidents those fields can show,
//! exactly those, and every line is ledgered, dead-lettered with its reason, or skipped.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{bearer, dunes, read_ndjson, run_ok, start_run};
use serde_json::Value;

/// One agentgateway text request log line (the layout of `examples/gateway/agentgateway.log`).
fn agw(
    secs: f64,
    sub: &str,
    src: &str,
    session: &str,
    method: &str,
    kind: &str,
    name: &str,
) -> String {
    let (whole, frac) = (secs.trunc() as i64, ((secs.fract()) * 1e6).round() as i64);
    let ts = format!(
        "2026-11-30T10:{:02}:{:02}.{:06}Z",
        whole / 60,
        whole % 60,
        frac
    );
    let mut l = format!(
        "{ts}\tinfo\trequest gateway=default/bind/3000 listener=listener0 route=default/route0 \
         src.addr={src}:51514 http.method=POST http.host=mcp.example.internal http.path=/mcp \
         http.version=HTTP/1.1 http.status=200 jwt.sub={sub} protocol=mcp mcp.method={method} \
         mcp.target=files"
    );
    if !kind.is_empty() {
        l.push_str(&format!(
            " mcp.resource.type={kind} mcp.resource.name={name}"
        ));
    }
    l.push_str(&format!(" mcp.session.id={session} duration=3ms"));
    l
}

fn incidents(path: &Path) -> BTreeSet<(String, String)> {
    read_ndjson(path)
        .iter()
        .map(|i| {
            (
                i["rule_id"].as_str().unwrap_or("?").to_string(),
                i["session_id"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[test]
fn agentgateway_log_replayed_raises_exactly_the_incidents_its_fields_show() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut lines = vec![
        "2026-11-30T10:00:00.000000Z\tinfo\tapp\tserving UI at http://localhost:15000/ui"
            .to_string(),
    ];
    // s-benign: alice works normally.
    lines.push(agw(
        1.0,
        "alice",
        "10.0.9.21",
        "s-benign",
        "initialize",
        "",
        "",
    ));
    lines.push(agw(
        1.2,
        "alice",
        "10.0.9.21",
        "s-benign",
        "tools/list",
        "",
        "",
    ));
    for i in 0..5 {
        lines.push(agw(
            3.0 + f64::from(i) * 7.0,
            "alice",
            "10.0.9.21",
            "s-benign",
            "tools/call",
            "tool",
            "read_file",
        ));
    }
    // s-hijack: bob's session id used by mallory from elsewhere.
    lines.push(agw(
        10.0,
        "bob",
        "10.0.9.30",
        "s-hijack",
        "tools/call",
        "tool",
        "list_dir",
    ));
    lines.push(agw(
        40.0,
        "mallory",
        "198.51.100.7",
        "s-hijack",
        "tools/call",
        "tool",
        "list_dir",
    ));
    // s-creds: a credential store read through a resource.
    lines.push(agw(
        50.0,
        "carol",
        "10.0.9.40",
        "s-creds",
        "resources/read",
        "resource",
        "file:///home/carol/.aws/credentials",
    ));
    // s-flood: 70 calls in 35 s.
    for i in 0..70 {
        lines.push(agw(
            60.0 + f64::from(i) * 0.5,
            "dave",
            "10.0.9.50",
            "s-flood",
            "tools/call",
            "tool",
            "search",
        ));
    }
    // A health check (not MCP) and a line agentgateway never writes.
    lines.push("2026-11-30T10:03:00.000000Z\tinfo\trequest route=default/route1 http.method=GET http.path=/healthz http.status=200 protocol=http duration=0ms".into());
    lines.push("this is not an agentgateway log line".into());
    let log = tmp.path().join("access.log");
    std::fs::write(&log, lines.join("\n") + "\n").expect("write");

    let data = tmp.path().join("data");
    let found = tmp.path().join("incidents.ndjson");
    let out = run_ok(
        dunes()
            .args(["replay", "--format", "agentgateway", "--data-dir"])
            .arg(&data)
            .arg("--incidents-out")
            .arg(&found)
            .arg(&log),
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    let want: BTreeSet<(String, String)> = [
        ("session-principal-changed", "s-hijack"),
        ("credential-file-access", "s-creds"),
        ("call-flood-rate", "s-flood"),
    ]
    .into_iter()
    .map(|(r, s)| (r.to_string(), s.to_string()))
    .collect();
    assert_eq!(incidents(&found), want, "{summary}");

    // 80 MCP lines became 80 ledgered envelopes, each carrying its line; the unreadable
    // line is dead-lettered with the reason; the app log and the health check are skipped.
    let dead = read_ndjson(&data.join("dead-letter.ndjson"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("agentgateway log line: expected `<time>"),
        "{reason}"
    );
    let mut ledgered: Vec<Value> = Vec::new();
    dunes_ledger::for_each_record(&data, 0, |r| {
        if r.kind.as_str() == "event" {
            ledgered.push(serde_json::from_slice(r.payload).expect("an event record is JSON"));
        }
    })
    .expect("read ledger");
    assert_eq!(ledgered.len(), 80, "{summary}");
    let mcp_lines: BTreeSet<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains("protocol=mcp"))
        .collect();
    let carried: BTreeSet<&str> = ledgered
        .iter()
        .filter_map(|e| e["gateway_log"]["line"].as_str())
        .collect();
    assert_eq!(carried, mcp_lines);
    run_ok(dunes().args(["verify", "--allow-unsigned-tail"]).arg(&data));
}

/// One Tyk JSON access-log record of a `tools/call` through an MCP proxy.
fn tyk(ms: u64, key: &str, ip: &str, tool: &str, status: u16, err: Option<i64>) -> String {
    let mut v = serde_json::json!({
        "level": "info", "msg": "", "prefix": "access-log",
        "time": format!("2026-11-30T11:{:02}:{:02}.{:03}Z", ms / 60_000, (ms / 1000) % 60, ms % 1000),
        "api_id": "b1a6c3f0e7d94c1b8e2a", "api_name": "Files MCP", "org_id": "5e9d9544",
        "api_key": key, "client_ip": ip, "host": "gw.example.com", "method": "POST",
        "protocol": "HTTP/1.1", "user_agent": "agent/1.0", "request_uri": "/files-mcp/",
        "status": status, "total_latency": 5, "upstream_latency": 4,
        "api_type": "mcp", "mcp_method": "tools/call",
        "mcp_primitive_type": "tool", "mcp_primitive_name": tool,
    });
    if let Some(c) = err {
        v["mcp_error_code"] = c.into();
    }
    v.to_string()
}

#[test]
fn tyk_access_log_over_http_ingest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let (_mon, base) = start_run(dunes(), None, &dir);
    let flood_key = "9f2c41d87ab3e0c5f6a1b2c3d4e5f607";
    let mut lines = Vec::new();
    // A stateless client (Tyk logs no session): 70 calls in 35 s from one key, stitched
    // into one derived session.
    for i in 0..70 {
        lines.push(tyk(i * 500, flood_key, "10.0.9.21", "search", 200, None));
    }
    // The upstream fails: the gateway answers 45 calls of other clients with -32004.
    for i in 0..45u64 {
        let key = format!("{:032x}", 1000 + i);
        lines.push(tyk(
            60_000 + i * 3000,
            &key,
            "10.0.8.1",
            "report",
            502,
            Some(-32004),
        ));
    }
    // Not MCP: skipped.
    lines.push(r#"{"level":"info","msg":"","prefix":"access-log","time":"2026-11-30T11:05:00Z","api_id":"x","method":"GET","status":200}"#.into());
    let body = lines.join("\n") + "\n";
    let mut resp = ureq::post(&format!("{base}/v1/ingest?format=tyk"))
        .header("authorization", bearer(&dir, "ingest"))
        .send(body.as_bytes())
        .expect("ingest");
    let ack: Value = resp.body_mut().read_json().expect("ack");
    // 70 requests + 45 requests with their 45 error answers.
    assert_eq!(ack["accepted"], 160, "{ack}");
    assert_eq!(ack["rejected"], 0, "{ack}");

    let mut resp = ureq::get(&format!("{base}/api/v1/incidents"))
        .header("authorization", bearer(&dir, "viewer"))
        .call()
        .expect("list");
    let list: Value = resp.body_mut().read_json().expect("json");
    let rules: BTreeSet<&str> = list["incidents"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["rule_id"].as_str())
        .collect();
    assert_eq!(
        rules,
        BTreeSet::from(["call-flood-rate", "server-error-burst"]),
        "{list}"
    );
    let flood = list["incidents"]
        .as_array()
        .expect("array")
        .iter()
        .find(|i| i["rule_id"] == "call-flood-rate")
        .expect("flood");
    assert!(
        flood["session_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("st-")),
        "the flood is pinned on the stitched session: {flood}"
    );

    // An unknown format is refused before anything is read.
    let err = ureq::post(&format!("{base}/v1/ingest?format=envoy"))
        .header("authorization", bearer(&dir, "ingest"))
        .send(body.as_bytes())
        .expect_err("400");
    assert!(matches!(err, ureq::Error::StatusCode(400)), "{err}");
}

/// The simulator's OTLP/JSON log exports (`dunes simulate --otlp`, the Collector file
/// exporter's layout) replayed with `--format otlp` raise the same incidents, on the same
/// events, as the envelope form of the same traffic.
#[test]
fn otlp_file_replay_matches_the_envelope_replay() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut found = Vec::new();
    for otlp in [false, true] {
        let traffic = tmp
            .path()
            .join(if otlp { "t.otlp.jsonl" } else { "t.ndjson" });
        let mut sim = dunes();
        sim.args([
            "simulate",
            "--sessions",
            "150",
            "--seed",
            "5",
            "--stateless",
            "--out",
        ])
        .arg(&traffic);
        if otlp {
            sim.arg("--otlp");
        }
        run_ok(&mut sim);
        let out = tmp.path().join(format!("incidents-{otlp}.ndjson"));
        let mut replay = dunes();
        replay
            .args(["replay", "--data-dir"])
            .arg(tmp.path().join(format!("data-{otlp}")))
            .arg("--incidents-out")
            .arg(&out)
            .arg(&traffic);
        if otlp {
            replay.args(["--format", "otlp"]);
        }
        run_ok(&mut replay);
        let set: BTreeSet<String> = read_ndjson(&out)
            .iter()
            .map(|i| format!("{} {} {}", i["rule_id"], i["session_id"], i["event_ids"]))
            .collect();
        found.push(set);
    }
    assert!(found[0].len() >= 5, "{:?}", found[0]);
    assert_eq!(found[0], found[1]);
}
