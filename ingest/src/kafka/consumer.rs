//! The consumer: a poll thread that builds micro-batches and a handle that
//! commits them once they are durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::KafkaConfig;
use crate::{IngestError, RawRecord, SourcePos};

/// How long a revoke (rebalance or shutdown) waits for batches in flight.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// One micro-batch read from Kafka.
#[derive(Debug)]
pub struct KafkaBatch {
    /// The messages, in partition order.
    pub records: Vec<RawRecord>,
    /// Each record's Kafka timestamp (ms since the epoch; `None` if unset),
    /// parallel to `records`; latency is measured from it.
    pub timestamps_ms: Vec<Option<i64>>,
    /// Next offset to commit per (topic, partition).
    offsets: HashMap<(Arc<str>, i32), i64>,
    seq: u64,
}

impl KafkaBatch {
    /// Offsets this batch commits: (topic, partition) → next offset.
    pub fn offsets(&self) -> &HashMap<(Arc<str>, i32), i64> {
        &self.offsets
    }

    /// Each record's age at `now_ms` (ms since the epoch): the time since
    /// its Kafka timestamp, 0 for one in the future; records without a
    /// timestamp are left out.
    pub fn ages_ms(&self, now_ms: i64) -> impl Iterator<Item = u64> + '_ {
        self.timestamps_ms
            .iter()
            .flatten()
            .map(move |ts| (now_ms - ts).max(0) as u64)
    }
}

/// State shared by the poll thread, its rebalance callback and the handle.
struct Shared {
    cfg: KafkaConfig,
    stop: AtomicBool,
    /// The batch being built (the revoke callback flushes it).
    building: Mutex<Building>,
    flight: Mutex<Flight>,
    flight_cv: Condvar,
    tx: mpsc::Sender<KafkaBatch>,
}

#[derive(Default)]
struct Building {
    records: Vec<RawRecord>,
    timestamps_ms: Vec<Option<i64>>,
    offsets: HashMap<(Arc<str>, i32), i64>,
    started: Option<Instant>,
}

#[derive(Default)]
struct Flight {
    sent: u64,
    committed: u64,
    /// Durable (ledgered) next offsets, per (topic, partition).
    durable: HashMap<(Arc<str>, i32), i64>,
    /// The driver stopped taking batches (pipeline ended).
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Hands the batch being built to the pipeline (blocking while
    /// `max_in_flight` batches are outstanding: backpressure).
    fn flush(&self) -> bool {
        let b = std::mem::take(&mut *lock(&self.building));
        if b.records.is_empty() {
            return true;
        }
        let seq = {
            let mut f = lock(&self.flight);
            while !f.closed && f.sent - f.committed >= self.cfg.max_in_flight as u64 {
                f = self
                    .flight_cv
                    .wait_timeout(f, Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            if f.closed {
                return false;
            }
            f.sent += 1;
            f.sent
        };
        let batch = KafkaBatch {
            records: b.records,
            timestamps_ms: b.timestamps_ms,
            offsets: b.offsets,
            seq,
        };
        metrics::gauge!("dunes_kafka_batches_in_flight").increment(1.0);
        if self.tx.blocking_send(batch).is_err() {
            lock(&self.flight).closed = true;
            self.flight_cv.notify_all();
            return false;
        }
        true
    }

    /// Waits until every batch handed over is committed (or the driver is
    /// gone), at most `REVOKE_WAIT`.
    fn wait_drained(&self) {
        let deadline = Instant::now() + REVOKE_WAIT;
        let mut f = lock(&self.flight);
        while f.committed < f.sent && !f.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!(
                    in_flight = f.sent - f.committed,
                    "kafka: batches still in flight at revoke; their offsets stay uncommitted (they will be re-read and de-duplicated)"
                );
                return;
            }
            f = self
                .flight_cv
                .wait_timeout(f, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn durable_list(&self, only: Option<&TopicPartitionList>) -> KafkaResult<TopicPartitionList> {
        let f = lock(&self.flight);
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), off) in &f.durable {
            if let Some(only) = only
                && only.find_partition(topic, *partition).is_none()
            {
                continue;
            }
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*off))?;
        }
        Ok(tpl)
    }
}

