//! Training, persistence, reload, scoring and the warm-up path on small
//! synthetic traffic: calm sessions (a few tool calls, a couple of reads,
//! seconds apart) and one recon session (lists, then dozens of distinct
//! resources and directories within minutes).

use chrono::{SecondsFormat, TimeZone, Utc};
use dunes_ingest::{IngestConfig, Normalizer, RawRecord, SourcePos};
use serde_json::json;

use super::*;

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
                .map(|(i, l)| RawRecord {
                    bytes: l.as_bytes().to_vec(),
                    source: SourcePos::File {
                        path: "t".into(),
                        line: i as u64 + 1,
                    },
                    oversize: None,
                })
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

fn windows(lines: &[String]) -> TrainingSet {
    let mut ex = Extractor::new(FeatureSpec::default());
    let mut set = TrainingSet::default();
    for b in batches(lines, 500) {
        ex.feed(&b, |o| set.push(o.key, o.features))
            .expect("features");
    }
    set
}

fn params() -> TrainParams {
    TrainParams {
        components: 3,
        ..TrainParams::default()
    }
}

#[test]
fn features_slide_over_the_window() {
    let mut r = Rng(7);
    let mut out = Vec::new();
    let s = recon(&mut out, &mut r, T0);
    let lines: Vec<String> = out.into_iter().map(|(_, l)| l).collect();
    let set = windows(&lines);
    let last = set.windows.last().expect("windows");
    let i = |n: &str| FEATURE_NAMES.iter().position(|x| *x == n).unwrap();
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
        ex.feed(&b, |o| last = Some(o.features)).unwrap();
    }
    let last = last.unwrap();
    assert!(last[i("distinct_resources")] < 15.0, "{last:?}");
    assert_eq!(last[i("resource_lists")], 0.0);
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

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models/anomaly-model.json");
    m.save(&path).expect("saves");
    let back = LoadedModel::load(&path).expect("loads");
    assert_eq!(back.version(), m.version());
    for x in set.windows.iter().take(200) {
        let (a, b) = (back.score(x), m.score(x));
        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
    }
    // Same data, same model: training is deterministic.
    let again = train(&set, &FeatureSpec::default(), &params(), "synthetic").unwrap();
    assert_eq!(again.version(), m.version());

    // Held-out calm traffic stays mostly below; recon goes far above.
    let test = windows(&traffic(300, 240, 2));
    let mut per: std::collections::HashMap<&str, f64> = Default::default();
    for (x, s) in test.windows.iter().zip(&test.sessions) {
        let e = per.entry(s).or_insert(f64::MIN);
        *e = e.max(m.score(x));
    }
    let flagged = per.values().filter(|&&v| m.is_anomalous(v)).count();
    assert!(
        flagged <= 6,
        "{flagged} of {} calm sessions flagged",
        per.len()
    );
    let mut out = Vec::new();
    recon(&mut out, &mut Rng(9), T0);
    let rl: Vec<String> = out.into_iter().map(|(_, l)| l).collect();
    let rs = windows(&rl);
    let top = rs
        .windows
        .iter()
        .map(|x| m.score(x))
        .fold(f64::MIN, f64::max);
    assert!(
        m.is_anomalous(top),
        "recon max score {top} vs threshold {}",
        c.threshold
    );
    let why = m.explain(rs.windows.last().unwrap(), 3);
    assert!(
        why.iter().any(|c| c.feature == "distinct_resources"),
        "{why:?}"
    );
    assert!(why[0].to_string().contains("baseline p50"), "{}", why[0]);

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
fn monitor_warms_up_then_raises_incidents() {
    let cfg = AnomalyConfig {
        warmup_minutes: 120,
        warmup_min_sessions: 250,
        components: 3,
        ..AnomalyConfig::default()
    };
    let mut mon = Monitor::new(cfg, None);
    assert!(mon.is_warming_up());
    let now = Utc::now();
    let mut trained = None;
    for b in batches(&traffic(400, 240, 3), 400) {
        let out = mon.process(&b, now).expect("processes");
        assert!(out.incidents.is_empty() || trained.is_some());
        if let Some(m) = out.trained {
            assert!(trained.is_none(), "trained twice");
            trained = Some(m.version().to_string());
        }
    }
    let version = trained.expect("warm-up finished and trained");
    assert!(!mon.is_warming_up());
    assert_eq!(mon.model().unwrap().version(), version);

    // Recon after the warm-up: one incident per batch at most, named.
    let mut out = Vec::new();
    recon(&mut out, &mut Rng(11), T0 + 300 * 60_000);
    let rl: Vec<String> = out.into_iter().map(|(_, l)| l).collect();
    let mut incidents = Vec::new();
    for b in batches(&rl, 1000) {
        incidents.extend(mon.process(&b, now).unwrap().incidents);
    }
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let inc = &incidents[0];
    assert_eq!(inc.rule_id, RULE_ID);
    assert_eq!(inc.rule_sha256, version);
    assert_eq!(inc.session_id.as_deref(), Some("recon-1"));
    assert_eq!(inc.level, Level::Analyst);
    assert!(inc.title.contains("baseline p50"), "{}", inc.title);
    let ev = &inc.evidence[0];
    assert_eq!(ev["model_version"], json!(version));
    assert!(!inc.event_ids.is_empty());

    // The windows survive a snapshot / restore.
    let snap = serde_json::to_string(mon.snapshot()).unwrap();
    let mut m2 = Monitor::new(AnomalyConfig::default(), mon.model().cloned());
    m2.restore(serde_json::from_str(&snap).unwrap());
    assert_eq!(m2.snapshot().sessions.len(), mon.snapshot().sessions.len());
}

#[test]
fn config_defaults_and_record() {
    let c: AnomalyConfig = toml_like_default();
    assert!(c.enabled);
    assert_eq!(c.target_fpr, 0.005);
    assert_eq!(c.level(), Level::Analyst);
    assert!(
        c.model_path(std::path::Path::new("/d"))
            .ends_with(MODEL_FILE)
    );
}

fn toml_like_default() -> AnomalyConfig {
    serde_json::from_str("{}").unwrap()
}
