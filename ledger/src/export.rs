//! Self-contained export bundles (`dunes export`) and their offline verification.
//!
//! Layout of a bundle (see `docs/ledger-format.md` §8):
//!
//! ```text
//! <out>/MANIFEST                      signed list of every other file with its SHA-256
//! <out>/history.json                  key history, revocations, range start state
//! <out>/ledger/seg-<from>.dlg         the records from..=to, frames copied verbatim
//! <out>/ledger/checkpoints.log        every checkpoint with from <= tree_size <= to+1
//! <out>/proofs/consistency.json       consistency proofs between consecutive checkpoints
//! <out>/keys/ledger-*-<epoch>.pub     public keys of every key epoch
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::checkpoint::{self, CHECKPOINTS_FILE, NoteSignature};
use crate::error::{IoContext, LedgerError, VerifyFailure};
use crate::keys::{self, EXPORT_CONTEXT, EpochKeys, KeyRecordPayload};
use crate::merkle::{self, Frontier, Hash, LeafSet};
use crate::proof::ConsistencyProof;
use crate::record::{FrameError, FrameReader, RecordKind};
use crate::segment::{ChainState, KnownKey, epoch_in_force, list_segments, segment_file_name};
use crate::verify::{
    StartState, TrustedCheckpoint, TrustedResult, Verifier, VerifyOptions, VerifyReport,
};

/// Name of the manifest file of a bundle.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// First line of a bundle manifest.
pub const MANIFEST_MAGIC: &str = "dunes-ledger-export-v1";
const HISTORY_FILE: &str = "history.json";
const CONSISTENCY_FILE: &str = "proofs/consistency.json";
const TAIL_FILE: &str = "proofs/tail.json";
const ANCHOR_FILE: &str = "proofs/anchor.json";

/// One `key` record of the ledger, as listed in `history.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryKey {
    pub index: u64,
    pub ts_micros: i64,
    /// The exact payload bytes of the key record (a JSON text).
    pub payload: String,
}

/// One `revocation` record of the ledger, as listed in `history.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRevocation {
    pub index: u64,
    pub revoked_epoch: u32,
}

/// `history.json`: what a verifier needs besides the records of the range.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    pub origin: String,
    pub from: u64,
    pub to: u64,
    /// Record hash of record `from - 1` (64 zero hex digits when `from == 0`).
    pub prev_hash: String,
    /// Merkle compact range over records `0 .. from`: subtree roots, largest first.
    pub frontier: Vec<String>,
    /// Every key record of the whole ledger.
    pub keys: Vec<HistoryKey>,
    /// Every revocation record of the whole ledger.
    pub revocations: Vec<HistoryRevocation>,
    /// Every redaction record after the range that refers to a record inside it (so the
    /// redacted records of the range are authorised by a signed redaction).
    pub redactions: Vec<HistoryRedaction>,
}

/// A `redaction` record after the exported range, as listed in `history.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRedaction {
    /// Its index in the log.
    pub index: u64,
    /// Its header's `key_epoch`.
    pub key_epoch: u32,
    /// Its header's `prev_hash` (lowercase hex).
    pub prev_hash: String,
    /// Its header's refs.
    pub refs: Vec<u64>,
    /// Its exact payload (a JSON text carrying the signature).
    pub payload: String,
}

/// `proofs/tail.json`: the signed checkpoint that covers the end of the range when no
/// checkpoint has exactly `to + 1` records, and the consistency proof from `to + 1` to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailProof {
    /// `to + 1`.
    pub tree_size: u64,
    /// The signed checkpoint note (its tree size is greater than `tree_size`).
    pub checkpoint: String,
    /// RFC 9162 consistency proof from `tree_size` to the checkpoint's tree size (hex).
    pub proof: Vec<String>,
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub from: u64,
    pub to: u64,
    pub records: u64,
    pub checkpoints: u64,
    pub key_epochs: u64,
    pub redacted: u64,
    pub files: u64,
    pub manifest_key_epoch: u32,
}

fn corrupt(
    index: Option<u64>,
    file: &Path,
    offset: Option<u64>,
    r: impl Into<String>,
) -> LedgerError {
    LedgerError::corrupt(VerifyFailure::new(index, file, offset, r))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).at(p)?;
    }
    fs::write(path, bytes).at(path)?;
    fs::File::open(path).and_then(|f| f.sync_all()).at(path)
}

/// Refuses an output directory that exists and is not empty.
pub(crate) fn ensure_empty_output(out: &Path) -> Result<(), LedgerError> {
    if out.exists() && fs::read_dir(out).at(out)?.next().is_some() {
        return Err(LedgerError::InvalidInput(format!(
            "output directory {} exists and is not empty",
            out.display()
        )));
    }
    Ok(())
}

