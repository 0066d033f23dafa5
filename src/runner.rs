//! Drives the pipeline from its sources (files, stdin, HTTP) with
//! micro-batching, backpressure and graceful shutdown. `run`, `replay` and
//! `demo` all go through [`drive`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dunes_api::{
    ActionRequest, AppState, AuthState, IngestRequest, RedactionRequest, ReloadRequest,
    ServerConfig,
};
use dunes_detect::{Incident, IncidentFilter, IncidentStore};
use dunes_ingest::RawRecord;
use dunes_ingest::kafka::{KafkaBatch, KafkaSink, KafkaSource, KafkaSourceHandle, OutputMessage};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::pipeline::{BatchOutcome, DataPaths, Pipeline, Stats};

/// Called once every file/stdin source is exhausted and processed.
pub type AfterSources = Box<dyn FnOnce(&Stats, &IncidentStore, Option<SocketAddr>) + Send>;

pub struct DriveOptions {
    pub incidents_out: Option<PathBuf>,
    /// Stop (as on SIGTERM) once this many envelopes were processed
    /// (accepted + rejected + duplicates); `dunes bench kafka`.
    pub stop_after: Option<u64>,
    /// Produce-to-ledger latency of Kafka records, in microseconds.
    pub kafka_latency: Option<Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>>,
    /// Keep serving (HTTP ingest and API) after the sources are exhausted,
    /// until SIGINT/SIGTERM.
    pub keep_running: bool,
    pub after_sources: Option<AfterSources>,
}

impl DriveOptions {
    pub fn run() -> Self {
        DriveOptions {
            incidents_out: None,
            stop_after: None,
            kafka_latency: None,
            keep_running: true,
            after_sources: None,
        }
    }
    pub fn replay() -> Self {
        DriveOptions {
            incidents_out: None,
            stop_after: None,
            kafka_latency: None,
            keep_running: false,
            after_sources: None,
        }
    }
}

pub struct DriveOutcome {
    pub stats: Stats,
    pub checkpoint: Option<dunes_ledger::Checkpoint>,
    pub elapsed: Duration,
}

enum Work {
    Chunk(Vec<RawRecord>),
    Done {
        source: String,
        error: Option<String>,
    },
}

