//! Derived columns on synthetic envelopes.

mod common;

use common::*;
use serde_json::json;

fn env(direction: &str, message: serde_json::Value, extra: serde_json::Value) -> String {
    let mut v = json!({
        "ts": "2026-11-20T08:00:00Z",
        "server_id": "web@prod-1",
        "session_id": "s1",
        "direction": direction,
        "message": message,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v.to_string()
}

fn call(args: serde_json::Value) -> String {
    env(
        "c2s",
        json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"fetch_url","arguments":args}}),
        json!({}),
    )
}

fn alnum(n: usize, seed: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|i| A[(i * 7919 + seed * 31) % 62] as char)
        .collect()
}

#[test]
fn secrets_in_args_and_results_are_redacted_per_type() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("AKIA{}", alnum(16, 1).to_ascii_uppercase()),
            "aws_key",
        ),
        (format!("ghp_{}", alnum(36, 2)), "github_token"),
        (
            format!("xoxb-{}-{}", "123456789012", alnum(24, 3)),
            "slack_token",
        ),
        (
            format!("eyJ{}.eyJ{}.{}", alnum(20, 4), alnum(30, 5), alnum(43, 6)),
            "jwt",
        ),
        (
            format!(
                "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----",
                alnum(64, 7)
            ),
            "private_key",
        ),
        (format!("sk-{}", alnum(48, 8)), "openai_key"),
        (format!("sk_live_{}", alnum(24, 9)), "stripe_key"),
        (format!("AIza{}", alnum(35, 10)), "google_api_key"),
        (
            "login with password=Tr0ub4dor&3".to_owned(),
            "generic_password",
        ),
    ];
    for (secret, kind) in cases {
        let core = &secret[secret.len() - 12..];
        let line_a =
            call(json!({"url": "https://x.example.com/", "note": format!("use {secret} now")}));
        let line_r = env(
            "s2c",
            json!({"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":format!("found {secret}")}]}}),
            json!({}),
        );
        let out = decode(&[&line_a, &line_r]);
        assert!(out.rejected.is_empty());
        let ev = &out.events;
        assert_eq!(
            list(ev, "args_secret_types", 0),
            Some(vec![kind.to_owned()]),
            "{secret}"
        );
        assert_eq!(
            list(ev, "result_secret_types", 1),
            Some(vec![kind.to_owned()]),
            "{secret}"
        );
        let marker = format!("[REDACTED:{kind}]");
        for (c, r) in [
            ("args_preview", 0),
            ("args_text", 0),
            ("args_decoded", 0),
            ("result_preview", 1),
            ("result_text", 1),
        ] {
            let v = s(ev, c, r).expect(c);
            assert!(!v.contains(core), "{kind} leaked in {c}: {v}");
            assert!(v.contains(&marker), "{kind}: {c} = {v}");
        }
    }
}

#[test]
fn password_object_keys_and_aws_secret_context() {
    let out = decode(&[
        &call(json!({"user": "bob", "password": "correct horse battery"})),
        &call(json!({"cfg": format!("aws_secret_access_key = {}/{}", alnum(20, 1), alnum(19, 2))})),
        &call(json!({"doc": "/srv/docs/security/password-policy.md"})),
    ]);
    let ev = &out.events;
    assert_eq!(
        list(ev, "args_secret_types", 0),
        Some(vec!["generic_password".to_owned()])
    );
    assert!(!s(ev, "args_text", 0).expect("t").contains("horse"));
    assert!(!s(ev, "args_preview", 0).expect("p").contains("horse"));
    assert_eq!(
        list(ev, "args_secret_types", 1),
        Some(vec!["aws_secret_key".to_owned()])
    );
    assert_eq!(list(ev, "args_secret_types", 2), Some(vec![]));
}

#[test]
fn values_of_sensitive_keys_are_redacted_whatever_the_case_of_the_key() {
    let aws = alnum(40, 9);
    let out = decode(&[
        &call(json!({"PassWd": "zq9!x", "note": "kept"})),
        &call(json!({"cfg": {"SecretAccessKey": aws}})),
        // Shorter than four characters: not taken for a secret.
        &call(json!({"pwd": "abc"})),
    ]);
    let ev = &out.events;
    let text = |row| s(ev, "args_text", row).expect("args_text");
    assert_eq!(text(0), "fetch_url\n[REDACTED:generic_password]\nkept");
    assert_eq!(
        list(ev, "args_secret_types", 0),
        Some(vec!["generic_password".to_owned()])
    );
    assert_eq!(text(1), "fetch_url\n[REDACTED:aws_secret_key]");
    assert_eq!(
        list(ev, "args_secret_types", 1),
        Some(vec!["aws_secret_key".to_owned()])
    );
    assert_eq!(text(2), "fetch_url\nabc");
    assert_eq!(list(ev, "args_secret_types", 2), Some(vec![]));
}

