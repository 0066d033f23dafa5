//! The console's lifecycle actions through the stage: "suppress similar" stops new
//! incidents of the same rule and entity for its hours (their events are still ledgered;
//! another entity still raises), de-escalation lowers one level and stops at Level 1, a
//! comment is accepted after resolution; every action is a ledger record.

use std::sync::Arc;

use chrono::{Duration, Utc};
use dunes_api::ActionRefused;
use dunes_detect::{ActionKind, IncidentAction, IncidentStatus, IncidentStore, Level};
use dunes_ingest::RawRecord;
use dunes_pipeline::Pipeline;

mod common;

fn session(label: &str, shift: Duration, tag: &str, new_session: Option<&str>) -> Vec<RawRecord> {
    common::sample_session(label, shift, Some(tag), new_session)
}

fn action(incident_id: &str, kind: ActionKind) -> IncidentAction {
    common::action(incident_id, kind, "analyst@example", Utc::now())
}

#[test]
fn suppress_similar_deescalate_and_comment() {
    common::run_with_room(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = common::rules_only_config(&dir.path().join("data"));
    let store = Arc::new(IncidentStore::new());
    let mut p = Pipeline::open(&cfg, store.clone(), None)
        .await
        .expect("open");
    let first = p
        .process(session("tool_poisoning", Duration::zero(), "a", None))
        .await
        .expect("process");
    let inc = first
        .incidents
        .iter()
        .find(|i| i.level == Level::Analyst)
        .expect("a Level 2 incident")
        .clone();
    let rules = |out: &dunes_pipeline::BatchOutcome| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = out
            .incidents
            .iter()
            .map(|i| {
                (
                    i.rule_id.clone(),
                    serde_json::to_string(&i.entity).expect("json"),
                )
            })
            .collect();
        v.sort();
        v
    };
    let entity = serde_json::to_string(&inc.entity).expect("json");

    // Suppress similar for 2 hours: the same traffic a day later raises everything but
    // that rule on that entity.
    let mut s = action(&inc.incident_id, ActionKind::Suppress);
    s.suppress_until = Some(Utc::now() + Duration::hours(2));
    let out = p.apply_action(s).expect("io").expect("applied");
    let suppress_idx = out.action.ledger_index.expect("ledgered");
    let again = p
        .process(session("tool_poisoning", Duration::days(1), "b", None))
        .await
        .expect("process");
    assert_eq!(again.accepted, first.accepted, "the events are all taken");
    let raised = rules(&again);
    let suppressed = (inc.rule_id.clone(), entity.clone());
    assert!(!raised.contains(&suppressed), "{raised:?}");
    // everything else of the first run is raised again (a day later the session's token
    // has also expired, which adds an incident of its own)
    for pair in rules(&first).into_iter().filter(|p| *p != suppressed) {
        assert!(raised.contains(&pair), "{pair:?} missing from {raised:?}");
    }
    // Another entity (a new session) is not similar: it raises.
    let other = p
        .process(session(
            "tool_poisoning",
            Duration::days(2),
            "c",
            Some("sess-other"),
        ))
        .await
        .expect("process");
    assert!(
        other.incidents.iter().any(|i| i.rule_id == inc.rule_id),
        "a different entity still raises"
    );

    // De-escalate: 2 → 1, then refused at Level 1.
    let out = p
        .apply_action(action(&inc.incident_id, ActionKind::Deescalate))
        .expect("io")
        .expect("applied");
    assert_eq!(out.incident.level, Level::Automated);
    let refused = p
        .apply_action(action(&inc.incident_id, ActionKind::Deescalate))
        .expect("io");
    assert!(
        matches!(&refused, Err(ActionRefused::Conflict(m)) if m.contains("level 1")),
        "{refused:?}"
    );
    // Resolve, then a comment is still accepted; a comment without a note is not.
    let mut r = action(&inc.incident_id, ActionKind::Resolve);
    r.disposition = Some(dunes_detect::Disposition::FalsePositive);
    p.apply_action(r).expect("io").expect("applied");
    assert!(matches!(
        p.apply_action(action(&inc.incident_id, ActionKind::Comment))
            .expect("io"),
        Err(ActionRefused::Conflict(_))
    ));
    let mut c = action(&inc.incident_id, ActionKind::Comment);
    c.note = Some("tuned the rule's allowlist".into());
    let out = p.apply_action(c).expect("io").expect("applied");
    assert_eq!(out.incident.status, IncidentStatus::Resolved);
    let kinds: Vec<ActionKind> = store
        .history(&inc.incident_id)
        .iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        kinds,
        [
            ActionKind::Suppress,
            ActionKind::Deescalate,
            ActionKind::Resolve,
            ActionKind::Comment
        ]
    );
    let idx: Vec<u64> = store
        .history(&inc.incident_id)
        .iter()
        .map(|a| a.ledger_index.expect("ledgered"))
        .collect();
    assert_eq!(idx[0], suppress_idx);
    p.close().expect("close");
    let report = dunes_ledger::verify_dir(&cfg.data_dir).expect("verify");
    assert!(report.first_failure.is_none(), "{report:?}");
    assert_eq!(report.records_by_kind.get("action"), Some(&4));
}
