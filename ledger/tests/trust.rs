//! Issue #13: what an outside verifier showed `dunes verify` accepting, each reproduced as an
//! attacker would do it (with the files, and where stated with the key), and rejected.
//!
//! Helpers here forge frames and checkpoints byte by byte from `docs/ledger-format.md`, so
//! they double as a check that the document is enough to write a ledger.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use dunes_ledger::{
    EXPORT_CONTEXT, Ledger, LedgerConfig, RecordKind, SIGNING_CONTEXT, TrustedCheckpoint,
    VerifyOptions, VerifyReport, export, export_evidence, export_with, verify_dir, verify_dir_with,
    verify_path, verify_path_with,
};
use ml_dsa::{ExpandedSigningKey, MlDsa65};

const ORIGIN: &str = "dunes/trust-host";

fn cfg(dir: &Path, hybrid: bool) -> LedgerConfig {
    let mut c = LedgerConfig::new(dir, ORIGIN);
    c.checkpoint_interval = Duration::from_secs(3600);
    c.rotate_every = None;
    c.hybrid_ed25519 = hybrid;
    c
}

fn events(l: &mut Ledger, n: u64) {
    for _ in 0..n {
        let i = l.len();
        l.append(
            RecordKind::Event,
            1_700_000_000_000_000 + i as i64,
            format!("{{\"event\":{i}}}").as_bytes(),
            &[],
        )
        .expect("append");
    }
}

fn ok(r: &VerifyReport) {
    assert!(r.first_failure.is_none(), "unexpected failure:\n{r}");
}

/// The failure message; panics when verification passed.
fn rejected(r: &VerifyReport) -> String {
    match &r.first_failure {
        Some(f) => f.to_string(),
        None => panic!("accepted, but must be rejected:\n{r}"),
    }
}

fn trusted(opts_path: &Path) -> VerifyOptions {
    VerifyOptions {
        allow_unsigned_tail: false,
        trusted: vec![TrustedCheckpoint::load(opts_path).expect("trusted checkpoint")],
    }
}

fn lenient() -> VerifyOptions {
    VerifyOptions {
        allow_unsigned_tail: true,
        ..VerifyOptions::default()
    }
}

// ---- byte-level forgery helpers (docs/ledger-format.md §2) ----

/// One frame of a segment.
#[derive(Clone, Debug)]
struct Frame {
    flags: u8,
    header: Vec<u8>,
    payload: Vec<u8>,
}

impl Frame {
    fn origin_len(&self) -> usize {
        usize::from(u16::from_le_bytes([self.header[22], self.header[23]]))
    }
    fn epoch(&self) -> u32 {
        u32::from_le_bytes(self.header[2..6].try_into().expect("4"))
    }
    fn set_prev(&mut self, prev: &[u8; 32]) {
        let o = 24 + self.origin_len();
        self.header[o..o + 32].copy_from_slice(prev);
    }
    fn set_payload(&mut self, payload: &[u8]) {
        let o = 24 + self.origin_len();
        self.header[o + 32..o + 64].copy_from_slice(blake3::hash(payload).as_bytes());
        self.header[o + 64..o + 72].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        self.payload = payload.to_vec();
    }
    fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&[0]);
        h.update(&self.header);
        *h.finalize().as_bytes()
    }
    fn encode(&self) -> Vec<u8> {
        let mut out = b"DLR1".to_vec();
        out.push(self.flags);
        out.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.header);
        if self.flags & 1 == 0 {
            out.extend_from_slice(&self.payload);
        }
        out.extend_from_slice(&self.hash());
        out
    }
    /// A new frame: kind, epoch, index, origin, prev hash, payload, refs.
    fn new(
        kind: u8,
        epoch: u32,
        index: u64,
        prev: &[u8; 32],
        payload: &[u8],
        refs: &[u64],
    ) -> Self {
        let mut h = vec![1, kind];
        h.extend_from_slice(&epoch.to_le_bytes());
        h.extend_from_slice(&index.to_le_bytes());
        h.extend_from_slice(&1_700_000_000_000_000i64.to_le_bytes());
        h.extend_from_slice(&(ORIGIN.len() as u16).to_le_bytes());
        h.extend_from_slice(ORIGIN.as_bytes());
        h.extend_from_slice(prev);
        h.extend_from_slice(blake3::hash(payload).as_bytes());
        h.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        h.extend_from_slice(&(refs.len() as u32).to_le_bytes());
        for r in refs {
            h.extend_from_slice(&r.to_le_bytes());
        }
        Frame {
            flags: 0,
            header: h,
            payload: payload.to_vec(),
        }
    }
}

fn seg0(dir: &Path) -> PathBuf {
    dir.join("ledger/seg-0000000000000000.dlg")
}

fn read_frames(seg: &Path) -> Vec<Frame> {
    let b = fs::read(seg).expect("segment");
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let flags = b[p + 4];
        let hl = u32::from_le_bytes(b[p + 5..p + 9].try_into().expect("4")) as usize;
        let header = b[p + 9..p + 9 + hl].to_vec();
        let mut f = Frame {
            flags,
            header,
            payload: Vec::new(),
        };
        let o = 24 + f.origin_len();
        let pl = u64::from_le_bytes(f.header[o + 64..o + 72].try_into().expect("8")) as usize;
        let stored = if flags & 1 == 1 { 0 } else { pl };
        f.payload = b[p + 9 + hl..p + 9 + hl + stored].to_vec();
        p += 9 + hl + stored + 32;
        out.push(f);
    }
    out
}

/// Re-link the chain (prev hashes) and write the segment: what anyone with write access and
/// no key can do after editing frames.
fn write_rechained(seg: &Path, frames: &mut [Frame]) {
    let mut prev = [0u8; 32];
    let mut out = Vec::new();
    for f in frames.iter_mut() {
        f.set_prev(&prev);
        prev = f.hash();
        out.extend_from_slice(&f.encode());
    }
    fs::write(seg, out).expect("write segment");
}

fn frame_entry(note: &str) -> Vec<u8> {
    let len = (note.len() as u32).to_le_bytes();
    [b"DLCK".as_slice(), &len, note.as_bytes(), &len, b"KCLD"].concat()
}

