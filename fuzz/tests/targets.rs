//! Every fuzz target over its committed corpus and over random inputs: the short CI run of
//! the harnesses that `scripts/fuzz.sh` runs under cargo-afl for long campaigns.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_target_runs_its_corpus() {
    for (name, f) in dunes_fuzz::TARGETS {
        let files = corpus(name);
        assert!(!files.is_empty(), "{name}: no corpus");
        for p in files {
            f(&std::fs::read(&p).expect("read"));
        }
    }
}

#[test]
fn ledger_seeds_are_real_ledgers_that_verify() {
    // The seeds are the committed test vectors that verify (data dirs and bundles): the
    // container format round-trips them.
    let mut accepted = 0;
    for p in corpus("ledger_files") {
        let bytes = std::fs::read(&p).expect("read");
        let d = tempfile::tempdir().expect("tmp");
        for (id, b) in dunes_fuzz::split_files(&bytes) {
            let f = d.path().join(dunes_fuzz::ledger_file_name(id));
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            let mut all = std::fs::read(&f).unwrap_or_default();
            all.extend_from_slice(b);
            std::fs::write(&f, all).expect("write");
        }
        std::fs::create_dir_all(d.path().join("ledger")).expect("mkdir");
        if dunes_ledger::verify_path(d.path()).is_ok_and(|r| r.is_ok()) {
            accepted += 1;
        }
    }
    assert!(accepted >= 3, "only {accepted} seeds verify");
}

#[test]
fn api_query_seeds_reach_the_handlers() {
    // Golden statuses: the fixture's token, rate limits and ledger let every route's
    // handler run, so the campaign fuzzes query parsing, not a 401 or 429.
    let mut got = Vec::new();
    for p in corpus("api_query") {
        let (route, _, status) =
            dunes_fuzz::api_query_status(&std::fs::read(&p).expect("read")).expect("fixture");
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        got.push(format!("{name} {route} {status}"));
    }
    let want = [
        "seed-consistency /api/v1/ledger/proof/consistency 200",
        "seed-dead-letters /api/v1/outputs/webhooks/main/dead-letters 404",
        "seed-export /api/v1/ledger/export 200",
        "seed-incidents /api/v1/incidents 200",
        "seed-incidents-bad /api/v1/incidents 400",
        "seed-inclusion /api/v1/ledger/proof/inclusion 200",
        "seed-inclusion-encoded /api/v1/ledger/proof/inclusion 400",
        "seed-ingest /v1/ingest 202",
        "seed-stream /api/v1/incidents/stream 200",
    ];
    assert_eq!(got, want);
}

/// `DUNES_WRITE_SEEDS=1 cargo test -p dunes-fuzz --test targets -- --ignored write_seeds`:
/// (re)writes `corpus/ledger_files/seed-*` from `ledger/tests/vectors`.
#[test]
#[ignore]
fn write_seeds() {
    if std::env::var_os("DUNES_WRITE_SEEDS").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vectors = root.join("../ledger/tests/vectors");
    let out = root.join("corpus/ledger_files");
    std::fs::create_dir_all(&out).expect("mkdir");
    for name in [
        "valid-dir",
        "valid-pruned-dir",
        "valid-bundle-3-9",
        "valid-pruned-evidence",
        "valid-evidence",
        "fork",
        "unsigned-redaction",
    ] {
        let dir = vectors.join(name);
        let mut files = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(&dir)
                    .expect("rel")
                    .to_string_lossy()
                    .replace('\\', "/");
                let id = dunes_fuzz::ledger_file_id(&rel)
                    .unwrap_or_else(|| panic!("{name}: no id for {rel}"));
                files.push((id, std::fs::read(&p).expect("read")));
            }
        }
        files.sort();
        std::fs::write(
            out.join(format!("seed-{name}")),
            dunes_fuzz::join_files(&files),
        )
        .expect("write");
    }
}

/// The committed `seed-*` files of `target` (not the regression inputs).
fn seeds(target: &str) -> Vec<PathBuf> {
    corpus(target)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .collect()
}

/// The OTLP and gateway seeds are real inputs: each maps to at least one envelope
/// record (not all refused), so a campaign starts past the parsers' front doors.
#[test]
fn otlp_and_gateway_seeds_map_to_envelopes() {
    let otlp = seeds("otlp");
    assert!(otlp.len() >= 6, "JSON and protobuf seeds of both signals");
    for p in otlp {
        let b = std::fs::read(&p).expect("read");
        let (signal, enc) = dunes_fuzz::otlp_kind(b[0]);
        let m = dunes_ingest::otlp::map_request(signal, enc, &b[1..], "seed")
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            m.records.iter().any(|r| r.refused.is_none()),
            "{}: no envelope",
            p.display()
        );
    }
    for p in seeds("gateway") {
        let b = std::fs::read(&p).expect("read");
        let out = dunes_ingest::gateway::adapt_records(
            dunes_fuzz::gateway_format(b[0]),
            dunes_fuzz::lines(&b[1..]),
        );
        assert!(
            out.iter().any(|r| r.refused.is_none()),
            "{}: no envelope",
            p.display()
        );
    }
}

/// `DUNES_WRITE_SEEDS=1 cargo test -p dunes-fuzz --test targets -- --ignored write_otlp_seeds`:
/// (re)writes the protobuf OTLP seeds from the JSON ones (`seed-*-json` →
/// `seed-*-protobuf`, selector bit 1 set).
#[test]
#[ignore]
fn write_otlp_seeds() {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest,
    };
    use prost::Message;
    if std::env::var_os("DUNES_WRITE_SEEDS").is_none() {
        return;
    }
    for p in corpus("otlp") {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_suffix("-json")
            .filter(|n| n.starts_with("seed-"))
        else {
            continue;
        };
        let b = std::fs::read(&p).expect("read");
        let pb = match dunes_fuzz::otlp_kind(b[0]).0 {
            dunes_ingest::otlp::Signal::Traces => {
                serde_json::from_slice::<ExportTraceServiceRequest>(&b[1..])
                    .expect("traces")
                    .encode_to_vec()
            }
            dunes_ingest::otlp::Signal::Logs => {
                serde_json::from_slice::<ExportLogsServiceRequest>(&b[1..])
                    .expect("logs")
                    .encode_to_vec()
            }
        };
        let mut out = vec![b[0] | 2];
        out.extend(pb);
        std::fs::write(p.with_file_name(format!("{stem}-protobuf")), out).expect("write");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_never_panic(target in 0..dunes_fuzz::TARGETS.len(), data in prop::collection::vec(any::<u8>(), 0..2048)) {
        (dunes_fuzz::TARGETS[target].1)(&data);
    }

    /// Random splices of a real ledger seed: structure survives, so the verifier goes deep.
    #[test]
    fn mutated_ledger_seeds_never_panic(seed in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), junk in prop::collection::vec(any::<u8>(), 1..16)) {
        let files = corpus("ledger_files");
        let mut b = std::fs::read(seed.get(&files)).expect("read");
        let i = at.index(b.len());
        let end = (i + junk.len()).min(b.len());
        b.splice(i..end, junk);
        dunes_fuzz::ledger_files(&b);
    }
}
