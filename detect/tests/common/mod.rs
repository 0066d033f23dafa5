//! Helpers shared by the detect integration tests (each test file uses
//! some of them).
#![allow(dead_code)]

use dunes_ingest::{DecodedBatch, IngestConfig, Normalizer, RawRecord};

/// Envelope lines as raw records (positions `t:1…`).
pub fn records<S: AsRef<str>>(lines: &[S]) -> Vec<RawRecord> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawRecord::file_line(l.as_ref().as_bytes().to_vec(), "t", i as u64 + 1))
        .collect()
}

/// Normalises envelope lines (one batch, fresh normaliser).
pub fn batch<S: AsRef<str>>(lines: &[S]) -> DecodedBatch {
    Normalizer::new(IngestConfig::default())
        .decode_batch(records(lines))
        .expect("decodes")
}

/// The shipped pack's detection of one decoded batch (default responses,
/// detected now).
pub async fn detect_batch(
    engine: &dunes_detect::Engine,
    b: &DecodedBatch,
) -> dunes_detect::Detection {
    dunes_detect::detect(
        engine,
        b.tables(),
        chrono::Utc::now(),
        &dunes_detect::ResponseConfig::default(),
    )
    .await
    .expect("detects")
}
