//! Incidents: matches of one rule grouped by the affected entity.

use std::collections::BTreeMap;

use arrow::array::{
    Array, ArrowPrimitiveType, AsArray, BooleanArray, Float64Array, GenericListArray,
    OffsetSizeTrait, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::datatypes::{
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
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
    /// Distinct, in first-seen order ([`Builder::add_event`]).
    event_ids: Vec<String>,
    /// Where each of `event_ids` is.
    ids: EventIndex,
    match_count: u64,
    evidence: Vec<Map<String, Value>>,
}

/// Positions in a builder's `event_ids`, found by the id: an entity with
/// many matching rows in a batch (a flood) adds each id in constant time,
/// not by a scan of the ids before it.
#[derive(Default)]
struct EventIndex {
    table: hashbrown::HashTable<usize>,
    hasher: foldhash::fast::RandomState,
}

impl Builder {
    fn new(
        entity: BTreeMap<String, Value>,
        session_id: Option<String>,
        server_id: Option<String>,
        first_ts: i64,
        last_ts: i64,
    ) -> Self {
        Builder {
            entity,
            session_id,
            server_id,
            first_ts,
            last_ts,
            event_ids: Vec::new(),
            ids: EventIndex::default(),
            match_count: 0,
            evidence: Vec::new(),
        }
    }

    /// Adds an event id unless the incident has it.
    fn add_event(&mut self, id: &str) {
        use std::hash::BuildHasher;
        let index = &mut self.ids;
        let hash = index.hasher.hash_one(id);
        let ids = &self.event_ids;
        if index.table.find(hash, |&i| ids[i] == id).is_some() {
            return;
        }
        self.event_ids.push(id.to_owned());
        let (ids, hasher) = (&self.event_ids, &index.hasher);
        index
            .table
            .insert_unique(hash, ids.len() - 1, |&i| hasher.hash_one(&ids[i]));
    }
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
        let ex = crate::engine::Exceptions::of(rule, batch);
        for (row_idx, row) in rows.into_iter().enumerate() {
            if ex.excepted(row_idx) {
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
            let b = groups.entry(key, || {
                Builder::new(
                    entity,
                    session.as_ref().and_then(|c| nullable_str(c, row_idx)),
                    server.as_ref().and_then(|c| nullable_str(c, row_idx)),
                    t,
                    t,
                )
            });
            b.first_ts = b.first_ts.min(t);
            b.last_ts = b.last_ts.max(t);
            b.add_event(&eid);
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
        let b = groups.entry(key, || {
            Builder::new(
                entity,
                get("session_id"),
                get("server_id"),
                fire.first_ts,
                fire.ts,
            )
        });
        b.first_ts = b.first_ts.min(fire.first_ts);
        b.last_ts = b.last_ts.max(fire.ts);
        for id in &fire.event_ids {
            b.add_event(id);
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

/// Converts a batch into one JSON object per row (nulls omitted), built
/// straight from the arrays: the values arrow's JSON writer would write
/// (same numbers, strings, lists, temporal texts), without the text round
/// trip. A column of another type (structs, maps, dictionaries, binary,
/// decimals, 16/32-bit floats) sends the batch through that writer.
pub fn batch_to_json_rows(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, DetectError> {
    let mut rows = JsonRows::new(batch)?;
    Ok((0..batch.num_rows()).map(|i| rows.row(i)).collect())
}

/// The rows of one batch as JSON objects, made one at a time (see
/// [`batch_to_json_rows`]).
pub(crate) enum JsonRows<'a> {
    Direct(Vec<(&'a str, &'a dyn Array, JsonColumn<'a>)>),
    /// Through the JSON writer (a type [`JsonColumn`] does not encode).
    Written(Vec<Map<String, Value>>),
}

impl<'a> JsonRows<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Result<Self, DetectError> {
        let mut cols = Vec::with_capacity(batch.num_columns());
        for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            if array.data_type() == &DataType::Null {
                continue; // all null: omitted (its arrays have no validity buffer)
            }
            match JsonColumn::new(array.as_ref())? {
                Some(c) => cols.push((field.name().as_str(), array.as_ref(), c)),
                None => return Ok(JsonRows::Written(rows_via_json_writer(batch)?)),
            }
        }
        Ok(JsonRows::Direct(cols))
    }

    /// Row `i` (of the written rows, taken: each row is asked for once).
    pub(crate) fn row(&mut self, i: usize) -> Map<String, Value> {
        match self {
            JsonRows::Direct(cols) => {
                let mut row = Map::with_capacity(cols.len());
                for (name, array, col) in cols.iter() {
                    if !array.is_null(i) {
                        row.insert((*name).to_string(), col.value(i));
                    }
                }
                row
            }
            JsonRows::Written(rows) => rows.get_mut(i).map(std::mem::take).unwrap_or_default(),
        }
    }
}

/// [`batch_to_json_rows`] through arrow's JSON writer and back.
fn rows_via_json_writer(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, DetectError> {
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

/// One column's values as JSON, as arrow's JSON writer encodes them.
pub(crate) enum JsonColumn<'a> {
    Null,
    Bool(&'a BooleanArray),
    Int(Box<dyn Fn(usize) -> i64 + 'a>),
    UInt(&'a UInt64Array),
    Float(&'a Float64Array),
    Str(Box<dyn Fn(usize) -> &'a str + 'a>),
    /// Dates, times, timestamps, durations, intervals: their display text.
    Temporal(ArrayFormatter<'a>),
    List {
        offsets: Vec<usize>,
        values: &'a dyn Array,
        items: Box<JsonColumn<'a>>,
    },
}

impl<'a> JsonColumn<'a> {
    /// `None` for a type this does not encode.
    fn new(a: &'a dyn Array) -> Result<Option<Self>, DetectError> {
        Ok(Some(match a.data_type() {
            DataType::Null => JsonColumn::Null,
            DataType::Boolean => JsonColumn::Bool(a.as_boolean()),
            DataType::Int8 => int(a.as_primitive::<Int8Type>()),
            DataType::Int16 => int(a.as_primitive::<Int16Type>()),
            DataType::Int32 => int(a.as_primitive::<Int32Type>()),
            DataType::Int64 => int(a.as_primitive::<Int64Type>()),
            DataType::UInt8 => int(a.as_primitive::<UInt8Type>()),
            DataType::UInt16 => int(a.as_primitive::<UInt16Type>()),
            DataType::UInt32 => int(a.as_primitive::<UInt32Type>()),
            DataType::UInt64 => JsonColumn::UInt(a.as_primitive::<UInt64Type>()),
            DataType::Float64 => JsonColumn::Float(a.as_primitive::<Float64Type>()),
            DataType::Utf8 => {
                let s = a.as_string::<i32>();
                JsonColumn::Str(Box::new(move |i| s.value(i)))
            }
            DataType::LargeUtf8 => {
                let s = a.as_string::<i64>();
                JsonColumn::Str(Box::new(move |i| s.value(i)))
            }
            DataType::Utf8View => {
                let s = a.as_string_view();
                JsonColumn::Str(Box::new(move |i| s.value(i)))
            }
            DataType::List(_) => return list(a.as_list::<i32>()),
            DataType::LargeList(_) => return list(a.as_list::<i64>()),
            d if d.is_temporal() => {
                let opts = FormatOptions::new().with_display_error(true);
                JsonColumn::Temporal(ArrayFormatter::try_new(a, &opts).map_err(arrow_err)?)
            }
            _ => return Ok(None),
        }))
    }

    /// Row `i`, not null.
    fn value(&self, i: usize) -> Value {
        match self {
            JsonColumn::Null => Value::Null,
            JsonColumn::Bool(a) => Value::Bool(a.value(i)),
            JsonColumn::Int(f) => Value::from(f(i)),
            JsonColumn::UInt(a) => Value::from(a.value(i)),
            // Non-finite floats are written as `null`, as `Value::from` makes them.
            JsonColumn::Float(a) => Value::from(a.value(i)),
            JsonColumn::Str(f) => Value::String(f(i).to_string()),
            JsonColumn::Temporal(f) => Value::String(f.value(i).to_string()),
            JsonColumn::List {
                offsets,
                values,
                items,
            } => Value::Array(
                (offsets[i]..offsets[i + 1])
                    .map(|j| {
                        if values.is_null(j) {
                            Value::Null
                        } else {
                            items.value(j)
                        }
                    })
                    .collect(),
            ),
        }
    }
}

fn int<'a, T>(a: &'a arrow::array::PrimitiveArray<T>) -> JsonColumn<'a>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    JsonColumn::Int(Box::new(move |i| a.value(i).into()))
}

fn list<'a, O: OffsetSizeTrait>(
    a: &'a GenericListArray<O>,
) -> Result<Option<JsonColumn<'a>>, DetectError> {
    let values = a.values().as_ref();
    let Some(items) = JsonColumn::new(values)? else {
        return Ok(None);
    };
    Ok(Some(JsonColumn::List {
        offsets: a.value_offsets().iter().map(|o| o.as_usize()).collect(),
        values,
        items: Box::new(items),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, DurationMillisecondArray, Float32Array, Float64Array,
        Int8Array, Int32Array, Int64Array, LargeListArray, LargeStringArray, ListArray, NullArray,
        StringArray, StringViewArray, StructArray, TimestampMicrosecondArray,
        TimestampMillisecondArray, UInt16Array, UInt64Array,
    };
    use arrow::datatypes::{Field, Int64Type};

    use super::*;

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols.into_iter().map(|(n, a)| (n.to_string(), a)))
            .expect("batch")
    }

    fn assert_like_writer(b: &RecordBatch) {
        let want = rows_via_json_writer(b).expect("writer");
        let got = batch_to_json_rows(b).expect("direct");
        assert_eq!(got, want);
        // Key order too (maps keep insertion order).
        let text = |r: &[Map<String, Value>]| serde_json::to_string(r).expect("json");
        assert_eq!(text(&got), text(&want));
    }

    proptest::proptest! {
        /// An incident's event ids are each id once, in first-seen order,
        /// however many times and in whatever order the matches bring them.
        #[test]
        fn event_ids_are_distinct_in_first_seen_order(
            ids in proptest::collection::vec(0u16..300, 0..2000),
        ) {
            let mut b = Builder::new(BTreeMap::new(), None, None, 0, 0);
            let mut want: Vec<String> = Vec::new();
            for id in &ids {
                let id = format!("e{id}");
                b.add_event(&id);
                if !want.contains(&id) {
                    want.push(id);
                }
            }
            proptest::prop_assert_eq!(b.event_ids, want);
        }
    }

    #[test]
    fn rows_are_what_the_json_writer_writes() {
        let b = batch(vec![
            (
                "event_id",
                Arc::new(StringArray::from(vec![
                    Some("e1"),
                    None,
                    Some("é\"\\\n\u{1}"),
                    Some(""),
                ])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(1_763_624_223_360_123),
                        Some(0),
                        None,
                        Some(-1),
                    ])
                    .with_timezone("UTC"),
                ),
            ),
            (
                "ts_naive",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_763_624_223_360),
                    None,
                    Some(5),
                    Some(-86_400_001),
                ])),
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![
                    Some(20_000),
                    None,
                    Some(0),
                    Some(-3),
                ])),
            ),
            (
                "took",
                Arc::new(DurationMillisecondArray::from(vec![
                    Some(1500),
                    Some(-2),
                    None,
                    Some(0),
                ])),
            ),
            (
                "n8",
                Arc::new(Int8Array::from(vec![Some(-128), Some(0), Some(127), None])),
            ),
            (
                "n32",
                Arc::new(Int32Array::from(vec![
                    Some(-5),
                    None,
                    Some(i32::MAX),
                    Some(0),
                ])),
            ),
            (
                "n64",
                Arc::new(Int64Array::from(vec![
                    Some(i64::MIN),
                    Some(i64::MAX),
                    None,
                    Some(42),
                ])),
            ),
            (
                "u16",
                Arc::new(UInt16Array::from(vec![
                    Some(65_535),
                    None,
                    Some(0),
                    Some(7),
                ])),
            ),
            (
                "u64",
                Arc::new(UInt64Array::from(vec![
                    Some(u64::MAX),
                    Some(1),
                    None,
                    Some(0),
                ])),
            ),
            (
                "f64",
                Arc::new(Float64Array::from(vec![
                    Some(0.1),
                    Some(f64::NAN),
                    Some(3.0),
                    Some(-1e300),
                ])),
            ),
            (
                "inf",
                Arc::new(Float64Array::from(vec![
                    Some(f64::INFINITY),
                    None,
                    Some(2.5e-8),
                    Some(-0.0),
                ])),
            ),
            (
                "flag",
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                    Some(true),
                ])),
            ),
            (
                "big",
                Arc::new(LargeStringArray::from(vec![
                    None,
                    Some("x"),
                    Some("y"),
                    None,
                ])),
            ),
            (
                "view",
                Arc::new(StringViewArray::from(vec![
                    Some("a string longer than twelve bytes"),
                    None,
                    Some("s"),
                    Some(""),
                ])),
            ),
            ("nothing", Arc::new(NullArray::new(4))),
            (
                "hosts",
                Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
                    Some(vec![Some(1), None, Some(3)]),
                    None,
                    Some(vec![]),
                    Some(vec![Some(-4)]),
                ])),
            ),
            (
                "langs",
                Arc::new(LargeListArray::from_iter_primitive::<Int64Type, _, _>(
                    vec![None, Some(vec![Some(7)]), Some(vec![None]), Some(vec![])],
                )),
            ),
        ]);
        assert_like_writer(&b);
        // Slices keep their offsets (a one-row slice builds a firing row's evidence).
        for i in 0..b.num_rows() {
            assert_like_writer(&b.slice(i, 1));
        }
        assert!(
            batch_to_json_rows(&b.slice(0, 0))
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn lists_of_strings_and_types_it_does_not_encode_match_the_writer() {
        let mut lb = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
        lb.values().append_value("public");
        lb.values().append_null();
        lb.append(true);
        lb.append(false);
        lb.values().append_value("internal");
        lb.append(true);
        let list = Arc::new(lb.finish()) as ArrayRef;
        assert_like_writer(&batch(vec![
            ("classes", list.clone()),
            ("id", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
        ]));
        // A float32 and a struct go through the writer: same rows either way.
        let s = StructArray::from(vec![(
            Arc::new(Field::new("k", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
        )]);
        let odd = batch(vec![
            ("classes", list),
            (
                "score",
                Arc::new(Float32Array::from(vec![Some(0.1), None, Some(1.5)])),
            ),
            ("s", Arc::new(s)),
        ]);
        assert!(
            JsonColumn::new(odd.column(1).as_ref())
                .expect("f32")
                .is_none()
        );
        assert_like_writer(&odd);
    }
}