/// librdkafka callbacks: rebalance handling and statistics.
pub struct SourceContext {
    shared: Arc<Shared>,
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "dunes_kafka_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => p.to_string()
                )
                .set(part.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                // Process what was read from the revoked partitions before
                // giving them up, so the next owner starts where we stopped.
                self.shared.flush();
                self.shared.wait_drained();
                match self.shared.durable_list(Some(revoked)) {
                    Ok(tpl) if tpl.count() > 0 => {
                        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                            tracing::warn!("kafka: commit on revoke failed: {e}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("kafka: cannot build the revoke commit: {e}"),
                }
                let mut f = lock(&self.shared.flight);
                for el in revoked.elements() {
                    f.durable.remove(&(Arc::from(el.topic()), el.partition()));
                }
                tracing::info!(partitions = revoked.count(), "kafka: partitions revoked");
            }
            Rebalance::Assign(assigned) => {
                tracing::info!(partitions = assigned.count(), "kafka: partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!("kafka: rebalance error: {e}"),
        }
    }
}

type Inner = BaseConsumer<SourceContext>;

/// The running consumer: the poll thread and the commit side.
pub struct KafkaSource;

/// Commits durable batches and stops the poll thread.
pub struct KafkaSourceHandle {
    shared: Arc<Shared>,
    consumer: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaSource {
    /// Subscribes and starts the poll thread. Batches arrive on the returned
    /// receiver; each must be passed to [`KafkaSourceHandle::commit`] once
    /// durable, in order.
    pub fn start(
        cfg: &KafkaConfig,
        client_id: &str,
    ) -> Result<(KafkaSourceHandle, mpsc::Receiver<KafkaBatch>), IngestError> {
        cfg.validate().map_err(IngestError::Kafka)?;
        let (tx, rx) = mpsc::channel(cfg.max_in_flight.max(1));
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            stop: AtomicBool::new(false),
            building: Mutex::new(Building::default()),
            flight: Mutex::new(Flight::default()),
            flight_cv: Condvar::new(),
            tx,
        });
        let consumer: Inner = cfg
            .consumer_config(client_id)
            .create_with_context(SourceContext {
                shared: shared.clone(),
            })
            .map_err(|e| IngestError::Kafka(format!("cannot create the consumer: {e}")))?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| IngestError::Kafka(format!("cannot subscribe to {topics:?}: {e}")))?;
        let consumer = Arc::new(consumer);
        let (c, s) = (consumer.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("kafka-poll".into())
            .spawn(move || poll_loop(&c, &s))
            .map_err(|e| IngestError::io("spawn the kafka poll thread", e))?;
        tracing::info!(brokers = %cfg.brokers, topics = ?cfg.topics, group = %cfg.group_id, "kafka: consumer started");
        Ok((
            KafkaSourceHandle {
                shared,
                consumer,
                thread: Some(thread),
            },
            rx,
        ))
    }
}

fn poll_loop(consumer: &Inner, shared: &Shared) {
    let timeout = Duration::from_millis(shared.cfg.batch_timeout_ms.max(1));
    let batch_size = shared.cfg.batch_size.max(1);
    // The last error logged, when, and how many repeats were not logged.
    let mut last_err: Option<(String, Instant, u64)> = None;
    // The records' topic name, shared while it stays the same.
    let mut topic_name: Arc<str> = Arc::from("");
    while !shared.stop.load(Ordering::Relaxed) {
        let wait = {
            let b = lock(&shared.building);
            match b.started {
                Some(t) => timeout.saturating_sub(t.elapsed()),
                None => Duration::from_millis(100),
            }
        };
        let full = match consumer.poll(wait.max(Duration::from_millis(1))) {
            Some(Ok(m)) => {
                if *topic_name != *m.topic() {
                    topic_name = Arc::from(m.topic());
                }
                let (partition, offset) = (m.partition(), m.offset());
                let mut b = lock(&shared.building);
                b.started.get_or_insert_with(Instant::now);
                let rec = RawRecord {
                    bytes: m
                        .payload()
                        .map(bytes::Bytes::copy_from_slice)
                        .unwrap_or_default(),
                    source: SourcePos::Kafka {
                        topic: topic_name.clone(),
                        partition,
                        offset,
                    },
                    oversize: None,
                    refused: None,
                };
                let ts = m.timestamp().to_millis();
                if shared.cfg.format == crate::InputFormat::Envelope {
                    b.records.push(rec);
                    b.timestamps_ms.push(ts);
                } else {
                    // A gateway line gives 0 (skipped), 1 or 2 envelopes.
                    for r in crate::gateway::adapt_records(shared.cfg.format, vec![rec]) {
                        b.records.push(r);
                        b.timestamps_ms.push(ts);
                    }
                }
                b.offsets
                    .insert((topic_name.clone(), partition), offset + 1);
                b.records.len() >= batch_size
            }
            Some(Err(e)) => {
                metrics::counter!("dunes_kafka_errors_total").increment(1);
                // librdkafka reports a broker outage on every poll: log a
                // repeated error every 10 s with its count, and back off
                // briefly instead of spinning.
                let msg = e.to_string();
                match &mut last_err {
                    Some((m, at, n)) if *m == msg && at.elapsed() < Duration::from_secs(10) => {
                        *n += 1;
                    }
                    _ => {
                        let repeats = last_err.as_ref().map_or(0, |(_, _, n)| *n);
                        tracing::warn!(repeats, "kafka: consumer error: {msg}");
                        last_err = Some((msg, Instant::now(), 0));
                    }
                }
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                false
            }
            None => false,
        };
        let due = {
            let b = lock(&shared.building);
            b.started.is_some_and(|t| t.elapsed() >= timeout)
        };
        if (full || due) && !shared.flush() {
            break;
        }
    }
    // Shutdown: hand over the last partial batch, wait until everything is
    // committed, and leave the group (which revokes and commits again).
    shared.flush();
    shared.wait_drained();
    if let Ok(tpl) = shared.durable_list(None)
        && tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
    {
        tracing::warn!("kafka: final commit failed: {e}");
    }
    consumer.unsubscribe();
}

