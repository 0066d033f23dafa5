//! The online monitor: features per batch, scoring (or warm-up), incidents.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::features::{FEATURE_NAMES, FeatureState, FeatureVec};
use super::model::{LoadedModel, TrainingSet, train};
use super::{AnomalyConfig, Extractor, RULE_ID};
use crate::DetectError;
use crate::incident::{Incident, IncidentStatus, micros_to_dt};

/// Event ids an anomaly incident cites (the window's requests).
const MAX_WINDOW_EVENTS: usize = 100;
/// Features named in an incident's explanation.
const EXPLAIN_TOP: usize = 3;

/// Baseline being learnt when there is no model yet.
#[derive(Debug, Default)]
struct Warmup {
    set: TrainingSet,
    start_ts: Option<i64>,
    sessions: HashSet<String>,
}

/// The best-scoring anomalous window of a session in a batch.
struct Candidate {
    score: f64,
    features: FeatureVec,
    principal: String,
    session_id: Option<String>,
    server_id: String,
    first_ts: i64,
    last_ts: i64,
    event_ids: Vec<String>,
}

/// What one batch produced.
#[derive(Debug, Default)]
pub struct AnomalyOutcome {
    pub incidents: Vec<Incident>,
    /// A model trained at the end of the warm-up in this batch (to be
    /// saved and ledgered before the incidents).
    pub trained: Option<LoadedModel>,
    pub windows_scored: u64,
}

pub struct Monitor {
    cfg: AnomalyConfig,
    extractor: Extractor,
    model: Option<LoadedModel>,
    warmup: Option<Warmup>,
}

impl Monitor {
    /// With a model: scores from the first batch (using the model's own
    /// feature settings). Without: warms up first.
    pub fn new(cfg: AnomalyConfig, model: Option<LoadedModel>) -> Self {
        let spec = match &model {
            Some(m) => m.model.feature_spec.clone(),
            None => cfg.feature_spec(),
        };
        let warmup = model.is_none().then(Warmup::default);
        Monitor {
            cfg,
            extractor: Extractor::new(spec),
            model,
            warmup,
        }
    }

    pub fn model(&self) -> Option<&LoadedModel> {
        self.model.as_ref()
    }

    /// Suppression window of anomaly incidents (µs of event time).
    pub fn suppress_us(&self) -> i64 {
        self.cfg.suppress_us()
    }

    pub fn is_warming_up(&self) -> bool {
        self.model.is_none()
    }

    /// Windows collected so far during the warm-up.
    pub fn warmup_windows(&self) -> usize {
        self.warmup.as_ref().map_or(0, |w| w.set.len())
    }

    /// Per-session windows and principal history, for persistence.
    pub fn snapshot(&self) -> &FeatureState {
        &self.extractor.state
    }

    pub fn restore(&mut self, state: FeatureState) {
        self.extractor.state = state;
    }

    /// Feeds one `events` batch.
    pub fn process(
        &mut self,
        events: &RecordBatch,
        now: DateTime<Utc>,
    ) -> Result<AnomalyOutcome, DetectError> {
        let mut out = AnomalyOutcome::default();
        let mut best: HashMap<String, Candidate> = HashMap::new();
        let model = self.model.as_ref();
        let warmup = &mut self.warmup;
        let cap = self.cfg.warmup_max_windows;
        let mut scored = 0u64;
        self.extractor.feed(events, |obs| {
            if let Some(m) = model {
                scored += 1;
                let s = m.score(&obs.features);
                if !m.is_anomalous(s) || best.get(obs.key).is_some_and(|c| c.score >= s) {
                    return;
                }
                let w = obs.window;
                best.insert(
                    obs.key.to_string(),
                    Candidate {
                        score: s,
                        features: obs.features,
                        principal: w.principal.clone(),
                        session_id: w.session_id.clone(),
                        server_id: w.server_id.clone(),
                        first_ts: w.first_ts(),
                        last_ts: w.last_ts,
                        event_ids: w.event_ids(MAX_WINDOW_EVENTS),
                    },
                );
            } else if let Some(wu) = warmup.as_mut() {
                wu.start_ts.get_or_insert(obs.window.last_ts);
                if wu.set.len() < cap {
                    wu.set.push(obs.key, obs.features);
                    if !wu.sessions.contains(obs.key) {
                        wu.sessions.insert(obs.key.to_string());
                    }
                }
            }
        })?;
        out.windows_scored = scored;
        if let Some(m) = &self.model {
            let mut cands: Vec<Candidate> = best.into_values().collect();
            cands.sort_by(|a, b| {
                a.first_ts
                    .cmp(&b.first_ts)
                    .then_with(|| a.event_ids.first().cmp(&b.event_ids.first()))
            });
            for c in cands {
                out.incidents.push(self.incident(m, c, now));
            }
        } else {
            out.trained = self.maybe_finish_warmup();
        }
        Ok(out)
    }

