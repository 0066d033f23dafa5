//! Publishing signed checkpoints out of the writer's reach (`docs/ledger-format.md` §3.6).
//!
//! A published checkpoint is the trust anchor of `dunes verify --trusted-checkpoint`: kept
//! where the ledger's writer cannot rewrite it, it catches a rollback or a re-signed fork.

use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Checkpoint};
use crate::error::{IoContext, LedgerError};
use crate::keys;

/// Name of the copy of the newest checkpoint in a publish directory.
pub const LATEST_NOTE: &str = "latest.note";

/// What [`publish_checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Written to this new file.
    New(PathBuf),
    /// The same note was already there.
    Already(PathBuf),
}

/// File name of a published checkpoint: its tree size as 20 decimal digits.
pub fn published_file_name(tree_size: u64) -> String {
    format!("checkpoint-{tree_size:020}.note")
}

/// Write the signed note of `cp` into `dir` as `checkpoint-<tree size>.note` (atomically,
/// fsynced) and refresh `latest.note` when it is the newest. Idempotent for the same note; a
/// *different* note for an already published tree size is refused: two signed trees of the
/// same size mean the history forked.
pub fn publish_checkpoint(dir: &Path, cp: &Checkpoint) -> Result<Published, LedgerError> {
    fs::create_dir_all(dir).at(dir)?;
    let path = dir.join(published_file_name(cp.tree_size));
    match fs::read(&path) {
        Ok(old) if old == cp.note.as_bytes() => return Ok(Published::Already(path)),
        Ok(_) => {
            return Err(LedgerError::InvalidInput(format!(
                "{} already holds a different signed checkpoint for tree size {}: the ledger's history forked (or was rolled back and rewritten); not overwriting it",
                path.display(),
                cp.tree_size
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LedgerError::io(&path, e)),
    }
    keys::write_atomic(&path, cp.note.as_bytes(), false)?;
    let latest = dir.join(LATEST_NOTE);
    let newer = match fs::read_to_string(&latest) {
        Ok(text) => checkpoint::parse_note(&text)
            .map(|p| p.checkpoint.tree_size <= cp.tree_size)
            .unwrap_or(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(LedgerError::io(&latest, e)),
    };
    if newer {
        keys::write_atomic(&latest, cp.note.as_bytes(), false)?;
    }
    Ok(Published::New(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(size: u64, note: &str) -> Checkpoint {
        Checkpoint {
            origin: "o".into(),
            tree_size: size,
            root: [0; 32],
            timestamp_micros: 0,
            key_epoch: 0,
            note: note.into(),
        }
    }

    #[test]
    fn publish_is_idempotent_and_refuses_a_fork() {
        let d = tempfile::tempdir().expect("tmp");
        let a = cp(5, "note a\n");
        assert!(matches!(
            publish_checkpoint(d.path(), &a),
            Ok(Published::New(_))
        ));
        assert!(matches!(
            publish_checkpoint(d.path(), &a),
            Ok(Published::Already(_))
        ));
        let e = publish_checkpoint(d.path(), &cp(5, "note b\n")).expect_err("fork");
        assert!(e.to_string().contains("forked"), "{e}");
        assert_eq!(
            fs::read_to_string(d.path().join(published_file_name(5))).expect("read"),
            "note a\n"
        );
    }
}
