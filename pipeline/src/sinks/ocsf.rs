//! Incidents as OCSF 1.8.0 **Detection Finding** events (class_uid 2004,
//! category 2 Findings), one per incident change: `activity_id` 1 Create
//! (new incident), 2 Update (repeat match, acknowledged, assigned,
//! escalated), 3 Close (resolved). Base class, no profiles; what has no
//! OCSF home is under `unmapped.dunes`. The mapping table is in
//! `docs/outputs.md`; tests validate every shipped rule's finding against
//! the schema generated from the official OCSF export
//! (`scripts/ocsf-schema.sh`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use dunes_detect::{Incident, IncidentStatus, Severity};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::sinks::lifecycle::{Change, ChangeKind};

pub const OCSF_VERSION: &str = "1.8.0";
const CLASS_UID: u32 = 2004;
/// Most observables one finding lists.
const MAX_OBSERVABLES: usize = 64;

#[derive(Serialize)]
struct Finding<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u8,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: String,
    severity_id: u8,
    severity: &'static str,
    status_id: u8,
    status: &'static str,
    time: i64,
    start_time: i64,
    end_time: i64,
    count: u64,
    is_alert: bool,
    message: &'a str,
    finding_info: FindingInfo<'a>,
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    observables: Vec<Observable>,
    unmapped: Value,
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    uid: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    types: Vec<&'a str>,
    created_time: i64,
    modified_time: i64,
    first_seen_time: i64,
    last_seen_time: i64,
    analytic: Analytic<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attacks: Vec<Value>,
    related_events: Vec<RelatedEvent<'a>>,
    related_events_count: usize,
}

#[derive(Serialize)]
struct Analytic<'a> {
    uid: &'a str,
    name: &'a str,
    type_id: u8,
    #[serde(rename = "type")]
    kind: &'static str,
    /// The rule file's SHA-256 (changes with every edit).
    version: &'a str,
}

#[derive(Serialize)]
struct RelatedEvent<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Metadata<'a> {
    uid: &'a str,
    correlation_uid: &'a str,
    version: &'static str,
    log_name: &'static str,
    logged_time: i64,
    product: Product,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Observable {
    type_id: u8,
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    value: String,
}

fn activity(kind: ChangeKind) -> (u8, &'static str) {
    match kind {
        ChangeKind::Created => (1, "Create"),
        ChangeKind::Resolved => (3, "Close"),
        ChangeKind::Updated
        | ChangeKind::Acknowledged
        | ChangeKind::Assigned
        | ChangeKind::Escalated
        | ChangeKind::NotificationSubmitted
        | ChangeKind::Commented
        | ChangeKind::Deescalated
        | ChangeKind::Suppressed => (2, "Update"),
    }
}

fn severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

fn status(s: IncidentStatus) -> (u8, &'static str) {
    match s {
        IncidentStatus::Open => (1, "New"),
        IncidentStatus::Acknowledged => (2, "In Progress"),
        IncidentStatus::Resolved => (4, "Resolved"),
    }
}

/// MITRE ATLAS (`atlas:AML.T0051.001`) and ATT&CK (`attack:T1059`,
/// Sigma's `attack.t1059.001`, `attack.execution`) tags as OCSF attacks.
fn attacks(tags: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for t in tags {
        let (scheme, id) = match t.split_once([':', '.']) {
            Some((s, id))
                if s.eq_ignore_ascii_case("atlas") || s.eq_ignore_ascii_case("attack") =>
            {
                (s.to_ascii_lowercase(), id)
            }
            _ => continue,
        };
        let id_up = id.to_ascii_uppercase();
        // AML.T0051 / T1059 are techniques, AML.TA0002 / TA0001 tactics.
        let local = id_up.strip_prefix("AML.").unwrap_or(&id_up);
        let digit_after = |p: &str| {
            local
                .strip_prefix(p)
                .and_then(|r| r.chars().next())
                .is_some_and(|c| c.is_ascii_digit())
        };
        if digit_after("T") {
            // A sub-technique has one more dotted number: AML.T0051.001, T1059.001.
            let parent_len = if scheme == "atlas" { 2 } else { 1 };
            let parts: Vec<&str> = id_up.split('.').collect();
            if parts.len() > parent_len {
                out.push(json!({
                    "technique": {"uid": parts[..parent_len].join(".")},
                    "sub_technique": {"uid": id_up},
                }));
            } else {
                out.push(json!({"technique": {"uid": id_up}}));
            }
        } else if digit_after("TA") {
            out.push(json!({"tactic": {"uid": id_up}}));
        } else if scheme == "attack"
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
        {
            // Sigma tactic tags: attack.execution, attack.initial-access.
            out.push(json!({"tactic": {"name": id.replace(['-', '_'], " ")}}));
        }
    }
    out
}

