//! Behavioural features per session over a sliding window of event time,
//! maintained incrementally from the Arrow `events` batches.
//!
//! One window per session (keyed by `session_id`, or by the principal when
//! a message has no session). Each client request updates its session's
//! window and yields one feature vector (the window ending at that
//! request), so the vectors a model sees do not depend on how the stream
//! was cut into micro-batches. Responses update the error ratio and the
//! result bytes. The principal (`auth_sub`, else the OAuth client id, else
//! the client name: the `principal` column) carries history across its
//! sessions: the tools it has used before ("first-seen" share).

use std::collections::{HashMap, HashSet, VecDeque};

use arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use serde::{Deserialize, Serialize};

use crate::DetectError;

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
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeatureSpec {
    /// Sliding window length (event time, seconds).
    pub window_secs: u64,
    /// Tool names counted as egress (data leaves the system).
    pub egress_tools: Vec<String>,
    /// Tool names counted as directory listings.
    pub listing_tools: Vec<String>,
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
        }
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

/// Incrementally maintained aggregates of one session's window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SessionWindow {
    pub principal: String,
    pub session_id: Option<String>,
    pub server_id: String,
    pub last_ts: i64,
    reqs: VecDeque<Req>,
    resps: VecDeque<Resp>,
    tools: HashMap<String, u32>,
    resources: HashMap<String, u32>,
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
    if let Some(c) = m.get_mut(k) {
        *c += 1;
    } else {
        m.insert(k.to_string(), 1);
    }
}

fn dec(m: &mut HashMap<String, u32>, k: &str) {
    if let Some(c) = m.get_mut(k) {
        *c -= 1;
        if *c == 0 {
            m.remove(k);
        }
    }
}

impl SessionWindow {
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
            self.lists -= r.list as u32;
            self.dir_lists -= r.dir_list as u32;
            self.egress -= r.egress as u32;
            self.first_seen -= r.first_seen as u32;
            self.args_bytes -= r.args_bytes;
            if let Some(g) = r.gap {
                self.remove_gap(g);
            }
            // The new oldest request's gap points outside the window now.
            if let Some(front) = self.reqs.front_mut()
                && let Some(g) = front.gap.take()
            {
                let g = g as f64 / 1e6;
                self.gap_n -= 1;
                self.gap_sum -= g;
                self.gap_sq -= g * g;
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

/// Windows of every active session plus each principal's tool history.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeatureState {
    pub sessions: HashMap<String, SessionWindow>,
    /// principal → tools it has called.
    pub seen_tools: HashMap<String, HashSet<String>>,
    pub max_ts: i64,
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
    msg_kind: &'a StringArray,
    method: &'a StringArray,
    tool_name: &'a StringArray,
    resource_uri: &'a StringArray,
    args_bytes: &'a Int64Array,
    args_max_entropy: &'a Float64Array,
    is_error: &'a BooleanArray,
    result_bytes: &'a Int64Array,
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
            msg_kind: col(b, "msg_kind")?,
            method: col(b, "method")?,
            tool_name: col(b, "tool_name")?,
            resource_uri: col(b, "resource_uri")?,
            args_bytes: col(b, "args_bytes")?,
            args_max_entropy: col(b, "args_max_entropy")?,
            is_error: col(b, "is_error")?,
            result_bytes: col(b, "result_bytes")?,
        })
    }
}

fn opt(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// A feature vector produced by a request: the window ending at it.
pub struct Observation<'a> {
    pub key: &'a str,
    pub window: &'a SessionWindow,
    pub features: FeatureVec,
}

/// Incremental feature extraction.
#[derive(Debug, Default)]
pub struct Extractor {
    pub spec: FeatureSpec,
    egress: HashSet<String>,
    listing: HashSet<String>,
    pub state: FeatureState,
}

impl Extractor {
    pub fn new(spec: FeatureSpec) -> Self {
        Extractor {
            egress: spec.egress_tools.iter().cloned().collect(),
            listing: spec.listing_tools.iter().cloned().collect(),
            spec,
            state: FeatureState::default(),
        }
    }

