//! The simulated envelopes as OTLP/JSON log exports: one `ExportLogsServiceRequest` per
//! line (the OpenTelemetry Collector `file` exporter's layout), each log record's body the
//! envelope as a string, so `dunes run --format otlp` and `POST /v1/logs` ingest the same
//! traffic as the envelope form.

use serde_json::{Value, json};

/// Envelopes per export request.
pub const OTLP_RECORDS_PER_REQUEST: usize = 64;

/// One `ExportLogsServiceRequest` (OTLP/JSON) carrying `envelopes` as log record bodies.
pub fn otlp_logs_request(envelopes: &[String]) -> String {
    let records: Vec<Value> = envelopes
        .iter()
        .map(|e| {
            json!({
                "severityNumber": 9,
                "severityText": "INFO",
                "body": { "stringValue": e },
            })
        })
        .collect();
    json!({
        "resourceLogs": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": "mcp-gateway" } },
            ] },
            "scopeLogs": [{
                "scope": { "name": "dunes-sim" },
                "logRecords": records,
            }],
        }],
    })
    .to_string()
}

/// Groups an envelope stream into export requests of [`OTLP_RECORDS_PER_REQUEST`].
pub fn otlp_lines(envelopes: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    let mut envelopes = envelopes.peekable();
    std::iter::from_fn(move || {
        envelopes.peek()?;
        let chunk: Vec<String> = envelopes.by_ref().take(OTLP_RECORDS_PER_REQUEST).collect();
        Some(otlp_logs_request(&chunk))
    })
}
