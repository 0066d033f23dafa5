//! Segment files and record-chain validation shared by `Ledger::open` and `verify_dir`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LedgerError};
use crate::keys::{EpochKeys, KeyRecordPayload};
use crate::merkle::Hash;
use crate::record::{Frame, RecordKind};

/// `seg-<first index as 16 lowercase hex digits>.dlg`
pub fn segment_file_name(first_index: u64) -> String {
    format!("seg-{first_index:016x}.dlg")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".dlg")?;
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Segment files in `dir`, sorted by first index. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).at(dir)? {
        let ent = ent.at(dir)?;
        let name = ent.file_name();
        if let Some(first) = name.to_str().and_then(parse_segment_name) {
            out.push((first, ent.path()));
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// Payload of a `revocation` record (kind 9).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationPayload {
    /// The revoked key epoch.
    pub revoked_epoch: u32,
    /// Free-text reason.
    pub reason: String,
}

/// Payload of a `redaction` record (kind 8): who asked, why, and the ledger key's signature
/// over [`redaction_message`] (`docs/ledger-format.md` §2.7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionPayload {
    /// Reason (e.g. a GDPR erasure request reference). Must not repeat the data. 1–1024
    /// bytes, no control characters.
    pub reason: String,
    /// Who requested the erasure (the API token's subject, or `cli:<user>`). 1–255 bytes, no
    /// control characters.
    pub subject: String,
    /// Standard base64 of the ML-DSA-65 signature by the epoch in force (context
    /// `dunes-ledger-redaction-v1`) over [`redaction_message`].
    pub signature: String,
    /// Standard base64 of the Ed25519 signature over the same message; present iff the epoch
    /// in force is hybrid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519_signature: Option<String>,
}

/// Longest redaction reason, in bytes.
pub const MAX_REDACTION_REASON: usize = 1024;
/// Longest redaction subject, in bytes.
pub const MAX_REDACTION_SUBJECT: usize = 255;

/// Check the free-text fields of a redaction (also used by the writer before signing).
pub(crate) fn check_redaction_text(reason: &str, subject: &str) -> Result<(), String> {
    for (name, v, max) in [
        ("reason", reason, MAX_REDACTION_REASON),
        ("subject", subject, MAX_REDACTION_SUBJECT),
    ] {
        if v.is_empty() || v.len() > max {
            return Err(format!(
                "redaction {name} must be 1..={max} bytes, got {}",
                v.len()
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("redaction {name} contains a control character"));
        }
    }
    Ok(())
}

/// The message a `redaction` record's signatures cover:
/// `"dunes-ledger redaction v1\n" ‖ origin ‖ "\n" ‖ decimal(index) ‖ "\n" ‖ decimal(key_epoch)
/// ‖ "\n" ‖ hex(prev_hash) ‖ "\n" ‖ refs as decimals joined by "," ‖ "\n" ‖ reason ‖ "\n" ‖
/// subject ‖ "\n"`, where `index`, `key_epoch`, `prev_hash` and `refs` are the redaction
/// record's own header fields.
pub fn redaction_message(
    origin: &str,
    index: u64,
    key_epoch: u32,
    prev_hash: &Hash,
    refs: &[u64],
    reason: &str,
    subject: &str,
) -> Vec<u8> {
    let refs: Vec<String> = refs.iter().map(u64::to_string).collect();
    format!(
        "dunes-ledger redaction v1\n{origin}\n{index}\n{key_epoch}\n{}\n{}\n{reason}\n{subject}\n",
        hex::encode(prev_hash),
        refs.join(",")
    )
    .into_bytes()
}

/// Parse a redaction payload and verify its signature(s) with the keys of the epoch in force.
pub(crate) fn check_redaction(
    payload: &[u8],
    origin: &str,
    index: u64,
    prev_hash: &Hash,
    refs: &[u64],
    keys: &EpochKeys,
) -> Result<RedactionPayload, String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let p: RedactionPayload = serde_json::from_slice(payload)
        .map_err(|e| format!("redaction payload is not valid: {e}"))?;
    check_redaction_text(&p.reason, &p.subject)?;
    let msg = redaction_message(
        origin, index, keys.epoch, prev_hash, refs, &p.reason, &p.subject,
    );
    let sig = B64
        .decode(p.signature.as_bytes())
        .map_err(|_| "redaction signature is not canonical base64".to_string())?;
    let vk =
        crate::keys::decode_public_key(&keys.public_key).ok_or("public key cannot be decoded")?;
    if !crate::keys::verify_with_context(&vk, &msg, crate::keys::REDACTION_CONTEXT, &sig) {
        return Err(format!(
            "redaction is not signed by key epoch {} (ML-DSA-65 signature does not verify)",
            keys.epoch
        ));
    }
    match (&keys.ed25519, &p.ed25519_signature) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(format!(
                "redaction carries an Ed25519 signature, but key epoch {} is not hybrid",
                keys.epoch
            ));
        }
        (Some(_), None) => {
            return Err(format!(
                "key epoch {} is hybrid, but the redaction has no Ed25519 signature",
                keys.epoch
            ));
        }
        (Some(pk), Some(s)) => {
            let s = B64
                .decode(s.as_bytes())
                .map_err(|_| "redaction Ed25519 signature is not canonical base64".to_string())?;
            if !crate::keys::verify_ed25519(pk, &msg, &s) {
                return Err(format!(
                    "redaction Ed25519 signature does not verify with key epoch {}",
                    keys.epoch
                ));
            }
        }
    }
    Ok(p)
}

