//! Incident lifecycle: analyst actions (ack, assign, comment, escalate, de-escalate,
//! resolve, suppress similar, notify) and the state transitions they make. Every action is ledgered (kind `action`) by the pipeline before
//! it is applied.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::{Incident, IncidentStatus};
use crate::rule::Level;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Ack,
    Assign,
    Escalate,
    Resolve,
    /// A regulatory notification stage submitted (`regime`, `stage`).
    Notify,
    /// A note for the record; changes nothing else.
    Comment,
    /// Lowered one level (3 to 2, 2 to 1), e.g. after a review.
    Deescalate,
    /// New incidents of the same rule and entity are not raised until
    /// `suppress_until` (their events are still ledgered).
    Suppress,
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActionKind::Ack => "ack",
            ActionKind::Assign => "assign",
            ActionKind::Escalate => "escalate",
            ActionKind::Resolve => "resolve",
            ActionKind::Notify => "notify",
            ActionKind::Comment => "comment",
            ActionKind::Deescalate => "deescalate",
            ActionKind::Suppress => "suppress",
        })
    }
}

/// How a resolved incident was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    TruePositive,
    FalsePositive,
    Benign,
}

/// One analyst action on an incident, as ledgered (payload of an `action` record) and
/// shown in the incident's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentAction {
    #[serde(rename = "type")]
    pub record_type: String,
    pub action_id: String,
    pub incident_id: String,
    pub action: ActionKind,
    /// The token's `sub`.
    pub actor: String,
    /// The token's role.
    pub role: String,
    /// The token's `jti` (each is accepted once for a mutating request).
    pub jti: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `notify`: the regime (e.g. `nis2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regime: Option<String>,
    /// `notify`: the stage submitted (e.g. `early-warning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// `suppress`: until when similar incidents are not raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_until: Option<DateTime<Utc>>,
    /// Ledger index of the action record (set once ledgered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_index: Option<u64>,
}

/// Why an action cannot be applied to an incident in its current state.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("incident is already resolved")]
    Resolved,
    #[error("incident is already acknowledged")]
    AlreadyAcknowledged,
    #[error("only a level 2 incident can be escalated")]
    NotLevel2,
    #[error("a level 1 incident cannot be de-escalated")]
    Lowest,
    #[error("{0}")]
    Invalid(&'static str),
}

/// The incident after `action`, or why the action is refused.
pub fn transition(inc: &Incident, action: &IncidentAction) -> Result<Incident, TransitionError> {
    if action.action == ActionKind::Notify {
        // Reports go on after resolution (a final report usually does).
        if inc.level != Level::Emergency {
            return Err(TransitionError::Invalid(
                "notification clocks run for Level 3 incidents only",
            ));
        }
        if action.regime.as_deref().is_none_or(str::is_empty)
            || action.stage.as_deref().is_none_or(str::is_empty)
        {
            return Err(TransitionError::Invalid(
                "notify needs a regime and a stage",
            ));
        }
        return Ok(inc.clone());
    }
    if action.action == ActionKind::Comment {
        // Comments go on after resolution too.
        if action.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(TransitionError::Invalid("comment needs a note"));
        }
        return Ok(inc.clone());
    }
    if inc.status == IncidentStatus::Resolved {
        return Err(TransitionError::Resolved);
    }
    let mut out = inc.clone();
    match action.action {
        ActionKind::Ack => {
            if inc.status == IncidentStatus::Acknowledged {
                return Err(TransitionError::AlreadyAcknowledged);
            }
            out.status = IncidentStatus::Acknowledged;
        }
        ActionKind::Assign => {
            if action.assignee.as_deref().is_none_or(str::is_empty) {
                return Err(TransitionError::Invalid("assign needs an assignee"));
            }
        }
        ActionKind::Escalate => {
            if inc.level != Level::Analyst {
                return Err(TransitionError::NotLevel2);
            }
            out.level = Level::Emergency;
        }
        ActionKind::Resolve => {
            if action.disposition.is_none() {
                return Err(TransitionError::Invalid(
                    "resolve needs a disposition: true_positive, false_positive or benign",
                ));
            }
            out.status = IncidentStatus::Resolved;
        }
        ActionKind::Deescalate => {
            out.level = match inc.level {
                Level::Emergency => Level::Analyst,
                Level::Analyst => Level::Automated,
                Level::Automated => return Err(TransitionError::Lowest),
            };
        }
        ActionKind::Suppress => {
            if action.suppress_until.is_none_or(|t| t <= action.at) {
                return Err(TransitionError::Invalid(
                    "suppress needs a time in the future (suppress_until)",
                ));
            }
        }
        ActionKind::Notify | ActionKind::Comment => {}
    }
    Ok(out)
}
