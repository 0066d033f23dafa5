//! The append-only writer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::checkpoint::{self, CHECKPOINTS_FILE, Checkpoint, ParsedNote};
use crate::error::{IoContext, LedgerError, VerifyFailure};
use crate::export::{HistoryKey, HistoryRevocation};
use crate::keys::{self, KeyRecordPayload, Signer};
use crate::merkle::{Frontier, Hash, LeafSet};
use crate::record::{
    self, FRAME_MAGIC, FrameError, FrameReader, HeaderFields, MAX_ORIGIN_LEN, MAX_PAYLOAD_LEN,
    MAX_REFS, RecordKind,
};
use crate::retention::{self, PruneSummary, Tombstone};
use crate::segment::{ChainState, list_segments, segment_file_name};

/// Write buffer for the active segment.
const WRITE_BUFFER: usize = 1 << 20;

/// Ledger configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// The ledger directory, e.g. `<data_dir>/ledger`.
    pub dir: PathBuf,
    /// The key directory, e.g. `<data_dir>/keys`.
    pub keys_dir: PathBuf,
    /// Log origin and signing key name, e.g. `"dunes/<hostname>"`. 1–255 bytes of UTF-8, no
    /// whitespace, control characters or `+`.
    pub origin: String,
    /// Checkpoint after this many new records (0 disables the record-count trigger).
    pub checkpoint_every_records: u64,
    /// Checkpoint when this much time has passed since the last one (and there are new records).
    pub checkpoint_interval: Duration,
    /// Start a new segment file when the current one would exceed this size.
    pub segment_max_bytes: u64,
    /// Rotate the signing key when the current key epoch is this old (checked by
    /// `maybe_checkpoint` and on open). `None` disables automatic rotation. Default 24 h.
    pub rotate_every: Option<Duration>,
    /// Give every new key epoch an Ed25519 key besides the ML-DSA-65 key, so checkpoints carry
    /// two signature lines (hybrid classical + post-quantum). Off by default. Turning it on for
    /// an existing ledger rotates to a hybrid epoch on open.
    pub hybrid_ed25519: bool,
    /// Publish every new signed checkpoint into this directory (`checkpoint-<size>.note`,
    /// `latest.note`), ideally one the monitor's account cannot rewrite. `None`: off.
    pub publish_dir: Option<PathBuf>,
}

impl LedgerConfig {
    /// Defaults: `dir = data_dir/ledger`, `keys_dir = data_dir/keys`, checkpoint every 10 000
    /// records or 1 s, 256 MiB segments.
    pub fn new(data_dir: &Path, origin: impl Into<String>) -> Self {
        Self {
            dir: data_dir.join("ledger"),
            keys_dir: data_dir.join("keys"),
            origin: origin.into(),
            checkpoint_every_records: 10_000,
            checkpoint_interval: Duration::from_secs(1),
            segment_max_bytes: 256 * 1024 * 1024,
            rotate_every: Some(Duration::from_secs(24 * 3600)),
            hybrid_ed25519: false,
            publish_dir: None,
        }
    }
}

/// Validate an origin / key name: it appears as the first line of every checkpoint note and
/// as the signed-note key name.
pub(crate) fn validate_origin(origin: &str) -> Result<(), LedgerError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN_LEN {
        return Err(LedgerError::Config(format!(
            "origin must be 1..={MAX_ORIGIN_LEN} bytes, got {}",
            origin.len()
        )));
    }
    if let Some(c) = origin
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '+')
    {
        return Err(LedgerError::Config(format!(
            "origin {origin:?} contains {c:?}; whitespace, control characters and '+' are not allowed"
        )));
    }
    Ok(())
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A BLAKE3 hash-chained, Merkle-checkpointed, append-only audit ledger (single writer).
pub struct Ledger {
    cfg: LedgerConfig,
    signer: Signer,
    /// Advisory lock on `<dir>/LOCK`, held for the ledger's lifetime.
    _lock: File,
    /// Compact Merkle range of the pruned prefix (`size()` = records pruned by retention).
    /// Leaf hashes are not kept in memory: the writer needs only the compact range of the
    /// whole log, and proofs read the leaves back from the segments (`proof.rs`), so memory
    /// stays flat however long the log grows.
    base: Frontier,
    /// The tombstone of the pruned prefix, if retention pruned any.
    tombstone: Option<Tombstone>,
    /// Compact Merkle range of every record (`size()` = [`Ledger::len`]), advanced per append.
    frontier: Frontier,
    /// The compact range at the first index of every kept segment (a few hundred bytes per
    /// segment), as this writer scanned or wrote it: pruning checks the segments it reads
    /// back against it, so a segment rewritten on disk since is never sealed in a tombstone.
    boundaries: BTreeMap<u64, Frontier>,
    prev_hash: Hash,
    seg_path: PathBuf,
    seg_bytes: u64,
    /// Records in the active segment.
    seg_records: u64,
    writer: BufWriter<File>,
    cp_path: PathBuf,
    cp_file: File,
    latest: Option<Checkpoint>,
    last_checkpoint_at: Instant,
    scratch: Vec<u8>,
    poisoned: bool,
    /// `ts_micros` of the Key record of the active epoch (for automatic rotation).
    key_ts: i64,
    /// Key epochs in the log.
    epochs: BTreeSet<u32>,
    /// Revoked epoch -> revocation record index.
    revoked: BTreeMap<u32, u64>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.cfg.dir)
            .field("origin", &self.cfg.origin)
            .field("len", &self.len())
            .field("pruned", &self.pruned())
            .field("key_epoch", &self.signer.epoch)
            .finish_non_exhaustive()
    }
}

/// State recovered from the segment files.
struct Scan {
    /// Compact range of every complete record (from the pruned prefix's).
    frontier: Frontier,
    /// The compact range at `signed_records`, if the log reaches it.
    at_signed: Option<Frontier>,
    /// The compact range at each segment's first index.
    boundaries: BTreeMap<u64, Frontier>,
    chain: ChainState,
    /// Active (last) segment: path, length after repair, records in it.
    last_segment: Option<(PathBuf, u64, u64)>,
}

