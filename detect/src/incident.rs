//! Incidents: matches of one rule grouped by the affected entity.

use std::collections::BTreeMap;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::DetectError;
use crate::engine::RuleMatches;
use crate::rule::{Level, Severity};

/// How many matched rows an incident keeps as evidence.
pub const MAX_EVIDENCE_ROWS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl std::fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: String,
    pub rule_id: String,
    pub rule_sha256: String,
    pub level: Level,
    pub severity: Severity,
    pub title: String,
    pub tags: Vec<String>,
    pub entity: BTreeMap<String, Value>,
    pub session_id: Option<String>,
    pub server_id: Option<String>,
    pub first_ts: DateTime<Utc>,
    pub last_ts: DateTime<Utc>,
    pub event_ids: Vec<String>,
    pub match_count: u64,
    pub evidence: Vec<Map<String, Value>>,
    pub status: IncidentStatus,
    pub detected_at: DateTime<Utc>,
    /// Raised by `dunes replay --from-store` over stored history, not by live traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

struct Builder {
    entity: BTreeMap<String, Value>,
    session_id: Option<String>,
    server_id: Option<String>,
    first_ts: i64,
    last_ts: i64,
    event_ids: Vec<String>,
    match_count: u64,
    evidence: Vec<Map<String, Value>>,
}

/// Incidents under construction, one per entity key, in first-seen order.
#[derive(Default)]
struct Groups {
    index: BTreeMap<String, usize>,
    list: Vec<(String, Builder)>,
}

impl Groups {
    /// The builder for `key`, created by `make` on first sight.
    fn entry(&mut self, key: String, make: impl FnOnce() -> Builder) -> &mut Builder {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.index.insert(key.clone(), self.list.len());
                self.list.push((key, make()));
                self.list.len() - 1
            }
        };
        &mut self.list[i].1
    }
}

/// Groups one rule's matches in a batch into incidents, one per distinct
/// entity value. Order is deterministic: by first appearance.
pub fn build_incidents(
    matches: &RuleMatches<'_>,
    detected_at: DateTime<Utc>,
) -> Result<Vec<Incident>, DetectError> {
    let rule = matches.rule;
    let cfg = &rule.rule.config;
    let layout = &rule.layout;
    let schema = rule.output_schema();
    let mut groups = Groups::default();
    for batch in &matches.batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let rows = batch_to_json_rows(batch)?;
        let event_ids = string_column(batch, layout.event_id)?;
        let ts = ts_column(batch, layout.ts)?;
        let session = layout
            .session_id
            .map(|i| string_column(batch, i))
            .transpose()?;
        let server = layout
            .server_id
            .map(|i| string_column(batch, i))
            .transpose()?;
        for (row_idx, row) in rows.into_iter().enumerate() {
            if crate::engine::excepted(rule, batch, row_idx) {
                continue;
            }
            let mut entity = BTreeMap::new();
            for &i in &layout.entity {
                let name = schema.field(i).name();
                entity.insert(name.clone(), row.get(name).cloned().unwrap_or(Value::Null));
            }
            let key = serde_json::to_string(&entity).unwrap_or_default();
            let eid = nullable_str(&event_ids, row_idx).unwrap_or_default();
            let t = if ts.is_null(row_idx) {
                0
            } else {
                ts.value(row_idx)
            };
            let b = groups.entry(key, || Builder {
                entity,
                session_id: session.as_ref().and_then(|c| nullable_str(c, row_idx)),
                server_id: server.as_ref().and_then(|c| nullable_str(c, row_idx)),
                first_ts: t,
                last_ts: t,
                event_ids: Vec::new(),
                match_count: 0,
                evidence: Vec::new(),
            });
            b.first_ts = b.first_ts.min(t);
            b.last_ts = b.last_ts.max(t);
            if !b.event_ids.contains(&eid) {
                b.event_ids.push(eid);
            }
            b.match_count += 1;
            if b.evidence.len() < MAX_EVIDENCE_ROWS {
                b.evidence.push(row);
            }
        }
    }
    for fire in &matches.fires {
        let mut entity = BTreeMap::new();
        for &i in &layout.entity {
            let name = schema.field(i).name();
            entity.insert(
                name.clone(),
                fire.row.get(name).cloned().unwrap_or(Value::Null),
            );
        }
        let key = serde_json::to_string(&entity).unwrap_or_default();
        let get = |c: &str| fire.row.get(c).and_then(Value::as_str).map(str::to_string);
        let b = groups.entry(key, || Builder {
            entity,
            session_id: get("session_id"),
            server_id: get("server_id"),
            first_ts: fire.first_ts,
            last_ts: fire.ts,
            event_ids: Vec::new(),
            match_count: 0,
            evidence: Vec::new(),
        });
        b.first_ts = b.first_ts.min(fire.first_ts);
        b.last_ts = b.last_ts.max(fire.ts);
        for id in &fire.event_ids {
            if !b.event_ids.contains(id) {
                b.event_ids.push(id.clone());
            }
        }
        b.match_count += 1;
        for ev in fire.prior_evidence.iter().chain(std::iter::once(&fire.row)) {
            if b.evidence.len() < MAX_EVIDENCE_ROWS {
                b.evidence.push(ev.clone());
            }
        }
    }
    Ok(groups
        .list
        .into_iter()
        .map(|(key, b)| {
            let first = b.event_ids.first().cloned().unwrap_or_default();
            let id = blake3::hash(format!("{}\n{}\n{}", cfg.id, key, first).as_bytes());
            Incident {
                incident_id: format!("inc-{}", &id.to_hex()[..24]),
                rule_id: cfg.id.clone(),
                rule_sha256: rule.rule.sha256.clone(),
                level: cfg.level,
                severity: cfg.severity,
                title: cfg.title.clone(),
                tags: cfg.tags.clone(),
                entity: b.entity,
                session_id: b.session_id,
                server_id: b.server_id,
                first_ts: micros_to_dt(b.first_ts),
                last_ts: micros_to_dt(b.last_ts),
                event_ids: b.event_ids,
                match_count: b.match_count,
                evidence: b.evidence,
                status: IncidentStatus::Open,
                detected_at,
                backfill: false,
            }
        })
        .collect())
}

pub fn micros_to_dt(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

fn nullable_str(col: &StringArray, i: usize) -> Option<String> {
    (!col.is_null(i)).then(|| col.value(i).to_string())
}

fn string_column(batch: &RecordBatch, i: usize) -> Result<StringArray, DetectError> {
    let arr = cast(batch.column(i), &DataType::Utf8).map_err(arrow_err)?;
    arr.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DetectError::InvalidValue("column is not a string".into()))
}

fn ts_column(batch: &RecordBatch, i: usize) -> Result<TimestampMicrosecondArray, DetectError> {
    let arr = cast(
        batch.column(i),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
    .map_err(arrow_err)?;
    arr.as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .cloned()
        .ok_or_else(|| DetectError::InvalidValue("ts is not a timestamp".into()))
}

fn arrow_err(e: arrow::error::ArrowError) -> DetectError {
    DetectError::InvalidValue(e.to_string())
}

/// Converts a batch into one JSON object per row (nulls omitted).
pub fn batch_to_json_rows(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, DetectError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        w.write(batch).map_err(arrow_err)?;
        w.finish().map_err(arrow_err)?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| DetectError::InvalidValue(e.to_string()))
}
