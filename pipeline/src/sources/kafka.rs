//! The Kafka source: consumer batches carry their offsets, committed only
//! after the batch is in the ledger (fsynced) and its outputs are delivered.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dunes_ingest::kafka::{KafkaBatch, KafkaSink, KafkaSource, KafkaSourceHandle};
use tokio::sync::mpsc;

use super::{Ack, Input, Source};
use crate::config::Config;
use crate::error::{Context as _, Result};

/// How often a stopping consumer is checked for having finished.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// The consumer's batches, as a [`Source`]; each carries its offsets
/// ([`Ack::Kafka`]), which [`KafkaIo::commit`] commits once the batch is through the sinks.
pub(crate) struct KafkaInput {
    batches: mpsc::Receiver<KafkaBatch>,
    handle: Arc<KafkaSourceHandle>,
    /// Set once stopping: wakes the driver to see whether the poll thread
    /// has finished (it hands over its last batch, then exits).
    stop_check: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Source for KafkaInput {
    fn name(&self) -> &str {
        "kafka"
    }

    fn finite(&self) -> bool {
        false
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Input, String>>> {
        // read before polling: a thread that has exited has handed over all
        let finished = self.handle.finished();
        match self.batches.poll_recv(cx) {
            Poll::Ready(Some(mut batch)) => Poll::Ready(Some(Ok(Input {
                records: std::mem::take(&mut batch.records),
                ack: Ack::Kafka(batch),
            }))),
            Poll::Ready(None) if self.stop_check.is_some() => Poll::Ready(None),
            // The poll thread stopped on its own: only after a fatal error
            // on the commit side.
            Poll::Ready(None) => Poll::Ready(Some(Err("the Kafka consumer stopped".into()))),
            Poll::Pending => match &mut self.stop_check {
                None => Poll::Pending,
                Some(_) if finished => Poll::Ready(None),
                Some(sleep) => {
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + STOP_CHECK);
                    let _ = sleep.as_mut().poll(cx);
                    Poll::Pending
                }
            },
        }
    }

    /// Stops polling; the batches already handed over still arrive.
    fn request_stop(&mut self) {
        if self.stop_check.is_none() {
            self.handle.request_stop();
            self.stop_check = Some(Box::pin(tokio::time::sleep(STOP_CHECK)));
        }
    }
}

/// The Kafka consumer handle and producer of a running pipeline: the
/// producer goes to the stage's last sink (`sinks/kafka.rs`); a batch's
/// offsets are committed here after it.
pub(crate) struct KafkaIo {
    handle: Arc<KafkaSourceHandle>,
    pub(crate) sink: Arc<KafkaSink>,
    /// [`MEMBER_MARKER`], removed when the consumer has left its group.
    marker: PathBuf,
}

/// In the data dir while its consumer is a member of the group; a crash
/// leaves it behind.
pub const MEMBER_MARKER: &str = "kafka-member.running";

/// With dynamic membership, a consumer that joins while the member a crash
/// left behind is still in the group can end up with only part of the
/// partitions for good (tansu 0.6 keeps the dead member's share; measured:
/// half of a 3-partition stream never consumed). When the previous run of
/// this data dir did not leave the group cleanly, wait until the broker has
/// evicted that member (its session timeout, plus margin) before joining.
async fn wait_out_a_dead_member(cfg: &Config) -> Result<PathBuf> {
    let marker = cfg.data_dir.join(MEMBER_MARKER);
    if !cfg.kafka.static_membership && marker.exists() {
        let wait = cfg.kafka.session_timeout() + Duration::from_secs(2);
        tracing::warn!(
            wait_s = wait.as_secs_f64(),
            marker = %marker.display(),
            "kafka: the previous run of this data dir did not leave its consumer group cleanly (crash or kill -9); waiting for the broker to evict that member before joining, so no partition stays assigned to it (static_membership = true avoids the wait)"
        );
        tokio::time::sleep(wait).await;
    }
    write_marker(&marker)?;
    Ok(marker)
}

fn write_marker(path: &Path) -> Result<()> {
    std::fs::write(path, format!("pid {}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))
}

impl KafkaIo {
    pub(crate) async fn start(cfg: &Config) -> Result<(KafkaIo, KafkaInput)> {
        let client_id = cfg
            .kafka
            .client_id
            .clone()
            .unwrap_or_else(|| cfg.origin().replace('/', "-"));
        let sink = Arc::new(
            KafkaSink::new(&cfg.kafka, &client_id).context("cannot create the Kafka producer")?,
        );
        sink.ensure_output_topics()
            .await
            .context("cannot create the Kafka output topics")?;
        let marker = wait_out_a_dead_member(cfg).await?;
        let (handle, batches) = KafkaSource::start(&cfg.kafka, &client_id)
            .context("cannot start the Kafka consumer")?;
        let handle = Arc::new(handle);
        Ok((
            KafkaIo {
                handle: handle.clone(),
                sink,
                marker,
            },
            KafkaInput {
                batches,
                handle,
                stop_check: None,
            },
        ))
    }

    /// A batch is durable in the ledger and its outputs are delivered: its
    /// offsets are committed. Returns the age of its oldest record at the
    /// commit (ms; `None` without timestamps).
    pub(crate) fn commit(
        &self,
        batch: &KafkaBatch,
        latency: Option<&std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    ) -> Result<Option<u64>> {
        let n = batch.timestamps_ms.len() as u64;
        let commit = tokio::task::block_in_place(|| self.handle.commit(batch))
            .context("cannot commit Kafka offsets")?;
        metrics::counter!("dunes_kafka_messages_total").increment(n);
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Some(h) = latency
            && let Ok(mut h) = h.lock()
        {
            for age in batch.ages_ms(now_ms) {
                let _ = h.record(age * 1000);
            }
        }
        let oldest_ms = batch.ages_ms(now_ms).max();
        tracing::debug!(
            records = n,
            commit_ms = commit.as_secs_f64() * 1e3,
            oldest_ms,
            "kafka batch committed"
        );
        Ok(oldest_ms)
    }

    /// A batch failed: its offsets must never be committed.
    pub(crate) fn abandon(&self) {
        self.handle.abandon();
    }

    /// Waits for the consumer thread (final commit, group left); the
    /// [`KafkaInput`] must be gone.
    pub(crate) fn join(self) {
        let KafkaIo { handle, marker, .. } = self;
        match Arc::try_unwrap(handle) {
            Ok(handle) => tokio::task::block_in_place(|| handle.join()),
            Err(_) => {
                tracing::error!("kafka: the consumer is still in use; not waiting for it");
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&marker) {
            tracing::warn!(error = %e, path = %marker.display(), "kafka: cannot remove the member marker (the next start will wait for a session timeout)");
        }
        tracing::info!("kafka: consumer stopped, offsets committed, group left");
    }
}
