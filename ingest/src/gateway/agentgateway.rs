//! agentgateway request logs (crate `agentgateway`, `telemetry/log.rs`): one record per
//! proxied HTTP request, written as text
//! `<RFC 3339 time>\t<level>\trequest gateway=… src.addr=… http.status=… protocol=mcp
//! mcp.method=tools/call mcp.target=… mcp.resource.type=tool mcp.resource.name=… …`
//! (values in Display form, `error` JSON-quoted) or, with `LOG_FORMAT=json`, as one JSON
//! object with `level`, `time`, `scope` and the same keys.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{GatewayRequest, host_of, primitive_params};

type Fields = BTreeMap<String, String>;

pub(super) fn map(text: &str) -> Result<Option<GatewayRequest>, String> {
    let (time, scope, f) = if text.starts_with('{') {
        let obj: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        let f: Fields = obj
            .into_iter()
            .filter_map(|(k, v)| scalar(v).map(|s| (k, s)))
            .collect();
        let time = f
            .get("time")
            .cloned()
            .ok_or("JSON record without \"time\"")?;
        let scope = f.get("scope").cloned().unwrap_or_default();
        (time, scope, f)
    } else {
        let mut parts = text.splitn(3, '\t');
        let (Some(time), Some(_level), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(
                "expected `<time>\\t<level>\\t<target> key=value …` or a JSON object".into(),
            );
        };
        let (scope, kv) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
        if scope != "request" {
            // The gateway's own logs (`<target>\t<message> k=v …`).
            return Ok(None);
        }
        (time.to_string(), scope.to_string(), text_fields(kv)?)
    };
    if scope != "request" {
        return Ok(None);
    }
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some("mcp"), Some(method)) = (get("protocol"), get("mcp.method")) else {
        return Ok(None);
    };
    chrono::DateTime::parse_from_rfc3339(&time)
        .map_err(|e| format!("time {time:?} is not RFC 3339: {e}"))?;
    let server_id = get("mcp.target")
        .or(get("route"))
        .or(get("http.host"))
        .ok_or("MCP request without mcp.target, route or http.host (no server identity)")?;
    let path = get("http.path").unwrap_or("");
    let transport = if path.ends_with("/sse") || path.contains("/message") {
        "sse"
    } else {
        "streamable_http"
    };
    let mut http = Map::new();
    if let Some(m) = get("http.method") {
        http.insert("method".into(), json!(m));
    }
    if let Some(s) = get("http.status") {
        let s: u16 = s
            .parse()
            .map_err(|_| format!("http.status {s:?} is not an HTTP status code"))?;
        http.insert("status".into(), json!(s));
    }
    if let Some(a) = get("src.addr") {
        http.insert("src_ip".into(), json!(host_of(a)));
    }
    if let Some(h) = get("http.host") {
        http.insert("host".into(), json!(h));
    }
    let mut auth = Map::new();
    if let Some(sub) = get("jwt.sub") {
        auth.insert("sub".into(), json!(sub));
    }
    let mut labels = Map::new();
    for (key, label) in [
        ("route", "agentgateway_route"),
        ("listener", "agentgateway_listener"),
    ] {
        if let Some(v) = get(key) {
            labels.insert(label.into(), json!(v));
        }
    }
    Ok(Some(GatewayRequest {
        ts: time.clone(),
        answered: None,
        server_id: server_id.to_string(),
        gateway_id: get("gateway").or(get("bind")).map(str::to_string),
        session_id: get("mcp.session.id").map(str::to_string),
        transport,
        method: method.to_string(),
        params: primitive_params(method, get("mcp.resource.type"), get("mcp.resource.name")),
        http,
        auth,
        labels,
        error: None,
    }))
}

/// A JSON member as text (strings as they are, numbers and booleans printed); objects,
/// arrays and null are not fields agentgateway writes at the top level.
fn scalar(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `k=v k="json \"quoted\"" …`. A value is written with Display and can hold a space: a
/// word that is not `key=…` continues the previous value.
pub(super) fn text_fields(kv: &str) -> Result<Fields, String> {
    let mut f = Fields::new();
    let mut last: Option<String> = None;
    let mut rest = kv.trim_start();
    while !rest.is_empty() {
        let word_end = rest.find(' ').unwrap_or(rest.len());
        let key = rest[..word_end]
            .split_once('=')
            .map(|(k, _)| k)
            .filter(|k| is_key(k));
        let Some(key) = key else {
            // Continuation of the previous value.
            let Some(prev) = last.as_ref().and_then(|k| f.get_mut(k)) else {
                return Err(format!("expected key=value, found {:?}", &rest[..word_end]));
            };
            prev.push(' ');
            prev.push_str(&rest[..word_end]);
            rest = rest[word_end..].trim_start();
            continue;
        };
        let after = &rest[key.len() + 1..];
        let (value, used) = if after.starts_with('"') {
            let mut it = serde_json::Deserializer::from_str(after).into_iter::<String>();
            match it.next() {
                Some(Ok(s)) => (s, it.byte_offset()),
                _ => return Err(format!("unterminated quoted value of {key}")),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), end)
        };
        f.insert(key.to_string(), value);
        last = Some(key.to_string());
        rest = after[used..].trim_start();
    }
    Ok(f)
}
