//! Behavioural features over sliding windows of event time, maintained
//! incrementally from the Arrow `events` batches.
//!
//! Two kinds of window ([`WindowKind`]), with the same features:
//!
//! * one per **session** (keyed by `session_id`, or by the principal when a
//!   message has no session);
//! * one per **principal** (the `principal` column: `auth_sub`, else the
//!   OAuth client id, else the client name), over all its sessions, so that
//!   activity spread over many short sessions adds up. Rows without a
//!   session id or without a principal have no principal window (the first
//!   are already keyed by principal, the second share no identity).
//!
//! Each client request updates its windows and yields one feature vector
//! per window (the window ending at that request), so the vectors a model
//! sees do not depend on how the stream was cut into micro-batches.
//! Responses update the error ratio and the result bytes. The principal
//! also carries history across its sessions: the tools it has used before
//! ("first-seen" share).

use std::collections::VecDeque;
use std::fmt;

use arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use serde::{Deserialize, Serialize};

use super::reference::{Profiles, peer_group};
use crate::DetectError;
use crate::state::{HashMap, HashSet, get_or_insert};

/// Number of features.
pub const N_FEATURES: usize = 13;

/// A window's feature vector (raw, untransformed values).
pub type FeatureVec = [f64; N_FEATURES];

/// Feature names, in vector order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "calls_per_min",
    "distinct_tools",
    "distinct_resources",
    "resource_lists",
    "dir_lists",
    "error_ratio",
    "args_bytes",
    "result_bytes",
    "max_arg_entropy",
    "egress_share",
    "first_seen_share",
    "gap_mean_s",
    "gap_cv",
];

/// Features that are counts, rates or sizes: the model sees `ln(1 + x)`.
pub const LOG_FEATURES: [bool; N_FEATURES] = [
    true, true, true, true, true, false, true, true, false, false, false, true, false,
];

/// What the extractor needs to know besides the events.
///
/// A tool call counts as **egress** (data may leave) when its name is one
/// of `egress_tools`, or the words of its name (split at `_`, `-`, `.`,
/// `/` and camelCase) include one of `egress_words` and none of
/// `read_words` (`send_email` and `slackPost` are egress, `fetch_mail` and
/// `get_post` are not), or, with `egress_public_urls`, its arguments name a
/// URL on a public host. It counts as a **directory listing** when its name
/// is one of `listing_tools`, or its words include one of `listing_verbs`
/// and one of `listing_nouns` (`list_files`, `browseFolder`, `fs.ls`). So
/// the features carry over to servers whose tools are named otherwise.
///
/// The word rules were added after format 2 models were first written: a
/// model file without them (serde defaults: empty, false) keeps the
/// name-list-only semantics it was trained with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeatureSpec {
    /// Sliding window length (event time, seconds).
    pub window_secs: u64,
    /// Tool names counted as egress (data leaves the system).
    pub egress_tools: Vec<String>,
    /// Tool names counted as directory listings.
    pub listing_tools: Vec<String>,
    #[serde(default)]
    pub egress_words: Vec<String>,
    #[serde(default)]
    pub read_words: Vec<String>,
    #[serde(default)]
    pub egress_public_urls: bool,
    #[serde(default)]
    pub listing_verbs: Vec<String>,
    #[serde(default)]
    pub listing_nouns: Vec<String>,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        FeatureSpec {
            window_secs: 300,
            egress_tools: s(&[
                "http_post",
                "webhook_send",
                "upload",
                "post_json",
                "send_request",
                "api_call",
                "send_email",
                "mail_send",
                "notify_email",
                "email_send",
                "compose_mail",
                "fetch_url",
                "http_get",
                "browse",
                "download",
                "web_fetch",
                "get_page",
                "read_url",
                "post_message",
                "slack_post",
                "chat_send",
                "send_message",
            ]),
            listing_tools: s(&[
                "list_dir",
                "ls",
                "list_directory",
                "fs_list",
                "browse_folder",
                "list_files",
            ]),
            egress_words: s(&[
                "send", "post", "upload", "publish", "forward", "webhook", "notify", "email",
                "mail", "sms", "tweet", "share", "transfer",
            ]),
            read_words: s(&[
                "get", "list", "read", "fetch", "search", "find", "query", "inbox", "count",
            ]),
            egress_public_urls: true,
            listing_verbs: s(&[
                "list", "ls", "browse", "tree", "walk", "glob", "scan", "readdir",
            ]),
            listing_nouns: s(&[
                "dir",
                "dirs",
                "directory",
                "directories",
                "folder",
                "folders",
                "files",
                "fs",
                "entries",
                "ls",
                "tree",
                "readdir",
            ]),
        }
    }
}

