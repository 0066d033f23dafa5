//! A file mixing good and bad lines: one rejection per bad line, with the right reason.

mod common;

use std::io::Write;

use dunes_ingest::source::open_file;
use dunes_ingest::{DeadLetterWriter, IngestConfig, Normalizer, RawRecord, SourcePos};

const GOOD: &str = r#"{"ts":"2026-11-20T08:00:00Z","event_id":"g1","server_id":"files@prod-1","direction":"c2s","message":{"jsonrpc":"2.0","id":1,"method":"ping"}}"#;
const GOOD2: &str = r#"{"ts":"2026-11-20T08:00:00.100Z","event_id":"g2","server_id":"files@prod-1","direction":"s2c","message":{"jsonrpc":"2.0","id":1,"result":{}}}"#;

#[test]
fn malformed_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.ndjson");
    let big = format!(
        r#"{{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"c2s","message":{{"x":"{}"}}}}"#,
        "a".repeat(2000)
    );
    let mut f = std::fs::File::create(&path).expect("create");
    let lines: Vec<Vec<u8>> = vec![
        GOOD.into(),                                                                   // 1
        b"{\"ts\": oops}".to_vec(),                                                    // 2 bad JSON
        br#"{"server_id":"s","direction":"c2s","message":{}}"#.to_vec(),               // 3 missing ts
        br#"{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"c2s","message":{},"http":{"status":"200"}}"#.to_vec(), // 4 wrong type
        br#"{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"up","message":{}}"#.to_vec(), // 5 bad enum
        br#"{"ts":"2026-11-20 08:00","server_id":"s","direction":"c2s","message":{}}"#.to_vec(),     // 6 bad ts
        big.into_bytes(),                                                              // 7 oversize
        b"{\"ts\":\"2026-11-20T08:00:00Z\",\"server_id\":\"s\xff\",\"direction\":\"c2s\",\"message\":{}}".to_vec(), // 8 invalid UTF-8
        b"".to_vec(),                                                                  // 9 blank
        b"   ".to_vec(),                                                               // 10 blank
        GOOD2.into(),                                                                  // 11
    ];
    for l in &lines {
        f.write_all(l).expect("write");
        f.write_all(b"\r\n").expect("write");
    }
    drop(f);

    let cfg = IngestConfig {
        max_line_bytes: 1000,
        ..IngestConfig::default()
    };
    let recs: Vec<_> = open_file(&path, cfg.max_line_bytes)
        .expect("open")
        .collect::<Result<_, _>>()
        .expect("read");
    let mut n = Normalizer::new(cfg);
    let out = n.decode_batch(recs).expect("decode");
    let got: Vec<(String, String)> = out
        .rejected
        .iter()
        .map(|r| {
            let src = r.source.to_string();
            (
                src[src.rfind(':').map_or(0, |i| i + 1)..].to_owned(),
                r.reason.clone(),
            )
        })
        .collect();
    let want: Vec<(&str, String)> = vec![
        (
            "2",
            "invalid JSON: expected value at line 1 column 8".into(),
        ),
        ("3", "missing required field \"ts\"".into()),
        (
            "4",
            "field \"http.status\": expected integer, got string".into(),
        ),
        (
            "5",
            "field \"direction\": expected \"c2s\" or \"s2c\", got \"up\"".into(),
        ),
        (
            "6",
            "field \"ts\": not RFC 3339 with offset: \"2026-11-20 08:00\"".into(),
        ),
        ("7", format!("line is {} bytes, limit 1000", lines[6].len())),
        ("8", "invalid UTF-8 at byte 43".into()),
    ];
    let want: Vec<(String, String)> = want.into_iter().map(|(a, b)| (a.to_owned(), b)).collect();
    assert_eq!(got, want);
    assert_eq!(out.accepted.len(), 2);
    assert_eq!(out.accepted[0].event_id, "g1");
    assert_eq!(out.accepted[0].raw, GOOD.as_bytes());
    assert_eq!(
        out.accepted[1].source.to_string(),
        format!("{}:11", path.display())
    );
    assert_eq!(out.events.num_rows(), 2);
    // the ping response matched its request
    let lat = common::f64v(&out.events, "latency_ms", 1).expect("latency");
    assert!((lat - 100.0).abs() < 1e-9);
    assert_eq!(common::s(&out.events, "method", 1).as_deref(), Some("ping"));

    // and every rejection goes to the dead-letter file
    let dl = dir.path().join("dead.ndjson");
    let mut w = DeadLetterWriter::open(&dl).expect("dl");
    for r in &out.rejected {
        w.write(r).expect("write");
    }
    w.flush_sync().expect("sync");
    assert_eq!(w.count(), 7);
    let text = std::fs::read_to_string(&dl).expect("read");
    let dead: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(dead.len(), 7);
    assert!(
        dead[0]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("bad.ndjson:2"))
    );
    assert!(
        dead[5].get("raw_b64").is_some(),
        "oversize keeps exact bytes"
    );
    assert!(
        dead[6].get("raw_b64").is_some(),
        "invalid UTF-8 keeps exact bytes"
    );
    assert!(dead[1].get("raw_b64").is_none());
}

