//! kill -9 at random moments during heavy appends (with checkpoints, segment rollover and key
//! rotation), and during checkpoint signing and publication: the ledger always reopens,
//! repairs a torn tail, keeps every acknowledged (synced) record and every returned
//! checkpoint, and verifies.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dunes_ledger::{
    LATEST_NOTE, Ledger, LedgerConfig, TrustedCheckpoint, VerifyOptions, verify_dir,
    verify_dir_with,
};

const ORIGIN: &str = "dunes/crash-test";

/// What a writer reported before it was killed.
struct Killed {
    /// Records `0..acked` were synced.
    acked: u64,
    /// Tree size of the last checkpoint `checkpoint()` returned (0: none).
    signed: u64,
    /// The last line it printed.
    last: String,
}

/// Start the crash writer (`mode`: `None` or `Some("sign")`), SIGKILL it after `wait`.
fn run_and_kill(dir: &std::path::Path, trial: u64, mode: Option<&str>, wait: Duration) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dunes-ledger-crash-writer"));
    cmd.arg(dir).arg(ORIGIN).arg(trial.to_string());
    cmd.args(mode);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let acked = Arc::new(AtomicU64::new(0));
    let signed = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().expect("stdout");
    let (a, s) = (acked.clone(), signed.clone());
    let reader = std::thread::spawn(move || {
        let mut last = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let num = |p: &str| line.strip_prefix(p).and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = num("acked ") {
                a.fetch_max(n, Ordering::SeqCst);
            }
            if let Some(n) = num("signed ") {
                s.fetch_max(n, Ordering::SeqCst);
            }
            last = line;
        }
        last
    });
    std::thread::sleep(wait);
    child.kill().expect("SIGKILL"); // SIGKILL on Unix
    let status = child.wait().expect("wait");
    let last = reader.join().expect("reader");
    assert!(!status.success(), "writer exited by itself: {status:?}");
    Killed {
        acked: acked.load(Ordering::SeqCst),
        signed: signed.load(Ordering::SeqCst),
        last,
    }
}

