//! `dunes bench soak`: the full pipeline for a fixed wall time at a fixed
//! rate, sampling its resident memory, batch latency and state size.
//!
//! Traffic: the real-SDK corpus, copied over and over. Copy *k* starts
//! *k* × δ later in event time than the corpus, with fresh event and session
//! ids, principals, OAuth client ids and token fingerprints (`.k<k>`: each
//! copy is other users of the same servers) and token expiries shifted
//! alike; δ = corpus span ÷ copies live at once, so `live_sessions` sessions
//! are open at any event time; the copies are merged in event-time order. Events are handed to the pipeline
//! in batches paced to `rate` events/s of wall time.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dunes_detect::IncidentStore;
use dunes_ingest::RawRecord;
use dunes_pipeline::{Config, Pipeline};
use hdrhistogram::Histogram;
use serde_json::Value;

pub struct Soak {
    pub minutes: f64,
    pub rate: u64,
    pub live_sessions: u64,
    pub corpus: PathBuf,
    pub sample_secs: u64,
    pub batch_size: usize,
    pub csv: Option<PathBuf>,
}

/// One corpus line (kept as text: parsed trees of the whole corpus would
/// weigh more than the pipeline whose memory is measured).
struct Template {
    ts: i64,
    line: Box<str>,
}

fn load(path: &PathBuf) -> anyhow::Result<Vec<Template>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(f)))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(ts) = value["ts"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        out.push(Template {
            ts: ts.timestamp_micros(),
            line: line.into_boxed_str(),
        });
    }
    out.sort_by_key(|t| t.ts);
    anyhow::ensure!(!out.is_empty(), "{}: no envelopes", path.display());
    Ok(out)
}

/// The merged, endless stream of shifted copies.
struct Copies {
    t: Vec<Template>,
    delta_us: i64,
    heap: BinaryHeap<Reverse<(i64, u64, usize)>>,
}

