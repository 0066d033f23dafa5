//! The whole recorded sample decodes cleanly, with spot checks of derived columns.

mod common;

use arrow::array::{Array, AsArray};
use common::*;
use dunes_ingest::source::open_file;
use dunes_ingest::{IngestConfig, Normalizer};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/corpus/mcp-sample.ndjson"
);

fn decode_sample(batch_size: usize) -> (Vec<dunes_ingest::DecodedBatch>, u64) {
    let cfg = IngestConfig::default();
    let reader = open_file(SAMPLE, cfg.max_line_bytes).expect("open sample");
    let mut n = Normalizer::new(cfg);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut lines = 0;
    for r in reader {
        buf.push(r.expect("read"));
        lines += 1;
        if buf.len() == batch_size {
            out.push(n.decode_batch(std::mem::take(&mut buf)).expect("decode"));
        }
    }
    out.push(n.decode_batch(buf).expect("decode"));
    (out, lines)
}

fn concat(
    bs: &[dunes_ingest::DecodedBatch],
) -> (arrow::array::RecordBatch, arrow::array::RecordBatch) {
    let ev = arrow::compute::concat_batches(
        &dunes_ingest::schema::events_schema(),
        bs.iter().map(|b| &b.events),
    )
    .expect("concat");
    let td = arrow::compute::concat_batches(
        &dunes_ingest::schema::tool_defs_schema(),
        bs.iter().map(|b| &b.tool_defs),
    )
    .expect("concat");
    (ev, td)
}

