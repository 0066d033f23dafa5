//! ML-DSA-65 checkpoint keys: generation, storage, key IDs and the `Key` record payload.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ml_dsa::{
    EncodedSignature, EncodedVerifyingKey, ExpandedSigningKey, MlDsa65, Signature, VerifyingKey,
};
use sha2::{Digest, Sha256};

use crate::error::{IoContext, LedgerError};

/// FIPS 204 context string used for every checkpoint signature.
pub const SIGNING_CONTEXT: &[u8] = b"dunes-ledger-checkpoint-v1";
/// Signed-note signature type: 0xFF ("no assigned byte") followed by this identifier.
pub const KEY_TYPE_IDENTIFIER: &[u8] = b"dunes-ledger/ml-dsa-65";
/// Encoded ML-DSA-65 public key length (FIPS 204 pkEncode).
pub const PUBLIC_KEY_LEN: usize = 1952;
/// Encoded ML-DSA-65 signature length.
pub const SIGNATURE_LEN: usize = 3309;
/// Seed (private key) length.
pub const SEED_LEN: usize = 32;
/// Algorithm name used in `Key` records.
pub const ALGORITHM: &str = "ML-DSA-65";
/// FIPS 204 context string of the signature by the previous key over a rotated-in key.
pub const ROTATION_CONTEXT: &[u8] = b"dunes-ledger-key-rotation-v1";
/// FIPS 204 context string of export bundle manifest signatures.
pub const EXPORT_CONTEXT: &[u8] = b"dunes-ledger-export-v1";
/// FIPS 204 context string of evidence bundle manifest signatures.
pub const EVIDENCE_CONTEXT: &[u8] = b"dunes-ledger-evidence-v1";
/// FIPS 204 context string of the signature carried by a `redaction` record.
pub const REDACTION_CONTEXT: &[u8] = b"dunes-ledger-redaction-v1";
/// ML-DSA context string of retention tombstone manifests (`docs/ledger-format.md` §2.10).
pub const TOMBSTONE_CONTEXT: &[u8] = b"dunes-ledger-tombstone-v1";
/// Encoded Ed25519 public key / seed length.
pub const ED25519_KEY_LEN: usize = 32;
/// Ed25519 signature length.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// `keys/ledger-mldsa65-<epoch>.pub`
pub fn public_key_path(keys_dir: &Path, epoch: u32) -> PathBuf {
    keys_dir.join(format!("ledger-mldsa65-{epoch}.pub"))
}

/// `keys/ledger-mldsa65-<epoch>.seed`
pub fn seed_path(keys_dir: &Path, epoch: u32) -> PathBuf {
    keys_dir.join(format!("ledger-mldsa65-{epoch}.seed"))
}

/// `keys/ledger-ed25519-<epoch>.pub`
pub fn ed25519_public_key_path(keys_dir: &Path, epoch: u32) -> PathBuf {
    keys_dir.join(format!("ledger-ed25519-{epoch}.pub"))
}

/// `keys/ledger-ed25519-<epoch>.seed`
pub fn ed25519_seed_path(keys_dir: &Path, epoch: u32) -> PathBuf {
    keys_dir.join(format!("ledger-ed25519-{epoch}.seed"))
}

