//! Integration tests: real files, real crypto, real corruption.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use dunes_ledger::{
    Checkpoint, Ledger, LedgerConfig, LedgerError, RecordKind, SIGNING_CONTEXT, VerifyOptions,
    VerifyReport, read_latest_checkpoint, verify_dir, verify_dir_with,
};

const ORIGIN: &str = "dunes/test-host";

fn cfg(dir: &Path) -> LedgerConfig {
    let mut c = LedgerConfig::new(dir, ORIGIN);
    c.checkpoint_interval = Duration::from_secs(3600);
    c
}

fn seg0(dir: &Path) -> PathBuf {
    dir.join("ledger").join("seg-0000000000000000.dlg")
}

fn payload(i: u64) -> Vec<u8> {
    format!(
        "{{\"event\":{i},\"pad\":\"{}\"}}",
        "x".repeat((i % 7) as usize * 13)
    )
    .into_bytes()
}

/// Independent minimal frame walker (from docs/ledger-format.md): (start, len) of each frame.
fn frames(seg: &Path) -> Vec<(u64, u64)> {
    let b = fs::read(seg).expect("read segment");
    let mut out = Vec::new();
    let mut p = 0usize;
    while p < b.len() {
        assert_eq!(&b[p..p + 4], b"DLR1");
        let header_len = u32::from_le_bytes(b[p + 5..p + 9].try_into().expect("4")) as usize;
        let h = p + 9;
        let origin_len = u16::from_le_bytes(b[h + 22..h + 24].try_into().expect("2")) as usize;
        let pl_at = h + 24 + origin_len + 64;
        let payload_len = u64::from_le_bytes(b[pl_at..pl_at + 8].try_into().expect("8")) as usize;
        let len = 9 + header_len + payload_len + 32;
        out.push((p as u64, len as u64));
        p += len;
    }
    out
}

fn assert_ok(r: &VerifyReport) {
    assert!(r.first_failure.is_none(), "unexpected failure:\n{r}");
}

fn failure(dir: &Path) -> dunes_ledger::VerifyFailure {
    let r = verify_dir(dir).expect("verify runs");
    r.first_failure
        .clone()
        .unwrap_or_else(|| panic!("expected a failure, got:\n{r}"))
}

/// A closed ledger: Key record + `n` events/incidents, checkpointed once in the middle and at close.
/// Every third event comes with its payload hash computed by the caller (as the pipeline's
/// decode thread does), so every test of a built ledger covers both ways of appending.
fn build(dir: &Path, n: u64) -> Ledger {
    let mut l = Ledger::open(cfg(dir)).expect("open");
    for i in 0..n {
        let (kind, refs): (RecordKind, Vec<u64>) = if i % 5 == 4 {
            (RecordKind::Incident, vec![l.len() - 1, l.len() - 2])
        } else {
            (RecordKind::Event, vec![])
        };
        let (ts, p) = (1_700_000_000_000_000 + i as i64, payload(i));
        if kind == RecordKind::Event && i % 3 == 1 {
            l.append_event_prehashed(ts, &p, blake3::hash(&p).as_bytes(), &refs)
        } else {
            l.append(kind, ts, &p, &refs)
        }
        .expect("append");
        if i == n / 2 {
            l.checkpoint().expect("checkpoint");
        }
    }
    l
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "assertion")]
fn a_wrong_precomputed_payload_hash_is_caught_in_debug_builds() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path())).expect("open");
    let _ = l.append_event_prehashed(1, b"{}", blake3::hash(b"{ }").as_bytes(), &[]);
}

