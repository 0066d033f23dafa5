//! NDJSON files and stdin, read in chunks on a blocking thread.

use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use dunes_ingest::{IngestError, InputFormat, RawRecord, gateway};
use tokio::sync::mpsc;

use super::{Ack, Input, Source};

/// Chunks read ahead of the driver, per file.
const READ_AHEAD: usize = 4;

/// What the reading thread hands over.
enum Work {
    Chunk(Vec<RawRecord>),
    Done(Option<String>),
}

/// One file, or stdin (`-`), read on a blocking thread of its own; a chunk
/// is `[ingest] batch_size` envelopes (one line at a time from stdin, which
/// trickles).
pub(crate) struct FileSource {
    name: String,
    rx: Option<mpsc::Receiver<Work>>,
}

impl FileSource {
    pub(crate) fn start(
        path: PathBuf,
        format: InputFormat,
        max_line: usize,
        batch_size: usize,
    ) -> FileSource {
        let chunk = if path == Path::new("-") {
            1
        } else {
            batch_size
        };
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let name = path.display().to_string();
        tokio::task::spawn_blocking(move || source_thread(path, format, max_line, chunk, tx));
        FileSource { name, rx: Some(rx) }
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn finite(&self) -> bool {
        true
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Input, String>>> {
        let Some(rx) = &mut self.rx else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Work::Chunk(records))) => Poll::Ready(Some(Ok(Input {
                records,
                ack: Ack::File,
            }))),
            Poll::Ready(Some(Work::Done(error))) => {
                self.rx = None;
                Poll::Ready(error.map(Err))
            }
            // the thread is gone without a word (it panicked)
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(Some(Err("the reading thread stopped".into())))
            }
        }
    }

    /// The reading thread stops at its next chunk (its channel is gone).
    fn request_stop(&mut self) {
        self.rx = None;
    }
}

/// Reads one NDJSON source in chunks and hands them to the pipeline; the
/// bounded channel blocks the reader when detection or the ledger is slower
/// (backpressure).
/// A gateway access log or OTLP file (`format`) is mapped to envelopes line by line, and
/// chunks count envelopes, so a chunk is the same batch whatever form the traffic came in.
fn read_source<I>(
    reader: I,
    format: InputFormat,
    chunk: usize,
    tx: &mpsc::Sender<Work>,
) -> Result<(), IngestError>
where
    I: Iterator<Item = Result<RawRecord, IngestError>>,
{
    let mut buf = Vec::with_capacity(chunk);
    for rec in reader {
        let rec = rec?;
        if format == InputFormat::Envelope {
            buf.push(rec);
        } else {
            buf.extend(gateway::adapt_records(format, vec![rec]));
        }
        if buf.len() >= chunk {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(chunk));
            if tx.blocking_send(Work::Chunk(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(Work::Chunk(buf));
    }
    Ok(())
}

/// Runs on a blocking thread: opens `path` (`-` is stdin), reads it, and
/// always reports completion.
fn source_thread(
    path: PathBuf,
    format: InputFormat,
    max_line: usize,
    chunk: usize,
    tx: mpsc::Sender<Work>,
) {
    let result = if path == Path::new("-") {
        read_source(
            dunes_ingest::source::stdin_reader(max_line),
            format,
            chunk,
            &tx,
        )
    } else {
        dunes_ingest::source::open_file(&path, max_line)
            .and_then(|r| read_source(r, format, chunk, &tx))
    };
    let _ = tx.blocking_send(Work::Done(result.err().map(|e| e.to_string())));
}
