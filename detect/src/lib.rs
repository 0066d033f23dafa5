//! `dunes-detect`: SQL detection rules planned once on DataFusion and
//! re-executed per micro-batch, incidents, and Level 1–3 responses.

pub mod anomaly;
mod cidr_udf;
pub mod engine;
pub mod history;
pub mod incident;
pub mod lifecycle;
pub mod lint;
pub mod noise;
pub mod notification;
mod prefilter;
mod regex_udf;
pub mod response;
pub mod rule;
pub mod sigma;
mod sql_syntax;
pub mod state;
pub mod store;
pub mod testing;

use chrono::{DateTime, Utc};

pub use dunes_ingest::Tables;
pub use engine::{
    BatchPlans, Engine, EngineState, Fire, LateCounts, PlannedRule, RuleCost, RuleMatches,
};
pub use history::{HistoryCompression, HistoryConfig, HistoryWriter};
pub use incident::{Incident, IncidentStatus};
pub use lifecycle::{ActionKind, Disposition, IncidentAction, TransitionError, transition};
pub use prefilter::PrefilterStats;
pub use response::{ResponseConfig, ResponseRecord};
pub use rule::{Level, LoadedRule, ResponseAction, RuleConfig, Severity, load_dir};
pub use sql_syntax::check_syntax;
pub use store::{IncidentFilter, IncidentStore};

/// The one error type of this crate's boundary.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Rule {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("rule {rule}: execution failed: {message}")]
    Execution { rule: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: Sigma rule {rule:?}: {construct}: {reason}")]
    Sigma {
        file: String,
        rule: String,
        construct: String,
        reason: String,
    },
    #[error("{0}")]
    InvalidValue(String),
    #[error("anomaly model: {0}")]
    Model(String),
}

/// What one micro-batch produced.
#[derive(Debug, Default)]
pub struct Detection {
    pub incidents: Vec<Incident>,
    /// Earlier incidents (same `incident_id`) whose running count, last_ts
    /// and event ids grew because of suppressed matches in this batch.
    pub updates: Vec<Incident>,
    pub responses: Vec<ResponseRecord>,
}

/// Runs every rule over a batch and turns matches into incidents and
/// responses. `now` is the detection time (the regulatory clock's start).
pub async fn detect(
    engine: &Engine,
    tables: Tables<'_>,
    now: DateTime<Utc>,
    cfg: &ResponseConfig,
) -> Result<Detection, DetectError> {
    let plans = engine.start(tables);
    Ok(detect_with_anomaly(engine, plans, None, tables, now, cfg)
        .await?
        .0)
}

/// [`detect`] plus the behavioural anomaly monitor: its incidents join the
/// rules' before suppression, so they get the same noise control, levels
/// and responses. `plans` are the rules' plans over `tables`, started with
/// [`Engine::start`] (possibly while the previous batch was finishing).
/// Returns the detection and the monitor's outcome (a model trained at the
/// end of a warm-up, windows scored).
pub async fn detect_with_anomaly(
    engine: &Engine,
    plans: BatchPlans,
    anomaly: Option<&mut anomaly::Monitor>,
    tables: Tables<'_>,
    now: DateTime<Utc>,
    cfg: &ResponseConfig,
) -> Result<(Detection, anomaly::AnomalyOutcome), DetectError> {
    let mut out = Detection::default();
    let mut raised = Vec::new();
    for m in engine.finish(plans).await? {
        raised.extend(incident::build_incidents(&m, now)?);
    }
    let mut outcome = anomaly::AnomalyOutcome::default();
    let mut extra = Vec::new();
    let mut anomaly_action = None;
    if let Some(mon) = anomaly {
        // What the rules flag is not learnt as normal behaviour.
        mon.exclude_from_warmup(raised.iter().filter_map(|i| i.session_id.as_deref()));
        outcome = mon.process(tables.events, now)?;
        raised.append(&mut outcome.incidents);
        extra.push((anomaly::RULE_ID, mon.suppress_us()));
        anomaly_action = Some(mon.response_action());
    }
    let filtered = engine.filter_noise_with(raised, &extra);
    for inc in filtered.new {
        match anomaly_action {
            Some(action) if inc.rule_id == anomaly::RULE_ID => {
                out.responses.extend(anomaly::responses(&inc, action, cfg));
            }
            _ => {
                let requested = engine
                    .rules()
                    .iter()
                    .find(|r| r.id() == inc.rule_id)
                    .and_then(|r| r.rule.config.response);
                out.responses
                    .extend(response::respond(&inc, requested, cfg));
            }
        }
        out.incidents.push(inc);
    }
    out.updates = filtered.updates;
    Ok((out, outcome))
}

/// Hot reload of a rule directory: loads and plans every rule into a new
/// engine, then carries over the state of `old` for the rules whose id and
/// SHA-256 are unchanged ([`Engine::carry_state_from`]). On any error
/// (naming the file and line, as at start) `old` is untouched and keeps
/// running. Returns the new engine and the ids whose state was kept.
pub async fn reload(
    old: &Engine,
    dir: &std::path::Path,
) -> Result<(Engine, Vec<String>), DetectError> {
    let rules = load_dir(dir)?;
    let engine = Engine::new(rules).await?;
    let kept = engine.carry_state_from(old);
    Ok((engine, kept))
}

/// The version record of a loaded rule set: every rule's id, file and
/// SHA-256, every allowlist's SHA-256, and one hash over all of them.
pub fn rule_set_version(rules: &[PlannedRule]) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut list = Vec::with_capacity(rules.len());
    for r in rules {
        h.update(r.id().as_bytes());
        h.update(b"\0");
        h.update(r.rule.sha256.as_bytes());
        let ex: Vec<serde_json::Value> = r
            .rule
            .exceptions
            .iter()
            .map(|e| {
                h.update(e.sha256.as_bytes());
                serde_json::json!({"file": e.file.display().to_string(), "sha256": e.sha256})
            })
            .collect();
        list.push(serde_json::json!({
            "id": r.id(),
            "file": r.rule.path.display().to_string(),
            "sha256": r.rule.sha256,
            "exceptions": ex,
        }));
    }
    serde_json::json!({
        "type": "rule_set",
        "version": hex::encode(h.finalize()),
        "rules": list,
    })
}
