//! Dead-letter output: one NDJSON line per rejected record.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;

use crate::text::truncate_bytes;
use crate::{IngestError, Rejected};

/// Most bytes of the raw record kept in the `raw` text field.
pub const DEAD_LETTER_RAW_MAX: usize = 64 * 1024;

#[derive(Serialize)]
struct Line<'a> {
    reason: &'a str,
    source: String,
    raw: &'a str,
    raw_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_b64: Option<String>,
    ts: String,
}

/// Appends rejected records to an NDJSON file:
/// `{"reason", "source", "raw" (lossy UTF-8, ≤ 64 KiB), "raw_len",
/// "raw_b64" (exact bytes, only when `raw` is not them), "ts"}`.
pub struct DeadLetterWriter {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    /// Something was written since the last [`DeadLetterWriter::flush_sync`].
    dirty: bool,
}

impl DeadLetterWriter {
    /// Opens (creating if needed) `path` in append mode.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, IngestError> {
        let path = path.as_ref().to_path_buf();
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| IngestError::io(format!("open dead-letter file {}", path.display()), e))?;
        Ok(DeadLetterWriter {
            path,
            out: BufWriter::new(f),
            written: 0,
            dirty: false,
        })
    }

    /// Writes one rejected record (buffered).
    pub fn write(&mut self, r: &Rejected) -> Result<(), IngestError> {
        self.dirty = true;
        let lossy = String::from_utf8_lossy(&r.raw);
        let exact = matches!(lossy, std::borrow::Cow::Borrowed(_));
        let raw = truncate_bytes(&lossy, DEAD_LETTER_RAW_MAX);
        let cut = raw.len() < lossy.len() || r.reason.starts_with("line is ");
        let raw_b64 =
            (!exact || cut).then(|| base64::engine::general_purpose::STANDARD.encode(&r.raw));
        let line = Line {
            reason: &r.reason,
            source: r.source.to_string(),
            raw,
            raw_len: r.raw.len(),
            raw_b64,
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out
            .write_all(b"\n")
            .map_err(|e| IngestError::io(format!("write {}", self.path.display()), e))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes buffered lines and fsyncs the file, when anything was written
    /// since the last call (a batch without rejected records costs no
    /// `fdatasync`). Returns whether it synced.
    pub fn flush_sync(&mut self) -> Result<bool, IngestError> {
        if !self.dirty {
            return Ok(false);
        }
        let ctx = || format!("flush {}", self.path.display());
        self.out.flush().map_err(|e| IngestError::io(ctx(), e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| IngestError::io(ctx(), e))?;
        self.dirty = false;
        Ok(true)
    }

    /// Lines written by this writer.
    pub fn count(&self) -> u64 {
        self.written
    }
}

impl Drop for DeadLetterWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourcePos;

    #[test]
    fn writes_lines_with_b64_only_when_needed() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("dead.ndjson");
        let mut w = DeadLetterWriter::open(&p).expect("open");
        w.write(&Rejected {
            reason: "missing required field \"ts\"".into(),
            source: SourcePos::File {
                path: "x.ndjson".into(),
                line: 3,
            },
            raw: b"{\"a\":1}".to_vec().into(),
        })
        .expect("write");
        w.write(&Rejected {
            reason: "invalid UTF-8 at byte 1".into(),
            source: SourcePos::Http {
                request_id: "r".into(),
                index: 0,
            },
            raw: b"a\xffb".to_vec().into(),
        })
        .expect("write");
        assert!(w.flush_sync().expect("sync"), "two lines to sync");
        assert!(!w.flush_sync().expect("sync"), "nothing new: no fdatasync");
        assert_eq!(w.count(), 2);
        drop(w);
        // append mode: a second writer adds lines
        let mut w2 = DeadLetterWriter::open(&p).expect("reopen");
        w2.write(&Rejected {
            reason: "r".into(),
            source: SourcePos::Stdin { line: 1 },
            raw: Default::default(),
        })
        .expect("write");
        w2.flush_sync().expect("sync");
        let text = std::fs::read_to_string(&p).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["source"], "x.ndjson:3");
        assert_eq!(lines[0]["raw"], "{\"a\":1}");
        assert_eq!(lines[0]["raw_len"], 7);
        assert!(lines[0].get("raw_b64").is_none());
        assert!(lines[0]["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(lines[1]["source"], "http");
        assert_eq!(lines[1]["raw"], "a\u{fffd}b");
        assert_eq!(lines[1]["raw_b64"], "Yf9i");
        assert_eq!(lines[2]["source"], "stdin:1");
    }
}
