//! Normalisation of validated envelopes into the `events` and `tool_defs`
//! Arrow tables, with request/response matching across batches.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;

use crate::dedup::{Dedup, Seen};
use crate::envelope::{self, Envelope};
use crate::json::{self, Json, canonical_string, write_canonical, write_members};
use crate::maml;
use crate::schema::{events_schema, maml_docs_schema, tool_defs_schema};
use crate::secrets::{redact, redact_quiet};
use crate::text::{
    PREVIEW_CHARS, TEXT_CAP_BYTES, decode_for_rules, is_invisible, sha256_hex, shannon_entropy,
    truncate_bytes, truncate_chars, visible_preview,
};
use crate::urls;
use crate::{
    Accepted, DecodedBatch, Duplicate, IngestConfig, IngestError, RawRecord, Rejected, SourcePos,
};

/// What a request leaves behind for its response.
#[derive(Debug)]
struct PendingReq {
    ts: i64,
    seq: u64,
    method: Option<String>,
    tool_name: Option<String>,
    resource_uri: Option<String>,
    prompt_name: Option<String>,
    /// The protocol version the request asked for (`initialize`).
    protocol_version: Option<String>,
}

/// Bounded, expiring map of outstanding requests.
#[derive(Debug)]
struct Pending {
    map: HashMap<String, PendingReq, foldhash::fast::RandomState>,
    /// Insertion order: (ts, seq, key). Entries whose seq no longer matches
    /// the map are stale and skipped.
    order: VecDeque<(i64, u64, String)>,
    next_seq: u64,
    max: usize,
    ttl_micros: i64,
}

impl Pending {
    fn new(max: usize, ttl_ms: i64) -> Self {
        Pending {
            map: HashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            max: max.max(1),
            ttl_micros: ttl_ms.max(0).saturating_mul(1000),
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, seq, key)) = self.order.pop_front()
            && self.map.get(&key).is_some_and(|p| p.seq == seq)
        {
            self.map.remove(&key);
        }
    }

    fn insert(&mut self, key: String, mut req: PendingReq) {
        req.seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((req.ts, req.seq, key.clone()));
        self.map.insert(key, req);
        while self.map.len() > self.max {
            self.pop_front();
        }
        if self.order.len() > self.max.saturating_mul(2).max(1024) {
            let map = &self.map;
            self.order
                .retain(|(_, seq, k)| map.get(k).is_some_and(|p| p.seq == *seq));
        }
    }

    /// Drops requests older than the TTL relative to `now` (event time).
    fn expire(&mut self, now: i64) {
        let limit = now.saturating_sub(self.ttl_micros);
        while self.order.front().is_some_and(|f| f.0 < limit) {
            self.pop_front();
        }
    }

    fn take(&mut self, key: &str, now: i64) -> Option<PendingReq> {
        let p = self.map.remove(key)?;
        (now.saturating_sub(p.ts) <= self.ttl_micros).then_some(p)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Turns raw records into normalised Arrow batches. Holds the
/// request/response matching state across batches.
#[derive(Debug)]
pub struct Normalizer {
    cfg: IngestConfig,
    pending: Pending,
    stitch: crate::stitch::Stitcher,
    scratch: Vec<u8>,
    /// Text bytes per `events` column in the last batch: the next batch's
    /// builders start at that size instead of growing by doubling.
    sizes: ColumnSizes,
}

/// Derived per-message values (one `events` row); text borrowed from the
/// message where it can be.
#[derive(Default)]
struct Row<'r> {
    msg_index: i32,
    msg_kind: &'static str,
    jsonrpc_id: Option<Cow<'r, str>>,
    method: Option<Cow<'r, str>>,
    protocol_version: Option<Cow<'r, str>>,
    /// Results: the protocol version their request asked for.
    req_protocol_version: Option<Cow<'r, str>>,
    tool_name: Option<Cow<'r, str>>,
    resource_uri: Option<Cow<'r, str>>,
    prompt_name: Option<Cow<'r, str>>,
    args: Option<Args<'r>>,
    is_error: Option<bool>,
    error_code: Option<i64>,
    error_message: Option<Cow<'r, str>>,
    result: Option<ResultInfo>,
    tools_listed: Option<i32>,
    latency_ms: Option<f64>,
    header_mismatch: Option<bool>,
}

struct Args<'r> {
    bytes: i64,
    sha256: String,
    keys: Option<Vec<&'r str>>,
    preview: String,
    text: String,
    /// `None`: the same as `text` (nothing was encoded).
    decoded: Option<String>,
    max_len: Option<i64>,
    max_entropy: Option<f64>,
    urls: Vec<String>,
    hosts: Vec<String>,
    classes: Vec<&'static str>,
    schemes: Vec<String>,
    secret_types: Vec<&'static str>,
}

struct ResultInfo {
    bytes: i64,
    preview: String,
    text: String,
    secret_types: Vec<&'static str>,
    content_types: Vec<String>,
}

fn s_get<'a>(v: &Json<'a>, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Json::as_str)
}

pub(crate) fn id_text<'a>(v: &Json<'a>) -> Option<Cow<'a, str>> {
    match v.get("id")? {
        Json::Str(s) => Some(Cow::Borrowed(s)),
        Json::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Keys whose string value is a secret whatever it looks like.
fn sensitive_key(k: &str) -> Option<&'static str> {
    const KEYS: [(&str, &str); 9] = [
        ("password", "generic_password"),
        ("passwd", "generic_password"),
        ("pwd", "generic_password"),
        ("passphrase", "generic_password"),
        ("db_password", "generic_password"),
        ("client_secret", "generic_password"),
        ("aws_secret_access_key", "aws_secret_key"),
        ("aws_secret_key", "aws_secret_key"),
        ("secretaccesskey", "aws_secret_key"),
    ];
    KEYS.iter()
        .find(|(name, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, kind)| *kind)
}

const REDACTED_PASSWORD: &str = "[REDACTED:generic_password]";
const REDACTED_AWS_SECRET: &str = "[REDACTED:aws_secret_key]";

/// Collects string leaves (depth-first, object keys in byte order). Values of
/// sensitive keys are replaced by their redaction marker and the kind recorded.
fn leaves<'a>(v: &'a Json, out: &mut Vec<&'a str>, kinds: &mut Vec<&'static str>, depth: u32) {
    if depth > 128 {
        return;
    }
    match v {
        Json::Str(s) => out.push(s),
        Json::Array(a) => a.iter().for_each(|x| leaves(x, out, kinds, depth + 1)),
        Json::Object(m) => {
            for (k, x) in m.iter() {
                if let Json::Str(s) = x
                    && let Some(kind) = sensitive_key(k)
                    && s.chars().count() >= 4
                {
                    out.push(if kind == "aws_secret_key" {
                        REDACTED_AWS_SECRET
                    } else {
                        REDACTED_PASSWORD
                    });
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                    continue;
                }
                leaves(x, out, kinds, depth + 1);
            }
        }
        _ => {}
    }
}

