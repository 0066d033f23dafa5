//! Session stitching for stateless MCP (revision 2026-07-28: no `initialize`, no
//! `Mcp-Session-Id`): a message without a session id gets a derived one, so windows,
//! sequences, baselines and the anomaly model keep seeing sessions.
//!
//! * The **party** of a message: server, principal (`auth.sub`, else `auth.client_id`, else
//!   `auth.token_fp`, else the HTTP source address) and client (`clientInfo` name and version
//!   from the request's `params._meta`, else the envelope's `client`).
//! * A request or notification that carries a W3C `traceparent` in `params._meta` belongs to
//!   the session `st-` + BLAKE3(server, trace id): one agent run, one trace — deterministic,
//!   so a restart or a replay derives the same id. The principal is not part of it: another
//!   principal or client continuing someone's trace continues that session, which is what
//!   session-takeover rules look for.
//! * Without a trace, a client request continues the party's active run (last message at
//!   most `gap` of event time ago) whose JSON-RPC id counter it continues: SDK clients number
//!   their requests 0, 1, 2, … per connection, so a request whose id is just above a run's
//!   last id (same string prefix, at most [`ID_STEP`] higher) is that run's next request —
//!   also when the bearer token was refreshed in between. Otherwise it continues the
//!   most recent active run of the same token whose counter it does not go back on (a
//!   repeated id, a retry or a replay, stays in its run unless it continues another run's
//!   counter; ids that are no counters, such as UUIDs or hashes, never go back); otherwise
//!   it starts a run, `st-` + BLAKE3(party, token, time of its first message).
//! * A client request that would start a run although its counter is not at its start
//!   (id above 0) continues, on the same **connection** (server, HTTP source address, user
//!   agent, client name and version), the run of another party whose last request it
//!   follows (same prefix, at most [`ID_STEP`] higher, within `gap`): one client's counter
//!   is one connection, whoever's token it carries — as one `Mcp-Session-Id` is one
//!   session however its principal changes. Another principal's token on a victim's
//!   connection thus continues the victim's session, where the session-takeover rules see
//!   it. A new user's own client starts its counter at 0 and never continues another's.
//! * Notifications, server-initiated messages and requests with ids that are not counters
//!   join the most recent active run of (party, token), else start one.
//! * A response takes the session of its request (same party and JSON-RPC id, within the
//!   pending-request TTL; the same token preferred, then the oldest); an unmatched one the
//!   party's current run, if any.
//!
//! Documented in `docs/schema.md#session-stitching`.

use std::collections::HashMap;

use crate::json::Json;

/// How far a run's JSON-RPC id counter may jump between two logged requests (ids of
/// requests that were not logged, e.g. a dropped `initialize`, leave gaps).
const ID_STEP: u64 = 4;

/// Runs remembered per party; the least recently active one is forgotten beyond this.
const RUNS_PER_PARTY: usize = 16;

/// Requests remembered per party and JSON-RPC id; the oldest is forgotten beyond this
/// (a sender repeating one id without ever being answered cannot grow the list).
const WAITING_PER_ID: usize = 64;

/// One agent run of a party without trace context.
#[derive(Debug)]
struct Run {
    session: String,
    login: String,
    /// Event time of its last message.
    last: i64,
    /// Its last client request id as (prefix, counter), when the id ends in digits.
    counter: Option<(String, u64)>,
    /// Its last request still waits for its response (a client that awaits each answer
    /// sends its next request only after it).
    open: bool,
}

impl Run {
    fn new(session: String, login: &str, ts: i64) -> Self {
        Run {
            session,
            login: login.to_string(),
            last: ts,
            counter: None,
            open: false,
        }
    }
}

/// The most recent run of `login` active at `ts` (last message at most `gap` before).
fn latest(runs: &[Run], login: &str, ts: i64, gap: i64) -> Option<usize> {
    runs.iter()
        .rposition(|r| ts.saturating_sub(r.last) <= gap && r.login == login)
}

