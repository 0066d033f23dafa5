//! Rotation, revocation, hybrid Ed25519, redaction, proofs, export bundles and the tamper matrix.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dunes_ledger::{
    Ledger, LedgerConfig, LedgerError, RecordKind, SIGNING_CONTEXT, VerifyOptions, VerifyReport,
    export, merkle, verify_dir, verify_dir_with, verify_path,
};
use ml_dsa::{ExpandedSigningKey, MlDsa65};

const ORIGIN: &str = "dunes/feature-host";

fn cfg(dir: &Path) -> LedgerConfig {
    let mut c = LedgerConfig::new(dir, ORIGIN);
    c.checkpoint_interval = Duration::from_secs(3600);
    c.rotate_every = None;
    c
}

fn ok(r: &VerifyReport) {
    assert!(r.first_failure.is_none(), "unexpected failure:\n{r}");
}

fn failed(r: &VerifyReport) -> String {
    match &r.first_failure {
        Some(f) => f.to_string(),
        None => panic!("expected a failure, got:\n{r}"),
    }
}

fn events(l: &mut Ledger, n: u64) {
    for i in 0..n {
        let len = l.len();
        l.append(
            RecordKind::Event,
            1_700_000_000_000_000 + len as i64,
            format!("{{\"event\":{len},\"i\":{i}}}").as_bytes(),
            &[],
        )
        .expect("append");
    }
}

fn frame_entry(note: &str) -> Vec<u8> {
    let len = (note.len() as u32).to_le_bytes();
    [b"DLCK".as_slice(), &len, note.as_bytes(), &len, b"KCLD"].concat()
}

/// (offset, note) of each entry of a checkpoints.log.
fn entries(bytes: &[u8]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 8 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[p + 4..p + 8].try_into().expect("4")) as usize;
        out.push((
            p,
            String::from_utf8(bytes[p + 8..p + 8 + n].to_vec()).expect("utf8"),
        ));
        p += n + 16;
    }
    out
}

#[test]
fn rotation_is_recorded_in_the_log_and_verifies() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 10);
    l.checkpoint().expect("cp");
    assert_eq!(l.key_epoch(), 0);
    assert_eq!(l.rotate_key().expect("rotate"), 1);
    assert_eq!(l.key_epoch(), 1);
    // The old private key is destroyed, the old public key kept.
    let keys = d.path().join("keys");
    assert!(!keys.join("ledger-mldsa65-0.seed").exists());
    assert!(keys.join("ledger-mldsa65-0.pub").exists());
    assert!(keys.join("ledger-mldsa65-1.seed").exists());
    events(&mut l, 5);
    l.close().expect("close");

    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!(r.key_ids.len(), 2);
    assert_eq!(r.records_by_kind.get("key"), Some(&2));
    assert!(r.to_string().contains("key epoch 1"));

    // Reopen continues with epoch 1.
    let mut l = Ledger::open(cfg(d.path())).expect("reopen");
    assert_eq!(l.key_epoch(), 1);
    events(&mut l, 1);
    l.close().expect("close");
    ok(&verify_dir(d.path()).expect("verify"));

    // A checkpoint signed by the old (epoch 0) key over the newer tree is rejected: the
    // epoch in force must sign. (Forge with a copy of the old seed.)
}

#[test]
fn automatic_rotation_by_age() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = cfg(d.path());
    c.rotate_every = Some(Duration::from_millis(1));
    let mut l = Ledger::open(c).expect("open");
    events(&mut l, 3);
    std::thread::sleep(Duration::from_millis(5));
    let cp = l.maybe_checkpoint().expect("maybe").expect("checkpoint");
    assert_eq!(cp.key_epoch, 1);
    assert_eq!(l.key_epoch(), 1);
    events(&mut l, 3);
    std::thread::sleep(Duration::from_millis(5));
    l.maybe_checkpoint().expect("maybe");
    assert_eq!(l.key_epoch(), 2);
    l.close().expect("close");
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!(r.key_ids.len(), 3);
    assert_eq!(
        LedgerConfig::new(d.path(), ORIGIN).rotate_every,
        Some(Duration::from_secs(86_400))
    );
}

