//! Training, persistence, reload, scoring and the warm-up path on small
//! synthetic traffic: calm sessions (a few tool calls, a couple of reads,
//! seconds apart), one recon session (lists, then dozens of distinct
//! resources and directories within minutes), and the same enumeration
//! spread over many short calm-looking sessions of one principal.

use chrono::{SecondsFormat, TimeZone, Utc};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord};
use serde_json::json;

use std::collections::HashSet;
use std::io::Write;

use super::*;
use crate::Incident;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

const T0: i64 = 1_795_161_600_000;

fn env(
    ts: i64,
    id: &str,
    session: &str,
    sub: &str,
    dir: &str,
    msg: serde_json::Value,
) -> (i64, String) {
    let t = Utc
        .timestamp_millis_opt(ts)
        .single()
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let line = json!({
        "ts": t, "event_id": id, "server_id": "docs@prod-1", "direction": dir,
        "session_id": session, "auth": {"sub": sub},
        "client": {"name": "handbook-cli", "version": "1.0"},
        "message": msg,
    });
    (ts, line.to_string())
}

/// A request and its response, `gap` ms after `t`.
#[allow(clippy::too_many_arguments)]
fn call(
    out: &mut Vec<(i64, String)>,
    t: &mut i64,
    gap: u64,
    s: &str,
    sub: &str,
    n: &mut u64,
    method: &str,
    params: serde_json::Value,
    result: serde_json::Value,
) {
    *t += gap as i64;
    *n += 1;
    out.push(env(
        *t,
        &format!("{s}-{n}"),
        s,
        sub,
        "c2s",
        json!({"jsonrpc":"2.0","id":*n,"method":method,"params":params}),
    ));
    out.push(env(
        *t + 40,
        &format!("{s}-{n}r"),
        s,
        sub,
        "s2c",
        json!({"jsonrpc":"2.0","id":*n,"result":result}),
    ));
}

fn benign(out: &mut Vec<(i64, String)>, r: &mut Rng, k: u64, start: i64) {
    let s = format!("calm-{k}");
    let sub = format!("user{}@example.com", k % 12);
    let mut t = start;
    let mut n = 0;
    call(
        out,
        &mut t,
        0,
        &s,
        &sub,
        &mut n,
        "tools/list",
        json!({}),
        json!({"tools": []}),
    );
    for _ in 0..r.range(3, 10) {
        let gap = r.range(2_000, 30_000);
        match r.range(0, 3) {
            0 => {
                let uri = format!("docs://guide-{:03}.md", r.range(0, 8));
                call(
                    out,
                    &mut t,
                    gap,
                    &s,
                    &sub,
                    &mut n,
                    "resources/read",
                    json!({"uri": uri}),
                    json!({"contents":[{"uri":uri,"text":"hello world"}]}),
                );
            }
            1 => call(
                out,
                &mut t,
                gap,
                &s,
                &sub,
                &mut n,
                "tools/call",
                json!({"name":"search_docs","arguments":{"query":"vacation policy"}}),
                json!({"content":[{"type":"text","text":"3 hits"}]}),
            ),
            _ => call(
                out,
                &mut t,
                gap,
                &s,
                &sub,
                &mut n,
                "tools/call",
                json!({"name":"list_dir","arguments":{"path":"/docs"}}),
                json!({"content":[{"type":"text","text":"a b c"}]}),
            ),
        }
    }
}

fn recon(out: &mut Vec<(i64, String)>, r: &mut Rng, start: i64) -> String {
    let s = "recon-1".to_string();
    let sub = "user3@example.com";
    let mut t = start;
    let mut n = 0;
    call(
        out,
        &mut t,
        0,
        &s,
        sub,
        &mut n,
        "resources/list",
        json!({}),
        json!({"resources": []}),
    );
    for i in 0..60 {
        let uri = format!("docs://secret/{i:03}.md");
        call(
            out,
            &mut t,
            r.range(300, 2_000),
            &s,
            sub,
            &mut n,
            "resources/read",
            json!({"uri": uri}),
            json!({"contents":[{"uri":uri,"text":"x"}]}),
        );
        if i % 3 == 0 {
            call(
                out,
                &mut t,
                r.range(200, 900),
                &s,
                sub,
                &mut n,
                "tools/call",
                json!({"name":"list_dir","arguments":{"path":format!("/srv/hr/{i}")}}),
                json!({"content":[{"type":"text","text":"a b c"}]}),
            );
        }
    }
    s
}

/// Calm sessions spread over `minutes`, in `ts` order.
fn traffic(sessions: u64, minutes: i64, seed: u64) -> Vec<String> {
    let mut r = Rng(seed | 1);
    let mut out = Vec::new();
    for k in 0..sessions {
        let start = T0 + (k as i64 * minutes * 60_000) / sessions as i64;
        benign(&mut out, &mut r, k + seed * 100_000, start);
    }
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, l)| l).collect()
}

