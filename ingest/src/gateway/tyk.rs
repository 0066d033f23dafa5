//! Tyk Gateway access logs (`access_logs.enabled = true`, JSON log format): one logrus JSON
//! object per request, `prefix: "access-log"`, with the request fields (`time`, `api_id`,
//! `api_name`, `org_id`, `api_key` — hashed or obfuscated —, `client_ip`, `host`, `method`,
//! `user_agent`, `status`/`status_code`, `total_latency`, `upstream_latency`, …) and, for
//! MCP proxies, `api_type: "mcp"`, `mcp_method`, `mcp_primitive_type`,
//! `mcp_primitive_name` and `mcp_error_code` (the JSON-RPC error the gateway itself
//! answered with: -32001 authentication required, -32002 access denied, -32003 rate limit
//! exceeded, -32004 upstream error, -32600 invalid request, -32603 internal error).

use serde_json::{Map, Value, json};

use super::{GatewayRequest, minus_ms, primitive_params};

pub(super) fn map(text: &str) -> Result<Option<GatewayRequest>, String> {
    if !text.starts_with('{') {
        return Err("expected a JSON object (Tyk's JSON log format: TYK_LOGFORMAT=json)".into());
    }
    let obj: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    if s("prefix") != Some("access-log") {
        return Ok(None);
    }
    let (Some("mcp"), Some(method)) = (s("api_type"), s("mcp_method")) else {
        return Ok(None);
    };
    let time = s("time").ok_or("access-log record without \"time\"")?;
    chrono::DateTime::parse_from_rfc3339(time)
        .map_err(|e| format!("time {time:?} is not RFC 3339: {e}"))?;
    let server_id = s("api_id")
        .or(s("api_name"))
        .ok_or("MCP access-log record without api_id or api_name (no server identity)")?;
    // `time` is when the record was written, after the answer: the request arrived
    // `total_latency` ms earlier.
    let latency = obj.get("total_latency").and_then(Value::as_f64);
    let arrived = latency.and_then(|ms| minus_ms(time, ms));
    let mut http = Map::new();
    if let Some(m) = s("method") {
        http.insert("method".into(), json!(m));
    }
    if let Some(st) = obj.get("status").or(obj.get("status_code")) {
        let st = st
            .as_u64()
            .filter(|v| (100..=999).contains(v))
            .ok_or_else(|| format!("status {st} is not an HTTP status code"))?;
        http.insert("status".into(), json!(st));
    }
    if let Some(ip) = s("client_ip") {
        http.insert("src_ip".into(), json!(ip));
    }
    if let Some(ua) = s("user_agent") {
        http.insert("user_agent".into(), json!(ua));
    }
    if let Some(h) = s("host") {
        http.insert("host".into(), json!(h));
    }
    let mut auth = Map::new();
    // With hash_keys (Tyk's default) `api_key` is a hex hash of the key: a token
    // fingerprint. An obfuscated key (`****abcd`) identifies nobody and is not used.
    if let Some(k) =
        s("api_key").filter(|k| k.len() >= 8 && k.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        auth.insert("token_fp".into(), json!(k.to_ascii_lowercase()));
    }
    let mut labels = Map::new();
    for (key, label) in [("api_name", "tyk_api_name"), ("org_id", "tyk_org_id")] {
        if let Some(v) = s(key) {
            labels.insert(label.into(), json!(v));
        }
    }
    let error = match obj.get("mcp_error_code") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let code = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
                .ok_or_else(|| format!("mcp_error_code {v} is not an integer"))?;
            Some((code, error_meaning(code).to_string()))
        }
    };
    Ok(Some(GatewayRequest {
        ts: arrived.unwrap_or_else(|| time.to_string()),
        answered: Some(time.to_string()),
        server_id: server_id.to_string(),
        gateway_id: Some("tyk".into()),
        session_id: None,
        transport: "streamable_http",
        method: method.to_string(),
        params: primitive_params(method, s("mcp_primitive_type"), s("mcp_primitive_name")),
        http,
        auth,
        labels,
        error,
    }))
}

/// Tyk's documented meaning of its gateway-side JSON-RPC error codes.
fn error_meaning(code: i64) -> &'static str {
    match code {
        -32001 => "Authentication required",
        -32002 => "Access denied",
        -32003 => "Rate limit exceeded",
        -32004 => "Upstream error",
        -32600 => "Invalid request",
        -32603 => "Internal error",
        _ => "Gateway error",
    }
}
