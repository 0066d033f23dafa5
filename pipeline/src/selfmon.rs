//! Self-monitoring: the DUNES standard's automated response triggers
//! "performance degradation beyond thresholds" and "cryptography compromise
//! indicators" (§10.1). After every batch the pipeline's own figures are
//! compared with thresholds:
//!
//! * `batch_p99_ms`: the p99 of the batch latency (decode to durable) over
//!   the last `window_batches` batches;
//! * `dead_letter_share`: rejected records ÷ all records over that window;
//! * `ingest_lag_s`: how long the oldest record of the last completed batch
//!   waited from arrival (a Kafka record: its broker timestamp; a file line
//!   or an HTTP body: when it was handed to the pipeline) until it was
//!   durable and acknowledged;
//! * `checkpoint_age_s`: how long ledger records have been waiting for a
//!   signed checkpoint;
//! * `blocked_requests_per_min`: API requests refused for their volume or
//!   shape (429, 413, 408, 415) in the last minute;
//!
//! and, raised at `crypto_level` (default 3, emergency) on the first batch
//! over the threshold:
//!
//! * `forged_tokens_per_min`: bearer tokens refused as forgeries (bad
//!   signature, unknown key, wrong algorithm) in the last minute;
//! * any token signed by a revoked token key (`[auth] revoked_token_keys`);
//! * any ledger verification failure (`GET /api/v1/ledger/verify`: a
//!   checkpoint signature, a revoked signing key, a hash chain or a proof).
//!
//! With hysteresis: an incident is raised after `raise_after` consecutive
//! batches over the threshold (the per-minute counters: at once), and
//! resolved by the monitor itself (an `action` record, actor
//! `dunes-self-monitor`) after `clear_after` consecutive batches under
//! `clear_ratio` × the threshold. A revoked key in use and a failed
//! verification are never resolved automatically: an analyst closes them.
//! One open incident per metric at a time.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use dunes_api::SecurityCounts;
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
    /// Raise when a batch's oldest record took longer than this from
    /// arrival to durable.
    pub ingest_lag_s: u64,
    /// Raise when ledger records wait longer than this for a signed checkpoint.
    pub checkpoint_age_s: u64,
    /// Raise when the API refused this many requests (rate, size, slowness)
    /// within a minute.
    pub blocked_requests_per_min: u64,
    /// Consecutive batches over a threshold before an incident is raised.
    pub raise_after: u32,
    /// A metric is back to normal under `clear_ratio` × its threshold…
    pub clear_ratio: f64,
    /// … for this many consecutive batches; then its incident is resolved.
    pub clear_after: u32,
    /// Level of the performance incidents (1, 2 or 3).
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
            ingest_lag_s: 120,
            checkpoint_age_s: 600,
            blocked_requests_per_min: 300,
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
        if self.forged_tokens_per_min == 0
            || self.blocked_requests_per_min == 0
            || self.ingest_lag_s == 0
            || self.checkpoint_age_s == 0
        {
            return Err("forged_tokens_per_min, blocked_requests_per_min, ingest_lag_s and checkpoint_age_s must be at least 1".into());
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

/// The figures of one batch (or of an idle moment: `batch_secs` None, only
/// the counters and the checkpoint age are judged).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub batch_secs: Option<f64>,
    pub accepted: u64,
    pub rejected: u64,
    /// [`dunes_api::security_counts`] now.
    pub security: SecurityCounts,
    /// Arrival to durable, oldest record of the last completed batch.
    pub ingest_lag_secs: Option<f64>,
    /// [`dunes_ledger::Ledger::unsigned_for`].
    pub unsigned_secs: Option<f64>,
    pub now: DateTime<Utc>,
}

impl Sample {
    #[cfg(test)]
    fn at(batch_secs: f64, accepted: u64, rejected: u64, now: DateTime<Utc>) -> Sample {
        Sample {
            batch_secs: Some(batch_secs),
            accepted,
            rejected,
            security: SecurityCounts::default(),
            ingest_lag_secs: None,
            unsigned_secs: None,
            now,
        }
    }
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
    /// (time, counters) over the last minute.
    minute: VecDeque<(DateTime<Utc>, SecurityCounts)>,
    metrics: BTreeMap<&'static str, MetricState>,
}

const LATENCY: &str = "batch_latency_p99";
const DEAD_LETTER: &str = "dead_letter_share";
const INGEST_LAG: &str = "ingest_lag";
const CHECKPOINT_AGE: &str = "checkpoint_age";
const BLOCKED: &str = "blocked_requests_per_min";
const FORGED: &str = "forged_tokens_per_min";
const REVOKED: &str = "revoked_token_key_used";
const VERIFY: &str = "ledger_verification_failed";

