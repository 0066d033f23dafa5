//! The producer: dead-letter, incidents and responses topics. Every send
//! of a batch is awaited before the batch's offsets are committed.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaConfig;
use crate::{IngestError, Rejected, SourcePos};

/// One message for an output topic.
#[derive(Clone, Debug)]
pub struct OutputMessage {
    /// Message key (incident or response id).
    pub key: String,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// The output side.
pub struct KafkaSink {
    producer: FutureProducer,
    cfg: KafkaConfig,
}

impl KafkaSink {
    /// Creates the producer (connections are made lazily).
    pub fn new(cfg: &KafkaConfig, client_id: &str) -> Result<Self, IngestError> {
        let producer: FutureProducer = cfg
            .producer_config(client_id)
            .create()
            .map_err(|e| IngestError::Kafka(format!("cannot create the producer: {e}")))?;
        Ok(KafkaSink {
            producer,
            cfg: cfg.clone(),
        })
    }

    /// Creates the output topics that do not exist yet (when
    /// `create_output_topics` is set).
    pub async fn ensure_output_topics(&self) -> Result<(), IngestError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;

        let topics = self.cfg.output_topics();
        if !self.cfg.create_output_topics || topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .create()
            .map_err(|e| IngestError::Kafka(format!("cannot create the admin client: {e}")))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.cfg.output_partitions.max(1),
                    TopicReplication::Fixed(1),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout()));
        let results = admin.create_topics(&new, &opts).await.map_err(|e| {
            IngestError::Kafka(format!("cannot create output topics {topics:?}: {e}"))
        })?;
        for r in results {
            match r {
                Ok(t) => tracing::info!(topic = %t, "kafka: created output topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => {
                    return Err(IngestError::Kafka(format!(
                        "cannot create output topic {t}: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.delivery_timeout_ms)
    }

    /// Sends rejected Kafka records to `<topic>.dlq` with headers
    /// `dunes-reason`, `dunes-topic`, `dunes-partition`, `dunes-offset`; waits
    /// for every delivery. Records from other sources are skipped (they are
    /// in the dead-letter file). Returns how many were sent.
    pub async fn send_dead_letters(&self, rejected: &[Rejected]) -> Result<usize, IngestError> {
        let mut sends = Vec::new();
        for r in rejected {
            let SourcePos::Kafka {
                topic,
                partition,
                offset,
            } = &r.source
            else {
                continue;
            };
            let Some(dlq) = self.cfg.dlq_for(topic) else {
                continue;
            };
            let (partition, offset) = (partition.to_string(), offset.to_string());
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "dunes-reason",
                    value: Some(r.reason.as_bytes()),
                })
                .insert(Header {
                    key: "dunes-topic",
                    value: Some(topic.as_bytes()),
                })
                .insert(Header {
                    key: "dunes-partition",
                    value: Some(partition.as_bytes()),
                })
                .insert(Header {
                    key: "dunes-offset",
                    value: Some(offset.as_bytes()),
                });
            let key = format!("{topic}/{partition}/{offset}");
            sends.push(self.deliver(dlq, key, &r.raw, Some(headers)));
        }
        let n = sends.len();
        try_join_all(sends).await?;
        metrics::counter!("dunes_kafka_dead_letters_total").increment(n as u64);
        Ok(n)
    }

    /// Sends incidents to the incidents topic (if enabled).
    pub async fn send_incidents(&self, msgs: &[OutputMessage]) -> Result<usize, IngestError> {
        self.send_all(&self.cfg.incidents_topic, msgs).await
    }

    /// Sends responses to the responses topic (if enabled).
    pub async fn send_responses(&self, msgs: &[OutputMessage]) -> Result<usize, IngestError> {
        self.send_all(&self.cfg.responses_topic, msgs).await
    }

    async fn send_all(&self, topic: &str, msgs: &[OutputMessage]) -> Result<usize, IngestError> {
        if topic.is_empty() || msgs.is_empty() {
            return Ok(0);
        }
        let sends = msgs
            .iter()
            .map(|m| self.deliver(topic.to_string(), m.key.clone(), &m.payload, None));
        try_join_all(sends).await?;
        Ok(msgs.len())
    }

    async fn deliver(
        &self,
        topic: String,
        key: String,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), IngestError> {
        let mut record = FutureRecord::to(&topic).key(key.as_str()).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        self.producer
            .send(record, self.timeout())
            .await
            .map(|_| ())
            .map_err(|(e, _)| IngestError::Kafka(format!("delivery to {topic} failed: {e}")))
    }

    /// Produces raw payloads to `topic` (benchmarks and tests).
    pub async fn send_raw(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(), IngestError> {
        self.deliver(topic.to_string(), key.to_string(), payload, None)
            .await
    }
}
