//! The behaviour model: `ln(1+x)` on counts, standardisation, and a
//! full-covariance Gaussian mixture fitted with linfa. A window's anomaly
//! score is its negative log-likelihood under the mixture.
//!
//! A model has one part per [`WindowKind`]: session windows and principal
//! windows share the feature definitions but not their distribution (a
//! principal's window sums its concurrent and back-to-back sessions), so
//! each kind gets its own standardisation, mixture and calibrated threshold.
//! One file and one version hash cover both.
//!
//! linfa does the fitting (k-means initialised EM); scoring is done here from
//! the fitted weights, means and precision matrices (a Cholesky factor per
//! component, computed at load), so that scoring one window on the hot path
//! is a few hundred multiply-adds with no allocation.

use std::path::Path;

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::{GaussianMixtureModel, GmmCovarType, GmmInitMethod};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::calibration::Calibration;
use super::features::{
    FEATURE_NAMES, FeatureSpec, FeatureVec, LOG_FEATURES, N_FEATURES, Observation, WindowKind,
};
use super::reference::Reference;
use crate::DetectError;

/// Format version of the model files this build writes: 2 adds the
/// principal-window part. Format 1 files (session windows only) still load.
pub const MODEL_FORMAT: u32 = 2;
/// Fewest windows a part is fitted on.
const MIN_WINDOWS: usize = 50;
/// Default number of mixture components.
pub const DEFAULT_COMPONENTS: usize = 2;
/// Smallest standard deviation used to standardise a feature.
const MIN_STD: f64 = 0.05;

/// Training hyper-parameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainParams {
    /// Mixture components; 0 chooses among 2, 4, 6, 8 by BIC. The default
    /// is 2: BIC on one estate's baseline picks 8, whose thresholds do not
    /// carry over to other estates (see `docs/anomaly.md`).
    pub components: usize,
    /// Added to the covariance diagonal (standardised units).
    pub reg_covar: f64,
    /// At most this many windows are used to fit the mixture (a
    /// deterministic stride sample); calibration uses every window.
    pub max_fit_windows: usize,
    /// Target false-positive rate (share of benign sessions flagged by the
    /// model, both parts together).
    pub target_fpr: f64,
    /// Share of that rate given to the principal part (the session part
    /// gets the rest), so that together they stay within the target.
    #[serde(default)]
    pub principal_fpr_share: f64,
    /// Tail alarm: a breadth feature ([`TAIL_ALONE`]) at least this many
    /// times its robust baseline reference flags the window on its own
    /// (ratio with a pseudo-count, see [`tail_ratio`]). 0: no tail scores
    /// (models written before them).
    #[serde(default)]
    pub tail_ratio: f64,
    /// A mixture alarm also needs one excess feature at least this many
    /// times its reference (corroboration: a window that is merely of an
    /// unfamiliar shape, every feature within the baseline's range, is not
    /// flagged).
    #[serde(default)]
    pub corroborate_ratio: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            components: DEFAULT_COMPONENTS,
            reg_covar: 0.05,
            max_fit_windows: 20_000,
            target_fpr: 0.005,
            principal_fpr_share: 0.5,
            tail_ratio: DEFAULT_TAIL_RATIO,
            corroborate_ratio: DEFAULT_CORROBORATE_RATIO,
        }
    }
}

/// Default [`TrainParams::tail_ratio`].
pub const DEFAULT_TAIL_RATIO: f64 = 3.0;
/// Default [`TrainParams::corroborate_ratio`].
pub const DEFAULT_CORROBORATE_RATIO: f64 = 3.0;

/// Features whose excess alone raises a tail alarm: the breadth of access
/// (distinct tools, distinct resources read, resource listings). Directory
/// listings are not among them: benign file work lists many directories
/// (a heavy tail on every estate measured), so they only corroborate.
pub const TAIL_ALONE: [bool; N_FEATURES] = [
    false, true, true, true, false, false, false, false, false, false, false, false, false,
];

/// The least value of a [`TAIL_ALONE`] feature that may raise a tail alarm,
/// whatever its reference: 16 distinct tools or resources, or 4 resource
/// listings, in one window. It keeps an estate whose baseline hardly reads
/// resources (a reference of 0 or 1) from alarming on a dozen reads.
pub const TAIL_FLOOR: [f64; N_FEATURES] = [
    f64::INFINITY,
    16.0,
    16.0,
    4.0,
    f64::INFINITY,
    f64::INFINITY,
    f64::INFINITY,
    f64::INFINITY,
    f64::INFINITY,
    f64::INFINITY,
    f64::INFINITY,
    f64::INFINITY,
    f64::INFINITY,
];

/// Pseudo-count of each one-sided ("more is suspicious") feature in
/// [`tail_ratio`]; `None` for the two-sided gap features. It keeps tiny
/// references (a baseline p99 of 0 or 1) from turning a handful of reads
/// into a large ratio.
pub const TAIL_PSEUDO: [Option<f64>; N_FEATURES] = [
    Some(2.0),
    Some(2.0),
    Some(2.0),
    Some(2.0),
    Some(2.0),
    Some(0.1),
    Some(1024.0),
    Some(4096.0),
    Some(1.0),
    Some(0.1),
    Some(0.1),
    None,
    None,
];

