//! OTLP input: OpenTelemetry logs and traces of MCP traffic, mapped to envelopes.
//!
//! An OTLP export request (protobuf or the OTLP/JSON encoding) becomes one [`RawRecord`]
//! per envelope, which then takes the same path as every other input (normaliser, dead
//! letter, ledger). The mapping is `docs/schema.md#otlp`:
//!
//! * a span with `mcp.method.name` (OTel MCP semantic conventions) is one exchange: the
//!   request at the span's start and, when it has a `jsonrpc.request.id`, the response at its
//!   end, rebuilt from `gen_ai.tool.name`, `gen_ai.tool.call.arguments`, `mcp.resource.uri`,
//!   `gen_ai.prompt.name`, `gen_ai.tool.call.result`, `error.type`, `rpc.response.status_code`;
//! * a log record whose body is a Dunes envelope passes through with its exact bytes; one whose
//!   body is a JSON-RPC message (string or map) is wrapped in an envelope from its attributes.
//!
//! Spans and log records without MCP content (no `mcp.method.name`, no JSON-RPC body) are
//! other telemetry of the same services: they are counted in [`Mapped::ignored`], not
//! dead-lettered. MCP items that cannot be mapped are records with
//! [`RawRecord::refused`] set, so they reach the dead letter with the reason.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Map, Value, json};

use crate::{IngestError, RawRecord, SourcePos};

/// Which OTLP signal a request carries (`/v1/traces` or `/v1/logs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `ExportTraceServiceRequest`.
    Traces,
    /// `ExportLogsServiceRequest`.
    Logs,
}

/// The body encoding (`Content-Type: application/x-protobuf` or `application/json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// The OTLP/JSON encoding (hex trace and span ids, lowerCamelCase field names).
    Json,
}

impl Encoding {
    /// From a `Content-Type` header value; `None` for anything but the two OTLP encodings.
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of a response in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// An OTLP request mapped to envelope records.
#[derive(Debug, Default)]
pub struct Mapped {
    /// One record per envelope, and one refused record per MCP item that could not be mapped.
    pub records: Vec<RawRecord>,
    /// Spans or log records without MCP content, skipped.
    pub ignored: u64,
    /// MCP spans or log records that could not be mapped (their records are refused).
    pub refused_items: u64,
}

/// Decode an OTLP export request and map it to envelope records.
pub fn map_request(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
    request_id: &str,
) -> Result<Mapped, IngestError> {
    let bad = |e: String| IngestError::HttpBody(format!("not an OTLP {signal:?} request: {e}"));
    Ok(match signal {
        Signal::Traces => {
            let req: ExportTraceServiceRequest = match encoding {
                Encoding::Protobuf => {
                    ExportTraceServiceRequest::decode(body).map_err(|e| bad(e.to_string()))?
                }
                Encoding::Json => serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?,
            };
            map_traces(&req, request_id)
        }
        Signal::Logs => {
            let req: ExportLogsServiceRequest = match encoding {
                Encoding::Protobuf => {
                    ExportLogsServiceRequest::decode(body).map_err(|e| bad(e.to_string()))?
                }
                Encoding::Json => serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?,
            };
            map_logs(&req, request_id)
        }
    })
}

/// Map a decoded trace export request (OTLP/gRPC hands it over decoded).
pub fn map_traces(req: &ExportTraceServiceRequest, request_id: &str) -> Mapped {
    let mut m = Mapper {
        request_id: request_id.into(),
        out: Mapped::default(),
    };
    for rs in &req.resource_spans {
        let res = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                m.span(res, span);
            }
        }
    }
    m.out
}

/// Map a decoded logs export request.
pub fn map_logs(req: &ExportLogsServiceRequest, request_id: &str) -> Mapped {
    let mut m = Mapper {
        request_id: request_id.into(),
        out: Mapped::default(),
    };
    for rl in &req.resource_logs {
        let res = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for sl in &rl.scope_logs {
            for rec in &sl.log_records {
                m.log(res, rec);
            }
        }
    }
    m.out
}

/// The trace export response: `partial_success` when `refused` > 0.
pub fn trace_response(refused: u64, message: &str) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (refused > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(refused).unwrap_or(i64::MAX),
            error_message: message.to_string(),
        }),
    }
}

