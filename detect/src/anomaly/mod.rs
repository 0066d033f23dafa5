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
//! * [`warmup`]: the warm-up baseline and its append-only log, so a restart
//!   continues the warm-up.
//!
//! See `docs/anomaly.md`.

pub mod calibration;
pub mod features;
pub mod model;
pub mod scoring;
pub mod warmup;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use calibration::Calibration;
pub use features::{
    Extractor, FEATURE_NAMES, FeatureSpec, FeatureVec, N_FEATURES, Observation, ToolClass, Window,
    WindowKind, name_words,
};
pub use model::{
    AnomalyModel, Baseline, Contribution, LoadedModel, LoadedPart, PartModel, TrainParams,
    TrainingSet, train,
};
pub use scoring::{AnomalyOutcome, Monitor};

use crate::rule::{Level, Severity};

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
    /// Share of benign sessions allowed to be flagged (sets the thresholds).
    pub target_fpr: f64,
    /// Share of `target_fpr` given to the principal windows' part.
    pub principal_fpr_share: f64,
    /// Mixture components (default 2); 0 chooses by BIC among 2, 4, 6, 8.
    pub components: usize,
    pub reg_covar: f64,
    pub max_fit_windows: usize,
    /// Level (1–3) and severity of anomaly incidents.
    pub level: u8,
    pub severity: Severity,
    /// Suppression window: one incident per session per this much time.
    pub suppress_secs: u64,
    /// Override the egress / directory-listing tool names and the egress
    /// name words (see [`FeatureSpec`]).
    pub egress_tools: Option<Vec<String>>,
    pub listing_tools: Option<Vec<String>>,
    pub egress_words: Option<Vec<String>>,
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
            target_fpr: p.target_fpr,
            principal_fpr_share: p.principal_fpr_share,
            components: p.components,
            reg_covar: p.reg_covar,
            max_fit_windows: p.max_fit_windows,
            level: 2,
            severity: Severity::High,
            suppress_secs: 600,
            egress_tools: None,
            listing_tools: None,
            egress_words: None,
        }
    }
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
        }
    }

    pub fn level(&self) -> Level {
        Level::try_from(self.level).unwrap_or(Level::Analyst)
    }

    pub fn suppress_us(&self) -> i64 {
        self.suppress_secs as i64 * 1_000_000
    }
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