fn xorshift(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn trials() -> u64 {
    std::env::var("DUNES_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[test]
fn random_sigkill_never_loses_acknowledged_records() {
    let d = tempfile::tempdir().expect("tmp");
    let trials = trials();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut last_len = 0u64;
    for trial in 0..trials {
        let wait = 40 + xorshift(&mut rng) % 500;
        let acked = run_and_kill(d.path(), trial, None, Duration::from_millis(wait)).acked;

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

/// kill -9 while the writer is signing (ML-DSA-65 + Ed25519), appending the note to
/// `checkpoints.log` and publishing it: a torn checkpoint entry is dropped on reopen, every
/// checkpoint `checkpoint()` returned survives, the published copies are never ahead of the
/// ledger and stay valid trust anchors of the history that follows.
#[test]
fn sigkill_during_checkpoint_signing() {
    let d = tempfile::tempdir().expect("tmp");
    let published = d.path().join("published");
    let trials = trials();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut inside = 0;
    for trial in 0..trials {
        let wait = 30 + xorshift(&mut rng) % 400;
        let k = run_and_kill(d.path(), trial, Some("sign"), Duration::from_millis(wait));
        inside += u64::from(k.last == "signing");

        let mut cfg = LedgerConfig::new(d.path(), ORIGIN);
        cfg.rotate_every = None;
        cfg.hybrid_ed25519 = true;
        let l = Ledger::open(cfg).unwrap_or_else(|e| panic!("trial {trial}: reopen failed: {e}"));
        assert!(
            l.len() >= k.acked,
            "trial {trial}: acknowledged records lost"
        );
        let latest = l.latest_checkpoint().map_or(0, |c| c.tree_size);
        assert!(
            latest >= k.signed,
            "trial {trial}: checkpoint {} was returned but the reopened ledger's latest is {latest}",
            k.signed
        );
        assert!(
            latest <= l.len(),
            "trial {trial}: checkpoint beyond the records"
        );
        drop(l);

        // Every published note anchors the history that follows it.
        let mut trusted = Vec::new();
        for entry in std::fs::read_dir(&published).into_iter().flatten() {
            let path = entry.expect("dir entry").path();
            let Ok(t) = TrustedCheckpoint::load(&path) else {
                // Only a temporary file of an interrupted atomic write may fail to load.
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                assert!(
                    !name.ends_with(".note"),
                    "trial {trial}: {name} is unreadable"
                );
                continue;
            };
            assert!(
                t.checkpoint().tree_size <= latest,
                "trial {trial}: {} published ahead of the ledger's latest checkpoint {latest}",
                path.display()
            );
            trusted.push(t);
        }
        let opts = VerifyOptions {
            allow_unsigned_tail: true,
            trusted,
        };
        let r = verify_dir_with(d.path(), &opts).expect("verify");
        assert!(
            r.first_failure.is_none(),
            "trial {trial} (killed after {wait} ms, last line {:?}):\n{r}",
            k.last
        );
        eprintln!(
            "trial {trial}: killed after {wait} ms during {:?}; acked {}, signed {}, present {}, latest checkpoint {latest}",
            k.last, k.acked, k.signed, r.records
        );
    }
    // The test is about the signing path: most kills must land inside `checkpoint()`.
    assert!(
        inside * 2 >= trials,
        "only {inside} of {trials} kills landed while a checkpoint was being signed"
    );
    // Closing signs what the last crash left unsigned; then strict verification passes and
    // the last published note is the newest checkpoint.
    let mut cfg = LedgerConfig::new(d.path(), ORIGIN);
    cfg.hybrid_ed25519 = true;
    cfg.publish_dir = Some(published.clone());
    let cp = Ledger::open(cfg).expect("open").close().expect("close");
    let strict = verify_dir(d.path()).expect("verify");
    assert!(strict.first_failure.is_none(), "{strict}");
    if let Some(cp) = cp {
        let latest = TrustedCheckpoint::load(&published.join(LATEST_NOTE)).expect("latest");
        assert_eq!(latest.checkpoint().tree_size, cp.tree_size);
    }
}

/// What a kill -9 in the middle of writing a checkpoint entry leaves: `checkpoints.log` ends
/// inside its last entry. At every cut, opening drops exactly the torn entry (the previous
/// checkpoint is the latest again, the records stay), and the next checkpoint verifies.
#[test]
fn torn_checkpoint_entry_is_dropped_on_open_at_every_cut() {
    let d = tempfile::tempdir().expect("tmp");
    let cfg = || {
        let mut c = LedgerConfig::new(d.path(), ORIGIN);
        c.rotate_every = None;
        c.hybrid_ed25519 = true;
        c
    };
    let cp_path = d.path().join("ledger").join(dunes_ledger::CHECKPOINTS_FILE);
    let mut l = Ledger::open(cfg()).expect("open");
    for i in 0..5 {
        l.append(dunes_ledger::RecordKind::Event, i, b"{\"a\":1}", &[])
            .expect("append");
    }
    let first = l.checkpoint().expect("checkpoint").tree_size;
    let before = std::fs::read(&cp_path).expect("read").len();
    for i in 5..9 {
        l.append(dunes_ledger::RecordKind::Event, i, b"{\"a\":2}", &[])
            .expect("append");
    }
    let total = l.checkpoint().expect("checkpoint").tree_size;
    drop(l);
    let full = std::fs::read(&cp_path).expect("read");
    assert!(
        full.len() > before + 1000,
        "an entry carries two signatures"
    );
    let mut cuts: Vec<usize> = (before + 1..full.len()).step_by(89).collect();
    cuts.extend([before + 1, before + 4, before + 8, full.len() - 1]);
    for cut in cuts {
        std::fs::write(&cp_path, &full[..cut]).expect("write");
        let l = Ledger::open(cfg()).unwrap_or_else(|e| panic!("cut {cut}: open failed: {e}"));
        assert_eq!(l.len(), total, "cut {cut}: records lost");
        let latest = l.latest_checkpoint().map(|c| c.tree_size);
        assert_eq!(latest, Some(first), "cut {cut}: latest checkpoint");
        drop(l);
        let len = std::fs::metadata(&cp_path).expect("stat").len();
        assert_eq!(len as usize, before, "cut {cut}: torn entry not truncated");
        let opts = VerifyOptions {
            allow_unsigned_tail: true,
            ..VerifyOptions::default()
        };
        let r = verify_dir_with(d.path(), &opts).expect("verify");
        assert!(r.first_failure.is_none(), "cut {cut}:\n{r}");
        assert_eq!(r.unsigned_tail(), total - first, "cut {cut}");
    }
    let cp = Ledger::open(cfg()).expect("open").close().expect("close");
    assert_eq!(cp.map(|c| c.tree_size), Some(total));
    let strict = verify_dir(d.path()).expect("verify");
    assert!(strict.first_failure.is_none(), "{strict}");
}
