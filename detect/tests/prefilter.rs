//! The literal prefilter of `regexp_like` changes nothing but speed: the
//! shipped pack raises the same incidents, field for field, with it on and
//! off, over the real-SDK sample, the public corpus and two simulator seeds
//! (golden comparison, not counts); and it does skip rows.

use std::io::Read;
use std::path::PathBuf;

use dunes_detect::{Engine, load_dir};
use dunes_ingest::{IngestConfig, Normalizer};
use serde_json::Value;

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpora() -> Vec<(String, Vec<String>)> {
    let sample = std::fs::read_to_string(root().join("examples/corpus/mcp-sample.ndjson"))
        .expect("shipped sample");
    let mut public = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(root().join("examples/corpus/mcp-public.ndjson.gz"))
            .expect("public corpus"),
    )
    .read_to_string(&mut public)
    .expect("gunzip");
    let mut out = vec![
        (
            "sample".to_string(),
            sample.lines().map(str::to_owned).collect(),
        ),
        (
            "public".to_string(),
            public.lines().map(str::to_owned).collect(),
        ),
    ];
    for seed in [7, 101] {
        let sim = dunes_sim::SimConfig {
            sessions: 300,
            seed,
            ..dunes_sim::SimConfig::default()
        };
        out.push((
            format!("sim seed {seed}"),
            dunes_sim::Simulator::new(sim).collect(),
        ));
    }
    out
}

/// Every incident of `lines` (batches of 2048, one normaliser), as JSON
/// without the detection time.
async fn incidents(engine: &Engine, lines: &[String]) -> Vec<Value> {
    let mut norm = Normalizer::new(IngestConfig::default());
    let mut out = Vec::new();
    for chunk in lines.chunks(2048) {
        let b = norm.decode_batch(common::records(chunk)).expect("decodes");
        let det = common::detect_batch(engine, &b).await;
        for inc in det.incidents.iter().chain(&det.updates) {
            let mut v = serde_json::to_value(inc).expect("json");
            if let Some(m) = v.as_object_mut() {
                m.remove("detected_at");
            }
            out.push(v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefilter_on_and_off_raise_identical_incidents() {
    let pack = root().join("rules");
    for (name, lines) in corpora() {
        let on = Engine::new(load_dir(&pack).expect("pack"))
            .await
            .expect("plans");
        let off = Engine::new(load_dir(&pack).expect("pack"))
            .await
            .expect("plans");
        off.set_regex_prefilter(false);
        let with = incidents(&on, &lines).await;
        let without = incidents(&off, &lines).await;
        assert!(!with.is_empty(), "{name}: the pack raises incidents");
        assert_eq!(with.len(), without.len(), "{name}: incident count");
        for (a, b) in with.iter().zip(&without) {
            assert_eq!(a, b, "{name}");
        }
        let st = on.regex_prefilter_stats();
        eprintln!("{name}: {st:?}");
        assert!(
            st.rows_skipped > st.rows_run,
            "{name}: the prefilter lets most rows skip their regexes: {st:?}"
        );
        assert_eq!(
            off.regex_prefilter_stats(),
            dunes_detect::PrefilterStats::default(),
            "{name}: off is off"
        );
    }
}