/// C2SP signed-note Ed25519 key ID: `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)[..4]`.
pub fn ed25519_key_id(key_name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(key_name.as_bytes());
    h.update([0x0A, 0x01]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Is `k` a 32-byte canonical encoding (re-encoding the decoded point gives the same bytes)
/// of a curve point that is not of small order? (`docs/ledger-format.md` §3.5.)
pub(crate) fn is_strict_ed25519_public_key(k: &[u8]) -> bool {
    let Ok(bytes) = <[u8; ED25519_KEY_LEN]>::try_from(k) else {
        return false;
    };
    match ed25519_dalek::VerifyingKey::from_bytes(&bytes) {
        Ok(vk) => !vk.is_weak() && vk.to_edwards().compress().to_bytes() == bytes,
        Err(_) => false,
    }
}

/// Verify an Ed25519 signature: RFC 8032 with the strict rules of `docs/ledger-format.md`
/// §3.5 (canonical A and R, neither of small order, S < L, cofactorless equation).
pub fn verify_ed25519(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    if !is_strict_ed25519_public_key(public_key) {
        return false;
    }
    let Ok(pk) = <[u8; ED25519_KEY_LEN]>::try_from(public_key) else {
        return false;
    };
    let Ok(sig) = <[u8; ED25519_SIGNATURE_LEN]>::try_from(sig) else {
        return false;
    };
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk) else {
        return false;
    };
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

/// The message the previous key signs when a new key epoch is introduced:
/// `"dunes-ledger key rotation v1\n" ‖ origin ‖ "\n" ‖ epoch ‖ "\n" ‖ base64(ML-DSA pk) ‖ "\n"
/// ‖ (base64(Ed25519 pk) or "-") ‖ "\n"`.
pub fn rotation_message(
    origin: &str,
    epoch: u32,
    public_key: &[u8],
    ed25519_public_key: Option<&[u8]>,
) -> Vec<u8> {
    let ed = ed25519_public_key.map_or_else(|| "-".to_string(), |k| B64.encode(k));
    format!(
        "dunes-ledger key rotation v1\n{origin}\n{epoch}\n{}\n{ed}\n",
        B64.encode(public_key)
    )
    .into_bytes()
}

/// Signed-note key ID:
/// `SHA-256(key name ‖ 0x0A ‖ 0xFF ‖ "dunes-ledger/ml-dsa-65" ‖ public key)[..4]`.
pub fn key_id(key_name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(key_name.as_bytes());
    h.update([0x0A, 0xFF]);
    h.update(KEY_TYPE_IDENTIFIER);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Decode an encoded ML-DSA-65 public key.
pub fn decode_public_key(bytes: &[u8]) -> Option<VerifyingKey<MlDsa65>> {
    let enc = EncodedVerifyingKey::<MlDsa65>::try_from(bytes).ok()?;
    Some(VerifyingKey::<MlDsa65>::decode(&enc))
}

/// Verify a checkpoint body signature (pure ML-DSA-65 with [`SIGNING_CONTEXT`]).
pub fn verify_signature(vk: &VerifyingKey<MlDsa65>, msg: &[u8], sig: &[u8]) -> bool {
    verify_with_context(vk, msg, SIGNING_CONTEXT, sig)
}

/// Verify a pure ML-DSA-65 signature with an explicit FIPS 204 context string.
pub fn verify_with_context(vk: &VerifyingKey<MlDsa65>, msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
    let Ok(enc) = EncodedSignature::<MlDsa65>::try_from(sig) else {
        return false;
    };
    let Some(sig) = Signature::<MlDsa65>::decode(&enc) else {
        return false;
    };
    vk.verify_with_context(msg, ctx, &sig)
}

/// JSON payload of a `Key` record (kind 5).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecordPayload {
    /// Always `"ML-DSA-65"`.
    pub alg: String,
    /// Key epoch this record introduces.
    pub epoch: u32,
    /// Signed-note key name (= ledger origin).
    pub key_name: String,
    /// Key ID, 8 lowercase hex digits.
    pub key_id: String,
    /// Encoded public key, standard base64.
    pub public_key: String,
    /// FIPS 204 context string used for checkpoint signatures.
    pub signing_context: String,
    /// Optional Ed25519 public key of the same epoch (hybrid checkpoints), standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519_public_key: Option<String>,
    /// Signed-note key ID of the Ed25519 key, 8 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519_key_id: Option<String>,
    /// For epochs > the first: ML-DSA-65 signature by the previous epoch's key over
    /// [`rotation_message`], context [`ROTATION_CONTEXT`], standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_signature: Option<String>,
    /// For epochs > the first whose previous epoch had an Ed25519 key: Ed25519 signature by
    /// that key over [`rotation_message`], standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_ed25519_signature: Option<String>,
}

/// The public keys of one key epoch, as recorded by its `Key` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochKeys {
    /// Key epoch.
    pub epoch: u32,
    /// Encoded ML-DSA-65 public key.
    pub public_key: Vec<u8>,
    /// Ed25519 public key, if the epoch is hybrid.
    pub ed25519: Option<Vec<u8>>,
    /// Rotation signature(s) by the previous epoch's key(s).
    pub prev_signature: Option<Vec<u8>>,
    pub prev_ed25519_signature: Option<Vec<u8>>,
}

impl EpochKeys {
    /// Check that `self` was introduced by `prev` (rotation signatures), see
    /// `docs/ledger-format.md` §2.5.
    pub fn check_rotation_from(&self, prev: &EpochKeys, origin: &str) -> Result<(), String> {
        // Hybrid is sticky: a hybrid epoch's successor must be hybrid too (no downgrade to
        // ML-DSA-only signatures).
        if prev.ed25519.is_some() && self.ed25519.is_none() {
            return Err(format!(
                "Key record for epoch {} drops the Ed25519 key of hybrid epoch {} (hybrid downgrade)",
                self.epoch, prev.epoch
            ));
        }
        let msg = rotation_message(
            origin,
            self.epoch,
            &self.public_key,
            self.ed25519.as_deref(),
        );
        let sig = self.prev_signature.as_ref().ok_or_else(|| {
            format!(
                "Key record for epoch {} has no prev_signature by the epoch {} key",
                self.epoch, prev.epoch
            )
        })?;
        let vk = decode_public_key(&prev.public_key)
            .ok_or("previous epoch public key cannot be decoded")?;
        if !verify_with_context(&vk, &msg, ROTATION_CONTEXT, sig) {
            return Err(format!(
                "prev_signature of key epoch {} does not verify with the epoch {} ML-DSA-65 key",
                self.epoch, prev.epoch
            ));
        }
        match (&prev.ed25519, &self.prev_ed25519_signature) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(
                "prev_ed25519_signature present but the previous epoch has no Ed25519 key".into(),
            ),
            (Some(_), None) => Err(format!(
                "Key record for epoch {} lacks prev_ed25519_signature although epoch {} is hybrid",
                self.epoch, prev.epoch
            )),
            (Some(pk), Some(sig)) => {
                if verify_ed25519(pk, &msg, sig) {
                    Ok(())
                } else {
                    Err(format!(
                        "prev_ed25519_signature of key epoch {} does not verify with the epoch {} Ed25519 key",
                        self.epoch, prev.epoch
                    ))
                }
            }
        }
    }
}