/// `(x + c) / (reference + c)`: how many times its robust baseline
/// reference a feature value is, with the feature's pseudo-count `c`.
pub fn tail_ratio(x: f64, reference: f64, pseudo: f64) -> f64 {
    let x = if x.is_finite() { x.max(0.0) } else { 0.0 };
    (x + pseudo) / (reference.max(0.0) + pseudo)
}

/// Robust reference of one feature for tail scores: quantiles of the
/// per-session maxima after leaving out far-out sessions (Tukey's outer
/// fence in `ln(1+x)` over the sessions where the feature is non-zero), so
/// a few percent of attack sessions in an unlabelled baseline do not become
/// "normal". Tail alarms compare with the 95th percentile, which a
/// contamination below 5 % of sessions cannot move past the benign values.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TailRef {
    /// Quantiles of the kept sessions' maxima (raw).
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    /// Sessions beyond the fence (left out).
    pub fenced_sessions: usize,
}

/// Per-feature baseline (training windows).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeatureStat {
    pub name: String,
    pub log: bool,
    /// Mean and standard deviation of the transformed feature.
    pub mean: f64,
    pub std: f64,
    /// Median of the raw feature.
    pub p50: f64,
    pub p99: f64,
    /// Robust reference for tail scores (None: a model from before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<TailRef>,
}

/// One mixture component as fitted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Component {
    pub weight: f64,
    pub mean: Vec<f64>,
    /// Precision (inverse covariance), row-major d × d.
    pub precision: Vec<f64>,
}

/// The persisted model. The session-window part sits at the top level (the
/// format 1 layout); the principal-window part is `principal`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AnomalyModel {
    pub format: u32,
    /// SHA-256 of the canonical JSON of this model with `version` empty.
    pub version: String,
    pub kind: String,
    pub features: Vec<FeatureStat>,
    pub feature_spec: FeatureSpec,
    pub params: TrainParams,
    pub components: Vec<Component>,
    pub calibration: Calibration,
    /// Where the baseline came from (free text: files, seeds, warm-up).
    pub trained_on: String,
    pub trained_sessions: usize,
    pub trained_windows: usize,
    /// The principal-window part (None: format 1, or a baseline without
    /// principals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PartModel>,
}

/// A fitted part other than the session one: baseline, mixture and
/// calibration of one kind of window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartModel {
    pub features: Vec<FeatureStat>,
    pub components: Vec<Component>,
    pub calibration: Calibration,
    pub trained_principals: usize,
    /// Sessions the windows were scored in (the calibration unit).
    pub trained_sessions: usize,
    pub trained_windows: usize,
}

/// A component ready to score: Cholesky factor of its precision.
#[derive(Clone, Debug)]
struct Scorer {
    log_norm: f64,
    mean: [f64; N_FEATURES],
    /// Lower-triangular L with precision = L Lᵀ, row-major.
    chol: [[f64; N_FEATURES]; N_FEATURES],
}

/// One part of a loaded model, ready to score windows of its kind.
#[derive(Clone, Debug)]
pub struct LoadedPart {
    pub kind: WindowKind,
    features: Vec<FeatureStat>,
    scorers: Vec<Scorer>,
    /// Scorer indexes by decreasing `log_norm` (the likeliest first), for
    /// [`LoadedPart::anomalous_score`].
    order: Vec<usize>,
    calibration: Calibration,
    /// Tail and corroboration ratios (0: off).
    tail_ratio: f64,
    corroborate_ratio: f64,
    /// Only tail alarms (a conservative prior model: its mixture was learnt
    /// elsewhere).
    tail_only: bool,
}

/// A loaded model with its scorers.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    pub model: AnomalyModel,
    session: LoadedPart,
    principal: Option<LoadedPart>,
}

/// The squared Mahalanobis distance of `z` under `s`,
/// `(x-μ)ᵀ P (x-μ) = ‖Lᵀ(x-μ)‖²`; stops adding (non-negative) terms once the
/// sum reaches `limit` (pass infinity for the exact value).
fn mahalanobis_sq(s: &Scorer, z: &FeatureVec, limit: f64) -> f64 {
    let d = N_FEATURES;
    let mut diff = [0.0; N_FEATURES];
    for i in 0..d {
        diff[i] = z[i] - s.mean[i];
    }
    let mut m = 0.0;
    for j in 0..d {
        let mut y = 0.0;
        for (row, di) in s.chol[j..d].iter().zip(&diff[j..d]) {
            y += row[j] * di;
        }
        m += y * y;
        if m >= limit {
            break;
        }
    }
    m
}

/// Whether the squared Mahalanobis distance of `z` under `s` is below
/// `limit` (stopping early once it is not).
fn distance_below(s: &Scorer, z: &FeatureVec, limit: f64) -> bool {
    mahalanobis_sq(s, z, limit) < limit
}

/// Why a window scored high: one line per feature.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Contribution {
    pub feature: String,
    pub value: f64,
    pub baseline_p50: f64,
    pub z: f64,
    /// Robust per-session p95 and p99 of the baseline, and how many times
    /// the reference the value is (tail score: against p95 for the breadth
    /// features of tail alarms, else p99), when the model has tail
    /// references.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_p95: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_ratio: Option<f64>,
    /// The same feature over the principal's own earlier sessions (set by
    /// the monitor from its [`super::reference::Profiles`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_ref: Option<Reference>,
    /// The same feature over the sessions of its peer group (same client
    /// application on the same server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_ref: Option<Reference>,
}

