//! State of stateful rules (`threshold`, `sequence`, `baseline`,
//! `lifetime`), kept in
//! the engine, keyed by entity and driven by event time.
//!
//! Each stateful rule's SQL is still planned once; it projects one row per
//! relevant event. The engine feeds those rows (sorted by `ts` within a
//! batch) into the rule's [`RuleState`], which decides whether the row
//! completes a window threshold, a sequence or a baseline change.
//!
//! **Watermark.** Per rule, `watermark = max event ts seen − lateness`. A
//! row with `ts < watermark` is *late*: it is still evaluated against the
//! retained state (windows keep `size + lateness`, sequences `within +
//! lateness` of history) and counted in `late`. A row older than what is
//! retained (`ts < watermark − size/within`) is *too late*: it is evaluated
//! against whatever is still retained, counted in `too_late` and logged.
//! Nothing is dropped silently. Baselines keep no time horizon.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Hash maps of the rule and noise state: keyed by entity text (session ids,
/// tokens, principals, fingerprints) on every row, so hashed with foldhash (per-process random
/// seed) rather than SipHash, which took ~5 % of the replay's CPU.
/// `hashbrown`'s map (the one behind `std`'s) for its `entry_ref`: a row's
/// key is hashed once, and copied into the map only when it is new.
pub type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`HashMap`].
pub type HashSet<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::rule::{Aggregate, BaselineWhen, RuleKind};

/// Most distinct values remembered per baseline key.
pub const MAX_BASELINE_VALUES: usize = 256;
/// Default of the most keys a baseline or lifetime rule remembers
/// (`[state] max_keys_per_rule`): past it the least recently seen tenth is
/// evicted, so memory stays bounded whatever the key cardinality (a flood of
/// fresh session ids or tokens) and eviction costs O(n) per n/10 new keys.
pub const MAX_STATE_KEYS: usize = 1_000_000;
/// Most events a window or sequence keeps per entity.
pub const MAX_EVENTS_PER_ENTITY: usize = 100_000;

/// Runtime parameters of a stateful rule (durations in µs).
#[derive(Clone, Debug)]
pub struct StateSpec {
    pub kind: RuleKind,
    pub lateness: i64,
    pub size: i64,
    pub tumbling: bool,
    pub aggregate: Aggregate,
    pub min: f64,
    /// Threshold: the aggregate divided by the window's event count must
    /// also be at least this (0.0 = no share condition).
    pub min_share: f64,
    pub steps: Vec<String>,
    pub within: i64,
    pub learn: i64,
    pub when: BaselineWhen,
    /// Lifetime: longest allowed gap between two events of an entity (0 = off).
    pub idle: i64,
    /// Lifetime: longest allowed time from an entity's first event (0 = off).
    pub absolute: i64,
    /// Lifetime and baseline: an entity (key) unseen for this long is
    /// forgotten (baseline: 0 = never).
    pub forget: i64,
}

/// One projected row fed to the state. Its texts borrow the rule's result
/// batch: a row that changes nothing (most rows of a baseline) allocates
/// nothing; what the state keeps it copies.
#[derive(Clone, Debug)]
pub struct StateRow<'a> {
    pub ts: i64,
    pub event_id: Cow<'a, str>,
    /// Entity (threshold / sequence) or baseline key, joined.
    pub key: Cow<'a, str>,
    /// Threshold: the distinct/sum column as text; baseline: the value
    /// columns (None when null).
    pub values: SmallVec<[Option<Cow<'a, str>>; 2]>,
    pub num: Option<f64>,
    /// Sequence: index of the step.
    pub step: Option<usize>,
    /// Baseline: false when the rule's `fire_if` column is false or null
    /// (the row only teaches the baseline).
    pub may_fire: bool,
    /// Baseline: false when the rule's `learn_if` column is false or null
    /// (the row is judged against the baseline but not remembered).
    pub may_learn: bool,
    /// Evidence of this row (filled for sequence steps only, and moved into
    /// the stored step; the engine builds it for firing rows).
    pub evidence: Option<Map<String, Value>>,
    /// The caller's bookkeeping: where the row came from (batch, row), to
    /// build the evidence of a firing row.
    pub origin: (usize, usize),
}

/// What a row completed.
#[derive(Clone, Debug)]
pub struct StateFire {
    pub first_ts: i64,
    pub ts: i64,
    pub event_ids: Vec<String>,
    /// Evidence of earlier events (sequence steps).
    pub prior_evidence: Vec<Map<String, Value>>,
    /// Facts about the state: window aggregate, first-seen values, …
    pub detail: Map<String, Value>,
}

/// One event in a window. In the journal and the snapshot a null `value`
/// and a `num` of +0.0 are left out (most windows count events).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WinEvent {
    pub ts: i64,
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_positive_zero")]
    pub num: f64,
}

/// Exactly +0.0 (a -0.0 is kept, so it reads back the same).
fn is_positive_zero(n: &f64) -> bool {
    n.to_bits() == 0
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SeqEvent {
    pub ts: i64,
    pub event_id: String,
    /// Empty (and left out) for a sequence's final step, whose evidence is
    /// the firing row's.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub evidence: Map<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SeqEntity {
    /// Per step, events sorted by ts.
    pub steps: Vec<Vec<SeqEvent>>,
    /// Final-step events already reported.
    pub reported: BTreeSet<String>,
}

impl SeqEntity {
    fn has_events(&self) -> bool {
        self.steps.iter().any(|v| !v.is_empty())
    }
}

/// One baseline key's memory. The value sets are sorted vectors, not
/// B-trees: most keys hold one or two values, and a B-tree node is ~300
/// bytes however few it holds (the soak keeps ~10^6 keys). Encoded as
/// before: `tuples` a JSON object, `columns` arrays of strings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BaselineEntry {
    pub first_ts: i64,
    pub last_seen: i64,
    /// Tuples seen, joined with U+001F, with when each was first seen;
    /// sorted by tuple.
    #[serde(with = "sorted_map")]
    pub tuples: Vec<(String, i64)>,
    /// Per value column, values seen, sorted (`when: all` only).
    #[serde(deserialize_with = "sorted_sets")]
    pub columns: Vec<Vec<String>>,
}

impl BaselineEntry {
    fn tuple(&self, t: &str) -> Result<usize, usize> {
        self.tuples.binary_search_by(|(k, _)| k.as_str().cmp(t))
    }
}

/// `Vec<(String, i64)>` sorted by key, encoded as a JSON object.
mod sorted_map {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, i64)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, t) in v {
            m.serialize_entry(k, t)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, i64)>, D::Error> {
        Ok(BTreeMap::<String, i64>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// Arrays of strings, each sorted and without repeats once read.
fn sorted_sets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<String>>, D::Error> {
    let mut v = Vec::<Vec<String>>::deserialize(d)?;
    for set in &mut v {
        set.sort_unstable();
        set.dedup();
    }
    Ok(v)
}

/// The life of one entity (`lifetime` rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanEntry {
    pub first_ts: i64,
    pub last_ts: i64,
    /// The absolute limit was reported (once per life).
    #[serde(default)]
    pub absolute_reported: bool,
}

/// The persisted state of one rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuleState {
    pub max_ts: Option<i64>,
    pub late: u64,
    pub too_late: u64,
    pub windows: HashMap<String, VecDeque<WinEvent>>,
    pub sequences: HashMap<String, SeqEntity>,
    pub baselines: HashMap<String, BaselineEntry>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub spans: HashMap<String, SpanEntry>,
    /// Keys changed (or removed) since the last [`RuleState::delta`].
    #[serde(skip)]
    dirty: Dirty,
    /// Keys evicted by the key limit since the last [`RuleState::take_evicted`].
    #[serde(skip)]
    evicted: u64,
    /// Keys by when they may next expire, so that expiry visits only what
    /// is due (rebuilt from the maps when missing).
    #[serde(skip)]
    expiry: ExpiryIndex,
    /// Tests: expire by a pass over every key ([`RuleState::evict_by_sweep`]).
    #[cfg(test)]
    #[serde(skip)]
    by_sweep: bool,
}

/// A rule's keys ordered by when they may next expire: each live key has
/// an entry whose time is at most its oldest event's (windows, sequences)
/// or its last event's (baselines, lifetimes). An expiry pops the entries
/// older than its bound and looks only at their keys, so a batch costs what
/// is due rather than a pass over every key (a window rule with a million
/// live sessions swept them all after every batch). A popped key that is
/// not due (its entry was stale) goes back with its current time.
///
/// Entries are added when a key appears or gets an event older than its
/// oldest, never removed otherwise: a key can have a stale duplicate, and
/// a removed key's entries are skipped when they come up. The index is
/// rebuilt from the map when it was never built (a state read back from
/// disk), when a delta changed the map ([`RuleState::apply`]), when the
/// rule's kind changed, or when stale entries outnumber the keys.
#[derive(Clone, Debug, Default)]
struct ExpiryIndex {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Due>>,
    /// The kind whose map the entries are for; `None`: not built.
    built: Option<RuleKind>,
}

/// A key and when it may next expire, ordered by the time alone (keys due
/// at the same time are taken in any order).
#[derive(Clone, Debug)]
struct Due(i64, String);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl ExpiryIndex {
    /// Notes that `key` now holds an event at `ts` that may be older than
    /// its entry says (a new key, or an event before its oldest).
    fn note(&mut self, kind: RuleKind, ts: i64, key: &str) {
        if self.built == Some(kind) {
            self.push(ts, key.to_owned());
        }
    }