#[test]
fn interrupted_rotation_key_is_discarded_on_open() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 2);
    l.close().expect("close");
    // Simulate a crash after the new seed was written but before its Key record.
    let keys = d.path().join("keys");
    fs::write(keys.join("ledger-mldsa65-1.seed"), [9u8; 32]).expect("seed");
    let l = Ledger::open(cfg(d.path())).expect("reopen");
    assert_eq!(l.key_epoch(), 0);
    assert!(!keys.join("ledger-mldsa65-1.seed").exists());
    l.close().expect("close");
    ok(&verify_dir(d.path()).expect("verify"));
}

#[test]
fn revocation_rejects_later_checkpoints_by_the_revoked_key() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 5);
    l.checkpoint().expect("cp");
    let old_seed = fs::read(d.path().join("keys/ledger-mldsa65-0.seed")).expect("seed");
    assert!(matches!(
        l.revoke_key(7, "nope"),
        Err(LedgerError::InvalidInput(_))
    ));
    let at = l.revoke_key(0, "seed exposed in a backup").expect("revoke");
    assert_eq!(l.key_epoch(), 1, "revoking the active key rotates first");
    assert!(matches!(
        l.revoke_key(0, "again"),
        Err(LedgerError::InvalidInput(_))
    ));
    events(&mut l, 3);
    l.close().expect("close");
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!(r.revoked.get(&0), Some(&at));
    assert!(r.to_string().contains("REVOKED by record"), "{r}");

    // Forge a checkpoint over the whole tree with the revoked epoch-0 key.
    let leaves = dunes_ledger::read_leaf_hashes(d.path()).expect("leaves");
    let root = merkle::root(leaves.kept());
    let body = format!(
        "{ORIGIN}\n{}\n{}\ntime {}\nkey-epoch 0\n",
        leaves.len(),
        base64_encode(&root),
        i64::MAX / 2
    );
    let sk = ExpandedSigningKey::<MlDsa65>::from_seed(
        &<[u8; 32]>::try_from(old_seed.as_slice())
            .expect("32")
            .into(),
    );
    let sig = sk
        .sign_deterministic(body.as_bytes(), SIGNING_CONTEXT)
        .expect("sign");
    let pk0 = fs::read(d.path().join("keys/ledger-mldsa65-0.pub")).expect("pub");
    let mut blob = dunes_ledger::key_id(ORIGIN, &pk0).to_vec();
    blob.extend_from_slice(&sig.encode());
    let note = format!("{body}\n\u{2014} {ORIGIN} {}\n", base64_encode(&blob));
    let cp = d.path().join("ledger/checkpoints.log");
    let mut bytes = fs::read(&cp).expect("read");
    bytes.extend_from_slice(&frame_entry(&note));
    fs::write(&cp, bytes).expect("write");
    let msg = failed(&verify_dir(d.path()).expect("verify"));
    assert!(msg.contains("revoked by record"), "{msg}");
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn hybrid_checkpoints_need_both_signatures() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = cfg(d.path());
    c.hybrid_ed25519 = true;
    let mut l = Ledger::open(c).expect("open");
    events(&mut l, 4);
    let cp = l.checkpoint().expect("cp");
    assert_eq!(cp.note.matches('\u{2014}').count(), 2, "{}", cp.note);
    l.close().expect("close");
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    // Record 0's checkpoint at creation and this one.
    assert_eq!(r.hybrid_checkpoints, 2);
    assert_eq!(r.ed25519_key_ids.len(), 1);

    // Drop the Ed25519 line of the last checkpoint: rejected (policy: both required).
    let path = d.path().join("ledger/checkpoints.log");
    let bytes = fs::read(&path).expect("read");
    let es = entries(&bytes);
    let (off, note) = es.last().expect("entry").clone();
    let cut = note.trim_end_matches('\n').rfind('\n').expect("line");
    let stripped = format!("{}\n", &note[..cut]);
    let mut out = bytes[..off].to_vec();
    out.extend_from_slice(&frame_entry(&stripped));
    fs::write(&path, &out).expect("write");
    let msg = failed(&verify_dir(d.path()).expect("verify"));
    assert!(msg.contains("no Ed25519 signature line"), "{msg}");

    // Keep the line but corrupt the Ed25519 signature.
    let ed_line = &note[cut + 1..];
    let mut bad_line = ed_line.to_string();
    let pos = bad_line.len() - 10;
    let ch = if &bad_line[pos..pos + 1] == "A" {
        "B"
    } else {
        "A"
    };
    bad_line.replace_range(pos..pos + 1, ch);
    let mut out = bytes[..off].to_vec();
    out.extend_from_slice(&frame_entry(&format!("{}\n{bad_line}", &note[..cut])));
    fs::write(&path, &out).expect("write");
    let msg = failed(&verify_dir(d.path()).expect("verify"));
    assert!(
        msg.contains("Ed25519 signature (line 2) does not verify"),
        "{msg}"
    );
}

