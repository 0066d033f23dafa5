//! Kafka outputs: dead letters, incidents, responses and OCSF findings to
//! their topics.

use std::time::Duration;

use dunes_ingest::kafka::{KafkaSink, OutputMessage};

use crate::error::Result;
use crate::stage::BatchOutcome;

/// Sends a batch's dead letters, incidents and responses to their Kafka
/// topics (when Kafka is on) and waits for every delivery. A failed delivery
/// (broker unreachable past `delivery_timeout_ms`) is retried with backoff
/// until it succeeds: the batch's offsets stay uncommitted meanwhile and the
/// consumer stalls (backpressure), so nothing is lost during an outage; a
/// retry may deliver some messages twice.
pub(crate) async fn publish(sink: &KafkaSink, out: &BatchOutcome) -> Result<()> {
    // The bytes the ledger holds, not a second encoding.
    let messages = |keys: Vec<&String>, json: &[Vec<u8>]| -> Vec<OutputMessage> {
        keys.into_iter()
            .zip(json)
            .map(|(key, payload)| OutputMessage {
                key: key.clone(),
                payload: payload.clone(),
            })
            .collect()
    };
    let incidents = messages(
        out.incidents.iter().map(|i| &i.incident_id).collect(),
        &out.incident_json,
    );
    let responses = messages(
        out.responses.iter().map(|r| &r.response_id).collect(),
        &out.response_json,
    );
    let findings: Vec<OutputMessage> = out
        .findings_json
        .iter()
        .map(|(key, payload)| OutputMessage {
            key: key.clone(),
            payload: payload.clone(),
        })
        .collect();
    let mut backoff = Duration::from_millis(500);
    loop {
        let (a, b, c, d) = tokio::join!(
            sink.send_dead_letters(&out.dead_letters),
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
