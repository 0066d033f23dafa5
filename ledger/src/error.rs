//! The crate's single error type and the precise failure locator shared with verification.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where and why a ledger stopped being trustworthy.
///
/// `Display` names the first bad record precisely, e.g.
/// `record 1234 (/data/ledger/seg-0000000000000000.dlg @ byte 567890): payload hash mismatch`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyFailure {
    /// Index of the record at fault (the index expected at that position of the log), if the
    /// failure concerns a record.
    pub record_index: Option<u64>,
    /// The file at fault (segment, `checkpoints.log` or a public key file).
    pub file: PathBuf,
    /// Byte offset inside `file` where the bad frame/entry starts, when known.
    pub byte_offset: Option<u64>,
    /// Human-readable reason.
    pub reason: String,
}

impl VerifyFailure {
    pub(crate) fn new(
        record_index: Option<u64>,
        file: &Path,
        byte_offset: Option<u64>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            record_index,
            file: file.to_path_buf(),
            byte_offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.record_index, self.byte_offset) {
            (Some(i), Some(o)) => write!(f, "record {i} ({file} @ byte {o}): {}", self.reason),
            (Some(i), None) => write!(f, "record {i} ({file}): {}", self.reason),
            (None, Some(o)) => write!(f, "{file} @ byte {o}: {}", self.reason),
            (None, None) => write!(f, "{file}: {}", self.reason),
        }
    }
}

/// Every error that crosses the `dunes-ledger` crate boundary.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An operating-system I/O error on a specific file or directory.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// On-disk data is damaged or inconsistent (never silently repaired, except a torn tail
    /// beyond the last signed checkpoint, which `Ledger::open` truncates with a warning).
    #[error("ledger corrupt: {failure}")]
    Corrupt { failure: Box<VerifyFailure> },
    /// Key material missing, unreadable, mismatched, or a signing failure.
    #[error("ledger key error: {0}")]
    Key(String),
    /// Invalid configuration (e.g. an origin that cannot appear in a signed note).
    #[error("invalid ledger configuration: {0}")]
    Config(String),
    /// Invalid `append` arguments (payload too large, forward/self references, ...).
    #[error("invalid ledger input: {0}")]
    InvalidInput(String),
    /// Another process (or another `Ledger` in this process) holds the ledger's write lock.
    #[error("ledger at {} is locked by another writer", path.display())]
    Locked { path: PathBuf },
    /// A previous write failed half-way; the in-memory state may no longer match the disk.
    /// Reopen the ledger (which repairs a torn tail) to continue.
    #[error("ledger is unusable after an earlier write failure; reopen it to recover")]
    Poisoned,
}

impl LedgerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(failure: VerifyFailure) -> Self {
        Self::Corrupt {
            failure: Box::new(failure),
        }
    }
}

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, LedgerError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, LedgerError> {
        self.map_err(|e| LedgerError::io(path, e))
    }
}