fn batches(lines: &[String], size: usize) -> Vec<RecordBatch> {
    let mut norm = Normalizer::new(IngestConfig::default());
    lines
        .chunks(size)
        .map(|c| {
            let recs = c
                .iter()
                .enumerate()
                .map(|(i, l)| RawRecord::file_line(l.as_bytes().to_vec(), "t", i as u64 + 1))
                .collect();
            let d = norm.decode_batch(recs).expect("decodes");
            assert!(
                d.rejected.is_empty(),
                "{:?}",
                d.rejected.first().map(|r| &r.reason)
            );
            d.events
        })
        .collect()
}

use arrow::array::RecordBatch;

fn windows(lines: &[String]) -> Baseline {
    let mut ex = Extractor::new(FeatureSpec::default());
    let mut set = Baseline::default();
    for b in batches(lines, 500) {
        ex.feed(&b, |o| set.observe(&o)).expect("features");
    }
    set
}

fn params() -> TrainParams {
    TrainParams {
        components: 3,
        ..TrainParams::default()
    }
}

fn lines_of(mut out: Vec<(i64, String)>) -> Vec<String> {
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, l)| l).collect()
}

/// One principal enumerating resources through `n` short sessions started
/// 12 s apart: each session alone is a calm one (a listing of tools and
/// three reads seconds apart), together they read 3·n distinct documents
/// within minutes.
fn spread(r: &mut Rng, start: i64, sub: &str, n: u64) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..n {
        let s = format!("spread-{k}");
        let mut t = start + k as i64 * 12_000;
        let mut c = 0;
        call(
            &mut out,
            &mut t,
            0,
            &s,
            sub,
            &mut c,
            "tools/list",
            json!({}),
            json!({"tools": []}),
        );
        for j in 0..3 {
            let uri = format!("docs://guide-{:03}.md", 100 + k * 3 + j);
            call(
                &mut out,
                &mut t,
                r.range(2_000, 12_000),
                &s,
                sub,
                &mut c,
                "resources/read",
                json!({"uri": uri}),
                json!({"contents":[{"uri":uri,"text":"hello world"}]}),
            );
        }
    }
    lines_of(out)
}

/// A tail alarm of the deployment model: the title names the breadth
/// feature against the baseline sessions' p50, the evidence the trigger,
/// the model and its version.
fn assert_tail_incident(inc: &Incident, version: &str) {
    assert!(inc.title.contains("tail"), "{}", inc.title);
    assert!(
        inc.title.contains("distinct_resources") && inc.title.contains("baseline sessions p50"),
        "{}",
        inc.title
    );
    let ev = &inc.evidence[0];
    assert_eq!(ev["trigger"], json!("tail"));
    assert_eq!(ev["model"], json!("deployment"));
    assert_eq!(ev["model_version"], json!(version));
}

fn feature(n: &str) -> usize {
    FEATURE_NAMES.iter().position(|x| *x == n).expect("feature")
}

#[test]
fn features_slide_over_the_window() {
    let mut r = Rng(7);
    let mut out = Vec::new();
    let s = recon(&mut out, &mut r, T0);
    let lines: Vec<String> = out.into_iter().map(|(_, l)| l).collect();
    let set = windows(&lines).session;
    let last = set.windows.last().expect("windows");
    let i = feature;
    assert_eq!(set.sessions.last().unwrap(), &s);
    // 60 reads + 20 listings over ~1.5 min: all inside the 5 min window.
    assert_eq!(last[i("distinct_resources")], 60.0);
    assert_eq!(last[i("dir_lists")], 20.0);
    assert_eq!(last[i("resource_lists")], 1.0);
    assert_eq!(last[i("distinct_tools")], 1.0);
    // A much shorter window holds only the last few.
    let mut ex = Extractor::new(FeatureSpec {
        window_secs: 10,
        ..FeatureSpec::default()
    });
    let mut last = None;
    for b in batches(&lines, 37) {
        ex.feed(&b, |o| {
            if o.kind == WindowKind::Session {
                last = Some(o.features)
            }
        })
        .unwrap();
    }
    let last = last.unwrap();
    assert!(last[i("distinct_resources")] < 15.0, "{last:?}");
    assert_eq!(last[i("resource_lists")], 0.0);
}

