//! Segment files and record-chain validation shared by `Ledger::open` and `verify_dir`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LedgerError};
use crate::merkle::Hash;
use crate::record::{HeaderView, RecordKind};

/// `seg-<first index as 16 lowercase hex digits>.dlg`
pub fn segment_file_name(first_index: u64) -> String {
    format!("seg-{first_index:016x}.dlg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
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

/// Record-to-record invariants (index, chain, origin, key epochs, refs) and per-kind counts.
#[derive(Debug, Clone)]
pub(crate) struct ChainState {
    pub next_index: u64,
    pub prev_hash: Hash,
    pub origin: Option<Vec<u8>>,
    pub key_epoch: Option<u32>,
    pub counts: [u64; 8],
}

impl ChainState {
    pub fn new() -> Self {
        Self {
            next_index: 0,
            prev_hash: [0u8; 32],
            origin: None,
            key_epoch: None,
            counts: [0; 8],
        }
    }

    /// Check `h` as the next record and advance. On error the state is unchanged.
    pub fn check(&mut self, h: &HeaderView<'_>, record_hash: &Hash) -> Result<(), String> {
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
        let epoch = h.key_epoch();
        let new_epoch = match (h.kind(), self.key_epoch) {
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
                    "record 0 is a {} record; a ledger must start with a Key record",
                    h.kind()
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
        if self.origin.is_none() {
            self.origin = Some(h.origin().to_vec());
        }
        self.key_epoch = Some(new_epoch);
        self.counts[usize::from(h.kind().as_u8())] += 1;
        self.next_index = i + 1;
        self.prev_hash = *record_hash;
        Ok(())
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
