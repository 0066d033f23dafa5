//! Test helper for the kill -9 crash tests (`ledger/tests/crash.rs`). Not part of the product.
//!
//! Default mode: appends records as fast as possible with periodic sync, checkpoints and key
//! rotations, and prints `acked <n>` after every sync (records `0..n` are durable).
//!
//! `sign` mode: a few records, then a checkpoint, over and over, with hybrid signatures
//! (ML-DSA-65 + Ed25519) and every checkpoint published to `<data_dir>/published`, so most of
//! the time is spent signing, writing and publishing checkpoints. Prints `acked <n>`, then
//! `signing` before each checkpoint and `signed <tree_size>` once it returned.
//!
//! Usage: `dunes-ledger-crash-writer <data_dir> <origin> <seed> [sign]`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use dunes_ledger::{Ledger, LedgerConfig, RecordKind};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let sign_mode = args.get(4).map(String::as_str) == Some("sign");
    if args.len() < 4 || args.len() > 5 || (args.len() == 5 && !sign_mode) {
        eprintln!("usage: {} <data_dir> <origin> <seed> [sign]", args[0]);
        return ExitCode::from(2);
    }
    let seed: u64 = args[3].parse().unwrap_or(1);
    let dir = PathBuf::from(&args[1]);
    let res = if sign_mode {
        sign_storm(dir, &args[2], seed)
    } else {
        run(dir, &args[2], seed)
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash-writer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: PathBuf, origin: &str, seed: u64) -> Result<(), dunes_ledger::LedgerError> {
    let mut cfg = LedgerConfig::new(&dir, origin);
    cfg.checkpoint_every_records = 3_000;
    cfg.checkpoint_interval = Duration::from_millis(50);
    cfg.rotate_every = None;
    cfg.segment_max_bytes = 256 * 1024;
    let mut l = Ledger::open(cfg)?;
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = std::io::stdout().lock();
    let mut batch = 0u64;
    let pad = vec![b'p'; 600];
    loop {
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (x >> 33) as usize % pad.len();
            let refs: Vec<u64> = if l.len() > 2 && x & 7 == 0 {
                vec![l.len() - 1]
            } else {
                vec![]
            };
            let kind = if refs.is_empty() {
                RecordKind::Event
            } else {
                RecordKind::Incident
            };
            l.append(kind, l.len() as i64, &pad[..n], &refs)?;
        }
        l.sync()?;
        let _ = writeln!(out, "acked {}", l.len());
        let _ = out.flush();
        batch += 1;
        l.maybe_checkpoint()?;
        if batch.is_multiple_of(41) {
            l.rotate_key()?;
            let _ = writeln!(out, "acked {}", l.len());
            let _ = out.flush();
        }
    }
}

fn sign_storm(dir: PathBuf, origin: &str, seed: u64) -> Result<(), dunes_ledger::LedgerError> {
    let mut cfg = LedgerConfig::new(&dir, origin);
    cfg.rotate_every = None;
    cfg.hybrid_ed25519 = true;
    cfg.publish_dir = Some(dir.join("published"));
    let mut l = Ledger::open(cfg)?;
    let mut out = std::io::stdout().lock();
    let mut x = seed | 1;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for i in 0..1 + x % 4 {
            let payload = format!("{{\"seed\":{seed},\"i\":{i},\"n\":{}}}", l.len());
            l.append(RecordKind::Event, l.len() as i64, payload.as_bytes(), &[])?;
        }
        l.sync()?;
        let _ = writeln!(out, "acked {}", l.len());
        let _ = writeln!(out, "signing");
        let _ = out.flush();
        let cp = l.checkpoint()?;
        let _ = writeln!(out, "signed {}", cp.tree_size);
        let _ = out.flush();
    }
}
