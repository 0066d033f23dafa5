//! `dunes report notify` end to end: a Level 3 incident of the demo gets its NIS2 early
//! warning submitted with no monitor running, then its GDPR notification through the
//! running monitor's API; each submission writes the document, its page and an evidence
//! bundle that `dunes verify` accepts, and the ledger binds the document's digest.

mod common;

use common::{dunes, free_port, read_ndjson, run_ok, sigterm_and_wait, token};
use serde_json::Value;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `note` of every `notify` action in the data dir's ledger, via `dunes verify`'s
/// neighbour: the actions file the pipeline writes next to the ledger.
fn notify_notes(dir: &std::path::Path) -> Vec<(String, String)> {
    read_ndjson(&dir.join("actions.ndjson"))
        .into_iter()
        .filter(|a| a["action"] == "notify")
        .map(|a| {
            (
                format!(
                    "{}/{}",
                    a["regime"].as_str().unwrap_or(""),
                    a["stage"].as_str().unwrap_or("")
                ),
                a["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `dunes report notify INCIDENT --regime R --stage S --out OUT --data-dir DIR`.
fn notify(
    dir: &std::path::Path,
    incident: &str,
    regime: &str,
    stage: &str,
    out: &std::path::Path,
) -> std::process::Command {
    let mut c = dunes();
    c.args([
        "report", "notify", incident, "--regime", regime, "--stage", stage,
    ])
    .arg("--out")
    .arg(out)
    .arg("--data-dir")
    .arg(dir);
    c
}

fn check_package(out: &std::path::Path, incident: &str) -> Value {
    let json = std::fs::read(out.join("notification.json")).expect("notification.json");
    let doc: Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(doc["type"], "dunes_regulatory_notification");
    assert_eq!(doc["incident"]["incident_id"], incident);
    assert_eq!(doc["incident"]["level"], 3);
    let html = std::fs::read_to_string(out.join("notification.html")).expect("html");
    assert!(html.contains(incident));
    assert!(html.contains("TO BE COMPLETED BY THE REPORTING ENTITY"));
    assert!(html.contains(&blake3::hash(&json).to_hex().to_string()));
    let v = run_ok(dunes().arg("verify").arg(out.join("evidence")));
    let text = stdout(&v);
    assert!(
        text.contains("(evidence bundle)") && text.contains("RESULT: OK"),
        "{text}"
    );
    doc
}

#[test]
fn notify_without_and_through_a_running_monitor() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = common::demo_data(&tmp.path().join("data"));
    let l3 = read_ndjson(&dir.join("incidents.ndjson"))
        .into_iter()
        .find(|i| i["level"] == 3)
        .and_then(|i| i["incident_id"].as_str().map(str::to_string))
        .expect("the demo raises a level 3 incident");

    // No monitor: the CLI ledgers the submission itself.
    let first = tmp.path().join("nis2");
    let o = run_ok(&mut notify(&dir, &l3, "nis2", "early-warning", &first));
    assert!(stdout(&o).contains("submitted on time"), "{}", stdout(&o));
    let doc = check_package(&first, &l3);
    assert_eq!(doc["on_time"], true);
    let json = std::fs::read(first.join("notification.json")).expect("read");
    assert_eq!(
        notify_notes(&dir),
        vec![(
            "nis2/early-warning".to_string(),
            format!("document blake3 {}", blake3::hash(&json).to_hex())
        )]
    );
    // Twice is refused, and nothing is written.
    let again = notify(
        &dir,
        &l3,
        "nis2",
        "early-warning",
        &tmp.path().join("again"),
    )
    .output()
    .expect("spawn");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already submitted"));
    assert!(!tmp.path().join("again").exists());

    // A monitor runs on the data dir: direct submission is refused with the way out;
    // through its API it works.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut mon = common::start_monitor(&dir, port);
    let locked = notify(
        &dir,
        &l3,
        "gdpr",
        "authority-notification",
        &tmp.path().join("locked"),
    )
    .output()
    .expect("spawn");
    assert!(!locked.status.success());
    assert!(String::from_utf8_lossy(&locked.stderr).contains("--api"));
    let second = tmp.path().join("gdpr");
    let t = token(&dir, "analyst");
    run_ok(
        notify(&dir, &l3, "gdpr", "authority-notification", &second)
            .args(["--api", &base, "--token", &t]),
    );
    let doc = check_package(&second, &l3);
    // The earlier submission is among the analyst actions of the second document.
    let steps: Vec<String> = doc["analyst_actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap_or(""),
                a["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(steps, vec!["notify nis2/early-warning"]);
    // A compliance report while the monitor holds the ledger: its digest goes through
    // the API (an auditor's token) and is ledgered by the monitor.
    let live_rep = tmp.path().join("compliance-live");
    let o = run_ok(
        dunes()
            .args(["report", "compliance", "--no-pdf", "--out"])
            .arg(&live_rep)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--api", &base, "--token", &token(&dir, "auditor")]),
    );
    let text = stdout(&o);
    let live_idx: u64 = text
        .split("digest ledgered as record ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the digest is ledgered through the API: {text}"));
    let live_json = std::fs::read(live_rep.join("compliance.json")).expect("json");
    sigterm_and_wait(&mut mon);
    let mut digest_record = None;
    dunes_ledger::for_each_record(&dir, live_idx, |r| {
        if r.index == live_idx {
            digest_record = Some((r.kind, serde_json::from_slice::<Value>(r.payload).ok()));
        }
    })
    .expect("read the ledger");
    let (kind, payload) = digest_record.expect("the digest record");
    let payload = payload.expect("JSON payload");
    assert_eq!(kind, dunes_ledger::RecordKind::Action);
    assert_eq!(payload["type"], "report_digest");
    assert_eq!(payload["role"], "auditor");
    assert_eq!(
        payload["blake3"].as_str(),
        Some(blake3::hash(&live_json).to_hex().as_str())
    );
    let notes: Vec<String> = notify_notes(&dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        notes,
        vec!["nis2/early-warning", "gdpr/authority-notification"]
    );
    let v = run_ok(dunes().arg("verify").arg(&dir));
    assert!(stdout(&v).contains("RESULT: OK"), "{}", stdout(&v));

    // The compliance report of the demo's data dir: JSON, HTML and PDF, its digest ledgered.
    let rep = tmp.path().join("compliance");
    let o = run_ok(
        dunes()
            .args(["report", "compliance", "--out"])
            .arg(&rep)
            .arg("--data-dir")
            .arg(&dir),
    );
    let text = stdout(&o);
    assert!(text.contains("digest ledgered as record"), "{text}");
    let json = std::fs::read(rep.join("compliance.json")).expect("json");
    assert!(text.contains(&blake3::hash(&json).to_hex().to_string()));
    let r: Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(r["type"], "dunes_compliance_report");
    let items = r["items"].as_array().expect("items");
    for i in items {
        let s = i["status"].as_str().expect("status");
        assert!(
            s == "evidenced" || i["reason"].is_string(),
            "{i}: not evidenced without a reason"
        );
    }
    let status = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["status"].as_str().unwrap_or("").to_string())
            .expect("item")
    };
    // The demo: signed ledger, API reads (the token-authenticated submission), events,
    // incidents, the NIS2 early warning and GDPR stage submitted on time.
    assert_eq!(status("post-quantum-signatures"), "evidenced");
    assert_eq!(status("audit-logging"), "evidenced");
    assert_eq!(status("access-audit"), "evidenced");
    assert_eq!(status("threat-detection"), "evidenced");
    assert_eq!(status("incident-response"), "evidenced");
    assert_eq!(status("maml-verification"), "not_evidenced");
    let html = std::fs::read_to_string(rep.join("compliance.html")).expect("html");
    assert!(html.contains("<svg") && html.contains("Checklist"));
    let pdf = std::fs::read(rep.join("compliance.pdf")).expect("pdf");
    assert!(
        pdf.starts_with(b"%PDF-") && pdf.len() > 10_000,
        "{} bytes",
        pdf.len()
    );
    let v = run_ok(dunes().arg("verify").arg(&dir));
    assert!(stdout(&v).contains("RESULT: OK"), "{}", stdout(&v));
}
