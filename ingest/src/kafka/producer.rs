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
        let topics = self.cfg.output_topics();
        if !self.cfg.create_output_topics || topics.is_empty() {
            return Ok(());
        }
        self.create_topics(&topics, self.cfg.output_partitions.max(1))
            .await
    }

    /// Creates `topics` with `partitions` partitions each, unless they exist.
    pub async fn create_topics(
        &self,
        topics: &[String],
        partitions: i32,
    ) -> Result<(), IngestError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;

        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .create()
            .map_err(|e| IngestError::Kafka(format!("cannot create the admin client: {e}")))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout()));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| IngestError::Kafka(format!("cannot create topics {topics:?}: {e}")))?;
        for r in results {
            match r {
                Ok(t) => tracing::info!(topic = %t, "kafka: created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => {
                    return Err(IngestError::Kafka(format!("cannot create topic {t}: {e}")));
                }
            }
        }
        Ok(())
    }

    /// The newest message of partition 0 of `topic` (key and payload), or `None` when the
    /// partition is empty. Blocking; used to resume publishing where it stopped.
    pub fn last_message(&self, topic: &str) -> Result<Option<OutputMessage>, IngestError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Message, Offset, TopicPartitionList};

        let kafka = |what: &str, e: rdkafka::error::KafkaError| {
            IngestError::Kafka(format!("{what} of {topic}: {e}"))
        };
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .set("group.id", "dunes-last-message")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| kafka("cannot create a consumer", e))?;
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, self.timeout())
            .map_err(|e| kafka("cannot read the offsets", e))?;
        if high <= low {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(high - 1))
            .map_err(|e| kafka("cannot seek", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| kafka("cannot assign partition 0", e))?;
        let deadline = std::time::Instant::now() + self.timeout();
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    return Ok(Some(OutputMessage {
                        key: m
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .unwrap_or_default(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    }));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(kafka("cannot read the last message", e)),
            }
        }
        Err(IngestError::Kafka(format!(
            "no message read at offset {} of {topic} within {:?}",
            high - 1,
            self.timeout()
        )))
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

    /// Sends OCSF findings to the OCSF topic (if enabled).
    pub async fn send_findings(&self, msgs: &[OutputMessage]) -> Result<usize, IngestError> {
        self.send_all(&self.cfg.ocsf_topic, msgs).await
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

    /// Produces one message to `topic` and waits for its delivery.
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