/// The id of a run without trace context that starts at `ts`.
fn fresh(party: &str, login: &str, ts: i64) -> String {
    derived(&[party, login, &ts.to_string()])
}

/// A request waiting for its response.
#[derive(Debug)]
struct Waiting {
    session: String,
    login: String,
    at: i64,
}

/// Who sent a message without a session id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sender<'a> {
    pub(crate) server: &'a str,
    /// Server, principal and client.
    pub(crate) party: &'a str,
    /// The bearer token (the party's login).
    pub(crate) login: &'a str,
    /// Server, HTTP source address, user agent, client name and version; empty when the
    /// envelope has no HTTP source address or user agent (no connection to follow).
    pub(crate) connection: &'a str,
    pub(crate) from_client: bool,
}

/// Derived session ids of stateless traffic.
#[derive(Debug)]
pub(crate) struct Stitcher {
    gap_micros: i64,
    ttl_micros: i64,
    max: usize,
    /// party → its runs, most recently active last.
    runs: HashMap<String, Vec<Run>>,
    /// party + request id → requests waiting for a response, oldest first.
    requests: HashMap<String, Vec<Waiting>>,
    /// Requests waiting in `requests`.
    waiting: usize,
    /// connection → its last client request with a counter.
    connections: HashMap<String, LastRequest>,
    /// Sizes of `runs`, `connections` and `waiting` past which the next message prunes
    /// them: at least `max`, and twice what the last prune left, so that more than `max`
    /// live entries (all within the gap or TTL) do not cost a pass over the map per
    /// message.
    prune_at: [usize; 3],
    /// Passes over a map so far (tests).
    #[cfg(test)]
    prunes: usize,
}

/// The last client request with a counter seen on a connection.
#[derive(Debug)]
struct LastRequest {
    party: String,
    session: String,
    prefix: String,
    n: u64,
    at: i64,
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

/// Whether request counter `(prefix, n)` is the next of a counter last at `(last_prefix,
/// last)`: same text before the digits, at most [`ID_STEP`] higher.
fn follows(last_prefix: &str, last: u64, prefix: &str, n: u64) -> bool {
    last_prefix == prefix && n > last && n - last <= ID_STEP
}

/// A request id as a counter: (text before the trailing digits, their value).
fn counter(id: &str) -> Option<(&str, u64)> {
    let digits = id.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    let (prefix, n) = id.split_at(id.len() - digits);
    Some((prefix, n.parse().ok()?))
}

impl Stitcher {
    pub(crate) fn new(gap_ms: i64, ttl_ms: i64, max: usize) -> Self {
        Stitcher {
            gap_micros: gap_ms.saturating_mul(1000),
            ttl_micros: ttl_ms.saturating_mul(1000),
            max: max.max(1),
            runs: HashMap::new(),
            requests: HashMap::new(),
            waiting: 0,
            connections: HashMap::new(),
            prune_at: [max.max(1); 3],
            #[cfg(test)]
            prunes: 0,
        }
    }

