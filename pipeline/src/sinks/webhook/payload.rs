//! Bodies per destination format. Rendered once, when a change is queued,
//! so every retry sends the same bytes (and the same signature input).

use dunes_detect::{Incident, IncidentStatus, Severity};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::config::WebhookFormat;
use crate::sinks::lifecycle::{Change, ChangeKind};

/// What a body is rendered from.
pub(crate) struct Render<'a> {
    pub change: &'a Change<'a>,
    /// The change's OCSF Detection Finding.
    pub ocsf: &'a Value,
}

/// `format = "generic"`.
#[derive(Serialize)]
struct Generic<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    at: String,
    incident: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a dunes_detect::IncidentAction>,
}

pub(crate) fn render(
    format: WebhookFormat,
    r: &Render<'_>,
    routing_key: Option<&str>,
    template: Option<&minijinja::Template<'_, '_>>,
) -> Result<String, String> {
    let c = r.change;
    match format {
        WebhookFormat::Generic => {
            let text = std::str::from_utf8(c.incident_json).map_err(|e| e.to_string())?;
            let incident: &RawValue =
                serde_json::from_str(text).map_err(|e| format!("incident JSON: {e}"))?;
            serde_json::to_string(&Generic {
                id: &c.id,
                kind: c.kind.event_type(),
                at: c.at.to_rfc3339(),
                incident,
                action: c.action,
            })
            .map_err(|e| e.to_string())
        }
        WebhookFormat::Ocsf => serde_json::to_string(r.ocsf).map_err(|e| e.to_string()),
        WebhookFormat::Slack => Ok(slack(c).to_string()),
        WebhookFormat::Pagerduty => Ok(pagerduty(c, routing_key.unwrap_or_default()).to_string()),
        WebhookFormat::Template => {
            let Some(t) = template else {
                return Err("no template".into());
            };
            let incident: Value = serde_json::from_slice(c.incident_json)
                .map_err(|e| format!("incident JSON: {e}"))?;
            t.render(minijinja::context! {
                id => &c.id,
                type => c.kind.event_type(),
                at => c.at.to_rfc3339(),
                incident => incident,
                action => c.action,
                ocsf => r.ocsf,
            })
            .map_err(|e| format!("template: {e:#}"))
        }
    }
}

fn headline(c: &Change<'_>) -> String {
    let inc = c.incident;
    let what = match c.kind {
        ChangeKind::Created => "new incident",
        ChangeKind::Updated => "incident updated",
        ChangeKind::Acknowledged => "acknowledged",
        ChangeKind::Assigned => "assigned",
        ChangeKind::Escalated => "ESCALATED to Level 3",
        ChangeKind::Resolved => "resolved",
        ChangeKind::NotificationSubmitted => "regulatory notification submitted",
        ChangeKind::Commented => "comment added",
        ChangeKind::Deescalated => "de-escalated",
        ChangeKind::Suppressed => "similar incidents suppressed",
    };
    format!(
        "[Dunes L{} {}] {what}: {}",
        inc.level.as_u8(),
        inc.severity,
        inc.title
    )
}

/// Slack mrkdwn control characters: text from traffic (server ids, tags)
/// must not become links or mentions.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(c: &Change<'_>) -> Value {
    let inc = c.incident;
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Rule*\n`{}`", esc(&inc.rule_id))}),
        json!({"type": "mrkdwn", "text": format!("*Incident*\n`{}`", esc(&inc.incident_id))}),
        json!({"type": "mrkdwn", "text": format!("*Server*\n{}", esc(inc.server_id.as_deref().unwrap_or("-")))}),
        json!({"type": "mrkdwn", "text": format!("*Matches*\n{}", inc.match_count)}),
    ];
    if let Some(a) = c.action {
        fields.push(json!({"type": "mrkdwn", "text": format!("*By*\n{}", esc(&a.actor))}));
    }
    let headline = esc(&headline(c));
    json!({
        "text": headline,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{headline}*")}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": esc(&format!("{} · first seen {} · tags {}",
                    c.kind.event_type(), inc.first_ts.to_rfc3339(), inc.tags.join(", ")))}
            ]}
        ]
    })
}

