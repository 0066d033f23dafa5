//! kill -9 at random moments during heavy appends (with checkpoints, segment rollover and key
//! rotation): the ledger always reopens, repairs a torn tail, keeps every acknowledged
//! (synced) record and verifies.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dunes_ledger::{Ledger, LedgerConfig, VerifyOptions, verify_dir, verify_dir_with};

const ORIGIN: &str = "dunes/crash-test";

#[test]
fn random_sigkill_never_loses_acknowledged_records() {
    let d = tempfile::tempdir().expect("tmp");
    let exe = env!("CARGO_BIN_EXE_dunes-ledger-crash-writer");
    let trials: u64 = std::env::var("DUNES_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut last_len = 0u64;
    for trial in 0..trials {
        let mut child = Command::new(exe)
            .arg(d.path())
            .arg(ORIGIN)
            .arg(trial.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let acked = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().expect("stdout");
        let a = acked.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line
                    .strip_prefix("acked ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    a.fetch_max(n, Ordering::SeqCst);
                }
            }
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait = 40 + rng % 500;
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        let status = child.wait().expect("wait");
        reader.join().expect("reader");
        let acked = acked.load(Ordering::SeqCst);
        assert!(!status.success(), "writer exited by itself: {status:?}");

        let mut cfg = LedgerConfig::new(d.path(), ORIGIN);
        cfg.rotate_every = None;
        let l = Ledger::open(cfg).unwrap_or_else(|e| panic!("trial {trial}: reopen failed: {e}"));
        assert!(
            l.len() >= acked,
            "trial {trial}: {} records after reopen, but {acked} were acknowledged",
            l.len()
        );
        assert!(l.len() >= last_len, "trial {trial}: ledger shrank");
        last_len = l.len();
        drop(l); // no checkpoint: leave the unsigned tail as the crash left it
        // A crash leaves records after the last checkpoint: accepted only when asked for.
        let opts = VerifyOptions {
            allow_unsigned_tail: true,
            ..VerifyOptions::default()
        };
        let r = verify_dir_with(d.path(), &opts).expect("verify");
        let strict = verify_dir(d.path()).expect("verify");
        assert_eq!(
            strict.first_failure.is_some(),
            r.unsigned_tail() > 0,
            "trial {trial}: strict verification must fail exactly when there is an unsigned tail:\n{strict}"
        );
        assert!(
            r.first_failure.is_none(),
            "trial {trial} (killed after {wait} ms):\n{r}"
        );
        eprintln!(
            "trial {trial}: killed after {wait} ms, acked {acked}, present {}, signed {}, key epochs {}",
            r.records,
            r.signed_records,
            r.key_ids.len()
        );
    }
    assert!(last_len > 0);
}
