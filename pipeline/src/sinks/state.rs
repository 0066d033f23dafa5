//! The detection state on disk: a snapshot plus an append-only journal of
//! per-batch deltas, compacted in the background.
//!
//! ```text
//! <data>/state/detect-state.json            snapshot {position, rules, noise}
//! <data>/state/detect-journal/<n>.ndjson    one EngineDelta per line, n ascending
//! ```
//!
//! After each batch's ledger fsync the pipeline appends the batch's delta
//! (only the keys that changed, see [`dunes_detect::Engine::delta_json`]) to
//! the active journal segment and fsyncs it. Every delta and the snapshot
//! carry a **position**: the ledger length the state reflects, so the state
//! is aligned with the ledger and a restart knows which ledgered events it
//! has not seen yet. When the active segment passes `compact_bytes` and the
//! snapshot's size it is closed, a new one opened, and a background thread
//! folds the closed segments into a new snapshot (written atomically) and
//! deletes them.
//!
//! Restore: the snapshot, then every segment in order, skipping deltas at or
//! before the snapshot's position (a compaction that stopped between the
//! snapshot and the deletion). A torn last line of the last segment (a crash
//! mid-append) is ignored: its batch is re-detected from the ledger.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use dunes_detect::EngineState;
use dunes_detect::engine::EngineDelta;

use crate::error::{Context, PipelineError, Result};
use crate::sinks::files::{write_file_atomic, write_file_atomic_with};

/// Journal bytes after which the active segment is closed and compacted.
pub const DEFAULT_COMPACT_BYTES: u64 = 64 << 20;

pub(crate) struct StateStore {
    snapshot: PathBuf,
    journal_dir: PathBuf,
    active: File,
    active_no: u64,
    active_bytes: u64,
    compact_bytes: u64,
    compactor: Option<JoinHandle<Result<()>>>,
}

/// The state read back: the snapshot with the journal applied.
pub(crate) struct Restored {
    /// `None` when there was no state at all (first start, or removed).
    pub state: Option<EngineState>,
    /// Deltas applied from the journal.
    pub deltas: usize,
}

impl StateStore {
    /// Reads the snapshot and journal (see the module docs) and opens a new
    /// active segment.
    pub(crate) fn open(state_dir: &Path, compact_bytes: u64) -> Result<(StateStore, Restored)> {
        let snapshot = state_dir.join("detect-state.json");
        let journal_dir = state_dir.join("detect-journal");
        std::fs::create_dir_all(&journal_dir)
            .with_context(|| format!("cannot create {}", journal_dir.display()))?;
        let segments = list_segments(&journal_dir)?;
        let mut state = load_snapshot(&snapshot)?;
        let deltas = apply_segments(&mut state, &segments, true)?;
        let active_no = segments.last().map_or(1, |(n, _)| n + 1);
        let (active, active_path) = open_segment(&journal_dir, active_no)?;
        sync_dir(&journal_dir)?;
        tracing::debug!(path = %active_path.display(), "state journal segment opened");
        let mut store = StateStore {
            snapshot,
            journal_dir,
            active,
            active_no,
            active_bytes: 0,
            compact_bytes: compact_bytes.max(1),
            compactor: None,
        };
        if !segments.is_empty() {
            store.compact_closed()?;
        }
        Ok((store, Restored { state, deltas }))
    }

    /// Appends one delta line (JSON of an [`EngineDelta`]) and fsyncs it;
    /// closes and compacts the segment when it grew past the limit.
    pub(crate) fn append(&mut self, delta_json: &[u8]) -> Result<()> {
        let what = || {
            format!(
                "cannot write the detection state journal {}",
                segment_path(&self.journal_dir, self.active_no).display()
            )
        };
        let mut line = Vec::with_capacity(delta_json.len() + 1);
        line.extend_from_slice(delta_json);
        line.push(b'\n');
        self.active.write_all(&line).with_context(what)?;
        self.active.sync_data().with_context(what)?;
        self.active_bytes += line.len() as u64;
        // Fold when the segment passed the limit and is at least as large
        // as the snapshot: a compaction rewrites the whole snapshot, so its
        // cost stays proportional to the journal written (large states:
        // 135 MB rewritten every 6 s otherwise, measured by the soak).
        if self.active_bytes >= self.compact_bytes
            && self.active_bytes >= std::fs::metadata(&self.snapshot).map_or(0, |m| m.len())
        {
            self.rotate()?;
            self.compact_closed()?;
        }
        Ok(())
    }

