//! `dunes eval`: replays labelled traffic through the real pipeline (into a
//! throw-away data dir) and scores sessions: per-scenario recall, benign
//! sessions flagged (false positives) with the rules that flagged them, and
//! the rules that fired per scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use dunes_detect::{Incident, IncidentStore};
use serde::Serialize;

use dunes_pipeline::Config;
use dunes_pipeline::Pipeline;

/// Per-scenario numbers.
#[derive(Debug, Default, Serialize)]
pub struct ScenarioScore {
    pub sessions: usize,
    pub detected: usize,
    pub missed: Vec<String>,
    /// Missed sessions whose events an incident attributed to another
    /// session cites (e.g. folded by suppression into the update of a
    /// server-wide incident raised for an earlier session).
    pub cited_elsewhere: usize,
    /// rule id → sessions of this scenario it fired on.
    pub rules: BTreeMap<String, usize>,
}

#[derive(Debug, Default, Serialize)]
pub struct EvalReport {
    pub envelopes: u64,
    pub incidents: usize,
    /// Incidents whose session is not in the labels (or have none).
    pub unlabelled_incidents: usize,
    /// Their rules (self-monitoring incidents have no session).
    pub unlabelled_rules: BTreeSet<String>,
    pub scenarios: BTreeMap<String, ScenarioScore>,
    /// benign session → rules that flagged it.
    pub false_positives: BTreeMap<String, BTreeSet<String>>,
    /// benign session → principal-wide rules whose incidents cite it beside
    /// attack sessions of the same principal (and nothing else flagged it).
    pub collateral: BTreeMap<String, BTreeSet<String>>,
    /// The behavioural anomaly model's incidents, scored on their own.
    pub anomaly: AnomalyScore,
}

/// Anomaly incidents (`anomaly.behaviour`) scored apart from the rules.
#[derive(Debug, Default, Serialize)]
pub struct AnomalyScore {
    /// Model version (None: no model, or still warming up at the end).
    pub model_version: Option<String>,
    pub target_fpr: f64,
    pub incidents: usize,
    /// scenario → (sessions flagged by the model, sessions).
    pub by_scenario: BTreeMap<String, (usize, usize)>,
    /// Benign sessions flagged by the model / benign sessions.
    pub benign_flagged: usize,
    pub benign_sessions: usize,
    pub fpr: f64,
    /// Attack sessions flagged by the model and by no rule.
    pub only_model: usize,
    /// The same per window kind (`session`, `principal`): an incident
    /// counts for the session of the request that ended its window.
    pub by_window: BTreeMap<String, WindowScore>,
    /// Incidents per model that fired (`prior`, `deployment`) and trigger
    /// (`tail`, `mixture`), e.g. `prior/tail`.
    pub by_model: BTreeMap<String, usize>,
}

/// Anomaly incidents of one window kind.
#[derive(Debug, Default, Serialize)]
pub struct WindowScore {
    pub incidents: usize,
    /// scenario → sessions flagged by windows of this kind.
    pub by_scenario: BTreeMap<String, usize>,
    pub benign_flagged: usize,
}

/// The window kind of an anomaly incident (`session` for incidents from
/// before principal windows).
fn window_of(inc: &Incident) -> &str {
    inc.evidence
        .first()
        .and_then(|e| e.get("window"))
        .and_then(|w| w.as_str())
        .unwrap_or("session")
}

impl EvalReport {
    /// Attack sessions detected / attack sessions, ignoring `skip`.
    pub fn attack_recall(&self, skip: &[&str]) -> (usize, usize) {
        self.scenarios
            .iter()
            .filter(|(k, _)| k.as_str() != "benign" && !skip.contains(&k.as_str()))
            .fold((0, 0), |(d, n), (_, s)| (d + s.detected, n + s.sessions))
    }
}

/// Which session each input event belongs to (event id → session id), for
/// incidents that name events of several sessions (a principal's or a
/// server's).
pub type EventSessions = std::collections::HashMap<String, String>;

