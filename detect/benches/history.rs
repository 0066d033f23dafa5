//! Cost of one batch's Parquet history file: the first 8192 envelopes of
//! the real-SDK public corpus (`examples/corpus/mcp-public.ndjson.gz`),
//! decoded once, then written per iteration with the shipped history
//! settings (Snappy, per-column dictionary and statistics choices).
//!
//! ```sh
//! cargo bench -p dunes-detect --bench history -- --warm-up-time 1 --measurement-time 5
//! ```

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dunes_detect::{HistoryConfig, HistoryWriter};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord};

const BATCH: usize = 8192; // `[ingest] batch_size`'s default

fn batch() -> arrow::array::RecordBatch {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/mcp-public.ndjson.gz");
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).expect("public corpus"));
    let records: Vec<RawRecord> = BufReader::new(gz)
        .lines()
        .take(BATCH)
        .enumerate()
        .map(|(i, l)| RawRecord::file_line(l.expect("line").into_bytes(), "bench", i as u64 + 1))
        .collect();
    assert_eq!(records.len(), BATCH, "corpus shorter than a batch");
    Normalizer::new(IngestConfig::default())
        .decode_batch(records)
        .expect("decodes")
        .events
}

fn bench(c: &mut Criterion) {
    let events = batch();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = HistoryWriter::open(dir.path(), HistoryConfig::default()).expect("history");
    let mut g = c.benchmark_group("history");
    g.throughput(Throughput::Elements(events.num_rows() as u64));
    g.bench_function("write_events_batch", |b| {
        // one key: each iteration replaces the same file, as a re-detected
        // batch does
        b.iter(|| {
            w.write_keyed("events", black_box(&events), Some(1))
                .expect("writes")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
