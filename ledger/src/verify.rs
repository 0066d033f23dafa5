//! Offline, read-only verification of a data directory (`ledger/` + `keys/`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, CHECKPOINTS_FILE, ParsedNote};
use crate::error::{IoContext, LedgerError, VerifyFailure};
use crate::keys::{self, KeyRecordPayload, PUBLIC_KEY_LEN};
use crate::merkle::Frontier;
use crate::record::{FrameError, FrameReader, RecordKind};
use crate::segment::{ChainState, list_segments};

/// Result of [`verify_dir`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Ledger origin (from record 0).
    pub origin: String,
    /// Records that passed every check (stops at the first failure).
    pub records: u64,
    /// Checkpoints whose signature and Merkle root verified.
    pub checkpoints: u64,
    /// Verified records per kind (lowercase kind name).
    pub records_by_kind: BTreeMap<String, u64>,
    /// The first failure, if any. `None` means everything checked is intact.
    pub first_failure: Option<VerifyFailure>,
    /// Segment files examined.
    pub segments: u64,
    /// Tree size of the latest verified checkpoint (records covered by a signature).
    pub signed_records: u64,
    /// Key ID (8 hex digits, signed-note style) per key epoch seen in Key records.
    pub key_ids: BTreeMap<u32, String>,
}

impl VerifyReport {
    /// No failure found.
    pub fn is_ok(&self) -> bool {
        self.first_failure.is_none()
    }

    /// Records after the latest verified checkpoint (not covered by any signature).
    pub fn unsigned_tail(&self) -> u64 {
        self.records.saturating_sub(self.signed_records)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Dunes ledger verification")?;
        writeln!(
            f,
            "  origin:        {}",
            if self.origin.is_empty() {
                "(unknown)"
            } else {
                &self.origin
            }
        )?;
        write!(f, "  records:       {}", self.records)?;
        if !self.records_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .records_by_kind
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "  segments:      {}", self.segments)?;
        writeln!(
            f,
            "  checkpoints:   {} verified (latest covers {} records)",
            self.checkpoints, self.signed_records
        )?;
        for (epoch, id) in &self.key_ids {
            writeln!(
                f,
                "  key epoch {epoch}:   ML-DSA-65, key id {id} (compare with the published key id)"
            )?;
        }
        writeln!(
            f,
            "  checked:       frame framing and trailers, record hashes, payload hashes, contiguous indexes,\n                 prev_hash chain, origin/key-epoch/refs rules, Key records vs keys/*.pub,\n                 checkpoint note syntax, ML-DSA-65 signatures, Merkle roots, checkpoint monotonicity"
        )?;
        match &self.first_failure {
            None => {
                let tail = self.unsigned_tail();
                if tail > 0 {
                    writeln!(
                        f,
                        "  unsigned tail: {tail} records after the latest checkpoint (hash-chained but not yet signed)"
                    )?;
                } else {
                    writeln!(f, "  unsigned tail: 0 records")?;
                }
                write!(f, "RESULT: OK")
            }
            Some(fail) => {
                writeln!(f, "  (counts above stop at the first failure)")?;
                write!(f, "RESULT: FAILED: {fail}")
            }
        }
    }
}

/// A checkpoint entry waiting to be checked when the record stream reaches its tree size.
enum CpItem {
    Note {
        ordinal: u64,
        offset: u64,
        parsed: Box<ParsedNote>,
    },
    Bad {
        offset: u64,
        reason: String,
    },
}

impl CpItem {
    /// Position in the record stream at which the item is checked.
    fn due_at(&self) -> u64 {
        match self {
            CpItem::Note { parsed, .. } => parsed.checkpoint.tree_size,
            CpItem::Bad { .. } => 0,
        }
    }
}

/// Public key of an epoch, cross-checked against its Key record.
struct EpochKey {
    public_key: Vec<u8>,
    introduced_at: u64,
}

struct Verifier {
    ledger_dir: PathBuf,
    keys_dir: PathBuf,
    cp_path: PathBuf,
    report: VerifyReport,
    chain: ChainState,
    frontier: Frontier,
    keys: BTreeMap<u32, EpochKey>,
    pending: VecDeque<CpItem>,
    prev_cp: Option<(u64, i64)>,
}

/// Internal control flow: stop at the first failure or on an I/O error.
enum Stop {
    Failed(VerifyFailure),
    Error(LedgerError),
}

impl From<LedgerError> for Stop {
    fn from(e: LedgerError) -> Self {
        Stop::Error(e)
    }
}