/// Observables from the incident's entity and evidence rows.
fn observables(inc: &Incident) -> Vec<Observable> {
    let mut set = BTreeSet::new();
    let mut add = |col: &str, v: &Value| {
        let kind = match col {
            "principal" | "auth_sub" => Some((4, "User Name")),
            "src_ip" => Some((2, "IP Address")),
            "server_id" => Some((10, "Resource UID")),
            "args_urls" => Some((6, "URL String")),
            "args_url_hosts" | "host" => Some((1, "Hostname")),
            "user_agent" => Some((16, "HTTP User-Agent")),
            "tool_name" => Some((99, "Other")),
            _ => None,
        };
        let Some((type_id, kind)) = kind else { return };
        let values: Vec<&str> = match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for s in values {
            if s.is_empty() || (type_id == 2 && s.parse::<IpAddr>().is_err()) {
                continue;
            }
            set.insert(Observable {
                type_id,
                kind,
                name: col.to_string(),
                value: s.to_string(),
            });
        }
    };
    for (k, v) in &inc.entity {
        add(k, v);
    }
    if let Some(s) = &inc.server_id {
        add("server_id", &Value::String(s.clone()));
    }
    for row in &inc.evidence {
        for (k, v) in row {
            add(k, v);
        }
    }
    set.into_iter().take(MAX_OBSERVABLES).collect()
}

