//! The driver: takes records from every source (files, stdin, HTTP, Kafka),
//! forms micro-batches (size or timeout), runs each through the stage, hands
//! the results to the sinks, and serves the API's between-batch requests
//! (rule reloads, incident actions, redactions) until the sources end or a
//! signal asks it to drain. `run`, `replay`, `demo` and `bench` all go
//! through [`drive`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dunes_api::{
    AccessRecord, ActionRequest, AppState, AuthState, IngestRequest, RedactionRequest,
    ReloadRequest, ServerConfig,
};
use dunes_detect::IncidentStore;
use dunes_ingest::RawRecord;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::{Context, PipelineError, Result};
use crate::flow::{Ack, Stages};
use crate::rules_watch::{rules_fingerprint, watch_rules};
use crate::sinks::files::DataPaths;
use crate::sources::Work;
use crate::sources::file::source_thread;
use crate::sources::kafka::{KafkaIo, next_kafka};
use crate::stage::{ACCESS_QUEUE, Pipeline, Stats};

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

pub async fn drive(cfg: &Config, mut opts: DriveOptions) -> Result<DriveOutcome> {
    let started = Instant::now();
    // The metrics recorder, before the first counter is touched.
    let _ = dunes_api::prometheus();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let paths = DataPaths::new(&cfg.data_dir);
    let store = Arc::new(
        IncidentStore::load_ndjson_with_limit(&paths.incidents, cfg.detect.max_incidents_in_memory)
            .context("cannot load earlier incidents")?,
    );
    store
        .load_actions_ndjson(&paths.actions)
        .context("cannot load earlier incident actions")?;
    let rules_dir = cfg.rules_dir();
    let rules_fingerprint = rules_fingerprint(&rules_dir);
    let pipeline = Pipeline::open(cfg, store.clone(), opts.incidents_out.as_deref()).await?;
    let (kafka, mut kafka_rx) = match cfg.kafka.enabled {
        true => {
            let (k, rx) = KafkaIo::start(cfg).await?;
            (Some(k), Some(rx))
        }
        false => (None, None),
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
        let format = cfg.ingest.format;
        // stdin trickles: hand over every line at once; files go in chunks.
        let chunk = if path == Path::new("-") {
            1
        } else {
            batch_size
        };
        tokio::task::spawn_blocking(move || source_thread(path, format, max_line, chunk, tx));
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
    // Report digests (auditor), appended between batches.
    let (record_tx, mut record_rx) = mpsc::channel::<dunes_api::RecordRequest>(4);
    let mut record_open = true;
    // Access audit of the API, ledgered in batches between pipeline batches.
    let (access_tx, mut access_rx) = mpsc::channel::<AccessRecord>(ACCESS_QUEUE);
    let mut access_open = true;
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
            .context("cannot open the API token key")?;
        let state = AppState {
            incidents: store.clone(),
            data_dir: cfg.data_dir.clone(),
            ingest: Some(http_tx.clone()),
            max_line_bytes: cfg.ingest.max_line_bytes,
            reload: Some(reload_tx.clone()),
            auth: Arc::new(auth),
            actions: Some(action_tx.clone()),
            redactions: Some(redact_tx.clone()),
            records: Some(record_tx.clone()),
            access: Some(access_tx.clone()),
            rules: pipeline.rules_view.clone(),
            hunt: cfg.hunt.clone(),
            outputs: pipeline.outputs_view(),
            notification: pipeline.notification_clocks(),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
        };
        let scfg = ServerConfig {
            listen: cfg.http.listen,
            max_body_bytes: cfg.http.max_body_bytes,
            metrics_listen: cfg.http.metrics_listen,
            header_read_timeout: std::time::Duration::from_millis(cfg.http.header_read_timeout_ms),
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
                    Ok(Err(e)) => Err(e).context("the HTTP server failed to start"),
                    Ok(Ok(())) => Err(PipelineError::Stopped(
                        "HTTP server stopped unexpectedly".into(),
                    )),
                    Err(e) => Err(PipelineError::Stopped(format!(
                        "HTTP server task failed: {e}"
                    ))),
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
    let mut first_error: Option<PipelineError> = None;
    let mut sources_done_fired = false;
    let mut http_open = cfg.http.enabled;
    let mut stages = Stages::start(
        pipeline,
        kafka,
        opts.kafka_latency.clone(),
        cfg.ingest.batches_in_flight,
    )?;
    let stop_after = opts.stop_after;
    let stop_after_reached =
        |s: &Stages| stop_after.is_some_and(|n| processed(&s.pipeline.stats) >= n);
    // Regulatory notification clocks are checked while the monitor runs.
    let mut clock_tick = tokio::time::interval(std::time::Duration::from_secs(
        cfg.notification.check_interval_secs.max(1),
    ));
    clock_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Records ledgered between batches (analyst actions, accesses) get signed while idle.
    let mut sign_tick = tokio::time::interval(std::time::Duration::from_millis(
        cfg.ledger.checkpoint_interval_ms.max(1),
    ));
    sign_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if open_sources == 0 && !sources_done_fired {
            sources_done_fired = true;
            stages
                .submit(std::mem::take(&mut pending), Ack::File)
                .await?;
            stages.drain().await?;
            deadline = None;
            if let Some(cb) = opts.after_sources.take() {
                cb(&stages.pipeline.stats, &store, bound_addr);
            }
            if first_error.is_some()
                || !opts.keep_running
                || (!cfg.http.enabled && kafka_rx.is_none())
            {
                break;
            }
        }
        tokio::select! {
            d = stages.next_decoded(), if !stages.in_flight.is_empty() => match d {
                Some(d) => {
                    stages.complete(d).await?;
                    if stop_after_reached(&stages) {
                        tracing::info!("processed the requested number of envelopes: stopping");
                        break;
                    }
                }
                None => {
                    first_error.get_or_insert(PipelineError::Stopped("the decode thread stopped".into()));
                    break;
                }
            },
            w = work_rx.recv(), if open_sources > 0 => match w {
                Some(Work::Chunk(mut recs)) => {
                    if pending.is_empty() && recs.len() >= batch_size {
                        stages.submit(recs, Ack::File).await?;
                    } else {
                        pending.append(&mut recs);
                        if pending.len() >= batch_size {
                            stages.submit(std::mem::take(&mut pending), Ack::File).await?;
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
                            first_error.get_or_insert(PipelineError::Source { name: source, message: e });
                        }
                        None => tracing::info!(%source, "source finished"),
                    }
                }
                None => open_sources = 0,
            },
            b = next_kafka(kafka_rx.as_mut()) => match b {
                Some(mut batch) => {
                    if !pending.is_empty() {
                        stages.submit(std::mem::take(&mut pending), Ack::File).await?;
                        deadline = None;
                    }
                    let records = std::mem::take(&mut batch.records);
                    stages.submit(records, Ack::Kafka(batch)).await?;
                }
                None => {
                    // The poll thread stopped on its own: only after a fatal
                    // error on the commit side.
                    first_error.get_or_insert(PipelineError::Stopped("the Kafka consumer stopped".into()));
                    break;
                }
            },
            req = http_rx.recv(), if http_open => match req {
                Some(IngestRequest { records, reply }) => {
                    if !pending.is_empty() {
                        stages.submit(std::mem::take(&mut pending), Ack::File).await?;
                        deadline = None;
                    }
                    stages.submit(records, Ack::Http(reply)).await?;
                }
                None => http_open = false,
            },
            req = reload_rx.recv(), if reload_open => match req {
                Some(ReloadRequest { reply }) => {
                    // Buffered and in-flight records arrived under the old rules.
                    if !pending.is_empty() {
                        stages.submit(std::mem::take(&mut pending), Ack::File).await?;
                        deadline = None;
                    }
                    stages.drain().await?;
                    let _ = reply.send(stages.pipeline.reload_rules().await?);
                }
                None => reload_open = false,
            },
            _ = clock_tick.tick(), if opts.keep_running => {
                stages.pipeline.check_notification_clocks(chrono::Utc::now())?;
                stages.pipeline.self_check_idle()?;
            },
            _ = sign_tick.tick(), if opts.keep_running => {
                if stages.in_flight.is_empty() && pending.is_empty() {
                    stages.pipeline.anomaly_idle()?;
                    stages.publish_between_batches().await?;
                }
                stages.pipeline.sign_pending()?;
            },
            req = action_rx.recv(), if action_open => match req {
                Some(ActionRequest { action, reply }) => {
                    let _ = reply.send(stages.pipeline.apply_action(action)?);
                }
                None => action_open = false,
            },
            rec = access_rx.recv(), if access_open => match rec {
                Some(first) => {
                    stages.pipeline.append_access(first, &mut access_rx)?;
                }
                None => access_open = false,
            },
            req = record_rx.recv(), if record_open => match req {
                Some(r) => {
                    let idx = stages.pipeline.append_action_record(&r.payload, &[])?;
                    let _ = r.reply.send(Ok(idx));
                }
                None => record_open = false,
            },
            req = redact_rx.recv(), if redact_open => match req {
                Some(r) => {
                    let out = stages.pipeline.apply_redaction(&r)?;
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
                stages.submit(std::mem::take(&mut pending), Ack::File).await?;
                deadline = None;
            }
            _ = &mut signal => {
                tracing::info!("shutdown requested: draining");
                break;
            }
        }
    }
    // Drain what is already buffered, then stop the server and close.
    stages
        .submit(std::mem::take(&mut pending), Ack::File)
        .await?;
    stages.drain().await?;
    let _ = stop_tx.send(true);
    if let Some(mut h) = server {
        // The server waits for its open requests before it returns; an
        // ingest request waits for its batch and every request for its
        // access record to be taken: keep serving both meanwhile.
        loop {
            tokio::select! {
                r = &mut h => {
                    match r {
                        Ok(Err(e)) => tracing::error!("HTTP server error: {e}"),
                        Err(e) => tracing::error!("HTTP server task failed: {e}"),
                        Ok(Ok(())) => {}
                    }
                    break;
                }
                Some(IngestRequest { records, reply }) = http_rx.recv() => {
                    stages.submit(records, Ack::Http(reply)).await?;
                    stages.drain().await?;
                }
                Some(first) = access_rx.recv() => {
                    stages.pipeline.append_access(first, &mut access_rx)?;
                }
            }
        }
    }
    while let Ok(IngestRequest { records, reply }) = http_rx.try_recv() {
        stages.submit(records, Ack::Http(reply)).await?;
    }
    // the server has stopped: the last accesses it recorded
    drop(access_tx);
    while let Ok(first) = access_rx.try_recv() {
        stages.pipeline.append_access(first, &mut access_rx)?;
    }
    // Kafka: stop polling, process and commit what was handed over.
    if let (Some(k), Some(rx)) = (stages.kafka.as_ref(), kafka_rx.as_mut()) {
        k.request_stop();
        loop {
            match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
                Ok(Some(mut batch)) => {
                    let records = std::mem::take(&mut batch.records);
                    stages.submit(records, Ack::Kafka(batch)).await?;
                }
                Ok(None) => break,
                Err(_) => {
                    if stages.kafka.as_ref().is_none_or(KafkaIo::finished) && rx.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    let (pipeline, kafka) = stages.stop().await?;
    if let Some(k) = kafka {
        k.join();
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
