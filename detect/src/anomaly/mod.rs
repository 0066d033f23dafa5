//! Behavioural anomaly detection: what no signature names.
//!
//! * [`features`]: sliding-window features per session and per principal
//!   (across its sessions), maintained incrementally from the `events`
//!   batches (one vector per window per client request).
//! * [`model`]: `ln(1+x)` + standardisation + a Gaussian mixture fitted with
//!   linfa, one part per window kind; score = negative log-likelihood;
//!   persisted with a version hash.
//! * [`calibration`]: the threshold from a target false-positive rate of
//!   sessions.
//! * [`scoring`]: the online [`Monitor`]: scores windows against a loaded
//!   model, or learns a baseline during a warm-up first, and raises normal
//!   [`crate::Incident`]s (rule id [`RULE_ID`]) that go through the same
//!   levels, suppression and ledger as rule incidents.
//! * [`reference`]: per-principal and per-peer-group profiles of session
//!   peaks, quoted in explanations.
//! * [`warmup`]: the warm-up baseline and its append-only log, so a restart
//!   continues the warm-up.
//!
//! See `docs/anomaly.md`.

pub mod calibration;
pub mod features;
pub mod model;
pub mod reference;
pub mod scoring;
pub mod warmup;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use calibration::Calibration;
pub use features::{
    Extractor, FEATURE_NAMES, FeatureSpec, FeatureVec, N_FEATURES, Observation, Window, WindowKind,
    name_words,
};
pub use model::{
    AnomalyModel, Assessment, Baseline, Contribution, LoadedModel, LoadedPart, PartModel, TailRef,
    TrainParams, TrainingSet, Trigger, train,
};
pub use scoring::{AnomalyOutcome, Monitor};

use crate::incident::Incident;
use crate::response::{ResponseConfig, ResponseRecord, respond};
use crate::rule::{Level, ResponseAction, Severity};

/// Rule id of anomaly incidents.
pub const RULE_ID: &str = "anomaly.behaviour";
/// Model file inside the data dir.
pub const MODEL_FILE: &str = "models/anomaly-model.json";

/// `[anomaly]` in `dunes.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    pub enabled: bool,
    /// Model file (default `<data_dir>/models/anomaly-model.json`).
    pub model: Option<PathBuf>,
    /// Sliding window of the features (event time).
    pub window_secs: u64,
    /// Without a model: learn the baseline over this much event time...
    pub warmup_minutes: u64,
    /// ...and at least this many sessions, then train and start scoring.
    pub warmup_min_sessions: usize,
    /// Windows of each kind kept for the warm-up training; once this many
    /// session windows are kept the warm-up ends early.
    pub warmup_max_windows: usize,
    /// Events the warm-up's training runs beside, on its own thread, while
    /// the prior keeps scoring; the model takes over after the batch that
    /// reaches this many (waiting for the training if needed), whatever
    /// the batch size. 0 trains inline, stalling the batch the warm-up
    /// ends in.
    pub train_events: u64,
    /// Share of benign sessions allowed to be flagged (sets the thresholds).
    pub target_fpr: f64,
    /// Share of `target_fpr` given to the principal windows' part.
    pub principal_fpr_share: f64,
    /// Mixture components (default 2); 0 chooses by BIC among 2, 4, 6, 8.
    pub components: usize,
    pub reg_covar: f64,
    pub max_fit_windows: usize,
    /// Level (1–3) and severity of anomaly incidents. Level 1 (default)
    /// applies `response` automatically: the standard asks for automatic
    /// session invalidation on anomaly. Level 2 only queues for analysts.
    pub level: u8,
    /// The Level 1 action (default `isolate_session`; a principal window's
    /// incident isolates every session of the window).
    pub response: ResponseAction,
    pub severity: Severity,
    /// Suppression window: one incident per session per this much time.
    pub suppress_secs: u64,
    /// Override the egress / directory-listing tool names and the egress
    /// name words (see [`FeatureSpec`]).
    pub egress_tools: Option<Vec<String>>,
    pub listing_tools: Option<Vec<String>>,
    pub egress_words: Option<Vec<String>>,
    /// Tail alarm ratio of trained models ([`TrainParams::tail_ratio`]).
    pub tail_ratio: f64,
    /// Corroboration ratio of mixture alarms
    /// ([`TrainParams::corroborate_ratio`]).
    pub corroborate_ratio: f64,
    /// Score with the shipped prior (tail alarms only) until the
    /// deployment's own model exists, so the first hour is not blind.
    pub prior: bool,
    /// Tail ratio of the prior's alarms (conservative: it was learnt on
    /// other estates).
    pub prior_tail_ratio: f64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        let p = TrainParams::default();
        AnomalyConfig {
            enabled: true,
            model: None,
            window_secs: FeatureSpec::default().window_secs,
            warmup_minutes: 60,
            warmup_min_sessions: 200,
            warmup_max_windows: 200_000,
            train_events: 32_768,
            target_fpr: p.target_fpr,
            principal_fpr_share: p.principal_fpr_share,
            components: p.components,
            reg_covar: p.reg_covar,
            max_fit_windows: p.max_fit_windows,
            level: 1,
            response: ResponseAction::IsolateSession,
            severity: Severity::High,
            suppress_secs: 600,
            egress_tools: None,
            listing_tools: None,
            egress_words: None,
            tail_ratio: p.tail_ratio,
            corroborate_ratio: p.corroborate_ratio,
            prior: true,
            prior_tail_ratio: 4.0,
        }
    }
}

