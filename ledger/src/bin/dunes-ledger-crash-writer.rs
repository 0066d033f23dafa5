//! Test helper for the kill -9 crash test (`ledger/tests/crash.rs`): appends records as fast
//! as possible with periodic sync, checkpoints and key rotations, and prints `acked <n>` after
//! every sync (records `0..n` are durable). Not part of the product.
//!
//! Usage: `dunes-ledger-crash-writer <data_dir> <origin> <seed>`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use dunes_ledger::{Ledger, LedgerConfig, RecordKind};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} <data_dir> <origin> <seed>", args[0]);
        return ExitCode::from(2);
    }
    let seed: u64 = args[3].parse().unwrap_or(1);
    match run(PathBuf::from(&args[1]), &args[2], seed) {
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
