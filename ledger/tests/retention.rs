//! Retention: pruning old segments behind a signed tombstone (docs/ledger-format.md §2.10).
//! Real files, real ML-DSA keys; every verdict comes from the reference verifier.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dunes_ledger::{
    Ledger, LedgerConfig, RecordKind, TOMBSTONE_NOTE, TrustedCheckpoint, VerifyOptions,
    VerifyReport, consistency_proof, export, export_evidence, inclusion_proof, tombstone_file_name,
    verify_dir, verify_dir_with, verify_path,
};

const ORIGIN: &str = "dunes/retention-test";
const YEAR: i64 = 365 * 24 * 3600 * 1_000_000;

fn cfg(dir: &Path) -> LedgerConfig {
    let mut c = LedgerConfig::new(dir, ORIGIN);
    c.checkpoint_interval = Duration::from_secs(3600);
    c.segment_max_bytes = 4096;
    c.rotate_every = None;
    c
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// `n` events at time `ts`, checkpointed.
fn events(l: &mut Ledger, n: u64, ts: i64) {
    for i in 0..n {
        let p = format!("{{\"event\":{i},\"pad\":\"{}\"}}", "y".repeat(200));
        l.append(RecordKind::Event, ts, p.as_bytes(), &[])
            .expect("append");
    }
    l.checkpoint().expect("checkpoint");
}

/// Every segment but the active one looks `years` old (the writer prunes by write time).
fn age_segments(d: &Path, years: u32) {
    dunes_ledger::backdate_segments(d, Duration::from_secs(u64::from(years) * 365 * 86_400))
        .expect("backdate");
}

fn ledger_dir(d: &Path) -> PathBuf {
    d.join("ledger")
}

fn segments(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(ledger_dir(d))
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    v.sort();
    v
}

fn ok(r: &VerifyReport) {
    assert!(r.is_ok(), "unexpected failure:\n{r}");
}

fn failed(r: &VerifyReport) -> String {
    r.first_failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure:\n{r}"))
        .to_string()
}

/// Records written "two years ago" (segments aged), then new ones; prune with a one-year
/// cut-off. Event times are deliberately all old: they do not decide.
fn pruned_ledger(d: &Path) -> (u64, u64) {
    let mut l = Ledger::open(cfg(d)).expect("open");
    events(&mut l, 60, now() - 5 * YEAR);
    l.rotate_key().expect("rotate"); // a key record inside the pruned range
    events(&mut l, 40, now() - 5 * YEAR);
    let old_len = l.len();
    age_segments(d, 2);
    events(&mut l, 40, now() - 5 * YEAR);
    let before = segments(d).len();
    let s = l
        .prune(now() - YEAR)
        .expect("prune")
        .expect("something pruned");
    assert!(s.pruned > 0 && s.pruned <= old_len, "{s:?}");
    assert_eq!(s.records_removed, s.pruned);
    assert_eq!(segments(d).len() as u64, before as u64 - s.segments_removed);
    assert_eq!(
        segments(d)[0],
        dunes_ledger::segment_file_name(s.pruned),
        "the first kept segment starts at the pruning point"
    );
    assert_eq!(l.pruned(), s.pruned);
    // The writer goes on after pruning.
    events(&mut l, 5, now());
    let len = l.len();
    l.close().expect("close");
    (s.pruned, len)
}

#[test]
fn pruned_ledger_verifies_and_serves_proofs_exports_and_evidence() {
    let d = tempfile::tempdir().expect("tmp");
    let (p, len) = pruned_ledger(d.path());
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!((r.pruned, r.first_index, r.records), (p, p, len - p));
    assert_eq!(
        r.key_ids.len(),
        2,
        "both key epochs known (one from the tombstone):\n{r}"
    );
    assert!(r.to_string().contains("removed by retention"), "{r}");

    // Proofs for kept records verify; pruned ones are refused with a reason.
    let ip = inclusion_proof(d.path(), p + 3, None).expect("proof");
    assert!(ip.verify());
    let e = inclusion_proof(d.path(), p - 1, None).expect_err("pruned");
    assert!(e.to_string().contains("pruned by retention"), "{e}");
    let cp = consistency_proof(d.path(), p, None).expect("consistency");
    assert!(cp.verify());
    assert!(consistency_proof(d.path(), p - 1, None).is_err());

    // A range export of kept records verifies; one reaching into the pruned range is refused.
    for from in [p, p + 1] {
        let out = d.path().join(format!("export-{from}"));
        export(d.path(), Some(from), None, &out).expect("export");
        ok(&verify_path(&out).expect("verify export"));
    }
    let e = export(d.path(), Some(0), None, &d.path().join("export0")).expect_err("pruned");
    assert!(e.to_string().contains("pruned by retention"), "{e}");

    // An evidence bundle carries the tombstone (key history before P) and verifies.
    let ev = d.path().join("evidence");
    export_evidence(d.path(), &BTreeSet::from([p + 2, len - 2]), &ev).expect("evidence");
    assert!(ev.join(TOMBSTONE_NOTE).exists());
    let r = verify_path(&ev).expect("verify evidence");
    ok(&r);
    assert_eq!(r.pruned, p);
    assert!(
        export_evidence(d.path(), &BTreeSet::from([p - 1]), &d.path().join("ev2")).is_err(),
        "a pruned record cannot be proved"
    );
}

#[test]
fn reopening_and_pruning_again_replace_the_tombstone() {
    let d = tempfile::tempdir().expect("tmp");
    let (p1, _) = pruned_ledger(d.path());
    let old_tomb = fs::read(ledger_dir(d.path()).join(TOMBSTONE_NOTE)).expect("note");
    let old_json = fs::read(ledger_dir(d.path()).join(tombstone_file_name(p1))).expect("json");
    let mut l = Ledger::open(cfg(d.path())).expect("reopen after pruning");
    assert_eq!(l.pruned(), p1);
    events(&mut l, 40, now());
    age_segments(d.path(), 1);
    let s = l.prune(now()).expect("prune").expect("second prune");
    assert!(s.pruned > p1);
    events(&mut l, 3, now());
    l.close().expect("close");
    ok(&verify_dir(d.path()).expect("verify"));
    assert!(
        !ledger_dir(d.path()).join(tombstone_file_name(p1)).exists(),
        "the previous tombstone JSON is removed"
    );
    // Putting the first tombstone back (a replay of an older signed tombstone) fails: the
    // segments it stands before are gone.
    fs::write(ledger_dir(d.path()).join(TOMBSTONE_NOTE), &old_tomb).expect("w");
    fs::write(
        ledger_dir(d.path()).join(tombstone_file_name(p1)),
        &old_json,
    )
    .expect("w");
    let f = failed(&verify_dir(d.path()).expect("verify"));
    assert!(f.contains("segment"), "{f}");
}

#[test]
fn tampering_with_the_tombstone_or_hiding_it_fails() {
    let d = tempfile::tempdir().expect("tmp");
    let (p, _) = pruned_ledger(d.path());
    let note = ledger_dir(d.path()).join(TOMBSTONE_NOTE);
    let json = ledger_dir(d.path()).join(tombstone_file_name(p));
    let (note_bytes, json_bytes) = (fs::read(&note).expect("r"), fs::read(&json).expect("r"));

    // Without the tombstone the kept records do not start at record 0.
    fs::remove_file(&note).expect("rm");
    let f = failed(&verify_dir(d.path()).expect("verify"));
    assert!(f.contains("first index"), "{f}");
    fs::write(&note, &note_bytes).expect("w");

    // Any change to the JSON breaks the signed digest, even one that keeps it valid JSON.
    let text = String::from_utf8(json_bytes.clone()).expect("utf8");
    let edited = text.replacen("\"cutoff_micros\":", "\"cutoff_micros\": ", 1);
    assert_ne!(edited, text);
    fs::write(&json, edited).expect("w");
    let f = failed(&verify_dir(d.path()).expect("verify"));
    assert!(f.contains("does not match the signed manifest"), "{f}");
    fs::write(&json, &json_bytes).expect("w");

    // A flipped signature byte.
    let mut bad = note_bytes.clone();
    let at = bad.len() - 10;
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    fs::write(&note, &bad).expect("w");
    let f = failed(&verify_dir(d.path()).expect("verify"));
    assert!(f.contains("tombstone"), "{f}");
    fs::write(&note, &note_bytes).expect("w");
    ok(&verify_dir(d.path()).expect("verify"));

    // A kept record changed: the tombstone's frontier no longer reproduces the signed roots.
    let seg = ledger_dir(d.path()).join(dunes_ledger::segment_file_name(p));
    let mut b = fs::read(&seg).expect("r");
    let i = b.windows(5).position(|w| w == b"\"pad\"").expect("payload");
    b[i + 9] = b'z';
    fs::write(&seg, &b).expect("w");
    assert!(!verify_dir(d.path()).expect("verify").is_ok());
}

#[test]
fn trusted_checkpoints_before_the_pruning_point_cannot_be_checked() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 20, now());
    let early = l.latest_checkpoint().expect("cp").clone();
    events(&mut l, 60, now());
    age_segments(d.path(), 2);
    events(&mut l, 60, now());
    let s = l.prune(now() - YEAR).expect("prune").expect("pruned");
    assert!(early.tree_size < s.pruned);
    let late = l.latest_checkpoint().expect("cp").clone();
    l.close().expect("close");
    let early_t = TrustedCheckpoint::from_note(Path::new("early.note"), &early.note).expect("t");
    let late_t = TrustedCheckpoint::from_note(Path::new("late.note"), &late.note).expect("t");
    let opts = |t: TrustedCheckpoint| VerifyOptions {
        trusted: vec![t],
        ..VerifyOptions::default()
    };
    let f = failed(&verify_dir_with(d.path(), &opts(early_t)).expect("verify"));
    assert!(f.contains("pruned by retention"), "{f}");
    ok(&verify_dir_with(d.path(), &opts(late_t)).expect("verify"));
}

