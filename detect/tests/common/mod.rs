//! Helpers shared by the detect integration tests.

use dunes_ingest::{DecodedBatch, IngestConfig, Normalizer, RawRecord, SourcePos};

/// Normalises envelope lines (one batch, fresh normaliser).
pub fn batch<S: AsRef<str>>(lines: &[S]) -> DecodedBatch {
    let records = lines
        .iter()
        .enumerate()
        .map(|(i, l)| RawRecord {
            bytes: l.as_ref().as_bytes().to_vec(),
            source: SourcePos::File {
                path: "t".into(),
                line: i as u64 + 1,
            },
            oversize: None,
        })
        .collect();
    Normalizer::new(IngestConfig::default())
        .decode_batch(records)
        .expect("decodes")
}
