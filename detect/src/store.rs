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

#[derive(Default)]
struct Inner {
    list: Vec<Incident>,
    by_id: HashMap<String, usize>,
    /// Analyst actions per incident, oldest first.
    history: HashMap<String, Vec<IncidentAction>>,
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
        let store = Self::new();
        if !path.exists() {
            return Ok(store);
        }
        let io = |e| DetectError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let inc: Incident = serde_json::from_str(&line).map_err(|e| {
                DetectError::InvalidValue(format!("{}:{}: {e}", path.display(), n + 1))
            })?;
            store.insert(inc);
        }
        Ok(store)
    }

    /// Inserts or replaces (same id) an incident.
    pub fn insert(&self, incident: Incident) {
        let mut g = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match g.by_id.get(&incident.incident_id).copied() {
            Some(i) => g.list[i] = incident,
            None => {
                let i = g.list.len();
                g.by_id.insert(incident.incident_id.clone(), i);
                g.list.push(incident);
            }
        }
    }

    /// Loads the action history written by earlier runs (`actions.ndjson`).
    pub fn load_actions_ndjson(&self, path: &Path) -> Result<(), DetectError> {
        if !path.exists() {
            return Ok(());
        }
        let io = |e| DetectError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let a: IncidentAction = serde_json::from_str(&line).map_err(|e| {
                DetectError::InvalidValue(format!("{}:{}: {e}", path.display(), n + 1))
            })?;
            self.push_action(a);
        }
        Ok(())
    }

    /// Appends an action to its incident's history.
    pub fn push_action(&self, action: IncidentAction) {
        let mut g = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.history
            .entry(action.incident_id.clone())
            .or_default()
            .push(action);
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
