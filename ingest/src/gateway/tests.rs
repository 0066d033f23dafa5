use super::*;
use crate::SourcePos;

/// Every line of a sample log and what it becomes, for the golden snapshots.
fn render(format: InputFormat, sample: &str) -> String {
    let mut out = String::new();
    for (i, line) in sample.lines().enumerate() {
        out.push_str(&format!("--- line {}\n", i + 1));
        match adapt(format, line.as_bytes()) {
            Adapted::Envelopes(envs) => {
                for e in envs {
                    let v: Value = serde_json::from_slice(&e).expect("envelope is JSON");
                    out.push_str(&serde_json::to_string_pretty(&v).expect("prints"));
                    out.push('\n');
                }
            }
            Adapted::Skipped(why) => out.push_str(&format!("skipped: {why}\n")),
            Adapted::Refused(why) => out.push_str(&format!("refused: {why}\n")),
        }
    }
    out
}

/// Lines of a file as raw records, numbered from 1.
fn file_records<'a>(path: &str, lines: impl IntoIterator<Item = &'a str>) -> Vec<RawRecord> {
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| RawRecord::file_line(l.as_bytes().to_vec(), path, i as u64 + 1))
        .collect()
}

#[test]
fn agentgateway_sample_maps_to_envelopes() {
    let sample = include_str!("../../../examples/gateway/agentgateway.log");
    insta::assert_snapshot!(render(InputFormat::Agentgateway, sample));
}

#[test]
fn tyk_sample_maps_to_envelopes() {
    let sample = include_str!("../../../examples/gateway/tyk.log");
    insta::assert_snapshot!(render(InputFormat::Tyk, sample));
}

#[test]
fn mapped_envelopes_pass_the_normaliser() {
    // Every envelope the samples give is accepted; the refused lines are dead-lettered
    // with the adapter's reason and nothing else is rejected.
    for (format, sample) in [
        (
            InputFormat::Agentgateway,
            include_str!("../../../examples/gateway/agentgateway.log"),
        ),
        (
            InputFormat::Tyk,
            include_str!("../../../examples/gateway/tyk.log"),
        ),
    ] {
        let recs = file_records("sample", sample.lines());
        let adapted = adapt_records(format, recs);
        let refused = adapted.iter().filter(|r| r.refused.is_some()).count();
        let mut n = crate::Normalizer::new(crate::IngestConfig::default());
        let batch = n.decode_batch(adapted).expect("decodes");
        assert_eq!(
            batch.rejected.len(),
            refused,
            "{format}: {:?}",
            batch.rejected
        );
        for r in &batch.rejected {
            assert!(
                r.reason.contains(&format!("{format} log line")),
                "{}",
                r.reason
            );
        }
        assert!(
            batch.accepted.len() >= 4,
            "{format}: {}",
            batch.accepted.len()
        );
    }
}