/// The logs export response: `partial_success` when `refused` > 0.
pub fn logs_response(refused: u64, message: &str) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (refused > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: i64::try_from(refused).unwrap_or(i64::MAX),
            error_message: message.to_string(),
        }),
    }
}

/// The OTLP/HTTP success body for `signal` in `encoding`.
pub fn response(signal: Signal, encoding: Encoding, refused: u64, message: &str) -> Vec<u8> {
    match signal {
        Signal::Traces => {
            let r = trace_response(refused, message);
            match encoding {
                Encoding::Protobuf => r.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&r).unwrap_or_default(),
            }
        }
        Signal::Logs => {
            let r = logs_response(refused, message);
            match encoding {
                Encoding::Protobuf => r.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&r).unwrap_or_default(),
            }
        }
    }
}

/// Methods a server sends to its client (requests and notifications): the others go from
/// client to server. `ping` and `notifications/cancelled`/`progress` go both ways and are
/// taken as client to server unless the span is a server-side `CLIENT` span.
fn server_initiated(method: &str) -> bool {
    method.starts_with("sampling/")
        || method.starts_with("elicitation/")
        || method == "roots/list"
        || method == "notifications/message"
        || method == "notifications/resources/updated"
        || method == "notifications/elicitation/complete"
        || (method.starts_with("notifications/")
            && method.ends_with("/list_changed")
            && method != "notifications/roots/list_changed")
}

