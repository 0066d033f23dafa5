//! The session, replay, rate, downgrade and degradation situations of the
//! DUNES standard (`dunes simulate --standard`), scored by `dunes eval`:
//! each caught by the rule written for it, no benign session flagged by a
//! rule.

mod common;

use common::{dunes, run_ok};
use serde_json::Value;

#[test]
fn standard_situations_are_caught_by_their_rules_without_benign_rule_hits() {
    let tmp = tempfile::tempdir().expect("tmp");
    let events = tmp.path().join("std.ndjson");
    let labels = tmp.path().join("std.labels.json");
    run_ok(
        dunes()
            .args(["simulate", "--standard", "--sessions", "420", "--seed", "8642"])
            .args(["--attack-ratio", "0.35", "--scenarios"])
            .arg("session_expired_reuse,auth_downgrade,principal_flood,request_replay,protocol_downgrade,server_degraded")
            .arg("--out")
            .arg(&events)
            .arg("--labels")
            .arg(&labels),
    );
    let out = dunes()
        .args(["eval", "--json", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--events")
        .arg(&events)
        .arg("--labels")
        .arg(&labels)
        .output()
        .expect("run eval");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("eval --json: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    let sc = &report["scenarios"];
    // scenario, the rule written for it, least share of its sessions that
    // incident must name (its own, or cited in a server-wide incident that
    // suppression folded it into)
    for (scenario, rule, least) in [
        ("session_expired_reuse", "session-lifetime-exceeded", 1.0),
        ("auth_downgrade", "auth-method-downgrade", 0.9),
        ("principal_flood", "principal-call-rate", 0.8),
        ("request_replay", "jsonrpc-request-replayed", 1.0),
        ("protocol_downgrade", "protocol-version-downgrade", 0.9),
        ("server_degraded", "server-error-burst", 0.0),
    ] {
        let s = &sc[scenario];
        let sessions = s["sessions"].as_u64().unwrap_or(0);
        assert!(sessions >= 5, "{scenario}: {sessions} sessions");
        let detected = s["detected"].as_u64().unwrap_or(0);
        let cited = s["cited_elsewhere"].as_u64().unwrap_or(0);
        assert!(
            (detected + cited) as f64 >= least * sessions as f64,
            "{scenario}: {detected} detected + {cited} cited of {sessions}: {s}"
        );
        assert!(
            s["rules"][rule].as_u64().unwrap_or(0) > 0,
            "{scenario} not caught by {rule}: {s}"
        );
    }
    // degraded servers: slow ones by the latency rule, failing ones by the
    // error-burst rule; every such session named by one of them
    let d = &sc["server_degraded"];
    assert!(
        d["rules"]["server-slow-responses"].as_u64().unwrap_or(0) > 0,
        "{d}"
    );
    assert_eq!(
        d["detected"].as_u64().unwrap_or(0) + d["cited_elsewhere"].as_u64().unwrap_or(0),
        d["sessions"].as_u64().unwrap_or(1),
        "{d}"
    );
    let fps = report["false_positives"]
        .as_object()
        .expect("false_positives");
    let by_rules: Vec<_> = fps
        .iter()
        .filter(|(_, rules)| {
            rules
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x != "anomaly.behaviour"))
        })
        .collect();
    assert!(
        by_rules.is_empty(),
        "benign sessions flagged by rules: {by_rules:?}"
    );
}
