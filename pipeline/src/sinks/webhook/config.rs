//! `[[outputs.webhooks]]`: one destination each.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dunes_detect::{Incident, Severity};
use serde::{Deserialize, Serialize};

use crate::sinks::lifecycle::ChangeKind;

/// The body a destination receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{id, type, at, incident, action?}` (the incident as in `incidents.ndjson`).
    #[default]
    Generic,
    /// Slack-compatible incoming-webhook message (`text` + `blocks`).
    Slack,
    /// PagerDuty Events API v2 (`routing_key`, `event_action`, `dedup_key`, `payload`).
    Pagerduty,
    /// The OCSF Detection Finding (class 2004).
    Ocsf,
    /// `template` rendered with MiniJinja (context: id, type, at, incident, action, ocsf).
    Template,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Names the destination in logs, metrics, the API and the outbox
    /// directory (`[a-z0-9_-]`, unique).
    pub name: String,
    /// `https://…` (TLS by rustls, Mozilla's roots or `ca_file`) or `http://…`.
    pub url: String,
    pub format: WebhookFormat,
    /// MiniJinja template for `format = "template"`.
    pub template: Option<String>,
    /// Content-Type of the body (default `application/json`).
    pub content_type: String,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: Option<String>,
    /// File holding the signing secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the PagerDuty routing (integration) key.
    pub routing_key_env: Option<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// PEM file of the CA certificates to trust instead of Mozilla's roots.
    pub ca_file: Option<PathBuf>,
    /// Only incidents of this level or above (1 automated, 2 analyst, 3 emergency).
    pub min_level: u8,
    /// Only incidents of this severity or above.
    pub min_severity: Option<Severity>,
    /// Only these rule ids (empty: every rule).
    pub rules: Vec<String>,
    /// Only incidents carrying at least one of these tags (empty: any).
    pub tags: Vec<String>,
    /// Only these changes (empty: all of created, updated, acknowledged,
    /// assigned, escalated, resolved).
    pub events: Vec<ChangeKind>,
    /// One attempt's time limit (connect + send + answer).
    pub timeout_ms: u64,
    /// First retry delay; doubles per attempt up to `backoff_max_ms`, with
    /// full jitter.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Failed attempts (in one process lifetime) after which a delivery is
    /// dead-lettered.
    pub max_attempts: u32,
    /// A delivery still failing this long after it was queued is
    /// dead-lettered (survives restarts).
    pub max_age_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            format: WebhookFormat::Generic,
            template: None,
            content_type: "application/json".into(),
            secret_env: None,
            secret_file: None,
            routing_key_env: None,
            headers: BTreeMap::new(),
            ca_file: None,
            min_level: 1,
            min_severity: None,
            rules: Vec::new(),
            tags: Vec::new(),
            events: Vec::new(),
            timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            max_attempts: 25,
            max_age_secs: 86_400,
        }
    }
}

