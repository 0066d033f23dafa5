//! Kafka: the consumer source (micro-batches with commit-after-durable
//! offsets) and the producer sink (dead-letter, incidents and responses
//! topics).
//!
//! ```text
//! poll thread ──KafkaBatch──▶ pipeline (ledger fsync) ──▶ KafkaSink (DLQ, incidents,
//!      ▲                                                  responses; delivery awaited)
//!      └──────────── KafkaSourceHandle::commit(batch) ◀──────────┘
//! ```
//!
//! Offsets are committed only after a batch is durably ledgered and its
//! outputs are delivered; on a revoke (rebalance or shutdown) the poll thread
//! hands over its partial batch, waits until every batch in flight is
//! committed, then commits synchronously before giving up the partitions.

mod config;
mod consumer;
mod producer;
#[cfg(test)]
mod tests;

pub use config::{KafkaConfig, Probe, probe};
pub use consumer::{KafkaBatch, KafkaSource, KafkaSourceHandle, committed_offsets};
pub use producer::{KafkaSink, OutputMessage};
