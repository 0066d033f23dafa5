//! `dunes bench`: throughput and latency of the full pipeline (normalise,
//! detect, ledger with fsync per batch, outputs) over simulated traffic.
//!
//! Latency is measured per micro-batch, from the moment the batch is handed
//! to the pipeline until its events, incidents and responses are durably in
//! the ledger; every event in a batch waits at most that long (plus batch
//! fill time, bounded by `batch_timeout_ms` in `run`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dunes_detect::IncidentStore;
use dunes_ingest::{InputFormat, RawRecord, gateway};
use hdrhistogram::Histogram;

use dunes_pipeline::Config;
use dunes_pipeline::Pipeline;

/// What the pipeline bench feeds.
pub struct Traffic {
    pub sessions: u64,
    pub seed: u64,
    /// Envelopes per batch.
    pub batch_size: usize,
    /// Stateless MCP (2026-07-28): no session ids, stitched.
    pub stateless: bool,
    /// OTLP/JSON log exports (64 envelopes each), decoded and mapped in the measured time.
    pub otlp: bool,
    /// Recorded NDJSON envelopes instead of the simulator.
    pub input: Option<std::path::PathBuf>,
}

pub async fn run(mut cfg: Config, traffic: Traffic) -> anyhow::Result<()> {
    let Traffic {
        sessions,
        seed,
        batch_size,
        stateless,
        otlp,
        input,
    } = traffic;
    let tmp = std::env::temp_dir().join(format!("dunes-bench-{}", std::process::id()));
    if cfg.data_dir == Config::default().data_dir {
        cfg.data_dir = tmp.clone();
    }
    std::fs::create_dir_all(&cfg.data_dir)?;
    let sim = dunes_sim::SimConfig {
        sessions,
        seed,
        stateless,
        ..dunes_sim::SimConfig::default()
    };
    let t0 = Instant::now();
    let mut lines: Vec<String> = match &input {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        }
        None => dunes_sim::Simulator::new(sim).collect(),
    };
    let envelopes = lines.len();
    // Records per batch: envelopes, or export requests of 64 envelopes.
    let mut per_batch = batch_size.max(1);
    let format = if otlp {
        lines = dunes_sim::otlp_lines(lines.into_iter()).collect();
        per_batch = per_batch.div_ceil(dunes_sim::OTLP_RECORDS_PER_REQUEST);
        InputFormat::Otlp
    } else {
        InputFormat::Envelope
    };
    let bytes: usize = lines.iter().map(String::len).sum();
    let origin = match &input {
        Some(path) => format!("read from {}", path.display()),
        None => format!(
            "generated from {sessions} sessions (seed {seed}{})",
            if stateless { ", stateless" } else { "" }
        ),
    };
    eprintln!(
        "{envelopes} envelopes{} ({:.1} MiB) {origin} in {:.2}s",
        if otlp {
            " as OTLP/JSON log exports"
        } else {
            ""
        },
        bytes as f64 / (1024.0 * 1024.0),
        t0.elapsed().as_secs_f64()
    );
    let store = Arc::new(IncidentStore::new());
    let mut pipeline = Pipeline::open(&cfg, store, None).await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let started = Instant::now();
    let mut line_no = 0u64;
    let mut iter = lines.into_iter();
    loop {
        let batch: Vec<RawRecord> = iter
            .by_ref()
            .take(per_batch)
            .map(|l| {
                line_no += 1;
                RawRecord::file_line(l.into_bytes(), "bench", line_no)
            })
            .collect();
        if batch.is_empty() {
            break;
        }
        let t = Instant::now();
        pipeline
            .process(gateway::adapt_records(format, batch))
            .await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)
            .context("histogram")?;
    }
    let elapsed = started.elapsed();
    let rules = pipeline.rule_count();
    let costs = pipeline.rule_costs();
    let prefilter = pipeline.regex_prefilter_stats();
    let (stats, _) = pipeline.close()?;
    let eps = stats.envelopes as f64 / elapsed.as_secs_f64();
    println!(
        "dunes bench: {envelopes} envelopes {origin}, batch size {batch_size}, {rules} rules, input {format}"
    );
    println!(
        "  events: {}  rejected: {}  incidents: {}  elapsed: {:.2}s",
        stats.envelopes,
        stats.rejected,
        stats.incidents,
        elapsed.as_secs_f64()
    );
    println!("  throughput: {eps:.0} events/s");
    let (p50, p99, max) = percentiles_ms(&hist);
    println!(
        "  batch latency (ms): p50 {p50:.2}  p99 {p99:.2}  max {max:.2}  ({} batches)",
        hist.len()
    );
    println!(
        "  time per stage:{}",
        phase_split(&stats.time, stats.envelopes)
    );
    println!("  costliest rules:{}", costliest_rules(costs, 10));
    println!(
        "  regex prefilter: rows skipped {}, rows run {}, column scans {} (+{} reused; {} rows copied from an equal row), {} patterns, {} automata built",
        prefilter.rows_skipped,
        prefilter.rows_run,
        prefilter.scans,
        prefilter.scans_reused,
        prefilter.rows_copied,
        prefilter.patterns,
        prefilter.automata_built
    );
    if cfg.data_dir == tmp {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// `dunes bench kafka`: produce simulated envelopes to a fresh topic on a
/// real broker and run the `dunes run` pipeline (consumer, ledger fsync,
/// commit) over it; latency is from each message's produce timestamp to the
/// commit of its batch (after the ledger fsync).
pub struct KafkaBench {
    pub brokers: String,
    pub sessions: u64,
    pub seed: u64,
    pub partitions: i32,
    /// Messages per second to produce; 0 = as fast as possible.
    pub rate: u64,
    pub batch_size: usize,
    /// Produce everything first, then consume the backlog.
    pub preproduced: bool,
    /// Consume with the Kafka source alone (no pipeline): from the backlog
    /// with `preproduced`, else beside the producer.
    pub source_only: bool,
}

pub async fn run_kafka(mut cfg: Config, b: KafkaBench) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let tag = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let tmp = std::env::temp_dir().join(format!("dunes-bench-kafka-{tag}"));
    if cfg.data_dir == Config::default().data_dir {
        cfg.data_dir = tmp.clone();
    }
    let topic = format!("dunes-bench-{tag}");
    let lines: Vec<String> = dunes_sim::Simulator::new(dunes_sim::SimConfig {
        sessions: b.sessions,
        seed: b.seed,
        ..dunes_sim::SimConfig::default()
    })
    .collect();
    let n = lines.len() as u64;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b.brokers)
        .create()
        .context("cannot create the Kafka admin client")?;
    let res = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                b.partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("cannot create topic {topic} on {}", b.brokers))?;
    for r in res {
        if let Err((t, e)) = r {
            anyhow::bail!("cannot create topic {t}: {e}");
        }
    }
    cfg.http.enabled = false;
    cfg.ingest.files.clear();
    cfg.ingest.stdin = false;
    cfg.kafka.enabled = true;
    cfg.kafka.brokers = b.brokers.clone();
    cfg.kafka.topics = vec![topic.clone()];
    cfg.kafka.group_id = format!("dunes-bench-{tag}");
    cfg.kafka.batch_size = b.batch_size.max(1);
    // Only the consumer path is measured: outputs go to topics that exist.
    cfg.kafka.dlq_topic.clear();
    cfg.kafka.incidents_topic.clear();
    cfg.kafka.responses_topic.clear();

    eprintln!(
        "producing {n} envelopes from {} sessions to {topic} ({} partitions){}",
        b.sessions,
        b.partitions,
        if b.rate > 0 {
            format!(" at {} msg/s", b.rate)
        } else {
            " as fast as possible".into()
        }
    );
    let brokers = b.brokers.clone();
    let ptopic = topic.clone();
    let pgroup = cfg.kafka.group_id.clone();
    let rate = b.rate;
    let partitions = b.partitions;
    let preproduced = if b.preproduced {
        let t = Instant::now();
        tokio::task::block_in_place(|| produce_all(&b.brokers, &topic, &lines))?;
        let took = t.elapsed();
        eprintln!(
            "produced {n} envelopes in {:.2}s; consuming the backlog",
            took.as_secs_f64()
        );
        Some(took)
    } else {
        None
    };
    // Without --preproduced, the producer runs beside the pipeline.
    let producer = preproduced.is_none().then(|| {
        std::thread::spawn(move || produce(&brokers, &ptopic, &pgroup, partitions, lines, rate))
    });

    let hist = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?,
    ));
    let measured = if b.source_only {
        source_only(&cfg, &b, n, producer, &hist).await
    } else {
        through_pipeline(&cfg, &b, n, producer, preproduced, &hist).await
    };
    if cfg.data_dir == tmp {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
    measured
}

