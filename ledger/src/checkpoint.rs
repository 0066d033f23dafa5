//! Signed checkpoints (C2SP signed-note / tlog-checkpoint text) and `checkpoints.log` framing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{IoContext, LedgerError};
use crate::keys::{EpochKeys, ed25519_key_id, key_id, verify_ed25519};
use crate::merkle::Hash;

/// Name of the checkpoints file inside the ledger directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";
/// Entry header magic in `checkpoints.log`.
pub const ENTRY_MAGIC: [u8; 4] = *b"DLCK";
/// Entry footer magic in `checkpoints.log`.
pub const ENTRY_END_MAGIC: [u8; 4] = *b"KCLD";
/// Framing overhead per entry: magic + len before, len + magic after.
pub const ENTRY_OVERHEAD: u64 = 16;
/// Largest note this implementation reads.
pub const MAX_NOTE_LEN: usize = 64 * 1024;

const EM_DASH_PREFIX: &str = "\u{2014} ";

/// A signed checkpoint of the ledger's Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Log origin (first line of the note, also the signing key name).
    pub origin: String,
    /// Number of records covered.
    pub tree_size: u64,
    /// Merkle root over the first `tree_size` records (hex in JSON).
    #[serde(with = "hex_root")]
    pub root: [u8; 32],
    /// Checkpoint creation time, microseconds since the Unix epoch (UTC).
    pub timestamp_micros: i64,
    /// Epoch of the key that signed this checkpoint.
    pub key_epoch: u32,
    /// The complete signed note text (body, blank line, signature line).
    pub note: String,
}

mod hex_root {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// Build the note body that is signed.
pub(crate) fn note_body(
    origin: &str,
    tree_size: u64,
    root: &Hash,
    timestamp_micros: i64,
    key_epoch: u32,
) -> String {
    format!(
        "{origin}\n{tree_size}\n{}\ntime {timestamp_micros}\nkey-epoch {key_epoch}\n",
        B64.encode(root)
    )
}

/// Append the blank line and signature line to a body.
pub(crate) fn assemble_note(body: &str, key_name: &str, key_id: [u8; 4], sig: &[u8]) -> String {
    let mut blob = Vec::with_capacity(4 + sig.len());
    blob.extend_from_slice(&key_id);
    blob.extend_from_slice(sig);
    format!("{body}\n{EM_DASH_PREFIX}{key_name} {}\n", B64.encode(blob))
}

/// Append one more signature line to a note.
pub(crate) fn add_signature_line(note: &mut String, key_name: &str, key_id: [u8; 4], sig: &[u8]) {
    let mut blob = Vec::with_capacity(4 + sig.len());
    blob.extend_from_slice(&key_id);
    blob.extend_from_slice(sig);
    note.push_str(EM_DASH_PREFIX);
    note.push_str(key_name);
    note.push(' ');
    note.push_str(&B64.encode(blob));
    note.push('\n');
}

/// Check the signature lines of a note against the keys of one epoch (verifier policy,
/// `docs/ledger-format.md` §3.4 rule 7):
/// * the ML-DSA-65 line (key ID of the epoch's key, context `ctx`) is required; when the epoch
///   has an Ed25519 key, the Ed25519 line is required too;
/// * **every** line whose key name is `key_name` must carry one of those key IDs, appear once,
///   and verify — a bad extra line naming the ledger's key is a failure, not noise;
/// * lines under other key names (e.g. witness cosignatures) are ignored.
pub(crate) fn verify_signed_text(
    body: &[u8],
    signatures: &[NoteSignature],
    key_name: &str,
    keys: &EpochKeys,
    ctx: &[u8],
) -> Result<(), String> {
    let ml_id = key_id(key_name, &keys.public_key);
    let ed_id = keys.ed25519.as_ref().map(|ed| ed25519_key_id(key_name, ed));
    let vk =
        crate::keys::decode_public_key(&keys.public_key).ok_or("public key cannot be decoded")?;
    let (mut ml_seen, mut ed_seen) = (false, false);
    for (n, sig) in signatures.iter().enumerate() {
        if sig.key_name != key_name {
            continue;
        }
        let line = n + 1;
        if sig.key_id == ml_id {
            if ml_seen {
                return Err(format!(
                    "signature line {line} repeats the ML-DSA-65 key id {}",
                    hex::encode(ml_id)
                ));
            }
            ml_seen = true;
            if !crate::keys::verify_with_context(&vk, body, ctx, &sig.signature) {
                return Err(format!(
                    "ML-DSA-65 signature (line {line}) does not verify with key epoch {}",
                    keys.epoch
                ));
            }
        } else if let (Some(ed), Some(id)) = (&keys.ed25519, ed_id)
            && sig.key_id == id
        {
            if ed_seen {
                return Err(format!(
                    "signature line {line} repeats the Ed25519 key id {}",
                    hex::encode(sig.key_id)
                ));
            }
            ed_seen = true;
            if !verify_ed25519(ed, body, &sig.signature) {
                return Err(format!(
                    "Ed25519 signature (line {line}) does not verify with key epoch {}",
                    keys.epoch
                ));
            }
        } else {
            return Err(format!(
                "signature line {line} names key {key_name:?} with key id {}, which is not a key of epoch {} (key ids {}{})",
                hex::encode(sig.key_id),
                keys.epoch,
                hex::encode(ml_id),
                ed_id
                    .map(|i| format!(", {}", hex::encode(i)))
                    .unwrap_or_default()
            ));
        }
    }
    if !ml_seen {
        return Err(format!(
            "no ML-DSA-65 signature line from key {key_name:?} with key id {}",
            hex::encode(ml_id)
        ));
    }
    if let Some(id) = ed_id
        && !ed_seen
    {
        return Err(format!(
            "key epoch {} is hybrid but there is no Ed25519 signature line (key id {})",
            keys.epoch,
            hex::encode(id)
        ));
    }
    Ok(())
}

/// [`verify_signed_text`] for a checkpoint note.
pub(crate) fn verify_note_signatures(
    note: &ParsedNote,
    key_name: &str,
    keys: &EpochKeys,
) -> Result<(), String> {
    verify_signed_text(
        note.body(),
        &note.signatures,
        key_name,
        keys,
        crate::keys::SIGNING_CONTEXT,
    )
}

/// Parse the signature block (the text after the blank line) of a signed note.
pub(crate) fn parse_signature_lines(sig_text: &str) -> Result<Vec<NoteSignature>, String> {
    if !sig_text.ends_with('\n') {
        return Err("signature block does not end with a newline".into());
    }
    let mut signatures = Vec::new();
    for line in sig_text[..sig_text.len() - 1].split('\n') {
        let rest = line
            .strip_prefix(EM_DASH_PREFIX)
            .ok_or_else(|| "signature line does not start with an em dash and space".to_string())?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or("signature line has no key name / signature separator")?;
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
            return Err(format!("invalid key name {name:?} in signature line"));
        }
        let blob = B64
            .decode(b64.as_bytes())
            .map_err(|_| "signature is not valid base64".to_string())?;
        if blob.len() < 5 {
            return Err("signature too short".into());
        }
        if B64.encode(&blob) != b64 {
            return Err("signature is not canonical base64".into());
        }
        signatures.push(NoteSignature {
            key_name: name.to_string(),
            key_id: [blob[0], blob[1], blob[2], blob[3]],
            signature: blob[4..].to_vec(),
        });
    }
    if signatures.is_empty() {
        return Err("note has no signature lines".into());
    }
    Ok(signatures)
}

