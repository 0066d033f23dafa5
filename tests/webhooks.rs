//! Webhook delivery end to end: a real HTTP receiver on loopback that goes
//! down for 30 s, answers 503, hangs past the timeout and recovers, while the
//! monitor crashes right after queueing a batch (before its detection state
//! is durable: the restarted monitor re-detects it and delivers it once the
//! receiver is back); later the receiver goes down again and the monitor is
//! killed with SIGKILL while deliveries are pending.
//! Every incident reaches the receiver, none twice per destination; routing
//! and presets hold; a destination that answers 404 dead-letters (API and
//! metrics); the documented Python snippet verifies every signature.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::Value;

mod common;
use common::{
    Running, bearer, dunes, free_port, labels, read_ndjson, run_ok, sample, wait_healthy,
};

const SECRET: &str = "whsec-e2e-0123456789abcdef";

/// One request the receiver accepted (answered 200).
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// What the receiver answers next, before answering 200 again.
enum Script {
    Status(u16),
    /// Answer 200 only after the sender's timeout (not counted as accepted).
    Hang(Duration),
}

#[derive(Default)]
struct Shared {
    accepted: Vec<Hit>,
    script: VecDeque<Script>,
}

struct Receiver {
    rt: tokio::runtime::Runtime,
    port: u16,
    shared: Arc<Mutex<Shared>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let reply = |status: u16| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
        *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
        Ok(r)
    };
    if path == "/gone" {
        return reply(404);
    }
    let next = shared.lock().expect("lock").script.pop_front();
    match next {
        Some(Script::Status(s)) => return reply(s),
        Some(Script::Hang(d)) => {
            tokio::time::sleep(d).await;
            return reply(200);
        }
        None => {}
    }
    shared.lock().expect("lock").accepted.push(Hit {
        path,
        headers,
        body,
    });
    reply(200)
}

