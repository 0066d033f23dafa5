//! `dunes-detect`: SQL detection rules planned once on DataFusion and
//! re-executed per micro-batch, incidents, and Level 1–3 responses.

pub mod engine;
pub mod incident;
pub mod response;
pub mod rule;
pub mod store;
pub mod testing;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};

pub use engine::{Engine, PlannedRule, RuleMatches};
pub use incident::{Incident, IncidentStatus};
pub use response::{ResponseConfig, ResponseRecord};
pub use rule::{Level, LoadedRule, ResponseAction, RuleConfig, Severity, load_dir};
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
    #[error("{0}")]
    InvalidValue(String),
}

/// What one micro-batch produced.
#[derive(Debug, Default)]
pub struct Detection {
    pub incidents: Vec<Incident>,
    pub responses: Vec<ResponseRecord>,
}

/// Runs every rule over a batch and turns matches into incidents and
/// responses. `now` is the detection time (the regulatory clock's start).
pub async fn detect(
    engine: &Engine,
    events: &RecordBatch,
    tool_defs: &RecordBatch,
    now: DateTime<Utc>,
    cfg: &ResponseConfig,
) -> Result<Detection, DetectError> {
    let mut out = Detection::default();
    for m in engine.evaluate(events, tool_defs).await? {
        let requested = m.rule.rule.config.response;
        for inc in incident::build_incidents(&m, now)? {
            out.responses
                .extend(response::respond(&inc, requested, cfg));
            out.incidents.push(inc);
        }
    }
    Ok(out)
}