#[test]
fn whole_sample_decodes() {
    if !std::path::Path::new(SAMPLE).exists() {
        eprintln!("sample not present, skipping");
        return;
    }
    // small batches: request/response matching must work across batches
    let (batches, lines) = decode_sample(97);
    assert_eq!(lines, 3224);
    let rejected: Vec<_> = batches.iter().flat_map(|b| &b.rejected).collect();
    assert!(
        rejected.is_empty(),
        "{:?}",
        rejected.first().map(|r| &r.reason)
    );
    let accepted: usize = batches.iter().map(|b| b.accepted.len()).sum();
    assert_eq!(accepted, 3224);
    let (ev, td) = concat(&batches);

    // one row per message (the sample has no JSON-RPC batches)
    let text = std::fs::read_to_string(SAMPLE).expect("read");
    let messages: usize = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["message"].as_array().map_or(1, Vec::len)
        })
        .sum();
    assert_eq!(ev.num_rows(), messages);
    assert!(td.num_rows() > 0);

    // latency on most responses
    let kinds = ev.column_by_name("msg_kind").expect("msg_kind");
    let kinds = kinds.as_string::<i32>();
    let lat = ev.column_by_name("latency_ms").expect("latency");
    let (mut responses, mut with_lat) = (0, 0);
    for r in 0..ev.num_rows() {
        if matches!(kinds.value(r), "result" | "error") {
            responses += 1;
            if lat.is_valid(r) {
                with_lat += 1;
                let l = f64v(&ev, "latency_ms", r).expect("lat");
                assert!((0.0..=60_000.0).contains(&l), "latency {l}");
            }
        }
    }
    assert!(responses > 1000);
    assert!(
        with_lat * 100 >= responses * 95,
        "{with_lat}/{responses} responses matched"
    );
    assert!(!kinds.iter().any(|k| k == Some("invalid")));

    // line 1: initialize request
    let r = row_of(&ev, "gw1-0000000");
    assert_eq!(s(&ev, "msg_kind", r).as_deref(), Some("request"));
    assert_eq!(s(&ev, "method", r).as_deref(), Some("initialize"));
    assert_eq!(s(&ev, "protocol_version", r).as_deref(), Some("2025-11-25"));
    assert_eq!(s(&ev, "principal", r).as_deref(), Some("alice@example.com"));
    assert_eq!(boolv(&ev, "header_mismatch", r), Some(false));
    assert_eq!(s(&ev, "jsonrpc_id", r).as_deref(), Some("1"));

    // line 5: tools/list result with 3 tools
    let r = row_of(&ev, "gw1-0000004");
    assert_eq!(s(&ev, "msg_kind", r).as_deref(), Some("result"));
    assert_eq!(s(&ev, "method", r).as_deref(), Some("tools/list"));
    assert_eq!(i32v(&ev, "tools_listed", r), Some(3));
    assert!(f64v(&ev, "latency_ms", r).is_some());
    let names: Vec<String> = (0..td.num_rows())
        .filter(|&i| s(&td, "event_id", i).as_deref() == Some("gw1-0000004"))
        .map(|i| s(&td, "tool_name", i).expect("name"))
        .collect();
    assert_eq!(names, vec!["search_docs", "list_dir", "read_file"]);
    let i = (0..td.num_rows())
        .find(|&i| s(&td, "event_id", i).as_deref() == Some("gw1-0000004"))
        .expect("row");
    assert_eq!(
        s(&td, "desc_preview", i).as_deref(),
        Some("Search the company handbook.")
    );
    assert_eq!(i64v(&td, "desc_len", i), Some(28));
    assert_eq!(
        s(&td, "desc_sha256", i).as_deref(),
        Some(dunes_ingest::text::sha256_hex(b"Search the company handbook.").as_str())
    );
    assert!(s(&td, "input_schema", i).is_some_and(|j| j.starts_with("{\"properties\":")));

    // line 6: tools/call read_file with a known path
    let r = row_of(&ev, "gw1-0000005");
    assert_eq!(s(&ev, "tool_name", r).as_deref(), Some("read_file"));
    let canon = r#"{"path":"/srv/projects/auth-gateway/README.md"}"#;
    assert_eq!(s(&ev, "args_preview", r).as_deref(), Some(canon));
    assert_eq!(i64v(&ev, "args_bytes", r), Some(canon.len() as i64));
    assert_eq!(
        s(&ev, "args_sha256", r),
        Some(dunes_ingest::text::sha256_hex(canon.as_bytes()))
    );
    assert_eq!(list(&ev, "args_keys", r), Some(vec!["path".to_owned()]));
    assert_eq!(
        s(&ev, "args_text", r).as_deref(),
        Some("read_file\n/srv/projects/auth-gateway/README.md")
    );
    assert_eq!(i64v(&ev, "args_max_len", r), Some(36));
    assert_eq!(boolv(&ev, "header_mismatch", r), Some(false));
    assert_eq!(s(&ev, "hdr_mcp_name", r).as_deref(), Some("read_file"));
    // and its response carries the tool name
    let resp = (0..ev.num_rows())
        .find(|&i| {
            s(&ev, "session_id", i) == s(&ev, "session_id", r)
                && s(&ev, "jsonrpc_id", i).as_deref() == Some("3")
                && s(&ev, "direction", i).as_deref() == Some("s2c")
        })
        .expect("response");
    assert_eq!(s(&ev, "tool_name", resp).as_deref(), Some("read_file"));
    assert_eq!(s(&ev, "method", resp).as_deref(), Some("tools/call"));
    assert_eq!(boolv(&ev, "is_error", resp), Some(false));
    assert_eq!(
        list(&ev, "content_types", resp),
        Some(vec!["text".to_owned()])
    );

    // line 14: resources/read
    let r = row_of(&ev, "gw1-0000013");
    assert_eq!(
        s(&ev, "resource_uri", r).as_deref(),
        Some("docs://docs/it/guide-044.md")
    );
    assert_eq!(
        list(&ev, "args_url_schemes", r),
        Some(vec!["docs".to_owned()])
    );

    // line 30: tool result with isError
    let r = row_of(&ev, "gw1-0000029");
    assert_eq!(boolv(&ev, "is_error", r), Some(true));
    assert_eq!(
        s(&ev, "result_text", r).as_deref(),
        Some("Unknown tool: open_file")
    );

    // line 75: JSON-RPC error
    let r = row_of(&ev, "gw1-0000074");
    assert_eq!(s(&ev, "msg_kind", r).as_deref(), Some("error"));
    assert_eq!(i64v(&ev, "error_code", r), Some(-32602));
    assert_eq!(
        s(&ev, "error_message", r).as_deref(),
        Some("Unknown resource: file:///etc/passwd")
    );
    assert_eq!(
        s(&ev, "resource_uri", r).as_deref(),
        Some("file:///etc/passwd")
    );

    // line 156: prompts/get
    let r = row_of(&ev, "gw1-0000155");
    assert_eq!(s(&ev, "prompt_name", r).as_deref(), Some("summarize"));

    // header mismatches: line 881 (mcp-name), line 1144 (mcp-method)
    assert_eq!(
        boolv(&ev, "header_mismatch", row_of(&ev, "gw1-0000880")),
        Some(true)
    );
    assert_eq!(
        boolv(&ev, "header_mismatch", row_of(&ev, "gw1-0001143")),
        Some(true)
    );

    // line 562: SSRF to [::1]; line 560: private 10.0.0.5
    let r = row_of(&ev, "gw1-0000561");
    assert_eq!(list(&ev, "args_url_hosts", r), Some(vec!["::1".to_owned()]));
    assert_eq!(
        list(&ev, "args_host_classes", r),
        Some(vec!["loopback".to_owned()])
    );
    let r = row_of(&ev, "gw1-0000559");
    assert_eq!(
        list(&ev, "args_host_classes", r),
        Some(vec!["private".to_owned()])
    );

    // line 2437: a JWT in the arguments is detected and redacted everywhere
    let r = row_of(&ev, "gw1-0002436");
    let types = list(&ev, "args_secret_types", r).expect("types");
    assert!(types.contains(&"jwt".to_owned()), "{types:?}");
    for c in ["args_preview", "args_text", "args_decoded"] {
        let v = s(&ev, c, r).expect(c);
        assert!(!v.contains("eyJhbGciOiJSUzI1NiIs"), "{c}: {v}");
    }
    assert!(s(&ev, "args_text", r).is_some_and(|t| t.contains("[REDACTED:jwt]")));

    // labels map and stdio sessions (no http)
    let labels = ev.column_by_name("labels").expect("labels").as_map();
    assert!(labels.is_valid(0));
    let no_http = (0..ev.num_rows())
        .filter(|&i| s(&ev, "http_method", i).is_none())
        .count();
    assert!(no_http > 0);
}

