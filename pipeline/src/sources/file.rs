//! NDJSON files and stdin, read in chunks on a blocking thread.

use std::path::{Path, PathBuf};

use dunes_ingest::{IngestError, InputFormat, RawRecord, gateway};
use tokio::sync::mpsc;

use super::Work;

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
pub(crate) fn source_thread(
    path: PathBuf,
    format: InputFormat,
    max_line: usize,
    chunk: usize,
    tx: mpsc::Sender<Work>,
) {
    let name = path.display().to_string();
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
    let _ = tx.blocking_send(Work::Done {
        source: name,
        error: result.err().map(|e| e.to_string()),
    });
}