/// One comparison of one batch.
struct Check {
    metric: &'static str,
    value: f64,
    threshold: f64,
    unit: &'static str,
    raise_after: u32,
    /// Counters fire at `value >= threshold`, gauges above it.
    at_least: bool,
    crypto: bool,
    /// Never resolved by the monitor.
    sticky: bool,
}

impl SelfMonitor {
    pub(crate) fn new(cfg: SelfMonitorSection) -> Self {
        SelfMonitor {
            window: VecDeque::with_capacity(cfg.window_batches),
            minute: VecDeque::new(),
            cfg,
            metrics: BTreeMap::new(),
        }
    }

    /// Observes one batch; returns the incidents to raise and to resolve.
    pub(crate) fn observe(&mut self, s: Sample) -> Vec<Signal> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        if let Some(secs) = s.batch_secs {
            if self.window.len() == self.cfg.window_batches {
                self.window.pop_front();
            }
            self.window.push_back(Batch {
                ms: secs * 1000.0,
                records: s.accepted + s.rejected,
                rejected: s.rejected,
            });
        }
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
            .minute
            .front()
            .is_some_and(|(t, _)| s.now - *t > chrono::Duration::seconds(60))
        {
            self.minute.pop_front();
        }
        let base = self.minute.front().map_or(s.security, |m| m.1);
        self.minute.push_back((s.now, s.security));
        let per_min =
            |f: fn(&SecurityCounts) -> u64| f(&s.security).saturating_sub(f(&base)) as f64;
        let c = &self.cfg;
        let gauge = |metric, value, threshold, unit| Check {
            metric,
            value,
            threshold,
            unit,
            raise_after: c.raise_after,
            at_least: false,
            crypto: false,
            sticky: false,
        };
        let counter = |metric, value, threshold: u64, crypto, sticky| Check {
            metric,
            value,
            threshold: threshold as f64,
            unit: "",
            raise_after: 1,
            at_least: true,
            crypto,
            sticky,
        };
        let checks = [
            gauge(LATENCY, p99, c.batch_p99_ms as f64, "ms"),
            gauge(DEAD_LETTER, share, c.dead_letter_share, ""),
            gauge(
                INGEST_LAG,
                s.ingest_lag_secs.unwrap_or(0.0),
                c.ingest_lag_s as f64,
                "s",
            ),
            gauge(
                CHECKPOINT_AGE,
                s.unsigned_secs.unwrap_or(0.0),
                c.checkpoint_age_s as f64,
                "s",
            ),
            counter(
                BLOCKED,
                per_min(|x| x.blocked_requests),
                c.blocked_requests_per_min,
                false,
                false,
            ),
            counter(
                FORGED,
                per_min(|x| x.forged_tokens),
                c.forged_tokens_per_min,
                true,
                false,
            ),
            counter(REVOKED, per_min(|x| x.revoked_key_tokens), 1, true, true),
            counter(VERIFY, per_min(|x| x.ledger_verify_failures), 1, true, true),
        ];
        let mut out = Vec::new();
        for ch in checks {
            if s.batch_secs.is_none() && matches!(ch.metric, LATENCY | DEAD_LETTER | INGEST_LAG) {
                continue; // no batch: nothing new about them
            }
            let st = self.metrics.entry(ch.metric).or_default();
            let over = if ch.at_least {
                ch.value >= ch.threshold
            } else {
                ch.value > ch.threshold
            };
            match &st.open {
                None => {
                    st.over = if over { st.over + 1 } else { 0 };
                    if st.over >= ch.raise_after {
                        st.over = 0;
                        st.under = 0;
                        let inc = incident(&self.cfg, &ch, s.now);
                        st.open = Some(inc.incident_id.clone());
                        out.push(Signal::Raise(Box::new(inc)));
                    }
                }
                Some(_) if ch.sticky => {}
                Some(id) => {
                    let clear_below = ch.threshold * self.cfg.clear_ratio;
                    st.under = if ch.value < clear_below {
                        st.under + 1
                    } else {
                        0
                    };
                    if st.under >= self.cfg.clear_after {
                        out.push(Signal::Clear {
                            incident_id: id.clone(),
                            note: format!(
                                "{} back to {:.3}{unit} (under {clear_below:.3}{unit} for {} batches)",
                                ch.metric,
                                ch.value,
                                self.cfg.clear_after,
                                unit = ch.unit,
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

fn incident(cfg: &SelfMonitorSection, ch: &Check, now: DateTime<Utc>) -> Incident {
    let level = match if ch.crypto {
        cfg.crypto_level
    } else {
        cfg.level
    } {
        1 => Level::Automated,
        3 => Level::Emergency,
        _ => Level::Analyst,
    };
    let (value, threshold) = (ch.value, ch.threshold);
    let title = match ch.metric {
        LATENCY => {
            format!("Monitor degraded: batch latency p99 {value:.0} ms over {threshold:.0} ms")
        }
        DEAD_LETTER => format!(
            "Monitor degraded: {:.1} % of records dead-lettered (threshold {:.1} %)",
            value * 100.0,
            threshold * 100.0
        ),
        INGEST_LAG => format!(
            "Monitor falling behind: records took {value:.0} s from arrival to the ledger (threshold {threshold:.0} s)"
        ),
        CHECKPOINT_AGE => format!(
            "Ledger records unsigned for {value:.0} s: no signed checkpoint (threshold {threshold:.0} s)"
        ),
        BLOCKED => format!(
            "API refused {value:.0} requests in the last minute for rate, size or slowness (threshold {threshold:.0})"
        ),
        FORGED => format!(
            "Cryptography compromise indicator: {value:.0} forged bearer tokens in the last minute (threshold {threshold:.0})"
        ),
        REVOKED => format!(
            "Cryptography compromise indicator: {value:.0} bearer token(s) signed by a REVOKED token key presented"
        ),
        _ => "Cryptography compromise indicator: the ledger failed verification (checkpoint signature, revoked signing key, hash chain or proof)".to_string(),
    };
    let mut evidence = Map::new();
    evidence.insert("metric".into(), json!(ch.metric));
    evidence.insert("value".into(), json!(value));
    evidence.insert("threshold".into(), json!(threshold));
    evidence.insert("unit".into(), json!(ch.unit));
    evidence.insert("window_batches".into(), json!(cfg.window_batches));
    evidence.insert("raise_after".into(), json!(ch.raise_after));
    let rule_id = format!("self.{}", ch.metric);
    let id = blake3::hash(format!("{rule_id}\0{}", now.timestamp_micros()).as_bytes());
    Incident {
        incident_id: format!("inc-{}", &id.to_hex()[..24]),
        rule_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            serde_json::to_vec(cfg).unwrap_or_default(),
        )),
        rule_id,
        level,
        severity: if ch.crypto {
            Severity::Critical
        } else {
            Severity::High
        },
        title,
        tags: if ch.crypto {
            vec!["owasp-mcp:MCP07".into(), "atlas:AML.T0012".into()]
        } else {
            vec!["owasp-mcp:MCP08".into(), "atlas:AML.T0029".into()]
        },
        entity: BTreeMap::from([
            ("monitor".to_string(), Value::from("dunes")),
            ("metric".to_string(), Value::from(ch.metric)),
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

    fn forged(secs: f64, ok: u64, bad: u64, forged: u64, now: DateTime<Utc>) -> Sample {
        let mut s = Sample::at(secs, ok, bad, now);
        s.security.forged_tokens = forged;
        s
    }

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
        assert!(m.observe(Sample::at(0.01, 10, 0, now)).is_empty());
        assert!(
            m.observe(Sample::at(0.5, 10, 0, now)).is_empty(),
            "one slow batch is not enough"
        );
        let s = m.observe(Sample::at(0.5, 10, 0, now));
        let id = match s.as_slice() {
            [Signal::Raise(inc)] => {
                assert_eq!(inc.rule_id, "self.batch_latency_p99");
                assert_eq!(inc.level, Level::Analyst);
                inc.incident_id.clone()
            }
            other => panic!("{other:?}"),
        };
        // still slow: no second incident
        assert!(m.observe(Sample::at(0.5, 10, 0, now)).is_empty());
        // fast again, but the slow batches are still in the 4-batch window
        for _ in 0..3 {
            assert!(m.observe(Sample::at(0.01, 10, 0, now)).is_empty());
        }
        // window clean: p99 10 ms < 50 ms; needs 3 such batches
        assert!(m.observe(Sample::at(0.01, 10, 0, now)).is_empty());
        assert!(m.observe(Sample::at(0.01, 10, 0, now)).is_empty());
        match m.observe(Sample::at(0.01, 10, 0, now)).as_slice() {
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
            m.observe(forged(0.01, 10, 0, 100, at(0))).is_empty(),
            "history before start"
        );
        assert!(
            m.observe(forged(0.01, 10, 0, 110, at(10))).is_empty(),
            "10 in a minute"
        );
        let id = match m.observe(forged(0.01, 10, 0, 125, at(20))).as_slice() {
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
            if let [Signal::Clear { incident_id, .. }] = m
                .observe(forged(0.01, 10, 0, 125, at(20 + 30 * s)))
                .as_slice()
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
        assert!(m.observe(Sample::at(0.01, 1, 9, now)).is_empty());
        assert!(matches!(
            m.observe(Sample::at(0.01, 1, 9, now)).as_slice(),
            [Signal::Raise(i)] if i.rule_id == "self.dead_letter_share"
        ));
        // 40 % dead: under the threshold but not under half of it: stays open
        for _ in 0..10 {
            assert!(m.observe(Sample::at(0.01, 6, 4, now)).is_empty());
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

    #[test]
    fn ingest_lag_and_unsigned_records_are_gauges_with_hysteresis() {
        let c = SelfMonitorSection {
            ingest_lag_s: 60,
            checkpoint_age_s: 30,
            ..cfg()
        };
        let mut m = SelfMonitor::new(c);
        let now = Utc::now();
        let lag = |l: f64, unsigned: Option<f64>| Sample {
            ingest_lag_secs: Some(l),
            unsigned_secs: unsigned,
            ..Sample::at(0.01, 10, 0, now)
        };
        assert!(m.observe(lag(90.0, None)).is_empty(), "raise_after 2");
        let raised = m.observe(lag(95.0, Some(31.0)));
        let lag_id = match raised.as_slice() {
            [Signal::Raise(i)] => {
                assert_eq!(i.rule_id, "self.ingest_lag");
                assert_eq!(i.level, Level::Analyst);
                i.incident_id.clone()
            }
            other => panic!("{other:?}"),
        };
        match m.observe(lag(95.0, Some(40.0))).as_slice() {
            [Signal::Raise(i)] => assert_eq!(i.rule_id, "self.checkpoint_age"),
            other => panic!("{other:?}"),
        }
        // 40 s is under 60 but not under half of it (20 s of 30 s too): stay open
        for _ in 0..5 {
            assert!(m.observe(lag(40.0, Some(20.0))).is_empty());
        }
        let mut cleared = Vec::new();
        for _ in 0..3 {
            for sig in m.observe(lag(1.0, None)) {
                if let Signal::Clear { incident_id, .. } = sig {
                    cleared.push(incident_id);
                }
            }
        }
        assert_eq!(cleared.len(), 2, "lag and checkpoint age both cleared");
        assert!(cleared.contains(&lag_id));
    }

    #[test]
    fn revoked_keys_and_failed_verification_are_emergencies_never_auto_resolved() {
        let mut m = SelfMonitor::new(cfg());
        let t0 = Utc::now();
        let mut sec = SecurityCounts::default();
        let at = |s: i64, sec: SecurityCounts| Sample {
            security: sec,
            ..Sample::at(0.01, 10, 0, t0 + chrono::Duration::seconds(s))
        };
        assert!(m.observe(at(0, sec)).is_empty());
        sec.revoked_key_tokens = 1;
        sec.ledger_verify_failures = 1;
        sec.blocked_requests = 299;
        let raised = m.observe(at(5, sec));
        let rules: Vec<_> = raised
            .iter()
            .map(|s| match s {
                Signal::Raise(i) => {
                    assert_eq!(i.level, Level::Emergency);
                    assert_eq!(i.severity, Severity::Critical);
                    i.rule_id.clone()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            rules,
            [
                "self.revoked_token_key_used",
                "self.ledger_verification_failed"
            ]
        );
        // 299 refused requests in a minute: under the default 300
        sec.blocked_requests = 300;
        match m.observe(at(10, sec)).as_slice() {
            [Signal::Raise(i)] => {
                assert_eq!(i.rule_id, "self.blocked_requests_per_min");
                assert_eq!(i.level, Level::Analyst);
            }
            other => panic!("{other:?}"),
        }
        // an hour of calm: the refused-requests incident clears, the two
        // cryptography incidents stay open
        let mut cleared = Vec::new();
        for k in 1..=40 {
            for s in m.observe(at(10 + 90 * k, sec)) {
                match s {
                    Signal::Clear { incident_id, .. } => cleared.push(incident_id),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(cleared.len(), 1);
        assert!(m.metrics[REVOKED].open.is_some() && m.metrics[VERIFY].open.is_some());
    }
}
