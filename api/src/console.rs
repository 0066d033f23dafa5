//! The analyst console: a single page (HTML, JS, CSS embedded in the binary; no CDN, no
//! build step) served at `/`, and the routes only it needs: the session's identity, a live
//! stream of incident changes, an incident's ledger records with a checked inclusion proof,
//! the overview figures and a whole-ledger verification. The page calls the same API with
//! the same token as every other client, so RBAC and the access audit apply unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::Utc;
use dunes_detect::{ActionKind, Disposition, Incident, IncidentAction, IncidentFilter};
use dunes_ledger::RecordKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState, Claims};

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// No inline script or style, nothing from elsewhere: a token in this page's
/// memory cannot be sent anywhere but this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page's static files (public: they hold no data; every datum comes from the API).
pub(crate) fn assets() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// What an incident's history says now: the last assignee, and the disposition of its
/// resolution.
pub(crate) fn assignee_and_disposition(
    history: &[IncidentAction],
) -> (Option<String>, Option<Disposition>) {
    let assignee = history.iter().rev().find_map(|a| a.assignee.clone());
    let disposition = history
        .iter()
        .rev()
        .find(|a| a.action == ActionKind::Resolve)
        .and_then(|a| a.disposition);
    (assignee, disposition)
}

/// The queue's view of an incident: what the list, filters and live updates need,
/// without the evidence rows and event ids.
pub(crate) fn summary(inc: &Incident, history: &[IncidentAction]) -> Value {
    let first = inc.evidence.first();
    let pick = |k: &str| {
        inc.entity
            .get(k)
            .or_else(|| first.and_then(|e| e.get(k)))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (assignee, disposition) = assignee_and_disposition(history);
    json!({
        "incident_id": inc.incident_id,
        "rule_id": inc.rule_id,
        "level": inc.level.as_u8(),
        "severity": inc.severity,
        "title": inc.title,
        "tags": inc.tags,
        "session_id": inc.session_id,
        "server_id": inc.server_id,
        "principal": pick("principal"),
        "tool_name": pick("tool_name"),
        "first_ts": inc.first_ts,
        "last_ts": inc.last_ts,
        "match_count": inc.match_count,
        "status": inc.status,
        "detected_at": inc.detected_at,
        "assignee": assignee,
        "disposition": disposition,
        "actions": history.len(),
    })
}

/// `GET /api/v1/session`: who the token says the caller is (the page hides what the
/// role may not do; the server refuses it anyway).
pub(crate) async fn session(Extension(c): Extension<Claims>) -> Json<Value> {
    Json(json!({ "sub": c.sub, "role": c.role, "exp": c.exp, "iat": c.iat, "jti": c.jti }))
}

#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    /// Store revision already seen (default: now, i.e. only future changes).
    after: Option<u64>,
}

/// Poll period of the live stream (the store is in memory: a scan is cheap).
const STREAM_TICK: Duration = Duration::from_millis(400);
/// Most incidents in one stream event (the rest follow in the next ones).
const STREAM_MAX: usize = 500;

