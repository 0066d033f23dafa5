//! One batch through the stage alone (no driver): everything it reports is
//! in the ledger and the outputs, and the Prometheus counters count each
//! incident once. Its own test binary: the metrics recorder is global.

use std::sync::Arc;

use dunes_detect::IncidentStore;
use dunes_ingest::RawRecord;
use dunes_pipeline::{Config, Pipeline};

fn corpus() -> Vec<RawRecord> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/corpus/mcp-sample.ndjson"
    );
    dunes_ingest::source::open_file(path, 1 << 20)
        .expect("open the shipped sample")
        .collect::<Result<Vec<_>, _>>()
        .expect("read the shipped sample")
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_ledgered_and_each_incident_counted_once() {
    let prom = dunes_api::prometheus().expect("the test installs the only recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let store = Arc::new(IncidentStore::new());
    let mut pipeline = Pipeline::open(&cfg, store.clone(), None)
        .await
        .expect("open");
    let records = corpus();
    let n = records.len() as u64;
    let out = pipeline.process(records).await.expect("process");
    assert_eq!(out.accepted + out.rejected, n);
    assert!(!out.incidents.is_empty(), "the sample holds attacks");

    let text = prom.render();
    assert_eq!(
        counter(&text, "dunes_incidents_total"),
        out.incidents.len() as u64,
        "{text}"
    );
    assert_eq!(counter(&text, "dunes_events_accepted_total"), out.accepted);

    // What was reported is durable: one incidents.ndjson line per incident,
    // and every incident id in the ledger.
    let (stats, cp) = pipeline.close().expect("close");
    assert_eq!(stats.incidents, out.incidents.len() as u64);
    assert!(cp.is_some(), "a final signed checkpoint");
    let lines = std::fs::read_to_string(cfg.data_dir.join("incidents.ndjson")).expect("read");
    let written: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["incident_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    let reported: Vec<String> = out
        .incidents
        .iter()
        .map(|i| i.incident_id.clone())
        .collect();
    assert_eq!(written, reported);
    let mut ledgered = Vec::new();
    dunes_ledger::for_each_record(&cfg.data_dir, 0, |r| {
        if r.kind == dunes_ledger::RecordKind::Incident {
            let v: serde_json::Value = serde_json::from_slice(r.payload).expect("json");
            ledgered.push(v["incident_id"].as_str().expect("id").to_string());
        }
    })
    .expect("read the ledger");
    assert_eq!(ledgered, reported);
}
