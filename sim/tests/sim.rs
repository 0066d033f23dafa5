use std::collections::{BTreeMap, BTreeSet};

use dunes_sim::{Scenario, SimConfig, Simulator, generate_labels, labels_json, write_ndjson};
use serde_json::Value;

fn cfg(sessions: u64, seed: u64) -> SimConfig {
    SimConfig {
        sessions,
        seed,
        ..SimConfig::default()
    }
}

fn run(c: &SimConfig) -> Vec<u8> {
    let mut buf = Vec::new();
    write_ndjson(c, &mut buf).expect("write");
    buf
}

#[test]
fn deterministic_same_seed_different_seed() {
    let a = run(&cfg(60, 7));
    let b = run(&cfg(60, 7));
    let c = run(&cfg(60, 8));
    assert!(!a.is_empty());
    assert_eq!(a, b, "same seed must give identical bytes");
    assert_ne!(a, c, "different seeds must differ");
    assert_eq!(generate_labels(&cfg(60, 7)), generate_labels(&cfg(60, 7)));
}

#[test]
fn lines_valid_sorted_unique_and_labelled() {
    lines_valid(
        cfg(150, 42),
        &all_but(&[&Scenario::MAML, &Scenario::STANDARD]),
    );
}

#[test]
fn with_standard_every_scenario_of_the_standard_too() {
    let c = SimConfig {
        standard: true,
        ..cfg(400, 42)
    };
    lines_valid(c.clone(), &all_but(&[&Scenario::MAML]));
    // without the flag none of them is generated
    let plain = generate_labels(&cfg(400, 42));
    assert!(plain.values().all(|s| !Scenario::STANDARD.contains(s)));
}

#[test]
fn with_maml_every_scenario_including_the_maml_ones() {
    let c = SimConfig {
        maml: true,
        ..cfg(200, 42)
    };
    lines_valid(c.clone(), &all_but(&[&Scenario::STANDARD]));
    // MAML documents on the wire: benign ones and attacks
    let text = String::from_utf8(run(&c)).expect("utf-8");
    assert!(text.matches("maml_version").count() > 20);
}

/// Every scenario but those of `groups`.
fn all_but(groups: &[&[Scenario]]) -> Vec<Scenario> {
    Scenario::ALL
        .into_iter()
        .filter(|s| groups.iter().all(|g| !g.contains(s)))
        .collect()
}

fn lines_valid(c: SimConfig, expect: &[Scenario]) {
    let labels = generate_labels(&c);
    assert_eq!(labels.len() as u64, c.sessions);
    let mut ids = BTreeSet::new();
    let mut seen_sessions = BTreeSet::new();
    let mut last_ts = None;
    // (session, id) -> count of requests minus responses
    let mut open: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut per_scenario = BTreeMap::new();
    let mut lines = 0;
    for line in Simulator::new(c.clone()) {
        lines += 1;
        assert!(!line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).expect("json");
        let ts = v["ts"].as_str().expect("ts string");
        let t = chrono::DateTime::parse_from_rfc3339(ts).expect("rfc3339");
        if let Some(prev) = last_ts {
            assert!(t >= prev, "ts not sorted: {ts}");
        }
        last_ts = Some(t);
        let sid = v["server_id"].as_str().expect("server_id");
        assert!(!sid.is_empty() && sid.len() <= 256);
        let dir = v["direction"].as_str().expect("direction");
        assert!(dir == "c2s" || dir == "s2c");
        assert!(v["message"].is_object() || v["message"].is_array());
        let eid = v["event_id"].as_str().expect("event_id").to_string();
        assert!(!eid.is_empty() && eid.len() <= 128);
        assert!(ids.insert(eid), "duplicate event_id");
        if let Some(tr) = v.get("transport") {
            let tr = tr.as_str().expect("transport str");
            assert!(["stdio", "streamable_http", "sse"].contains(&tr));
            if tr == "stdio" {
                assert!(v.get("http").is_none() && v.get("auth").is_none());
            }
        }
        if let Some(h) = v.get("http") {
            assert!(h["status"].is_i64());
            if let Some(hs) = h.get("headers") {
                for (_, hv) in hs.as_object().expect("headers obj") {
                    assert!(hv.is_string());
                }
            }
        }
        if let Some(a) = v.get("auth") {
            assert!(a["exp"].is_i64() && a["aud_ok"].is_boolean());
            let fp = a["token_fp"].as_str().expect("fp");
            assert_eq!(fp.len(), 16);
            assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        }
        let session = v["session_id"].as_str().expect("session_id").to_string();
        let label = labels.get(&session).expect("every session labelled");
        if seen_sessions.insert(session.clone()) {
            *per_scenario.entry(*label).or_insert(0u64) += 1;
        }
        let m = &v["message"];
        assert_eq!(m["jsonrpc"], "2.0");
        if let Some(id) = m.get("id") {
            let key = (session.clone(), id.to_string());
            let d = if m.get("method").is_some() { 1 } else { -1 };
            if d == -1 {
                assert!(m.get("result").is_some() || m.get("error").is_some());
                assert_eq!(
                    open.get(&key).copied().unwrap_or(0),
                    1,
                    "response without request {key:?}"
                );
            }
            *open.entry(key).or_insert(0) += d;
        }
    }
    assert!(lines > 1000);
    assert!(open.values().all(|&n| n == 0), "unanswered requests");
    let label_sessions: BTreeSet<String> = labels.keys().cloned().collect();
    assert_eq!(
        label_sessions, seen_sessions,
        "labels == sessions in output"
    );
    for &s in expect {
        assert!(
            per_scenario.get(&s).copied().unwrap_or(0) > 0,
            "scenario {s} missing"
        );
    }
    let benign = per_scenario[&Scenario::Benign];
    assert!(benign * 2 > 150, "benign should be the majority: {benign}");
}