/// The path of `ledger_dir/checkpoints.log` and its complete entries (byte offset, note
/// text), none when the file does not exist.
pub(crate) fn checkpoint_entries(
    ledger_dir: &Path,
) -> Result<(PathBuf, Vec<(u64, String)>), LedgerError> {
    let cp_path = ledger_dir.join(CHECKPOINTS_FILE);
    let cp_bytes = match fs::read(&cp_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(LedgerError::io(&cp_path, e)),
    };
    let entries = checkpoint::scan_entries(&cp_bytes).entries;
    Ok((cp_path, entries))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Export records `from ..= to` (default: every record covered by the latest signed
/// checkpoint) of the data dir `data_dir` into a new, self-contained bundle directory `out`
/// (which must not exist or be empty), signed with the ledger's current key. Read-only on the
/// data dir; safe while a writer appends (records not yet signed are not exported).
pub fn export(
    data_dir: &Path,
    from: Option<u64>,
    to: Option<u64>,
    out: &Path,
) -> Result<ExportSummary, LedgerError> {
    export_with(data_dir, from, to, out, None)
}

/// [`export`], plus `proofs/anchor.json`: a consistency proof between the trusted checkpoint
/// `anchor` and the bundle's signed checkpoints, so `dunes verify --trusted-checkpoint` can
/// prove the bundle extends an anchor outside its range.
pub fn export_with(
    data_dir: &Path,
    from: Option<u64>,
    to: Option<u64>,
    out: &Path,
    anchor: Option<&TrustedCheckpoint>,
) -> Result<ExportSummary, LedgerError> {
    let ledger_dir = data_dir.join("ledger");
    let keys_dir = data_dir.join("keys");
    ensure_empty_output(out)?;
    let from = from.unwrap_or(0);

    // Signed checkpoints: only signed records are exported.
    let (cp_path, entries) = checkpoint_entries(&ledger_dir)?;
    let mut notes = Vec::new();
    for (offset, note) in entries {
        let parsed =
            checkpoint::parse_note(&note).map_err(|r| corrupt(None, &cp_path, Some(offset), r))?;
        notes.push((note, parsed.checkpoint));
    }
    let signed = notes.last().map_or(0, |(_, c)| c.tree_size);
    if signed == 0 {
        return Err(LedgerError::InvalidInput(
            "the ledger has no signed checkpoint yet; nothing can be exported".into(),
        ));
    }
    let to = to.unwrap_or(signed - 1);
    if from > to || to >= signed {
        return Err(LedgerError::InvalidInput(format!(
            "need from <= to < {signed}, the records covered by the latest signed checkpoint (got from {from}, to {to}); newer records are exported once the writer checkpoints them"
        )));
    }

    // Retention: the history of pruned records comes from the tombstone.
    let tomb = crate::retention::load(&ledger_dir)?;
    let pruned = tomb.as_ref().map_or(0, crate::retention::Loaded::pruned);
    if from < pruned {
        return Err(LedgerError::InvalidInput(format!(
            "records 0..{} were pruned by retention; export from record {pruned} or later",
            pruned - 1
        )));
    }

    // One pass over every complete record: leaves, chain rules, key history, revocations,
    // redactions after the range that refer into it, frames of the range.
    let mut leaves: Vec<Hash> = Vec::new();
    let mut frames: Vec<u8> = Vec::new();
    let mut keys_hist = tomb
        .as_ref()
        .map_or_else(Vec::new, |t| t.tombstone.keys.clone());
    let mut revocations = tomb
        .as_ref()
        .map_or_else(Vec::new, |t| t.tombstone.revocations.clone());
    let mut redactions = Vec::new();
    let chain = walk_checked(
        &ledger_dir,
        tomb.as_ref(),
        |chain, index, prev_hash, f, raw| {
            match f.header.kind() {
                RecordKind::Key => keys_hist.push(HistoryKey {
                    index,
                    ts_micros: f.header.ts_micros(),
                    payload: String::from_utf8_lossy(f.payload).into_owned(),
                }),
                RecordKind::Revocation => {
                    if let Some((e, _)) = chain.revoked.iter().find(|(_, i)| **i == index) {
                        revocations.push(HistoryRevocation {
                            index,
                            revoked_epoch: *e,
                        });
                    }
                }
                RecordKind::Redaction
                    if index > to && f.header.refs().any(|r| r >= from && r <= to) =>
                {
                    redactions.push(HistoryRedaction {
                        index,
                        key_epoch: f.header.key_epoch(),
                        prev_hash: hex::encode(prev_hash),
                        refs: f.header.refs().collect(),
                        payload: String::from_utf8_lossy(f.payload).into_owned(),
                    });
                }
                _ => {}
            }
            if index >= from && index <= to {
                frames.extend_from_slice(raw);
            }
            leaves.push(f.record_hash);
        },
    )?;
    let tomb_prev = tomb.as_ref().map(|t| t.prev_hash);
    let leaves = LeafSet::pruned(tomb.map_or_else(Frontier::new, |t| t.frontier), leaves);
    let len = leaves.len();
    if signed > len {
        return Err(corrupt(
            None,
            &cp_path,
            None,
            format!("the latest checkpoint covers {signed} records, but only {len} are present"),
        ));
    }

    // Checkpoints in range, copied verbatim; the first one past the range closes it.
    let mut cp_out = Vec::new();
    let mut cp_sizes: Vec<(u64, Hash)> = Vec::new();
    let mut closing: Option<(String, u64)> = None;
    for (note, cp) in &notes {
        let size = cp.tree_size;
        if size >= from.max(1) && size <= to + 1 {
            cp_out.extend_from_slice(&checkpoint::frame_entry(note));
            if cp_sizes.last().map(|(s, _)| *s) != Some(size) {
                cp_sizes.push((size, cp.root));
            }
        } else if size > to + 1 && closing.is_none() {
            closing = Some((note.clone(), size));
        }
    }
    let bad_sizes = || LedgerError::InvalidInput("bad checkpoint sizes".into());
    // RFC 9162 PROOF(a, D[b]) between two tree heads.
    let consistency = |(a, ra): (u64, Hash), (b, rb): (u64, Hash)| {
        let p = leaves.consistency_proof(a, b).ok_or_else(bad_sizes)?;
        Ok::<_, LedgerError>(ConsistencyProof {
            first: a,
            second: b,
            first_root: hex::encode(ra),
            second_root: hex::encode(rb),
            proof: p.iter().map(hex::encode).collect(),
            first_checkpoint: None,
            second_checkpoint: None,
        })
    };
    let proofs = cp_sizes
        .windows(2)
        .map(|w| consistency(w[0], w[1]))
        .collect::<Result<Vec<_>, _>>()?;
    // Tree size of the bundle's last signed checkpoint (the closing one, or to + 1).
    let mut last_signed = to + 1;
    let tail = if cp_sizes.last().map(|(s, _)| *s) == Some(to + 1) {
        None
    } else {
        let (note, size) = closing.ok_or_else(|| {
            LedgerError::InvalidInput(format!("no signed checkpoint covers record {to}"))
        })?;
        let p = leaves
            .consistency_proof(to + 1, size)
            .ok_or_else(bad_sizes)?;
        last_signed = size;
        Some(TailProof {
            tree_size: to + 1,
            checkpoint: note,
            proof: p.iter().map(hex::encode).collect(),
        })
    };
    // The anchor proof links the trusted size with the bundle's last signed size.
    let anchor_proof = match anchor {
        None => None,
        Some(t) => {
            let m = t.checkpoint().tree_size;
            let n = last_signed;
            if m > len {
                return Err(LedgerError::InvalidInput(format!(
                    "the trusted checkpoint covers {m} records, but the ledger has only {len} (rollback?)"
                )));
            }
            let (a, b) = if m <= n { (m, n) } else { (n, m) };
            let head = |size: u64| {
                leaves.root(size).map(|r| (size, r)).ok_or_else(|| {
                    LedgerError::InvalidInput(format!(
                        "the trusted checkpoint (tree size {m}) lies in the range pruned by retention (records 0..{pruned})"
                    ))
                })
            };
            Some(consistency(head(a)?, head(b)?)?)
        }
    };

    let frontier = leaves.frontier(from).ok_or_else(bad_sizes)?;
    let origin = chain
        .origin
        .as_ref()
        .map(|o| String::from_utf8_lossy(o).into_owned())
        .unwrap_or_default();
    let history = History {
        origin: origin.clone(),
        from,
        to,
        prev_hash: hex::encode(match (from, tomb_prev) {
            (0, _) => [0u8; 32],
            (f, Some(prev)) if f == pruned => prev,
            (f, _) => leaves.leaf(f - 1).ok_or_else(bad_sizes)?,
        }),
        frontier: frontier.nodes().iter().map(hex::encode).collect(),
        keys: keys_hist.clone(),
        revocations,
        redactions,
    };

    // Public keys of every epoch.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut newest: Option<(u32, EpochKeys)> = None;
    for hk in &keys_hist {
        let epoch = payload_epoch(&hk.payload)?;
        let k = KeyRecordPayload::parse_and_check(hk.payload.as_bytes(), epoch, &origin)
            .map_err(LedgerError::Key)?;
        let p = keys::public_key_path(&keys_dir, epoch);
        files.insert(
            format!("keys/ledger-mldsa65-{epoch}.pub"),
            fs::read(&p).at(&p)?,
        );
        if k.ed25519.is_some() {
            let p = keys::ed25519_public_key_path(&keys_dir, epoch);
            files.insert(
                format!("keys/ledger-ed25519-{epoch}.pub"),
                fs::read(&p).at(&p)?,
            );
        }
        newest = Some((epoch, k));
    }
    let Some((epoch, newest_keys)) = newest else {
        return Err(LedgerError::Key("the ledger has no key record".into()));
    };
    let signer = keys::load_signer(&keys_dir, epoch)?;
    if signer.public_key != newest_keys.public_key {
        return Err(LedgerError::Key(format!(
            "the signing key in {} does not match key epoch {epoch} of the log",
            keys_dir.display()
        )));
    }

    let seg_name = format!("ledger/{}", segment_file_name(from));
    files.insert(seg_name, frames);
    let cp_count = checkpoint::scan_entries(&cp_out).entries.len() as u64;
    files.insert(format!("ledger/{CHECKPOINTS_FILE}"), cp_out);
    files.insert(
        CONSISTENCY_FILE.to_string(),
        serde_json::to_vec_pretty(&proofs).map_err(|e| LedgerError::InvalidInput(e.to_string()))?,
    );
    let enc = |e: serde_json::Error| LedgerError::InvalidInput(e.to_string());
    if let Some(t) = &tail {
        files.insert(
            TAIL_FILE.to_string(),
            serde_json::to_vec_pretty(t).map_err(enc)?,
        );
    }
    if let Some(a) = &anchor_proof {
        files.insert(
            ANCHOR_FILE.to_string(),
            serde_json::to_vec_pretty(a).map_err(enc)?,
        );
    }
    files.insert(
        HISTORY_FILE.to_string(),
        serde_json::to_vec_pretty(&history)
            .map_err(|e| LedgerError::InvalidInput(e.to_string()))?,
    );

    let head = format!(
        "{MANIFEST_MAGIC}\norigin {origin}\nrange {from} {to}\nkey-epoch {epoch}\ncreated {}\n",
        chrono::Utc::now().timestamp_micros()
    );
    let manifest = sign_manifest(&head, &files, &origin, &signer, EXPORT_CONTEXT)?;
    write_bundle(out, &files, &manifest)?;
    Ok(ExportSummary {
        out: out.to_path_buf(),
        from,
        to,
        records: to - from + 1,
        checkpoints: cp_count,
        key_epochs: keys_hist.len() as u64,
        redacted: chain.redacted.iter().filter(|i| **i >= from).count() as u64,
        files: files.len() as u64 + 1,
        manifest_key_epoch: epoch,
    })
}

/// Reads every complete record of `ledger_dir` in log order, checking the chain rules of
/// §2.4 (a damaged frame at the end of the last segment ends the walk: a writer may be
/// appending), and calls `visit(chain, index, prev_hash, frame, frame_bytes)` after each
/// record passed them. Returns the chain state after the last record.
pub(crate) fn walk_checked(
    ledger_dir: &Path,
    start: Option<&crate::retention::Loaded>,
    mut visit: impl FnMut(&ChainState, u64, &Hash, &crate::record::Frame<'_>, &[u8]),
) -> Result<ChainState, LedgerError> {
    let mut chain = start.map_or_else(ChainState::new, |t| t.start_state().chain);
    let mut segments = list_segments(ledger_dir)?;
    segments.retain(|(first, _)| *first >= chain.start);
    let n_seg = segments.len();
    for (si, (_, path)) in segments.into_iter().enumerate() {
        let bytes = fs::read(&path).at(&path)?;
        let mut r = FrameReader::new(bytes.as_slice(), 0, bytes.len() as u64);
        loop {
            let index = chain.next_index;
            match r.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => {
                    let prev_hash = chain.prev_hash;
                    chain
                        .check(&f)
                        .map_err(|e| corrupt(Some(index), &path, Some(f.offset), e))?;
                    let start = f.offset as usize;
                    visit(
                        &chain,
                        index,
                        &prev_hash,
                        &f,
                        &bytes[start..start + f.len as usize],
                    );
                }
                Err(FrameError::Io(e)) => return Err(LedgerError::io(&path, e)),
                Err(
                    FrameError::Truncated { offset, reason }
                    | FrameError::Invalid { offset, reason },
                ) => {
                    if si + 1 == n_seg {
                        break;
                    }
                    return Err(corrupt(Some(index), &path, Some(offset), reason));
                }
            }
        }
    }
    Ok(chain)
}

fn payload_epoch(payload: &str) -> Result<u32, LedgerError> {
    #[derive(serde::Deserialize)]
    struct E {
        epoch: u32,
    }
    serde_json::from_str::<E>(payload)
        .map(|e| e.epoch)
        .map_err(|e| LedgerError::Key(format!("key record payload: {e}")))
}

/// Verify `path`, which may be a data directory (`ledger/` + `keys/`) or an export bundle
/// (has a `MANIFEST`, `history.json` or `proofs/`; a bundle missing any of them fails).
/// Offline and read-only.
pub fn verify_path(path: &Path) -> Result<VerifyReport, LedgerError> {
    verify_path_with(path, &VerifyOptions::default())
}

/// [`verify_path`] with options (unsigned tail, trusted checkpoints).
pub fn verify_path_with(path: &Path, opts: &VerifyOptions) -> Result<VerifyReport, LedgerError> {
    if crate::evidence::is_evidence_bundle(path) {
        crate::evidence::verify_evidence(path, opts)
    } else if path.join(MANIFEST_FILE).exists()
        || path.join(HISTORY_FILE).exists()
        || path.join("proofs").exists()
    {
        verify_bundle_with(path, opts)
    } else {
        crate::verify::verify_dir_with(path, opts)
    }
}

struct Manifest {
    body: String,
    origin: String,
    from: u64,
    to: u64,
    key_epoch: u32,
    files: BTreeMap<String, (String, u64)>,
    signatures: Vec<NoteSignature>,
}

fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let m = parse_signed_manifest(text, MANIFEST_MAGIC, "range")?;
    let (a, b) = m.scope.split_once(' ').ok_or("bad range line")?;
    Ok(Manifest {
        from: manifest_number(a)?,
        to: manifest_number(b)?,
        body: m.body,
        origin: m.origin,
        key_epoch: m.key_epoch,
        files: m.files,
        signatures: m.signatures,
    })
}

/// A signed manifest (`MANIFEST` of a range export or of an evidence bundle): `magic`, then
/// `origin`, the `scope` line (range or tree size), `key-epoch`, `created`, `file` lines,
/// a blank line and signature lines.
pub(crate) struct SignedManifest {
    pub body: String,
    pub origin: String,
    /// The rest of the scope line, after its name and a space.
    pub scope: String,
    pub key_epoch: u32,
    pub files: BTreeMap<String, (String, u64)>,
    pub signatures: Vec<NoteSignature>,
}

pub(crate) fn manifest_number(s: &str) -> Result<u64, String> {
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("non-canonical number {s:?}"));
    }
    if !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("bad number {s:?}"));
    }
    s.parse::<u64>().map_err(|_| format!("bad number {s:?}"))
}

