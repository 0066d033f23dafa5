//! `dunes bench api`: incident-read load on the real HTTP API (authentication, rate
//! limiting, metrics included) while HTTP ingest keeps the pipeline busy.
//!
//! The first half of the simulated traffic is processed up front (so there are incidents
//! to read); the second half is posted to `POST /v1/ingest` in batches, each with a fresh
//! `ingest` token, for the whole measurement. `--clients` threads then issue
//! `GET /api/v1/incidents?level=…&limit=20` and `GET /api/v1/incidents/{id}` in a closed
//! loop over keep-alive loopback connections, each with its own `viewer` token, and every
//! request's latency goes into an HDR histogram.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use dunes_api::{AccessRecord, AppState, AuthState, IngestRequest, ServerConfig};
use dunes_detect::{IncidentFilter, IncidentStore};
use dunes_ingest::RawRecord;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use dunes_pipeline::Config;
use dunes_pipeline::Pipeline;

pub struct ApiBenchOpts {
    pub sessions: u64,
    pub seed: u64,
    pub seconds: u64,
    pub clients: usize,
    pub ingest_batch: usize,
    /// Ledger every API access, as `dunes run` does.
    pub access_audit: bool,
}

pub async fn run(mut cfg: Config, o: ApiBenchOpts) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("dunes-bench-api-{}", std::process::id()));
    if cfg.data_dir == Config::default().data_dir {
        cfg.data_dir = tmp.clone();
    }
    std::fs::create_dir_all(&cfg.data_dir)?;
    // The benchmark measures the API, not the rate limiter's refusals.
    cfg.auth.per_ip_rps = 1_000_000;
    cfg.auth.per_ip_burst = 1_000_000;
    cfg.auth.per_token_rps = 1_000_000;
    cfg.auth.per_token_burst = 1_000_000;
    let sim = dunes_sim::SimConfig {
        sessions: o.sessions,
        seed: o.seed,
        ..dunes_sim::SimConfig::default()
    };
    let lines: Vec<String> = dunes_sim::Simulator::new(sim).collect();
    let half = lines.len() / 2;
    let store = Arc::new(IncidentStore::new());
    let mut pipeline = Pipeline::open(&cfg, store.clone(), None).await?;
    let rec =
        |n: usize, l: &str| RawRecord::file_line(l.as_bytes().to_vec(), "bench", n as u64 + 1);
    for (i, chunk) in lines[..half].chunks(4096).enumerate() {
        let recs = chunk
            .iter()
            .enumerate()
            .map(|(j, l)| rec(i * 4096 + j, l))
            .collect();
        pipeline.process(recs).await?;
    }
    let ids: Vec<String> = store
        .list(&IncidentFilter::default())
        .into_iter()
        .map(|i| i.incident_id)
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no incidents to read: raise --sessions");
    eprintln!(
        "{} incidents from {half} envelopes; serving the API",
        ids.len()
    );

    // Pipeline task: owns the pipeline, answers HTTP ingest.
    let (ingest_tx, mut ingest_rx) = mpsc::channel::<IngestRequest>(16);
    let (access_tx, mut access_rx) = mpsc::channel::<AccessRecord>(dunes_pipeline::ACCESS_QUEUE);
    let audited = Arc::new(AtomicU64::new(0));
    let audited_in_task = audited.clone();
    let pipe = tokio::spawn(async move {
        loop {
            tokio::select! {
                req = ingest_rx.recv() => match req {
                    Some(IngestRequest { records, reply }) => {
                        let out = pipeline.process(records).await?;
                        let _ = reply.send(out.ack());
                    }
                    None => break,
                },
                Some(first) = access_rx.recv() => {
                    // grouped as in `dunes run`: one fsync per group
                    let n = pipeline.append_access(first, &mut access_rx)?;
                    audited_in_task.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        while let Ok(first) = access_rx.try_recv() {
            let n = pipeline.append_access(first, &mut access_rx)?;
            audited_in_task.fetch_add(n as u64, Ordering::Relaxed);
        }
        pipeline.close().map(|_| ())
    });
    let auth = Arc::new(
        AuthState::open(&cfg.data_dir, cfg.auth.clone())
            .map_err(|e| anyhow::anyhow!("token key: {e}"))?,
    );
    let mut state = AppState::new(store.clone(), cfg.data_dir.clone(), auth);
    state.ingest = Some(ingest_tx);
    if o.access_audit {
        state.access = Some(access_tx);
    }
    state.max_line_bytes = cfg.ingest.max_line_bytes;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (btx, brx) = oneshot::channel();
    let scfg = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_body_bytes: cfg.http.max_body_bytes,
        metrics_listen: None,
        header_read_timeout: std::time::Duration::from_millis(cfg.http.header_read_timeout_ms),
    };
    let server = tokio::spawn(dunes_api::serve(scfg, state, Some(btx), async move {
        let _ = stop_rx.await;
    }));
    let addr = brx.await.context("the API did not start")?;
    let base = format!("http://{addr}");

    let stop = Arc::new(AtomicBool::new(false));
    let key = dunes_api::auth::load_or_generate_key(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("token key: {e}"))?;
    let key = Arc::new(key);
    let origin = cfg.origin();
    let token = {
        let key = key.clone();
        let origin = origin.clone();
        move |role| {
            dunes_api::auth::issue(&key, &origin, "bench", role, chrono::Utc::now(), 600)
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
    };

    // Ingest load.
    let ingested = Arc::new(AtomicU64::new(0));
    let ingest_thread = {
        let stop = stop.clone();
        let base = base.clone();
        let ingested = ingested.clone();
        let token = token.clone();
        let body: Vec<String> = lines[half..]
            .chunks(o.ingest_batch.max(1))
            .map(|c| c.join("\n"))
            .collect();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && !body.is_empty() {
                let t = token(dunes_api::Role::Ingest)?;
                let resp = agent
                    .post(&format!("{base}/v1/ingest"))
                    .header("authorization", &format!("Bearer {t}"))
                    .send(body[i % body.len()].as_bytes())?;
                anyhow::ensure!(resp.status() == 202, "ingest answered {}", resp.status());
                ingested.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok(())
        })
    };

    // Read load.
    let deadline = Instant::now() + Duration::from_secs(o.seconds.max(1));
    let mut readers = Vec::new();
    for c in 0..o.clients.max(1) {
        let base = base.clone();
        let ids = ids.clone();
        let t = token(dunes_api::Role::Viewer)?;
        readers.push(std::thread::spawn(
            move || -> anyhow::Result<(Histogram<u64>, u64)> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let auth = format!("Bearer {t}");
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut errors = 0u64;
                let mut n = c;
                while Instant::now() < deadline {
                    let uri = if n % 2 == 0 {
                        format!("{base}/api/v1/incidents?level={}&limit=20", 1 + n % 3)
                    } else {
                        format!("{base}/api/v1/incidents/{}", ids[n % ids.len()])
                    };
                    let t0 = Instant::now();
                    let mut resp = agent.get(&uri).header("authorization", &auth).call()?;
                    let _ = resp.body_mut().read_to_vec()?;
                    h.record(t0.elapsed().as_micros().max(1) as u64)?;
                    if resp.status() != 200 {
                        errors += 1;
                    }
                    n += 1;
                }
                Ok((h, errors))
            },
        ));
    }
    let started = Instant::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for r in readers {
        let (h, e) = r
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    ingest_thread
        .join()
        .map_err(|_| anyhow::anyhow!("ingest thread panicked"))??;
    let _ = stop_tx.send(());
    server.await??;
    pipe.await??;

    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "API bench: {} clients, {:.1}s, {} incident reads ({} non-200), {:.0} req/s",
        o.clients,
        elapsed,
        hist.len(),
        errors,
        hist.len() as f64 / elapsed
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0
    );
    println!(
        "concurrent ingest: {} POST /v1/ingest of {} envelopes ({:.0} envelopes/s)",
        ingested.load(Ordering::Relaxed),
        o.ingest_batch,
        (ingested.load(Ordering::Relaxed) * o.ingest_batch as u64) as f64 / elapsed
    );
    println!(
        "access audit: {}",
        if o.access_audit {
            format!(
                "{} access records ledgered",
                audited.load(Ordering::Relaxed)
            )
        } else {
            "off (--no-access-audit)".into()
        }
    );
    if cfg.data_dir == tmp {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}