#[test]
fn turning_hybrid_on_rotates_to_a_hybrid_epoch() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 2);
    l.close().expect("close");
    let mut c = cfg(d.path());
    c.hybrid_ed25519 = true;
    let mut l = Ledger::open(c).expect("open hybrid");
    assert_eq!(l.key_epoch(), 1);
    events(&mut l, 2);
    l.close().expect("close");
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert!(r.ed25519_key_ids.contains_key(&1));
}

#[test]
fn redaction_keeps_the_ledger_verifiable() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    l.append(
        RecordKind::Event,
        1,
        b"{\"user\":\"alice@example.com\"}",
        &[],
    )
    .expect("append");
    events(&mut l, 3);
    let cp = l.checkpoint().expect("cp");
    let red = l
        .redact(1, "GDPR erasure request #42", "dpo")
        .expect("redact");
    assert!(matches!(
        l.redact(1, "again", "dpo"),
        Err(LedgerError::InvalidInput(_))
    ));
    assert!(matches!(
        l.redact(0, "key", "dpo"),
        Err(LedgerError::InvalidInput(_))
    ));
    assert!(matches!(
        l.redact(99, "none", "dpo"),
        Err(LedgerError::InvalidInput(_))
    ));
    events(&mut l, 2);
    l.close().expect("close");
    let seg = fs::read(d.path().join("ledger/seg-0000000000000000.dlg")).expect("seg");
    assert!(
        !seg.windows(5).any(|w| w == b"alice"),
        "payload still on disk"
    );

    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!(r.redacted, vec![1]);
    assert!(r.to_string().contains("redacted:      1 records"), "{r}");
    assert_eq!(r.records_by_kind.get("redaction"), Some(&1));
    // The signed root from before the redaction still matches.
    let leaves = dunes_ledger::read_leaf_hashes(d.path()).expect("leaves");
    assert_eq!(
        merkle::root(&leaves.kept()[..cp.tree_size as usize]),
        cp.root
    );
    assert!(red > 1);
    // Reopen and continue.
    let mut l = Ledger::open(cfg(d.path())).expect("reopen");
    events(&mut l, 1);
    l.close().expect("close");
    ok(&verify_dir(d.path()).expect("verify"));
}

