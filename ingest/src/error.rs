//! The crate-boundary error type.

use std::io;

/// Every error `dunes-ingest` returns to its callers.
///
/// Per-record problems (bad JSON, missing fields, …) are *not* errors: they
/// become [`crate::Rejected`] entries of a [`crate::DecodedBatch`].
#[derive(thiserror::Error, Debug)]
pub enum IngestError {
    /// An I/O operation on a file or stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (e.g. `open "x.ndjson"`).
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Building an Arrow record batch failed (a bug: schema and builders disagree).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// An HTTP ingest body could not be split into records.
    #[error("invalid HTTP body: {0}")]
    HttpBody(String),
    /// Kafka client setup, delivery or commit failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// JSON serialisation failed (dead-letter output).
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl IngestError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        IngestError::Io {
            context: context.into(),
            source,
        }
    }
}
