//! dunes-ingest: validation of MCP log envelopes and their normalisation into
//! the Arrow `events` and `tool_defs` tables described in `docs/schema.md`.
//!
//! ```text
//! LineReader / split_http_body ──RawRecord──▶ Normalizer::decode_batch ──▶ DecodedBatch
//!                                                  (events, tool_defs, accepted, rejected)
//! rejected ──▶ DeadLetterWriter
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;

mod deadletter;
mod dedup;
mod envelope;
mod error;
pub mod gateway;
mod json;
pub mod kafka;
pub mod maml;
mod normalize;
pub mod otlp;
pub mod schema;
pub mod secrets;
pub mod source;
mod stitch;
pub mod text;
pub mod urls;

pub use deadletter::{DEAD_LETTER_RAW_MAX, DeadLetterWriter};
pub use dedup::{Dedup, Seen};
pub use error::IngestError;
pub use gateway::InputFormat;
pub use normalize::{Normalizer, event_id_of};
pub use source::split_http_body;

/// Ingest limits and matching parameters.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Largest accepted envelope in bytes (default 1 MiB).
    pub max_line_bytes: usize,
    /// Most outstanding requests remembered for latency matching (oldest evicted).
    pub pending_requests_max: usize,
    /// Outstanding requests older than this (event time) are forgotten.
    pub pending_request_ttl_ms: i64,
    /// Keys per MAML origin for checking document signatures.
    pub maml_keys: Option<std::sync::Arc<dyn maml::SignatureCheck>>,
    /// Session stitching of messages without a session id: a party's session without a W3C
    /// trace ends after this much event time without a message.
    pub session_gap_ms: i64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_line_bytes: 1024 * 1024,
            pending_requests_max: 200_000,
            pending_request_ttl_ms: 5 * 60 * 1000,
            maml_keys: None,
            session_gap_ms: 30 * 60 * 1000,
        }
    }
}

/// Where a record came from.
#[derive(Clone, Debug)]
pub enum SourcePos {
    /// Line `line` (1-based) of a file.
    File {
        /// The path as given (shared by the records of one file).
        path: Arc<str>,
        /// 1-based line number.
        line: u64,
    },
    /// Line `line` (1-based) of standard input.
    Stdin {
        /// 1-based line number.
        line: u64,
    },
    /// Element `index` (0-based) of an HTTP ingest request.
    Http {
        /// Request id assigned by the API (shared by the records of a request).
        request_id: Arc<str>,
        /// 0-based element (JSON array) or line (NDJSON) index.
        index: u64,
    },
    /// A Kafka message.
    Kafka {
        /// Topic (shared by the records of a poll loop).
        topic: Arc<str>,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A record read back from the ledger (re-detected after a restart).
    Ledger {
        /// Ledger index.
        index: u64,
    },
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePos::File { path, line } => write!(f, "{path}:{line}"),
            SourcePos::Stdin { line } => write!(f, "stdin:{line}"),
            SourcePos::Http { .. } => f.write_str("http"),
            SourcePos::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka:{topic}/{partition}/{offset}"),
            SourcePos::Ledger { index } => write!(f, "ledger:{index}"),
        }
    }
}

/// One input record (normally one line).
#[derive(Clone, Debug)]
pub struct RawRecord {
    /// The bytes, without the line ending (cut to `max_line_bytes + 1` if oversize);
    /// a slice of the buffer it was read into, shared with its neighbours.
    pub bytes: Bytes,
    /// Where it came from.
    pub source: SourcePos,
    /// The original length when the reader cut the record.
    pub oversize: Option<usize>,
    /// Already refused by the source's decoder (an OTLP item that maps to no envelope): the
    /// record goes to dead letter with this reason, `bytes` being what the item carried.
    pub refused: Option<String>,
}

impl RawRecord {
    /// Line `line` (1-based) of file `path`, as read (not cut, not refused).
    pub fn file_line(bytes: impl Into<Bytes>, path: &str, line: u64) -> Self {
        RawRecord {
            bytes: bytes.into(),
            source: SourcePos::File {
                path: path.into(),
                line,
            },
            oversize: None,
            refused: None,
        }
    }
}

/// A record that failed validation.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// Human-readable reason, e.g. `missing required field "ts"`.
    pub reason: String,
    /// Where it came from.
    pub source: SourcePos,
    /// The bytes as received (possibly cut, see the reason).
    pub raw: Bytes,
}

/// One accepted envelope (not one per JSON-RPC element).
#[derive(Clone, Debug)]
pub struct Accepted {
    /// Envelope `event_id`, or the derived `d-…` id.
    pub event_id: String,
    /// Envelope `ts`, µs since the Unix epoch.
    pub ts_micros: i64,
    /// The original bytes, for the ledger.
    pub raw: Bytes,
    /// BLAKE3 of `raw` (computed on the decode thread; the ledger's payload hash).
    pub raw_blake3: [u8; 32],
    /// Where it came from.
    pub source: SourcePos,
}

/// The output of [`Normalizer::decode_batch`].
#[derive(Debug)]
pub struct DecodedBatch {
    /// `events` rows ([`schema::events_schema`]).
    pub events: RecordBatch,
    /// `tool_defs` rows ([`schema::tool_defs_schema`]).
    pub tool_defs: RecordBatch,
    /// `maml_docs` rows ([`schema::maml_docs_schema`]).
    pub maml_docs: RecordBatch,
    /// Accepted envelopes, in input order.
    pub accepted: Vec<Accepted>,
    /// Rejected records, in input order.
    pub rejected: Vec<Rejected>,
    /// Envelopes skipped as already seen (see [`Dedup`]).
    pub duplicates: Vec<Duplicate>,
}

impl DecodedBatch {
    /// The batch's tables, as the detection engine reads them.
    pub fn tables(&self) -> Tables<'_> {
        Tables {
            events: &self.events,
            tool_defs: &self.tool_defs,
            maml_docs: &self.maml_docs,
        }
    }
}

/// The normalised tables of one batch (`events`, `tool_defs`, `maml_docs`).
#[derive(Clone, Copy, Debug)]
pub struct Tables<'a> {
    pub events: &'a RecordBatch,
    pub tool_defs: &'a RecordBatch,
    pub maml_docs: &'a RecordBatch,
}

impl<'a> Tables<'a> {
    /// `events` and `tool_defs` with no MAML documents.
    pub fn new(events: &'a RecordBatch, tool_defs: &'a RecordBatch) -> Self {
        Tables {
            events,
            tool_defs,
            maml_docs: schema::empty_maml_docs(),
        }
    }
}

/// An envelope skipped because its id and bytes were already accepted.
#[derive(Clone, Debug)]
pub struct Duplicate {
    /// Its event id.
    pub event_id: String,
    /// Where this copy came from.
    pub source: SourcePos,
}
