//! decode_batch never panics.

mod common;

use dunes_ingest::{IngestConfig, Normalizer, RawRecord, SourcePos};
use proptest::prelude::*;
use serde_json::Value;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("tools/call"),
            Just("tools/list"),
            Just("c2s"),
            Just("s2c"),
            Just("2026-11-20T08:00:00Z"),
            Just("http://0x7f.1/"),
            Just("%2e%2e%2f"),
            Just("password=Zx9!abcd"),
            Just("-----BEGIN PRIVATE KEY-----"),
            Just("[::ffff:1.2.3.4]")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("method".to_owned()),
                    Just("params".to_owned()),
                    Just("result".to_owned()),
                    Just("error".to_owned()),
                    Just("name".to_owned()),
                    Just("arguments".to_owned()),
                    Just("tools".to_owned()),
                    Just("content".to_owned()),
                    Just("text".to_owned()),
                    Just("uri".to_owned()),
                    Just("isError".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn rec(bytes: Vec<u8>) -> RawRecord {
    RawRecord {
        bytes: bytes.into(),
        source: SourcePos::Stdin { line: 1 },
        oversize: None,
        refused: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..8)) {
        let mut n = Normalizer::new(IngestConfig { max_line_bytes: 150, ..IngestConfig::default() });
        let count = lines.len();
        let out = n.decode_batch(lines.into_iter().map(rec).collect()).expect("decode");
        prop_assert!(out.accepted.len() + out.rejected.len() <= count);
    }

    #[test]
    fn arbitrary_envelopes_never_panic(
        message in arb_json(),
        extra in arb_json(),
        direction in prop_oneof![Just("c2s"), Just("s2c")],
    ) {
        let mut v = serde_json::json!({
            "ts": "2026-11-20T08:00:00Z", "server_id": "s", "session_id": "x",
            "direction": direction, "message": message.clone(),
            "http": {"headers": {"mcp-method": "tools/call", "mcp-name": "x"}},
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), &extra) {
            for (k, x) in e { o.insert(k.clone(), x.clone()); }
        }
        let line = v.to_string();
        let mut n = Normalizer::new(IngestConfig::default());
        let out = n.decode_batch(vec![rec(line.clone().into_bytes()), rec(line.into_bytes())]).expect("decode");
        prop_assert_eq!(out.accepted.len() + out.rejected.len(), 2);
        if matches!(message, Value::Object(_) | Value::Array(_)) && !extra.is_object() {
            prop_assert_eq!(out.accepted.len(), 2);
        }
    }

    #[test]
    fn arbitrary_json_objects_never_panic(obj in arb_json()) {
        let mut n = Normalizer::new(IngestConfig::default());
        let out = n.decode_batch(vec![rec(obj.to_string().into_bytes())]).expect("decode");
        prop_assert_eq!(out.accepted.len() + out.rejected.len(), 1);
    }
}
