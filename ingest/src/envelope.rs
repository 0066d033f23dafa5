//! Envelope parsing and validation (see the contract
//! `docs/contract/mcp-log-envelope.md`).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// A validated envelope.
#[derive(Debug, Default)]
pub(crate) struct Envelope {
    pub ts_micros: i64,
    pub event_id: Option<String>,
    pub server_id: String,
    pub direction: &'static str,
    pub transport: Option<&'static str>,
    pub session_id: Option<String>,
    pub gateway_id: Option<String>,
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub http: Option<Http>,
    pub auth: Option<Auth>,
    pub labels: Option<Vec<(String, String)>>,
    /// Unknown top-level fields, in input order.
    pub extra: Vec<(String, Value)>,
    pub message: Value,
}

#[derive(Debug, Default)]
pub(crate) struct Http {
    pub method: Option<String>,
    pub status: Option<i32>,
    pub src_ip: Option<String>,
    pub user_agent: Option<String>,
    pub origin: Option<String>,
    pub host: Option<String>,
    pub hdr_protocol_version: Option<String>,
    pub hdr_mcp_method: Option<String>,
    pub hdr_mcp_name: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Auth {
    pub sub: Option<String>,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Option<String>,
    pub exp: Option<i64>,
    pub token_fp: Option<String>,
    pub aud_ok: Option<bool>,
}

/// Top-level keys, recognised without allocating.
enum Key {
    Ts,
    EventId,
    ServerId,
    Direction,
    Transport,
    SessionId,
    GatewayId,
    Server,
    Client,
    Http,
    Auth,
    Labels,
    Message,
    Other(String),
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KV;
        impl Visitor<'_> for KV {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "ts" => Key::Ts,
                    "event_id" => Key::EventId,
                    "server_id" => Key::ServerId,
                    "direction" => Key::Direction,
                    "transport" => Key::Transport,
                    "session_id" => Key::SessionId,
                    "gateway_id" => Key::GatewayId,
                    "server" => Key::Server,
                    "client" => Key::Client,
                    "http" => Key::Http,
                    "auth" => Key::Auth,
                    "labels" => Key::Labels,
                    "message" => Key::Message,
                    other => Key::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(KV)
    }
}

/// The envelope as parsed, before validation: each known field as a JSON value.
#[derive(Default)]
struct RawEnvelope {
    ts: Option<Value>,
    event_id: Option<Value>,
    server_id: Option<Value>,
    direction: Option<Value>,
    transport: Option<Value>,
    session_id: Option<Value>,
    gateway_id: Option<Value>,
    server: Option<Value>,
    client: Option<Value>,
    http: Option<Value>,
    auth: Option<Value>,
    labels: Option<Value>,
    message: Option<Value>,
    extra: Vec<(String, Value)>,
}

