//! Threshold calibration from a target false-positive rate.
//!
//! The unit of a false positive is a *session*: a benign session is flagged
//! when any of its windows scores above the threshold. So the threshold is
//! the `1 - target_fpr` quantile of the per-session maximum score over the
//! calibration sessions (held out from fitting when there are enough), not
//! a per-window quantile, which would flag far more sessions than targeted.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Alert when a window's score is above this.
    pub threshold: f64,
    pub target_fpr: f64,
    /// Sessions the threshold was set on and the share of them above it.
    pub sessions: usize,
    pub empirical_fpr: f64,
    /// Whether those sessions were held out from fitting.
    pub held_out: bool,
    /// Sessions used for fitting and the share of them above the threshold
    /// (in-sample; only when calibration was held out).
    #[serde(default)]
    pub fit_sessions: usize,
    #[serde(default)]
    pub fit_fpr: f64,
    /// Calibration sessions left out as far out (beyond Tukey's outer fence
    /// of the session scores: presumed attacks in an unlabelled baseline).
    #[serde(default)]
    pub fenced_sessions: usize,
    /// Quantiles of the per-session maximum score (p50, p90, p99).
    pub session_score_p50: f64,
    pub session_score_p90: f64,
    pub session_score_p99: f64,
}

fn q(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Calibration {
    /// The smallest threshold that flags at most `target_fpr` of the
    /// sessions (scores strictly above it alert).
    pub fn from_session_scores(mut scores: Vec<f64>, target_fpr: f64, held_out: bool) -> Self {
        scores.retain(|s| s.is_finite());
        scores.sort_by(f64::total_cmp);
        let n = scores.len();
        let target = if target_fpr.is_finite() {
            target_fpr.clamp(0.0, 1.0)
        } else {
            0.005
        };
        let threshold = if n == 0 {
            f64::INFINITY
        } else {
            // Allowed sessions above: floor(target · n).
            let allowed = (target * n as f64).floor() as usize;
            scores[n - 1 - allowed.min(n - 1)]
        };
        let above = scores.iter().filter(|&&s| s > threshold).count();
        Calibration {
            threshold,
            target_fpr: target,
            sessions: n,
            empirical_fpr: above as f64 / n.max(1) as f64,
            held_out,
            fit_sessions: 0,
            fit_fpr: 0.0,
            fenced_sessions: 0,
            session_score_p50: q(&scores, 0.5),
            session_score_p90: q(&scores, 0.9),
            session_score_p99: q(&scores, 0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_flags_at_most_the_target_share() {
        let scores: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let c = Calibration::from_session_scores(scores, 0.005, true);
        assert_eq!(c.threshold, 994.0);
        assert_eq!(c.empirical_fpr, 0.005);
        let c = Calibration::from_session_scores(vec![1.0, 2.0, 3.0], 0.005, false);
        assert_eq!(c.threshold, 3.0);
        assert_eq!(c.empirical_fpr, 0.0);
        let c = Calibration::from_session_scores(vec![], 0.005, false);
        assert!(c.threshold.is_infinite());
    }
}