/// The words of a tool name, lower-cased: split at non-alphanumerics and
/// at lower-to-upper case changes (`sendSlackMessage` → send, slack,
/// message).
pub fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if !ch.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = ch.is_lowercase() || ch.is_numeric();
        cur.extend(ch.to_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// How a tool name classifies (see [`FeatureSpec`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ToolClass {
    egress: bool,
    listing: bool,
}

/// Tool names classified so far are cached up to this many.
const MAX_CACHED_TOOLS: usize = 100_000;

/// Tool-name classification with a bounded cache.
#[derive(Debug, Default)]
struct Classifier {
    egress: HashSet<String>,
    listing: HashSet<String>,
    egress_words: HashSet<String>,
    read_words: HashSet<String>,
    listing_verbs: HashSet<String>,
    listing_nouns: HashSet<String>,
    cache: HashMap<String, ToolClass>,
}

impl Classifier {
    fn new(spec: &FeatureSpec) -> Self {
        let set = |v: &[String]| v.iter().map(|w| w.to_lowercase()).collect::<HashSet<_>>();
        Classifier {
            egress: spec.egress_tools.iter().cloned().collect(),
            listing: spec.listing_tools.iter().cloned().collect(),
            egress_words: set(&spec.egress_words),
            read_words: set(&spec.read_words),
            listing_verbs: set(&spec.listing_verbs),
            listing_nouns: set(&spec.listing_nouns),
            cache: HashMap::default(),
        }
    }

    fn classify_uncached(&self, tool: &str) -> ToolClass {
        let words = name_words(tool);
        let has = |set: &HashSet<String>| words.iter().any(|w| set.contains(w));
        ToolClass {
            egress: self.egress.contains(tool)
                || (has(&self.egress_words) && !has(&self.read_words)),
            listing: self.listing.contains(tool)
                || (has(&self.listing_verbs) && has(&self.listing_nouns)),
        }
    }

    fn classify(&mut self, tool: &str) -> ToolClass {
        if let Some(c) = self.cache.get(tool) {
            return *c;
        }
        let c = self.classify_uncached(tool);
        if self.cache.len() < MAX_CACHED_TOOLS {
            self.cache.insert(tool.to_string(), c);
        }
        c
    }
}

/// Which activity a window covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Session,
    Principal,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Session => "session",
            WindowKind::Principal => "principal",
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One client request inside a window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Req {
    ts: i64,
    event_id: String,
    /// Microseconds since the previous request still in the window.
    gap: Option<i64>,
    tool: Option<String>,
    resource: Option<String>,
    /// The request's session (principal windows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    list: bool,
    dir_list: bool,
    egress: bool,
    first_seen: bool,
    args_bytes: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Resp {
    ts: i64,
    error: bool,
    result_bytes: i64,
}

/// Incrementally maintained aggregates of one window (a session's or a
/// principal's).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Window {
    pub principal: String,
    /// The session (session windows only).
    pub session_id: Option<String>,
    /// Server of the latest request.
    pub server_id: String,
    /// Client application (`client_name`) of the session, once seen.
    #[serde(default)]
    pub client: Option<String>,
    pub last_ts: i64,
    /// Per-feature maximum over the vectors the window produced (session
    /// windows: the session's peak, recorded in its profiles when it ends).
    #[serde(default)]
    peak: FeatureVec,
    reqs: VecDeque<Req>,
    resps: VecDeque<Resp>,
    tools: HashMap<String, u32>,
    resources: HashMap<String, u32>,
    /// Sessions with requests in the window (principal windows only).
    #[serde(default)]
    sessions: HashMap<String, u32>,
    /// Monotonically decreasing (ts, entropy) for the sliding maximum.
    entropy_max: VecDeque<(i64, f64)>,
    lists: u32,
    dir_lists: u32,
    tool_calls: u32,
    egress: u32,
    first_seen: u32,
    args_bytes: i64,
    gap_n: u32,
    gap_sum: f64,
    gap_sq: f64,
    errors: u32,
    result_bytes: i64,
}

