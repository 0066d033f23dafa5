//! `dunes bench`: throughput and latency of the full pipeline (normalise,
//! detect, ledger with fsync per batch, outputs) over simulated traffic.
//!
//! Latency is measured per micro-batch, from the moment the batch is handed
//! to the pipeline until its events, incidents and responses are durably in
//! the ledger; every event in a batch waits at most that long (plus batch
//! fill time, bounded by `batch_timeout_ms` in `run`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use dunes_detect::IncidentStore;
use dunes_ingest::{RawRecord, SourcePos};
use hdrhistogram::Histogram;

use crate::config::Config;
use crate::pipeline::Pipeline;

pub async fn run(
    mut cfg: Config,
    sessions: u64,
    seed: u64,
    batch_size: usize,
) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("dunes-bench-{}", std::process::id()));
    if cfg.data_dir == Config::default().data_dir {
        cfg.data_dir = tmp.clone();
    }
    std::fs::create_dir_all(&cfg.data_dir)?;
    let sim = dunes_sim::SimConfig {
        sessions,
        seed,
        ..dunes_sim::SimConfig::default()
    };
    let t0 = Instant::now();
    let lines: Vec<String> = dunes_sim::Simulator::new(sim).collect();
    let bytes: usize = lines.iter().map(String::len).sum();
    eprintln!(
        "generated {} envelopes ({:.1} MiB) from {sessions} sessions in {:.2}s",
        lines.len(),
        bytes as f64 / (1024.0 * 1024.0),
        t0.elapsed().as_secs_f64()
    );
    let store = Arc::new(IncidentStore::new());
    let mut pipeline = Pipeline::open(&cfg, store, None).await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let started = Instant::now();
    let mut line_no = 0u64;
    let mut iter = lines.into_iter();
    loop {
        let batch: Vec<RawRecord> = iter
            .by_ref()
            .take(batch_size.max(1))
            .map(|l| {
                line_no += 1;
                RawRecord {
                    bytes: l.into_bytes(),
                    source: SourcePos::File {
                        path: "bench".into(),
                        line: line_no,
                    },
                    oversize: None,
                }
            })
            .collect();
        if batch.is_empty() {
            break;
        }
        let t = Instant::now();
        pipeline.process(batch).await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)
            .context("histogram")?;
    }
    let elapsed = started.elapsed();
    let rules = pipeline.rule_count();
    let (stats, _) = pipeline.close()?;
    let eps = stats.envelopes as f64 / elapsed.as_secs_f64();
    println!(
        "dunes bench: {sessions} sessions (seed {seed}), batch size {batch_size}, {rules} rules"
    );
    println!(
        "  events: {}  rejected: {}  incidents: {}  elapsed: {:.2}s",
        stats.envelopes,
        stats.rejected,
        stats.incidents,
        elapsed.as_secs_f64()
    );
    println!("  throughput: {eps:.0} events/s");
    println!(
        "  batch latency (ms): p50 {:.2}  p99 {:.2}  max {:.2}  ({} batches)",
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        hist.len()
    );
    let t = &stats.time;
    let total = (t.normalize_us + t.detect_us + t.ledger_us + t.outputs_us).max(1) as f64;
    let pct = |v: u64| 100.0 * v as f64 / total;
    println!(
        "  time: normalise {:.0}%  detect {:.0}%  ledger+fsync {:.0}%  outputs {:.0}%",
        pct(t.normalize_us),
        pct(t.detect_us),
        pct(t.ledger_us),
        pct(t.outputs_us)
    );
    if cfg.data_dir == tmp {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}