/// One signature line of a note.
#[derive(Debug, Clone)]
pub(crate) struct NoteSignature {
    pub key_name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// A syntactically valid checkpoint note (signature not yet verified).
#[derive(Debug, Clone)]
pub(crate) struct ParsedNote {
    pub checkpoint: Checkpoint,
    /// Length of the signed body in bytes (`note[..body_len]`).
    pub body_len: usize,
    pub signatures: Vec<NoteSignature>,
}

impl ParsedNote {
    pub fn body(&self) -> &[u8] {
        &self.checkpoint.note.as_bytes()[..self.body_len]
    }
}

fn parse_decimal_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn parse_decimal_i64(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(rest) => {
            let v = parse_decimal_u64(rest)?;
            if v == 0 {
                return None;
            }
            0i64.checked_sub_unsigned(v)
        }
        None => i64::try_from(parse_decimal_u64(s)?).ok(),
    }
}

/// Parse a checkpoint note strictly (format v1, see docs/ledger-format.md).
pub(crate) fn parse_note(note: &str) -> Result<ParsedNote, String> {
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err("note contains control characters".into());
    }
    let split = note
        .rfind("\n\n")
        .ok_or("note has no blank line separating text and signatures")?;
    let body_len = split + 1;
    let body = &note[..body_len];
    let sig_text = &note[split + 2..];

    let lines: Vec<&str> = body[..body.len() - 1].split('\n').collect();
    if lines.len() != 5 {
        return Err(format!(
            "checkpoint body has {} lines, expected 5",
            lines.len()
        ));
    }
    let origin = lines[0].to_string();
    if origin.is_empty() {
        return Err("empty origin line".into());
    }
    let tree_size =
        parse_decimal_u64(lines[1]).ok_or_else(|| format!("bad tree size line {:?}", lines[1]))?;
    let root_bytes = B64
        .decode(lines[2].as_bytes())
        .map_err(|_| format!("root hash line {:?} is not base64", lines[2]))?;
    let root: [u8; 32] = root_bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("root hash is {} bytes, expected 32", root_bytes.len()))?;
    if B64.encode(root) != lines[2] {
        return Err("root hash line is not canonical base64".into());
    }
    let timestamp_micros = lines[3]
        .strip_prefix("time ")
        .and_then(parse_decimal_i64)
        .ok_or_else(|| format!("bad time line {:?}", lines[3]))?;
    let key_epoch = lines[4]
        .strip_prefix("key-epoch ")
        .and_then(parse_decimal_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("bad key-epoch line {:?}", lines[4]))?;

    let signatures = parse_signature_lines(sig_text)?;
    Ok(ParsedNote {
        checkpoint: Checkpoint {
            origin,
            tree_size,
            root,
            timestamp_micros,
            key_epoch,
            note: note.to_string(),
        },
        body_len,
        signatures,
    })
}