fn join_capped(parts: &[&str]) -> String {
    let total: usize = parts.iter().map(|p| p.len() + 1).sum();
    let mut s = String::with_capacity(total.min(TEXT_CAP_BYTES * 2));
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(p);
        if s.len() > TEXT_CAP_BYTES * 2 {
            break; // the rest would be cut anyway
        }
    }
    s
}

/// `text` redacted and cut to [`TEXT_CAP_BYTES`], in `text`'s own buffer
/// when nothing was redacted.
fn redacted_capped(text: String, kinds: &mut Vec<&'static str>) -> String {
    let redacted = match redact(&text, kinds) {
        Cow::Owned(r) => Some(r),
        Cow::Borrowed(_) => None,
    };
    let mut out = redacted.unwrap_or(text);
    let keep = truncate_bytes(&out, TEXT_CAP_BYTES).len();
    out.truncate(keep);
    out
}

fn sorted_kinds(mut k: Vec<&'static str>) -> Vec<&'static str> {
    k.sort_unstable();
    k.dedup();
    k
}

impl Normalizer {
    /// A normaliser with empty matching state.
    pub fn new(cfg: IngestConfig) -> Self {
        let pending = Pending::new(cfg.pending_requests_max, cfg.pending_request_ttl_ms);
        let stitch = crate::stitch::Stitcher::new(
            cfg.session_gap_ms,
            cfg.pending_request_ttl_ms,
            cfg.pending_requests_max,
        );
        Normalizer {
            cfg,
            pending,
            stitch,
            scratch: Vec::with_capacity(4096),
            sizes: ColumnSizes::default(),
        }
    }

    /// Number of requests currently waiting for their response.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Validates and normalises `records`. Bad records become [`Rejected`];
    /// blank (whitespace-only) records are skipped. `Err` only on an internal
    /// Arrow failure.
    pub fn decode_batch(&mut self, records: Vec<RawRecord>) -> Result<DecodedBatch, IngestError> {
        self.decode(records, None)
    }

    /// [`decode_batch`](Self::decode_batch) with de-duplication: an
    /// envelope whose id and bytes are already in `dedup` is listed in
    /// `duplicates` and produces no rows; new ids are added to the window.
    pub fn decode_batch_dedup(
        &mut self,
        records: Vec<RawRecord>,
        dedup: &mut Dedup,
    ) -> Result<DecodedBatch, IngestError> {
        self.decode(records, Some(dedup))
    }

    fn decode(
        &mut self,
        records: Vec<RawRecord>,
        mut dedup: Option<&mut Dedup>,
    ) -> Result<DecodedBatch, IngestError> {
        let mut duplicates = Vec::new();
        let mut ev = EventsBuilder::with_capacity(records.len(), &self.sizes);
        let mut td = ToolDefsBuilder::default();
        let mut md = MamlDocsBuilder::default();
        let mut accepted = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        // Each line's JSON tree, emptied between lines (it keeps its
        // largest block, so a batch allocates a few times at most).
        let mut arena = json::Bump::with_capacity(64 * 1024);
        for rec in records {
            arena.reset();
            if let Some(reason) = rec.refused {
                rejected.push(Rejected {
                    reason,
                    source: rec.source,
                    raw: rec.bytes,
                });
                continue;
            }
            let raw_len = rec.oversize.unwrap_or(rec.bytes.len());
            if rec.oversize.is_some() || rec.bytes.len() > self.cfg.max_line_bytes {
                rejected.push(Rejected {
                    reason: format!("line is {raw_len} bytes, limit {}", self.cfg.max_line_bytes),
                    source: rec.source,
                    raw: rec.bytes,
                });
                continue;
            }
            // `simdutf8`'s compat check: std's answer and error position,
            // with SIMD (docs/benchmarks.md, 2026-12-07 morning).
            let text = match simdutf8::compat::from_utf8(&rec.bytes) {
                Ok(t) => t,
                Err(e) => {
                    rejected.push(Rejected {
                        reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        source: rec.source,
                        raw: rec.bytes,
                    });
                    continue;
                }
            };
            if text.trim().is_empty() {
                // Blank lines between NDJSON records are layout; an empty
                // Kafka message is a record without content.
                if let SourcePos::Kafka { .. } = rec.source {
                    rejected.push(Rejected {
                        reason: "empty message (no envelope in the value)".into(),
                        source: rec.source,
                        raw: rec.bytes,
                    });
                }
                continue;
            }
            match envelope::parse(text, &arena) {
                Err(reason) => rejected.push(Rejected {
                    reason,
                    source: rec.source,
                    raw: rec.bytes,
                }),
                Ok(mut env) => {
                    let event_id = match env.event_id.take() {
                        Some(id) => id.into_owned(),
                        None => derive_event_id(text),
                    };
                    // Hashed once: de-duplication and the ledger (payload hash).
                    let raw_blake3 = *blake3::hash(&rec.bytes).as_bytes();
                    if let Some(d) = dedup.as_deref_mut() {
                        match d.observe_hashed(&event_id, &raw_blake3) {
                            Seen::New => {}
                            Seen::Duplicate => {
                                duplicates.push(Duplicate {
                                    event_id,
                                    source: rec.source,
                                });
                                continue;
                            }
                            Seen::IdReused => tracing::warn!(
                                %event_id, source = %rec.source,
                                "event_id reused with different content: kept"
                            ),
                        }
                    }
                    if env.session_id.is_none() {
                        env.session_id = self.stitched_session(&env).map(Cow::Owned);
                    }
                    self.normalize(&env, &event_id, raw_len as i64, &mut ev, &mut td, &mut md)?;
                    accepted.push(Accepted {
                        event_id,
                        ts_micros: env.ts_micros,
                        raw: rec.bytes,
                        raw_blake3,
                        source: rec.source,
                    });
                }
            }
        }
        Ok(DecodedBatch {
            events: {
                let events = ev.finish()?;
                self.sizes = ColumnSizes::of(&events);
                events
            },
            tool_defs: td.finish()?,
            maml_docs: md.finish()?,
            accepted,
            rejected,
            duplicates,
        })
    }

    fn normalize(
        &mut self,
        env: &Envelope,
        event_id: &str,
        raw_bytes: i64,
        ev: &mut EventsBuilder,
        td: &mut ToolDefsBuilder,
        md: &mut MamlDocsBuilder,
    ) -> Result<(), IngestError> {
        self.pending.expire(env.ts_micros);
        let principal = env
            .auth
            .as_ref()
            .and_then(|a| a.sub.as_deref().or(a.client_id.as_deref()))
            .or(env.client_name.as_deref());
        let extra = if env.extra.is_empty() {
            None
        } else {
            let mut buf = Vec::with_capacity(64);
            write_members(env.extra, &mut buf);
            Some(json::into_string(buf))
        };
        let elems: &[Json] = match &env.message {
            Json::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        if elems.is_empty() {
            // an empty JSON-RPC batch is invalid; keep one row so nothing vanishes
            let row = Row {
                msg_kind: "invalid",
                ..Row::default()
            };
            ev.append(env, event_id, principal, extra.as_deref(), raw_bytes, &row)?;
        }
        for (i, m) in elems.iter().enumerate() {
            let mut row = self.message_row(env, m);
            row.msg_index = i32::try_from(i).unwrap_or(i32::MAX);
            if row.tools_listed.is_some()
                && let Some(tools) = m
                    .get("result")
                    .and_then(|r| r.get("tools"))
                    .and_then(Json::as_array)
            {
                for t in tools {
                    td.append(env, event_id, principal, t, &mut self.scratch);
                }
            }
            let mut found = Vec::new();
            find_maml(m, &mut found);
            for f in &found {
                md.append(
                    env,
                    event_id,
                    principal,
                    &row,
                    f,
                    self.cfg.maml_keys.as_deref(),
                );
            }
            ev.append(env, event_id, principal, extra.as_deref(), raw_bytes, &row)?;
        }
        Ok(())
    }

    /// The derived session of a message without a session id ([`crate::stitch`]).
    fn stitched_session(&mut self, env: &Envelope) -> Option<String> {
        let first = match &env.message {
            Json::Array(a) => a.first()?,
            m => m,
        };
        let auth = env.auth.as_ref();
        let principal = auth
            .and_then(|a| a.sub.as_deref().or(a.client_id.as_deref()))
            .or_else(|| env.http.as_ref().and_then(|h| h.src_ip.as_deref()))
            .unwrap_or("");
        // One bearer token is one client's login: two runs of the same principal with
        // their own tokens are two parties.
        let token = auth.and_then(|a| a.token_fp.as_deref()).unwrap_or("");
        let (client, version) = crate::stitch::meta_client(first).unwrap_or((
            env.client_name.as_deref().unwrap_or(""),
            env.client_version.as_deref().unwrap_or(""),
        ));
        let party = [env.server_id.as_ref(), principal, client, version].join("\u{0}");
        // One client's request counter is one connection: the source address and user
        // agent it sends from, with the client it announces.
        let http = env.http.as_ref();
        let src_ip = http.and_then(|h| h.src_ip.as_deref()).unwrap_or("");
        let agent = http.and_then(|h| h.user_agent.as_deref()).unwrap_or("");
        let connection = if src_ip.is_empty() || agent.is_empty() {
            String::new()
        } else {
            [env.server_id.as_ref(), src_ip, agent, client, version].join("\u{0}")
        };
        let who = crate::stitch::Sender {
            server: &env.server_id,
            party: &party,
            login: token,
            connection: &connection,
            from_client: env.direction == "c2s",
        };
        Some(self.stitch.session(who, first, env.ts_micros))
    }

    fn key(env: &Envelope, req_direction: &str, id: &str) -> String {
        let sess = env.session_id.as_deref().unwrap_or("");
        let mut k = String::with_capacity(env.server_id.len() + sess.len() + id.len() + 8);
        k.push_str(&env.server_id);
        k.push('\u{0}');
        k.push_str(sess);
        k.push('\u{0}');
        k.push_str(req_direction);
        k.push('\u{0}');
        k.push_str(id);
        k
    }

    fn message_row<'r>(&mut self, env: &'r Envelope, m: &'r Json) -> Row<'r> {
        let mut row = Row {
            msg_kind: "invalid",
            ..Row::default()
        };
        if !matches!(m, Json::Object(_)) {
            return row;
        }
        row.jsonrpc_id = id_text(m);
        let body_method = m.get("method").and_then(Json::as_str);
        let has_id = m.get("id").is_some_and(|v| !v.is_null());
        let params = m.get("params");
        let result = m.get("result");
        if let Some(method) = body_method {
            row.msg_kind = if m.get("id").is_some() {
                "request"
            } else {
                "notification"
            };
            row.method = Some(Cow::Borrowed(method));
            let p = params.unwrap_or(&Json::Null);
            let pname = s_get(p, "name");
            match method {
                "tools/call" => row.tool_name = pname.map(Cow::Borrowed),
                "resources/read" | "resources/subscribe" => {
                    row.resource_uri = s_get(p, "uri").map(Cow::Borrowed);
                }
                "prompts/get" => row.prompt_name = pname.map(Cow::Borrowed),
                _ => {}
            }
            row.protocol_version = s_get(p, "protocolVersion")
                .or_else(|| p.get("_meta").and_then(|x| s_get(x, "protocolVersion")))
                .map(Cow::Borrowed);
            row.args = match method {
                "tools/call" | "prompts/get" => p.get("arguments").map(|a| self.args(a, p, true)),
                _ => params.map(|a| self.args(a, p, false)),
            };
            if row.msg_kind == "request"
                && let Some(id) = &row.jsonrpc_id
            {
                let key = Self::key(env, env.direction, id);
                self.pending.insert(
                    key,
                    PendingReq {
                        ts: env.ts_micros,
                        seq: 0,
                        method: owned(&row.method),
                        tool_name: owned(&row.tool_name),
                        resource_uri: owned(&row.resource_uri),
                        prompt_name: owned(&row.prompt_name),
                        protocol_version: owned(&row.protocol_version),
                    },
                );
            }
        } else if result.is_some() || m.get("error").is_some() {
            row.msg_kind = if result.is_some() { "result" } else { "error" };
            if has_id && let Some(id) = &row.jsonrpc_id {
                let req_dir = if env.direction == "s2c" { "c2s" } else { "s2c" };
                let key = Self::key(env, req_dir, id);
                if let Some(req) = self.pending.take(&key, env.ts_micros) {
                    row.latency_ms = Some((env.ts_micros - req.ts) as f64 / 1000.0);
                    row.method = req.method.map(Cow::Owned);
                    row.tool_name = req.tool_name.map(Cow::Owned);
                    row.resource_uri = req.resource_uri.map(Cow::Owned);
                    row.prompt_name = req.prompt_name.map(Cow::Owned);
                    row.req_protocol_version = req.protocol_version.map(Cow::Owned);
                }
            }
            if let Some(err) = m.get("error") {
                row.error_code = err.get("code").and_then(Json::as_i64);
                row.error_message = s_get(err, "message").map(redact_quiet);
            }
            if let Some(r) = result {
                row.protocol_version = s_get(r, "protocolVersion")
                    .or_else(|| r.get("_meta").and_then(|x| s_get(x, "protocolVersion")))
                    .map(Cow::Borrowed);
                row.is_error = match r.get("isError") {
                    Some(Json::Bool(b)) => Some(*b),
                    _ if row.method.as_deref() == Some("tools/call") => Some(false),
                    _ => None,
                };
                if let Some(tools) = r.get("tools").and_then(Json::as_array)
                    && (row.method.is_none() || row.method.as_deref() == Some("tools/list"))
                {
                    row.tools_listed = Some(i32::try_from(tools.len()).unwrap_or(i32::MAX));
                }
                row.result = Some(self.result_info(r));
            }
        }
        if row.protocol_version.is_none() {
            row.protocol_version = env
                .http
                .as_ref()
                .and_then(|h| h.hdr_protocol_version.as_deref().map(Cow::Borrowed));
        }
        if env.direction == "c2s"
            && let Some(h) = &env.http
            && (h.hdr_mcp_method.is_some() || h.hdr_mcp_name.is_some())
        {
            let p = params.unwrap_or(&Json::Null);
            let method_bad = h
                .hdr_mcp_method
                .as_deref()
                .is_some_and(|hm| Some(hm) != body_method);
            let name_bad = h
                .hdr_mcp_name
                .as_deref()
                .is_some_and(|hn| Some(hn) != s_get(p, "name") && Some(hn) != s_get(p, "uri"));
            row.header_mismatch = Some(method_bad || name_bad);
        }
        row
    }

    fn args<'r>(&mut self, a: &'r Json, params: &'r Json, named: bool) -> Args<'r> {
        self.scratch.clear();
        write_canonical(a, &mut self.scratch);
        let canon = json::as_text(&self.scratch);
        let bytes = canon.len() as i64;
        let sha256 = sha256_hex(canon.as_bytes());
        let mut kinds: Vec<&'static str> = Vec::new();
        let preview = {
            let red = redact(&canon, &mut kinds);
            truncate_chars(&red, PREVIEW_CHARS).to_owned()
        };
        // members are sorted by key bytes already
        let keys = a
            .as_object()
            .map(|m| m.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        let mut parts: Vec<&str> = Vec::new();
        if named {
            // tools/call / prompts/get: the name param precedes the arguments
            if let Some(n) = s_get(params, "name") {
                parts.push(n);
            }
            if let Some(u) = s_get(params, "uri") {
                parts.push(u);
            }
        }
        let first_leaf = parts.len();
        leaves(a, &mut parts, &mut kinds, 0);
        let mut longest: Option<&str> = None;
        let mut longest_len = 0usize;
        let mut found = Vec::new();
        for leaf in &parts[first_leaf..] {
            let n = leaf.chars().count();
            if longest.is_none() || n > longest_len {
                longest = Some(leaf);
                longest_len = n;
            }
            // A MAML front matter declares URIs (permissions, requires) and
            // its code blocks are code: the URLs a call reaches are in the prose.
            urls::extract(&maml::prose(leaf), &mut found);
        }
        let joined = join_capped(&parts);
        let text = redacted_capped(joined, &mut kinds);
        let decoded = match decode_for_rules(&text) {
            Cow::Owned(d) if d != text => Some(redacted_capped(d, &mut kinds)),
            _ => None,
        };
        let mut urls_out = Vec::with_capacity(found.len());
        let mut hosts = Vec::new();
        let mut classes = Vec::new();
        let mut schemes = Vec::with_capacity(found.len());
        for f in found {
            urls_out.push(redact(&f.url, &mut kinds).into_owned());
            schemes.push(f.scheme);
            if let Some(h) = f.host {
                classes.push(urls::host_class(&h));
                hosts.push(h);
            }
        }
        Args {
            bytes,
            sha256,
            keys,
            preview,
            text,
            decoded,
            max_len: longest.map(|_| longest_len as i64),
            max_entropy: longest.map(shannon_entropy),
            urls: urls_out,
            hosts,
            classes,
            schemes,
            secret_types: sorted_kinds(kinds),
        }
    }

    fn result_info(&mut self, r: &Json) -> ResultInfo {
        self.scratch.clear();
        write_canonical(r, &mut self.scratch);
        let canon = json::as_text(&self.scratch);
        let mut kinds: Vec<&'static str> = Vec::new();
        let preview = truncate_chars(&redact(&canon, &mut kinds), PREVIEW_CHARS).to_owned();
        let mut parts: Vec<&str> = Vec::new();
        for key in ["content", "contents"] {
            if let Some(items) = r.get(key).and_then(Json::as_array) {
                parts.extend(items.iter().filter_map(|c| s_get(c, "text")));
            }
        }
        if let Some(msgs) = r.get("messages").and_then(Json::as_array) {
            parts.extend(
                msgs.iter()
                    .filter_map(|m| m.get("content").and_then(|c| s_get(c, "text"))),
            );
        }
        if let Some(sc) = r.get("structuredContent") {
            leaves(sc, &mut parts, &mut kinds, 0);
        }
        let joined = join_capped(&parts);
        let text = redacted_capped(joined, &mut kinds);
        let mut content_types: Vec<String> = r
            .get("content")
            .and_then(Json::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| s_get(c, "type"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        content_types.sort_unstable();
        content_types.dedup();
        ResultInfo {
            bytes: canon.len() as i64,
            preview,
            text,
            secret_types: sorted_kinds(kinds),
            content_types,
        }
    }
}

/// The event id [`Normalizer::decode_batch`] assigns to an accepted
/// envelope's raw bytes: its `event_id`, else the derived `d-…` id. `None`
/// for bytes that are not UTF-8 (never accepted). Used to rebuild the
/// de-duplication window from the ledger.
pub fn event_id_of(raw: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        event_id: Option<serde_json::Value>,
    }
    let text = std::str::from_utf8(raw).ok()?;
    match serde_json::from_str::<IdOnly>(text) {
        Ok(IdOnly {
            event_id: Some(serde_json::Value::String(id)),
        }) => Some(id),
        _ => Some(derive_event_id(text)),
    }
}

/// An owned copy of a row's text, for what outlives the message.
fn owned(s: &Option<Cow<'_, str>>) -> Option<String> {
    s.as_deref().map(str::to_owned)
}

/// `d-` + the first 32 hex chars of BLAKE3 of the canonical envelope.
fn derive_event_id(text: &str) -> String {
    let canon = match json::parse(text, &json::Bump::new()) {
        Ok(v) => canonical_string(&v),
        Err(_) => text.to_owned(),
    };
    let h = blake3::hash(canon.as_bytes()).to_hex();
    format!("d-{}", &h.as_str()[..32])
}

// ---------------------------------------------------------------- builders

type ListB = ListBuilder<StringBuilder>;

fn push_list<S: AsRef<str>>(b: &mut ListB, items: Option<&[S]>) {
    match items {
        Some(items) => {
            for i in items {
                b.values().append_value(i.as_ref());
            }
            b.append(true);
        }
        None => b.append(false),
    }
}

struct EventsBuilder {
    event_id: StringBuilder,
    msg_index: Int32Builder,
    ts: TimestampMicrosecondBuilder,
    server_id: StringBuilder,
    direction: StringBuilder,
    transport: StringBuilder,
    session_id: StringBuilder,
    gateway_id: StringBuilder,
    server_name: StringBuilder,
    server_version: StringBuilder,
    client_name: StringBuilder,
    client_version: StringBuilder,
    http_method: StringBuilder,
    http_status: Int32Builder,
    src_ip: StringBuilder,
    user_agent: StringBuilder,
    origin: StringBuilder,
    host: StringBuilder,
    hdr_protocol_version: StringBuilder,
    hdr_mcp_method: StringBuilder,
    hdr_mcp_name: StringBuilder,
    auth_sub: StringBuilder,
    auth_iss: StringBuilder,
    auth_aud: StringBuilder,
    auth_client_id: StringBuilder,
    auth_scopes: StringBuilder,
    auth_exp: Int64Builder,
    token_fp: StringBuilder,
    aud_ok: BooleanBuilder,
    principal: StringBuilder,
    labels: MapBuilder<StringBuilder, StringBuilder>,
    extra: StringBuilder,
    msg_kind: StringBuilder,
    jsonrpc_id: StringBuilder,
    method: StringBuilder,
    protocol_version: StringBuilder,
    req_protocol_version: StringBuilder,
    tool_name: StringBuilder,
    resource_uri: StringBuilder,
    prompt_name: StringBuilder,
    args_bytes: Int64Builder,
    args_sha256: StringBuilder,
    args_keys: ListB,
    args_preview: StringBuilder,
    args_text: StringBuilder,
    args_decoded: StringBuilder,
    args_max_len: Int64Builder,
    args_max_entropy: Float64Builder,
    args_urls: ListB,
    args_url_hosts: ListB,
    args_host_classes: ListB,
    args_url_schemes: ListB,
    args_secret_types: ListB,
    is_error: BooleanBuilder,
    error_code: Int64Builder,
    error_message: StringBuilder,
    result_bytes: Int64Builder,
    result_preview: StringBuilder,
    result_text: StringBuilder,
    result_secret_types: ListB,
    content_types: ListB,
    tools_listed: Int32Builder,
    latency_ms: Float64Builder,
    header_mismatch: BooleanBuilder,
    raw_bytes: Int64Builder,
}

/// Per `events` column, the bytes of text (of list items, for a list of
/// text) in one batch and its row count.
#[derive(Debug, Default)]
struct ColumnSizes {
    rows: usize,
    /// (text bytes, list items) by column index; empty before a first batch.
    bytes: Vec<(usize, usize)>,
}

impl ColumnSizes {
    fn of(batch: &RecordBatch) -> Self {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::DataType;
        let bytes = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Utf8 => (c.as_string::<i32>().values().len(), 0),
                DataType::List(_) => {
                    let items = c.as_list::<i32>().values();
                    match items.as_string_opt::<i32>() {
                        Some(t) => (t.values().len(), t.len()),
                        None => (0, items.len()),
                    }
                }
                _ => (0, 0),
            })
            .collect();
        ColumnSizes {
            rows: batch.num_rows(),
            bytes,
        }
    }

    /// Starting (text bytes, list items) for column `name` in a batch of
    /// `n` rows: the last batch's, scaled to `n` rows, plus an eighth (16
    /// bytes a row and no items before a first batch).
    fn hint(&self, name: &str, n: usize) -> (usize, usize) {
        let last = events_schema()
            .index_of(name)
            .ok()
            .and_then(|i| self.bytes.get(i));
        match last {
            Some(&(b, items)) if self.rows > 0 => {
                let scale = |x: usize| (x.saturating_mul(n) / self.rows).saturating_add(x / 8);
                (scale(b), scale(items))
            }
            _ => (n * 16, 0),
        }
    }
}

impl EventsBuilder {
    fn with_capacity(n: usize, sizes: &ColumnSizes) -> Self {
        let s = |name: &str| StringBuilder::with_capacity(n, sizes.hint(name, n).0);
        let l = |name: &str| {
            let (bytes, items) = sizes.hint(name, n);
            ListBuilder::with_capacity(StringBuilder::with_capacity(items, bytes), n)
        };
        EventsBuilder {
            event_id: s("event_id"),
            msg_index: Int32Builder::with_capacity(n),
            ts: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            server_id: s("server_id"),
            direction: s("direction"),
            transport: s("transport"),
            session_id: s("session_id"),
            gateway_id: s("gateway_id"),
            server_name: s("server_name"),
            server_version: s("server_version"),
            client_name: s("client_name"),
            client_version: s("client_version"),
            http_method: s("http_method"),
            http_status: Int32Builder::with_capacity(n),
            src_ip: s("src_ip"),
            user_agent: s("user_agent"),
            origin: s("origin"),
            host: s("host"),
            hdr_protocol_version: s("hdr_protocol_version"),
            hdr_mcp_method: s("hdr_mcp_method"),
            hdr_mcp_name: s("hdr_mcp_name"),
            auth_sub: s("auth_sub"),
            auth_iss: s("auth_iss"),
            auth_aud: s("auth_aud"),
            auth_client_id: s("auth_client_id"),
            auth_scopes: s("auth_scopes"),
            auth_exp: Int64Builder::with_capacity(n),
            token_fp: s("token_fp"),
            aud_ok: BooleanBuilder::with_capacity(n),
            principal: s("principal"),
            labels: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            extra: s("extra"),
            msg_kind: s("msg_kind"),
            jsonrpc_id: s("jsonrpc_id"),
            method: s("method"),
            protocol_version: s("protocol_version"),
            req_protocol_version: s("req_protocol_version"),
            tool_name: s("tool_name"),
            resource_uri: s("resource_uri"),
            prompt_name: s("prompt_name"),
            args_bytes: Int64Builder::with_capacity(n),
            args_sha256: s("args_sha256"),
            args_keys: l("args_keys"),
            args_preview: s("args_preview"),
            args_text: s("args_text"),
            args_decoded: s("args_decoded"),
            args_max_len: Int64Builder::with_capacity(n),
            args_max_entropy: Float64Builder::with_capacity(n),
            args_urls: l("args_urls"),
            args_url_hosts: l("args_url_hosts"),
            args_host_classes: l("args_host_classes"),
            args_url_schemes: l("args_url_schemes"),
            args_secret_types: l("args_secret_types"),
            is_error: BooleanBuilder::with_capacity(n),
            error_code: Int64Builder::with_capacity(n),
            error_message: s("error_message"),
            result_bytes: Int64Builder::with_capacity(n),
            result_preview: s("result_preview"),
            result_text: s("result_text"),
            result_secret_types: l("result_secret_types"),
            content_types: l("content_types"),
            tools_listed: Int32Builder::with_capacity(n),
            latency_ms: Float64Builder::with_capacity(n),
            header_mismatch: BooleanBuilder::with_capacity(n),
            raw_bytes: Int64Builder::with_capacity(n),
        }
    }

    fn append(
        &mut self,
        env: &Envelope,
        event_id: &str,
        principal: Option<&str>,
        extra: Option<&str>,
        raw_bytes: i64,
        row: &Row,
    ) -> Result<(), IngestError> {
        self.event_id.append_value(event_id);
        self.msg_index.append_value(row.msg_index);
        self.ts.append_value(env.ts_micros);
        self.server_id.append_value(&env.server_id);
        self.direction.append_value(env.direction);
        self.transport.append_option(env.transport);
        self.session_id.append_option(env.session_id.as_deref());
        self.gateway_id.append_option(env.gateway_id.as_deref());
        self.server_name.append_option(env.server_name.as_deref());
        self.server_version
            .append_option(env.server_version.as_deref());
        self.client_name.append_option(env.client_name.as_deref());
        self.client_version
            .append_option(env.client_version.as_deref());
        let h = env.http.as_ref();
        self.http_method
            .append_option(h.and_then(|h| h.method.as_deref()));
        self.http_status.append_option(h.and_then(|h| h.status));
        self.src_ip
            .append_option(h.and_then(|h| h.src_ip.as_deref()));
        self.user_agent
            .append_option(h.and_then(|h| h.user_agent.as_deref()));
        self.origin
            .append_option(h.and_then(|h| h.origin.as_deref()));
        self.host.append_option(h.and_then(|h| h.host.as_deref()));
        self.hdr_protocol_version
            .append_option(h.and_then(|h| h.hdr_protocol_version.as_deref()));
        self.hdr_mcp_method
            .append_option(h.and_then(|h| h.hdr_mcp_method.as_deref()));
        self.hdr_mcp_name
            .append_option(h.and_then(|h| h.hdr_mcp_name.as_deref()));
        let a = env.auth.as_ref();
        self.auth_sub
            .append_option(a.and_then(|a| a.sub.as_deref()));
        self.auth_iss
            .append_option(a.and_then(|a| a.iss.as_deref()));
        self.auth_aud
            .append_option(a.and_then(|a| a.aud.as_deref()));
        self.auth_client_id
            .append_option(a.and_then(|a| a.client_id.as_deref()));
        self.auth_scopes
            .append_option(a.and_then(|a| a.scopes.as_deref()));
        self.auth_exp.append_option(a.and_then(|a| a.exp));
        self.token_fp
            .append_option(a.and_then(|a| a.token_fp.as_deref()));
        self.aud_ok.append_option(a.and_then(|a| a.aud_ok));
        self.principal.append_option(principal);
        match &env.labels {
            Some(l) => {
                for (k, v) in l {
                    self.labels.keys().append_value(k);
                    self.labels.values().append_value(v);
                }
                self.labels.append(true)?;
            }
            None => self.labels.append(false)?,
        }
        self.extra.append_option(extra);
        self.msg_kind.append_value(row.msg_kind);
        self.jsonrpc_id.append_option(row.jsonrpc_id.as_deref());
        self.method.append_option(row.method.as_deref());
        self.protocol_version
            .append_option(row.protocol_version.as_deref());
        self.req_protocol_version
            .append_option(row.req_protocol_version.as_deref());
        self.tool_name.append_option(row.tool_name.as_deref());
        self.resource_uri.append_option(row.resource_uri.as_deref());
        self.prompt_name.append_option(row.prompt_name.as_deref());
        let g = row.args.as_ref();
        self.args_bytes.append_option(g.map(|g| g.bytes));
        self.args_sha256.append_option(g.map(|g| g.sha256.as_str()));
        push_list(&mut self.args_keys, g.and_then(|g| g.keys.as_deref()));
        self.args_preview
            .append_option(g.map(|g| g.preview.as_str()));
        self.args_text.append_option(g.map(|g| g.text.as_str()));
        self.args_decoded
            .append_option(g.map(|g| g.decoded.as_deref().unwrap_or(&g.text)));
        self.args_max_len.append_option(g.and_then(|g| g.max_len));
        self.args_max_entropy
            .append_option(g.and_then(|g| g.max_entropy));
        push_list(&mut self.args_urls, g.map(|g| g.urls.as_slice()));
        push_list(&mut self.args_url_hosts, g.map(|g| g.hosts.as_slice()));
        push_list(&mut self.args_host_classes, g.map(|g| g.classes.as_slice()));
        push_list(&mut self.args_url_schemes, g.map(|g| g.schemes.as_slice()));
        push_list(
            &mut self.args_secret_types,
            g.map(|g| g.secret_types.as_slice()),
        );
        self.is_error.append_option(row.is_error);
        self.error_code.append_option(row.error_code);
        self.error_message
            .append_option(row.error_message.as_deref());
        let r = row.result.as_ref();
        self.result_bytes.append_option(r.map(|r| r.bytes));
        self.result_preview
            .append_option(r.map(|r| r.preview.as_str()));
        self.result_text.append_option(r.map(|r| r.text.as_str()));
        push_list(
            &mut self.result_secret_types,
            r.map(|r| r.secret_types.as_slice()),
        );
        push_list(
            &mut self.content_types,
            r.map(|r| r.content_types.as_slice()),
        );
        self.tools_listed.append_option(row.tools_listed);
        self.latency_ms.append_option(row.latency_ms);
        self.header_mismatch.append_option(row.header_mismatch);
        self.raw_bytes.append_value(raw_bytes);
        Ok(())
    }

    fn finish(mut self) -> Result<RecordBatch, IngestError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.msg_index.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.server_id.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.transport.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.gateway_id.finish()),
            Arc::new(self.server_name.finish()),
            Arc::new(self.server_version.finish()),
            Arc::new(self.client_name.finish()),
            Arc::new(self.client_version.finish()),
            Arc::new(self.http_method.finish()),
            Arc::new(self.http_status.finish()),
            Arc::new(self.src_ip.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.origin.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.hdr_protocol_version.finish()),
            Arc::new(self.hdr_mcp_method.finish()),
            Arc::new(self.hdr_mcp_name.finish()),
            Arc::new(self.auth_sub.finish()),
            Arc::new(self.auth_iss.finish()),
            Arc::new(self.auth_aud.finish()),
            Arc::new(self.auth_client_id.finish()),
            Arc::new(self.auth_scopes.finish()),
            Arc::new(self.auth_exp.finish()),
            Arc::new(self.token_fp.finish()),
            Arc::new(self.aud_ok.finish()),
            Arc::new(self.principal.finish()),
            Arc::new(self.labels.finish()),
            Arc::new(self.extra.finish()),
            Arc::new(self.msg_kind.finish()),
            Arc::new(self.jsonrpc_id.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.protocol_version.finish()),
            Arc::new(self.req_protocol_version.finish()),
            Arc::new(self.tool_name.finish()),
            Arc::new(self.resource_uri.finish()),
            Arc::new(self.prompt_name.finish()),
            Arc::new(self.args_bytes.finish()),
            Arc::new(self.args_sha256.finish()),
            Arc::new(self.args_keys.finish()),
            Arc::new(self.args_preview.finish()),
            Arc::new(self.args_text.finish()),
            Arc::new(self.args_decoded.finish()),
            Arc::new(self.args_max_len.finish()),
            Arc::new(self.args_max_entropy.finish()),
            Arc::new(self.args_urls.finish()),
            Arc::new(self.args_url_hosts.finish()),
            Arc::new(self.args_host_classes.finish()),
            Arc::new(self.args_url_schemes.finish()),
            Arc::new(self.args_secret_types.finish()),
            Arc::new(self.is_error.finish()),
            Arc::new(self.error_code.finish()),
            Arc::new(self.error_message.finish()),
            Arc::new(self.result_bytes.finish()),
            Arc::new(self.result_preview.finish()),
            Arc::new(self.result_text.finish()),
            Arc::new(self.result_secret_types.finish()),
            Arc::new(self.content_types.finish()),
            Arc::new(self.tools_listed.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.header_mismatch.finish()),
            Arc::new(self.raw_bytes.finish()),
        ];
        Ok(RecordBatch::try_new(events_schema(), cols)?)
    }
}

