//! The Dunes data flow as a library:
//!
//! ```text
//! sources/ (Source)        stage.rs (per batch)                                sinks/ (Sink, in this order)
//! file, stdin ─┐
//! HTTP body ───┼─► driver ─► normalise ─► rules + anomaly ─► ledger ─► outboxes ─► NDJSON ─► history, state ─► Kafka outputs
//! Kafka ───────┘   (batch)   (ingest)     (detect)           (fsync)   (fsync)     files     (persist thread)  (then offsets commit)
//!      ▲                                                                  │
//!      │                                              webhook workers ◄───┘  (retry, dead-letter)
//!      └──── Ack: file chunk done, HTTP reply, Kafka offsets ◄──── once the batch is durable
//! ```
//!
//! [`drive()`] runs the loop for `run`, `replay`, `demo` and `bench`;
//! [`Pipeline`] is the stage one batch goes through (also used alone by
//! backfill, evaluation and the benches). The binary keeps only the CLI.

mod config;
mod drive;
mod error;
mod flow;
mod maml_keys;
pub mod report;
mod rules_watch;
mod selfmon;
mod sinks;
mod sources;
mod stage;

pub use config::{
    Config, HttpConfig, IngestSection, LedgerSection, MIN_RETENTION_DAYS, OutputsSection,
    check_retention_days,
};
pub use drive::{AfterSources, DriveOptions, DriveOutcome, drive};
pub use error::PipelineError;
pub use maml_keys::{MAML_SIGNATURE_CONTEXT, MamlKeyConfig, MamlKeys};
pub use selfmon::SelfMonitorSection;
pub use sinks::files::DataPaths;
pub use sinks::lifecycle::ChangeKind;
pub use sinks::ocsf::OCSF_VERSION;
pub use sinks::webhook::{WebhookConfig, WebhookFormat};
pub use stage::{
    ACCESS_QUEUE, BatchOutcome, Decoded, Decoder, PhaseTimes, Pipeline, Stats, TEST_SINK_DELAY_MS,
    retention_action,
};
