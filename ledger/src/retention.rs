//! Retention: whole segments older than the retention period are pruned, and a signed
//! **tombstone** takes their place (`docs/ledger-format.md` §2.10).
//!
//! The tombstone is what a verifier needs to go on at the first kept record: the record hash
//! of the last pruned record (the chain link), the Merkle compact range over the pruned
//! records (so every later checkpoint root is still recomputed from the kept records), the
//! key history and the revocations of the pruned range. It is a JSON file
//! (`ledger/tombstone-<P as 16 hex>.json`) listed by SHA-256 in a signed manifest
//! (`ledger/tombstone.note`), signed by the key epoch in force when it was written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LedgerError, VerifyFailure};
use crate::export::{
    HistoryKey, HistoryRevocation, SignedManifest, key_chain, parse_signed_manifest, sha256_hex,
    sign_manifest,
};
use crate::keys::{self, EpochKeys, Signer, TOMBSTONE_CONTEXT};
use crate::merkle::{self, Frontier, Hash, LeafSet};
use crate::proof::unhex;
use crate::segment::{ChainState, KnownKey, epoch_in_force};
use crate::verify::StartState;

/// The signed manifest of the tombstone, in `ledger/`.
pub const TOMBSTONE_NOTE: &str = "tombstone.note";
/// First line of the tombstone manifest.
pub const TOMBSTONE_MAGIC: &str = "dunes-ledger-tombstone-v1";

/// Name of the tombstone JSON for a pruned prefix of `pruned` records.
pub fn tombstone_file_name(pruned: u64) -> String {
    format!("tombstone-{pruned:016x}.json")
}

/// `tombstone-<P>.json`: the state of the log after its first `pruned` records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tombstone {
    /// The ledger origin.
    pub origin: String,
    /// `P`: records `0..P-1` were pruned; the first kept record is `P`.
    pub pruned: u64,
    /// Record hash of record `P-1` (lowercase hex).
    pub prev_hash: String,
    /// RFC 9162 `PATH(P-1, D[P])`: proves `prev_hash` is leaf `P-1` under `root`.
    pub prev_hash_proof: Vec<String>,
    /// Merkle compact range over records `0..P-1`, largest subtree first.
    pub frontier: Vec<String>,
    /// `MTH(D[0..P])`, the pruned range's Merkle root.
    pub root: String,
    /// Every `key` record with index `< P`, in log order, with its exact payload.
    pub keys: Vec<HistoryKey>,
    /// Every `revocation` record with index `< P`, in log order.
    pub revocations: Vec<HistoryRevocation>,
    /// Retention cut-off (µs since the epoch): the pruned segments were last written
    /// before it.
    pub cutoff_micros: i64,
    /// Newest `ts_micros` among the pruned records.
    pub newest_pruned_ts_micros: i64,
}

/// A tombstone read from disk and checked for internal consistency (signature not yet).
pub(crate) struct Loaded {
    pub tombstone: Tombstone,
    pub manifest: SignedManifest,
    /// `L`: the ledger's record count when the tombstone was signed.
    pub signed_at: u64,
    pub frontier: Frontier,
    pub prev_hash: Hash,
    pub keys: BTreeMap<u32, KnownKey>,
    pub revoked: BTreeMap<u32, u64>,
    pub note_path: PathBuf,
}

impl Loaded {
    pub fn pruned(&self) -> u64 {
        self.tombstone.pruned
    }

    /// Where checking the kept records starts.
    pub fn start_state(&self) -> StartState {
        StartState {
            chain: ChainState::starting_at(
                self.pruned(),
                self.prev_hash,
                &self.tombstone.origin,
                self.keys.clone(),
                self.revoked.clone(),
            ),
            frontier: self.frontier.clone(),
        }
    }

    /// The tombstone's signature, checked once the record stream has `signed_at` records:
    /// by the epoch in force at that size, not revoked before it (like a checkpoint, §3.4
    /// rules 5–7).
    pub fn check_signature(&self, chain: &ChainState) -> Result<(), String> {
        let key = chain.check_checkpoint_epoch(self.manifest.key_epoch)?;
        self.verify_with(&key.keys)
    }

