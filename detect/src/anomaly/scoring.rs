//! The online monitor: features per batch, scoring (or warm-up), incidents,
//! and the persistence of its state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::features::{FEATURE_NAMES, FeatureSpec, FeatureState, FeatureVec, WindowKind};
use super::model::{Baseline, LoadedModel, LoadedPart, TrainParams, Trigger, train};
use super::warmup::{Warmup, WarmupEnd, WarmupMeta, log_path};
use super::{AnomalyConfig, Extractor, RULE_ID};
use crate::DetectError;
use crate::incident::{Incident, IncidentStatus, micros_to_dt};

/// Event ids an anomaly incident cites (the window's requests).
const MAX_WINDOW_EVENTS: usize = 100;
/// Sessions a principal-window incident lists.
const MAX_WINDOW_SESSIONS: usize = 50;
/// Features named in an incident's explanation.
const EXPLAIN_TOP: usize = 3;

/// The best-scoring anomalous window of a session or principal in a batch.
struct Candidate {
    kind: WindowKind,
    score: f64,
    trigger: Trigger,
    /// Largest tail ratio and its feature.
    tail: f64,
    tail_feature: usize,
    features: FeatureVec,
    principal: String,
    /// The session: for a principal window, the one with the most requests
    /// in it.
    session_id: Option<String>,
    /// The session of the request that ended the window.
    last_session: String,
    /// Sessions in a principal window (and how many there are).
    sessions: Vec<String>,
    session_count: usize,
    server_id: String,
    /// Peer group (client application on server).
    peer: String,
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

/// The monitor state file: the feature windows (the whole file, as before
/// principal windows and warm-up persistence existed) and the warm-up.
#[derive(Debug, Default, Deserialize)]
struct SavedState {
    #[serde(flatten)]
    features: FeatureState,
    #[serde(default)]
    warmup: Option<WarmupMeta>,
    #[serde(default)]
    position: Option<u64>,
}

#[derive(Serialize)]
struct SavedStateRef<'a> {
    #[serde(flatten)]
    features: &'a FeatureState,
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup: Option<WarmupMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
}

/// The warm-up's model being trained on its own thread while the prior
/// keeps scoring ([`AnomalyConfig::train_events`]).
struct Training {
    fit: Fit,
    /// Its `events_left` counts down the events still scored without it;
    /// it takes over after the batch that brings it to 0.
    end: WarmupEnd,
}

/// What the warm-up's model is trained on: baseline, feature spec,
/// parameters and the label it will carry.
type TrainInputs = (Baseline, FeatureSpec, TrainParams, String);

enum Fit {
    Thread(std::thread::JoinHandle<Result<LoadedModel, DetectError>>),
    /// No thread could be had: trained inline, handed over all the same.
    Done(Box<Result<LoadedModel, DetectError>>),
}

pub struct Monitor {
    cfg: AnomalyConfig,
    extractor: Extractor,
    model: Option<LoadedModel>,
    /// Conservative prior (tail alarms only) scoring while there is no
    /// deployment model yet, so the monitor is not blind during the warm-up.
    prior: Option<LoadedModel>,
    warmup: Option<Warmup>,
    /// Training started at the end of the warm-up; the warm-up is kept
    /// unchanged (and saved as it is) until the model takes over, so a
    /// restart trains the same model again.
    training: Option<Training>,
    /// Where in its input the state is (the pipeline's ledger length); saved
    /// and restored with the state, not interpreted here.
    position: Option<u64>,
}