fn inc(m: &mut HashMap<String, u32>, k: &str) {
    *get_or_insert(m, k, || 0) += 1;
}

fn dec(m: &mut HashMap<String, u32>, k: &str) {
    if let Some(c) = m.get_mut(k) {
        *c -= 1;
        if *c == 0 {
            m.remove(k);
        }
    }
}

/// What a client request contributes to its windows.
struct ReqIn<'a> {
    event_id: &'a str,
    server_id: &'a str,
    tool: Option<&'a str>,
    resource: Option<&'a str>,
    list: bool,
    dir_list: bool,
    egress: bool,
    first_seen: bool,
    args_bytes: i64,
    entropy: f64,
}

impl Window {
    fn new(principal: &str, session_id: Option<&str>, server_id: &str, ts: i64) -> Self {
        Window {
            principal: principal.to_string(),
            session_id: session_id.map(str::to_string),
            server_id: server_id.to_string(),
            last_ts: ts,
            ..Window::default()
        }
    }

    /// The window's peer group: its client application on its server.
    pub fn peer_group(&self) -> String {
        peer_group(self.client.as_deref(), &self.server_id)
    }

    /// First request time still in the window.
    pub fn first_ts(&self) -> i64 {
        self.reqs.front().map_or(self.last_ts, |r| r.ts)
    }

    /// Event ids of the requests in the window (oldest first), at most `n`.
    pub fn event_ids(&self, n: usize) -> Vec<String> {
        self.reqs
            .iter()
            .take(n)
            .map(|r| r.event_id.clone())
            .collect()
    }

    /// Sessions with requests in a principal window (sorted), at most `n`.
    pub fn session_ids(&self, n: usize) -> Vec<String> {
        let mut v: Vec<String> = self.sessions.keys().cloned().collect();
        v.sort();
        v.truncate(n);
        v
    }

    /// The session with the most requests in a principal window (ties:
    /// `prefer` when it is one of them, else the smallest id).
    pub fn main_session<'a>(&'a self, prefer: &'a str) -> Option<&'a str> {
        let top = self.sessions.values().copied().max()?;
        if self.sessions.get(prefer) == Some(&top) {
            return Some(prefer);
        }
        self.sessions
            .iter()
            .filter(|(_, n)| **n == top)
            .map(|(k, _)| k.as_str())
            .min()
    }

    /// Distinct sessions with requests in a principal window.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Moves the window to `ts` (late rows count at the window's newest
    /// time) and drops what fell out of it; returns the window's time.
    fn advance(&mut self, ts: i64, window_us: i64) -> i64 {
        let now = ts.max(self.last_ts);
        self.last_ts = now;
        self.evict(now - window_us);
        now
    }

    fn evict(&mut self, horizon: i64) {
        while self.reqs.front().is_some_and(|r| r.ts < horizon) {
            let Some(r) = self.reqs.pop_front() else {
                break;
            };
            if let Some(t) = &r.tool {
                dec(&mut self.tools, t);
                self.tool_calls -= 1;
            }
            if let Some(u) = &r.resource {
                dec(&mut self.resources, u);
            }
            if let Some(s) = &r.session {
                dec(&mut self.sessions, s);
            }
            self.lists -= r.list as u32;
            self.dir_lists -= r.dir_list as u32;
            self.egress -= r.egress as u32;
            self.first_seen -= r.first_seen as u32;
            self.args_bytes -= r.args_bytes;
            if let Some(g) = r.gap {
                self.remove_gap(g);
            }
            // The new oldest request's gap points outside the window now.
            if let Some(g) = self.reqs.front_mut().and_then(|f| f.gap.take()) {
                self.remove_gap(g);
            }
        }
        while self.resps.front().is_some_and(|r| r.ts < horizon) {
            let Some(r) = self.resps.pop_front() else {
                break;
            };
            self.errors -= r.error as u32;
            self.result_bytes -= r.result_bytes;
        }
        while self.entropy_max.front().is_some_and(|(t, _)| *t < horizon) {
            self.entropy_max.pop_front();
        }
        if self.reqs.is_empty() {
            self.gap_n = 0;
            self.gap_sum = 0.0;
            self.gap_sq = 0.0;
        }
    }

