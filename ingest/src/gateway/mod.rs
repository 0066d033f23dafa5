//! MCP gateway access logs (and OTLP/JSON files) read as envelopes (`--format`,
//! `[ingest] format`, `[kafka] format`, `POST /v1/ingest?format=`).
//!
//! A gateway logs one line per MCP request it proxies, with the method and the
//! tool/prompt/resource name but not the arguments or the result. Each MCP line becomes one
//! `c2s` request envelope (and, where the gateway itself answered with a JSON-RPC error, the
//! `s2c` error envelope); the original line rides along in the envelope's `gateway_log`
//! member (kept in the `extra` column and in the ledger). Lines that are not MCP requests
//! (other routes, the gateway's own application logs) are skipped and counted in
//! `dunes_gateway_lines_skipped_total{format}`; a line the format cannot read is refused
//! with the reason (dead letter). The field mapping is in `docs/schema.md#gateway-logs`.
//!
//! ```text
//! agentgateway line ─┐
//! Tyk access log  ───┼─ adapt ─▶ Envelopes(request [, error]) ─▶ Normalizer
//!                    │        ├▶ Skipped(why)   (counted)
//!                    │        └▶ Refused(why)   (dead letter)
//! ```

mod agentgateway;
mod tyk;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::RawRecord;

/// The shape of the records a source carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Dunes log envelopes (`docs/contract/mcp-log-envelope.md`), one per line.
    #[default]
    Envelope,
    /// agentgateway request logs, text (`<time>\tinfo\trequest k=v …`) or JSON
    /// (`LOG_FORMAT=json`).
    Agentgateway,
    /// Tyk Gateway structured access logs (`access_logs.enabled`, JSON log format) with the
    /// MCP fields `api_type`, `mcp_method`, `mcp_primitive_type`, `mcp_primitive_name`,
    /// `mcp_error_code`.
    Tyk,
    /// OTLP/JSON export requests (logs or traces), one per line: the OpenTelemetry
    /// Collector `file` exporter's layout; mapped as on `POST /v1/logs` / `/v1/traces`.
    Otlp,
}

impl InputFormat {
    /// Every format, for help texts.
    pub const ALL: [InputFormat; 4] = [
        InputFormat::Envelope,
        InputFormat::Agentgateway,
        InputFormat::Tyk,
        InputFormat::Otlp,
    ];

    /// The format's name as written in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Envelope => "envelope",
            InputFormat::Agentgateway => "agentgateway",
            InputFormat::Tyk => "tyk",
            InputFormat::Otlp => "otlp",
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        InputFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown input format {s:?}: expected envelope, agentgateway, tyk or otlp")
            })
    }
}

