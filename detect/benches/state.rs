//! Cost of one small batch through a stateful rule's state when many keys
//! are live: a sliding-window threshold and a baseline that forgets after a
//! day, each holding `keys` sessions, fed batches of 512 rows 100 ms of
//! event time apart (a Kafka consumer's batches at ~5k events/s). Each
//! batch also takes the journal's delta, as the pipeline does. And a window
//! keyed per request, where nearly every row is a new key.
//!
//! ```sh
//! cargo bench -p dunes-detect --bench state -- --warm-up-time 1 --measurement-time 5
//! ```

use std::cell::Cell;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dunes_detect::rule::{Aggregate, BaselineWhen, RuleKind};
use dunes_detect::state::{RuleState, StateRow, StateSpec};

/// The allocator of the `dunes` binary: the state allocates per new key.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: usize = 512;
const STEP_US: i64 = 100_000;
const MIN_US: i64 = 60_000_000;

fn spec(kind: RuleKind) -> StateSpec {
    StateSpec {
        kind,
        lateness: 0,
        size: 5 * MIN_US,
        tumbling: false,
        aggregate: Aggregate::Count,
        min: 1e9, // never fires: the cost measured is keeping the state
        min_share: 0.0,
        steps: Vec::new(),
        within: 0,
        learn: 0,
        when: BaselineWhen::Any,
        idle: 0,
        absolute: 0,
        forget: 24 * 60 * MIN_US,
    }
}

fn row(ts: i64, id: u64, key: u64) -> StateRow<'static> {
    StateRow {
        ts,
        event_id: format!("e{id}").into(),
        key: format!("session-{key:08}").into(),
        values: smallvec::smallvec![Some(format!("tool-{}", key % 7).into())],
        num: None,
        step: None,
        may_fire: true,
        may_learn: true,
        evidence: None,
        origin: (0, 0),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("state");
    g.throughput(Throughput::Elements(ROWS as u64));
    for kind in [RuleKind::Threshold, RuleKind::Baseline] {
        for keys in [10_000u64, 100_000] {
            let s = spec(kind);
            // every key seen once over the last five minutes
            let mut st = RuleState::default();
            let span = s.size;
            let rows: Vec<StateRow> = (0..keys)
                .map(|k| row(k as i64 * span / keys as i64, k, k))
                .collect();
            st.process(&s, rows);
            let _ = st.delta();
            let now = Cell::new(span);
            let next_id = Cell::new(keys);
            let name = format!("{kind:?}/{keys}_keys").to_lowercase();
            g.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        let t = now.get() + STEP_US;
                        now.set(t);
                        (0..ROWS as u64)
                            .map(|i| {
                                let id = next_id.get() + i;
                                // keys spread evenly, so each comes back
                                // every keys / ROWS batches
                                row(t, id, (id * 7919) % keys)
                            })
                            .collect::<Vec<_>>()
                    },
                    |rows| {
                        next_id.set(next_id.get() + ROWS as u64);
                        let fired = st.process(&s, rows);
                        black_box(st.delta());
                        fired
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    // A key per request (`jsonrpc-request-replayed`: server, session,
    // JSON-RPC id and arguments digest): nearly every row opens a window
    // that holds one event until it expires. One minute of windows here
    // (~307k keys once full, as at the start of the measurement).
    let mut s = spec(RuleKind::Threshold);
    s.size = MIN_US;
    s.min = 2.0;
    let mut st = RuleState::default();
    let now = Cell::new(0i64);
    let next_id = Cell::new(0u64);
    let request_rows = || {
        let t = now.get() + STEP_US;
        now.set(t);
        let first = next_id.get();
        next_id.set(first + ROWS as u64);
        (first..first + ROWS as u64)
            .map(|id| {
                let mut r = row(t, id, id);
                r.key = format!(
                    "srv-{}\u{1f}session-{:08}\u{1f}{id}\u{1f}{:064x}",
                    id % 5,
                    id / 40,
                    u128::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                )
                .into();
                r
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..(s.size / STEP_US + 10) {
        st.process(&s, request_rows());
        let _ = st.delta();
    }
    g.bench_function("threshold/key_per_row", |b| {
        b.iter_batched(
            request_rows,
            |rows| {
                let fired = st.process(&s, rows);
                black_box(st.delta());
                fired
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
