//! The writes that follow a batch's ledger sync — its Parquet history, then
//! its detection-state journal entry — on a thread of their own, so that
//! they overlap the next batch's detection.
//!
//! Order per batch stays: ledger fsync, `incidents.ndjson` / `responses.ndjson`
//! flushed (driver) → history, those files fsynced → state journal.
//! Batches are written in submission order; at most one waits while one is
//! being written (bounded channel), so a slow disk slows the driver down
//! instead of queueing. A crash before a batch's state entry is durable
//! re-detects it from the ledger at the next start (`Pipeline::catch_up`),
//! which rewrites its history files (named after the batch's first ledger
//! index) and its state, as before this thread existed.
//!
//! The first error stops the thread; the driver gets it at its next
//! [`Persister::write`], [`Persister::replace`] or [`Persister::close`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use dunes_detect::history::HistoryWriter;
use tokio::sync::{mpsc, oneshot};

use futures::future::BoxFuture;

use crate::error::{Context, PipelineError, Result};
use crate::sinks::state::StateStore;
use crate::sinks::{Delivery, Sink};
use crate::stage::crash_point;

/// One batch's writes.
pub(crate) struct BatchWrite {
    pub events: RecordBatch,
    pub tool_defs: RecordBatch,
    pub maml_docs: RecordBatch,
    /// The batch's first ledger index (names its history files).
    pub key: Option<u64>,
    /// Output files the batch wrote to (flushed): fsynced before its state entry.
    pub sync: Vec<Arc<std::fs::File>>,
    /// The batch's state delta (`None` when it accepted nothing).
    pub delta: Option<Vec<u8>>,
}

enum Job {
    Write(Box<BatchWrite>),
    /// Replace the whole state (after a rule reload), then answer.
    Replace(Vec<u8>, oneshot::Sender<()>),
}

/// Time spent by the thread, taken by [`Persister::take_times`].
#[derive(Default)]
struct Times {
    history_us: AtomicU64,
    state_us: AtomicU64,
}

pub(crate) struct Persister {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<Mutex<Option<PipelineError>>>,
    times: Arc<Times>,
}

impl Persister {
    /// Starts the thread; it owns the history writer and the state store.
    pub(crate) fn start(history: Option<HistoryWriter>, state: StateStore) -> Result<Persister> {
        let (tx, mut rx) = mpsc::channel::<Job>(1);
        let failed = Arc::new(Mutex::new(None));
        let times = Arc::new(Times::default());
        let (f, t) = (failed.clone(), times.clone());
        let thread = std::thread::Builder::new()
            .name("dunes-persist".into())
            .spawn(move || {
                let mut w = Worker {
                    history,
                    state,
                    times: t,
                };
                let mut outcome = Ok(());
                while let Some(job) = rx.blocking_recv() {
                    outcome = w.run(job);
                    if outcome.is_err() {
                        break;
                    }
                }
                // closing: wait for a background compaction
                let outcome = outcome.and_then(|()| w.state.close());
                if let Err(e) = outcome
                    && let Ok(mut slot) = f.lock()
                {
                    *slot = Some(e);
                }
            })
            .map_err(|e| PipelineError::Io {
                what: "cannot start the persist thread".into(),
                source: e,
            })?;
        Ok(Persister {
            tx: Some(tx),
            thread: Some(thread),
            failed,
            times,
        })
    }

    /// Queues one batch's history and state writes (waits while the
    /// previous batch is still queued).
    pub(crate) async fn write(&mut self, job: BatchWrite) -> Result<()> {
        self.send(Job::Write(Box::new(job))).await
    }

