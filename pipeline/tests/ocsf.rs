//! Every shipped rule's incident, and its lifecycle (acknowledged, resolved),
//! as OCSF Detection Findings that validate against the OCSF 1.8.0 schema
//! generated from the official export (`scripts/ocsf-schema.sh`), not a
//! shape written here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dunes_detect::{ActionKind, Disposition, IncidentAction, IncidentStore};
use dunes_ingest::RawRecord;
use dunes_pipeline::{Config, Pipeline};
use serde_json::Value;

mod common;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo("tests/ocsf/detection_finding.schema.json"))
        .expect("the generated schema");
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

fn records(input: &[Value], name: &str) -> Vec<RawRecord> {
    input
        .iter()
        .enumerate()
        .map(|(n, v)| {
            RawRecord::file_line(serde_json::to_vec(v).expect("encode"), name, n as u64 + 1)
        })
        .collect()
}

fn config(data_dir: &Path, rules: &Path) -> Config {
    let mut cfg = Config {
        data_dir: data_dir.to_path_buf(),
        rules_dir: Some(rules.to_path_buf()),
        ..Config::default()
    };
    cfg.anomaly.enabled = false;
    cfg.history.enabled = false;
    cfg.ingest.dedup_window = 0;
    cfg
}

fn action(incident_id: &str, kind: ActionKind) -> IncidentAction {
    IncidentAction {
        record_type: "incident_action".into(),
        action_id: format!("act-{}-{kind}", &incident_id[4..]),
        incident_id: incident_id.to_string(),
        action: kind,
        actor: "alice@soc".into(),
        role: "analyst".into(),
        jti: format!("jti-{kind}"),
        at: chrono::Utc::now(),
        assignee: None,
        disposition: (kind == ActionKind::Resolve).then_some(Disposition::TruePositive),
        note: Some("checked".into()),
        regime: None,
        stage: None,
        suppress_until: None,
        ledger_index: None,
    }
}

/// Each rule's positive inline tests through a fresh pipeline; the first
/// incident is then acknowledged and resolved. Returns every finding and
/// the ids of the rules that have a positive test.
async fn findings(pack: &str) -> (Vec<Value>, BTreeSet<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let rules_dir = repo(pack);
    let rules = dunes_detect::load_dir(&rules_dir).expect("the shipped pack loads");
    let mut all = Vec::new();
    let mut expected = BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let positive: Vec<_> = rule.config.tests.iter().filter(|t| t.expect > 0).collect();
        if positive.is_empty() {
            continue;
        }
        expected.insert(rule.config.id.clone());
        let data = dir.path().join(format!("r{i}"));
        let store = Arc::new(IncidentStore::new());
        let mut p = Pipeline::open(&config(&data, &rules_dir), store.clone(), None)
            .await
            .expect("open");
        let mut first = None;
        for t in positive {
            let out = p
                .process(records(&t.expanded_input().expect("test input"), &t.name))
                .await
                .expect("process");
            first = first.or_else(|| {
                out.incidents
                    .iter()
                    .find(|inc| inc.rule_id == rule.config.id)
                    .map(|inc| inc.incident_id.clone())
            });
        }
        let id = first.unwrap_or_else(|| panic!("{} raised no incident", rule.config.id));
        for kind in [ActionKind::Ack, ActionKind::Resolve] {
            p.apply_action(action(&id, kind))
                .expect("action I/O")
                .expect("action applied");
        }
        p.close().expect("close");
        let text = std::fs::read_to_string(data.join("findings.ocsf.ndjson")).expect("findings");
        all.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("JSON line")),
        );
    }
    (all, expected)
}

fn check(pack: &str, findings: &[Value], expected: &BTreeSet<String>) {
    let v = validator();
    for f in findings {
        let errors: Vec<String> = v
            .iter_errors(f)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{pack}: {errors:#?}\n{f:#}");
        // What the schema does not check: type_uid = class_uid * 100 + activity_id.
        assert_eq!(
            f["type_uid"].as_u64(),
            f["activity_id"].as_u64().map(|a| 200_400 + a),
            "{f:#}"
        );
    }
    let fired: BTreeSet<String> = findings
        .iter()
        .filter(|f| f["activity_id"] == 1)
        .filter_map(|f| {
            f["finding_info"]["analytic"]["uid"]
                .as_str()
                .map(String::from)
        })
        .collect();
    let missing: Vec<_> = expected.difference(&fired).collect();
    assert!(missing.is_empty(), "{pack}: no finding for {missing:?}");
    // The lifecycle: Create, then Update (acknowledged), then Close (resolved).
    for (activity, status) in [(1, 1), (2, 2), (3, 4)] {
        assert!(
            findings
                .iter()
                .any(|f| f["activity_id"] == activity && f["status_id"] == status),
            "{pack}: no finding with activity {activity} and status {status}"
        );
    }
}

#[test]
fn every_shipped_rule_incident_is_a_valid_ocsf_detection_finding() {
    for pack in ["rules", "sigma"] {
        let (findings, expected) = common::run_with_room(findings(pack));
        assert!(expected.len() >= 15, "{pack}: {expected:?}");
        // The schema's validator recurses deeply too.
        std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(move || check(pack, &findings, &expected))
            .expect("spawn")
            .join()
            .expect("findings validate");
    }
}

#[test]
fn the_schema_rejects_what_ocsf_does_not_define() {
    // The validator is strict: a made-up field or a wrong type fails, so the
    // test above cannot pass by accident.
    let v = validator();
    let good = serde_json::json!({
        "activity_id": 1, "category_uid": 2, "class_uid": 2004, "type_uid": 200401,
        "severity_id": 3, "time": 1_733_246_400_000_i64,
        "finding_info": {"uid": "inc-1"},
        "metadata": {"product": {"name": "Dunes"}, "version": "1.8.0"}
    });
    assert!(v.is_valid(&good));
    for (path, bad) in [
        ("/dunes_level", serde_json::json!(2)),
        ("/time", serde_json::json!("2026-12-03T00:00:00Z")),
        ("/class_uid", serde_json::json!(2005)),
    ] {
        let mut f = good.clone();
        f[&path[1..]] = bad;
        assert!(!v.is_valid(&f), "{path} accepted");
    }
}