/// `GET /api/v1/incidents/stream`: Server-Sent Events. First `ready` with the store
/// revision, then an `incidents` event (`{revision, incidents: [summary]}`) whenever
/// incidents are created or change. The stream ends when the token expires or the server
/// shuts down.
pub(crate) async fn stream(
    State(st): State<AppState>,
    Extension(c): Extension<Claims>,
    Query(q): Query<StreamQuery>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let start = q.after.unwrap_or_else(|| st.incidents.revision());
    let expires = c.exp;
    let ready = Event::default()
        .event("ready")
        .data(json!({ "revision": start }).to_string());
    let closing = st.closing.subscribe();
    let changes = futures::stream::unfold(
        (st, start, closing),
        move |(st, rev, mut closing)| async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(STREAM_TICK) => {}
                    _ = closing.changed() => {}
                }
                if *closing.borrow() || Utc::now().timestamp() >= expires {
                    return None;
                }
                let (changed, next) = st.incidents.changed_since(rev, STREAM_MAX);
                if changed.is_empty() {
                    continue;
                }
                let list: Vec<Value> = changed
                    .iter()
                    .map(|i| summary(i, &st.incidents.history(&i.incident_id)))
                    .collect();
                let data = json!({ "revision": next, "incidents": list }).to_string();
                let ev = Event::default().event("incidents").data(data);
                return Some((Ok(ev), (st, next, closing)));
            }
        },
    );
    let all = futures::StreamExt::chain(futures::stream::once(async move { Ok(ready) }), changes);
    Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /api/v1/incidents/{id}/ledger`: the incident's ledger records (the incident
/// records, the events they cite, the analyst actions, the Level 1/3 responses with their
/// payloads) and an RFC 9162 inclusion proof of its newest incident record in the tree of
/// the latest signed checkpoint, recomputed here against that checkpoint's root. Reads the
/// whole ledger (read-only; next to the running writer).
pub(crate) async fn incident_ledger(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !st.incidents.contains(&id) {
        return Err(ApiError::NotFound);
    }
    let dir = st.data_dir.clone();
    tokio::task::spawn_blocking(move || incident_ledger_blocking(&dir, &id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(Json)
}

/// The ledger records of one incident, by kind (ascending indexes).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct IncidentRecords {
    /// `incident` records (the incident, its updates, its escalation).
    pub incidents: Vec<u64>,
    /// `event` records the incident records refer to.
    pub events: Vec<u64>,
    /// `response` records that refer to an incident record.
    pub responses: Vec<u64>,
    /// `action` records (analyst actions) on the incident.
    pub actions: Vec<u64>,
}

impl IncidentRecords {
    /// Every index, ascending.
    pub fn all(&self) -> BTreeSet<u64> {
        self.incidents
            .iter()
            .chain(&self.events)
            .chain(&self.responses)
            .chain(&self.actions)
            .copied()
            .collect()
    }
}

/// A response record of an incident: its index and payload bytes.
pub type ResponsePayload = (u64, Vec<u8>);

/// The records of incident `incident_id` in the ledger of `data_dir`, and the payloads of
/// its response records (index, bytes). Reads the whole ledger (read-only; safe next to a
/// running writer). Shared by the console and the regulator documents.
pub fn incident_records(
    data_dir: &std::path::Path,
    incident_id: &str,
) -> Result<(IncidentRecords, Vec<ResponsePayload>), dunes_ledger::LedgerError> {
    #[derive(Deserialize)]
    struct Id {
        incident_id: Option<String>,
    }
    let of = |payload: &[u8]| {
        serde_json::from_slice::<Id>(payload)
            .ok()
            .and_then(|i| i.incident_id)
    };
    let mut kinds: Vec<RecordKind> = Vec::new();
    let mut out = IncidentRecords::default();
    let mut refs = BTreeSet::new();
    let mut responses = Vec::new();
    dunes_ledger::for_each_record(data_dir, 0, |r| {
        kinds.push(r.kind);
        match r.kind {
            RecordKind::Incident if of(r.payload).as_deref() == Some(incident_id) => {
                out.incidents.push(r.index);
                refs.extend(r.refs.iter().copied());
            }
            RecordKind::Action if of(r.payload).as_deref() == Some(incident_id) => {
                out.actions.push(r.index);
            }
            RecordKind::Response if r.refs.iter().any(|i| out.incidents.contains(i)) => {
                out.responses.push(r.index);
                responses.push((r.index, r.payload.to_vec()));
            }
            _ => {}
        }
    })?;
    // An incident record refers to its events (and an escalation to its action).
    out.events = refs
        .into_iter()
        .filter(|i| kinds.get(*i as usize) == Some(&RecordKind::Event))
        .collect();
    Ok((out, responses))
}

fn incident_ledger_blocking(dir: &std::path::Path, id: &str) -> Result<Value, ApiError> {
    let internal = |e: dunes_ledger::LedgerError| ApiError::Internal(e.to_string());
    let (records, payloads) = incident_records(dir, id).map_err(internal)?;
    let responses: Vec<Value> = payloads
        .iter()
        .map(|(index, p)| {
            let payload = serde_json::from_slice::<Value>(p).unwrap_or(Value::Null);
            json!({ "index": index, "response": payload })
        })
        .collect();
    let checkpoint = dunes_ledger::read_latest_checkpoint(dir).map_err(internal)?;
    let proof = match (records.incidents.last(), &checkpoint) {
        (Some(&index), Some(cp)) if index < cp.tree_size => {
            let p =
                dunes_ledger::inclusion_proof(dir, index, Some(cp.tree_size)).map_err(internal)?;
            let hash = |h: &str| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).map(|()| out)
            };
            let path: Result<Vec<[u8; 32]>, _> = p.proof.iter().map(|h| hash(h)).collect();
            let verified = match (hash(&p.leaf_hash), path) {
                (Ok(leaf), Ok(path)) => dunes_ledger::merkle::verify_inclusion(
                    &leaf,
                    index,
                    cp.tree_size,
                    &path,
                    &cp.root,
                ),
                _ => false,
            };
            json!({
                "index": index,
                "tree_size": cp.tree_size,
                "leaf_hash": p.leaf_hash,
                "path": p.proof,
                "root": hex::encode(cp.root),
                "key_epoch": cp.key_epoch,
                "checkpoint_at_micros": cp.timestamp_micros,
                "verified": verified,
            })
        }
        (Some(&index), _) => json!({
            "index": index,
            "verified": false,
            "pending": "not yet covered by a signed checkpoint",
        }),
        (None, _) => Value::Null,
    };
    Ok(json!({
        "incident_id": id,
        "incident_records": records.incidents,
        "event_records": records.events,
        "action_records": records.actions,
        "responses": responses,
        "inclusion": proof,
    }))
}

/// Sums the samples of metric `name` (all label sets) in Prometheus text, and the
/// sample with label text `labels` when given.
fn metric(text: &str, name: &str, labels: Option<&str>) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (lbl, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels.is_some_and(|want| want != lbl) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// `GET /api/v1/overview`: what the overview page shows. Counts per level and status,
/// incidents per level per hour (last 48 h of detection time), per rule its hits and the
/// dispositions of its resolved incidents (false-positive rate), the pipeline counters
/// (the page turns two readings into rates) and the ledger's latest signed checkpoint.
pub(crate) async fn overview(State(st): State<AppState>) -> Json<Value> {
    let list = st.incidents.list(&IncidentFilter::default());
    let now = Utc::now();
    let mut levels = BTreeMap::<u8, u64>::new();
    let mut statuses = BTreeMap::<String, u64>::new();
    let mut hourly = BTreeMap::<i64, [u64; 3]>::new();
    #[derive(Default)]
    struct RuleRow {
        hits: u64,
        open: u64,
        tp: u64,
        fp: u64,
        benign: u64,
        title: String,
    }
    let mut rules = BTreeMap::<String, RuleRow>::new();
    for inc in &list {
        let lvl = inc.level.as_u8();
        *levels.entry(lvl).or_default() += 1;
        let status = serde_json::to_value(inc.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *statuses.entry(status).or_default() += 1;
        let age = now - inc.detected_at;
        if age <= chrono::Duration::hours(48) && age >= chrono::Duration::zero() {
            let hour = inc.detected_at.timestamp().div_euclid(3600) * 3600;
            hourly.entry(hour).or_default()[usize::from(lvl.clamp(1, 3) - 1)] += 1;
        }
        let row = rules.entry(inc.rule_id.clone()).or_default();
        row.hits += 1;
        if row.title.is_empty() {
            row.title.clone_from(&inc.title);
        }
        match assignee_and_disposition(&st.incidents.history(&inc.incident_id)).1 {
            Some(Disposition::TruePositive) => row.tp += 1,
            Some(Disposition::FalsePositive) => row.fp += 1,
            Some(Disposition::Benign) => row.benign += 1,
            None => row.open += 1,
        }
    }
    let mut rule_rows: Vec<Value> = rules
        .into_iter()
        .map(|(id, r)| {
            let judged = r.tp + r.fp + r.benign;
            json!({
                "rule_id": id, "title": r.title, "hits": r.hits, "unresolved": r.open,
                "true_positive": r.tp, "false_positive": r.fp, "benign": r.benign,
                "false_positive_rate": (judged > 0).then(|| (r.fp + r.benign) as f64 / judged as f64),
            })
        })
        .collect();
    rule_rows.sort_by_key(|r| std::cmp::Reverse(r["hits"].as_u64().unwrap_or(0)));
    let text = crate::prometheus().map(|h| h.render()).unwrap_or_default();
    let pipeline = json!({
        "at": now,
        "events_total": metric(&text, "dunes_events_total", None),
        "rejected_total": metric(&text, "dunes_rejected_total", None),
        "incidents_total": metric(&text, "dunes_incidents_total", None),
        "batch_seconds_p99": metric(&text, "dunes_batch_seconds", Some("quantile=\"0.99\"")),
        "event_lag_seconds": metric(&text, "dunes_event_lag_seconds", None),
    });
    let ledger = match dunes_ledger::read_latest_checkpoint(&st.data_dir) {
        Ok(Some(cp)) => json!({
            "tree_size": cp.tree_size, "root": hex::encode(cp.root), "key_epoch": cp.key_epoch,
            "timestamp_micros": cp.timestamp_micros, "origin": cp.origin,
        }),
        Ok(None) => Value::Null,
        Err(e) => json!({ "error": e.to_string() }),
    };
    let hourly: Vec<Value> = hourly
        .into_iter()
        .map(|(h, c)| json!({ "hour": h, "level1": c[0], "level2": c[1], "level3": c[2] }))
        .collect();
    Json(json!({
        "incidents": { "total": list.len(), "by_level": levels, "by_status": statuses, "hourly": hourly },
        "rules": rule_rows,
        "pipeline": pipeline,
        "ledger": ledger,
    }))
}

/// `GET /api/v1/ledger/verify`: the full offline verification (`dunes verify
/// --allow-unsigned-tail`) of this data dir's ledger: chain, Merkle tree, every checkpoint
/// signature and key rotation; the records after the last checkpoint (a live ledger) are
/// checked but not covered by a signature (`signed_records` says how many are).
pub(crate) async fn verify_ledger(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let dir = st.data_dir.clone();
    let opts = dunes_ledger::VerifyOptions {
        allow_unsigned_tail: true,
        ..Default::default()
    };
    let report = tokio::task::spawn_blocking(move || dunes_ledger::verify_dir_with(&dir, &opts))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let ok = report.first_failure.is_none();
    if !ok {
        tracing::error!(failure = ?report.first_failure, "ledger verification FAILED");
        crate::count_ledger_verify_failure();
    }
    Ok(Json(json!({ "ok": ok, "report": report })))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use dunes_detect::{Incident, IncidentStore};
    use dunes_ledger::{Ledger, LedgerConfig, RecordKind};
    use http_body_util::BodyExt as _;
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::metric;
    use crate::{AppState, AuthConfig, AuthState};

    fn incident(id: &str) -> Incident {
        serde_json::from_value(json!({
            "incident_id": id, "rule_id": "r", "rule_sha256": "00", "level": 3,
            "severity": "critical", "title": "t", "tags": ["x"],
            "entity": {"session_id": "s1"}, "session_id": "s1", "server_id": "srv",
            "first_ts": "2026-12-01T00:00:00Z", "last_ts": "2026-12-01T00:00:00Z",
            "event_ids": ["e1"], "match_count": 1,
            "evidence": [{"event_id": "e1", "principal": "alice", "tool_name": "fetch"}],
            "status": "open", "detected_at": "2026-12-01T00:00:00Z"
        }))
        .expect("incident")
    }

    /// A router over `dir` with authentication off (every caller is an admin: the role
    /// matrix is tested in tests/auth_matrix.rs).
    fn app(dir: &std::path::Path, store: Arc<IncidentStore>) -> axum::Router {
        let cfg = AuthConfig {
            disabled: true,
            ..AuthConfig::default()
        };
        let auth = AuthState::open(dir, cfg).expect("auth");
        crate::router(
            AppState::new(store, dir.to_path_buf(), Arc::new(auth)),
            1 << 20,
        )
    }

    async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 24).await.expect("body");
        (parts.status, parts.headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn the_page_is_served_without_a_token_under_a_strict_policy() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = AuthConfig::default();
        let auth = AuthState::open(tmp.path(), cfg).expect("auth");
        let app = crate::router(
            AppState::new(Arc::default(), tmp.path().to_path_buf(), Arc::new(auth)),
            1 << 20,
        );
        let (s, h, body) = get(&app, "/").await;
        assert_eq!(s, StatusCode::OK);
        assert!(String::from_utf8_lossy(&body).contains("/console/app.js"));
        let csp = h["content-security-policy"].to_str().expect("csp");
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        let (s, h, _) = get(&app, "/console/app.js").await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            h["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("text/javascript")
        );
        // the data is not public
        let (s, _, _) = get(&app, "/api/v1/incidents?view=summary").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn summaries_and_the_live_stream_carry_new_and_changed_incidents() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Arc::new(IncidentStore::new());
        store.insert(incident("inc-1"));
        let cfg = AuthConfig {
            disabled: true,
            ..AuthConfig::default()
        };
        let auth = AuthState::open(tmp.path(), cfg).expect("auth");
        let state = AppState::new(store.clone(), tmp.path().to_path_buf(), Arc::new(auth));
        let closing = state.closing.clone();
        let app = crate::router(state, 1 << 20);
        let (s, _, body) = get(&app, "/api/v1/incidents?view=summary").await;
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).expect("json");
        let row = &v["incidents"][0];
        assert_eq!(row["principal"], "alice");
        assert_eq!(row["tool_name"], "fetch");
        assert!(row.get("evidence").is_none() && row.get("event_ids").is_none());
        let rev = v["revision"].as_u64().expect("revision");
        let (s, _, _) = get(&app, "/api/v1/incidents?view=everything").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        let resp = app
            .clone()
            .oneshot(
                Request::get(format!("/api/v1/incidents/stream?after={rev}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut next = async || -> String {
            let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("an event within 5 s")
                .expect("a frame")
                .expect("no error");
            String::from_utf8(f.into_data().expect("data").to_vec()).expect("utf8")
        };
        let ready = next().await;
        assert!(ready.starts_with("event: ready\n"), "{ready}");
        store.insert(incident("inc-2"));
        let ev = next().await;
        assert!(ev.starts_with("event: incidents\n"), "{ev}");
        let data: Value = serde_json::from_str(ev.trim_end().split_once("data: ").expect("data").1)
            .expect("json");
        let ids: Vec<&str> = data["incidents"]
            .as_array()
            .expect("list")
            .iter()
            .map(|i| i["incident_id"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(ids, ["inc-2"]);
        assert_eq!(data["revision"].as_u64(), Some(store.revision()));
        // a server shutting down ends the stream (its graceful shutdown waits for it)
        closing.send_replace(true);
        let end = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("the stream ends at once");
        assert!(end.is_none(), "no more events after the shutdown");
    }

    #[tokio::test]
    async fn an_incident_page_gets_its_records_and_a_checked_inclusion_proof() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut cfg = LedgerConfig::new(tmp.path(), "dunes/console-test");
        cfg.rotate_every = None;
        let mut l = Ledger::open(cfg).expect("open");
        let inc = serde_json::to_vec(&incident("inc-1")).expect("json");
        let ev = l.append(RecordKind::Event, 1, b"{}", &[]).expect("append");
        l.append(RecordKind::Event, 2, b"{}", &[]).expect("append");
        let i = l
            .append(RecordKind::Incident, 3, &inc, &[ev])
            .expect("append");
        let a = l
            .append(RecordKind::Action, 4, br#"{"incident_id":"inc-1"}"#, &[])
            .expect("append");
        let r = l
            .append(
                RecordKind::Response,
                5,
                br#"{"action":"isolate_session"}"#,
                &[i],
            )
            .expect("append");
        l.checkpoint().expect("checkpoint");
        // a later update of the incident, not yet under a signed checkpoint
        let later = l
            .append(RecordKind::Incident, 6, &inc, &[])
            .expect("append");
        l.sync().expect("sync");
        let store = Arc::new(IncidentStore::new());
        store.insert(incident("inc-1"));
        let app = app(tmp.path(), store);
        let (s, _, body) = get(&app, "/api/v1/incidents/inc-1/ledger").await;
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["incident_records"], json!([i, later]));
        assert_eq!(v["event_records"], json!([ev]));
        assert_eq!(v["action_records"], json!([a]));
        assert_eq!(v["responses"][0]["index"], json!(r));
        assert_eq!(v["responses"][0]["response"]["action"], "isolate_session");
        // the newest incident record is past the checkpoint: said so, not claimed verified
        assert_eq!(v["inclusion"]["index"], json!(later));
        assert_eq!(v["inclusion"]["verified"], false);
        assert!(v["inclusion"]["pending"].is_string());
        l.checkpoint().expect("checkpoint");
        l.close().expect("close");
        let (_, _, body) = get(&app, "/api/v1/incidents/inc-1/ledger").await;
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["inclusion"]["verified"], true, "{v}");
        assert_eq!(v["inclusion"]["tree_size"], json!(later + 1));
        let (s, _, _) = get(&app, "/api/v1/incidents/inc-9/ledger").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // the whole-ledger verification of the overview page
        let (s, _, body) = get(&app, "/api/v1/ledger/verify").await;
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["report"]["records"], json!(later + 1), "{v}");
    }

    #[test]
    fn metric_sums_label_sets_and_picks_one() {
        let text = "# TYPE dunes_events_total counter\ndunes_events_total 12\n\
                    dunes_batch_seconds{quantile=\"0.5\"} 0.01\n\
                    dunes_batch_seconds{quantile=\"0.99\"} 0.25\n\
                    dunes_batch_seconds_sum 3\n\
                    dunes_incidents_totalx 9\n";
        assert_eq!(metric(text, "dunes_events_total", None), Some(12.0));
        assert_eq!(
            metric(text, "dunes_batch_seconds", Some("quantile=\"0.99\"")),
            Some(0.25)
        );
        assert_eq!(metric(text, "dunes_incidents_total", None), None);
    }
}