    /// Builds the index of `map` unless it is current; `time` is a key's
    /// expiry time (`None`: it never expires).
    fn ensure<V>(
        &mut self,
        kind: RuleKind,
        map: &HashMap<String, V>,
        time: impl Fn(&V) -> Option<i64>,
    ) {
        if self.built == Some(kind) && self.heap.len() <= 2 * map.len() + 64 {
            return;
        }
        self.heap = map
            .iter()
            .filter_map(|(k, v)| time(v).map(|t| std::cmp::Reverse(Due(t, k.clone()))))
            .collect();
        self.built = Some(kind);
    }

    /// The next key whose entry is older than `before`.
    fn pop_before(&mut self, before: i64) -> Option<String> {
        match self.heap.peek() {
            Some(std::cmp::Reverse(Due(t, _))) if *t < before => {
                self.heap.pop().map(|std::cmp::Reverse(Due(_, k))| k)
            }
            _ => None,
        }
    }

    fn push(&mut self, t: i64, key: String) {
        self.heap.push(std::cmp::Reverse(Due(t, key)));
    }

    fn clear(&mut self) {
        *self = ExpiryIndex::default();
    }
}

/// How a window changed since the last delta: events only go on at the
/// back (in order) and off at the front, unless `rewrite`.
#[derive(Clone, Copy, Debug, Default)]
struct WinMark {
    /// Length when the period began.
    base_len: usize,
    /// Events taken off the front since.
    popped: usize,
    /// An event went in anywhere but the back (a late row).
    rewrite: bool,
    /// Only expiry changed the key (no row touched it): the delta leaves it
    /// out, since applying [`RuleDelta::expire_before`] drops the same
    /// events. The mark is kept so that a row touching the key later in
    /// the same period counts from the right length.
    expiry_only: bool,
}

/// How a sequence entity's steps changed since the last delta (per step,
/// as [`WinMark`]).
#[derive(Clone, Debug, Default)]
struct SeqMark {
    base_lens: Vec<usize>,
    popped: Vec<usize>,
    rewrite: bool,
    /// As [`WinMark::expiry_only`].
    expiry_only: bool,
}

#[derive(Clone, Debug, Default)]
struct Dirty {
    /// Rows were processed (counters and `max_ts` may have moved).
    touched: bool,
    windows: HashMap<String, WinMark>,
    sequences: HashMap<String, SeqMark>,
    /// Baseline keys changed; `false`: only `last_seen` moved.
    baselines: HashMap<String, bool>,
    spans: HashSet<String>,
    /// The last expiry's bound ([`RuleDelta::expire_before`]).
    expire_before: Option<i64>,
}

/// A baseline key's change: only its `last_seen` moved (most events of a
/// known entity: `{"seen": ts}`), or its whole entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BaselineDelta<B = BaselineEntry> {
    Seen { seen: i64 },
    Full(B),
}

impl<B: Default> Default for BaselineDelta<B> {
    fn default() -> Self {
        BaselineDelta::Full(B::default())
    }
}

/// A window's change: its whole value, or (events only appended in order
/// and dropped at the front) how many to drop at the front and what to
/// append. Encoded as the event array, or as `{"drop": n, "push": [...]}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WinDelta<W = VecDeque<WinEvent>, E = WinEvent> {
    Full(W),
    Tail { drop: usize, push: Vec<E> },
}

impl<W: Default, E> Default for WinDelta<W, E> {
    fn default() -> Self {
        WinDelta::Full(W::default())
    }
}

/// A sequence entity's change: whole, or per step the events dropped at the
/// front and appended at the back, with the reported set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SeqDelta<S = SeqEntity, E = SeqEvent, R = BTreeSet<String>> {
    Tail {
        drop: Vec<usize>,
        push: Vec<Vec<E>>,
        reported: R,
    },
    Full(S),
}

impl<S: Default, E, R> Default for SeqDelta<S, E, R> {
    fn default() -> Self {
        SeqDelta::Full(S::default())
    }
}

/// A [`SeqDelta`] borrowing the live entity.
pub type SeqDeltaRef<'a> = SeqDelta<&'a SeqEntity, &'a SeqEvent, &'a BTreeSet<String>>;

/// A [`WinDelta`] borrowing the live events.
pub type WinDeltaRef<'a> = WinDelta<&'a VecDeque<WinEvent>, &'a WinEvent>;

/// What changed in a [`RuleState`] since the previous delta: the counters,
/// and per changed key its new value (`None`: the key was removed; windows:
/// only their change, see [`WinDelta`]). Applying the deltas in order to the
/// state they started from gives the live state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuleDelta<W = WinDelta, S = SeqDelta, B = BaselineDelta> {
    pub max_ts: Option<i64>,
    pub late: u64,
    pub too_late: u64,
    /// Window and sequence events older than this expired at the end of
    /// the period: [`RuleState::apply`] drops them after the changes (and
    /// keys left empty), as the live state did. Keys that only expired are
    /// not listed (a threshold rule keyed per request wrote a `null` for
    /// nearly every key it ever had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_before: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub windows: BTreeMap<String, Option<W>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequences: BTreeMap<String, Option<S>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baselines: BTreeMap<String, Option<B>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spans: BTreeMap<String, Option<SpanEntry>>,
}

/// A [`RuleDelta`] borrowing the live values (encoded without copying them).
pub type RuleDeltaRef<'a> =
    RuleDelta<WinDeltaRef<'a>, SeqDeltaRef<'a>, BaselineDelta<&'a BaselineEntry>>;

/// The current value of each changed key (`None`: removed).
pub(crate) fn changed<V>(
    keys: HashSet<String>,
    map: &HashMap<String, V>,
) -> BTreeMap<String, Option<&V>> {
    keys.into_iter()
        .map(|k| {
            let v = map.get(&k);
            (k, v)
        })
        .collect()
}

/// Applies what [`changed`] recorded to a copy of the map.
pub(crate) fn apply_changes<V>(map: &mut HashMap<String, V>, changes: BTreeMap<String, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => {
                map.insert(k, v);
            }
            None => {
                map.remove(&k);
            }
        }
    }
}

/// Visits the keys of `map` that `index` says may be due before `before`:
/// `keep` drops what is old in one and says whether the key stays (if not,
/// it goes, and to `removed`); a key that stays goes back in the index at
/// its `time`.
fn expire_due<V>(
    map: &mut HashMap<String, V>,
    index: &mut ExpiryIndex,
    kind: RuleKind,
    before: i64,
    time: impl Fn(&V) -> Option<i64>,
    mut keep: impl FnMut(&str, &mut V) -> bool,
    mut removed: impl FnMut(String),
) {
    index.ensure(kind, map, &time);
    while let Some(k) = index.pop_before(before) {
        let Some(v) = map.get_mut(&k) else {
            continue;
        };
        if keep(&k, v) {
            if let Some(t) = time(v) {
                index.push(t, k);
            }
        } else {
            map.remove(&k);
            removed(k);
        }
    }
}

/// Forgetting keys last seen before `before` by a pass over every key
/// (the reference of the tests).
#[cfg(test)]
fn forget_by_sweep<V>(
    map: &mut HashMap<String, V>,
    before: Option<i64>,
    last_seen: impl Fn(&V) -> i64,
    removed: &mut impl FnMut(String),
) {
    if let Some(before) = before {
        map.retain(|k, v| {
            let keep = last_seen(v) >= before;
            if !keep {
                removed(k.clone());
            }
            keep
        });
    }
}

/// Past `max_keys`, drops the least recently seen keys down to nine tenths
/// of it (ties: the smaller key first, so a replay evicts the same keys).
/// Every key dropped is passed to `removed`; returns how many.
fn forget_over_limit<V>(
    map: &mut HashMap<String, V>,
    last_seen: impl Fn(&V) -> i64,
    max_keys: usize,
    mut removed: impl FnMut(String),
) -> u64 {
    if map.len() <= max_keys.max(1) {
        return 0;
    }
    let keep = max_keys.max(1) - max_keys / 10;
    let drop = map.len() - keep;
    let mut seen: Vec<(i64, &String)> = map.iter().map(|(k, v)| (last_seen(v), k)).collect();
    seen.select_nth_unstable(drop - 1);
    let gone: Vec<String> = seen[..drop].iter().map(|(_, k)| (*k).clone()).collect();
    for k in gone {
        map.remove(&k);
        removed(k);
    }
    drop as u64
}

/// When a window may next expire: its oldest event's time (an empty
/// window at once).
fn window_time(q: &VecDeque<WinEvent>) -> Option<i64> {
    Some(q.front().map_or(i64::MIN, |e| e.ts))
}

/// When a sequence entity may next expire: its oldest step event's time
/// (`None` without events: expiry keeps such an entity).
fn sequence_time(s: &SeqEntity) -> Option<i64> {
    s.steps
        .iter()
        .filter_map(|st| st.first())
        .map(|e| e.ts)
        .min()
}

