//! Inclusion and consistency proofs served from a data directory (read-only; safe while a
//! writer appends: a partially written tail is ignored).

use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;

use crate::checkpoint::{self, CHECKPOINTS_FILE, Checkpoint};
use crate::error::{IoContext, LedgerError, VerifyFailure};
use crate::merkle::{self, Hash, LeafSet};
use crate::record::{FrameError, FrameReader, RecordKind};
use crate::segment::list_segments;

/// An RFC 9162 inclusion proof (hashes in lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InclusionProof {
    /// Leaf (record) index.
    pub index: u64,
    /// Size of the tree the proof is for.
    pub tree_size: u64,
    /// The record hash = Merkle leaf hash `BLAKE3(0x00 ‖ header)`.
    pub leaf_hash: String,
    /// Audit path, leaf to root.
    pub proof: Vec<String>,
    /// Merkle root of the tree of `tree_size` records.
    pub root: String,
    /// The signed checkpoint with this tree size, if there is one.
    pub checkpoint: Option<Checkpoint>,
}

/// An RFC 9162 consistency proof (hashes in lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub first: u64,
    pub second: u64,
    pub first_root: String,
    pub second_root: String,
    pub proof: Vec<String>,
    /// Signed checkpoints with these tree sizes, if any.
    pub first_checkpoint: Option<Checkpoint>,
    pub second_checkpoint: Option<Checkpoint>,
}

/// 64 lowercase hex digits -> hash (uppercase is refused: one spelling per value).
pub(crate) fn unhex(s: &str) -> Option<Hash> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok()?;
    Some(h)
}

/// Decodes a hex-encoded proof path; `None` if any node is malformed.
pub(crate) fn unhex_path(path: &[String]) -> Option<Vec<merkle::Hash>> {
    path.iter().map(|p| unhex(p)).collect()
}

impl InclusionProof {
    /// Verify the audit path against `root` (does not check the checkpoint signature).
    pub fn verify(&self) -> bool {
        let (Some(leaf), Some(root)) = (unhex(&self.leaf_hash), unhex(&self.root)) else {
            return false;
        };
        let Some(path) = unhex_path(&self.proof) else {
            return false;
        };
        merkle::verify_inclusion(&leaf, self.index, self.tree_size, &path, &root)
    }
}

impl ConsistencyProof {
    /// Verify the proof between the two roots (does not check checkpoint signatures).
    pub fn verify(&self) -> bool {
        let (Some(a), Some(b)) = (unhex(&self.first_root), unhex(&self.second_root)) else {
            return false;
        };
        let Some(path) = unhex_path(&self.proof) else {
            return false;
        };
        merkle::verify_consistency(self.first, self.second, &a, &b, &path)
    }
}

/// Record hashes of every complete record in `<data_dir>/ledger`, in index order. Stops
/// quietly at an incomplete or damaged frame at the end of the last segment (a writer may be
/// appending); damage elsewhere is a `Corrupt` error. Hashes are checked, chain rules are not
/// (use `verify_dir` for that).
///
/// After retention pruned records `0..P`, the set holds the tombstone's compact range for
/// them and the hashes of the kept records.
pub fn read_leaf_hashes(data_dir: &Path) -> Result<LeafSet<'static>, LedgerError> {
    let base = crate::retention::load(&data_dir.join("ledger"))?
        .map_or_else(merkle::Frontier::new, |t| t.frontier);
    let mut leaves = Vec::new();
    for_each_record(data_dir, 0, |r| leaves.push(r.record_hash))?;
    Ok(LeafSet::pruned(base, leaves))
}

/// One record as read back by [`for_each_record`].
pub struct RecordView<'a> {
    /// Leaf index.
    pub index: u64,
    /// Record kind.
    pub kind: RecordKind,
    /// Record timestamp, µs since the epoch.
    pub ts_micros: i64,
    /// The payload (empty when redacted).
    pub payload: &'a [u8],
    /// Whether the payload was redacted.
    pub redacted: bool,
    /// The record (leaf) hash.
    pub record_hash: Hash,
    /// Indexes of earlier records this record refers to (header `refs`).
    pub refs: Vec<u64>,
}