impl KeyRecordPayload {
    /// Payload for `signer`'s epoch; `prev` (the previous epoch's signer) signs the rotation.
    pub(crate) fn for_signer(
        signer: &Signer,
        key_name: &str,
        prev: Option<&Signer>,
    ) -> Result<Self, LedgerError> {
        let ed_pk = signer.ed25519_public_key();
        let (prev_signature, prev_ed25519_signature) = match prev {
            None => (None, None),
            Some(p) => {
                let msg = rotation_message(
                    key_name,
                    signer.epoch,
                    &signer.public_key,
                    ed_pk.as_ref().map(|k| k.as_slice()),
                );
                let sig = p.sign_with_context(&msg, ROTATION_CONTEXT)?;
                (
                    Some(B64.encode(sig)),
                    p.sign_ed25519(&msg).map(|s| B64.encode(s)),
                )
            }
        };
        Ok(Self {
            alg: ALGORITHM.to_string(),
            epoch: signer.epoch,
            key_name: key_name.to_string(),
            key_id: hex::encode(key_id(key_name, &signer.public_key)),
            public_key: B64.encode(&signer.public_key),
            signing_context: String::from_utf8_lossy(SIGNING_CONTEXT).into_owned(),
            ed25519_key_id: ed_pk.map(|k| hex::encode(ed25519_key_id(key_name, &k))),
            ed25519_public_key: ed_pk.map(|k| B64.encode(k)),
            prev_signature,
            prev_ed25519_signature,
        })
    }

    /// Parse and check internal consistency; returns the decoded public keys (rotation
    /// signatures are decoded but checked separately with [`EpochKeys::check_rotation_from`]).
    pub fn parse_and_check(
        payload: &[u8],
        expected_epoch: u32,
        expected_name: &str,
    ) -> Result<EpochKeys, String> {
        let p: KeyRecordPayload = serde_json::from_slice(payload)
            .map_err(|e| format!("Key record payload is not valid key JSON: {e}"))?;
        if p.alg != ALGORITHM {
            return Err(format!(
                "Key record algorithm {:?}, expected {ALGORITHM:?}",
                p.alg
            ));
        }
        if p.epoch != expected_epoch {
            return Err(format!(
                "Key record payload epoch {} differs from header key_epoch {expected_epoch}",
                p.epoch
            ));
        }
        if p.key_name != expected_name {
            return Err(format!(
                "Key record key_name {:?} differs from ledger origin {expected_name:?}",
                p.key_name
            ));
        }
        if p.signing_context.as_bytes() != SIGNING_CONTEXT {
            return Err(format!(
                "Key record signing_context {:?} unexpected",
                p.signing_context
            ));
        }
        let pk = B64
            .decode(p.public_key.as_bytes())
            .map_err(|e| format!("Key record public_key is not base64: {e}"))?;
        if pk.len() != PUBLIC_KEY_LEN || decode_public_key(&pk).is_none() {
            return Err(format!(
                "Key record public_key has {} bytes, expected {PUBLIC_KEY_LEN}",
                pk.len()
            ));
        }
        if p.key_id != hex::encode(key_id(expected_name, &pk)) {
            return Err("Key record key_id does not match its public key".into());
        }
        let b64 = |name: &str, v: &Option<String>| -> Result<Option<Vec<u8>>, String> {
            v.as_ref()
                .map(|s| {
                    B64.decode(s.as_bytes())
                        .map_err(|e| format!("Key record {name} is not base64: {e}"))
                })
                .transpose()
        };
        let ed25519 = b64("ed25519_public_key", &p.ed25519_public_key)?;
        match (&ed25519, &p.ed25519_key_id) {
            (None, None) => {}
            (Some(k), Some(id)) => {
                if !is_strict_ed25519_public_key(k) {
                    return Err(
                        "Key record ed25519_public_key is not a canonical Ed25519 point of large order"
                            .into(),
                    );
                }
                if *id != hex::encode(ed25519_key_id(expected_name, k)) {
                    return Err("Key record ed25519_key_id does not match its public key".into());
                }
            }
            _ => {
                return Err(
                    "Key record has only one of ed25519_public_key / ed25519_key_id".into(),
                );
            }
        }
        Ok(EpochKeys {
            epoch: expected_epoch,
            public_key: pk,
            ed25519,
            prev_signature: b64("prev_signature", &p.prev_signature)?,
            prev_ed25519_signature: b64("prev_ed25519_signature", &p.prev_ed25519_signature)?,
        })
    }
}

