//! `[kafka]` in `dunes.toml`.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Kafka input and outputs. Disabled by default (the embedded default reads
/// files, stdin and HTTP).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Consume from Kafka in `dunes run`.
    pub enabled: bool,
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topics carrying one MCP log envelope per message value.
    pub topics: Vec<String>,
    /// What the message values are: `envelope` (default), or one gateway access-log line
    /// per message (`agentgateway`, `tyk`; `docs/schema.md#gateway-logs`).
    pub format: crate::InputFormat,
    /// Consumer group; instances with the same group share partitions.
    pub group_id: String,
    /// `client.id` (defaults to the ledger origin's instance name).
    pub client_id: Option<String>,
    /// Static group membership (KIP-345, off by default): `group.instance.id`
    /// is the client id, so a restarted instance takes back the partitions it
    /// had, which its ledger, de-duplication window and detection state
    /// belong to, without a rebalance. Instances in one group must then have distinct
    /// client ids (distinct ledger origins); a duplicate is fenced by the
    /// broker. A static member that does not come back is evicted after
    /// `session.timeout.ms` on Apache Kafka (see docs/operations.md for tansu).
    pub static_membership: bool,
    /// Most messages per micro-batch.
    pub batch_size: usize,
    /// A partly filled batch is handed over after this many milliseconds.
    pub batch_timeout_ms: u64,
    /// Batches decoded but not yet committed; the poll thread blocks beyond
    /// this (backpressure), with librdkafka's own fetch queue bounded by
    /// `queued.max.messages.kbytes`.
    pub max_in_flight: usize,
    /// Dead-letter topic; `{topic}` is replaced by the source topic. Empty
    /// disables it (rejected records still go to the dead-letter file).
    pub dlq_topic: String,
    /// Level 1 and Level 3 responses; empty disables.
    pub responses_topic: String,
    /// Incidents; empty disables.
    pub incidents_topic: String,
    /// Incident changes as OCSF Detection Findings (class 2004); empty
    /// (the default) disables.
    pub ocsf_topic: String,
    /// Where a group without committed offsets starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Extra librdkafka consumer settings (override the tuned defaults).
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka producer settings.
    pub producer: BTreeMap<String, String>,
    /// Create missing output topics (dead-letter, incidents, responses) on
    /// start, with `output_partitions` partitions.
    pub create_output_topics: bool,
    /// Partitions of output topics Dunes creates.
    pub output_partitions: i32,
    /// How long to wait for output deliveries and commits before the batch
    /// is treated as failed (the pipeline stops; nothing is committed).
    pub delivery_timeout_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            enabled: false,
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["mcp.logs".into()],
            format: crate::InputFormat::Envelope,
            group_id: "dunes".into(),
            client_id: None,
            static_membership: false,
            batch_size: 4096,
            batch_timeout_ms: 50,
            max_in_flight: 2,
            dlq_topic: "{topic}.dlq".into(),
            responses_topic: "dunes.responses".into(),
            incidents_topic: "dunes.incidents".into(),
            ocsf_topic: String::new(),
            auto_offset_reset: "earliest".into(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            delivery_timeout_ms: 30_000,
            create_output_topics: true,
            output_partitions: 1,
        }
    }
}

impl KafkaConfig {
    /// Checks what librdkafka would only report at runtime.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err("kafka.topics must name at least one non-empty topic".into());
        }
        if self.group_id.trim().is_empty() {
            return Err("kafka.group_id is empty".into());
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(format!(
                "kafka.auto_offset_reset must be \"earliest\" or \"latest\", not {:?}",
                self.auto_offset_reset
            ));
        }
        if self.batch_size == 0 || self.max_in_flight == 0 {
            return Err("kafka.batch_size and kafka.max_in_flight must be at least 1".into());
        }
        Ok(())
    }

    /// The dead-letter topic for records read from `topic`, if enabled.
    pub fn dlq_for(&self, topic: &str) -> Option<String> {
        (!self.dlq_topic.is_empty()).then(|| self.dlq_topic.replace("{topic}", topic))
    }

    /// Every output topic this configuration produces to.
    pub fn output_topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.topics.iter().filter_map(|t| self.dlq_for(t)).collect();
        for o in [
            &self.incidents_topic,
            &self.responses_topic,
            &self.ocsf_topic,
        ] {
            if !o.is_empty() {
                t.push(o.clone());
            }
        }
        t.sort();
        t.dedup();
        t
    }

    /// The consumer's `session.timeout.ms` (10 s unless `[kafka.consumer]`
    /// overrides it): how long the broker waits before evicting a silent member.
    pub fn session_timeout(&self) -> std::time::Duration {
        let ms = self
            .consumer
            .get("session.timeout.ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(10_000);
        std::time::Duration::from_millis(ms)
    }

    /// Consumer settings: manual commits, tuned fetching, then the user's
    /// overrides.
    ///
    /// - `enable.auto.commit=false`, `enable.auto.offset.store=false`: offsets
    ///   are committed explicitly after the ledger fsync.
    /// - `fetch.queue.backoff.ms=10` (librdkafka's default 1000 ms stalls a
    ///   partition whose local queue filled up), `queued.min.messages=20000`
    ///   and `fetch.min.bytes=1` with `fetch.wait.max.ms=20`: keep the local
    ///   queue full under load without adding latency when idle.
    /// - `queued.max.messages.kbytes=65536`: bounded prefetch memory.
    /// - `statistics.interval.ms=1000`: consumer lag for `/metrics`.
    /// - `group.instance.id=<client id>` with `static_membership`.
    pub fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("enable.partition.eof", "false")
            .set("fetch.queue.backoff.ms", "10")
            .set("queued.min.messages", "20000")
            .set("queued.max.messages.kbytes", "65536")
            .set("fetch.min.bytes", "1")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", "1000");
        if self.static_membership {
            c.set("group.instance.id", client_id);
        }
        for (k, v) in &self.consumer {
            c.set(k, v);
        }
        c
    }

    /// Producer settings for the output topics: acks=all, short linger.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string());
        for (k, v) in &self.producer {
            c.set(k, v);
        }
        c
    }
}

/// What [`probe`] found: the brokers and, per configured input topic, its
/// partition count (`None`: the broker does not know it).
#[derive(Debug)]
pub struct Probe {
    pub brokers: Vec<String>,
    pub topics: Vec<(String, Option<usize>)>,
}

/// Asks the cluster for its metadata within `timeout` (a reachability check
/// for `dunes doctor`).
pub fn probe(cfg: &KafkaConfig, timeout: std::time::Duration) -> Result<Probe, crate::IngestError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", "dunes-doctor")
        .set("socket.connection.setup.timeout.ms", "3000")
        .create()
        .map_err(|e| crate::IngestError::Kafka(format!("cannot create a client: {e}")))?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| crate::IngestError::Kafka(format!("no metadata from {}: {e}", cfg.brokers)))?;
    let brokers = md
        .brokers()
        .iter()
        .map(|b| format!("{}:{} (id {})", b.host(), b.port(), b.id()))
        .collect();
    let topics = cfg
        .topics
        .iter()
        .map(|t| {
            let n = md
                .topics()
                .iter()
                .find(|m| m.name() == t && m.error().is_none())
                .map(|m| m.partitions().len());
            (t.clone(), n)
        })
        .collect();
    Ok(Probe { brokers, topics })
}
