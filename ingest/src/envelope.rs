//! Envelope parsing and validation (see the contract
//! `docs/contract/mcp-log-envelope.md`).

use std::borrow::Cow;

use crate::json::{self, Bump, Json, Members};

type StringPairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// A validated envelope; strings borrow from the input line where they can.
#[derive(Debug, Default)]
pub(crate) struct Envelope<'a> {
    pub ts_micros: i64,
    pub event_id: Option<Cow<'a, str>>,
    pub server_id: Cow<'a, str>,
    pub direction: &'static str,
    pub transport: Option<&'static str>,
    pub session_id: Option<Cow<'a, str>>,
    pub gateway_id: Option<Cow<'a, str>>,
    pub server_name: Option<Cow<'a, str>>,
    pub server_version: Option<Cow<'a, str>>,
    pub client_name: Option<Cow<'a, str>>,
    pub client_version: Option<Cow<'a, str>>,
    pub http: Option<Http<'a>>,
    pub auth: Option<Auth<'a>>,
    pub labels: Option<StringPairs<'a>>,
    /// Unknown top-level members, sorted by key.
    pub extra: Members<'a>,
    pub message: Json<'a>,
}

#[derive(Debug, Default)]
pub(crate) struct Http<'a> {
    pub method: Option<Cow<'a, str>>,
    pub status: Option<i32>,
    pub src_ip: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    pub origin: Option<Cow<'a, str>>,
    pub host: Option<Cow<'a, str>>,
    pub hdr_protocol_version: Option<Cow<'a, str>>,
    pub hdr_mcp_method: Option<Cow<'a, str>>,
    pub hdr_mcp_name: Option<Cow<'a, str>>,
}

#[derive(Debug, Default)]
pub(crate) struct Auth<'a> {
    pub sub: Option<Cow<'a, str>>,
    pub iss: Option<Cow<'a, str>>,
    pub aud: Option<Cow<'a, str>>,
    pub client_id: Option<Cow<'a, str>>,
    pub scopes: Option<Cow<'a, str>>,
    pub exp: Option<i64>,
    pub token_fp: Option<Cow<'a, str>>,
    pub aud_ok: Option<bool>,
}

fn expected(field: &str, what: &str, got: &Json) -> String {
    format!(
        "field \"{field}\": expected {what}, got {}",
        got.type_name()
    )
}

/// A string as JSON text, for quoting input in reasons.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn string_field<'a>(field: &str, v: Json<'a>) -> Result<Cow<'a, str>, String> {
    match v {
        Json::Str(s) => Ok(Cow::Borrowed(s)),
        other => Err(expected(field, "string", &other)),
    }
}

fn bounded_string<'a>(
    field: &str,
    v: Json<'a>,
    min: usize,
    max: usize,
) -> Result<Cow<'a, str>, String> {
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
    v: Json,
    allowed: &[&'static str],
    listing: &str,
) -> Result<&'static str, String> {
    let s = match v {
        Json::Str(s) => s,
        other => return Err(expected(field, listing, &other)),
    };
    allowed
        .iter()
        .find(|a| **a == s)
        .copied()
        .ok_or_else(|| format!("field \"{field}\": expected {listing}, got {}", quoted(s)))
}

fn object_field<'a>(field: &str, v: Json<'a>) -> Result<Members<'a>, String> {
    match v {
        Json::Object(m) => Ok(m),
        other => Err(expected(field, "object", &other)),
    }
}

/// The members named in `names`, taken out of `m` in one pass: slot `i`
/// holds the value of `names[i]` (member keys are unique, as in
/// [`Json::Object`]); other members are dropped. One pass over the few
/// members instead of a binary search and a `Vec::remove` per field.
fn fields<'a, const N: usize>(m: Members<'a>, names: &[&str; N]) -> [Option<Json<'a>>; N] {
    let mut slots: [Option<Json<'a>>; N] = std::array::from_fn(|_| None);
    for (k, v) in m {
        if let Some(i) = names.iter().position(|n| n == k) {
            slots[i] = Some(v.clone());
        }
    }
    slots
}

fn opt_str<'a>(
    v: Option<Json<'a>>,
    parent: &str,
    key: &str,
) -> Result<Option<Cow<'a, str>>, String> {
    match v {
        None => Ok(None),
        Some(Json::Str(s)) => Ok(Some(Cow::Borrowed(s))),
        // the field's name is only spelt out for the rejection reason
        Some(other) => Err(expected(&format!("{parent}.{key}"), "string", &other)),
    }
}