impl std::fmt::Display for Contribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fmt_baseline(f)?;
        if let Some(r) = &self.principal_ref {
            write!(
                f,
                "; this principal's {} {} over {} session{}",
                r.quantile,
                fmt_num(r.value),
                r.sessions,
                if r.sessions == 1 { "" } else { "s" }
            )?;
        }
        if let Some(r) = &self.peer_ref {
            write!(
                f,
                "; peers' ({}) {} {} over {} session{}",
                r.group,
                r.quantile,
                fmt_num(r.value),
                r.sessions,
                if r.sessions == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

impl Contribution {
    /// The line without the principal and peer references (titles).
    pub fn summary(&self) -> String {
        struct Baseline<'a>(&'a Contribution);
        impl std::fmt::Display for Baseline<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt_baseline(f)
            }
        }
        Baseline(self).to_string()
    }

    fn fmt_baseline(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.baseline_p95, self.baseline_p99, self.tail_ratio) {
            (Some(p95), Some(p99), Some(r)) => write!(
                f,
                "{} {} in the window (baseline sessions p50 {}, p95 {}, p99 {}; {:.1}x)",
                self.feature,
                fmt_num(self.value),
                fmt_num(self.baseline_p50),
                fmt_num(p95),
                fmt_num(p99),
                r
            ),
            _ => write!(
                f,
                "{} {} (baseline p50 {}, z={:+.1})",
                self.feature,
                fmt_num(self.value),
                fmt_num(self.baseline_p50),
                self.z
            ),
        }
    }
}

/// Why a window is flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A breadth feature far beyond its robust baseline reference.
    Tail,
    /// The mixture's score above the threshold, corroborated by an excess
    /// feature beyond its reference.
    Mixture,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Tail => "tail",
            Trigger::Mixture => "mixture",
        })
    }
}

/// A flagged window's assessment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    pub trigger: Trigger,
    /// Mixture score (negative log-likelihood; computed in full for a
    /// flagged window).
    pub score: f64,
    /// Largest tail ratio over the excess features, and its feature index.
    pub tail: f64,
    pub tail_feature: usize,
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 && v.abs() < 1e15 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The transformed (log where it applies) feature vector.
pub fn transform(x: &FeatureVec) -> FeatureVec {
    let mut t = *x;
    for (v, log) in t.iter_mut().zip(LOG_FEATURES) {
        let clean = if v.is_finite() { v.max(0.0) } else { 0.0 };
        *v = if log { clean.ln_1p() } else { clean };
    }
    t
}

