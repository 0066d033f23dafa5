//! Level 1–3 responses to incidents.
//!
//! Level 1 produces an automated containment record (isolate the session or
//! block the principal) that enforcement points (gateways) consume; Level 2
//! leaves the incident in the analyst queue; Level 3 produces an emergency
//! record (isolate the server, notify outside responders) and starts the
//! regulatory clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::Incident;
use crate::rule::{Level, ResponseAction};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResponseConfig {
    /// Who is notified of a Level 3 emergency (addresses, pager ids, URLs).
    #[serde(default)]
    pub emergency_contacts: Vec<String>,
    /// Hours from detection to the regulatory notification deadline.
    #[serde(default = "default_regulatory_hours")]
    pub regulatory_hours: i64,
}

fn default_regulatory_hours() -> i64 {
    72
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            emergency_contacts: vec!["soc-oncall".into(), "incident-response-retainer".into()],
            regulatory_hours: default_regulatory_hours(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    pub response_id: String,
    pub incident_id: String,
    pub rule_id: String,
    pub level: Level,
    pub action: ResponseAction,
    /// What the action applies to, e.g. `{session_id, server_id}`.
    pub target: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regulatory_deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The responses an incident triggers (none for Level 2).
pub fn respond(
    incident: &Incident,
    requested: Option<ResponseAction>,
    cfg: &ResponseConfig,
) -> Vec<ResponseRecord> {
    let now = incident.detected_at;
    let principal = entity_str(incident, &["principal", "auth_sub", "auth_client_id"]);
    let session = incident
        .session_id
        .clone()
        .or_else(|| entity_str(incident, &["session_id"]));
    let mut target = BTreeMap::new();
    if let Some(s) = &incident.server_id {
        target.insert("server_id".to_string(), s.clone());
    }
    let make = |action: ResponseAction, target: BTreeMap<String, String>| ResponseRecord {
        response_id: format!("resp-{}-{}", &incident.incident_id[4..], action),
        incident_id: incident.incident_id.clone(),
        rule_id: incident.rule_id.clone(),
        level: incident.level,
        action,
        target,
        notify: Vec::new(),
        regulatory_deadline: None,
        created_at: now,
    };
    match incident.level {
        Level::Analyst => Vec::new(),
        Level::Automated => {
            let action = match requested {
                Some(a) => a,
                None if session.is_some() => ResponseAction::IsolateSession,
                None if principal.is_some() => ResponseAction::BlockPrincipal,
                None => ResponseAction::AlertOnly,
            };
            let mut t = target;
            match action {
                ResponseAction::IsolateSession => {
                    if let Some(s) = session {
                        t.insert("session_id".into(), s);
                    }
                }
                ResponseAction::BlockPrincipal => {
                    if let Some(p) = principal {
                        t.insert("principal".into(), p);
                    }
                }
                ResponseAction::AlertOnly | ResponseAction::IsolateServer => {}
            }
            vec![make(action, t)]
        }
        Level::Emergency => {
            let mut r = make(ResponseAction::IsolateServer, target);
            r.notify = cfg.emergency_contacts.clone();
            r.regulatory_deadline = Some(now + Duration::hours(cfg.regulatory_hours));
            vec![r]
        }
    }
}

fn entity_str(incident: &Incident, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| {
        incident
            .entity
            .get(*k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    })
}
