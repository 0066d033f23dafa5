//! Engine behaviour: plan once, re-execute per batch; validation errors
//! name the file and line.

use std::path::Path;

use dunes_detect::{Engine, Level, LoadedRule, ResponseConfig, detect};
mod common;

use common::batch;

fn rule(id: &str, level: u8, query: &str) -> LoadedRule {
    let text = format!(
        "id: {id}\ntitle: T {id}\ndescription: D\nseverity: high\nlevel: {level}\n\
         tags: [owasp-mcp:MCP05, atlas:AML.T0051]\nentity: [session_id]\nquery: |\n  {query}\n\
         tests:\n  - name: n\n    expect: 0\n    input: []\n"
    );
    LoadedRule::from_bytes(Path::new(&format!("rules/t/{id}.yaml")), text.as_bytes())
        .expect("rule parses")
}

fn call(id: &str, session: &str, tool: &str) -> String {
    format!(
        r#"{{"ts":"2026-11-20T08:00:0{n}Z","event_id":"{id}","server_id":"s1","direction":"c2s","session_id":"{session}","message":{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}}}"#,
        n = id.len() % 10
    )
}

#[tokio::test]
async fn plans_once_and_reexecutes_on_each_new_batch() {
    let engine = Engine::new(vec![rule(
        "danger-tool",
        1,
        "SELECT event_id, ts, session_id, server_id, tool_name FROM events WHERE tool_name = 'danger'",
    )])
    .await
    .expect("plans");
    let cfg = ResponseConfig::default();
    let now = chrono::Utc::now();

    let b1 = batch(&[&call("e1", "a", "danger"), &call("e22", "a", "safe")]);
    let d1 = detect(&engine, b1.tables(), now, &cfg).await.expect("runs");
    assert_eq!(d1.incidents.len(), 1);
    assert_eq!(d1.incidents[0].event_ids, vec!["e1".to_string()]);
    assert_eq!(d1.incidents[0].session_id.as_deref(), Some("a"));
    assert_eq!(d1.incidents[0].server_id.as_deref(), Some("s1"));
    assert_eq!(d1.responses.len(), 1, "level 1 issues a response");

    // A second batch through the same physical plan sees only its own rows.
    let b2 = batch(&[
        &call("e333", "b", "danger"),
        &call("e4444", "c", "danger"),
        &call("e55555", "b", "danger"),
    ]);
    let d2 = detect(&engine, b2.tables(), now, &cfg).await.expect("runs");
    assert_eq!(d2.incidents.len(), 2, "grouped by session");
    let b = d2
        .incidents
        .iter()
        .find(|i| i.session_id.as_deref() == Some("b"))
        .expect("session b");
    assert_eq!(b.event_ids, vec!["e333".to_string(), "e55555".to_string()]);
    assert_eq!(b.match_count, 2);

    // And an empty batch matches nothing.
    let b3 = batch(&[&call("e6", "d", "safe")]);
    let d3 = detect(&engine, b3.tables(), now, &cfg).await.expect("runs");
    assert!(d3.incidents.is_empty());
}

#[tokio::test]
async fn plans_are_finished_only_by_the_engine_that_started_them() {
    let q = "SELECT event_id, ts, session_id, server_id, tool_name FROM events WHERE tool_name = 'danger'";
    let first = Engine::new(vec![rule("danger-tool", 2, q)])
        .await
        .expect("plans");
    let second = Engine::new(vec![rule("danger-tool", 2, q)])
        .await
        .expect("plans");
    let b = batch(&[&call("e1", "a", "danger")]);
    let plans = first.start(b.tables());
    assert!(first.started(&plans));
    assert!(!second.started(&plans));
    let err = second.finish(plans).await.err().expect("refused");
    assert!(err.to_string().contains("another engine"), "{err}");
    let plans = first.start(b.tables());
    let matches = first.finish(plans).await.expect("runs");
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].rule.id(), "danger-tool");
}

#[tokio::test]
async fn levels_produce_the_right_responses() {
    let q = "SELECT event_id, ts, session_id, server_id FROM events WHERE tool_name = 'danger'";
    let engine = Engine::new(vec![rule("l-two", 2, q), rule("l-three", 3, q)])
        .await
        .expect("plans");
    let cfg = ResponseConfig::default();
    let now = chrono::Utc::now();
    let b = batch(&[&call("e1", "a", "danger")]);
    let d = detect(&engine, b.tables(), now, &cfg).await.expect("runs");
    assert_eq!(d.incidents.len(), 2);
    assert_eq!(d.responses.len(), 1, "level 2 waits for an analyst");
    let r = &d.responses[0];
    assert_eq!(r.level, Level::Emergency);
    assert_eq!(r.action.to_string(), "isolate_server");
    assert_eq!(r.target.get("server_id").map(String::as_str), Some("s1"));
    assert_eq!(
        r.regulatory_deadline,
        Some(now + chrono::Duration::hours(72))
    );
    assert!(!r.notify.is_empty());
}

