//! Every shipped rule parses, plans, and passes its inline tests.

use std::path::PathBuf;

use dunes_detect::{Engine, Level, load_dir, testing::run_inline_tests};

fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_rules_pass_their_inline_tests() {
    let rules = load_dir(&pack_dir()).expect("rule pack loads");
    assert!(rules.len() >= 10, "only {} rules shipped", rules.len());
    for level in [Level::Automated, Level::Analyst, Level::Emergency] {
        assert!(
            rules.iter().any(|r| r.config.level == level),
            "no rule at level {level:?}"
        );
    }
    for r in &rules {
        let t = &r.config.tests;
        assert!(
            t.iter().any(|t| t.expect > 0),
            "{}: no positive test",
            r.config.id
        );
        assert!(
            t.iter().any(|t| t.expect == 0),
            "{}: no negative test",
            r.config.id
        );
    }
    let engine = Engine::new(rules).await.expect("rule pack plans");
    let outcomes = run_inline_tests(&engine).await;
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} inline rule tests failed:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
}

mod common;

/// The shipped real-SDK sample, one envelope per line.
fn sample_lines() -> Vec<String> {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/mcp-sample.ndjson"),
    )
    .expect("shipped sample")
    .lines()
    .map(str::to_owned)
    .collect()
}

async fn pack_engine() -> Engine {
    Engine::new(load_dir(&pack_dir()).expect("pack"))
        .await
        .expect("plans")
}

/// The state the pipeline saves after every batch (`snapshot_json`, encoded
/// from the live maps) is the JSON of the copied `EngineState`, and restores
/// into an engine that saves the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saved_state_is_the_engine_state_json_and_restores() {
    let lines = sample_lines();
    let engine = pack_engine().await;
    for chunk in lines.chunks(500) {
        common::detect_batch(&engine, &common::batch(chunk)).await;
    }
    let copied = engine.snapshot();
    assert!(
        copied.rules.len() >= 5,
        "stateful rules hold state: {:?}",
        copied.rules.keys()
    );
    let saved = engine.snapshot_json(None).expect("encodes");
    // As JSON values: maps compare whatever their key order.
    let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("json");
    assert_eq!(
        value(&saved),
        serde_json::to_value(&copied).expect("encodes")
    );

    let fresh = pack_engine().await;
    let restored = fresh.restore(serde_json::from_slice(&saved).expect("decodes"));
    assert_eq!(restored.len(), copied.rules.len());
    assert_eq!(
        value(&fresh.snapshot_json(None).expect("encodes")),
        value(&saved)
    );
}

/// The incremental journal: a snapshot taken part-way, then one delta per
/// batch (`delta_json`, only the keys that changed), applied in order to the
/// snapshot, gives exactly the live state at the end — windows, sequences,
/// baselines, counters, open suppression windows and fingerprints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_plus_the_journaled_deltas_is_the_live_state() {
    let lines = sample_lines();
    let engine = pack_engine().await;
    let detect = |chunk: &[String]| {
        let b = common::batch(chunk);
        let engine = &engine;
        async move { common::detect_batch(engine, &b).await.incidents.len() }
    };
    let (head, tail) = lines.split_at(lines.len() / 3);
    for chunk in head.chunks(97) {
        detect(chunk).await;
    }
    let mut state: dunes_detect::EngineState =
        serde_json::from_slice(&engine.snapshot_json(Some(1)).expect("encodes")).expect("decodes");
    assert_eq!(state.position, Some(1));
    let (mut deltas, mut incidents) = (0, 0);
    let (mut journaled, mut snapshotted) = (0, 0);
    for (i, chunk) in tail.chunks(41).enumerate() {
        incidents += detect(chunk).await;
        // What saving the whole state after this batch would write.
        snapshotted += serde_json::to_vec(&engine.snapshot())
            .expect("encodes")
            .len();
        let bytes = engine.delta_json(2 + i as u64).expect("encodes");
        journaled += bytes.len();
        let delta: dunes_detect::engine::EngineDelta =
            serde_json::from_slice(&bytes).expect("decodes");
        state.apply(delta);
        deltas += 1;
    }
    assert!(
        deltas > 10 && incidents > 0,
        "{deltas} deltas, {incidents} incidents"
    );
    let live: serde_json::Value =
        serde_json::from_slice(&engine.snapshot_json(Some(1 + deltas)).expect("encodes"))
            .expect("json");
    assert_eq!(serde_json::to_value(&state).expect("encodes"), live);
    // A delta carries what changed, not the whole state: the journal writes
    // a fraction of what a snapshot per batch would.
    assert!(
        journaled * 2 < snapshotted,
        "journal {journaled} bytes vs a snapshot per batch {snapshotted} bytes"
    );
    eprintln!("journal {journaled} bytes vs a snapshot per batch {snapshotted} bytes");
}