/// Frame a note for `checkpoints.log`.
pub(crate) fn frame_entry(note: &str) -> Vec<u8> {
    let len = (note.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(note.len() + ENTRY_OVERHEAD as usize);
    out.extend_from_slice(&ENTRY_MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(note.as_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&ENTRY_END_MAGIC);
    out
}

/// Result of scanning the framing of `checkpoints.log`.
#[derive(Debug)]
pub(crate) struct EntryScan {
    /// (byte offset, note text) of each well-framed entry, in file order.
    pub entries: Vec<(u64, String)>,
    /// First framing problem, if any: (offset, reason, is_truncated).
    pub problem: Option<(u64, String, bool)>,
}

/// Parse the framing of a whole checkpoints file held in memory.
pub(crate) fn scan_entries(bytes: &[u8]) -> EntryScan {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        match parse_entry_at(bytes, pos) {
            Ok((note, next)) => {
                entries.push((pos as u64, note));
                pos = next;
            }
            Err((reason, truncated)) => {
                return EntryScan {
                    entries,
                    problem: Some((pos as u64, reason, truncated)),
                };
            }
        }
    }
    EntryScan {
        entries,
        problem: None,
    }
}

/// Parse one framed entry at `pos`; returns the note and the next offset, or
/// `(reason, truncated)`.
pub(crate) fn parse_entry_at(bytes: &[u8], pos: usize) -> Result<(String, usize), (String, bool)> {
    let rest = &bytes[pos..];
    if rest.len() < 8 {
        if ENTRY_MAGIC.starts_with(&rest[..rest.len().min(4)]) {
            return Err(("incomplete checkpoint entry header".into(), true));
        }
        return Err(("bad checkpoint entry magic".into(), false));
    }
    if rest[..4] != ENTRY_MAGIC {
        return Err(("bad checkpoint entry magic".into(), false));
    }
    let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
    if len > MAX_NOTE_LEN {
        return Err((format!("implausible checkpoint note length {len}"), false));
    }
    let total = len + ENTRY_OVERHEAD as usize;
    if rest.len() < total {
        return Err((
            format!(
                "incomplete checkpoint entry: needs {total} bytes, {} left",
                rest.len()
            ),
            true,
        ));
    }
    let foot = &rest[8 + len..total];
    if foot[..4] != rest[4..8] || foot[4..] != ENTRY_END_MAGIC {
        return Err((
            "checkpoint entry footer does not match its header".into(),
            false,
        ));
    }
    let note = std::str::from_utf8(&rest[8..8 + len])
        .map_err(|_| ("checkpoint note is not valid UTF-8".to_string(), false))?;
    Ok((note.to_string(), pos + total))
}

/// Resolve `checkpoints.log` from either a data dir or a ledger dir.
fn resolve_checkpoints_file(path: &Path) -> Result<Option<PathBuf>, LedgerError> {
    let candidates = [
        path.join("ledger").join(CHECKPOINTS_FILE),
        path.join(CHECKPOINTS_FILE),
    ];
    for c in candidates {
        if c.is_file() {
            return Ok(Some(c));
        }
    }
    if path.exists() {
        Ok(None)
    } else {
        Err(LedgerError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such ledger or data directory",
            ),
        ))
    }
}

