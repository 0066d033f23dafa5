#![allow(dead_code)]
//! Helpers shared by the integration tests.

use arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray,
};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord};

pub fn rec(line: &str, n: u64) -> RawRecord {
    RawRecord::file_line(line.as_bytes().to_vec(), "t.ndjson", n)
}

pub fn decode(lines: &[&str]) -> dunes_ingest::DecodedBatch {
    let mut n = Normalizer::new(IngestConfig::default());
    let recs = lines
        .iter()
        .enumerate()
        .map(|(i, l)| rec(l, i as u64 + 1))
        .collect();
    n.decode_batch(recs).expect("decode")
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a dyn Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_ref()
}

pub fn s(b: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let a = col(b, name)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap_or_else(|| panic!("{name} not Utf8"));
    a.is_valid(row).then(|| a.value(row).to_owned())
}

pub fn i64v(b: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    let a = col(b, name)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("i64");
    a.is_valid(row).then(|| a.value(row))
}

pub fn i32v(b: &RecordBatch, name: &str, row: usize) -> Option<i32> {
    let a = col(b, name)
        .as_any()
        .downcast_ref::<Int32Array>()
        .expect("i32");
    a.is_valid(row).then(|| a.value(row))
}

pub fn f64v(b: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    let a = col(b, name)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    a.is_valid(row).then(|| a.value(row))
}

pub fn boolv(b: &RecordBatch, name: &str, row: usize) -> Option<bool> {
    let a = col(b, name)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool");
    a.is_valid(row).then(|| a.value(row))
}

pub fn list(b: &RecordBatch, name: &str, row: usize) -> Option<Vec<String>> {
    let a = col(b, name)
        .as_any()
        .downcast_ref::<ListArray>()
        .expect("list");
    if !a.is_valid(row) {
        return None;
    }
    let v = a.value(row);
    let sa = v.as_string::<i32>();
    Some((0..sa.len()).map(|i| sa.value(i).to_owned()).collect())
}

/// Row index whose `event_id` is `id` (first match).
pub fn row_of(b: &RecordBatch, id: &str) -> usize {
    (0..b.num_rows())
        .find(|&r| s(b, "event_id", r).as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no row {id}"))
}
