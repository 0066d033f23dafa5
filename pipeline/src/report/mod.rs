//! Reports for regulators and auditors, built from the data dir: notification documents
//! with their evidence bundles (`dunes report notify`) and the compliance report
//! (`dunes report compliance`).

pub mod compliance;
pub mod notify;

pub use notify::{
    DocumentInput, IncidentRecords, NotificationDocument, Submission, incident_records,
    notification_document, render_html, submission_note,
};
