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

/// `keys/ledger-mldsa65-<epoch>.pub`
pub fn public_key_path(keys_dir: &Path, epoch: u32) -> PathBuf {
    keys_dir.join(format!("ledger-mldsa65-{epoch}.pub"))
}

/// `keys/ledger-mldsa65-<epoch>.seed`
pub fn seed_path(keys_dir: &Path, epoch: u32) -> PathBuf {
    keys_dir.join(format!("ledger-mldsa65-{epoch}.seed"))
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
    let Ok(enc) = EncodedSignature::<MlDsa65>::try_from(sig) else {
        return false;
    };
    let Some(sig) = Signature::<MlDsa65>::decode(&enc) else {
        return false;
    };
    vk.verify_with_context(msg, SIGNING_CONTEXT, &sig)
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
}

impl KeyRecordPayload {
    pub(crate) fn new(epoch: u32, key_name: &str, public_key: &[u8]) -> Self {
        Self {
            alg: ALGORITHM.to_string(),
            epoch,
            key_name: key_name.to_string(),
            key_id: hex::encode(key_id(key_name, public_key)),
            public_key: B64.encode(public_key),
            signing_context: String::from_utf8_lossy(SIGNING_CONTEXT).into_owned(),
        }
    }

    /// Parse and check internal consistency; returns the decoded public key bytes.
    pub(crate) fn parse_and_check(
        payload: &[u8],
        expected_epoch: u32,
        expected_name: &str,
    ) -> Result<Vec<u8>, String> {
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
        Ok(pk)
    }
}

/// The active checkpoint signing key.
pub(crate) struct Signer {
    pub epoch: u32,
    sk: ExpandedSigningKey<MlDsa65>,
    pub public_key: Vec<u8>,
}

impl Signer {
    fn from_seed(epoch: u32, seed: &[u8; SEED_LEN]) -> Self {
        let sk = ExpandedSigningKey::<MlDsa65>::from_seed(&(*seed).into());
        let public_key = sk.verifying_key().encode().to_vec();
        Self {
            epoch,
            sk,
            public_key,
        }
    }

    /// Deterministic pure ML-DSA-65 signature with [`SIGNING_CONTEXT`].
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, LedgerError> {
        let sig = self
            .sk
            .sign_deterministic(msg, SIGNING_CONTEXT)
            .map_err(|e| LedgerError::Key(format!("ML-DSA-65 signing failed: {e}")))?;
        Ok(sig.encode().to_vec())
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

/// Write `bytes` atomically to `path` (temp file + fsync + rename + directory fsync).
fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), LedgerError> {
    let dir = path
        .parent()
        .ok_or_else(|| LedgerError::Key(format!("{} has no parent directory", path.display())))?;
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LedgerError::io(&tmp, e)),
    }
    let mut f = if private {
        open_new_private(&tmp)?
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at(&tmp)?
    };
    f.write_all(bytes).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    drop(f);
    fs::rename(&tmp, path).at(path)?;
    fsync_dir(dir)
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

/// Load the newest signing key, or generate epoch 0 if `may_create` and no key exists.
pub(crate) fn load_or_create_signer(
    keys_dir: &Path,
    may_create: bool,
) -> Result<Signer, LedgerError> {
    let seeds = list_epochs(keys_dir, ".seed")?;
    let Some(&epoch) = seeds.last() else {
        let pubs = list_epochs(keys_dir, ".pub")?;
        if !may_create || !pubs.is_empty() {
            return Err(LedgerError::Key(format!(
                "no ledger signing key (ledger-mldsa65-<epoch>.seed) in {}, but the ledger already has records or public keys; refusing to create a new key, which would break the key history",
                keys_dir.display()
            )));
        }
        return generate(keys_dir, 0);
    };
    let path = seed_path(keys_dir, epoch);
    restrict_permissions(&path)?;
    let raw = read_small_file(&path, SEED_LEN)?;
    let seed: [u8; SEED_LEN] = raw.as_slice().try_into().map_err(|_| {
        LedgerError::Key(format!(
            "{} has {} bytes, expected a {SEED_LEN}-byte ML-DSA seed",
            path.display(),
            raw.len()
        ))
    })?;
    let signer = Signer::from_seed(epoch, &seed);
    let pub_path = public_key_path(keys_dir, epoch);
    if pub_path.exists() {
        let on_disk = read_public_key_file(&pub_path)?;
        if on_disk != signer.public_key {
            return Err(LedgerError::Key(format!(
                "{} does not match the public key derived from {}",
                pub_path.display(),
                path.display()
            )));
        }
    } else {
        tracing::warn!(path = %pub_path.display(), "ledger public key file missing; re-deriving it from the seed");
        write_atomic(&pub_path, &signer.public_key, false)?;
    }
    Ok(signer)
}

fn generate(keys_dir: &Path, epoch: u32) -> Result<Signer, LedgerError> {
    use rand::TryRngCore as _;
    let mut seed = [0u8; SEED_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| LedgerError::Key(format!("operating system RNG failed: {e}")))?;
    let signer = Signer::from_seed(epoch, &seed);
    write_atomic(&seed_path(keys_dir, epoch), &seed, true)?;
    seed.fill(0);
    std::hint::black_box(&seed);
    write_atomic(&public_key_path(keys_dir, epoch), &signer.public_key, false)?;
    tracing::info!(
        keys_dir = %keys_dir.display(),
        epoch,
        "generated new ML-DSA-65 ledger signing key"
    );
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = KeyRecordPayload::new(0, "dunes/x", &s.public_key);
        let json = serde_json::to_vec(&p).expect("json");
        assert_eq!(
            KeyRecordPayload::parse_and_check(&json, 0, "dunes/x").expect("ok"),
            s.public_key
        );
        assert!(KeyRecordPayload::parse_and_check(&json, 1, "dunes/x").is_err());
        assert!(KeyRecordPayload::parse_and_check(&json, 0, "dunes/y").is_err());
    }
}