    fn remove_gap(&mut self, g: i64) {
        let g = g as f64 / 1e6;
        self.gap_n -= 1;
        self.gap_sum -= g;
        self.gap_sq -= g * g;
    }

    fn add_response(&mut self, ts: i64, window_us: i64, error: bool, result_bytes: i64) {
        let now = self.advance(ts, window_us);
        self.errors += error as u32;
        self.result_bytes += result_bytes;
        self.resps.push_back(Resp {
            ts: now,
            error,
            result_bytes,
        });
    }

    fn add_request(&mut self, ts: i64, window_us: i64, r: &ReqIn<'_>, session: Option<&str>) {
        let now = self.advance(ts, window_us);
        if self.server_id != r.server_id {
            self.server_id = r.server_id.to_string();
        }
        if let Some(t) = r.tool {
            inc(&mut self.tools, t);
            self.tool_calls += 1;
        }
        if let Some(u) = r.resource {
            inc(&mut self.resources, u);
        }
        if let Some(s) = session {
            inc(&mut self.sessions, s);
        }
        self.lists += r.list as u32;
        self.dir_lists += r.dir_list as u32;
        self.egress += r.egress as u32;
        self.first_seen += r.first_seen as u32;
        self.args_bytes += r.args_bytes;
        let gap = self.reqs.back().map(|p| (now - p.ts).max(0));
        if let Some(g) = gap {
            let g = g as f64 / 1e6;
            self.gap_n += 1;
            self.gap_sum += g;
            self.gap_sq += g * g;
        }
        while self
            .entropy_max
            .back()
            .is_some_and(|(_, e)| *e <= r.entropy)
        {
            self.entropy_max.pop_back();
        }
        self.entropy_max.push_back((now, r.entropy));
        self.reqs.push_back(Req {
            ts: now,
            event_id: r.event_id.to_string(),
            gap,
            tool: r.tool.map(str::to_string),
            resource: r.resource.map(str::to_string),
            session: session.map(str::to_string),
            list: r.list,
            dir_list: r.dir_list,
            egress: r.egress,
            first_seen: r.first_seen,
            args_bytes: r.args_bytes,
        });
    }

    /// The window's feature vector.
    pub fn features(&self) -> FeatureVec {
        let n = self.reqs.len() as f64;
        let span_min = ((self.last_ts - self.first_ts()) as f64 / 60e6).max(1.0);
        let responses = self.resps.len() as f64;
        let calls = self.tool_calls as f64;
        let (gap_mean, gap_cv) = if self.gap_n > 0 {
            let k = self.gap_n as f64;
            let mean = (self.gap_sum / k).max(0.0);
            let var = (self.gap_sq / k - mean * mean).max(0.0);
            (mean, if mean > 1e-9 { var.sqrt() / mean } else { 0.0 })
        } else {
            (0.0, 0.0)
        };
        [
            n / span_min,
            self.tools.len() as f64,
            self.resources.len() as f64,
            self.lists as f64,
            self.dir_lists as f64,
            if responses > 0.0 {
                self.errors as f64 / responses
            } else {
                0.0
            },
            self.args_bytes.max(0) as f64,
            self.result_bytes.max(0) as f64,
            self.entropy_max.front().map_or(0.0, |(_, e)| *e),
            if calls > 0.0 {
                self.egress as f64 / calls
            } else {
                0.0
            },
            if calls > 0.0 {
                self.first_seen as f64 / calls
            } else {
                0.0
            },
            gap_mean,
            gap_cv,
        ]
    }
}

/// Windows of every active session and principal, plus each principal's
/// tool history.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FeatureState {
    pub sessions: HashMap<String, Window>,
    pub principals: HashMap<String, Window>,
    /// principal → tools it has called.
    pub seen_tools: HashMap<String, HashSet<String>>,
    pub max_ts: i64,
    /// Event time of the last sweep of idle windows.
    pub last_sweep: i64,
    /// Session peaks per principal and per peer group (explanations).
    pub profiles: Profiles,
}

