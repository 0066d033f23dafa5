//! Incident changes: what the outputs (OCSF findings, webhooks) are told.
//! One [`Change`] per new incident, per repeat match of a suppressed
//! incident, and per analyst action; each has a stable id, the same when a
//! batch is re-detected after a crash, so a destination is never sent the
//! same change twice.

use chrono::{DateTime, Utc};
use dunes_detect::{ActionKind, Incident, IncidentAction};
use serde::{Deserialize, Serialize};

/// What happened to an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Raised by a rule or the anomaly model.
    Created,
    /// A repeat match of a suppressed incident (new count, last time, evidence).
    Updated,
    Acknowledged,
    Assigned,
    /// Raised to Level 3 by an analyst.
    Escalated,
    Resolved,
    /// A regulatory notification stage was submitted.
    NotificationSubmitted,
    Commented,
    /// Lowered one level by an analyst.
    Deescalated,
    /// Similar incidents suppressed for a while.
    Suppressed,
}

impl ChangeKind {
    /// The event type outputs carry (`incident.created`, …).
    pub fn event_type(self) -> &'static str {
        match self {
            ChangeKind::Created => "incident.created",
            ChangeKind::Updated => "incident.updated",
            ChangeKind::Acknowledged => "incident.acknowledged",
            ChangeKind::Assigned => "incident.assigned",
            ChangeKind::Escalated => "incident.escalated",
            ChangeKind::Resolved => "incident.resolved",
            ChangeKind::NotificationSubmitted => "incident.notification_submitted",
            ChangeKind::Commented => "incident.commented",
            ChangeKind::Deescalated => "incident.deescalated",
            ChangeKind::Suppressed => "incident.suppressed",
        }
    }

    pub(crate) fn of_action(kind: ActionKind) -> Self {
        match kind {
            ActionKind::Ack => ChangeKind::Acknowledged,
            ActionKind::Assign => ChangeKind::Assigned,
            ActionKind::Escalate => ChangeKind::Escalated,
            ActionKind::Resolve => ChangeKind::Resolved,
            ActionKind::Notify => ChangeKind::NotificationSubmitted,
            ActionKind::Comment => ChangeKind::Commented,
            ActionKind::Deescalate => ChangeKind::Deescalated,
            ActionKind::Suppress => ChangeKind::Suppressed,
        }
    }
}

/// One change, with the incident as it is after it.
pub(crate) struct Change<'a> {
    /// Stable id: `{incident_id}.created`, `{incident_id}.updated.{match_count}`,
    /// or the action id.
    pub id: String,
    pub kind: ChangeKind,
    pub at: DateTime<Utc>,
    pub incident: &'a Incident,
    /// The incident as encoded once for the ledger.
    pub incident_json: &'a [u8],
    pub action: Option<&'a IncidentAction>,
}

impl<'a> Change<'a> {
    pub(crate) fn created(inc: &'a Incident, json: &'a [u8]) -> Self {
        Change {
            id: format!("{}.created", inc.incident_id),
            kind: ChangeKind::Created,
            at: inc.detected_at,
            incident: inc,
            incident_json: json,
            action: None,
        }
    }

    pub(crate) fn updated(inc: &'a Incident, json: &'a [u8], at: DateTime<Utc>) -> Self {
        Change {
            id: format!("{}.updated.{}", inc.incident_id, inc.match_count),
            kind: ChangeKind::Updated,
            at,
            incident: inc,
            incident_json: json,
            action: None,
        }
    }

    pub(crate) fn action(inc: &'a Incident, json: &'a [u8], action: &'a IncidentAction) -> Self {
        Change {
            id: action.action_id.clone(),
            kind: ChangeKind::of_action(action.action),
            at: action.at,
            incident: inc,
            incident_json: json,
            action: Some(action),
        }
    }
}