struct ToolDefsBuilder {
    event_id: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    server_id: StringBuilder,
    session_id: StringBuilder,
    principal: StringBuilder,
    tool_name: StringBuilder,
    def_sha256: StringBuilder,
    desc_sha256: StringBuilder,
    schema_sha256: StringBuilder,
    desc_len: Int64Builder,
    desc_preview: StringBuilder,
    description: StringBuilder,
    desc_invisible_chars: Int32Builder,
    input_schema: StringBuilder,
}

impl Default for ToolDefsBuilder {
    fn default() -> Self {
        ToolDefsBuilder {
            event_id: StringBuilder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            server_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            principal: StringBuilder::new(),
            tool_name: StringBuilder::new(),
            def_sha256: StringBuilder::new(),
            desc_sha256: StringBuilder::new(),
            schema_sha256: StringBuilder::new(),
            desc_len: Int64Builder::new(),
            desc_preview: StringBuilder::new(),
            description: StringBuilder::new(),
            desc_invisible_chars: Int32Builder::new(),
            input_schema: StringBuilder::new(),
        }
    }
}

fn schema_descriptions<'a>(v: &'a Json, out: &mut Vec<&'a str>, depth: u32) {
    if depth > 64 {
        return;
    }
    match v {
        Json::Object(m) => {
            for (k, x) in m.iter() {
                if *k == "description"
                    && let Json::Str(s) = x
                {
                    out.push(s);
                } else {
                    schema_descriptions(x, out, depth + 1);
                }
            }
        }
        Json::Array(a) => a
            .iter()
            .for_each(|x| schema_descriptions(x, out, depth + 1)),
        _ => {}
    }
}

