//! Structured fuzzing of the verifier's parsers (frames, checkpoint notes, signed
//! manifests, tombstones, key files): a small signed ledger — hybrid, rotated, with a
//! redaction, pruned behind a tombstone — gets one random byte changed, inserted or
//! removed in one of its files. The verifier must never panic, and must reject every such
//! change: no byte of a signed ledger is unprotected.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use dunes_ledger::{Ledger, LedgerConfig, RecordKind, verify_dir};
use proptest::prelude::*;

const ORIGIN: &str = "dunes/mutation-host";

/// The pristine ledger (built once) and its files, relative paths in a stable order.
fn base() -> &'static (tempfile::TempDir, Vec<PathBuf>) {
    static BASE: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let d = tempfile::tempdir().expect("tmp");
        let mut c = LedgerConfig::new(d.path(), ORIGIN);
        c.checkpoint_interval = Duration::from_secs(3600);
        c.rotate_every = None;
        c.hybrid_ed25519 = true;
        c.segment_max_bytes = 1024;
        let mut l = Ledger::open(c).expect("open");
        let add = |l: &mut Ledger, n: u64| {
            for i in 0..n {
                let p = format!(
                    "{{\"event\":{i},\"tool\":\"read_file\",\"pad\":\"{}\"}}",
                    "q".repeat(80)
                );
                l.append(
                    RecordKind::Event,
                    1_700_000_000_000_000 + i as i64,
                    p.as_bytes(),
                    &[],
                )
                .expect("append");
            }
            l.checkpoint().expect("cp");
        };
        add(&mut l, 8);
        l.rotate_key().expect("rotate");
        add(&mut l, 8);
        // Every segment so far looks two years old; prune them.
        dunes_ledger::backdate_segments(d.path(), Duration::from_secs(2 * 365 * 86_400))
            .expect("backdate");
        add(&mut l, 6);
        l.prune(chrono_now() - 365 * 86_400 * 1_000_000)
            .expect("prune")
            .expect("pruned");
        add(&mut l, 6);
        let target = l.len() - 3;
        l.redact(target, "erasure", "dpo").expect("redact");
        add(&mut l, 2);
        l.close().expect("close");
        let _ = fs::remove_file(d.path().join("ledger/LOCK"));
        for e in fs::read_dir(d.path().join("keys")).expect("keys").flatten() {
            if e.path().extension().is_some_and(|x| x == "seed") {
                fs::remove_file(e.path()).expect("rm seed");
            }
        }
        let mut files = Vec::new();
        for sub in ["ledger", "keys"] {
            for e in fs::read_dir(d.path().join(sub)).expect("dir").flatten() {
                files.push(PathBuf::from(sub).join(e.file_name()));
            }
        }
        files.sort();
        let r = verify_dir(d.path()).expect("verify");
        assert!(r.is_ok() && r.pruned > 0 && !r.redacted.is_empty(), "{r}");
        (d, files)
    })
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

fn copy_to(dst: &Path) {
    let (d, files) = base();
    for f in files {
        let to = dst.join(f);
        fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        fs::copy(d.path().join(f), to).expect("copy");
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(u8),
    Insert(u8),
    Remove,
    Truncate,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<u8>().prop_map(Mutation::Set),
        any::<u8>().prop_map(Mutation::Insert),
        Just(Mutation::Remove),
        Just(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_changed_byte_is_detected(file in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), m in mutation()) {
        let (_, files) = base();
        let rel = file.get(files);
        let d = tempfile::tempdir().expect("tmp");
        copy_to(d.path());
        let path = d.path().join(rel);
        let mut b = fs::read(&path).expect("read");
        prop_assume!(!b.is_empty());
        let i = at.index(b.len());
        match m {
            Mutation::Set(v) => {
                prop_assume!(b[i] != v);
                b[i] = v;
            }
            Mutation::Insert(v) => b.insert(i, v),
            Mutation::Remove => {
                b.remove(i);
            }
            Mutation::Truncate => b.truncate(i),
        }
        fs::write(&path, &b).expect("write");
        let r = verify_dir(d.path());
        // An I/O-level refusal is fine too; silence is not.
        if let Ok(r) = r {
            prop_assert!(!r.is_ok(), "{} changed at byte {i} ({m:?}) and still verifies:\n{r}", rel.display());
        }
    }
}