#[test]
fn principal_windows_add_up_the_sessions_of_a_principal() {
    let lines = spread(&mut Rng(5), T0, "user5@example.com", 6);
    let mut ex = Extractor::new(FeatureSpec::default());
    let mut seen = Vec::new();
    for b in batches(&lines, 7) {
        ex.feed(&b, |o| {
            seen.push((o.kind, o.key.to_string(), o.session.to_string(), o.features))
        })
        .unwrap();
    }
    // Every request yields its session window then its principal window.
    let (sessions, principals): (Vec<_>, Vec<_>) =
        seen.iter().partition(|o| o.0 == WindowKind::Session);
    assert_eq!(sessions.len(), 24);
    assert_eq!(principals.len(), 24);
    assert!(principals.iter().all(|o| o.1 == "user5@example.com"));
    assert!(
        sessions
            .iter()
            .all(|o| o.1 == o.2 && o.1.starts_with("spread-"))
    );
    let i = feature;
    let max = |v: &[&(WindowKind, String, String, FeatureVec)], f: &str| {
        v.iter().map(|o| o.3[i(f)]).fold(0.0, f64::max)
    };
    assert_eq!(max(&sessions, "distinct_resources"), 3.0);
    assert_eq!(max(&principals, "distinct_resources"), 18.0);
    // Responses reach the principal window too.
    let st = ex
        .state
        .principals
        .get("user5@example.com")
        .expect("window");
    assert_eq!(st.session_count(), 6);
    // Four requests each: the preferred session wins the tie, else the
    // smallest id.
    assert_eq!(st.main_session("spread-4"), Some("spread-4"));
    assert_eq!(st.main_session("elsewhere"), Some("spread-0"));
    assert!(st.features()[i("result_bytes")] > 0.0);
    assert_eq!(ex.state.sessions.len(), 6);
}

#[test]
fn train_save_reload_and_score() {
    let set = windows(&traffic(400, 240, 1));
    let m = train(&set, &FeatureSpec::default(), &params(), "synthetic").expect("trains");
    let c = &m.model.calibration;
    assert!(c.held_out && c.sessions >= 100, "{c:?}");
    assert!(c.threshold.is_finite());
    assert!(c.empirical_fpr <= 0.005 + 1e-9);
    assert_eq!(m.version().len(), 64);
    assert_eq!(m.model.format, 2);
    // The principal part: its own fit and threshold, on the same features.
    let p = m.model.principal.as_ref().expect("principal part");
    assert_eq!(p.trained_principals, 12);
    assert_eq!(p.trained_windows, set.principal.len());
    let pp = m.part(WindowKind::Principal).expect("principal part");
    assert!(pp.calibration().threshold.is_finite());
    // The target is shared: half each by default.
    assert_eq!(c.target_fpr, 0.0025);
    assert_eq!(pp.calibration().target_fpr, 0.0025);
    assert_ne!(pp.calibration().threshold, c.threshold);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models/anomaly-model.json");
    m.save(&path).expect("saves");
    let back = LoadedModel::load(&path).expect("loads");
    assert_eq!(back.version(), m.version());
    for (kind, set) in [
        (WindowKind::Session, &set.session),
        (WindowKind::Principal, &set.principal),
    ] {
        let (a, b) = (back.part(kind).unwrap(), m.part(kind).unwrap());
        for x in set.windows.iter().take(200) {
            let (a, b) = (a.score(x), b.score(x));
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "{kind}: {a} vs {b}"
            );
        }
    }
    // The early-exit decision is the full score's, on calm and odd windows.
    let mut odd = Vec::new();
    recon(&mut odd, &mut Rng(13), T0);
    let odd = windows(&lines_of(odd));
    for (kind, set) in [
        (WindowKind::Session, &set.session),
        (WindowKind::Principal, &set.principal),
        (WindowKind::Session, &odd.session),
        (WindowKind::Principal, &odd.principal),
    ] {
        let part = m.part(kind).unwrap();
        for x in &set.windows {
            let full = part.score(x);
            let fast = part.anomalous_score(x);
            assert_eq!(fast.is_some(), part.is_anomalous(full), "{kind}: {full}");
            if let Some(f) = fast {
                assert_eq!(f, full);
            }
        }
    }
    assert!(odd.session.windows.iter().any(|x| {
        m.part(WindowKind::Session)
            .unwrap()
            .anomalous_score(x)
            .is_some()
    }));

    // Same data, same model: training is deterministic.
    let again = train(&set, &FeatureSpec::default(), &params(), "synthetic").unwrap();
    assert_eq!(again.version(), m.version());

    // Held-out calm traffic is hardly ever flagged (the decision: tail alarm,
    // or corroborated mixture alarm); recon is, by its breadth.
    let test = windows(&traffic(300, 240, 2)).session;
    let part = m.part(WindowKind::Session).unwrap();
    let flagged_sessions: std::collections::HashSet<&str> = test
        .windows
        .iter()
        .zip(&test.sessions)
        .filter(|(x, _)| part.assess(x).is_some())
        .map(|(_, s)| s.as_str())
        .collect();
    let total = test
        .sessions
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert!(
        flagged_sessions.len() <= 3,
        "{} of {total} calm sessions flagged",
        flagged_sessions.len()
    );
    let mut out = Vec::new();
    recon(&mut out, &mut Rng(9), T0);
    let rl: Vec<String> = out.into_iter().map(|(_, l)| l).collect();
    let rs = windows(&rl).session;
    let top = rs
        .windows
        .iter()
        .filter_map(|x| part.assess(x))
        .find(|a| a.trigger == crate::anomaly::Trigger::Tail);
    let a = top.unwrap_or_else(|| panic!("recon raises no tail alarm (threshold {})", c.threshold));
    assert_eq!(FEATURE_NAMES[a.tail_feature], "distinct_resources");
    assert!(a.tail >= 3.0, "{a:?}");
    let why = m.explain(rs.windows.last().unwrap(), 3);
    assert!(
        why.iter().any(|c| c.feature == "distinct_resources"),
        "{why:?}"
    );
    assert_eq!(
        why[0].to_string(),
        "distinct_resources 60 in the window (baseline sessions p50 2, p95 4, p99 5; 10.3x)"
    );

    // A tampered file is refused.
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = text.replacen("\"threshold\": ", "\"threshold\": 1", 1);
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).unwrap();
    let err = LoadedModel::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("altered") || err.contains("anomaly model"),
        "{err}"
    );
}

