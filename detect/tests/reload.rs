//! Hot reload: a broken rule set is refused (file and line named) and the
//! running engine keeps detecting; a valid changed set takes effect on the
//! next batch; state of unchanged stateful rules survives, state of changed
//! ones is dropped.

use std::path::Path;

use dunes_detect::{Engine, load_dir, reload};
mod common;

use common::batch;

fn stateless(id: &str, tool: &str) -> String {
    format!(
        "id: {id}\ntitle: T {id}\ndescription: D\nseverity: high\nlevel: 2\n\
         tags: [owasp-mcp:MCP05, atlas:AML.T0051]\nentity: [session_id]\nquery: |\n  \
         SELECT event_id, ts, session_id, server_id, tool_name FROM events WHERE tool_name = '{tool}'\n\
         tests:\n  - name: n\n    expect: 0\n    input: []\n"
    )
}

fn sequence(id: &str, description: &str) -> String {
    format!(
        "id: {id}\ntitle: T {id}\ndescription: {description}\nseverity: high\nlevel: 2\n\
         tags: [owasp-mcp:MCP05, atlas:AML.T0051]\nentity: [session_id]\nkind: sequence\n\
         sequence: {{steps: [a, b], within: 5m}}\nquery: |\n  \
         SELECT event_id, ts, session_id, server_id, CASE WHEN tool_name = 'first' THEN 'a' ELSE 'b' END AS step \
         FROM events WHERE tool_name IN ('first', 'second')\n\
         tests:\n  - name: n\n    expect: 0\n    input: []\n"
    )
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write rule");
}

fn call(id: &str, sec: u32, session: &str, tool: &str) -> String {
    format!(
        r#"{{"ts":"2026-11-20T08:00:{sec:02}Z","event_id":"{id}","server_id":"s1","direction":"c2s","session_id":"{session}","message":{{"jsonrpc":"2.0","id":{sec},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}}}"#
    )
}

/// (rule id, session) of every new incident of one batch.
async fn run(engine: &Engine, lines: &[String]) -> Vec<(String, String)> {
    let d = common::detect_batch(engine, &batch(lines)).await;
    let mut v: Vec<(String, String)> = d
        .incidents
        .iter()
        .map(|i| (i.rule_id.clone(), i.session_id.clone().unwrap_or_default()))
        .collect();
    v.sort();
    v
}

fn pair(rule: &str, session: &str) -> (String, String) {
    (rule.to_string(), session.to_string())
}

#[tokio::test]
async fn broken_reload_keeps_old_rules_and_valid_reload_takes_effect_next_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write(
        dir,
        "t/danger-tool.yaml",
        &stateless("danger-tool", "danger"),
    );
    write(
        dir,
        "t/first-then-second.yaml",
        &sequence("first-then-second", "D"),
    );
    let engine = Engine::new(load_dir(dir).expect("loads"))
        .await
        .expect("plans");

    // Step a of the sequence in sessions s1 and s2 before any reload.
    assert!(
        run(
            &engine,
            &[call("e1", 1, "s1", "first"), call("e2", 2, "s2", "first")]
        )
        .await
        .is_empty()
    );

    // A rule whose query does not plan: refused, naming file and line.
    let mut broken = stateless("broken-rule", "x");
    broken = broken.replace("tool_name FROM events", "no_such_column FROM events");
    write(dir, "t/broken-rule.yaml", &broken);
    let err = match reload(&engine, dir).await {
        Ok(_) => panic!("a broken rule set was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("broken-rule.yaml:8:"),
        "error names file and line: {err}"
    );
    // A query of the shape that takes DataFusion's sqlparser 0.62 exponential time
    // (30 levels: hours) is refused by the syntax check at once.
    let hang = stateless("broken-rule", "x").replace(
        "WHERE tool_name = 'x'",
        &format!("WHERE {}", "if(current_time(".repeat(30)),
    );
    write(dir, "t/broken-rule.yaml", &hang);
    let err = match reload(&engine, dir).await {
        Ok(_) => panic!("an unparsable rule was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("broken-rule.yaml:8: query: sql parser error"),
        "{err}"
    );

    // The old engine keeps running, state included.
    assert_eq!(
        run(
            &engine,
            &[call("e3", 3, "s1", "danger"), call("e4", 4, "s1", "second")]
        )
        .await,
        vec![pair("danger-tool", "s1"), pair("first-then-second", "s1")]
    );

    // A valid changed set: danger-tool now matches `evil`; the sequence
    // rule is unchanged, so session s2's first step is remembered.
    std::fs::remove_file(dir.join("t/broken-rule.yaml")).expect("rm");
    write(dir, "t/danger-tool.yaml", &stateless("danger-tool", "evil"));
    let (engine, kept) = reload(&engine, dir).await.expect("reloads");
    assert_eq!(kept, vec!["first-then-second".to_string()]);
    assert_eq!(
        run(
            &engine,
            &[
                call("e5", 5, "s3", "danger"),
                call("e6", 6, "s3", "evil"),
                call("e7", 7, "s2", "second"),
            ]
        )
        .await,
        vec![pair("danger-tool", "s3"), pair("first-then-second", "s2")]
    );

    // A changed stateful rule starts from a fresh state.
    assert!(
        run(&engine, &[call("e8", 8, "s4", "first")])
            .await
            .is_empty()
    );
    write(
        dir,
        "t/first-then-second.yaml",
        &sequence("first-then-second", "D, reworded"),
    );
    let (engine, kept) = reload(&engine, dir).await.expect("reloads");
    assert!(kept.is_empty(), "{kept:?}");
    assert!(
        run(&engine, &[call("e9", 9, "s4", "second")])
            .await
            .is_empty(),
        "state of a changed rule is dropped"
    );
}