/// Read the latest complete checkpoint (for the HTTP API).
///
/// Accepts either the data directory (containing `ledger/`) or the ledger directory itself.
/// Read-only and safe against a concurrent writer: a partially written last entry is ignored.
/// The signature is parsed but *not* verified here (see [`crate::verify_dir`]).
pub fn read_latest_checkpoint(
    data_dir_or_ledger_dir: &Path,
) -> Result<Option<Checkpoint>, LedgerError> {
    let Some(path) = resolve_checkpoints_file(data_dir_or_ledger_dir)? else {
        return Ok(None);
    };
    let mut f = File::open(&path).at(&path)?;
    let len = f.metadata().at(&path)?.len();
    // Fast path: the footer of the last entry tells where it starts.
    if len >= ENTRY_OVERHEAD {
        let mut foot = [0u8; 8];
        f.seek(SeekFrom::Start(len - 8)).at(&path)?;
        f.read_exact(&mut foot).at(&path)?;
        if foot[4..] == ENTRY_END_MAGIC {
            let note_len = u64::from(u32::from_le_bytes([foot[0], foot[1], foot[2], foot[3]]));
            if note_len as usize <= MAX_NOTE_LEN && note_len + ENTRY_OVERHEAD <= len {
                let start = len - note_len - ENTRY_OVERHEAD;
                let mut buf = vec![0u8; (note_len + ENTRY_OVERHEAD) as usize];
                f.seek(SeekFrom::Start(start)).at(&path)?;
                f.read_exact(&mut buf).at(&path)?;
                if let Ok((note, _)) = parse_entry_at(&buf, 0)
                    && let Ok(p) = parse_note(&note)
                {
                    return Ok(Some(p.checkpoint));
                }
            }
        }
    }
    // Slow path (writer mid-append, or damaged file): forward scan, last parseable entry wins.
    f.seek(SeekFrom::Start(0)).at(&path)?;
    let mut bytes = Vec::new();
    f.take(len).read_to_end(&mut bytes).at(&path)?;
    let scan = scan_entries(&bytes);
    Ok(scan
        .entries
        .iter()
        .rev()
        .find_map(|(_, n)| parse_note(n).ok())
        .map(|p| p.checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_round_trip() {
        let body = note_body("dunes/h", 12, &[5u8; 32], 1_700_000_000_000_000, 0);
        assert_eq!(
            body,
            format!(
                "dunes/h\n12\n{}\ntime 1700000000000000\nkey-epoch 0\n",
                B64.encode([5u8; 32])
            )
        );
        let note = assemble_note(&body, "dunes/h", [1, 2, 3, 4], &[9u8; 10]);
        assert!(note.contains("\n\n\u{2014} dunes/h "));
        let p = parse_note(&note).expect("parse");
        assert_eq!(p.checkpoint.tree_size, 12);
        assert_eq!(p.checkpoint.root, [5u8; 32]);
        assert_eq!(p.checkpoint.key_epoch, 0);
        assert_eq!(p.body(), body.as_bytes());
        assert_eq!(p.signatures.len(), 1);
        assert_eq!(p.signatures[0].key_id, [1, 2, 3, 4]);
        assert_eq!(p.signatures[0].signature, vec![9u8; 10]);

        assert!(parse_note(&note.replace("\n12\n", "\n012\n")).is_err());
        assert!(parse_note(&note.replace("time ", "tim ")).is_err());
        assert!(parse_note(&body).is_err());
    }

    #[test]
    fn entry_framing() {
        let a = frame_entry("first\n");
        let b = frame_entry("second\n");
        let mut all = [a.clone(), b.clone()].concat();
        let s = scan_entries(&all);
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[1].0, a.len() as u64);
        assert!(s.problem.is_none());
        all.truncate(all.len() - 3);
        let s = scan_entries(&all);
        assert_eq!(s.entries.len(), 1);
        let (off, _, truncated) = s.problem.expect("problem");
        assert_eq!(off, a.len() as u64);
        assert!(truncated);
        let mut bad = [a, b].concat();
        bad[2] ^= 1;
        let s = scan_entries(&bad);
        assert_eq!(s.entries.len(), 0);
        assert!(!s.problem.expect("problem").2);
    }

    #[test]
    fn checkpoint_serializes_root_as_hex() {
        let cp = Checkpoint {
            origin: "o".into(),
            tree_size: 1,
            root: [0xab; 32],
            timestamp_micros: 2,
            key_epoch: 0,
            note: "n".into(),
        };
        let v = serde_json::to_value(&cp).expect("json");
        assert_eq!(v["root"], serde_json::json!("ab".repeat(32)));
        let back: Checkpoint = serde_json::from_value(v).expect("back");
        assert_eq!(back, cp);
    }
}