pub(crate) fn parse_signed_manifest(
    text: &str,
    magic: &str,
    scope_name: &str,
) -> Result<SignedManifest, String> {
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err("manifest contains control characters".into());
    }
    let split = text
        .rfind("\n\n")
        .ok_or("manifest has no signature block")?;
    let body = &text[..split + 1];
    let signatures = checkpoint::parse_signature_lines(&text[split + 2..])?;
    let mut lines = body[..body.len() - 1].split('\n');
    if lines.next() != Some(magic) {
        return Err(format!("first line is not {magic:?}"));
    }
    let field = |l: Option<&str>, name: &str| -> Result<String, String> {
        l.and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(' '))
            .map(str::to_string)
            .ok_or_else(|| format!("missing or malformed {name:?} line"))
    };
    let origin = field(lines.next(), "origin")?;
    let scope = field(lines.next(), scope_name)?;
    let key_epoch = u32::try_from(manifest_number(&field(lines.next(), "key-epoch")?)?)
        .map_err(|_| "bad key-epoch")?;
    let _created = field(lines.next(), "created")?;
    let mut files = BTreeMap::new();
    for l in lines {
        let rest = l
            .strip_prefix("file ")
            .ok_or_else(|| format!("unexpected manifest line {l:?}"))?;
        let mut parts = rest.splitn(3, ' ');
        let (Some(digest), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed file line {l:?}"));
        };
        if digest.len() != 64
            || !digest
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(format!("bad digest in {l:?}"));
        }
        if name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
            || name.contains('\\')
        {
            return Err(format!("unsafe path in {l:?}"));
        }
        if files
            .insert(
                name.to_string(),
                (digest.to_string(), manifest_number(size)?),
            )
            .is_some()
        {
            return Err(format!("file {name} listed twice"));
        }
    }
    Ok(SignedManifest {
        body: body.to_string(),
        origin,
        scope,
        key_epoch,
        files,
        signatures,
    })
}