fn corrupt(
    index: Option<u64>,
    file: &Path,
    offset: Option<u64>,
    reason: impl Into<String>,
) -> LedgerError {
    LedgerError::corrupt(VerifyFailure::new(index, file, offset, reason))
}

/// Does any complete, hash-valid frame start after `from` in `path`? Used to tell a torn tail
/// (nothing valid after the damage) from damage in the middle of the log.
fn valid_frame_after(path: &Path, from: u64) -> Result<Option<u64>, LedgerError> {
    let mut f = File::open(path).at(path)?;
    f.seek(SeekFrom::Start(from)).at(path)?;
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).at(path)?;
    let mut p = 1usize;
    while p + FRAME_MAGIC.len() <= rest.len() {
        if rest[p..p + 4] == FRAME_MAGIC {
            let slice = &rest[p..];
            let mut r = FrameReader::new(slice, 0, slice.len() as u64);
            if let Ok(Some(_)) = r.next_frame() {
                return Ok(Some(from + p as u64));
            }
        }
        p += 1;
    }
    Ok(None)
}

fn scan_segments(
    dir: &Path,
    signed_records: u64,
    start: Option<&retention::Loaded>,
) -> Result<Scan, LedgerError> {
    let mut segments = list_segments(dir)?;
    let pruned = start.map_or(0, retention::Loaded::pruned);
    // Segments wholly before the pruning point are left over by a prune interrupted after
    // the tombstone was written: finish it.
    for (_, path) in segments.iter().filter(|(first, _)| *first < pruned) {
        tracing::warn!(segment = %path.display(), "ledger: removing a segment pruned by retention (interrupted prune)");
        retention::remove_if_present(path)?;
    }
    segments.retain(|(first, _)| *first >= pruned);
    let base = start.map_or_else(Frontier::new, |t| t.frontier.clone());
    let mut scan = Scan {
        at_signed: (base.size() == signed_records).then(|| base.clone()),
        frontier: base,
        boundaries: BTreeMap::new(),
        chain: start.map_or_else(ChainState::new, |t| t.start_state().chain),
        last_segment: None,
    };
    let n_segments = segments.len();
    for (si, (first, path)) in segments.into_iter().enumerate() {
        let is_last = si + 1 == n_segments;
        if first != scan.chain.next_index {
            return Err(corrupt(
                Some(scan.chain.next_index),
                &path,
                None,
                format!(
                    "segment file name says first index {first}, but the previous segments end at {}",
                    scan.chain.next_index
                ),
            ));
        }
        scan.boundaries.insert(first, scan.frontier.clone());
        let file = File::open(&path).at(&path)?;
        let file_len = file.metadata().at(&path)?.len();
        let mut reader =
            FrameReader::new(BufReader::with_capacity(WRITE_BUFFER, file), 0, file_len);
        let mut seg_records = 0u64;
        let mut good_len = file_len;
        loop {
            let index = scan.chain.next_index;
            match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    scan.chain
                        .check(&frame)
                        .map_err(|r| corrupt(Some(index), &path, Some(frame.offset), r))?;
                    scan.frontier.push(frame.record_hash);
                    if scan.frontier.size() == signed_records {
                        scan.at_signed = Some(scan.frontier.clone());
                    }
                    seg_records += 1;
                }
                Err(FrameError::Io(e)) => return Err(LedgerError::io(&path, e)),
                Err(
                    FrameError::Truncated { offset, reason }
                    | FrameError::Invalid { offset, reason },
                ) => {
                    if !is_last {
                        return Err(corrupt(Some(index), &path, Some(offset), reason));
                    }
                    if index < signed_records {
                        return Err(corrupt(
                            Some(index),
                            &path,
                            Some(offset),
                            format!(
                                "{reason}; this record is covered by a signed checkpoint (tree size {signed_records}), refusing to truncate"
                            ),
                        ));
                    }
                    if let Some(at) = valid_frame_after(&path, offset)? {
                        return Err(corrupt(
                            Some(index),
                            &path,
                            Some(offset),
                            format!(
                                "{reason}; a valid record follows at byte {at}, so this is damage in the middle of the log, not a torn tail; refusing to truncate"
                            ),
                        ));
                    }
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        dropped_bytes = file_len - offset,
                        first_lost_index = index,
                        "ledger: torn tail after crash ({reason}); truncating to the last complete record"
                    );
                    let f = OpenOptions::new().write(true).open(&path).at(&path)?;
                    f.set_len(offset).at(&path)?;
                    f.sync_all().at(&path)?;
                    good_len = offset;
                    break;
                }
            }
        }
        if is_last {
            scan.last_segment = Some((path, good_len, seg_records));
        } else if seg_records == 0 {
            return Err(corrupt(
                Some(scan.chain.next_index),
                &path,
                None,
                "empty segment file before the last segment",
            ));
        }
    }
    Ok(scan)
}

/// Read `checkpoints.log` for writing: repair a torn last entry, return the latest note.
fn load_checkpoints_for_write(path: &Path) -> Result<Option<ParsedNote>, LedgerError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LedgerError::io(path, e)),
    };
    let scan = checkpoint::scan_entries(&bytes);
    if let Some((offset, reason, _)) = scan.problem {
        let later = (offset as usize + 1..bytes.len().saturating_sub(3)).find(|&p| {
            bytes[p..p + 4] == checkpoint::ENTRY_MAGIC
                && checkpoint::parse_entry_at(&bytes, p).is_ok()
        });
        if let Some(at) = later {
            return Err(corrupt(
                None,
                path,
                Some(offset),
                format!(
                    "{reason}; a valid checkpoint entry follows at byte {at}; refusing to truncate"
                ),
            ));
        }
        tracing::warn!(
            file = %path.display(),
            offset,
            dropped_bytes = bytes.len() as u64 - offset,
            "ledger: torn checkpoint entry after crash ({reason}); truncating"
        );
        let f = OpenOptions::new().write(true).open(path).at(path)?;
        f.set_len(offset).at(path)?;
        f.sync_all().at(path)?;
    }
    match scan.entries.last() {
        None => Ok(None),
        Some((offset, note)) => checkpoint::parse_note(note)
            .map(Some)
            .map_err(|r| corrupt(None, path, Some(*offset), format!("latest checkpoint: {r}"))),
    }
}