#[test]
fn unauthorised_redaction_flag_is_detected() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    l.append(RecordKind::Event, 1, b"", &[]).expect("append"); // empty payload
    l.close().expect("close");
    let seg = d.path().join("ledger/seg-0000000000000000.dlg");
    let mut b = fs::read(&seg).expect("seg");
    // Second frame: find its start from the first frame's length.
    let h0 = u32::from_le_bytes(b[5..9].try_into().expect("4")) as usize;
    let o = 9 + 24 + usize::from(u16::from_le_bytes(b[9 + 22..9 + 24].try_into().expect("2")));
    let p0 = u64::from_le_bytes(b[o + 64..o + 72].try_into().expect("8")) as usize;
    let second = 9 + h0 + p0 + 32;
    assert_eq!(&b[second..second + 4], b"DLR1");
    b[second + 4] = 0x01;
    fs::write(&seg, &b).expect("write");
    let msg = failed(&verify_dir(d.path()).expect("verify"));
    assert!(msg.contains("no redaction record refers to it"), "{msg}");
}

#[test]
fn proofs_from_disk_verify() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    events(&mut l, 10);
    let a = l.checkpoint().expect("cp");
    events(&mut l, 27);
    let b = l.checkpoint().expect("cp");
    events(&mut l, 3); // unsigned tail
    l.sync().expect("sync");
    for i in [0, 5, 10, 36] {
        let p = dunes_ledger::inclusion_proof(d.path(), i, None).expect("proof");
        assert_eq!(p.tree_size, b.tree_size);
        assert_eq!(p.root, hex::encode(b.root));
        assert_eq!(
            p.checkpoint.as_ref().map(|c| c.tree_size),
            Some(b.tree_size)
        );
        assert!(p.verify(), "{p:?}");
    }
    let p = dunes_ledger::inclusion_proof(d.path(), 3, Some(a.tree_size)).expect("proof");
    assert!(p.verify());
    assert!(dunes_ledger::inclusion_proof(d.path(), 38, None).is_err());
    let c = dunes_ledger::consistency_proof(d.path(), a.tree_size, None).expect("proof");
    assert_eq!(c.first_root, hex::encode(a.root));
    assert_eq!(c.second_root, hex::encode(b.root));
    assert!(c.first_checkpoint.is_some() && c.second_checkpoint.is_some());
    assert!(c.verify());
    let mut bad = c.clone();
    bad.first_root = hex::encode([0u8; 32]);
    assert!(!bad.verify());
    assert!(dunes_ledger::consistency_proof(d.path(), 0, None).is_err());
    drop(l);
}

/// A small ledger with everything in it: hybrid keys, rotation, redaction, several
/// checkpoints and an unsigned tail.
fn rich_ledger(dir: &Path) {
    let mut c = cfg(dir);
    c.hybrid_ed25519 = true;
    let mut l = Ledger::open(c).expect("open");
    events(&mut l, 4);
    l.checkpoint().expect("cp");
    l.append(RecordKind::Incident, 5, b"{\"rule\":\"r1\"}", &[1, 2])
        .expect("inc");
    l.redact(2, "erasure", "dpo").expect("redact");
    l.checkpoint().expect("cp");
    l.rotate_key().expect("rotate");
    events(&mut l, 3);
    l.checkpoint().expect("cp");
    events(&mut l, 2);
    l.sync().expect("sync");
    drop(l);
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for f in all_files(from) {
        let rel = f.strip_prefix(from).expect("rel");
        let dst = to.join(rel);
        fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        fs::copy(&f, &dst).expect("copy");
    }
}

/// Detected = verification returns an error or reports a failure.
fn detected(dir: &Path) -> bool {
    match verify_path(dir) {
        Ok(r) => r.first_failure.is_some(),
        Err(_) => true,
    }
}