#[test]
fn oversize_without_reader_cut_and_empty_records() {
    let mut n = Normalizer::new(IngestConfig {
        max_line_bytes: 50,
        ..IngestConfig::default()
    });
    let out = n
        .decode_batch(vec![
            common::rec(&"x".repeat(60), 1),
            common::rec("", 2),
            common::rec("\t", 3),
        ])
        .expect("decode");
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].reason, "line is 60 bytes, limit 50");
    assert_eq!(out.accepted.len(), 0);
    assert_eq!(out.events.num_rows(), 0);
}

#[test]
fn empty_kafka_messages_are_rejected_with_a_reason() {
    let mut n = Normalizer::new(IngestConfig::default());
    let kafka = |bytes: &str, offset: i64| RawRecord {
        bytes: bytes.as_bytes().to_vec().into(),
        source: SourcePos::Kafka {
            topic: "mcp.logs".into(),
            partition: 2,
            offset,
        },
        oversize: None,
        refused: None,
    };
    let out = n
        .decode_batch(vec![kafka("", 7), kafka("  ", 8)])
        .expect("decode");
    assert_eq!(out.rejected.len(), 2);
    assert!(out.rejected[0].reason.contains("empty message"));
    assert_eq!(out.rejected[1].source.to_string(), "kafka:mcp.logs/2/8");
}

#[test]
fn event_id_of_matches_what_decoding_assigns() {
    let with_id = r#"{"ts":"2026-11-23T10:00:01Z","event_id":"gw-1","server_id":"s","direction":"c2s","transport":"stdio","message":{"jsonrpc":"2.0","id":1,"method":"ping"}}"#;
    let without = r#"{"ts":"2026-11-23T10:00:02Z","server_id":"s","direction":"c2s","transport":"stdio","message":{"jsonrpc":"2.0","id":2,"method":"ping"}}"#;
    // Same envelope, different key order: the derived id is canonical.
    let reordered = r#"{"server_id":"s","ts":"2026-11-23T10:00:02Z","direction":"c2s","transport":"stdio","message":{"method":"ping","jsonrpc":"2.0","id":2}}"#;
    let out = common::decode(&[with_id, without, reordered]);
    assert_eq!(out.accepted.len(), 3, "{:?}", out.rejected);
    for a in &out.accepted {
        assert_eq!(
            dunes_ingest::event_id_of(&a.raw).as_deref(),
            Some(a.event_id.as_str())
        );
    }
    assert_eq!(out.accepted[0].event_id, "gw-1");
    assert!(out.accepted[1].event_id.starts_with("d-"));
    assert_eq!(out.accepted[1].event_id, out.accepted[2].event_id);
    assert_eq!(dunes_ingest::event_id_of(&[0xff, 0xfe]), None);
}