fn cholesky(a: &[f64], d: usize) -> Option<[[f64; N_FEATURES]; N_FEATURES]> {
    let mut l = [[0.0; N_FEATURES]; N_FEATURES];
    for i in 0..d {
        for j in 0..=i {
            let mut s = a[i * d + j];
            for (lik, ljk) in l[i][..j].iter().zip(&l[j][..j]) {
                s -= lik * ljk;
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i][j] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl LoadedPart {
    /// Builds the scorers; refuses parameters that do not fit the feature
    /// set or precision matrices that are not positive definite.
    fn new(
        kind: WindowKind,
        features: &[FeatureStat],
        components: &[Component],
        calibration: &Calibration,
        params: &TrainParams,
    ) -> Result<Self, DetectError> {
        let d = N_FEATURES;
        let names: Vec<&str> = features.iter().map(|f| f.name.as_str()).collect();
        if names != FEATURE_NAMES {
            return Err(DetectError::Model(format!(
                "{kind} part: features {names:?} differ from this build's {FEATURE_NAMES:?}"
            )));
        }
        if features
            .iter()
            .any(|f| f.std <= 0.0 || !f.std.is_finite() || !f.mean.is_finite())
        {
            return Err(DetectError::Model(format!(
                "{kind} part: a feature baseline is malformed"
            )));
        }
        if components.is_empty() {
            return Err(DetectError::Model(format!("{kind} part has no components")));
        }
        let mut scorers = Vec::with_capacity(components.len());
        for (k, c) in components.iter().enumerate() {
            if c.mean.len() != d || c.precision.len() != d * d || c.weight <= 0.0 {
                return Err(DetectError::Model(format!(
                    "{kind} part: component {k} is malformed"
                )));
            }
            let chol = cholesky(&c.precision, d).ok_or_else(|| {
                DetectError::Model(format!(
                    "{kind} part: component {k}: precision is not positive definite"
                ))
            })?;
            let log_det_prec: f64 = (0..d).map(|i| 2.0 * chol[i][i].ln()).sum();
            let mut mean = [0.0; N_FEATURES];
            mean.copy_from_slice(&c.mean);
            scorers.push(Scorer {
                log_norm: c.weight.ln() - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()
                    + 0.5 * log_det_prec,
                mean,
                chol,
            });
        }
        let mut order: Vec<usize> = (0..scorers.len()).collect();
        order.sort_by(|&a, &b| scorers[b].log_norm.total_cmp(&scorers[a].log_norm));
        // Tail scores need a reference for every one-sided feature (models
        // written before them have none).
        let tails = features
            .iter()
            .zip(TAIL_PSEUDO)
            .all(|(f, c)| c.is_none() || f.tail.is_some());
        Ok(LoadedPart {
            kind,
            features: features.to_vec(),
            scorers,
            order,
            calibration: calibration.clone(),
            tail_ratio: if tails { params.tail_ratio } else { 0.0 },
            corroborate_ratio: if tails { params.corroborate_ratio } else { 0.0 },
            tail_only: false,
        })
    }

    /// The largest tail ratio, with its feature index; (0, 0) without tail
    /// references. `alone`: the breadth features at or above their floor,
    /// against their p95 (the tail alarm); else every one-sided feature
    /// against its p99 (corroboration).
    pub fn max_tail(&self, x: &FeatureVec, alone: bool) -> (f64, usize) {
        let mut best = (0.0, 0);
        for (i, f) in self.features.iter().enumerate() {
            let (Some(t), Some(c)) = (&f.tail, TAIL_PSEUDO[i]) else {
                continue;
            };
            let r = if alone {
                if !TAIL_ALONE[i] || x[i] < TAIL_FLOOR[i] {
                    continue;
                }
                tail_ratio(x[i], t.p95, c)
            } else {
                tail_ratio(x[i], t.p99, c)
            };
            if r > best.0 {
                best = (r, i);
            }
        }
        best
    }

    /// Whether (and why) a window is flagged: a tail alarm when a breadth
    /// feature is at least `tail_ratio` times its robust reference; else a
    /// mixture alarm when the score is above the threshold and some excess
    /// feature is at least `corroborate_ratio` times its reference (models
    /// without tail references: the score alone).
    pub fn assess(&self, x: &FeatureVec) -> Option<Assessment> {
        if self.tail_ratio > 0.0 {
            let (t, i) = self.max_tail(x, true);
            if t >= self.tail_ratio {
                return Some(Assessment {
                    trigger: Trigger::Tail,
                    score: self.score(x),
                    tail: t,
                    tail_feature: i,
                });
            }
        }
        if self.tail_only {
            return None;
        }
        let (t, i) = self.max_tail(x, false);
        if self.corroborate_ratio > 0.0 && t < self.corroborate_ratio {
            return None;
        }
        let score = self.anomalous_score(x)?;
        Some(Assessment {
            trigger: Trigger::Mixture,
            score,
            tail: t,
            tail_feature: i,
        })
    }

    /// A part to score with before its threshold is calibrated (training).
    fn uncalibrated(
        kind: WindowKind,
        features: &[FeatureStat],
        components: &[Component],
        params: &TrainParams,
    ) -> Result<Self, DetectError> {
        Self::new(kind, features, components, &Calibration::default(), params)
    }

    /// Standardised, transformed vector.
    pub fn standardise(&self, x: &FeatureVec) -> FeatureVec {
        let mut z = transform(x);
        for (v, f) in z.iter_mut().zip(&self.features) {
            *v = (*v - f.mean) / f.std;
        }
        z
    }

    /// Anomaly score: negative log-likelihood of the window.
    pub fn score(&self, x: &FeatureVec) -> f64 {
        let z = self.standardise(x);
        self.score_standardised(&z)
    }

    /// The window's score when it is above the threshold, else None: the
    /// same decision as [`LoadedPart::is_anomalous`] of
    /// [`LoadedPart::score`], cheaper for the usual window. One component
    /// under which the window is likelier than `exp(-threshold)` already
    /// puts the mixture's score below the threshold, so the components are
    /// tried likeliest first and each is given up as soon as its partial
    /// distance rules it out; only a window no component accepts is scored
    /// in full.
    pub fn anomalous_score(&self, x: &FeatureVec) -> Option<f64> {
        let z = self.standardise(x);
        let threshold = self.calibration.threshold;
        for &k in &self.order {
            let s = &self.scorers[k];
            // log_norm - m/2 > -threshold  ⟺  m < limit
            let limit = 2.0 * (s.log_norm + threshold);
            if limit.is_nan() || limit <= 0.0 {
                continue;
            }
            if distance_below(s, &z, limit) {
                return None;
            }
        }
        let score = self.score_standardised(&z);
        (score > threshold).then_some(score)
    }

    fn score_standardised(&self, z: &FeatureVec) -> f64 {
        let mut terms = [0.0f64; 16];
        let mut best = f64::NEG_INFINITY;
        for (k, s) in self.scorers.iter().enumerate() {
            let t = s.log_norm - 0.5 * mahalanobis_sq(s, z, f64::INFINITY);
            if k < terms.len() {
                terms[k] = t;
            }
            best = best.max(t);
        }
        if !best.is_finite() {
            return f64::INFINITY;
        }
        let n = self.scorers.len().min(terms.len());
        let sum: f64 = terms[..n].iter().map(|t| (t - best).exp()).sum();
        -(best + sum.ln())
    }

    /// Whether a score is above the calibrated threshold.
    pub fn is_anomalous(&self, score: f64) -> bool {
        score > self.calibration.threshold
    }

    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Per-feature baseline statistics.
    pub fn baseline(&self) -> &[FeatureStat] {
        &self.features
    }

    /// The features furthest from the baseline (|z|), largest first.
    pub fn explain(&self, x: &FeatureVec, top: usize) -> Vec<Contribution> {
        let z = self.standardise(x);
        let mut out: Vec<Contribution> = self
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let tail = f.tail.as_ref().zip(TAIL_PSEUDO[i]);
                Contribution {
                    feature: f.name.clone(),
                    value: x[i],
                    baseline_p50: tail.map_or(f.p50, |(t, _)| t.p50),
                    z: z[i],
                    baseline_p95: tail.map(|(t, _)| t.p95),
                    baseline_p99: tail.map(|(t, _)| t.p99),
                    tail_ratio: tail.map(|(t, c)| {
                        let reference = if TAIL_ALONE[i] { t.p95 } else { t.p99 };
                        tail_ratio(x[i], reference, c)
                    }),
                    principal_ref: None,
                    peer_ref: None,
                }
            })
            .collect();
        // Tail ratios first (they read as "n times the usual"), then |z|.
        out.sort_by(|a, b| {
            b.tail_ratio
                .unwrap_or(0.0)
                .total_cmp(&a.tail_ratio.unwrap_or(0.0))
                .then_with(|| b.z.abs().total_cmp(&a.z.abs()))
        });
        out.truncate(top);
        out
    }
}

impl LoadedModel {
    /// Builds the scorers of every part; refuses a model of another format
    /// or whose parts are malformed.
    pub fn new(model: AnomalyModel) -> Result<Self, DetectError> {
        if !(1..=MODEL_FORMAT).contains(&model.format) {
            return Err(DetectError::Model(format!(
                "model format {} is not supported (expected 1 to {MODEL_FORMAT})",
                model.format
            )));
        }
        if model.format == 1 && model.principal.is_some() {
            return Err(DetectError::Model(
                "a format 1 model cannot have a principal part".into(),
            ));
        }
        let session = LoadedPart::new(
            WindowKind::Session,
            &model.features,
            &model.components,
            &model.calibration,
            &model.params,
        )?;
        let principal = model
            .principal
            .as_ref()
            .map(|p| {
                LoadedPart::new(
                    WindowKind::Principal,
                    &p.features,
                    &p.components,
                    &p.calibration,
                    &model.params,
                )
            })
            .transpose()?;
        Ok(LoadedModel {
            model,
            session,
            principal,
        })
    }

    /// The part scoring windows of `kind` (None: the model has none).
    pub fn part(&self, kind: WindowKind) -> Option<&LoadedPart> {
        match kind {
            WindowKind::Session => Some(&self.session),
            WindowKind::Principal => self.principal.as_ref(),
        }
    }

    /// [`LoadedPart::score`] of the session part.
    pub fn score(&self, x: &FeatureVec) -> f64 {
        self.session.score(x)
    }

    /// [`LoadedPart::is_anomalous`] of the session part.
    pub fn is_anomalous(&self, score: f64) -> bool {
        self.session.is_anomalous(score)
    }

    /// [`LoadedPart::explain`] of the session part.
    pub fn explain(&self, x: &FeatureVec, top: usize) -> Vec<Contribution> {
        self.session.explain(x, top)
    }

    pub fn version(&self) -> &str {
        &self.model.version
    }

    /// This model as a conservative prior: only tail alarms, at `ratio`
    /// (at least the model's own tail ratio). A model without tail
    /// references cannot serve as a prior.
    pub fn into_prior(mut self, ratio: f64) -> Option<Self> {
        for part in std::iter::once(&mut self.session).chain(self.principal.as_mut()) {
            if part.tail_ratio <= 0.0 {
                return None;
            }
            part.tail_ratio = part.tail_ratio.max(ratio);
            part.tail_only = true;
        }
        Some(self)
    }

    /// Parses a model file's bytes (the version hash must match them).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, DetectError> {
        let model: AnomalyModel = serde_json::from_slice(bytes)
            .map_err(|e| DetectError::Model(format!("{what}: {e}")))?;
        // The hash is over the file's bytes as written (version blanked):
        // decimal floats need not parse back to the very same bits.
        let text = String::from_utf8_lossy(bytes);
        let blanked = text.replacen(
            &format!("\"version\": \"{}\"", model.version),
            "\"version\": \"\"",
            1,
        );
        let expect = hex::encode(Sha256::digest(blanked.as_bytes()));
        if expect != model.version {
            return Err(DetectError::Model(format!(
                "{what}: version {} does not match its contents ({expect}); the file was altered",
                model.version
            )));
        }
        LoadedModel::new(model)
    }

    /// Writes the model atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), DetectError> {
        let io = |e: std::io::Error| DetectError::Io {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = serde_json::to_vec_pretty(&self.model)
            .map_err(|e| DetectError::Model(format!("cannot encode model: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a model file; its version hash must match its contents.
    pub fn load(path: &Path) -> Result<Self, DetectError> {
        let bytes = std::fs::read(path).map_err(|e| DetectError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

/// SHA-256 of the model file's JSON (as `save` writes it) with an empty
/// `version`.
pub fn version_of(model: &AnomalyModel) -> Result<String, DetectError> {
    let mut m = model.clone();
    m.version.clear();
    let bytes = serde_json::to_vec_pretty(&m)
        .map_err(|e| DetectError::Model(format!("cannot encode model: {e}")))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Training windows of one kind, each with the session it was scored in
/// (the calibration unit) and its split group (which side of the held-out
/// split it falls on: the session itself for session windows, the
/// principal for principal windows).
#[derive(Clone, Debug, Default)]
pub struct TrainingSet {
    pub windows: Vec<FeatureVec>,
    /// Session key of each window.
    pub sessions: Vec<String>,
    /// Split group of each window.
    pub groups: Vec<String>,
}

impl TrainingSet {
    /// A window grouped by its session.
    pub fn push(&mut self, session: &str, x: FeatureVec) {
        self.push_grouped(session, session, x);
    }

    pub fn push_grouped(&mut self, session: &str, group: &str, x: FeatureVec) {
        self.windows.push(x);
        self.sessions.push(session.to_string());
        self.groups.push(group.to_string());
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Keeps only the windows for which `keep(session, group)` is true.
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        let n = self.windows.len();
        let (mut w, mut s, mut g) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let rows = self
            .windows
            .drain(..)
            .zip(self.sessions.drain(..))
            .zip(self.groups.drain(..));
        for ((x, k), gr) in rows {
            if keep(&k, &gr) {
                w.push(x);
                s.push(k);
                g.push(gr);
            }
        }
        self.windows = w;
        self.sessions = s;
        self.groups = g;
    }

    /// Keeps only the windows of sessions for which `keep` is true.
    pub fn retain_sessions(&mut self, keep: impl Fn(&str) -> bool) {
        self.retain(|s, _| keep(s));
    }

    fn group_of(&self, i: usize) -> &str {
        self.groups.get(i).unwrap_or(&self.sessions[i])
    }
}

/// Baseline windows of both kinds.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    pub session: TrainingSet,
    pub principal: TrainingSet,
}

impl Baseline {
    /// Adds an extractor observation to the set of its kind.
    pub fn observe(&mut self, o: &Observation<'_>) {
        match o.kind {
            WindowKind::Session => self.session.push(o.key, o.features),
            WindowKind::Principal => self.principal.push_grouped(o.session, o.key, o.features),
        }
    }

    /// Keeps the session windows of the sessions for which `keep` is true,
    /// and the principal windows of the principals none of whose sessions
    /// is dropped (a principal window can hold several sessions).
    pub fn retain_sessions(&mut self, keep: impl Fn(&str) -> bool) {
        self.session.retain_sessions(&keep);
        let dropped: std::collections::HashSet<String> = self
            .principal
            .sessions
            .iter()
            .zip(&self.principal.groups)
            .filter(|(s, _)| !keep(s))
            .map(|(_, g)| g.clone())
            .collect();
        self.principal
            .retain(|s, g| keep(s) && !dropped.contains(g));
    }
}

fn fit_gmm(
    data: &Array2<f64>,
    k: usize,
    reg: f64,
) -> Result<GaussianMixtureModel<f64>, DetectError> {
    let ds = DatasetBase::from(data.clone());
    GaussianMixtureModel::params(k)
        .covariance_type(GmmCovarType::Full)
        .init_method(GmmInitMethod::KMeans)
        .reg_covariance(reg)
        .max_n_iterations(1000)
        .tolerance(1e-3)
        .n_runs(1)
        .fit(&ds)
        .map_err(|e| DetectError::Model(format!("Gaussian mixture (k={k}) did not fit: {e}")))
}

fn components_of(g: &GaussianMixtureModel<f64>) -> Vec<Component> {
    let d = N_FEATURES;
    let w = g.weights();
    let means = g.means();
    let prec = g.precisions();
    (0..w.len())
        .map(|k| Component {
            weight: w[k],
            mean: (0..d).map(|i| means[[k, i]]).collect(),
            precision: (0..d)
                .flat_map(|i| (0..d).map(move |j| (i, j)))
                .map(|(i, j)| 0.5 * (prec[[k, i, j]] + prec[[k, j, i]]))
                .collect(),
        })
        .collect()
}

/// One fitted part.
struct PartFit {
    features: Vec<FeatureStat>,
    components: Vec<Component>,
    calibration: Calibration,
    sessions: usize,
    groups: usize,
    windows: usize,
}

/// Tukey's outer fence of `values` (`Q3 + 3·IQR`, the IQR floored at
/// `min_iqr`): values above it are far-out.
fn outer_fence(values: &[f64], min_iqr: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::INFINITY;
    }
    v.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&v, 0.25), quantile(&v, 0.75));
    q3 + 3.0 * (q3 - q1).max(min_iqr)
}

/// Per-session maximum of each feature, in first-seen order of sessions.
fn session_maxima(set: &TrainingSet) -> Vec<FeatureVec> {
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out: Vec<FeatureVec> = Vec::new();
    for (x, s) in set.windows.iter().zip(&set.sessions) {
        let i = *index.entry(s.as_str()).or_insert_with(|| {
            out.push([f64::NEG_INFINITY; N_FEATURES]);
            out.len() - 1
        });
        for (m, v) in out[i].iter_mut().zip(x) {
            if v.is_finite() {
                *m = m.max(*v);
            }
        }
    }
    out
}

/// Robust tail references of every one-sided feature (see [`TailRef`]).
fn tail_refs(set: &TrainingSet) -> Vec<Option<TailRef>> {
    let maxima = session_maxima(set);
    (0..N_FEATURES)
        .map(|i| {
            TAIL_PSEUDO[i]?;
            let raw: Vec<f64> = maxima.iter().map(|m| m[i].max(0.0)).collect();
            // The fence of the non-zero sessions: most sessions never read a
            // resource, and a fence over all of them would cut benign tails.
            let nonzero: Vec<f64> = raw
                .iter()
                .filter(|v| **v > 0.0)
                .map(|v| v.ln_1p())
                .collect();
            let fence = outer_fence(&nonzero, std::f64::consts::LN_2);
            let mut kept: Vec<f64> = raw.iter().copied().filter(|v| v.ln_1p() <= fence).collect();
            kept.sort_by(f64::total_cmp);
            Some(TailRef {
                p50: quantile(&kept, 0.5),
                p95: quantile(&kept, 0.95),
                p99: quantile(&kept, 0.99),
                fenced_sessions: raw.len() - kept.len(),
            })
        })
        .collect()
}

/// Baseline statistics of the windows `idx` (transformed mean/std, raw
/// p50/p99) with the tail references.
fn feature_stats(set: &TrainingSet, idx: &[usize], tails: &[Option<TailRef>]) -> Vec<FeatureStat> {
    let mut features = Vec::with_capacity(N_FEATURES);
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        let mut raw: Vec<f64> = idx.iter().map(|&r| set.windows[r][i]).collect();
        raw.sort_by(f64::total_cmp);
        let t: Vec<f64> = idx.iter().map(|&r| transform(&set.windows[r])[i]).collect();
        let n = t.len().max(1) as f64;
        let mean = t.iter().sum::<f64>() / n;
        let var = t.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        features.push(FeatureStat {
            name: name.to_string(),
            log: LOG_FEATURES[i],
            mean,
            std: var.sqrt().max(MIN_STD),
            p50: quantile(&raw, 0.5),
            p99: quantile(&raw, 0.99),
            tail: tails[i].clone(),
        });
    }
    features
}

/// Fits the mixture on the windows `idx` (standardised with `features`);
/// BIC among the candidates when `params.components` is 0.
fn fit_mixture(
    kind: WindowKind,
    set: &TrainingSet,
    idx: &[usize],
    features: &[FeatureStat],
    params: &TrainParams,
) -> Result<Vec<Component>, DetectError> {
    let d = N_FEATURES;
    let stride = idx.len().div_ceil(params.max_fit_windows.max(100));
    let sample: Vec<usize> = idx.iter().copied().step_by(stride.max(1)).collect();
    let mut data = Array2::<f64>::zeros((sample.len(), d));
    for (r, &i) in sample.iter().enumerate() {
        let t = transform(&set.windows[i]);
        for j in 0..d {
            data[[r, j]] = (t[j] - features[j].mean) / features[j].std;
        }
    }
    let candidates: Vec<usize> = if params.components > 0 {
        vec![params.components]
    } else {
        vec![2, 4, 6, 8]
    };
    let mut best: Option<(f64, Vec<Component>)> = None;
    let mut last_err = None;
    for k in candidates {
        if k * 10 > sample.len() {
            continue;
        }
        let g = match fit_gmm(&data, k, params.reg_covar) {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!("{kind} part: {e}");
                last_err = Some(e);
                continue;
            }
        };
        let comps = components_of(&g);
        let Ok(probe) = LoadedPart::uncalibrated(kind, features, &comps, params) else {
            continue;
        };
        let mut nll = 0.0;
        for r in 0..sample.len() {
            let mut z = [0.0; N_FEATURES];
            for j in 0..d {
                z[j] = data[[r, j]];
            }
            nll += probe.score_standardised(&z);
        }
        let p = (k * (d + d * (d + 1) / 2) + k - 1) as f64;
        let bic = 2.0 * nll + p * (sample.len() as f64).ln();
        tracing::debug!(%kind, k, bic, "mixture fitted");
        if best.as_ref().is_none_or(|(b, _)| bic < *b) {
            best = Some((bic, comps));
        }
    }
    best.map(|(_, c)| c).ok_or_else(|| {
        last_err.unwrap_or_else(|| {
            DetectError::Model(format!("{kind} part: no mixture could be fitted"))
        })
    })
}

/// Per-session maximum score of the windows `idx` under `part`.
fn session_scores<'a>(
    set: &'a TrainingSet,
    idx: &[usize],
    part: &LoadedPart,
) -> std::collections::BTreeMap<&'a str, f64> {
    let mut out = std::collections::BTreeMap::new();
    for &i in idx {
        let sc = part.score(&set.windows[i]);
        let e = out
            .entry(set.sessions[i].as_str())
            .or_insert(f64::NEG_INFINITY);
        *e = e.max(sc);
    }
    out
}