    /// Trains on the warm-up baseline once it is long and wide enough.
    fn maybe_finish_warmup(&mut self) -> Option<LoadedModel> {
        let wu = self.warmup.as_mut()?;
        let start = wu.start_ts?;
        let span = self.extractor.state.max_ts - start;
        let full = wu.set.len() >= self.cfg.warmup_max_windows;
        if !full
            && (span < self.cfg.warmup_minutes as i64 * 60_000_000
                || wu.sessions.len() < self.cfg.warmup_min_sessions)
        {
            return None;
        }
        let label = format!(
            "warm-up: {} sessions, {} windows over {} min of event time",
            wu.sessions.len(),
            wu.set.len(),
            span / 60_000_000
        );
        match train(
            &wu.set,
            &self.extractor.spec,
            &self.cfg.train_params(),
            &label,
        ) {
            Ok(m) => {
                tracing::info!(version = %m.version(), threshold = m.model.calibration.threshold, "{label}: anomaly model trained, scoring starts");
                self.model = Some(m.clone());
                self.warmup = None;
                Some(m)
            }
            Err(e) => {
                tracing::warn!("anomaly warm-up training failed, still learning: {e}");
                // Try again after another warm-up period.
                wu.start_ts = Some(self.extractor.state.max_ts);
                if full {
                    wu.set = TrainingSet::default();
                    wu.sessions.clear();
                }
                None
            }
        }
    }

    fn incident(&self, m: &LoadedModel, c: Candidate, now: DateTime<Utc>) -> Incident {
        let explain = m.explain(&c.features, EXPLAIN_TOP);
        let lines: Vec<String> = explain.iter().map(|x| x.to_string()).collect();
        let mut entity = BTreeMap::new();
        entity.insert("principal".to_string(), json!(c.principal));
        entity.insert("session_id".to_string(), json!(c.session_id));
        let key = serde_json::to_string(&entity).unwrap_or_default();
        let first = c.event_ids.first().cloned().unwrap_or_default();
        let id = blake3::hash(format!("{RULE_ID}\n{key}\n{first}").as_bytes());
        let version = m.version();
        let short = &version[..version.len().min(12)];
        let features: Map<String, Value> = FEATURE_NAMES
            .iter()
            .zip(c.features)
            .map(|(n, v)| (n.to_string(), json!(v)))
            .collect();
        let mut ev = Map::new();
        ev.insert("model_version".into(), json!(version));
        ev.insert("score".into(), json!(c.score));
        ev.insert("threshold".into(), json!(m.model.calibration.threshold));
        ev.insert("target_fpr".into(), json!(m.model.calibration.target_fpr));
        ev.insert("explanation".into(), json!(lines));
        ev.insert("contributions".into(), json!(explain));
        ev.insert("features".into(), Value::Object(features));
        ev.insert(
            "window_secs".into(),
            json!(m.model.feature_spec.window_secs),
        );
        ev.insert("server_id".into(), json!(c.server_id));
        Incident {
            incident_id: format!("inc-{}", &id.to_hex()[..24]),
            rule_id: RULE_ID.to_string(),
            rule_sha256: version.to_string(),
            level: self.cfg.level(),
            severity: self.cfg.severity,
            title: format!(
                "Behavioural anomaly (model {short}): {}",
                lines.first().cloned().unwrap_or_default()
            ),
            tags: vec!["anomaly".into(), "behaviour".into(), "ml".into()],
            entity,
            session_id: c.session_id,
            server_id: Some(c.server_id),
            first_ts: micros_to_dt(c.first_ts),
            last_ts: micros_to_dt(c.last_ts),
            event_ids: c.event_ids,
            match_count: 1,
            evidence: vec![ev],
            status: IncidentStatus::Open,
            detected_at: now,
            backfill: false,
        }
    }
}
