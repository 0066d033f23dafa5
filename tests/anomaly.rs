//! End-to-end tests of the behavioural anomaly model through the `dunes`
//! binary: a model trained with `dunes model train` is loaded by `dunes
//! run`, its version is ledgered (kind `model`) and names its incidents, and
//! the ledger verifies; a warm-up interrupted by a restart continues.

use std::path::{Path, PathBuf};

use dunes_ledger::RecordKind;
use serde_json::Value;

mod common;
use common::{dunes, run_ok};

/// `dunes simulate` into `dir/name.ndjson` (+ labels); returns the paths.
fn simulate(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let events = dir.join(format!("{name}.ndjson"));
    let labels = dir.join(format!("{name}.labels.json"));
    run_ok(
        dunes()
            .arg("simulate")
            .args(args)
            .arg("--out")
            .arg(&events)
            .arg("--labels")
            .arg(&labels),
    );
    (events, labels)
}

/// Payloads of the ledger records of `kind`, in order.
fn ledger_records(dir: &Path, kind: RecordKind) -> Vec<Value> {
    indexed_records(dir, kind)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// (ledger index, payload) of the records of `kind`, in order.
fn indexed_records(dir: &Path, kind: RecordKind) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    dunes_ledger::for_each_record(dir, 0, |r| {
        if r.kind == kind {
            out.push((
                r.index,
                serde_json::from_slice(r.payload).expect("json payload"),
            ));
        }
    })
    .expect("ledger reads");
    out
}

fn read_ndjson(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect()
}

#[test]
fn a_trained_model_is_ledgered_by_run_and_names_its_incidents() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let (base, base_labels) = simulate(
        tmp.path(),
        "base",
        &["--sessions", "400", "--seed", "11", "--attack-ratio", "0"],
    );
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(&cfg, "[anomaly]\ncomponents = 2\n").expect("config");
    let out = run_ok(
        dunes()
            .args(["model", "train", "--from"])
            .arg(&base)
            .arg("--labels")
            .arg(&base_labels)
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&dir),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let version = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("version:"))
        .map(|v| v.trim().to_string())
        .expect("model train prints the version");
    assert_eq!(version.len(), 64, "{stdout}");
    assert!(stdout.contains("principal windows:"), "{stdout}");
    assert!(
        dir.join("models/anomaly-model.json").exists(),
        "saved in the data dir"
    );

    // Traffic with behavioural recon sessions, through `dunes run`.
    let (traffic, labels) = simulate(
        tmp.path(),
        "traffic",
        &[
            "--sessions",
            "200",
            "--seed",
            "12",
            "--scenarios",
            "recon_anomaly",
            "--attack-ratio",
            "0.1",
        ],
    );
    run_ok(
        dunes()
            .arg("run")
            .arg(&traffic)
            .arg("--no-http")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&dir),
    );

    // The model record, with the trained version, before any incident
    // that names it.
    let models = indexed_records(&dir, RecordKind::Model);
    assert_eq!(models.len(), 1, "{models:?}");
    let (model_index, rec) = &models[0];
    assert_eq!(rec["type"], "anomaly_model");
    assert_eq!(rec["version"], Value::String(version.clone()));
    assert_eq!(rec["rule_id"], "anomaly.behaviour");
    assert_eq!(rec["format"], 2);
    assert!(rec["principal"]["threshold"].is_number(), "{rec}");
    let incidents = indexed_records(&dir, RecordKind::Incident);
    let anomalies: Vec<&Value> = incidents
        .iter()
        .filter(|(_, i)| i["rule_id"] == "anomaly.behaviour")
        .map(|(at, i)| {
            assert!(at > model_index, "incident ledgered before its model");
            i
        })
        .collect();
    assert!(!anomalies.is_empty(), "no anomaly incident was raised");
    for inc in &anomalies {
        assert_eq!(inc["rule_sha256"], Value::String(version.clone()));
        let ev = &inc["evidence"][0];
        assert_eq!(ev["model_version"], Value::String(version.clone()));
        assert!(
            ev["window"] == "session" || ev["window"] == "principal",
            "{ev}"
        );
        assert!(!ev["explanation"].as_array().expect("lines").is_empty());
    }
    // The recon sessions are among those flagged.
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(labels).expect("labels")).expect("labels json");
    let flagged: Vec<&str> = anomalies
        .iter()
        .filter_map(|i| i["session_id"].as_str())
        .filter(|s| labels.get(*s).is_some_and(|l| l == "recon_anomaly"))
        .collect();
    assert!(!flagged.is_empty(), "no recon session flagged");
    assert_eq!(
        read_ndjson(&dir.join("incidents.ndjson"))
            .iter()
            .filter(|i| i["rule_id"] == "anomaly.behaviour")
            .count(),
        anomalies.len()
    );

    // Level 1 by default: each anomaly invalidates its session (responses
    // file and ledger).
    let responses = read_ndjson(&dir.join("responses.ndjson"));
    let ledgered = ledger_records(&dir, RecordKind::Response);
    for inc in &anomalies {
        assert_eq!(inc["level"], 1, "{inc}");
        let session = inc["session_id"].as_str().expect("session");
        for set in [&responses, &ledgered] {
            assert!(
                set.iter().any(|r| r["incident_id"] == inc["incident_id"]
                    && r["action"] == "isolate_session"
                    && r["target"]["session_id"] == session),
                "no isolate_session of {session} for {}",
                inc["incident_id"]
            );
        }
    }

    run_ok(dunes().arg("verify").arg(&dir));
    // A second start ledgers the (same) version again.
    std::fs::write(tmp.path().join("empty.ndjson"), "").expect("w");
    run_ok(
        dunes()
            .arg("run")
            .arg(tmp.path().join("empty.ndjson"))
            .arg("--no-http")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&dir)
            .env("RUST_LOG", "error"),
    );
    let models = ledger_records(&dir, RecordKind::Model);
    assert_eq!(models.len(), 2);
    assert_eq!(models[1]["version"], Value::String(version));
    run_ok(dunes().arg("verify").arg(&dir));
}