const BOTH_WAYS: &[&str] = &["ping", "notifications/cancelled", "notifications/progress"];

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A string, or an integer's decimal text.
fn attr_text(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An OTLP `AnyValue` as JSON (bytes as standard base64).
fn any_to_json(v: &any_value::Value) -> Value {
    use any_value::Value as V;
    match v {
        V::StringValue(s) => Value::String(s.clone()),
        V::BoolValue(b) => Value::Bool(*b),
        V::IntValue(i) => json!(i),
        V::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        V::ArrayValue(a) => Value::Array(a.values.iter().map(opt_any_to_json).collect()),
        V::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv
                        .value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map_or(Value::Null, any_to_json);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        V::BytesValue(b) => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        // An index into a profiles string table: meaningless outside profiles.
        V::StringValueStrindex(_) => Value::Null,
    }
}

fn opt_any_to_json(v: &AnyValue) -> Value {
    v.value.as_ref().map_or(Value::Null, any_to_json)
}

/// A structured attribute (`gen_ai.tool.call.arguments`/`result`): a map as is, a string
/// holding JSON parsed (the conventions allow a JSON string), any other string kept.
fn structured(v: &any_value::Value) -> Value {
    match v {
        any_value::Value::StringValue(s) => {
            serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        other => any_to_json(other),
    }
}

/// RFC 3339 with microseconds from Unix nanoseconds; `None` for 0 (unset).
fn rfc3339(nanos: u64) -> Option<String> {
    if nanos == 0 {
        return None;
    }
    let secs = i64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    chrono::DateTime::from_timestamp(secs, sub)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// The JSON-RPC id from `jsonrpc.request.id`: a number when it is one, else the string.
fn jsonrpc_id(text: &str) -> Value {
    text.parse::<i64>()
        .map(|n| json!(n))
        .unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Envelope fields shared by spans and log records, from attributes (record first, then
/// resource): `server_id`, `session_id`, `transport`, `http`, `auth`, `labels`.
fn context(attrs: &[KeyValue], res: &[KeyValue]) -> Result<Map<String, Value>, String> {
    let get = |k: &str| attr_text(attrs, k).or_else(|| attr_text(res, k));
    let mut env = Map::new();
    let server = match (get("server.address"), get("server.port")) {
        (Some(a), Some(p)) => Some(format!("{a}:{p}")),
        (Some(a), None) => Some(a),
        (None, _) => get("service.name"),
    };
    let Some(server) = server else {
        return Err("no server identity: neither server.address nor resource service.name".into());
    };
    env.insert("server_id".into(), Value::String(server));
    if let Some(s) = get("mcp.session.id") {
        env.insert("session_id".into(), Value::String(s));
    }
    let transport = match get("network.transport").as_deref() {
        Some("pipe") => Some("stdio"),
        Some("tcp" | "quic") => Some("streamable_http"),
        _ => None,
    };
    if let Some(t) = transport {
        env.insert("transport".into(), Value::String(t.into()));
    }
    let mut http = Map::new();
    if let Some(ip) = get("client.address") {
        http.insert("src_ip".into(), Value::String(ip));
    }
    if let Some(ua) = get("user_agent.original") {
        http.insert("user_agent".into(), Value::String(ua));
    }
    if let Some(m) = get("http.request.method") {
        http.insert("method".into(), Value::String(m));
    }
    if let Some(v) = get("mcp.protocol.version")
        && transport == Some("streamable_http")
    {
        http.insert("headers".into(), json!({ "mcp-protocol-version": v }));
    }
    if !http.is_empty() {
        env.insert("http".into(), Value::Object(http));
    }
    if let Some(sub) = get("user.id").or_else(|| get("enduser.id")) {
        env.insert("auth".into(), json!({ "sub": sub }));
    }
    if let Some(e) = get("deployment.environment.name").or_else(|| get("deployment.environment")) {
        env.insert("labels".into(), json!({ "env": e }));
    }
    Ok(env)
}

struct Mapper {
    request_id: std::sync::Arc<str>,
    out: Mapped,
}

impl Mapper {
    fn push(&mut self, bytes: Vec<u8>, refused: Option<String>) {
        let index = self.out.records.len() as u64;
        self.out.records.push(RawRecord {
            bytes: bytes.into(),
            source: SourcePos::Http {
                request_id: self.request_id.clone(),
                index,
            },
            oversize: None,
            refused,
        });
    }

    fn push_env(&mut self, env: Map<String, Value>) {
        let bytes = serde_json::to_vec(&Value::Object(env)).unwrap_or_default();
        self.push(bytes, None);
    }

    fn refuse(&mut self, what: Value, reason: String) {
        self.out.refused_items += 1;
        let bytes = serde_json::to_vec(&what).unwrap_or_default();
        self.push(bytes, Some(reason));
    }

    fn span(&mut self, res: &[KeyValue], span: &Span) {
        let Some(method) = attr_str(&span.attributes, "mcp.method.name") else {
            self.out.ignored += 1;
            return;
        };
        match span_envelopes(res, span, method) {
            Ok(envs) => envs.into_iter().for_each(|e| self.push_env(e)),
            Err(reason) => {
                let what = json!({
                    "otlp_span": {
                        "name": span.name,
                        "trace_id": hex::encode(&span.trace_id),
                        "span_id": hex::encode(&span.span_id),
                        "attributes": span.attributes.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, opt_any_to_json))).collect::<Map<_, _>>(),
                    }
                });
                self.refuse(what, format!("OTLP span {:?}: {reason}", span.name));
            }
        }
    }

    fn log(&mut self, res: &[KeyValue], rec: &LogRecord) {
        let Some(body) = rec.body.as_ref().and_then(|b| b.value.as_ref()) else {
            self.out.ignored += 1;
            return;
        };
        // A string body holding one JSON object: looked at without building a tree, and
        // kept as the exact text (the envelope itself, or the message inside the envelope).
        if let any_value::Value::StringValue(text) = body
            && let Ok(p) = serde_json::from_str::<Probe<'_>>(text)
        {
            if p.server_id.is_some() && p.direction.is_some() && p.message.is_some() {
                self.push(text.as_bytes().to_vec(), None);
                return;
            }
            let method = p
                .method
                .and_then(|m| serde_json::from_str::<String>(m.get()).ok());
            let jsonrpc = p.jsonrpc.is_some()
                || method.is_some()
                || (p.id.is_some() && (p.result.is_some() || p.error.is_some()));
            if !jsonrpc {
                self.out.ignored += 1;
                return;
            }
            match log_envelope(res, rec, method.as_deref()) {
                Ok(env) => {
                    // the envelope's members, then the message as received
                    let mut bytes = serde_json::to_vec(&Value::Object(env)).unwrap_or_default();
                    bytes.pop();
                    bytes.extend_from_slice(b",\"message\":");
                    bytes.extend_from_slice(text.as_bytes());
                    bytes.push(b'}');
                    self.push(bytes, None);
                }
                Err(reason) => self.refuse(
                    json!({ "otlp_log_body": text }),
                    format!("OTLP log record: {reason}"),
                ),
            }
            return;
        }
        // A batch (array) in a string, or a structured (map/array) body.
        let value = match body {
            any_value::Value::StringValue(s) => match serde_json::from_str::<Value>(s) {
                Ok(v) => v,
                Err(_) => {
                    self.out.ignored += 1;
                    return;
                }
            },
            other => any_to_json(other),
        };
        if is_envelope(&value) {
            self.push(serde_json::to_vec(&value).unwrap_or_default(), None);
            return;
        }
        if !is_jsonrpc(&value) {
            self.out.ignored += 1;
            return;
        }
        let first = match &value {
            Value::Array(v) => v.first(),
            other => Some(other),
        };
        let method = first.and_then(|m| m.get("method")).and_then(Value::as_str);
        match log_envelope(res, rec, method) {
            Ok(mut env) => {
                env.insert("message".into(), value);
                self.push_env(env);
            }
            Err(reason) => self.refuse(
                json!({ "otlp_log_body": value }),
                format!("OTLP log record: {reason}"),
            ),
        }
    }
}

/// The members of a JSON object that tell an envelope and a JSON-RPC message apart, borrowed.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    server_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    direction: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    message: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    jsonrpc: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    method: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
}

fn is_envelope(v: &Value) -> bool {
    v.get("server_id").is_some() && v.get("direction").is_some() && v.get("message").is_some()
}

fn is_jsonrpc(v: &Value) -> bool {
    let one = |m: &Value| {
        m.get("jsonrpc").is_some()
            || m.get("method").is_some_and(Value::is_string)
            || (m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some()))
    };
    match v {
        Value::Array(a) => !a.is_empty() && a.iter().all(one),
        Value::Object(_) => one(v),
        _ => false,
    }
}