impl ToolDefsBuilder {
    fn append(
        &mut self,
        env: &Envelope,
        event_id: &str,
        principal: Option<&str>,
        tool: &Json,
        scratch: &mut Vec<u8>,
    ) {
        let Some(name) = s_get(tool, "name") else {
            return; // not a tool definition
        };
        let desc = s_get(tool, "description").unwrap_or("");
        scratch.clear();
        write_canonical(tool, scratch);
        let def_sha = sha256_hex(scratch);
        let schema = tool.get("inputSchema");
        scratch.clear();
        write_canonical(schema.unwrap_or(&Json::Null), scratch);
        let schema_sha = sha256_hex(scratch);
        let input_schema = schema.map(|_| json::as_text(scratch).into_owned());
        let mut all = vec![desc];
        if let Some(s) = schema {
            schema_descriptions(s, &mut all, 0);
        }
        let description = all.join("\n");
        let invisible = description.chars().filter(|c| is_invisible(*c)).count();
        self.event_id.append_value(event_id);
        self.ts.append_value(env.ts_micros);
        self.server_id.append_value(&env.server_id);
        self.session_id.append_option(env.session_id.as_deref());
        self.principal.append_option(principal);
        self.tool_name.append_value(name);
        self.def_sha256.append_value(def_sha);
        self.desc_sha256.append_value(sha256_hex(desc.as_bytes()));
        self.schema_sha256.append_value(schema_sha);
        self.desc_len.append_value(desc.chars().count() as i64);
        self.desc_preview
            .append_value(redact_quiet(&visible_preview(desc, PREVIEW_CHARS)));
        self.description.append_value(redact_quiet(&description));
        self.desc_invisible_chars
            .append_value(i32::try_from(invisible).unwrap_or(i32::MAX));
        self.input_schema
            .append_option(input_schema.as_deref().map(|s| redact_quiet(s)));
    }

