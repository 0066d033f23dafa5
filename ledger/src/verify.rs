//! Offline, read-only verification of a data directory (`ledger/` + `keys/`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, CHECKPOINTS_FILE, Checkpoint, ParsedNote};
use crate::error::{IoContext, LedgerError, VerifyFailure};
use crate::keys;
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
    /// Ed25519 key ID per hybrid key epoch.
    pub ed25519_key_ids: BTreeMap<u32, String>,
    /// What was verified: `"data directory"` or `"export bundle"`.
    pub source: String,
    /// Index of the first record checked (0 unless an export bundle starts later).
    pub first_index: u64,
    /// Records whose payload has been redacted (each authorised by a redaction record).
    pub redacted: Vec<u64>,
    /// Revoked key epochs and the index of their revocation record.
    pub revoked: BTreeMap<u32, u64>,
    /// Checkpoints that also carried a verified Ed25519 signature (hybrid).
    pub hybrid_checkpoints: u64,
    /// Consistency proofs between consecutive checkpoints that verified (bundles).
    pub consistency_proofs: u64,
    /// Files whose SHA-256 digest matched the signed manifest (bundles).
    pub manifest_files: u64,
    /// Trusted (out-of-band) checkpoints this ledger was proved to extend.
    pub trusted_checkpoints: Vec<TrustedResult>,
    /// Whether records after the last checkpoint were accepted (`--allow-unsigned-tail`).
    pub unsigned_tail_allowed: bool,
    /// Evidence bundles: the indexes of the records proved by inclusion proofs.
    pub proved_indexes: Vec<u64>,
    /// Records `0..pruned` were removed by retention; a verified tombstone stands for them
    /// (data directories only; 0 when nothing was pruned).
    pub pruned: u64,
    /// The verified tombstone's Merkle root of the pruned records (hex).
    pub pruned_root: Option<String>,
}

/// A trusted checkpoint that the ledger was proved to extend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrustedResult {
    /// Where the trusted checkpoint came from.
    pub source: PathBuf,
    /// Its tree size.
    pub tree_size: u64,
    /// How: `"root recomputed"` (the records are present) or `"consistency proof"`.
    pub how: String,
}

/// What verification must accept or prove beyond the format's rules.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept records after the last signed checkpoint (a live ledger between two
    /// checkpoints). Off by default: such records are covered by no signature, so anyone who
    /// can write the files could have written them, and verification fails.
    pub allow_unsigned_tail: bool,
    /// Checkpoints obtained earlier out of band (`dunes checkpoint publish`): the ledger must
    /// be a consistent extension of each (same Merkle root at that size), which catches a
    /// rollback (fewer records) or a fork (a rewritten, re-signed history).
    pub trusted: Vec<TrustedCheckpoint>,
}

/// A signed checkpoint kept out of the writer's reach, used as a trust anchor.
#[derive(Debug, Clone)]
pub struct TrustedCheckpoint {
    /// The file it was read from.
    pub source: PathBuf,
    pub(crate) note: ParsedNote,
}

impl TrustedCheckpoint {
    /// Read a trusted checkpoint: a file holding one signed checkpoint note (as written by
    /// `dunes checkpoint publish`), or a `checkpoints.log` (its last entry is used).
    pub fn load(path: &Path) -> Result<TrustedCheckpoint, LedgerError> {
        let bytes = fs::read(path).at(path)?;
        let text = if bytes.starts_with(&checkpoint::ENTRY_MAGIC) {
            let scan = checkpoint::scan_entries(&bytes);
            match (scan.problem, scan.entries.into_iter().last()) {
                (None, Some((_, note))) => note,
                (Some((offset, reason, _)), _) => {
                    return Err(LedgerError::InvalidInput(format!(
                        "trusted checkpoint file {} @ byte {offset}: {reason}",
                        path.display()
                    )));
                }
                (None, None) => {
                    return Err(LedgerError::InvalidInput(format!(
                        "trusted checkpoint file {} holds no checkpoint",
                        path.display()
                    )));
                }
            }
        } else {
            String::from_utf8(bytes).map_err(|_| {
                LedgerError::InvalidInput(format!(
                    "trusted checkpoint file {} is not UTF-8",
                    path.display()
                ))
            })?
        };
        Self::from_note(path, &text)
    }

