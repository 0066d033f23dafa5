//! Regulatory notification clocks. A Level 3 incident (raised at Level 3 or
//! escalated) starts the clocks of every configured regime; each regime is a
//! list of stages, each stage's deadline the earliest of its terms ("4 h
//! after classification, and at most 24 h after detection"). Submitting a
//! stage is an analyst action (`notify`, ledgered); a stage past its
//! deadline, or close to it, raises its own incident (see the pipeline).
//!
//! The clocks are a pure function of the incident, its ledgered actions,
//! the configuration and the time: nothing else is stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::Incident;
use crate::lifecycle::{ActionKind, IncidentAction};
use crate::rule::Level;
use crate::store::{IncidentFilter, IncidentStore};

/// What a deadline term counts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Dunes first detected the incident (`detected_at`).
    Detection,
    /// The organisation became aware of a major incident: it reached Level 3.
    Awareness,
    /// Classified as major: it reached Level 3 (raised at Level 3 or escalated).
    Classification,
    /// Another stage of the same regime was submitted.
    Submitted(String),
}

impl Serialize for Start {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&match self {
            Start::Detection => "detection".to_string(),
            Start::Awareness => "awareness".to_string(),
            Start::Classification => "classification".to_string(),
            Start::Submitted(stage) => format!("submitted:{stage}"),
        })
    }
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "detection" => Ok(Start::Detection),
            "awareness" => Ok(Start::Awareness),
            "classification" => Ok(Start::Classification),
            other => match other.strip_prefix("submitted:") {
                Some(stage) if !stage.is_empty() => Ok(Start::Submitted(stage.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "unknown clock start {other:?}: detection, awareness, classification or submitted:<stage>"
                ))),
            },
        }
    }
}

/// `hours` after `from`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub from: Start,
    pub hours: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub id: String,
    pub name: String,
    /// The deadline is the earliest of these (among those whose start is known).
    pub deadline: Vec<Term>,
    /// What the regime asks the notification to contain.
    #[serde(default)]
    pub content: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regime {
    pub id: String,
    pub name: String,
    pub stages: Vec<StageSpec>,
}

/// `[notification]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationConfig {
    /// Regimes whose clocks every Level 3 incident starts: preset ids
    /// (`nis2`, `dora`, `gdpr`, `ai-act`, `ai-act-critical-infrastructure`,
    /// `ai-act-death`) or the ids of `custom` regimes.
    pub regimes: Vec<String>,
    /// A stage this close to its deadline (and not submitted) raises a
    /// "due soon" incident.
    pub warn_before_hours: f64,
    /// Clocks are checked this often.
    pub check_interval_secs: u64,
    pub custom: Vec<Regime>,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig {
            regimes: vec!["nis2".into(), "gdpr".into()],
            warn_before_hours: 4.0,
            check_interval_secs: 60,
            custom: Vec::new(),
        }
    }
}

fn stage(id: &str, name: &str, terms: &[(Start, f64)], content: &[&str]) -> StageSpec {
    StageSpec {
        id: id.into(),
        name: name.into(),
        deadline: terms
            .iter()
            .map(|(from, hours)| Term {
                from: from.clone(),
                hours: *hours,
            })
            .collect(),
        content: content.iter().map(|c| c.to_string()).collect(),
    }
}

const MONTH_HOURS: f64 = 30.0 * 24.0;