/// Reads one NDJSON source in chunks and hands them to the pipeline; the
/// bounded channel blocks the reader when detection or the ledger is slower
/// (backpressure).
fn read_source<I>(reader: I, chunk: usize, tx: &mpsc::Sender<Work>) -> anyhow::Result<()>
where
    I: Iterator<Item = Result<RawRecord, dunes_ingest::IngestError>>,
{
    let mut buf = Vec::with_capacity(chunk);
    for rec in reader {
        buf.push(rec?);
        if buf.len() >= chunk {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(chunk));
            if tx.blocking_send(Work::Chunk(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(Work::Chunk(buf));
    }
    Ok(())
}

/// Runs on a blocking thread: opens `path` (`-` is stdin), reads it, and
/// always reports completion.
fn source_thread(path: PathBuf, max_line: usize, chunk: usize, tx: mpsc::Sender<Work>) {
    let name = path.display().to_string();
    let result = if path == Path::new("-") {
        read_source(dunes_ingest::source::stdin_reader(max_line), chunk, &tx)
    } else {
        dunes_ingest::source::open_file(&path, max_line)
            .map_err(anyhow::Error::from)
            .and_then(|r| read_source(r, chunk, &tx))
    };
    let _ = tx.blocking_send(Work::Done {
        source: name,
        error: result.err().map(|e| format!("{e:#}")),
    });
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn drive(cfg: &Config, mut opts: DriveOptions) -> anyhow::Result<DriveOutcome> {
    let started = Instant::now();
    // The metrics recorder, before the first counter is touched.
    let _ = dunes_api::prometheus();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let paths = DataPaths::new(&cfg.data_dir);
    let store = Arc::new(
        IncidentStore::load_ndjson(&paths.incidents).context("cannot load earlier incidents")?,
    );
    store
        .load_actions_ndjson(&paths.actions)
        .context("cannot load earlier incident actions")?;
    let rules_dir = cfg.rules_dir();
    let rules_fingerprint = rules_fingerprint(&rules_dir);
    let mut pipeline = Pipeline::open(cfg, store.clone(), opts.incidents_out.as_deref()).await?;
    let mut kafka = match cfg.kafka.enabled {
        true => Some(KafkaIo::start(cfg).await?),
        false => None,
    };

    // Sources.
    let batch_size = cfg.ingest.batch_size.max(1);
    let (work_tx, mut work_rx) = mpsc::channel::<Work>(4);
    let mut sources = cfg.ingest.files.clone();
    if cfg.ingest.stdin && !sources.iter().any(|p| p == Path::new("-")) {
        sources.push(PathBuf::from("-"));
    }
    let mut open_sources = sources.len();
    for path in sources {
        let tx = work_tx.clone();
        let max_line = cfg.ingest.max_line_bytes;
        // stdin trickles: hand over every line at once; files go in chunks.
        let chunk = if path == Path::new("-") {
            1
        } else {
            batch_size
        };
        tokio::task::spawn_blocking(move || source_thread(path, max_line, chunk, tx));
    }
    drop(work_tx);

    // HTTP API and ingest endpoint.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (http_tx, mut http_rx) = mpsc::channel::<IngestRequest>(16);
    // Rule reloads (HTTP and the directory watcher), answered between batches.
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let mut reload_open = true;
    // Incident actions (ack, assign, escalate, resolve), ledgered between batches.
    let (action_tx, mut action_rx) = mpsc::channel::<ActionRequest>(16);
    let mut action_open = true;
    // Ledger redactions (admin), applied between batches.
    let (redact_tx, mut redact_rx) = mpsc::channel::<RedactionRequest>(4);
    let mut redact_open = true;
    if opts.keep_running {
        tokio::spawn(watch_rules(
            rules_dir,
            rules_fingerprint,
            reload_tx.clone(),
            stop_rx.clone(),
        ));
    }
    let mut bound_addr = None;
    let mut server = None;
    if cfg.http.enabled {
        let auth = AuthState::open(&cfg.data_dir, cfg.auth.clone())
            .map_err(|e| anyhow::anyhow!("cannot open the API token key: {e}"))?;
        let state = AppState {
            incidents: store.clone(),
            data_dir: cfg.data_dir.clone(),
            ingest: Some(http_tx.clone()),
            max_line_bytes: cfg.ingest.max_line_bytes,
            reload: Some(reload_tx.clone()),
            auth: Arc::new(auth),
            actions: Some(action_tx.clone()),
            redactions: Some(redact_tx.clone()),
            rules: pipeline.rules_view.clone(),
            hunt: cfg.hunt.clone(),
        };
        let scfg = ServerConfig {
            listen: cfg.http.listen,
            max_body_bytes: cfg.http.max_body_bytes,
        };
        let (btx, brx) = oneshot::channel();
        let mut stop = stop_rx.clone();
        let handle = tokio::spawn(dunes_api::serve(scfg, state, Some(btx), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        match brx.await {
            Ok(addr) => bound_addr = Some(addr),
            Err(_) => {
                // The server failed before binding: surface its error.
                return match handle.await {
                    Ok(Err(e)) => Err(e.into()),
                    Ok(Ok(())) => Err(anyhow::anyhow!("HTTP server stopped unexpectedly")),
                    Err(e) => Err(anyhow::anyhow!("HTTP server task failed: {e}")),
                };
            }
        }
        server = Some(handle);
    }
    drop(http_tx);
    drop(reload_tx);
    drop(action_tx);

    let signal = shutdown_signal();
    tokio::pin!(signal);
    let timeout = Duration::from_millis(cfg.ingest.batch_timeout_ms.max(1));
    let mut pending: Vec<RawRecord> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut first_error: Option<anyhow::Error> = None;
    let mut sources_done_fired = false;
    let mut http_open = cfg.http.enabled;

    loop {
        if open_sources == 0 && !sources_done_fired {
            sources_done_fired = true;
            step(&mut pipeline, kafka.as_ref(), std::mem::take(&mut pending)).await?;
            deadline = None;
            if let Some(cb) = opts.after_sources.take() {
                cb(&pipeline.stats, &store, bound_addr);
            }
            if first_error.is_some() || !opts.keep_running || (!cfg.http.enabled && kafka.is_none())
            {
                break;
            }
        }
        tokio::select! {
            w = work_rx.recv(), if open_sources > 0 => match w {
                Some(Work::Chunk(mut recs)) => {
                    if pending.is_empty() && recs.len() >= batch_size {
                        step(&mut pipeline, kafka.as_ref(), recs).await?;
                    } else {
                        pending.append(&mut recs);
                        if pending.len() >= batch_size {
                            step(&mut pipeline, kafka.as_ref(), std::mem::take(&mut pending)).await?;
                            deadline = None;
                        } else if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + timeout);
                        }
                    }
                }
                Some(Work::Done { source, error }) => {
                    open_sources -= 1;
                    match error {
                        Some(e) => {
                            tracing::error!(%source, "source failed: {e}");
                            first_error.get_or_insert(anyhow::anyhow!("source {source} failed: {e}"));
                        }
                        None => tracing::info!(%source, "source finished"),
                    }
                }
                None => open_sources = 0,
            },
            b = next_kafka(kafka.as_mut()) => match b {
                Some(batch) => {
                    if !pending.is_empty() {
                        step(&mut pipeline, kafka.as_ref(), std::mem::take(&mut pending)).await?;
                        deadline = None;
                    }
                    if let Some(k) = kafka.as_ref() {
                        k.process(&mut pipeline, batch, opts.kafka_latency.as_deref()).await?;
                    }
                    if opts.stop_after.is_some_and(|n| processed(&pipeline.stats) >= n) {
                        tracing::info!("processed the requested number of envelopes: stopping");
                        break;
                    }
                }
                None => {
                    // The poll thread stopped on its own: only after a fatal
                    // error on the commit side.
                    first_error.get_or_insert(anyhow::anyhow!("the Kafka consumer stopped"));
                    break;
                }
            },
            req = http_rx.recv(), if http_open => match req {
                Some(IngestRequest { records, reply }) => {
                    if !pending.is_empty() {
                        step(&mut pipeline, kafka.as_ref(), std::mem::take(&mut pending)).await?;
                        deadline = None;
                    }
                    let out = step(&mut pipeline, kafka.as_ref(), records).await?;
                    let _ = reply.send(out.ack());
                }
                None => http_open = false,
            },
            req = reload_rx.recv(), if reload_open => match req {
                Some(ReloadRequest { reply }) => {
                    // Buffered records arrived under the old rules.
                    if !pending.is_empty() {
                        step(&mut pipeline, kafka.as_ref(), std::mem::take(&mut pending)).await?;
                        deadline = None;
                    }
                    let _ = reply.send(pipeline.reload_rules().await?);
                }
                None => reload_open = false,
            },
            req = action_rx.recv(), if action_open => match req {
                Some(ActionRequest { action, reply }) => {
                    let _ = reply.send(pipeline.apply_action(action)?);
                }
                None => action_open = false,
            },
            req = redact_rx.recv(), if redact_open => match req {
                Some(r) => {
                    let out = pipeline.apply_redaction(&r)?;
                    let _ = r.reply.send(out);
                }
                None => redact_open = false,
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                step(&mut pipeline, kafka.as_ref(), std::mem::take(&mut pending)).await?;
                deadline = None;
            }
            _ = &mut signal => {
                tracing::info!("shutdown requested: draining");
                break;
            }
        }
    }
    // Drain what is already buffered, then stop the server and close.
    step(&mut pipeline, kafka.as_ref(), std::mem::take(&mut pending)).await?;
    let _ = stop_tx.send(true);
    if let Some(h) = server {
        match h.await {
            Ok(Err(e)) => tracing::error!("HTTP server error: {e}"),
            Err(e) => tracing::error!("HTTP server task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    while let Ok(IngestRequest { records, reply }) = http_rx.try_recv() {
        let out = step(&mut pipeline, kafka.as_ref(), records).await?;
        let _ = reply.send(out.ack());
    }
    if let Some(k) = kafka.take() {
        k.shutdown(&mut pipeline, opts.kafka_latency.as_deref())
            .await?;
    }
    let (stats, checkpoint) = pipeline.close()?;
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(DriveOutcome {
        stats,
        checkpoint,
        elapsed: started.elapsed(),
    })
}

/// Envelopes taken off the sources so far.
fn processed(s: &Stats) -> u64 {
    s.envelopes + s.rejected + s.duplicates
}

/// The Kafka consumer and producer of a running pipeline.
struct KafkaIo {
    handle: KafkaSourceHandle,
    rx: mpsc::Receiver<KafkaBatch>,
    sink: KafkaSink,
}

impl KafkaIo {
    async fn start(cfg: &Config) -> anyhow::Result<KafkaIo> {
        let client_id = cfg
            .kafka
            .client_id
            .clone()
            .unwrap_or_else(|| cfg.origin().replace('/', "-"));
        let sink = KafkaSink::new(&cfg.kafka, &client_id)?;
        sink.ensure_output_topics().await?;
        let (handle, rx) = KafkaSource::start(&cfg.kafka, &client_id)?;
        Ok(KafkaIo { handle, rx, sink })
    }

    /// One Kafka batch: ledger (fsync), outputs delivered, then the commit.
    async fn process(
        &self,
        pipeline: &mut Pipeline,
        mut batch: KafkaBatch,
        latency: Option<&std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    ) -> anyhow::Result<()> {
        let n = batch.records.len() as u64;
        let out = match pipeline.process(std::mem::take(&mut batch.records)).await {
            Ok(o) => o,
            Err(e) => {
                self.handle.abandon();
                return Err(e);
            }
        };
        if let Err(e) = publish(Some(self), &out).await {
            self.handle.abandon();
            return Err(e);
        }

        let commit = tokio::task::block_in_place(|| self.handle.commit(&batch))?;
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
    async fn shutdown(
        mut self,
        pipeline: &mut Pipeline,
        latency: Option<&std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    ) -> anyhow::Result<()> {
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

async fn next_kafka(k: Option<&mut KafkaIo>) -> Option<KafkaBatch> {
    match k {
        Some(k) => k.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Processes a batch from a file, stdin or HTTP and publishes its outputs.
async fn step(
    pipeline: &mut Pipeline,
    kafka: Option<&KafkaIo>,
    records: Vec<RawRecord>,
) -> anyhow::Result<BatchOutcome> {
    let out = pipeline.process(records).await?;
    publish(kafka, &out).await?;
    Ok(out)
}

/// Sends a batch's dead letters, incidents and responses to their Kafka
/// topics (when Kafka is on) and waits for every delivery. A failed delivery
/// (broker unreachable past `delivery_timeout_ms`) is retried with backoff
/// until it succeeds: the batch's offsets stay uncommitted meanwhile and the
/// consumer stalls (backpressure), so nothing is lost during an outage; a
/// retry may deliver some messages twice.
async fn publish(k: Option<&KafkaIo>, out: &BatchOutcome) -> anyhow::Result<()> {
    let Some(k) = k else {
        return Ok(());
    };
    let to_msgs = |items: Vec<(String, serde_json::Result<Vec<u8>>)>| {
        items
            .into_iter()
            .map(|(key, payload)| {
                Ok(OutputMessage {
                    key,
                    payload: payload?,
                })
            })
            .collect::<serde_json::Result<Vec<_>>>()
    };
    let incidents = to_msgs(
        out.incidents
            .iter()
            .map(|i| (i.incident_id.clone(), serde_json::to_vec(i)))
            .collect(),
    )
    .context("cannot encode an incident")?;
    let responses = to_msgs(
        out.responses
            .iter()
            .map(|r| (r.response_id.clone(), serde_json::to_vec(r)))
            .collect(),
    )
    .context("cannot encode a response")?;
    let mut backoff = Duration::from_millis(500);
    loop {
        let (a, b, c) = tokio::join!(
            k.sink.send_dead_letters(&out.dead_letters),
            k.sink.send_incidents(&incidents),
            k.sink.send_responses(&responses),
        );
        match a.and(b).and(c) {
            Ok(_) => return Ok(()),
            Err(e) => {
                metrics::counter!("dunes_kafka_delivery_retries_total").increment(1);
                tracing::error!(
                    "kafka output delivery failed, retrying in {:?} (offsets stay uncommitted): {e}",
                    backoff
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    }
}

/// How often the rules directory is polled for changes.
const RULES_POLL: Duration = Duration::from_secs(2);

/// BLAKE3 over every file below `dir` (sorted paths and contents): rule
/// files and allowlists. An unreadable directory hashes its error.
fn rules_fingerprint(dir: &Path) -> [u8; 32] {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut h = blake3::Hasher::new();
    let mut files = Vec::new();
    if let Err(e) = walk(dir, &mut files) {
        h.update(e.to_string().as_bytes());
    }
    files.sort();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(b"\0");
        match std::fs::read(&f) {
            Ok(b) => {
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(&b);
            }
            Err(e) => {
                h.update(e.to_string().as_bytes());
            }
        }
    }
    *h.finalize().as_bytes()
}

/// Polls the rules directory every [`RULES_POLL`]; on a change asks the
/// pipeline to reload (a refused reload is logged by the pipeline and
/// retried only after the next change).
async fn watch_rules(
    dir: PathBuf,
    mut last: [u8; 32],
    tx: mpsc::Sender<ReloadRequest>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(RULES_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let d = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || rules_fingerprint(&d)).await else {
            return;
        };
        if now == last {
            continue;
        }
        last = now;
        tracing::info!(dir = %dir.display(), "rules directory changed: reloading");
        let (reply, rx) = oneshot::channel();
        if tx.send(ReloadRequest { reply }).await.is_err() {
            return;
        }
        match rx.await {
            Ok(Ok(ack)) => {
                tracing::info!(version = %ack.version, rules = ack.rules, "rules reloaded by the watcher")
            }
            Ok(Err(e)) => {
                tracing::error!("rules reload refused (previous rules keep running): {e}")
            }
            Err(_) => return,
        }
    }
}

pub fn print_summary(cfg: &Config, out: &DriveOutcome) {
    let s = &out.stats;
    let paths = DataPaths::new(&cfg.data_dir);
    println!(
        "processed {} envelopes ({} messages) in {:.2}s",
        s.envelopes,
        s.rows,
        out.elapsed.as_secs_f64()
    );
    println!(
        "rejected: {}{}",
        s.rejected,
        if s.rejected > 0 {
            format!(" (see {})", paths.dead_letter.display())
        } else {
            String::new()
        }
    );
    println!(
        "incidents: {} (level 1: {}, level 2: {}, level 3: {}) -> {}",
        s.incidents,
        s.incidents_by_level[0],
        s.incidents_by_level[1],
        s.incidents_by_level[2],
        paths.incidents.display()
    );
    println!(
        "responses: {} -> {}",
        s.responses,
        paths.responses.display()
    );
    match &out.checkpoint {
        Some(cp) => println!(
            "ledger: signed checkpoint at tree size {} (root {})",
            cp.tree_size,
            hex::encode(cp.root)
        ),
        None => println!("ledger: no new records"),
    }
}

/// Prints incidents newest-level first, as a SOC console would list them.
pub fn print_incidents(incidents: &[Incident]) {
    let mut list: Vec<&Incident> = incidents.iter().collect();
    list.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(b.severity.cmp(&a.severity))
            .then(a.first_ts.cmp(&b.first_ts))
    });
    println!(
        "{:<3} {:<9} {:<36} {:<34} {:>6}  title",
        "lvl", "severity", "rule", "session / entity", "events"
    );
    for inc in list {
        let who = inc.session_id.clone().unwrap_or_else(|| {
            inc.entity
                .values()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(",")
        });
        println!(
            "L{:<2} {:<9} {:<36} {:<34} {:>6}  {}",
            inc.level.as_u8(),
            inc.severity.to_string(),
            truncate(&inc.rule_id, 36),
            truncate(&who, 34),
            inc.event_ids.len(),
            inc.title
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `dunes demo`: fresh simulated traffic through the real pipeline.
pub async fn demo(mut cfg: Config, sessions: u64, seed: u64, no_serve: bool) -> anyhow::Result<()> {
    let dir = cfg.data_dir.join("demo");
    if dir.exists() {
        // The demo owns this sub-directory and recreates it on every run.
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot reset {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let traffic = dir.join("traffic.ndjson");
    let sim = dunes_sim::SimConfig {
        sessions,
        seed,
        ..dunes_sim::SimConfig::default()
    };
    let f = std::fs::File::create(&traffic)
        .with_context(|| format!("cannot create {}", traffic.display()))?;
    let st = dunes_sim::write_ndjson(&sim, std::io::BufWriter::new(f))?;
    let labels = dunes_sim::generate_labels(&sim);
    std::fs::write(
        dir.join("labels.json"),
        serde_json::to_string_pretty(&labels)?,
    )
    .context("cannot write labels")?;
    println!(
        "simulated {} sessions ({} envelopes, seed {seed}) -> {}",
        st.sessions,
        st.lines,
        traffic.display()
    );
    // Anomaly model: the data dir's, if one was trained (`dunes model
    // train`); otherwise a short warm-up on the demo's own traffic.
    let model = cfg.anomaly.model_path(&cfg.data_dir);
    if model.exists() {
        cfg.anomaly.model = Some(model);
    } else {
        cfg.anomaly.warmup_min_sessions = cfg.anomaly.warmup_min_sessions.min(30);
    }
    cfg.data_dir = dir.clone();
    cfg.ingest.files = vec![traffic];
    cfg.ingest.stdin = false;
    cfg.http.enabled = !no_serve;
    let data_dir = dir.clone();
    let opts = DriveOptions {
        keep_running: !no_serve,
        after_sources: Some(Box::new(move |stats, store, addr| {
            let incidents = store.list(&IncidentFilter::default());
            println!();
            print_incidents(&incidents);
            println!(
                "\n{} incidents (level 1: {}, level 2: {}, level 3: {}) from {} envelopes; {} rejected",
                stats.incidents,
                stats.incidents_by_level[0],
                stats.incidents_by_level[1],
                stats.incidents_by_level[2],
                stats.envelopes,
                stats.rejected
            );
            println!(
                "data dir: {}  (verify: dunes verify {})",
                data_dir.display(),
                data_dir.display()
            );
            if let Some(a) = addr {
                let tcfg = Config {
                    data_dir: data_dir.clone(),
                    ..Config::default()
                };
                match crate::issue_token(&tcfg, "demo-analyst", "analyst", "15m") {
                    Ok(t) => {
                        println!(
                            "API up (every route but /healthz needs a bearer token; this analyst token lasts 15 minutes):"
                        );
                        println!("  export DUNES_TOKEN={t}");
                        println!(
                            "  curl -H \"Authorization: Bearer $DUNES_TOKEN\" 'http://{a}/api/v1/incidents?level=3'"
                        );
                        println!(
                            "  new token: dunes token issue --data-dir {} --sub you --role analyst --ttl 15m   (Ctrl-C to stop)",
                            data_dir.display()
                        );
                    }
                    Err(e) => println!("API up at http://{a} (cannot issue a demo token: {e:#})"),
                }
            }
        })),
        ..DriveOptions::replay()
    };
    let out = drive(&cfg, opts).await?;
    print_summary(&cfg, &out);
    Ok(())
}