/// The producer thread beside the consumer: when its first record after
/// the group join was sent, and how long producing took.
type Producer = std::thread::JoinHandle<anyhow::Result<(Instant, Duration)>>;

fn join_producer(p: Producer) -> anyhow::Result<(Instant, Duration)> {
    p.join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))?
}

/// `--source-only`: the Kafka source alone consumes the `n` envelopes.
async fn source_only(
    cfg: &Config,
    b: &KafkaBench,
    n: u64,
    producer: Option<Producer>,
    hist: &std::sync::Mutex<Histogram<u64>>,
) -> anyhow::Result<()> {
    let run = consume_only(&cfg.kafka, n, hist).await?;
    let done = Instant::now();
    let main_started = producer.map(join_producer).transpose()?.map(|(t, _)| t);
    println!(
        "dunes bench kafka --source-only: {n} envelopes, {} partitions, batch size {}, broker {}",
        b.partitions, b.batch_size, b.brokers
    );
    // From the first batch on, the group join is out of the figure.
    let steady = if run.after_first > 0 {
        format!(
            "; after the first batch: {:.0} events/s",
            run.after_first as f64 / run.from_first.as_secs_f64().max(1e-9)
        )
    } else {
        String::new()
    };
    println!(
        "  consumed and committed in {:.2}s incl. start-up and group join: {:.0} events/s{steady}",
        run.elapsed.as_secs_f64(),
        n as f64 / run.elapsed.as_secs_f64().max(1e-9),
    );
    if let Some(started) = main_started {
        println!(
            "  throughput end to end: {:.0} events/s (from the first produced record after the group joined to the last committed)",
            n.saturating_sub(1) as f64
                / done
                    .saturating_duration_since(started)
                    .as_secs_f64()
                    .max(1e-9)
        );
        let (p50, p99, max) = shared_percentiles_ms(hist)?;
        println!("  produce->commit latency (ms): p50 {p50:.1}  p99 {p99:.1}  max {max:.1}");
    }
    if let Some(s) = run.cpu_seconds {
        println!(
            "  this process used {s:.2}s of CPU ({:.1} µs per event{}); the broker's is not counted",
            s * 1e6 / n.max(1) as f64,
            if b.preproduced {
                ""
            } else {
                ", its producer included"
            }
        );
    }
    Ok(())
}