impl FeatureState {
    /// Drops windows idle for more than two window lengths; runs at most
    /// once per window length of event time, so its cost per event stays
    /// constant however many windows are open.
    fn sweep(&mut self, window_us: i64) {
        if self.max_ts - self.last_sweep < window_us {
            return;
        }
        self.last_sweep = self.max_ts;
        let horizon = self.max_ts - 2 * window_us;
        let profiles = &mut self.profiles;
        self.sessions.retain(|_, w| {
            let keep = w.last_ts >= horizon;
            if !keep {
                profiles.record(&w.principal, &w.peer_group(), &w.peak);
            }
            keep
        });
        self.principals.retain(|_, w| w.last_ts >= horizon);
    }
}

/// Principals whose tool history is kept (oldest are not tracked: the map
/// is simply not grown beyond this).
const MAX_PRINCIPALS: usize = 200_000;

/// The columns of an `events` batch the extractor reads.
struct Cols<'a> {
    event_id: &'a StringArray,
    ts: &'a TimestampMicrosecondArray,
    server_id: &'a StringArray,
    direction: &'a StringArray,
    session_id: &'a StringArray,
    principal: &'a StringArray,
    /// `client_name` (absent in hand-built batches).
    client_name: Option<&'a StringArray>,
    msg_kind: &'a StringArray,
    method: &'a StringArray,
    tool_name: &'a StringArray,
    resource_uri: &'a StringArray,
    args_bytes: &'a Int64Array,
    args_max_entropy: &'a Float64Array,
    is_error: &'a BooleanArray,
    result_bytes: &'a Int64Array,
    /// `args_host_classes` (absent in hand-built batches: no URL hosts).
    host_classes: Option<&'a ListArray>,
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, DetectError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| DetectError::Model(format!("events batch lacks a usable `{name}` column")))
}

impl<'a> Cols<'a> {
    fn of(b: &'a RecordBatch) -> Result<Self, DetectError> {
        Ok(Cols {
            event_id: col(b, "event_id")?,
            ts: col(b, "ts")?,
            server_id: col(b, "server_id")?,
            direction: col(b, "direction")?,
            session_id: col(b, "session_id")?,
            principal: col(b, "principal")?,
            client_name: b
                .column_by_name("client_name")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            msg_kind: col(b, "msg_kind")?,
            method: col(b, "method")?,
            tool_name: col(b, "tool_name")?,
            resource_uri: col(b, "resource_uri")?,
            args_bytes: col(b, "args_bytes")?,
            args_max_entropy: col(b, "args_max_entropy")?,
            is_error: col(b, "is_error")?,
            result_bytes: col(b, "result_bytes")?,
            host_classes: b
                .column_by_name("args_host_classes")
                .and_then(|c| c.as_any().downcast_ref::<ListArray>()),
        })
    }

    /// Whether row `i`'s arguments name a URL on a public host.
    fn public_url(&self, i: usize) -> bool {
        let Some(l) = self.host_classes else {
            return false;
        };
        if l.is_null(i) {
            return false;
        }
        let v = l.value(i);
        v.as_any()
            .downcast_ref::<StringArray>()
            .is_some_and(|a| a.iter().flatten().any(|c| c == "public"))
    }
}

fn opt(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// A feature vector produced by a request: the window ending at it.
pub struct Observation<'a> {
    pub kind: WindowKind,
    /// The window's key: the session key, or the principal.
    pub key: &'a str,
    /// The session key of the request (the unit false positives are
    /// counted in); equal to `key` for session windows.
    pub session: &'a str,
    pub window: &'a Window,
    pub features: FeatureVec,
}

/// Incremental feature extraction.
#[derive(Debug, Default)]
pub struct Extractor {
    pub spec: FeatureSpec,
    classifier: Classifier,
    pub state: FeatureState,
}

impl Extractor {
    pub fn new(spec: FeatureSpec) -> Self {
        Extractor {
            classifier: Classifier::new(&spec),
            spec,
            state: FeatureState::default(),
        }
    }

    fn window_us(&self) -> i64 {
        self.spec.window_secs.max(1) as i64 * 1_000_000
    }

