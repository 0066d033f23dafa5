//! The Kafka source: consumer batches carry their offsets, committed only
//! after the batch is in the ledger (fsynced) and its outputs are delivered.

use std::time::Duration;

use dunes_ingest::kafka::{KafkaBatch, KafkaSink, KafkaSource, KafkaSourceHandle};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::{Context, Result};
use crate::sinks::kafka::publish;
use crate::stage::Pipeline;

/// The Kafka consumer and producer of a running pipeline.
pub(crate) struct KafkaIo {
    pub(crate) handle: KafkaSourceHandle,
    rx: mpsc::Receiver<KafkaBatch>,
    pub(crate) sink: KafkaSink,
}

impl KafkaIo {
    pub(crate) async fn start(cfg: &Config) -> Result<KafkaIo> {
        let client_id = cfg
            .kafka
            .client_id
            .clone()
            .unwrap_or_else(|| cfg.origin().replace('/', "-"));
        let sink = KafkaSink::new(&cfg.kafka, &client_id).context("cannot create the Kafka producer")?;
        sink.ensure_output_topics()
            .await
            .context("cannot create the Kafka output topics")?;
        let (handle, rx) = KafkaSource::start(&cfg.kafka, &client_id)
            .context("cannot start the Kafka consumer")?;
        Ok(KafkaIo { handle, rx, sink })
    }

    /// One Kafka batch: ledger (fsync), outputs delivered, then the commit.
    pub(crate) async fn process(
        &self,
        pipeline: &mut Pipeline,
        mut batch: KafkaBatch,
        latency: Option<&std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    ) -> Result<()> {
        let n = batch.records.len() as u64;
        let out = match pipeline.process(std::mem::take(&mut batch.records)).await {
            Ok(o) => o,
            Err(e) => {
                self.handle.abandon();
                return Err(e);
            }
        };
        if let Err(e) = publish(&self.sink, &out).await {
            self.handle.abandon();
            return Err(e);
        }

        let commit = tokio::task::block_in_place(|| self.handle.commit(&batch))
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

    /// Stops polling, processes and commits what was handed over, leaves
    /// the group.
    pub(crate) async fn shutdown(
        mut self,
        pipeline: &mut Pipeline,
        latency: Option<&std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    ) -> Result<()> {
        self.handle.request_stop();
        loop {
            match tokio::time::timeout(Duration::from_millis(50), self.rx.recv()).await {
                Ok(Some(b)) => self.process(pipeline, b, latency).await?,
                Ok(None) => break,
                Err(_) => {
                    if self.handle.finished() && self.rx.is_empty() {
                        break;
                    }
                }
            }
        }
        let KafkaIo { handle, .. } = self;
        tokio::task::block_in_place(|| handle.join());
        tracing::info!("kafka: consumer stopped, offsets committed");
        Ok(())
    }
}

pub(crate) async fn next_kafka(k: Option<&mut KafkaIo>) -> Option<KafkaBatch> {
    match k {
        Some(k) => k.rx.recv().await,
        None => std::future::pending().await,
    }
}