fn open_append(path: &Path) -> Result<File, LedgerError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .at(path)
}

impl Ledger {
    /// Open (or create) the ledger described by `cfg`.
    ///
    /// Creates the directories, generates the ML-DSA-65 key pair on first run (seed file
    /// created with mode 0600), rescans and re-hashes every segment, repairs a torn tail beyond
    /// the last signed checkpoint (with a warning), and checks the latest checkpoint against the
    /// recomputed Merkle root. Damage anywhere else is a [`LedgerError::Corrupt`] error.
    pub fn open(cfg: LedgerConfig) -> Result<Ledger, LedgerError> {
        validate_origin(&cfg.origin)?;
        fs::create_dir_all(&cfg.dir).at(&cfg.dir)?;
        keys::ensure_keys_dir(&cfg.keys_dir)?;

        let lock_path = cfg.dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: cfg.dir.clone(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(LedgerError::io(&lock_path, e)),
        }

        let cp_path = cfg.dir.join(CHECKPOINTS_FILE);
        let latest_note = load_checkpoints_for_write(&cp_path)?;
        let signed = latest_note.as_ref().map_or(0, |n| n.checkpoint.tree_size);
        let tomb = retention::load(&cfg.dir)?;
        let pruned = tomb.as_ref().map_or(0, retention::Loaded::pruned);
        if pruned > 0 {
            // Only next to a valid tombstone: without one, a stray JSON is evidence.
            retention::remove_stray(&cfg.dir, pruned)?;
        }
        let scan = scan_segments(&cfg.dir, signed, tomb.as_ref())?;
        let len = scan.frontier.size();
        if let Some(t) = &tomb {
            if len < t.signed_at {
                return Err(corrupt(
                    None,
                    &t.note_path,
                    None,
                    format!(
                        "the tombstone was signed when the ledger had {} records, but only {len} are present",
                        t.signed_at
                    ),
                ));
            }
            let ok = crate::segment::epoch_in_force(&scan.chain.keys, t.signed_at)
                .filter(|k| k.keys.epoch == t.manifest.key_epoch)
                .is_some_and(|k| t.verify_with(&k.keys).is_ok());
            if !ok {
                return Err(corrupt(
                    None,
                    &t.note_path,
                    None,
                    "the tombstone's signature does not verify with the key epoch in force when it was written",
                ));
            }
            if retention::drop_checkpoints_before(&cp_path, t.pruned())? > 0 {
                tracing::warn!("ledger: removed checkpoints of pruned records (interrupted prune)");
            }
        }
        let base = tomb
            .as_ref()
            .map_or_else(Frontier::new, |t| t.frontier.clone());

        if let Some(o) = &scan.chain.origin
            && o.as_slice() != cfg.origin.as_bytes()
        {
            return Err(LedgerError::Config(format!(
                "ledger in {} has origin {:?}, but the configured origin is {:?}",
                cfg.dir.display(),
                String::from_utf8_lossy(o),
                cfg.origin
            )));
        }

        let last_key = scan
            .chain
            .key_epoch
            .and_then(|e| scan.chain.keys.get(&e))
            .cloned();
        let signer = match &last_key {
            None => match keys::newest_seed_epoch(&cfg.keys_dir)? {
                Some(e) => keys::load_signer(&cfg.keys_dir, e)?,
                None => {
                    if keys::has_public_keys(&cfg.keys_dir)? {
                        return Err(LedgerError::Key(format!(
                            "no ledger signing key (ledger-mldsa65-<epoch>.seed) in {}, but public keys exist; refusing to create a new key, which would break the key history",
                            cfg.keys_dir.display()
                        )));
                    }
                    keys::generate(&cfg.keys_dir, 0, cfg.hybrid_ed25519)?
                }
            },
            Some(k) => {
                let epoch = k.keys.epoch;
                // A newer seed without a Key record is a rotation interrupted by a crash.
                if let Some(newest) = keys::newest_seed_epoch(&cfg.keys_dir)?
                    && newest > epoch
                {
                    for e in epoch + 1..=newest {
                        tracing::warn!(
                            epoch = e,
                            "ledger: discarding a key generated by an interrupted rotation"
                        );
                        keys::remove_epoch_files(&cfg.keys_dir, e, true)?;
                    }
                }
                let signer = keys::load_signer(&cfg.keys_dir, epoch)?;
                if signer.public_key != k.keys.public_key
                    || signer.ed25519_public_key().map(|p| p.to_vec()) != k.keys.ed25519
                {
                    return Err(LedgerError::Key(format!(
                        "the signing key in {} for epoch {epoch} is not the key recorded by Key record {}",
                        cfg.keys_dir.display(),
                        k.introduced_at
                    )));
                }
                // Seeds of older epochs are no longer needed (rotation finished after a crash).
                for e in keys::list_epochs(&cfg.keys_dir, ".seed")? {
                    if e < epoch {
                        keys::remove_epoch_files(&cfg.keys_dir, e, false)?;
                    }
                }
                signer
            }
        };

        // The writer checkpoints record 0 right after creating it, so records without any
        // checkpoint mean that `checkpoints.log` was deleted or emptied: signing them now would
        // bless a history nobody can vouch for.
        if latest_note.is_none() && len > 1 {
            return Err(corrupt(
                None,
                &cp_path,
                None,
                format!(
                    "the ledger has {len} records but no signed checkpoint ({CHECKPOINTS_FILE} is missing or empty); refusing to sign a history that no checkpoint vouches for (restore {CHECKPOINTS_FILE} from a backup or a published checkpoint)"
                ),
            ));
        }
        if let Some(note) = &latest_note
            && note.checkpoint.tree_size < pruned
        {
            return Err(corrupt(
                None,
                &cp_path,
                None,
                format!(
                    "the latest checkpoint covers {} records, fewer than the {pruned} pruned by retention",
                    note.checkpoint.tree_size
                ),
            ));
        }
        if let Some(note) = &latest_note {
            let cp = &note.checkpoint;
            let at = |r: String| {
                corrupt(
                    None,
                    &cp_path,
                    None,
                    format!("latest checkpoint (tree size {}): {r}", cp.tree_size),
                )
            };
            if cp.tree_size > len {
                return Err(at(format!(
                    "covers {} records, but only {len} are present",
                    cp.tree_size
                )));
            }
            if cp.origin != cfg.origin {
                return Err(at(format!(
                    "origin {:?} differs from the ledger origin",
                    cp.origin
                )));
            }
            let key = scan
                .chain
                .keys
                .get(&cp.key_epoch)
                .filter(|k| k.introduced_at < cp.tree_size)
                .ok_or_else(|| {
                    at(format!(
                        "signed with key epoch {} that no earlier Key record introduces",
                        cp.key_epoch
                    ))
                })?;
            checkpoint::verify_note_signatures(note, &cfg.origin, &key.keys).map_err(at)?;
            let signed = scan
                .at_signed
                .as_ref()
                .ok_or_else(|| at("tree size outside the kept records".into()))?;
            if signed.root() != cp.root {
                return Err(at(
                    "root does not match the Merkle root recomputed from the segments".into(),
                ));
            }
        }

        let (seg_path, seg_bytes, seg_records) = match scan.last_segment {
            Some(s) => s,
            None => {
                let p = cfg.dir.join(segment_file_name(pruned));
                (p, 0, 0)
            }
        };
        let seg_file = open_append(&seg_path)?;
        let cp_file = open_append(&cp_path)?;
        keys::fsync_dir(&cfg.dir)?;

        let mut ledger = Ledger {
            signer,
            _lock: lock,
            prev_hash: scan.chain.prev_hash,
            base,
            tombstone: tomb.map(|t| t.tombstone),
            frontier: scan.frontier,
            boundaries: scan.boundaries,
            seg_path,
            seg_bytes,
            seg_records,
            writer: BufWriter::with_capacity(WRITE_BUFFER, seg_file),
            cp_path,
            cp_file,
            latest: latest_note.map(|n| n.checkpoint),
            last_checkpoint_at: Instant::now(),
            scratch: Vec::with_capacity(512),
            poisoned: false,
            key_ts: last_key.as_ref().map_or_else(now_micros, |k| k.ts_micros),
            epochs: scan.chain.keys.keys().copied().collect(),
            revoked: scan.chain.revoked.clone(),
            cfg,
        };
        if ledger.is_empty() {
            let payload = KeyRecordPayload::for_signer(&ledger.signer, &ledger.cfg.origin, None)?;
            let json = serde_json::to_vec(&payload)
                .map_err(|e| LedgerError::Key(format!("cannot encode Key record: {e}")))?;
            let epoch = ledger.signer.epoch;
            ledger.append_with_epoch(RecordKind::Key, now_micros(), &json, None, &[], epoch)?;
            ledger.epochs.insert(epoch);
            // Sign record 0 at once: a ledger is never without a checkpoint for long, and a
            // verifier treats unsigned records as a failure.
            ledger.checkpoint()?;
        } else if ledger.cfg.hybrid_ed25519 && ledger.signer.ed25519_public_key().is_none() {
            tracing::info!(
                "ledger: hybrid Ed25519 signatures requested; rotating to a hybrid key epoch"
            );
            ledger.rotate_key()?;
        } else if ledger.rotation_due() {
            ledger.rotate_key()?;
        }
        Ok(ledger)
    }