/// The `trained_on` label of the model in `dir` (it counts the warm-up's
/// sessions, windows and minutes) and the versions ledgered there.
fn warmup_model(dir: &Path) -> (String, Vec<String>) {
    let model: Value = serde_json::from_slice(
        &std::fs::read(dir.join("models/anomaly-model.json")).expect("model saved"),
    )
    .expect("model json");
    // The shipped prior (scoring during the warm-up) is ledgered too; only
    // the deployment's own models count here.
    let versions = ledger_records(dir, RecordKind::Model)
        .iter()
        .filter(|r| {
            !r["file"]
                .as_str()
                .is_some_and(|f| f.starts_with("(shipped prior"))
        })
        .map(|r| r["version"].as_str().expect("version").to_string())
        .collect();
    assert_eq!(
        ledger_records(dir, RecordKind::Model)
            .last()
            .map(|r| r["version"].clone()),
        Some(model["version"].clone())
    );
    (
        model["trained_on"].as_str().expect("label").to_string(),
        versions,
    )
}

/// 300 benign simulated sessions (seed 13) whose warm-up ends in them, and
/// a config with `before` ahead of a short warm-up's `[anomaly]` section
/// (plus `anomaly`).
fn warmup_setup(dir: &Path, before: &str, anomaly: &str) -> (PathBuf, PathBuf) {
    let (events, _) = simulate(
        dir,
        "base",
        &["--sessions", "300", "--seed", "13", "--attack-ratio", "0"],
    );
    let cfg = dir.join("dunes.toml");
    std::fs::write(
        &cfg,
        format!(
            "{before}[anomaly]\nwarmup_minutes = 60\nwarmup_min_sessions = 100\ncomponents = 2\n{anomaly}"
        ),
    )
    .expect("config");
    (events, cfg)
}