    fn finish(mut self) -> Result<RecordBatch, IngestError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.server_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.principal.finish()),
            Arc::new(self.tool_name.finish()),
            Arc::new(self.def_sha256.finish()),
            Arc::new(self.desc_sha256.finish()),
            Arc::new(self.schema_sha256.finish()),
            Arc::new(self.desc_len.finish()),
            Arc::new(self.desc_preview.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.desc_invisible_chars.finish()),
            Arc::new(self.input_schema.finish()),
        ];
        Ok(RecordBatch::try_new(tool_defs_schema(), cols)?)
    }
}

/// Where a MAML document was found in a message.
struct MamlFound<'a> {
    location: &'static str,
    text: &'a str,
}

/// Collects the MAML documents of one message: string leaves of `params`
/// ("args"), of `result.contents` ("resource": also a `*.maml.md` resource
/// without front matter, which is then an invalid document) and of the rest
/// of `result` ("result").
fn find_maml<'a>(m: &'a Json, out: &mut Vec<MamlFound<'a>>) {
    fn walk<'a>(v: &'a Json, loc: &'static str, out: &mut Vec<MamlFound<'a>>, depth: u32) {
        if depth > 64 {
            return;
        }
        match v {
            Json::Str(s) if maml::looks_like_maml(s) => out.push(MamlFound {
                location: loc,
                text: s,
            }),
            Json::Array(a) => a.iter().for_each(|x| walk(x, loc, out, depth + 1)),
            Json::Object(o) => o.iter().for_each(|(_, x)| walk(x, loc, out, depth + 1)),
            _ => {}
        }
    }
    if let Some(p) = m.get("params") {
        walk(p, "args", out, 0);
    }
    let Some(Json::Object(r)) = m.get("result") else {
        return;
    };
    for (k, v) in r.iter() {
        if *k == "contents"
            && let Json::Array(items) = v
        {
            for item in items.iter() {
                let text = s_get(item, "text");
                let named = s_get(item, "uri").is_some_and(|u| {
                    u.split(['?', '#'])
                        .next()
                        .is_some_and(|p| p.to_ascii_lowercase().ends_with(".maml.md"))
                });
                match text {
                    Some(t) if named || maml::looks_like_maml(t) => out.push(MamlFound {
                        location: "resource",
                        text: t,
                    }),
                    _ => walk(item, "resource", out, 1),
                }
            }
        } else {
            walk(v, "result", out, 1);
        }
    }
}