/// The shipped prior: trained on a broad benign corpus (simulator estates,
/// see `docs/anomaly.md`), used as a conservative tail-only model until the
/// deployment's own model is trained.
pub const PRIOR_MODEL_JSON: &str = include_str!("../../assets/anomaly-prior.json");

/// The shipped prior as a tail-only model at `ratio` (see
/// [`LoadedModel::into_prior`]).
pub fn prior_model(ratio: f64) -> Result<LoadedModel, crate::DetectError> {
    LoadedModel::from_bytes(
        PRIOR_MODEL_JSON.as_bytes(),
        "the shipped prior anomaly model",
    )?
    .into_prior(ratio)
    .ok_or_else(|| {
        crate::DetectError::Model("the shipped prior anomaly model has no tail references".into())
    })
}

impl AnomalyConfig {
    pub fn model_path(&self, data_dir: &Path) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(|| data_dir.join(MODEL_FILE))
    }

    pub fn feature_spec(&self) -> FeatureSpec {
        let d = FeatureSpec::default();
        FeatureSpec {
            window_secs: self.window_secs.max(1),
            egress_tools: self.egress_tools.clone().unwrap_or(d.egress_tools),
            listing_tools: self.listing_tools.clone().unwrap_or(d.listing_tools),
            egress_words: self.egress_words.clone().unwrap_or(d.egress_words),
            ..d
        }
    }

    pub fn train_params(&self) -> TrainParams {
        TrainParams {
            components: self.components,
            reg_covar: self.reg_covar,
            max_fit_windows: self.max_fit_windows,
            target_fpr: self.target_fpr,
            principal_fpr_share: self.principal_fpr_share,
            tail_ratio: self.tail_ratio,
            corroborate_ratio: self.corroborate_ratio,
        }
    }

    /// Refuses settings the monitor cannot honour, naming the key.
    pub fn validate(&self) -> Result<(), crate::DetectError> {
        let bad = |m: String| Err(crate::DetectError::InvalidValue(format!("[anomaly] {m}")));
        if Level::try_from(self.level).is_err() {
            return bad(format!("level = {}: expected 1, 2 or 3", self.level));
        }
        if !(self.target_fpr > 0.0 && self.target_fpr < 1.0) {
            return bad(format!(
                "target_fpr = {}: expected a share between 0 and 1 (e.g. 0.005)",
                self.target_fpr
            ));
        }
        if !(0.0..=1.0).contains(&self.principal_fpr_share) {
            return bad(format!(
                "principal_fpr_share = {}: expected 0 to 1",
                self.principal_fpr_share
            ));
        }
        if self.window_secs == 0 {
            return bad("window_secs = 0: expected at least 1".into());
        }
        if !(self.reg_covar.is_finite() && self.reg_covar >= 0.0) {
            return bad(format!("reg_covar = {}: expected ≥ 0", self.reg_covar));
        }
        for (key, v) in [
            ("tail_ratio", self.tail_ratio),
            ("prior_tail_ratio", self.prior_tail_ratio),
        ] {
            if !(v.is_finite() && (v == 0.0 || v >= 1.5)) {
                return bad(format!("{key} = {v}: expected 0 (off) or at least 1.5"));
            }
        }
        if !(self.corroborate_ratio.is_finite() && self.corroborate_ratio >= 0.0) {
            return bad(format!(
                "corroborate_ratio = {}: expected ≥ 0 (0: mixture alarms need no corroboration)",
                self.corroborate_ratio
            ));
        }
        Ok(())
    }

    pub fn level(&self) -> Level {
        Level::try_from(self.level).unwrap_or(Level::Analyst)
    }

    pub fn suppress_us(&self) -> i64 {
        self.suppress_secs as i64 * 1_000_000
    }
}

