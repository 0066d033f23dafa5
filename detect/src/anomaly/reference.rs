//! Reference profiles: how far each principal and each peer group (same
//! client application on the same server) usually goes, per feature, so an
//! explanation can say "read 46 distinct documents; this principal's p99 is
//! 4, its peers' 11" rather than compare with the whole baseline only.
//!
//! The unit is a **session**: when a session window is dropped (idle for two
//! window lengths) its peak feature vector (the per-feature maximum over the
//! windows it produced) is added to its principal's profile and its peer
//! group's. A profile keeps, per feature, a sparse histogram of those peaks:
//! counts and other `ln(1+x)` features in buckets of `ln(1+x)·32` (3 % wide,
//! so integers up to 30 stay exact once rounded), ratios and entropies in
//! steps of 0.01. Quantiles are nearest-rank over the sessions; with fewer
//! than 100 sessions the reference is the maximum (a p99 of fewer sessions
//! is the maximum anyway).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::features::{FeatureVec, LOG_FEATURES, N_FEATURES};

/// Features whose values are whole numbers (shown rounded).
const INTEGER_FEATURES: [bool; N_FEATURES] = [
    false, true, true, true, true, false, true, true, false, false, false, false, false,
];

/// Principals with a profile (new principals beyond it get none).
const MAX_PRINCIPAL_PROFILES: usize = 100_000;
/// Peer groups with a profile.
const MAX_PEER_PROFILES: usize = 10_000;
/// Sessions a reference needs before a quantile is given as p99 (else max).
const P99_MIN_SESSIONS: u64 = 100;

fn bucket(feature: usize, x: f64) -> u16 {
    let x = if x.is_finite() { x.max(0.0) } else { 0.0 };
    let b = if LOG_FEATURES[feature] {
        (x.ln_1p() * 32.0).round()
    } else {
        (x * 100.0).round()
    };
    b.min(f64::from(u16::MAX)) as u16
}

fn bucket_value(feature: usize, b: u16) -> f64 {
    let v = if LOG_FEATURES[feature] {
        (f64::from(b) / 32.0).exp_m1()
    } else {
        f64::from(b) / 100.0
    };
    if INTEGER_FEATURES[feature] {
        v.round()
    } else {
        v
    }
}

/// Session peaks of one principal or peer group: (feature, bucket, sessions)
/// sorted by feature then bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    sessions: u64,
    bins: Vec<(u8, u16, u32)>,
}

impl Profile {
    fn add(&mut self, peak: &FeatureVec) {
        self.sessions += 1;
        for (f, &x) in peak.iter().enumerate() {
            let key = (f as u8, bucket(f, x));
            match self.bins.binary_search_by_key(&key, |&(f, b, _)| (f, b)) {
                Ok(i) => self.bins[i].2 = self.bins[i].2.saturating_add(1),
                Err(i) => self.bins.insert(i, (key.0, key.1, 1)),
            }
        }
    }

    /// Sessions recorded.
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    /// Nearest-rank quantile `q` of feature `f` over the sessions.
    pub fn quantile(&self, f: usize, q: f64) -> Option<f64> {
        if self.sessions == 0 {
            return None;
        }
        // (the epsilon keeps 0.99·100 from rounding up to rank 100)
        let rank = ((q * self.sessions as f64 - 1e-9).ceil() as u64).clamp(1, self.sessions);
        let mut seen = 0u64;
        for &(_, b, n) in self.bins.iter().filter(|(g, ..)| usize::from(*g) == f) {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bucket_value(f, b));
            }
        }
        None
    }

    /// The reference an explanation quotes: p99 with enough sessions, else
    /// the maximum.
    fn reference(&self, f: usize, group: &str) -> Option<Reference> {
        let (quantile, q) = if self.sessions >= P99_MIN_SESSIONS {
            ("p99", 0.99)
        } else {
            ("max", 1.0)
        };
        Some(Reference {
            group: group.to_string(),
            quantile,
            value: self.quantile(f, q)?,
            sessions: self.sessions,
        })
    }
}