    /// Parse a signed checkpoint note (its signature is checked during verification, against
    /// the ledger's key of the epoch it names).
    pub fn from_note(source: &Path, note: &str) -> Result<TrustedCheckpoint, LedgerError> {
        let parsed = checkpoint::parse_note(note).map_err(|r| {
            LedgerError::InvalidInput(format!(
                "trusted checkpoint {} is not a valid checkpoint note: {r}",
                source.display()
            ))
        })?;
        if parsed.checkpoint.tree_size == 0 {
            return Err(LedgerError::InvalidInput(format!(
                "trusted checkpoint {} has tree size 0",
                source.display()
            )));
        }
        Ok(TrustedCheckpoint {
            source: source.to_path_buf(),
            note: parsed,
        })
    }

    /// The checkpoint (unverified until a verification run checks it).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.note.checkpoint
    }
}

impl VerifyReport {
    pub(crate) fn empty(source: &str) -> Self {
        Self {
            origin: String::new(),
            records: 0,
            checkpoints: 0,
            records_by_kind: BTreeMap::new(),
            first_failure: None,
            segments: 0,
            signed_records: 0,
            key_ids: BTreeMap::new(),
            ed25519_key_ids: BTreeMap::new(),
            source: source.to_string(),
            first_index: 0,
            redacted: Vec::new(),
            revoked: BTreeMap::new(),
            hybrid_checkpoints: 0,
            consistency_proofs: 0,
            manifest_files: 0,
            trusted_checkpoints: Vec::new(),
            unsigned_tail_allowed: false,
            proved_indexes: Vec::new(),
            pruned: 0,
            pruned_root: None,
        }
    }

    /// No failure found.
    pub fn is_ok(&self) -> bool {
        self.first_failure.is_none()
    }

    /// Records after the latest verified checkpoint (not covered by any signature).
    pub fn unsigned_tail(&self) -> u64 {
        (self.first_index + self.records).saturating_sub(self.signed_records.max(self.first_index))
    }
}