fn notes(dir: &Path) -> Vec<String> {
    let b = fs::read(dir.join("ledger/checkpoints.log")).expect("checkpoints");
    let mut out = Vec::new();
    let mut p = 0;
    while p + 8 <= b.len() {
        let n = u32::from_le_bytes(b[p + 4..p + 8].try_into().expect("4")) as usize;
        out.push(String::from_utf8(b[p + 8..p + 8 + n].to_vec()).expect("utf8"));
        p += n + 16;
    }
    out
}

fn tree_size(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .expect("size line")
        .parse()
        .expect("size")
}

fn mldsa(dir: &Path, epoch: u32) -> ExpandedSigningKey<MlDsa65> {
    let seed = fs::read(dir.join(format!("keys/ledger-mldsa65-{epoch}.seed"))).expect("seed");
    ExpandedSigningKey::<MlDsa65>::from_seed(
        &<[u8; 32]>::try_from(seed.as_slice()).expect("32").into(),
    )
}

fn ed25519(dir: &Path, epoch: u32) -> ed25519_dalek::SigningKey {
    let seed = fs::read(dir.join(format!("keys/ledger-ed25519-{epoch}.seed"))).expect("seed");
    ed25519_dalek::SigningKey::from_bytes(&seed.as_slice().try_into().expect("32"))
}

fn sig_line(key_id: [u8; 4], sig: &[u8]) -> String {
    let mut blob = key_id.to_vec();
    blob.extend_from_slice(sig);
    format!("\u{2014} {ORIGIN} {}\n", B64.encode(blob))
}

/// A checkpoint over every record of the segments, signed with `sk` (ML-DSA only).
fn append_checkpoint(dir: &Path, epoch: u32, sk: &ExpandedSigningKey<MlDsa65>) {
    let leaves = dunes_ledger::read_leaf_hashes(dir).expect("leaves");
    let body = format!(
        "{ORIGIN}\n{}\n{}\ntime {}\nkey-epoch {epoch}\n",
        leaves.len(),
        B64.encode(leaves.root(leaves.len()).expect("root")),
        i64::MAX / 2
    );
    let sig = sk
        .sign_deterministic(body.as_bytes(), SIGNING_CONTEXT)
        .expect("sign");
    let pk = sk.verifying_key().encode();
    let note = format!(
        "{body}\n{}",
        sig_line(dunes_ledger::key_id(ORIGIN, &pk), &sig.encode())
    );
    let path = dir.join("ledger/checkpoints.log");
    let mut b = fs::read(&path).unwrap_or_default();
    b.extend_from_slice(&frame_entry(&note));
    fs::write(path, b).expect("write checkpoints");
}

/// Append a forged frame at the end of the (single) segment, chained to the last record.
fn append_frame(dir: &Path, kind: u8, epoch: u32, payload: &[u8], refs: &[u64]) -> u64 {
    let mut frames = read_frames(&seg0(dir));
    let prev = frames.last().expect("records").hash();
    let index = frames.len() as u64;
    frames.push(Frame::new(kind, epoch, index, &prev, payload, refs));
    write_rechained(&seg0(dir), &mut frames);
    index
}

/// Roll the ledger in `dir` back to its `keep`-th checkpoint: records after it and later
/// checkpoints are dropped. Internally consistent; only a trust anchor can tell.
fn roll_back(dir: &Path, notes: &[String], keep: usize) {
    let size = tree_size(&notes[keep - 1]);
    let bytes: Vec<u8> = read_frames(&seg0(dir))[..size as usize]
        .iter()
        .flat_map(Frame::encode)
        .collect();
    fs::write(seg0(dir), bytes).expect("write segment");
    let kept: Vec<u8> = notes[..keep].iter().flat_map(|n| frame_entry(n)).collect();
    fs::write(dir.join("ledger/checkpoints.log"), kept).expect("write checkpoints");
}

/// What someone holding the key can do after a rollback: write other records and sign them.
fn fork(dir: &Path, hybrid: bool, n: u64) {
    let mut l = Ledger::open(cfg(dir, hybrid)).expect("reopen after rollback");
    for i in 0..n {
        l.append(
            RecordKind::Event,
            9,
            format!("{{\"other\":{i}}}").as_bytes(),
            &[],
        )
        .expect("append");
    }
    l.close().expect("close");
}

/// Erase record `target`'s payload, re-link the chain and append a redaction record with
/// `payload` (no key needed); returns the redaction record's index.
fn erase_with_forged_redaction(dir: &Path, target: usize, payload: &[u8]) -> u64 {
    let mut frames = read_frames(&seg0(dir));
    frames[target].flags = 1;
    let epoch = frames.last().expect("last").epoch();
    write_rechained(&seg0(dir), &mut frames);
    append_frame(dir, 8, epoch, payload, &[target as u64])
}

/// A rotation from hybrid epoch `prev` to an ML-DSA-only epoch `prev + 1`, correctly signed by
/// both `prev` keys (the attacker holds the active key), then an ML-DSA-only checkpoint.
/// Returns the forged key record's index.
fn forge_downgrade(dir: &Path, prev: u32) -> u64 {
    use ed25519_dalek::Signer as _;
    let epoch = prev + 1;
    let new = ExpandedSigningKey::<MlDsa65>::from_seed(&[9u8; 32].into());
    let pk = new.verifying_key().encode().to_vec();
    let msg = dunes_ledger::rotation_message(ORIGIN, epoch, &pk, None);
    let ml = mldsa(dir, prev)
        .sign_deterministic(&msg, dunes_ledger::ROTATION_CONTEXT)
        .expect("sign");
    let ed = ed25519(dir, prev).sign(&msg);
    let payload = serde_json::json!({
        "alg": "ML-DSA-65", "epoch": epoch, "key_name": ORIGIN,
        "key_id": hex::encode(dunes_ledger::key_id(ORIGIN, &pk)),
        "public_key": B64.encode(&pk), "signing_context": "dunes-ledger-checkpoint-v1",
        "prev_signature": B64.encode(ml.encode()),
        "prev_ed25519_signature": B64.encode(ed.to_bytes()),
    });
    let at = append_frame(dir, 5, epoch, payload.to_string().as_bytes(), &[]);
    fs::write(dir.join(format!("keys/ledger-mldsa65-{epoch}.pub")), &pk).expect("pub");
    append_checkpoint(dir, epoch, &new);
    at
}

