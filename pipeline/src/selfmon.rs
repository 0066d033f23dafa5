//! Self-monitoring: the DUNES standard's automated response trigger
//! "performance degradation beyond thresholds" (§10.1). After every batch
//! the pipeline's own figures over the last `window_batches` batches are
//! compared with thresholds:
//!
//! * `batch_p99_ms`: the p99 of the batch latency (decode to durable);
//! * `dead_letter_share`: rejected records ÷ all records;
//! * `forged_tokens_per_min`: bearer tokens the API refused as forgeries
//!   (bad signature, unknown key, wrong algorithm) in the last minute, a
//!   cryptography-compromise indicator (§10.1) raised at `crypto_level`
//!   (default 3, emergency) on the first batch over the threshold.
//!
//! With hysteresis: an incident is raised after `raise_after` consecutive
//! batches over the threshold, and resolved by the monitor itself (an
//! `action` record, actor `dunes-self-monitor`) after `clear_after`
//! consecutive batches under `clear_ratio` × the threshold. One open
//! incident per metric at a time.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use dunes_detect::{Incident, IncidentStatus, Level, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// `[self_monitor]` in `dunes.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfMonitorSection {
    pub enabled: bool,
    /// Batches the figures are computed over.
    pub window_batches: usize,
    /// Raise when the window's batch-latency p99 exceeds this.
    pub batch_p99_ms: u64,
    /// Raise when this share of the window's records is dead-lettered.
    pub dead_letter_share: f64,
    /// Consecutive batches over a threshold before an incident is raised.
    pub raise_after: u32,
    /// A metric is back to normal under `clear_ratio` × its threshold…
    pub clear_ratio: f64,
    /// … for this many consecutive batches; then its incident is resolved.
    pub clear_after: u32,
    /// Level of the incidents (1, 2 or 3).
    pub level: u8,
    /// Raise when the API refused this many forged bearer tokens within a minute.
    pub forged_tokens_per_min: u64,
    /// Level of the cryptography-compromise incidents.
    pub crypto_level: u8,
}

impl Default for SelfMonitorSection {
    fn default() -> Self {
        SelfMonitorSection {
            enabled: true,
            window_batches: 50,
            batch_p99_ms: 5_000,
            dead_letter_share: 0.5,
            raise_after: 3,
            clear_ratio: 0.5,
            clear_after: 10,
            level: 2,
            forged_tokens_per_min: 20,
            crypto_level: 3,
        }
    }
}

impl SelfMonitorSection {
    pub fn check(&self) -> Result<(), String> {
        if self.window_batches == 0 || self.raise_after == 0 || self.clear_after == 0 {
            return Err("window_batches, raise_after and clear_after must be at least 1".into());
        }
        if !(self.clear_ratio > 0.0 && self.clear_ratio <= 1.0) {
            return Err("clear_ratio must be in (0, 1]".into());
        }
        if !(self.dead_letter_share > 0.0 && self.dead_letter_share <= 1.0) {
            return Err("dead_letter_share must be in (0, 1]".into());
        }
        if !(1..=3).contains(&self.level) || !(1..=3).contains(&self.crypto_level) {
            return Err("level and crypto_level must be 1, 2 or 3".into());
        }
        if self.forged_tokens_per_min == 0 {
            return Err("forged_tokens_per_min must be at least 1".into());
        }
        Ok(())
    }
}

/// What the monitor asks the pipeline to do after a batch.
#[derive(Debug)]
pub(crate) enum Signal {
    Raise(Box<Incident>),
    Clear { incident_id: String, note: String },
}

#[derive(Default)]
struct MetricState {
    over: u32,
    under: u32,
    open: Option<String>,
}

struct Batch {
    ms: f64,
    records: u64,
    rejected: u64,
}

pub(crate) struct SelfMonitor {
    cfg: SelfMonitorSection,
    window: VecDeque<Batch>,
    /// (time, forged tokens so far) over the last minute.
    forged: VecDeque<(DateTime<Utc>, u64)>,
    metrics: BTreeMap<&'static str, MetricState>,
}

const LATENCY: &str = "batch_latency_p99";
const DEAD_LETTER: &str = "dead_letter_share";
const FORGED: &str = "forged_tokens_per_min";

impl SelfMonitor {
    pub(crate) fn new(cfg: SelfMonitorSection) -> Self {
        SelfMonitor {
            window: VecDeque::with_capacity(cfg.window_batches),
            forged: VecDeque::new(),
            cfg,
            metrics: BTreeMap::new(),
        }
    }

