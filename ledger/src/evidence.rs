//! Evidence bundles: chosen records of a ledger (an incident's events, the incident, its
//! responses and analyst actions), each with an RFC 9162 inclusion proof to one signed
//! checkpoint, so a regulator can check them offline without receiving the rest of the log.
//!
//! Layout (`docs/ledger-format.md` §6.1):
//!
//! ```text
//! <out>/MANIFEST                signed list of every other file with its SHA-256
//! <out>/checkpoint.note         the signed checkpoint (tree size N) the proofs lead to
//! <out>/records.dlr             the records' frames, ascending index, copied verbatim
//! <out>/proofs/inclusion.json   one inclusion proof per frame, same order
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, ParsedNote};
use crate::error::{IoContext, LedgerError, VerifyFailure};
use crate::export::{
    MANIFEST_FILE, check_manifest_files, checkpoint_entries, ensure_empty_output, manifest_number,
    parse_signed_manifest, sign_manifest, walk_checked, write_bundle,
};
use crate::keys::{self, EVIDENCE_CONTEXT, EpochKeys, KeyRecordPayload};
use crate::merkle::{self, Hash, LeafSet};
use crate::record::{FrameError, FrameReader, RecordKind};
use crate::segment::{RevocationPayload, check_redaction};
use crate::verify::{TrustedResult, VerifyOptions, VerifyReport};

/// First line of an evidence bundle's manifest.
pub const EVIDENCE_MAGIC: &str = "dunes-ledger-evidence-v1";
const CHECKPOINT_NOTE: &str = "checkpoint.note";
const RECORDS_FILE: &str = "records.dlr";
const INCLUSION_FILE: &str = "proofs/inclusion.json";

/// One entry of `proofs/inclusion.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionEntry {
    /// The record's index.
    pub index: u64,
    /// RFC 9162 `PATH(index, D[N])`, leaf to root, lowercase hex.
    pub proof: Vec<String>,
}

/// What [`export_evidence`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EvidenceSummary {
    pub out: PathBuf,
    /// Size of the signed tree the proofs lead to.
    pub tree_size: u64,
    /// The records asked for.
    pub requested: Vec<u64>,
    /// Every record in the bundle: the requested ones, every `key` and `revocation` record
    /// below the tree size, and the `redaction` records that refer to a requested record.
    pub records: Vec<u64>,
    /// Root of that tree (lowercase hex), as the checkpoint signs it.
    pub root: String,
    /// Key epoch of the checkpoint, which also signs the manifest.
    pub key_epoch: u32,
}

fn invalid(r: impl Into<String>) -> LedgerError {
    LedgerError::InvalidInput(r.into())
}