/// The active checkpoint signing key.
pub(crate) struct Signer {
    pub epoch: u32,
    sk: ExpandedSigningKey<MlDsa65>,
    pub public_key: Vec<u8>,
    ed: Option<ed25519_dalek::SigningKey>,
}

impl Signer {
    pub(crate) fn from_seed(epoch: u32, seed: &[u8; SEED_LEN]) -> Self {
        let sk = ExpandedSigningKey::<MlDsa65>::from_seed(&(*seed).into());
        let public_key = sk.verifying_key().encode().to_vec();
        Self {
            epoch,
            sk,
            public_key,
            ed: None,
        }
    }

    pub(crate) fn with_ed25519_seed(mut self, seed: &[u8; ED25519_KEY_LEN]) -> Self {
        self.ed = Some(ed25519_dalek::SigningKey::from_bytes(seed));
        self
    }

    /// The epoch's Ed25519 public key, if hybrid.
    pub fn ed25519_public_key(&self) -> Option<[u8; ED25519_KEY_LEN]> {
        self.ed.as_ref().map(|k| k.verifying_key().to_bytes())
    }

    /// Deterministic pure ML-DSA-65 signature with [`SIGNING_CONTEXT`].
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, LedgerError> {
        self.sign_with_context(msg, SIGNING_CONTEXT)
    }

    /// Deterministic pure ML-DSA-65 signature with an explicit context string.
    pub fn sign_with_context(&self, msg: &[u8], ctx: &[u8]) -> Result<Vec<u8>, LedgerError> {
        let sig = self
            .sk
            .sign_deterministic(msg, ctx)
            .map_err(|e| LedgerError::Key(format!("ML-DSA-65 signing failed: {e}")))?;
        Ok(sig.encode().to_vec())
    }

    /// Ed25519 signature, if the epoch is hybrid.
    pub fn sign_ed25519(&self, msg: &[u8]) -> Option<[u8; ED25519_SIGNATURE_LEN]> {
        use ed25519_dalek::Signer as _;
        self.ed.as_ref().map(|k| k.sign(msg).to_bytes())
    }