/// The `dunes run` pipeline consumes the `n` envelopes.
async fn through_pipeline(
    cfg: &Config,
    b: &KafkaBench,
    n: u64,
    producer: Option<Producer>,
    preproduced: Option<Duration>,
    hist: &Arc<std::sync::Mutex<Histogram<u64>>>,
) -> anyhow::Result<()> {
    let opts = dunes_pipeline::DriveOptions {
        stop_after: Some(n),
        kafka_latency: Some(hist.clone()),
        ..dunes_pipeline::DriveOptions::run()
    };
    let out = dunes_pipeline::drive(cfg, opts).await?;
    let done = Instant::now();
    let (main_started, produced) = match (producer, preproduced) {
        (Some(p), _) => join_producer(p)?,
        (None, took) => (done, took.unwrap_or_default()),
    };
    let steady = done.saturating_duration_since(main_started);
    let s = &out.stats;
    let (p50, p99, max) = shared_percentiles_ms(hist)?;
    println!(
        "dunes bench kafka: {n} envelopes, {} partitions, batch size {}, broker {}",
        b.partitions, b.batch_size, b.brokers
    );
    println!(
        "  produced in {:.2}s ({:.0} msg/s); ledgered {} (rejected {}, duplicates {}) in {:.2}s incl. start-up and group join",
        produced.as_secs_f64(),
        n as f64 / produced.as_secs_f64(),
        s.envelopes,
        s.rejected,
        s.duplicates,
        out.elapsed.as_secs_f64()
    );
    if b.preproduced {
        println!(
            "  throughput consuming the backlog: {:.0} events/s (from the pipeline's start, group join included, to the last ledgered)",
            n as f64 / out.elapsed.as_secs_f64().max(1e-9)
        );
    } else {
        println!(
            "  throughput end to end: {:.0} events/s (from the first produced record after the group joined to the last ledgered)",
            n.saturating_sub(1) as f64 / steady.as_secs_f64().max(1e-9)
        );
    }
    println!("  produce->ledger latency (ms): p50 {p50:.1}  p99 {p99:.1}  max {max:.1}");
    println!(
        "  pipeline time per stage:{}",
        phase_split(&s.time, s.envelopes)
    );
    Ok(())
}

