//! The Kafka source: consumer batches carry their offsets, committed only
//! after the batch is in the ledger (fsynced) and its outputs are delivered.

use dunes_ingest::kafka::{KafkaBatch, KafkaSink, KafkaSource, KafkaSourceHandle};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::{Context, Result};
use crate::sinks::kafka::publish;
use crate::stage::BatchOutcome;

/// The Kafka consumer handle and producer of a running pipeline; the
/// consumer's batches arrive on the receiver [`KafkaIo::start`] returns.
pub(crate) struct KafkaIo {
    handle: KafkaSourceHandle,
    pub(crate) sink: KafkaSink,
}

impl KafkaIo {
    pub(crate) async fn start(cfg: &Config) -> Result<(KafkaIo, mpsc::Receiver<KafkaBatch>)> {
        let client_id = cfg
            .kafka
            .client_id
            .clone()
            .unwrap_or_else(|| cfg.origin().replace('/', "-"));
        let sink =
            KafkaSink::new(&cfg.kafka, &client_id).context("cannot create the Kafka producer")?;
        sink.ensure_output_topics()
            .await
            .context("cannot create the Kafka output topics")?;
        let (handle, rx) = KafkaSource::start(&cfg.kafka, &client_id)
            .context("cannot start the Kafka consumer")?;
        Ok((KafkaIo { handle, sink }, rx))
    }

    /// A batch is durable in the ledger: its outputs are delivered, then its
    /// offsets committed.
    pub(crate) async fn complete(
        &self,
        out: &BatchOutcome,
        batch: &KafkaBatch,
        latency: Option<&std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    ) -> Result<()> {
        if let Err(e) = publish(&self.sink, out).await {
            self.handle.abandon();
            return Err(e);
        }
        let n = batch.timestamps_ms.len() as u64;
        let commit = tokio::task::block_in_place(|| self.handle.commit(batch))
            .context("cannot commit Kafka offsets")?;
        metrics::counter!("dunes_kafka_messages_total").increment(n);
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Some(h) = latency
            && let Ok(mut h) = h.lock()
        {
            for ts in batch.timestamps_ms.iter().flatten() {
                let _ = h.record(((now_ms - ts).max(0) as u64) * 1000);
            }
        }
        tracing::debug!(
            records = n,
            commit_ms = commit.as_secs_f64() * 1e3,
            "kafka batch committed"
        );
        Ok(())
    }

    /// A batch failed: its offsets must never be committed.
    pub(crate) fn abandon(&self) {
        self.handle.abandon();
    }

    /// Stops polling; batches already handed over still arrive on the
    /// receiver until [`KafkaIo::finished`].
    pub(crate) fn request_stop(&self) {
        self.handle.request_stop();
    }

    pub(crate) fn finished(&self) -> bool {
        self.handle.finished()
    }

    /// Waits for the consumer thread (final commit, group left).
    pub(crate) fn join(self) {
        let KafkaIo { handle, .. } = self;
        tokio::task::block_in_place(|| handle.join());
        tracing::info!("kafka: consumer stopped, offsets committed");
    }
}

pub(crate) async fn next_kafka(rx: Option<&mut mpsc::Receiver<KafkaBatch>>) -> Option<KafkaBatch> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
