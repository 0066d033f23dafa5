//! The literal prefilter of `regexp_like` changes nothing but speed: the
//! shipped pack raises the same incidents, field for field, with it on and
//! off, over the real-SDK sample, the public corpus and two simulator seeds
//! (golden comparison, not counts); and it does skip rows. Likewise for
//! starting a batch's plans before the previous batch is finished (as the
//! pipeline does): the same incidents as one batch after the other.

use std::io::Read;
use std::path::PathBuf;

use dunes_detect::{Engine, ResponseConfig, detect_with_anomaly, load_dir};
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
        push_json(&common::detect_batch(engine, &b).await, &mut out);
    }
    out
}

/// A batch's incidents and updates as JSON, without the detection time.
fn push_json(det: &dunes_detect::Detection, out: &mut Vec<Value>) {
    for inc in det.incidents.iter().chain(&det.updates) {
        let mut v = serde_json::to_value(inc).expect("json");
        if let Some(m) = v.as_object_mut() {
            m.remove("detected_at");
        }
        out.push(v);
    }
}

async fn pack_engine() -> Engine {
    Engine::new(load_dir(&root().join("rules")).expect("pack"))
        .await
        .expect("plans")
}

/// Field-for-field equality of two runs' incidents.
fn assert_same(name: &str, got: &[Value], want: &[Value]) {
    assert!(!want.is_empty(), "{name}: the pack raises incidents");
    assert_eq!(got.len(), want.len(), "{name}: incident count");
    for (a, b) in got.iter().zip(want) {
        assert_eq!(a, b, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefilter_on_and_off_raise_identical_incidents() {
    for (name, lines) in corpora() {
        let on = pack_engine().await;
        let off = pack_engine().await;
        off.set_regex_prefilter(false);
        let with = incidents(&on, &lines).await;
        let without = incidents(&off, &lines).await;
        assert_same(&name, &with, &without);
        let st = on.regex_prefilter_stats();
        eprintln!("{name}: {st:?}");
        assert!(
            st.rows_skipped > st.rows_run,
            "{name}: the prefilter lets most rows skip their regexes: {st:?}"
        );
        assert!(
            st.rows_copied > 0,
            "{name}: rows equal to one scanned before take its hits: {st:?}"
        );
        let off = off.regex_prefilter_stats();
        assert_eq!(
            off,
            dunes_detect::PrefilterStats {
                patterns: off.patterns,
                ..dunes_detect::PrefilterStats::default()
            },
            "{name}: off is off"
        );
    }
}

/// The engine registers every literal `regexp_like` pattern of the pack
/// when it plans the rules: no pattern is added by a rule's first call, so
/// the automaton is built once (before, each rule's first call added its
/// patterns and the next scan rebuilt it).
#[tokio::test]
async fn the_packs_patterns_are_known_before_the_first_batch_and_one_automaton_serves_them() {
    let engine = pack_engine().await;
    let before = engine.regex_prefilter_stats();
    assert!(before.patterns >= 20, "{before:?}");
    assert_eq!(before.automata_built, 0, "nothing scanned yet");
    let sample = std::fs::read_to_string(root().join("examples/corpus/mcp-sample.ndjson"))
        .expect("shipped sample");
    let lines: Vec<String> = sample.lines().map(str::to_owned).collect();
    assert!(!incidents(&engine, &lines).await.is_empty());
    let after = engine.regex_prefilter_stats();
    assert!(after.scans > 1, "{after:?}");
    assert_eq!(
        after.patterns, before.patterns,
        "a pattern was missed at plan time"
    );
    assert_eq!(after.automata_built, 1, "{after:?}");
}

/// [`incidents`], with each batch's plans started before the previous batch
/// is finished (two batches' plans run at once).
async fn incidents_overlapped(engine: &Engine, lines: &[String]) -> Vec<Value> {
    let mut norm = Normalizer::new(IngestConfig::default());
    let batches: Vec<_> = lines
        .chunks(2048)
        .map(|c| norm.decode_batch(common::records(c)).expect("decodes"))
        .collect();
    let cfg = ResponseConfig::default();
    let mut out = Vec::new();
    let mut previous: Option<(&dunes_ingest::DecodedBatch, dunes_detect::BatchPlans)> = None;
    for b in batches.iter().map(Some).chain([None]) {
        let started = b.map(|b| (b, engine.start(b.tables())));
        if let Some((prev, plans)) = previous.take() {
            let (det, _) =
                detect_with_anomaly(engine, plans, None, prev.tables(), chrono::Utc::now(), &cfg)
                    .await
                    .expect("detects");
            push_json(&det, &mut out);
        }
        previous = started;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_started_a_batch_early_raise_identical_incidents() {
    for (name, lines) in corpora() {
        let want = incidents(&pack_engine().await, &lines).await;
        let got = incidents_overlapped(&pack_engine().await, &lines).await;
        assert_same(&name, &got, &want);
    }
}
