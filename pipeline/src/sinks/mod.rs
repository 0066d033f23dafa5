//! Where results go once a batch is durable in the ledger: NDJSON files in
//! the data dir ([`files`]), the Kafka output topics ([`kafka`]), and, on a
//! thread of their own ([`persist`]), the Parquet history and the detection
//! state journal ([`state`]). The ledger is written by the stage itself
//! (`stage.rs`), first.

pub(crate) mod files;
pub(crate) mod kafka;
pub(crate) mod latency;
pub(crate) mod lifecycle;
pub(crate) mod ocsf;
pub(crate) mod outputs;
pub(crate) mod persist;
pub(crate) mod state;
pub(crate) mod webhook;
