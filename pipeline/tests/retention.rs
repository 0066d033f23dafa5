//! Retention through the pipeline: segments last written before the cut-off are pruned
//! behind a signed tombstone, the prune is ledgered as an action record, the data dir still
//! verifies, and the monitor restarts on the pruned ledger and goes on detecting.

use std::sync::Arc;

use chrono::{Duration, Utc};
use dunes_detect::IncidentStore;
use dunes_pipeline::Pipeline;

mod common;

#[test]
fn retention_prunes_behind_a_tombstone_and_the_monitor_goes_on() {
    common::run_with_room(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut cfg = common::rules_only_config(&data);
    cfg.ledger.segment_max_bytes = 16 * 1024;
    cfg.ledger.retention_days = 365;
    let store = Arc::new(IncidentStore::new());
    let mut p = Pipeline::open(&cfg, store.clone(), None)
        .await
        .expect("open");
    let first = p
        .process(common::sample_session(
            "tool_poisoning",
            Duration::zero(),
            Some("a"),
            None,
        ))
        .await
        .expect("process");
    assert!(!first.incidents.is_empty());
    assert!(
        p.maybe_prune().expect("prune").is_none(),
        "nothing was written a year ago"
    );
    let segments =
        dunes_ledger::backdate_segments(&data, std::time::Duration::from_secs(2 * 365 * 86_400))
            .expect("backdate");
    assert!(segments > 2, "small segments: {segments}");
    let s = p
        .prune_ledger(Utc::now() - Duration::days(365), "retention")
        .expect("prune")
        .expect("old segments pruned");
    assert!(
        s.pruned > 0 && s.segments_removed as usize == segments - 1,
        "{s:?}"
    );
    assert_eq!(p.ledger_pruned(), s.pruned);
    p.close().expect("close");

    let r = dunes_ledger::verify_dir(&data).expect("verify");
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.pruned, s.pruned);
    // The prune is an action record after the tombstone.
    let mut actions = Vec::new();
    dunes_ledger::for_each_record(&data, 0, |rec| {
        if rec.kind == dunes_ledger::RecordKind::Action
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(rec.payload)
            && v["type"] == "ledger_retention"
        {
            actions.push(v);
        }
    })
    .expect("walk");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["pruned"], s.pruned);
    assert_eq!(actions[0]["root"], s.root.as_str());
    assert_eq!(actions[0]["retention_days"], 365);

    // Restart on the pruned ledger: the same traffic a day later is detected again.
    let store = Arc::new(IncidentStore::new());
    let mut p = Pipeline::open(&cfg, store, None)
        .await
        .expect("reopen a pruned ledger");
    let again = p
        .process(common::sample_session(
            "tool_poisoning",
            Duration::days(1),
            Some("b"),
            None,
        ))
        .await
        .expect("process");
    assert_eq!(again.accepted, first.accepted);
    let rules = |o: &dunes_pipeline::BatchOutcome| {
        let mut v: Vec<String> = o.incidents.iter().map(|i| i.rule_id.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    for r in rules(&first) {
        assert!(
            rules(&again).contains(&r),
            "{r} not raised after the restart"
        );
    }
    p.close().expect("close");
    let r = dunes_ledger::verify_dir(&data).expect("verify");
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.pruned, s.pruned);
}