/// Scores incidents against labels (session_id → scenario, `benign` for
/// clean sessions). An incident counts for its own session; one whose
/// entity is a principal (and not a session: per-principal rates) accuses
/// that principal in every session it cites, so it also counts for each
/// labelled session one of its `event_ids` belongs to (`sessions`), benign
/// ones included. Server-wide incidents (error bursts, downgrades) accuse
/// the server, not the sessions whose events they cite; anomaly incidents
/// keep their own window attribution.
pub fn score(
    labels: &BTreeMap<String, String>,
    incidents: &[Incident],
    sessions: &EventSessions,
) -> EvalReport {
    let mut by_session: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut report = EvalReport {
        incidents: incidents.len(),
        ..EvalReport::default()
    };
    let cited_anywhere: BTreeSet<&str> = incidents
        .iter()
        .flat_map(|i| &i.event_ids)
        .filter_map(|e| sessions.get(e).map(String::as_str))
        .collect();
    let mut collateral: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for inc in incidents {
        let principal_wide = inc.entity.contains_key("principal")
            && !inc.entity.contains_key("session_id")
            && inc.rule_id != dunes_detect::anomaly::RULE_ID;
        let cited = inc
            .session_id
            .as_deref()
            .into_iter()
            .chain(
                inc.event_ids
                    .iter()
                    .filter(|_| principal_wide)
                    .filter_map(|e| sessions.get(e).map(String::as_str)),
            )
            .filter(|s| labels.contains_key(*s))
            .collect::<BTreeSet<_>>();
        if cited.is_empty() {
            report.unlabelled_incidents += 1;
            report.unlabelled_rules.insert(inc.rule_id.clone());
        }
        // A principal-wide incident that names attack sessions is a true
        // positive; the principal's benign sessions it cites too are
        // collateral, not a wrong accusation.
        let names_attack = principal_wide
            && cited
                .iter()
                .any(|s| labels.get(*s).is_some_and(|l| l != "benign"));
        for s in cited {
            if names_attack && labels.get(s).is_some_and(|l| l == "benign") {
                collateral
                    .entry(s)
                    .or_default()
                    .insert(inc.rule_id.as_str());
                continue;
            }
            by_session
                .entry(s)
                .or_default()
                .insert(inc.rule_id.as_str());
        }
    }
    for (s, rules) in collateral {
        if !by_session.contains_key(s) {
            report.collateral.insert(
                s.to_string(),
                rules.into_iter().map(str::to_string).collect(),
            );
        }
    }
    let rule = dunes_detect::anomaly::RULE_ID;
    let mut windows: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for inc in incidents.iter().filter(|i| i.rule_id == rule) {
        report.anomaly.incidents += 1;
        let ev = inc.evidence.first();
        let field = |k: &str, default: &'static str| {
            ev.and_then(|e| e.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        let key = format!(
            "{}/{}",
            field("model", "deployment"),
            field("trigger", "mixture")
        );
        *report.anomaly.by_model.entry(key).or_default() += 1;
        let kind = window_of(inc);
        report
            .anomaly
            .by_window
            .entry(kind.to_string())
            .or_default()
            .incidents += 1;
        if let Some(s) = inc.session_id.as_deref() {
            windows.entry(s).or_default().insert(kind);
        }
    }
    for (session, scenario) in labels {
        for kind in windows.get(session.as_str()).into_iter().flatten() {
            let w = report
                .anomaly
                .by_window
                .entry(kind.to_string())
                .or_default();
            *w.by_scenario.entry(scenario.clone()).or_default() += 1;
            w.benign_flagged += (scenario == "benign") as usize;
        }
        let flagged = by_session.get(session.as_str());
        let by_model = flagged.is_some_and(|r| r.contains(rule));
        let a = report
            .anomaly
            .by_scenario
            .entry(scenario.clone())
            .or_default();
        a.0 += by_model as usize;
        a.1 += 1;
        if scenario == "benign" {
            report.anomaly.benign_sessions += 1;
            report.anomaly.benign_flagged += by_model as usize;
        } else if by_model && flagged.is_some_and(|r| r.len() == 1) {
            report.anomaly.only_model += 1;
        }
        let sc = report.scenarios.entry(scenario.clone()).or_default();
        sc.sessions += 1;
        match by_session.get(session.as_str()) {
            Some(rules) => {
                sc.detected += 1;
                for r in rules {
                    *sc.rules.entry(r.to_string()).or_default() += 1;
                }
                if scenario == "benign" {
                    report.false_positives.insert(
                        session.clone(),
                        rules.iter().map(|r| r.to_string()).collect(),
                    );
                }
            }
            None => {
                sc.cited_elsewhere += cited_anywhere.contains(session.as_str()) as usize;
                sc.missed.push(session.clone());
            }
        }
    }
    report.anomaly.fpr =
        report.anomaly.benign_flagged as f64 / report.anomaly.benign_sessions.max(1) as f64;
    report
}

/// Replays `events` through a fresh pipeline in a temporary data dir and
/// returns every incident raised, and the anomaly model version in use at
/// the end. The anomaly model of the configured data dir (if any) is used;
/// without one the monitor warms up on the replay.
pub async fn replay_with_model(
    cfg: &Config,
    events: &Path,
) -> anyhow::Result<((u64, Vec<Incident>, EventSessions), Option<String>)> {
    let tmp = std::env::temp_dir().join(format!(
        "dunes-eval-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let mut cfg = cfg.clone();
    let model = cfg.anomaly.model_path(&cfg.data_dir);
    if model.exists() {
        cfg.anomaly.model = Some(model);
    }
    cfg.data_dir = tmp.clone();
    let result = replay_into(&cfg, events).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

async fn replay_into(
    cfg: &Config,
    events: &Path,
) -> anyhow::Result<((u64, Vec<Incident>, EventSessions), Option<String>)> {
    #[derive(serde::Deserialize)]
    struct SessionOf {
        session_id: Option<String>,
    }
    let mut sessions = EventSessions::new();
    let store = Arc::new(IncidentStore::new());
    let mut pipeline = Pipeline::open(cfg, store.clone(), None).await?;
    let reader = dunes_ingest::source::open_file(events, cfg.ingest.max_line_bytes)
        .with_context(|| format!("cannot open {}", events.display()))?;
    let batch = cfg.ingest.batch_size.max(1);
    let mut incidents = Vec::new();
    let mut buf = Vec::with_capacity(batch);
    for rec in reader {
        let rec = rec?;
        if let (
            Some(id),
            Ok(SessionOf {
                session_id: Some(s),
            }),
        ) = (
            dunes_ingest::event_id_of(&rec.bytes),
            serde_json::from_slice::<SessionOf>(&rec.bytes),
        ) {
            sessions.insert(id, s);
        }
        buf.push(rec);
        if buf.len() >= batch {
            incidents.extend(pipeline.process(std::mem::take(&mut buf)).await?.incidents);
        }
    }
    incidents.extend(pipeline.process(buf).await?.incidents);
    let envelopes = pipeline.stats.envelopes;
    let model = pipeline.anomaly_model_version().flatten();
    pipeline.close()?;
    // The incidents as they stand at the end: suppression updates included
    // (a batch reports only its new incidents).
    let (finals, _) = store.changed_since(0, usize::MAX);
    let incidents = if finals.len() >= incidents.len() {
        finals
    } else {
        incidents
    };
    Ok(((envelopes, incidents, sessions), model))
}

/// Stateless traffic: with the generator's truth (event id → session), each incident is
/// scored for the generated session most of its cited events belong to, whatever session
/// stitching derived; the event → session map becomes the truth.
fn apply_truth(truth: EventSessions, incidents: &mut [Incident], sessions: &mut EventSessions) {
    for inc in incidents.iter_mut() {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &inc.event_ids {
            if let Some(s) = truth.get(e) {
                *count.entry(s.as_str()).or_default() += 1;
            }
        }
        if let Some((s, _)) = count.into_iter().max_by_key(|(_, c)| *c) {
            inc.session_id = Some(s.to_string());
        }
    }
    *sessions = truth;
}

pub async fn run(
    cfg: &Config,
    events: &Path,
    labels: &Path,
    truth: Option<&Path>,
    json: bool,
) -> anyhow::Result<bool> {
    let labels: BTreeMap<String, String> = serde_json::from_slice(
        &std::fs::read(labels).with_context(|| format!("cannot read {}", labels.display()))?,
    )
    .with_context(|| {
        format!(
            "{}: expected a JSON object session_id → scenario",
            labels.display()
        )
    })?;
    let ((envelopes, mut incidents, mut sessions), model) = replay_with_model(cfg, events).await?;
    if let Some(t) = truth {
        let map: EventSessions = serde_json::from_slice(
            &std::fs::read(t).with_context(|| format!("cannot read {}", t.display()))?,
        )
        .with_context(|| format!("{}: expected a JSON object event_id → session", t.display()))?;
        apply_truth(map, &mut incidents, &mut sessions);
    }
    let mut report = score(&labels, &incidents, &sessions);
    report.envelopes = envelopes;
    report.anomaly.model_version = model;
    report.anomaly.target_fpr = cfg.anomaly.target_fpr;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, events);
    }
    // Rules must flag no benign session; the model may flag up to twice
    // its calibrated rate.
    let rule_fp = report.false_positives.values().any(|rules| {
        rules
            .iter()
            .any(|r| r.as_str() != dunes_detect::anomaly::RULE_ID)
    });
    let model_ok = report.anomaly.fpr <= 2.0 * report.anomaly.target_fpr;
    Ok(!rule_fp && model_ok)
}

fn print_report(r: &EvalReport, events: &Path) {
    let outside = if r.unlabelled_rules.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            Vec::from_iter(r.unlabelled_rules.iter().cloned()).join(", ")
        )
    };
    println!(
        "{}: {} envelopes, {} incidents ({} outside labelled sessions{outside})",
        events.display(),
        r.envelopes,
        r.incidents,
        r.unlabelled_incidents
    );
    println!(
        "{:<30} {:>8} {:>8} {:>7}  rules fired",
        "scenario", "sessions", "detected", "recall"
    );
    for (name, s) in &r.scenarios {
        let recall = if s.sessions == 0 {
            0.0
        } else {
            s.detected as f64 / s.sessions as f64
        };
        let rules: Vec<String> = s.rules.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        let shown = if name == "benign" {
            format!("{:>8} {:>8} {:>7}", s.sessions, s.detected, "(FP)")
        } else {
            format!(
                "{:>8} {:>8} {:>6.1}%",
                s.sessions,
                s.detected,
                recall * 100.0
            )
        };
        println!("{name:<30} {shown}  {}", rules.join(", "));
        if name != "benign" && !s.missed.is_empty() && s.missed.len() <= 10 {
            println!("{:<30}   missed: {}", "", s.missed.join(", "));
        }
        if name != "benign" && s.cited_elsewhere > 0 {
            println!(
                "{:<30}   of the missed, {} cited by an incident of another session (suppression folded them into its update)",
                "", s.cited_elsewhere
            );
        }
    }
    let (d, n) = r.attack_recall(&[]);
    let (d2, n2) = r.attack_recall(&["recon_anomaly"]);
    println!("attack sessions detected: {d}/{n} (excluding recon_anomaly: {d2}/{n2})");
    let benign = r.scenarios.get("benign").map(|s| s.sessions).unwrap_or(0);
    let by_rules = r
        .false_positives
        .values()
        .filter(|rules| rules.iter().any(|x| !x.starts_with("anomaly.")))
        .count();
    println!(
        "benign sessions flagged: {}/{benign} (by signature rules: {by_rules}, by the anomaly model only: {})",
        r.false_positives.len(),
        r.false_positives.len() - by_rules
    );
    for (s, rules) in &r.false_positives {
        println!(
            "  FP {s}: {}",
            rules.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !r.collateral.is_empty() {
        println!(
            "benign sessions cited as collateral by principal-wide incidents that name the same principal's attack sessions: {}",
            r.collateral.len()
        );
        for (s, rules) in &r.collateral {
            println!(
                "  collateral {s}: {}",
                rules.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    print_anomaly(&r.anomaly);
}

fn print_anomaly(a: &AnomalyScore) {
    println!();
    match &a.model_version {
        Some(v) => println!(
            "anomaly model {}: {} incidents",
            &v[..v.len().min(12)],
            a.incidents
        ),
        None => {
            println!("anomaly model: none (disabled, or still warming up at the end)");
            return;
        }
    }
    for (name, (flagged, n)) in &a.by_scenario {
        if name == "benign" || *flagged == 0 && name != "recon_anomaly" {
            continue;
        }
        println!(
            "  {name:<30} {flagged:>4}/{n:<4} {:>6.1}%",
            100.0 * *flagged as f64 / (*n).max(1) as f64
        );
    }
    for (kind, w) in &a.by_window {
        let attacks: usize = w
            .by_scenario
            .iter()
            .filter(|(k, _)| k.as_str() != "benign")
            .map(|(_, v)| v)
            .sum();
        let recon = w.by_scenario.get("recon_anomaly").copied().unwrap_or(0);
        println!(
            "  {kind} windows: {} incidents; attack sessions {attacks} (recon_anomaly {recon}), benign sessions {}",
            w.incidents, w.benign_flagged
        );
    }
    let fired: Vec<String> = a.by_model.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  incidents by model/trigger: {}", fired.join(", "));
    println!(
        "  attack sessions flagged by the model and no rule: {}",
        a.only_model
    );
    println!(
        "  benign sessions flagged by the model: {}/{} = {:.2}% (target {:.2}%, limit 2x = {:.2}%)",
        a.benign_flagged,
        a.benign_sessions,
        a.fpr * 100.0,
        a.target_fpr * 100.0,
        2.0 * a.target_fpr * 100.0
    );
}