#[test]
fn entropy_and_lengths() {
    let hi = alnum(200, 3);
    let out = decode(&[&call(json!({"a": "aaaa", "b": hi, "n": 5}))]);
    let ev = &out.events;
    assert_eq!(i64v(ev, "args_max_len", 0), Some(200));
    let e = f64v(ev, "args_max_entropy", 0).expect("entropy");
    assert!(e > 5.0 && e <= 62f64.log2() + 1e-9, "{e}");
    assert_eq!(
        list(ev, "args_keys", 0),
        Some(vec!["a".into(), "b".into(), "n".into()])
    );
    let out = decode(&[&call(json!({"a": "aaaaaaaa"}))]);
    assert_eq!(f64v(&out.events, "args_max_entropy", 0), Some(0.0));
}

#[test]
fn urls_hosts_classes_schemes() {
    let out = decode(&[&call(json!({
        "url": "http://2130706433:2375/containers/json",
        "more": ["gopher://0x7f.1:6379/_INFO", "see http://[fd00:ec2::254]/latest and file:///etc/passwd"],
        "meta": "http://metadata.google.internal/computeMetadata/v1/?x=1",
    }))]);
    let ev = &out.events;
    let mut urls = list(ev, "args_urls", 0).expect("urls");
    urls.sort();
    assert_eq!(urls.len(), 5);
    let hosts = list(ev, "args_url_hosts", 0).expect("hosts");
    let classes = list(ev, "args_host_classes", 0).expect("classes");
    assert_eq!(hosts.len(), 4); // file:///… has no host
    let pairs: std::collections::BTreeSet<(String, String)> =
        hosts.into_iter().zip(classes).collect();
    let want: std::collections::BTreeSet<(String, String)> = [
        ("127.0.0.1", "loopback"),
        ("127.0.0.1", "loopback"),
        ("fd00:ec2::254", "metadata"),
        ("metadata.google.internal", "metadata"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pairs, want);
    let mut schemes = list(ev, "args_url_schemes", 0).expect("schemes");
    schemes.sort();
    assert_eq!(schemes, vec!["file", "gopher", "http", "http", "http"]);
}

#[test]
fn percent_decoding_for_rules() {
    let out = decode(&[&call(
        json!({"path": "..%2f..%252fetc%2Fpasswd", "win": "..\\..\\boot.ini", "h": "&#x2e;&#x2e;&#47;x"}),
    )]);
    let d = s(&out.events, "args_decoded", 0).expect("decoded");
    assert!(d.contains("../../etc/passwd"), "{d}");
    assert!(d.contains("../../boot.ini"), "{d}");
    assert!(d.contains("../x"), "{d}");
    let t = s(&out.events, "args_text", 0).expect("text");
    assert!(t.contains("..%2f..%252fetc"), "{t}");
}

#[test]
fn header_mismatch_true_false_null() {
    let msg = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}});
    let h = |hdrs: serde_json::Value| json!({"http": {"method": "POST", "status": 200, "headers": hdrs}});
    let lines = [
        env(
            "c2s",
            msg.clone(),
            h(json!({"mcp-method": "tools/call", "mcp-name": "read_file"})),
        ),
        env("c2s", msg.clone(), h(json!({"mcp-method": "tools/list"}))),
        env(
            "c2s",
            msg.clone(),
            h(json!({"mcp-method": "tools/call", "mcp-name": "delete_file"})),
        ),
        env(
            "c2s",
            msg.clone(),
            h(json!({"mcp-protocol-version": "2025-11-25"})),
        ),
        env("c2s", msg.clone(), json!({})),
        env(
            "s2c",
            json!({"jsonrpc":"2.0","id":1,"result":{}}),
            h(json!({"mcp-method": "x"})),
        ),
        env(
            "c2s",
            json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a"}}),
            h(json!({"mcp-method": "resources/read", "mcp-name": "file:///a"})),
        ),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let out = decode(&refs);
    let got: Vec<Option<bool>> = (0..7)
        .map(|r| boolv(&out.events, "header_mismatch", r))
        .collect();
    assert_eq!(
        got,
        vec![
            Some(false),
            Some(true),
            Some(true),
            None,
            None,
            None,
            Some(false)
        ]
    );
    assert_eq!(
        s(&out.events, "protocol_version", 3).as_deref(),
        Some("2025-11-25")
    );
}