impl Receiver {
    fn start() -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut r = Receiver {
            rt,
            port: free_port(),
            shared: Arc::default(),
            server: None,
        };
        r.up();
        r
    }

    /// Listens again on the same port.
    fn up(&mut self) {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))
            .expect("bind the receiver port");
        let shared = self.shared.clone();
        self.server = Some(self.rt.spawn(async move {
            // Dropping the set (when this task is aborted) closes every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    /// Closes the listener and every open connection: connections are refused.
    fn down(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
            let _ = self.rt.block_on(h);
        }
    }

    fn accepted(&self) -> Vec<Hit> {
        self.shared.lock().expect("lock").accepted.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn config(dir: &Path, rx: &Receiver) -> std::path::PathBuf {
    let retry = "timeout_ms = 1000\nbackoff_initial_ms = 100\nbackoff_max_ms = 1500\nmax_attempts = 100000\n";
    let text = format!(
        r#"data_dir = "{data}"
[anomaly]
enabled = false
[outputs]
drain_on_stop_ms = 1000

[[outputs.webhooks]]
name = "soc"
url = "{soc}"
secret_env = "DUNES_TEST_WEBHOOK_SECRET"
{retry}
[[outputs.webhooks]]
name = "chat"
url = "{chat}"
format = "slack"
events = ["created"]
min_level = 2
{retry}
[[outputs.webhooks]]
name = "gone"
url = "{gone}"
events = ["created"]
{retry}"#,
        data = dir.display(),
        soc = rx.url("/hook"),
        chat = rx.url("/slack"),
        gone = rx.url("/gone"),
    );
    let p = dir.with_extension("toml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn start(cfg: &Path, dir: &Path, crash_at: Option<&str>) -> (Running, String) {
    let port = free_port();
    let mut cmd = dunes();
    cmd.arg("run")
        .arg("--config")
        .arg(cfg)
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("DUNES_TEST_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(c) = crash_at {
        cmd.env("DUNES_CRASH_AT", c);
    }
    let child = cmd.spawn().expect("spawn dunes run");
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base);
    (Running(child), base)
}

/// The lines of the first session of the shipped sample labelled `label`.
fn session(label: &str) -> String {
    let labels = labels();
    let text = std::fs::read_to_string(sample()).expect("sample");
    let id = labels
        .iter()
        .find(|(_, l)| l.as_str() == label)
        .map(|(s, _)| s.clone())
        .expect("a labelled session");
    text.lines()
        .filter(|l| l.contains(&id))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn ingest(base: &str, dir: &Path, body: &str) -> Result<Value, String> {
    let mut resp = ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", bearer(dir, "ingest"))
        .send(body.as_bytes())
        .map_err(|e| e.to_string())?;
    resp.body_mut().read_json().map_err(|e| e.to_string())
}

fn get(base: &str, dir: &Path, path: &str) -> Value {
    let mut resp = ureq::get(&format!("{base}{path}"))
        .header("authorization", bearer(dir, "auditor"))
        .call()
        .expect("GET");
    let text = resp.body_mut().read_to_string().expect("body");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn destination<'a>(outputs: &'a Value, name: &str) -> &'a Value {
    outputs["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .find(|w| w["name"] == name)
        .expect("destination listed")
}

/// Incident ids in incidents.ndjson, with their level.
fn incidents(dir: &Path) -> BTreeMap<String, u64> {
    read_ndjson(&dir.join("incidents.ndjson"))
        .into_iter()
        .map(|i| {
            (
                i["incident_id"].as_str().expect("id").to_string(),
                i["level"].as_u64().expect("level"),
            )
        })
        .collect()
}

fn created_on(hits: &[Hit], path: &str) -> BTreeSet<String> {
    hits.iter()
        .filter(|h| h.path == path && h.headers["x-dunes-event"] == "incident.created")
        .map(|h| {
            h.headers["x-dunes-delivery"]
                .strip_suffix(".created")
                .expect("a created change id")
                .to_string()
        })
        .collect()
}

/// Every incident's creation accepted on the signed destination, every
/// creation dead-lettered on the 404 one, and nothing pending anywhere.
fn all_delivered(rx: &Receiver, dir: &Path, base: &str) -> bool {
    let all = incidents(dir);
    let outputs = get(base, dir, "/api/v1/outputs");
    created_on(&rx.accepted(), "/hook") == all.keys().cloned().collect()
        && destination(&outputs, "gone")["dead_lettered"].as_u64() == Some(all.len() as u64)
        && outputs["webhooks"]
            .as_array()
            .expect("webhooks")
            .iter()
            .all(|w| w["pending"] == 0)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the verification snippet of docs/outputs.md (the first Python code
/// block) over `cases`; returns one verdict per case.
fn python_verify(cases: &[(BTreeMap<String, String>, Vec<u8>)], tmp: &Path) -> Vec<bool> {
    use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/outputs.md"))
        .expect("docs/outputs.md");
    let mut snippet = None;
    let mut inside = false;
    let mut code = String::new();
    for ev in Parser::new(&doc) {
        match ev {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(lang))) if &*lang == "python" => {
                inside = true;
            }
            Event::Text(t) if inside => code.push_str(&t),
            Event::End(TagEnd::CodeBlock) if inside => {
                snippet = Some(std::mem::take(&mut code));
                break;
            }
            _ => {}
        }
    }
    let snippet = snippet.expect("a python block in docs/outputs.md");
    let driver = format!(
        "{snippet}\n\nimport json, sys\nfor c in json.load(open(sys.argv[1])):\n    print('ok' if verify(c['secret'].encode(), c['headers'], bytes.fromhex(c['body'])) else 'bad')\n"
    );
    let script = tmp.join("verify.py");
    std::fs::write(&script, driver).expect("write script");
    let json: Vec<Value> = cases
        .iter()
        .map(|(h, b)| serde_json::json!({"secret": SECRET, "headers": h, "body": hex::encode(b)}))
        .collect();
    let input = tmp.join("cases.json");
    std::fs::write(&input, serde_json::to_vec(&json).expect("json")).expect("write cases");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&input)
        .output()
        .expect("python3 (the verification snippet is Python)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| l == "ok")
        .collect()
}

#[test]
fn webhooks_survive_a_receiver_outage_a_crash_and_kill_9_without_loss_or_duplicates() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let mut rx = Receiver::start();
    let cfg = config(&dir, &rx);

    // 1. Receiver up: the first session's incidents arrive.
    let (mut first, base) = start(&cfg, &dir, Some("after-outputs-queued:2"));
    let ack = ingest(&base, &dir, &session("secrets_in_args")).expect("ingest");
    assert!(ack["incidents"].as_u64().expect("incidents") > 0, "{ack}");
    wait_for("the first incidents", Duration::from_secs(30), || {
        let want: BTreeSet<String> = incidents(&dir).into_keys().collect();
        created_on(&rx.accepted(), "/hook") == want
    });

    // 2. Receiver down for 30 s. The next batch crashes the monitor right
    //    after its changes were queued, before its detection state is
    //    durable: the restart re-detects it and must not queue it twice.
    rx.down();
    let down_at = Instant::now();
    assert!(
        ingest(&base, &dir, &session("ssrf")).is_err(),
        "the monitor aborts at the crash point"
    );
    let _ = first.wait();
    let (mut second, base) = start(&cfg, &dir, None);
    ingest(&base, &dir, &session("tool_poisoning")).expect("ingest");
    std::thread::sleep(Duration::from_secs(2));
    let outputs = get(&base, &dir, "/api/v1/outputs");
    let soc = destination(&outputs, "soc");
    assert!(soc["pending"].as_u64().expect("pending") > 0, "{outputs}");
    assert!(
        soc["failed_attempts"].as_u64().expect("failed") > 0,
        "{outputs}"
    );
    assert!(soc["last_error"].is_string(), "{outputs}");

    // 3. The receiver comes back after 30 s: two 503s and one answer slower
    //    than the timeout first, then it accepts.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed()));
    rx.shared.lock().expect("lock").script.extend([
        Script::Status(503),
        Script::Status(503),
        Script::Hang(Duration::from_secs(2)),
    ]);
    rx.up();
    wait_for("delivery after the outage", Duration::from_secs(60), || {
        all_delivered(&rx, &dir, &base)
    });

    // 4. Down again; kill -9 while a batch's deliveries are pending; the
    //    next start sends them.
    rx.down();
    ingest(&base, &dir, &session("exfiltration")).expect("ingest");
    std::thread::sleep(Duration::from_secs(2));
    second.kill().expect("SIGKILL");
    let _ = second.wait();
    let (mut third, base) = start(&cfg, &dir, None);
    rx.up();
    wait_for("delivery after kill -9", Duration::from_secs(60), || {
        all_delivered(&rx, &dir, &base)
    });
    let all = incidents(&dir);
    assert!(all.len() >= 6, "{all:?}");
    assert!(
        rx.shared.lock().expect("lock").script.is_empty(),
        "the 503s and the hang were served"
    );

    // Nothing twice to the same destination.
    let hits = rx.accepted();
    let mut seen = BTreeSet::new();
    for h in &hits {
        let key = (h.path.clone(), h.headers["x-dunes-delivery"].clone());
        assert!(seen.insert(key.clone()), "delivered twice: {key:?}");
    }
    // Routing: the Slack destination got exactly the Level ≥ 2 creations.
    let level2: BTreeSet<String> = all
        .iter()
        .filter(|(_, l)| **l >= 2)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!level2.is_empty(), "the sessions raise Level 2 incidents");
    assert_eq!(created_on(&hits, "/slack"), level2);
    assert!(hits.iter().filter(|h| h.path == "/slack").all(|h| {
        let v: Value = serde_json::from_slice(&h.body).expect("json");
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[Dunes L"))
            && v["blocks"].is_array()
    }));
    // The generic body names its change and carries the incident.
    for h in hits.iter().filter(|h| h.path == "/hook") {
        let v: Value = serde_json::from_slice(&h.body).expect("json");
        assert_eq!(v["id"], h.headers["x-dunes-delivery"].as_str());
        assert_eq!(v["type"], h.headers["x-dunes-event"].as_str());
        assert!(all.contains_key(v["incident"]["incident_id"].as_str().expect("incident")));
    }

    // Dead letters: API and metrics.
    let dl = get(
        &base,
        &dir,
        "/api/v1/outputs/webhooks/gone/dead-letters?limit=1000",
    );
    let list = dl["dead_letters"].as_array().expect("dead letters");
    assert_eq!(list.len(), all.len(), "{dl}");
    assert!(
        list.iter().all(|d| d["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("HTTP 404"))),
        "{dl}"
    );
    let metrics = get(&base, &dir, "/metrics");
    let metrics = metrics.as_str().expect("metrics text");
    assert!(
        metrics.contains(r#"dunes_webhook_deliveries_total{destination="gone",outcome="dead"}"#),
        "{metrics}"
    );

    // Every signature verifies with the documented snippet; a tampered body
    // and a stale timestamp do not.
    let signed: Vec<&Hit> = hits.iter().filter(|h| h.path == "/hook").collect();
    let mut cases: Vec<(BTreeMap<String, String>, Vec<u8>)> = signed
        .iter()
        .map(|h| (h.headers.clone(), h.body.clone()))
        .collect();
    let mut tampered = cases[0].clone();
    tampered.1.push(b' ');
    let mut stale = cases[0].clone();
    let ts: i64 = stale.0["x-dunes-timestamp"].parse().expect("timestamp");
    stale
        .0
        .insert("x-dunes-timestamp".into(), (ts - 600).to_string());
    cases.push(tampered);
    cases.push(stale);
    let verdicts = python_verify(&cases, tmp.path());
    assert_eq!(verdicts.len(), cases.len());
    let n = signed.len();
    assert!(verdicts[..n].iter().all(|ok| *ok), "{verdicts:?}");
    assert_eq!(&verdicts[n..], &[false, false]);
    // The unsigned destinations carry no signature.
    assert!(
        hits.iter()
            .filter(|h| h.path == "/slack")
            .all(|h| !h.headers.contains_key("x-dunes-signature"))
    );

    common::sigterm_and_wait(&mut third);
    run_ok(dunes().arg("verify").arg(&dir));
}