#[test]
fn export_whole_and_range_bundles_verify() {
    let d = tempfile::tempdir().expect("tmp");
    rich_ledger(d.path());
    // The unsigned tail fails strict verification and is accepted only when asked for.
    let msg = failed(&verify_dir(d.path()).expect("verify data dir"));
    assert!(msg.contains("unsigned records: records 11..=12"), "{msg}");
    let lenient = VerifyOptions {
        allow_unsigned_tail: true,
        ..VerifyOptions::default()
    };
    let r = verify_dir_with(d.path(), &lenient).expect("verify data dir");
    ok(&r);
    assert_eq!(r.unsigned_tail(), 2);
    assert!(
        r.to_string().contains("ACCEPTED by --allow-unsigned-tail"),
        "{r}"
    );
    let out = tempfile::tempdir().expect("tmp");
    let whole = out.path().join("whole");
    let s = export(d.path(), None, None, &whole).expect("export");
    assert_eq!((s.from, s.to), (0, 10), "the unsigned tail is not exported");
    let r = verify_path(&whole).expect("verify bundle");
    ok(&r);
    assert_eq!(r.source, "export bundle");
    assert_eq!(r.records, s.records);
    assert_eq!(r.redacted, vec![2]);
    assert!(r.consistency_proofs >= 2, "{r}");
    assert_eq!(r.manifest_files, s.files - 1);
    assert!(r.to_string().contains("signed manifest verified"));

    // A range starting after the first key record and before the rotation.
    let range = out.path().join("range");
    let s = export(d.path(), Some(3), Some(9), &range).expect("export range");
    assert_eq!(s.records, 7);
    let r = verify_path(&range).expect("verify range");
    ok(&r);
    assert_eq!(r.first_index, 3);
    assert_eq!(r.records, 7);
    // Exporting into a non-empty directory is refused.
    assert!(export(d.path(), None, None, &whole).is_err());
    assert!(export(d.path(), Some(5), Some(2), &out.path().join("bad")).is_err());
}

