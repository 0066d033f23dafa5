//! Incident changes out: OCSF findings (file, Kafka) and webhooks.

use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::OutputsSection;
use crate::error::Result;
use crate::sinks::files::NdjsonWriter;
use crate::sinks::lifecycle::Change;
use crate::sinks::ocsf;
use crate::sinks::webhook::Webhooks;
use crate::sinks::{Delivery, Sink};

pub(crate) struct Outputs {
    ocsf_file: Option<NdjsonWriter>,
    /// OCSF findings also go to Kafka (`kafka.ocsf_topic`).
    ocsf_kafka: bool,
    webhooks: Option<Webhooks>,
    drain: Duration,
}

impl Outputs {
    pub(crate) fn open(cfg: &OutputsSection, data_dir: &Path, ocsf_kafka: bool) -> Result<Self> {
        Ok(Outputs {
            ocsf_file: cfg
                .ocsf_file
                .then(|| NdjsonWriter::open(&data_dir.join("findings.ocsf.ndjson")))
                .transpose()?,
            ocsf_kafka,
            webhooks: Webhooks::start(&cfg.webhooks, data_dir)?,
            drain: Duration::from_millis(cfg.drain_on_stop_ms),
        })
    }

    fn active(&self) -> bool {
        self.ocsf_file.is_some() || self.ocsf_kafka || self.webhooks.is_some()
    }

    /// Hands the changes to every output: webhook queues durably (before
    /// the caller makes the batch's detection state durable), the OCSF file
    /// flushed. Returns the encoded findings, keyed by incident id, for the
    /// Kafka topic (empty when it is off).
    pub(crate) fn emit(&mut self, changes: &[Change<'_>]) -> Result<Vec<(String, Vec<u8>)>> {
        if changes.is_empty() || !self.active() {
            return Ok(Vec::new());
        }
        let findings: Vec<serde_json::Value> = changes.iter().map(ocsf::finding).collect();
        if let Some(w) = &self.webhooks {
            w.enqueue(changes, &findings)?;
        }
        let mut kafka = Vec::new();
        if self.ocsf_file.is_some() || self.ocsf_kafka {
            for (c, f) in changes.iter().zip(&findings) {
                let bytes = serde_json::to_vec(f).unwrap_or_default();
                if let Some(file) = &mut self.ocsf_file {
                    file.write_line(&bytes)?;
                }
                if self.ocsf_kafka {
                    kafka.push((c.incident.incident_id.clone(), bytes));
                }
            }
            if let Some(file) = &mut self.ocsf_file {
                file.flush()?;
            }
        }
        Ok(kafka)
    }

    /// Every incident of a delivery as a change: created, then updated; the
    /// findings for Kafka go to `batch.findings`.
    pub(crate) fn deliver_now(&mut self, batch: &mut Delivery<'_>) -> Result<()> {
        if !self.active() {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(batch.incidents.len() + batch.updates.len());
        for (inc, json) in batch.incidents.iter().zip(batch.incident_json) {
            changes.push(Change::created(inc, json));
        }
        for (inc, json) in batch.updates {
            changes.push(Change::updated(inc, json, batch.now));
        }
        let findings = self.emit(&changes)?;
        batch.findings.extend(findings);
        Ok(())
    }

    pub(crate) fn view(&self) -> Option<std::sync::Arc<dyn dunes_api::OutputsView>> {
        self.webhooks.as_ref().map(Webhooks::view)
    }

    /// At shutdown: waits (bounded) for the webhook queues to empty.
    pub(crate) fn drain(&self) {
        if let Some(w) = &self.webhooks {
            let left = w.drain(self.drain);
            if left > 0 {
                tracing::warn!(
                    pending = left,
                    "webhook deliveries still queued at shutdown; they are sent after the next start"
                );
            }
        }
    }
}

impl Sink for Outputs {
    fn deliver<'s>(&'s mut self, batch: &'s mut Delivery<'_>) -> BoxFuture<'s, Result<()>> {
        Box::pin(std::future::ready(self.deliver_now(batch)))
    }
}