    fn window_us(&self) -> i64 {
        self.spec.window_secs.max(1) as i64 * 1_000_000
    }

    /// Feeds one `events` batch; calls `emit` with the window after each
    /// client request, in row order.
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
        let st = &mut self.state;
        for i in 0..events.num_rows() {
            let kind = c.msg_kind.value(i);
            let c2s = c.direction.value(i) == "c2s";
            let request = c2s && kind == "request";
            let response = !c2s && (kind == "result" || kind == "error");
            if !request && !response {
                continue;
            }
            let ts = c.ts.value(i);
            let principal = opt(c.principal, i).unwrap_or("unknown");
            let session = opt(c.session_id, i);
            let key: &str = session.unwrap_or(principal);
            if !st.sessions.contains_key(key) {
                if response {
                    // A response to a session we have no request of.
                    continue;
                }
                st.sessions.insert(
                    key.to_string(),
                    SessionWindow {
                        principal: principal.to_string(),
                        session_id: session.map(str::to_string),
                        server_id: c.server_id.value(i).to_string(),
                        last_ts: ts,
                        ..SessionWindow::default()
                    },
                );
            }
            let Some(w) = st.sessions.get_mut(key) else {
                continue;
            };
            st.max_ts = st.max_ts.max(ts);
            // Late rows count at the session's newest time.
            let now = ts.max(w.last_ts);
            w.last_ts = now;
            w.evict(now - window_us);
            if response {
                let error = kind == "error" || (!c.is_error.is_null(i) && c.is_error.value(i));
                let rb = if c.result_bytes.is_null(i) {
                    0
                } else {
                    c.result_bytes.value(i)
                };
                w.errors += error as u32;
                w.result_bytes += rb;
                w.resps.push_back(Resp {
                    ts: now,
                    error,
                    result_bytes: rb,
                });
                continue;
            }
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
                let known = st.seen_tools.len();
                match st.seen_tools.get_mut(principal) {
                    Some(set) if !set.contains(t) => {
                        set.insert(t.to_string());
                        first_seen = true;
                    }
                    Some(_) => {}
                    None if known < MAX_PRINCIPALS => {
                        st.seen_tools
                            .insert(principal.to_string(), HashSet::from([t.to_string()]));
                        first_seen = true;
                    }
                    None => {}
                }
                inc(&mut w.tools, t);
                w.tool_calls += 1;
            }
            if let Some(u) = resource {
                inc(&mut w.resources, u);
            }
            let list = method == "resources/list";
            let dir_list = tool.is_some_and(|t| self.listing.contains(t));
            let egress = tool.is_some_and(|t| self.egress.contains(t));
            let ab = if c.args_bytes.is_null(i) {
                0
            } else {
                c.args_bytes.value(i)
            };
            let ent = if c.args_max_entropy.is_null(i) {
                0.0
            } else {
                c.args_max_entropy.value(i)
            };
            w.lists += list as u32;
            w.dir_lists += dir_list as u32;
            w.egress += egress as u32;
            w.first_seen += first_seen as u32;
            w.args_bytes += ab;
            let gap = w.reqs.back().map(|p| (now - p.ts).max(0));
            if let Some(g) = gap {
                let g = g as f64 / 1e6;
                w.gap_n += 1;
                w.gap_sum += g;
                w.gap_sq += g * g;
            }
            while w.entropy_max.back().is_some_and(|(_, e)| *e <= ent) {
                w.entropy_max.pop_back();
            }
            w.entropy_max.push_back((now, ent));
            w.reqs.push_back(Req {
                ts: now,
                event_id: c.event_id.value(i).to_string(),
                gap,
                tool: tool.map(str::to_string),
                resource: resource.map(str::to_string),
                list,
                dir_list,
                egress,
                first_seen,
                args_bytes: ab,
            });
            let features = w.features();
            emit(Observation {
                key,
                window: w,
                features,
            });
        }
        // Sessions idle for longer than a window are finished.
        let horizon = st.max_ts - 2 * window_us;
        st.sessions.retain(|_, w| w.last_ts >= horizon);
        Ok(())
    }
}
