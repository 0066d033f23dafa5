//! NDJSON outputs in the data dir and atomically replaced JSON state files.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::{Context, Result};
use crate::sinks::{Delivery, Sink};

/// Files the pipeline writes in the data dir.
pub struct DataPaths {
    pub dead_letter: PathBuf,
    pub incidents: PathBuf,
    pub responses: PathBuf,
    /// Analyst actions on incidents (also ledgered as `action` records).
    pub actions: PathBuf,
}

impl DataPaths {
    pub fn new(data_dir: &Path) -> Self {
        DataPaths {
            dead_letter: data_dir.join("dead-letter.ndjson"),
            incidents: data_dir.join("incidents.ndjson"),
            responses: data_dir.join("responses.ndjson"),
            actions: data_dir.join("actions.ndjson"),
        }
    }
}

/// A JSON-lines file whose last append a crash cut off gets its newline back or loses
/// the cut line ([`dunes_ledger::repair_ndjson_tail`]), so the next append starts a line
/// of its own. Only while holding the ledger lock (`Pipeline::open`), so that another
/// process's live append is never cut.
pub(crate) fn repair_tail(path: &Path) -> Result<()> {
    let repair = dunes_ledger::repair_ndjson_tail(path)
        .with_context(|| format!("cannot repair the end of {}", path.display()))?;
    if let Some(r) = repair {
        tracing::warn!(file = %path.display(), repair = ?r, "last line was cut by a crash, repaired");
    }
    Ok(())
}

/// Appends JSON lines to a file.
pub(crate) struct NdjsonWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// The same file, for another thread to fsync what was flushed (`None`
    /// for a pipe or a device, e.g. `--incidents-out /dev/stdout`).
    sync: Option<Arc<File>>,
}

impl NdjsonWriter {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        repair_tail(path)?;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let regular = f.metadata().is_ok_and(|m| m.is_file());
        let sync = if regular {
            Some(Arc::new(f.try_clone().with_context(|| {
                format!("cannot open {}", path.display())
            })?))
        } else {
            None
        };
        Ok(NdjsonWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            sync,
        })
    }

    pub(crate) fn write<T: Serialize>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, v)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.out
            .write_all(b"\n")
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Appends one line that is already JSON.
    pub(crate) fn write_line(&mut self, json: &[u8]) -> Result<()> {
        self.out
            .write_all(json)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// A handle to fsync the file with (`sync_data`), after [`NdjsonWriter::flush`].
    pub(crate) fn sync_handle(&self) -> Option<Arc<File>> {
        self.sync.clone()
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// `incidents.ndjson`, `responses.ndjson` and the `--incidents-out` copy.
pub(crate) struct IncidentFiles {
    pub(crate) incidents: NdjsonWriter,
    pub(crate) responses: NdjsonWriter,
    /// `--incidents-out`: batch incidents only, not the self-monitor's.
    pub(crate) extra: Option<NdjsonWriter>,
}

impl IncidentFiles {
    pub(crate) fn open(paths: &DataPaths, extra: Option<&Path>) -> Result<Self> {
        Ok(IncidentFiles {
            incidents: NdjsonWriter::open(&paths.incidents)?,
            responses: NdjsonWriter::open(&paths.responses)?,
            extra: extra.map(NdjsonWriter::open).transpose()?,
        })
    }

    /// Appends incidents (their ledgered JSON) to `incidents.ndjson` and,
    /// with `copy`, to the `--incidents-out` copy; flushed.
    pub(crate) fn append_incidents<'j>(
        &mut self,
        jsons: impl IntoIterator<Item = &'j [u8]>,
        copy: bool,
    ) -> Result<()> {
        let mut extra = self.extra.as_mut().filter(|_| copy);
        for json in jsons {
            self.incidents.write_line(json)?;
            if let Some(extra) = &mut extra {
                extra.write_line(json)?;
            }
        }
        self.incidents.flush()?;
        if let Some(extra) = extra {
            extra.flush()?;
        }
        Ok(())
    }

    /// Writes and flushes; the files to fsync go to `batch.to_sync`.
    fn deliver_now(&mut self, batch: &mut Delivery<'_>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let updated = batch.updates.iter().map(|(_, json)| json);
        self.append_incidents(updated.chain(batch.incident_json).map(Vec::as_slice), true)?;
        for json in batch.response_json {
            self.responses.write_line(json)?;
        }
        self.responses.flush()?;
        let written = [
            Some(&self.incidents),
            Some(&self.responses),
            self.extra.as_ref(),
        ];
        batch.to_sync.extend(
            written
                .into_iter()
                .flatten()
                .filter_map(NdjsonWriter::sync_handle),
        );
        Ok(())
    }
}

impl Sink for IncidentFiles {
    fn deliver<'s>(&'s mut self, batch: &'s mut Delivery<'_>) -> BoxFuture<'s, Result<()>> {
        Box::pin(std::future::ready(self.deliver_now(batch)))
    }
}

/// Replaces `path` atomically (temp file, fsync, rename, directory fsync),
/// creating its directory first.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    write_file_atomic_with(path, what, |w| w.write_all(bytes))
}

/// [`write_file_atomic`] with the content streamed by `write` (a large file
/// is never held in memory as a whole).
pub(crate) fn write_file_atomic_with(
    path: &Path,
    what: &str,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    dunes_ledger::write_atomic_with(path, false, write)
        .with_context(|| format!("cannot save the {what} to {}", path.display()))
}