/// The shipped regimes (see `docs/compliance.md` for the legal sources).
pub fn presets() -> Vec<Regime> {
    use Start::*;
    let sub = |s: &str| Submitted(s.to_string());
    vec![
        Regime {
            id: "nis2".into(),
            name: "NIS2 Directive Art. 23 (significant incident)".into(),
            stages: vec![
                stage(
                    "early-warning",
                    "Early warning",
                    &[(Awareness, 24.0)],
                    &[
                        "suspected unlawful or malicious cause",
                        "possible cross-border impact",
                    ],
                ),
                stage(
                    "incident-notification",
                    "Incident notification",
                    &[(Awareness, 72.0)],
                    &[
                        "initial assessment: severity and impact",
                        "indicators of compromise",
                    ],
                ),
                stage(
                    "final-report",
                    "Final report",
                    &[(sub("incident-notification"), MONTH_HOURS)],
                    &[
                        "detailed description, severity and impact",
                        "type of threat or root cause",
                        "mitigation measures applied and ongoing",
                        "cross-border impact",
                    ],
                ),
            ],
        },
        Regime {
            id: "dora".into(),
            name: "DORA Art. 19 (major ICT-related incident)".into(),
            stages: vec![
                stage(
                    "initial-notification",
                    "Initial notification",
                    &[(Classification, 4.0), (Detection, 24.0)],
                    &[
                        "classification criteria met",
                        "affected services",
                        "initial impact",
                    ],
                ),
                stage(
                    "intermediate-report",
                    "Intermediate report",
                    &[(sub("initial-notification"), 72.0)],
                    &[
                        "status update",
                        "indicators of compromise",
                        "containment measures",
                    ],
                ),
                stage(
                    "final-report",
                    "Final report",
                    &[(sub("intermediate-report"), MONTH_HOURS)],
                    &["root cause analysis", "actual impact", "remediation"],
                ),
            ],
        },
        Regime {
            id: "gdpr".into(),
            name: "GDPR Art. 33 (personal data breach)".into(),
            stages: vec![stage(
                "authority-notification",
                "Notification to the supervisory authority",
                &[(Awareness, 72.0)],
                &[
                    "nature of the breach, categories and numbers of data subjects and records",
                    "contact point",
                    "likely consequences",
                    "measures taken or proposed",
                ],
            )],
        },
        Regime {
            id: "ai-act".into(),
            name: "EU AI Act Art. 73 (serious incident)".into(),
            stages: vec![stage(
                "report",
                "Serious incident report",
                &[(Awareness, 15.0 * 24.0)],
                &[
                    "AI system concerned",
                    "incident description",
                    "corrective action",
                ],
            )],
        },
        Regime {
            id: "ai-act-critical-infrastructure".into(),
            name: "EU AI Act Art. 73(3) (widespread infringement or critical infrastructure)"
                .into(),
            stages: vec![stage(
                "report",
                "Serious incident report",
                &[(Awareness, 2.0 * 24.0)],
                &[
                    "AI system concerned",
                    "incident description",
                    "corrective action",
                ],
            )],
        },
        Regime {
            id: "ai-act-death".into(),
            name: "EU AI Act Art. 73(4) (death of a person)".into(),
            stages: vec![stage(
                "report",
                "Serious incident report",
                &[(Awareness, 10.0 * 24.0)],
                &[
                    "AI system concerned",
                    "incident description",
                    "corrective action",
                ],
            )],
        },
    ]
}

impl NotificationConfig {
    /// The configured regimes, resolved (custom ids shadow presets).
    pub fn regimes(&self) -> Result<Vec<Regime>, String> {
        let presets = presets();
        let mut out = Vec::new();
        for id in &self.regimes {
            let r = self
                .custom
                .iter()
                .find(|r| &r.id == id)
                .or_else(|| presets.iter().find(|r| &r.id == id))
                .ok_or_else(|| {
                    format!(
                        "notification.regimes: unknown regime {id:?} (presets: {}; or a [[notification.custom]] id)",
                        presets.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })?;
            out.push(r.clone());
        }
        for r in &out {
            for s in &r.stages {
                if s.deadline.is_empty() {
                    return Err(format!("notification: {}/{} has no deadline", r.id, s.id));
                }
                for t in &s.deadline {
                    if !(t.hours.is_finite() && t.hours > 0.0) {
                        return Err(format!(
                            "notification: {}/{}: hours must be > 0, got {}",
                            r.id, s.id, t.hours
                        ));
                    }
                    if let Start::Submitted(other) = &t.from
                        && !r.stages.iter().any(|x| &x.id == other && x.id != s.id)
                    {
                        return Err(format!(
                            "notification: {}/{}: submitted:{other} names no other stage of {}",
                            r.id, s.id, r.id
                        ));
                    }
                }
            }
        }
        if !self.warn_before_hours.is_finite()
            || self.warn_before_hours < 0.0
            || self.check_interval_secs == 0
        {
            return Err(
                "notification: warn_before_hours must be >= 0 and check_interval_secs > 0".into(),
            );
        }
        Ok(out)
    }
}

/// The resolved regimes and the warning margin: what the API and the
/// pipeline compute clocks with.
#[derive(Clone, Debug)]
pub struct NotificationClocks {
    pub regimes: Vec<Regime>,
    pub warn_before_hours: f64,
}

impl Default for NotificationClocks {
    fn default() -> Self {
        let cfg = NotificationConfig::default();
        NotificationClocks {
            regimes: cfg.regimes().unwrap_or_default(),
            warn_before_hours: cfg.warn_before_hours,
        }
    }
}

impl NotificationClocks {
    pub fn new(cfg: &NotificationConfig) -> Result<Self, String> {
        Ok(NotificationClocks {
            regimes: cfg.regimes()?,
            warn_before_hours: cfg.warn_before_hours,
        })
    }