    /// The session of one message without a session id; `message` is the (first) JSON-RPC
    /// message.
    pub(crate) fn session(&mut self, who: Sender<'_>, message: &Json<'_>, ts: i64) -> String {
        let Sender {
            server,
            party,
            login,
            connection,
            from_client,
        } = who;
        self.prune(ts);
        let id = crate::normalize::id_text(message);
        if message.get("method").is_none() {
            return self.response(party, login, id.as_deref(), ts);
        }
        let trace = message
            .get("params")
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get("traceparent"))
            .and_then(Json::as_str)
            .and_then(trace_id)
            .filter(|_| from_client);
        let request_counter = id.as_deref().filter(|_| from_client).and_then(counter);
        let runs = self.runs.entry(party.to_string()).or_default();
        let gap = self.gap_micros;
        let active = |r: &Run| ts.saturating_sub(r.last) <= gap;
        let at = match (trace, request_counter) {
            // One trace, one run: the run's entry is found or made by its session.
            (Some(t), _) => {
                let session = derived(&[server, t]);
                runs.iter().rposition(|r| r.session == session).or_else(|| {
                    runs.push(Run::new(session, login, ts));
                    Some(runs.len() - 1)
                })
            }
            (None, Some((prefix, n))) => {
                let next = runs
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| active(r))
                    .filter_map(|(i, r)| {
                        let (p, last) = r.counter.as_ref()?;
                        follows(p, *last, prefix, n)
                            .then(|| (r.open, n - *last, r.login != login, std::cmp::Reverse(i), i))
                    })
                    .min()
                    .map(|(.., i)| i);
                next.or_else(|| {
                    runs.iter().rposition(|r| {
                        active(r)
                            && r.login == login
                            && r.counter
                                .as_ref()
                                .is_none_or(|(p, last)| p != prefix || n >= *last)
                    })
                })
            }
            (None, None) => latest(runs, login, ts, gap),
        };
        // A counter past its start that continues no run of this party: another party's
        // run on the same connection whose counter it follows.
        let handoff = match (at, trace, request_counter) {
            (None, None, Some((prefix, n))) if n > 0 && !connection.is_empty() => self
                .connections
                .get(connection)
                .filter(|c| {
                    c.party != party
                        && follows(&c.prefix, c.n, prefix, n)
                        && ts.saturating_sub(c.at) <= gap
                })
                .map(|c| c.session.clone()),
            _ => None,
        };
        let i = at.unwrap_or_else(|| {
            let session = handoff.unwrap_or_else(|| fresh(party, login, ts));
            runs.push(Run::new(session, login, ts));
            runs.len() - 1
        });
        let mut run = runs.remove(i);
        run.last = ts;
        if from_client {
            run.login = login.to_string();
        }
        if let Some((prefix, n)) = request_counter {
            run.counter = Some((prefix.to_string(), n));
            run.open = true;
        }
        let session = run.session.clone();
        runs.push(run);
        if runs.len() > RUNS_PER_PARTY {
            runs.remove(0);
        }
        if let (Some((prefix, n)), false) = (request_counter, connection.is_empty()) {
            match self.connections.get_mut(connection) {
                // Most requests follow the connection's last one: reuse its buffers.
                Some(c) => {
                    c.party.clear();
                    c.party.push_str(party);
                    c.session.clone_from(&session);
                    c.prefix.clear();
                    c.prefix.push_str(prefix);
                    c.n = n;
                    c.at = ts;
                }
                None => {
                    self.connections.insert(
                        connection.to_string(),
                        LastRequest {
                            party: party.to_string(),
                            session: session.clone(),
                            prefix: prefix.to_string(),
                            n,
                            at: ts,
                        },
                    );
                }
            }
        }
        if let Some(id) = id {
            let waiting = self
                .requests
                .entry(format!("{party}\u{0}{id}"))
                .or_default();
            if waiting.len() >= WAITING_PER_ID {
                waiting.remove(0);
                self.waiting -= 1;
            }
            waiting.push(Waiting {
                session: session.clone(),
                login: login.to_string(),
                at: ts,
            });
            self.waiting += 1;
        }
        session
    }

    /// The session of a response: its request's, else the party's current run's.
    fn response(&mut self, party: &str, login: &str, id: Option<&str>, ts: i64) -> String {
        if let Some(id) = id {
            let key = format!("{party}\u{0}{id}");
            if let Some(waiting) = self.requests.get_mut(&key) {
                let ttl = self.ttl_micros;
                let before = waiting.len();
                waiting.retain(|w| ts.saturating_sub(w.at) <= ttl);
                let pick = waiting
                    .iter()
                    .position(|w| w.login == login)
                    .or((!waiting.is_empty()).then_some(0));
                let found = pick.map(|i| waiting.remove(i).session);
                let gone = before - waiting.len();
                if waiting.is_empty() {
                    self.requests.remove(&key);
                }
                self.waiting -= gone;
                if let Some(s) = found {
                    if let Some(run) = self
                        .runs
                        .get_mut(party)
                        .and_then(|runs| runs.iter_mut().find(|r| r.session == s))
                    {
                        run.open = false;
                    }
                    return s;
                }
            }
        }
        if let Some(runs) = self.runs.get_mut(party)
            && let Some(i) = latest(runs, login, ts, self.gap_micros)
        {
            runs[i].last = ts;
            return runs[i].session.clone();
        }
        fresh(party, login, ts)
    }

    /// Forgets runs and connections idle for longer than the gap and requests older than
    /// the TTL once a map holds more than `max` entries (and twice what its last prune
    /// left: see `prune_at`). It bounds memory: lookups check the gap and the TTL
    /// themselves (a traced run's session is its trace's, whatever its age), and below
    /// `max` idle entries were always kept until a prune.
    fn prune(&mut self, ts: i64) {
        let [runs_at, connections_at, waiting_at] = self.prune_at;
        let max = self.max;
        let next = move |left: usize| max.max(left.saturating_mul(2));
        if self.runs.len() > runs_at {
            let gap = self.gap_micros;
            self.runs.retain(|_, runs| {
                runs.retain(|r| ts.saturating_sub(r.last) <= gap);
                !runs.is_empty()
            });
            self.prune_at[0] = next(self.runs.len());
            self.count_prune();
        }
        if self.connections.len() > connections_at {
            let gap = self.gap_micros;
            self.connections
                .retain(|_, c| ts.saturating_sub(c.at) <= gap);
            self.prune_at[1] = next(self.connections.len());
            self.count_prune();
        }
        if self.waiting > waiting_at {
            let ttl = self.ttl_micros;
            let mut left = 0;
            self.requests.retain(|_, w| {
                w.retain(|w| ts.saturating_sub(w.at) <= ttl);
                left += w.len();
                !w.is_empty()
            });
            self.waiting = left;
            self.prune_at[2] = next(left);
            self.count_prune();
        }
    }

    fn count_prune(&mut self) {
        #[cfg(test)]
        {
            self.prunes += 1;
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
        let arena: &'static crate::json::Bump = Box::leak(Box::default());
        crate::json::parse(Box::leak(text.to_string().into_boxed_str()), arena).expect("json")
    }

    const MIN: i64 = 60_000_000;

    fn from(party: &'static str, login: &'static str) -> Sender<'static> {
        Sender {
            server: "srv",
            party,
            login,
            connection: "",
            from_client: true,
        }
    }

    #[test]
    fn more_live_parties_than_max_are_not_swept_on_every_message() {
        let mut s = Stitcher::new(30 * 60_000, 5 * 60_000, 100);
        let party = |i: usize| -> &'static str { Box::leak(format!("p{i}").into_boxed_str()) };
        let note = msg(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        let first: Vec<String> = (0..1000)
            .map(|i| s.session(from(party(i), ""), &note, i as i64))
            .collect();
        for round in 1..6 {
            for (i, want) in first.iter().enumerate() {
                let ts = (round * 1000 + i) as i64 * 1000;
                assert_eq!(&s.session(from(party(i), ""), &note, ts), want);
            }
        }
        // 6,000 messages of 1,000 live parties (max 100): a pass over the map each time it
        // doubled, not one per message
        assert!(s.prunes <= 5, "{} passes", s.prunes);
        // Once they are idle past the gap, newer parties' growth prunes them.
        for i in 1000..4000 {
            s.session(from(party(i), ""), &note, 40 * MIN + i as i64);
        }
        assert!(!s.runs.contains_key("p0"), "idle parties are forgotten");
        assert!(s.runs.len() <= 3000);
    }

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
        let a = s.session(from("p", ""), &tp(t1), 0);
        assert!(a.starts_with("st-"));
        // Same trace, much later: same session (the trace is the run).
        assert_eq!(s.session(from("p", ""), &tp(t1), 90 * MIN), a);
        // Another trace of the same party: another session. Another party continuing the
        // trace continues its session (a takeover is for the rules to see), on the same
        // server only.
        let b = s.session(from("p", ""), &tp(t2), 91 * MIN);
        assert_ne!(a, b);
        assert_eq!(s.session(from("q", ""), &tp(t1), 91 * MIN), a);
        let elsewhere = Sender {
            server: "other",
            ..from("p@other", "")
        };
        assert_ne!(s.session(elsewhere, &tp(t1), 91 * MIN), a);
        // The response (id 1) follows its request's session, not the party's latest.
        let resp = msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(s.session(from("q", ""), &resp, 91 * MIN + 1), a);
        // A server notification joins the party's current run, traced or not.
        let note = msg(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
        let server_side = Sender {
            from_client: false,
            ..from("p", "")
        };
        assert_eq!(s.session(server_side, &note, 92 * MIN), b);
        // Deterministic: a new stitcher derives the same id from the same trace.
        assert_eq!(Stitcher::new(1, 1, 1).session(from("p", ""), &tp(t1), 5), a);

        // Without traces: one session while active, a new one after the gap.
        let plain = msg(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#);
        let c = s.session(from("r", ""), &plain, 0);
        assert_eq!(s.session(from("r", ""), &plain, 29 * MIN), c);
        assert_eq!(
            s.session(from("r", ""), &plain, 58 * MIN),
            c,
            "the gap counts from the last message"
        );
        let d = s.session(from("r", ""), &plain, 89 * MIN);
        assert_ne!(c, d);
        // A malformed or all-zero trace id counts as none.
        let zero = tp("00000000000000000000000000000000");
        assert_eq!(s.session(from("r", ""), &zero, 90 * MIN), d);
    }

    fn call(id: &str) -> Json<'static> {
        msg(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"x"}}}}"#
        ))
    }

    #[test]
    fn untraced_runs_follow_their_request_counters() {
        let mut s = Stitcher::new(30 * 60_000, 5 * 60_000, 1000);
        let sec = 1_000_000;
        let a = s.session(from("p", "t1"), &call("2"), 0);
        assert_eq!(s.session(from("p", "t1"), &call("3"), sec), a);
        // A second run of the same party and token starts its own counter: a new session,
        // and each run's next request follows its own counter.
        let b = s.session(from("p", "t1"), &call("2"), 2 * sec);
        assert_ne!(a, b);
        assert_eq!(s.session(from("p", "t1"), &call("4"), 3 * sec), a);
        assert_eq!(s.session(from("p", "t1"), &call("3"), 4 * sec), b);
        // The token is refreshed mid-run: the counter goes on, so does the session.
        assert_eq!(s.session(from("p", "t2"), &call("5"), 5 * sec), a);
        assert_eq!(s.session(from("p", "t2"), &call("6"), 6 * sec), a);
        // A new login that continues no counter is a new run.
        let c = s.session(from("p", "t3"), &call("1"), 7 * sec);
        assert!(c != a && c != b);
        // String ids count by their digits after a common prefix; a counter that goes
        // back starts a run, ids that are no counters (hashes, UUIDs) continue the token's.
        let d = s.session(from("q", ""), &call(r#""req-7""#), 0);
        assert_eq!(s.session(from("q", ""), &call(r#""req-8""#), sec), d);
        // The same id again (a retry, or a captured request replayed) stays in its run
        // when it continues no other run's counter: replay rules key on the session.
        assert_eq!(s.session(from("q", ""), &call(r#""req-8""#), sec + 1), d);
        let g = s.session(from("q", ""), &call(r#""req-1""#), 2 * sec);
        assert_ne!(g, d);
        assert_eq!(
            s.session(from("q", ""), &call(r#""9f3a77c2e1""#), 3 * sec),
            g
        );
        assert_eq!(
            s.session(from("q", ""), &call(r#""b04e2d9a31""#), 4 * sec),
            g
        );
        // Responses of two runs that reuse one id go to the run of their own token first.
        let e = s.session(from("r", "x"), &call("9"), 0);
        let f = s.session(from("r", "y"), &call("9"), sec);
        assert_ne!(e, f);
        let resp = msg(r#"{"jsonrpc":"2.0","id":9,"result":{}}"#);
        let answer = |login| Sender {
            from_client: false,
            ..from("r", login)
        };
        assert_eq!(s.session(answer("y"), &resp, 2 * sec), f);
        assert_eq!(s.session(answer("x"), &resp, 2 * sec), e);
    }

    #[test]
    fn a_counter_continued_with_another_token_on_the_same_connection_continues_the_session() {
        let mut s = Stitcher::new(30 * 60_000, 5 * 60_000, 1000);
        let sec = 1_000_000;
        let on = |party, login, connection| Sender {
            connection,
            ..from(party, login)
        };
        let victim = s.session(on("alice", "ta", "c1"), &call("0"), 0);
        assert_eq!(s.session(on("alice", "ta", "c1"), &call("1"), sec), victim);
        // Another principal's token, same connection, the counter goes on: same session.
        assert_eq!(
            s.session(on("mallory", "tm", "c1"), &call("2"), 60 * sec),
            victim
        );
        assert_eq!(
            s.session(on("mallory", "tm", "c1"), &call("3"), 61 * sec),
            victim
        );
        let resp = msg(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        let answer = Sender {
            from_client: false,
            ..on("mallory", "tm", "c1")
        };
        assert_eq!(s.session(answer, &resp, 62 * sec), victim);
        // A new user's client on the same connection starts its own counter: its own run.
        let bob = s.session(on("bob", "tb", "c1"), &call("0"), 63 * sec);
        assert_ne!(bob, victim);
        assert_eq!(s.session(on("bob", "tb", "c1"), &call("1"), 64 * sec), bob);
        // Another connection, or a counter that does not follow, or too late: no handoff.
        let far = s.session(on("carol", "tc", "c2"), &call("2"), 65 * sec);
        assert!(far != victim && far != bob);
        let jump = s.session(on("dave", "td", "c1"), &call("9"), 66 * sec);
        assert!(jump != victim && jump != bob);
        let late = s.session(
            on("erin", "te", "c1"),
            &call("10"),
            66 * sec + 31 * 60 * sec,
        );
        assert_ne!(late, jump);
        // Without a connection (no source address or user agent) nothing is followed.
        let x = s.session(on("x", "tx", ""), &call("0"), 0);
        let y = s.session(on("y", "ty", ""), &call("1"), sec);
        assert_ne!(x, y);
    }

    #[test]
    fn one_id_repeated_without_answers_stays_bounded() {
        let mut s = Stitcher::new(30 * 60_000, 5 * 60_000, 1_000_000);
        for i in 0..1000 {
            s.session(from("p", ""), &call("1"), i);
        }
        assert_eq!(s.waiting, WAITING_PER_ID);
        assert_eq!(s.requests.values().map(Vec::len).sum::<usize>(), s.waiting);
        let resp = msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        s.session(from("p", ""), &resp, 1001);
        assert_eq!(s.waiting, WAITING_PER_ID - 1);
    }

    #[test]
    fn counters_of_odd_ids() {
        assert_eq!(counter("17"), Some(("", 17)));
        assert_eq!(counter("req-0"), Some(("req-", 0)));
        assert_eq!(counter("abc"), None);
        assert_eq!(counter("1234567890123456789012"), None);
        assert_eq!(counter(""), None);
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