/// Expires one window's old events, marking what went for the journal;
/// false when the window is now empty (the key goes).
fn expire_window_key(
    k: &str,
    q: &mut VecDeque<WinEvent>,
    keep_from: i64,
    dirty: &mut HashMap<String, WinMark>,
) -> bool {
    let base_len = q.len();
    let popped = expire_window(q, keep_from);
    if popped > 0 {
        match dirty.get_mut(k) {
            Some(m) => m.popped += popped,
            None => {
                dirty.insert(
                    k.to_owned(),
                    WinMark {
                        base_len,
                        popped,
                        rewrite: false,
                        expiry_only: true,
                    },
                );
            }
        }
    }
    !q.is_empty()
}

/// Expires one sequence entity's old events, marking what went for the
/// journal; false when it has no event left (the key goes).
fn expire_sequence_key(
    k: &str,
    s: &mut SeqEntity,
    keep_from: i64,
    dirty: &mut HashMap<String, SeqMark>,
) -> bool {
    let Some(popped) = expire_sequence(s, keep_from) else {
        return true;
    };
    match dirty.get_mut(k) {
        Some(m) => {
            for (p, n) in m.popped.iter_mut().zip(&popped) {
                *p += n;
            }
        }
        None => {
            let base_lens = s
                .steps
                .iter()
                .zip(&popped)
                .map(|(st, p)| st.len() + p)
                .collect();
            dirty.insert(
                k.to_owned(),
                SeqMark {
                    base_lens,
                    popped,
                    rewrite: false,
                    expiry_only: true,
                },
            );
        }
    }
    s.has_events()
}

/// Drops a window's events older than `keep_from` (they are sorted by
/// time, so from the front); returns how many. The live expiry and
/// [`RuleState::apply`] share it.
fn expire_window(q: &mut VecDeque<WinEvent>, keep_from: i64) -> usize {
    let n = q.partition_point(|e| e.ts < keep_from);
    q.drain(..n);
    n
}

/// Drops a sequence entity's step events older than `keep_from` and the
/// reported final events no longer held; `None` when nothing was old (the
/// entity untouched), else the events dropped per step.
fn expire_sequence(s: &mut SeqEntity, keep_from: i64) -> Option<Vec<usize>> {
    // steps are sorted by ts: only their first event can be old
    let expired = s
        .steps
        .iter()
        .any(|step| step.first().is_some_and(|e| e.ts < keep_from));
    if !expired {
        return None;
    }
    let popped = s
        .steps
        .iter_mut()
        .map(|step| {
            let before = step.len();
            step.retain(|e| e.ts >= keep_from);
            before - step.len()
        })
        .collect();
    if let Some(last) = s.steps.last() {
        let last: HashSet<&str> = last.iter().map(|e| e.event_id.as_str()).collect();
        s.reported.retain(|id| last.contains(id.as_str()));
    }
    Some(popped)
}

/// The separator between the values of a key of several columns (or of a
/// baseline tuple).
const KEY_SEP: char = '\u{1f}';

/// Appends `parts` to `out`, separated by [`KEY_SEP`] (the one join of
/// [`sep_join`] and [`sep_join_in`]).
fn push_joined<'a>(out: &mut impl std::fmt::Write, parts: impl IntoIterator<Item = &'a str>) {
    for (n, p) in parts.into_iter().enumerate() {
        // writing to a string cannot fail
        if n > 0 {
            let _ = out.write_char(KEY_SEP);
        }
        let _ = out.write_str(p);
    }
}

fn sep_join<'a>(it: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    push_joined(&mut out, it);
    out
}

/// [`sep_join`] into `arena` (one allocation of the joined length), for
/// per-row keys that live as long as one batch's call.
pub(crate) fn sep_join_in<'b>(parts: &[&str], arena: &'b bumpalo::Bump) -> &'b str {
    let len = parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut key = bumpalo::collections::String::with_capacity_in(len, arena);
    push_joined(&mut key, parts.iter().copied());
    key.into_bump_str()
}

impl RuleState {
    /// True when something changed since the last [`RuleState::delta`].
    pub fn is_dirty(&self) -> bool {
        self.dirty.touched
            || !(self.dirty.windows.is_empty()
                && self.dirty.sequences.is_empty()
                && self.dirty.baselines.is_empty()
                && self.dirty.spans.is_empty())
    }