    #[cfg(test)]
    pub fn verifying_key(&self) -> VerifyingKey<MlDsa65> {
        self.sk.verifying_key()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("epoch", &self.epoch)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Epochs for which `keys_dir` holds a `.seed` or `.pub` file.
pub(crate) fn list_epochs(keys_dir: &Path, suffix: &str) -> Result<Vec<u32>, LedgerError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(keys_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LedgerError::io(keys_dir, e)),
    };
    for ent in rd {
        let ent = ent.at(keys_dir)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("ledger-mldsa65-") else {
            continue;
        };
        let Some(num) = rest.strip_suffix(suffix) else {
            continue;
        };
        if num.is_empty()
            || !num.bytes().all(|b| b.is_ascii_digit())
            || (num.len() > 1 && num.starts_with('0'))
        {
            continue;
        }
        if let Ok(e) = num.parse::<u32>() {
            out.push(e);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn read_small_file(path: &Path, max: usize) -> Result<Vec<u8>, LedgerError> {
    let mut f = File::open(path).at(path)?;
    let mut buf = Vec::new();
    (&mut f)
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .at(path)?;
    Ok(buf)
}

/// Read an encoded public key file.
pub(crate) fn read_public_key_file(path: &Path) -> Result<Vec<u8>, LedgerError> {
    read_small_file(path, PUBLIC_KEY_LEN)
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).at(path)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "ledger private key file was accessible to other users; resetting mode to 0600"
        );
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).at(path)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> Result<(), LedgerError> {
    Ok(())
}

fn open_new_private(path: &Path) -> Result<File, LedgerError> {
    let mut oo = OpenOptions::new();
    oo.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        oo.mode(0o600);
    }
    oo.open(path).at(path)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LedgerError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` atomically to `path` (temp file + fsync + rename + directory fsync);
/// `private` creates the file with mode 0600 on Unix. Also used by the pipeline crate
/// for its state files.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), LedgerError> {
    write_atomic_with(path, private, |f| f.write_all(bytes))
}

/// [`write_atomic`] with the content streamed by `write` into a buffered writer (so a large
/// file is never held in memory as a whole).
pub fn write_atomic_with(
    path: &Path,
    private: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), LedgerError> {
    let dir = path
        .parent()
        .ok_or_else(|| LedgerError::Key(format!("{} has no parent directory", path.display())))?;
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LedgerError::io(&tmp, e)),
    }
    let f = if private {
        open_new_private(&tmp)?
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at(&tmp)?
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
    write(&mut w).at(&tmp)?;
    let f = w
        .into_inner()
        .map_err(|e| LedgerError::io(&tmp, e.into_error()))?;
    f.sync_all().at(&tmp)?;
    drop(f);
    fs::rename(&tmp, path).at(path)?;
    fsync_dir(dir)
}

/// What [`repair_ndjson_tail`] did to a file whose last line had no newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailRepair {
    /// The last line was a whole JSON value: its newline was appended.
    Terminated,
    /// The last line was cut short (a crash mid-write): its `bytes` were removed.
    Truncated { bytes: u64 },
}

/// Makes an append-only JSON-lines file end with a whole line before it is read or
/// appended to again. A process killed while appending can leave the last line without
/// its newline: a whole JSON value gets the newline (it was written, readers counted it),
/// a cut-short one is removed (its writer re-writes it, the file's readers never saw it
/// whole). Without this the next append would glue two records onto one line. Fsyncs
/// what it changes; `None` when the file is missing, empty or ends with a newline.
pub fn repair_ndjson_tail(path: &Path) -> Result<Option<TailRepair>, LedgerError> {
    use std::io::{Seek, SeekFrom};
    // Only regular files (`--incidents-out /dev/stdout` is a pipe or a terminal).
    match fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LedgerError::io(path, e)),
    }
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LedgerError::io(path, e)),
    };
    let len = f.metadata().at(path)?.len();
    // The tail after the last newline, read backwards in blocks.
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    let start = loop {
        if pos == 0 {
            break 0;
        }
        let n = pos.min(1 << 16);
        pos -= n;
        let mut block = vec![0u8; n as usize];
        f.seek(SeekFrom::Start(pos)).at(path)?;
        f.read_exact(&mut block).at(path)?;
        if pos + n == len && block.last() == Some(&b'\n') {
            return Ok(None);
        }
        match block.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                block.drain(..=i);
                block.extend_from_slice(&tail);
                tail = block;
                break pos + i as u64 + 1;
            }
            None => {
                block.extend_from_slice(&tail);
                tail = block;
            }
        }
    };
    if tail.is_empty() {
        return Ok(None);
    }
    let repair = if serde_json::from_slice::<serde::de::IgnoredAny>(&tail).is_ok() {
        f.seek(SeekFrom::End(0)).at(path)?;
        f.write_all(b"\n").at(path)?;
        TailRepair::Terminated
    } else {
        f.set_len(start).at(path)?;
        TailRepair::Truncated { bytes: len - start }
    };
    f.sync_all().at(path)?;
    Ok(Some(repair))
}

/// Create the keys directory (mode 0700 on Unix) if missing.
pub(crate) fn ensure_keys_dir(keys_dir: &Path) -> Result<(), LedgerError> {
    if keys_dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(keys_dir).at(keys_dir)
}

fn read_seed(path: &Path, len: usize) -> Result<Vec<u8>, LedgerError> {
    restrict_permissions(path)?;
    let raw = read_small_file(path, len)?;
    if raw.len() != len {
        return Err(LedgerError::Key(format!(
            "{} has {} bytes, expected a {len}-byte seed",
            path.display(),
            raw.len()
        )));
    }
    Ok(raw)
}

fn check_or_write_public(path: &Path, derived: &[u8], seed: &Path) -> Result<(), LedgerError> {
    if path.exists() {
        let on_disk = read_small_file(path, derived.len())?;
        if on_disk != derived {
            return Err(LedgerError::Key(format!(
                "{} does not match the public key derived from {}",
                path.display(),
                seed.display()
            )));
        }
        Ok(())
    } else {
        tracing::warn!(path = %path.display(), "ledger public key file missing; re-deriving it from the seed");
        write_atomic(path, derived, false)
    }
}

/// Epoch of the newest ML-DSA seed in `keys_dir`, if any.
pub(crate) fn newest_seed_epoch(keys_dir: &Path) -> Result<Option<u32>, LedgerError> {
    Ok(list_epochs(keys_dir, ".seed")?.last().copied())
}

/// Whether `keys_dir` holds any ML-DSA public key file.
pub(crate) fn has_public_keys(keys_dir: &Path) -> Result<bool, LedgerError> {
    Ok(!list_epochs(keys_dir, ".pub")?.is_empty())
}

/// Load the signing key(s) of `epoch` (ML-DSA seed required, Ed25519 seed if present).
pub(crate) fn load_signer(keys_dir: &Path, epoch: u32) -> Result<Signer, LedgerError> {
    let path = seed_path(keys_dir, epoch);
    if !path.exists() {
        return Err(LedgerError::Key(format!(
            "the signing key of key epoch {epoch} ({}) is missing",
            path.display()
        )));
    }
    let raw = read_seed(&path, SEED_LEN)?;
    let mut seed = [0u8; SEED_LEN];
    seed.copy_from_slice(&raw);
    let mut signer = Signer::from_seed(epoch, &seed);
    seed.fill(0);
    check_or_write_public(&public_key_path(keys_dir, epoch), &signer.public_key, &path)?;
    let ed_path = ed25519_seed_path(keys_dir, epoch);
    if ed_path.exists() {
        let raw = read_seed(&ed_path, ED25519_KEY_LEN)?;
        let mut seed = [0u8; ED25519_KEY_LEN];
        seed.copy_from_slice(&raw);
        signer = signer.with_ed25519_seed(&seed);
        seed.fill(0);
        if let Some(pk) = signer.ed25519_public_key() {
            check_or_write_public(&ed25519_public_key_path(keys_dir, epoch), &pk, &ed_path)?;
        }
    }
    Ok(signer)
}

fn random_seed() -> Result<[u8; 32], LedgerError> {
    use rand::TryRngCore as _;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| LedgerError::Key(format!("operating system RNG failed: {e}")))?;
    Ok(seed)
}

/// Generate and store the key(s) of `epoch` (seed files mode 0600, written atomically).
pub(crate) fn generate(keys_dir: &Path, epoch: u32, hybrid: bool) -> Result<Signer, LedgerError> {
    let mut seed = random_seed()?;
    let mut signer = Signer::from_seed(epoch, &seed);
    write_atomic(&seed_path(keys_dir, epoch), &seed, true)?;
    seed.fill(0);
    std::hint::black_box(&seed);
    write_atomic(&public_key_path(keys_dir, epoch), &signer.public_key, false)?;
    if hybrid {
        let mut ed_seed = random_seed()?;
        signer = signer.with_ed25519_seed(&ed_seed);
        write_atomic(&ed25519_seed_path(keys_dir, epoch), &ed_seed, true)?;
        ed_seed.fill(0);
        std::hint::black_box(&ed_seed);
        if let Some(pk) = signer.ed25519_public_key() {
            write_atomic(&ed25519_public_key_path(keys_dir, epoch), &pk, false)?;
        }
    }
    tracing::info!(
        keys_dir = %keys_dir.display(),
        epoch,
        hybrid,
        "generated new ledger signing key"
    );
    Ok(signer)
}

/// A standalone ML-DSA-65 key pair outside the ledger's key epochs (e.g. the API token
/// signing key): `<dir>/<name>.seed` (32-byte seed, mode 0600, written atomically) and
/// `<dir>/<name>.pub` (encoded public key), generated and loaded with the same code as the
/// ledger's checkpoint keys.
pub struct StandaloneKey {
    signer: Signer,
}

impl StandaloneKey {
    /// Loads `<dir>/<name>.seed`, or generates it (and `<dir>`, mode 0700) when missing.
    pub fn load_or_generate(dir: &Path, name: &str) -> Result<StandaloneKey, LedgerError> {
        let seed_file = dir.join(format!("{name}.seed"));
        let pub_file = dir.join(format!("{name}.pub"));
        if seed_file.exists() {
            return Self::load(dir, name);
        }
        ensure_keys_dir(dir)?;
        let mut seed = random_seed()?;
        let signer = Signer::from_seed(0, &seed);
        write_atomic(&seed_file, &seed, true)?;
        seed.fill(0);
        std::hint::black_box(&seed);
        write_atomic(&pub_file, &signer.public_key, false)?;
        tracing::info!(path = %seed_file.display(), "generated new ML-DSA-65 key");
        Ok(StandaloneKey { signer })
    }

    /// Loads an existing `<dir>/<name>.seed` (checking `<name>.pub` against it).
    pub fn load(dir: &Path, name: &str) -> Result<StandaloneKey, LedgerError> {
        let seed_file = dir.join(format!("{name}.seed"));
        if !seed_file.exists() {
            return Err(LedgerError::Key(format!(
                "{} is missing",
                seed_file.display()
            )));
        }
        let raw = read_seed(&seed_file, SEED_LEN)?;
        let mut seed = [0u8; SEED_LEN];
        seed.copy_from_slice(&raw);
        let signer = Signer::from_seed(0, &seed);
        seed.fill(0);
        check_or_write_public(
            &dir.join(format!("{name}.pub")),
            &signer.public_key,
            &seed_file,
        )?;
        Ok(StandaloneKey { signer })
    }

    /// Encoded public key (FIPS 204 pkEncode, [`PUBLIC_KEY_LEN`] bytes).
    pub fn public_key(&self) -> &[u8] {
        &self.signer.public_key
    }

    /// The decoded public key, for verification.
    pub fn verifying_key(&self) -> MlDsaPublicKey {
        MlDsaPublicKey(self.signer.sk.verifying_key())
    }

    /// Deterministic pure ML-DSA-65 signature of `msg` with the FIPS 204 context `ctx`.
    pub fn sign(&self, msg: &[u8], ctx: &[u8]) -> Result<Vec<u8>, LedgerError> {
        self.signer.sign_with_context(msg, ctx)
    }
}

impl std::fmt::Debug for StandaloneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneKey")
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A decoded ML-DSA-65 public key.
#[derive(Clone)]
pub struct MlDsaPublicKey(VerifyingKey<MlDsa65>);

impl MlDsaPublicKey {
    /// Decodes an encoded public key; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<MlDsaPublicKey> {
        decode_public_key(bytes).map(MlDsaPublicKey)
    }

    /// Verifies a pure ML-DSA-65 signature with the FIPS 204 context `ctx`.
    pub fn verify(&self, msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
        verify_with_context(&self.0, msg, ctx, sig)
    }
}

impl std::fmt::Debug for MlDsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MlDsaPublicKey")
    }
}

/// Overwrite and delete the private seed(s) of `epoch`; with `public` also its public keys
/// (only for keys that never made it into the log).
pub(crate) fn remove_epoch_files(
    keys_dir: &Path,
    epoch: u32,
    public: bool,
) -> Result<(), LedgerError> {
    let mut paths = vec![
        seed_path(keys_dir, epoch),
        ed25519_seed_path(keys_dir, epoch),
    ];
    if public {
        paths.push(public_key_path(keys_dir, epoch));
        paths.push(ed25519_public_key_path(keys_dir, epoch));
    }
    for p in paths {
        if !p.exists() {
            continue;
        }
        if p.extension().is_some_and(|e| e == "seed")
            && let Ok(mut f) = OpenOptions::new().write(true).open(&p)
        {
            // Best effort: overwrite before unlinking.
            let _ = f.write_all(&[0u8; 32]).and_then(|()| f.sync_all());
        }
        fs::remove_file(&p).at(&p)?;
    }
    fsync_dir(keys_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_key_is_private_and_reloads() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("auth");
        let k = StandaloneKey::load_or_generate(&dir, "tok").expect("generate");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("tok.seed"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sig = k.sign(b"m", b"").expect("sign");
        let again = StandaloneKey::load_or_generate(&dir, "tok").expect("load");
        assert_eq!(again.public_key(), k.public_key());
        let vk = MlDsaPublicKey::decode(again.public_key()).expect("decode");
        assert!(vk.verify(b"m", b"", &sig));
        assert!(!vk.verify(b"m", b"x", &sig));
        assert!(!vk.verify(b"n", b"", &sig));
    }

    #[test]
    fn sign_verify_and_key_id() {
        let s = Signer::from_seed(0, &[1u8; 32]);
        assert_eq!(s.public_key.len(), PUBLIC_KEY_LEN);
        let sig = s.sign(b"hello\n").expect("sign");
        assert_eq!(sig.len(), SIGNATURE_LEN);
        let vk = decode_public_key(&s.public_key).expect("decode");
        assert!(verify_signature(&vk, b"hello\n", &sig));
        assert!(!verify_signature(&vk, b"hello!", &sig));
        let other = Signer::from_seed(0, &[2u8; 32]);
        assert!(!verify_signature(&other.verifying_key(), b"hello\n", &sig));
        // Key ID is the documented SHA-256 construction.
        let mut pre = b"dunes/x\n\xffdunes-ledger/ml-dsa-65".to_vec();
        pre.extend_from_slice(&s.public_key);
        let d = Sha256::digest(&pre);
        assert_eq!(key_id("dunes/x", &s.public_key), [d[0], d[1], d[2], d[3]]);
    }

    #[test]
    fn key_payload_round_trip() {
        let s = Signer::from_seed(0, &[3u8; 32]);
        let p = KeyRecordPayload::for_signer(&s, "dunes/x", None).expect("payload");
        let json = serde_json::to_vec(&p).expect("json");
        let k0 = KeyRecordPayload::parse_and_check(&json, 0, "dunes/x").expect("ok");
        assert_eq!(k0.public_key, s.public_key);
        assert!(k0.ed25519.is_none());
        assert!(KeyRecordPayload::parse_and_check(&json, 1, "dunes/x").is_err());
        assert!(KeyRecordPayload::parse_and_check(&json, 0, "dunes/y").is_err());

        // Rotation to a hybrid epoch 1, signed by epoch 0; then epoch 2 signed by both keys.
        let s1 = Signer::from_seed(1, &[4u8; 32]).with_ed25519_seed(&[5u8; 32]);
        let p1 = KeyRecordPayload::for_signer(&s1, "dunes/x", Some(&s)).expect("payload");
        let k1 = KeyRecordPayload::parse_and_check(
            &serde_json::to_vec(&p1).expect("json"),
            1,
            "dunes/x",
        )
        .expect("ok");
        assert!(k1.ed25519.is_some());
        k1.check_rotation_from(&k0, "dunes/x")
            .expect("rotation verifies");
        assert!(k1.check_rotation_from(&k0, "dunes/y").is_err());
        // Hybrid is sticky: an ML-DSA-only successor of a hybrid epoch is a downgrade.
        let plain = Signer::from_seed(2, &[7u8; 32]);
        let pd = KeyRecordPayload::for_signer(&plain, "dunes/x", Some(&s1)).expect("payload");
        let kd = KeyRecordPayload::parse_and_check(
            &serde_json::to_vec(&pd).expect("json"),
            2,
            "dunes/x",
        )
        .expect("ok");
        let err = kd
            .check_rotation_from(&k1, "dunes/x")
            .expect_err("downgrade");
        assert!(err.contains("hybrid downgrade"), "{err}");
        let s2 = Signer::from_seed(2, &[6u8; 32]).with_ed25519_seed(&[8u8; 32]);
        let p2 = KeyRecordPayload::for_signer(&s2, "dunes/x", Some(&s1)).expect("payload");
        assert!(p2.prev_ed25519_signature.is_some());
        let k2 = KeyRecordPayload::parse_and_check(
            &serde_json::to_vec(&p2).expect("json"),
            2,
            "dunes/x",
        )
        .expect("ok");
        k2.check_rotation_from(&k1, "dunes/x")
            .expect("rotation verifies");
        // Signed by the wrong previous key.
        assert!(k2.check_rotation_from(&k0, "dunes/x").is_err());
        let mut no_ed = k2.clone();
        no_ed.prev_ed25519_signature = None;
        assert!(no_ed.check_rotation_from(&k1, "dunes/x").is_err());
    }

    #[test]
    fn a_torn_last_line_is_terminated_when_whole_and_removed_when_cut() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("x.ndjson");
        let check = |content: &[u8], want: Option<TailRepair>, after: &[u8]| {
            fs::write(&p, content).expect("write");
            assert_eq!(repair_ndjson_tail(&p).expect("repair"), want, "{content:?}");
            assert_eq!(fs::read(&p).expect("read"), after, "{content:?}");
        };
        assert_eq!(
            repair_ndjson_tail(&tmp.path().join("none")).expect("missing"),
            None
        );
        check(b"", None, b"");
        check(b"{\"a\":1}\n{\"b\":2}\n", None, b"{\"a\":1}\n{\"b\":2}\n");
        check(
            b"{\"a\":1}\n{\"b\":2}",
            Some(TailRepair::Terminated),
            b"{\"a\":1}\n{\"b\":2}\n",
        );
        check(
            b"{\"a\":1}\n{\"b\":",
            Some(TailRepair::Truncated { bytes: 5 }),
            b"{\"a\":1}\n",
        );
        check(b"{\"b\":", Some(TailRepair::Truncated { bytes: 5 }), b"");
        // A last line longer than the block read backwards at a time.
        let long = format!("{{\"s\":\"{}\"}}", "x".repeat(200_000));
        let mut whole = b"{\"a\":1}\n".to_vec();
        whole.extend_from_slice(long.as_bytes());
        let mut terminated = whole.clone();
        terminated.push(b'\n');
        check(&whole, Some(TailRepair::Terminated), &terminated);
        let cut = &whole[..whole.len() - 3];
        check(
            cut,
            Some(TailRepair::Truncated {
                bytes: long.len() as u64 - 3,
            }),
            b"{\"a\":1}\n",
        );
    }
}
