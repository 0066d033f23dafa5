//! Kafka outputs: dead letters, incidents, responses and OCSF findings to
//! their topics. The last sink: a Kafka batch's offsets are committed after
//! it (`flow.rs`).

use std::sync::Arc;
use std::time::Duration;

use dunes_ingest::Rejected;
use dunes_ingest::kafka::{KafkaSink, OutputMessage};
use futures::future::BoxFuture;

use crate::error::Result;
use crate::sinks::{Delivery, Sink};

/// The output topics of a pipeline with Kafka on.
pub(crate) struct KafkaOutputs(pub(crate) Arc<KafkaSink>);

impl Sink for KafkaOutputs {
    /// The batch's dead letters, new incidents, responses and the findings
    /// handed on by the incident-change sink.
    fn deliver<'s>(&'s mut self, batch: &'s mut Delivery<'_>) -> BoxFuture<'s, Result<()>> {
        Box::pin(async move {
            // The bytes the ledger holds, not a second encoding.
            let incidents = batch
                .incidents
                .iter()
                .zip(batch.incident_json)
                .map(|(i, json)| message(&i.incident_id, json))
                .collect();
            let responses = batch
                .responses
                .iter()
                .zip(batch.response_json)
                .map(|(r, json)| message(&r.response_id, json))
                .collect();
            let findings = batch.findings.iter().map(|(k, f)| message(k, f)).collect();
            publish(&self.0, batch.dead_letters, incidents, responses, findings).await
        })
    }
}

fn message(key: &str, payload: &[u8]) -> OutputMessage {
    OutputMessage {
        key: key.to_string(),
        payload: payload.to_vec(),
    }
}

/// OCSF findings raised between batches (analyst actions, the self-monitor).
pub(crate) async fn publish_findings(
    sink: &KafkaSink,
    findings: &[(String, Vec<u8>)],
) -> Result<()> {
    let findings = findings.iter().map(|(k, f)| message(k, f)).collect();
    publish(sink, &[], Vec::new(), Vec::new(), findings).await
}

/// Sends to the Kafka topics and waits for every delivery. A failed delivery
/// (broker unreachable past `delivery_timeout_ms`) is retried with backoff
/// until it succeeds: the batch's offsets stay uncommitted meanwhile and the
/// consumer stalls (backpressure), so nothing is lost during an outage; a
/// retry may deliver some messages twice.
async fn publish(
    sink: &KafkaSink,
    dead_letters: &[Rejected],
    incidents: Vec<OutputMessage>,
    responses: Vec<OutputMessage>,
    findings: Vec<OutputMessage>,
) -> Result<()> {
    if dead_letters.is_empty()
        && incidents.is_empty()
        && responses.is_empty()
        && findings.is_empty()
    {
        return Ok(());
    }
    let mut backoff = Duration::from_millis(500);
    loop {
        let (a, b, c, d) = tokio::join!(
            sink.send_dead_letters(dead_letters),
            sink.send_incidents(&incidents),
            sink.send_responses(&responses),
            sink.send_findings(&findings),
        );
        match a.and(b).and(c).and(d) {
            Ok(_) => return Ok(()),
            Err(e) => {
                metrics::counter!("dunes_kafka_delivery_retries_total").increment(1);
                tracing::error!(
                    "kafka output delivery failed, retrying in {:?} (offsets stay uncommitted): {e}",
                    backoff
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    }
}
