//! Regulatory notification clocks end to end through the stage: an incident
//! escalated to Level 3 starts the NIS2 and GDPR clocks; the NIS2 early
//! warning is submitted on time; stages left open raise "due soon" then
//! "overdue" incidents, once each; every step is in the ledger, which
//! verifies.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use dunes_detect::notification::{NotificationClocks, StageState};
use dunes_detect::{ActionKind, IncidentAction, IncidentStore, Level};
use dunes_ingest::{RawRecord, SourcePos};
use dunes_pipeline::{Config, Pipeline};
use serde_json::Value;

mod common;

fn session(label: &str) -> Vec<RawRecord> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/corpus");
    let labels: std::collections::BTreeMap<String, String> = serde_json::from_slice(
        &std::fs::read(format!("{root}/mcp-sample.labels.json")).expect("labels"),
    )
    .expect("labels JSON");
    let id = labels
        .iter()
        .find(|(_, l)| l.as_str() == label)
        .map(|(s, _)| s.clone())
        .expect("a labelled session");
    std::fs::read_to_string(format!("{root}/mcp-sample.ndjson"))
        .expect("sample")
        .lines()
        .filter(|l| l.contains(&id))
        .enumerate()
        .map(|(n, l)| RawRecord {
            bytes: l.as_bytes().to_vec(),
            source: SourcePos::File {
                path: "sample".into(),
                line: n as u64 + 1,
            },
            oversize: None,
        })
        .collect()
}

fn action(incident_id: &str, kind: ActionKind, at: DateTime<Utc>) -> IncidentAction {
    IncidentAction {
        record_type: "incident_action".into(),
        action_id: format!("act-{}", uuid::Uuid::now_v7().simple()),
        incident_id: incident_id.to_string(),
        action: kind,
        actor: "dpo@example".into(),
        role: "responder".into(),
        jti: "jti".into(),
        at,
        assignee: None,
        disposition: None,
        note: None,
        regime: None,
        stage: None,
        ledger_index: None,
    }
}

fn notify(incident_id: &str, regime: &str, stage: &str) -> IncidentAction {
    let mut a = action(incident_id, ActionKind::Notify, Utc::now());
    a.regime = Some(regime.into());
    a.stage = Some(stage.into());
    a
}

#[test]
fn a_level_3_incident_runs_nis2_and_gdpr_clocks_and_overdue_stages_raise_alerts() {
    common::run_with_room(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    cfg.anomaly.enabled = false;
    cfg.history.enabled = false;
    cfg.notification.regimes = vec!["nis2".into(), "gdpr".into()];
    cfg.notification.warn_before_hours = 4.0;
    let store = Arc::new(IncidentStore::new());
    let mut p = Pipeline::open(&cfg, store.clone(), None)
        .await
        .expect("open");
    let out = p.process(session("tool_poisoning")).await.expect("process");
    let l2 = out
        .incidents
        .iter()
        .find(|i| i.level == Level::Analyst)
        .expect("a Level 2 incident")
        .incident_id
        .clone();
    let other = out
        .incidents
        .iter()
        .find(|i| i.incident_id != l2)
        .map(|i| i.incident_id.clone());

    // Below Level 3: no clocks, and no submission.
    let clocks = NotificationClocks::new(&cfg.notification).expect("regimes");
    let inc = store.get(&l2).expect("stored");
    assert!(clocks.of(&inc, &[], Utc::now()).is_empty());
    assert!(
        p.apply_action(notify(&l2, "nis2", "early-warning"))
            .expect("io")
            .is_err()
    );

    // Escalation starts the clocks.
    let escalated_at = Utc::now();
    p.apply_action(action(&l2, ActionKind::Escalate, escalated_at))
        .expect("io")
        .expect("escalated");
    let view = |now: DateTime<Utc>| {
        let inc = store.get(&l2).expect("stored");
        clocks
            .of(&inc, &store.history(&l2), now)
            .into_iter()
            .map(|c| (format!("{}/{}", c.regime, c.stage), c.state, c.deadline))
            .collect::<Vec<_>>()
    };
    let h = |n: i64| escalated_at + Duration::hours(n);
    assert_eq!(
        view(h(1)),
        vec![
            (
                "nis2/early-warning".into(),
                StageState::Running,
                Some(h(24))
            ),
            (
                "nis2/incident-notification".into(),
                StageState::Running,
                Some(h(72))
            ),
            ("nis2/final-report".into(), StageState::Waiting, None),
            (
                "gdpr/authority-notification".into(),
                StageState::Running,
                Some(h(72))
            ),
        ]
    );

    // The early warning goes in on time; twice, or an unknown stage, is refused.
    p.apply_action(notify(&l2, "nis2", "early-warning"))
        .expect("io")
        .expect("submitted");
    assert!(
        p.apply_action(notify(&l2, "nis2", "early-warning"))
            .expect("io")
            .is_err()
    );
    assert!(
        p.apply_action(notify(&l2, "nis2", "no-such-stage"))
            .expect("io")
            .is_err()
    );
    assert_eq!(view(h(2))[0].1, StageState::SubmittedOnTime);

    // 70 h: the two 72 h stages are due soon; 73 h: overdue; each raised once.
    let raised = |p: &mut Pipeline, at| {
        p.check_notification_clocks(at)
            .expect("check")
            .into_iter()
            .map(|i| {
                (
                    i.rule_id.clone(),
                    i.entity["regime"].as_str().unwrap_or_default().to_string(),
                    i.entity["stage"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect::<BTreeSet<_>>()
    };
    let pair = |rule: &str| -> BTreeSet<(String, String, String)> {
        [
            (rule, "gdpr", "authority-notification"),
            (rule, "nis2", "incident-notification"),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
    };
    assert_eq!(raised(&mut p, h(70)), pair("notification.due_soon"));
    assert_eq!(raised(&mut p, h(71)), BTreeSet::new(), "raised once");
    assert_eq!(raised(&mut p, h(73)), pair("notification.overdue"));
    assert_eq!(raised(&mut p, h(80)), BTreeSet::new(), "raised once");
    let alerts: Vec<_> = store
        .list(&Default::default())
        .into_iter()
        .filter(|i| i.rule_id.starts_with("notification."))
        .collect();
    assert_eq!(alerts.len(), 4);
    assert!(
        alerts
            .iter()
            .all(|a| a.entity["incident_id"] == l2.as_str())
    );
    // Another incident's clocks are independent (it is not at Level 3).
    if let Some(o) = other {
        assert!(alerts.iter().all(|a| a.entity["incident_id"] != o.as_str()));
    }
    p.close().expect("close");

    // Everything is in the ledger, which verifies.
    let data = dir.path().join("data");
    let mut notified = Vec::new();
    let mut alerted = 0;
    dunes_ledger::for_each_record(&data, 0, |r| {
        let v: Value = serde_json::from_slice(r.payload).unwrap_or(Value::Null);
        if v["action"] == "notify" {
            notified.push(format!("{}/{}", v["regime"], v["stage"]));
        }
        if v["rule_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("notification."))
        {
            alerted += 1;
        }
    })
    .expect("read the ledger");
    assert_eq!(notified, vec![r#""nis2"/"early-warning""#]);
    assert_eq!(alerted, 4);
    dunes_ledger::verify_dir(&data).expect("the ledger verifies");
}