    /// The changes since the previous call (which they reset), borrowing
    /// the live values.
    pub fn delta(&mut self) -> RuleDeltaRef<'_> {
        let dirty = std::mem::take(&mut self.dirty);
        RuleDelta {
            max_ts: self.max_ts,
            late: self.late,
            too_late: self.too_late,
            expire_before: dirty.expire_before,
            windows: dirty
                .windows
                .into_iter()
                // Left out: keys that only expired (see `expire_before`), and
                // keys that came and went within the period.
                .filter(|(k, m)| !m.expiry_only && (m.base_len > 0 || self.windows.contains_key(k)))
                .map(|(k, m)| {
                    let d = self.windows.get(&k).map(|q| {
                        let keep = m.base_len.saturating_sub(m.popped);
                        if m.rewrite || keep > q.len() {
                            WinDelta::Full(q)
                        } else {
                            WinDelta::Tail {
                                drop: m.base_len - keep,
                                push: q.range(keep..).collect(),
                            }
                        }
                    });
                    (k, d)
                })
                .collect(),
            sequences: dirty
                .sequences
                .into_iter()
                .filter(|(k, m)| {
                    !m.expiry_only
                        && (m.base_lens.iter().any(|&n| n > 0) || self.sequences.contains_key(k))
                })
                .map(|(k, m)| {
                    let d = self.sequences.get(&k).map(|e| {
                        let keep: Vec<usize> = m
                            .base_lens
                            .iter()
                            .zip(&m.popped)
                            .map(|(b, p)| b.saturating_sub(*p))
                            .collect();
                        let fits = keep.len() == e.steps.len()
                            && keep.iter().zip(&e.steps).all(|(k, st)| *k <= st.len());
                        if m.rewrite || !fits {
                            SeqDelta::Full(e)
                        } else {
                            SeqDelta::Tail {
                                drop: m.base_lens.iter().zip(&keep).map(|(b, k)| b - k).collect(),
                                push: e
                                    .steps
                                    .iter()
                                    .zip(&keep)
                                    .map(|(st, k)| st[*k..].iter().collect())
                                    .collect(),
                                reported: &e.reported,
                            }
                        }
                    });
                    (k, d)
                })
                .collect(),
            baselines: dirty
                .baselines
                .into_iter()
                .map(|(k, full)| {
                    let d = self.baselines.get(&k).map(|e| {
                        if full {
                            BaselineDelta::Full(e)
                        } else {
                            BaselineDelta::Seen { seen: e.last_seen }
                        }
                    });
                    (k, d)
                })
                .collect(),
            spans: changed(dirty.spans, &self.spans)
                .into_iter()
                .map(|(k, v)| (k, v.copied()))
                .collect(),
        }
    }

    /// Applies a delta read back (restore: snapshot, then the journal).
    pub fn apply(&mut self, delta: RuleDelta) {
        self.expiry.clear();
        self.max_ts = delta.max_ts;
        self.late = delta.late;
        self.too_late = delta.too_late;
        for (k, d) in delta.windows {
            match d {
                None => {
                    self.windows.remove(&k);
                }
                Some(WinDelta::Full(q)) => {
                    self.windows.insert(k, q);
                }
                Some(WinDelta::Tail { drop, push }) => {
                    let q = self.windows.entry(k).or_default();
                    q.drain(..drop.min(q.len()));
                    q.extend(push);
                }
            }
        }
        for (k, d) in delta.sequences {
            match d {
                None => {
                    self.sequences.remove(&k);
                }
                Some(SeqDelta::Full(e)) => {
                    self.sequences.insert(k, e);
                }
                Some(SeqDelta::Tail {
                    drop,
                    push,
                    reported,
                }) => {
                    let e = self.sequences.entry(k).or_default();
                    if e.steps.len() < push.len() {
                        e.steps.resize_with(push.len(), Vec::new);
                    }
                    for ((st, d), p) in e.steps.iter_mut().zip(drop).zip(push) {
                        st.drain(..d.min(st.len()));
                        st.extend(p);
                    }
                    e.reported = reported;
                }
            }
        }
        if let Some(keep_from) = delta.expire_before {
            self.windows.retain(|_, q| {
                expire_window(q, keep_from);
                !q.is_empty()
            });
            self.sequences
                .retain(|_, s| expire_sequence(s, keep_from).is_none_or(|_| s.has_events()));
        }
        for (k, d) in delta.baselines {
            match d {
                None => {
                    self.baselines.remove(&k);
                }
                Some(BaselineDelta::Full(e)) => {
                    self.baselines.insert(k, e);
                }
                Some(BaselineDelta::Seen { seen }) => {
                    if let Some(e) = self.baselines.get_mut(&k) {
                        e.last_seen = e.last_seen.max(seen);
                    }
                }
            }
        }
        apply_changes(&mut self.spans, delta.spans);
    }

    pub fn watermark(&self, spec: &StateSpec) -> Option<i64> {
        self.max_ts.map(|m| m - spec.lateness)
    }

    fn horizon(&self, spec: &StateSpec) -> i64 {
        match spec.kind {
            RuleKind::Threshold => spec.size,
            RuleKind::Sequence => spec.within,
            _ => i64::MAX / 4,
        }
    }

    /// Feeds one batch of rows (any order; processed in ts order) and
    /// returns the fires, one per completing row ([`MAX_STATE_KEYS`]).
    pub fn process<'a>(
        &mut self,
        spec: &StateSpec,
        rows: Vec<StateRow<'a>>,
    ) -> (Vec<(StateRow<'a>, StateFire)>, u64, u64) {
        self.process_with_limit(spec, rows, MAX_STATE_KEYS)
    }

    /// Keys evicted by the key limit since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    /// [`RuleState::process`] with a baseline or lifetime rule remembering
    /// at most `max_keys` keys (see [`MAX_STATE_KEYS`]).
    pub fn process_with_limit<'a>(
        &mut self,
        spec: &StateSpec,
        mut rows: Vec<StateRow<'a>>,
        max_keys: usize,
    ) -> (Vec<(StateRow<'a>, StateFire)>, u64, u64) {
        rows.sort_by_key(|r| r.ts);
        let mut fires = Vec::new();
        let (mut late, mut too_late) = (0u64, 0u64);
        self.dirty.touched |= !rows.is_empty();
        let horizon = self.horizon(spec);
        // Lateness is judged against the state as it was before this batch
        // (a batch is one unit of arrival).
        let wm = self.watermark(spec);
        for mut row in rows {
            if let Some(wm) = wm
                && row.ts < wm
            {
                late += 1;
                if matches!(spec.kind, RuleKind::Threshold | RuleKind::Sequence)
                    && row.ts < wm.saturating_sub(horizon)
                {
                    too_late += 1;
                }
            }
            let fire = match spec.kind {
                RuleKind::Threshold => self.threshold(spec, &row),
                RuleKind::Sequence => self.sequence(spec, &mut row),
                RuleKind::Baseline => self.baseline(spec, &row),
                RuleKind::Lifetime => self.lifetime(spec, &row),
                RuleKind::Match => Vec::new(),
            };
            for f in fire {
                fires.push((row.clone(), f));
            }
        }
        self.late += late;
        self.too_late += too_late;
        #[cfg(test)]
        if self.by_sweep {
            self.evict_by_sweep(spec, max_keys);
            return (fires, late, too_late);
        }
        self.evict(spec, max_keys);
        (fires, late, too_late)
    }

    /// Drops state older than the retained horizon (and baseline and
    /// lifetime keys past the key limit), visiting only the keys the
    /// [`ExpiryIndex`] says may be due.
    fn evict(&mut self, spec: &StateSpec, max_keys: usize) {
        let Some(wm) = self.watermark(spec) else {
            return;
        };
        let kind = spec.kind;
        match kind {
            RuleKind::Threshold => {
                let keep_from = wm.saturating_sub(spec.size);
                self.dirty.expire_before = Some(keep_from);
                let dirty = &mut self.dirty.windows;
                expire_due(
                    &mut self.windows,
                    &mut self.expiry,
                    kind,
                    keep_from,
                    window_time,
                    |k, q| expire_window_key(k, q, keep_from, dirty),
                    drop,
                );
            }
            RuleKind::Sequence => {
                let keep_from = wm.saturating_sub(spec.within);
                self.dirty.expire_before = Some(keep_from);
                let dirty = &mut self.dirty.sequences;
                expire_due(
                    &mut self.sequences,
                    &mut self.expiry,
                    kind,
                    keep_from,
                    sequence_time,
                    |k, s| expire_sequence_key(k, s, keep_from, dirty),
                    drop,
                );
            }
            RuleKind::Baseline => {
                let dirty = &mut self.dirty.baselines;
                let mut removed = |k: String| {
                    dirty.insert(k, true);
                };
                let last_seen = |e: &BaselineEntry| e.last_seen;
                if spec.forget > 0 {
                    let before = wm.saturating_sub(spec.forget);
                    expire_due(
                        &mut self.baselines,
                        &mut self.expiry,
                        kind,
                        before,
                        |e| Some(last_seen(e)),
                        |_, e| last_seen(e) >= before,
                        &mut removed,
                    );
                } else {
                    // never forgotten: nothing to index
                    self.expiry.clear();
                }
                self.evicted +=
                    forget_over_limit(&mut self.baselines, last_seen, max_keys, removed);
            }
            RuleKind::Lifetime => {
                let before = wm.saturating_sub(spec.forget);
                let dirty = &mut self.dirty.spans;
                let mut removed = |k: String| {
                    dirty.insert(k);
                };
                let last_ts = |e: &SpanEntry| e.last_ts;
                expire_due(
                    &mut self.spans,
                    &mut self.expiry,
                    kind,
                    before,
                    |e| Some(last_ts(e)),
                    |_, e| last_ts(e) >= before,
                    &mut removed,
                );
                self.evicted += forget_over_limit(&mut self.spans, last_ts, max_keys, removed);
            }
            RuleKind::Match => {}
        }
    }

    /// [`RuleState::evict`] as it was before the [`ExpiryIndex`]: a pass
    /// over every key. The reference the index is tested against.
    #[cfg(test)]
    fn evict_by_sweep(&mut self, spec: &StateSpec, max_keys: usize) {
        let Some(wm) = self.watermark(spec) else {
            return;
        };
        match spec.kind {
            RuleKind::Threshold => {
                let keep_from = wm.saturating_sub(spec.size);
                self.dirty.expire_before = Some(keep_from);
                let dirty = &mut self.dirty.windows;
                self.windows
                    .retain(|k, q| expire_window_key(k, q, keep_from, dirty));
            }
            RuleKind::Sequence => {
                let keep_from = wm.saturating_sub(spec.within);
                self.dirty.expire_before = Some(keep_from);
                let dirty = &mut self.dirty.sequences;
                self.sequences
                    .retain(|k, s| expire_sequence_key(k, s, keep_from, dirty));
            }
            RuleKind::Baseline => {
                let dirty = &mut self.dirty.baselines;
                let mut removed = |k: String| {
                    dirty.insert(k, true);
                };
                let before = (spec.forget > 0).then(|| wm.saturating_sub(spec.forget));
                let last_seen = |e: &BaselineEntry| e.last_seen;
                forget_by_sweep(&mut self.baselines, before, last_seen, &mut removed);
                self.evicted +=
                    forget_over_limit(&mut self.baselines, last_seen, max_keys, removed);
            }
            RuleKind::Lifetime => {
                let dirty = &mut self.dirty.spans;
                let mut removed = |k: String| {
                    dirty.insert(k);
                };
                let before = Some(wm.saturating_sub(spec.forget));
                let last_ts = |e: &SpanEntry| e.last_ts;
                forget_by_sweep(&mut self.spans, before, last_ts, &mut removed);
                self.evicted += forget_over_limit(&mut self.spans, last_ts, max_keys, removed);
            }
            RuleKind::Match => {}
        }
    }

    fn bump(&mut self, ts: i64) {
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
    }

    fn threshold(&mut self, spec: &StateSpec, row: &StateRow<'_>) -> Vec<StateFire> {
        self.bump(row.ts);
        let q = get_or_insert(&mut self.windows, &row.key, VecDeque::new);
        let m = get_or_insert(&mut self.dirty.windows, &row.key, || WinMark {
            base_len: q.len(),
            ..WinMark::default()
        });
        m.expiry_only = false;
        let ev = WinEvent {
            ts: row.ts,
            event_id: row.event_id.to_string(),
            value: row
                .values
                .first()
                .and_then(|v| v.as_deref())
                .map(str::to_string),
            num: row.num.unwrap_or(0.0),
        };
        // in order (most rows): at the back, without a search
        let pos = match q.back() {
            Some(last) if last.ts > row.ts => q.partition_point(|e| e.ts <= row.ts),
            _ => q.len(),
        };
        let in_order = pos == q.len();
        m.rewrite |= !in_order;
        q.insert(pos, ev);
        if pos == 0 {
            // a new key, or an event before the oldest
            self.expiry.note(spec.kind, row.ts, &row.key);
        }
        if q.len() > MAX_EVENTS_PER_ENTITY {
            q.pop_front();
            m.popped += 1;
        }
        // Windows to check: the one ending at this event, and for a late
        // event also the windows ending at later events that now contain it.
        let mut ends: SmallVec<[i64; 4]> = smallvec::smallvec![row.ts];
        if !in_order {
            ends.extend(
                q.iter()
                    .filter(|e| e.ts > row.ts && e.ts - row.ts < spec.size)
                    .map(|e| e.ts),
            );
        }
        for end in ends {
            let (lo, hi) = if spec.tumbling {
                let start = end.div_euclid(spec.size) * spec.size;
                (start, start + spec.size - 1)
            } else {
                (end - spec.size + 1, end)
            };
            let a = q.partition_point(|e| e.ts < lo);
            let b = match q.back() {
                Some(last) if last.ts > hi => q.partition_point(|e| e.ts <= hi),
                _ => q.len(),
            };
            // A count, distinct count or top count never exceeds the
            // window's event count: most windows are ruled out here without
            // looking at their values.
            if spec.aggregate != Aggregate::Sum && ((b - a) as f64) < spec.min {
                continue;
            }
            let (agg, n) = aggregate(spec, q.range(a..b));
            let share = if n == 0 { 0.0 } else { agg / n as f64 };
            if agg >= spec.min && share >= spec.min_share {
                let ids: Vec<String> = q
                    .range(a..b)
                    .rev()
                    .take(50)
                    .map(|e| e.event_id.clone())
                    .collect();
                let mut detail = Map::new();
                detail.insert("window_aggregate".into(), Value::from(agg));
                detail.insert("window_events".into(), Value::from(n));
                if spec.min_share > 0.0 {
                    detail.insert("window_share".into(), Value::from(share));
                }
                detail.insert(
                    "window_start".into(),
                    Value::from(crate::incident::micros_to_dt(lo).to_rfc3339()),
                );
                return vec![StateFire {
                    first_ts: q[a].ts,
                    ts: row.ts,
                    event_ids: ids.into_iter().rev().collect(),
                    prior_evidence: Vec::new(),
                    detail,
                }];
            }
        }
        Vec::new()
    }

    fn sequence(&mut self, spec: &StateSpec, row: &mut StateRow<'_>) -> Vec<StateFire> {
        self.bump(row.ts);
        let Some(step) = row.step else {
            return Vec::new();
        };
        let n = spec.steps.len();
        let ent = get_or_insert(&mut self.sequences, &row.key, Default::default);
        let reshaped = ent.steps.len() != n;
        if reshaped {
            ent.steps.resize_with(n, Vec::new);
        }
        let m = get_or_insert(&mut self.dirty.sequences, &row.key, || SeqMark {
            base_lens: ent.steps.iter().map(Vec::len).collect(),
            popped: vec![0; n],
            rewrite: false,
            expiry_only: false,
        });
        m.expiry_only = false;
        // (a mark left by an expiry before a reshape counts the old steps:
        // `reshaped` makes it a rewrite)
        m.rewrite |= reshaped;
        if sequence_time(ent).is_none_or(|t| row.ts < t) {
            // a new key, or an event before the oldest
            self.expiry.note(spec.kind, row.ts, &row.key);
        }
        let list = &mut ent.steps[step];
        let pos = list.partition_point(|e| e.ts <= row.ts);
        m.rewrite |= pos != list.len();
        list.insert(
            pos,
            SeqEvent {
                ts: row.ts,
                event_id: row.event_id.to_string(),
                // Moved: a firing row's evidence is rebuilt from its origin.
                evidence: row.evidence.take().unwrap_or_default(),
            },
        );
        if list.len() > MAX_EVENTS_PER_ENTITY {
            list.remove(0);
            if let Some(p) = m.popped.get_mut(step) {
                *p += 1;
            }
        }
        // Any unreported final-step event that now completes a chain fires
        // (the new row may be the final step, or a late earlier step).
        let mut fires = Vec::new();
        let finals: Vec<(i64, String)> = ent.steps[n - 1]
            .iter()
            .filter(|e| !ent.reported.contains(&e.event_id))
            .map(|e| (e.ts, e.event_id.clone()))
            .collect();
        for (fts, fid) in finals {
            // Walk back: for each earlier step, the latest event at or
            // before the next step's time, within `within` of the final.
            let mut chain: Vec<&SeqEvent> = Vec::with_capacity(n);
            let mut bound = fts;
            let mut ok = true;
            for s in (0..n - 1).rev() {
                match ent.steps[s]
                    .iter()
                    .rev()
                    .find(|e| e.ts <= bound && fts - e.ts <= spec.within && e.event_id != fid)
                {
                    Some(e) => {
                        bound = e.ts;
                        chain.push(e);
                    }
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            chain.reverse();
            let first_ts = chain.first().map(|e| e.ts).unwrap_or(fts);
            let mut detail = Map::new();
            detail.insert("sequence".into(), Value::from(spec.steps.to_vec()));
            detail.insert(
                "elapsed_s".into(),
                Value::from((fts - first_ts) as f64 / 1e6),
            );
            let mut event_ids: Vec<String> = chain.iter().map(|e| e.event_id.clone()).collect();
            event_ids.push(fid.clone());
            fires.push(StateFire {
                first_ts,
                ts: fts,
                event_ids,
                prior_evidence: chain.iter().map(|e| e.evidence.clone()).collect(),
                detail,
            });
            ent.reported.insert(fid);
        }
        fires
    }

    fn baseline(&mut self, spec: &StateSpec, row: &StateRow<'_>) -> Vec<StateFire> {
        self.bump(row.ts);
        if row.values.iter().any(Option::is_none) {
            return Vec::new();
        }
        // No value is null (above).
        let vals = || row.values.iter().flatten().map(|v| v.as_ref());
        if !row.may_learn && !self.baselines.contains_key(row.key.as_ref()) {
            return Vec::new();
        }
        // One value column (most baselines): the tuple is the value itself.
        let tuple: Cow<'_, str> = match row.values.as_slice() {
            [Some(one)] => Cow::Borrowed(one.as_ref()),
            _ => Cow::Owned(sep_join(vals())),
        };
        let mut is_new = false;
        let entry = get_or_insert(&mut self.baselines, &row.key, || {
            is_new = true;
            BaselineEntry {
                first_ts: row.ts,
                last_seen: row.ts,
                ..BaselineEntry::default()
            }
        });
        // Whether more than `last_seen` changes (the journal then carries
        // the whole entry).
        if is_new {
            self.expiry.note(spec.kind, row.ts, &row.key);
        }
        let mut full = is_new || row.ts < entry.first_ts;
        let columns = if spec.when == BaselineWhen::All {
            row.values.len()
        } else {
            0
        };
        if entry.columns.len() != columns {
            entry.columns.resize_with(columns, Vec::new);
            full = true;
        }
        entry.first_ts = entry.first_ts.min(row.ts);
        entry.last_seen = entry.last_seen.max(row.ts);
        let known_before = !entry.tuples.is_empty();
        let found = entry.tuple(&tuple);
        let new = match spec.when {
            BaselineWhen::Any => found.is_err(),
            BaselineWhen::All => vals()
                .zip(&entry.columns)
                .all(|(v, set)| set.binary_search_by(|x| x.as_str().cmp(v)).is_err()),
        };
        let learning = row.ts - entry.first_ts < spec.learn;
        let fire = known_before && new && !learning && row.may_fire;
        let mut out = Vec::new();
        if fire {
            let mut detail = Map::new();
            let (first_tuple, first_seen) = entry
                .tuples
                .iter()
                .min_by_key(|(_, t)| *t)
                .map(|(k, t)| (k.clone(), *t))
                .unwrap_or_default();
            detail.insert(
                "baseline_first_value".into(),
                Value::from(first_tuple.replace(KEY_SEP, " | ")),
            );
            detail.insert(
                "baseline_first_seen".into(),
                Value::from(crate::incident::micros_to_dt(first_seen).to_rfc3339()),
            );
            detail.insert(
                "baseline_known_values".into(),
                Value::from(entry.tuples.len()),
            );
            detail.insert(
                "new_value".into(),
                Value::from(tuple.replace(KEY_SEP, " | ")),
            );
            out.push(StateFire {
                first_ts: row.ts,
                ts: row.ts,
                event_ids: vec![row.event_id.to_string()],
                prior_evidence: Vec::new(),
                detail,
            });
        }
        if row.may_learn {
            match found {
                Ok(i) => {
                    if let Some((_, t)) = entry.tuples.get_mut(i)
                        && row.ts < *t
                    {
                        *t = row.ts;
                        full = true;
                    }
                }
                Err(i) if entry.tuples.len() < MAX_BASELINE_VALUES => {
                    entry.tuples.insert(i, (tuple.into_owned(), row.ts));
                    full = true;
                }
                Err(_) => {}
            }
            for (v, set) in vals().zip(entry.columns.iter_mut()) {
                if set.len() < MAX_BASELINE_VALUES
                    && let Err(i) = set.binary_search_by(|x| x.as_str().cmp(v))
                {
                    set.insert(i, (*v).to_string());
                    full = true;
                }
            }
        }
        *get_or_insert(&mut self.dirty.baselines, &row.key, || false) |= full;
        out
    }
}

impl RuleState {
    /// A lifetime row: a gap over `idle` since the entity's previous event,
    /// or (once per life) an event over `absolute` after its first.
    fn lifetime(&mut self, spec: &StateSpec, row: &StateRow<'_>) -> Vec<StateFire> {
        self.bump(row.ts);
        mark(&mut self.dirty.spans, &row.key);
        let e = match self.spans.entry_ref(row.key.as_ref()) {
            hashbrown::hash_map::EntryRef::Occupied(o) => o.into_mut(),
            hashbrown::hash_map::EntryRef::Vacant(v) => {
                v.insert(SpanEntry {
                    first_ts: row.ts,
                    last_ts: row.ts,
                    absolute_reported: false,
                });
                self.expiry.note(spec.kind, row.ts, &row.key);
                return Vec::new();
            }
        };
        let rfc = |t: i64| Value::from(crate::incident::micros_to_dt(t).to_rfc3339());
        let secs = |us: i64| Value::from(us / 1_000_000);
        let mut out = Vec::new();
        let gap = row.ts - e.last_ts;
        if spec.idle > 0 && gap > spec.idle {
            let mut detail = Map::new();
            detail.insert("violation".into(), Value::from("idle"));
            detail.insert("idle_gap_s".into(), secs(gap));
            detail.insert("idle_limit_s".into(), secs(spec.idle));
            detail.insert("previous_event_ts".into(), rfc(e.last_ts));
            detail.insert("first_seen".into(), rfc(e.first_ts));
            out.push(StateFire {
                first_ts: e.last_ts,
                ts: row.ts,
                event_ids: vec![row.event_id.to_string()],
                prior_evidence: Vec::new(),
                detail,
            });
        }
        e.first_ts = e.first_ts.min(row.ts);
        e.last_ts = e.last_ts.max(row.ts);
        let age = row.ts - e.first_ts;
        if spec.absolute > 0 && age > spec.absolute && !e.absolute_reported {
            e.absolute_reported = true;
            let mut detail = Map::new();
            detail.insert("violation".into(), Value::from("absolute"));
            detail.insert("age_s".into(), secs(age));
            detail.insert("absolute_limit_s".into(), secs(spec.absolute));
            detail.insert("first_seen".into(), rfc(e.first_ts));
            out.push(StateFire {
                first_ts: e.first_ts,
                ts: row.ts,
                event_ids: vec![row.event_id.to_string()],
                prior_evidence: Vec::new(),
                detail,
            });
        }
        out
    }
}

/// The value of `key`, inserted with `new()` when missing: one hash of the
/// key, which is copied only for a new entity.
pub(crate) fn get_or_insert<'m, V>(
    map: &'m mut HashMap<String, V>,
    key: &str,
    new: impl FnOnce() -> V,
) -> &'m mut V {
    map.entry_ref(key).or_insert_with(new)
}