struct MamlDocsBuilder {
    event_id: StringBuilder,
    msg_index: Int32Builder,
    ts: TimestampMicrosecondBuilder,
    server_id: StringBuilder,
    session_id: StringBuilder,
    principal: StringBuilder,
    direction: StringBuilder,
    method: StringBuilder,
    tool_name: StringBuilder,
    resource_uri: StringBuilder,
    location: StringBuilder,
    maml_version: StringBuilder,
    doc_id: StringBuilder,
    doc_type: StringBuilder,
    origin: StringBuilder,
    valid: BooleanBuilder,
    errors: StringBuilder,
    perm_read: ListB,
    perm_write: ListB,
    perm_execute: ListB,
    perm_foreign: ListB,
    code_blocks: Int32Builder,
    code_langs: ListB,
    code_text: StringBuilder,
    intent_text: StringBuilder,
    sections: ListB,
    sig_method: StringBuilder,
    sig_status: StringBuilder,
    digest: StringBuilder,
    roundtrip_ok: BooleanBuilder,
    roundtrip_issue: StringBuilder,
    doc_bytes: Int64Builder,
}

impl Default for MamlDocsBuilder {
    fn default() -> Self {
        MamlDocsBuilder {
            event_id: StringBuilder::new(),
            msg_index: Int32Builder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            server_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            principal: StringBuilder::new(),
            direction: StringBuilder::new(),
            method: StringBuilder::new(),
            tool_name: StringBuilder::new(),
            resource_uri: StringBuilder::new(),
            location: StringBuilder::new(),
            maml_version: StringBuilder::new(),
            doc_id: StringBuilder::new(),
            doc_type: StringBuilder::new(),
            origin: StringBuilder::new(),
            valid: BooleanBuilder::new(),
            errors: StringBuilder::new(),
            perm_read: ListB::new(StringBuilder::new()),
            perm_write: ListB::new(StringBuilder::new()),
            perm_execute: ListB::new(StringBuilder::new()),
            perm_foreign: ListB::new(StringBuilder::new()),
            code_blocks: Int32Builder::new(),
            code_langs: ListB::new(StringBuilder::new()),
            code_text: StringBuilder::new(),
            intent_text: StringBuilder::new(),
            sections: ListB::new(StringBuilder::new()),
            sig_method: StringBuilder::new(),
            sig_status: StringBuilder::new(),
            digest: StringBuilder::new(),
            roundtrip_ok: BooleanBuilder::new(),
            roundtrip_issue: StringBuilder::new(),
            doc_bytes: Int64Builder::new(),
        }
    }
}

