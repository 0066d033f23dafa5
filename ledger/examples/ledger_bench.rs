//! Quick throughput figures for docs/benchmarks.md ("Ledger" section):
//! `cargo run --release -p dunes-ledger --example ledger_bench [records]`
//!
//! * append: `Ledger::append` of 200-byte payloads (BLAKE3 payload hash + header hash + frame
//!   into the write buffer), single thread, one `sync()` at the end (included);
//! * verify: `verify_dir` of the result (re-hash every frame, chain + rules, Merkle root, the
//!   checkpoint's ML-DSA-65 signature);
//! * ML-DSA-65 sign / verify per second; proof generation.

use std::time::{Duration, Instant};

use dunes_ledger::{Ledger, LedgerConfig, RecordKind, SIGNING_CONTEXT, verify_dir};
use ml_dsa::{ExpandedSigningKey, MlDsa65};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let d = tempfile::tempdir()?;
    let mut cfg = LedgerConfig::new(d.path(), "dunes/bench");
    cfg.checkpoint_every_records = 0;
    cfg.checkpoint_interval = Duration::from_secs(3600);
    cfg.rotate_every = None;
    // DUNES_BENCH_SEGMENT_MB: segment size (default 4096 = no rollover fsync inside the loop).
    let seg_mb: u64 = std::env::var("DUNES_BENCH_SEGMENT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    cfg.segment_max_bytes = seg_mb << 20;
    let mut l = Ledger::open(cfg)?;
    let payload = [0x5au8; 200];
    let t = Instant::now();
    for i in 0..n {
        l.append(RecordKind::Event, i as i64, &payload, &[])?;
    }
    let append_only = t.elapsed();
    l.sync()?;
    let append = t.elapsed();
    let t = Instant::now();
    l.checkpoint()?;
    let cp = t.elapsed();
    drop(l);
    let t = Instant::now();
    let r = verify_dir(d.path())?;
    let verify = t.elapsed();
    assert!(r.is_ok(), "{r}");
    let t = Instant::now();
    let leaves = dunes_ledger::read_leaf_hashes(d.path())?;
    let read = t.elapsed();
    let t = Instant::now();
    let p = dunes_ledger::merkle::inclusion_proof(leaves.kept(), n / 3).ok_or("proof")?;
    let incl = t.elapsed();
    let t = Instant::now();
    let c = dunes_ledger::merkle::consistency_proof(leaves.kept(), n / 2).ok_or("proof")?;
    let cons = t.elapsed();

    let sk = ExpandedSigningKey::<MlDsa65>::from_seed(&[7u8; 32].into());
    let vk = sk.verifying_key();
    let msg =
        b"dunes/bench\n100000\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime 1\nkey-epoch 0\n";
    let sig = sk.sign_deterministic(msg, SIGNING_CONTEXT)?;
    let k = 2000u32;
    let t = Instant::now();
    for _ in 0..k {
        assert!(vk.verify_with_context(std::hint::black_box(msg), SIGNING_CONTEXT, &sig));
    }
    let ver = t.elapsed();
    let t = Instant::now();
    for _ in 0..k / 4 {
        std::hint::black_box(sk.sign_deterministic(std::hint::black_box(msg), SIGNING_CONTEXT)?);
    }
    let sign = t.elapsed();

    let rate = |count: f64, d: Duration| count / d.as_secs_f64();
    println!(
        "records: {n} x 200-byte payloads ({} MiB of segments, {seg_mb} MiB per segment)",
        (n * 337) >> 20
    );
    println!(
        "append (hash + frame + buffered write, 1 thread, excl. final fsync): {:.0} records/s ({:.2?})",
        rate(n as f64, append_only),
        append_only
    );
    println!(
        "append incl. segment-rollover fsyncs and the final fsync: {:.0} records/s ({:.2?})",
        rate(n as f64, append),
        append
    );
    println!("checkpoint (Merkle root over {n} leaves + ML-DSA-65 sign + fsync): {cp:.2?}");
    println!(
        "verify_dir (re-hash, chain, rules, Merkle, signature): {:.0} records/s ({:.2?})",
        rate(n as f64, verify),
        verify
    );
    println!("read_leaf_hashes: {:.0} records/s", rate(n as f64, read));
    println!(
        "inclusion proof at n={n}: {incl:.2?} ({} hashes); consistency proof: {cons:.2?} ({} hashes)",
        p.len(),
        c.len()
    );
    println!(
        "ML-DSA-65 verify: {:.0}/s ({:.1} µs each)",
        rate(f64::from(k), ver),
        ver.as_secs_f64() * 1e6 / f64::from(k)
    );
    println!(
        "ML-DSA-65 sign (deterministic): {:.0}/s",
        rate(f64::from(k / 4), sign)
    );
    Ok(())
}
