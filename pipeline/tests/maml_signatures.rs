//! MAML document signatures checked with a configured ML-DSA-65 key: a
//! document signed by the origin's key is `valid` and raises nothing; the
//! same document edited after signing, or signed with another key, is
//! `invalid` and raises `maml-signature-missing-or-invalid`.

use std::sync::Arc;

use base64::Engine as _;
use dunes_detect::IncidentStore;
use dunes_ingest::{RawRecord, SourcePos};
use dunes_pipeline::{MAML_SIGNATURE_CONTEXT, MamlKeyConfig, Pipeline};

mod common;

const DOC: &str = "---\nmaml_version: \"2.0.0\"\nid: \"urn:uuid:3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f\"\ntype: \"workflow\"\norigin: \"agent://etl-agent\"\npermissions:\n  read: [\"agent://*\"]\n  execute: [\"gateway://batch\"]\nverification:\n  method: \"ml-dsa-65\"\n  level: \"strict\"\n  signature: \"SIG\"\ncreated_at: 2026-03-26T10:00:00Z\n---\n# Load\n\n## Intent\nLoad yesterday's orders.\n\n## Code_Blocks\n```bash\nmake load\n```\n";

fn envelope(n: usize, doc: &str) -> RawRecord {
    let v = serde_json::json!({
        "event_id": format!("sig-{n}"),
        "ts": format!("2026-09-01T10:00:0{n}Z"),
        "server_id": "maml-hub@lab",
        "direction": "c2s",
        "session_id": format!("sig-session-{n}"),
        "message": {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                    "params": {"name": "submit_document", "arguments": {"document": doc}}}
    });
    RawRecord {
        bytes: v.to_string().into_bytes().into(),
        source: SourcePos::Stdin { line: n as u64 },
        oversize: None,
        refused: None,
    }
}

#[test]
fn signatures_verify_under_the_origins_key() {
    common::run_with_room(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dunes_ledger::StandaloneKey::load_or_generate(dir.path(), "maml-etl").expect("key");
    let other = dunes_ledger::StandaloneKey::load_or_generate(dir.path(), "other").expect("key");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let content = dunes_ingest::maml::signed_content(DOC).expect("content");
    let sign = |k: &dunes_ledger::StandaloneKey| {
        b64(&k
            .sign(content.as_bytes(), MAML_SIGNATURE_CONTEXT)
            .expect("sign"))
    };
    let good = DOC.replace("SIG", &sign(&key));
    let edited = good.replace("yesterday's orders", "all orders and the customer table");
    let forged = DOC.replace("SIG", &sign(&other));

    let data = dir.path().join("data");
    let mut cfg = common::rules_only_config(&data);
    cfg.ingest.maml_keys = vec![MamlKeyConfig {
        origin: "agent://etl-agent".into(),
        algorithm: "ml-dsa-65".into(),
        public_key: b64(key.public_key()),
    }];
    let store = Arc::new(IncidentStore::new());
    let mut p = Pipeline::open(&cfg, store, None).await.expect("open");
    let out = p
        .process(vec![
            envelope(1, &good),
            envelope(2, &edited),
            envelope(3, &forged),
        ])
        .await
        .expect("process");
    let mut flagged: Vec<(String, String)> = out
        .incidents
        .iter()
        .filter(|i| i.rule_id == "maml-signature-missing-or-invalid")
        .map(|i| {
            (
                i.session_id.clone().unwrap_or_default(),
                i.evidence[0]["sig_status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    flagged.sort();
    assert_eq!(
        flagged,
        vec![
            ("sig-session-2".to_string(), "invalid".to_string()),
            ("sig-session-3".to_string(), "invalid".to_string()),
        ]
    );
    p.close().expect("close");

    // A bad key in the configuration is refused with the entry named.
    cfg.ingest.maml_keys[0].public_key = b64(b"short");
    let err = Pipeline::open(&cfg, Arc::new(IncidentStore::new()), None)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("agent://etl-agent"), "{err}");
}