#[test]
fn a_format_1_model_scores_session_windows_only() {
    let set = windows(&traffic(300, 180, 4));
    let m = train(&set, &FeatureSpec::default(), &params(), "synthetic").expect("trains");
    let mut old = m.model.clone();
    old.format = 1;
    old.principal = None;
    old.version = model::version_of(&old).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.json");
    LoadedModel::new(old.clone()).unwrap().save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("\"principal\""), "format 1 layout");
    let back = LoadedModel::load(&path).expect("format 1 loads");
    assert!(back.part(WindowKind::Principal).is_none());
    let mut mon = Monitor::new(AnomalyConfig::default(), Some(back));
    let lines = spread(&mut Rng(3), T0, "user5@example.com", 4);
    let mut scored = 0;
    for b in batches(&lines, 100) {
        scored += mon.process(&b, Utc::now()).unwrap().windows_scored;
    }
    assert_eq!(scored, 16, "session windows only");
    // A format 1 file with a principal part is refused.
    old.principal = m.model.principal.clone();
    assert!(LoadedModel::new(old).is_err());
}

#[test]
fn principal_window_catches_an_enumeration_spread_over_sessions() {
    let base = windows(&traffic(400, 240, 1));
    let m = train(&base, &FeatureSpec::default(), &params(), "synthetic").expect("trains");
    let version = m.version().to_string();
    let mut mon = Monitor::new(AnomalyConfig::default(), Some(m));
    // Calm traffic first (so the principal's history is normal), then the
    // spread enumeration by one of its principals.
    let now = Utc::now();
    let mut calm = Vec::new();
    for b in batches(&traffic(100, 60, 8), 400) {
        calm.extend(mon.process(&b, now).unwrap().incidents);
    }
    let lines = spread(&mut Rng(21), T0 + 90 * 60_000, "user5@example.com", 20);
    let mut incidents = Vec::new();
    for b in batches(&lines, 64) {
        incidents.extend(mon.process(&b, now).unwrap().incidents);
    }
    let kind = |i: &Incident| i.evidence[0]["window"].as_str().unwrap_or("").to_string();
    // No session of the spread enumeration stands out on its own...
    assert!(
        incidents.iter().all(|i| kind(i) != "session"),
        "{:?}",
        incidents.iter().map(|i| &i.title).collect::<Vec<_>>()
    );
    // ...the principal's window does.
    let p: Vec<&Incident> = incidents
        .iter()
        .filter(|i| kind(i) == "principal")
        .collect();
    assert!(!p.is_empty(), "the spread enumeration was not flagged");
    let inc = p[0];
    assert_eq!(inc.rule_id, RULE_ID);
    assert_eq!(inc.rule_sha256, version);
    assert_eq!(inc.entity["principal"], json!("user5@example.com"));
    assert_eq!(inc.entity["window"], json!("principal"));
    assert!(
        inc.session_id
            .as_deref()
            .unwrap_or("")
            .starts_with("spread-")
    );
    assert!(inc.title.contains("principal window over"), "{}", inc.title);
    assert_tail_incident(inc, &version);
    let ev = &inc.evidence[0];
    assert!(ev["session_count"].as_u64().unwrap() > 3, "{ev:?}");
    let top: Vec<&str> = ev["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["feature"].as_str().unwrap())
        .collect();
    assert!(
        top.contains(&"distinct_resources") || top.contains(&"calls_per_min"),
        "{top:?}"
    );
    // Level 1 (default): every session of the principal's window is
    // invalidated, each by its own response record.
    assert_eq!(inc.level, Level::Automated);
    let listed: std::collections::BTreeSet<&str> = ev["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let cfg = crate::ResponseConfig::default();
    let rs = responses(inc, ResponseAction::IsolateSession, &cfg);
    let isolated: std::collections::BTreeSet<&str> = rs
        .iter()
        .map(|r| {
            assert_eq!(r.action, ResponseAction::IsolateSession);
            r.target["session_id"].as_str()
        })
        .collect();
    assert!(listed.len() > 3, "{listed:?}");
    assert!(listed.is_subset(&isolated), "{listed:?} vs {isolated:?}");
    assert!(isolated.contains(inc.session_id.as_deref().unwrap()));
    let ids: std::collections::BTreeSet<&str> = rs.iter().map(|r| r.response_id.as_str()).collect();
    assert_eq!(ids.len(), rs.len(), "response ids are unique");
    // Blocking the principal is one record; Level 2 responds with none.
    assert_eq!(
        responses(inc, ResponseAction::BlockPrincipal, &cfg).len(),
        1
    );
    let mut queued = inc.clone();
    queued.level = Level::Analyst;
    assert!(responses(&queued, ResponseAction::IsolateSession, &cfg).is_empty());
    assert!(
        calm.len() <= 2,
        "calm traffic raised {} incidents: {:?}",
        calm.len(),
        calm.iter().map(|i| &i.title).collect::<Vec<_>>()
    );
}

/// Trains inline, in the batch the warm-up ends in.
fn warmup_cfg() -> AnomalyConfig {
    AnomalyConfig {
        warmup_minutes: 120,
        warmup_min_sessions: 250,
        components: 3,
        train_events: 0,
        ..AnomalyConfig::default()
    }
}

#[test]
fn training_beside_later_batches_switches_after_a_count_of_events() {
    let all = batches(&traffic(400, 240, 3), 400);
    let mut inline = Monitor::new(warmup_cfg(), None);
    let (at, m0) = run_until_trained(&mut inline, &all).expect("trains");
    const K: usize = 3;
    assert!(at + K < all.len(), "{at} of {}", all.len());
    // One event more than the K - 1 batches after the warm-up's end hold:
    // the K-th batch reaches the count (mid-batch), and hands over.
    let train_events = all[at + 1..at + K]
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum::<u64>()
        + 1;
    let cfg = AnomalyConfig {
        train_events,
        ..warmup_cfg()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/anomaly-state.json");
    let mut bg = Monitor::new(cfg.clone(), None);
    for b in &all[..=at] {
        assert!(bg.process(b, Utc::now()).unwrap().trained.is_none());
    }
    // Training: still warming up, the baseline final (what a rule flags
    // now is not left out of it), the warm-up saved as it was.
    assert!(bg.is_warming_up());
    let excluded = bg.warmup_excluded();
    bg.exclude_from_warmup(["calm-1"]);
    assert_eq!(bg.warmup_excluded(), excluded);
    bg.save_state(&path).unwrap();
    assert!(warmup::log_path(&path).exists());
    let windows = bg.warmup_windows();
    for b in &all[at + 1..at + K] {
        assert!(bg.process(b, Utc::now()).unwrap().trained.is_none());
        assert_eq!(bg.warmup_windows(), windows, "nothing more is learnt");
    }
    // The K-th batch after the warm-up's end hands over the same model.
    let m1 = bg.process(&all[at + K], Utc::now()).unwrap().trained;
    assert_eq!(m1.expect("taken over").version(), m0.version());
    assert!(!bg.is_warming_up());

    // A restart while training trains the same model again, and it takes
    // over after the same batch.
    let mut re = Monitor::new(cfg.clone(), None);
    re.load_state(&path).unwrap();
    assert!(re.is_warming_up());
    assert_eq!(re.warmup_windows(), windows);
    let (k, m2) = run_until_trained(&mut re, &all[at + 1..]).expect("trains");
    assert_eq!(at + 1 + k, at + K);
    assert_eq!(m2.version(), m0.version());
    // Restarted with inline training configured, the model still comes
    // out of `process` (which the pipeline ledgers), after the same batch.
    let mut inl = Monitor::new(warmup_cfg(), None);
    inl.load_state(&path).unwrap();
    assert!(inl.is_warming_up());
    let (k, m4) = run_until_trained(&mut inl, &all[at + 1..]).expect("trains");
    assert_eq!(at + 1 + k, at + K);
    assert_eq!(m4.version(), m0.version());
    // Also from a state saved a batch later.
    let mut one_more = Monitor::new(cfg.clone(), None);
    for b in &all[..=at + 1] {
        assert!(one_more.process(b, Utc::now()).unwrap().trained.is_none());
    }
    one_more.save_state(&path).unwrap();
    let mut re = Monitor::new(cfg.clone(), None);
    re.load_state(&path).unwrap();
    let (k, m3) = run_until_trained(&mut re, &all[at + 2..]).expect("trains");
    assert_eq!(at + 2 + k, at + K);
    assert_eq!(m3.version(), m0.version());

    // The end of the input does not wait for K batches.
    let mut end = Monitor::new(cfg, None);
    for b in &all[..=at] {
        assert!(end.process(b, Utc::now()).unwrap().trained.is_none());
    }
    assert_eq!(end.finish_training().expect("kept").version(), m0.version());
    assert!(!end.is_warming_up());
    assert!(end.finish_training().is_none());
}

#[test]
fn monitor_warms_up_then_raises_incidents() {
    let mut mon = Monitor::new(warmup_cfg(), None);
    assert!(mon.is_warming_up());
    let now = Utc::now();
    let mut trained = None;
    let calm = traffic(400, 240, 3);
    for b in batches(&calm, 400) {
        let out = mon.process(&b, now).expect("processes");
        assert!(out.incidents.is_empty() || trained.is_some());
        if let Some(m) = out.trained {
            assert!(trained.is_none(), "trained twice");
            trained = Some(m.version().to_string());
        }
    }
    let version = trained.expect("warm-up finished and trained");
    assert!(!mon.is_warming_up());
    let m = mon.model().unwrap();
    assert_eq!(m.version(), version);
    assert!(m.part(WindowKind::Principal).is_some());

    // Recon after the warm-up: one session incident at most, named.
    let mut out = Vec::new();
    recon(&mut out, &mut Rng(11), T0 + 300 * 60_000);
    let rl: Vec<String> = out.into_iter().map(|(_, l)| l).collect();
    let mut incidents = Vec::new();
    for b in batches(&rl, 1000) {
        incidents.extend(mon.process(&b, now).unwrap().incidents);
    }
    let sessions: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.evidence[0]["window"] == json!("session"))
        .collect();
    assert_eq!(sessions.len(), 1, "{incidents:?}");
    let inc = sessions[0];
    assert_eq!(inc.rule_id, RULE_ID);
    assert_eq!(inc.rule_sha256, version);
    assert_eq!(inc.session_id.as_deref(), Some("recon-1"));
    assert_eq!(inc.level, Level::Automated);
    assert!(inc.title.contains("session window"), "{}", inc.title);
    assert_tail_incident(inc, &version);
    assert!(!inc.event_ids.is_empty());
    // The explanation quotes the principal's own sessions and its peers'
    // (same client on the same server), computed here from the traffic:
    // distinct documents read per calm session (each fits in one window).
    let mut read: std::collections::BTreeMap<String, (String, HashSet<String>)> =
        Default::default();
    for l in &calm {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let e = read
            .entry(v["session_id"].as_str().unwrap().to_string())
            .or_insert_with(|| {
                (
                    v["auth"]["sub"].as_str().unwrap().to_string(),
                    HashSet::new(),
                )
            });
        if v["message"]["method"] == "resources/read" {
            e.1.insert(v["message"]["params"]["uri"].as_str().unwrap().to_string());
        }
    }
    let own: Vec<usize> = read
        .values()
        .filter(|(sub, _)| sub == "user3@example.com")
        .map(|(_, u)| u.len())
        .collect();
    let mut all: Vec<usize> = read.values().map(|(_, u)| u.len()).collect();
    all.sort_unstable();
    assert_eq!(all.len(), 400);
    let p99 = all[all.len() * 99 / 100 - 1];
    let why = inc.evidence[0]["explanation"][0].as_str().unwrap();
    let refs = format!(
        "; this principal's max {} over {} sessions; peers' (handbook-cli on docs@prod-1) p99 {p99} over 400 sessions",
        own.iter().max().unwrap(),
        own.len()
    );
    assert!(why.ends_with(&refs), "{why}\nwanted the suffix {refs}");
    assert!(!inc.title.contains("this principal"), "{}", inc.title);
    assert_eq!(
        inc.evidence[0]["contributions"][0]["peer_ref"]["sessions"],
        json!(400)
    );
    // The recon principal's window (one session) is flagged as well, as
    // another incident of the same model.
    assert!(
        incidents
            .iter()
            .all(|i| i.rule_sha256 == version && i.evidence[0]["window"] != json!(null))
    );

    // The windows survive a save / load.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/anomaly-state.json");
    mon.save_state(&path).unwrap();
    assert!(
        !warmup::log_path(&path).exists(),
        "no warm-up log once scoring"
    );
    let mut m2 = Monitor::new(AnomalyConfig::default(), mon.model().cloned());
    m2.load_state(&path).unwrap();
    assert_eq!(m2.snapshot().sessions.len(), mon.snapshot().sessions.len());
    assert_eq!(
        m2.snapshot().principals.len(),
        mon.snapshot().principals.len()
    );
}

/// Processes batches until the monitor trains; returns the batch index.
fn run_until_trained(mon: &mut Monitor, batches: &[RecordBatch]) -> Option<(usize, LoadedModel)> {
    for (k, b) in batches.iter().enumerate() {
        if let Some(m) = mon.process(b, Utc::now()).unwrap().trained {
            return Some((k, m));
        }
    }
    None
}

#[test]
fn a_restart_mid_warm_up_continues_the_warm_up() {
    let all = batches(&traffic(400, 240, 3), 400);
    // In one process.
    let mut one = Monitor::new(warmup_cfg(), None);
    let (at, m1) = run_until_trained(&mut one, &all).expect("trains");
    assert!(at > 4, "trained at batch {at}");

    // Stopped after `half` batches, state saved, restarted.
    let half = at / 2;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/anomaly-state.json");
    let mut a = Monitor::new(warmup_cfg(), None);
    for b in &all[..half] {
        assert!(a.process(b, Utc::now()).unwrap().trained.is_none());
    }
    a.save_state(&path).unwrap();
    let log = warmup::log_path(&path);
    assert!(log.exists());
    let (windows, principal_windows, sessions, start) = (
        a.warmup_windows(),
        a.warmup_principal_windows(),
        a.warmup_sessions(),
        a.warmup_start(),
    );
    assert!(windows > 0 && principal_windows > 0 && sessions > 0);
    // A save appends only what is new (here: nothing).
    let len = std::fs::metadata(&log).unwrap().len();
    a.save_state(&path).unwrap();
    assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
    // Bytes appended after the last state (a crash between the two writes)
    // are not part of the warm-up.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&[2, 0, 0, 0, 0, 1, 2, 3])
        .unwrap();
    drop(a);

    let mut b = Monitor::new(warmup_cfg(), None);
    b.load_state(&path).unwrap();
    assert!(b.is_warming_up());
    assert_eq!(b.warmup_windows(), windows);
    assert_eq!(b.warmup_principal_windows(), principal_windows);
    assert_eq!(b.warmup_sessions(), sessions);
    assert_eq!(b.warmup_start(), start);
    // It saves and reloads again mid-way (the stray bytes are cut off).
    for x in &all[half..half + 1] {
        assert!(b.process(x, Utc::now()).unwrap().trained.is_none());
    }
    b.save_state(&path).unwrap();
    let mut b = {
        let mut c = Monitor::new(warmup_cfg(), None);
        c.load_state(&path).unwrap();
        c
    };
    let (at2, m2) = run_until_trained(&mut b, &all[half + 1..]).expect("trains");
    // Trained at the same point, on the same baseline.
    assert_eq!(half + 1 + at2, at);
    let (x, y) = (&m1.model, &m2.model);
    assert_eq!(x.trained_windows, y.trained_windows);
    assert_eq!(x.trained_sessions, y.trained_sessions);
    assert_eq!(x.trained_on, y.trained_on);
    let (px, py) = (x.principal.as_ref().unwrap(), y.principal.as_ref().unwrap());
    assert_eq!(px.trained_windows, py.trained_windows);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(1.0);
    assert!(close(x.calibration.threshold, y.calibration.threshold));
    assert!(close(px.calibration.threshold, py.calibration.threshold));
    // Scoring now: the next save drops the log.
    b.save_state(&path).unwrap();
    assert!(!log.exists());
}

#[test]
fn an_unreadable_warm_up_log_starts_the_warm_up_over() {
    let all = batches(&traffic(100, 60, 5), 400);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anomaly-state.json");
    let mut a = Monitor::new(warmup_cfg(), None);
    for b in &all {
        a.process(b, Utc::now()).unwrap();
    }
    a.save_state(&path).unwrap();
    let n = a.warmup_windows();
    assert!(n > 0);
    let sessions = a.snapshot().sessions.len();
    // Cut the log short: the windows stay, the warm-up starts again.
    let log = warmup::log_path(&path);
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() / 2]).unwrap();
    let mut b = Monitor::new(warmup_cfg(), None);
    b.load_state(&path).unwrap();
    assert_eq!(b.warmup_windows(), 0);
    assert_eq!(b.snapshot().sessions.len(), sessions);
    // Other feature settings: the same.
    std::fs::write(&log, &bytes).unwrap();
    let mut c = Monitor::new(
        AnomalyConfig {
            window_secs: 60,
            ..warmup_cfg()
        },
        None,
    );
    c.load_state(&path).unwrap();
    assert_eq!(c.warmup_windows(), 0);
    let mut d = Monitor::new(warmup_cfg(), None);
    d.load_state(&path).unwrap();
    assert_eq!(d.warmup_windows(), n);
    // A state file from before principal windows (features only) loads.
    let old = json!({"sessions": {}, "seen_tools": {"u": ["t"]}, "max_ts": 5});
    std::fs::write(&path, old.to_string()).unwrap();
    let mut e = Monitor::new(warmup_cfg(), None);
    e.load_state(&path).unwrap();
    assert_eq!(e.snapshot().max_ts, 5);
    assert_eq!(e.warmup_windows(), 0);
}

