//! `[[ingest.maml_keys]]`: public keys per MAML origin, checking the
//! `verification.signature` of MAML documents (see `docs/maml.md`):
//! ML-DSA-65 (FIPS 204, pure, context `dunes-maml-v1`) or Ed25519 (RFC 8032,
//! strict) over `dunes_ingest::maml::signed_content`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// FIPS 204 context string of MAML document signatures.
pub const MAML_SIGNATURE_CONTEXT: &[u8] = b"dunes-maml-v1";

/// One configured key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MamlKeyConfig {
    /// The documents' `origin` (e.g. `agent://research-agent`).
    pub origin: String,
    /// `ml-dsa-65` or `ed25519`.
    pub algorithm: String,
    /// The encoded public key, base64 (ML-DSA-65: 1,952 bytes; Ed25519: 32).
    pub public_key: String,
}

#[derive(Clone)]
enum Key {
    MlDsa(dunes_ledger::MlDsaPublicKey),
    Ed25519(Vec<u8>),
}

/// The keys, by origin (several per origin: any may verify, for rotation).
#[derive(Clone, Default)]
pub struct MamlKeys {
    by_origin: BTreeMap<String, Vec<Key>>,
}

impl std::fmt::Debug for MamlKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MamlKeys")
            .field("origins", &self.by_origin.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MamlKeys {
    /// Decodes the configured keys; the error names the entry.
    pub fn from_config(cfg: &[MamlKeyConfig]) -> Result<Self, String> {
        let mut keys = MamlKeys::default();
        for (i, k) in cfg.iter().enumerate() {
            let at = format!("[[ingest.maml_keys]] #{} ({})", i + 1, k.origin);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(k.public_key.trim())
                .map_err(|e| format!("{at}: public_key is not base64: {e}"))?;
            let key = match k.algorithm.as_str() {
                "ml-dsa-65" => Key::MlDsa(
                    dunes_ledger::MlDsaPublicKey::decode(&bytes)
                        .ok_or_else(|| format!("{at}: not an ML-DSA-65 public key"))?,
                ),
                "ed25519" if bytes.len() == 32 => Key::Ed25519(bytes),
                "ed25519" => return Err(format!("{at}: an Ed25519 public key is 32 bytes")),
                other => {
                    return Err(format!("{at}: algorithm {other:?} (ml-dsa-65 or ed25519)"));
                }
            };
            keys.by_origin
                .entry(k.origin.clone())
                .or_default()
                .push(key);
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.by_origin.is_empty()
    }
}

impl dunes_ingest::maml::SignatureCheck for MamlKeys {
    fn check(&self, origin: &str, message: &[u8], signature: &[u8]) -> Option<bool> {
        let keys = self.by_origin.get(origin)?;
        Some(keys.iter().any(|k| match k {
            Key::MlDsa(vk) => vk.verify(message, MAML_SIGNATURE_CONTEXT, signature),
            Key::Ed25519(pk) => dunes_ledger::verify_ed25519(pk, message, signature),
        }))
    }
}
