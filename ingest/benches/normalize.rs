//! Normalisation throughput: the shared sample (real MCP SDK traffic)
//! decoded into Arrow `events` + `tool_defs`, in one batch.
//! `DUNES_BENCH_NDJSON=<file>` decodes the first 4,096 lines of that file
//! instead (e.g. a replica of the public corpus, `docs/benchmarks.md`).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord};

fn records() -> Vec<RawRecord> {
    let p = match std::env::var_os("DUNES_BENCH_NDJSON") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/mcp-sample.ndjson")
        }
    };
    let text = std::fs::read_to_string(&p).unwrap_or_default();
    text.lines()
        .take(4096)
        .enumerate()
        .map(|(i, l)| RawRecord::file_line(l.as_bytes().to_vec(), "sample", i as u64 + 1))
        .collect()
}

fn bench(c: &mut Criterion) {
    let recs = records();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("sample_batch", |b| {
        b.iter_batched(
            || recs.clone(),
            |r| {
                let mut n = Normalizer::new(IngestConfig::default());
                black_box(n.decode_batch(r))
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