impl Monitor {
    /// See [`Monitor::set_position`].
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Records where in its input the state is, saved with it.
    pub fn set_position(&mut self, position: u64) {
        self.position = Some(position);
    }

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
            prior: None,
            warmup,
            training: None,
            position: None,
        }
    }

    /// Scores with `prior` (made tail-only, see [`LoadedModel::into_prior`])
    /// until a deployment model exists. Refused (None kept) when its window
    /// length differs from this monitor's.
    pub fn with_prior(mut self, prior: Option<LoadedModel>) -> Self {
        self.prior = prior.filter(|p| {
            let same = p.model.feature_spec.window_secs == self.extractor.spec.window_secs;
            if !same {
                tracing::warn!(
                    "the prior anomaly model's window ({} s) differs from [anomaly] window_secs; no prior scoring during the warm-up",
                    p.model.feature_spec.window_secs
                );
            }
            same
        });
        self
    }

    pub fn model(&self) -> Option<&LoadedModel> {
        self.model.as_ref()
    }

    /// Suppression window of anomaly incidents (µs of event time).
    pub fn suppress_us(&self) -> i64 {
        self.cfg.suppress_us()
    }

    /// The Level 1 action of anomaly incidents.
    pub fn response_action(&self) -> crate::rule::ResponseAction {
        self.cfg.response
    }

    pub fn is_warming_up(&self) -> bool {
        self.model.is_none()
    }

    /// Session windows collected so far during the warm-up.
    pub fn warmup_windows(&self) -> usize {
        self.warmup.as_ref().map_or(0, |w| w.session_windows())
    }

    /// Principal windows collected so far during the warm-up.
    pub fn warmup_principal_windows(&self) -> usize {
        self.warmup.as_ref().map_or(0, |w| w.principal_windows())
    }

    /// Leaves sessions a rule raised an incident on out of the warm-up
    /// baseline (no effect once scoring).
    pub fn exclude_from_warmup<'a>(&mut self, sessions: impl IntoIterator<Item = &'a str>) {
        if self.training.is_some() {
            // The baseline being trained on is final.
            return;
        }
        if let Some(wu) = self.warmup.as_mut() {
            for s in sessions {
                wu.exclude(s);
            }
        }
    }

    /// Sessions left out of the warm-up baseline so far.
    pub fn warmup_excluded(&self) -> usize {
        self.warmup.as_ref().map_or(0, |w| w.excluded())
    }

    /// Distinct sessions seen so far during the warm-up.
    pub fn warmup_sessions(&self) -> usize {
        self.warmup.as_ref().map_or(0, |w| w.sessions())
    }

    /// Event time the warm-up started at.
    pub fn warmup_start(&self) -> Option<i64> {
        self.warmup.as_ref().and_then(|w| w.start_ts)
    }

    /// Session and principal windows and principal history.
    pub fn snapshot(&self) -> &FeatureState {
        &self.extractor.state
    }

    /// Saves the state to `path` (atomically) and, while warming up, appends
    /// the new warm-up windows to the log beside it first
    /// ([`super::warmup::log_path`]); once scoring, the log is removed.
    pub fn save_state(&mut self, path: &Path) -> Result<(), DetectError> {
        let log = log_path(path);
        let warmup = match &mut self.warmup {
            Some(wu) => {
                wu.append(&log)?;
                let mut meta = wu.meta(&self.extractor.spec);
                meta.ended = self.training.as_ref().map(|t| t.end.clone());
                Some(meta)
            }
            None => None,
        };
        let done = warmup.is_none();
        write_json_atomic(
            path,
            &SavedStateRef {
                features: &self.extractor.state,
                warmup,
                position: self.position,
            },
        )?;
        if done {
            match std::fs::remove_file(&log) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(DetectError::Io {
                        path: log.display().to_string(),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Restores the state saved by [`Monitor::save_state`] (a missing file
    /// is a first start). A warm-up in progress continues where it was, with
    /// its windows, start time and sessions, unless this monitor has a model
    /// now or the feature settings changed; an unreadable warm-up log starts
    /// the warm-up over (with a warning).
    pub fn load_state(&mut self, path: &Path) -> Result<(), DetectError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(DetectError::Io {
                    path: path.display().to_string(),
                    source: e,
                });
            }
        };
        let saved: SavedState = serde_json::from_slice(&bytes)
            .map_err(|e| DetectError::Model(format!("state {} is corrupt: {e}", path.display())))?;
        self.extractor.state = saved.features;
        self.position = saved.position;
        let (Some(mut meta), Some(_)) = (saved.warmup, &self.warmup) else {
            return Ok(());
        };
        if meta.feature_spec != self.extractor.spec {
            tracing::warn!("anomaly feature settings changed: the warm-up starts again");
            return Ok(());
        }
        match Warmup::load(&log_path(path), &meta) {
            Ok(wu) => {
                tracing::info!(
                    windows = wu.session_windows(),
                    principal_windows = wu.principal_windows(),
                    sessions = wu.sessions(),
                    "anomaly warm-up continues"
                );
                self.warmup = Some(wu);
                if let Some(mut end) = meta.ended.take() {
                    // It had ended: its model is trained again and handed
                    // over by `process` (which the pipeline ledgers) after
                    // the events it had left, whatever `train_events` is.
                    end.events_left = end.events_left.max(1);
                    self.start_training(end);
                }
            }
            Err(e) => tracing::warn!("{e}; the anomaly warm-up starts again"),
        }
        Ok(())
    }

    /// Feeds one `events` batch.
    pub fn process(
        &mut self,
        events: &RecordBatch,
        now: DateTime<Utc>,
    ) -> Result<AnomalyOutcome, DetectError> {
        let mut out = AnomalyOutcome::default();
        let mut best: [HashMap<String, Candidate>; 2] = [HashMap::new(), HashMap::new()];
        let model = self.model.as_ref().or(self.prior.as_ref());
        let warming = self.model.is_none() && self.training.is_none();
        let warmup = &mut self.warmup;
        let cap = self.cfg.warmup_max_windows;
        let mut scored = 0u64;
        self.extractor.feed(events, |obs| {
            if warming && let Some(wu) = warmup.as_mut() {
                wu.observe(&obs, cap);
            }
            let Some(m) = model else {
                return;
            };
            let Some(part) = m.part(obs.kind) else {
                return;
            };
            scored += 1;
            let Some(a) = part.assess(&obs.features) else {
                return;
            };
            let best = &mut best[obs.kind as usize];
            if best
                .get(obs.key)
                .is_some_and(|c| (c.tail, c.score) >= (a.tail, a.score))
            {
                return;
            }
            let w = obs.window;
            best.insert(
                obs.key.to_string(),
                Candidate {
                    kind: obs.kind,
                    score: a.score,
                    trigger: a.trigger,
                    tail: a.tail,
                    tail_feature: a.tail_feature,
                    features: obs.features,
                    principal: w.principal.clone(),
                    session_id: match obs.kind {
                        WindowKind::Session => w.session_id.clone(),
                        WindowKind::Principal => Some(
                            w.main_session(obs.session)
                                .unwrap_or(obs.session)
                                .to_string(),
                        ),
                    },
                    last_session: obs.session.to_string(),
                    sessions: w.session_ids(MAX_WINDOW_SESSIONS),
                    session_count: w.session_count(),
                    server_id: w.server_id.clone(),
                    peer: w.peer_group(),
                    first_ts: w.first_ts(),
                    last_ts: w.last_ts,
                    event_ids: w.event_ids(MAX_WINDOW_EVENTS),
                },
            );
        })?;
        out.windows_scored = scored;
        let prior = self.model.is_none();
        if let Some(m) = self.model.as_ref().or(self.prior.as_ref()) {
            let [session, principal] = best;
            let mut cands: Vec<Candidate> = session
                .into_values()
                .chain(principal.into_values())
                .collect();
            cands.sort_by(|a, b| {
                a.first_ts
                    .cmp(&b.first_ts)
                    .then_with(|| a.event_ids.first().cmp(&b.event_ids.first()))
                    .then_with(|| a.kind.as_str().cmp(b.kind.as_str()))
            });
            let mut flagged: Vec<String> = Vec::new();
            for c in cands {
                if let Some(part) = m.part(c.kind) {
                    if prior {
                        flagged.extend(c.sessions.iter().cloned());
                        flagged.extend(c.session_id.iter().cloned());
                    }
                    out.incidents.push(self.incident(m, part, c, now, prior));
                }
            }
            // What the prior flags during the warm-up is not learnt as normal.
            self.exclude_from_warmup(flagged.iter().map(String::as_str));
        }
        if prior {
            out.trained = self.maybe_finish_warmup(events.num_rows() as u64);
        }
        Ok(out)
    }

    /// Trains on the warm-up baseline once it is long and wide enough: on
    /// a thread of its own for the next `train_events` events (scored by
    /// the prior meanwhile), then the model takes over after the batch
    /// that reaches them, waiting for the training if it is not done. A
    /// count of events (`rows`: the batch just fed), not a clock, decides
    /// the switch, so a replay gives the same incidents every time.
    fn maybe_finish_warmup(&mut self, rows: u64) -> Option<LoadedModel> {
        if let Some(t) = self.training.as_mut() {
            t.end.events_left = t.end.events_left.saturating_sub(rows);
            if t.end.events_left > 0 {
                return None;
            }
            return self.finish_training();
        }
        let wu = self.warmup.as_mut()?;
        let start = wu.start_ts?;
        let span = self.extractor.state.max_ts - start;
        let full = wu.session_windows() >= self.cfg.warmup_max_windows;
        if !full
            && (span < self.cfg.warmup_minutes as i64 * 60_000_000
                || wu.sessions() < self.cfg.warmup_min_sessions)
        {
            return None;
        }
        let label = format!(
            "warm-up: {} sessions ({} flagged by rules left out), {} session and {} principal windows over {} min of event time",
            wu.sessions(),
            wu.excluded(),
            wu.session_windows(),
            wu.principal_windows(),
            span / 60_000_000
        );
        self.start_training(WarmupEnd {
            label,
            full,
            events_left: self.cfg.train_events,
        })
    }

    /// Trains the warm-up's model: on its own thread for `events_left`
    /// events (the model comes from [`Monitor::maybe_finish_warmup`]
    /// after them), or here when that is 0.
    fn start_training(&mut self, end: WarmupEnd) -> Option<LoadedModel> {
        // Shared with the thread, so that a failed spawn still has them.
        let inputs = Arc::new((
            self.warmup.as_ref()?.baseline(),
            self.extractor.spec.clone(),
            self.cfg.train_params(),
            end.label.clone(),
        ));
        let fit_on = |i: &TrainInputs| train(&i.0, &i.1, &i.2, &i.3);
        if end.events_left == 0 {
            return self.install(fit_on(&inputs), end);
        }
        let shared = inputs.clone();
        let spawned = std::thread::Builder::new()
            .name("dunes-train".into())
            .spawn(move || fit_on(&shared));
        let fit = match spawned {
            Ok(h) => Fit::Thread(h),
            Err(e) => {
                tracing::warn!("no thread for the anomaly training ({e}): training inline");
                Fit::Done(Box::new(fit_on(&inputs)))
            }
        };
        tracing::info!(
            events = end.events_left,
            "{}: training the anomaly model beside the next events",
            end.label
        );
        self.training = Some(Training { fit, end });
        None
    }

    /// Lets the model take over now if its training has finished, without
    /// waiting: for a pipeline whose input is idle, where no batch would
    /// count down to the switch.
    pub fn take_finished_training(&mut self) -> Option<LoadedModel> {
        let done = match &self.training.as_ref()?.fit {
            Fit::Thread(h) => h.is_finished(),
            Fit::Done(_) => true,
        };
        if !done {
            return None;
        }
        self.finish_training()
    }

    /// Waits for the training started at the end of the warm-up, if any,
    /// and lets its model take over now (at the end of an input, so the
    /// model is kept).
    pub fn finish_training(&mut self) -> Option<LoadedModel> {
        let t = self.training.take()?;
        let result = match t.fit {
            Fit::Thread(h) => h.join().unwrap_or_else(|_| {
                Err(DetectError::Model(
                    "the anomaly training thread panicked".into(),
                ))
            }),
            Fit::Done(r) => *r,
        };
        self.install(result, t.end)
    }

    fn install(
        &mut self,
        result: Result<LoadedModel, DetectError>,
        end: WarmupEnd,
    ) -> Option<LoadedModel> {
        match result {
            Ok(m) => {
                tracing::info!(version = %m.version(), threshold = m.model.calibration.threshold, "{}: anomaly model trained, scoring starts", end.label);
                self.model = Some(m.clone());
                self.warmup = None;
                // The deployment's model takes over; the prior is done.
                self.prior = None;
                Some(m)
            }
            Err(e) => {
                tracing::warn!("anomaly warm-up training failed, still learning: {e}");
                if let Some(wu) = self.warmup.as_mut() {
                    // Try again after another warm-up period.
                    wu.start_ts = Some(self.extractor.state.max_ts);
                    if end.full {
                        wu.clear();
                    }
                }
                None
            }
        }
    }

    fn incident(
        &self,
        m: &LoadedModel,
        part: &LoadedPart,
        c: Candidate,
        now: DateTime<Utc>,
        prior: bool,
    ) -> Incident {
        let mut explain = part.explain(&c.features, EXPLAIN_TOP);
        let profiles = &self.extractor.state.profiles;
        for x in &mut explain {
            if let Some(f) = FEATURE_NAMES.iter().position(|n| *n == x.feature) {
                (x.principal_ref, x.peer_ref) = profiles.references(&c.principal, &c.peer, f);
            }
        }
        let lines: Vec<String> = explain.iter().map(|x| x.to_string()).collect();
        let mut entity = BTreeMap::new();
        entity.insert("principal".to_string(), json!(c.principal));
        match c.kind {
            WindowKind::Session => entity.insert("session_id".to_string(), json!(c.session_id)),
            WindowKind::Principal => entity.insert("window".to_string(), json!(c.kind)),
        };
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
        let cal = part.calibration();
        let mut ev = Map::new();
        ev.insert("window".into(), json!(c.kind));
        ev.insert(
            "model".into(),
            json!(if prior { "prior" } else { "deployment" }),
        );
        ev.insert("model_version".into(), json!(version));
        ev.insert("trigger".into(), json!(c.trigger));
        ev.insert("tail_ratio".into(), json!(c.tail));
        ev.insert("tail_feature".into(), json!(FEATURE_NAMES[c.tail_feature]));
        ev.insert("score".into(), json!(c.score));
        ev.insert("threshold".into(), json!(cal.threshold));
        ev.insert("target_fpr".into(), json!(cal.target_fpr));
        ev.insert("explanation".into(), json!(lines));
        ev.insert("contributions".into(), json!(explain));
        ev.insert("features".into(), Value::Object(features));
        ev.insert(
            "window_secs".into(),
            json!(m.model.feature_spec.window_secs),
        );
        ev.insert("server_id".into(), json!(c.server_id));
        ev.insert("peer_group".into(), json!(c.peer));
        if c.kind == WindowKind::Principal {
            ev.insert("sessions".into(), json!(c.sessions));
            ev.insert("session_count".into(), json!(c.session_count));
            ev.insert("last_session".into(), json!(c.last_session));
        }
        let what = match c.kind {
            WindowKind::Session => "session window".to_string(),
            WindowKind::Principal => format!(
                "principal window over {} session{}",
                c.session_count,
                if c.session_count == 1 { "" } else { "s" }
            ),
        };
        Incident {
            incident_id: format!("inc-{}", &id.to_hex()[..24]),
            rule_id: RULE_ID.to_string(),
            rule_sha256: version.to_string(),
            level: self.cfg.level(),
            severity: self.cfg.severity,
            title: format!(
                "Behavioural anomaly ({what}, {}model {short}, {}): {}",
                if prior { "prior " } else { "" },
                c.trigger,
                explain.first().map(|x| x.summary()).unwrap_or_default()
            ),
            tags: vec![
                "anomaly".into(),
                "behaviour".into(),
                "ml".into(),
                format!("window:{}", c.kind),
                format!("trigger:{}", c.trigger),
                format!("model:{}", if prior { "prior" } else { "deployment" }),
            ],
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

/// Writes JSON atomically (temp file, fsync, rename).
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), DetectError> {
    let io = |e: std::io::Error| DetectError::Io {
        path: path.display().to_string(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        let f = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut w, value)
            .map_err(|e| DetectError::Model(format!("cannot encode {}: {e}", path.display())))?;
        let f = w.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
