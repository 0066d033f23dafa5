//! Where results go once a batch is durable in the ledger: NDJSON files in
//! the data dir ([`files`]), the Kafka output topics ([`kafka`]), and the
//! detection state journal ([`state`]). The ledger and the Parquet history
//! are written by the stage itself (`stage.rs`), in that order.

pub(crate) mod files;
pub(crate) mod kafka;
pub(crate) mod state;