    /// The manifest's signature line(s) verify with `keys` (which the caller established as
    /// the epoch in force at `signed_at`, not revoked before it).
    pub fn verify_with(&self, keys: &EpochKeys) -> Result<(), String> {
        crate::checkpoint::verify_signed_text(
            self.manifest.body.as_bytes(),
            &self.manifest.signatures,
            &self.tombstone.origin,
            keys,
            TOMBSTONE_CONTEXT,
        )
    }
}

/// The pruning point `P` named by `ledger/tombstone.note`, without checking anything (for
/// read-only walkers that only need to know where the segments start); 0 without tombstone.
pub(crate) fn pruned_size(ledger_dir: &Path) -> Result<u64, LedgerError> {
    let path = ledger_dir.join(TOMBSTONE_NOTE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LedgerError::io(&path, e)),
    };
    let m = parse_signed_manifest(&text, TOMBSTONE_MAGIC, "pruned")
        .map_err(|r| bad(&path, format!("tombstone manifest: {r}")))?;
    scope(&m).map(|(p, _)| p).map_err(|r| bad(&path, r))
}

fn bad(path: &Path, reason: impl Into<String>) -> LedgerError {
    LedgerError::corrupt(VerifyFailure::new(None, path, None, reason))
}

/// `pruned <P> <L>`.
fn scope(m: &SignedManifest) -> Result<(u64, u64), String> {
    let mut it = m.scope.split(' ');
    let (Some(p), Some(l), None) = (it.next(), it.next(), it.next()) else {
        return Err("malformed \"pruned\" line".into());
    };
    let p = crate::export::manifest_number(p)?;
    let l = crate::export::manifest_number(l)?;
    if p == 0 || l < p {
        return Err(format!(
            "\"pruned {p} {l}\": P must be at least 1 and L at least P"
        ));
    }
    Ok((p, l))
}

