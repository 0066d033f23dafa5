//! `dunes rules lint` (dunes_detect::lint): a broken rule directory gives
//! one specific error per problem, naming the file and line; the shipped
//! pack is clean.

use std::path::{Path, PathBuf};

use dunes_detect::lint::lint_dir;

const GOOD: &str = r#"id: good-rule
title: A good rule
description: Catches something.
severity: high
level: 2
tags: [owasp-mcp:MCP05, atlas:AML.T0049]
entity: [session_id]
query: |
  SELECT event_id, ts, session_id FROM events WHERE method = 'tools/call'
tests:
  - name: positive
    expect: 1
    input:
      - {ts: "2026-01-01T00:00:00Z", server_id: s, direction: c2s, session_id: a,
         message: {jsonrpc: "2.0", id: 1, method: tools/call, params: {name: x, arguments: {}}}}
  - name: negative
    expect: 0
    input: []
"#;

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn as_rule(id: &str) -> String {
    GOOD.replace("id: good-rule", &format!("id: {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rule_dir_gives_specific_errors_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "a/good-rule.yaml", GOOD);
    // id does not match the file name
    write(d, "a/misnamed.yaml", &as_rule("other-name"));
    // duplicate id (file name matches, id repeats good-rule)
    write(d, "b/good-rule.yaml", GOOD);
    // malformed tags, empty description
    write(
        d,
        "a/bad-tags.yaml",
        &as_rule("bad-tags")
            .replace(
                "tags: [owasp-mcp:MCP05, atlas:AML.T0049]",
                "tags: [owasp-mcp:MCP11, atlas:T49, mitre:T1190]",
            )
            .replace("description: Catches something.", "description: \" \""),
    );
    // no negative test
    write(
        d,
        "a/no-negative.yaml",
        &as_rule("no-negative").replace("    expect: 0\n", "    expect: 2\n"),
    );
    // SQL that does not plan against the schema
    write(
        d,
        "a/bad-sql.yaml",
        &as_rule("bad-sql").replace("WHERE method", "WHERE no_such_column"),
    );
    // invalid severity (a YAML-level error, with its line)
    write(
        d,
        "a/bad-severity.yaml",
        &as_rule("bad-severity").replace("severity: high", "severity: urgent"),
    );
    let report = lint_dir(d).await.expect("lint runs");
    let lines: Vec<String> = report.issues.iter().map(|i| i.to_string()).collect();
    let has = |file: &str, needle: &str| {
        assert!(
            lines.iter().any(|l| l.contains(file) && l.contains(needle)),
            "no error for {file} containing {needle:?} in:\n{}",
            lines.join("\n")
        )
    };
    assert_eq!(report.files, 7);
    has(
        "misnamed.yaml:1",
        "does not match the file name \"misnamed\"",
    );
    has("b/good-rule.yaml:1", "duplicate rule id \"good-rule\"");
    has("bad-tags.yaml:6", "tag \"owasp-mcp:MCP11\"");
    has("bad-tags.yaml:6", "tag \"atlas:T49\"");
    has("bad-tags.yaml:6", "tag \"mitre:T1190\"");
    has("bad-tags.yaml:6", "no OWASP MCP Top 10 tag");
    has("bad-tags.yaml:6", "no MITRE ATLAS technique tag");
    has("bad-tags.yaml:3", "description is empty");
    has("no-negative.yaml:10", "no negative inline test");
    has("bad-sql.yaml:8", "no_such_column");
    has("bad-severity.yaml:4", "unknown variant `urgent`");
    // The good rule itself is clean.
    assert!(
        !lines.iter().any(|l| l
            .split(':')
            .next()
            .is_some_and(|f| f.ends_with("a/good-rule.yaml"))),
        "{lines:?}"
    );
    assert!(!report.ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_pack_lints_clean() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let report = lint_dir(&dir).await.expect("lint runs");
    let lines: Vec<String> = report.issues.iter().map(|i| i.to_string()).collect();
    assert!(report.ok(), "{}", lines.join("\n"));
    assert!(report.files >= 30, "{} rule files", report.files);
}