#[test]
fn append_reopen_continues_chain_and_verifies() {
    let d = tempfile::tempdir().expect("tmp");
    let l = build(d.path(), 20);
    assert_eq!(l.len(), 21);
    assert_eq!(l.origin(), ORIGIN);
    let cp = l.close().expect("close").expect("final checkpoint");
    assert_eq!(cp.tree_size, 21);

    let mut l = Ledger::open(cfg(d.path())).expect("reopen");
    assert_eq!(l.len(), 21);
    assert_eq!(l.latest_checkpoint(), Some(&cp));
    // The reopened writer's root equals the signed root, and so does the root recomputed from
    // the leaf hashes read back from the segments.
    assert_eq!(l.root(), cp.root);
    let leaves = dunes_ledger::read_leaf_hashes(d.path()).expect("leaves");
    assert_eq!(leaves.root(cp.tree_size).expect("root"), cp.root);
    assert_eq!(
        l.append(RecordKind::Response, 5, b"block", &[20])
            .expect("append"),
        21
    );
    assert_eq!(
        l.append(RecordKind::Action, 6, b"ack", &[21])
            .expect("append"),
        22
    );
    assert_eq!(
        l.append(RecordKind::RuleSet, 7, b"rules v2", &[])
            .expect("append"),
        23
    );
    assert_eq!(
        l.append(RecordKind::Model, 8, b"", &[]).expect("append"),
        24
    );
    l.sync().expect("sync");
    drop(l); // no final checkpoint: 4 unsigned records

    // Strict verification refuses records no signature covers; the lenient mode reports them.
    let strict = failure(d.path());
    assert_eq!(strict.record_index, Some(21));
    assert!(
        strict.reason.contains("unsigned records: records 21..=24"),
        "{strict}"
    );
    let lenient = VerifyOptions {
        allow_unsigned_tail: true,
        ..VerifyOptions::default()
    };
    let r = verify_dir_with(d.path(), &lenient).expect("verify");
    assert_ok(&r);
    assert_eq!(r.origin, ORIGIN);
    assert_eq!(r.records, 25);
    assert_eq!(r.checkpoints, 3); // record 0's, and two more
    assert_eq!(r.signed_records, 21);
    assert_eq!(r.unsigned_tail(), 4);
    let want: Vec<(&str, u64)> = vec![
        ("action", 1),
        ("event", 16),
        ("incident", 4),
        ("key", 1),
        ("model", 1),
        ("response", 1),
        ("ruleset", 1),
    ];
    let got: Vec<(&str, u64)> = r
        .records_by_kind
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(got, want);
    let text = r.to_string();
    assert!(
        text.contains("unsigned tail: 4 records after the latest checkpoint, ACCEPTED"),
        "{text}"
    );
    assert!(text.contains("RESULT: OK"), "{text}");

    // Reopen after the unclean drop: chain continues from record 24.
    let mut l = Ledger::open(cfg(d.path())).expect("reopen 2");
    assert_eq!(
        l.append(RecordKind::Event, 9, b"later", &[])
            .expect("append"),
        25
    );
    let cp = l.close().expect("close").expect("checkpoint");
    assert_eq!(cp.tree_size, 26);
    let r = verify_dir(d.path()).expect("verify");
    assert_ok(&r);
    assert_eq!((r.records, r.checkpoints, r.unsigned_tail()), (26, 4, 0));
}

#[test]
fn flipping_any_segment_byte_names_the_right_record() {
    let d = tempfile::tempdir().expect("tmp");
    build(d.path(), 12).close().expect("close");
    assert_ok(&verify_dir(d.path()).expect("verify"));
    let seg = seg0(d.path());
    let fr = frames(&seg);
    assert_eq!(fr.len(), 13);
    let original = fs::read(&seg).expect("read");
    let record_at = |off: u64| {
        fr.iter()
            .position(|(s, l)| off >= *s && off < s + l)
            .expect("in a frame") as u64
    };

    // Specific: a payload byte of record 5 and a header byte (the ts field) of record 7.
    let payload_off = fr[5].0 + fr[5].1 - 32 - 3;
    let header_off = fr[7].0 + 9 + 14;
    let mut offsets = vec![payload_off, header_off];
    // A sample across the whole file (frame prefixes, headers, payloads, trailers).
    offsets.extend((0..original.len() as u64).step_by(17));
    for (s, _) in &fr {
        offsets.extend([*s, s + 4, s + 5, s + 9, s + 9 + 1, s + 9 + 24]);
    }
    for off in offsets {
        let mut bytes = original.clone();
        bytes[off as usize] ^= 0x01;
        fs::write(&seg, &bytes).expect("write");
        let f = failure(d.path());
        assert_eq!(
            f.record_index,
            Some(record_at(off)),
            "flip at byte {off}: {f}"
        );
        assert_eq!(f.file, seg, "flip at byte {off}: {f}");
        assert_eq!(
            f.byte_offset,
            Some(fr[record_at(off) as usize].0),
            "flip at {off}: {f}"
        );
    }
    // The two specific cases have specific reasons.
    let mut bytes = original.clone();
    bytes[payload_off as usize] ^= 0x01;
    fs::write(&seg, &bytes).expect("write");
    let f = failure(d.path());
    assert!(f.reason.contains("payload hash mismatch"), "{f}");
    assert_eq!(
        f.to_string(),
        format!(
            "record 5 ({} @ byte {}): payload hash mismatch",
            seg.display(),
            fr[5].0
        )
    );
    let mut bytes = original.clone();
    bytes[header_off as usize] ^= 0x01;
    fs::write(&seg, &bytes).expect("write");
    let f = failure(d.path());
    assert_eq!(f.record_index, Some(7));
    assert!(f.reason.contains("record hash"), "{f}");

    fs::write(&seg, &original).expect("restore");
    assert_ok(&verify_dir(d.path()).expect("verify"));
}

