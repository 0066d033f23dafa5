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
use dunes_ingest::RawRecord;
use dunes_pipeline::Pipeline;
use dunes_pipeline::report::compliance::ItemStatus;
use dunes_pipeline::report::{self, DocumentInput, notify::Coverage};
use serde_json::Value;

mod common;

fn session(label: &str) -> Vec<RawRecord> {
    common::sample_session(label, Duration::zero(), None, None)
}

fn action(incident_id: &str, kind: ActionKind, at: DateTime<Utc>) -> IncidentAction {
    common::action(incident_id, kind, "dpo@example", at)
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
    let mut cfg = common::rules_only_config(&dir.path().join("data"));
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

    // The early warning's document: facts from the store and the ledger, the rest marked.
    let data = dir.path().join("data");
    let (records, responses) = report::incident_records(&data, &l2).expect("records");
    assert_eq!(
        records.incidents.len(),
        2,
        "raised at level 2, then escalated"
    );
    assert!(!records.events.is_empty());
    assert_eq!(records.actions.len(), 1, "the escalation");
    assert_eq!(records.responses.len(), responses.len());
    assert!(!responses.is_empty(), "the level 3 response");
    let history = store.history(&l2);
    let doc = report::notification_document(
        &clocks,
        DocumentInput {
            incident: &store.get(&l2).expect("stored"),
            history: &history,
            responses: &responses,
            records: records.clone(),
            origin: "o".into(),
            regime: "nis2",
            stage: "early-warning",
            now: h(2),
        },
    )
    .expect("document");
    assert!(doc.on_time);
    assert_eq!(doc.deadline, Some(h(24)));
    assert_eq!(doc.incident.level, 3);
    assert_eq!(doc.timeline.classified_major_at, Some(escalated_at));
    let req: Vec<(String, Coverage, String)> = doc
        .requirements
        .iter()
        .map(|r| (r.requirement.clone(), r.coverage, r.answer.clone()))
        .collect();
    assert_eq!(
        req,
        vec![
            (
                "suspected unlawful or malicious cause".into(),
                Coverage::Partial,
                "incident (rule, title, tags), timeline, indicators; the organisation confirms the cause".into()
            ),
            (
                "possible cross-border impact".into(),
                Coverage::ToComplete,
                "to_complete.cross_border_impact".into()
            ),
        ]
    );
    let fields: Vec<&str> = doc.to_complete.iter().map(|t| t.field.as_str()).collect();
    assert_eq!(
        fields,
        ["impact_assessment", "cross_border_impact", "contact_point"]
    );
    assert!(doc.to_complete.iter().all(|t| t.value.is_none()));
    assert_eq!(doc.containment.len(), responses.len());
    assert_eq!(doc.analyst_actions.len(), 1);
    let doc_json = serde_json::to_vec_pretty(&doc).expect("json");
    let back: report::NotificationDocument = serde_json::from_slice(&doc_json).expect("parse");
    assert_eq!(back, doc);

    // The early warning goes in on time, bound to the document; twice, or an unknown
    // stage, is refused.
    let mut submit = notify(&l2, "nis2", "early-warning");
    submit.note = Some(report::submission_note(&doc_json));
    let notify_index = p
        .apply_action(submit)
        .expect("io")
        .expect("submitted")
        .action
        .ledger_index
        .expect("ledgered");
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
    // The document for a stage already submitted is refused.
    assert!(
        report::notification_document(
            &clocks,
            DocumentInput {
                incident: &store.get(&l2).expect("stored"),
                history: &store.history(&l2),
                responses: &responses,
                records: records.clone(),
                origin: "o".into(),
                regime: "nis2",
                stage: "early-warning",
                now: h(3),
            },
        )
        .is_err()
    );
    p.close().expect("close");

    // Everything is in the ledger, which verifies.
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
    let r = dunes_ledger::verify_dir(&data).expect("verify");
    assert!(r.is_ok(), "{r}");

    // The evidence bundle: the incident's records and the submission, verified offline;
    // the submission's note is the document's digest.
    let mut wanted = records.all();
    wanted.insert(notify_index);
    let bundle = dir.path().join("evidence");
    let ev = dunes_ledger::export_evidence(&data, &wanted, &bundle).expect("evidence");
    assert!(wanted.iter().all(|i| ev.records.contains(i)));
    let r = dunes_ledger::verify_path(&bundle).expect("verify");
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.source, "evidence bundle");
    assert_eq!(r.proved_indexes, ev.records);
    let mut note = None;
    dunes_ledger::for_each_record(&data, notify_index, |r| {
        if r.index == notify_index {
            let v: Value = serde_json::from_slice(r.payload).expect("action");
            note = v["note"].as_str().map(str::to_string);
        }
    })
    .expect("read");
    assert_eq!(note, Some(report::submission_note(&doc_json)));

    // The compliance report over the scenario, as it stands 80 h after the escalation:
    // one deadline met (the early warning), two missed (NIS2 incident notification and
    // GDPR, both overdue), so that item fails; nothing is ticked without evidence.
    let r = report::compliance::compliance_report(
        &cfg,
        &store,
        escalated_at - Duration::days(400),
        h(100),
        h(80),
    )
    .expect("report");
    let statuses: Vec<(String, ItemStatus)> =
        r.items.iter().map(|i| (i.id.clone(), i.status)).collect();
    use ItemStatus::*;
    assert_eq!(
        statuses,
        [
            ("post-quantum-signatures", Evidenced),
            ("audit-logging", Evidenced),
            ("access-audit", NotEvidenced),
            ("threat-detection", Evidenced),
            ("anomaly-analysis", NotEvidenced),
            ("rate-limiting", Evidenced),
            ("incident-response", Evidenced),
            ("regulatory-notification", Failed),
            ("key-management", Evidenced),
            ("maml-verification", NotEvidenced),
            ("session-management", NotEvidenced),
            ("replay-protection", NotEvidenced),
            ("performance-thresholds", NotEvidenced),
        ]
        .map(|(i, s)| (i.to_string(), s))
    );
    assert!(
        r.items
            .iter()
            .all(|i| i.status == Evidenced || i.reason.is_some()),
        "every item not evidenced says why"
    );
    let d = &r.period.deadlines;
    assert_eq!((d.met, d.missed, d.open), (1, 2, 0));
    assert_eq!(r.period.handling.acknowledged, 0);
    assert_eq!(
        r.period.incidents_by_level.get("level_3"),
        Some(&1),
        "the escalated one"
    );
    assert_eq!(
        r.period.incidents_by_rule.get("notification.overdue"),
        Some(&2)
    );
    let html = report::compliance::render_html(&r, "00", None).expect("html");
    assert!(html.contains("<svg") && html.contains("2 notification deadline(s) missed"));
}
