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
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::error::{Context, PipelineError, Result};
use crate::flow::Stages;
use crate::rules_watch::{rules_fingerprint, watch_rules};
use crate::sinks::files::DataPaths;
use crate::sources::file::FileSource;
use crate::sources::http::HttpSource;
use crate::sources::kafka::KafkaIo;
use crate::sources::{Ack, Input, SourceEvent, Sources};
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
    let mut sources = Sources::default();
    let kafka = match cfg.kafka.enabled {
        true => {
            let (k, input) = KafkaIo::start(cfg).await?;
            sources.add(Box::new(input));
            Some(k)
        }
        false => None,
    };

    // Files and stdin.
    let batch_size = cfg.ingest.batch_size.max(1);
    let mut files = cfg.ingest.files.clone();
    if cfg.ingest.stdin && !files.iter().any(|p| p == Path::new("-")) {
        files.push(PathBuf::from("-"));
    }
    for path in files {
        sources.add(Box::new(FileSource::start(
            path,
            cfg.ingest.format,
            cfg.ingest.max_line_bytes,
            batch_size,
        )));
    }

    // HTTP API and ingest endpoint.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (http_tx, http_rx) = mpsc::channel::<IngestRequest>(16);
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
        let (http, addr) = HttpSource::start(scfg, state, http_rx).await?;
        sources.add(Box::new(http));
        bound_addr = Some(addr);
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
        if sources.finite_open() == 0 && !sources_done_fired {
            sources_done_fired = true;
            stages
                .submit(std::mem::take(&mut pending), Ack::File)
                .await?;
            stages.drain().await?;
            deadline = None;
            if let Some(cb) = opts.after_sources.take() {
                cb(&stages.pipeline.stats, &store, bound_addr);
            }
            if first_error.is_some() || !opts.keep_running || !sources.live_open() {
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
            ev = sources.next(), if !sources.is_empty() => match ev {
                SourceEvent::Input(Input { mut records, ack }) if ack.coalesces() => {
                    if pending.is_empty() && records.len() >= batch_size {
                        stages.submit(records, ack).await?;
                    } else {
                        pending.append(&mut records);
                        if pending.len() >= batch_size {
                            stages.submit(std::mem::take(&mut pending), Ack::File).await?;
                            deadline = None;
                        } else if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + timeout);
                        }
                    }
                }
                SourceEvent::Input(Input { records, ack }) => {
                    // gathered file records arrived first
                    if !pending.is_empty() {
                        stages.submit(std::mem::take(&mut pending), Ack::File).await?;
                        deadline = None;
                    }
                    stages.submit(records, ack).await?;
                }
                SourceEvent::Ended { name, finite: true, error } => match error {
                    Some(e) => {
                        tracing::error!(source = %name, "source failed: {e}");
                        first_error.get_or_insert(PipelineError::Source { name, message: e });
                    }
                    None => tracing::info!(source = %name, "source finished"),
                },
                SourceEvent::Ended { name, finite: false, error } => {
                    if let Some(e) = error {
                        tracing::error!(source = %name, "source failed: {e}");
                        first_error.get_or_insert(PipelineError::Stopped(e));
                        break;
                    }
                    tracing::info!(source = %name, "source closed");
                }
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
    // Drain what is already buffered; then stop the sources (the HTTP
    // server waits for its open requests, the Kafka consumer hands over its
    // last batch) and complete what they still hand over, serving the
    // accesses the server records meanwhile.
    stages
        .submit(std::mem::take(&mut pending), Ack::File)
        .await?;
    stages.drain().await?;
    let _ = stop_tx.send(true);
    sources.request_stop();
    while !sources.is_empty() {
        tokio::select! {
            ev = sources.next() => match ev {
                SourceEvent::Input(Input { records, ack }) => {
                    stages.submit(records, ack).await?;
                    stages.drain().await?;
                }
                SourceEvent::Ended { name, error: Some(e), .. } => {
                    tracing::error!(source = %name, "source failed while stopping: {e}");
                }
                SourceEvent::Ended { .. } => {}
            },
            Some(first) = access_rx.recv() => {
                stages.pipeline.append_access(first, &mut access_rx)?;
            }
        }
    }
    // the server has stopped: the last accesses it recorded
    drop(access_tx);
    while let Ok(first) = access_rx.try_recv() {
        stages.pipeline.append_access(first, &mut access_rx)?;
    }
    let (pipeline, kafka) = stages.stop().await?;
    drop(sources);
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
