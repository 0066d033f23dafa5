//! Helpers shared by the pipeline's integration tests.

/// Runs `f` on a two-worker runtime whose threads have room for planning the
/// whole rule pack in a debug build (deeper than a test thread's 2 MiB).
pub fn run_with_room<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(32 << 20)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async { tokio::spawn(f).await })
        .expect("the test task")
}

/// The records of the sample corpus's session labelled `label`
/// (`examples/corpus/mcp-sample.*`), as read. With `shift`, `tag` or `new_session`
/// each record is rewritten: times moved by `shift`, event ids suffixed `-{tag}`, the
/// session id replaced (a copy of the session that is not a duplicate).
#[allow(dead_code)] // not every test binary uses it
pub fn sample_session(
    label: &str,
    shift: chrono::Duration,
    tag: Option<&str>,
    new_session: Option<&str>,
) -> Vec<dunes_ingest::RawRecord> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/corpus");
    let labels: std::collections::BTreeMap<String, String> = serde_json::from_slice(
        &std::fs::read(format!("{root}/mcp-sample.labels.json")).expect("labels"),
    )
    .expect("labels JSON");
    let id = labels
        .iter()
        .find(|(_, l)| l.as_str() == label)
        .map(|(s, _)| s.clone())
        .expect("a labelled session");
    let rewrite = !shift.is_zero() || tag.is_some() || new_session.is_some();
    std::fs::read_to_string(format!("{root}/mcp-sample.ndjson"))
        .expect("sample")
        .lines()
        .filter(|l| l.contains(&id))
        .enumerate()
        .map(|(n, l)| {
            let bytes = if rewrite {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
                let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().expect("ts"))
                    .expect("rfc3339")
                    + shift;
                v["ts"] = serde_json::Value::from(ts.to_rfc3339());
                if let Some(t) = tag {
                    let e = format!("{}-{t}", v["event_id"].as_str().expect("id"));
                    v["event_id"] = serde_json::Value::from(e);
                }
                if let Some(s) = new_session {
                    v["session_id"] = serde_json::Value::from(s);
                }
                v.to_string().into_bytes()
            } else {
                l.as_bytes().to_vec()
            };
            dunes_ingest::RawRecord::file_line(bytes, "sample", n as u64 + 1)
        })
        .collect()
}

/// An analyst action on `incident_id` by `actor` (role responder) at `at`; the
/// kind-specific fields are left empty for the test to fill in.
#[allow(dead_code)] // not every test binary uses it
pub fn action(
    incident_id: &str,
    kind: dunes_detect::ActionKind,
    actor: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> dunes_detect::IncidentAction {
    dunes_detect::IncidentAction {
        record_type: "incident_action".into(),
        action_id: format!("act-{}", uuid::Uuid::now_v7().simple()),
        incident_id: incident_id.to_string(),
        action: kind,
        actor: actor.into(),
        role: "responder".into(),
        jti: "jti".into(),
        at,
        assignee: None,
        disposition: None,
        note: None,
        regime: None,
        stage: None,
        suppress_until: None,
        ledger_index: None,
    }
}

/// A pipeline configuration on `data_dir` with the shipped rules only: no anomaly model,
/// no Parquet history.
#[allow(dead_code)] // not every test binary uses it
pub fn rules_only_config(data_dir: &std::path::Path) -> dunes_pipeline::Config {
    let mut cfg = dunes_pipeline::Config {
        data_dir: data_dir.to_path_buf(),
        ..dunes_pipeline::Config::default()
    };
    cfg.anomaly.enabled = false;
    cfg.history.enabled = false;
    cfg
}