/// Either an object (parsed as a raw envelope) or the JSON type found instead.
enum Top {
    Object(Box<RawEnvelope>),
    NotObject(&'static str),
}

impl<'de> de::Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TV;
        impl<'de> Visitor<'de> for TV {
            type Value = Top;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
                Ok(Top::NotObject("boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
                Ok(Top::NotObject("number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
                Ok(Top::NotObject("number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
                Ok(Top::NotObject("number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Top, E> {
                Ok(Top::NotObject("string"))
            }
            fn visit_unit<E>(self) -> Result<Top, E> {
                Ok(Top::NotObject("null"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Top::NotObject("array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                let mut r = RawEnvelope::default();
                while let Some(k) = map.next_key::<Key>()? {
                    let slot = match k {
                        Key::Ts => &mut r.ts,
                        Key::EventId => &mut r.event_id,
                        Key::ServerId => &mut r.server_id,
                        Key::Direction => &mut r.direction,
                        Key::Transport => &mut r.transport,
                        Key::SessionId => &mut r.session_id,
                        Key::GatewayId => &mut r.gateway_id,
                        Key::Server => &mut r.server,
                        Key::Client => &mut r.client,
                        Key::Http => &mut r.http,
                        Key::Auth => &mut r.auth,
                        Key::Labels => &mut r.labels,
                        Key::Message => &mut r.message,
                        Key::Other(name) => {
                            let v = map.next_value::<Value>()?;
                            // a repeated unknown key: last one wins, as for known keys
                            r.extra.retain(|(n, _)| *n != name);
                            r.extra.push((name, v));
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Value>()?);
                }
                Ok(Top::Object(Box::new(r)))
            }
        }
        d.deserialize_any(TV)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected(field: &str, what: &str, got: &Value) -> String {
    format!("field \"{field}\": expected {what}, got {}", type_name(got))
}

fn string_field(field: &str, v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(expected(field, "string", &other)),
    }
}

fn bounded_string(field: &str, v: Value, min: usize, max: usize) -> Result<String, String> {
    let s = string_field(field, v)?;
    // lengths are in chars (JSON Schema counts code points); bytes >= chars,
    // so a short byte length needs no counting
    let n = if s.len() <= max && s.len() >= min.max(1) {
        return Ok(s);
    } else {
        s.chars().count()
    };
    if n < min {
        return Err(if min == 1 {
            format!("field \"{field}\": must not be empty")
        } else {
            format!("field \"{field}\": length {n} below minimum {min}")
        });
    }
    if n > max {
        return Err(format!(
            "field \"{field}\": length {n} exceeds maximum {max}"
        ));
    }
    Ok(s)
}

fn enum_field(
    field: &str,
    v: Value,
    allowed: &[&'static str],
    listing: &str,
) -> Result<&'static str, String> {
    let s = match v {
        Value::String(s) => s,
        other => return Err(expected(field, listing, &other)),
    };
    allowed.iter().find(|a| **a == s).copied().ok_or_else(|| {
        format!(
            "field \"{field}\": expected {listing}, got {}",
            Value::String(s)
        )
    })
}

fn object_field(field: &str, v: Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(expected(field, "object", &other)),
    }
}

fn opt_str(m: &mut Map<String, Value>, parent: &str, key: &str) -> Result<Option<String>, String> {
    match m.remove(key) {
        None => Ok(None),
        Some(v) => string_field(&format!("{parent}.{key}"), v).map(Some),
    }
}

fn opt_int(m: &mut Map<String, Value>, parent: &str, key: &str) -> Result<Option<i64>, String> {
    match m.remove(key) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::Number(n)) if n.is_u64() => Err(format!(
            "field \"{parent}.{key}\": integer {n} out of range"
        )),
        Some(other) => Err(expected(&format!("{parent}.{key}"), "integer", &other)),
    }
}

fn implementation(field: &str, v: Value) -> Result<(Option<String>, Option<String>), String> {
    let mut m = object_field(field, v)?;
    Ok((
        opt_str(&mut m, field, "name")?,
        opt_str(&mut m, field, "version")?,
    ))
}

fn string_map(field: &str, v: Value) -> Result<Vec<(String, String)>, String> {
    let m = object_field(field, v)?;
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        match v {
            Value::String(s) => out.push((k, s)),
            other => {
                return Err(expected(&format!("{field}.{k}"), "string", &other));
            }
        }
    }
    Ok(out)
}

fn http(v: Value) -> Result<Http, String> {
    let mut m = object_field("http", v)?;
    let status = match opt_int(&mut m, "http", "status")? {
        None => None,
        Some(s) => Some(
            i32::try_from(s)
                .map_err(|_| format!("field \"http.status\": integer {s} out of range"))?,
        ),
    };
    let mut h = Http {
        method: opt_str(&mut m, "http", "method")?,
        status,
        src_ip: opt_str(&mut m, "http", "src_ip")?,
        user_agent: opt_str(&mut m, "http", "user_agent")?,
        origin: opt_str(&mut m, "http", "origin")?,
        host: opt_str(&mut m, "http", "host")?,
        ..Http::default()
    };
    if let Some(hv) = m.remove("headers") {
        for (k, v) in string_map("http.headers", hv)? {
            // header names are case-insensitive; the contract asks for lower case
            let slot = if k.eq_ignore_ascii_case("mcp-protocol-version") {
                &mut h.hdr_protocol_version
            } else if k.eq_ignore_ascii_case("mcp-method") {
                &mut h.hdr_mcp_method
            } else if k.eq_ignore_ascii_case("mcp-name") {
                &mut h.hdr_mcp_name
            } else {
                continue;
            };
            *slot = Some(v);
        }
    }
    Ok(h)
}

fn auth(v: Value) -> Result<Auth, String> {
    let mut m = object_field("auth", v)?;
    let aud_ok = match m.remove("aud_ok") {
        None => None,
        Some(Value::Bool(b)) => Some(b),
        Some(other) => return Err(expected("auth.aud_ok", "boolean", &other)),
    };
    Ok(Auth {
        sub: opt_str(&mut m, "auth", "sub")?,
        iss: opt_str(&mut m, "auth", "iss")?,
        aud: opt_str(&mut m, "auth", "aud")?,
        client_id: opt_str(&mut m, "auth", "client_id")?,
        scopes: opt_str(&mut m, "auth", "scopes")?,
        exp: opt_int(&mut m, "auth", "exp")?,
        token_fp: opt_str(&mut m, "auth", "token_fp")?,
        aud_ok,
    })
}

fn missing(f: &str) -> String {
    format!("missing required field \"{f}\"")
}

/// Parses RFC 3339 with an explicit offset (`Z` or `±hh:mm`) to µs since the epoch.
pub(crate) fn parse_ts(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // chrono also accepts a space separator; RFC 3339 allows it, but require
    // the full date-time shape (seconds included) and an offset.
    if b.len() < 20 {
        return None;
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|dt| dt.timestamp_micros())
}

/// Parses and validates one envelope. `Err` is the human-readable rejection reason.
pub(crate) fn parse(text: &str) -> Result<Envelope, String> {
    let top: Top = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let r = match top {
        Top::Object(r) => *r,
        Top::NotObject(t) => return Err(format!("envelope must be a JSON object, got {t}")),
    };
    let ts_s = string_field("ts", r.ts.ok_or_else(|| missing("ts"))?)?;
    let server_id = bounded_string(
        "server_id",
        r.server_id.ok_or_else(|| missing("server_id"))?,
        1,
        256,
    )?;
    let direction = enum_field(
        "direction",
        r.direction.ok_or_else(|| missing("direction"))?,
        &["c2s", "s2c"],
        "\"c2s\" or \"s2c\"",
    )?;
    let message = r.message.ok_or_else(|| missing("message"))?;
    if !matches!(message, Value::Object(_) | Value::Array(_)) {
        return Err(expected("message", "object or array", &message));
    }
    let ts_micros = parse_ts(&ts_s).ok_or_else(|| {
        format!(
            "field \"ts\": not RFC 3339 with offset: {}",
            Value::String(ts_s.clone())
        )
    })?;
    let mut env = Envelope {
        ts_micros,
        server_id,
        direction,
        message,
        extra: r.extra,
        ..Envelope::default()
    };
    if let Some(v) = r.event_id {
        env.event_id = Some(bounded_string("event_id", v, 1, 128)?);
    }
    if let Some(v) = r.transport {
        env.transport = Some(enum_field(
            "transport",
            v,
            &["stdio", "streamable_http", "sse"],
            "\"stdio\", \"streamable_http\" or \"sse\"",
        )?);
    }
    if let Some(v) = r.session_id {
        env.session_id = Some(bounded_string("session_id", v, 0, 256)?);
    }
    if let Some(v) = r.gateway_id {
        env.gateway_id = Some(bounded_string("gateway_id", v, 0, 256)?);
    }
    if let Some(v) = r.server {
        (env.server_name, env.server_version) = implementation("server", v)?;
    }
    if let Some(v) = r.client {
        (env.client_name, env.client_version) = implementation("client", v)?;
    }
    if let Some(v) = r.http {
        env.http = Some(http(v)?);
    }
    if let Some(v) = r.auth {
        env.auth = Some(auth(v)?);
    }
    if let Some(v) = r.labels {
        env.labels = Some(string_map("labels", v)?);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str =
        r#"{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"c2s","message":{}}"#;

    fn reason(line: &str) -> String {
        match parse(line) {
            Ok(_) => "accepted".into(),
            Err(e) => e,
        }
    }

    fn with(field: &str, json: &str) -> String {
        let mut v: Map<String, Value> = serde_json::from_str(OK).unwrap_or_default();
        v.insert(
            field.into(),
            serde_json::from_str(json).unwrap_or(Value::Null),
        );
        reason(&serde_json::to_string(&v).unwrap_or_default())
    }

    #[test]
    fn minimal_ok() {
        let e = parse(OK).expect("ok");
        assert_eq!(e.ts_micros, 1_795_161_600_000_000);
        assert_eq!(e.direction, "c2s");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            reason("{"),
            "invalid JSON: EOF while parsing an object at line 1 column 1"
        );
        assert_eq!(reason("[1]"), "envelope must be a JSON object, got array");
        assert_eq!(reason("42"), "envelope must be a JSON object, got number");
        assert_eq!(
            reason(r#"{"server_id":"s","direction":"c2s","message":{}}"#),
            "missing required field \"ts\""
        );
        assert_eq!(
            reason(r#"{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"c2s"}"#),
            "missing required field \"message\""
        );
        assert_eq!(
            with("direction", r#""up""#),
            "field \"direction\": expected \"c2s\" or \"s2c\", got \"up\""
        );
        assert_eq!(
            with("direction", "1"),
            "field \"direction\": expected \"c2s\" or \"s2c\", got integer"
        );
        assert_eq!(
            with("ts", r#""2026-11-20 08:00""#),
            "field \"ts\": not RFC 3339 with offset: \"2026-11-20 08:00\""
        );
        assert_eq!(
            with("ts", r#""2026-11-20T08:00:00""#),
            "field \"ts\": not RFC 3339 with offset: \"2026-11-20T08:00:00\""
        );
        assert_eq!(
            with("ts", "1"),
            "field \"ts\": expected string, got integer"
        );
        assert_eq!(
            with("message", r#""hi""#),
            "field \"message\": expected object or array, got string"
        );
        assert_eq!(
            with("server_id", r#""""#),
            "field \"server_id\": must not be empty"
        );
        assert_eq!(
            with("event_id", &format!("\"{}\"", "x".repeat(129))),
            "field \"event_id\": length 129 exceeds maximum 128"
        );
        assert_eq!(
            with("event_id", &format!("\"{}\"", "é".repeat(128))),
            "accepted"
        );
        assert_eq!(
            with("session_id", &format!("\"{}\"", "x".repeat(257))),
            "field \"session_id\": length 257 exceeds maximum 256"
        );
        assert_eq!(
            with("session_id", "null"),
            "field \"session_id\": expected string, got null"
        );
        assert_eq!(
            with("transport", r#""grpc""#),
            "field \"transport\": expected \"stdio\", \"streamable_http\" or \"sse\", got \"grpc\""
        );
        assert_eq!(
            with("http", r#"{"status":"200"}"#),
            "field \"http.status\": expected integer, got string"
        );
        assert_eq!(
            with("http", r#"{"status":200.5}"#),
            "field \"http.status\": expected integer, got number"
        );
        assert_eq!(
            with("http", r#"{"status":99999999999}"#),
            "field \"http.status\": integer 99999999999 out of range"
        );
        assert_eq!(
            with("http", r#"{"headers":{"mcp-method":1}}"#),
            "field \"http.headers.mcp-method\": expected string, got integer"
        );
        assert_eq!(
            with("auth", r#"{"exp":"soon"}"#),
            "field \"auth.exp\": expected integer, got string"
        );
        assert_eq!(
            with("auth", r#"{"aud_ok":"yes"}"#),
            "field \"auth.aud_ok\": expected boolean, got string"
        );
        assert_eq!(
            with("labels", r#"{"env":1}"#),
            "field \"labels.env\": expected string, got integer"
        );
        assert_eq!(
            with("labels", r#"[]"#),
            "field \"labels\": expected object, got array"
        );
        assert_eq!(
            with("server", r#"{"name":false}"#),
            "field \"server.name\": expected string, got boolean"
        );
        assert_eq!(with("zzz_unknown", r#"{"a":1}"#), "accepted");
    }

    #[test]
    fn offsets_accepted() {
        for ts in [
            "2026-11-20T08:00:00+02:00",
            "2026-11-20T08:00:00.123456Z",
            "2026-11-20t08:00:00z",
        ] {
            assert!(parse_ts(ts).is_some(), "{ts}");
        }
        assert_eq!(
            parse_ts("2026-11-20T10:00:00+02:00"),
            parse_ts("2026-11-20T08:00:00Z")
        );
    }

    #[test]
    fn unknown_fields_kept() {
        let e = parse(r#"{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"s2c","message":[],"x":1,"y":{"z":true}}"#)
            .expect("ok");
        assert_eq!(e.extra.len(), 2);
        assert_eq!(e.extra[0].0, "x");
    }
}
