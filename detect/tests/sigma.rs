//! The shipped Sigma pack (`sigma/`): it loads through rsigma-parser, its
//! inline tests pass, and every rule gives the same incidents as its native
//! twin in `rules/` on two simulator corpora and the public real-SDK corpus
//! (a golden comparison of entity, event ids and time span per incident).
//! Also: importing a directory of SigmaHQ-style rules reports each rule.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use dunes_detect::{Engine, LoadedRule, ResponseConfig, load_dir, testing::run_inline_tests};
use dunes_ingest::{IngestConfig, Normalizer};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sigma_pack() -> Vec<LoadedRule> {
    load_dir(&root().join("sigma")).expect("the Sigma pack loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_sigma_rules_load_and_pass_their_inline_tests() {
    let rules = sigma_pack();
    assert!(rules.len() >= 15, "only {} Sigma rules", rules.len());
    for r in &rules {
        let s = r.config.sigma.as_ref().expect("sigma origin kept");
        assert_eq!(r.source_format(), "sigma");
        assert!(
            s.id.is_some() && s.twin.is_some(),
            "{}: id and twin",
            r.config.id
        );
        let t = &r.config.tests;
        assert!(
            t.iter().any(|t| t.expect > 0),
            "{}: no positive test",
            r.config.id
        );
        assert!(
            t.iter().any(|t| t.expect == 0),
            "{}: no negative test",
            r.config.id
        );
    }
    let kinds: BTreeSet<&str> = rules
        .iter()
        .filter_map(|r| r.config.sigma.as_ref().map(|s| s.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["event_count", "rule", "temporal_ordered"]),
        "detection rules and both correlation kinds are shipped"
    );
    let engine = Engine::new(rules).await.expect("the Sigma pack plans");
    let failures: Vec<String> = run_inline_tests(&engine)
        .await
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.to_string())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What an incident is, for the golden comparison: entity, all its event
/// ids and its time span (incident ids and rule hashes differ by design).
type Key = (String, Vec<String>, String, String);

/// Runs `rules` over `lines` in 4096-envelope batches; final incidents of
/// each rule id (suppressed matches folded in through `updates`).
async fn incidents(rules: Vec<LoadedRule>, lines: &[String]) -> BTreeMap<String, BTreeSet<Key>> {
    let engine = Engine::new(rules).await.expect("plans");
    let mut norm = Normalizer::new(IngestConfig::default());
    let mut by_id: BTreeMap<String, dunes_detect::Incident> = BTreeMap::new();
    for chunk in lines.chunks(4096) {
        let b = norm.decode_batch(common::records(chunk)).expect("decodes");
        let d = dunes_detect::detect(
            &engine,
            b.tables(),
            chrono::Utc::now(),
            &ResponseConfig::default(),
        )
        .await
        .expect("detects");
        for i in d.incidents.into_iter().chain(d.updates) {
            by_id.insert(i.incident_id.clone(), i);
        }
    }
    let mut out: BTreeMap<String, BTreeSet<Key>> = BTreeMap::new();
    for i in by_id.into_values() {
        let mut ids = i.event_ids.clone();
        ids.sort();
        out.entry(i.rule_id.clone()).or_default().insert((
            serde_json::to_string(&i.entity).expect("entity"),
            ids,
            i.first_ts.to_rfc3339(),
            i.last_ts.to_rfc3339(),
        ));
    }
    out
}

fn simulated(seed: u64, sessions: u64) -> Vec<String> {
    dunes_sim::Simulator::new(dunes_sim::SimConfig {
        sessions,
        seed,
        ..dunes_sim::SimConfig::default()
    })
    .collect()
}

fn public_corpus() -> Vec<String> {
    let f = std::fs::File::open(root().join("examples/corpus/mcp-public.ndjson.gz"))
        .expect("shipped public corpus");
    let mut text = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut text)
        .expect("gunzip");
    text.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigma_twins_give_the_same_incidents_as_their_native_rules() {
    let sigma = sigma_pack();
    let twin_of: BTreeMap<String, String> = sigma
        .iter()
        .map(|r| {
            let twin = r.config.sigma.as_ref().and_then(|s| s.twin.clone());
            (
                r.config.id.clone(),
                twin.expect("every shipped Sigma rule names its twin"),
            )
        })
        .collect();
    let wanted: BTreeSet<&String> = twin_of.values().collect();
    let native: Vec<LoadedRule> = load_dir(&root().join("rules"))
        .expect("native pack")
        .into_iter()
        .filter(|r| wanted.contains(&r.config.id))
        .collect();
    assert_eq!(native.len(), twin_of.len(), "every twin exists in rules/");
    let corpora = [
        ("simulator seed 7", simulated(7, 600)),
        ("simulator seed 8", simulated(8, 600)),
        ("public real-SDK corpus", public_corpus()),
    ];
    let mut fired = BTreeSet::new();
    for (name, lines) in &corpora {
        let got_sigma = incidents(sigma.clone(), lines).await;
        let got_native = incidents(native.clone(), lines).await;
        for (sigma_id, twin) in &twin_of {
            let s = got_sigma.get(sigma_id).cloned().unwrap_or_default();
            let n = got_native.get(twin).cloned().unwrap_or_default();
            assert_eq!(
                s,
                n,
                "{name}: Sigma rule {sigma_id} and native {twin} differ \
                 (only Sigma: {:?}; only native: {:?})",
                s.difference(&n).take(3).collect::<Vec<_>>(),
                n.difference(&s).take(3).collect::<Vec<_>>()
            );
            if !s.is_empty() {
                fired.insert(sigma_id.clone());
            }
        }
    }
    // The comparison is not vacuous: most twins fire on these corpora.
    assert!(
        fired.len() >= 12,
        "only {} of {} twins fired: {fired:?}",
        fired.len(),
        twin_of.len()
    );
}

/// SigmaHQ-style rules of other products, unsupported modifiers and broken
/// files are each reported (never a panic); the convertible ones import and
/// the imported files load back as native rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_every_rule_imported_or_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("in");
    std::fs::create_dir_all(&src).expect("mkdir");
    let files = [
        (
            "windows.yml",
            "title: Whoami\nlogsource: {product: windows, category: process_creation}\n\
             detection: {selection: {CommandLine|contains: whoami}, condition: selection}\nlevel: low\n",
        ),
        (
            "wide.yml",
            "title: Wide\nlogsource: {product: mcp}\n\
             detection: {selection: {args_text|wide|base64offset|contains: ping}, condition: selection}\n",
        ),
        (
            "unknown-field.yml",
            "title: Unknown field\nlogsource: {product: mcp, category: tool_call}\n\
             detection: {selection: {CommandLine: x}, condition: selection}\n",
        ),
        (
            "sum.yml",
            "title: Base\nname: base_rule\nlogsource: {product: mcp}\n\
             detection: {selection: {direction: c2s}, condition: selection}\n---\n\
             title: Sum\ncorrelation: {type: value_sum, rules: [base_rule], group-by: [session_id], \
             timespan: 1m, condition: {gte: 10, field: args_bytes}}\n",
        ),
        ("broken.yml", "title: [unclosed\ndetection:\n"),
        (
            "ok.yml",
            "title: Reads a private key file\nid: 6c1f1d1e-0000-4000-8000-000000000001\n\
             tags: [attack.t1552.004]\nlogsource: {product: mcp, category: tool_call}\n\
             detection:\n  sel: {gen_ai.tool.call.arguments|contains|all: ['.ssh/', 'id_']}\n\
             \x20 internal: {args_url_hosts|cidr: ['10.0.0.0/8', '169.254.0.0/16']}\n\
             \x20 condition: sel or internal\nfalsepositives: [key rotation jobs]\nlevel: high\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(src.join(name), text).expect("write");
    }
    let out = dir.path().join("out");
    let report = dunes_detect::sigma::import(std::slice::from_ref(&src), &out)
        .await
        .expect("import runs");
    let text = report.lines.join("\n");
    assert_eq!(
        (report.imported, report.inputs, report.refused),
        (1, 1, 5),
        "{text}"
    );
    for needle in [
        "windows.yml: Sigma rule \"Whoami\": logsource product \"windows\": Dunes maps `product: mcp` only",
        "wide.yml: Sigma rule \"Wide\": detection \"selection\": args_text|wide|base64offset|contains: UTF-16 encodings cannot match",
        "unknown-field.yml: Sigma rule \"Unknown field\": detection \"selection\": CommandLine: field \"CommandLine\" is not a column of events",
        "sum.yml: Sigma rule \"Sum\": correlation type value_sum: value_sum / value_avg / value_percentile / value_median are not supported",
        "broken.yml",
        "input    ",
        "imported ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The imported rule is a native file that keeps the Sigma metadata and
    // matches what the Sigma rule says.
    let rules = load_dir(&out).expect("imported files load as native rules");
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(r.config.id, "ok");
    let s = r.config.sigma.as_ref().expect("sigma block");
    assert_eq!(
        s.id.as_deref(),
        Some("6c1f1d1e-0000-4000-8000-000000000001")
    );
    assert_eq!(s.falsepositives, ["key rotation jobs"]);
    assert_eq!(r.config.tags, ["attack.t1552.004"]);
    let engine = Engine::new(rules).await.expect("plans");
    let call = |id: u32, args: &str| {
        format!(
            r#"{{"ts":"2026-09-01T10:00:0{id}Z","server_id":"s","direction":"c2s","session_id":"x{id}","message":{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read","arguments":{args}}}}}}}"#
        )
    };
    let lines = [
        call(1, r#"{"path":"/home/a/.SSH/ID_rsa"}"#),
        call(2, r#"{"path":"/home/a/.ssh/known_hosts"}"#),
        call(3, r#"{"url":"http://169.254.169.254/latest"}"#),
        call(4, r#"{"url":"http://[::ffff:10.1.2.3]/"}"#),
        call(5, r#"{"url":"http://example.org/"}"#),
    ];
    let d = common::detect_batch(&engine, &common::batch(&lines)).await;
    let mut sessions: Vec<String> = d
        .incidents
        .iter()
        .filter_map(|i| i.session_id.clone())
        .collect();
    sessions.sort();
    assert_eq!(sessions, ["x1", "x3", "x4"]);
}

/// `value_count` and `temporal` (unordered) correlations convert to
/// distinct-count thresholds and fire where Sigma says they should; their
/// inline tests carry positive and negative cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_count_and_temporal_correlations_fire_as_sigma_defines() {
    let call = |sess: &str, sec: u32, id: u32, method: &str, tool: &str| {
        format!(
            r#"{{"ts":"2026-09-01T10:00:{sec:02}Z","server_id":"s","direction":"c2s","session_id":"{sess}","message":{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{"name":"{tool}","arguments":{{}}}}}}}}"#
        )
    };
    let tests = |pos: &[String], neg: &[String]| {
        format!(
            "    tests:\n      - name: fires\n        expect: 1\n        input: [{}]\n      - name: quiet\n        expect: 0\n        input: [{}]\n",
            pos.join(", "),
            neg.join(", ")
        )
    };
    let value_count = format!(
        "title: Tool call\nname: any_tool_call\nlogsource: {{product: mcp, category: tool_call}}\n\
         detection: {{selection: {{msg_kind: request}}, condition: selection}}\n---\n\
         title: Three different tools in a minute\nname: tool_spray\n\
         correlation:\n  type: value_count\n  rules: [any_tool_call]\n  group-by: [mcp.session.id]\n  timespan: 1m\n  condition: {{gte: 3, field: gen_ai.tool.name}}\n\
         level: low\ndunes:\n{}",
        tests(
            &[
                call("a", 0, 1, "tools/call", "t1"),
                call("a", 10, 2, "tools/call", "t2"),
                call("a", 20, 3, "tools/call", "t3")
            ],
            &[
                call("b", 0, 1, "tools/call", "t1"),
                call("b", 10, 2, "tools/call", "t1"),
                call("b", 59, 3, "tools/call", "t2")
            ],
        )
    );
    let temporal = format!(
        "title: Listed tools\nname: listed\nlogsource: {{product: mcp}}\n\
         detection: {{selection: {{mcp.method.name: tools/list, direction: c2s}}, condition: selection}}\n---\n\
         title: Deleted a repo\nname: deleted\nlogsource: {{product: mcp, category: tool_call}}\n\
         detection: {{selection: {{gen_ai.tool.name|endswith: _repo, tool_name|startswith: delete}}, condition: selection}}\n---\n\
         title: Listing and deleting in one session\nname: list_and_delete\n\
         correlation:\n  type: temporal\n  rules: [listed, deleted]\n  group-by: [session_id]\n  timespan: 5m\n\
         level: high\ndunes:\n{}",
        tests(
            &[
                call("c", 0, 1, "tools/call", "DELETE_repo"),
                call("c", 30, 2, "tools/list", "")
            ],
            &[
                call("d", 0, 1, "tools/list", ""),
                call("d", 30, 2, "tools/call", "delete_branch")
            ],
        )
    );
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("spray.yml"), value_count).expect("write");
    std::fs::write(dir.path().join("listdel.yml"), temporal).expect("write");
    let rules = load_dir(dir.path()).expect("loads");
    let kinds: BTreeMap<String, (String, String)> = rules
        .iter()
        .map(|r| {
            let t = r.config.threshold.as_ref().expect("threshold");
            (
                r.config.id.clone(),
                (
                    r.config.sigma.as_ref().expect("sigma").kind.clone(),
                    format!("{:?} {:?} {}", t.aggregate, t.column, t.min),
                ),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            (
                "list-and-delete".to_string(),
                (
                    "temporal".to_string(),
                    "Distinct Some(\"step\") 2".to_string()
                )
            ),
            (
                "tool-spray".to_string(),
                (
                    "value_count".to_string(),
                    "Distinct Some(\"tool_name\") 3".to_string()
                )
            ),
        ])
    );
    let engine = Engine::new(rules).await.expect("plans");
    let outcomes = run_inline_tests(&engine).await;
    assert_eq!(outcomes.len(), 4);
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.to_string())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const FIELDS: &[&str] = &[
    "direction",
    "mcp.method.name",
    "tool_name",
    "args_text",
    "args_decoded",
    "result_text",
    "args_host_classes",
    "args_url_hosts",
    "args_keys",
    "args_max_len",
    "args_max_entropy",
    "aud_ok",
    "http_status",
    "src_ip",
    "labels.env",
    "ts",
    "origin",
    "CommandLine",
    "session_id",
];
const MODIFIERS: &[&str] = &[
    "contains",
    "startswith",
    "endswith",
    "all",
    "re",
    "i",
    "m",
    "s",
    "cased",
    "base64",
    "base64offset",
    "windash",
    "cidr",
    "gt",
    "gte",
    "lt",
    "lte",
    "neq",
    "exists",
    "fieldref",
    "hour",
    "year",
    "wide",
    "expand",
];
const VALUES: &[&str] = &[
    "c2s",
    "'*'",
    "'tools/call'",
    "'a*b?c'",
    "5",
    "2.5",
    "true",
    "null",
    "'10.0.0.0/8'",
    "'(?i)x+'",
    "'(unclosed'",
    "'-enc'",
    "'tool_name'",
    "'[a'",
    "''",
    "'ÄÖ\\u200b'",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

    /// Random combinations of fields, modifiers, values and conditions: the
    /// converter never panics, and whatever it converts plans against the
    /// schema (a refusal is fine; SQL that does not plan is a converter bug).
    #[test]
    fn any_sigma_detection_is_converted_to_sql_that_plans_or_refused(
        items in proptest::collection::vec(
            (0..FIELDS.len(), proptest::collection::vec(0..MODIFIERS.len(), 0..2),
             proptest::collection::vec(0..VALUES.len(), 1..3), 0..2usize),
            1..4),
        cond in 0..4usize,
        category in 0..7usize,
    ) {
        let mut det = String::new();
        for (n, (f, mods, vals, sel)) in items.iter().enumerate() {
            let key: String = std::iter::once(FIELDS[*f].to_string())
                .chain(mods.iter().map(|m| MODIFIERS[*m].to_string()))
                .collect::<Vec<_>>()
                .join("|");
            let vals: Vec<&str> = vals.iter().map(|v| VALUES[*v]).collect();
            det.push_str(&format!("  {}_{n}:\n    '{key}': [{}]\n",
                if *sel == 0 { "selection" } else { "filter" }, vals.join(", ")));
        }
        let condition = ["1 of selection_*", "all of them", "1 of selection_* and not 1 of filter_*", "2 of them"][cond];
        let category = ["", "tool_call", "tool_result", "tool_definition", "transport", "auth", "nope"][category];
        let yaml = format!(
            "title: Random\nlogsource:\n  product: mcp\n{}detection:\n{det}  condition: {condition}\n",
            if category.is_empty() { String::new() } else { format!("  category: {category}\n") }
        );
        let outcomes = dunes_detect::sigma::convert(&[(PathBuf::from("r.yml"), yaml.clone().into_bytes())]);
        proptest::prop_assert_eq!(outcomes.len(), 1, "{}", yaml);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        for o in outcomes {
            match o.result {
                Ok(Some(rule)) => {
                    let query = rule.config.query.clone();
                    let planned = rt.block_on(Engine::new(vec![rule]));
                    proptest::prop_assert!(planned.is_ok(), "{yaml}\n{query}\n{:?}", planned.err());
                }
                Ok(None) => proptest::prop_assert!(false, "not a correlation input"),
                Err(e) => {
                    let msg = e.to_string();
                    proptest::prop_assert!(msg.contains("r.yml: Sigma rule"), "{msg}");
                }
            }
        }
    }
}

/// A correlation naming a rule that two files define is refused, not bound
/// to whichever file came first.
#[test]
fn an_ambiguous_correlation_reference_is_refused() {
    let base = "title: Base\nname: dup\nlogsource: {product: mcp}\n\
                detection: {selection: {direction: c2s}, condition: selection}\n";
    let corr = "title: Many\ncorrelation: {type: event_count, rules: [dup], group-by: [session_id], \
                timespan: 1m, condition: {gte: 5}}\n";
    let files = [
        (PathBuf::from("a.yml"), base.as_bytes().to_vec()),
        (
            PathBuf::from("b.yml"),
            format!("{base}---\n{corr}").into_bytes(),
        ),
    ];
    let outcomes = dunes_detect::sigma::convert(&files);
    let refused: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert_eq!(
        refused,
        [
            "b.yml: Sigma rule \"Many\": rules: dup: no Sigma rule, or more than one, has that id or name among the loaded files"
        ]
    );
    // Without the second definition the same correlation converts.
    let outcomes = dunes_detect::sigma::convert(&files[1..]);
    assert!(outcomes.iter().all(|o| o.result.is_ok()));
    // A correlation over no rules is refused (by the parser or by Dunes), not a panic.
    let empty = corr.replace("rules: [dup]", "rules: []");
    let outcomes = dunes_detect::sigma::convert(&[(PathBuf::from("c.yml"), empty.into_bytes())]);
    assert!(!outcomes.is_empty() && outcomes.iter().all(|o| o.result.is_err()));
}