/// Replace the last checkpoint of `notes` by `last` in `dir`'s `checkpoints.log`.
fn replace_last_checkpoint(dir: &Path, notes: &[String], last: &str) {
    let mut entries: Vec<u8> = notes[..notes.len() - 1]
        .iter()
        .flat_map(|n| frame_entry(n))
        .collect();
    entries.extend_from_slice(&frame_entry(last));
    fs::write(dir.join("ledger/checkpoints.log"), entries).expect("write");
}

fn closed_ledger(dir: &Path, hybrid: bool, n: u64) {
    let mut l = Ledger::open(cfg(dir, hybrid)).expect("open");
    events(&mut l, n);
    l.checkpoint().expect("cp");
    events(&mut l, n);
    l.close().expect("close");
    ok(&verify_dir(dir).expect("verify"));
}

// ---- case 1: rewriting history without any key; rollback; fork ----

#[test]
fn case1_history_rewritten_without_a_key_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    closed_ledger(d.path(), false, 6);
    let pristine = tempfile::tempdir().expect("tmp");
    copy_dir(d.path(), pristine.path());

    // Delete checkpoints.log, edit a payload, recompute the chain.
    fs::remove_file(d.path().join("ledger/checkpoints.log")).expect("rm");
    let mut frames = read_frames(&seg0(d.path()));
    frames[3].set_payload(br#"{"event":"forged"}"#);
    write_rechained(&seg0(d.path()), &mut frames);
    let msg = rejected(&verify_dir(d.path()).expect("verify"));
    assert!(msg.contains("unsigned records: records 0..=12"), "{msg}");
    assert!(msg.contains("no signed checkpoint at all"), "{msg}");
    // Even the lenient mode must not accept a ledger with no checkpoint covering anything...
    // it reports the rewritten records as unsigned, and the writer refuses to sign them.
    let open = Ledger::open(cfg(d.path(), false));
    assert!(
        open.as_ref()
            .is_err_and(|e| e.to_string().contains("no signed checkpoint")),
        "{open:?}"
    );

    // Delete, empty or truncate checkpoints.log on the untouched ledger (rollback of the
    // signatures): every record past what is left signed is unsigned, so it fails.
    for (what, keep) in [
        ("deleted", None),
        ("emptied", Some(0usize)),
        ("truncated", Some(1)),
    ] {
        let w = tempfile::tempdir().expect("tmp");
        copy_dir(pristine.path(), w.path());
        let path = w.path().join("ledger/checkpoints.log");
        match keep {
            None => fs::remove_file(&path).expect("rm"),
            Some(k) => {
                let kept: Vec<u8> = notes(w.path())[..k]
                    .iter()
                    .flat_map(|n| frame_entry(n))
                    .collect();
                fs::write(&path, kept).expect("write");
            }
        }
        let msg = rejected(&verify_dir(w.path()).expect("verify"));
        assert!(msg.contains("unsigned records"), "{what}: {msg}");
    }
}

#[test]
fn case1_rollback_and_fork_are_caught_against_a_trusted_checkpoint() {
    let d = tempfile::tempdir().expect("tmp");
    closed_ledger(d.path(), false, 6);
    let all = notes(d.path());
    let anchor_dir = tempfile::tempdir().expect("tmp");
    let anchor = anchor_dir.path().join("published.note");
    fs::write(&anchor, all.last().expect("note")).expect("write anchor");
    let n = tree_size(all.last().expect("note"));
    ok(&verify_dir_with(d.path(), &trusted(&anchor)).expect("verify"));
    let r = verify_dir_with(d.path(), &trusted(&anchor)).expect("verify");
    assert_eq!(r.trusted_checkpoints.len(), 1);
    assert!(r.to_string().contains("is a prefix of this ledger"), "{r}");

    // Rollback: drop the last records and the checkpoint covering them. Internally
    // consistent, so only the trust anchor can tell.
    let w = tempfile::tempdir().expect("tmp");
    copy_dir(d.path(), w.path());
    roll_back(w.path(), &all, 2);
    ok(&verify_dir(w.path()).expect("verify"));
    let msg = rejected(&verify_dir_with(w.path(), &trusted(&anchor)).expect("verify"));
    assert!(msg.contains("rollback"), "{msg}");
    assert!(msg.contains(&format!("covers {n} records")), "{msg}");

    // Fork by someone holding the key: roll back, write other records, re-sign. Internally
    // valid; the published checkpoint's root no longer matches.
    fork(w.path(), false, 10);
    ok(&verify_dir(w.path()).expect("verify"));
    let msg = rejected(&verify_dir_with(w.path(), &trusted(&anchor)).expect("verify"));
    assert!(msg.contains("fork"), "{msg}");

    // Wholesale replacement: a new ledger under the same origin with a new key.
    let f = tempfile::tempdir().expect("tmp");
    closed_ledger(f.path(), false, 8);
    let msg = rejected(&verify_dir_with(f.path(), &trusted(&anchor)).expect("verify"));
    assert!(msg.contains("not signed by this ledger's key"), "{msg}");

    // The same checks through export bundles: a whole bundle, and a range after the anchor
    // carrying the anchor proof.
    let out = tempfile::tempdir().expect("tmp");
    let b = out.path().join("whole");
    export(d.path(), None, None, &b).expect("export");
    ok(&verify_path_with(&b, &trusted(&anchor)).expect("verify"));
    // A range ending exactly at the anchor's size is checked by recomputing the root.
    let late = out.path().join("late");
    export(d.path(), Some(n - 2), None, &late).expect("export");
    let r = verify_path_with(&late, &trusted(&anchor)).expect("verify");
    ok(&r);
    assert!(r.trusted_checkpoints[0].how.contains("recomputed"), "{r}");
    // A range ending before the anchor, without the anchor proof, cannot be linked to it.
    let early = out.path().join("early");
    export(d.path(), Some(2), Some(5), &early).expect("export");
    let msg = rejected(&verify_path_with(&early, &trusted(&anchor)).expect("verify"));
    assert!(msg.contains("proofs/anchor.json"), "{msg}");
    let t = TrustedCheckpoint::load(&anchor).expect("load");
    let early2 = out.path().join("early2");
    export_with(d.path(), Some(2), Some(5), &early2, Some(&t)).expect("export");
    ok(&verify_path_with(&early2, &trusted(&anchor)).expect("verify"));
    let early_anchor = anchor_dir.path().join("early.note");
    fs::write(&early_anchor, &all[1]).expect("write");
    let t = TrustedCheckpoint::load(&early_anchor).expect("load");
    let late2 = out.path().join("late2");
    export_with(d.path(), Some(n - 2), None, &late2, Some(&t)).expect("export");
    let r = verify_path_with(&late2, &trusted(&early_anchor)).expect("verify");
    ok(&r);
    assert!(
        r.trusted_checkpoints[0].how.contains("consistency proof"),
        "{r}"
    );
    // A fork's bundle fails against the anchor.
    let fb = out.path().join("fork");
    export(w.path(), None, None, &fb).expect("export");
    let msg = rejected(&verify_path_with(&fb, &trusted(&anchor)).expect("verify"));
    assert!(msg.contains("fork"), "{msg}");
}

