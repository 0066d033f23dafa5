//! Where results go once a batch is durable in the ledger. The ledger is
//! written by the stage itself (`stage.rs`), first; then every [`Sink`]
//! takes the batch as a [`Delivery`], in a fixed order that keeps a crash
//! harmless (a crash before the last step re-detects the batch from the
//! ledger at the next start, and every sink ignores what it already holds):
//!
//! 1. [`outputs`]: webhook outboxes (fsynced) and the OCSF findings file;
//! 2. [`files`]: `incidents.ndjson`, `responses.ndjson` (flushed; fsynced
//!    by the next sink, before the state entry that says the batch is done);
//! 3. [`persist`]: on a thread of its own, the Parquet history, those files'
//!    fsync, then the detection-state journal entry ([`state`]);
//! 4. [`kafka`]: the output topics (with Kafka on); the batch's
//!    acknowledgement follows (`flow.rs`: the Kafka offsets committed, the
//!    HTTP request answered).

pub(crate) mod files;
pub(crate) mod kafka;
pub(crate) mod latency;
pub(crate) mod lifecycle;
pub(crate) mod ocsf;
pub(crate) mod outputs;
pub(crate) mod persist;
pub(crate) mod state;
pub(crate) mod webhook;

use std::fs::File;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use dunes_detect::{Incident, ResponseRecord};
use dunes_ingest::Rejected;
use futures::future::BoxFuture;

use crate::error::Result;

/// A batch whose ledger records are written and fsynced, as the sinks see
/// it: each incident and response encoded once (the bytes the ledger holds).
pub(crate) struct Delivery<'a> {
    pub(crate) now: DateTime<Utc>,
    /// Incidents raised by this batch, and their JSON.
    pub(crate) incidents: &'a [Incident],
    pub(crate) incident_json: &'a [Vec<u8>],
    /// Earlier incidents this batch changed, with their new JSON.
    pub(crate) updates: &'a [(Incident, Vec<u8>)],
    pub(crate) responses: &'a [ResponseRecord],
    pub(crate) response_json: &'a [Vec<u8>],
    /// Records the batch rejected (already in `dead-letter.ndjson`).
    pub(crate) dead_letters: &'a [Rejected],
    /// The batch's tables and state delta, for [`persist`] (`None` for what
    /// is not a batch of events: an analyst action, the self-monitor).
    pub(crate) rows: Option<Rows>,
    /// Handed on by a sink to the ones after it: OCSF findings for the
    /// Kafka topic (keyed by incident id) ...
    pub(crate) findings: Vec<(String, Vec<u8>)>,
    /// ... and files written (flushed) to fsync before the state entry.
    pub(crate) to_sync: Vec<Arc<File>>,
}

impl Delivery<'_> {
    /// Nothing yet: the fields are filled in by the caller.
    pub(crate) fn empty(now: DateTime<Utc>) -> Self {
        Delivery {
            now,
            incidents: &[],
            incident_json: &[],
            updates: &[],
            responses: &[],
            response_json: &[],
            dead_letters: &[],
            rows: None,
            findings: Vec::new(),
            to_sync: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.updates.is_empty() && self.response_json.is_empty()
    }
}

/// A batch's rows and detection-state change.
pub(crate) struct Rows {
    pub(crate) events: RecordBatch,
    pub(crate) tool_defs: RecordBatch,
    pub(crate) maml_docs: RecordBatch,
    /// The batch's first ledger index (names its history files).
    pub(crate) key: Option<u64>,
    /// The batch's state delta (`None` when it accepted nothing).
    pub(crate) delta: Option<Vec<u8>>,
}

/// A destination of durable batches.
pub(crate) trait Sink: Send {
    /// Takes a batch. When the future completes, the sink holds it as
    /// durably as its place in the order above requires; what it hands on
    /// goes into `batch`. An error stops the pipeline (the batch is
    /// re-detected from the ledger at the next start).
    fn deliver<'s>(&'s mut self, batch: &'s mut Delivery<'_>) -> BoxFuture<'s, Result<()>>;
}

#[cfg(test)]
mod tests {
    use super::files::{DataPaths, IncidentFiles};
    use super::outputs::Outputs;
    use super::*;
    use crate::config::OutputsSection;

    fn read(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The sinks alone, through the trait and in their order: what each
    /// writes, and what it hands on to the ones after it.
    #[tokio::test]
    async fn each_sink_takes_the_delivery_and_hands_on_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = DataPaths::new(dir.path());
        let extra = dir.path().join("extra.ndjson");
        let new = webhook::tests::incident();
        let mut old = new.clone();
        old.incident_id = "inc-fedcba9876543210fedcba98".into();
        old.match_count = 7;
        let new_json = serde_json::to_vec(&new).expect("json");
        let old_json = serde_json::to_vec(&old).expect("json");
        let incidents = [new];
        let incident_json = [new_json.clone()];
        let updates = [(old, old_json.clone())];
        let response_json = [br#"{"response_id":"resp-1"}"#.to_vec()];

        let mut outputs =
            Outputs::open(&OutputsSection::default(), dir.path(), true).expect("outputs");
        let mut files = IncidentFiles::open(&paths, Some(&extra)).expect("files");
        let mut persist = persist::tests::open(dir.path());
        let (events, tool_defs) = persist::tests::batch(0, 4);
        let now = chrono::Utc::now();
        let mut d = Delivery {
            incidents: &incidents,
            incident_json: &incident_json,
            updates: &updates,
            response_json: &response_json,
            ..Delivery::empty(now)
        };
        d.rows = Some(Rows {
            events,
            tool_defs,
            maml_docs: dunes_ingest::schema::empty_maml_docs().clone(),
            key: Some(12),
            delta: Some(b"{\"position\":16}".to_vec()),
        });
        let order: [&mut dyn Sink; 3] = [&mut outputs, &mut files, &mut persist];
        let mut handed = Vec::new();
        for sink in order {
            sink.deliver(&mut d).await.expect("delivered");
            handed.push((d.findings.len(), d.to_sync.len(), d.rows.is_some()));
        }
        // outputs: one OCSF finding per change (created, then updated) for
        // Kafka; files: three files to fsync; persist: took both the files
        // and the rows
        assert_eq!(handed, [(2, 0, true), (2, 3, true), (2, 0, false)]);
        let keys: Vec<&str> = d.findings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                incidents[0].incident_id.as_str(),
                updates[0].0.incident_id.as_str()
            ]
        );
        let findings_file: String = d
            .findings
            .iter()
            .map(|(_, f)| format!("{}\n", String::from_utf8_lossy(f)))
            .collect();
        assert_eq!(
            read(&dir.path().join("findings.ocsf.ndjson")),
            findings_file
        );
        // the bytes the ledger holds, updates first
        let lines = |jsons: &[&[u8]]| -> String {
            jsons
                .iter()
                .map(|j| format!("{}\n", String::from_utf8_lossy(j)))
                .collect()
        };
        let want = lines(&[&old_json, &new_json]);
        assert_eq!(read(&paths.incidents), want);
        assert_eq!(read(&extra), want);
        assert_eq!(read(&paths.responses), lines(&[&response_json[0]]));
        persist.close().expect("persisted");
        assert_eq!(persist::tests::journal(dir.path()), ["{\"position\":16}"]);

        // nothing raised, no rows: nothing written, nothing handed on
        let mut e = Delivery::empty(now);
        for sink in [&mut outputs as &mut dyn Sink, &mut files] {
            sink.deliver(&mut e).await.expect("delivered");
        }
        assert!(e.findings.is_empty() && e.to_sync.is_empty());
        assert_eq!(read(&paths.incidents), want);
    }
}
