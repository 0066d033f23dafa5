//! Cost of suppression when many entities match at once (an incident
//! storm): batches of incidents of one rule, one per entity, every one
//! after the first batch folded into the entity's open incident.
//!
//! ```sh
//! cargo bench -p dunes-detect --bench noise -- --warm-up-time 1 --measurement-time 5
//! ```

use std::cell::Cell;
use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dunes_detect::noise::NoiseState;
use dunes_detect::{Incident, IncidentStatus, Level, Severity};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn incident(entity: u64, t: i64, ev: u64) -> Incident {
    let session = format!("session-{entity:08}");
    Incident {
        incident_id: format!("inc-{entity:08}"),
        rule_id: "call-flood-rate".into(),
        rule_sha256: String::new(),
        level: Level::Analyst,
        severity: Severity::Medium,
        title: "t".into(),
        tags: vec![],
        entity: [("session_id".to_string(), serde_json::json!(session))].into(),
        session_id: Some(session),
        server_id: None,
        first_ts: Utc.timestamp_opt(t, 0).single().expect("time"),
        last_ts: Utc.timestamp_opt(t, 0).single().expect("time"),
        event_ids: vec![format!("e{ev}")],
        match_count: 1,
        evidence: vec![],
        status: IncidentStatus::Open,
        detected_at: Utc.timestamp_opt(0, 0).single().expect("time"),
        backfill: false,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("noise");
    for entities in [1_000u64, 10_000] {
        g.throughput(Throughput::Elements(entities));
        let mut n = NoiseState::default();
        let window = |_: &str| 600_000_000;
        n.apply((0..entities).map(|e| incident(e, 0, e)).collect(), window);
        let next = Cell::new(entities);
        g.bench_function(format!("storm/{entities}_entities"), |b| {
            b.iter_batched(
                || {
                    let first = next.get();
                    next.set(first + entities);
                    // one second later each time: well inside the window
                    let t = (first / entities) as i64;
                    (0..entities)
                        .map(|e| incident(e, t, first + e))
                        .collect::<Vec<_>>()
                },
                |batch| black_box(n.apply(batch, window)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