/// What one gateway log line becomes.
#[derive(Debug, PartialEq)]
enum Adapted {
    /// Envelopes (serialised JSON), in order: the request, then the gateway's error answer.
    Envelopes(Vec<Vec<u8>>),
    /// Not an MCP request record (counted, not dead-lettered).
    Skipped(&'static str),
    /// A record of the format that maps to no envelope: dead letter with this reason.
    Refused(String),
}

/// Maps one line of a gateway format (`agentgateway`, `tyk`).
fn adapt(format: InputFormat, line: &[u8]) -> Adapted {
    let Ok(text) = std::str::from_utf8(line) else {
        return Adapted::Refused(format!("{format} log line is not valid UTF-8"));
    };
    let text = text.trim_end_matches(['\r', '\n']);
    let mapped = match format {
        InputFormat::Agentgateway => agentgateway::map(text),
        InputFormat::Tyk => tyk::map(text),
        InputFormat::Envelope | InputFormat::Otlp => {
            return Adapted::Refused(format!("{format} is not a gateway log format"));
        }
    };
    match mapped {
        Ok(Some(req)) => Adapted::Envelopes(req.envelopes(format, text)),
        Ok(None) => Adapted::Skipped("not an MCP request record"),
        Err(why) => Adapted::Refused(format!("{format} log line: {why}")),
    }
}

/// Replaces each record of a `format` source by its envelopes (same source position),
/// refuses what cannot map (the record keeps its bytes and carries the reason) and drops
/// skipped lines and non-MCP OTLP items, counting them. Oversize records pass through
/// untouched: the normaliser rejects them with the size reason.
pub fn adapt_records(format: InputFormat, records: Vec<RawRecord>) -> Vec<RawRecord> {
    if format == InputFormat::Envelope {
        return records;
    }
    let mut out = Vec::with_capacity(records.len());
    let mut skipped = 0u64;
    for rec in records {
        if rec.oversize.is_some() || rec.refused.is_some() {
            out.push(rec);
        } else if format == InputFormat::Otlp {
            skipped += otlp_line(rec, &mut out);
        } else {
            match adapt(format, &rec.bytes) {
                Adapted::Envelopes(envs) => out.extend(envs.into_iter().map(|bytes| RawRecord {
                    bytes: bytes.into(),
                    source: rec.source.clone(),
                    oversize: None,
                    refused: None,
                })),
                Adapted::Skipped(_) => skipped += 1,
                Adapted::Refused(why) => out.push(RawRecord {
                    refused: Some(why),
                    ..rec
                }),
            }
        }
    }
    if skipped > 0 {
        metrics::counter!("dunes_gateway_lines_skipped_total", "format" => format.name())
            .increment(skipped);
    }
    out
}

/// One OTLP/JSON export request: its envelopes and refused items, at the line's position;
/// returns the number of non-MCP items skipped.
fn otlp_line(rec: RawRecord, out: &mut Vec<RawRecord>) -> u64 {
    use crate::otlp::{Encoding, Signal, map_request};
    let spans = rec.bytes.windows(15).any(|w| w == b"\"resourceSpans\"");
    let signal = if spans { Signal::Traces } else { Signal::Logs };
    match map_request(signal, Encoding::Json, &rec.bytes, "file") {
        Ok(m) => {
            out.extend(m.records.into_iter().map(|r| RawRecord {
                source: rec.source.clone(),
                ..r
            }));
            m.ignored
        }
        Err(e) => {
            let why = match e {
                crate::IngestError::HttpBody(m) => m,
                other => other.to_string(),
            };
            out.push(RawRecord {
                refused: Some(format!("otlp line: {why}")),
                ..rec
            });
            0
        }
    }
}

/// What a gateway line tells about one MCP request, in envelope terms.
#[derive(Debug, Default)]
struct GatewayRequest {
    /// RFC 3339 time the request arrived.
    ts: String,
    /// RFC 3339 time of the gateway's answer, when it is known and differs.
    answered: Option<String>,
    server_id: String,
    gateway_id: Option<String>,
    session_id: Option<String>,
    transport: &'static str,
    method: String,
    /// `params` of the request (`name` or `uri`), when the gateway logged the primitive.
    params: Option<Value>,
    http: Map<String, Value>,
    auth: Map<String, Value>,
    labels: Map<String, Value>,
    /// The JSON-RPC error the gateway answered with: (code, message).
    error: Option<(i64, String)>,
}

impl GatewayRequest {
    /// The request envelope (and the error answer), the original line in `gateway_log`.
    /// The JSON-RPC id is not logged by gateways: `<format>-` + 16 hex of BLAKE3(line), so
    /// a replayed line gives the same envelope (and event id).
    fn envelopes(self, format: InputFormat, line: &str) -> Vec<Vec<u8>> {
        let hash = blake3::hash(line.as_bytes());
        let id = format!("{format}-{}", &hash.to_hex()[..16]);
        let notification = self.method.starts_with("notifications/");
        let mut msg = Map::new();
        msg.insert("jsonrpc".into(), json!("2.0"));
        if !notification {
            msg.insert("id".into(), json!(id));
        }
        msg.insert("method".into(), json!(self.method));
        if let Some(p) = self.params {
            msg.insert("params".into(), p);
        }
        let mut req = Map::new();
        req.insert("ts".into(), json!(self.ts));
        req.insert("server_id".into(), json!(self.server_id));
        req.insert("direction".into(), json!("c2s"));
        req.insert("transport".into(), json!(self.transport));
        if let Some(s) = &self.session_id {
            req.insert("session_id".into(), json!(s));
        }
        if let Some(g) = &self.gateway_id {
            req.insert("gateway_id".into(), json!(g));
        }
        if !self.http.is_empty() {
            req.insert("http".into(), Value::Object(self.http.clone()));
        }
        if !self.auth.is_empty() {
            req.insert("auth".into(), Value::Object(self.auth.clone()));
        }
        if !self.labels.is_empty() {
            req.insert("labels".into(), Value::Object(self.labels.clone()));
        }
        // The gateway's error answer shares the request's context; copy it only when there is one.
        let answer = match self.error {
            Some(e) if !notification => Some((e, req.clone())),
            _ => None,
        };
        req.insert("message".into(), Value::Object(msg));
        req.insert(
            "gateway_log".into(),
            json!({ "format": format.name(), "line": line }),
        );
        let mut out = vec![Value::Object(req).to_string().into_bytes()];
        if let Some(((code, message), mut resp)) = answer {
            resp.insert("direction".into(), json!("s2c"));
            resp.insert("ts".into(), json!(self.answered.unwrap_or(self.ts)));
            resp.insert(
                "message".into(),
                json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }),
            );
            out.push(Value::Object(resp).to_string().into_bytes());
        }
        out
    }
}

/// `params` for a method whose primitive the gateway named: `name` for tools and prompts,
/// `uri` for resources.
fn primitive_params(method: &str, kind: Option<&str>, name: Option<&str>) -> Option<Value> {
    let name = name.filter(|n| !n.is_empty())?;
    let key = match (method, kind) {
        ("resources/read" | "resources/subscribe" | "resources/unsubscribe", _) => "uri",
        (_, Some("resource" | "templates")) => "uri",
        _ => "name",
    };
    Some(json!({ key: name }))
}

/// The host part of `ip:port`, `[v6]:port` or a bare address.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        // One colon: ipv4:port or name:port; more: a bare IPv6 address.
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    }
}

/// RFC 3339 `ts` moved back by `ms` milliseconds (None when `ts` does not parse).
fn minus_ms(ts: &str, ms: f64) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    if !ms.is_finite() || !(0.0..=86_400_000.0).contains(&ms) {
        return None;
    }
    let back = chrono::Duration::microseconds((ms * 1000.0).round() as i64);
    Some(
        (t - back)
            .to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

#[cfg(test)]
mod tests;