/// The responses to an anomaly incident: [`respond`] with the configured
/// action; at Level 1, `isolate_session` on a principal window's incident
/// invalidates every session its evidence lists (the window's sessions),
/// not only the one with the most requests.
pub fn responses(
    inc: &Incident,
    action: ResponseAction,
    cfg: &ResponseConfig,
) -> Vec<ResponseRecord> {
    let mut out = respond(inc, Some(action), cfg);
    if action != ResponseAction::IsolateSession || inc.level != Level::Automated {
        return out;
    }
    let Some(first) = out.first().cloned() else {
        return out;
    };
    let ev = inc.evidence.first();
    if ev.and_then(|e| e.get("window")).and_then(|w| w.as_str()) != Some("principal") {
        return out;
    }
    let listed = ev
        .and_then(|e| e.get("sessions"))
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str());
    for (i, s) in listed.enumerate() {
        if first.target.get("session_id").map(String::as_str) == Some(s) {
            continue;
        }
        let mut r = first.clone();
        r.target.insert("session_id".into(), s.to_string());
        r.response_id = format!("{}-{}", first.response_id, i + 1);
        out.push(r);
    }
    out
}

/// The ledger record of a model (kind `model`), like the rule-set record.
/// The top-level figures are the session part's; `principal` is the
/// principal part's (null when the model has none).
pub fn model_record(model: &AnomalyModel, file: &Path) -> serde_json::Value {
    serde_json::json!({
        "type": "anomaly_model",
        "version": model.version,
        "format": model.format,
        "rule_id": RULE_ID,
        "kind": model.kind,
        "file": file.display().to_string(),
        "features": FEATURE_NAMES,
        "components": model.components.len(),
        "threshold": model.calibration.threshold,
        "target_fpr": model.calibration.target_fpr,
        "calibration_sessions": model.calibration.sessions,
        "trained_on": model.trained_on,
        "trained_sessions": model.trained_sessions,
        "trained_windows": model.trained_windows,
        "principal": model.principal.as_ref().map(|p| serde_json::json!({
            "components": p.components.len(),
            "threshold": p.calibration.threshold,
            "target_fpr": p.calibration.target_fpr,
            "calibration_sessions": p.calibration.sessions,
            "trained_principals": p.trained_principals,
            "trained_sessions": p.trained_sessions,
            "trained_windows": p.trained_windows,
        })),
    })
}

#[cfg(test)]
mod tests;