#[test]
fn batch_boundaries_do_not_change_output() {
    if !std::path::Path::new(SAMPLE).exists() {
        return;
    }
    let (a, _) = decode_sample(1);
    let (b, _) = decode_sample(5000);
    let (ea, ta) = concat(&a);
    let (eb, tb) = concat(&b);
    assert_eq!(ea, eb);
    assert_eq!(ta, tb);
}

/// A large batch of mixed records (malformed, blank, non-UTF-8, refused,
/// oversize, duplicate): every record keeps its place and its outcome, as
/// when the same records come one per batch.
#[test]
fn a_large_mixed_batch_decodes_as_records_one_by_one() {
    let lines: Vec<String> = std::fs::read_to_string(SAMPLE)
        .expect("sample")
        .lines()
        .take(600)
        .map(str::to_owned)
        .collect();
    let cfg = IngestConfig::default();
    let mut records = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut r = rec(l, i as u64 + 1);
        match i % 50 {
            7 => r.bytes = b"{\"ts\": 1".to_vec().into(),
            13 => r.bytes = b"   ".to_vec().into(),
            19 => r.bytes = vec![b'{', 0xff, b'}'].into(),
            23 => r.refused = Some("refused by the source".into()),
            29 => r.oversize = Some(cfg.max_line_bytes + 1),
            // the same bytes as the line before: a duplicate
            31 => r.bytes = lines[i - 1].as_bytes().to_vec().into(),
            _ => {}
        }
        records.push(r);
    }
    let whole = {
        let mut n = Normalizer::new(cfg.clone());
        let mut d = dunes_ingest::Dedup::new(10_000);
        vec![
            n.decode_batch_dedup(records.clone(), &mut d)
                .expect("decode"),
        ]
    };
    let one_by_one: Vec<_> = {
        let mut n = Normalizer::new(cfg);
        let mut d = dunes_ingest::Dedup::new(10_000);
        records
            .into_iter()
            .map(|r| n.decode_batch_dedup(vec![r], &mut d).expect("decode"))
            .collect()
    };
    let outcomes = |bs: &[dunes_ingest::DecodedBatch]| {
        let f = |v: Vec<String>| v.join("\n");
        (
            f(bs.iter()
                .flat_map(|b| b.accepted.iter().map(|a| format!("{a:?}")))
                .collect()),
            f(bs.iter()
                .flat_map(|b| b.rejected.iter().map(|r| format!("{r:?}")))
                .collect()),
            f(bs.iter()
                .flat_map(|b| b.duplicates.iter().map(|d| format!("{d:?}")))
                .collect()),
        )
    };
    let (a1, r1, d1) = outcomes(&whole);
    let (a2, r2, d2) = outcomes(&one_by_one);
    assert_eq!(r1, r2);
    assert_eq!(d1, d2);
    assert_eq!(a1, a2);
    // 12 of each altered kind, the blank lines skipped, the rest accepted
    let reasons: Vec<&str> = whole[0]
        .rejected
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert_eq!(whole[0].rejected.len(), 48, "{reasons:?}");
    assert_eq!(whole[0].duplicates.len(), 12);
    assert_eq!(whole[0].accepted.len(), 600 - 48 - 12 - 12);
    let (e1, t1) = concat(&whole);
    let (e2, t2) = concat(&one_by_one);
    assert_eq!(e1, e2);
    assert_eq!(t1, t2);
}