#[test]
fn config_defaults_and_record() {
    let c: AnomalyConfig = toml_like_default();
    assert!(c.enabled);
    assert_eq!(c.target_fpr, 0.005);
    assert_eq!(c.level(), Level::Automated);
    assert_eq!(c.response, ResponseAction::IsolateSession);
    assert!(
        c.model_path(std::path::Path::new("/d"))
            .ends_with(MODEL_FILE)
    );
}

fn toml_like_default() -> AnomalyConfig {
    serde_json::from_str("{}").unwrap()
}

#[test]
fn tool_names_split_into_words() {
    assert_eq!(name_words("sendSlackMessage"), ["send", "slack", "message"]);
    assert_eq!(name_words("fs.ls"), ["fs", "ls"]);
    assert_eq!(name_words("HTTP_post-v2"), ["http", "post", "v2"]);
    assert_eq!(name_words("s3Upload"), ["s3", "upload"]);
    assert!(name_words("__").is_empty());
}

/// The egress share and listing count of one session calling `tools`, each
/// with `args`.
fn egress_and_listing(tools: &[&str], args: serde_json::Value) -> (f64, f64) {
    let mut out = Vec::new();
    let (mut t, mut n) = (T0, 0);
    for tool in tools {
        call(
            &mut out,
            &mut t,
            1_000,
            "egress-1",
            "user@example.com",
            &mut n,
            "tools/call",
            json!({"name": tool, "arguments": args}),
            json!({"content":[{"type":"text","text":"ok"}]}),
        );
    }
    let set = windows(&lines_of(out)).session;
    let last = set.windows.last().expect("windows");
    (last[feature("egress_share")], last[feature("dir_lists")])
}