/// Reads and checks `ledger/tombstone.note` and its JSON (§2.10 steps 1–5). `Ok(None)`
/// when the ledger was never pruned; `Err(Corrupt)` names the file and the problem.
pub(crate) fn load(ledger_dir: &Path) -> Result<Option<Loaded>, LedgerError> {
    let note_path = ledger_dir.join(TOMBSTONE_NOTE);
    let text = match fs::read(&note_path) {
        Ok(b) => String::from_utf8(b).map_err(|_| bad(&note_path, "not UTF-8"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LedgerError::io(&note_path, e)),
    };
    let fail = |r: String| bad(&note_path, format!("tombstone: {r}"));
    let manifest = parse_signed_manifest(&text, TOMBSTONE_MAGIC, "pruned").map_err(fail)?;
    let (p, signed_at) = scope(&manifest).map_err(fail)?;
    let name = tombstone_file_name(p);
    if manifest.files.len() != 1 || !manifest.files.contains_key(&name) {
        return Err(fail(format!(
            "the manifest must list exactly one file, {name}"
        )));
    }
    let (digest, size) = &manifest.files[&name];
    let json_path = ledger_dir.join(&name);
    let bytes = fs::read(&json_path).at(&json_path)?;
    if bytes.len() as u64 != *size || sha256_hex(&bytes) != *digest {
        return Err(bad(
            &json_path,
            "tombstone: SHA-256 digest / size does not match the signed manifest",
        ));
    }
    let jfail = |r: String| bad(&json_path, format!("tombstone: {r}"));
    let t: Tombstone = serde_json::from_slice(&bytes).map_err(|e| jfail(e.to_string()))?;
    if t.origin != manifest.origin || t.pruned != p {
        return Err(jfail(
            "origin or pruned size differs from the signed manifest".into(),
        ));
    }
    let hash = |s: &String| unhex(s).ok_or_else(|| jfail(format!("bad hash {s:?}")));
    let nodes = t.frontier.iter().map(hash).collect::<Result<Vec<_>, _>>()?;
    let frontier = Frontier::from_nodes(p, nodes)
        .ok_or_else(|| jfail("frontier has the wrong number of nodes".into()))?;
    let root = hash(&t.root)?;
    if frontier.root() != root {
        return Err(jfail("frontier does not hash to root".into()));
    }
    let prev_hash = hash(&t.prev_hash)?;
    let path = t
        .prev_hash_proof
        .iter()
        .map(hash)
        .collect::<Result<Vec<_>, _>>()?;
    if !merkle::verify_inclusion(&prev_hash, p - 1, p, &path, &root) {
        return Err(jfail(
            "prev_hash_proof does not prove prev_hash as leaf P-1 under root".into(),
        ));
    }
    if t.keys.iter().any(|k| k.index >= p) {
        return Err(jfail("a key entry is not in the pruned range".into()));
    }
    let keys = key_chain(&t.keys, &t.origin).map_err(jfail)?;
    let mut revoked = BTreeMap::new();
    let mut last = None;
    for r in &t.revocations {
        if r.index >= p || last.is_some_and(|l| r.index <= l) {
            return Err(jfail(format!(
                "revocation at record {} is out of order or not in the pruned range",
                r.index
            )));
        }
        let in_force = epoch_in_force(&keys, r.index).map(|k| k.keys.epoch);
        let introduced = keys
            .get(&r.revoked_epoch)
            .is_some_and(|k| k.introduced_at < r.index);
        if !introduced || in_force == Some(r.revoked_epoch) {
            return Err(jfail(format!(
                "revocation at record {} names epoch {}, which is not introduced before it or is the epoch in force",
                r.index, r.revoked_epoch
            )));
        }
        if revoked.insert(r.revoked_epoch, r.index).is_some() {
            return Err(jfail(format!("epoch {} revoked twice", r.revoked_epoch)));
        }
        last = Some(r.index);
    }
    Ok(Some(Loaded {
        tombstone: t,
        manifest,
        signed_at,
        frontier,
        prev_hash,
        keys,
        revoked,
        note_path,
    }))
}

/// What one pruning removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PruneSummary {
    /// Records `0..pruned` are gone now (cumulative).
    pub pruned: u64,
    /// Records removed by this call.
    pub records_removed: u64,
    pub segments_removed: u64,
    pub bytes_freed: u64,
    /// Checkpoint entries dropped from `checkpoints.log` (tree size below `pruned`).
    pub checkpoints_removed: u64,
    /// The pruned range's Merkle root (hex).
    pub root: String,
    /// The retention cut-off used (µs since the epoch).
    pub cutoff_micros: i64,
}

/// Inputs of a new tombstone, gathered by the writer.
pub(crate) struct NewTombstone<'a> {
    pub origin: &'a str,
    pub pruned: u64,
    pub leaves: &'a LeafSet<'static>,
    pub keys: Vec<HistoryKey>,
    pub revocations: Vec<HistoryRevocation>,
    pub cutoff_micros: i64,
    pub newest_pruned_ts_micros: i64,
    /// Record count when signed.
    pub signed_at: u64,
}