// ---- case 2: erasure without any key ----

#[test]
fn case2_unsigned_or_replayed_redaction_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path(), true)).expect("open");
    events(&mut l, 4);
    l.checkpoint().expect("cp");
    let red = l
        .redact(2, "GDPR request 7", "dpo@example")
        .expect("redact");
    events(&mut l, 2);
    l.close().expect("close");
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!(r.redacted, vec![2]);

    // Remove a payload and add an unsigned redaction record (the old payload form), then
    // re-link the chain. Even with the unsigned tail allowed, it fails.
    for payload in [
        r#"{"reason":"cover-up"}"#.to_string(),
        r#"{"reason":"cover-up","subject":"mallory","signature":"AAAA"}"#.to_string(),
    ] {
        let w = tempfile::tempdir().expect("tmp");
        copy_dir(d.path(), w.path());
        erase_with_forged_redaction(w.path(), 3, payload.as_bytes());
        let msg = rejected(&verify_dir_with(w.path(), &lenient()).expect("verify"));
        assert!(
            msg.contains("redaction payload is not valid")
                || msg.contains("not signed by key epoch")
                || msg.contains("not canonical base64"),
            "{msg}"
        );
    }

    // Replay the genuine redaction's payload (valid signature) to erase another record: the
    // signature binds index, prev hash and refs.
    let w = tempfile::tempdir().expect("tmp");
    copy_dir(d.path(), w.path());
    let genuine = read_frames(&seg0(w.path()))[red as usize].payload.clone();
    erase_with_forged_redaction(w.path(), 4, &genuine);
    let msg = rejected(&verify_dir_with(w.path(), &lenient()).expect("verify"));
    assert!(msg.contains("not signed by key epoch"), "{msg}");
}

// ---- case 3: hybrid downgrade ----

#[test]
fn case3_hybrid_downgrade_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path(), true)).expect("open");
    events(&mut l, 3);
    l.close().expect("close");
    let at = forge_downgrade(d.path(), 0);
    let r = verify_dir(d.path()).expect("verify");
    let msg = rejected(&r);
    assert!(msg.contains("hybrid downgrade"), "{msg}");
    assert_eq!(
        r.first_failure.as_ref().and_then(|f| f.record_index),
        Some(at)
    );
}

// ---- case 4: revocation of the epoch in force without a rotation ----

#[test]
fn case4_revoking_the_epoch_in_force_without_rotation_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path(), false)).expect("open");
    events(&mut l, 3);
    l.close().expect("close");
    let at = append_frame(
        d.path(),
        9,
        0,
        br#"{"revoked_epoch":0,"reason":"stolen"}"#,
        &[],
    );
    let r = verify_dir_with(d.path(), &lenient()).expect("verify");
    let msg = rejected(&r);
    assert!(msg.contains("the epoch in force"), "{msg}");
    assert!(msg.contains("rotate first"), "{msg}");
    assert_eq!(
        r.first_failure.as_ref().and_then(|f| f.record_index),
        Some(at)
    );
    // The writer's way (rotate, then revoke) verifies.
    let g = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(g.path(), false)).expect("open");
    events(&mut l, 3);
    l.revoke_key(0, "stolen").expect("revoke");
    l.close().expect("close");
    ok(&verify_dir(g.path()).expect("verify"));
}

// ---- case 5: exports over redactions, rotations and revocations, every range ----

/// Hybrid ledger: events, a redaction whose record comes late, a rotation, a revocation,
/// checkpoints at irregular sizes, all closed.
fn eventful_ledger(dir: &Path) {
    let mut l = Ledger::open(cfg(dir, true)).expect("open");
    events(&mut l, 6); // 1..=6
    l.checkpoint().expect("cp"); // 7
    events(&mut l, 3); // 7..=9
    l.rotate_key().expect("rotate"); // key record 10, checkpoint 11
    events(&mut l, 2); // 11, 12
    l.revoke_key(0, "retired").expect("revoke"); // 13, checkpoint 14
    events(&mut l, 3); // 14..=16
    l.checkpoint().expect("cp"); // 17
    events(&mut l, 2); // 17, 18
    l.redact(5, "erasure #1", "dpo").expect("redact"); // 19
    l.redact(12, "erasure #2", "dpo").expect("redact"); // 20
    events(&mut l, 2); // 21, 22
    l.close().expect("close"); // checkpoint 23
}

#[test]
fn case5_every_export_range_verifies() {
    let d = tempfile::tempdir().expect("tmp");
    eventful_ledger(d.path());
    let r = verify_dir(d.path()).expect("verify");
    ok(&r);
    assert_eq!(r.redacted, vec![5, 12]);
    let n = r.records;
    let out = tempfile::tempdir().expect("tmp");
    let mut count = 0;
    for from in 0..n {
        for to in from..n {
            let b = out.path().join(format!("b-{from}-{to}"));
            export(d.path(), Some(from), Some(to), &b)
                .unwrap_or_else(|e| panic!("export {from}..={to}: {e}"));
            let r = verify_path(&b).expect("verify");
            assert!(r.first_failure.is_none(), "range {from}..={to}:\n{r}");
            assert_eq!((r.first_index, r.records), (from, to - from + 1));
            assert_eq!(r.unsigned_tail(), 0, "range {from}..={to}");
            fs::remove_dir_all(&b).expect("rm");
            count += 1;
        }
    }
    assert_eq!(count, n * (n + 1) / 2);
    // The issue's example: --from 3 --to 100 on a ledger where record 5 was redacted, here
    // --from 3 --to 9 (record 5's redaction record is 19).
    let b = out.path().join("issue");
    export(d.path(), Some(3), Some(9), &b).expect("export");
    let r = verify_path(&b).expect("verify");
    ok(&r);
    assert_eq!(r.redacted, vec![5]);
}