#[test]
fn tamper_matrix_on_a_bundle() {
    let d = tempfile::tempdir().expect("tmp");
    rich_ledger(d.path());
    let out = tempfile::tempdir().expect("tmp");
    let pristine = out.path().join("pristine");
    export(d.path(), None, None, &pristine).expect("export");
    ok(&verify_path(&pristine).expect("verify"));
    let work = out.path().join("work");
    let files = all_files(&pristine);
    let cache: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                f.strip_prefix(&pristine).expect("rel").to_path_buf(),
                fs::read(f).expect("read"),
            )
        })
        .collect();
    copy_dir(&pristine, &work);
    let trials = std::cell::Cell::new(0u64);

    // Mutate the work copy in place, check, restore it from memory.
    let check = |what: String, mutate: &dyn Fn(&Path)| {
        mutate(&work);
        assert!(detected(&work), "not detected: {what}");
        for f in all_files(&work) {
            let rel = f.strip_prefix(&work).expect("rel");
            if !cache.iter().any(|(r, _)| r == rel) {
                fs::remove_file(&f).expect("rm extra");
            }
        }
        for (rel, bytes) in &cache {
            fs::write(work.join(rel), bytes).expect("restore");
        }
        trials.set(trials.get() + 1);
    };

    for f in &files {
        let rel = f.strip_prefix(&pristine).expect("rel").to_path_buf();
        let len = fs::metadata(f).expect("meta").len() as usize;
        // Every byte of small files; a dense sample (every 7th byte + both ends) of big ones.
        let positions: Vec<usize> = if len <= 2500 {
            (0..len).collect()
        } else {
            (0..len)
                .filter(|p| p % 7 == 0 || *p < 64 || *p + 64 >= len)
                .collect()
        };
        for p in positions {
            let rel = rel.clone();
            check(
                format!("flip byte {p} of {}", rel.display()),
                &move |w: &Path| {
                    let path = w.join(&rel);
                    let mut b = fs::read(&path).expect("read");
                    b[p] ^= 0x01;
                    fs::write(&path, b).expect("write");
                },
            );
        }
        for cut in [0usize, 1, len / 2, len.saturating_sub(1)] {
            if cut >= len {
                continue;
            }
            let rel = rel.clone();
            check(
                format!("truncate {} to {cut}", rel.display()),
                &move |w: &Path| {
                    let path = w.join(&rel);
                    let b = fs::read(&path).expect("read");
                    fs::write(&path, &b[..cut]).expect("write");
                },
            );
        }
        let rel2 = rel.clone();
        check(format!("delete {}", rel.display()), &move |w: &Path| {
            fs::remove_file(w.join(&rel2)).expect("rm");
        });
    }
    check("extra file".into(), &|w: &Path| {
        fs::write(w.join("ledger/notes.txt"), b"hi").expect("write");
    });
    // Reorder two records in the segment.
    check("swap records 3 and 4".into(), &|w: &Path| {
        let seg = w.join("ledger/seg-0000000000000000.dlg");
        let b = fs::read(&seg).expect("read");
        let fr = frames(&b);
        let (a, bb) = (fr[3], fr[4]);
        let mut out = b[..a.0].to_vec();
        out.extend_from_slice(&b[bb.0..bb.0 + bb.1]);
        out.extend_from_slice(&b[a.0..a.0 + a.1]);
        out.extend_from_slice(&b[bb.0 + bb.1..]);
        fs::write(&seg, out).expect("write");
    });
    // Drop each checkpoint in turn.
    let cp_bytes = fs::read(pristine.join("ledger/checkpoints.log")).expect("read");
    let n_cp = entries(&cp_bytes).len();
    assert!(n_cp >= 3);
    for k in 0..n_cp {
        check(format!("drop checkpoint {k}"), &move |w: &Path| {
            let path = w.join("ledger/checkpoints.log");
            let b = fs::read(&path).expect("read");
            let es = entries(&b);
            let mut out = Vec::new();
            for (i, (_, note)) in es.iter().enumerate() {
                if i != k {
                    out.extend_from_slice(&frame_entry(note));
                }
            }
            fs::write(&path, out).expect("write");
        });
    }
    // Swap public keys of the two epochs, and replace one by a foreign key.
    check("swap public keys".into(), &|w: &Path| {
        let a = w.join("keys/ledger-mldsa65-0.pub");
        let b = w.join("keys/ledger-mldsa65-1.pub");
        let (ka, kb) = (fs::read(&a).expect("a"), fs::read(&b).expect("b"));
        fs::write(&a, kb).expect("w");
        fs::write(&b, ka).expect("w");
    });
    check("foreign public key".into(), &|w: &Path| {
        let sk = ExpandedSigningKey::<MlDsa65>::from_seed(&[42u8; 32].into());
        fs::write(
            w.join("keys/ledger-mldsa65-1.pub"),
            sk.verifying_key().encode(),
        )
        .expect("w");
    });
    check("swap ed25519 keys".into(), &|w: &Path| {
        let a = w.join("keys/ledger-ed25519-0.pub");
        let b = w.join("keys/ledger-ed25519-1.pub");
        let (ka, kb) = (fs::read(&a).expect("a"), fs::read(&b).expect("b"));
        fs::write(&a, kb).expect("w");
        fs::write(&b, ka).expect("w");
    });
    eprintln!("tamper matrix: {} mutations, all detected", trials.get());
    assert!(trials.get() > 1000);
    // And the pristine bundle still verifies.
    ok(&verify_path(&pristine).expect("verify"));
}

/// (offset, len) of each frame (redaction-aware).
fn frames(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let header_len = u32::from_le_bytes(b[p + 5..p + 9].try_into().expect("4")) as usize;
        let h = p + 9;
        let ol = u16::from_le_bytes(b[h + 22..h + 24].try_into().expect("2")) as usize;
        let pl = u64::from_le_bytes(b[h + 24 + ol + 64..h + 24 + ol + 72].try_into().expect("8"))
            as usize;
        let stored = if b[p + 4] & 1 == 1 { 0 } else { pl };
        let len = 9 + header_len + stored + 32;
        out.push((p, len));
        p += len;
    }
    out
}