/// A key epoch as recorded in the log.
#[derive(Debug, Clone)]
pub(crate) struct KnownKey {
    pub keys: EpochKeys,
    pub introduced_at: u64,
    pub ts_micros: i64,
}

/// The key epoch in force over the first `size` records: the newest epoch whose key record
/// has an index below `size`.
pub(crate) fn epoch_in_force(keys: &BTreeMap<u32, KnownKey>, size: u64) -> Option<&KnownKey> {
    keys.values()
        .filter(|k| k.introduced_at < size)
        .max_by_key(|k| k.keys.epoch)
}

/// Record-to-record invariants (index, chain, origin, key epochs and rotation signatures,
/// revocations, redactions, refs) shared by `Ledger::open` and the verifier.
#[derive(Debug, Clone)]
pub(crate) struct ChainState {
    pub next_index: u64,
    pub prev_hash: Hash,
    pub origin: Option<Vec<u8>>,
    pub key_epoch: Option<u32>,
    pub counts: [u64; RecordKind::ALL.len() + 1],
    /// Index of the first record checked (0, or the start of an export range).
    pub start: u64,
    /// Kind code of every checked record (index - start).
    kinds: Vec<u8>,
    /// Key epochs in log order.
    pub keys: BTreeMap<u32, KnownKey>,
    /// Revoked epoch -> index of the revocation record.
    pub revoked: BTreeMap<u32, u64>,
    /// Records whose redaction a `redaction` record authorises.
    authorised: HashSet<u64>,
    /// Redacted records not (yet) authorised.
    pub unauthorised_redactions: BTreeSet<u64>,
    /// Every redacted record seen.
    pub redacted: Vec<u64>,
}

fn is_protected(kind: RecordKind) -> bool {
    matches!(
        kind,
        RecordKind::Key | RecordKind::Redaction | RecordKind::Revocation
    )
}

impl ChainState {
    pub fn new() -> Self {
        Self {
            next_index: 0,
            prev_hash: [0u8; 32],
            origin: None,
            key_epoch: None,
            counts: [0; RecordKind::ALL.len() + 1],
            start: 0,
            kinds: Vec::new(),
            keys: BTreeMap::new(),
            revoked: BTreeMap::new(),
            authorised: HashSet::new(),
            unauthorised_redactions: BTreeSet::new(),
            redacted: Vec::new(),
        }
    }