fn pagerduty(c: &Change<'_>, routing_key: &str) -> Value {
    let inc = c.incident;
    let action = match (c.kind, inc.status) {
        (ChangeKind::Resolved, _) | (_, IncidentStatus::Resolved) => "resolve",
        (ChangeKind::Acknowledged, _) => "acknowledge",
        _ => "trigger",
    };
    let severity = match inc.severity {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "info",
    };
    let mut summary = headline(c);
    if summary.len() > 1024 {
        let mut end = 1021;
        while !summary.is_char_boundary(end) {
            end -= 1;
        }
        summary.truncate(end);
        summary.push_str("...");
    }
    let mut payload = json!({
        "summary": summary,
        "source": inc.server_id.as_deref().unwrap_or("dunes"),
        "severity": severity,
        "timestamp": inc.first_ts.to_rfc3339(),
        "component": inc.server_id,
        "group": inc.rule_id,
        "class": inc.tags.first(),
        "custom_details": custom_details(inc, c),
    });
    if let Some(m) = payload.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": inc.incident_id,
        "client": "Dunes",
        "payload": payload,
    })
}

fn custom_details(inc: &Incident, c: &Change<'_>) -> Value {
    json!({
        "change": c.kind.event_type(),
        "change_id": c.id,
        "level": inc.level.as_u8(),
        "rule_sha256": inc.rule_sha256,
        "entity": inc.entity,
        "session_id": inc.session_id,
        "match_count": inc.match_count,
        "first_event_id": inc.event_ids.first(),
        "tags": inc.tags,
        "actor": c.action.map(|a| &a.actor),
    })
}

#[cfg(test)]
mod tests {
    use dunes_detect::{ActionKind, Disposition, IncidentAction};

    use super::super::tests::incident;
    use super::*;
    use crate::sinks::ocsf;

    fn resolve(inc: &Incident) -> IncidentAction {
        IncidentAction {
            record_type: "incident_action".into(),
            action_id: "act-0001".into(),
            incident_id: inc.incident_id.clone(),
            action: ActionKind::Resolve,
            actor: "alice@soc".into(),
            role: "analyst".into(),
            jti: "jti-1".into(),
            at: inc.detected_at + chrono::Duration::minutes(30),
            assignee: None,
            disposition: Some(Disposition::TruePositive),
            note: Some("metadata endpoint blocked".into()),
            regime: None,
            stage: None,
            suppress_until: None,
            ledger_index: Some(77),
        }
    }

    fn body(format: WebhookFormat, c: &Change<'_>, template: Option<&str>) -> String {
        let finding = ocsf::finding(c);
        let mut env = minijinja::Environment::new();
        let t = template.map(|t| {
            env.add_template("t", t).expect("template");
            env.get_template("t").expect("template")
        });
        let text = render(
            format,
            &Render {
                change: c,
                ocsf: &finding,
            },
            Some("R0UTINGKEY"),
            t.as_ref(),
        )
        .expect("render");
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => serde_json::to_string_pretty(&v).expect("pretty"),
            Err(_) => text,
        }
    }

    /// Golden bodies of every preset for a new incident and its resolution.
    #[test]
    fn preset_bodies_match_their_golden_files() {
        let inc = incident();
        let json = serde_json::to_vec(&inc).expect("encode");
        let created = Change::created(&inc, &json);
        let mut resolved_inc = inc.clone();
        resolved_inc.status = IncidentStatus::Resolved;
        let resolved_json = serde_json::to_vec(&resolved_inc).expect("encode");
        let action = resolve(&inc);
        let resolved = Change::action(&resolved_inc, &resolved_json, &action);
        for (name, c) in [("created", &created), ("resolved", &resolved)] {
            for (fmt, f) in [
                ("generic", WebhookFormat::Generic),
                ("slack", WebhookFormat::Slack),
                ("pagerduty", WebhookFormat::Pagerduty),
                ("ocsf", WebhookFormat::Ocsf),
            ] {
                insta::assert_snapshot!(format!("{fmt}_{name}"), body(f, c, None));
            }
        }
        insta::assert_snapshot!(
            "template_created",
            body(
                WebhookFormat::Template,
                &created,
                Some(
                    r#"{"summary": {{ incident.title | tojson }}, "ref": {{ id | tojson }}, "level": {{ incident.level }}, "activity": {{ ocsf.activity_id }}}"#
                ),
            )
        );
    }
}
