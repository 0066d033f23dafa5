//! The queryable set of incidents, shared by the pipeline and the API.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::RwLock;

use chrono::{DateTime, Utc};

use crate::DetectError;
use crate::incident::{Incident, IncidentStatus};
use crate::lifecycle::IncidentAction;
use crate::rule::Level;

#[derive(Clone, Debug, Default)]
pub struct IncidentFilter {
    pub level: Option<Level>,
    pub status: Option<IncidentStatus>,
    /// Incidents detected at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

/// A `suppress` action: no new incident of `rule_id` on `entity` until `until`.
struct Suppression {
    rule_id: String,
    entity: std::collections::BTreeMap<String, serde_json::Value>,
    until: DateTime<Utc>,
    action_id: String,
}

/// Drops incidents until `keep` remain: resolved before open, least
/// recently changed first; rebuilds the indexes.
fn prune(g: &mut Inner, keep: usize) {
    let n = g.list.len();
    if n <= keep {
        return;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (g.list[i].status != IncidentStatus::Resolved, g.revs[i]));
    let mut drop = vec![false; n];
    for &i in &order[..n - keep] {
        drop[i] = true;
    }
    let list = std::mem::take(&mut g.list);
    let revs = std::mem::take(&mut g.revs);
    g.by_id.clear();
    for ((inc, rev), d) in list.into_iter().zip(revs).zip(drop) {
        if d {
            g.history.remove(&inc.incident_id);
            g.evicted += 1;
            continue;
        }
        g.by_id.insert(inc.incident_id.clone(), g.list.len());
        g.list.push(inc);
        g.revs.push(rev);
    }
}

#[derive(Default)]
struct Inner {
    list: Vec<Incident>,
    by_id: HashMap<String, usize>,
    /// Analyst actions per incident, oldest first.
    history: HashMap<String, Vec<IncidentAction>>,
    /// Revision of the last change of each incident of `list` (insert,
    /// replace or a new action), from the store-wide counter `revision`.
    revs: Vec<u64>,
    revision: u64,
    /// Active and past `suppress` actions.
    suppressions: Vec<Suppression>,
    /// Most incidents kept (0: all); see [`IncidentStore::set_limit`].
    limit: usize,
    /// Incidents dropped from memory by the limit.
    evicted: u64,
}

/// Calls `f` with each JSON line of `path` (missing: none). A last line without its
/// newline that does not parse was cut by a crash mid-append: it is skipped with a
/// warning (the pipeline, once it holds the ledger lock, removes it and writes the record
/// again); any other unreadable line is an error naming file and line. Reads only, so it
/// is safe beside a running monitor.
fn for_each_line<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut f: impl FnMut(T),
) -> Result<(), DetectError> {
    let io = |e| DetectError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        let terminated = line.last() == Some(&b'\n');
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<T>(&line) {
            Ok(v) => f(v),
            Err(_) if !terminated => {
                tracing::warn!(file = %path.display(), line = n, "last line was cut by a crash, skipped");
            }
            Err(e) => {
                return Err(DetectError::InvalidValue(format!(
                    "{}:{n}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// In-memory incident index, rebuilt from `incidents.ndjson` on start.
#[derive(Default)]
pub struct IncidentStore {
    inner: RwLock<Inner>,
}

impl IncidentStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads incidents written by earlier runs (one JSON object per line).
    pub fn load_ndjson(path: &Path) -> Result<Self, DetectError> {
        Self::load_ndjson_with_limit(path, 0)
    }

    /// [`IncidentStore::load_ndjson`] keeping at most `limit` incidents in
    /// memory (0: all), see [`IncidentStore::set_limit`].
    pub fn load_ndjson_with_limit(path: &Path, limit: usize) -> Result<Self, DetectError> {
        let store = Self::new();
        store.set_limit(limit);
        for_each_line(path, |inc: Incident| store.insert(inc))?;
        Ok(store)
    }

    /// Keeps at most `limit` incidents in memory (0: all): past it (by an
    /// eighth, so the cost is amortised) the resolved ones that changed
    /// longest ago go first, then the oldest others. They stay in
    /// `incidents.ndjson` and the ledger; the API no longer serves them.
    pub fn set_limit(&self, limit: usize) {
        let mut g = self.write();
        g.limit = limit;
        if limit > 0 && g.list.len() > limit {
            prune(&mut g, limit);
        }
    }

    /// Incidents the limit dropped from memory since start.
    pub fn evicted(&self) -> u64 {
        self.read(|i| i.evicted)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Inserts or replaces (same id) an incident.
    pub fn insert(&self, incident: Incident) {
        let mut g = self.write();
        g.revision += 1;
        let rev = g.revision;
        match g.by_id.get(&incident.incident_id).copied() {
            Some(i) => {
                g.list[i] = incident;
                g.revs[i] = rev;
            }
            None => {
                let i = g.list.len();
                g.by_id.insert(incident.incident_id.clone(), i);
                g.list.push(incident);
                g.revs.push(rev);
                if g.limit > 0 && g.list.len() > g.limit + g.limit / 8 {
                    let keep = g.limit;
                    prune(&mut g, keep);
                }
            }
        }
    }

    /// Loads the action history written by earlier runs (`actions.ndjson`).
    pub fn load_actions_ndjson(&self, path: &Path) -> Result<(), DetectError> {
        for_each_line(path, |a: IncidentAction| self.push_action(a))
    }

    /// Appends an action to its incident's history.
    pub fn push_action(&self, action: IncidentAction) {
        let mut g = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.revision += 1;
        let rev = g.revision;
        if let Some(i) = g.by_id.get(&action.incident_id).copied() {
            g.revs[i] = rev;
            if let (crate::lifecycle::ActionKind::Suppress, Some(until)) =
                (action.action, action.suppress_until)
            {
                let inc = &g.list[i];
                let s = Suppression {
                    rule_id: inc.rule_id.clone(),
                    entity: inc.entity.clone(),
                    until,
                    action_id: action.action_id.clone(),
                };
                g.suppressions.push(s);
            }
        }
        g.history
            .entry(action.incident_id.clone())
            .or_default()
            .push(action);
    }

    /// The `suppress` action (its id) under which a new incident of the same rule and
    /// entity is not raised at `now`, if any.
    pub fn suppressed_by(&self, inc: &Incident, now: DateTime<Utc>) -> Option<String> {
        self.read(|i| {
            i.suppressions
                .iter()
                .find(|s| s.until > now && s.rule_id == inc.rule_id && s.entity == inc.entity)
                .map(|s| s.action_id.clone())
        })
    }

    /// The store's revision: it grows with every insert, replacement and action.
    pub fn revision(&self) -> u64 {
        self.read(|i| i.revision)
    }

    /// The incidents created or changed (incl. a new action) after revision
    /// `after`, oldest change first, at most `limit`, with the revision to
    /// ask from next time (for live views; a scan of one `u64` per incident).
    pub fn changed_since(&self, after: u64, limit: usize) -> (Vec<Incident>, u64) {
        self.read(|i| {
            let mut hits: Vec<(u64, usize)> = i
                .revs
                .iter()
                .enumerate()
                .filter(|(_, r)| **r > after)
                .map(|(n, r)| (*r, n))
                .collect();
            hits.sort_unstable();
            // a page cut short resumes after its last change; a whole one at the revision
            let next = match limit.checked_sub(1).and_then(|k| hits.get(k)) {
                Some(&(r, _)) if hits.len() > limit => r,
                _ => i.revision,
            };
            hits.truncate(limit);
            (
                hits.into_iter().map(|(_, n)| i.list[n].clone()).collect(),
                next,
            )
        })
    }

    /// The actions taken on an incident, oldest first.
    pub fn history(&self, id: &str) -> Vec<IncidentAction> {
        self.read(|i| i.history.get(id).cloned().unwrap_or_default())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.read(|i| i.by_id.contains_key(id))
    }

    pub fn get(&self, id: &str) -> Option<Incident> {
        self.read(|i| i.by_id.get(id).map(|&n| i.list[n].clone()))
    }

    pub fn len(&self) -> usize {
        self.read(|i| i.list.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Newest first.
    pub fn list(&self, filter: &IncidentFilter) -> Vec<Incident> {
        self.read(|i| {
            i.list
                .iter()
                .rev()
                .filter(|inc| filter.level.is_none_or(|l| inc.level == l))
                .filter(|inc| filter.status.is_none_or(|s| inc.status == s))
                .filter(|inc| filter.since.is_none_or(|t| inc.detected_at >= t))
                .take(filter.limit.unwrap_or(usize::MAX))
                .cloned()
                .collect()
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        match self.inner.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(id: &str) -> Incident {
        serde_json::from_value(serde_json::json!({
            "incident_id": id, "rule_id": "r", "rule_sha256": "00", "level": 2,
            "severity": "high", "title": "t", "tags": [], "entity": {},
            "session_id": null, "server_id": null, "first_ts": "2026-12-01T00:00:00Z",
            "last_ts": "2026-12-01T00:00:00Z", "event_ids": [], "match_count": 1,
            "evidence": [], "status": "open", "detected_at": "2026-12-01T00:00:00Z"
        }))
        .expect("incident")
    }

    fn ids(v: &[Incident]) -> Vec<&str> {
        v.iter().map(|i| i.incident_id.as_str()).collect()
    }

    #[test]
    fn the_memory_limit_drops_resolved_then_oldest_incidents() {
        let s = IncidentStore::new();
        s.set_limit(8);
        for n in 0..8 {
            let mut i = incident(&format!("i{n}"));
            if n % 3 == 0 {
                i.status = IncidentStatus::Resolved;
            }
            s.insert(i);
        }
        // i1 changes: it is now the most recently changed open incident
        let mut i1 = incident("i1");
        i1.status = IncidentStatus::Acknowledged;
        s.insert(i1);
        assert_eq!(s.len(), 8);
        s.insert(incident("i8"));
        assert_eq!(s.len(), 9, "an eighth over the limit before pruning");
        s.insert(incident("i9"));
        // pruned to 8: the resolved i0, i3 first, no open one needed beyond
        assert_eq!(s.len(), 8);
        assert_eq!(s.evicted(), 2);
        assert!(!s.contains("i0") && !s.contains("i3"));
        assert!(s.contains("i6"), "resolved but the newest of them: kept");
        for _ in 10..20 {
            s.insert(incident(&format!("i{}", s.len() + s.evicted() as usize)));
        }
        // then the least recently changed open ones; i1 changed late
        assert!(s.len() <= 9);
        assert!(!s.contains("i2") && !s.contains("i6"));
        let (all, _) = s.changed_since(0, 100);
        assert_eq!(all.len(), s.len());
        assert_eq!(s.get("i19").map(|i| i.incident_id), Some("i19".to_string()));
        // unlimited again keeps everything
        let u = IncidentStore::new();
        for n in 0..50 {
            u.insert(incident(&format!("u{n}")));
        }
        assert_eq!((u.len(), u.evicted()), (50, 0));
    }

    #[test]
    fn changed_since_returns_new_and_changed_incidents_in_change_order() {
        let s = IncidentStore::new();
        s.insert(incident("a"));
        s.insert(incident("b"));
        let (all, r1) = s.changed_since(0, 100);
        assert_eq!(ids(&all), ["a", "b"]);
        assert_eq!(s.changed_since(r1, 100).0.len(), 0);
        s.insert(incident("c"));
        let mut a = incident("a");
        a.status = IncidentStatus::Acknowledged;
        s.insert(a);
        let (changed, r2) = s.changed_since(r1, 100);
        assert_eq!(ids(&changed), ["c", "a"]);
        assert_eq!(changed[1].status, IncidentStatus::Acknowledged);
        // an action alone marks its incident changed; a limit pages through
        let mut act: IncidentAction = serde_json::from_value(serde_json::json!({
            "type": "incident_action", "action_id": "x", "incident_id": "b", "action": "ack",
            "actor": "u", "role": "analyst", "jti": "j", "at": "2026-12-01T00:00:00Z"
        }))
        .expect("action");
        act.note = Some("n".into());
        s.push_action(act);
        s.insert(incident("d"));
        let (page, r3) = s.changed_since(r2, 1);
        assert_eq!(ids(&page), ["b"]);
        let (rest, r4) = s.changed_since(r3, 1);
        assert_eq!(ids(&rest), ["d"]);
        assert_eq!(r4, s.revision());
        assert!(s.changed_since(r4, 1).0.is_empty());
    }

    #[test]
    fn loading_skips_a_cut_last_line_and_refuses_other_damage() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("incidents.ndjson");
        let line = |id: &str| serde_json::to_string(&incident(id)).expect("json");
        let (a, b) = (line("a"), line("b"));
        // A whole last line without its newline is read; a cut one is skipped.
        std::fs::write(&p, format!("{a}\n{b}")).expect("write");
        let s = IncidentStore::load_ndjson(&p).expect("whole last line");
        assert!(s.get("a").is_some() && s.get("b").is_some());
        std::fs::write(&p, format!("{a}\n{}", &b[..b.len() / 2])).expect("write");
        let s = IncidentStore::load_ndjson(&p).expect("cut last line");
        assert!(s.get("a").is_some() && s.get("b").is_none());
        // Damage followed by more lines is not a crash's cut: an error naming the line.
        std::fs::write(&p, format!("{}\n{a}\n", &b[..b.len() / 2])).expect("write");
        let Err(e) = IncidentStore::load_ndjson(&p) else {
            panic!("a damaged first line loaded");
        };
        assert!(e.to_string().contains("incidents.ndjson:1"), "{e}");
        assert!(IncidentStore::load_ndjson(&tmp.path().join("none")).is_ok());
    }
}