    /// Replaces the whole state with `snapshot_json` (after a rule reload,
    /// whose state keys changed): waits for a running compaction, writes the
    /// snapshot, removes every segment and starts a new one.
    pub(crate) fn replace(&mut self, snapshot_json: &[u8]) -> Result<()> {
        self.join_compactor()?;
        self.rotate()?;
        write_file_atomic(&self.snapshot, snapshot_json, "detection state")?;
        for (n, path) in list_segments(&self.journal_dir)? {
            if n < self.active_no {
                remove(&path)?;
            }
        }
        sync_dir(&self.journal_dir)
    }

    /// Waits for a background compaction to end (on close).
    pub(crate) fn close(&mut self) -> Result<()> {
        self.join_compactor()
    }

    fn rotate(&mut self) -> Result<()> {
        let (file, _) = open_segment(&self.journal_dir, self.active_no + 1)?;
        sync_dir(&self.journal_dir)?;
        self.active = file;
        self.active_no += 1;
        self.active_bytes = 0;
        Ok(())
    }

    fn join_compactor(&mut self) -> Result<()> {
        match self.compactor.take() {
            Some(h) => h.join().map_err(|_| {
                PipelineError::Stopped("the state compaction thread panicked".into())
            })?,
            None => Ok(()),
        }
    }

    /// Starts folding every closed segment into the snapshot on a thread of
    /// its own (after the previous compaction, if one still runs, ends).
    fn compact_closed(&mut self) -> Result<()> {
        self.join_compactor()?;
        let (snapshot, dir, upto) = (
            self.snapshot.clone(),
            self.journal_dir.clone(),
            self.active_no,
        );
        let handle = std::thread::Builder::new()
            .name("dunes-state-compact".into())
            .spawn(move || compact(&snapshot, &dir, upto))
            .context("cannot start the state compaction thread")?;
        self.compactor = Some(handle);
        Ok(())
    }
}

/// Folds the segments numbered below `upto` into the snapshot.
fn compact(snapshot: &Path, dir: &Path, upto: u64) -> Result<()> {
    let t = std::time::Instant::now();
    let segments: Vec<(u64, PathBuf)> = list_segments(dir)?
        .into_iter()
        .filter(|(n, _)| *n < upto)
        .collect();
    if segments.is_empty() {
        return Ok(());
    }
    let mut state = load_snapshot(snapshot)?;
    let deltas = apply_segments(&mut state, &segments, true)?;
    if let Some(state) = &state {
        // Streamed: the compaction holds the parsed state, not also its text
        // twice (read and written), which the soak saw as RSS swings.
        write_file_atomic_with(snapshot, "detection state", |w| {
            serde_json::to_writer(w, state).map_err(std::io::Error::other)
        })?;
    }
    for (_, path) in &segments {
        remove(path)?;
    }
    sync_dir(dir)?;
    tracing::info!(
        segments = segments.len(),
        deltas,
        ms = t.elapsed().as_millis() as u64,
        "detection state journal compacted"
    );
    Ok(())
}

fn load_snapshot(path: &Path) -> Result<Option<EngineState>> {
    match File::open(path) {
        Ok(file) => Ok(Some(
            serde_json::from_reader(BufReader::with_capacity(1 << 16, file))
                .with_context(|| format!("detection state {} is corrupt", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Applies the deltas of `segments` in order; with `tolerate_torn_tail`, an
/// unreadable last line of the last segment (a crash mid-append) is skipped
/// with a warning. Returns the number of deltas applied.
fn apply_segments(
    state: &mut Option<EngineState>,
    segments: &[(u64, PathBuf)],
    tolerate_torn_tail: bool,
) -> Result<usize> {
    let mut applied = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut lines = BufReader::new(file).split(b'\n').enumerate().peekable();
        while let Some((no, line)) = lines.next() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if line.is_empty() {
                continue;
            }
            let delta: EngineDelta = match serde_json::from_slice(&line) {
                Ok(d) => d,
                Err(e)
                    if tolerate_torn_tail && i + 1 == segments.len() && lines.peek().is_none() =>
                {
                    tracing::warn!(
                        path = %path.display(), line = no + 1,
                        "torn last line of the state journal ignored ({e}); its batch is re-detected from the ledger"
                    );
                    break;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "detection state journal {} line {} is corrupt",
                            path.display(),
                            no + 1
                        )
                    });
                }
            };
            let st = state.get_or_insert_with(EngineState::default);
            if st.position.is_some_and(|p| delta.position <= p) {
                continue;
            }
            st.apply(delta);
            applied += 1;
        }
    }
    Ok(applied)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.ndjson"))
}

fn open_segment(dir: &Path, n: u64) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, n);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok((f, path))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = e.path();
        let n = path
            .file_name()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_suffix(".ndjson"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(n) = n {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}
