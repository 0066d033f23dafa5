//! # dunes-ledger
//!
//! The Dunes audit ledger: every event, incident, response and analyst action is appended to a
//! BLAKE3 hash-chained, append-only log whose Merkle tree heads are periodically signed with
//! ML-DSA-65 (FIPS 204) as C2SP signed-note checkpoints. The on-disk format is specified byte
//! by byte in `docs/ledger-format.md` so that regulators can verify a ledger offline with an
//! independent implementation; [`verify_dir`] is the reference verifier.
//!
//! ```no_run
//! use dunes_ledger::{Ledger, LedgerConfig, RecordKind};
//! # fn main() -> Result<(), dunes_ledger::LedgerError> {
//! let mut ledger = Ledger::open(LedgerConfig::new(std::path::Path::new("/var/lib/dunes"), "dunes/host1"))?;
//! let ev = ledger.append(RecordKind::Event, 1_700_000_000_000_000, br#"{"tool":"x"}"#, &[])?;
//! ledger.append(RecordKind::Incident, 1_700_000_000_000_001, br#"{"rule":"r1"}"#, &[ev])?;
//! ledger.maybe_checkpoint()?;
//! ledger.close()?;
//! let report = dunes_ledger::verify_dir(std::path::Path::new("/var/lib/dunes"))?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod checkpoint;
mod error;
mod evidence;
mod export;
mod keys;
mod ledger;
pub mod merkle;
mod proof;
mod publish;
mod record;
mod retention;
mod segment;
mod verify;

pub use checkpoint::{CHECKPOINTS_FILE, Checkpoint, read_latest_checkpoint};
pub use error::{LedgerError, VerifyFailure};
pub use evidence::{
    EVIDENCE_MAGIC, EvidenceSummary, InclusionEntry, export_evidence, verify_evidence,
};
pub use export::{
    ExportSummary, History, HistoryKey, HistoryRedaction, HistoryRevocation, MANIFEST_FILE,
    TailProof, export, export_with, verify_bundle, verify_bundle_with, verify_path,
    verify_path_with,
};
pub use keys::{
    EVIDENCE_CONTEXT, EXPORT_CONTEXT, EpochKeys, KEY_TYPE_IDENTIFIER, KeyRecordPayload,
    MlDsaPublicKey, PUBLIC_KEY_LEN, REDACTION_CONTEXT, ROTATION_CONTEXT, SIGNATURE_LEN,
    SIGNING_CONTEXT, StandaloneKey, TOMBSTONE_CONTEXT, ed25519_key_id, ed25519_public_key_path,
    ed25519_seed_path, key_id, public_key_path, rotation_message, seed_path, verify_ed25519,
    verify_signature, verify_with_context, write_atomic, write_atomic_with,
};
pub use keys::{TailRepair, repair_ndjson_tail};
pub use ledger::{Ledger, LedgerConfig};
pub use proof::{
    ConsistencyProof, InclusionProof, RecordView, consistency_proof, for_each_record,
    inclusion_proof, read_checkpoints, read_leaf_hashes,
};
pub use publish::{LATEST_NOTE, Published, publish_checkpoint, published_file_name};
pub use record::{MAX_PAYLOAD_LEN, MAX_REFS, ParseRecordKindError, RecordKind};
pub use retention::{
    PruneSummary, TOMBSTONE_NOTE, Tombstone, backdate_segments, tombstone_file_name,
};
pub use segment::{RedactionPayload, RevocationPayload, redaction_message, segment_file_name};
pub use verify::{
    TrustedCheckpoint, TrustedResult, VerifyOptions, VerifyReport, verify_dir, verify_dir_with,
};
