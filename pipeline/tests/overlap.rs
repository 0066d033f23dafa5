//! The driver writes batch N+1 (detection, ledger appends) while batch N's
//! ledger fsync runs, and releases N only then. Golden comparison: the
//! incidents are those of the same batches put through the stage one at a
//! time, field for field, including repeat matches (updates) of an
//! incident whose batch was still held.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dunes_detect::IncidentStore;
use dunes_ingest::RawRecord;
use dunes_pipeline::{Config, DriveOptions, Pipeline, drive};
use serde_json::Value;

mod common;

const BATCH: usize = 16;

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/mcp-sample.ndjson")
}

fn config(data_dir: &Path) -> Config {
    let mut cfg = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    cfg.ingest.batch_size = BATCH;
    cfg.ingest.files = vec![sample()];
    cfg
}

/// Every line of `incidents.ndjson` (a repeat match writes the incident
/// again), in order, without the detection's wall-clock time.
fn outcomes(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("incidents.ndjson")).expect("incidents");
    text.lines()
        .map(|line| {
            let mut v: Value = serde_json::from_str(line).expect("incident json");
            v.as_object_mut().expect("object").remove("detected_at");
            v
        })
        .collect()
}

#[test]
fn batches_written_during_an_earlier_fsync_raise_the_same_incidents() {
    common::run_with_room(scenario());
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tmp");

    // One batch at a time through the stage.
    let one = tmp.path().join("one");
    let cfg = config(&one);
    let mut pipeline = Pipeline::open(&cfg, Arc::new(IncidentStore::new()), None)
        .await
        .expect("open");
    let records: Vec<RawRecord> = dunes_ingest::source::open_file(sample(), 1 << 20)
        .expect("open the sample")
        .collect::<Result<_, _>>()
        .expect("read the sample");
    for chunk in records.chunks(BATCH) {
        pipeline.process(chunk.to_vec()).await.expect("process");
    }
    let (sequential, _) = pipeline.close().expect("close");
    assert_eq!(sequential.overlapped_syncs, 0);

    // The driver, with the decoder ahead of detection.
    let two = tmp.path().join("two");
    let out = drive(&config(&two), DriveOptions::replay())
        .await
        .expect("drive");
    assert_eq!(out.stats.envelopes, sequential.envelopes);
    assert!(
        out.stats.overlapped_syncs > 0,
        "no fsync overlapped a later batch in {} batches",
        out.stats.batches
    );

    let (want, got) = (outcomes(&one), outcomes(&two));
    assert!(
        want.len() > 20,
        "the sample raises incidents: {}",
        want.len()
    );
    let ids: BTreeSet<&str> = want
        .iter()
        .map(|v| v["incident_id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.len() < want.len(),
        "some incident matched again in a later batch"
    );
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g);
    }
    let report = dunes_ledger::verify_dir(&two).expect("verify");
    assert!(report.first_failure.is_none(), "{:?}", report.first_failure);
}