/// Verify a data directory containing `ledger/` and `keys/`, offline and read-only.
///
/// Only public keys are read. Returns `Err` for I/O problems (e.g. a missing `ledger/`
/// directory or an unreadable file); integrity problems are reported in
/// [`VerifyReport::first_failure`]. Run it on a quiescent copy or while no writer is active:
/// a crash-torn tail that `Ledger::open` would repair is reported as a failure here.
pub fn verify_dir(data_dir: &Path) -> Result<VerifyReport, LedgerError> {
    let ledger_dir = data_dir.join("ledger");
    if !ledger_dir.is_dir() {
        return Err(LedgerError::io(
            &ledger_dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "ledger directory not found"),
        ));
    }
    let mut v = Verifier {
        keys_dir: data_dir.join("keys"),
        cp_path: ledger_dir.join(CHECKPOINTS_FILE),
        ledger_dir,
        report: VerifyReport {
            origin: String::new(),
            records: 0,
            checkpoints: 0,
            records_by_kind: BTreeMap::new(),
            first_failure: None,
            segments: 0,
            signed_records: 0,
            key_ids: BTreeMap::new(),
        },
        chain: ChainState::new(),
        frontier: Frontier::new(),
        keys: BTreeMap::new(),
        pending: VecDeque::new(),
        prev_cp: None,
    };
    match v.run() {
        Ok(()) => {}
        Err(Stop::Failed(f)) => v.report.first_failure = Some(f),
        Err(Stop::Error(e)) => return Err(e),
    }
    Ok(v.report)
}

impl Verifier {
    fn run(&mut self) -> Result<(), Stop> {
        self.load_checkpoints()?;
        self.check_due_checkpoints()?;
        for (first, path) in list_segments(&self.ledger_dir)? {
            self.report.segments += 1;
            self.verify_segment(first, &path)?;
        }
        // Anything still pending claims more records than exist.
        if let Some(item) = self.pending.pop_front() {
            let records = self.chain.next_index;
            return Err(match item {
                CpItem::Note {
                    ordinal,
                    offset,
                    parsed,
                } => Stop::Failed(VerifyFailure::new(
                    None,
                    &self.cp_path,
                    Some(offset),
                    format!(
                        "checkpoint #{ordinal} covers {} records, but the ledger has only {records} (signed records are missing)",
                        parsed.checkpoint.tree_size
                    ),
                )),
                CpItem::Bad { offset, reason, .. } => Stop::Failed(VerifyFailure::new(
                    None,
                    &self.cp_path,
                    Some(offset),
                    reason,
                )),
            });
        }
        Ok(())
    }