    /// Observes one batch (`forged_total`: [`dunes_api::forged_tokens`]);
    /// returns the incidents to raise and to resolve.
    pub(crate) fn observe(
        &mut self,
        batch_secs: f64,
        accepted: u64,
        rejected: u64,
        forged_total: u64,
        now: DateTime<Utc>,
    ) -> Vec<Signal> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        if self.window.len() == self.cfg.window_batches {
            self.window.pop_front();
        }
        self.window.push_back(Batch {
            ms: batch_secs * 1000.0,
            records: accepted + rejected,
            rejected,
        });
        let mut ms: Vec<f64> = self.window.iter().map(|b| b.ms).collect();
        ms.sort_by(f64::total_cmp);
        let p99 = ms
            .get(((ms.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        let records: u64 = self.window.iter().map(|b| b.records).sum();
        let dead: u64 = self.window.iter().map(|b| b.rejected).sum();
        let share = if records == 0 {
            0.0
        } else {
            dead as f64 / records as f64
        };
        while self
            .forged
            .front()
            .is_some_and(|(t, _)| now - *t > chrono::Duration::seconds(60))
        {
            self.forged.pop_front();
        }
        let forged_min =
            forged_total.saturating_sub(self.forged.front().map_or(forged_total, |f| f.1));
        self.forged.push_back((now, forged_total));
        let mut out = Vec::new();
        let checks = [
            (
                LATENCY,
                p99,
                self.cfg.batch_p99_ms as f64,
                "ms",
                self.cfg.raise_after,
            ),
            (
                DEAD_LETTER,
                share,
                self.cfg.dead_letter_share,
                "",
                self.cfg.raise_after,
            ),
            (
                FORGED,
                forged_min as f64,
                self.cfg.forged_tokens_per_min as f64,
                "",
                1,
            ),
        ];
        for (metric, value, threshold, unit, raise_after) in checks {
            let st = self.metrics.entry(metric).or_default();
            match &st.open {
                None => {
                    st.over = if value >= threshold && (metric == FORGED || value > threshold) {
                        st.over + 1
                    } else {
                        0
                    };
                    if st.over >= raise_after {
                        st.over = 0;
                        st.under = 0;
                        let inc = incident(&self.cfg, metric, value, threshold, unit, now);
                        st.open = Some(inc.incident_id.clone());
                        out.push(Signal::Raise(Box::new(inc)));
                    }
                }
                Some(id) => {
                    let clear_below = threshold * self.cfg.clear_ratio;
                    st.under = if value < clear_below { st.under + 1 } else { 0 };
                    if st.under >= self.cfg.clear_after {
                        out.push(Signal::Clear {
                            incident_id: id.clone(),
                            note: format!(
                                "{metric} back to {value:.3}{unit} (under {clear_below:.3}{unit} for {} batches)",
                                self.cfg.clear_after
                            ),
                        });
                        st.open = None;
                        st.under = 0;
                    }
                }
            }
        }
        out
    }
}

fn incident(
    cfg: &SelfMonitorSection,
    metric: &'static str,
    value: f64,
    threshold: f64,
    unit: &str,
    now: DateTime<Utc>,
) -> Incident {
    let level = match if metric == FORGED {
        cfg.crypto_level
    } else {
        cfg.level
    } {
        1 => Level::Automated,
        3 => Level::Emergency,
        _ => Level::Analyst,
    };
    let title = match metric {
        LATENCY => {
            format!("Monitor degraded: batch latency p99 {value:.0} ms over {threshold:.0} ms")
        }
        FORGED => format!(
            "Cryptography compromise indicator: {value:.0} forged bearer tokens in the last minute (threshold {threshold:.0})"
        ),
        _ => format!(
            "Monitor degraded: {:.1} % of records dead-lettered (threshold {:.1} %)",
            value * 100.0,
            threshold * 100.0
        ),
    };
    let mut evidence = Map::new();
    evidence.insert("metric".into(), json!(metric));
    evidence.insert("value".into(), json!(value));
    evidence.insert("threshold".into(), json!(threshold));
    evidence.insert("unit".into(), json!(unit));
    evidence.insert("window_batches".into(), json!(cfg.window_batches));
    evidence.insert("raise_after".into(), json!(cfg.raise_after));
    let rule_id = format!("self.{metric}");
    let id = blake3::hash(format!("{rule_id}\0{}", now.timestamp_micros()).as_bytes());
    Incident {
        incident_id: format!("inc-{}", &id.to_hex()[..24]),
        rule_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            serde_json::to_vec(cfg).unwrap_or_default(),
        )),
        rule_id,
        level,
        severity: if metric == FORGED {
            Severity::Critical
        } else {
            Severity::High
        },
        title,
        tags: vec!["owasp-mcp:MCP08".into(), "atlas:AML.T0029".into()],
        entity: BTreeMap::from([
            ("monitor".to_string(), Value::from("dunes")),
            ("metric".to_string(), Value::from(metric)),
        ]),
        session_id: None,
        server_id: None,
        first_ts: now,
        last_ts: now,
        event_ids: Vec::new(),
        match_count: 1,
        evidence: vec![evidence],
        status: IncidentStatus::Open,
        detected_at: now,
        backfill: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SelfMonitorSection {
        SelfMonitorSection {
            window_batches: 4,
            batch_p99_ms: 100,
            raise_after: 2,
            clear_after: 3,
            ..SelfMonitorSection::default()
        }
    }

    #[test]
    fn raises_after_consecutive_breaches_and_clears_with_hysteresis() {
        let mut m = SelfMonitor::new(cfg());
        let now = Utc::now();
        assert!(m.observe(0.01, 10, 0, 0, now).is_empty());
        assert!(
            m.observe(0.5, 10, 0, 0, now).is_empty(),
            "one slow batch is not enough"
        );
        let s = m.observe(0.5, 10, 0, 0, now);
        let id = match s.as_slice() {
            [Signal::Raise(inc)] => {
                assert_eq!(inc.rule_id, "self.batch_latency_p99");
                assert_eq!(inc.level, Level::Analyst);
                inc.incident_id.clone()
            }
            other => panic!("{other:?}"),
        };
        // still slow: no second incident
        assert!(m.observe(0.5, 10, 0, 0, now).is_empty());
        // fast again, but the slow batches are still in the 4-batch window
        for _ in 0..3 {
            assert!(m.observe(0.01, 10, 0, 0, now).is_empty());
        }
        // window clean: p99 10 ms < 50 ms; needs 3 such batches
        assert!(m.observe(0.01, 10, 0, 0, now).is_empty());
        assert!(m.observe(0.01, 10, 0, 0, now).is_empty());
        match m.observe(0.01, 10, 0, 0, now).as_slice() {
            [Signal::Clear { incident_id, .. }] => assert_eq!(incident_id, &id),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_burst_of_forged_tokens_is_an_emergency_at_once() {
        let mut m = SelfMonitor::new(cfg());
        let t0 = Utc::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        assert!(
            m.observe(0.01, 10, 0, 100, at(0)).is_empty(),
            "history before start"
        );
        assert!(
            m.observe(0.01, 10, 0, 110, at(10)).is_empty(),
            "10 in a minute"
        );
        let id = match m.observe(0.01, 10, 0, 125, at(20)).as_slice() {
            [Signal::Raise(inc)] => {
                assert_eq!(inc.rule_id, "self.forged_tokens_per_min");
                assert_eq!(inc.level, Level::Emergency);
                assert_eq!(inc.severity, Severity::Critical);
                inc.incident_id.clone()
            }
            other => panic!("{other:?}"),
        };
        // quiet for a while: the 25 age out of the minute, then 3 calm batches
        let mut cleared = None;
        for s in 1..=10 {
            if let [Signal::Clear { incident_id, .. }] =
                m.observe(0.01, 10, 0, 125, at(20 + 30 * s)).as_slice()
            {
                cleared = Some((s, incident_id.clone()));
                break;
            }
        }
        let (s, cid) = cleared.expect("cleared");
        assert_eq!(cid, id);
        assert!(s >= 3, "{s}");
    }

    #[test]
    fn dead_letter_share_and_hovering_near_the_threshold() {
        let mut m = SelfMonitor::new(cfg());
        let now = Utc::now();
        assert!(m.observe(0.01, 1, 9, 0, now).is_empty());
        assert!(matches!(
            m.observe(0.01, 1, 9, 0, now).as_slice(),
            [Signal::Raise(i)] if i.rule_id == "self.dead_letter_share"
        ));
        // 40 % dead: under the threshold but not under half of it: stays open
        for _ in 0..10 {
            assert!(m.observe(0.01, 6, 4, 0, now).is_empty());
        }
        assert!(SelfMonitorSection::default().check().is_ok());
        assert!(
            SelfMonitorSection {
                clear_ratio: 0.0,
                ..cfg()
            }
            .check()
            .is_err()
        );
    }
}
