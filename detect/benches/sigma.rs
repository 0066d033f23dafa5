//! Detection side by side with rsigma: the stateless rules of the shipped
//! Sigma pack (`sigma/`, detection rules over `events`; correlations and
//! `tool_definition` rules left out) evaluated on the same 204,800 normalised
//! simulator events (dunes-sim, seed 42), on one core:
//!
//! - **dunes**: the rules converted to SQL and planned once on DataFusion,
//!   re-executed per 4096-row Arrow batch (`Engine::evaluate`, current-thread
//!   runtime, literal prefilter on);
//! - **rsigma**: the same files through `rsigma-eval` 0.23, one
//!   `Engine::evaluate` per event, on the same rows as JSON objects (every
//!   column under its name plus the `mcp.method.name` alias), built before
//!   the clock starts.
//!
//! ```sh
//! cargo bench -p dunes-detect --bench sigma -- --warm-up-time 2 --measurement-time 20
//! ```
//!
//! Before timing, both count the matches of each rule; the counts are
//! printed side by side (rsigma does not apply Dunes' logsource category
//! predicates, so a category rule may count more rows there).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dunes_detect::{Engine, load_dir};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord};

const BATCH: usize = 4096;
const EVENTS: usize = 50 * BATCH;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Sigma files the bench uses: stateless detection rules over events.
fn stateless_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("sigma")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("sigma dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let text = std::fs::read_to_string(&p).expect("read");
                if !text.contains("\ncorrelation:") && !text.contains("category: tool_definition") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

fn batches() -> Vec<RecordBatch> {
    let sim = dunes_sim::SimConfig {
        sessions: 20_000,
        seed: 42,
        ..dunes_sim::SimConfig::default()
    };
    let mut norm = Normalizer::new(IngestConfig::default());
    let lines: Vec<String> = dunes_sim::Simulator::new(sim).take(EVENTS).collect();
    assert_eq!(lines.len(), EVENTS, "simulator produced too few envelopes");
    lines
        .chunks(BATCH)
        .enumerate()
        .map(|(c, chunk)| {
            let records = chunk
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    RawRecord::file_line(
                        l.clone().into_bytes(),
                        "bench",
                        (c * BATCH + i) as u64 + 1,
                    )
                })
                .collect();
            norm.decode_batch(records).expect("decodes").events
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let files = stateless_files();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    for f in &files {
        std::fs::copy(f, dir.path().join(f.file_name().expect("name"))).expect("copy");
    }
    let rules = load_dir(dir.path()).expect("Sigma rules load");
    let n_rules = rules.len();
    let engine = rt.block_on(Engine::new(rules)).expect("plans");
    let mut rsigma = rsigma_eval::Engine::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let coll = rsigma_parser::parse_sigma_yaml(&text).expect("rsigma parses");
        rsigma.add_collection(&coll).expect("rsigma compiles");
    }
    let events = batches();
    let empty_defs = RecordBatch::new_empty(dunes_ingest::schema::tool_defs_schema());
    let json: Vec<serde_json::Value> = events
        .iter()
        .flat_map(|b| dunes_detect::incident::batch_to_json_rows(b).expect("rows"))
        .map(|mut m| {
            if let Some(v) = m.get("method").cloned() {
                m.insert("mcp.method.name".into(), v);
            }
            serde_json::Value::Object(m)
        })
        .collect();

    // Match counts per rule (by Sigma title), both engines.
    let mut dunes_counts: BTreeMap<String, usize> = BTreeMap::new();
    for b in &events {
        for m in rt
            .block_on(engine.evaluate(dunes_detect::Tables::new(b, &empty_defs)))
            .expect("evaluates")
        {
            let title = m.rule.rule.config.title.clone();
            *dunes_counts.entry(title).or_default() +=
                m.batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
    }
    let mut rsigma_counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in &json {
        for m in rsigma.evaluate(&rsigma_eval::event::JsonEvent::borrow(e)) {
            *rsigma_counts
                .entry(m.header.rule_title.to_string())
                .or_default() += 1;
        }
    }
    println!("{n_rules} stateless Sigma rules, {} events", json.len());
    println!("{:>8} {:>8}  rule", "dunes", "rsigma");
    let titles: std::collections::BTreeSet<&String> =
        dunes_counts.keys().chain(rsigma_counts.keys()).collect();
    for t in titles {
        println!(
            "{:>8} {:>8}  {t}",
            dunes_counts.get(t).copied().unwrap_or(0),
            rsigma_counts.get(t).copied().unwrap_or(0)
        );
    }

    let mut g = c.benchmark_group("sigma_side_by_side");
    g.sample_size(10);
    g.throughput(Throughput::Elements(json.len() as u64));
    g.bench_function("dunes", |bch| {
        bch.iter(|| {
            let mut n = 0usize;
            for b in &events {
                let m = rt
                    .block_on(engine.evaluate(dunes_detect::Tables::new(b, &empty_defs)))
                    .expect("evaluates");
                n += m.len();
            }
            black_box(n)
        })
    });
    g.bench_function("rsigma", |bch| {
        bch.iter(|| {
            let mut n = 0usize;
            for e in &json {
                n += rsigma
                    .evaluate(&rsigma_eval::event::JsonEvent::borrow(e))
                    .len();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