/// Fits and calibrates the part of one kind of window.
///
/// * Split by **time**: windows arrive in event-time order; the sessions
///   that start in the last third of the windows calibrate the threshold,
///   the earlier ones fit (when both sides have ≥ 100 sessions; else
///   in-sample), so the threshold is checked on later traffic, as it will
///   be used.
/// * **Robust to a contaminated baseline**: tail references come from
///   fenced per-session maxima; the mixture is fitted once, the sessions
///   whose maximum score is far out (Tukey's outer fence) are left out, and
///   it is fitted again; the calibration leaves far-out sessions out too.
fn fit_part(
    kind: WindowKind,
    set: &TrainingSet,
    params: &TrainParams,
    target_fpr: f64,
) -> Result<PartFit, DetectError> {
    use std::collections::HashSet;
    if set.len() < MIN_WINDOWS {
        return Err(DetectError::Model(format!(
            "too little baseline to train the {kind} part on: {} windows (need at least {MIN_WINDOWS})",
            set.len()
        )));
    }
    // Time split: a session's side is decided by its first window.
    let cut = set.len() * 2 / 3;
    let mut first_seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, s) in set.sessions.iter().enumerate() {
        first_seen.entry(s.as_str()).or_insert(i);
    }
    let late = |i: usize| first_seen[set.sessions[i].as_str()] >= cut;
    let calib_sessions = first_seen.values().filter(|&&f| f >= cut).count();
    let n_sessions = first_seen.len();
    let n_groups = (0..set.len())
        .map(|i| set.group_of(i))
        .collect::<HashSet<_>>()
        .len();
    let held_out = calib_sessions >= 100 && n_sessions.saturating_sub(calib_sessions) >= 100;
    let fit_idx: Vec<usize> = (0..set.len()).filter(|&i| !held_out || !late(i)).collect();
    let cal_idx: Vec<usize> = (0..set.len()).filter(|&i| !held_out || late(i)).collect();
    let tails = tail_refs(set);

    // Pass 1, then leave out far-out sessions of the fitting side and refit.
    let mut features = feature_stats(set, &fit_idx, &tails);
    let mut components = fit_mixture(kind, set, &fit_idx, &features, params)?;
    let part = LoadedPart::uncalibrated(kind, &features, &components, params)?;
    let fit_scores = session_scores(set, &fit_idx, &part);
    let fence = outer_fence(&fit_scores.values().copied().collect::<Vec<_>>(), 1.0);
    let far: HashSet<&str> = fit_scores
        .iter()
        .filter(|(_, v)| **v > fence)
        .map(|(k, _)| *k)
        .collect();
    if !far.is_empty() {
        let kept: Vec<usize> = fit_idx
            .iter()
            .copied()
            .filter(|&i| !far.contains(set.sessions[i].as_str()))
            .collect();
        if kept.len() >= MIN_WINDOWS {
            features = feature_stats(set, &kept, &tails);
            components = fit_mixture(kind, set, &kept, &features, params)?;
        }
    }
    let part = LoadedPart::uncalibrated(kind, &features, &components, params)?;
    // Calibration: per-session maximum score, far-out sessions left out.
    let cal = session_scores(set, &cal_idx, &part);
    let cal_values: Vec<f64> = cal.values().copied().collect();
    let fence = outer_fence(&cal_values, 1.0);
    let scores: Vec<f64> = cal_values.into_iter().filter(|v| *v <= fence).collect();
    let mut calibration = Calibration::from_session_scores(scores, target_fpr, held_out);
    calibration.fenced_sessions = cal.len() - calibration.sessions;
    if held_out {
        let fit_max = session_scores(set, &fit_idx, &part);
        let above = fit_max
            .values()
            .filter(|&&v| v > calibration.threshold)
            .count();
        calibration.fit_sessions = fit_max.len();
        calibration.fit_fpr = above as f64 / fit_max.len().max(1) as f64;
    }
    Ok(PartFit {
        features,
        components,
        calibration,
        sessions: n_sessions,
        groups: n_groups,
        windows: set.len(),
    })
}