#[test]
fn text_values_may_hold_spaces_and_json_quotes() {
    let f = agentgateway::text_fields(
        r#"jwt.sub=Jane Doe protocol=mcp error="upstream said \"no\" twice" mcp.method=tools/call"#,
    )
    .expect("parses");
    assert_eq!(f["jwt.sub"], "Jane Doe");
    assert_eq!(f["error"], r#"upstream said "no" twice"#);
    assert_eq!(f["mcp.method"], "tools/call");
    assert_eq!(f["protocol"], "mcp");
    assert_eq!(f.len(), 4);
    let err = agentgateway::text_fields("not-a-pair protocol=mcp").unwrap_err();
    assert!(err.contains("expected key=value"), "{err}");
}

#[test]
fn unreadable_lines_are_refused_with_the_reason() {
    let cases: &[(InputFormat, &str, &str)] = &[
        (
            InputFormat::Agentgateway,
            "garbage without tabs",
            "expected `<time>",
        ),
        (
            InputFormat::Agentgateway,
            "yesterday\tinfo\trequest protocol=mcp mcp.method=tools/list mcp.target=x",
            "is not RFC 3339",
        ),
        (
            InputFormat::Agentgateway,
            "2026-11-30T09:00:00Z\tinfo\trequest protocol=mcp mcp.method=ping",
            "no server identity",
        ),
        (
            InputFormat::Agentgateway,
            "2026-11-30T09:00:00Z\tinfo\trequest protocol=mcp mcp.method=ping mcp.target=x http.status=abc",
            "not an HTTP status code",
        ),
        (
            InputFormat::Agentgateway,
            "2026-11-30T09:00:00Z\tinfo\trequest protocol=mcp error=\"unterminated",
            "unterminated quoted value",
        ),
        (
            InputFormat::Tyk,
            "level=info prefix=access-log",
            "expected a JSON object",
        ),
        (InputFormat::Tyk, "{\"prefix\":", "not a JSON object"),
        (
            InputFormat::Tyk,
            r#"{"prefix":"access-log","api_type":"mcp","mcp_method":"tools/list","api_id":"a"}"#,
            "without \"time\"",
        ),
        (
            InputFormat::Tyk,
            r#"{"prefix":"access-log","api_type":"mcp","mcp_method":"tools/list","api_id":"a","time":"2026-11-30T09:00:00Z","mcp_error_code":"x"}"#,
            "mcp_error_code",
        ),
    ];
    for (format, line, want) in cases {
        match adapt(*format, line.as_bytes()) {
            Adapted::Refused(why) => {
                assert!(why.starts_with(&format!("{format} log line: ")), "{why}");
                assert!(why.contains(want), "{line}: {why}");
            }
            other => panic!("{line}: {other:?}"),
        }
    }
    assert_eq!(
        adapt(InputFormat::Tyk, b"\xff\xfe"),
        Adapted::Refused("tyk log line is not valid UTF-8".into())
    );
}

#[test]
fn replayed_line_gives_the_same_envelopes_and_distinct_lines_distinct_ids() {
    let a = "2026-11-30T09:00:00Z\tinfo\trequest protocol=mcp mcp.method=tools/list mcp.target=x";
    let b = "2026-11-30T09:00:01Z\tinfo\trequest protocol=mcp mcp.method=tools/list mcp.target=x";
    let one = adapt(InputFormat::Agentgateway, a.as_bytes());
    assert_eq!(one, adapt(InputFormat::Agentgateway, a.as_bytes()));
    let id = |x: Adapted| match x {
        Adapted::Envelopes(e) => {
            let v: Value = serde_json::from_slice(&e[0]).expect("json");
            v["message"]["id"].clone()
        }
        other => panic!("{other:?}"),
    };
    assert_ne!(id(one), id(adapt(InputFormat::Agentgateway, b.as_bytes())));
}

#[test]
fn records_keep_their_source_and_oversize_passes_through() {
    let src = |line| SourcePos::Kafka {
        topic: "gw".into(),
        partition: 0,
        offset: line,
    };
    let tyk = include_str!("../../../examples/gateway/tyk.log");
    let line5 = tyk.lines().nth(4).expect("line 5");
    let recs = vec![
        RawRecord {
            bytes: line5.as_bytes().to_vec().into(),
            source: src(5),
            oversize: None,
            refused: None,
        },
        RawRecord {
            bytes: b"{".to_vec().into(),
            source: src(6),
            oversize: Some(5_000_000),
            refused: None,
        },
    ];
    let out = adapt_records(InputFormat::Tyk, recs);
    // Line 5 was answered by the gateway with -32003: request and error envelope.
    assert_eq!(out.len(), 3);
    assert!(matches!(out[0].source, SourcePos::Kafka { offset: 5, .. }));
    assert!(matches!(out[1].source, SourcePos::Kafka { offset: 5, .. }));
    assert_eq!(out[2].oversize, Some(5_000_000));
    assert!(out[2].refused.is_none());
}

#[test]
fn format_names_round_trip() {
    for f in InputFormat::ALL {
        assert_eq!(f.name().parse::<InputFormat>(), Ok(f));
        assert_eq!(f.to_string(), f.name());
    }
    let err = "envoy".parse::<InputFormat>().unwrap_err();
    assert!(err.contains("agentgateway"), "{err}");
}

#[test]
fn host_of_strips_ports_and_brackets() {
    assert_eq!(host_of("10.0.0.1:443"), "10.0.0.1");
    assert_eq!(host_of("[fd00::1]:80"), "fd00::1");
    assert_eq!(host_of("fd00::1"), "fd00::1");
    assert_eq!(host_of("gw.local"), "gw.local");
}

#[test]
fn simulated_otlp_exports_give_back_the_envelopes_byte_for_byte() {
    let cfg = dunes_sim::SimConfig {
        sessions: 20,
        seed: 3,
        stateless: true,
        ..dunes_sim::SimConfig::default()
    };
    let envelopes: Vec<String> = dunes_sim::Simulator::new(cfg).collect();
    let lines: Vec<String> = dunes_sim::otlp_lines(envelopes.clone().into_iter()).collect();
    assert_eq!(
        lines.len(),
        envelopes
            .len()
            .div_ceil(dunes_sim::OTLP_RECORDS_PER_REQUEST)
    );
    let recs = file_records(
        "sim.jsonl",
        lines
            .iter()
            .map(String::as_str)
            .chain([r#"{"resourceLogs": 7}"#]),
    );
    let mut out = adapt_records(InputFormat::Otlp, recs);
    let bad = out.pop().expect("the bad line");
    let why = bad.refused.expect("refused");
    assert!(
        why.starts_with("otlp line: not an OTLP Logs request"),
        "{why}"
    );
    let got: Vec<&str> = out
        .iter()
        .map(|r| std::str::from_utf8(&r.bytes).expect("utf-8"))
        .collect();
    assert_eq!(got, envelopes);
    assert!(out.iter().all(|r| r.refused.is_none()));
    assert!(matches!(
        out[dunes_sim::OTLP_RECORDS_PER_REQUEST].source,
        SourcePos::File { line: 2, .. }
    ));
}