#[test]
fn jsonrpc_batches_one_row_per_element() {
    let req = env(
        "c2s",
        json!([
            {"jsonrpc":"2.0","id":"a","method":"tools/list"},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"docs://x"}},
            42
        ]),
        json!({}),
    );
    let resp = env(
        "s2c",
        json!([
            {"jsonrpc":"2.0","id":9,"result":{"contents":[{"uri":"docs://x","text":"hello"}]}},
            {"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"t1","description":"d\u{200b}x","inputSchema":{"type":"object","properties":{"p":{"type":"string","description":"inner"}}}}]}}
        ]),
        json!({}),
    );
    let out = decode(&[&req, &resp]);
    assert_eq!(out.accepted.len(), 2);
    let ev = &out.events;
    assert_eq!(ev.num_rows(), 6);
    let idx: Vec<i32> = (0..6)
        .map(|r| i32v(ev, "msg_index", r).expect("idx"))
        .collect();
    assert_eq!(idx, vec![0, 1, 2, 3, 0, 1]);
    let kinds: Vec<String> = (0..6).map(|r| s(ev, "msg_kind", r).expect("k")).collect();
    assert_eq!(
        kinds,
        vec![
            "request",
            "notification",
            "request",
            "invalid",
            "result",
            "result"
        ]
    );
    assert_eq!(s(ev, "resource_uri", 4).as_deref(), Some("docs://x"));
    assert_eq!(s(ev, "result_text", 4).as_deref(), Some("hello"));
    assert_eq!(s(ev, "method", 5).as_deref(), Some("tools/list"));
    assert_eq!(s(ev, "jsonrpc_id", 5).as_deref(), Some("a"));
    assert_eq!(i32v(ev, "tools_listed", 5), Some(1));
    let td = &out.tool_defs;
    assert_eq!(td.num_rows(), 1);
    assert_eq!(
        s(td, "description", 0).as_deref(),
        Some("d\u{200b}x\ninner")
    );
    assert_eq!(s(td, "desc_preview", 0).as_deref(), Some("d\\u{200b}x"));
    assert_eq!(i32v(td, "desc_invisible_chars", 0), Some(1));
    assert_eq!(i64v(td, "desc_len", 0), Some(3));
}

#[test]
fn tools_list_result_recognised_by_shape_without_request() {
    let out = decode(&[&env(
        "s2c",
        json!({"jsonrpc":"2.0","id":77,"result":{"tools":[{"name":"a"},{"name":"b","description":"x"}, 5]}}),
        json!({}),
    )]);
    assert_eq!(i32v(&out.events, "tools_listed", 0), Some(3));
    assert_eq!(out.tool_defs.num_rows(), 2);
    assert_eq!(s(&out.tool_defs, "input_schema", 0), None);
    assert_eq!(s(&out.events, "method", 0), None);
    assert_eq!(f64v(&out.events, "latency_ms", 0), None);
}