/// p50, p99 and max of a histogram of µs, in ms.
pub(crate) fn percentiles_ms(h: &Histogram<u64>) -> (f64, f64, f64) {
    let ms = |us: u64| us as f64 / 1000.0;
    (
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}

/// [`percentiles_ms`] of a histogram shared with the pipeline.
fn shared_percentiles_ms(
    hist: &std::sync::Mutex<Histogram<u64>>,
) -> anyhow::Result<(f64, f64, f64)> {
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    Ok(percentiles_ms(&h))
}

/// What consuming with the Kafka source alone took.
struct SourceRun {
    elapsed: Duration,
    /// Events after the first batch, and the time from its arrival to the
    /// last commit.
    after_first: u64,
    from_first: Duration,
    /// User + system CPU of this process over the run (Unix only).
    cpu_seconds: Option<f64>,
}

/// Consumes `n` records with the Kafka source `dunes run` uses, committing
/// each batch as it arrives: no decoding, detection or ledger. Records each
/// record's produce→commit latency (µs, at ms resolution) in `hist`.
async fn consume_only(
    kcfg: &dunes_ingest::kafka::KafkaConfig,
    n: u64,
    hist: &std::sync::Mutex<Histogram<u64>>,
) -> anyhow::Result<SourceRun> {
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    let (handle, mut rx) = dunes_ingest::kafka::KafkaSource::start(kcfg, "dunes-bench-source")
        .context("cannot start the Kafka source")?;
    let mut got = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    while got < n {
        let batch = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no batch for 120 s after {got} of {n} records"))?
            .ok_or_else(|| {
                anyhow::anyhow!("the Kafka source stopped after {got} of {n} records")
            })?;
        got += batch.records.len() as u64;
        first.get_or_insert((Instant::now(), got));
        tokio::task::block_in_place(|| handle.commit(&batch)).context("commit")?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
        for age in batch.ages_ms(now_ms) {
            let _ = h.record(age * 1000);
        }
    }
    let elapsed = started.elapsed();
    let cpu_seconds = process_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    handle.request_stop();
    tokio::task::block_in_place(|| handle.join());
    let (t1, n1) = first.unwrap_or((started, 0));
    Ok(SourceRun {
        elapsed,
        after_first: got - n1,
        from_first: t1.elapsed().min(elapsed),
        cpu_seconds,
    })
}

/// User + system CPU time of this process so far.
#[cfg(unix)]
fn process_cpu_seconds() -> Option<f64> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(ru.ru_utime) + secs(ru.ru_stime))
}

#[cfg(not(unix))]
fn process_cpu_seconds() -> Option<f64> {
    None
}