/// Step 1 of bundle verification: every file of `dir` but `MANIFEST` is listed, and every
/// listed file has the listed size and SHA-256. Returns the number of files checked, or the
/// failing file and why.
pub(crate) fn check_manifest_files(
    dir: &Path,
    files: &BTreeMap<String, (String, u64)>,
) -> Result<Result<u64, (PathBuf, String)>, LedgerError> {
    let mut present = Vec::new();
    walk(dir, "", &mut present)?;
    present.retain(|p| p != MANIFEST_FILE);
    present.sort();
    for p in &present {
        if !files.contains_key(p) {
            return Ok(Err((
                dir.join(p),
                "file is not listed in the signed manifest".into(),
            )));
        }
    }
    let mut n = 0;
    for (name, (digest, size)) in files {
        let path = dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                return Ok(Err((
                    path,
                    format!("listed in the manifest but unreadable: {e}"),
                )));
            }
        };
        if bytes.len() as u64 != *size || sha256_hex(&bytes) != *digest {
            return Ok(Err((
                path,
                format!(
                    "SHA-256 digest / size ({} bytes) does not match the signed manifest",
                    bytes.len()
                ),
            )));
        }
        n += 1;
    }
    Ok(Ok(n))
}

/// Writes (and fsyncs) every file of a bundle into `out`, the manifest last.
pub(crate) fn write_bundle(
    out: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    manifest: &str,
) -> Result<(), LedgerError> {
    fs::create_dir_all(out).at(out)?;
    for (name, bytes) in files {
        write_file(&out.join(name), bytes)?;
    }
    write_file(&out.join(MANIFEST_FILE), manifest.as_bytes())
}