    /// Replaces the whole detection state once the queued batches are
    /// written; returns when it is durable.
    pub(crate) async fn replace(&mut self, snapshot: Vec<u8>) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Job::Replace(snapshot, done)).await?;
        match wait.await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped()),
        }
    }

    async fn send(&mut self, job: Job) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(PipelineError::Stopped(
                "the persist thread was closed".into(),
            ));
        };
        if tx.send(job).await.is_err() {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// The thread's error (it stopped on it), after joining it.
    fn stopped(&mut self) -> PipelineError {
        match self.close() {
            Err(e) => e,
            Ok(()) => PipelineError::Stopped("the persist thread stopped".into()),
        }
    }

    /// Writes everything queued, stops the thread and reports its error.
    pub(crate) fn close(&mut self) -> Result<()> {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            return Err(PipelineError::Stopped("the persist thread panicked".into()));
        }
        match self.failed.lock().ok().and_then(|mut s| s.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// (history, state) µs spent since the last call.
    pub(crate) fn take_times(&self) -> (u64, u64) {
        (
            self.times.history_us.swap(0, Ordering::Relaxed),
            self.times.state_us.swap(0, Ordering::Relaxed),
        )
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        // let queued writes finish; errors were reported or are logged here
        if self.thread.is_some()
            && let Err(e) = self.close()
        {
            tracing::error!(error = %e, "history/state writes failed while shutting down");
        }
    }
}

struct Worker {
    history: Option<HistoryWriter>,
    state: StateStore,
    times: Arc<Times>,
}

impl Worker {
    fn run(&mut self, job: Job) -> Result<()> {
        match job {
            Job::Write(b) => {
                let t0 = Instant::now();
                if let Some(h) = &mut self.history {
                    h.write_keyed("events", &b.events, b.key)
                        .context("cannot write the event history")?;
                    h.write_keyed("tool_defs", &b.tool_defs, b.key)
                        .context("cannot write the event history")?;
                    h.write_keyed("maml_docs", &b.maml_docs, b.key)
                        .context("cannot write the event history")?;
                }
                for f in &b.sync {
                    f.sync_data().map_err(|e| PipelineError::Io {
                        what: "cannot sync the incident and response files".into(),
                        source: e,
                    })?;
                }
                let t1 = Instant::now();
                // The state journal last: see the module docs.
                if let Some(delta) = &b.delta {
                    self.state.append(delta)?;
                }
                crash_point("after-state");
                let us = |d: std::time::Duration| d.as_micros() as u64;
                self.times
                    .history_us
                    .fetch_add(us(t1 - t0), Ordering::Relaxed);
                self.times
                    .state_us
                    .fetch_add(us(t1.elapsed()), Ordering::Relaxed);
                Ok(())
            }
            Job::Replace(snapshot, done) => {
                self.state.replace(&snapshot)?;
                let _ = done.send(());
                Ok(())
            }
        }
    }
}

impl Sink for Persister {
    /// Queues the batch's history, the fsync of the files written before,
    /// and its state entry (nothing without rows).
    fn deliver<'s>(&'s mut self, batch: &'s mut Delivery<'_>) -> BoxFuture<'s, Result<()>> {
        Box::pin(async move {
            let Some(rows) = batch.rows.take() else {
                return Ok(());
            };
            self.write(BatchWrite {
                events: rows.events,
                tool_defs: rows.tool_defs,
                maml_docs: rows.maml_docs,
                key: rows.key,
                sync: std::mem::take(&mut batch.to_sync),
                delta: rows.delta,
            })
            .await
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dunes_detect::history::HistoryConfig;
    use dunes_ingest::{IngestConfig, Normalizer, RawRecord, SourcePos};

    use crate::sinks::state::DEFAULT_COMPACT_BYTES;

    /// `n` tool calls with event ids `e<first>`…, all on 2026-11-20.
    pub(crate) fn batch(first: usize, n: usize) -> (RecordBatch, RecordBatch) {
        let records = (first..first + n)
            .map(|i| RawRecord {
                bytes: format!(
                    r#"{{"ts":"2026-11-20T08:00:{:02}Z","event_id":"e{i}","server_id":"s","direction":"c2s","message":{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"t"}}}}}}"#,
                    i % 60
                )
                .into_bytes().into(),
                source: SourcePos::Stdin { line: i as u64 },
                oversize: None,
                refused: None,
            })
            .collect();
        let d = Normalizer::new(IngestConfig::default())
            .decode_batch(records)
            .expect("decode");
        assert_eq!(d.events.num_rows(), n);
        (d.events, d.tool_defs)
    }

    pub(crate) fn open(dir: &std::path::Path) -> Persister {
        let cfg = HistoryConfig {
            retention_days: 0,
            ..HistoryConfig::default()
        };
        let history = HistoryWriter::open(dir, cfg).expect("history");
        let (state, _) =
            StateStore::open(&dir.join("state"), DEFAULT_COMPACT_BYTES).expect("state");
        Persister::start(Some(history), state).expect("start")
    }

    pub(crate) fn journal(dir: &std::path::Path) -> Vec<String> {
        let mut segs: Vec<_> = std::fs::read_dir(dir.join("state/detect-journal"))
            .expect("journal dir")
            .map(|e| e.expect("entry").path())
            .collect();
        segs.sort();
        segs.iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .expect("segment")
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn batches_are_written_in_order_history_then_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = open(dir.path());
        for (key, first) in [(3u64, 0usize), (40, 10), (90, 20)] {
            let (events, tool_defs) = batch(first, 5);
            p.write(BatchWrite {
                events,
                tool_defs,
                maml_docs: dunes_ingest::schema::empty_maml_docs().clone(),
                key: Some(key),
                sync: Vec::new(),
                delta: Some(format!("{{\"position\":{}}}", key + 5).into_bytes()),
            })
            .await
            .expect("queued");
        }
        // a batch that accepted nothing leaves no state line
        let (events, tool_defs) = batch(30, 0);
        p.write(BatchWrite {
            events,
            tool_defs,
            maml_docs: dunes_ingest::schema::empty_maml_docs().clone(),
            key: None,
            sync: Vec::new(),
            delta: None,
        })
        .await
        .expect("queued");
        p.close().expect("everything written");
        let (history_us, state_us) = p.take_times();
        assert!(history_us > 0 && state_us > 0);
        assert_eq!(
            journal(dir.path()),
            ["{\"position\":8}", "{\"position\":45}", "{\"position\":95}"]
        );
        let mut files: Vec<String> =
            std::fs::read_dir(dir.path().join("history/events/date=2026-11-20"))
                .expect("day partition")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "part-ledger-00000000000000000003.parquet",
                "part-ledger-00000000000000000040.parquet",
                "part-ledger-00000000000000000090.parquet"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_history_write_is_reported_and_its_state_line_never_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = open(dir.path());
        // the table directory cannot be created: a file is in the way
        std::fs::write(dir.path().join("history/events"), b"not a directory").expect("block");
        let (events, tool_defs) = batch(0, 3);
        p.write(BatchWrite {
            events,
            tool_defs,
            maml_docs: dunes_ingest::schema::empty_maml_docs().clone(),
            key: Some(0),
            sync: Vec::new(),
            delta: Some(b"{\"position\":3}".to_vec()),
        })
        .await
        .expect("queued");
        // the next request meets the stopped thread and gets its error
        let err = p
            .replace(b"{}".to_vec())
            .await
            .expect_err("the thread stopped on the history error");
        assert!(
            err.to_string().contains("cannot write the event history"),
            "{err}"
        );
        assert!(journal(dir.path()).is_empty());
        assert!(p.close().is_ok(), "the error was reported once");
    }
}
