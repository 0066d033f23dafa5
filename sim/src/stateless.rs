//! Stateless MCP (revision 2026-07-28): a generated session rewritten the way such a client
//! speaks — no `initialize` handshake, no `Mcp-Session-Id`, client information, protocol
//! version and W3C trace context in every request's `params._meta`, `Mcp-Method` /
//! `Mcp-Name` headers mirroring the body. One session = one agent run = one trace, except
//! a quarter of the sessions whose client propagates no trace context.

use serde_json::{Map, Value, json};

use crate::Scenario;
use crate::session::Spec;

/// The revision without sessions.
pub const STATELESS_REVISION: &str = "2026-07-28";

/// Whether the client of a session propagates W3C trace context (three in four do).
fn traced(seed: u64) -> bool {
    !seed.is_multiple_of(4)
}

/// The session as a stateless client lives it, before it is generated.
///
/// `session_hijack`'s third variant is an attacker on another host, with another user
/// agent and his own token, who replays the victim's session id. Without session ids and
/// without trace context there is nothing of the victim's to replay: such a request is
/// simply another user's. What can be taken over without sessions is the victim's
/// connection (first variant), the victim's bearer token (second variant) or the
/// victim's trace (any variant, when the client propagates one). So an untraced client's
/// hijack of the third kind becomes the second: the victim's token used from another
/// host.
pub(crate) fn adapt(spec: &mut Spec) {
    if spec.label == Scenario::SessionHijack && !traced(spec.seed) && spec.variant % 3 == 2 {
        spec.variant -= 1;
    }
}

/// Rewrite one session's envelopes (each `(ts, envelope JSON without its leading '{')`).
pub(crate) fn convert(events: Vec<(i64, String)>, seed: u64) -> Vec<(i64, String)> {
    let h = blake3::hash(&seed.to_le_bytes());
    let hex = h.to_hex();
    let trace = traced(seed).then(|| hex[..32].to_string());
    // ids of the requests left out: their responses go too
    let mut dropped: Vec<Value> = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for (n, (ts, body)) in events.into_iter().enumerate() {
        let Ok(Value::Object(mut env)) = serde_json::from_str::<Value>(&format!("{{{body}")) else {
            out.push((ts, body));
            continue;
        };
        let c2s = env.get("direction").and_then(Value::as_str) == Some("c2s");
        let client = env.get("client").cloned();
        let msg = env.get_mut("message");
        let mut keep = true;
        if let Some(Value::Object(m)) = msg {
            let request_dropped = |m: &Map<String, Value>| {
                matches!(
                    m.get("method").and_then(Value::as_str),
                    Some("initialize" | "logging/setLevel")
                )
            };
            if c2s
                && request_dropped(m)
                && let Some(id) = m.get("id")
            {
                dropped.push(id.clone());
            }
            match m.get("method").and_then(Value::as_str) {
                Some("initialize") => keep = false,
                // Deprecated by 2026-07-28: a conforming client does not send it.
                Some("notifications/initialized" | "logging/setLevel") => keep = false,
                Some(_) => {}
                None => {
                    if dropped.contains(&m.get("id").cloned().unwrap_or(Value::Null)) {
                        keep = false;
                    }
                }
            }
            if keep && c2s && m.get("method").is_some() {
                let span = &hex[32 + (n % 16)..48 + (n % 16)];
                let params = m
                    .entry("params")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(p) = params {
                    let meta = p
                        .entry("_meta")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(meta) = meta {
                        meta.insert("protocolVersion".into(), json!(STATELESS_REVISION));
                        if let Some(c) = &client {
                            meta.insert("clientInfo".into(), c.clone());
                        }
                        if let Some(t) = &trace {
                            meta.insert("traceparent".into(), json!(format!("00-{t}-{span}-01")));
                        }
                    }
                }
            }
        }
        if !keep {
            continue;
        }
        env.remove("session_id");
        // No GET stream any more: every message travels in a POST exchange.
        if env.get("transport").and_then(Value::as_str) == Some("sse") {
            env.insert("transport".into(), json!("streamable_http"));
            if let Some(Value::Object(http)) = env.get_mut("http") {
                http.insert("method".into(), json!("POST"));
            }
        }
        if let Some(Value::Object(http)) = env.get_mut("http")
            && c2s
        {
            let headers = http
                .entry("headers")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(hd) = headers {
                hd.insert("mcp-protocol-version".into(), json!(STATELESS_REVISION));
            }
        }
        if let Ok(text) = serde_json::to_string(&Value::Object(env))
            && let Some(rest) = text.strip_prefix('{')
        {
            out.push((ts, rest.to_string()));
        }
    }
    out
}