/// The first `n` indexes, comma-separated, then ", ..." if there are more.
fn first_of(indexes: &[u64], n: usize) -> String {
    let list: Vec<String> = indexes.iter().take(n).map(|i| i.to_string()).collect();
    let more = if indexes.len() > n { ", ..." } else { "" };
    format!("{}{more}", list.join(", "))
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Dunes ledger verification ({})", self.source)?;
        writeln!(
            f,
            "  origin:        {}",
            if self.origin.is_empty() {
                "(unknown)"
            } else {
                &self.origin
            }
        )?;
        if self.pruned > 0 {
            writeln!(
                f,
                "  pruned:        records 0 .. {} removed by retention; signed tombstone verified (root {}, prev_hash and frontier bound to the checkpoints of the kept records)",
                self.pruned - 1,
                self.pruned_root.as_deref().unwrap_or("?")
            )?;
        } else if self.first_index > 0 {
            writeln!(
                f,
                "  range:         records {} .. {}",
                self.first_index,
                (self.first_index + self.records).saturating_sub(1)
            )?;
        }
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
        let evidence = self.source == "evidence bundle";
        if evidence {
            writeln!(f, "  indexes:       {}", first_of(&self.proved_indexes, 40))?;
        } else {
            writeln!(f, "  segments:      {}", self.segments)?;
        }
        writeln!(
            f,
            "  checkpoints:   {} verified (latest covers {} records)",
            self.checkpoints, self.signed_records
        )?;
        if self.hybrid_checkpoints > 0 {
            writeln!(
                f,
                "  hybrid:        {} checkpoints also carried a verified Ed25519 signature",
                self.hybrid_checkpoints
            )?;
        }
        for (epoch, id) in &self.key_ids {
            let ed = self
                .ed25519_key_ids
                .get(epoch)
                .map(|e| format!(" + Ed25519 key id {e}"))
                .unwrap_or_default();
            let rev = self
                .revoked
                .get(epoch)
                .map(|i| format!(", REVOKED by record {i}"))
                .unwrap_or_default();
            writeln!(
                f,
                "  key epoch {epoch}:   ML-DSA-65 key id {id}{ed}{rev} (compare with the published key id)"
            )?;
        }
        if !self.redacted.is_empty() {
            writeln!(
                f,
                "  redacted:      {} records (payload erased, hash kept): {}",
                self.redacted.len(),
                first_of(&self.redacted, 20)
            )?;
        }
        if self.source == "export bundle" {
            writeln!(
                f,
                "  bundle:        signed manifest verified, {} file digests matched, {} consistency proofs verified",
                self.manifest_files, self.consistency_proofs
            )?;
        }
        for t in &self.trusted_checkpoints {
            writeln!(
                f,
                "  trusted:       checkpoint at tree size {} ({}) is a prefix of this ledger ({})",
                t.tree_size,
                t.source.display(),
                t.how
            )?;
        }
        if evidence {
            writeln!(
                f,
                "  evidence:      signed manifest verified, {} file digests matched; every record proved a leaf of the signed tree of size {} (RFC 9162 inclusion proofs)",
                self.manifest_files, self.signed_records
            )?;
            writeln!(
                f,
                "  checked:       frame framing and trailers, record hashes, payload hashes (unless redacted), origin/key-epoch/refs rules,\n                 key rotation signatures from record 0, revocations, redaction authorisations, checkpoint note syntax,\n                 ML-DSA-65 (+ Ed25519 when hybrid) signatures of the checkpoint and the manifest, inclusion proofs\n  not proved:    records outside the bundle (no hash chain between the chosen records; compare the checkpoint with a published one)"
            )?;
        } else {
            writeln!(
                f,
                "  checked:       frame framing and trailers, record hashes, payload hashes (unless redacted), contiguous indexes,\n                 prev_hash chain, origin/key-epoch/refs rules, key rotation signatures, revocations,\n                 redaction authorisations, Key records vs keys/*.pub, checkpoint note syntax,\n                 ML-DSA-65 (+ Ed25519 when hybrid) signatures, Merkle roots, checkpoint monotonicity"
            )?;
        }
        match &self.first_failure {
            None => {
                let tail = self.unsigned_tail();
                if tail > 0 {
                    writeln!(
                        f,
                        "  unsigned tail: {tail} records after the latest checkpoint, ACCEPTED by --allow-unsigned-tail (hash-chained but covered by no signature)"
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

/// Where verification starts: record 0 of a data dir, or the first record of a bundle range.
pub(crate) struct StartState {
    pub chain: ChainState,
    pub frontier: Frontier,
}

pub(crate) struct Verifier {
    /// Trusted checkpoints not yet reached, by tree size.
    trusted: VecDeque<TrustedCheckpoint>,
    /// Trusted checkpoints outside the records checked (before a bundle's start, or beyond
    /// its end / the ledger's end), for the caller to settle.
    pub unreached_trusted: Vec<TrustedCheckpoint>,
    ledger_dir: PathBuf,
    keys_dir: PathBuf,
    cp_path: PathBuf,
    pub report: VerifyReport,
    pub(crate) chain: ChainState,
    frontier: Frontier,
    pending: VecDeque<CpItem>,
    prev_cp: Option<(u64, i64)>,
    /// (tree size, root) of every verified checkpoint, in order.
    pub verified_roots: Vec<(u64, [u8; 32])>,
    /// Fail on records after the last verified checkpoint (data dirs without
    /// `--allow-unsigned-tail`; bundles settle their tail with `proofs/tail.json`).
    pub check_tail: bool,
    /// Records per kind code, folded into `report.records_by_kind` at the end (no map
    /// update per record).
    kind_counts: [u64; 256],
    /// A data dir's retention tombstone, its signature checked at `signed_at` records.
    pub(crate) tombstone: Option<crate::retention::Loaded>,
    tombstone_checked: bool,
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

/// Verify a data directory containing `ledger/` and `keys/`, offline and read-only, with the
/// default (strict) options: records after the last checkpoint fail. See [`verify_dir_with`].
pub fn verify_dir(data_dir: &Path) -> Result<VerifyReport, LedgerError> {
    verify_dir_with(data_dir, &VerifyOptions::default())
}

/// Verify a data directory containing `ledger/` and `keys/`, offline and read-only.
///
/// Only public keys are read. Returns `Err` for I/O problems (e.g. a missing `ledger/`
/// directory or an unreadable file); integrity problems are reported in
/// [`VerifyReport::first_failure`]. Run it on a quiescent copy or while no writer is active:
/// a crash-torn tail that `Ledger::open` would repair is reported as a failure here.
/// See [`crate::verify_path`] for a path that may also be an export bundle.
pub fn verify_dir_with(data_dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, LedgerError> {
    let ledger_dir = data_dir.join("ledger");
    if !ledger_dir.is_dir() {
        return Err(LedgerError::io(
            &ledger_dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "ledger directory not found"),
        ));
    }
    let tombstone = match crate::retention::load(&ledger_dir) {
        Ok(t) => t,
        Err(LedgerError::Corrupt { failure }) => {
            let mut report = VerifyReport::empty("data directory");
            report.first_failure = Some(*failure);
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let start = tombstone
        .as_ref()
        .map(crate::retention::Loaded::start_state);
    let mut v = Verifier::new(data_dir, "data directory", start, opts);
    if let Some(t) = &tombstone {
        v.report.pruned = t.pruned();
        v.report.pruned_root = Some(t.tombstone.root.clone());
    }
    v.tombstone = tombstone;
    v.check_tail = !opts.allow_unsigned_tail;
    v.run_to_end()?;
    v.report.unsigned_tail_allowed = opts.allow_unsigned_tail;
    if v.report.first_failure.is_none()
        && let Some(t) = v.unreached_trusted.first()
        && t.checkpoint().tree_size < v.report.pruned
    {
        v.report.first_failure = Some(VerifyFailure::new(
            None,
            &t.source,
            None,
            format!(
                "trusted checkpoint (tree size {}) lies in the range pruned by retention (records 0..{}): its root can no longer be recomputed; check against a checkpoint of tree size {} or more",
                t.checkpoint().tree_size,
                v.report.pruned - 1,
                v.report.pruned
            ),
        ));
    }
    if v.report.first_failure.is_none()
        && let Some(t) = v.unreached_trusted.first()
    {
        let cp = t.checkpoint();
        v.report.first_failure = Some(VerifyFailure::new(
            None,
            &t.source,
            None,
            format!(
                "rollback: the trusted checkpoint covers {} records, but the ledger has only {}: signed records were removed",
                cp.tree_size, v.report.records
            ),
        ));
    }
    Ok(v.report)
}

impl Verifier {
    pub(crate) fn new(
        root: &Path,
        source: &str,
        start: Option<StartState>,
        opts: &VerifyOptions,
    ) -> Self {
        let ledger_dir = root.join("ledger");
        let (chain, frontier) = match start {
            Some(s) => (s.chain, s.frontier),
            None => (ChainState::new(), Frontier::new()),
        };
        let mut report = VerifyReport::empty(source);
        report.first_index = chain.next_index;
        if let Some(o) = &chain.origin {
            report.origin = String::from_utf8_lossy(o).into_owned();
        }
        let mut trusted = opts.trusted.clone();
        trusted.sort_by_key(|t| t.note.checkpoint.tree_size);
        Verifier {
            trusted: trusted.into(),
            unreached_trusted: Vec::new(),
            check_tail: false,
            kind_counts: [0; 256],
            keys_dir: root.join("keys"),
            cp_path: ledger_dir.join(CHECKPOINTS_FILE),
            ledger_dir,
            report,
            chain,
            frontier,
            pending: VecDeque::new(),
            prev_cp: None,
            verified_roots: Vec::new(),
            tombstone: None,
            tombstone_checked: false,
        }
    }

    /// Run; integrity failures go to `report.first_failure`, I/O errors are returned.
    pub(crate) fn run_to_end(&mut self) -> Result<(), LedgerError> {
        let res = self.run();
        for (code, n) in self.kind_counts.iter().enumerate() {
            if let (Some(kind), true) = (RecordKind::from_u8(code as u8), *n > 0) {
                *self
                    .report
                    .records_by_kind
                    .entry(kind.to_string())
                    .or_insert(0) += n;
            }
        }
        self.kind_counts = [0; 256];
        self.report.redacted = self.chain.redacted.clone();
        self.report.revoked = self.chain.revoked.clone();
        match res {
            Ok(()) => Ok(()),
            Err(Stop::Failed(f)) => {
                self.report.first_failure = Some(f);
                Ok(())
            }
            Err(Stop::Error(e)) => Err(e),
        }
    }

    fn run(&mut self) -> Result<(), Stop> {
        // Keys of epochs before the start of a bundle range must match keys/ too.
        let before: Vec<(u32, u64, crate::keys::EpochKeys)> = self
            .chain
            .keys
            .values()
            .map(|k| (k.keys.epoch, k.introduced_at, k.keys.clone()))
            .collect();
        for (epoch, at, k) in before {
            self.check_key_files(at, epoch, &k)?;
        }
        self.load_checkpoints()?;
        self.check_due_checkpoints()?;
        let pruned = self
            .tombstone
            .as_ref()
            .map_or(0, crate::retention::Loaded::pruned);
        for (first, path) in list_segments(&self.ledger_dir)? {
            if first < pruned {
                // Left by a prune interrupted after its tombstone was written (§2.10).
                continue;
            }
            self.report.segments += 1;
            self.verify_segment(first, &path)?;
        }
        if let Some(i) = self.chain.unauthorised_redactions.iter().next() {
            return Err(Stop::Failed(VerifyFailure::new(
                Some(*i),
                &self.ledger_dir,
                None,
                "record is marked REDACTED, but no redaction record refers to it",
            )));
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
        self.unreached_trusted.extend(self.trusted.drain(..));
        if let Some(t) = &self.tombstone
            && !self.tombstone_checked
        {
            return Err(Stop::Failed(VerifyFailure::new(
                None,
                &t.note_path,
                None,
                format!(
                    "the tombstone was signed when the ledger had {} records, but only {} are present (rollback)",
                    t.signed_at, self.chain.next_index
                ),
            )));
        }
        let records = self.chain.next_index;
        let signed = self.report.signed_records.max(self.chain.start);
        if self.check_tail && records > signed {
            let what = if self.report.checkpoints == 0 {
                format!(
                    "there is no signed checkpoint at all ({CHECKPOINTS_FILE} is missing or empty)"
                )
            } else {
                format!("the last signed checkpoint covers {signed}")
            };
            return Err(Stop::Failed(VerifyFailure::new(
                Some(signed),
                &self.ledger_dir,
                None,
                format!(
                    "unsigned records: records {signed}..={} ({} records) are covered by no signature ({what}); anyone who can write the files could have written or rewritten them. A live ledger between two checkpoints may be checked with --allow-unsigned-tail",
                    records - 1,
                    records - signed
                ),
            )));
        }
        Ok(())
    }

    /// Rules 4–7 of §3.4 for a note over the records checked so far: the ledger's origin,
    /// the epoch in force and not revoked, and its signature lines. `Ok(hybrid)`.
    fn check_signed(&self, note: &ParsedNote) -> Result<bool, String> {
        let cp = &note.checkpoint;
        if cp.origin != self.report.origin {
            return Err(format!(
                "origin {:?} differs from the ledger origin {:?}",
                cp.origin, self.report.origin
            ));
        }
        let key = self.chain.check_checkpoint_epoch(cp.key_epoch)?;
        checkpoint::verify_note_signatures(note, &cp.origin, &key.keys)?;
        Ok(key.keys.ed25519.is_some())
    }

    /// Merkle root over the records checked so far (and the frontier before them).
    pub(crate) fn current_root(&self) -> [u8; 32] {
        self.frontier.root()
    }

    /// A trusted checkpoint at the current record count: signed by this ledger's key of the
    /// epoch in force, and its root equals the recomputed one.
    fn check_trusted(&mut self, t: &TrustedCheckpoint) -> Result<(), Stop> {
        let cp = t.checkpoint();
        let fail = |r: String| {
            Stop::Failed(VerifyFailure::new(
                None,
                &t.source,
                None,
                format!("trusted checkpoint (tree size {}): {r}", cp.tree_size),
            ))
        };
        self.check_signed(&t.note).map_err(|r| {
            fail(format!(
                "{r} (not signed by this ledger's key: forged or replaced keys?)"
            ))
        })?;
        if self.frontier.root() != cp.root {
            return Err(fail(
                "fork: the Merkle root recomputed over the ledger's first records differs from the trusted root: the history was rewritten after this checkpoint was published".into(),
            ));
        }
        self.report.trusted_checkpoints.push(TrustedResult {
            source: t.source.clone(),
            tree_size: cp.tree_size,
            how: "root recomputed from the records".into(),
        });
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
                } => {
                    if parsed.checkpoint.tree_size < self.chain.start && self.tombstone.is_some() {
                        // A checkpoint of pruned records left by an interrupted prune (§2.10).
                        continue;
                    }
                    if parsed.checkpoint.tree_size < self.chain.start {
                        return Err(Stop::Failed(VerifyFailure::new(
                            None,
                            &self.cp_path,
                            Some(offset),
                            format!(
                                "checkpoint #{ordinal} (tree size {}) precedes the first record {} of the bundle",
                                parsed.checkpoint.tree_size, self.chain.start
                            ),
                        )));
                    }
                    self.check_checkpoint(ordinal, offset, &parsed)?
                }
            }
        }
        if let Some(t) = &self.tombstone
            && !self.tombstone_checked
            && t.signed_at == count
        {
            t.check_signature(&self.chain).map_err(|r| {
                Stop::Failed(VerifyFailure::new(
                    None,
                    &t.note_path,
                    None,
                    format!("tombstone signature: {r}"),
                ))
            })?;
            self.tombstone_checked = true;
        }
        while self
            .trusted
            .front()
            .is_some_and(|t| t.note.checkpoint.tree_size <= count)
        {
            let Some(t) = self.trusted.pop_front() else {
                break;
            };
            if t.note.checkpoint.tree_size < count {
                // Before the first record checked (a bundle starting later).
                self.unreached_trusted.push(t);
            } else {
                self.check_trusted(&t)?;
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
        if self.check_signed(note).map_err(&fail)? {
            self.report.hybrid_checkpoints += 1;
        }
        if self.frontier.root() != cp.root {
            return Err(fail(
                "root does not match the Merkle root recomputed over the records".into(),
            ));
        }
        self.prev_cp = Some((cp.tree_size, cp.timestamp_micros));
        self.verified_roots.push((cp.tree_size, cp.root));
        self.report.checkpoints += 1;
        self.report.signed_records = cp.tree_size;
        Ok(())
    }

    /// `keys/ledger-mldsa65-<epoch>.pub` (and the Ed25519 file for hybrid epochs) must equal
    /// the key recorded by the Key record at `index`.
    fn check_key_files(
        &mut self,
        index: u64,
        epoch: u32,
        k: &crate::keys::EpochKeys,
    ) -> Result<(), Stop> {
        let mut files = vec![(
            keys::public_key_path(&self.keys_dir, epoch),
            &k.public_key,
            "ML-DSA-65",
        )];
        if let Some(ed) = &k.ed25519 {
            files.push((
                keys::ed25519_public_key_path(&self.keys_dir, epoch),
                ed,
                "Ed25519",
            ));
        }
        for (pub_path, pk, alg) in files {
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
                            "{alg} public key file for key epoch {epoch} (introduced by Key record {index}) is missing"
                        ),
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if on_disk != *pk {
                return Err(Stop::Failed(VerifyFailure::new(
                    Some(index),
                    &pub_path,
                    None,
                    format!(
                        "{alg} public key file ({} bytes) does not match the key recorded by Key record {index} for epoch {epoch}",
                        on_disk.len()
                    ),
                )));
            }
        }
        self.report.key_ids.insert(
            epoch,
            hex::encode(keys::key_id(&self.report.origin, &k.public_key)),
        );
        if let Some(ed) = &k.ed25519 {
            self.report.ed25519_key_ids.insert(
                epoch,
                hex::encode(keys::ed25519_key_id(&self.report.origin, ed)),
            );
        }
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
            self.chain.check(&frame).map_err(fail)?;
            let kind = frame.header.kind();
            if index == 0 {
                self.report.origin = String::from_utf8_lossy(frame.header.origin()).into_owned();
            }
            if kind == RecordKind::Key {
                let epoch = frame.header.key_epoch();
                if let Some(k) = self.chain.keys.get(&epoch).map(|k| k.keys.clone()) {
                    self.check_key_files(index, epoch, &k)?;
                }
            }
            self.frontier.push(frame.record_hash);
            self.report.records += 1;
            self.kind_counts[usize::from(kind.as_u8())] += 1;
            self.check_due_checkpoints()?;
        }
        Ok(())
    }
}