fn direction(s: &str) -> Value {
    Value::String(s.to_string())
}

/// A span's request (and response) envelopes.
fn span_envelopes(
    res: &[KeyValue],
    span: &Span,
    method: &str,
) -> Result<Vec<Map<String, Value>>, String> {
    let a = &span.attributes[..];
    let base = context(a, res)?;
    let start = rfc3339(span.start_time_unix_nano).ok_or("no start time")?;
    let end = rfc3339(span.end_time_unix_nano).unwrap_or_else(|| start.clone());
    if span.trace_id.len() != 16 || span.span_id.len() != 8 {
        return Err(format!(
            "trace id of {} bytes, span id of {} bytes (16 and 8 expected)",
            span.trace_id.len(),
            span.span_id.len()
        ));
    }
    let trace = hex::encode(&span.trace_id);
    let span_hex = hex::encode(&span.span_id);
    // CLIENT spans of a server (server-initiated) and requests a server sends.
    let kind_client = span.kind == 3;
    let c2s = if BOTH_WAYS.contains(&method) {
        !(kind_client && attr_str(res, "service.name") == base["server_id"].as_str())
    } else {
        !server_initiated(method)
    };
    let (req_dir, resp_dir) = if c2s { ("c2s", "s2c") } else { ("s2c", "c2s") };

    let mut params = Map::new();
    match method {
        "tools/call" => {
            let name =
                attr_str(a, "gen_ai.tool.name").ok_or("tools/call without gen_ai.tool.name")?;
            params.insert("name".into(), Value::String(name.into()));
            if let Some(args) = attr(a, "gen_ai.tool.call.arguments") {
                params.insert("arguments".into(), structured(args));
            }
        }
        "prompts/get" => {
            if let Some(n) = attr_str(a, "gen_ai.prompt.name") {
                params.insert("name".into(), Value::String(n.into()));
            }
        }
        _ => {
            if let Some(u) = attr_str(a, "mcp.resource.uri") {
                params.insert("uri".into(), Value::String(u.into()));
            }
        }
    }
    // The W3C trace context the request carried in `_meta` (semantic conventions): the
    // parent span is the caller's.
    let parent = if span.parent_span_id.len() == 8 {
        hex::encode(&span.parent_span_id)
    } else {
        span_hex.clone()
    };
    params.insert(
        "_meta".into(),
        json!({ "traceparent": format!("00-{trace}-{parent}-01") }),
    );
    let id = attr_text(a, "jsonrpc.request.id");
    let mut request = json!({ "jsonrpc": "2.0", "method": method, "params": params });
    if let Some(id) = &id {
        request["id"] = jsonrpc_id(id);
    }
    let labels = |env: &mut Map<String, Value>| {
        let l = env
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(l) = l {
            l.insert("otel.trace_id".into(), Value::String(trace.clone()));
            l.insert("otel.span_id".into(), Value::String(span_hex.clone()));
        }
    };
    let mut req_env = base.clone();
    req_env.insert(
        "event_id".into(),
        json!(format!("otlp-{trace}-{span_hex}-q")),
    );
    req_env.insert("ts".into(), Value::String(start));
    req_env.insert("direction".into(), direction(req_dir));
    req_env.insert("message".into(), request);
    labels(&mut req_env);
    let Some(id) = id else {
        return Ok(vec![req_env]);
    };

    let error_type = attr_text(a, "error.type");
    let code = attr_text(a, "rpc.response.status_code")
        .or_else(|| error_type.clone())
        .and_then(|c| c.parse::<i64>().ok());
    let status_msg = span
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default();
    let result_attr = attr(a, "gen_ai.tool.call.result").map(structured);
    let response = if let Some(code) = code {
        let message = if status_msg.is_empty() {
            error_type.unwrap_or_default()
        } else {
            status_msg
        };
        json!({ "jsonrpc": "2.0", "id": jsonrpc_id(&id), "error": { "code": code, "message": message } })
    } else {
        let mut result = match result_attr {
            Some(Value::Object(o)) if o.contains_key("content") => Value::Object(o),
            Some(Value::String(s)) => json!({ "content": [{ "type": "text", "text": s }] }),
            Some(other @ Value::Object(_)) => json!({
                "content": [{ "type": "text", "text": other.to_string() }],
                "structuredContent": other,
            }),
            Some(other) => json!({ "content": [{ "type": "text", "text": other.to_string() }] }),
            None if method == "tools/call" => json!({ "content": [] }),
            None => json!({}),
        };
        if error_type.as_deref() == Some("tool_error") {
            result["isError"] = Value::Bool(true);
            if !status_msg.is_empty() && result["content"].as_array().is_some_and(|c| c.is_empty())
            {
                result["content"] = json!([{ "type": "text", "text": status_msg }]);
            }
        }
        json!({ "jsonrpc": "2.0", "id": jsonrpc_id(&id), "result": result })
    };
    let mut resp_env = base;
    resp_env.insert(
        "event_id".into(),
        json!(format!("otlp-{trace}-{span_hex}-r")),
    );
    resp_env.insert("ts".into(), Value::String(end));
    resp_env.insert("direction".into(), direction(resp_dir));
    resp_env.insert("message".into(), response);
    labels(&mut resp_env);
    Ok(vec![req_env, resp_env])
}