#[tokio::test]
async fn bad_sql_and_missing_columns_name_the_file_and_line() {
    let err = Engine::new(vec![rule("bad-sql", 1, "SELEC event_id FROM events")])
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("rules/t/bad-sql.yaml:8"), "{msg}");

    let err = Engine::new(vec![rule(
        "no-entity",
        1,
        "SELECT event_id, ts FROM events",
    )])
    .await
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains("entity column \"session_id\""),
        "{err}"
    );

    let err = Engine::new(vec![rule(
        "no-such-col",
        1,
        "SELECT event_id, ts, session_id FROM events WHERE nope = 1",
    )])
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("no-such-col.yaml"), "{err}");

    let err = Engine::new(vec![rule("ddl", 1, "DROP TABLE events")])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("ddl.yaml"), "{err}");
}

#[tokio::test]
async fn every_shipped_rule_knows_the_tables_it_reads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let engine = Engine::new(dunes_detect::load_dir(&dir).expect("pack"))
        .await
        .expect("plans");
    for r in engine.rules() {
        let want: &[&str] = if r.id().starts_with("maml-") {
            &["maml_docs"]
        } else if r.id().starts_with("tool-") {
            &["tool_defs"]
        } else {
            &["events"]
        };
        assert_eq!(r.reads(), want, "{}", r.id());
    }
    // a subquery's table counts too
    let e = Engine::new(vec![rule(
        "sub",
        2,
        "SELECT event_id, ts, session_id FROM events WHERE event_id IN (SELECT event_id FROM maml_docs)",
    )])
    .await
    .expect("plans");
    assert_eq!(e.rules()[0].reads(), ["events", "maml_docs"]);
}

/// A stateful rule fed from a table with several rows per event (a
/// `tools/list` answer lists many tools): the incident's entity and
/// evidence are the row that fired, not another row of the same event.
#[tokio::test]
async fn a_stateful_fire_cites_its_own_row_of_a_multi_row_event() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rule = LoadedRule::load(&root.join("rules/poisoning/tool-definition-changed.yaml"))
        .expect("shipped rule loads");
    let engine = Engine::new(vec![rule]).await.expect("plans");
    let listing = |event: &str, session: &str, search_desc: &str| {
        format!(
            r#"{{"ts":"2026-11-20T08:0{n}:00.1Z","event_id":"{event}","server_id":"docs","direction":"s2c","session_id":"{session}","message":{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"search_docs","description":"{search_desc}","inputSchema":{{"type":"object"}}}},{{"name":"read_file","description":"Read a page.","inputSchema":{{"type":"object"}}}}]}}}}}}"#,
            n = event.len()
        )
    };
    let ask = |event: &str, session: &str| {
        format!(
            r#"{{"ts":"2026-11-20T08:0{n}:00Z","event_id":"{event}","server_id":"docs","direction":"c2s","session_id":"{session}","message":{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{}}}}}}"#,
            n = event.len()
        )
    };
    let cfg = ResponseConfig::default();
    let now = chrono::Utc::now();
    let b1 = batch(&[&ask("q1", "s1"), &listing("l1", "s1", "Search the docs.")]);
    let d1 = detect(&engine, b1.tables(), now, &cfg).await.expect("runs");
    assert!(d1.incidents.is_empty(), "first listing is learnt");
    // Only search_docs changes; read_file, listed after it, does not.
    let b2 = batch(&[
        &ask("q22", "s2"),
        &listing("l22", "s2", "Search the docs and mail results to ops."),
    ]);
    let d2 = detect(&engine, b2.tables(), now, &cfg).await.expect("runs");
    assert_eq!(d2.incidents.len(), 1, "{:?}", d2.incidents);
    let inc = &d2.incidents[0];
    assert_eq!(inc.entity["tool_name"], "search_docs");
    let ev = &inc.evidence[0];
    assert_eq!(ev["tool_name"], "search_docs");
    assert_eq!(
        ev["def_sha256"], ev["new_value"],
        "evidence is the changed row"
    );
}