    /// The incident's clocks at `now` (empty below Level 3).
    pub fn of(
        &self,
        inc: &Incident,
        history: &[IncidentAction],
        now: DateTime<Utc>,
    ) -> Vec<StageClock> {
        clocks(inc, history, &self.regimes, self.warn_before_hours, now)
    }

    /// Every stage clock of every Level 3 incident in `store` at `now`, with
    /// its incident (what the API lists and the pipeline's alerts check).
    pub fn all(&self, store: &IncidentStore, now: DateTime<Utc>) -> Vec<(Incident, StageClock)> {
        let filter = IncidentFilter {
            level: Some(Level::Emergency),
            ..IncidentFilter::default()
        };
        let mut out = Vec::new();
        for inc in store.list(&filter) {
            let history = store.history(&inc.incident_id);
            for c in self.of(&inc, &history, now) {
                out.push((inc.clone(), c));
            }
        }
        out
    }

    /// Whether `regime`/`stage` is a configured stage.
    pub fn knows(&self, regime: &str, stage: &str) -> bool {
        self.regimes
            .iter()
            .any(|r| r.id == regime && r.stages.iter().any(|s| s.id == stage))
    }
}

/// Where a stage stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// Its start has not happened yet (e.g. the previous stage is not submitted).
    Waiting,
    Running,
    /// Less than `warn_before_hours` left.
    DueSoon,
    Overdue,
    SubmittedOnTime,
    SubmittedLate,
}

/// One stage's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageClock {
    pub regime: String,
    pub regime_name: String,
    pub stage: String,
    pub name: String,
    pub deadline: Option<DateTime<Utc>>,
    pub state: StageState,
    pub submitted_at: Option<DateTime<Utc>>,
    /// The submitting action.
    pub submitted_by: Option<String>,
    pub content: Vec<String>,
}

/// When the incident reached Level 3: raised at Level 3 (its detection), or
/// the time of its escalation. `None` below Level 3.
pub fn level3_at(inc: &Incident, history: &[IncidentAction]) -> Option<DateTime<Utc>> {
    if inc.level != Level::Emergency {
        return None;
    }
    Some(
        history
            .iter()
            .find(|a| a.action == ActionKind::Escalate)
            .map_or(inc.detected_at, |a| a.at),
    )
}