    /// Feeds one `events` batch; calls `emit` after each client request
    /// with its session window, then (when it has one) its principal
    /// window, in row order.
    pub fn feed(
        &mut self,
        events: &RecordBatch,
        mut emit: impl FnMut(Observation<'_>),
    ) -> Result<(), DetectError> {
        if events.num_rows() == 0 {
            return Ok(());
        }
        let c = Cols::of(events)?;
        let window_us = self.window_us();
        let public_urls = self.spec.egress_public_urls;
        let classifier = &mut self.classifier;
        let FeatureState {
            sessions,
            principals,
            seen_tools,
            max_ts,
            ..
        } = &mut self.state;
        for i in 0..events.num_rows() {
            let kind = c.msg_kind.value(i);
            let c2s = c.direction.value(i) == "c2s";
            let request = c2s && kind == "request";
            let response = !c2s && (kind == "result" || kind == "error");
            if !request && !response {
                continue;
            }
            let ts = c.ts.value(i);
            let row_principal = opt(c.principal, i);
            let principal = row_principal.unwrap_or("unknown");
            let session = opt(c.session_id, i);
            let key: &str = session.unwrap_or(principal);
            if response {
                // A response to a session we have no request of is skipped.
                let Some(w) = sessions.get_mut(key) else {
                    continue;
                };
                *max_ts = (*max_ts).max(ts);
                let error = kind == "error" || (!c.is_error.is_null(i) && c.is_error.value(i));
                let rb = if c.result_bytes.is_null(i) {
                    0
                } else {
                    c.result_bytes.value(i)
                };
                w.add_response(ts, window_us, error, rb);
                if session.is_some() {
                    let p = row_principal.unwrap_or(w.principal.as_str());
                    if let Some(pw) = principals.get_mut(p) {
                        pw.add_response(ts, window_us, error, rb);
                    }
                }
                continue;
            }
            *max_ts = (*max_ts).max(ts);
            let method = opt(c.method, i).unwrap_or("");
            let tool = if method == "tools/call" {
                opt(c.tool_name, i)
            } else {
                None
            };
            let resource = if method == "resources/read" {
                opt(c.resource_uri, i)
            } else {
                None
            };
            let mut first_seen = false;
            if let Some(t) = tool {
                let known = seen_tools.len();
                match seen_tools.get_mut(principal) {
                    Some(set) if !set.contains(t) => {
                        set.insert(t.to_string());
                        first_seen = true;
                    }
                    Some(_) => {}
                    None if known < MAX_PRINCIPALS => {
                        seen_tools
                            .insert(principal.to_string(), HashSet::from_iter([t.to_string()]));
                        first_seen = true;
                    }
                    None => {}
                }
            }
            let class = tool.map(|t| classifier.classify(t)).unwrap_or_default();
            let r = ReqIn {
                event_id: c.event_id.value(i),
                server_id: c.server_id.value(i),
                tool,
                resource,
                list: method == "resources/list",
                dir_list: class.listing,
                egress: class.egress || (tool.is_some() && public_urls && c.public_url(i)),
                first_seen,
                args_bytes: if c.args_bytes.is_null(i) {
                    0
                } else {
                    c.args_bytes.value(i)
                },
                entropy: if c.args_max_entropy.is_null(i) {
                    0.0
                } else {
                    c.args_max_entropy.value(i)
                },
            };
            let w = get_or_insert(sessions, key, || {
                Window::new(principal, session, r.server_id, ts)
            });
            if w.client.is_none()
                && let Some(client) = c.client_name.and_then(|a| opt(a, i))
            {
                w.client = Some(client.to_string());
            }
            w.add_request(ts, window_us, &r, None);
            let features = w.features();
            for (p, x) in w.peak.iter_mut().zip(features) {
                *p = p.max(x);
            }
            emit(Observation {
                kind: WindowKind::Session,
                key,
                session: key,
                features,
                window: w,
            });
            let (Some(s), Some(p)) = (session, row_principal) else {
                continue;
            };
            let pw = get_or_insert(principals, p, || Window::new(p, None, r.server_id, ts));
            if pw.client.is_none()
                && let Some(client) = c.client_name.and_then(|a| opt(a, i))
            {
                pw.client = Some(client.to_string());
            }
            pw.add_request(ts, window_us, &r, Some(s));
            emit(Observation {
                kind: WindowKind::Principal,
                key: p,
                session: s,
                features: pw.features(),
                window: pw,
            });
        }
        self.state.sweep(window_us);
        Ok(())
    }
}
