//! Session stitching for stateless MCP (revision 2026-07-28: no `initialize`, no
//! `Mcp-Session-Id`): a message without a session id gets a derived one, so windows,
//! sequences, baselines and the anomaly model keep seeing sessions.
//!
//! * The **party** of a message: server, principal (`auth.sub`, else `auth.client_id`, else
//!   `auth.token_fp`, else the HTTP source address) and client (`clientInfo` name and version
//!   from the request's `params._meta`, else the envelope's `client`).
//! * A request or notification that carries a W3C `traceparent` in `params._meta` belongs to
//!   the session `st-` + BLAKE3(party, trace id): one agent run, one trace — deterministic,
//!   so a restart or a replay derives the same id.
//! * Without a trace, the party's current session continues while it is active; after
//!   `gap` of event time without a message a new one starts (`st-` + BLAKE3(party, time of
//!   its first message)).
//! * A response takes the session of its request (same party and JSON-RPC id, within the
//!   pending-request TTL); an unmatched one the party's current session, if any.
//!
//! Documented in `docs/schema.md#session-stitching`.

use std::collections::HashMap;

use crate::json::Json;

/// Derived session ids of stateless traffic.
#[derive(Debug)]
pub(crate) struct Stitcher {
    gap_micros: i64,
    ttl_micros: i64,
    max: usize,
    /// party → (current session, event time of its last message).
    current: HashMap<String, (String, i64)>,
    /// party + request id → (session, request time).
    requests: HashMap<String, (String, i64)>,
}

fn derived(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    format!("st-{}", &h.finalize().to_hex()[..24])
}

/// The W3C trace id of a `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed and
/// not all zeros.
fn trace_id(tp: &str) -> Option<&str> {
    let mut it = tp.split('-');
    let (_ver, trace) = (it.next()?, it.next()?);
    (trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace.bytes().any(|b| b != b'0'))
    .then_some(trace)
}

impl Stitcher {
    pub(crate) fn new(gap_ms: i64, ttl_ms: i64, max: usize) -> Self {
        Stitcher {
            gap_micros: gap_ms.saturating_mul(1000),
            ttl_micros: ttl_ms.saturating_mul(1000),
            max: max.max(1),
            current: HashMap::new(),
            requests: HashMap::new(),
        }
    }

    /// The session of one message without a session id. `party` identifies server,
    /// principal and client, `login` the bearer token (the party's login, for untraced
    /// traffic only); `message` is the (first) JSON-RPC message.
    pub(crate) fn session(
        &mut self,
        party: &str,
        login: &str,
        message: &Json<'_>,
        ts: i64,
    ) -> String {
        let run = format!("{party}\u{0}{login}");
        if self.current.len() > self.max {
            let gap = self.gap_micros;
            self.current.retain(|_, (_, last)| ts - *last <= gap);
        }
        if self.requests.len() > self.max {
            let ttl = self.ttl_micros;
            self.requests.retain(|_, (_, at)| ts - *at <= ttl);
        }
        let id = crate::normalize::id_text(message);
        let is_call = message.get("method").is_some();
        if !is_call {
            // A response: its request's session, else the party's current one.
            if let Some(id) = &id
                && let Some((s, at)) = self.requests.remove(&format!("{party}\u{0}{id}"))
                && ts - at <= self.ttl_micros
            {
                return s;
            }
            if let Some((s, last)) = self.current.get_mut(&run)
                && ts - *last <= self.gap_micros
            {
                *last = ts;
                return s.clone();
            }
            return derived(&[&run, &ts.to_string()]);
        }
        let meta = message.get("params").and_then(|p| p.get("_meta"));
        let trace = meta
            .and_then(|m| m.get("traceparent"))
            .and_then(Json::as_str)
            .and_then(trace_id);
        let session = match trace {
            Some(t) => derived(&[party, t]),
            None => {
                let s = match self.current.get(&run) {
                    Some((s, last)) if ts - *last <= self.gap_micros => s.clone(),
                    _ => derived(&[&run, &ts.to_string()]),
                };
                self.touch(&run, &s, ts);
                s
            }
        };
        if let Some(id) = id {
            self.requests
                .insert(format!("{party}\u{0}{id}"), (session.clone(), ts));
        }
        session
    }

    fn touch(&mut self, run: &str, session: &str, ts: i64) {
        match self.current.get_mut(run) {
            Some((s, last)) => {
                if s != session {
                    *s = session.to_string();
                }
                *last = ts;
            }
            None => {
                self.current
                    .insert(run.to_string(), (session.to_string(), ts));
            }
        }
    }
}

/// Client name and version a stateless request announces in `params._meta`
/// (`clientInfo`, or `io.modelcontextprotocol/clientInfo`).
pub(crate) fn meta_client<'a>(message: &'a Json<'a>) -> Option<(&'a str, &'a str)> {
    let meta = message.get("params")?.get("_meta")?;
    let ci = meta
        .get("clientInfo")
        .or_else(|| meta.get("io.modelcontextprotocol/clientInfo"))?;
    Some((
        ci.get("name").and_then(Json::as_str).unwrap_or(""),
        ci.get("version").and_then(Json::as_str).unwrap_or(""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Json<'static> {
        crate::json::parse(Box::leak(text.to_string().into_boxed_str())).expect("json")
    }

    const MIN: i64 = 60_000_000;

    #[test]
    fn traces_gaps_and_responses() {
        let mut s = Stitcher::new(30 * 60_000, 5 * 60_000, 1000);
        let tp = |t: &str| {
            msg(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{{"traceparent":"00-{t}-00f067aa0ba902b7-01"}}}}}}"#
            ))
        };
        let t1 = "4bf92f3577b34da6a3ce929d0e0e4736";
        let t2 = "5bf92f3577b34da6a3ce929d0e0e4736";
        let a = s.session("p", "", &tp(t1), 0);
        assert!(a.starts_with("st-"));
        // Same trace, much later: same session (the trace is the run).
        assert_eq!(s.session("p", "", &tp(t1), 90 * MIN), a);
        // Another trace of the same party: another session; another party: another one.
        let b = s.session("p", "", &tp(t2), 91 * MIN);
        assert_ne!(a, b);
        assert_ne!(s.session("q", "", &tp(t1), 91 * MIN), a);
        // The response (id 1) follows its request's session, not the party's latest.
        let resp = msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(s.session("q", "", &resp, 91 * MIN + 1), derived(&["q", t1]));
        // Deterministic: a new stitcher derives the same id from the same trace.
        assert_eq!(Stitcher::new(1, 1, 1).session("p", "", &tp(t1), 5), a);

        // Without traces: one session while active, a new one after the gap.
        let plain = msg(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#);
        let c = s.session("r", "", &plain, 0);
        assert_eq!(s.session("r", "", &plain, 29 * MIN), c);
        assert_eq!(
            s.session("r", "", &plain, 58 * MIN),
            c,
            "the gap counts from the last message"
        );
        let d = s.session("r", "", &plain, 89 * MIN);
        assert_ne!(c, d);
        // A malformed or all-zero trace id counts as none.
        let zero = tp("00000000000000000000000000000000");
        assert_eq!(s.session("r", "", &zero, 90 * MIN), d);
    }

    #[test]
    fn client_info_from_meta() {
        let m = msg(
            r#"{"method":"tools/list","params":{"_meta":{"protocolVersion":"2026-07-28","clientInfo":{"name":"agent","version":"2.1"}}}}"#,
        );
        assert_eq!(meta_client(&m), Some(("agent", "2.1")));
        assert_eq!(meta_client(&msg(r#"{"method":"ping"}"#)), None);
    }
}