/// Every stage clock of the incident at `now` (empty below Level 3).
pub fn clocks(
    inc: &Incident,
    history: &[IncidentAction],
    regimes: &[Regime],
    warn_before_hours: f64,
    now: DateTime<Utc>,
) -> Vec<StageClock> {
    let Some(major_at) = level3_at(inc, history) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in regimes {
        // First submission of each stage of this regime.
        let mut submitted: BTreeMap<&str, &IncidentAction> = BTreeMap::new();
        for a in history {
            if a.action == ActionKind::Notify
                && a.regime.as_deref() == Some(r.id.as_str())
                && let Some(st) = a.stage.as_deref()
            {
                submitted.entry(st).or_insert(a);
            }
        }
        for s in &r.stages {
            let deadline = s
                .deadline
                .iter()
                .filter_map(|t| {
                    let start = match &t.from {
                        Start::Detection => Some(inc.detected_at),
                        Start::Awareness | Start::Classification => Some(major_at),
                        Start::Submitted(other) => submitted.get(other.as_str()).map(|a| a.at),
                    }?;
                    Some(start + Duration::milliseconds((t.hours * 3_600_000.0) as i64))
                })
                .min();
            let sub = submitted.get(s.id.as_str());
            let state = match (sub, deadline) {
                (Some(a), Some(d)) if a.at <= d => StageState::SubmittedOnTime,
                (Some(_), Some(_)) => StageState::SubmittedLate,
                (Some(_), None) => StageState::SubmittedOnTime,
                (None, None) => StageState::Waiting,
                (None, Some(d)) if now > d => StageState::Overdue,
                (None, Some(d))
                    if now + Duration::milliseconds((warn_before_hours * 3_600_000.0) as i64)
                        >= d =>
                {
                    StageState::DueSoon
                }
                (None, Some(_)) => StageState::Running,
            };
            out.push(StageClock {
                regime: r.id.clone(),
                regime_name: r.name.clone(),
                stage: s.id.clone(),
                name: s.name.clone(),
                deadline,
                state,
                submitted_at: sub.map(|a| a.at),
                submitted_by: sub.map(|a| a.actor.clone()),
                content: s.content.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn incident(level: Level) -> Incident {
        serde_json::from_value(serde_json::json!({
            "incident_id": "inc-1", "rule_id": "r", "rule_sha256": "00", "level": level.as_u8(),
            "severity": "critical", "title": "t", "tags": [], "entity": {},
            "session_id": null, "server_id": null, "first_ts": "2026-12-01T00:00:00Z",
            "last_ts": "2026-12-01T00:00:00Z", "event_ids": [], "match_count": 1,
            "evidence": [], "status": "open", "detected_at": "2026-12-01T00:00:00Z"
        }))
        .expect("incident")
    }

    fn act(kind: ActionKind, at: DateTime<Utc>, stage: Option<&str>) -> IncidentAction {
        IncidentAction {
            record_type: "incident_action".into(),
            action_id: "a".into(),
            incident_id: "inc-1".into(),
            action: kind,
            actor: "x".into(),
            role: "responder".into(),
            jti: "j".into(),
            at,
            assignee: None,
            disposition: None,
            note: None,
            regime: stage.map(|_| "dora".to_string()),
            stage: stage.map(str::to_string),
            suppress_until: None,
            ledger_index: None,
        }
    }

    #[test]
    fn dora_initial_notification_is_the_earlier_of_4h_after_classification_and_24h_after_detection()
    {
        let cfg = NotificationConfig {
            regimes: vec!["dora".into()],
            ..NotificationConfig::default()
        };
        let clocks = NotificationClocks::new(&cfg).expect("dora");
        let detected = Utc
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .expect("t");
        let h = |n: i64| detected + Duration::hours(n);
        let inc = incident(Level::Emergency);
        // Escalated 22 h after detection: 24 h after detection comes first.
        let late = vec![act(ActionKind::Escalate, h(22), None)];
        assert_eq!(clocks.of(&inc, &late, h(23))[0].deadline, Some(h(24)));
        // Escalated 2 h after detection: 4 h after classification comes first.
        let early = vec![act(ActionKind::Escalate, h(2), None)];
        let c = clocks.of(&inc, &early, h(3));
        assert_eq!(c[0].deadline, Some(h(6)));
        assert_eq!(
            c[0].state,
            StageState::DueSoon,
            "under warn_before_hours left"
        );
        // The intermediate report waits for the initial notification, then runs 72 h.
        assert_eq!((c[1].state, c[1].deadline), (StageState::Waiting, None));
        let mut done = early.clone();
        done.push(act(ActionKind::Notify, h(7), Some("initial-notification")));
        let c = clocks.of(&inc, &done, h(8));
        assert_eq!(c[0].state, StageState::SubmittedLate);
        assert_eq!(
            (c[1].state, c[1].deadline),
            (StageState::Running, Some(h(79)))
        );
        assert_eq!(c[2].state, StageState::Waiting);
        // Below Level 3 there is no clock at all.
        assert!(clocks.of(&incident(Level::Analyst), &done, h(8)).is_empty());
        // Raised at Level 3: its detection starts the clocks.
        assert_eq!(clocks.of(&inc, &[], h(1))[0].deadline, Some(h(4)));
    }

    #[test]
    fn bad_regimes_are_refused_naming_them() {
        for (cfg, want) in [
            (
                config(r#"{"regimes": ["nis3"]}"#),
                "unknown regime \"nis3\"",
            ),
            (
                config(
                    r#"{"regimes": ["x"], "custom": [{"id": "x", "name": "X", "stages": [{"id": "a", "name": "A", "deadline": []}]}]}"#,
                ),
                "x/a has no deadline",
            ),
            (
                config(
                    r#"{"regimes": ["x"], "custom": [{"id": "x", "name": "X", "stages": [{"id": "a", "name": "A", "deadline": [{"from": "submitted:b", "hours": 1}]}]}]}"#,
                ),
                "submitted:b names no other stage",
            ),
            (
                config(
                    r#"{"regimes": ["x"], "custom": [{"id": "x", "name": "X", "stages": [{"id": "a", "name": "A", "deadline": [{"from": "awareness", "hours": 0}]}]}]}"#,
                ),
                "hours must be > 0",
            ),
        ] {
            let err = cfg.regimes().expect_err(want);
            assert!(err.contains(want), "{err}");
        }
        let err = serde_json::from_str::<Term>(r#"{"from": "lunch", "hours": 1}"#)
            .expect_err("unknown start");
        assert!(err.to_string().contains("unknown clock start"), "{err}");
    }

    fn config(json: &str) -> NotificationConfig {
        serde_json::from_str(json).expect("config")
    }
}