/// Builds, signs and durably writes a tombstone (JSON first, then the manifest by atomic
/// rename, then the previous JSON is removed). Returns it.
pub(crate) fn write(
    ledger_dir: &Path,
    n: NewTombstone<'_>,
    signer: &Signer,
    now_micros: i64,
) -> Result<Tombstone, LedgerError> {
    let p = n.pruned;
    let internal = |what: &str| LedgerError::InvalidInput(format!("tombstone at {p}: {what}"));
    let frontier = n
        .leaves
        .frontier(p)
        .ok_or_else(|| internal("frontier not computable"))?;
    let prev = n
        .leaves
        .leaf(p - 1)
        .ok_or_else(|| internal("record P-1 is not available"))?;
    let proof = n
        .leaves
        .inclusion_proof(p - 1, p)
        .ok_or_else(|| internal("no inclusion proof for record P-1"))?;
    let t = Tombstone {
        origin: n.origin.to_string(),
        pruned: p,
        prev_hash: hex::encode(prev),
        prev_hash_proof: proof.iter().map(hex::encode).collect(),
        frontier: frontier.nodes().iter().map(hex::encode).collect(),
        root: hex::encode(frontier.root()),
        keys: n.keys,
        revocations: n.revocations,
        cutoff_micros: n.cutoff_micros,
        newest_pruned_ts_micros: n.newest_pruned_ts_micros,
    };
    let json = serde_json::to_vec(&t).map_err(|e| internal(&e.to_string()))?;
    let name = tombstone_file_name(p);
    let head = format!(
        "{TOMBSTONE_MAGIC}\norigin {}\npruned {p} {}\nkey-epoch {}\ncreated {now_micros}\n",
        n.origin, n.signed_at, signer.epoch
    );
    let mut files = BTreeMap::new();
    files.insert(name.clone(), json);
    let note = sign_manifest(&head, &files, n.origin, signer, TOMBSTONE_CONTEXT)?;
    let old = pruned_size(ledger_dir)?;
    keys::write_atomic(&ledger_dir.join(&name), &files[&name], false)?;
    keys::write_atomic(&ledger_dir.join(TOMBSTONE_NOTE), note.as_bytes(), false)?;
    if old != 0 && old != p {
        remove_if_present(&ledger_dir.join(tombstone_file_name(old)))?;
    }
    Ok(t)
}

/// Removes tombstone JSON files that the manifest does not name (left by a crash between
/// writing a new JSON and replacing the manifest, or before removing the previous one).
pub(crate) fn remove_stray(ledger_dir: &Path, keep: u64) -> Result<(), LedgerError> {
    for ent in fs::read_dir(ledger_dir).at(ledger_dir)? {
        let ent = ent.at(ledger_dir)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("tombstone-")
            && name.ends_with(".json")
            && (keep == 0 || name != tombstone_file_name(keep))
        {
            remove_if_present(&ent.path())?;
        }
    }
    Ok(())
}

pub(crate) fn remove_if_present(path: &Path) -> Result<(), LedgerError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LedgerError::io(path, e)),
    }
}

/// Rewrites `checkpoints.log` without the entries whose tree size is below `pruned` (their
/// roots can no longer be recomputed); atomic. Returns how many entries were dropped. The
/// caller must reopen its append handle.
pub(crate) fn drop_checkpoints_before(cp_path: &Path, pruned: u64) -> Result<u64, LedgerError> {
    let bytes = match fs::read(cp_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LedgerError::io(cp_path, e)),
    };
    let scan = crate::checkpoint::scan_entries(&bytes);
    let mut out = Vec::with_capacity(bytes.len());
    let mut dropped = 0u64;
    for (_, note) in &scan.entries {
        let below =
            crate::checkpoint::parse_note(note).is_ok_and(|n| n.checkpoint.tree_size < pruned);
        if below {
            dropped += 1;
        } else {
            out.extend_from_slice(&crate::checkpoint::frame_entry(note));
        }
    }
    if dropped > 0 {
        if let Some((offset, _, _)) = scan.problem {
            out.extend_from_slice(&bytes[offset as usize..]);
        }
        keys::write_atomic(cp_path, &out, false)?;
    }
    Ok(dropped)
}

/// Test support: sets the modification time of every segment of `data_dir` except the
/// newest (the active one) `age` into the past, as if they had been written then
/// (retention prunes by write time). Returns the number of segments.
#[doc(hidden)]
pub fn backdate_segments(data_dir: &Path, age: std::time::Duration) -> std::io::Result<usize> {
    let dir = data_dir.join("ledger");
    let mut segs: Vec<PathBuf> = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| crate::segment::parse_segment_name(n).is_some())
        })
        .collect();
    segs.sort();
    let when = std::time::SystemTime::now() - age;
    for p in segs.iter().take(segs.len().saturating_sub(1)) {
        fs::File::options()
            .write(true)
            .open(p)?
            .set_modified(when)?;
    }
    Ok(segs.len())
}