impl Copies {
    fn new(t: Vec<Template>, delta_us: i64) -> Self {
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((t[0].ts, 0, 0)));
        Copies { t, delta_us, heap }
    }

    fn next_line(&mut self) -> Option<Vec<u8>> {
        let Reverse((ts, k, i)) = self.heap.pop()?;
        if i + 1 < self.t.len() {
            let next = self.t[i + 1].ts + k as i64 * self.delta_us;
            self.heap.push(Reverse((next, k, i + 1)));
        }
        if i == 0 {
            let k2 = k + 1;
            self.heap
                .push(Reverse((self.t[0].ts + k2 as i64 * self.delta_us, k2, 0)));
        }
        let shift = k as i64 * self.delta_us;
        let mut v: Value = serde_json::from_str(&self.t[i].line).ok()?;
        let dt = chrono::DateTime::from_timestamp_micros(ts)?;
        v["ts"] = dt
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into();
        for key in ["event_id", "session_id"] {
            if let Some(s) = v[key].as_str() {
                v[key] = format!("{s}.k{k}").into();
            }
        }
        // each copy is other users of the same servers: own principals and tokens
        if let Some(auth) = v.get_mut("auth").and_then(Value::as_object_mut) {
            if let Some(e) = auth.get("exp").and_then(Value::as_i64) {
                auth.insert("exp".into(), (e + shift / 1_000_000).into());
            }
            for key in ["sub", "client_id"] {
                if let Some(x) = auth.get(key).and_then(Value::as_str) {
                    let x = format!("{x}.k{k}");
                    auth.insert(key.into(), x.into());
                }
            }
            if let Some(fp) = auth.get("token_fp").and_then(Value::as_str) {
                let fp = format!("{fp}{k:06x}");
                auth.insert("token_fp".into(), fp.into());
            }
        }
        serde_json::to_vec(&v).ok()
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

pub async fn run(mut cfg: Config, s: Soak) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("dunes-soak-{}", std::process::id()));
    if cfg.data_dir == Config::default().data_dir {
        cfg.data_dir = tmp.clone();
    }
    std::fs::create_dir_all(&cfg.data_dir)?;
    let templates = load(&s.corpus)?;
    let sessions: BTreeSet<String> = templates
        .iter()
        .filter_map(|t| {
            let v: Value = serde_json::from_str(&t.line).ok()?;
            v["session_id"].as_str().map(str::to_string)
        })
        .collect();
    let per_copy = sessions.len().max(1) as u64;
    let span = templates[templates.len() - 1].ts - templates[0].ts;
    let live_copies = s.live_sessions.div_ceil(per_copy).max(1);
    let delta_us = (span / live_copies as i64).max(1);
    eprintln!(
        "soak: {} envelopes, {per_copy} sessions, span {:.1} h per copy; a new copy every {:.1} s of event time, {live_copies} copies ({} sessions) open at once",
        templates.len(),
        span as f64 / 3.6e9,
        delta_us as f64 / 1e6,
        live_copies * per_copy
    );
    drop(sessions);
    let mut copies = Copies::new(templates, delta_us);
    let store = Arc::new(IncidentStore::new());
    store.set_limit(cfg.detect.max_incidents_in_memory);
    let mut pipeline = Pipeline::open(&cfg, store.clone(), None).await?;
    let mut csv: Box<dyn Write> = match &s.csv {
        Some(p) => Box::new(std::fs::File::create(p)?),
        None => Box::new(std::io::stdout()),
    };
    writeln!(
        csv,
        "elapsed_s,events,events_per_s,rss_mib,batch_p50_ms,batch_p99_ms,batch_max_ms,behind_s,state_keys,state_events,incidents"
    )?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
    let total = Duration::from_secs_f64(s.minutes * 60.0);
    let started = Instant::now();
    let mut next_sample = Duration::from_secs(s.sample_secs.max(1));
    let (mut sent, mut sent_at_sample) = (0u64, 0u64);
    let mut points: Vec<(f64, f64, f64)> = Vec::new(); // (t, rss MiB, p99 ms)
    let mut line_no = 0u64;
    while started.elapsed() < total {
        let mut batch = Vec::with_capacity(s.batch_size);
        while batch.len() < s.batch_size {
            let Some(bytes) = copies.next_line() else {
                break;
            };
            line_no += 1;
            batch.push(RawRecord::file_line(bytes, "soak", line_no));
        }
        // pace: the batch is due when its last event is, at `rate`
        let due = Duration::from_secs_f64((sent + batch.len() as u64) as f64 / s.rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let behind = started.elapsed().saturating_sub(due).as_secs_f64();
        sent += batch.len() as u64;
        let t = Instant::now();
        pipeline.process(batch).await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        let el = started.elapsed();
        if el >= next_sample {
            let secs = el.as_secs_f64();
            let rss = rss_kib() as f64 / 1024.0;
            let (keys, events) = pipeline.state_size();
            let (p50, p99, max) = crate::bench::percentiles_ms(&hist);
            writeln!(
                csv,
                "{secs:.1},{sent},{:.0},{rss:.1},{p50:.1},{p99:.1},{max:.1},{behind:.2},{keys},{events},{}",
                (sent - sent_at_sample) as f64 / s.sample_secs.max(1) as f64,
                store.len()
            )?;
            csv.flush()?;
            points.push((secs, rss, p99));
            hist.reset();
            sent_at_sample = sent;
            next_sample += Duration::from_secs(s.sample_secs.max(1));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (stats, _) = pipeline.close()?;
    let half: Vec<&(f64, f64, f64)> = points.iter().filter(|p| p.0 >= elapsed / 2.0).collect();
    let rss_slope = slope(&half.iter().map(|p| (p.0 / 60.0, p.1)).collect::<Vec<_>>());
    let p99_slope = slope(&half.iter().map(|p| (p.0 / 60.0, p.2)).collect::<Vec<_>>());
    let max_rss = points.iter().map(|p| p.1).fold(0.0, f64::max);
    println!(
        "dunes bench soak: {:.1} min at {} events/s target: {} events ({:.0}/s), {} incidents, peak RSS {max_rss:.0} MiB",
        elapsed / 60.0,
        s.rate,
        stats.envelopes,
        stats.envelopes as f64 / elapsed,
        stats.incidents
    );
    println!(
        "  second half: RSS trend {rss_slope:+.2} MiB/min, batch p99 trend {p99_slope:+.2} ms/min ({} samples)",
        half.len()
    );
    if cfg.data_dir == tmp {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}