#[test]
fn export_refuses_records_no_checkpoint_covers() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path(), false)).expect("open");
    events(&mut l, 4);
    l.checkpoint().expect("cp"); // 5
    events(&mut l, 3);
    l.sync().expect("sync");
    let out = tempfile::tempdir().expect("tmp");
    let e = export(d.path(), Some(0), Some(6), &out.path().join("x")).expect_err("unsigned");
    assert!(
        e.to_string()
            .contains("covered by the latest signed checkpoint"),
        "{e}"
    );
    let s = export(d.path(), None, None, &out.path().join("y")).expect("export");
    assert_eq!(s.to, 4);
    drop(l);
}

// ---- case 6: an extra, bad signature line naming the ledger's own key ----

#[test]
fn case6_bad_extra_signature_line_with_the_ledger_key_id_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    closed_ledger(d.path(), true, 3);
    let all = notes(d.path());
    let last = all.last().expect("note").clone();
    let body_end = last.rfind("\n\n").expect("blank") + 2;
    let lines: Vec<&str> = last[body_end..].lines().collect();
    let pk = fs::read(d.path().join("keys/ledger-mldsa65-0.pub")).expect("pub");
    let edpk = fs::read(d.path().join("keys/ledger-ed25519-0.pub")).expect("pub");
    let bad_ml = sig_line(dunes_ledger::key_id(ORIGIN, &pk), &[7u8; 3309]);
    let bad_ed = sig_line(dunes_ledger::ed25519_key_id(ORIGIN, &edpk), &[7u8; 64]);
    let other_epoch = sig_line([1, 2, 3, 4], &[7u8; 64]);
    let witness = format!("\u{2014} witness.example/w1 {}\n", B64.encode([5u8; 68]));
    for (what, extra, accept) in [
        ("bad ML-DSA line after the good ones", bad_ml.clone(), false),
        ("bad Ed25519 line after the good ones", bad_ed, false),
        ("unknown key id under the ledger's name", other_epoch, false),
        ("repeated good line", format!("{}\n", lines[0]), false),
        ("a witness cosignature (other key name)", witness, true),
    ] {
        let w = tempfile::tempdir().expect("tmp");
        copy_dir(d.path(), w.path());
        replace_last_checkpoint(w.path(), &all, &format!("{last}{extra}"));
        let r = verify_dir(w.path()).expect("verify");
        if accept {
            ok(&r);
        } else {
            let msg = rejected(&r);
            assert!(msg.contains("checkpoint #"), "{what}: {msg}");
        }
    }
    // The bad line first, the good ones after: also rejected.
    let w = tempfile::tempdir().expect("tmp");
    copy_dir(d.path(), w.path());
    let reordered = format!("{}{bad_ml}{}", &last[..body_end], &last[body_end..]);
    replace_last_checkpoint(w.path(), &all, &reordered);
    let msg = rejected(&verify_dir(w.path()).expect("verify"));
    assert!(msg.contains("does not verify"), "{msg}");
}

// ---- case 7: a re-signed bundle whose history omits an in-range revocation ----

fn resign_manifest(bundle: &Path, keys_from: &Path, epoch: u32, hybrid: bool) {
    use sha2::{Digest, Sha256};
    let text = fs::read_to_string(bundle.join("MANIFEST")).expect("manifest");
    let head: Vec<&str> = text.lines().take(5).collect();
    let mut body = head.join("\n");
    body.push('\n');
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut stack = vec![bundle.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("readdir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(bundle)
                    .expect("rel")
                    .to_string_lossy()
                    .into_owned();
                if rel != "MANIFEST" {
                    files.push((rel, fs::read(&p).expect("read")));
                }
            }
        }
    }
    files.sort();
    for (name, bytes) in &files {
        body.push_str(&format!(
            "file {} {} {name}\n",
            hex::encode(Sha256::digest(bytes)),
            bytes.len()
        ));
    }
    let sk = mldsa(keys_from, epoch);
    let sig = sk
        .sign_deterministic(body.as_bytes(), EXPORT_CONTEXT)
        .expect("sign");
    let pk = sk.verifying_key().encode();
    let mut note = format!(
        "{body}\n{}",
        sig_line(dunes_ledger::key_id(ORIGIN, &pk), &sig.encode())
    );
    if hybrid {
        use ed25519_dalek::Signer as _;
        let ek = ed25519(keys_from, epoch);
        let s = ek.sign(body.as_bytes());
        note.push_str(&sig_line(
            dunes_ledger::ed25519_key_id(ORIGIN, ek.verifying_key().as_bytes()),
            &s.to_bytes(),
        ));
    }
    fs::write(bundle.join("MANIFEST"), note).expect("write manifest");
}

/// Edit a bundle's `history.json` and re-sign its manifest with the ledger's key in
/// `keys_from` (epoch 1, hybrid): what the party producing the export can do.
fn edit_history_and_resign(
    bundle: &Path,
    keys_from: &Path,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let hist = bundle.join("history.json");
    let mut h: serde_json::Value =
        serde_json::from_slice(&fs::read(&hist).expect("read")).expect("json");
    edit(&mut h);
    fs::write(&hist, serde_json::to_vec_pretty(&h).expect("json")).expect("write");
    resign_manifest(bundle, keys_from, 1, true);
}

#[test]
fn case7_history_omitting_an_in_range_revocation_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    eventful_ledger(d.path());
    let out = tempfile::tempdir().expect("tmp");
    let b = out.path().join("b");
    export(d.path(), Some(8), Some(18), &b).expect("export");
    ok(&verify_path(&b).expect("verify"));
    // Re-signing without a change verifies (the helper is right)...
    resign_manifest(&b, d.path(), 1, true);
    ok(&verify_path(&b).expect("verify"));
    // ...and omitting the revocation (record 13) from history.json does not.
    edit_history_and_resign(&b, d.path(), |h| h["revocations"] = serde_json::json!([]));
    let msg = rejected(&verify_path(&b).expect("verify"));
    assert!(msg.contains("revocations inside the range"), "{msg}");
    // Dropping an in-range key record from the history is caught the same way.
    let b2 = out.path().join("b2");
    export(d.path(), Some(8), Some(18), &b2).expect("export");
    edit_history_and_resign(&b2, d.path(), |h| {
        let keys = h["keys"].as_array().expect("keys").clone();
        assert_eq!(keys.len(), 2);
        h["keys"] = serde_json::json!([keys[0].clone()]);
    });
    let msg = rejected(&verify_path(&b2).expect("verify"));
    assert!(msg.contains("key"), "{msg}");
}