fn opt_int(v: Option<Json>, parent: &str, key: &str) -> Result<Option<i64>, String> {
    match v {
        None => Ok(None),
        Some(Json::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Json::Number(n)) if n.is_u64() => Err(format!(
            "field \"{parent}.{key}\": integer {n} out of range"
        )),
        Some(other) => Err(expected(&format!("{parent}.{key}"), "integer", &other)),
    }
}

type NameVersion<'a> = (Option<Cow<'a, str>>, Option<Cow<'a, str>>);

fn implementation<'a>(field: &str, v: Json<'a>) -> Result<NameVersion<'a>, String> {
    let [name, version] = fields(object_field(field, v)?, &["name", "version"]);
    Ok((
        opt_str(name, field, "name")?,
        opt_str(version, field, "version")?,
    ))
}

fn string_map<'a>(field: &str, v: Json<'a>) -> Result<StringPairs<'a>, String> {
    let m = object_field(field, v)?;
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        match v {
            Json::Str(s) => out.push((Cow::Borrowed(*k), Cow::Borrowed(*s))),
            other => {
                return Err(expected(&format!("{field}.{k}"), "string", other));
            }
        }
    }
    Ok(out)
}

fn http(v: Json) -> Result<Http, String> {
    let [status, method, src_ip, user_agent, origin, host, headers] = fields(
        object_field("http", v)?,
        &[
            "status",
            "method",
            "src_ip",
            "user_agent",
            "origin",
            "host",
            "headers",
        ],
    );
    // Checked in this order, so that the first bad field named is the same
    // whatever the order of the members.
    let status = match opt_int(status, "http", "status")? {
        None => None,
        Some(s) => Some(
            i32::try_from(s)
                .map_err(|_| format!("field \"http.status\": integer {s} out of range"))?,
        ),
    };
    let mut h = Http {
        method: opt_str(method, "http", "method")?,
        status,
        src_ip: opt_str(src_ip, "http", "src_ip")?,
        user_agent: opt_str(user_agent, "http", "user_agent")?,
        origin: opt_str(origin, "http", "origin")?,
        host: opt_str(host, "http", "host")?,
        ..Http::default()
    };
    if let Some(hv) = headers {
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

fn auth(v: Json) -> Result<Auth, String> {
    let [aud_ok, sub, iss, aud, client_id, scopes, exp, token_fp] = fields(
        object_field("auth", v)?,
        &[
            "aud_ok",
            "sub",
            "iss",
            "aud",
            "client_id",
            "scopes",
            "exp",
            "token_fp",
        ],
    );
    let aud_ok = match aud_ok {
        None => None,
        Some(Json::Bool(b)) => Some(b),
        Some(other) => return Err(expected("auth.aud_ok", "boolean", &other)),
    };
    Ok(Auth {
        sub: opt_str(sub, "auth", "sub")?,
        iss: opt_str(iss, "auth", "iss")?,
        aud: opt_str(aud, "auth", "aud")?,
        client_id: opt_str(client_id, "auth", "client_id")?,
        scopes: opt_str(scopes, "auth", "scopes")?,
        exp: opt_int(exp, "auth", "exp")?,
        token_fp: opt_str(token_fp, "auth", "token_fp")?,
        aud_ok,
    })
}

/// The envelope's own members, in the order `parse` destructures them.
const TOP_FIELDS: [&str; 13] = [
    "ts",
    "event_id",
    "server_id",
    "direction",
    "transport",
    "session_id",
    "gateway_id",
    "server",
    "client",
    "http",
    "auth",
    "labels",
    "message",
];

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

/// Parses and validates one envelope, its JSON tree in `arena`. `Err` is
/// the human-readable rejection reason.
pub(crate) fn parse<'a>(text: &'a str, arena: &'a Bump) -> Result<Envelope<'a>, String> {
    let (f, extra) = match json::parse_top(text, &TOP_FIELDS, arena)
        .map_err(|e| format!("invalid JSON: {e}"))?
    {
        json::Top::Object { slots, extra } => (slots, extra),
        json::Top::Other(Json::Number(_)) => {
            return Err("envelope must be a JSON object, got number".into());
        }
        json::Top::Other(other) => {
            return Err(format!(
                "envelope must be a JSON object, got {}",
                other.type_name()
            ));
        }
    };
    let [
        ts,
        event_id,
        server_id,
        direction,
        transport,
        session_id,
        gateway_id,
        server,
        client,
        http_v,
        auth_v,
        labels,
        message,
    ] = f;
    let ts_s = string_field("ts", ts.ok_or_else(|| missing("ts"))?)?;
    let server_id = bounded_string(
        "server_id",
        server_id.ok_or_else(|| missing("server_id"))?,
        1,
        256,
    )?;
    let direction = enum_field(
        "direction",
        direction.ok_or_else(|| missing("direction"))?,
        &["c2s", "s2c"],
        "\"c2s\" or \"s2c\"",
    )?;
    let message = message.ok_or_else(|| missing("message"))?;
    if !matches!(message, Json::Object(_) | Json::Array(_)) {
        return Err(expected("message", "object or array", &message));
    }
    let ts_micros = parse_ts(&ts_s)
        .ok_or_else(|| format!("field \"ts\": not RFC 3339 with offset: {}", quoted(&ts_s)))?;
    let mut env = Envelope {
        ts_micros,
        server_id,
        direction,
        message,
        extra,
        ..Envelope::default()
    };
    if let Some(v) = event_id {
        env.event_id = Some(bounded_string("event_id", v, 1, 128)?);
    }
    if let Some(v) = transport {
        env.transport = Some(enum_field(
            "transport",
            v,
            &["stdio", "streamable_http", "sse"],
            "\"stdio\", \"streamable_http\" or \"sse\"",
        )?);
    }
    if let Some(v) = session_id {
        env.session_id = Some(bounded_string("session_id", v, 0, 256)?);
    }
    if let Some(v) = gateway_id {
        env.gateway_id = Some(bounded_string("gateway_id", v, 0, 256)?);
    }
    if let Some(v) = server {
        (env.server_name, env.server_version) = implementation("server", v)?;
    }
    if let Some(v) = client {
        (env.client_name, env.client_version) = implementation("client", v)?;
    }
    if let Some(v) = http_v {
        env.http = Some(http(v)?);
    }
    if let Some(v) = auth_v {
        env.auth = Some(auth(v)?);
    }
    if let Some(v) = labels {
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
        match parse(line, &Bump::new()) {
            Ok(_) => "accepted".into(),
            Err(e) => e,
        }
    }

    fn with(field: &str, json: &str) -> String {
        use serde_json::{Map, Value};
        let mut v: Map<String, Value> = serde_json::from_str(OK).unwrap_or_default();
        v.insert(
            field.into(),
            serde_json::from_str(json).unwrap_or(Value::Null),
        );
        reason(&serde_json::to_string(&v).unwrap_or_default())
    }

    #[test]
    fn minimal_ok() {
        let arena = Bump::new();
        let e = parse(OK, &arena).expect("ok");
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
        // Several bad fields: the one named is the first in the fixed order
        // of checks, not in the order (or sort order) of the members.
        assert_eq!(
            with("auth", r#"{"token_fp":1,"exp":"x","sub":2,"aud_ok":"y"}"#),
            "field \"auth.aud_ok\": expected boolean, got string"
        );
        assert_eq!(
            with("auth", r#"{"token_fp":1,"exp":"x","sub":2}"#),
            "field \"auth.sub\": expected string, got integer"
        );
        assert_eq!(
            with("http", r#"{"host":1,"method":2,"status":"s"}"#),
            "field \"http.status\": expected integer, got string"
        );
        assert_eq!(
            with("http", r#"{"host":1,"method":2,"headers":{"mcp-name":3}}"#),
            "field \"http.method\": expected string, got integer"
        );
        assert_eq!(
            with("client", r#"{"version":1,"name":2,"x":3}"#),
            "field \"client.name\": expected string, got integer"
        );
        // A repeated member keeps its last value; unknown members are ignored.
        assert_eq!(
            with("auth", r#"{"sub":1,"zz":[],"sub":"alice"}"#),
            "accepted"
        );
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
        let arena = Bump::new();
        let e = parse(r#"{"ts":"2026-11-20T08:00:00Z","server_id":"s","direction":"s2c","message":[],"x":1,"y":{"z":true}}"#, &arena)
            .expect("ok");
        assert_eq!(e.extra.len(), 2);
        assert_eq!(e.extra[0].0, "x");
    }
}