impl MamlDocsBuilder {
    fn append(
        &mut self,
        env: &Envelope,
        event_id: &str,
        principal: Option<&str>,
        row: &Row,
        found: &MamlFound<'_>,
        keys: Option<&dyn maml::SignatureCheck>,
    ) {
        let d = maml::analyze_with(found.text, keys);
        self.event_id.append_value(event_id);
        self.msg_index.append_value(row.msg_index);
        self.ts.append_value(env.ts_micros);
        self.server_id.append_value(&env.server_id);
        self.session_id.append_option(env.session_id.as_deref());
        self.principal.append_option(principal);
        self.direction.append_value(env.direction);
        self.method.append_option(row.method.as_deref());
        self.tool_name.append_option(row.tool_name.as_deref());
        self.resource_uri.append_option(row.resource_uri.as_deref());
        self.location.append_value(found.location);
        self.maml_version.append_option(d.version.as_deref());
        self.doc_id.append_option(d.id.as_deref());
        self.doc_type.append_option(d.doc_type.as_deref());
        self.origin.append_option(d.origin.as_deref());
        self.valid.append_value(d.valid());
        self.errors
            .append_option((!d.errors.is_empty()).then(|| d.errors.join("; ")));
        push_list(&mut self.perm_read, Some(&d.perm_read));
        push_list(&mut self.perm_write, Some(&d.perm_write));
        push_list(&mut self.perm_execute, Some(&d.perm_execute));
        push_list(&mut self.perm_foreign, Some(&d.perm_foreign));
        self.code_blocks.append_value(d.code_blocks);
        push_list(&mut self.code_langs, Some(&d.code_langs));
        self.code_text.append_value(&d.code_text);
        self.intent_text.append_value(&d.intent_text);
        push_list(&mut self.sections, Some(&d.sections));
        self.sig_method.append_option(d.sig_method.as_deref());
        self.sig_status.append_value(d.sig_status.as_str());
        self.digest.append_value(&d.digest);
        self.roundtrip_ok.append_value(d.roundtrip_issue.is_none());
        self.roundtrip_issue
            .append_option(d.roundtrip_issue.as_deref());
        self.doc_bytes.append_value(d.bytes);
    }