#[test]
fn egress_and_listings_are_recognised_beyond_the_name_lists() {
    let none = json!({"path": "/tmp/a"});
    // Egress by the words of names no list holds.
    for tool in [
        "sendSlackMessage",
        "publish_post",
        "email.forward",
        "s3Upload",
    ] {
        assert_eq!(egress_and_listing(&[tool], none.clone()).0, 1.0, "{tool}");
    }
    // Reading is not egress, even when the name mentions mail or posts.
    for tool in [
        "fetch_mail",
        "get_post",
        "list_emails",
        "read_file",
        "summarise",
    ] {
        assert_eq!(egress_and_listing(&[tool], none.clone()).0, 0.0, "{tool}");
    }
    // Any tool sending to a public host is egress; a private one is not.
    let public = json!({"target": "https://paste.example.net/upload?d=abc"});
    let private = json!({"target": "http://10.0.0.7/cache"});
    assert_eq!(egress_and_listing(&["summarise"], public).0, 1.0);
    assert_eq!(egress_and_listing(&["summarise"], private).0, 0.0);
    // Directory listings by verb and noun.
    let (_, lists) = egress_and_listing(
        &[
            "browseFolder",
            "fs.ls",
            "list_files",
            "tree",
            "list_columns",
            "create_dir",
        ],
        none,
    );
    assert_eq!(lists, 4.0, "browseFolder, fs.ls, list_files, tree");
}

