//! Detection cost per rule per batch: every rule of the shipped pack run
//! alone on one fixed 4096-envelope batch of simulated traffic (dunes-sim,
//! seed 42), then the whole pack through `dunes_detect::detect` (all rules,
//! state, incidents, noise filtering, responses) — detection only, no
//! normalisation or ledger.
//!
//! ```sh
//! cargo bench -p dunes-detect --bench rules -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Per-rule figures use `Engine::test_one` (the rule's planned physical plan
//! re-executed on the batch, plus for stateful rules feeding a fresh state).
//! The whole-pack run shifts the batch's event time forward by one hour per
//! iteration so windows and sequences age out as in a live stream instead
//! of piling up on the same timestamps.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dunes_detect::{Engine, ResponseConfig, detect, load_dir};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord};

const BATCH: usize = 4096;

fn batch() -> (RecordBatch, RecordBatch) {
    let sim = dunes_sim::SimConfig {
        sessions: 400,
        seed: 42,
        ..dunes_sim::SimConfig::default()
    };
    let records: Vec<RawRecord> = dunes_sim::Simulator::new(sim)
        .take(BATCH)
        .enumerate()
        .map(|(i, l)| RawRecord::file_line(l.into_bytes(), "bench", i as u64 + 1))
        .collect();
    assert_eq!(records.len(), BATCH, "simulator produced too few envelopes");
    let d = Normalizer::new(IngestConfig::default())
        .decode_batch(records)
        .expect("decodes");
    (d.events, d.tool_defs)
}

/// The batch with every `ts` moved `offset_us` later.
fn shifted(b: &RecordBatch, offset_us: i64) -> RecordBatch {
    let i = b.schema().index_of("ts").expect("ts");
    let ts = b
        .column(i)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("ts type");
    let moved: TimestampMicrosecondArray = ts
        .iter()
        .map(|v| v.map(|t| t + offset_us))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[i] = Arc::new(moved);
    RecordBatch::try_new(b.schema(), cols).expect("batch")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let rules = load_dir(&dir).expect("rule pack");
    let engine = rt.block_on(Engine::new(rules)).expect("plans");
    let (events, tool_defs) = batch();
    eprintln!(
        "batch: {BATCH} envelopes -> {} events rows, {} tool_defs rows; {} rules",
        events.num_rows(),
        tool_defs.num_rows(),
        engine.rules().len()
    );

    let mut g = c.benchmark_group("rule");
    g.throughput(Throughput::Elements(events.num_rows() as u64));
    for (idx, r) in engine.rules().iter().enumerate() {
        g.bench_function(r.id(), |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(
                        engine.test_one(idx, dunes_detect::Tables::new(&events, &tool_defs)),
                    )
                    .expect("runs"),
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Elements(events.num_rows() as u64));
    let cfg = ResponseConfig::default();
    let now = chrono::Utc::now();
    let mut hour = 0i64;
    g.bench_function("all_rules_detect", |b| {
        b.iter_batched(
            || {
                hour += 1;
                (
                    shifted(&events, hour * 3_600_000_000),
                    shifted(&tool_defs, hour * 3_600_000_000),
                )
            },
            |(e, t)| {
                black_box(
                    rt.block_on(detect(
                        &engine,
                        dunes_detect::Tables::new(&e, &t),
                        now,
                        &cfg,
                    ))
                    .expect("detects"),
                )
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