    fn finish(mut self) -> Result<RecordBatch, IngestError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.msg_index.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.server_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.principal.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.tool_name.finish()),
            Arc::new(self.resource_uri.finish()),
            Arc::new(self.location.finish()),
            Arc::new(self.maml_version.finish()),
            Arc::new(self.doc_id.finish()),
            Arc::new(self.doc_type.finish()),
            Arc::new(self.origin.finish()),
            Arc::new(self.valid.finish()),
            Arc::new(self.errors.finish()),
            Arc::new(self.perm_read.finish()),
            Arc::new(self.perm_write.finish()),
            Arc::new(self.perm_execute.finish()),
            Arc::new(self.perm_foreign.finish()),
            Arc::new(self.code_blocks.finish()),
            Arc::new(self.code_langs.finish()),
            Arc::new(self.code_text.finish()),
            Arc::new(self.intent_text.finish()),
            Arc::new(self.sections.finish()),
            Arc::new(self.sig_method.finish()),
            Arc::new(self.sig_status.finish()),
            Arc::new(self.digest.finish()),
            Arc::new(self.roundtrip_ok.finish()),
            Arc::new(self.roundtrip_issue.finish()),
            Arc::new(self.doc_bytes.finish()),
        ];
        Ok(RecordBatch::try_new(maml_docs_schema(), cols)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, args: &str) -> RawRecord {
        let text = format!(
            r#"{{"ts":"2026-09-01T10:00:00Z","server_id":"s","direction":"c2s","event_id":"{id}","message":{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{args}}}}}}}"#
        );
        RawRecord::file_line(text.into_bytes(), "t.ndjson", 1)
    }

    #[test]
    fn builders_start_at_the_last_batchs_text_sizes() {
        let mut n = Normalizer::new(IngestConfig::default());
        let before = n.sizes.hint("args_text", 4);
        assert_eq!(before, (4 * 16, 0), "no batch yet: the default");
        let long = format!(r#"{{"q":"{}"}}"#, "x".repeat(400));
        let out = n
            .decode_batch(vec![line("e1", &long), line("e2", &long)])
            .expect("decode");
        assert_eq!(out.events.num_rows(), 2);
        let text = out
            .events
            .column_by_name("args_text")
            .expect("args_text")
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("utf8")
            .values()
            .len();
        assert!(text > 800, "two rows of 400+ bytes: {text}");
        // Four rows next: twice the last two rows' bytes, plus an eighth.
        assert_eq!(n.sizes.hint("args_text", 4).0, 2 * text + text / 8);
        assert_eq!(n.sizes.hint("no_such_column", 4), (4 * 16, 0));
    }
}