    fn load_checkpoints(&mut self) -> Result<(), Stop> {
        let bytes = match fs::read(&self.cp_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LedgerError::io(&self.cp_path, e).into()),
        };
        let scan = checkpoint::scan_entries(&bytes);
        let mut ordinal = 0u64;
        for (offset, note) in scan.entries {
            let item = match checkpoint::parse_note(&note) {
                Ok(parsed) => CpItem::Note {
                    ordinal,
                    offset,
                    parsed: Box::new(parsed),
                },
                Err(r) => CpItem::Bad {
                    offset,
                    reason: format!("checkpoint #{ordinal}: {r}"),
                },
            };
            self.pending.push_back(item);
            ordinal += 1;
        }
        if let Some((offset, reason, truncated)) = scan.problem {
            let what = if truncated { " (torn write?)" } else { "" };
            self.pending.push_back(CpItem::Bad {
                offset,
                reason: format!("checkpoint #{ordinal}: {reason}{what}"),
            });
        }
        Ok(())
    }

    /// Check every pending checkpoint that is due at the current record count.
    fn check_due_checkpoints(&mut self) -> Result<(), Stop> {
        let count = self.chain.next_index;
        while self.pending.front().is_some_and(|i| i.due_at() <= count) {
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            match item {
                CpItem::Bad { offset, reason, .. } => {
                    return Err(Stop::Failed(VerifyFailure::new(
                        None,
                        &self.cp_path,
                        Some(offset),
                        reason,
                    )));
                }
                CpItem::Note {
                    ordinal,
                    offset,
                    parsed,
                } => self.check_checkpoint(ordinal, offset, &parsed)?,
            }
        }
        Ok(())
    }

    fn check_checkpoint(
        &mut self,
        ordinal: u64,
        offset: u64,
        note: &ParsedNote,
    ) -> Result<(), Stop> {
        let cp = &note.checkpoint;
        let fail = |r: String| {
            Stop::Failed(VerifyFailure::new(
                None,
                &self.cp_path,
                Some(offset),
                format!("checkpoint #{ordinal} (tree size {}): {r}", cp.tree_size),
            ))
        };
        if let Some((prev_size, prev_time)) = self.prev_cp {
            if cp.tree_size < prev_size {
                return Err(fail(format!("tree size decreases from {prev_size}")));
            }
            if cp.timestamp_micros < prev_time {
                return Err(fail(format!(
                    "time {} goes backwards from {prev_time}",
                    cp.timestamp_micros
                )));
            }
        }
        if cp.tree_size != self.chain.next_index {
            // Only reachable for a decreasing tree size, handled above; keep a precise message.
            return Err(fail(format!(
                "checked at record count {}",
                self.chain.next_index
            )));
        }
        if cp.origin != self.report.origin {
            return Err(fail(format!(
                "origin {:?} differs from the ledger origin {:?}",
                cp.origin, self.report.origin
            )));
        }
        let Some(key) = self
            .keys
            .get(&cp.key_epoch)
            .filter(|k| k.introduced_at < cp.tree_size)
        else {
            return Err(fail(format!(
                "signed with key epoch {} that no Key record among its records introduces",
                cp.key_epoch
            )));
        };
        let Some(sig) = note.signature_for(&cp.origin, &key.public_key) else {
            return Err(fail(format!(
                "no signature line from key {:?} with key id {}",
                cp.origin,
                hex::encode(keys::key_id(&cp.origin, &key.public_key))
            )));
        };
        let Some(vk) = keys::decode_public_key(&key.public_key) else {
            return Err(fail("public key cannot be decoded".into()));
        };
        if !keys::verify_signature(&vk, note.body(), &sig.signature) {
            return Err(fail(format!(
                "ML-DSA-65 signature does not verify with key epoch {}",
                cp.key_epoch
            )));
        }
        if self.frontier.root() != cp.root {
            return Err(fail(
                "root does not match the Merkle root recomputed over the records".into(),
            ));
        }
        self.prev_cp = Some((cp.tree_size, cp.timestamp_micros));
        self.report.checkpoints += 1;
        self.report.signed_records = cp.tree_size;
        Ok(())
    }

    fn verify_segment(&mut self, first: u64, path: &Path) -> Result<(), Stop> {
        let expected = self.chain.next_index;
        if first != expected {
            return Err(Stop::Failed(VerifyFailure::new(
                Some(expected),
                path,
                None,
                format!(
                    "segment file name says first index {first}, but the previous segments end at {expected}"
                ),
            )));
        }
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let mut reader = FrameReader::new(BufReader::with_capacity(1 << 20, file), 0, len);
        loop {
            let index = self.chain.next_index;
            let frame = match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => f,
                Err(FrameError::Io(e)) => return Err(LedgerError::io(path, e).into()),
                Err(FrameError::Truncated { offset, reason }) => {
                    return Err(Stop::Failed(VerifyFailure::new(
                        Some(index),
                        path,
                        Some(offset),
                        format!(
                            "{reason} (torn write? opening the ledger repairs an unsigned torn tail)"
                        ),
                    )));
                }
                Err(FrameError::Invalid { offset, reason }) => {
                    return Err(Stop::Failed(VerifyFailure::new(
                        Some(index),
                        path,
                        Some(offset),
                        reason,
                    )));
                }
            };
            let offset = frame.offset;
            let fail =
                |r: String| Stop::Failed(VerifyFailure::new(Some(index), path, Some(offset), r));
            self.chain
                .check(&frame.header, &frame.record_hash)
                .map_err(fail)?;
            let kind = frame.header.kind();
            if index == 0 {
                self.report.origin = String::from_utf8_lossy(frame.header.origin()).into_owned();
            }
            if kind == RecordKind::Key {
                let epoch = frame.header.key_epoch();
                let pk =
                    KeyRecordPayload::parse_and_check(frame.payload, epoch, &self.report.origin)
                        .map_err(fail)?;
                let pub_path = keys::public_key_path(&self.keys_dir, epoch);
                let on_disk = match keys::read_public_key_file(&pub_path) {
                    Ok(b) => b,
                    Err(LedgerError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Err(Stop::Failed(VerifyFailure::new(
                            Some(index),
                            &pub_path,
                            None,
                            format!(
                                "public key file for key epoch {epoch} (introduced by this Key record) is missing"
                            ),
                        )));
                    }
                    Err(e) => return Err(e.into()),
                };
                if on_disk.len() != PUBLIC_KEY_LEN || on_disk != pk {
                    return Err(Stop::Failed(VerifyFailure::new(
                        Some(index),
                        &pub_path,
                        None,
                        format!(
                            "public key file ({} bytes) does not match the key recorded by Key record {index} for epoch {epoch}",
                            on_disk.len()
                        ),
                    )));
                }
                self.report
                    .key_ids
                    .insert(epoch, hex::encode(keys::key_id(&self.report.origin, &pk)));
                self.keys.insert(
                    epoch,
                    EpochKey {
                        public_key: pk,
                        introduced_at: index,
                    },
                );
            }
            self.frontier.push(frame.record_hash);
            self.report.records += 1;
            *self
                .report
                .records_by_kind
                .entry(kind.to_string())
                .or_insert(0) += 1;
            self.check_due_checkpoints()?;
        }
        Ok(())
    }
}