#[test]
fn flipping_any_checkpoint_byte_fails_verification() {
    let d = tempfile::tempdir().expect("tmp");
    build(d.path(), 6).close().expect("close");
    let cp_path = d.path().join("ledger").join("checkpoints.log");
    let original = fs::read(&cp_path).expect("read");
    let mut offsets: Vec<usize> = (0..original.len()).step_by(61).collect();
    offsets.extend([
        0,
        4,
        8,
        9,
        20,
        original.len() - 1,
        original.len() - 5,
        original.len() - 30,
    ]);
    for off in offsets {
        for mask in [0x01u8, 0x80] {
            let mut bytes = original.clone();
            bytes[off] ^= mask;
            fs::write(&cp_path, &bytes).expect("write");
            let f = failure(d.path());
            assert_eq!(f.file, cp_path, "flip {mask:#x} at {off}: {f}");
            assert_eq!(f.record_index, None, "flip at {off}: {f}");
        }
    }
    // Truncating the last entry (signed checkpoint lost) is also reported.
    fs::write(&cp_path, &original[..original.len() - 10]).expect("write");
    assert!(failure(d.path()).reason.contains("incomplete"));
    fs::write(&cp_path, &original).expect("restore");
    assert_ok(&verify_dir(d.path()).expect("verify"));
}

#[test]
fn swapped_public_key_fails_verification() {
    let d = tempfile::tempdir().expect("tmp");
    build(d.path(), 3).close().expect("close");
    let other = tempfile::tempdir().expect("tmp");
    Ledger::open(cfg(other.path()))
        .expect("open other")
        .close()
        .expect("close");
    let pub_path = d.path().join("keys").join("ledger-mldsa65-0.pub");
    let original = fs::read(&pub_path).expect("read");
    fs::copy(
        other.path().join("keys").join("ledger-mldsa65-0.pub"),
        &pub_path,
    )
    .expect("swap");
    let f = failure(d.path());
    assert_eq!(f.record_index, Some(0), "{f}");
    assert_eq!(f.file, pub_path);
    assert!(f.reason.contains("does not match"), "{f}");
    // A missing key file is a failure too.
    fs::remove_file(&pub_path).expect("rm");
    assert_eq!(failure(d.path()).file, pub_path);
    // Flipping one byte of the key file.
    let mut b = original.clone();
    b[100] ^= 1;
    fs::write(&pub_path, &b).expect("write");
    assert_eq!(failure(d.path()).record_index, Some(0));
    fs::write(&pub_path, &original).expect("restore");
    assert_ok(&verify_dir(d.path()).expect("verify"));
    // The writer refuses to start with a swapped key file, too.
    fs::copy(
        other.path().join("keys").join("ledger-mldsa65-0.pub"),
        &pub_path,
    )
    .expect("swap");
    assert!(matches!(
        Ledger::open(cfg(d.path())),
        Err(LedgerError::Key(_))
    ));
}

