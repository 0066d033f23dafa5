//! Regulatory notification documents: what one stage of a regime (NIS2 early warning, GDPR
//! Art. 33, …) asks for, filled with the facts Dunes holds about a Level 3 incident, the
//! fields only the organisation can fill marked as such, and the ledger records that back
//! every fact (exported as an evidence bundle next to the document).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use dunes_detect::notification::{NotificationClocks, StageClock, StageState};
use dunes_detect::{Incident, IncidentAction, ResponseRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Cause, PipelineError, Result};

/// The `type` of a notification document.
pub const DOCUMENT_TYPE: &str = "dunes_regulatory_notification";
/// What marks a field the reporting organisation must complete.
pub const TO_COMPLETE: &str = "TO BE COMPLETED BY THE REPORTING ENTITY";

pub use dunes_api::IncidentRecords;

/// The incident's records in the data dir's ledger and the responses they hold. Reads the
/// whole ledger (read-only; safe next to a running writer).
pub fn incident_records(
    data_dir: &Path,
    incident_id: &str,
) -> Result<(IncidentRecords, Vec<ResponseRecord>)> {
    let (records, payloads) = dunes_api::incident_records(data_dir, incident_id)
        .map_err(|e| e.wrap(format!("cannot read the ledger in {}", data_dir.display())))?;
    let responses = payloads
        .iter()
        .filter_map(|(_, p)| serde_json::from_slice::<ResponseRecord>(p).ok())
        .collect();
    Ok((records, responses))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentFacts {
    pub incident_id: String,
    pub title: String,
    pub rule_id: String,
    pub rule_sha256: String,
    pub level: u8,
    pub severity: String,
    pub status: String,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// First event of the incident (event time).
    pub first_event: DateTime<Utc>,
    pub last_event: DateTime<Utc>,
    /// When Dunes detected it.
    pub detected_at: DateTime<Utc>,
    /// When it became a major (Level 3) incident: detection at Level 3, or escalation.
    pub classified_major_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Affected {
    pub servers: Vec<String>,
    pub principals: Vec<String>,
    pub tools: Vec<String>,
    pub sessions: Vec<String>,
    /// Events Dunes attributed to the incident.
    pub events: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Containment {
    pub at: DateTime<Utc>,
    pub action: String,
    pub target: BTreeMap<String, String>,
    pub response_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalystStep {
    pub at: DateTime<Utc>,
    pub action: String,
    pub actor: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Indicator {
    /// The event column it comes from (`src_ip`, `tool_name`, `args_url_hosts`, …).
    pub kind: String,
    pub value: String,
}

/// How the document covers one thing the regime asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// The document's facts answer it.
    Provided,
    /// Facts are given, and the organisation must add its assessment.
    Partial,
    /// Only the organisation can answer it (listed in `to_complete`).
    ToComplete,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requirement {
    pub requirement: String,
    pub coverage: Coverage,
    /// Where in the document (`indicators`, `containment`, …) or what is missing.
    pub answer: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToComplete {
    pub field: String,
    pub question: String,
    /// Always `null` when Dunes writes the document.
    pub value: Option<String>,
    pub marker: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEvidence {
    pub origin: String,
    pub records: IncidentRecords,
}

/// One stage's notification document (`notification.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationDocument {
    #[serde(rename = "type")]
    pub doc_type: String,
    pub format_version: u32,
    pub generated_at: DateTime<Utc>,
    pub regime: Named,
    pub stage: Named,
    pub deadline: Option<DateTime<Utc>>,
    /// The stage's state just before this submission.
    pub state_before_submission: StageState,
    pub on_time: bool,
    pub incident: IncidentFacts,
    pub timeline: Timeline,
    pub affected: Affected,
    pub containment: Vec<Containment>,
    pub analyst_actions: Vec<AnalystStep>,
    pub indicators: Vec<Indicator>,
    pub requirements: Vec<Requirement>,
    pub to_complete: Vec<ToComplete>,
    pub ledger: LedgerEvidence,
}

/// Event columns whose values are indicators of compromise.
const INDICATOR_COLUMNS: &[&str] = &[
    "src_ip",
    "token_fp",
    "auth_sub",
    "tool_name",
    "resource_uri",
    "args_sha256",
    "args_url_hosts",
    "args_urls",
    "args_secret_types",
    "result_secret_types",
    "def_sha256",
];

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

/// Distinct values of `column` over the incident's evidence rows and entity.
fn column_values(inc: &Incident, column: &str) -> BTreeSet<String> {
    inc.evidence
        .iter()
        .filter_map(|row| row.get(column))
        .chain(inc.entity.get(column))
        .flat_map(strings)
        .collect()
}

/// Questions only the organisation can answer, always asked.
const ALWAYS_TO_COMPLETE: &[(&str, &str)] = &[
    (
        "impact_assessment",
        "Impact on services, users and data (numbers, duration, financial impact)",
    ),
    (
        "cross_border_impact",
        "Member States or other countries affected",
    ),
    (
        "contact_point",
        "Name and contact details of the contact point",
    ),
];

fn coverage(requirement: &str) -> (Coverage, String) {
    let r = requirement.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| r.contains(w));
    if has(&["indicator"]) {
        (Coverage::Provided, "indicators".into())
    } else if has(&["affected service", "ai system concerned"]) {
        (Coverage::Provided, "affected".into())
    } else if has(&["classification criteria"]) {
        (
            Coverage::Partial,
            "incident (level, severity, rule), timeline.classified_major_at; the organisation confirms the classification".into(),
        )
    } else if has(&[
        "containment",
        "mitigation",
        "measures",
        "corrective",
        "remediation",
    ]) {
        (
            Coverage::Partial,
            "containment and analyst_actions (what Dunes did and recorded); further measures: to_complete".into(),
        )
    } else if has(&[
        "description",
        "status update",
        "malicious",
        "unlawful",
        "type of threat",
    ]) {
        (
            Coverage::Partial,
            "incident (rule, title, tags), timeline, indicators; the organisation confirms the cause".into(),
        )
    } else if has(&["severity", "initial impact", "actual impact"]) {
        (
            Coverage::Partial,
            "incident.severity and affected; impact: to_complete.impact_assessment".into(),
        )
    } else {
        (Coverage::ToComplete, String::new())
    }
}

/// A short snake_case field name for a requirement: its words before the first `,`/`:`,
/// at most six of them.
fn field_name(requirement: &str) -> String {
    let head = requirement
        .split([',', ':'])
        .next()
        .unwrap_or(requirement)
        .split_whitespace()
        .take(6)
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = String::new();
    for c in head.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// What the document is built from.
pub struct DocumentInput<'a> {
    pub incident: &'a Incident,
    pub history: &'a [IncidentAction],
    pub responses: &'a [ResponseRecord],
    pub records: IncidentRecords,
    pub origin: String,
    pub regime: &'a str,
    pub stage: &'a str,
    pub now: DateTime<Utc>,
}

/// The document for `regime`/`stage` of a Level 3 incident, or why there is none (not
/// Level 3, unknown stage, already submitted).
pub fn notification_document(
    clocks: &NotificationClocks,
    input: DocumentInput<'_>,
) -> Result<NotificationDocument> {
    let inc = input.incident;
    let all = clocks.of(inc, input.history, input.now);
    if all.is_empty() {
        return Err(PipelineError::Refused(format!(
            "incident {} is level {}: notification clocks run for level 3 incidents only",
            inc.incident_id,
            inc.level.as_u8()
        )));
    }
    let clock: &StageClock = all
        .iter()
        .find(|c| c.regime == input.regime && c.stage == input.stage)
        .ok_or_else(|| {
            PipelineError::Refused(format!(
                "{}/{} is not a configured notification stage (configured: {})",
                input.regime,
                input.stage,
                all.iter()
                    .map(|c| format!("{}/{}", c.regime, c.stage))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if clock.submitted_at.is_some() {
        return Err(PipelineError::Refused(format!(
            "{}/{} was already submitted for incident {}",
            input.regime, input.stage, inc.incident_id
        )));
    }
    let list = |c: &str| column_values(inc, c).into_iter().collect::<Vec<_>>();
    let mut servers = column_values(inc, "server_id");
    servers.extend(inc.server_id.clone());
    let mut sessions = column_values(inc, "session_id");
    sessions.extend(inc.session_id.clone());
    let mut indicators = BTreeSet::new();
    for c in INDICATOR_COLUMNS {
        for v in column_values(inc, c) {
            indicators.insert(Indicator {
                kind: (*c).to_string(),
                value: v,
            });
        }
    }
    let to_complete_field = |req: &str| {
        if req.contains("cross-border") {
            "cross_border_impact".to_string()
        } else {
            field_name(req)
        }
    };
    let requirements: Vec<Requirement> = clock
        .content
        .iter()
        .map(|req| {
            let (coverage, answer) = coverage(req);
            Requirement {
                requirement: req.clone(),
                coverage,
                answer: if coverage == Coverage::ToComplete {
                    format!("to_complete.{}", to_complete_field(req))
                } else {
                    answer
                },
            }
        })
        .collect();
    let mut to_complete: Vec<ToComplete> = ALWAYS_TO_COMPLETE
        .iter()
        .map(|(f, q)| ToComplete {
            field: (*f).to_string(),
            question: (*q).to_string(),
            value: None,
            marker: TO_COMPLETE.into(),
        })
        .collect();
    for r in requirements
        .iter()
        .filter(|r| r.coverage == Coverage::ToComplete)
    {
        let field = to_complete_field(&r.requirement);
        if !to_complete.iter().any(|t| t.field == field) {
            to_complete.push(ToComplete {
                field,
                question: r.requirement.clone(),
                value: None,
                marker: TO_COMPLETE.into(),
            });
        }
    }
    Ok(NotificationDocument {
        doc_type: DOCUMENT_TYPE.into(),
        format_version: 1,
        generated_at: input.now,
        regime: Named {
            id: clock.regime.clone(),
            name: clock.regime_name.clone(),
        },
        stage: Named {
            id: clock.stage.clone(),
            name: clock.name.clone(),
        },
        deadline: clock.deadline,
        state_before_submission: clock.state,
        on_time: clock.deadline.is_none_or(|d| input.now <= d),
        incident: IncidentFacts {
            incident_id: inc.incident_id.clone(),
            title: inc.title.clone(),
            rule_id: inc.rule_id.clone(),
            rule_sha256: inc.rule_sha256.clone(),
            level: inc.level.as_u8(),
            severity: inc.severity.to_string(),
            status: inc.status.to_string(),
            tags: inc.tags.clone(),
        },
        timeline: Timeline {
            first_event: inc.first_ts,
            last_event: inc.last_ts,
            detected_at: inc.detected_at,
            classified_major_at: dunes_detect::notification::level3_at(inc, input.history),
        },
        affected: Affected {
            servers: servers.into_iter().collect(),
            principals: list("principal"),
            tools: list("tool_name"),
            sessions: sessions.into_iter().collect(),
            events: inc.event_ids.len() as u64,
        },
        containment: input
            .responses
            .iter()
            .filter(|r| r.incident_id == inc.incident_id)
            .map(|r| Containment {
                at: r.created_at,
                action: r.action.to_string(),
                target: r.target.clone(),
                response_id: r.response_id.clone(),
            })
            .collect(),
        analyst_actions: input
            .history
            .iter()
            .map(|a| AnalystStep {
                at: a.at,
                action: a.action.to_string(),
                actor: a.actor.clone(),
                role: a.role.clone(),
                detail: match (&a.regime, &a.stage, &a.note) {
                    (Some(r), Some(s), _) => Some(format!("{r}/{s}")),
                    (_, _, Some(n)) => Some(n.clone()),
                    _ => a.assignee.clone(),
                },
            })
            .collect(),
        indicators: indicators.into_iter().collect(),
        requirements,
        to_complete,
        ledger: LedgerEvidence {
            origin: input.origin,
            records: input.records,
        },
    })
}

/// The note of the `notify` action that submits `doc_json`: its BLAKE3 digest, so the
/// ledger binds the submission to the exact document.
pub fn submission_note(doc_json: &[u8]) -> String {
    format!("document blake3 {}", blake3::hash(doc_json).to_hex())
}

/// What the HTML page shows besides the document.
#[derive(Clone, Debug, Serialize)]
pub struct Submission {
    /// Ledger index of the `notify` action record.
    pub action_index: u64,
    /// BLAKE3 of `notification.json`.
    pub document_blake3: String,
    /// Size of the signed tree the evidence bundle is proved against.
    pub evidence_tree_size: u64,
    /// Root of that tree (hex).
    pub evidence_root: String,
    /// Records in the evidence bundle.
    pub evidence_records: u64,
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ d.regime.name }} — {{ d.stage.name }} — {{ d.incident.incident_id }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#111}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;table-layout:fixed}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
.todo{background:#fff3cd;font-weight:600}.late{color:#b00020;font-weight:600}.ok{color:#1b5e20;font-weight:600}
code{font-size:.92em;word-break:break-all}
</style></head><body>
<h1>{{ d.regime.name }}: {{ d.stage.name }}</h1>
<p>Incident <code>{{ d.incident.incident_id }}</code> — {{ d.incident.title }}<br>
Deadline: {{ d.deadline or "none" }} — submitted {{ d.generated_at }}:
{% if d.on_time %}<span class="ok">on time</span>{% else %}<span class="late">LATE</span>{% endif %}</p>

<h2>What the regime asks for</h2>
<table><tr><th>Requirement</th><th>Coverage</th><th>Where</th></tr>
{% for r in d.requirements %}<tr{% if r.coverage == "to_complete" %} class="todo"{% endif %}><td>{{ r.requirement }}</td><td>{{ r.coverage }}</td><td>{{ r.answer }}</td></tr>
{% endfor %}</table>

<h2>To be completed by the reporting entity</h2>
<table>{% for t in d.to_complete %}<tr class="todo"><td>{{ t.field }}</td><td>{{ t.question }}</td><td>{{ t.marker }}</td></tr>
{% endfor %}</table>

<h2>Incident</h2>
<table>
<tr><th>Rule</th><td><code>{{ d.incident.rule_id }}</code> (sha256 <code>{{ d.incident.rule_sha256 }}</code>)</td></tr>
<tr><th>Level / severity / status</th><td>{{ d.incident.level }} / {{ d.incident.severity }} / {{ d.incident.status }}</td></tr>
<tr><th>Tags</th><td>{{ d.incident.tags | join(", ") }}</td></tr>
<tr><th>First / last event</th><td>{{ d.timeline.first_event }} / {{ d.timeline.last_event }}</td></tr>
<tr><th>Detected</th><td>{{ d.timeline.detected_at }}</td></tr>
<tr><th>Classified major (level 3)</th><td>{{ d.timeline.classified_major_at or "—" }}</td></tr>
</table>

<h2>Affected</h2>
<table>
<tr><th>Servers</th><td>{{ d.affected.servers | join(", ") }}</td></tr>
<tr><th>Principals</th><td>{{ d.affected.principals | join(", ") }}</td></tr>
<tr><th>Tools</th><td>{{ d.affected.tools | join(", ") }}</td></tr>
<tr><th>Sessions</th><td>{{ d.affected.sessions | join(", ") }}</td></tr>
<tr><th>Events</th><td>{{ d.affected.events }}</td></tr>
</table>

<h2>Containment done</h2>
<table><tr><th>At</th><th>Action</th><th>Target</th></tr>
{% for c in d.containment %}<tr><td>{{ c.at }}</td><td>{{ c.action }}</td><td>{% for k, v in c.target | items %}{{ k }}={{ v }} {% endfor %}</td></tr>
{% else %}<tr><td colspan="3">none recorded</td></tr>{% endfor %}</table>

<h2>Analyst actions</h2>
<table><tr><th>At</th><th>Action</th><th>By</th><th>Detail</th></tr>
{% for a in d.analyst_actions %}<tr><td>{{ a.at }}</td><td>{{ a.action }}</td><td>{{ a.actor }} ({{ a.role }})</td><td>{{ a.detail or "" }}</td></tr>
{% endfor %}</table>

<h2>Indicators</h2>
<table><tr><th>Kind</th><th>Value</th></tr>
{% for i in d.indicators %}<tr><td>{{ i.kind }}</td><td><code>{{ i.value }}</code></td></tr>
{% endfor %}</table>

<h2>Evidence</h2>
<p>Ledger <code>{{ d.ledger.origin }}</code>: incident records {{ d.ledger.records.incidents | join(", ") }};
{{ d.ledger.records.events | length }} event records; responses {{ d.ledger.records.responses | join(", ") }};
actions {{ d.ledger.records.actions | join(", ") }}.</p>
<p>This submission is ledger record {{ s.action_index }}; its note carries the BLAKE3 of <code>notification.json</code>:
<code>{{ s.document_blake3 }}</code>. The evidence bundle in <code>evidence/</code> holds {{ s.evidence_records }} records,
each proved a leaf of the signed tree of size {{ s.evidence_tree_size }} (root <code>{{ s.evidence_root }}</code>).
Verify offline: <code>dunes verify evidence</code>.</p>
</body></html>
"#;

/// `notification.html`: the document for people (values HTML-escaped).
pub fn render_html(doc: &NotificationDocument, submission: &Submission) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("notification.html", PAGE)
        .and_then(|_| env.get_template("notification.html"))
        .and_then(|t| t.render(minijinja::context! { d => doc, s => submission }))
        .map_err(|e| PipelineError::Config(format!("cannot render the notification page: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_map_to_sections_or_to_complete() {
        assert_eq!(coverage("indicators of compromise").0, Coverage::Provided);
        assert_eq!(coverage("contact point").0, Coverage::ToComplete);
        assert_eq!(
            coverage("possible cross-border impact").0,
            Coverage::ToComplete
        );
        assert_eq!(coverage("containment measures").0, Coverage::Partial);
        assert_eq!(
            field_name("nature of the breach, categories and numbers"),
            "nature_of_the_breach"
        );
        assert_eq!(
            field_name("type of threat or root cause"),
            "type_of_threat_or_root_cause"
        );
    }
}