/// The body of a manifest over `files`, and the note signed with `signer` under `ctx`.
pub(crate) fn sign_manifest(
    head: &str,
    files: &BTreeMap<String, Vec<u8>>,
    origin: &str,
    signer: &keys::Signer,
    ctx: &[u8],
) -> Result<String, LedgerError> {
    let mut body = head.to_string();
    for (name, bytes) in files {
        body.push_str(&format!(
            "file {} {} {name}\n",
            sha256_hex(bytes),
            bytes.len()
        ));
    }
    let sig = signer.sign_with_context(body.as_bytes(), ctx)?;
    let mut manifest = checkpoint::assemble_note(
        &body,
        origin,
        keys::key_id(origin, &signer.public_key),
        &sig,
    );
    if let (Some(pk), Some(ed)) = (
        signer.ed25519_public_key(),
        signer.sign_ed25519(body.as_bytes()),
    ) {
        checkpoint::add_signature_line(
            &mut manifest,
            origin,
            keys::ed25519_key_id(origin, &pk),
            &ed,
        );
    }
    Ok(manifest)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), LedgerError> {
    for ent in fs::read_dir(dir).at(dir)? {
        let ent = ent.at(dir)?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let ft = ent.file_type().at(&ent.path())?;
        if ft.is_dir() {
            walk(&ent.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Verify an export bundle offline: deep ledger verification of the range (records, chain,
/// checkpoints, signatures, redactions, revocations), the key history's rotation signatures,
/// the consistency proofs, and the signed manifest with every file's digest.
pub fn verify_bundle(dir: &Path) -> Result<VerifyReport, LedgerError> {
    verify_bundle_with(dir, &VerifyOptions::default())
}

/// [`verify_bundle`] with trusted checkpoints (`allow_unsigned_tail` has no effect: every
/// record of a bundle must be covered by a signed checkpoint).
pub fn verify_bundle_with(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, LedgerError> {
    let mut report = VerifyReport::empty("export bundle");
    let manifest_path = dir.join(MANIFEST_FILE);
    let fail = |report: &mut VerifyReport, file: &Path, index: Option<u64>, r: String| {
        report.first_failure = Some(VerifyFailure::new(index, file, None, r));
    };
    let text = match fs::read(&manifest_path) {
        Ok(t) => t,
        Err(e) => {
            fail(
                &mut report,
                &manifest_path,
                None,
                format!("signed manifest missing or unreadable: {e}"),
            );
            return Ok(report);
        }
    };
    let manifest = match std::str::from_utf8(&text)
        .map_err(|_| "manifest is not UTF-8".to_string())
        .and_then(parse_manifest)
    {
        Ok(m) => m,
        Err(r) => {
            fail(&mut report, &manifest_path, None, r);
            return Ok(report);
        }
    };
    report.origin = manifest.origin.clone();
    report.first_index = manifest.from;

    // 1. Every file is listed in the manifest with the right size and SHA-256 (cheap, and
    //    catches any modification of a file after export).
    match check_manifest_files(dir, &manifest.files)? {
        Ok(n) => report.manifest_files = n,
        Err((path, r)) => {
            fail(&mut report, &path, None, r);
            return Ok(report);
        }
    }

    // history.json -> key chain.
    let hist_path = dir.join(HISTORY_FILE);
    let history: History = match fs::read(&hist_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(h) => h,
        Err(r) => {
            fail(
                &mut report,
                &hist_path,
                None,
                format!("cannot read key history: {r}"),
            );
            return Ok(report);
        }
    };
    let origin = manifest.origin.clone();
    let chain_keys = match key_chain(&history.keys, &origin) {
        Ok(k) => k,
        Err(r) => {
            fail(&mut report, &hist_path, None, r);
            return Ok(report);
        }
    };

    // 2. The manifest is signed by the newest, unrevoked key of the (rotation-chained) key history.
    // Signed manifest.
    let Some(mkey) = chain_keys.get(&manifest.key_epoch) else {
        fail(
            &mut report,
            &manifest_path,
            None,
            format!(
                "manifest signed with unknown key epoch {}",
                manifest.key_epoch
            ),
        );
        return Ok(report);
    };
    if history
        .revocations
        .iter()
        .any(|r| r.revoked_epoch == manifest.key_epoch)
    {
        fail(
            &mut report,
            &manifest_path,
            None,
            format!(
                "manifest signed with revoked key epoch {}",
                manifest.key_epoch
            ),
        );
        return Ok(report);
    }
    if manifest.key_epoch != *chain_keys.keys().last().unwrap_or(&0) {
        fail(
            &mut report,
            &manifest_path,
            None,
            format!(
                "manifest signed with key epoch {}, not the newest epoch of the key history",
                manifest.key_epoch
            ),
        );
        return Ok(report);
    }
    if let Err(r) = checkpoint::verify_signed_text(
        manifest.body.as_bytes(),
        &manifest.signatures,
        &origin,
        &mkey.keys,
        EXPORT_CONTEXT,
    ) {
        fail(
            &mut report,
            &manifest_path,
            None,
            format!("manifest signature: {r}"),
        );
        return Ok(report);
    }
    if manifest.from != history.from || manifest.to != history.to || history.origin != origin {
        fail(
            &mut report,
            &hist_path,
            None,
            "history range/origin differ from the manifest".into(),
        );
        return Ok(report);
    }

    // 3. Deep verification of the records, checkpoints and signatures of the range.

    // Deep verification of the records.
    let mut start = match start_state(&history, &chain_keys) {
        Ok(s) => s,
        Err(r) => {
            fail(&mut report, &hist_path, None, r);
            return Ok(report);
        }
    };
    // Signed redaction records after the range authorise redacted records inside it.
    match history_redactions(&history, &chain_keys) {
        Ok(refs) => start.chain.pre_authorise(refs),
        Err(r) => {
            fail(&mut report, &hist_path, None, r);
            return Ok(report);
        }
    }
    let mut v = Verifier::new(dir, "export bundle", Some(start), opts);
    v.run_to_end()?;
    let roots = v.verified_roots.clone();
    let end_root = v.current_root();
    let (from, to) = (manifest.from, manifest.to);
    let in_range = |i: u64| i >= from && i <= to;
    let bundle_keys: BTreeMap<u32, (u64, EpochKeys)> = v
        .chain
        .keys
        .iter()
        .filter(|(_, k)| in_range(k.introduced_at))
        .map(|(e, k)| (*e, (k.introduced_at, k.keys.clone())))
        .collect();
    let bundle_revs: BTreeMap<u32, u64> = v
        .chain
        .revoked
        .iter()
        .filter(|(_, i)| in_range(**i))
        .map(|(e, i)| (*e, *i))
        .collect();
    let unreached = std::mem::take(&mut v.unreached_trusted);
    let manifest_files = report.manifest_files;
    let mut report = v.report;
    report.manifest_files = manifest_files;
    if report.first_failure.is_some() {
        return Ok(report);
    }
    let expected = to - from + 1;
    if report.records != expected {
        let got = report.records;
        fail(
            &mut report,
            &dir.join("ledger"),
            Some(from + got),
            format!(
                "bundle holds {got} records, the manifest range {from}..={to} needs {expected}"
            ),
        );
        return Ok(report);
    }
    // The key and revocation records inside the range and the history's entries for the
    // range must be the same, both ways (§6 rule 4).
    let hist_keys: BTreeMap<u32, (u64, EpochKeys)> = chain_keys
        .iter()
        .filter(|(_, k)| in_range(k.introduced_at))
        .map(|(e, k)| (*e, (k.introduced_at, k.keys.clone())))
        .collect();
    if hist_keys != bundle_keys {
        let epochs = |m: &BTreeMap<u32, (u64, EpochKeys)>| {
            m.iter()
                .map(|(e, (i, _))| format!("epoch {e} at record {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        fail(
            &mut report,
            &hist_path,
            None,
            format!(
                "the key history's entries inside the range ({}) differ from the key records of the bundle ({})",
                epochs(&hist_keys),
                epochs(&bundle_keys)
            ),
        );
        return Ok(report);
    }
    let hist_revs: BTreeMap<u32, u64> = history
        .revocations
        .iter()
        .filter(|r| in_range(r.index))
        .map(|r| (r.revoked_epoch, r.index))
        .collect();
    if hist_revs != bundle_revs || history.revocations.len() != revocation_count(&history) {
        fail(
            &mut report,
            &hist_path,
            None,
            format!(
                "the history's revocations inside the range {hist_revs:?} differ from the revocation records of the bundle {bundle_revs:?} (epoch -> record)"
            ),
        );
        return Ok(report);
    }

    // Consistency proofs between consecutive verified checkpoints.
    let cons_path = dir.join(CONSISTENCY_FILE);
    let proofs: Vec<ConsistencyProof> = match read_json(&cons_path) {
        Ok(p) => p,
        Err(r) => {
            fail(
                &mut report,
                &cons_path,
                None,
                format!("cannot read consistency proofs: {r}"),
            );
            return Ok(report);
        }
    };
    let mut sizes = roots.clone();
    sizes.dedup_by_key(|(s, _)| *s);
    if proofs.len() != sizes.len().saturating_sub(1) {
        fail(
            &mut report,
            &cons_path,
            None,
            format!(
                "{} consistency proofs for {} distinct checkpoints",
                proofs.len(),
                sizes.len()
            ),
        );
        return Ok(report);
    }
    for (p, w) in proofs.iter().zip(sizes.windows(2)) {
        let ok = p.first == w[0].0
            && p.second == w[1].0
            && p.first_root == hex::encode(w[0].1)
            && p.second_root == hex::encode(w[1].1)
            && p.verify();
        if !ok {
            fail(
                &mut report,
                &cons_path,
                None,
                format!("consistency proof {} -> {} does not verify", w[0].0, w[1].0),
            );
            return Ok(report);
        }
        report.consistency_proofs += 1;
    }

    // The end of the range must be covered by a signature: a checkpoint of exactly to + 1
    // records in the bundle, or the closing checkpoint of proofs/tail.json.
    let tail_path = dir.join(TAIL_FILE);
    let covered = sizes.last().map(|(s, _)| *s) == Some(to + 1);
    if covered {
        if tail_path.exists() {
            fail(
                &mut report,
                &tail_path,
                None,
                format!(
                    "{TAIL_FILE} is present although a checkpoint of the bundle covers the range"
                ),
            );
            return Ok(report);
        }
    } else {
        match check_tail(&tail_path, &history, &chain_keys, to, &end_root) {
            Ok((size, root)) => {
                sizes.push((size, root));
                report.checkpoints += 1;
                report.signed_records = size;
                report.consistency_proofs += 1;
            }
            Err(r) => {
                fail(&mut report, &tail_path, Some(to), r);
                return Ok(report);
            }
        }
    }

    // Trusted checkpoints outside the range: proofs/anchor.json links them to a signed size.
    let anchor_path = dir.join(ANCHOR_FILE);
    for t in unreached {
        let cp = t.checkpoint();
        let res = check_anchor(&anchor_path, &t, &sizes, &chain_keys, &history);
        match res {
            Ok(()) => report.trusted_checkpoints.push(TrustedResult {
                source: t.source.clone(),
                tree_size: cp.tree_size,
                how: format!("consistency proof in {ANCHOR_FILE}"),
            }),
            Err(r) => {
                fail(
                    &mut report,
                    &t.source,
                    None,
                    format!("trusted checkpoint (tree size {}): {r}", cp.tree_size),
                );
                return Ok(report);
            }
        }
    }
    Ok(report)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Revocation entries that name distinct epochs (a repeated epoch makes the list invalid).
fn revocation_count(history: &History) -> usize {
    let epochs: std::collections::BTreeSet<u32> = history
        .revocations
        .iter()
        .map(|r| r.revoked_epoch)
        .collect();
    epochs.len()
}

/// The key epoch in force for a checkpoint over `tree_size` records, by the key history,
/// refusing an epoch revoked by a record `< tree_size`.
fn history_signer<'a>(
    keys: &'a BTreeMap<u32, KnownKey>,
    history: &History,
    tree_size: u64,
    epoch: u32,
) -> Result<&'a KnownKey, String> {
    let in_force = epoch_in_force(keys, tree_size)
        .ok_or_else(|| format!("no key epoch is in force at tree size {tree_size}"))?;
    if in_force.keys.epoch != epoch {
        return Err(format!(
            "signed with key epoch {epoch}, but the key epoch in force at tree size {tree_size} is {}",
            in_force.keys.epoch
        ));
    }
    if let Some(r) = history
        .revocations
        .iter()
        .find(|r| r.revoked_epoch == epoch && r.index < tree_size)
    {
        return Err(format!(
            "signed with key epoch {epoch}, which was revoked by record {}",
            r.index
        ));
    }
    Ok(in_force)
}

/// Verify `proofs/tail.json`; returns the closing checkpoint's (tree size, root).
fn check_tail(
    path: &Path,
    history: &History,
    keys: &BTreeMap<u32, KnownKey>,
    to: u64,
    end_root: &Hash,
) -> Result<(u64, Hash), String> {
    if !path.exists() {
        return Err(format!(
            "no checkpoint of the bundle covers records up to {to}, and {TAIL_FILE} is missing: the end of the range is not signed"
        ));
    }
    let tail: TailProof = read_json(path)?;
    if tail.tree_size != to + 1 {
        return Err(format!(
            "tree_size {} is not the end of the range ({})",
            tail.tree_size,
            to + 1
        ));
    }
    let note = checkpoint::parse_note(&tail.checkpoint).map_err(|r| format!("checkpoint: {r}"))?;
    let cp = &note.checkpoint;
    if cp.origin != history.origin {
        return Err(format!(
            "checkpoint origin {:?} differs from the ledger's",
            cp.origin
        ));
    }
    if cp.tree_size <= tail.tree_size {
        return Err(format!(
            "closing checkpoint size {} does not extend past the range",
            cp.tree_size
        ));
    }
    let key = history_signer(keys, history, cp.tree_size, cp.key_epoch)?;
    checkpoint::verify_note_signatures(&note, &cp.origin, &key.keys)
        .map_err(|r| format!("closing checkpoint (tree size {}): {r}", cp.tree_size))?;
    let path_nodes = crate::proof::unhex_path(&tail.proof)
        .ok_or("a proof hash is not 64 lowercase hex digits")?;
    if !merkle::verify_consistency(
        tail.tree_size,
        cp.tree_size,
        end_root,
        &cp.root,
        &path_nodes,
    ) {
        return Err(format!(
            "the records of the range are not a prefix of the closing checkpoint (consistency proof {} -> {} does not verify)",
            tail.tree_size, cp.tree_size
        ));
    }
    Ok((cp.tree_size, cp.root))
}

/// A trusted checkpoint outside the bundle's records: its signature (by the key history) and
/// the consistency proof in `proofs/anchor.json` to one of the bundle's signed sizes.
fn check_anchor(
    path: &Path,
    t: &TrustedCheckpoint,
    signed: &[(u64, Hash)],
    keys: &BTreeMap<u32, KnownKey>,
    history: &History,
) -> Result<(), String> {
    let cp = t.checkpoint();
    if cp.origin != history.origin {
        return Err(format!(
            "origin {:?} differs from the ledger origin {:?}",
            cp.origin, history.origin
        ));
    }
    let key = history_signer(keys, history, cp.tree_size, cp.key_epoch)?;
    checkpoint::verify_note_signatures(&t.note, &cp.origin, &key.keys)
        .map_err(|r| format!("{r} (not signed by this ledger's key)"))?;
    if !path.exists() {
        return Err(format!(
            "it lies outside the bundle's records {}..={} and the bundle has no {ANCHOR_FILE}; export with --trusted-checkpoint to include the consistency proof",
            history.from, history.to
        ));
    }
    let p: ConsistencyProof = read_json(path).map_err(|r| format!("{ANCHOR_FILE}: {r}"))?;
    let m = cp.tree_size;
    let other = if p.first == m { p.second } else { p.first };
    let Some((_, other_root)) = signed.iter().find(|(s, _)| *s == other) else {
        return Err(format!(
            "{ANCHOR_FILE} does not link tree size {m} with a signed checkpoint of the bundle"
        ));
    };
    let (want_first, want_second) = if p.first == m {
        (cp.root, *other_root)
    } else {
        (*other_root, cp.root)
    };
    if (p.first != m && p.second != m)
        || p.first_root != hex::encode(want_first)
        || p.second_root != hex::encode(want_second)
    {
        return Err(format!(
            "fork: {ANCHOR_FILE} does not connect the trusted root with the bundle's signed root"
        ));
    }
    if !p.verify() {
        return Err(format!(
            "fork: the consistency proof {} -> {} does not verify",
            p.first, p.second
        ));
    }
    Ok(())
}

/// Verify the history's redaction records (each after the range, signed by the key epoch in
/// force at its index); returns the records they authorise.
fn history_redactions(
    history: &History,
    keys: &BTreeMap<u32, KnownKey>,
) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for r in &history.redactions {
        if r.index <= history.to {
            return Err(format!(
                "history lists redaction record {} although it is not after the range",
                r.index
            ));
        }
        if r.refs.is_empty() || r.refs.iter().any(|x| *x >= r.index) {
            return Err(format!("redaction record {} has invalid refs", r.index));
        }
        let key = epoch_in_force(keys, r.index)
            .filter(|k| k.keys.epoch == r.key_epoch)
            .ok_or_else(|| {
                format!(
                    "redaction record {}: key epoch {} is not the epoch in force at its index",
                    r.index, r.key_epoch
                )
            })?;
        let prev = crate::proof::unhex(&r.prev_hash)
            .ok_or_else(|| format!("redaction record {}: bad prev_hash", r.index))?;
        crate::segment::check_redaction(
            r.payload.as_bytes(),
            &history.origin,
            r.index,
            &prev,
            &r.refs,
            &key.keys,
        )
        .map_err(|e| format!("redaction record {}: {e}", r.index))?;
        out.extend(r.refs.iter().copied());
    }
    Ok(out)
}

/// Parse the history's key records and check the rotation signature chain.
pub(crate) fn key_chain(
    history_keys: &[HistoryKey],
    origin: &str,
) -> Result<BTreeMap<u32, KnownKey>, String> {
    let mut out: BTreeMap<u32, KnownKey> = BTreeMap::new();
    let mut prev: Option<EpochKeys> = None;
    let mut last_index: Option<u64> = None;
    for hk in history_keys {
        let epoch = payload_epoch(&hk.payload).map_err(|e| e.to_string())?;
        let k = KeyRecordPayload::parse_and_check(hk.payload.as_bytes(), epoch, origin)
            .map_err(|r| format!("key history entry at record {}: {r}", hk.index))?;
        if last_index.is_some_and(|l| hk.index <= l) {
            return Err("key history is not in log order".into());
        }
        match &prev {
            None => {
                if hk.index != 0 {
                    return Err("key history does not start at record 0".into());
                }
            }
            Some(p) => {
                if Some(epoch) != p.epoch.checked_add(1) {
                    return Err(format!(
                        "key history jumps from epoch {} to {epoch}",
                        p.epoch
                    ));
                }
                k.check_rotation_from(p, origin)
                    .map_err(|r| format!("key history entry at record {}: {r}", hk.index))?;
            }
        }
        last_index = Some(hk.index);
        prev = Some(k.clone());
        out.insert(
            epoch,
            KnownKey {
                keys: k,
                introduced_at: hk.index,
                ts_micros: hk.ts_micros,
            },
        );
    }
    if out.is_empty() {
        return Err("key history is empty".into());
    }
    Ok(out)
}

fn start_state(history: &History, keys: &BTreeMap<u32, KnownKey>) -> Result<StartState, String> {
    let from = history.from;
    let unhex = |s: &String| -> Result<Hash, String> {
        let mut h = [0u8; 32];
        hex::decode_to_slice(s, &mut h).map_err(|_| format!("bad hash {s:?} in history"))?;
        Ok(h)
    };
    let nodes = history
        .frontier
        .iter()
        .map(unhex)
        .collect::<Result<Vec<_>, _>>()?;
    let frontier = Frontier::from_nodes(from, nodes)
        .ok_or("history frontier has the wrong number of nodes")?;
    if from == 0 {
        if unhex(&history.prev_hash)? != [0u8; 32] {
            return Err("prev_hash must be zero for a bundle starting at record 0".into());
        }
        return Ok(StartState {
            chain: ChainState::new(),
            frontier,
        });
    }
    let revoked = history
        .revocations
        .iter()
        .map(|r| (r.revoked_epoch, r.index))
        .collect();
    let chain = ChainState::starting_at(
        from,
        unhex(&history.prev_hash)?,
        &history.origin,
        keys.clone(),
        revoked,
    );
    Ok(StartState { chain, frontier })
}