/// A per-principal or per-peer-group reference value of one feature.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reference {
    /// The principal, or the peer group (`<client> on <server>`).
    pub group: String,
    /// `"p99"`, or `"max"` with fewer than 100 sessions.
    pub quantile: &'static str,
    pub value: f64,
    /// Sessions it is computed over.
    pub sessions: u64,
}

/// The peer group of a session: its client application on its server.
pub fn peer_group(client: Option<&str>, server_id: &str) -> String {
    format!("{} on {server_id}", client.unwrap_or("unknown client"))
}

/// Profiles of every principal and peer group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profiles {
    pub principals: HashMap<String, Profile>,
    pub peers: HashMap<String, Profile>,
}

impl Profiles {
    /// Adds a finished session's peak features.
    pub fn record(&mut self, principal: &str, peer: &str, peak: &FeatureVec) {
        for (map, key, cap) in [
            (&mut self.principals, principal, MAX_PRINCIPAL_PROFILES),
            (&mut self.peers, peer, MAX_PEER_PROFILES),
        ] {
            if let Some(p) = map.get_mut(key) {
                p.add(peak);
            } else if map.len() < cap {
                map.entry(key.to_string()).or_default().add(peak);
            }
        }
    }

    /// The principal's and the peer group's reference for feature `f`
    /// (none without a profile).
    pub fn references(
        &self,
        principal: &str,
        peer: &str,
        f: usize,
    ) -> (Option<Reference>, Option<Reference>) {
        (
            self.principals
                .get(principal)
                .and_then(|p| p.reference(f, principal)),
            self.peers.get(peer).and_then(|p| p.reference(f, peer)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::FEATURE_NAMES;

    fn f(name: &str) -> usize {
        FEATURE_NAMES.iter().position(|n| *n == name).unwrap()
    }

    fn peak(resources: f64, error_ratio: f64) -> FeatureVec {
        let mut v = [0.0; N_FEATURES];
        v[f("distinct_resources")] = resources;
        v[f("error_ratio")] = error_ratio;
        v
    }

    #[test]
    fn quantiles_are_nearest_rank_and_integers_stay_exact() {
        let mut p = Profile::default();
        // 1..=200 distinct resources, error ratios 0.00..=0.99.
        for k in 1..=200u32 {
            p.add(&peak(f64::from(k), f64::from(k % 100) / 100.0));
        }
        let r = f("distinct_resources");
        for (q, want) in [(0.5, 100.0), (0.9, 180.0), (1.0, 200.0)] {
            let got = p.quantile(r, q).unwrap();
            // Exact up to 30, within the 3 % bucket width above.
            assert!((got - want).abs() <= want * 0.02, "q{q}: {got} vs {want}");
        }
        for k in 1..=30 {
            let mut small = Profile::default();
            small.add(&peak(f64::from(k), 0.0));
            assert_eq!(small.quantile(r, 1.0), Some(f64::from(k)));
        }
        assert_eq!(p.quantile(f("error_ratio"), 1.0), Some(0.99));
        assert_eq!(p.quantile(f("error_ratio"), 0.5), Some(0.49));
        assert_eq!(Profile::default().quantile(r, 0.99), None);
    }

    #[test]
    fn references_say_max_below_a_hundred_sessions_then_p99() {
        let mut ps = Profiles::default();
        for k in 0..99 {
            ps.record("alice", "app on srv", &peak(f64::from(k % 5), 0.0));
        }
        let r = f("distinct_resources");
        let (mine, peers) = ps.references("alice", "app on srv", r);
        let mine = mine.unwrap();
        assert_eq!((mine.quantile, mine.value, mine.sessions), ("max", 4.0, 99));
        assert_eq!(peers.unwrap().group, "app on srv");
        // The 100th session (an outlier) makes it a p99 over 100: the 99th
        // value, not the outlier.
        ps.record("alice", "app on srv", &peak(50.0, 0.0));
        let mine = ps.references("alice", "app on srv", r).0.unwrap();
        assert_eq!(
            (mine.quantile, mine.value, mine.sessions),
            ("p99", 4.0, 100)
        );
        assert_eq!(ps.references("bob", "other", r), (None, None));
        let json = serde_json::to_string(&ps).unwrap();
        assert_eq!(serde_json::from_str::<Profiles>(&json).unwrap(), ps);
    }
}