/// Trains and calibrates a model from baseline windows: the session part,
/// and the principal part when the baseline has principal windows. The
/// target false-positive rate is split between the two parts
/// ([`TrainParams::principal_fpr_share`]): a benign session flagged by
/// either counts once, so the parts' rates add up at most.
pub fn train(
    baseline: &Baseline,
    spec: &FeatureSpec,
    params: &TrainParams,
    trained_on: &str,
) -> Result<LoadedModel, DetectError> {
    let with_principal = baseline.principal.len() >= MIN_WINDOWS;
    let share = if with_principal && params.principal_fpr_share.is_finite() {
        params.principal_fpr_share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // The two parts are independent: the principal part is fitted on a
    // second thread (the pipeline waits for the model when the warm-up's
    // training is inline or has not finished within its batches).
    let fit_session = || {
        fit_part(
            WindowKind::Session,
            &baseline.session,
            params,
            params.target_fpr * (1.0 - share),
        )
    };
    let fit_principal = || {
        fit_part(
            WindowKind::Principal,
            &baseline.principal,
            params,
            params.target_fpr * share,
        )
    };
    let (session, principal) = if with_principal {
        std::thread::scope(|s| {
            let other = std::thread::Builder::new()
                .name("dunes-train".into())
                .spawn_scoped(s, fit_principal);
            let session = fit_session();
            let principal = match other {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // No thread to be had: fit it here.
                Err(_) => fit_principal(),
            };
            (session, Some(principal))
        })
    } else {
        tracing::warn!(
            windows = baseline.principal.len(),
            "too few principal windows in the baseline: the model has no principal part"
        );
        (fit_session(), None)
    };
    let session = session?;
    let principal = match principal {
        None => None,
        Some(p) => {
            let p = p?;
            Some(PartModel {
                features: p.features,
                components: p.components,
                calibration: p.calibration,
                trained_principals: p.groups,
                trained_sessions: p.sessions,
                trained_windows: p.windows,
            })
        }
    };
    let mut model = AnomalyModel {
        format: MODEL_FORMAT,
        version: String::new(),
        kind: "gmm".into(),
        features: session.features,
        feature_spec: spec.clone(),
        params: params.clone(),
        components: session.components,
        calibration: session.calibration,
        trained_on: trained_on.to_string(),
        trained_sessions: session.sessions,
        trained_windows: session.windows,
        principal,
    };
    model.version = version_of(&model)?;
    LoadedModel::new(model)
}
