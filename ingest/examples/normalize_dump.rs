//! Prints what the normaliser makes of an NDJSON file: every `events` and
//! `tool_defs` row and every rejection, as JSON lines. Used to compare two
//! builds of the decoder on the same input (`diff` the outputs).
//!
//! `cargo run --release -p dunes-ingest --example normalize_dump -- FILE > out.ndjson`

use std::io::{BufRead, BufReader, Write};

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use dunes_ingest::{IngestConfig, Normalizer, RawRecord, SourcePos};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: normalize_dump FILE")?;
    let reader = BufReader::new(std::fs::File::open(&path)?);
    let mut norm = Normalizer::new(IngestConfig::default());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut batch = Vec::new();
    let mut lines = reader.split(b'\n').enumerate().peekable();
    while lines.peek().is_some() {
        batch.clear();
        for (i, line) in lines.by_ref().take(1024) {
            batch.push(RawRecord {
                bytes: line?.into(),
                source: SourcePos::Stdin { line: i as u64 + 1 },
                oversize: None,
                refused: None,
            });
        }
        let decoded = norm.decode_batch(std::mem::take(&mut batch))?;
        for r in &decoded.rejected {
            writeln!(
                out,
                "{{\"rejected\":{:?},\"at\":\"{}\"}}",
                r.reason, r.source
            )?;
        }
        let mut w = LineDelimitedWriter::new(&mut out);
        w.write(&plain_times(&decoded.events)?)?;
        w.write(&plain_times(&decoded.tool_defs)?)?;
        w.finish()?;
    }
    Ok(())
}

/// Timestamps as µs integers (the JSON writer needs chrono-tz for "UTC").
fn plain_times(b: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if let DataType::Timestamp(..) = f.data_type() {
            fields.push(Field::new(f.name(), DataType::Int64, f.is_nullable()));
            cols.push(cast(c, &DataType::Int64)?);
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}