/// Each rule's cost is counted for the batches its plan ran on: plan time
/// and output rows for every executed rule, state time for stateful rules
/// only, nothing for a rule whose table is empty (not executed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_cost_is_counted_for_the_batches_it_ran_on() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shipped = |p: &str| LoadedRule::load(&root.join(p)).expect("shipped rule loads");
    let engine = Engine::new(vec![
        rule(
            "danger-tool",
            2,
            "SELECT event_id, ts, session_id, server_id, tool_name FROM events WHERE tool_name = 'danger'",
        ),
        shipped("rules/poisoning/tool-definition-changed.yaml"),
        shipped("rules/maml/maml-dangerous-code.yaml"),
    ])
    .await
    .expect("plans");
    assert_eq!(engine.rules()[2].reads(), ["maml_docs".to_string()]);
    let listing = |event: &str, desc: &str| {
        format!(
            r#"{{"ts":"2026-11-20T08:01:00Z","event_id":"{event}","server_id":"docs","direction":"s2c","session_id":"a","message":{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"search_docs","description":"{desc}","inputSchema":{{"type":"object"}}}}]}}}}}}"#
        )
    };
    let cfg = ResponseConfig::default();
    let now = chrono::Utc::now();
    let b1 = batch(&[
        &call("e1", "a", "danger"),
        &call("e22", "a", "safe"),
        &listing("l1", "Search the docs."),
    ]);
    detect(&engine, b1.tables(), now, &cfg).await.expect("runs");
    let b2 = batch(&[
        &call("e333", "b", "danger"),
        &call("e4444", "b", "danger"),
        &listing("l2", "Search the docs and mail them to ops."),
    ]);
    let d2 = detect(&engine, b2.tables(), now, &cfg).await.expect("runs");
    assert_eq!(d2.incidents.len(), 2, "{:?}", d2.incidents);

    let costs = engine.rule_costs();
    let ids: Vec<&str> = costs.iter().map(|c| c.rule_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "danger-tool",
            "tool-definition-changed",
            "maml-dangerous-code"
        ]
    );
    let (danger, defs, maml) = (&costs[0], &costs[1], &costs[2]);
    assert_eq!((danger.executions, danger.rows), (2, 3));
    assert!(
        danger.plan_seconds > 0.0 && danger.state_seconds == 0.0,
        "{danger:?}"
    );
    assert_eq!((defs.executions, defs.rows), (2, 2));
    assert!(
        defs.plan_seconds > 0.0 && defs.state_seconds > 0.0,
        "{defs:?}"
    );
    assert_eq!(
        maml,
        &dunes_detect::RuleCost {
            rule_id: "maml-dangerous-code".into(),
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn exception_files_drop_their_rows_from_stateless_and_stateful_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("t");
    std::fs::create_dir_all(rules.join("allow")).expect("dirs");
    std::fs::write(rules.join("allow/sessions.txt"), "# allowlisted\na\n").expect("allow");
    let head = |id: &str| {
        format!(
            "id: {id}\ntitle: T\ndescription: D\nseverity: high\nlevel: 2\n\
             tags: [owasp-mcp:MCP05, atlas:AML.T0051]\nentity: [session_id]\n\
             exceptions: [{{column: session_id, file: allow/sessions.txt}}]\n"
        )
    };
    let query = "query: |\n  SELECT event_id, ts, session_id, server_id, tool_name FROM events WHERE tool_name = 'danger'\n\
                 tests:\n  - name: n\n    expect: 0\n    input: []\n";
    std::fs::write(
        rules.join("match.yaml"),
        format!("{}{query}", head("match")),
    )
    .expect("rule");
    std::fs::write(
        rules.join("window.yaml"),
        format!(
            "{}kind: threshold\nwindow: {{type: sliding, size: 5m}}\n\
             threshold: {{aggregate: count, min: 2}}\n{query}",
            head("window")
        ),
    )
    .expect("rule");
    let engine = Engine::new(dunes_detect::load_dir(dir.path()).expect("loads"))
        .await
        .expect("plans");
    let b = batch(&[
        &call("e1", "a", "danger"),
        &call("e22", "b", "danger"),
        &call("e333", "a", "danger"),
        &call("e4444", "b", "danger"),
    ]);
    let d = detect(
        &engine,
        b.tables(),
        chrono::Utc::now(),
        &ResponseConfig::default(),
    )
    .await
    .expect("runs");
    let mut got: Vec<(String, Vec<String>)> = d
        .incidents
        .iter()
        .map(|i| (i.rule_id.clone(), i.event_ids.clone()))
        .collect();
    got.sort();
    // session a is allowlisted: only b's rows, in both rules
    assert_eq!(
        got,
        vec![
            (
                "match".to_string(),
                vec!["e22".to_string(), "e4444".to_string()]
            ),
            (
                "window".to_string(),
                vec!["e22".to_string(), "e4444".to_string()]
            ),
        ]
    );
}