/// The envelope of a log record whose body is a JSON-RPC message (or batch).
/// The envelope (without its `message`) of a log record whose body is a JSON-RPC message
/// or batch; `method` is the (first) message's method, if any.
fn log_envelope(
    res: &[KeyValue],
    rec: &LogRecord,
    method: Option<&str>,
) -> Result<Map<String, Value>, String> {
    let a = &rec.attributes[..];
    let mut env = context(a, res)?;
    let ts = rfc3339(rec.time_unix_nano)
        .or_else(|| rfc3339(rec.observed_time_unix_nano))
        .ok_or("neither time_unix_nano nor observed_time_unix_nano")?;
    // A request or notification goes the way its method goes; a response the other way
    // from its request's method (`mcp.method.name`), from server to client when unknown.
    let dir = match (method, attr_str(a, "mcp.method.name")) {
        (Some(m), _) => {
            if server_initiated(m) {
                "s2c"
            } else {
                "c2s"
            }
        }
        (None, Some(m)) => {
            if server_initiated(m) {
                "c2s"
            } else {
                "s2c"
            }
        }
        (None, None) => "s2c",
    };
    env.insert("ts".into(), Value::String(ts));
    env.insert("direction".into(), direction(dir));
    if rec.trace_id.len() == 16 {
        let l = env
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(l) = l {
            l.insert(
                "otel.trace_id".into(),
                Value::String(hex::encode(&rec.trace_id)),
            );
            if rec.span_id.len() == 8 {
                l.insert(
                    "otel.span_id".into(),
                    Value::String(hex::encode(&rec.span_id)),
                );
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OTLP/JSON trace export as the specification encodes it (hex ids, lowerCamelCase,
    /// 64-bit integers as strings, `kind` as a number): a tool call with arguments and
    /// result, a failed resources/read, a notification, an HTTP span that is not MCP, and a
    /// tools/call span without its tool name.
    const TRACES_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"files-mcp"}},
        {"key":"deployment.environment.name","value":{"stringValue":"prod"}}]},
      "scopeSpans":[{"scope":{"name":"mcp"},"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
         "parentSpanId":"eee19b7ec3c1b173","name":"tools/call read_file","kind":2,
         "startTimeUnixNano":"1796000000000000000","endTimeUnixNano":"1796000000250000000",
         "attributes":[
          {"key":"mcp.method.name","value":{"stringValue":"tools/call"}},
          {"key":"jsonrpc.request.id","value":{"stringValue":"7"}},
          {"key":"gen_ai.tool.name","value":{"stringValue":"read_file"}},
          {"key":"gen_ai.tool.call.arguments","value":{"kvlistValue":{"values":[
            {"key":"path","value":{"stringValue":"/etc/shadow"}}]}}},
          {"key":"gen_ai.tool.call.result","value":{"stringValue":"permission denied"}},
          {"key":"error.type","value":{"stringValue":"tool_error"}},
          {"key":"mcp.session.id","value":{"stringValue":"s-1"}},
          {"key":"network.transport","value":{"stringValue":"pipe"}},
          {"key":"user.id","value":{"stringValue":"bob"}}]},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175",
         "name":"resources/read","kind":2,
         "startTimeUnixNano":"1796000001000000000","endTimeUnixNano":"1796000001010000000",
         "attributes":[
          {"key":"mcp.method.name","value":{"stringValue":"resources/read"}},
          {"key":"jsonrpc.request.id","value":{"stringValue":"req-8"}},
          {"key":"mcp.resource.uri","value":{"stringValue":"file:///home/bob/.aws/credentials"}},
          {"key":"rpc.response.status_code","value":{"stringValue":"-32002"}},
          {"key":"error.type","value":{"stringValue":"-32002"}},
          {"key":"server.address","value":{"stringValue":"10.0.0.5"}},
          {"key":"server.port","value":{"intValue":"8080"}},
          {"key":"network.transport","value":{"stringValue":"tcp"}},
          {"key":"mcp.protocol.version","value":{"stringValue":"2025-11-25"}},
          {"key":"client.address","value":{"stringValue":"10.0.0.9"}}],
         "status":{"code":2,"message":"Resource not found"}},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b176",
         "name":"notifications/message","kind":3,
         "startTimeUnixNano":"1796000002000000000","endTimeUnixNano":"1796000002000000000",
         "attributes":[{"key":"mcp.method.name","value":{"stringValue":"notifications/message"}}]},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b177",
         "name":"POST /mcp","kind":2,"startTimeUnixNano":"1796000000000000000",
         "endTimeUnixNano":"1796000003000000000",
         "attributes":[{"key":"http.request.method","value":{"stringValue":"POST"}}]},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b178",
         "name":"tools/call","kind":2,"startTimeUnixNano":"1796000004000000000",
         "endTimeUnixNano":"1796000004000000000",
         "attributes":[{"key":"mcp.method.name","value":{"stringValue":"tools/call"}},
          {"key":"jsonrpc.request.id","value":{"intValue":"9"}}]}
      ]}]}]}"#;

    fn lines(m: &Mapped) -> String {
        m.records
            .iter()
            .map(|r| {
                let text = String::from_utf8_lossy(&r.bytes);
                match &r.refused {
                    Some(reason) => format!("REFUSED {reason}: {text}"),
                    None => text.into_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn mcp_spans_map_to_envelopes() {
        let m = map_request(Signal::Traces, Encoding::Json, TRACES_JSON.as_bytes(), "r1")
            .expect("a valid OTLP/JSON request");
        assert_eq!(m.ignored, 1, "the HTTP span is not MCP");
        assert_eq!(m.refused_items, 1, "tools/call without its tool name");
        insta::assert_snapshot!(lines(&m));
    }

    #[test]
    fn protobuf_and_json_encodings_map_alike() {
        let req: ExportTraceServiceRequest = serde_json::from_str(TRACES_JSON).expect("OTLP/JSON");
        let pb = req.encode_to_vec();
        let a = map_request(Signal::Traces, Encoding::Protobuf, &pb, "r1").expect("protobuf");
        let b = map_request(Signal::Traces, Encoding::Json, TRACES_JSON.as_bytes(), "r1")
            .expect("json");
        assert_eq!(lines(&a), lines(&b));
        assert!(
            map_request(Signal::Traces, Encoding::Protobuf, b"\xff\xff\xff", "r").is_err(),
            "garbage is a bad request, not an empty one"
        );
        assert!(map_request(Signal::Logs, Encoding::Json, b"{\"resourceLogs\":7}", "r").is_err());
    }

    #[test]
    fn log_records_carry_envelopes_and_jsonrpc_messages() {
        let envelope = r#"{"ts":"2026-11-29T10:00:00Z","server_id":"srv","direction":"c2s","message":{"jsonrpc":"2.0","id":1,"method":"ping"}}"#;
        let req = json!({"resourceLogs":[{"resource":{"attributes":[
          {"key":"service.name","value":{"stringValue":"gw"}}]},
        "scopeLogs":[{"logRecords":[
          {"timeUnixNano":"1796000000000000000","body":{"stringValue":envelope}},
          {"timeUnixNano":"1796000001000000000",
           "body":{"stringValue":"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[]}}"},
           "attributes":[{"key":"mcp.method.name","value":{"stringValue":"tools/list"}},
             {"key":"mcp.session.id","value":{"stringValue":"s-9"}}],
           "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"},
          {"observedTimeUnixNano":"1796000002000000000",
           "body":{"kvlistValue":{"values":[
             {"key":"jsonrpc","value":{"stringValue":"2.0"}},
             {"key":"id","value":{"intValue":"4"}},
             {"key":"method","value":{"stringValue":"sampling/createMessage"}}]}}},
          {"timeUnixNano":"1796000003000000000","body":{"stringValue":"GET /healthz 200"}},
          {"timeUnixNano":"1796000003000000000"},
          {"body":{"stringValue":"{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}"}}
        ]}]}]});
        let body = serde_json::to_vec(&req).expect("json");
        let m = map_request(Signal::Logs, Encoding::Json, &body, "r2").expect("valid");
        // The envelope passes through byte for byte.
        assert_eq!(m.records[0].bytes, envelope.as_bytes());
        assert_eq!(
            m.ignored, 2,
            "plain text and an empty body are other logging"
        );
        assert_eq!(m.refused_items, 1, "a JSON-RPC body without any time");
        insta::assert_snapshot!(lines(&m));
    }

    #[test]
    fn responses_are_otlp_messages_in_the_request_encoding() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse as L;
        let ok = response(Signal::Traces, Encoding::Protobuf, 0, "");
        let r = ExportTraceServiceResponse::decode(&ok[..]).expect("protobuf");
        assert!(r.partial_success.is_none());
        let partial = response(Signal::Logs, Encoding::Json, 2, "2 dead-lettered");
        let r: L = serde_json::from_slice(&partial).expect("json");
        let p = r.partial_success.expect("partial success");
        assert_eq!(
            (p.rejected_log_records, p.error_message.as_str()),
            (2, "2 dead-lettered")
        );
        assert_eq!(
            Encoding::from_content_type("application/x-protobuf; charset=binary"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            Encoding::from_content_type("application/json"),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }
}