/// Calls `visit` for every complete record of `<data_dir>/ledger` with index `>= from`, in
/// order; segments wholly before `from` are not read, and neither are records pruned by
/// retention (the walk starts at the first kept record). Same tolerance as [`read_leaf_hashes`]
/// (a torn tail of the last segment ends the walk). Returns the number of records in the
/// ledger.
pub fn for_each_record(
    data_dir: &Path,
    from: u64,
    mut visit: impl FnMut(&RecordView<'_>),
) -> Result<u64, LedgerError> {
    let dir = data_dir.join("ledger");
    let pruned = crate::retention::pruned_size(&dir)?;
    let mut segments = list_segments(&dir)?;
    segments.retain(|(first, _)| *first >= pruned);
    let n = segments.len();
    let mut next = pruned;
    for (si, (first, path)) in segments.iter().enumerate() {
        if *first != next {
            return Err(LedgerError::corrupt(VerifyFailure::new(
                Some(next),
                path,
                None,
                "segment does not start where the previous one ends",
            )));
        }
        if let Some((following, _)) = segments.get(si + 1)
            && *following <= from
        {
            // Wholly before `from`: skip (the next segment's name says where it starts).
            next = *following;
            continue;
        }
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let mut r = FrameReader::new(BufReader::with_capacity(1 << 20, file), 0, len);
        loop {
            match r.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => {
                    if next >= from {
                        visit(&RecordView {
                            index: next,
                            kind: f.header.kind(),
                            ts_micros: f.header.ts_micros(),
                            payload: f.payload,
                            redacted: f.redacted,
                            record_hash: f.record_hash,
                            refs: f.header.refs().collect(),
                        });
                    }
                    next += 1;
                }
                Err(FrameError::Io(e)) => return Err(LedgerError::io(path, e)),
                Err(
                    FrameError::Truncated { offset, reason }
                    | FrameError::Invalid { offset, reason },
                ) => {
                    if si + 1 == n {
                        break;
                    }
                    return Err(LedgerError::corrupt(VerifyFailure::new(
                        Some(next),
                        path,
                        Some(offset),
                        reason,
                    )));
                }
            }
        }
    }
    Ok(next)
}

/// Every parseable checkpoint in `<data_dir>/ledger/checkpoints.log`, in file order.
pub fn read_checkpoints(data_dir: &Path) -> Result<Vec<Checkpoint>, LedgerError> {
    let path = data_dir.join("ledger").join(CHECKPOINTS_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LedgerError::io(&path, e)),
    };
    Ok(checkpoint::scan_entries(&bytes)
        .entries
        .iter()
        .filter_map(|(_, n)| checkpoint::parse_note(n).ok())
        .map(|p| p.checkpoint)
        .collect())
}

fn default_size(cps: &[Checkpoint], what: &str) -> Result<u64, LedgerError> {
    cps.last().map(|c| c.tree_size).ok_or_else(|| {
        LedgerError::InvalidInput(format!("no signed checkpoint yet; pass {what} explicitly"))
    })
}

/// Inclusion proof of record `index` in the tree of `tree_size` records (default: the latest
/// checkpoint's tree size, so that the root is signed).
pub fn inclusion_proof(
    data_dir: &Path,
    index: u64,
    tree_size: Option<u64>,
) -> Result<InclusionProof, LedgerError> {
    let cps = read_checkpoints(data_dir)?;
    let size = match tree_size {
        Some(s) => s,
        None => default_size(&cps, "tree_size")?,
    };
    let leaves = read_leaf_hashes(data_dir)?;
    if size > leaves.len() || index >= size {
        return Err(LedgerError::InvalidInput(format!(
            "need index < tree_size <= {} (got index {index}, tree_size {size})",
            leaves.len()
        )));
    }
    let pruned = || {
        LedgerError::InvalidInput(format!(
            "record {index} was pruned by retention (records 0..{} are gone)",
            leaves.first()
        ))
    };
    let leaf = leaves.leaf(index).ok_or_else(pruned)?;
    let path = leaves.inclusion_proof(index, size).ok_or_else(pruned)?;
    let root = leaves.root(size).ok_or_else(pruned)?;
    Ok(InclusionProof {
        index,
        tree_size: size,
        leaf_hash: hex::encode(leaf),
        proof: path.iter().map(hex::encode).collect(),
        root: hex::encode(root),
        checkpoint: cps.iter().rev().find(|c| c.tree_size == size).cloned(),
    })
}

/// Consistency proof between tree sizes `first` and `second` (default: the latest checkpoint).
pub fn consistency_proof(
    data_dir: &Path,
    first: u64,
    second: Option<u64>,
) -> Result<ConsistencyProof, LedgerError> {
    let cps = read_checkpoints(data_dir)?;
    let second = match second {
        Some(s) => s,
        None => default_size(&cps, "second")?,
    };
    let leaves = read_leaf_hashes(data_dir)?;
    if first == 0 || first > second || second > leaves.len() {
        return Err(LedgerError::InvalidInput(format!(
            "need 1 <= first <= second <= {} (got first {first}, second {second})",
            leaves.len()
        )));
    }
    let pruned = || {
        LedgerError::InvalidInput(format!(
            "tree size {first} lies in the range pruned by retention (records 0..{} are gone); use a first size of {} or more",
            leaves.first(),
            leaves.first()
        ))
    };
    let path = leaves.consistency_proof(first, second).ok_or_else(pruned)?;
    let first_root = leaves.root(first).ok_or_else(pruned)?;
    let second_root = leaves.root(second).ok_or_else(pruned)?;
    Ok(ConsistencyProof {
        first,
        second,
        first_root: hex::encode(first_root),
        second_root: hex::encode(second_root),
        proof: path.iter().map(hex::encode).collect(),
        first_checkpoint: cps.iter().rev().find(|c| c.tree_size == first).cloned(),
        second_checkpoint: cps.iter().rev().find(|c| c.tree_size == second).cloned(),
    })
}