#[test]
fn an_interrupted_prune_is_valid_and_finished_on_open() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 60, now());
    age_segments(d.path(), 2);
    events(&mut l, 60, now());
    l.close().expect("close");
    // Keep copies of what the prune removes, then put them back: the state of a crash right
    // after the tombstone became durable.
    let lg = ledger_dir(d.path());
    let saved: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&lg)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .map(|p| {
            let b = fs::read(&p).expect("r");
            (p, b)
        })
        .collect();
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    let s = l.prune(now() - YEAR).expect("prune").expect("pruned");
    l.close().expect("close");
    for (p, b) in &saved {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if (name.starts_with("seg-") && !p.exists()) || name == "checkpoints.log" {
            fs::write(p, b).expect("restore");
        }
    }
    assert!(lg.join("seg-0000000000000000.dlg").exists());
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!(r.pruned, s.pruned);
    let l = Ledger::open(cfg(d.path())).expect("open finishes the prune");
    drop(l);
    assert!(!lg.join("seg-0000000000000000.dlg").exists());
    ok(&verify_dir(d.path()).expect("verify"));
}

#[test]
fn nothing_is_pruned_when_nothing_is_old_enough() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 80, now() - 5 * YEAR);
    let before = segments(d.path());
    assert!(before.len() > 3);
    assert!(
        l.prune(now() - YEAR).expect("prune").is_none(),
        "old event times alone do not make records prunable"
    );
    assert_eq!(segments(d.path()), before);
    // A segment written recently stops the pruning there, even if later ones look old.
    age_segments(d.path(), 2);
    let recent = ledger_dir(d.path()).join(&before[1]);
    fs::File::options()
        .write(true)
        .open(&recent)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .expect("touch");
    let s = l.prune(now() - YEAR).expect("prune").expect("pruned");
    l.close().expect("close");
    ok(&verify_dir(d.path()).expect("verify"));
    assert_eq!(segments(d.path())[0], before[1], "{s:?}");
}