#[test]
fn envelope_columns_principal_labels_extra_and_derived_id() {
    let line = env(
        "c2s",
        json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
        json!({
            "client": {"name": "cli", "version": "1"},
            "auth": {"client_id": "app", "exp": 1795164977, "aud_ok": false},
            "labels": {"env": "prod", "tenant": "t1"},
            "zeta": [1], "alpha": {"b": 1, "a": 2}
        }),
    );
    let out = decode(&[&line, &line]);
    let ev = &out.events;
    assert_eq!(s(ev, "principal", 0).as_deref(), Some("app"));
    assert_eq!(i64v(ev, "auth_exp", 0), Some(1_795_164_977));
    assert_eq!(boolv(ev, "aud_ok", 0), Some(false));
    assert_eq!(
        s(ev, "extra", 0).as_deref(),
        Some(r#"{"alpha":{"a":2,"b":1},"zeta":[1]}"#)
    );
    let id = s(ev, "event_id", 0).expect("id");
    assert!(id.starts_with("d-") && id.len() == 34, "{id}");
    assert_eq!(
        s(ev, "event_id", 1).as_deref(),
        Some(id.as_str()),
        "derived id is deterministic"
    );
    assert_eq!(out.accepted[0].event_id, id);
    let labels = ev.column_by_name("labels").expect("labels");
    let m = arrow::array::AsArray::as_map(labels.as_ref());
    let entries = m.value(0);
    assert_eq!(arrow::array::Array::len(&entries), 2);
}

#[test]
fn responses_match_across_batches_and_expire() {
    use dunes_ingest::{IngestConfig, Normalizer};
    let req = |ts: &str, id: i64| {
        json!({"ts": ts, "server_id": "s", "session_id": "x", "direction": "c2s",
               "message": {"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"t"}}})
        .to_string()
    };
    let resp = |ts: &str, id: i64| {
        json!({"ts": ts, "server_id": "s", "session_id": "x", "direction": "s2c",
               "message": {"jsonrpc":"2.0","id":id,"result":{}}})
        .to_string()
    };
    let mut n = Normalizer::new(IngestConfig {
        pending_requests_max: 2,
        pending_request_ttl_ms: 1000,
        ..IngestConfig::default()
    });
    let b1 = n
        .decode_batch(vec![
            rec(&req("2026-11-20T08:00:00Z", 1), 1),
            rec(&req("2026-11-20T08:00:00Z", 2), 2),
            rec(&req("2026-11-20T08:00:00Z", 3), 3), // evicts id 1
        ])
        .expect("b1");
    assert_eq!(b1.events.num_rows(), 3);
    assert_eq!(n.pending_requests(), 2);
    let b2 = n
        .decode_batch(vec![
            rec(&resp("2026-11-20T08:00:00.250Z", 2), 1),
            rec(&resp("2026-11-20T08:00:00.300Z", 1), 2),
            rec(&resp("2026-11-20T08:00:05Z", 3), 3), // expired
        ])
        .expect("b2");
    let ev = &b2.events;
    assert_eq!(f64v(ev, "latency_ms", 0), Some(250.0));
    assert_eq!(s(ev, "tool_name", 0).as_deref(), Some("t"));
    assert_eq!(f64v(ev, "latency_ms", 1), None);
    assert_eq!(f64v(ev, "latency_ms", 2), None);
    assert_eq!(n.pending_requests(), 0);
}

const MAML_DOC: &str = "---\nmaml_version: \"2.0.0\"\nid: \"urn:uuid:5e1f7c2a-8b3d-4c6e-9f0a-1b2c3d4e5f60\"\ntype: \"workflow\"\norigin: \"agent://etl-agent\"\npermissions:\n  read: [\"agent://*\", \"file:///data/*\"]\n  write: [\"agent://etl-agent\", \"agent://billing-agent/ledger\"]\n  execute: [\"gateway://batch\"]\nverification:\n  method: \"ml-dsa-65\"\n---\n# Load\n\n## Intent\nLoad the orders (see https://wiki.example.org/orders).\n\n## Code_Blocks\n```python\nrequests.get('http://10.0.0.7/orders')\n```\n";

#[test]
fn maml_documents_become_maml_docs_rows() {
    let read = env(
        "c2s",
        json!({"jsonrpc":"2.0","id":8,"method":"resources/read","params":{"uri":"maml://hub/load.maml.md"}}),
        json!({}),
    );
    let contents = env(
        "s2c",
        json!({"jsonrpc":"2.0","id":8,"result":{"contents":[
            {"uri":"maml://hub/load.maml.md","text":"## Intent\nno front matter"},
            {"uri":"maml://hub/other.md","text":"plain markdown, not MAML"}
        ]}}),
        json!({}),
    );
    let out = decode(&[
        &call(json!({"document": MAML_DOC, "note": "---\ntitle: x\n---\n"})),
        &read,
        &contents,
    ]);
    let m = &out.maml_docs;
    assert_eq!(m.num_rows(), 2);
    assert_eq!(s(m, "location", 0).as_deref(), Some("args"));
    assert_eq!(s(m, "tool_name", 0).as_deref(), Some("fetch_url"));
    assert_eq!(
        s(m, "doc_id", 0).as_deref(),
        Some("urn:uuid:5e1f7c2a-8b3d-4c6e-9f0a-1b2c3d4e5f60")
    );
    assert_eq!(s(m, "origin", 0).as_deref(), Some("agent://etl-agent"));
    assert_eq!(boolv(m, "valid", 0), Some(true));
    assert_eq!(s(m, "sig_status", 0).as_deref(), Some("missing"));
    assert_eq!(
        list(m, "perm_foreign", 0),
        Some(vec!["agent://billing-agent/ledger".to_string()])
    );
    assert_eq!(list(m, "code_langs", 0), Some(vec!["python".to_string()]));
    assert_eq!(
        list(m, "sections", 0),
        Some(vec!["Intent".to_string(), "Code_Blocks".to_string()])
    );
    // the resource named *.maml.md without front matter, matched to its request
    assert_eq!(s(m, "location", 1).as_deref(), Some("resource"));
    assert_eq!(
        s(m, "resource_uri", 1).as_deref(),
        Some("maml://hub/load.maml.md")
    );
    assert_eq!(boolv(m, "valid", 1), Some(false));
    assert!(s(m, "errors", 1).is_some_and(|e| e.contains("no YAML front matter")));
    // URLs come from the prose only: the front matter's URIs are declarations,
    // code blocks are code (judged by the MAML rules)
    let urls = list(&out.events, "args_urls", 0).expect("urls");
    assert_eq!(urls, vec!["https://wiki.example.org/orders".to_string()]);
}