    /// State for checking a log suffix that starts at `start` (export bundles).
    pub fn starting_at(
        start: u64,
        prev_hash: Hash,
        origin: &str,
        keys: BTreeMap<u32, KnownKey>,
        revoked: BTreeMap<u32, u64>,
    ) -> Self {
        let mut s = Self::new();
        s.next_index = start;
        s.start = start;
        s.prev_hash = prev_hash;
        s.origin = Some(origin.as_bytes().to_vec());
        s.key_epoch = epoch_in_force(&keys, start).map(|k| k.keys.epoch);
        s.keys = keys
            .into_iter()
            .filter(|(_, k)| k.introduced_at < start)
            .collect();
        s.revoked = revoked.into_iter().filter(|(_, i)| *i < start).collect();
        s
    }

    /// Records whose redaction a verified `redaction` record outside the checked range
    /// authorises (export bundles: `history.json` `redactions`).
    pub fn pre_authorise(&mut self, refs: impl IntoIterator<Item = u64>) {
        self.authorised.extend(refs);
    }

    /// Check `f` as the next record and advance. On error the state is unchanged.
    pub fn check(&mut self, f: &Frame<'_>) -> Result<(), String> {
        let h = &f.header;
        let i = self.next_index;
        if h.index() != i {
            return Err(format!("index field is {}, expected {i}", h.index()));
        }
        if h.prev_hash() != self.prev_hash {
            return Err(if i == 0 {
                "prev_hash of record 0 is not 32 zero bytes".to_string()
            } else {
                format!("prev_hash does not match the hash of record {}", i - 1)
            });
        }
        if let Some(o) = &self.origin
            && o.as_slice() != h.origin()
        {
            return Err(format!(
                "origin {:?} differs from the ledger origin {:?}",
                String::from_utf8_lossy(h.origin()),
                String::from_utf8_lossy(o)
            ));
        }
        let kind = h.kind();
        let epoch = h.key_epoch();
        let new_epoch = match (kind, self.key_epoch) {
            (RecordKind::Key, None) => epoch,
            (RecordKind::Key, Some(cur)) => {
                if Some(epoch) != cur.checked_add(1) {
                    return Err(format!(
                        "Key record introduces key epoch {epoch}, expected {}",
                        u64::from(cur) + 1
                    ));
                }
                epoch
            }
            (_, None) => {
                return Err(format!(
                    "record {i} is a {kind} record, but no key epoch is in force; a ledger must start with a Key record"
                ));
            }
            (_, Some(cur)) => {
                if epoch != cur {
                    return Err(format!(
                        "key_epoch {epoch} differs from the current key epoch {cur}"
                    ));
                }
                cur
            }
        };
        for r in h.refs() {
            if r >= i {
                return Err(format!("ref {r} does not point to an earlier record"));
            }
        }
        if f.redacted && is_protected(kind) {
            return Err(format!("a {kind} record must not be redacted"));
        }
        // Only key and redaction records need the origin as text (no allocation per record).
        let origin = || String::from_utf8_lossy(h.origin()).into_owned();
        let mut new_key = None;
        let mut revocation = None;
        match kind {
            RecordKind::Key => {
                let origin = origin();
                let k = KeyRecordPayload::parse_and_check(f.payload, epoch, &origin)?;
                match self.key_epoch.and_then(|e| self.keys.get(&e)) {
                    Some(prev) => k.check_rotation_from(&prev.keys, &origin)?,
                    None => {
                        if i == self.start && i != 0 {
                            return Err("Key record without the previous epoch's key".into());
                        }
                    }
                }
                new_key = Some(k);
            }
            RecordKind::Revocation => {
                let p: RevocationPayload = serde_json::from_slice(f.payload)
                    .map_err(|e| format!("revocation payload is not valid: {e}"))?;
                if p.revoked_epoch > new_epoch || !self.keys.contains_key(&p.revoked_epoch) {
                    return Err(format!(
                        "revocation of key epoch {} that is not in the log",
                        p.revoked_epoch
                    ));
                }
                if self.revoked.contains_key(&p.revoked_epoch) {
                    return Err(format!("key epoch {} revoked twice", p.revoked_epoch));
                }
                if p.revoked_epoch == new_epoch {
                    return Err(format!(
                        "revocation of key epoch {}, the epoch in force: a key record for epoch {} must precede it (rotate first), or the ledger has no valid signer",
                        p.revoked_epoch,
                        u64::from(new_epoch) + 1
                    ));
                }
                revocation = Some(p.revoked_epoch);
            }
            RecordKind::Redaction => {
                if h.refs().next().is_none() {
                    return Err("redaction record refers to no record".into());
                }
                let keys = self
                    .keys
                    .get(&new_epoch)
                    .ok_or_else(|| format!("no key record introduces key epoch {new_epoch}"))?;
                let refs: Vec<u64> = h.refs().collect();
                check_redaction(f.payload, &origin(), i, &self.prev_hash, &refs, &keys.keys)?;
                for r in h.refs() {
                    if r >= self.start
                        && let Some(k) = self
                            .kinds
                            .get((r - self.start) as usize)
                            .and_then(|c| RecordKind::from_u8(*c))
                        && is_protected(k)
                    {
                        return Err(format!("redaction of record {r}, a {k} record"));
                    }
                }
            }
            _ => {}
        }
        // Commit.
        if kind == RecordKind::Redaction {
            for r in h.refs() {
                self.authorised.insert(r);
                self.unauthorised_redactions.remove(&r);
            }
        }
        if f.redacted {
            self.redacted.push(i);
            if !self.authorised.contains(&i) {
                self.unauthorised_redactions.insert(i);
            }
        }
        if let Some(k) = new_key {
            self.keys.insert(
                epoch,
                KnownKey {
                    keys: k,
                    introduced_at: i,
                    ts_micros: h.ts_micros(),
                },
            );
        }
        if let Some(e) = revocation {
            self.revoked.insert(e, i);
        }
        if self.origin.is_none() {
            self.origin = Some(h.origin().to_vec());
        }
        self.kinds.push(kind.as_u8());
        self.key_epoch = Some(new_epoch);
        self.counts[usize::from(kind.as_u8())] += 1;
        self.next_index = i + 1;
        self.prev_hash = f.record_hash;
        Ok(())
    }