// ---- every single-byte flip of a small bundle ----

#[test]
fn every_single_byte_flip_of_a_small_bundle_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    let mut l = Ledger::open(cfg(d.path(), false)).expect("open");
    events(&mut l, 2);
    l.checkpoint().expect("cp");
    l.redact(1, "erasure", "dpo").expect("redact");
    events(&mut l, 1);
    l.close().expect("close");
    let out = tempfile::tempdir().expect("tmp");
    let b = out.path().join("bundle");
    export(d.path(), Some(1), None, &b).expect("export");
    ok(&verify_path(&b).expect("verify"));
    let mut files = Vec::new();
    let mut stack = vec![b.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("readdir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let mut flips = 0u64;
    for f in &files {
        let orig = fs::read(f).expect("read");
        for p in 0..orig.len() {
            let mut m = orig.clone();
            m[p] ^= 0x01;
            fs::write(f, &m).expect("write");
            let caught = match verify_path(&b) {
                Ok(r) => r.first_failure.is_some(),
                Err(_) => true,
            };
            assert!(caught, "flip of byte {p} of {} accepted", f.display());
            flips += 1;
        }
        fs::write(f, &orig).expect("restore");
    }
    eprintln!(
        "{flips} single-byte flips over {} files, all rejected",
        files.len()
    );
    assert!(flips > 10_000);
    ok(&verify_path(&b).expect("verify"));
}

/// A hybrid ledger pruned by retention: (P, a checkpoint note before P, the latest note).
fn pruned_ledger(dir: &Path) -> (u64, String, String) {
    let mut c = cfg(dir, true);
    c.segment_max_bytes = 2048;
    let mut l = Ledger::open(c).expect("open");
    events(&mut l, 5);
    let early = l.checkpoint().expect("cp").note;
    events(&mut l, 10);
    l.rotate_key().expect("rotate");
    events(&mut l, 10);
    l.revoke_key(0, "retired").expect("revoke");
    events(&mut l, 30);
    l.checkpoint().expect("cp");
    // Segments written so far look two years old (the writer prunes by write time).
    dunes_ledger::backdate_segments(dir, Duration::from_secs(2 * 365 * 24 * 3600))
        .expect("backdate");
    events(&mut l, 10);
    let cutoff = std::time::SystemTime::now() - Duration::from_secs(365 * 24 * 3600);
    let cutoff = cutoff
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let s = l.prune(cutoff).expect("prune").expect("pruned");
    assert!(
        s.pruned > 40,
        "the rotation and the revocation are pruned: {s:?}"
    );
    events(&mut l, 4);
    let late = l.checkpoint().expect("cp").note;
    l.close().expect("close");
    ok(&verify_dir(dir).expect("verify"));
    (s.pruned, early, late)
}

fn copy_dir(from: &Path, to: &Path) {
    let mut stack = vec![from.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            let dst = to.join(p.strip_prefix(from).expect("rel"));
            if p.is_dir() {
                fs::create_dir_all(&dst).expect("mkdir");
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "LOCK") {
                fs::copy(&p, &dst).expect("copy");
            }
        }
    }
}

// ---- test vectors for independent verifiers (docs/ledger-format.md §8) ----

#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Verdict {
    name: String,
    path: String,
    kind: String,
    allow_unsigned_tail: bool,
    trusted_checkpoint: Option<String>,
    verdict: String,
    reason: String,
    record: Option<u64>,
}

fn strip_private(dir: &Path) {
    let keys = dir.join("keys");
    if let Ok(rd) = fs::read_dir(&keys) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "seed") {
                fs::remove_file(e.path()).expect("rm seed");
            }
        }
    }
    let _ = fs::remove_file(dir.join("ledger/LOCK"));
}