#[test]
fn torn_tail_is_repaired_and_chain_continues() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = build(d.path(), 8); // checkpoint at tree size 6
    let signed = l.checkpoint().expect("checkpoint").tree_size; // covers 9 records
    for i in 0..3 {
        l.append(RecordKind::Event, i, &payload(100 + i as u64), &[])
            .expect("append");
    }
    l.sync().expect("sync");
    drop(l);
    let seg = seg0(d.path());
    let cp_path = d.path().join("ledger").join("checkpoints.log");
    let seg_bytes = fs::read(&seg).expect("read");
    let cp_bytes = fs::read(&cp_path).expect("read");
    let fr = frames(&seg);
    assert_eq!(fr.len(), 12);
    let (last_start, last_len) = fr[11];
    let cuts = [
        1,
        4,
        9,
        20,
        9 + 60,
        last_len - 40,
        last_len - 32,
        last_len - 1,
    ];
    for cut in cuts {
        fs::write(&seg, &seg_bytes[..(last_start + cut) as usize]).expect("truncate");
        fs::write(&cp_path, &cp_bytes).expect("restore cps");
        let v = verify_dir(d.path()).expect("verify");
        assert_eq!(
            v.first_failure.as_ref().and_then(|f| f.record_index),
            Some(11),
            "cut {cut}: {v}"
        );

        let mut l = Ledger::open(cfg(d.path())).expect("open repairs");
        assert_eq!(l.len(), 11, "cut {cut}");
        assert_eq!(fs::metadata(&seg).expect("meta").len(), last_start);
        assert_eq!(
            l.append(RecordKind::Action, 1, b"after crash", &[10])
                .expect("append"),
            11
        );
        l.close().expect("close");
        let r = verify_dir(d.path()).expect("verify");
        assert_ok(&r);
        assert_eq!(r.records, 12);
    }
    // A torn write inside a *signed* record is corruption, not a tail to drop.
    fs::write(&seg, &seg_bytes[..(fr[signed as usize - 1].0 + 5) as usize]).expect("truncate");
    fs::write(&cp_path, &cp_bytes).expect("restore cps");
    assert!(matches!(
        Ledger::open(cfg(d.path())),
        Err(LedgerError::Corrupt { .. })
    ));
    // Damage in the middle of the unsigned tail (a valid record follows) is not truncated.
    let mut b = seg_bytes.clone();
    b[(fr[9].0 + 9 + 30) as usize] ^= 1;
    fs::write(&seg, &b).expect("write");
    match Ledger::open(cfg(d.path())) {
        Err(LedgerError::Corrupt { failure }) => {
            assert_eq!(failure.record_index, Some(9));
            assert!(failure.reason.contains("refusing to truncate"), "{failure}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&seg).expect("read"), b, "file must be untouched");
    // A torn checkpoint entry is dropped on open.
    fs::write(&seg, &seg_bytes).expect("restore");
    fs::write(&cp_path, [cp_bytes.as_slice(), &cp_bytes[..100]].concat()).expect("write");
    let l = Ledger::open(cfg(d.path())).expect("open");
    assert_eq!(
        fs::metadata(&cp_path).expect("meta").len(),
        cp_bytes.len() as u64
    );
    l.close().expect("close");
    assert_ok(&verify_dir(d.path()).expect("verify"));
}

#[cfg(unix)]
#[test]
fn key_files_are_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    let cp1 = build(d.path(), 3).close().expect("close").expect("cp");
    let keys = d.path().join("keys");
    let seed = keys.join("ledger-mldsa65-0.seed");
    let pubk = keys.join("ledger-mldsa65-0.pub");
    assert_eq!(
        fs::metadata(&seed).expect("seed").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::metadata(&seed).expect("seed").len(), 32);
    assert_eq!(
        fs::metadata(&keys).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    let pk1 = fs::read(&pubk).expect("pub");
    assert_eq!(pk1.len(), dunes_ledger::PUBLIC_KEY_LEN);

    let mut l = Ledger::open(cfg(d.path())).expect("reopen");
    l.append(RecordKind::Event, 1, b"x", &[]).expect("append");
    let cp2 = l.close().expect("close").expect("cp");
    assert_eq!(
        fs::read(&pubk).expect("pub"),
        pk1,
        "same public key after reopen"
    );
    let sig_line = |c: &Checkpoint| c.note.lines().last().map(str::to_string).expect("line");
    // Same key name and key id in both signature lines.
    let id = |c: &Checkpoint| {
        B64.decode(sig_line(c).rsplit(' ').next().expect("b64"))
            .expect("b64")[..4]
            .to_vec()
    };
    assert_eq!(id(&cp1), id(&cp2));
    assert_eq!(id(&cp1), dunes_ledger::key_id(ORIGIN, &pk1).to_vec());
    // Exactly one key pair was created.
    assert_eq!(fs::read_dir(&keys).expect("ls").count(), 2);

    // Loose permissions are tightened on open.
    fs::set_permissions(&seed, fs::Permissions::from_mode(0o644)).expect("chmod");
    Ledger::open(cfg(d.path()))
        .expect("reopen")
        .close()
        .expect("close");
    assert_eq!(
        fs::metadata(&seed).expect("seed").permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn checkpoint_signature_verifies_with_ml_dsa() {
    use ml_dsa::{EncodedSignature, EncodedVerifyingKey, MlDsa65, Signature, VerifyingKey};
    let d = tempfile::tempdir().expect("tmp");
    let cp = build(d.path(), 4).close().expect("close").expect("cp");
    assert_eq!(cp.origin, ORIGIN);
    assert_eq!(cp.key_epoch, 0);

    // Split the note per C2SP signed-note: body ends at the last blank line.
    let split = cp.note.rfind("\n\n").expect("blank line");
    let body = &cp.note[..=split];
    assert_eq!(
        body,
        format!(
            "{ORIGIN}\n{}\n{}\ntime {}\nkey-epoch 0\n",
            cp.tree_size,
            B64.encode(cp.root),
            cp.timestamp_micros
        )
    );
    let sig_line = &cp.note[split + 2..];
    let rest = sig_line.strip_prefix("\u{2014} ").expect("em dash");
    let (name, b64) = rest.trim_end().split_once(' ').expect("name sig");
    assert_eq!(name, ORIGIN);
    let blob = B64.decode(b64).expect("b64");
    assert_eq!(blob.len(), 4 + dunes_ledger::SIGNATURE_LEN);
    let sig = Signature::<MlDsa65>::decode(
        &EncodedSignature::<MlDsa65>::try_from(&blob[4..]).expect("len"),
    )
    .expect("sig");

    let pk = fs::read(d.path().join("keys/ledger-mldsa65-0.pub")).expect("pub");
    let vk = VerifyingKey::<MlDsa65>::decode(
        &EncodedVerifyingKey::<MlDsa65>::try_from(pk.as_slice()).expect("len"),
    );
    assert!(vk.verify_with_context(body.as_bytes(), SIGNING_CONTEXT, &sig));
    // Wrong context, modified body, other key: all fail.
    assert!(!vk.verify_with_context(body.as_bytes(), b"other", &sig));
    let modified = body.replacen(
        &format!("\n{}\n", cp.tree_size),
        &format!("\n{}\n", cp.tree_size + 1),
        1,
    );
    assert_ne!(modified, body);
    assert!(!vk.verify_with_context(modified.as_bytes(), SIGNING_CONTEXT, &sig));
    let other = tempfile::tempdir().expect("tmp");
    Ledger::open(cfg(other.path()))
        .expect("open")
        .close()
        .expect("close");
    let opk = fs::read(other.path().join("keys/ledger-mldsa65-0.pub")).expect("pub");
    let ovk = VerifyingKey::<MlDsa65>::decode(
        &EncodedVerifyingKey::<MlDsa65>::try_from(opk.as_slice()).expect("len"),
    );
    assert!(!ovk.verify_with_context(body.as_bytes(), SIGNING_CONTEXT, &sig));

    // The signed root is the RFC 9162 root over the record hashes.
    let leaves = dunes_ledger::read_leaf_hashes(d.path()).expect("leaves");
    assert_eq!(leaves.root(cp.tree_size).expect("root"), cp.root);
}

#[test]
fn segment_rollover_then_verify() {
    let d = tempfile::tempdir().expect("tmp");
    let mut c = cfg(d.path());
    c.segment_max_bytes = 1500;
    let mut l = Ledger::open(c.clone()).expect("open");
    for i in 0..40u64 {
        l.append(RecordKind::Event, i as i64, &payload(i), &[])
            .expect("append");
        if i % 13 == 0 {
            l.checkpoint().expect("cp");
        }
    }
    l.close().expect("close");
    let r = verify_dir(d.path()).expect("verify");
    assert_ok(&r);
    assert_eq!(r.records, 41);
    assert!(r.segments > 5, "{r}");
    // Segment names encode their first index; a reopen continues in the last segment.
    let mut l = Ledger::open(c).expect("reopen");
    assert_eq!(
        l.append(RecordKind::Event, 0, b"more", &[])
            .expect("append"),
        41
    );
    l.close().expect("close");
    let r = verify_dir(d.path()).expect("verify");
    assert_ok(&r);
    assert_eq!(r.records, 42);

    // Corrupt a record in a later segment: the failure names it.
    let mut segs: Vec<PathBuf> = fs::read_dir(d.path().join("ledger"))
        .expect("ls")
        .map(|e| e.expect("ent").path())
        .filter(|p| p.extension().is_some_and(|e| e == "dlg"))
        .collect();
    segs.sort();
    let third = &segs[2];
    let first_index = u64::from_str_radix(
        third
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix("seg-"))
            .expect("name"),
        16,
    )
    .expect("hex");
    let fr = frames(third);
    let mut b = fs::read(third).expect("read");
    b[(fr[1].0 + fr[1].1 - 40) as usize] ^= 0x20;
    fs::write(third, &b).expect("write");
    let f = failure(d.path());
    assert_eq!(f.record_index, Some(first_index + 1), "{f}");
    assert_eq!(&f.file, third);
    // A missing segment breaks contiguity.
    b[(fr[1].0 + fr[1].1 - 40) as usize] ^= 0x20;
    fs::write(third, &b).expect("write");
    fs::remove_file(third).expect("rm");
    let f = failure(d.path());
    assert_eq!(f.record_index, Some(first_index), "{f}");
}

#[test]
fn read_latest_checkpoint_tolerates_a_concurrent_writer() {
    let d = tempfile::tempdir().expect("tmp");
    assert_eq!(read_latest_checkpoint(d.path()).expect("read"), None);
    let mut l = build(d.path(), 3);
    let cp = l.checkpoint().expect("cp");
    assert_eq!(
        read_latest_checkpoint(d.path()).expect("read").as_ref(),
        Some(&cp)
    );
    assert_eq!(
        read_latest_checkpoint(&d.path().join("ledger"))
            .expect("read")
            .as_ref(),
        Some(&cp)
    );
    // Simulate a writer half-way through appending the next entry.
    let cp_path = d.path().join("ledger").join("checkpoints.log");
    let full = fs::read(&cp_path).expect("read");
    let mut partial = full.clone();
    partial.extend_from_slice(&full[..200]);
    fs::write(&cp_path, &partial).expect("write");
    assert_eq!(
        read_latest_checkpoint(d.path()).expect("read").as_ref(),
        Some(&cp)
    );
    fs::write(&cp_path, &full).expect("restore");
    drop(l);
    // JSON for the HTTP API: root as hex, note as text.
    let v = serde_json::to_value(&cp).expect("json");
    assert_eq!(v["root"].as_str().map(str::len), Some(64));
    assert_eq!(v["tree_size"], serde_json::json!(cp.tree_size));
    assert!(v["note"].as_str().is_some_and(|n| n.starts_with(ORIGIN)));
    assert!(read_latest_checkpoint(&d.path().join("missing")).is_err());
}

#[test]
fn origin_mismatch_and_bad_origin_are_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    Ledger::open(cfg(d.path()))
        .expect("open")
        .close()
        .expect("close");
    let mut c = cfg(d.path());
    c.origin = "dunes/other".into();
    assert!(matches!(
        Ledger::open(c.clone()),
        Err(LedgerError::Config(_))
    ));
    c.origin = "has space".into();
    assert!(matches!(Ledger::open(c), Err(LedgerError::Config(_))));
}