    /// May a checkpoint over the first `tree_size` records (= `next_index` now) be signed by
    /// `epoch`? It must be the epoch in force and not revoked at or before `tree_size - 1`.
    pub fn check_checkpoint_epoch(&self, epoch: u32) -> Result<&KnownKey, String> {
        let tree_size = self.next_index;
        if let Some(at) = self.revoked.get(&epoch)
            && tree_size > *at
        {
            return Err(format!(
                "signed with key epoch {epoch}, which was revoked by record {at}"
            ));
        }
        if Some(epoch) != self.key_epoch {
            return Err(format!(
                "signed with key epoch {epoch}, but the key epoch in force at tree size {tree_size} is {}",
                self.key_epoch.map_or("none".to_string(), |e| e.to_string())
            ));
        }
        self.keys
            .get(&epoch)
            .ok_or_else(|| format!("no Key record introduces key epoch {epoch}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(0), "seg-0000000000000000.dlg");
        assert_eq!(segment_file_name(0x1234), "seg-0000000000001234.dlg");
        assert_eq!(parse_segment_name("seg-00000000000000ff.dlg"), Some(255));
        assert_eq!(parse_segment_name("seg-00000000000000FF.dlg"), None);
        assert_eq!(parse_segment_name("seg-ff.dlg"), None);
        assert_eq!(parse_segment_name("seg-00000000000000ff.dlg.tmp"), None);
    }
}