/// The `n` rules that took the most time (plan execution plus state), with
/// their share of all rules' time.
fn costliest_rules(mut costs: Vec<dunes_detect::RuleCost>, n: usize) -> String {
    let total = |c: &dunes_detect::RuleCost| c.plan_seconds + c.state_seconds;
    let all: f64 = costs.iter().map(total).sum();
    costs.sort_by(|a, b| {
        total(b)
            .total_cmp(&total(a))
            .then(a.rule_id.cmp(&b.rule_id))
    });
    let mut out = format!(" (all rules {all:.2}s: plan execution, wall time of its task, + state)");
    for c in costs.iter().take(n) {
        out.push_str(&format!(
            "\n    {:<44} {:>6.2}s  {:>5.1}%  plan {:.2}s  state {:.2}s  rows {}",
            c.rule_id,
            total(c),
            100.0 * total(c) / all.max(1e-9),
            c.plan_seconds,
            c.state_seconds,
            c.rows
        ));
    }
    out
}

/// Where the pipeline's time went: per stage its share of the total, its
/// seconds and the events/s it alone would sustain (events / its time).
fn phase_split(t: &dunes_pipeline::PhaseTimes, events: u64) -> String {
    let stages = [
        ("normalise", t.normalize_us),
        ("detect", t.detect_us),
        ("ledger+fsync", t.ledger_us),
        ("state", t.state_us),
        ("history", t.history_us),
        ("outputs", t.outputs_us),
    ];
    let total = stages.iter().map(|s| s.1).sum::<u64>().max(1) as f64;
    stages
        .iter()
        .map(|(name, us)| {
            let eps = events as f64 / (*us).max(1) as f64 * 1e6;
            format!(
                "\n    {name:<13} {:>5.1}%  {:>8.2}s  {:>12.0} events/s",
                100.0 * *us as f64 / total,
                *us as f64 / 1e6,
                eps
            )
        })
        .collect()
}

/// The bench's producer: small linger, a deep local queue.
fn bench_producer(
    brokers: &str,
) -> anyhow::Result<rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>>
{
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the producer")
}

/// Sends one record, waiting while the local queue is full.
fn send_line(
    p: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    line: &str,
) -> anyhow::Result<()> {
    let mut rec = rdkafka::producer::BaseRecord::<str, str>::to(topic).payload(line);
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, back)) => {
                if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                    anyhow::bail!("produce failed: {e}");
                }
                rec = back;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

/// Produces every line as fast as possible and waits for delivery.
fn produce_all(brokers: &str, topic: &str, lines: &[String]) -> anyhow::Result<()> {
    use rdkafka::producer::Producer;
    let p = bench_producer(brokers)?;
    for line in lines {
        send_line(&p, topic, line)?;
    }
    p.flush(std::time::Duration::from_secs(120))
        .context("producer flush")
}

/// Produces `lines[0]` as a primer and waits until the consumer group has
/// committed it (so the group join is not measured), then the rest at
/// `rate` messages/s (0 = as fast as possible). Returns when the main part
/// started and how long it took.
fn produce(
    brokers: &str,
    topic: &str,
    group: &str,
    partitions: i32,
    lines: Vec<String>,
    rate: u64,
) -> anyhow::Result<(Instant, std::time::Duration)> {
    use rdkafka::producer::{BaseRecord, Producer};

    let p = bench_producer(brokers)?;
    let Some((primer, rest)) = lines.split_first() else {
        return Ok((Instant::now(), std::time::Duration::ZERO));
    };
    p.send(BaseRecord::<str, str>::to(topic).payload(primer.as_str()))
        .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    p.flush(std::time::Duration::from_secs(30))
        .context("producer flush")?;
    let waiting = Instant::now();
    loop {
        let committed: i64 = dunes_ingest::kafka::committed_offsets(
            brokers,
            group,
            topic,
            partitions,
            std::time::Duration::from_secs(5),
        )
        .map(|got| got.into_iter().map(|o| o.unwrap_or(0)).sum())
        .unwrap_or(0);
        if committed >= 1 {
            break;
        }
        if waiting.elapsed() > std::time::Duration::from_secs(120) {
            anyhow::bail!("the consumer group did not commit the primer record within 120 s");
        }
        // Each check opens a short-lived offset reader: poll gently.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let started = Instant::now();
    for (i, line) in rest.iter().enumerate() {
        if rate > 0 {
            let due = started + std::time::Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        send_line(&p, topic, line)?;
    }
    p.flush(std::time::Duration::from_secs(60))
        .context("producer flush")?;
    Ok((started, started.elapsed()))
}