/// Writes an evidence bundle of the records `indexes` of the data dir `data_dir` into `out`
/// (which must not exist or be empty), proved against the latest signed checkpoint and
/// signed with that checkpoint's key. Read-only on the data dir; safe next to a writer.
/// Every requested record must be covered by that checkpoint.
pub fn export_evidence(
    data_dir: &Path,
    indexes: &BTreeSet<u64>,
    out: &Path,
) -> Result<EvidenceSummary, LedgerError> {
    let ledger_dir = data_dir.join("ledger");
    ensure_empty_output(out)?;
    if indexes.is_empty() {
        return Err(invalid(
            "no record asked for: an evidence bundle needs at least one",
        ));
    }
    let (cp_path, mut entries) = checkpoint_entries(&ledger_dir)?;
    let Some((offset, note_text)) = entries.pop() else {
        return Err(invalid("the ledger has no signed checkpoint yet"));
    };
    let note = checkpoint::parse_note(&note_text)
        .map_err(|r| LedgerError::corrupt(VerifyFailure::new(None, &cp_path, Some(offset), r)))?;
    let n = note.checkpoint.tree_size;
    if let Some(i) = indexes.iter().find(|i| **i >= n) {
        return Err(invalid(format!(
            "record {i} is not covered by the latest signed checkpoint (it covers {n} records); retry after the writer's next checkpoint"
        )));
    }

    let tomb = crate::retention::load(&ledger_dir)?;
    let pruned = tomb.as_ref().map_or(0, crate::retention::Loaded::pruned);
    if let Some(i) = indexes.iter().find(|i| **i < pruned) {
        return Err(invalid(format!(
            "record {i} was pruned by retention (records 0..{} are gone)",
            pruned - 1
        )));
    }
    let mut leaves: Vec<Hash> = Vec::new();
    let mut frames: Vec<u8> = Vec::new();
    let mut records = Vec::new();
    let mut redacted = Vec::new();
    let mut authorised = BTreeSet::new();
    let mut late_redactions = Vec::new();
    let chain = walk_checked(&ledger_dir, tomb.as_ref(), |_, index, _, f, raw| {
        let kind = f.header.kind();
        let touches = || f.header.refs().any(|r| indexes.contains(&r));
        let take = index < n
            && (indexes.contains(&index)
                || matches!(kind, RecordKind::Key | RecordKind::Revocation)
                || (kind == RecordKind::Redaction && touches()));
        if take {
            frames.extend_from_slice(raw);
            records.push(index);
            if f.redacted {
                redacted.push(index);
            }
            if kind == RecordKind::Redaction {
                authorised.extend(f.header.refs());
            }
        } else if kind == RecordKind::Redaction && touches() {
            late_redactions.push(index);
        }
        if index < n {
            leaves.push(f.record_hash);
        }
    })?;
    let leaves = LeafSet::pruned(
        tomb.as_ref()
            .map_or_else(merkle::Frontier::new, |t| t.frontier.clone()),
        leaves,
    );
    if leaves.len() < n {
        return Err(LedgerError::corrupt(VerifyFailure::new(
            None,
            &cp_path,
            None,
            format!(
                "the latest checkpoint covers {n} records, but only {} are present",
                leaves.len()
            ),
        )));
    }
    if let Some(i) = redacted.iter().find(|i| !authorised.contains(i)) {
        return Err(invalid(format!(
            "record {i} was redacted by record {}, which the latest checkpoint does not cover yet; retry after the writer's next checkpoint",
            late_redactions.first().map_or("?".into(), u64::to_string)
        )));
    }
    let origin = note.checkpoint.origin.clone();
    let epoch = note.checkpoint.key_epoch;
    let known = chain
        .keys
        .get(&epoch)
        .ok_or_else(|| LedgerError::Key(format!("key epoch {epoch} is not in the log")))?;
    checkpoint::verify_note_signatures(&note, &origin, &known.keys)
        .map_err(|r| LedgerError::corrupt(VerifyFailure::new(None, &cp_path, Some(offset), r)))?;
    if leaves.root(n) != Some(note.checkpoint.root) {
        return Err(LedgerError::corrupt(VerifyFailure::new(
            None,
            &cp_path,
            Some(offset),
            "the latest checkpoint's root does not match the records",
        )));
    }
    let signer = keys::load_signer(&data_dir.join("keys"), epoch).map_err(|e| {
        LedgerError::Key(format!(
            "{e} (the latest checkpoint is signed by key epoch {epoch}; after a rotation, retry once the new key has signed a checkpoint)"
        ))
    })?;
    if signer.public_key != known.keys.public_key {
        return Err(LedgerError::Key(format!(
            "the signing key of epoch {epoch} does not match the log"
        )));
    }

    let proofs = records
        .iter()
        .map(|i| {
            leaves
                .inclusion_proof(*i, n)
                .map(|p| InclusionEntry {
                    index: *i,
                    proof: p.iter().map(hex::encode).collect(),
                })
                .ok_or_else(|| invalid(format!("no inclusion proof for record {i}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(CHECKPOINT_NOTE.into(), note_text.into_bytes());
    files.insert(RECORDS_FILE.into(), frames);
    if let Some(t) = &tomb {
        // The tombstone travels with the bundle: it carries the key history before `pruned`.
        for name in [
            crate::retention::TOMBSTONE_NOTE.to_string(),
            crate::retention::tombstone_file_name(t.pruned()),
        ] {
            let p = ledger_dir.join(&name);
            files.insert(name, fs::read(&p).at(&p)?);
        }
    }
    files.insert(
        INCLUSION_FILE.into(),
        serde_json::to_vec_pretty(&proofs).map_err(|e| invalid(e.to_string()))?,
    );
    let head = format!(
        "{EVIDENCE_MAGIC}\norigin {origin}\ntree-size {n}\nkey-epoch {epoch}\ncreated {}\n",
        chrono::Utc::now().timestamp_micros()
    );
    let manifest = sign_manifest(&head, &files, &origin, &signer, EVIDENCE_CONTEXT)?;
    write_bundle(out, &files, &manifest)?;
    Ok(EvidenceSummary {
        out: out.to_path_buf(),
        tree_size: n,
        requested: indexes.iter().copied().collect(),
        records,
        root: hex::encode(note.checkpoint.root),
        key_epoch: epoch,
    })
}

/// Whether `dir` holds an evidence bundle (its manifest starts with [`EVIDENCE_MAGIC`]).
pub(crate) fn is_evidence_bundle(dir: &Path) -> bool {
    fs::read(dir.join(MANIFEST_FILE))
        .map(|b| b.starts_with(format!("{EVIDENCE_MAGIC}\n").as_bytes()))
        .unwrap_or(false)
}

/// Verifies an evidence bundle offline (`docs/ledger-format.md` §6.1). Trusted checkpoints
/// must have the bundle's tree size (their root is then compared); any other size fails.
pub fn verify_evidence(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, LedgerError> {
    let mut report = VerifyReport::empty("evidence bundle");
    if let Err((file, index, reason)) = check_evidence(dir, opts, &mut report)? {
        report.first_failure = Some(VerifyFailure::new(index, &file, None, reason));
    }
    Ok(report)
}

type Failure = (PathBuf, Option<u64>, String);

fn check_evidence(
    dir: &Path,
    opts: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<Result<(), Failure>, LedgerError> {
    let at = |name: &str| dir.join(name);
    let fail = |name: &str, index: Option<u64>, r: String| Err((dir.join(name), index, r));

    // 1. The manifest and every file's digest.
    let text = match fs::read(at(MANIFEST_FILE)) {
        Ok(t) => t,
        Err(e) => {
            return Ok(fail(
                MANIFEST_FILE,
                None,
                format!("signed manifest missing or unreadable: {e}"),
            ));
        }
    };
    let manifest = match std::str::from_utf8(&text)
        .map_err(|_| "manifest is not UTF-8".to_string())
        .and_then(|t| parse_signed_manifest(t, EVIDENCE_MAGIC, "tree-size"))
    {
        Ok(m) => m,
        Err(r) => return Ok(fail(MANIFEST_FILE, None, r)),
    };
    report.origin = manifest.origin.clone();
    let origin = manifest.origin.as_str();
    match check_manifest_files(dir, &manifest.files)? {
        Ok(n) => report.manifest_files = n,
        Err((path, r)) => return Ok(Err((path, None, r))),
    }
    for name in [CHECKPOINT_NOTE, RECORDS_FILE, INCLUSION_FILE] {
        if !manifest.files.contains_key(name) {
            return Ok(fail(name, None, "required file is missing".into()));
        }
    }

    // 2. The checkpoint matches the manifest.
    let note: ParsedNote = match fs::read_to_string(at(CHECKPOINT_NOTE))
        .map_err(|e| e.to_string())
        .and_then(|t| checkpoint::parse_note(&t))
    {
        Ok(n) => n,
        Err(r) => return Ok(fail(CHECKPOINT_NOTE, None, r)),
    };
    let cp = note.checkpoint.clone();
    let n = cp.tree_size;
    if cp.origin != origin
        || manifest_number(&manifest.scope).ok() != Some(n)
        || cp.key_epoch != manifest.key_epoch
    {
        return Ok(fail(
            CHECKPOINT_NOTE,
            None,
            format!(
                "checkpoint (origin {:?}, tree size {n}, key epoch {}) does not match the manifest (origin {origin:?}, tree-size {}, key-epoch {})",
                cp.origin, cp.key_epoch, manifest.scope, manifest.key_epoch
            ),
        ));
    }
    report.signed_records = n;

    // 2b. A pruned ledger's signed tombstone stands for its key history and revocations
    // before the first kept record (§2.10); its signature is checked in step 4.
    let tomb = if manifest
        .files
        .contains_key(crate::retention::TOMBSTONE_NOTE)
    {
        match crate::retention::load(dir) {
            Ok(t) => t,
            Err(LedgerError::Corrupt { failure }) => {
                return Ok(Err((failure.file, failure.record_index, failure.reason)));
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let pruned = tomb.as_ref().map_or(0, crate::retention::Loaded::pruned);
    if let Some(t) = &tomb
        && (t.tombstone.origin != origin || t.signed_at > n)
    {
        return Ok(fail(
            crate::retention::TOMBSTONE_NOTE,
            None,
            format!(
                "the tombstone's origin differs from the bundle's, or it was signed at {} records, after the checkpoint (tree size {n})",
                t.signed_at
            ),
        ));
    }

    // 3. Frames and their inclusion proofs.
    let proofs: Vec<InclusionEntry> = match fs::read(at(INCLUSION_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(r) => return Ok(fail(INCLUSION_FILE, None, r)),
    };
    let bytes = fs::read(at(RECORDS_FILE)).at(&at(RECORDS_FILE))?;
    let mut reader = FrameReader::new(bytes.as_slice(), 0, bytes.len() as u64);
    let mut keys: BTreeMap<u32, (u64, EpochKeys)> = tomb.as_ref().map_or_else(BTreeMap::new, |t| {
        t.keys
            .iter()
            .map(|(e, k)| (*e, (k.introduced_at, k.keys.clone())))
            .collect()
    });
    let mut revoked: BTreeMap<u32, u64> = tomb
        .as_ref()
        .map_or_else(BTreeMap::new, |t| t.revoked.clone());
    let mut authorised: BTreeSet<u64> = BTreeSet::new();
    let mut protected: BTreeSet<u64> = BTreeSet::new();
    let mut redaction_refs: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut last: Option<u64> = None;
    let mut k = 0usize;
    loop {
        let f = match reader.next_frame() {
            Ok(None) => break,
            Ok(Some(f)) => f,
            Err(FrameError::Io(e)) => return Err(LedgerError::io(&at(RECORDS_FILE), e)),
            Err(FrameError::Truncated { reason, .. } | FrameError::Invalid { reason, .. }) => {
                return Ok(fail(RECORDS_FILE, last.map(|l| l + 1), reason));
            }
        };
        let index = f.header.index();
        let bad = |r: String| fail(RECORDS_FILE, Some(index), r);
        if last.is_some_and(|l| index <= l) {
            return Ok(bad(
                "records are not in strictly ascending index order".into()
            ));
        }
        last = Some(index);
        if index < pruned {
            return Ok(bad(format!(
                "record {index} lies in the range pruned by retention (records 0..{pruned}, tombstone)"
            )));
        }
        if index >= n {
            return Ok(bad(format!(
                "record {index} is not covered by the checkpoint (tree size {n})"
            )));
        }
        if f.header.origin() != origin.as_bytes() {
            return Ok(bad("origin differs from the bundle's".into()));
        }
        let refs: Vec<u64> = f.header.refs().collect();
        if refs.iter().any(|r| *r >= index) {
            return Ok(bad("a ref is not an earlier record".into()));
        }
        let Some(entry) = proofs.get(k) else {
            return Ok(bad(format!(
                "{INCLUSION_FILE} has no entry for this record"
            )));
        };
        k += 1;
        if entry.index != index {
            return Ok(bad(format!(
                "{INCLUSION_FILE} entry {} is for record {}, the frame is record {index}",
                k - 1,
                entry.index
            )));
        }
        let Some(path) = crate::proof::unhex_path(&entry.proof) else {
            return Ok(bad("a proof hash is not 64 lowercase hex digits".into()));
        };
        if !merkle::verify_inclusion(&f.record_hash, index, n, &path, &cp.root) {
            return Ok(bad(format!(
                "inclusion proof does not verify: the record is not leaf {index} of the signed tree of size {n}"
            )));
        }
        let kind = f.header.kind();
        let epoch = f.header.key_epoch();
        let in_force = keys.values().last().map(|(_, k)| k.epoch);
        if kind == RecordKind::Key {
            if f.redacted {
                return Ok(bad("a key record is never redacted".into()));
            }
            let want = in_force.map_or(Some(0), |e| e.checked_add(1));
            if Some(epoch) != want || (in_force.is_none() && index != 0) {
                return Ok(bad(format!(
                    "key record introduces epoch {epoch}, expected epoch {} (the bundle must hold every key record below the tree size, starting with record 0)",
                    want.map_or("?".into(), |e| e.to_string())
                )));
            }
            let keys_now = match KeyRecordPayload::parse_and_check(f.payload, epoch, origin) {
                Ok(k) => k,
                Err(r) => return Ok(bad(r)),
            };
            if let Some((_, prev)) = keys.values().last()
                && let Err(r) = keys_now.check_rotation_from(prev, origin)
            {
                return Ok(bad(r));
            }
            protected.insert(index);
            keys.insert(epoch, (index, keys_now));
        } else {
            match in_force {
                None => {
                    return Ok(bad(
                        "no key record precedes this record (record 0, a key record, is missing)"
                            .into(),
                    ));
                }
                Some(e) if e != epoch => {
                    return Ok(bad(format!(
                        "key_epoch {epoch}, but the epoch in force is {e}"
                    )));
                }
                _ => {}
            }
        }
        match kind {
            RecordKind::Revocation => {
                if f.redacted {
                    return Ok(bad("a revocation record is never redacted".into()));
                }
                let p: RevocationPayload = match serde_json::from_slice(f.payload) {
                    Ok(p) => p,
                    Err(e) => return Ok(bad(format!("revocation payload is not valid: {e}"))),
                };
                let e = p.revoked_epoch;
                if !keys.contains_key(&e) || Some(e) == in_force || revoked.contains_key(&e) {
                    return Ok(bad(format!(
                        "revokes key epoch {e}, which is unknown, in force or already revoked"
                    )));
                }
                protected.insert(index);
                revoked.insert(e, index);
            }
            RecordKind::Redaction => {
                if f.redacted {
                    return Ok(bad("a redaction record is never redacted".into()));
                }
                if refs.is_empty() {
                    return Ok(bad("a redaction record needs at least one ref".into()));
                }
                let Some((_, ek)) = keys.values().last() else {
                    return Ok(bad("no key in force".into()));
                };
                if let Err(r) =
                    check_redaction(f.payload, origin, index, &f.header.prev_hash(), &refs, ek)
                {
                    return Ok(bad(r));
                }
                protected.insert(index);
                authorised.extend(refs.iter().copied());
                redaction_refs.push((index, refs));
            }
            _ => {}
        }
        if f.redacted {
            report.redacted.push(index);
        }
        report.records += 1;
        *report
            .records_by_kind
            .entry(kind.as_str().to_string())
            .or_insert(0) += 1;
        report.proved_indexes.push(index);
    }
    if k != proofs.len() {
        return Ok(fail(
            INCLUSION_FILE,
            None,
            format!(
                "{} proofs for {k} records: every entry must belong to a record",
                proofs.len()
            ),
        ));
    }
    if let Some(i) = report.redacted.iter().find(|i| !authorised.contains(i)) {
        return Ok(fail(
            RECORDS_FILE,
            Some(*i),
            format!(
                "record {i} is marked REDACTED, but no redaction record of the bundle refers to it"
            ),
        ));
    }
    if let Some((i, _)) = redaction_refs
        .iter()
        .find(|(_, refs)| refs.iter().any(|r| protected.contains(r)))
    {
        return Ok(fail(
            RECORDS_FILE,
            Some(*i),
            "a redaction refers to a key, redaction or revocation record".into(),
        ));
    }

    // 4. The checkpoint's key: the last key record below N, not revoked.
    let Some((_, (_, ck))) = keys.iter().next_back() else {
        return Ok(fail(
            RECORDS_FILE,
            None,
            "the bundle holds no key record (record 0 is required)".into(),
        ));
    };
    if ck.epoch != cp.key_epoch {
        return Ok(fail(
            CHECKPOINT_NOTE,
            None,
            format!(
                "signed with key epoch {}, but the epoch in force at tree size {n} by the bundle's key records is {}",
                cp.key_epoch, ck.epoch
            ),
        ));
    }
    if let Some(i) = revoked.get(&ck.epoch) {
        return Ok(fail(
            CHECKPOINT_NOTE,
            None,
            format!(
                "signed with key epoch {}, which was revoked by record {i}",
                ck.epoch
            ),
        ));
    }
    for (e, (_, k)) in &keys {
        report
            .key_ids
            .insert(*e, hex::encode(keys::key_id(origin, &k.public_key)));
        if let Some(ed) = &k.ed25519 {
            report
                .ed25519_key_ids
                .insert(*e, hex::encode(keys::ed25519_key_id(origin, ed)));
        }
    }
    if let Some(t) = &tomb {
        let l = t.signed_at;
        let signer = keys
            .values()
            .filter(|(at, _)| *at < l)
            .max_by_key(|(_, k)| k.epoch);
        let res = match signer {
            Some((_, k)) if k.epoch == t.manifest.key_epoch => match revoked.get(&k.epoch) {
                Some(i) if *i < l => {
                    Err(format!("key epoch {} was revoked by record {i}", k.epoch))
                }
                _ => t.verify_with(k),
            },
            _ => Err(format!(
                "signed with key epoch {}, not the epoch in force at {l} records",
                t.manifest.key_epoch
            )),
        };
        if let Err(r) = res {
            return Ok(fail(
                crate::retention::TOMBSTONE_NOTE,
                None,
                format!("tombstone signature: {r}"),
            ));
        }
        report.pruned = pruned;
        report.pruned_root = Some(t.tombstone.root.clone());
    }
    report.revoked = revoked;
    if let Err(r) = checkpoint::verify_note_signatures(&note, origin, ck) {
        return Ok(fail(CHECKPOINT_NOTE, None, r));
    }
    report.checkpoints = 1;
    if ck.ed25519.is_some() {
        report.hybrid_checkpoints = 1;
    }
    if let Err(r) = checkpoint::verify_signed_text(
        manifest.body.as_bytes(),
        &manifest.signatures,
        origin,
        ck,
        EVIDENCE_CONTEXT,
    ) {
        return Ok(fail(
            MANIFEST_FILE,
            None,
            format!("manifest signature: {r}"),
        ));
    }

    // 5. Trusted checkpoints: the same tree size, the same root.
    for t in &opts.trusted {
        let tc = t.checkpoint();
        if tc.tree_size != n {
            return Ok(Err((
                t.source.clone(),
                None,
                format!(
                    "this evidence bundle is proved against the signed tree of size {n}; a trusted checkpoint of size {} cannot be linked to it (use the published checkpoint of size {n}, or verify a range export)",
                    tc.tree_size
                ),
            )));
        }
        if tc.origin != origin {
            return Ok(Err((
                t.source.clone(),
                None,
                format!(
                    "origin {:?} differs from the bundle's {origin:?}",
                    tc.origin
                ),
            )));
        }
        if let Err(r) = checkpoint::verify_note_signatures(&t.note, origin, ck) {
            return Ok(Err((
                t.source.clone(),
                None,
                format!("{r} (not signed by this ledger's key)"),
            )));
        }
        if tc.root != cp.root {
            return Ok(Err((
                t.source.clone(),
                None,
                format!(
                    "fork: the trusted checkpoint of size {n} has another root than the bundle's"
                ),
            )));
        }
        report.trusted_checkpoints.push(TrustedResult {
            source: t.source.clone(),
            tree_size: n,
            how: "same signed root".into(),
        });
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CHECKPOINTS_FILE;
    use crate::{Ledger, LedgerConfig, TrustedCheckpoint};
    use std::time::Duration;

    const ORIGIN: &str = "dunes/evidence-test";

    fn events(l: &mut Ledger, n: u64) {
        for i in 0..n {
            l.append(
                RecordKind::Event,
                i as i64,
                format!("{{\"e\":{i}}}").as_bytes(),
                &[],
            )
            .expect("append");
        }
    }

    /// Hybrid keys, a rotation, a revocation, a redaction of record 2, several checkpoints
    /// and an unsigned tail (records 14 and 15).
    fn ledger(dir: &Path) {
        let mut c = LedgerConfig::new(dir, ORIGIN);
        c.checkpoint_interval = Duration::from_secs(3600);
        c.rotate_every = None;
        c.hybrid_ed25519 = true;
        let mut l = Ledger::open(c).expect("open");
        events(&mut l, 4); // 1..=4
        l.checkpoint().expect("cp");
        l.append(RecordKind::Incident, 5, b"{\"rule\":\"r1\"}", &[1, 2])
            .expect("incident 5");
        l.redact(2, "erasure", "dpo").expect("redact"); // 6
        l.rotate_key().expect("rotate"); // 7: epoch 1
        l.revoke_key(0, "test").expect("revoke"); // 8
        events(&mut l, 3); // 9..=11
        l.append(RecordKind::Action, 12, b"{\"action\":\"ack\"}", &[])
            .expect("action 12");
        l.append(RecordKind::Response, 13, b"{\"r\":1}", &[5])
            .expect("response 13");
        l.checkpoint().expect("cp");
        events(&mut l, 2);
        l.sync().expect("sync");
    }

    fn failure(dir: &Path, opts: &VerifyOptions) -> String {
        let r = verify_evidence(dir, opts).expect("verify");
        r.first_failure
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_else(|| panic!("expected a failure:\n{r}"))
    }

    /// Re-signs the manifest with the ledger's active key after a mutation, so that the
    /// checks behind the manifest are what must catch it.
    fn resign(data: &Path, bundle: &Path) {
        let signer = keys::load_signer(&data.join("keys"), 1).expect("signer");
        let mut files = BTreeMap::new();
        for name in [CHECKPOINT_NOTE, RECORDS_FILE, INCLUSION_FILE] {
            files.insert(name.to_string(), fs::read(bundle.join(name)).expect("read"));
        }
        let note = checkpoint::parse_note(
            &fs::read_to_string(bundle.join(CHECKPOINT_NOTE)).expect("note"),
        )
        .expect("parse");
        let head = format!(
            "{EVIDENCE_MAGIC}\norigin {ORIGIN}\ntree-size {}\nkey-epoch 1\ncreated 1\n",
            note.checkpoint.tree_size
        );
        let m = sign_manifest(&head, &files, ORIGIN, &signer, EVIDENCE_CONTEXT).expect("sign");
        fs::write(bundle.join(MANIFEST_FILE), m).expect("write");
    }

    fn frames(b: &[u8]) -> Vec<(u64, std::ops::Range<usize>)> {
        let mut r = FrameReader::new(b, 0, b.len() as u64);
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().expect("frame") {
            out.push((
                f.header.index(),
                f.offset as usize..(f.offset + f.len) as usize,
            ));
        }
        out
    }

    #[test]
    fn chosen_records_verify_with_their_support() {
        let d = tempfile::tempdir().expect("tmp");
        ledger(d.path());
        let out = d.path().join("ev");
        let want: BTreeSet<u64> = [2, 5, 12, 13].into();
        let s = export_evidence(d.path(), &want, &out).expect("export");
        assert_eq!(s.tree_size, 14);
        assert_eq!(s.key_epoch, 1);
        // Requested + key records 0 and 7, the revocation 8, the redaction 6 of record 2.
        assert_eq!(s.records, vec![0, 2, 5, 6, 7, 8, 12, 13]);
        let r = verify_evidence(&out, &VerifyOptions::default()).expect("verify");
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.proved_indexes, s.records);
        assert_eq!(r.redacted, vec![2]);
        assert_eq!(r.revoked.get(&0), Some(&8));
        assert_eq!(r.signed_records, 14);
        assert_eq!(r.hybrid_checkpoints, 1);
        assert_eq!(r.key_ids.len(), 2);
        let text = r.to_string();
        assert!(
            text.contains("evidence bundle") && text.contains("RESULT: OK"),
            "{text}"
        );
        // `verify_path` recognises the bundle.
        let r2 = crate::verify_path(&out).expect("verify_path");
        assert_eq!(r2.source, "evidence bundle");
        assert!(r2.is_ok());
    }

    #[test]
    fn unsigned_or_empty_requests_are_refused() {
        let d = tempfile::tempdir().expect("tmp");
        ledger(d.path());
        let e = export_evidence(d.path(), &[15].into(), &d.path().join("a"))
            .expect_err("unsigned record");
        assert!(
            e.to_string()
                .contains("not covered by the latest signed checkpoint"),
            "{e}"
        );
        assert!(export_evidence(d.path(), &BTreeSet::new(), &d.path().join("b")).is_err());
        export_evidence(d.path(), &[3].into(), &d.path().join("c")).expect("export");
        let e = export_evidence(d.path(), &[3].into(), &d.path().join("c"))
            .expect_err("non-empty output");
        assert!(e.to_string().contains("not empty"), "{e}");
    }

    #[test]
    fn a_key_holder_cannot_make_an_inconsistent_bundle_pass() {
        let d = tempfile::tempdir().expect("tmp");
        ledger(d.path());
        let pristine = d.path().join("pristine");
        export_evidence(d.path(), &[2, 5, 12].into(), &pristine).expect("export");
        let work = d.path().join("work");
        let opts = VerifyOptions::default();
        let records = fs::read(pristine.join(RECORDS_FILE)).expect("records");
        let proofs: Vec<InclusionEntry> =
            serde_json::from_slice(&fs::read(pristine.join(INCLUSION_FILE)).expect("proofs"))
                .expect("json");
        let fr = frames(&records);
        let indexes: Vec<u64> = fr.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![0, 2, 5, 6, 7, 8, 12]);

        // Each case: drop some frames (and their proofs), or alter the proofs; re-sign.
        let cases: Vec<(&str, Vec<u64>, &str)> = vec![
            (
                "drop record 0",
                vec![0],
                "no key record precedes this record",
            ),
            (
                "drop the rotation",
                vec![7],
                "key_epoch 1, but the epoch in force is 0",
            ),
            (
                "drop the redaction",
                vec![6],
                "no redaction record of the bundle refers to it",
            ),
            ("drop the revocation", vec![8], ""),
        ];
        for (what, drop, want) in cases {
            let _ = fs::remove_dir_all(&work);
            fs::create_dir_all(work.join("proofs")).expect("mkdir");
            fs::copy(pristine.join(CHECKPOINT_NOTE), work.join(CHECKPOINT_NOTE)).expect("cp");
            let mut b = Vec::new();
            let mut p = Vec::new();
            for ((i, range), entry) in fr.iter().zip(&proofs) {
                if !drop.contains(i) {
                    b.extend_from_slice(&records[range.clone()]);
                    p.push(entry.clone());
                }
            }
            fs::write(work.join(RECORDS_FILE), b).expect("w");
            fs::write(
                work.join(INCLUSION_FILE),
                serde_json::to_vec(&p).expect("j"),
            )
            .expect("w");
            resign(d.path(), &work);
            if want.is_empty() {
                // A sparse bundle cannot prove that no revocation exists (documented).
                let r = verify_evidence(&work, &opts).expect("verify");
                assert!(r.is_ok(), "{what}: {r}");
                assert!(r.revoked.is_empty());
            } else {
                let msg = failure(&work, &opts);
                assert!(msg.contains(want), "{what}: {msg}");
            }
        }

        // A proof moved to another record, and a record claimed at another leaf.
        let mutate_proofs = |f: &dyn Fn(&mut Vec<InclusionEntry>), want: &str| {
            let _ = fs::remove_dir_all(&work);
            fs::create_dir_all(work.join("proofs")).expect("mkdir");
            for name in [CHECKPOINT_NOTE, RECORDS_FILE] {
                fs::copy(pristine.join(name), work.join(name)).expect("cp");
            }
            let mut p = proofs.clone();
            f(&mut p);
            fs::write(
                work.join(INCLUSION_FILE),
                serde_json::to_vec(&p).expect("j"),
            )
            .expect("w");
            resign(d.path(), &work);
            let msg = failure(&work, &opts);
            assert!(msg.contains(want), "{msg}");
        };
        mutate_proofs(&|p| p.swap(1, 2), "is for record");
        mutate_proofs(
            &|p| {
                let other = p[2].proof.clone();
                p[1].proof = other;
            },
            "inclusion proof does not verify",
        );
        mutate_proofs(
            &|p| p[3].proof.push(hex::encode([7u8; 32])),
            "does not verify",
        );
        mutate_proofs(
            &|p| {
                p.pop();
            },
            "has no entry for this record",
        );
        mutate_proofs(
            &|p| {
                let extra = p[0].clone();
                p.push(extra);
            },
            "every entry must belong to a record",
        );

        // Byte flips anywhere in the bundle, without re-signing: the manifest catches them.
        for name in [MANIFEST_FILE, CHECKPOINT_NOTE, RECORDS_FILE, INCLUSION_FILE] {
            let bytes = fs::read(pristine.join(name)).expect("read");
            for pos in (0..bytes.len()).step_by(97) {
                let _ = fs::remove_dir_all(&work);
                fs::create_dir_all(work.join("proofs")).expect("mkdir");
                for n in [MANIFEST_FILE, CHECKPOINT_NOTE, RECORDS_FILE, INCLUSION_FILE] {
                    fs::copy(pristine.join(n), work.join(n)).expect("cp");
                }
                let mut b = bytes.clone();
                b[pos] ^= 0x01;
                fs::write(work.join(name), b).expect("w");
                let r = verify_evidence(&work, &opts).expect("verify");
                assert!(
                    r.first_failure.is_some(),
                    "flip {pos} of {name} not detected"
                );
            }
        }
        assert!(verify_evidence(&pristine, &opts).expect("verify").is_ok());
    }

    #[test]
    fn trusted_checkpoints_must_be_the_signed_tree() {
        let d = tempfile::tempdir().expect("tmp");
        ledger(d.path());
        let out = d.path().join("ev");
        export_evidence(d.path(), &[5].into(), &out).expect("export");
        let same = TrustedCheckpoint::load(&out.join(CHECKPOINT_NOTE)).expect("load");
        let r = verify_evidence(
            &out,
            &VerifyOptions {
                trusted: vec![same],
                ..VerifyOptions::default()
            },
        )
        .expect("verify");
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.trusted_checkpoints.len(), 1);
        // An earlier checkpoint of the same ledger cannot be linked to a sparse bundle.
        let cps = fs::read(d.path().join("ledger").join(CHECKPOINTS_FILE)).expect("read");
        let first = checkpoint::scan_entries(&cps).entries.remove(0).1;
        fs::write(d.path().join("first.note"), first).expect("w");
        let first = TrustedCheckpoint::load(&d.path().join("first.note")).expect("load");
        let msg = failure(
            &out,
            &VerifyOptions {
                trusted: vec![first],
                ..VerifyOptions::default()
            },
        );
        assert!(msg.contains("cannot be linked"), "{msg}");
        // Another ledger (same origin, its own key) with the same size: not this key.
        let other = tempfile::tempdir().expect("tmp");
        ledger(other.path());
        let o = other.path().join("ev");
        export_evidence(other.path(), &[5].into(), &o).expect("export");
        let foreign = TrustedCheckpoint::load(&o.join(CHECKPOINT_NOTE)).expect("load");
        let msg = failure(
            &out,
            &VerifyOptions {
                trusted: vec![foreign],
                ..VerifyOptions::default()
            },
        );
        assert!(msg.contains("not signed by this ledger's key"), "{msg}");
    }
}
