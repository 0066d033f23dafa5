//! Per-minute batch latency summaries in `<data_dir>/latency.ndjson`, so a report built
//! from the data dir alone (`dunes report compliance`) can evidence processing latency.
//! One line per minute with batches: counts and the batch time percentiles of that minute.
//! Appended and flushed, not fsynced (a crash loses at most the current minute).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};
use crate::sinks::files::NdjsonWriter;

/// File name in the data dir.
pub const LATENCY_FILE: &str = "latency.ndjson";

/// Batch times kept per minute for the percentiles (more batches are counted, not kept).
const MAX_SAMPLES: usize = 100_000;

/// One line of `latency.ndjson`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyMinute {
    /// Start of the minute (UTC).
    pub minute: DateTime<Utc>,
    pub batches: u64,
    pub events: u64,
    /// Batch processing time (decode to durable ledger, outputs and state), milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub(crate) struct LatencyLog {
    out: NdjsonWriter,
    minute: Option<i64>,
    samples: Vec<f64>,
    batches: u64,
    events: u64,
}

impl LatencyLog {
    pub(crate) fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            out: NdjsonWriter::open(&data_dir.join(LATENCY_FILE))?,
            minute: None,
            samples: Vec::new(),
            batches: 0,
            events: 0,
        })
    }

    /// One batch of `events` that took `secs`, finished at `now`.
    pub(crate) fn observe(&mut self, now: DateTime<Utc>, secs: f64, events: u64) -> Result<()> {
        let m = now.timestamp().div_euclid(60);
        if self.minute.is_some_and(|cur| cur != m) {
            self.flush()?;
        }
        self.minute = Some(m);
        self.batches += 1;
        self.events += events;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(secs * 1e3);
        }
        Ok(())
    }

    /// Writes the current minute's line (if any batch was seen).
    pub(crate) fn flush(&mut self) -> Result<()> {
        let (Some(m), false) = (self.minute, self.samples.is_empty()) else {
            return Ok(());
        };
        self.samples.sort_by(f64::total_cmp);
        let line = LatencyMinute {
            minute: DateTime::<Utc>::from_timestamp(m * 60, 0).unwrap_or_default(),
            batches: self.batches,
            events: self.events,
            p50_ms: percentile(&self.samples, 0.50),
            p99_ms: percentile(&self.samples, 0.99),
            max_ms: self.samples.last().copied().unwrap_or_default(),
        };
        let json = serde_json::to_vec(&line).context("cannot encode a latency line")?;
        self.out.write_line(&json)?;
        self.out.flush()?;
        self.samples.clear();
        (self.batches, self.events, self.minute) = (0, 0, None);
        Ok(())
    }
}

/// Nearest-rank percentile of sorted `v` (non-empty).
fn percentile(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The minutes of `latency.ndjson` that start in `[from, to)`; unreadable lines are
/// skipped, a missing file is no minutes.
pub fn read_minutes(
    data_dir: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> std::io::Result<Vec<LatencyMinute>> {
    let text = match std::fs::read_to_string(data_dir.join(LATENCY_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<LatencyMinute>(l).ok())
        .filter(|m| m.minute >= from && m.minute < to)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_minute_with_nearest_rank_percentiles() {
        let d = tempfile::tempdir().expect("tmp");
        let mut log = LatencyLog::open(d.path()).expect("open");
        let t0 = DateTime::parse_from_rfc3339("2026-12-04T10:00:05Z")
            .expect("t")
            .with_timezone(&Utc);
        for i in 1..=100u32 {
            log.observe(t0, f64::from(i) / 1000.0, 10).expect("observe");
        }
        log.observe(t0 + chrono::Duration::seconds(60), 0.5, 3)
            .expect("next minute flushes the first");
        log.flush().expect("flush");
        let all = read_minutes(
            d.path(),
            t0 - chrono::Duration::hours(1),
            t0 + chrono::Duration::hours(1),
        )
        .expect("read");
        assert_eq!(all.len(), 2);
        assert_eq!(
            (
                all[0].batches,
                all[0].events,
                all[0].p50_ms,
                all[0].p99_ms,
                all[0].max_ms
            ),
            (100, 1000, 50.0, 99.0, 100.0)
        );
        assert_eq!(all[0].minute.to_rfc3339(), "2026-12-04T10:00:00+00:00");
        assert_eq!((all[1].batches, all[1].max_ms), (1, 500.0));
        let later = read_minutes(
            d.path(),
            t0 + chrono::Duration::seconds(30),
            t0 + chrono::Duration::hours(1),
        )
        .expect("read");
        assert_eq!(later.len(), 1, "the period filter is on the minute's start");
    }
}