#[test]
fn header_consistency_outside_header_mismatch() {
    let c = cfg(120, 3);
    let labels = generate_labels(&c);
    let mut mismatches = BTreeMap::<Scenario, u64>::new();
    for line in Simulator::new(c) {
        let v: Value = serde_json::from_str(&line).expect("json");
        let Some(h) = v
            .pointer("/http/headers/mcp-method")
            .and_then(|x| x.as_str())
        else {
            continue;
        };
        let m = &v["message"];
        let body_m = m["method"].as_str().unwrap_or("");
        let body_n = m
            .pointer("/params/name")
            .or_else(|| m.pointer("/params/uri"))
            .and_then(|x| x.as_str());
        let hn = v.pointer("/http/headers/mcp-name").and_then(|x| x.as_str());
        let bad = h != body_m || (hn.is_some() && hn != body_n);
        if bad {
            let l = labels[v["session_id"].as_str().expect("sid")];
            *mismatches.entry(l).or_insert(0) += 1;
        }
    }
    assert!(
        mismatches.keys().all(|s| *s == Scenario::HeaderMismatch),
        "{mismatches:?}"
    );
    assert!(mismatches.contains_key(&Scenario::HeaderMismatch));
}

#[test]
fn scenario_restriction_and_parse() {
    let c = SimConfig {
        sessions: 40,
        seed: 1,
        attack_ratio: 0.5,
        scenarios: Some(vec![Scenario::Ssrf, Scenario::CallFlood]),
        ..SimConfig::default()
    };
    let labels = generate_labels(&c);
    assert_eq!(labels.len(), 40);
    assert!(
        labels
            .values()
            .all(|s| matches!(s, Scenario::Benign | Scenario::Ssrf | Scenario::CallFlood))
    );
    assert!(labels.values().any(|s| *s == Scenario::Ssrf));
    for s in Scenario::ALL {
        assert_eq!(s.to_string().parse::<Scenario>().expect("parse"), s);
        assert_eq!(serde_json::to_string(&s).expect("ser"), format!("\"{s}\""));
    }
    assert!("nope".parse::<Scenario>().is_err());
    let j = labels_json(&labels).expect("labels json");
    let back: BTreeMap<String, String> = serde_json::from_str(&j).expect("parse labels");
    assert_eq!(back.len(), 40);
    assert!(j.starts_with("{\n \""));
}

#[test]
fn streaming_memory_bounded() {
    // 200k+ lines without collecting them; the heaps must stay small.
    let c = cfg(12_000, 99);
    let mut sim = Simulator::new(c);
    let mut n = 0u64;
    for _ in sim.by_ref() {
        n += 1;
        if n >= 200_000 {
            break;
        }
    }
    assert!(n >= 200_000, "only {n} lines");
    let (active, pending) = sim.peak_buffered();
    assert!(active < 400, "active peak {active}");
    assert!(pending < 2_000, "pending peak {pending}");
    assert!(sim.stats().sessions < 12_000);
    eprintln!("peak active {active} pending {pending}");
}

/// `DUNES_SIM_DUMP=/path cargo test -p dunes-sim dump` writes a 300-session
/// run and its labels for manual inspection; a no-op otherwise.
#[test]
fn dump_when_requested() {
    let Ok(path) = std::env::var("DUNES_SIM_DUMP") else {
        return;
    };
    let c = cfg(300, 20261120);
    let f = std::fs::File::create(&path).expect("create");
    let stats = write_ndjson(&c, f).expect("write");
    let labels = labels_json(&generate_labels(&c)).expect("labels");
    std::fs::write(format!("{path}.labels.json"), labels).expect("labels file");
    eprintln!("{stats:?}");
}