#[test]
fn a_restart_during_the_warm_up_continues_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (events, cfg) = warmup_setup(tmp.path(), "[ingest]\nbatch_size = 200\n", "");
    let replay = |file: &Path, dir: &Path| {
        run_ok(
            dunes()
                .arg("replay")
                .arg(file)
                .arg("--config")
                .arg(&cfg)
                .arg("--data-dir")
                .arg(dir),
        )
    };

    // In one process.
    let one = tmp.path().join("one");
    replay(&events, &one);
    let (label_one, versions_one) = warmup_model(&one);
    assert_eq!(versions_one.len(), 1);
    assert!(label_one.starts_with("warm-up: "), "{label_one}");

    // Stopped after the first quarter (a whole number of batches, so both
    // runs cut the stream at the same places), then started again.
    let text = std::fs::read_to_string(&events).expect("events");
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines.len() / 4 / 200 * 200;
    let part = |name: &str, v: &[&str]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, v.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("w");
        p
    };
    let (p1, p2) = (
        part("p1.ndjson", &lines[..cut]),
        part("p2.ndjson", &lines[cut..]),
    );
    let two = tmp.path().join("two");
    replay(&p1, &two);
    assert!(
        !two.join("models/anomaly-model.json").exists(),
        "the warm-up ended in the first part"
    );
    let state: Value = serde_json::from_slice(
        &std::fs::read(two.join("state/anomaly-state.json")).expect("state saved"),
    )
    .expect("state json");
    let windows = state["warmup"]["session_windows"]
        .as_u64()
        .expect("warm-up");
    assert!(windows > 0, "{}", state["warmup"]);
    assert!(state["warmup"]["principal_windows"].as_u64() > Some(0));
    assert_eq!(
        std::fs::metadata(two.join("state/anomaly-warmup.bin"))
            .expect("warm-up log")
            .len(),
        state["warmup"]["log_bytes"].as_u64().expect("log bytes")
    );
    replay(&p2, &two);
    let (label_two, versions_two) = warmup_model(&two);
    // Same sessions, windows and minutes: the warm-up went on, it did not
    // start over with the second part.
    assert_eq!(label_two, label_one);
    assert_eq!(versions_two.len(), 1);
    assert!(!two.join("state/anomaly-warmup.bin").exists());
    run_ok(dunes().arg("verify").arg(&one));
    run_ok(dunes().arg("verify").arg(&two));
}

/// The model file at `path` as JSON, without what names its source.
fn model_json_without_source(path: &Path) -> Value {
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(path).expect("model file")).expect("model json");
    let o = m.as_object_mut().expect("object");
    o.remove("version");
    o.remove("trained_on");
    m
}

#[test]
fn training_from_the_event_history_equals_training_from_the_ndjson() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (base, _) = simulate(
        tmp.path(),
        "base",
        &["--sessions", "300", "--seed", "21", "--attack-ratio", "0"],
    );
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(&cfg, "[ingest]\nbatch_size = 500\n").expect("config");
    // The monitor stores the normalised events as Parquet history.
    let dir = tmp.path().join("data");
    run_ok(
        dunes()
            .arg("run")
            .arg(&base)
            .args(["--no-http", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&dir),
    );
    assert!(dir.join("history/events").is_dir());
    let train = |from: &Path, out: &Path| {
        run_ok(
            dunes()
                .args(["model", "train", "--from"])
                .arg(from)
                .arg("--out")
                .arg(out)
                .arg("--config")
                .arg(&cfg)
                .arg("--data-dir")
                .arg(tmp.path().join("scratch")),
        )
    };
    let from_history = tmp.path().join("from-history.json");
    let from_ndjson = tmp.path().join("from-ndjson.json");
    let out = train(&dir, &from_history);
    train(&base, &from_ndjson);
    let h = model_json_without_source(&from_history);
    assert!(
        h["trained_sessions"].as_u64().unwrap() >= 250,
        "{}",
        h["trained_sessions"]
    );
    assert_eq!(
        h,
        model_json_without_source(&from_ndjson),
        "same windows, same model"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("history"), "{stdout}");

    // A directory without history is refused with a clear error.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let o = dunes()
        .args(["model", "train", "--from"])
        .arg(&empty)
        .arg("--out")
        .arg(tmp.path().join("none.json"))
        .output()
        .expect("runs");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no event history"), "{err}");
}

