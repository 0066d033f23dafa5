//! Throughput benchmarks: append (200-byte payloads), verify, ML-DSA-65 sign/verify.
//!
//! Run with `cargo bench -p dunes-ledger --bench append`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dunes_ledger::{Ledger, LedgerConfig, RecordKind, SIGNING_CONTEXT, verify_dir};
use ml_dsa::{ExpandedSigningKey, MlDsa65};

const PAYLOAD: [u8; 200] = [0x5a; 200];

fn config(dir: &std::path::Path) -> LedgerConfig {
    let mut c = LedgerConfig::new(dir, "dunes/bench");
    c.checkpoint_every_records = 0;
    c.checkpoint_interval = Duration::from_secs(3600);
    c
}

fn bench_append(c: &mut Criterion) {
    const N: u64 = 100_000;
    let mut g = c.benchmark_group("ledger");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("append_200B_x100k", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().expect("tmp");
                let l = Ledger::open(config(d.path())).expect("open");
                (d, l)
            },
            |(d, mut l)| {
                for i in 0..N {
                    black_box(
                        l.append(RecordKind::Event, i as i64, &PAYLOAD, &[])
                            .expect("append"),
                    );
                }
                l.sync().expect("sync");
                (d, l)
            },
            BatchSize::PerIteration,
        );
    });

    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(config(d.path())).expect("open");
    for i in 0..N {
        l.append(RecordKind::Event, i as i64, &PAYLOAD, &[])
            .expect("append");
    }
    l.close().expect("close");
    g.bench_function("verify_200B_x100k", |b| {
        b.iter(|| {
            let r = verify_dir(d.path()).expect("verify");
            assert!(r.first_failure.is_none());
            black_box(r)
        });
    });
    g.finish();
}

fn bench_mldsa(c: &mut Criterion) {
    let sk = ExpandedSigningKey::<MlDsa65>::from_seed(&[7u8; 32].into());
    let vk = sk.verifying_key();
    let msg =
        b"dunes/bench\n100000\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime 1\nkey-epoch 0\n";
    let sig = sk.sign_deterministic(msg, SIGNING_CONTEXT).expect("sign");
    let mut g = c.benchmark_group("ml_dsa_65");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter(|| {
            black_box(
                sk.sign_deterministic(black_box(msg), SIGNING_CONTEXT)
                    .expect("sign"),
            )
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| assert!(vk.verify_with_context(black_box(msg), SIGNING_CONTEXT, &sig)))
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_mldsa);
criterion_main!(benches);
