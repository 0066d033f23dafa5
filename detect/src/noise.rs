//! Noise control after detection: per-rule suppression (one incident per
//! rule + entity per suppression window of event time; later matches update
//! its running `match_count`, `last_ts` and `event_ids`) and a global
//! de-duplication of identical incidents (same rule, entity and events).

use std::collections::VecDeque;

use crate::state::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::incident::{Incident, MAX_EVIDENCE_ROWS};

/// Default suppression window when a rule does not set `suppress`.
pub const DEFAULT_SUPPRESS_US: i64 = 10 * 60 * 1_000_000;
/// Fingerprints remembered for de-duplication.
pub const MAX_FINGERPRINTS: usize = 200_000;
/// Event ids an incident keeps (the running count keeps counting).
pub const MAX_EVENT_IDS: usize = 500;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenIncident {
    pub incident: Incident,
    /// Event time (µs) until which matches fold into this incident.
    pub until: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NoiseState {
    pub open: HashMap<String, OpenIncident>,
    pub fingerprints: VecDeque<String>,
    #[serde(skip)]
    fp_set: HashSet<String>,
    pub max_ts: i64,
    pub suppressed: u64,
    pub duplicates: u64,
    /// Open keys changed or removed since the last [`NoiseState::delta`].
    #[serde(skip)]
    dirty_open: HashSet<String>,
    /// Fingerprints pushed / dropped from the front since the last delta.
    #[serde(skip)]
    fp_pushed: usize,
    #[serde(skip)]
    fp_dropped: usize,
}

/// What changed in a [`NoiseState`] since the previous delta (see
/// [`crate::state::RuleDelta`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "O: Deserialize<'de>, F: Deserialize<'de>"))]
pub struct NoiseDelta<O = OpenIncident, F = String> {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub open: std::collections::BTreeMap<String, Option<O>>,
    /// Fingerprints dropped from the front, then these appended.
    #[serde(default)]
    pub fp_dropped: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fp_pushed: Vec<F>,
    pub max_ts: i64,
    pub suppressed: u64,
    pub duplicates: u64,
}

impl<O, F> Default for NoiseDelta<O, F> {
    fn default() -> Self {
        NoiseDelta {
            open: Default::default(),
            fp_dropped: 0,
            fp_pushed: Vec::new(),
            max_ts: 0,
            suppressed: 0,
            duplicates: 0,
        }
    }
}

/// A [`NoiseDelta`] borrowing the live values.
pub type NoiseDeltaRef<'a> = NoiseDelta<&'a OpenIncident, &'a str>;

/// What noise control let through.
#[derive(Debug, Default)]
pub struct Filtered {
    pub new: Vec<Incident>,
    /// Earlier incidents with a higher running count (same incident_id).
    pub updates: Vec<Incident>,
}

/// Appends a new incident, noting where its id first appears.
fn push_new(out: &mut Filtered, new_at: &mut HashMap<String, usize>, inc: Incident) {
    new_at
        .entry(inc.incident_id.clone())
        .or_insert(out.new.len());
    out.new.push(inc);
}

fn fingerprint(inc: &Incident) -> String {
    let mut ids = inc.event_ids.clone();
    ids.sort();
    let text = format!(
        "{}\n{}\n{}",
        inc.rule_id,
        serde_json::to_string(&inc.entity).unwrap_or_default(),
        ids.join(",")
    );
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

impl NoiseState {
    /// The changes since the previous call (which they reset).
    pub fn delta(&mut self) -> NoiseDeltaRef<'_> {
        let dirty = std::mem::take(&mut self.dirty_open);
        let pushed = std::mem::take(&mut self.fp_pushed).min(self.fingerprints.len());
        let skip = self.fingerprints.len() - pushed;
        NoiseDelta {
            open: crate::state::changed(dirty, &self.open),
            fp_dropped: std::mem::take(&mut self.fp_dropped),
            fp_pushed: self
                .fingerprints
                .iter()
                .skip(skip)
                .map(String::as_str)
                .collect(),
            max_ts: self.max_ts,
            suppressed: self.suppressed,
            duplicates: self.duplicates,
        }
    }

    /// Applies a delta read back.
    pub fn apply_delta(&mut self, delta: NoiseDelta) {
        crate::state::apply_changes(&mut self.open, delta.open);
        for _ in 0..delta.fp_dropped {
            self.fingerprints.pop_front();
        }
        self.fingerprints.extend(delta.fp_pushed);
        self.fp_set.clear();
        self.max_ts = delta.max_ts;
        self.suppressed = delta.suppressed;
        self.duplicates = delta.duplicates;
    }

    fn remember(&mut self, fp: String) {
        if self.fp_set.len() != self.fingerprints.len() {
            self.fp_set = self.fingerprints.iter().cloned().collect();
        }
        if self.fp_set.insert(fp.clone()) {
            self.fingerprints.push_back(fp);
            self.fp_pushed += 1;
            while self.fingerprints.len() > MAX_FINGERPRINTS {
                if let Some(old) = self.fingerprints.pop_front() {
                    self.fp_set.remove(&old);
                    self.fp_dropped += 1;
                }
            }
        }
    }

    fn seen(&mut self, fp: &str) -> bool {
        if self.fp_set.len() != self.fingerprints.len() {
            self.fp_set = self.fingerprints.iter().cloned().collect();
        }
        self.fp_set.contains(fp)
    }

    /// `suppress_us(rule_id)` gives the rule's suppression window (0: off).
    pub fn apply(
        &mut self,
        incidents: Vec<Incident>,
        suppress_us: impl Fn(&str) -> i64,
    ) -> Filtered {
        let mut out = Filtered::default();
        // Earlier incidents that grew, in order, with their open key.
        let mut updated: Vec<(String, String)> = Vec::new();
        let mut updated_ids: HashSet<String> = HashSet::default();
        // Where each incident id of `out.new` is (its first place).
        let mut new_at: HashMap<String, usize> = HashMap::default();
        // New incidents of this batch that later matches grew: the open
        // incident (by key) they take their final state from.
        let mut grown: HashMap<String, usize> = HashMap::default();
        for inc in incidents {
            let fp = fingerprint(&inc);
            if self.seen(&fp) {
                self.duplicates += 1;
                continue;
            }
            self.remember(fp);
            self.max_ts = self.max_ts.max(inc.last_ts.timestamp_micros());
            let window = suppress_us(&inc.rule_id);
            if window <= 0 {
                push_new(&mut out, &mut new_at, inc);
                continue;
            }
            let key = format!(
                "{}\n{}",
                inc.rule_id,
                serde_json::to_string(&inc.entity).unwrap_or_default()
            );
            let first = inc.first_ts.timestamp_micros();
            self.dirty_open.insert(key.clone());
            match self.open.get_mut(&key) {
                Some(open)
                    if first < open.until
                        && first >= open.incident.first_ts.timestamp_micros() - window =>
                {
                    self.suppressed += 1;
                    let o = &mut open.incident;
                    o.match_count += inc.match_count;
                    o.first_ts = o.first_ts.min(inc.first_ts);
                    o.last_ts = o.last_ts.max(inc.last_ts);
                    for id in inc.event_ids {
                        if o.event_ids.len() >= MAX_EVENT_IDS {
                            break;
                        }
                        if !o.event_ids.contains(&id) {
                            o.event_ids.push(id);
                        }
                    }
                    for ev in inc.evidence {
                        if o.evidence.len() >= MAX_EVIDENCE_ROWS {
                            break;
                        }
                        o.evidence.push(ev);
                    }
                    // A new incident of this batch is still being built:
                    // it is reported as its open incident ends the batch
                    // (copied once, below), instead of as an update.
                    if let Some(&at) = new_at.get(&o.incident_id) {
                        grown.insert(key, at);
                    } else if updated_ids.insert(o.incident_id.clone()) {
                        updated.push((o.incident_id.clone(), key));
                    }
                }
                _ => {
                    let new = OpenIncident {
                        incident: inc.clone(),
                        until: first + window,
                    };
                    // An incident that grew in this batch and now leaves
                    // its key is reported as it is: a new one of this batch
                    // takes its state; an earlier one is an update (the
                    // loop below finds only what is still open).
                    if let Some(old) = self.open.insert(key.clone(), new) {
                        if let Some(at) = grown.remove(&key) {
                            out.new[at] = old.incident;
                        } else if updated_ids.contains(&old.incident.incident_id) {
                            out.updates.push(old.incident);
                        }
                    }
                    push_new(&mut out, &mut new_at, inc);
                }
            }
        }
        for (key, at) in grown {
            if let Some(o) = self.open.get(&key) {
                out.new[at] = o.incident.clone();
            }
        }
        // (an id lives under one key: its rule and entity)
        for (id, key) in updated {
            if let Some(o) = self.open.get(&key).filter(|o| o.incident.incident_id == id) {
                out.updates.push(o.incident.clone());
            }
        }
        // Closed windows (with an hour of slack for late matches) go.
        let horizon = self.max_ts - 3_600_000_000;
        let dirty = &mut self.dirty_open;
        self.open.retain(|k, o| {
            let keep = o.until >= horizon;
            if !keep {
                dirty.insert(k.clone());
            }
            keep
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::IncidentStatus;
    use crate::rule::{Level, Severity};
    use chrono::{TimeZone, Utc};

    fn inc(id: &str, session: &str, t: i64, ev: &str) -> Incident {
        Incident {
            incident_id: id.into(),
            rule_id: "r".into(),
            rule_sha256: String::new(),
            level: Level::Analyst,
            severity: Severity::High,
            title: "t".into(),
            tags: vec![],
            entity: [("session_id".to_string(), serde_json::json!(session))].into(),
            session_id: Some(session.into()),
            server_id: None,
            first_ts: Utc.timestamp_opt(t, 0).unwrap(),
            last_ts: Utc.timestamp_opt(t, 0).unwrap(),
            event_ids: vec![ev.into()],
            match_count: 1,
            evidence: vec![],
            status: IncidentStatus::Open,
            detected_at: Utc.timestamp_opt(0, 0).unwrap(),
            backfill: false,
        }
    }

    /// [`NoiseState::apply`] as it was before suppression found incidents
    /// through maps (linear searches), with one fix marked below: the
    /// reference of the proptest below.
    fn apply_before(
        n: &mut NoiseState,
        incidents: Vec<Incident>,
        suppress_us: impl Fn(&str) -> i64,
    ) -> Filtered {
        let mut out = Filtered::default();
        let mut updated: Vec<String> = Vec::new();
        for inc in incidents {
            let fp = fingerprint(&inc);
            if n.seen(&fp) {
                n.duplicates += 1;
                continue;
            }
            n.remember(fp);
            n.max_ts = n.max_ts.max(inc.last_ts.timestamp_micros());
            let window = suppress_us(&inc.rule_id);
            if window <= 0 {
                out.new.push(inc);
                continue;
            }
            let key = format!(
                "{}\n{}",
                inc.rule_id,
                serde_json::to_string(&inc.entity).unwrap_or_default()
            );
            let first = inc.first_ts.timestamp_micros();
            n.dirty_open.insert(key.clone());
            match n.open.get_mut(&key) {
                Some(open)
                    if first < open.until
                        && first >= open.incident.first_ts.timestamp_micros() - window =>
                {
                    n.suppressed += 1;
                    let o = &mut open.incident;
                    o.match_count += inc.match_count;
                    o.first_ts = o.first_ts.min(inc.first_ts);
                    o.last_ts = o.last_ts.max(inc.last_ts);
                    for id in inc.event_ids {
                        if o.event_ids.len() >= MAX_EVENT_IDS {
                            break;
                        }
                        if !o.event_ids.contains(&id) {
                            o.event_ids.push(id);
                        }
                    }
                    for ev in inc.evidence {
                        if o.evidence.len() >= MAX_EVIDENCE_ROWS {
                            break;
                        }
                        o.evidence.push(ev);
                    }
                    // A new incident of this batch is still being built:
                    // fold into it instead of reporting an update.
                    if let Some(n) = out.new.iter_mut().find(|n| n.incident_id == o.incident_id) {
                        *n = o.clone();
                    } else if !updated.contains(&o.incident_id) {
                        updated.push(o.incident_id.clone());
                    }
                }
                _ => {
                    // (the one change since: an earlier incident that grew
                    // in this batch and leaves its key is an update)
                    if let Some(old) = n.open.get(&key)
                        && updated.contains(&old.incident.incident_id)
                    {
                        out.updates.push(old.incident.clone());
                    }
                    n.open.insert(
                        key,
                        OpenIncident {
                            incident: inc.clone(),
                            until: first + window,
                        },
                    );
                    out.new.push(inc);
                }
            }
        }
        for id in updated {
            if let Some(o) = n.open.values().find(|o| o.incident.incident_id == id) {
                out.updates.push(o.incident.clone());
            }
        }
        // Closed windows (with an hour of slack for late matches) go.
        let horizon = n.max_ts - 3_600_000_000;
        let dirty = &mut n.dirty_open;
        n.open.retain(|k, o| {
            let keep = o.until >= horizon;
            if !keep {
                dirty.insert(k.clone());
            }
            keep
        });
        out
    }

    proptest::proptest! {
        /// Suppression through maps reports exactly what the linear
        /// searches did: the same new incidents (grown by later matches of
        /// the batch, including one whose window closes and reopens within
        /// the batch), the same updates in the same order, the same state.
        #[test]
        fn suppression_through_maps_equals_the_linear_searches(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..4, 0i64..1200, 0u8..3), 0..24),
                1..6,
            ),
        ) {
            let w = |r: &str| if r == "r0" { 0 } else { 300_000_000 };
            let (mut a, mut b) = (NoiseState::default(), NoiseState::default());
            let mut ev = 0;
            for batch in &batches {
                let incs: Vec<Incident> = batch
                    .iter()
                    .map(|&(session, t, rule)| {
                        ev += 1;
                        let mut i = inc(&format!("{rule}-{session}-{t}"), &format!("s{session}"), t, &format!("e{ev}"));
                        i.rule_id = format!("r{rule}");
                        i
                    })
                    .collect();
                let fa = a.apply(incs.clone(), w);
                let fb = apply_before(&mut b, incs, w);
                proptest::prop_assert_eq!(&fa.new, &fb.new);
                proptest::prop_assert_eq!(&fa.updates, &fb.updates);
                proptest::prop_assert_eq!(
                    serde_json::to_value(a.delta()).expect("delta"),
                    serde_json::to_value(b.delta()).expect("delta")
                );
            }
        }
    }

    #[test]
    fn suppression_folds_matches_into_one_incident_per_window() {
        let mut n = NoiseState::default();
        let w = |_: &str| 600_000_000;
        let f = n.apply(vec![inc("a", "s", 0, "e1"), inc("b", "s", 10, "e2")], w);
        assert_eq!(f.new.len(), 1);
        assert_eq!(f.new[0].match_count, 2);
        let f = n.apply(vec![inc("c", "s", 100, "e3")], w);
        assert!(f.new.is_empty());
        assert_eq!(f.updates.len(), 1);
        assert_eq!(f.updates[0].incident_id, "a");
        assert_eq!(f.updates[0].match_count, 3);
        assert_eq!(f.updates[0].last_ts.timestamp(), 100);
        // Another window, another entity: new incidents.
        assert_eq!(n.apply(vec![inc("d", "s", 700, "e4")], w).new.len(), 1);
        assert_eq!(n.apply(vec![inc("e", "t", 700, "e5")], w).new.len(), 1);
    }

    #[test]
    fn an_incident_that_grew_then_closed_within_a_batch_is_reported_as_an_update() {
        let mut n = NoiseState::default();
        let w = |_: &str| 600_000_000;
        assert_eq!(n.apply(vec![inc("a", "s", 0, "e1")], w).new.len(), 1);
        // one batch: a match folded into `a`, then one past its window
        let f = n.apply(vec![inc("b", "s", 100, "e2"), inc("c", "s", 700, "e3")], w);
        assert_eq!(f.new.len(), 1);
        assert_eq!(f.new[0].incident_id, "c");
        assert_eq!(f.updates.len(), 1, "a's growth is not lost");
        assert_eq!(f.updates[0].incident_id, "a");
        assert_eq!(f.updates[0].match_count, 2);
        assert_eq!(f.updates[0].event_ids, vec!["e1", "e2"]);
    }

    #[test]
    fn identical_incidents_are_reported_once() {
        let mut n = NoiseState::default();
        let off = |_: &str| 0;
        assert_eq!(n.apply(vec![inc("a", "s", 0, "e1")], off).new.len(), 1);
        let back: NoiseState = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        let mut n = back;
        assert!(n.apply(vec![inc("a", "s", 0, "e1")], off).new.is_empty());
        assert_eq!(n.duplicates, 1);
    }

    /// Deltas applied in order to a copy keep it equal to the live state:
    /// opened, extended and closed suppression windows, fingerprints.
    #[test]
    fn deltas_replayed_in_order_rebuild_the_noise_state() {
        let mut live = NoiseState::default();
        let mut copy = NoiseState::default();
        let w = |_: &str| 600_000_000;
        for b in 0..30i64 {
            let incs = (0..3)
                .map(|j| {
                    let t = b * 400 + j;
                    inc(
                        &format!("i{b}-{j}"),
                        &format!("s{b}-{}", j % 2),
                        t,
                        &format!("e{b}-{j}"),
                    )
                })
                .collect();
            live.apply(incs, w);
            let json = serde_json::to_string(&live.delta()).unwrap();
            copy.apply_delta(serde_json::from_str(&json).unwrap());
            assert_eq!(
                serde_json::to_value(&copy).unwrap(),
                serde_json::to_value(&live).unwrap(),
                "after batch {b}"
            );
        }
        assert!(live.open.len() < 30 * 2, "windows closed on the way");
        assert!(live.suppressed > 0);
    }
}