/// Issue #14: a fresh `dunes run` with no trained model is not blind. The
/// first ten minutes of traffic that contain a recon burst (cut from a
/// simulated stream at the recon session's first event) raise a behavioural
/// incident from the shipped prior, naming it.
#[test]
fn a_fresh_monitor_catches_a_recon_burst_in_its_first_ten_minutes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (events, labels) = simulate(
        tmp.path(),
        "mix",
        &[
            "--sessions",
            "120",
            "--seed",
            "29",
            "--attack-ratio",
            "0.2",
            "--scenarios",
            "recon_anomaly",
        ],
    );
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&labels).expect("labels")).expect("labels json");
    let text = std::fs::read_to_string(&events).expect("events");
    let rows: Vec<(chrono::DateTime<chrono::Utc>, String, &str)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().expect("ts"))
                .expect("ts")
                .with_timezone(&chrono::Utc);
            (ts, v["session_id"].as_str().unwrap_or("").to_string(), l)
        })
        .collect();
    let start = rows
        .iter()
        .find(|(_, s, _)| labels.get(s).is_some_and(|l| l == "recon_anomaly"))
        .map(|(t, _, _)| *t)
        .expect("a recon session");
    let end = start + chrono::Duration::minutes(10);
    let cut: String = rows
        .iter()
        .filter(|(t, _, _)| *t >= start && *t < end)
        .map(|(_, _, l)| format!("{l}\n"))
        .collect();
    let input = tmp.path().join("first-ten-minutes.ndjson");
    std::fs::write(&input, cut).expect("write");
    let dir = tmp.path().join("data");
    let incidents = tmp.path().join("incidents.ndjson");
    run_ok(
        dunes()
            .arg("replay")
            .arg(&input)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--incidents-out")
            .arg(&incidents),
    );
    assert!(
        !dir.join("models/anomaly-model.json").exists(),
        "no deployment model after ten minutes"
    );
    let text = std::fs::read_to_string(&incidents).expect("incidents");
    let anomalies: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|i| i["rule_id"] == "anomaly.behaviour")
        .collect();
    // The incidents on sessions of one label.
    let labelled = |label: &str| -> Vec<&Value> {
        anomalies
            .iter()
            .filter(|i| {
                i["session_id"]
                    .as_str()
                    .and_then(|s| labels.get(s))
                    .is_some_and(|l| l == label)
            })
            .collect()
    };
    let recon = labelled("recon_anomaly");
    assert!(
        !recon.is_empty(),
        "no behavioural incident on the recon burst: {anomalies:?}"
    );
    let inc = recon[0];
    assert_eq!(inc["evidence"][0]["model"], "prior", "{inc}");
    assert_eq!(inc["evidence"][0]["trigger"], "tail", "{inc}");
    assert!(
        inc["title"]
            .as_str()
            .is_some_and(|t| t.contains("prior model")),
        "{inc}"
    );
    // The prior's version is in the ledger before its incidents.
    let models = ledger_records(&dir, RecordKind::Model);
    assert!(
        models.iter().any(|m| m["version"] == inc["rule_sha256"]
            && m["file"]
                .as_str()
                .is_some_and(|f| f.starts_with("(shipped prior"))),
        "{models:?}"
    );
    // And nothing benign is flagged by the prior.
    let benign = labelled("benign").len();
    assert_eq!(benign, 0, "{anomalies:?}");
}

#[test]
fn a_model_trained_while_the_input_is_idle_takes_over_without_more_batches() {
    let tmp = tempfile::tempdir().expect("tmp");
    // So many events to train beside that the count never runs out here:
    // only the idle driver can hand the model over before shutdown.
    let (events, cfg) = warmup_setup(
        tmp.path(),
        "[http]\nmax_body_bytes = 4194304\n",
        "train_events = 100000000\n",
    );
    let dir = tmp.path().join("data");
    let (mut mon, base) = common::start_run(dunes(), Some(&cfg), &dir);
    let text = std::fs::read_to_string(&events).expect("events");
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(400) {
        let body: String = chunk.iter().map(|l| format!("{l}\n")).collect();
        let resp = ureq::post(&format!("{base}/v1/ingest"))
            .header("authorization", common::bearer(&dir, "ingest"))
            .header("content-type", "application/x-ndjson")
            .send(body.as_bytes())
            .expect("ingest");
        assert_eq!(resp.status().as_u16(), 202);
    }
    let model = dir.join("models/anomaly-model.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !model.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no model while idle after the warm-up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    common::sigterm_and_wait(&mut mon);
    let (label, versions) = warmup_model(&dir);
    assert!(label.starts_with("warm-up: "), "{label}");
    assert_eq!(versions.len(), 1, "ledgered once, not again at shutdown");
    run_ok(dunes().arg("verify").arg(&dir));
}