impl WebhookConfig {
    /// Whether this destination wants `kind` for `inc`.
    pub(crate) fn routes(&self, kind: ChangeKind, inc: &Incident) -> bool {
        (self.events.is_empty() || self.events.contains(&kind))
            && inc.level.as_u8() >= self.min_level
            && self.min_severity.is_none_or(|s| inc.severity >= s)
            && (self.rules.is_empty() || self.rules.contains(&inc.rule_id))
            && (self.tags.is_empty() || inc.tags.iter().any(|t| self.tags.contains(t)))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "outputs.webhooks: name {n:?} must be non-empty [a-z0-9_-] (it names the outbox directory)"
            ));
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(format!(
                "outputs.webhooks[{n}].url must start with https:// or http://"
            ));
        }
        if (self.format == WebhookFormat::Template) != self.template.is_some() {
            return Err(format!(
                "outputs.webhooks[{n}]: `template` is required with format = \"template\" and only then"
            ));
        }
        if self.format == WebhookFormat::Pagerduty && self.routing_key_env.is_none() {
            return Err(format!(
                "outputs.webhooks[{n}]: format = \"pagerduty\" needs routing_key_env"
            ));
        }
        if self.secret_env.is_some() && self.secret_file.is_some() {
            return Err(format!(
                "outputs.webhooks[{n}]: set secret_env or secret_file, not both"
            ));
        }
        if !(1..=3).contains(&self.min_level) {
            return Err(format!("outputs.webhooks[{n}].min_level must be 1, 2 or 3"));
        }
        if self.timeout_ms == 0 || self.backoff_initial_ms == 0 || self.max_attempts == 0 {
            return Err(format!(
                "outputs.webhooks[{n}]: timeout_ms, backoff_initial_ms and max_attempts must be > 0"
            ));
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(format!(
                "outputs.webhooks[{n}].backoff_max_ms must be >= backoff_initial_ms"
            ));
        }
        Ok(())
    }

    /// `scheme://host[:port]` of the URL (paths may carry secrets: never logged).
    pub(crate) fn endpoint(&self) -> String {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        format!("{scheme}://{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_by_change_level_severity_rule_and_tag() {
        let toml = r#"
name = "oncall"
url = "https://events.example.com/v2/enqueue?token=secret"
min_level = 2
min_severity = "high"
rules = ["a", "b"]
tags = ["atlas:AML.T0049"]
events = ["created", "resolved"]
"#;
        let cfg: WebhookConfig = toml::from_str(toml).expect("config");
        cfg.validate().expect("valid");
        assert_eq!(cfg.endpoint(), "https://events.example.com");
        let inc: Incident = serde_json::from_value(serde_json::json!({
            "incident_id": "inc-1", "rule_id": "a", "rule_sha256": "00", "level": 2,
            "severity": "high", "title": "t", "tags": ["x", "atlas:AML.T0049"], "entity": {},
            "session_id": null, "server_id": null, "first_ts": "2026-12-03T00:00:00Z",
            "last_ts": "2026-12-03T00:00:00Z", "event_ids": [], "match_count": 1,
            "evidence": [], "status": "open", "detected_at": "2026-12-03T00:00:00Z"
        }))
        .expect("incident");
        assert!(cfg.routes(ChangeKind::Created, &inc));
        assert!(cfg.routes(ChangeKind::Resolved, &inc));
        assert!(
            !cfg.routes(ChangeKind::Acknowledged, &inc),
            "change not listed"
        );
        let mut other = inc.clone();
        other.level = dunes_detect::Level::Automated;
        assert!(!cfg.routes(ChangeKind::Created, &other), "level below");
        let mut other = inc.clone();
        other.severity = Severity::Medium;
        assert!(!cfg.routes(ChangeKind::Created, &other), "severity below");
        let mut other = inc.clone();
        other.rule_id = "c".into();
        assert!(!cfg.routes(ChangeKind::Created, &other), "rule not listed");
        let mut other = inc.clone();
        other.tags = vec!["x".into()];
        assert!(!cfg.routes(ChangeKind::Created, &other), "no listed tag");
        // Empty lists and defaults route everything.
        let all: WebhookConfig =
            toml::from_str("name = \"all\"\nurl = \"http://h/\"").expect("cfg");
        assert!(all.routes(ChangeKind::Updated, &other));
    }

    #[test]
    fn invalid_destinations_are_refused_naming_the_key() {
        for (toml, key) in [
            ("name = \"Bad Name\"\nurl = \"http://h/\"", "name"),
            ("name = \"a\"\nurl = \"ftp://h/\"", "url"),
            (
                "name = \"a\"\nurl = \"http://h/\"\nformat = \"template\"",
                "template",
            ),
            (
                "name = \"a\"\nurl = \"http://h/\"\nformat = \"pagerduty\"",
                "routing_key_env",
            ),
            (
                "name = \"a\"\nurl = \"http://h/\"\nmin_level = 4",
                "min_level",
            ),
            (
                "name = \"a\"\nurl = \"http://h/\"\nbackoff_max_ms = 10",
                "backoff_max_ms",
            ),
        ] {
            let cfg: WebhookConfig = toml::from_str(toml).expect("parses");
            let err = cfg.validate().expect_err(toml);
            assert!(err.contains(key), "{toml}: {err}");
        }
    }
}