/// Build every vector under `root`; returns the verdicts (paths relative to `root`).
fn build_vectors(root: &Path) -> Vec<Verdict> {
    let mut v = Vec::new();
    let mut add = |name: &str,
                   kind: &str,
                   tail: bool,
                   trusted: Option<&str>,
                   ok: bool,
                   reason: &str,
                   record: Option<u64>| {
        v.push(Verdict {
            name: format!("{name}{}", if tail { " (allow unsigned tail)" } else { "" }),
            path: name.to_string(),
            kind: kind.into(),
            allow_unsigned_tail: tail,
            trusted_checkpoint: trusted.map(str::to_string),
            verdict: if ok { "accept" } else { "reject" }.into(),
            reason: reason.into(),
            record,
        });
    };
    let base = root.join("work-base");
    eventful_ledger(&base); // hybrid, rotation, revocation, redactions; 24 records
    fs::create_dir_all(root.join("anchors")).expect("mkdir");
    let all = notes(&base);
    fs::write(root.join("anchors/latest.note"), all.last().expect("note")).expect("w");

    let valid = root.join("valid-dir");
    copy_dir(&base, &valid);
    add(
        "valid-dir",
        "data-dir",
        false,
        None,
        true,
        "intact ledger: hybrid, rotation, revocation, two redactions",
        None,
    );
    add(
        "valid-dir",
        "data-dir",
        false,
        Some("anchors/latest.note"),
        true,
        "extends the trusted checkpoint",
        None,
    );
    export(&base, Some(3), Some(9), &root.join("valid-bundle-3-9")).expect("export");
    add(
        "valid-bundle-3-9",
        "bundle",
        false,
        None,
        true,
        "range over a redacted record whose redaction record is after the range; tail proof",
        None,
    );
    export(&base, None, None, &root.join("valid-bundle-all")).expect("export");
    add(
        "valid-bundle-all",
        "bundle",
        false,
        Some("anchors/latest.note"),
        true,
        "whole ledger, trusted checkpoint inside",
        None,
    );

    // Evidence bundles (§6.1): two redacted records (their redactions come along), two
    // events; proved against the last checkpoint, which is the published anchor.
    let chosen: std::collections::BTreeSet<u64> = [5, 12, 16, 21].into();
    let ev = root.join("valid-evidence");
    export_evidence(&base, &chosen, &ev).expect("evidence");
    add(
        "valid-evidence",
        "evidence",
        false,
        Some("anchors/latest.note"),
        true,
        "chosen records with inclusion proofs, key records, the revocation, the redactions of the chosen records",
        None,
    );
    fs::write(root.join("anchors/first.note"), &all[0]).expect("w");
    add(
        "valid-evidence",
        "evidence",
        false,
        Some("anchors/first.note"),
        false,
        "a trusted checkpoint of another tree size cannot be linked to an evidence bundle",
        None,
    );
    let foreign_dir = root.join("work-foreign");
    eventful_ledger(&foreign_dir); // same shape and origin, its own keys
    export_evidence(&foreign_dir, &chosen, &root.join("evidence-foreign-key")).expect("evidence");
    let _ = fs::remove_dir_all(&foreign_dir);
    add(
        "evidence-foreign-key",
        "evidence",
        false,
        Some("anchors/latest.note"),
        false,
        "a consistent bundle from another ledger (another key): the trusted checkpoint does not verify with its key",
        None,
    );
    let t = root.join("evidence-edited-record");
    copy_dir(&ev, &t);
    let mut rec = fs::read(t.join("records.dlr")).expect("read");
    let last = rec.len() - 40; // inside the last frame's payload
    rec[last] ^= 0x20;
    fs::write(t.join("records.dlr"), &rec).expect("w");
    let manifest = fs::read_to_string(t.join("MANIFEST")).expect("manifest");
    let fixed: String = manifest
        .lines()
        .map(|l| {
            if l.ends_with(" records.dlr") {
                use sha2::Digest as _;
                format!(
                    "file {} {} records.dlr\n",
                    hex::encode(sha2::Sha256::digest(&rec)),
                    rec.len()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(t.join("MANIFEST"), fixed).expect("w");
    add(
        "evidence-edited-record",
        "evidence",
        false,
        None,
        false,
        "a payload byte edited and the manifest digest line updated: the payload hash and the manifest signature fail",
        None,
    );

    // Unsigned tail: records appended after the last checkpoint.
    let t = root.join("unsigned-tail");
    copy_dir(&base, &t);
    let i = append_frame(&t, 1, 1, br#"{"event":"late"}"#, &[]);
    add(
        "unsigned-tail",
        "data-dir",
        false,
        None,
        false,
        "a record no checkpoint covers",
        Some(i),
    );
    add(
        "unsigned-tail",
        "data-dir",
        true,
        None,
        true,
        "same, unsigned tail explicitly accepted",
        None,
    );

    // History rewritten without a key: checkpoints.log deleted, a payload edited, re-chained.
    let f = root.join("rewritten-no-checkpoints");
    copy_dir(&base, &f);
    fs::remove_file(f.join("ledger/checkpoints.log")).expect("rm");
    let mut frames = read_frames(&seg0(&f));
    frames[3].set_payload(br#"{"event":"forged"}"#);
    write_rechained(&seg0(&f), &mut frames);
    add(
        "rewritten-no-checkpoints",
        "data-dir",
        false,
        None,
        false,
        "no checkpoint: every record unsigned (re-chaining also breaks the redaction signatures, which bind prev_hash)",
        None,
    );

    // Rollback to an earlier signed state (of a plain ledger with its own anchor).
    let plain = root.join("work-plain");
    closed_ledger(&plain, true, 6);
    let pn = notes(&plain);
    fs::write(
        root.join("anchors/plain-latest.note"),
        pn.last().expect("note"),
    )
    .expect("w");
    let r = root.join("rollback");
    copy_dir(&plain, &r);
    roll_back(&r, &pn, 2);
    add(
        "rollback",
        "data-dir",
        false,
        None,
        true,
        "internally consistent: only a trust anchor catches a rollback",
        None,
    );
    add(
        "rollback",
        "data-dir",
        false,
        Some("anchors/plain-latest.note"),
        false,
        "rollback: fewer records than the trusted checkpoint",
        None,
    );

    // Fork by the key holder: roll back, append other records, re-sign.
    let k = root.join("fork");
    copy_dir(&r, &k);
    copy_dir(&plain.join("keys"), &k.join("keys"));
    fork(&k, true, 12);
    add(
        "fork",
        "data-dir",
        false,
        Some("anchors/plain-latest.note"),
        false,
        "fork: root at the trusted size differs",
        None,
    );
    fs::remove_dir_all(&plain).expect("rm plain");

    // Unsigned redaction appended after erasing a payload.
    let u = root.join("unsigned-redaction");
    copy_dir(&base, &u);
    erase_with_forged_redaction(&u, 2, br#"{"reason":"cover-up"}"#);
    add(
        "unsigned-redaction",
        "data-dir",
        true,
        None,
        false,
        "payload erased and an unsigned redaction record appended, chain re-linked",
        None,
    );

    // Hybrid downgrade.
    let h = root.join("hybrid-downgrade");
    copy_dir(&base, &h);
    let i = forge_downgrade(&h, 1);
    add(
        "hybrid-downgrade",
        "data-dir",
        false,
        None,
        false,
        "rotation from a hybrid epoch to an ML-DSA-only one",
        Some(i),
    );

    // Revocation of the epoch in force without a rotation.
    let q = root.join("revoke-in-force");
    copy_dir(&base, &q);
    let i = append_frame(&q, 9, 1, br#"{"revoked_epoch":1,"reason":"stolen"}"#, &[]);
    add(
        "revoke-in-force",
        "data-dir",
        true,
        None,
        false,
        "revocation of the epoch in force with no rotation before it",
        Some(i),
    );

    // Extra signature line naming the ledger's key id with a bad signature.
    let x = root.join("bad-extra-signature-line");
    copy_dir(&base, &x);
    let last = all.last().expect("note").clone();
    let pk1 = fs::read(x.join("keys/ledger-mldsa65-1.pub")).expect("pub");
    let bad = sig_line(dunes_ledger::key_id(ORIGIN, &pk1), &[7u8; 3309]);
    replace_last_checkpoint(&x, &all, &format!("{last}{bad}"));
    add(
        "bad-extra-signature-line",
        "data-dir",
        false,
        None,
        false,
        "an extra signature line with the ledger's key id does not verify",
        None,
    );

    // Re-signed bundle whose history omits the in-range revocation (record 13).
    let b = root.join("bundle-history-omits-revocation");
    export(&base, Some(8), Some(18), &b).expect("export");
    edit_history_and_resign(&b, &base, |h| h["revocations"] = serde_json::json!([]));
    add(
        "bundle-history-omits-revocation",
        "bundle",
        false,
        None,
        false,
        "history.json omits a revocation inside the range (manifest re-signed)",
        None,
    );

    // Retention (§2.10): a hybrid ledger with a rotation and a revocation inside the pruned
    // range, pruned behind a signed tombstone.
    let pr = root.join("valid-pruned-dir");
    let (pruned, early, late) = pruned_ledger(&pr);
    fs::write(root.join("anchors/pruned-early.note"), &early).expect("w");
    fs::write(root.join("anchors/pruned-latest.note"), &late).expect("w");
    add(
        "valid-pruned-dir",
        "data-dir",
        false,
        Some("anchors/pruned-latest.note"),
        true,
        "records 0..P-1 pruned; tombstone (key history with a rotation and a revocation, frontier, prev_hash) signed; trusted checkpoint after P",
        None,
    );
    add(
        "valid-pruned-dir",
        "data-dir",
        false,
        Some("anchors/pruned-early.note"),
        false,
        "a trusted checkpoint inside the pruned range cannot be checked any more",
        None,
    );
    export(
        &pr,
        Some(pruned + 1),
        None,
        &root.join("valid-pruned-bundle"),
    )
    .expect("export");
    add(
        "valid-pruned-bundle",
        "bundle",
        false,
        None,
        true,
        "range export of a pruned ledger: history.json keys and revocations before P from the tombstone",
        None,
    );
    let chosen: std::collections::BTreeSet<u64> = [pruned + 1, pruned + 3].into();
    export_evidence(&pr, &chosen, &root.join("valid-pruned-evidence")).expect("evidence");
    add(
        "valid-pruned-evidence",
        "evidence",
        false,
        Some("anchors/pruned-latest.note"),
        true,
        "evidence bundle of a pruned ledger: carries the tombstone for the key history before P",
        None,
    );
    let t = root.join("pruned-tombstone-missing");
    copy_dir(&pr, &t);
    fs::remove_file(t.join("ledger/tombstone.note")).expect("rm");
    add(
        "pruned-tombstone-missing",
        "data-dir",
        false,
        None,
        false,
        "segments start at P, but there is no tombstone: records 0..P-1 are missing",
        Some(0),
    );
    let t = root.join("pruned-tombstone-edited");
    copy_dir(&pr, &t);
    let name = dunes_ledger::tombstone_file_name(pruned);
    let json = fs::read_to_string(t.join("ledger").join(&name)).expect("json");
    let mut j: serde_json::Value = serde_json::from_str(&json).expect("json");
    j["revocations"] = serde_json::json!([]);
    let edited = serde_json::to_vec(&j).expect("json");
    fs::write(t.join("ledger").join(&name), &edited).expect("w");
    let note = fs::read_to_string(t.join("ledger/tombstone.note")).expect("note");
    let fixed: String = note
        .lines()
        .map(|l| {
            if l.starts_with("file ") {
                use sha2::Digest as _;
                format!(
                    "file {} {} {name}\n",
                    hex::encode(sha2::Sha256::digest(&edited)),
                    edited.len()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(t.join("ledger/tombstone.note"), fixed).expect("w");
    add(
        "pruned-tombstone-edited",
        "data-dir",
        false,
        None,
        false,
        "the tombstone's revocation dropped and its manifest digest updated without the key: the tombstone signature fails",
        None,
    );

    fs::remove_dir_all(&base).expect("rm base");
    for d in fs::read_dir(root).expect("readdir").flatten() {
        strip_private(&d.path());
    }
    v
}

fn check_vectors(root: &Path, verdicts: &[Verdict]) {
    for v in verdicts {
        let opts = VerifyOptions {
            allow_unsigned_tail: v.allow_unsigned_tail,
            trusted: v
                .trusted_checkpoint
                .iter()
                .map(|p| TrustedCheckpoint::load(&root.join(p)).expect("trusted"))
                .collect(),
        };
        let r = verify_path_with(&root.join(&v.path), &opts).expect("verify");
        assert_eq!(
            r.source == "export bundle",
            v.kind == "bundle",
            "{}",
            v.name
        );
        assert_eq!(
            r.source == "evidence bundle",
            v.kind == "evidence",
            "{}",
            v.name
        );
        match v.verdict.as_str() {
            "accept" => assert!(
                r.first_failure.is_none(),
                "{}: must be accepted:\n{r}",
                v.name
            ),
            _ => {
                let f = r
                    .first_failure
                    .as_ref()
                    .unwrap_or_else(|| panic!("{}: must be rejected ({}):\n{r}", v.name, v.reason));
                if let Some(i) = v.record {
                    assert_eq!(f.record_index, Some(i), "{}: {f}", v.name);
                }
            }
        }
    }
}

#[test]
fn generated_vectors_have_their_verdicts() {
    let d = tempfile::tempdir().expect("tmp");
    let v = build_vectors(d.path());
    assert!(v.len() >= 14);
    check_vectors(d.path(), &v);
}

/// The committed vectors: under the package dir cargo runs the test in
/// (read at run time, so a test binary reused from a checkout elsewhere, as
/// a shared target dir allows, still reads this checkout's), else the one
/// it was built in.
fn vectors_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
        .join("tests/vectors")
}

#[test]
fn committed_vectors_have_their_verdicts() {
    let root = vectors_dir();
    let v: Vec<Verdict> =
        serde_json::from_slice(&fs::read(root.join("verdicts.json")).expect("verdicts.json"))
            .expect("verdicts");
    assert!(v.len() >= 14);
    check_vectors(&root, &v);
}

/// `DUNES_WRITE_VECTORS=1 cargo test -p dunes-ledger --test trust -- --ignored write_vectors`
#[test]
#[ignore]
fn write_vectors() {
    if std::env::var_os("DUNES_WRITE_VECTORS").is_none() {
        return;
    }
    let root = vectors_dir();
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("mkdir");
    let v = build_vectors(&root);
    fs::write(
        root.join("verdicts.json"),
        serde_json::to_vec_pretty(&v).expect("json"),
    )
    .expect("write");
    check_vectors(&root, &v);
}