impl KafkaSourceHandle {
    /// Commits `batch` (synchronously; call it only once the batch and its
    /// outputs are durable). Returns the commit latency.
    pub fn commit(&self, batch: &KafkaBatch) -> Result<Duration, IngestError> {
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), off) in &batch.offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*off))
                .map_err(|e| IngestError::Kafka(format!("bad offset {topic}/{partition}: {e}")))?;
        }
        {
            let mut f = lock(&self.shared.flight);
            for (tp, off) in &batch.offsets {
                let e = f.durable.entry(tp.clone()).or_insert(*off);
                *e = (*e).max(*off);
            }
        }
        let result = if tpl.count() > 0 {
            self.consumer.commit(&tpl, CommitMode::Sync)
        } else {
            Ok(())
        };
        {
            let mut f = lock(&self.shared.flight);
            f.committed = f.committed.max(batch.seq);
        }
        self.shared.flight_cv.notify_all();
        metrics::gauge!("dunes_kafka_batches_in_flight").decrement(1.0);
        let took = started.elapsed();
        metrics::histogram!("dunes_kafka_commit_seconds").record(took.as_secs_f64());
        match result {
            Ok(()) => Ok(took),
            // The partition may have moved to another instance during a
            // rebalance: the batch is ledgered, the new owner re-reads it from
            // the last commit, and de-duplication keeps the ledger exact.
            Err(e) => {
                metrics::counter!("dunes_kafka_commit_failures_total").increment(1);
                tracing::warn!(
                    "kafka: commit failed (batch is ledgered; the range will be re-read and de-duplicated): {e}"
                );
                Ok(took)
            }
        }
    }

    /// Marks a batch that will never be committed (the pipeline failed): it
    /// stays uncommitted and is re-read after a restart.
    pub fn abandon(&self) {
        lock(&self.shared.flight).closed = true;
        self.shared.flight_cv.notify_all();
    }

    /// Stops polling, hands over the last partial batch and waits for the
    /// poll thread to commit and leave the group. The caller must keep
    /// committing batches from the receiver until it is closed.
    pub fn request_stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the poll thread has exited (after a stop request it exits
    /// once its last batch is committed).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Joins the poll thread (after [`request_stop`](Self::request_stop) and
    /// once the receiver is drained).
    pub fn join(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.abandon();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KafkaSourceHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        lock(&self.shared.flight).closed = true;
        self.shared.flight_cv.notify_all();
    }
}

/// The offsets `group` has committed on partitions `0..partitions` of
/// `topic` (`None` where nothing is committed), read from the group
/// coordinator without joining the group. For benches, tests and tooling.
pub fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<Option<i64>>, IngestError> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .map_err(|e| IngestError::Kafka(format!("cannot create an offset reader: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, timeout)
        .map_err(|e| IngestError::Kafka(format!("cannot read committed offsets: {e}")))?;
    Ok((0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect())
}
