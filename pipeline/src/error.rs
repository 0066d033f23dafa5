//! The crate's one error type. Every variant says what the pipeline was doing
//! and keeps the cause as its `source`, so `{:#}` (anyhow in the binary)
//! prints the whole chain.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("{what}")]
    Ledger {
        what: String,
        #[source]
        source: dunes_ledger::LedgerError,
    },
    #[error("{what}")]
    Detect {
        what: String,
        #[source]
        source: dunes_detect::DetectError,
    },
    #[error("{what}")]
    Ingest {
        what: String,
        #[source]
        source: dunes_ingest::IngestError,
    },
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: dunes_api::ApiError,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}")]
    Toml {
        what: String,
        #[source]
        source: toml::de::Error,
    },
    /// A configuration value out of range (names the key).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file or stdin source failed; the others were drained first.
    #[error("source {name} failed: {message}")]
    Source { name: String, message: String },
    /// A request the data refuses (unknown incident, a stage that does not apply, …).
    #[error("{0}")]
    Refused(String),
    /// A task the pipeline depends on (HTTP server, Kafka consumer) stopped.
    #[error("{0}")]
    Stopped(String),
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// A cause the pipeline wraps with what it was doing.
pub(crate) trait Cause {
    fn wrap(self, what: String) -> PipelineError;
}

macro_rules! cause {
    ($ty:ty, $variant:ident) => {
        impl Cause for $ty {
            fn wrap(self, what: String) -> PipelineError {
                PipelineError::$variant { what, source: self }
            }
        }
    };
}
cause!(dunes_ledger::LedgerError, Ledger);
cause!(dunes_detect::DetectError, Detect);
cause!(dunes_ingest::IngestError, Ingest);
cause!(dunes_api::ApiError, Api);
cause!(std::io::Error, Io);
cause!(serde_json::Error, Json);
cause!(toml::de::Error, Toml);

/// `.context("…")` on any result whose error is a [`Cause`].
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Cause> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| e.wrap(what.to_string()))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.wrap(what()))
    }
}