#[test]
fn models_without_the_word_rules_keep_name_list_semantics() {
    let mut v = serde_json::to_value(FeatureSpec::default()).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in [
        "egress_words",
        "read_words",
        "egress_public_urls",
        "listing_verbs",
        "listing_nouns",
    ] {
        o.remove(k);
    }
    let old: FeatureSpec = serde_json::from_value(v).unwrap();
    assert!(old.egress_words.is_empty() && !old.egress_public_urls);
    let mut ex = Extractor::new(old);
    let mut out = Vec::new();
    let (mut t, mut n) = (T0, 0);
    for tool in ["sendSlackMessage", "send_email"] {
        call(
            &mut out,
            &mut t,
            1_000,
            "old-1",
            "user@example.com",
            &mut n,
            "tools/call",
            json!({"name": tool, "arguments": {"url": "https://example.net/"}}),
            json!({"content":[]}),
        );
    }
    let mut last = None;
    for b in batches(&lines_of(out), 100) {
        ex.feed(&b, |o| {
            if o.kind == WindowKind::Session {
                last = Some(o.features)
            }
        })
        .unwrap();
    }
    // Only send_email (in the list) counts.
    assert_eq!(last.unwrap()[feature("egress_share")], 0.5);
}

#[test]
fn sessions_flagged_by_rules_are_left_out_of_the_warm_up_baseline() {
    // Calm traffic with one recon session early in the warm-up.
    let mut r = Rng(9);
    let mut out = Vec::new();
    for k in 0..400u64 {
        benign(
            &mut out,
            &mut r,
            k + 900_000,
            T0 + (k as i64 * 240 * 60_000) / 400,
        );
    }
    recon(&mut out, &mut r, T0 + 10 * 60_000);
    let all = batches(&lines_of(out), 400);
    let mut plain = Monitor::new(warmup_cfg(), None);
    let (_, learnt_all) = run_until_trained(&mut plain, &all).expect("trains");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/anomaly-state.json");
    let mut m = Monitor::new(warmup_cfg(), None);
    // A rule flagged the recon session; the flag survives a restart.
    m.exclude_from_warmup(["recon-1"]);
    assert!(m.process(&all[0], Utc::now()).unwrap().trained.is_none());
    m.save_state(&path).unwrap();
    let mut m = Monitor::new(warmup_cfg(), None);
    m.load_state(&path).unwrap();
    assert_eq!(m.warmup_excluded(), 1);
    let (_, learnt) = run_until_trained(&mut m, &all[1..]).expect("trains");
    assert_eq!(
        learnt.model.trained_sessions + 1,
        learnt_all.model.trained_sessions,
        "the flagged session is not in the baseline"
    );
    assert!(
        learnt
            .model
            .trained_on
            .contains("1 flagged by rules left out")
    );
    assert!(learnt.model.trained_windows < learnt_all.model.trained_windows);
    // Once scoring, exclusion has nothing left to do.
    m.exclude_from_warmup(["calm-1"]);
    assert_eq!(m.warmup_excluded(), 0);
}