    fn rotation_due(&self) -> bool {
        self.cfg.rotate_every.is_some_and(|d| {
            let age = now_micros().saturating_sub(self.key_ts);
            age >= 0 && (age as u128) >= d.as_micros()
        })
    }

    /// Rotate the signing key: generate epoch+1 (seed files mode 0600), append a `key` record
    /// carrying the new public key(s) signed by the old key(s), checkpoint under the new key,
    /// then destroy the old seed. Returns the new epoch.
    pub fn rotate_key(&mut self) -> Result<u32, LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        self.sync()?;
        let new_epoch = self
            .signer
            .epoch
            .checked_add(1)
            .ok_or_else(|| LedgerError::Key("key epoch overflow".into()))?;
        // Hybrid is sticky: once an epoch has an Ed25519 key, its successors get one too.
        let hybrid = self.cfg.hybrid_ed25519 || self.signer.ed25519_public_key().is_some();
        let new = keys::generate(&self.cfg.keys_dir, new_epoch, hybrid)?;
        let payload = KeyRecordPayload::for_signer(&new, &self.cfg.origin, Some(&self.signer))?;
        let json = serde_json::to_vec(&payload)
            .map_err(|e| LedgerError::Key(format!("cannot encode Key record: {e}")))?;
        let ts = now_micros();
        self.append_with_epoch(RecordKind::Key, ts, &json, None, &[], new_epoch)?;
        self.sync()?;
        let old = std::mem::replace(&mut self.signer, new);
        self.key_ts = ts;
        self.epochs.insert(new_epoch);
        self.checkpoint()?;
        keys::remove_epoch_files(&self.cfg.keys_dir, old.epoch, false)?;
        tracing::info!(
            old_epoch = old.epoch,
            new_epoch,
            "ledger: signing key rotated"
        );
        Ok(new_epoch)
    }

    /// Emergency revocation of key epoch `epoch`, recorded in the log. Revoking the active key
    /// first rotates to a new one. Verifiers reject checkpoints signed by the revoked key over
    /// trees that include the revocation record. Returns the revocation record's index.
    pub fn revoke_key(&mut self, epoch: u32, reason: &str) -> Result<u64, LedgerError> {
        if !self.epochs.contains(&epoch) {
            return Err(LedgerError::InvalidInput(format!(
                "key epoch {epoch} is not in the log (epochs: {:?})",
                self.epochs
            )));
        }
        if self.revoked.contains_key(&epoch) {
            return Err(LedgerError::InvalidInput(format!(
                "key epoch {epoch} is already revoked"
            )));
        }
        if epoch == self.signer.epoch {
            self.rotate_key()?;
        }
        let payload = serde_json::to_vec(&crate::segment::RevocationPayload {
            revoked_epoch: epoch,
            reason: reason.to_string(),
        })
        .map_err(|e| LedgerError::InvalidInput(e.to_string()))?;
        let index = self.append(RecordKind::Revocation, now_micros(), &payload, &[])?;
        self.revoked.insert(epoch, index);
        self.checkpoint()?;
        tracing::warn!(epoch, index, "ledger: key epoch revoked");
        Ok(index)
    }

    /// Redact (GDPR erasure) the payload of record `index`: append a `redaction` record that
    /// refers to it (with `reason` and the requesting `subject`, signed by the active key),
    /// make it durable, then rewrite the record's frame with the
    /// REDACTED flag and no payload bytes. The header (and so every hash, Merkle root and
    /// signature) is unchanged; verifiers report the record as redacted. Returns the index of
    /// the redaction record.
    pub fn redact(&mut self, index: u64, reason: &str, subject: &str) -> Result<u64, LedgerError> {
        if index < self.pruned() {
            return Err(LedgerError::InvalidInput(format!(
                "record {index} was pruned by retention (records 0..{} are gone)",
                self.pruned()
            )));
        }
        if index >= self.len() {
            return Err(LedgerError::InvalidInput(format!(
                "record {index} does not exist (ledger has {} records)",
                self.len()
            )));
        }
        self.sync()?;
        let segments = list_segments(&self.cfg.dir)?;
        let Some((_, seg)) = segments.iter().rev().find(|(first, _)| *first <= index) else {
            return Err(LedgerError::InvalidInput(format!(
                "no segment holds record {index}"
            )));
        };
        let bytes = fs::read(seg).at(seg)?;
        let mut reader = FrameReader::new(bytes.as_slice(), 0, bytes.len() as u64);
        let (offset, len, hdr_len, kind, redacted) = loop {
            match reader.next_frame() {
                Ok(Some(f)) if f.header.index() == index => {
                    break (
                        f.offset as usize,
                        f.len as usize,
                        f.len as usize
                            - f.payload.len()
                            - record::FRAME_PREFIX_LEN
                            - record::FRAME_TRAILER_LEN,
                        f.header.kind(),
                        f.redacted,
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(LedgerError::InvalidInput(format!(
                        "record {index} not found in {}",
                        seg.display()
                    )));
                }
                Err(FrameError::Io(e)) => return Err(LedgerError::io(seg, e)),
                Err(
                    FrameError::Truncated { offset, reason }
                    | FrameError::Invalid { offset, reason },
                ) => {
                    return Err(corrupt(Some(index), seg, Some(offset), reason));
                }
            }
        };
        if matches!(
            kind,
            RecordKind::Key | RecordKind::Redaction | RecordKind::Revocation
        ) {
            return Err(LedgerError::InvalidInput(format!(
                "record {index} is a {kind} record, which cannot be redacted"
            )));
        }
        if redacted {
            return Err(LedgerError::InvalidInput(format!(
                "record {index} is already redacted"
            )));
        }
        crate::segment::check_redaction_text(reason, subject).map_err(LedgerError::InvalidInput)?;
        let red_index = self.len();
        let msg = crate::segment::redaction_message(
            &self.cfg.origin,
            red_index,
            self.signer.epoch,
            &self.prev_hash,
            &[index],
            reason,
            subject,
        );
        let signature = self
            .signer
            .sign_with_context(&msg, keys::REDACTION_CONTEXT)?;
        let payload = serde_json::to_vec(&crate::segment::RedactionPayload {
            reason: reason.to_string(),
            subject: subject.to_string(),
            signature: B64.encode(signature),
            ed25519_signature: self.signer.sign_ed25519(&msg).map(|s| B64.encode(s)),
        })
        .map_err(|e| LedgerError::InvalidInput(e.to_string()))?;
        let appended = self.append(RecordKind::Redaction, now_micros(), &payload, &[index])?;
        debug_assert_eq!(appended, red_index);
        self.sync()?;
        // Re-read: the redaction record may have landed in the same (active) segment.
        let bytes = fs::read(seg).at(seg)?;
        let pre = record::FRAME_PREFIX_LEN;
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(&bytes[..offset]);
        out.extend_from_slice(&bytes[offset..offset + pre]);
        out[offset + 4] = record::FRAME_FLAG_REDACTED;
        out.extend_from_slice(&bytes[offset + pre..offset + pre + hdr_len]);
        out.extend_from_slice(&bytes[offset + len - record::FRAME_TRAILER_LEN..]);
        let tmp = seg.with_extension("dlg.tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .at(&tmp)?;
            f.write_all(&out).at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, seg).at(seg)?;
        keys::fsync_dir(&self.cfg.dir)?;
        if *seg == self.seg_path {
            self.writer = BufWriter::with_capacity(WRITE_BUFFER, open_append(seg)?);
            self.seg_bytes = out.len() as u64;
        }
        tracing::info!(
            index,
            redaction_record = red_index,
            "ledger: record payload redacted"
        );
        Ok(red_index)
    }

    /// Retention: prune the oldest whole segments that were last written before
    /// `cutoff_micros` (µs since the epoch, by the segment file's modification time: the
    /// time its last record was ledgered, not the events' own times, so a replay of old
    /// events is kept for the full period), leaving a signed tombstone
    /// (`docs/ledger-format.md` §2.10). Never touches the active segment or anything after
    /// the first segment written later. Pruned records not yet signed are checkpointed
    /// first. `Ok(None)` when nothing was old enough.
    pub fn prune(&mut self, cutoff_micros: i64) -> Result<Option<PruneSummary>, LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        let old = self.pruned();
        let segments = list_segments(&self.cfg.dir)?;
        let mut keys_before: Vec<HistoryKey> = self
            .tombstone
            .as_ref()
            .map_or_else(Vec::new, |t| t.keys.clone());
        let mut newest = self
            .tombstone
            .as_ref()
            .map_or(i64::MIN, |t| t.newest_pruned_ts_micros);
        let mut to = old;
        let mut removed: Vec<(PathBuf, u64)> = Vec::new();
        // Leaf hashes of the records pruned (`old..to`): the tombstone's compact range and
        // proof are computed from them and the current pruned prefix's range.
        let mut pruned_leaves: Vec<Hash> = Vec::new();
        for (i, (first, path)) in segments.iter().enumerate() {
            if *first < old {
                continue;
            }
            let Some((next_first, _)) = segments.get(i + 1) else {
                break; // the active segment stays
            };
            if *path == self.seg_path {
                break;
            }
            let written = fs::metadata(path)
                .and_then(|m| m.modified())
                .at(path)?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            if written >= cutoff_micros {
                break;
            }
            let bytes = fs::read(path).at(path)?;
            let mut r = FrameReader::new(bytes.as_slice(), 0, bytes.len() as u64);
            let mut seg_newest = i64::MIN;
            let mut seg_keys = Vec::new();
            loop {
                match r.next_frame() {
                    Ok(None) => break,
                    Ok(Some(f)) => {
                        pruned_leaves.push(f.record_hash);
                        seg_newest = seg_newest.max(f.header.ts_micros());
                        if f.header.kind() == RecordKind::Key {
                            seg_keys.push(HistoryKey {
                                index: f.header.index(),
                                ts_micros: f.header.ts_micros(),
                                payload: String::from_utf8(f.payload.to_vec()).map_err(|_| {
                                    corrupt(
                                        Some(f.header.index()),
                                        path,
                                        Some(f.offset),
                                        "key record payload is not UTF-8",
                                    )
                                })?,
                            });
                        }
                    }
                    Err(FrameError::Io(e)) => return Err(LedgerError::io(path, e)),
                    Err(
                        FrameError::Truncated { offset, reason }
                        | FrameError::Invalid { offset, reason },
                    ) => return Err(corrupt(None, path, Some(offset), reason)),
                }
            }
            newest = newest.max(seg_newest);
            keys_before.extend(seg_keys);
            to = *next_first;
            removed.push((path.clone(), bytes.len() as u64));
        }
        if to == old {
            return Ok(None);
        }
        if pruned_leaves.len() as u64 != to - old {
            return Err(LedgerError::InvalidInput(format!(
                "segments to prune hold {} records, their file names say {}",
                pruned_leaves.len(),
                to - old
            )));
        }
        let leaves = LeafSet::pruned(self.base.clone(), pruned_leaves);
        if leaves.frontier(to).as_ref() != self.boundaries.get(&to) {
            return Err(corrupt(
                Some(old),
                &self.cfg.dir,
                None,
                format!(
                    "the segments of records {old}..{to} read back for pruning do not hash to the Merkle range this writer computed when it scanned or wrote them: they were changed on disk; refusing to seal them in a tombstone"
                ),
            ));
        }
        // The pruned records must be covered by a signed checkpoint (only the active segment
        // is ever written to, so this is rare).
        if to > self.latest.as_ref().map_or(0, |c| c.tree_size) {
            self.checkpoint()?;
        }
        let mut revocations: Vec<HistoryRevocation> = self
            .revoked
            .iter()
            .filter(|(_, at)| **at < to)
            .map(|(e, at)| HistoryRevocation {
                index: *at,
                revoked_epoch: *e,
            })
            .collect();
        revocations.sort_by_key(|r| r.index);
        let t = retention::write(
            &self.cfg.dir,
            retention::NewTombstone {
                origin: &self.cfg.origin,
                pruned: to,
                leaves: &leaves,
                keys: keys_before,
                revocations,
                cutoff_micros,
                newest_pruned_ts_micros: newest,
                signed_at: self.len(),
            },
            &self.signer,
            now_micros(),
        )?;
        // The tombstone is durable: checkpoints of pruned sizes go (atomic rewrite), then the
        // segments, oldest first. A crash in between is finished by the next open.
        let checkpoints_removed = retention::drop_checkpoints_before(&self.cp_path, to)?;
        self.cp_file = open_append(&self.cp_path)?;
        for (path, _) in &removed {
            retention::remove_if_present(path)?;
        }
        keys::fsync_dir(&self.cfg.dir)?;
        self.base = leaves
            .frontier(to)
            .ok_or_else(|| LedgerError::InvalidInput("pruning point outside the ledger".into()))?;
        self.boundaries.retain(|first, _| *first >= to);
        let summary = PruneSummary {
            pruned: to,
            records_removed: to - old,
            segments_removed: removed.len() as u64,
            bytes_freed: removed.iter().map(|(_, n)| n).sum(),
            checkpoints_removed,
            root: t.root.clone(),
            cutoff_micros,
        };
        self.tombstone = Some(t);
        tracing::info!(
            pruned = to,
            segments = summary.segments_removed,
            bytes = summary.bytes_freed,
            "ledger: retention pruned old segments, tombstone written"
        );
        Ok(Some(summary))
    }

    /// Append one record; returns its index. Buffered: durable only after [`Ledger::sync`],
    /// [`Ledger::checkpoint`] or [`Ledger::close`].
    ///
    /// `key`, `redaction` and `revocation` records are written by [`Ledger::rotate_key`],
    /// [`Ledger::redact`] and [`Ledger::revoke_key`] only.
    pub fn append(
        &mut self,
        kind: RecordKind,
        ts_micros: i64,
        payload: &[u8],
        refs: &[u64],
    ) -> Result<u64, LedgerError> {
        if kind == RecordKind::Key || (kind == RecordKind::Redaction && refs.is_empty()) {
            return Err(LedgerError::InvalidInput(format!(
                "{kind} records are written by the ledger itself"
            )));
        }
        self.append_with_epoch(kind, ts_micros, payload, None, refs, self.signer.epoch)
    }

    /// [`Ledger::append`] of an `event` record whose payload's BLAKE3 hash the caller
    /// already computed (the pipeline hashes each envelope once, on its decode thread).
    /// `payload_hash` must be `blake3(payload)`: a wrong one writes a record that fails
    /// verification, so debug builds check it.
    pub fn append_event_prehashed(
        &mut self,
        ts_micros: i64,
        payload: &[u8],
        payload_hash: &Hash,
        refs: &[u64],
    ) -> Result<u64, LedgerError> {
        debug_assert_eq!(blake3::hash(payload).as_bytes(), payload_hash);
        self.append_with_epoch(
            RecordKind::Event,
            ts_micros,
            payload,
            Some(payload_hash),
            refs,
            self.signer.epoch,
        )
    }

    fn append_with_epoch(
        &mut self,
        kind: RecordKind,
        ts_micros: i64,
        payload: &[u8],
        payload_hash: Option<&Hash>,
        refs: &[u64],
        key_epoch: u32,
    ) -> Result<u64, LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        let index = self.len();
        if payload.len() as u64 > MAX_PAYLOAD_LEN {
            return Err(LedgerError::InvalidInput(format!(
                "payload of {} bytes exceeds the {MAX_PAYLOAD_LEN}-byte limit",
                payload.len()
            )));
        }
        if refs.len() > MAX_REFS {
            return Err(LedgerError::InvalidInput(format!(
                "{} refs exceed the limit of {MAX_REFS}",
                refs.len()
            )));
        }
        if let Some(r) = refs.iter().find(|r| **r >= index) {
            return Err(LedgerError::InvalidInput(format!(
                "ref {r} does not point to an earlier record (next index is {index})"
            )));
        }
        let frame_len = record::frame_len(self.cfg.origin.len(), refs.len(), payload.len());
        if self.seg_records > 0 && self.seg_bytes + frame_len > self.cfg.segment_max_bytes {
            self.roll_segment(index)?;
        }
        let payload_hash = match payload_hash {
            Some(h) => *h,
            None => *blake3::hash(payload).as_bytes(),
        };
        record::encode_prefixed_header(
            &mut self.scratch,
            &HeaderFields {
                kind,
                key_epoch,
                index,
                ts_micros,
                origin: self.cfg.origin.as_bytes(),
                prev_hash: &self.prev_hash,
                payload_hash: &payload_hash,
                payload_len: payload.len() as u64,
                refs,
            },
        );
        let record_hash = *blake3::hash(&self.scratch).as_bytes();
        let header = &self.scratch[1..];
        let mut prefix = [0u8; record::FRAME_PREFIX_LEN];
        prefix[..4].copy_from_slice(&FRAME_MAGIC);
        prefix[5..].copy_from_slice(&(header.len() as u32).to_le_bytes());
        let res = (|| {
            self.writer.write_all(&prefix)?;
            self.writer.write_all(header)?;
            self.writer.write_all(payload)?;
            self.writer.write_all(&record_hash)
        })();
        if let Err(e) = res {
            self.poisoned = true;
            return Err(LedgerError::io(&self.seg_path, e));
        }
        self.seg_bytes += frame_len;
        self.seg_records += 1;
        self.frontier.push(record_hash);
        self.prev_hash = record_hash;
        Ok(index)
    }

    fn roll_segment(&mut self, next_index: u64) -> Result<(), LedgerError> {
        self.sync()?;
        let path = self.cfg.dir.join(segment_file_name(next_index));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        self.boundaries.insert(next_index, self.frontier.clone());
        keys::fsync_dir(&self.cfg.dir)?;
        // Replacing the writer drops (and flushes) the old, already-synced one.
        self.writer = BufWriter::with_capacity(WRITE_BUFFER, file);
        self.seg_path = path;
        self.seg_bytes = 0;
        self.seg_records = 0;
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.frontier.size()
    }

    /// Whether the ledger has no records (never true after `open`, which writes a Key record).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merkle root (RFC 9162) over every record written, signed or not yet. Proofs are
    /// computed from the segments: [`crate::inclusion_proof`], [`crate::read_leaf_hashes`].
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Number of records pruned by retention (the first kept index).
    pub fn pruned(&self) -> u64 {
        self.base.size()
    }

    /// Epoch of the active signing key.
    pub fn key_epoch(&self) -> u32 {
        self.signer.epoch
    }

    /// Flush the write buffer and fsync the active segment (the durability point).
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        let res = self
            .writer
            .flush()
            .and_then(|()| self.writer.get_ref().sync_data());
        if let Err(e) = res {
            self.poisoned = true;
            return Err(LedgerError::io(&self.seg_path, e));
        }
        Ok(())
    }

    /// How long records have been waiting for a signed checkpoint: the time
    /// since the last checkpoint when some record is not covered by one,
    /// `None` when every record is.
    pub fn unsigned_for(&self) -> Option<Duration> {
        (self.unsigned_records() > 0).then(|| self.last_checkpoint_at.elapsed())
    }

    /// Records after the last signed checkpoint.
    fn unsigned_records(&self) -> u64 {
        let signed = self.latest.as_ref().map_or(0, |c| c.tree_size);
        self.len().saturating_sub(signed)
    }

    /// Checkpoint if there are new records and either `checkpoint_every_records` records or
    /// `checkpoint_interval` time have accumulated since the last checkpoint.
    ///
    /// Also performs the automatic key rotation when the active key is older than
    /// `rotate_every` (the rotation itself checkpoints under the new key).
    pub fn maybe_checkpoint(&mut self) -> Result<Option<Checkpoint>, LedgerError> {
        if self.rotation_due() {
            self.rotate_key()?;
            return Ok(self.latest.clone());
        }
        let new = self.unsigned_records();
        if new == 0 {
            return Ok(None);
        }
        let by_count =
            self.cfg.checkpoint_every_records > 0 && new >= self.cfg.checkpoint_every_records;
        let by_time = self.last_checkpoint_at.elapsed() >= self.cfg.checkpoint_interval;
        if by_count || by_time {
            self.checkpoint().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Sync the segment, compute the Merkle root over all records, sign it with ML-DSA-65,
    /// append the signed note to `checkpoints.log` and fsync it.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, LedgerError> {
        self.sync()?;
        let tree_size = self.len();
        let root = self.frontier.root();
        let timestamp_micros = self
            .latest
            .as_ref()
            .map_or(i64::MIN, |c| c.timestamp_micros)
            .max(now_micros());
        let epoch = self.signer.epoch;
        let origin = self.cfg.origin.as_str();
        let body = checkpoint::note_body(origin, tree_size, &root, timestamp_micros, epoch);
        let sig = self.signer.sign(body.as_bytes())?;
        let mut note = checkpoint::assemble_note(
            &body,
            origin,
            keys::key_id(origin, &self.signer.public_key),
            &sig,
        );
        if let (Some(pk), Some(ed_sig)) = (
            self.signer.ed25519_public_key(),
            self.signer.sign_ed25519(body.as_bytes()),
        ) {
            checkpoint::add_signature_line(
                &mut note,
                origin,
                keys::ed25519_key_id(origin, &pk),
                &ed_sig,
            );
        }
        let entry = checkpoint::frame_entry(&note);
        let res = self
            .cp_file
            .write_all(&entry)
            .and_then(|()| self.cp_file.sync_data());
        if let Err(e) = res {
            self.poisoned = true;
            return Err(LedgerError::io(&self.cp_path, e));
        }
        let cp = Checkpoint {
            origin: origin.to_string(),
            tree_size,
            root,
            timestamp_micros,
            key_epoch: epoch,
            note,
        };
        if let Some(dir) = &self.cfg.publish_dir
            && let Err(e) = crate::publish::publish_checkpoint(dir, &cp)
        {
            // The checkpoint is durable in the ledger; publishing is the out-of-band copy.
            tracing::error!(
                dir = %dir.display(),
                tree_size = cp.tree_size,
                error = %e,
                "ledger: cannot publish the signed checkpoint"
            );
        }
        self.latest = Some(cp.clone());
        self.last_checkpoint_at = Instant::now();
        Ok(cp)
    }

    /// Final checkpoint if there are records after the latest one; otherwise just sync.
    pub fn close(mut self) -> Result<Option<Checkpoint>, LedgerError> {
        let signed = self.latest.as_ref().map_or(0, |c| c.tree_size);
        if self.len() > signed {
            self.checkpoint().map(Some)
        } else {
            self.sync().map(|()| None)
        }
    }

    /// The most recent checkpoint (loaded on open or created since).
    pub fn latest_checkpoint(&self) -> Option<&Checkpoint> {
        self.latest.as_ref()
    }

    /// The log origin.
    pub fn origin(&self) -> &str {
        &self.cfg.origin
    }

    /// Revoked key epochs and the index of their revocation record.
    pub fn revoked_epochs(&self) -> &BTreeMap<u32, u64> {
        &self.revoked
    }

    /// The configuration this ledger was opened with.
    pub fn config(&self) -> &LedgerConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_validation() {
        assert!(validate_origin("dunes/host-1.example").is_ok());
        assert!(validate_origin("").is_err());
        assert!(validate_origin("a b").is_err());
        assert!(validate_origin("a+b").is_err());
        assert!(validate_origin("a\nb").is_err());
        assert!(validate_origin(&"x".repeat(256)).is_err());
    }

    #[test]
    fn config_defaults() {
        let c = LedgerConfig::new(Path::new("/d"), "dunes/h");
        assert_eq!(c.dir, Path::new("/d/ledger"));
        assert_eq!(c.keys_dir, Path::new("/d/keys"));
        assert_eq!(c.checkpoint_every_records, 10_000);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(1));
        assert_eq!(c.segment_max_bytes, 256 * 1024 * 1024);
    }

    #[test]
    fn second_writer_is_locked_out() {
        let d = tempfile::tempdir().expect("tmp");
        let a = Ledger::open(LedgerConfig::new(d.path(), "dunes/t")).expect("open");
        match Ledger::open(LedgerConfig::new(d.path(), "dunes/t")) {
            Err(LedgerError::Locked { .. }) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(a);
        assert!(Ledger::open(LedgerConfig::new(d.path(), "dunes/t")).is_ok());
    }

    #[test]
    fn rejects_forward_refs_and_maybe_checkpoint_triggers() {
        let d = tempfile::tempdir().expect("tmp");
        let mut cfg = LedgerConfig::new(d.path(), "dunes/t");
        cfg.checkpoint_every_records = 3;
        cfg.checkpoint_interval = Duration::from_secs(3600);
        let mut l = Ledger::open(cfg).expect("open");
        assert_eq!(l.len(), 1);
        // Record 0 is signed at creation.
        assert_eq!(l.latest_checkpoint().map(|c| c.tree_size), Some(1));
        assert!(matches!(
            l.append(RecordKind::Event, 1, b"x", &[1]),
            Err(LedgerError::InvalidInput(_))
        ));
        l.append(RecordKind::Event, 1, b"x", &[0]).expect("append");
        l.append(RecordKind::Event, 1, b"x", &[0]).expect("append");
        assert!(l.maybe_checkpoint().expect("maybe").is_none()); // 2 new records < 3
        l.append(RecordKind::Event, 2, b"y", &[]).expect("append");
        let cp = l.maybe_checkpoint().expect("maybe").expect("checkpoint");
        assert_eq!(cp.tree_size, 4);
        assert!(l.maybe_checkpoint().expect("maybe").is_none()); // nothing new
        assert_eq!(l.latest_checkpoint(), Some(&cp));
        assert!(l.close().expect("close").is_none());
    }
}