#[test]
fn a_segment_rewritten_on_disk_since_it_was_written_is_never_sealed_in_a_tombstone() {
    let (a, b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let mut la = Ledger::open(cfg(a.path())).expect("open");
    events(&mut la, 60, now() - 5 * YEAR);
    // Another writer's first segment: the same indexes and sizes, frames that are valid
    // on their own, other record hashes (another key) — a consistent rewrite.
    let mut lb = Ledger::open(cfg(b.path())).expect("open");
    events(&mut lb, 60, now() - 5 * YEAR);
    lb.close().expect("close");
    let seg = dunes_ledger::segment_file_name(0);
    let (sa, sb) = (
        ledger_dir(a.path()).join(&seg),
        ledger_dir(b.path()).join(&seg),
    );
    assert_eq!(
        fs::metadata(&sa).expect("a").len(),
        fs::metadata(&sb).expect("b").len()
    );
    assert_ne!(fs::read(&sa).expect("a"), fs::read(&sb).expect("b"));
    fs::copy(&sb, &sa).expect("copy");
    age_segments(a.path(), 2);
    let err = la.prune(now() - YEAR).expect_err("refused");
    assert!(err.to_string().contains("changed on disk"), "{err}");
    assert!(
        !fs::read_dir(ledger_dir(a.path())).expect("dir").any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with("tombstone")),
        "no tombstone written"
    );
    assert!(sa.exists(), "nothing pruned");
}
