//! Self-monitoring (DUNES §10.1, performance degradation): an artificially
//! slow sink makes the batch latency p99 cross the threshold; the monitor
//! raises a performance incident (ledgered, in incidents.ndjson and the
//! store), and once batches are fast again for long enough it resolves the
//! incident itself with a ledgered action. The data dir still verifies.
//! (Its own test binary: the slow-sink switch is process-wide.)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Duration;
use dunes_detect::{ActionKind, IncidentFilter, IncidentStatus, IncidentStore};
use dunes_pipeline::{Pipeline, SelfMonitorSection, TEST_SINK_DELAY_MS};

mod common;

#[test]
fn a_slow_sink_raises_then_clears_a_performance_incident() {
    common::run_with_room(scenario());
}

fn next_batch(n: &mut i64) -> Vec<dunes_ingest::RawRecord> {
    *n += 1;
    common::sample_session(
        "benign",
        Duration::hours(*n),
        Some(&format!("b{n}")),
        Some(&format!("sess-{n}")),
    )
}

fn self_incidents(store: &IncidentStore) -> Vec<dunes_detect::Incident> {
    store
        .list(&IncidentFilter::default())
        .into_iter()
        .filter(|i| i.rule_id == "self.batch_latency_p99")
        .collect()
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut cfg = common::rules_only_config(&data);
    cfg.self_monitor = SelfMonitorSection {
        window_batches: 4,
        batch_p99_ms: 400,
        raise_after: 2,
        clear_after: 3,
        ..SelfMonitorSection::default()
    };
    let store = Arc::new(IncidentStore::new());
    let mut p = Pipeline::open(&cfg, store.clone(), None)
        .await
        .expect("open");
    let mut n = 0i64;
    // Normal speed: nothing raised.
    for _ in 0..3 {
        p.process(next_batch(&mut n)).await.expect("process");
    }
    assert!(self_incidents(&store).is_empty());
    // The sink stalls 600 ms per batch: the second slow batch raises.
    TEST_SINK_DELAY_MS.store(600, Ordering::SeqCst);
    p.process(next_batch(&mut n)).await.expect("process");
    assert!(
        self_incidents(&store).is_empty(),
        "one slow batch is not enough"
    );
    p.process(next_batch(&mut n)).await.expect("process");
    let raised = self_incidents(&store);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let inc = &raised[0];
    assert_eq!(inc.status, IncidentStatus::Open);
    assert!(inc.title.contains("batch latency p99"), "{}", inc.title);
    let value = inc.evidence[0]["value"].as_f64().expect("value");
    assert!(value >= 600.0, "{value}");
    p.process(next_batch(&mut n)).await.expect("process");
    assert_eq!(
        self_incidents(&store).len(),
        1,
        "one incident while it lasts"
    );
    // Fast again: the slow batches leave the 4-batch window, then 3 calm
    // batches in a row resolve the incident.
    TEST_SINK_DELAY_MS.store(0, Ordering::SeqCst);
    let mut resolved_after = None;
    for k in 1..=10 {
        p.process(next_batch(&mut n)).await.expect("process");
        if self_incidents(&store)[0].status == IncidentStatus::Resolved {
            resolved_after = Some(k);
            break;
        }
    }
    let k = resolved_after.expect("resolved once fast again");
    assert!(k >= 3, "hysteresis: not before 3 calm batches ({k})");
    let history = store.history(&inc.incident_id);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, ActionKind::Resolve);
    assert_eq!(history[0].actor, "dunes-self-monitor");
    assert!(history[0].ledger_index.is_some());
    p.close().expect("close");

    // Both are in the outputs and the ledger.
    let lines = std::fs::read_to_string(data.join("incidents.ndjson")).expect("incidents");
    let mine: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["incident_id"] == inc.incident_id.as_str())
        .collect();
    assert_eq!(mine.len(), 2, "raised, then resolved");
    assert_eq!(mine[1]["status"], "resolved");
    let r = dunes_ledger::verify_dir(&data).expect("verify");
    assert!(r.is_ok(), "{r}");
    let mut kinds = Vec::new();
    let id = inc.incident_id.as_bytes();
    dunes_ledger::for_each_record(&data, 0, |rec| {
        if rec.payload.windows(id.len()).any(|w| w == id) {
            kinds.push(rec.kind.as_str().to_string());
        }
    })
    .expect("read ledger");
    // the incident, then the resolving action (which names it)
    assert_eq!(kinds, vec!["incident", "action"], "{kinds:?}");
}