/// The OCSF Detection Finding of one incident change.
pub(crate) fn finding(c: &Change<'_>) -> Value {
    let inc = c.incident;
    let (activity_id, activity_name) = activity(c.kind);
    let (severity_id, severity_name) = severity(inc.severity);
    let (status_id, status_name) = status(inc.status);
    let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
    let mut dunes = Map::new();
    dunes.insert("change".into(), json!(c.kind.event_type()));
    dunes.insert("level".into(), json!(inc.level.as_u8()));
    dunes.insert("tags".into(), json!(inc.tags));
    dunes.insert("entity".into(), json!(inc.entity));
    dunes.insert("session_id".into(), json!(inc.session_id));
    dunes.insert("server_id".into(), json!(inc.server_id));
    dunes.insert("evidence".into(), json!(inc.evidence));
    if inc.backfill {
        dunes.insert("backfill".into(), json!(true));
    }
    if let Some(a) = c.action {
        let mut action = json!({
            "action_id": a.action_id, "action": a.action, "actor": a.actor, "role": a.role,
            "assignee": a.assignee, "disposition": a.disposition, "note": a.note,
            "regime": a.regime, "stage": a.stage,
        });
        if let Some(m) = action.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        dunes.insert("action".into(), action);
    }
    let f = Finding {
        activity_id,
        activity_name,
        category_uid: 2,
        category_name: "Findings",
        class_uid: CLASS_UID,
        class_name: "Detection Finding",
        type_uid: CLASS_UID * 100 + u32::from(activity_id),
        type_name: format!("Detection Finding: {activity_name}"),
        severity_id,
        severity: severity_name,
        status_id,
        status: status_name,
        time: ms(c.at),
        start_time: ms(inc.first_ts),
        end_time: ms(inc.last_ts),
        count: inc.match_count,
        is_alert: true,
        message: &inc.title,
        finding_info: FindingInfo {
            uid: &inc.incident_id,
            title: &inc.title,
            types: inc
                .tags
                .iter()
                .filter(|t| t.starts_with("owasp"))
                .map(String::as_str)
                .collect(),
            created_time: ms(inc.detected_at),
            modified_time: ms(c.at),
            first_seen_time: ms(inc.first_ts),
            last_seen_time: ms(inc.last_ts),
            analytic: Analytic {
                uid: &inc.rule_id,
                name: &inc.title,
                type_id: if inc.rule_id == dunes_detect::anomaly::RULE_ID {
                    4
                } else {
                    1
                },
                kind: if inc.rule_id == dunes_detect::anomaly::RULE_ID {
                    "Learning (ML/DL)"
                } else {
                    "Rule"
                },
                version: &inc.rule_sha256,
            },
            attacks: attacks(&inc.tags),
            related_events: inc
                .event_ids
                .iter()
                .map(|uid| RelatedEvent { uid })
                .collect(),
            related_events_count: inc.event_ids.len(),
        },
        metadata: Metadata {
            uid: &c.id,
            correlation_uid: &inc.incident_id,
            version: OCSF_VERSION,
            log_name: "incidents",
            // Logged when it changed: findings are written as changes happen.
            logged_time: ms(c.at),
            product: Product {
                name: "Dunes",
                vendor_name: "Dunes",
                version: env!("CARGO_PKG_VERSION"),
            },
        },
        observables: observables(inc),
        unmapped: json!({ "dunes": dunes }),
    };
    serde_json::to_value(&f).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atlas_and_attack_tags_become_techniques_sub_techniques_and_tactics() {
        let tags: Vec<String> = [
            "owasp-mcp:MCP07",
            "atlas:AML.T0049",
            "atlas:AML.T0051.001",
            "attack.t1059.001",
            "attack:T1190",
            "attack.initial-access",
            "attack:TA0001",
            "atlas:AML.TA0002",
            "attack.g0007",
            "cve.2024-1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            Value::Array(attacks(&tags)),
            json!([
                {"technique": {"uid": "AML.T0049"}},
                {"technique": {"uid": "AML.T0051"}, "sub_technique": {"uid": "AML.T0051.001"}},
                {"technique": {"uid": "T1059"}, "sub_technique": {"uid": "T1059.001"}},
                {"technique": {"uid": "T1190"}},
                {"tactic": {"name": "initial access"}},
                {"tactic": {"uid": "TA0001"}},
                {"tactic": {"uid": "AML.TA0002"}},
            ])
        );
    }

    /// Every change of an anomaly-model incident (no rule file, no tags) is a
    /// valid finding too, typed as a learning analytic.
    #[test]
    fn anomaly_incident_changes_validate_against_the_schema() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/ocsf/detection_finding.schema.json"
        ))
        .expect("schema");
        let schema: Value = serde_json::from_str(&text).expect("schema JSON");
        let mut inc = crate::sinks::webhook::tests::incident();
        inc.rule_id = dunes_detect::anomaly::RULE_ID.to_string();
        inc.tags.clear();
        inc.entity.clear();
        inc.evidence.clear();
        let json = serde_json::to_vec(&inc).expect("encode");
        let now = inc.detected_at;
        let findings: Vec<Value> = [
            Change::created(&inc, &json),
            Change::updated(&inc, &json, now),
        ]
        .iter()
        .map(finding)
        .collect();
        // Deep schema: validate on a thread with room for the recursion.
        std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(move || {
                let v = jsonschema::validator_for(&schema).expect("validator");
                for f in &findings {
                    let errors: Vec<String> = v.iter_errors(f).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{errors:?}\n{f:#}");
                    assert_eq!(f["finding_info"]["analytic"]["type_id"], 4);
                    assert!(f["finding_info"].get("attacks").is_none());
                }
            })
            .expect("spawn")
            .join()
            .expect("valid findings");
    }
}