/// Marks a key as changed, cloning it only the first time.
fn mark(set: &mut HashSet<String>, key: &str) {
    set.get_or_insert_with(key, str::to_owned);
}

/// The window's aggregate and event count. For `top`, the count is exact
/// whenever it reaches the rule's bar (`min`, and `min_share` of the events);
/// below it, it may be any lower value.
fn aggregate<'a>(
    spec: &StateSpec,
    it: impl ExactSizeIterator<Item = &'a WinEvent> + Clone,
) -> (f64, usize) {
    match spec.aggregate {
        Aggregate::Count => {
            let n = it.len();
            (n as f64, n)
        }
        Aggregate::Distinct => {
            let mut set = HashSet::default();
            let mut n = 0;
            for e in it {
                n += 1;
                if let Some(v) = &e.value {
                    set.insert(v.as_str());
                }
            }
            (set.len() as f64, n)
        }
        Aggregate::Top => {
            let n = it.len();
            // A value that can reach the bar occurs at least `bar` times; one
            // Misra-Gries pass with n / bar counters keeps every such value
            // (anything more frequent than n / (counters + 1)), and a second
            // pass counts the candidates exactly. No hashing of the values.
            let bar = (spec.min.max(spec.min_share * n as f64) - 1.0).floor();
            if bar >= 1.0 {
                let counters = n / bar as usize;
                if counters <= TOP_CANDIDATES {
                    return (top_candidates(it, counters) as f64, n);
                }
            }
            let mut counts: HashMap<&str, usize> = HashMap::default();
            let mut n = 0;
            for e in it {
                n += 1;
                if let Some(v) = &e.value {
                    *counts.entry(v.as_str()).or_default() += 1;
                }
            }
            (counts.values().copied().max().unwrap_or(0) as f64, n)
        }
        Aggregate::Sum => {
            let mut s = 0.0;
            let mut n = 0;
            for e in it {
                n += 1;
                s += e.num;
            }
            (s, n)
        }
    }
}

/// Most Misra-Gries counters a `top` window is scanned with before a full
/// count per value is cheaper.
const TOP_CANDIDATES: usize = 8;

/// The largest exact count among the values that survive a Misra-Gries pass
/// with `counters` counters: every value occurring more than
/// `len / (counters + 1)` times is among them.
fn top_candidates<'a>(it: impl Iterator<Item = &'a WinEvent> + Clone, counters: usize) -> usize {
    let mut cand: [(&str, usize); TOP_CANDIDATES] = [("", 0); TOP_CANDIDATES];
    let cand = &mut cand[..counters.max(1)];
    for v in it.clone().filter_map(|e| e.value.as_deref()) {
        if let Some(c) = cand.iter_mut().find(|c| c.1 > 0 && c.0 == v) {
            c.1 += 1;
        } else if let Some(c) = cand.iter_mut().find(|c| c.1 == 0) {
            *c = (v, 1);
        } else {
            cand.iter_mut().for_each(|c| c.1 -= 1);
        }
    }
    cand.iter_mut().for_each(|c| c.1 = 0);
    for v in it.filter_map(|e| e.value.as_deref()) {
        if let Some(c) = cand.iter_mut().find(|c| c.0 == v) {
            c.1 += 1;
        }
    }
    cand.iter().map(|c| c.1).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_events_leave_defaults_out_and_read_back_the_same() {
        let ev = |value: Option<&str>, num: f64| WinEvent {
            ts: 7,
            event_id: "e1".into(),
            value: value.map(str::to_string),
            num,
        };
        let counted = ev(None, 0.0);
        let text = serde_json::to_string(&counted).expect("json");
        assert_eq!(text, r#"{"ts":7,"event_id":"e1"}"#);
        for e in [
            counted,
            ev(Some(""), 1.5),
            ev(Some("x"), -0.0),
            ev(None, f64::MIN_POSITIVE),
        ] {
            let back: WinEvent =
                serde_json::from_str(&serde_json::to_string(&e).expect("json")).expect("read");
            assert_eq!(back, e);
            assert_eq!(back.num.to_bits(), e.num.to_bits());
        }
        // Journals written before this encoding still read.
        let old: WinEvent =
            serde_json::from_str(r#"{"ts":7,"event_id":"e1","value":null,"num":0.0}"#)
                .expect("old form");
        assert_eq!(old, ev(None, 0.0));
        let seq: SeqEvent =
            serde_json::from_str(r#"{"ts":1,"event_id":"e"}"#).expect("no evidence");
        assert!(seq.evidence.is_empty());
        assert_eq!(
            serde_json::to_string(&seq).expect("json"),
            r#"{"ts":1,"event_id":"e"}"#
        );
    }

    fn spec(kind: RuleKind) -> StateSpec {
        StateSpec {
            kind,
            lateness: 60_000_000,
            size: 60_000_000,
            tumbling: false,
            aggregate: Aggregate::Count,
            min: 3.0,
            min_share: 0.0,
            steps: vec!["a".into(), "b".into()],
            within: 120_000_000,
            learn: 0,
            when: BaselineWhen::Any,
            idle: 0,
            absolute: 0,
            forget: 0,
        }
    }

    proptest::proptest! {
        /// `top` decides as a full count per value would, and reports the
        /// exact top count whenever it fires.
        #[test]
        fn top_fires_exactly_as_a_full_count(
            values in proptest::collection::vec(proptest::option::of(0u8..10), 0..80),
            skew in 0u8..8,
            min in 0u8..30,
            share in 0u8..=10,
        ) {
            let mut s = spec(RuleKind::Threshold);
            s.aggregate = Aggregate::Top;
            s.min = f64::from(min);
            s.min_share = f64::from(share) / 10.0;
            let events: Vec<WinEvent> = values
                .iter()
                // `skew` makes one value common, so the bar is often reached.
                .map(|v| WinEvent { value: v.map(|v| format!("v{}", v.saturating_sub(skew))), ..WinEvent::default() })
                .collect();
            let mut counts: HashMap<String, usize> = HashMap::default();
            for v in events.iter().filter_map(|e| e.value.clone()) {
                *counts.entry(v).or_default() += 1;
            }
            let top = counts.values().copied().max().unwrap_or(0) as f64;
            let n = events.len();
            let fires = |agg: f64| {
                agg >= s.min && (if n == 0 { 0.0 } else { agg / n as f64 }) >= s.min_share
            };
            let (agg, len) = aggregate(&s, events.iter());
            proptest::prop_assert_eq!(len, n);
            proptest::prop_assert_eq!(fires(agg), fires(top));
            if fires(top) {
                proptest::prop_assert_eq!(agg, top);
            }
        }
    }

    /// One generated row: time (s), key, value, sequence step.
    type GenRow = (i64, u8, u8, u8);

    fn kind_spec(kind: u8, lateness_s: i64, span_s: i64) -> StateSpec {
        let mut s = spec(match kind {
            0 => RuleKind::Threshold,
            1 => RuleKind::Sequence,
            2 | 3 => RuleKind::Baseline,
            _ => RuleKind::Lifetime,
        });
        s.lateness = lateness_s * 1_000_000;
        s.size = span_s * 1_000_000;
        s.within = span_s * 1_000_000;
        s.min = 2.0;
        s.aggregate = Aggregate::Distinct;
        // kind 3: a baseline that never forgets
        s.forget = if kind == 3 { 0 } else { span_s * 1_000_000 };
        s.idle = span_s * 500_000;
        s
    }

    fn gen_rows(batch: &[GenRow], b: usize) -> Vec<StateRow<'static>> {
        batch
            .iter()
            .enumerate()
            .map(|(i, &(ts, key, value, step))| {
                let mut r = row(ts, &format!("e{b}-{i}"), &format!("k{key}"));
                r.values = smallvec::smallvec![Some(format!("v{value}").into())];
                r.step = Some(usize::from(step));
                r
            })
            .collect()
    }

    fn fires_text(f: &[(StateRow<'_>, StateFire)]) -> Vec<String> {
        f.iter()
            .map(|(r, f)| format!("{} {f:?}", r.event_id))
            .collect()
    }

    proptest::proptest! {
        /// Expiry through the index leaves every kind of state, its fires,
        /// its journal deltas and its key-limit evictions exactly as a pass
        /// over every key did: with late rows, rows before a key's oldest
        /// event, keys forgotten and seen again, a key limit, and the state
        /// read back from disk (index not built) between batches.
        #[test]
        fn expiry_through_the_index_equals_a_pass_over_every_key(
            kind in 0u8..5,
            lateness_s in 0i64..20,
            span_s in 1i64..60,
            max_keys in 2usize..12,
            batches in proptest::collection::vec(
                proptest::collection::vec((0i64..400, 0u8..12, 0u8..3, 0u8..2), 0..16),
                1..10,
            ),
            reread in proptest::collection::vec(proptest::bool::ANY, 10),
        ) {
            let s = kind_spec(kind, lateness_s, span_s);
            let mut indexed = RuleState::default();
            let mut swept = RuleState { by_sweep: true, ..RuleState::default() };
            // time moves on between batches, with rows late within a batch
            for (b, batch) in batches.iter().enumerate() {
                let shifted: Vec<GenRow> = batch
                    .iter()
                    .map(|&(ts, k, v, st)| (ts + 60 * b as i64, k, v, st))
                    .collect();
                let (fa, la, ta) = indexed.process_with_limit(&s, gen_rows(&shifted, b), max_keys);
                let (fb, lb, tb) = swept.process_with_limit(&s, gen_rows(&shifted, b), max_keys);
                proptest::prop_assert_eq!(fires_text(&fa), fires_text(&fb));
                proptest::prop_assert_eq!((la, ta), (lb, tb));
                proptest::prop_assert_eq!(indexed.take_evicted(), swept.take_evicted());
                let da = serde_json::to_value(indexed.delta()).expect("delta");
                let db = serde_json::to_value(swept.delta()).expect("delta");
                proptest::prop_assert_eq!(da, db);
                let sa = serde_json::to_value(&indexed).expect("state");
                let sb = serde_json::to_value(&swept).expect("state");
                proptest::prop_assert_eq!(&sa, &sb);
                if reread[b] {
                    indexed = serde_json::from_value(sa).expect("reads back");
                }
            }
        }
    }

    fn row(ts_s: i64, id: &str, key: &str) -> StateRow<'static> {
        StateRow {
            ts: ts_s * 1_000_000,
            event_id: id.to_string().into(),
            key: key.to_string().into(),
            values: SmallVec::new(),
            num: None,
            step: None,
            may_fire: true,
            may_learn: true,
            evidence: None,
            origin: (0, 0),
        }
    }

    #[test]
    fn sliding_count_fires_at_the_crossing_and_respects_the_window() {
        let s = spec(RuleKind::Threshold);
        let mut st = RuleState::default();
        let (f, _, _) = st.process(
            &s,
            vec![row(0, "1", "k"), row(30, "2", "k"), row(61, "3", "k")],
        );
        assert!(f.is_empty(), "0 and 61 are not in one 60 s window");
        let (f, _, _) = st.process(&s, vec![row(62, "4", "k")]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1.event_ids, vec!["2", "3", "4"]);
    }

    #[test]
    fn top_with_share_needs_the_value_to_dominate_the_window() {
        let mut s = spec(RuleKind::Threshold);
        s.aggregate = Aggregate::Top;
        s.min_share = 0.5;
        let r = |ts, id: &str, v: &str| {
            let mut x = row(ts, id, "k");
            x.values = smallvec::smallvec![Some(v.to_string().into())];
            x
        };
        let mut st = RuleState::default();
        // 3 × "a" among 7 calls: top 3 ≥ min 3 but share 3/7 < 0.5.
        let rows = vec![
            r(0, "1", "a"),
            r(1, "2", "b"),
            r(2, "3", "a"),
            r(3, "4", "c"),
            r(4, "5", "d"),
            r(5, "6", "e"),
            r(6, "7", "a"),
        ];
        assert!(st.process(&s, rows).0.is_empty());
        let mut st = RuleState::default();
        let rows = vec![
            r(0, "1", "a"),
            r(1, "2", "b"),
            r(2, "3", "a"),
            r(3, "4", "a"),
        ];
        let (f, _, _) = st.process(&s, rows);
        assert_eq!(f.len(), 1, "3 of 4 are \"a\"");
        assert_eq!(f[0].1.detail["window_share"], serde_json::json!(0.75));
    }

    #[test]
    fn late_event_completes_an_earlier_window_and_is_counted() {
        let s = spec(RuleKind::Threshold);
        let mut st = RuleState::default();
        assert!(
            st.process(&s, vec![row(100, "1", "k"), row(110, "2", "k")])
                .0
                .is_empty()
        );
        st.process(&s, vec![row(200, "x", "other")]);
        // 105 arrives after the watermark (200 - 60 = 140): late, still
        // evaluated against the retained window.
        let (f, late, too_late) = st.process(&s, vec![row(105, "3", "k")]);
        assert_eq!((late, too_late), (1, 0));
        assert_eq!(f.len(), 1);
        assert_eq!(st.late, 1);
    }

    #[test]
    fn tumbling_windows_do_not_span_boundaries() {
        let mut s = spec(RuleKind::Threshold);
        s.tumbling = true;
        let mut st = RuleState::default();
        let (f, _, _) = st.process(
            &s,
            vec![row(50, "1", "k"), row(55, "2", "k"), row(65, "3", "k")],
        );
        assert!(f.is_empty());
        let (f, _, _) = st.process(&s, vec![row(70, "4", "k"), row(80, "5", "k")]);
        assert_eq!(f.len(), 1, "65, 70, 80 in [60, 120)");
    }

    #[test]
    fn sequence_in_order_out_of_order_and_expired() {
        let s = spec(RuleKind::Sequence);
        let mut st = RuleState::default();
        let mut a = row(0, "a1", "k");
        a.step = Some(0);
        let mut b = row(100, "b1", "k");
        b.step = Some(1);
        let (f, _, _) = st.process(&s, vec![b.clone(), a.clone()]);
        assert_eq!(f.len(), 1, "order inside a batch does not matter");
        assert_eq!(f[0].1.event_ids, vec!["a1", "b1"]);
        // B first, A arrives in a later batch (out of order) still pairs.
        let mut b2 = row(400, "b2", "j");
        b2.step = Some(1);
        assert!(st.process(&s, vec![b2]).0.is_empty());
        let mut a2 = row(390, "a2", "j");
        a2.step = Some(0);
        assert_eq!(st.process(&s, vec![a2]).0.len(), 1);
        // Too far apart.
        let mut a3 = row(1000, "a3", "m");
        a3.step = Some(0);
        let mut b3 = row(1200, "b3", "m");
        b3.step = Some(1);
        assert!(st.process(&s, vec![a3, b3]).0.is_empty());
    }

    #[test]
    fn baseline_fires_on_a_changed_value_once_and_honours_learning() {
        let mut s = spec(RuleKind::Baseline);
        let mut st = RuleState::default();
        let v = |ts, id, val: &str| StateRow {
            values: smallvec::smallvec![Some(val.to_string().into())],
            ..row(ts, id, "srv|tool")
        };
        assert!(
            st.process(&s, vec![v(0, "1", "h1"), v(10, "2", "h1")])
                .0
                .is_empty()
        );
        assert_eq!(st.process(&s, vec![v(20, "3", "h2")]).0.len(), 1);
        assert!(
            st.process(&s, vec![v(30, "4", "h2")]).0.is_empty(),
            "known now"
        );
        s.learn = 3_600_000_000;
        let mut st = RuleState::default();
        assert!(
            st.process(&s, vec![v(0, "1", "h1"), v(10, "2", "h2")])
                .0
                .is_empty()
        );
        assert_eq!(st.process(&s, vec![v(4000, "3", "h3")]).0.len(), 1);
    }

    #[test]
    fn baseline_rows_that_may_not_fire_only_teach() {
        let s = spec(RuleKind::Baseline);
        let mut st = RuleState::default();
        let v = |ts, id, val: &str, may_fire| StateRow {
            values: smallvec::smallvec![Some(val.to_string().into())],
            may_fire,
            ..row(ts, id, "search")
        };
        // A suspicious row first creates the key; a later ordinary new value
        // is learned silently; a suspicious new value fires; a known one not.
        let (f, _, _) = st.process(
            &s,
            vec![
                v(0, "1", "s1", true),
                v(10, "2", "s2", false),
                v(20, "3", "s3", true),
                v(30, "4", "s2", true),
            ],
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0.event_id, "3");
    }

    #[test]
    fn baseline_rows_that_may_not_learn_are_judged_but_not_remembered() {
        let s = spec(RuleKind::Baseline);
        let mut st = RuleState::default();
        let v = |ts, id, val: &str, may_learn| StateRow {
            values: smallvec::smallvec![Some(val.to_string().into())],
            may_learn,
            ..row(ts, id, "srv|tool")
        };
        // An unlearnable first row does not create the key; the first
        // learnable one does; an unlearnable new value fires every time.
        let (f, _, _) = st.process(
            &s,
            vec![
                v(0, "1", "bad", false),
                v(10, "2", "good", true),
                v(20, "3", "bad", false),
                v(30, "4", "bad", false),
                v(40, "5", "good", true),
            ],
        );
        let ids: Vec<&str> = f.iter().map(|(r, _)| r.event_id.as_ref()).collect();
        assert_eq!(ids, vec!["3", "4"]);
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = spec(RuleKind::Threshold);
        let mut st = RuleState::default();
        st.process(&s, vec![row(0, "1", "k"), row(1, "2", "k")]);
        let mut back: RuleState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back.process(&s, vec![row(2, "3", "k")]).0.len(), 1);
    }

    /// Deltas taken after every batch, applied in order to a copy, keep the
    /// copy equal to the live state through inserts, late rows, evictions
    /// and removed keys, for every kind.
    #[test]
    fn deltas_replayed_in_order_rebuild_the_state() {
        // A delta per batch (as the pipeline takes them) and per three
        // batches (a key may expire untouched, then be touched, in one period).
        for (kind, when, period) in [
            (RuleKind::Threshold, BaselineWhen::Any, 1),
            (RuleKind::Threshold, BaselineWhen::Any, 3),
            (RuleKind::Sequence, BaselineWhen::Any, 1),
            (RuleKind::Sequence, BaselineWhen::Any, 3),
            (RuleKind::Baseline, BaselineWhen::Any, 1),
            (RuleKind::Baseline, BaselineWhen::All, 1),
            (RuleKind::Lifetime, BaselineWhen::Any, 1),
        ] {
            let mut s = spec(kind);
            s.when = when;
            let mut seen = 0;
            if kind == RuleKind::Lifetime {
                (s.idle, s.absolute, s.forget) = (50_000_000, 400_000_000, 200_000_000);
            }
            let mut live = RuleState::default();
            let mut copy = RuleState::default();
            let mut removed = 0;
            let mut nulls = 0;
            let mut tails = 0;
            for b in 0..40i64 {
                let rows: Vec<StateRow<'_>> = (0..5i64)
                    .map(|j| {
                        // Keys come and go; every fourth batch a late row.
                        let ts = if j == 0 && b % 4 == 3 {
                            b * 30 - 100
                        } else {
                            b * 30 + j
                        };
                        let mut r =
                            row(ts, &format!("e{b}-{j}"), &format!("k{}", (b / 3 + j) % 11));
                        r.step = Some((j % 2) as usize);
                        r.values = smallvec::smallvec![Some(format!("v{}", (b * j) % 5).into())];
                        r
                    })
                    .collect();
                let size = |l: &RuleState| {
                    l.windows.len() + l.sequences.len() + l.baselines.len() + l.spans.len()
                };
                let before = size(&live);
                live.process(&s, rows);
                let after = size(&live);
                removed += before.saturating_sub(after);
                if b % period != period - 1 && b != 39 {
                    continue;
                }
                let json = serde_json::to_string(&live.delta()).unwrap();
                tails += json.matches("\"drop\":").count();
                seen += json.matches("{\"seen\":").count();
                nulls += json.matches(":null").count();
                copy.apply(serde_json::from_str(&json).unwrap());
                assert!(!live.is_dirty());
                assert_eq!(
                    serde_json::to_value(&copy).unwrap(),
                    serde_json::to_value(&live).unwrap(),
                    "{kind:?} (a delta per {period}) after batch {b}"
                );
            }
            if kind != RuleKind::Baseline {
                assert!(removed > 0, "{kind:?}: keys expired on the way");
            }
            if matches!(kind, RuleKind::Threshold | RuleKind::Sequence) {
                // keys that only expired are not written: applying the
                // delta's `expire_before` removes them
                assert!(
                    nulls < removed,
                    "{kind:?}: {nulls} nulls for {removed} expired keys"
                );
            }
            if matches!(kind, RuleKind::Threshold | RuleKind::Sequence) && period == 1 {
                // windows and sequences mostly travel as their tail, late
                // rows as a whole
                assert!(tails > 20, "{kind:?}: {tails} tail deltas");
            }
            if kind == RuleKind::Baseline {
                // a known key whose values are known travels as `{"seen": ts}`
                assert!(seen > 20, "{when:?}: {seen} seen-only deltas");
            }
        }
    }

    #[test]
    fn lifetime_reports_idle_gaps_and_the_absolute_limit_once() {
        let mut s = spec(RuleKind::Lifetime);
        (s.idle, s.absolute, s.forget) = (600_000_000, 3_600_000_000, 86_400_000_000);
        let mut st = RuleState::default();
        // active every 5 minutes for 25 minutes: nothing
        let rows = (0..6)
            .map(|i| row(i * 300, &format!("a{i}"), "s1"))
            .collect();
        let (f, _, _) = st.process(&s, rows);
        assert!(f.is_empty(), "{f:?}");
        // 15 minutes of silence, then the session id is used again
        let (f, _, _) = st.process(&s, vec![row(1500 + 900, "late-use", "s1")]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1.detail["violation"], "idle");
        assert_eq!(f[0].1.detail["idle_gap_s"], 900);
        assert_eq!(f[0].1.event_ids, vec!["late-use"]);
        // past one hour from the first event: once, not on every later event
        let steady = (0..5)
            .map(|i| row(2400 + 300 * i, &format!("c{i}"), "s1"))
            .collect();
        assert!(st.process(&s, steady).0.is_empty());
        let (f, _, _) = st.process(&s, vec![row(3700, "old-1", "s1"), row(3800, "old-2", "s1")]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].1.detail["violation"], "absolute");
        assert_eq!(f[0].1.event_ids, vec!["old-1"]);
        // another session is independent; a late row does not open a gap
        let (f, _, _) = st.process(&s, vec![row(4400, "b0", "s2"), row(4390, "b-late", "s2")]);
        assert!(f.is_empty(), "{f:?}");
        // a day of silence: s1 and s2 are forgotten, a new life starts
        let (f, _, _) = st.process(&s, vec![row(4400 + 90_000, "x", "s3")]);
        assert!(f.is_empty());
        assert_eq!(st.spans.keys().collect::<Vec<_>>(), vec!["s3"]);
        let (f, _, _) = st.process(&s, vec![row(4400 + 90_010, "again", "s1")]);
        assert!(f.is_empty(), "a forgotten entity starts afresh: {f:?}");
    }

    #[test]
    fn baseline_keys_unseen_for_forget_are_dropped() {
        let mut s = spec(RuleKind::Baseline);
        s.forget = 3_600_000_000;
        let mut st = RuleState::default();
        let val = |ts, id: &str, key: &str, v: &str| {
            let mut r = row(ts, id, key);
            r.values = smallvec::smallvec![Some(v.to_string().into())];
            r
        };
        st.process(
            &s,
            vec![val(0, "a", "s1", "alice"), val(10, "b", "s2", "bob")],
        );
        // s2 stays busy, s1 falls silent for more than an hour
        let (f, _, _) = st.process(&s, vec![val(3000, "c", "s2", "bob")]);
        assert!(f.is_empty());
        st.process(&s, vec![val(3700, "d", "s2", "bob")]);
        assert_eq!(st.baselines.len(), 1, "s1 forgotten");
        // s1 again with another value: a new key, learned, nothing fires
        let (f, _, _) = st.process(&s, vec![val(3800, "e", "s1", "mallory")]);
        assert!(f.is_empty());
        let (f, _, _) = st.process(&s, vec![val(3900, "g", "s2", "mallory")]);
        assert_eq!(f.len(), 1, "s2 is still remembered: its change fires");
    }

    #[test]
    fn past_the_key_limit_the_least_recently_seen_tenth_is_forgotten_and_journalled() {
        for kind in [RuleKind::Baseline, RuleKind::Lifetime] {
            let mut s = spec(kind);
            s.forget = 86_400_000_000;
            let mut live = RuleState::default();
            let mut copy = RuleState::default();
            let val = |ts, key: &str| {
                let mut r = row(ts, &format!("{key}@{ts}"), key);
                r.values = smallvec::smallvec![Some(Cow::Borrowed("alice"))];
                r
            };
            // k00..k19 one per second; k06 is seen again at second 15.
            let mut evicted = Vec::new();
            for i in 0..20i64 {
                let mut rows = vec![val(i, &format!("k{i:02}"))];
                if i == 15 {
                    rows.push(val(i, "k06"));
                }
                live.process_with_limit(&s, rows, 10);
                evicted.push(live.take_evicted());
                let json = serde_json::to_string(&live.delta()).unwrap();
                copy.apply(serde_json::from_str(&json).unwrap());
            }
            let mut keys: Vec<&str> = match kind {
                RuleKind::Baseline => live.baselines.keys().map(String::as_str).collect(),
                _ => live.spans.keys().map(String::as_str).collect(),
            };
            keys.sort();
            // The 11th key makes 11 > 10: the two least recently seen go
            // (down to 9); so at every second key from k10 on. k06, seen
            // again at 15, outlives k07..k10.
            assert_eq!(
                keys,
                [
                    "k06", "k11", "k12", "k13", "k14", "k15", "k16", "k17", "k18", "k19"
                ],
                "{kind:?}"
            );
            assert_eq!(
                evicted,
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0],
                "{kind:?}"
            );
            assert_eq!(
                serde_json::to_value(&copy).unwrap(),
                serde_json::to_value(&live).unwrap(),
                "{kind:?}: evictions are journalled"
            );
        }
    }
}
