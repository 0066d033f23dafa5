//! The analyst console in a real headless Chromium, driven over WebDriver (Debian's
//! `chromium` + `chromium-driver`; `.ci/run` installs them): sign-in with a token, queue
//! filters, a new incident arriving live, the incident page's evidence and ledger proof,
//! acknowledge → resolve checked through the API and the ledger, a hunting query, a
//! viewer without actions whose forged POST the server refuses, the overview's ledger
//! verification, and a queue of 10,000 incidents (first render measured and printed; the
//! figure is recorded in docs/benchmarks.md, not asserted here).
//!
//! `DUNES_CONSOLE_SCREENSHOTS=<dir>` saves a PNG of each main page (docs/console.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dunes, free_port, read_ndjson, run_ok, sigterm_and_wait, token};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A chromedriver child, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_program(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        for n in names {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "{} not found: install Debian's chromium and chromium-driver (.ci/run does) or set {env}",
        names.join(" / ")
    );
}

async fn browser() -> (Driver, Client) {
    let driver_bin = find_program("DUNES_CHROMEDRIVER", &["chromedriver"]);
    let chromium = find_program("DUNES_CHROMIUM", &["chromium", "chromium-browser"]);
    let port = free_port();
    let driver = Driver(
        Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1440,1000", "--lang=en-US"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot start a WebDriver session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits (10 s at most) until the page's `script` (a JS expression) is truthy; returns it.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c
            .execute(&format!("return ({script});"), vec![])
            .await
            .expect("execute");
        if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
            return v;
        }
        if Instant::now() > deadline {
            let shot = c.screenshot().await.ok();
            if let Some(png) = shot {
                let dir = env!("CARGO_TARGET_TMPDIR");
                let _ = std::fs::write(Path::new(&dir).join("console-failure.png"), png);
            }
            let page = c
                .execute("return document.body.innerText.slice(0, 4000);", vec![])
                .await
                .unwrap_or_default();
            panic!(
                "timed out waiting for {what} ({script}); the page says:\n{}",
                page.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

/// The strings a JS expression evaluating to an array gives.
async fn texts(c: &Client, array_expr: &str) -> Vec<String> {
    c.execute(&format!("return {array_expr};"), vec![])
        .await
        .expect("execute")
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect()
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.expect("find_all").len()
}

async fn shot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("DUNES_CONSOLE_SCREENSHOTS") {
        let png = c.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(Path::new(&dir).join(name), png).expect("write screenshot");
    }
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/#/queue")).await.expect("goto");
    // a previous session's token is dropped first
    c.execute("sessionStorage.clear(); return 1;", vec![])
        .await
        .expect("clear");
    c.goto(&format!("{base}/#/login")).await.expect("goto");
    c.refresh().await.expect("refresh");
    let input = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#token"))
        .await
        .expect("login form");
    input.send_keys(token).await.expect("type token");
    click(c, "#login-submit").await;
    until(c, "the queue", "document.querySelectorAll('.qrow').length").await;
}

/// Runs `act` on the element `css`, finding it again if the page redrew it in between
/// (live updates re-render what changed); 10 s at most.
async fn on_element<F, Fut>(c: &Client, css: &str, what: &str, act: F)
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = match c.find(Locator::Css(css)).await {
            Ok(e) => act(e).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what} {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn click(c: &Client, css: &str) {
    on_element(c, css, "click", |e| async move { e.click().await }).await;
}

async fn type_into(c: &Client, css: &str, text: &str) {
    on_element(
        c,
        css,
        "type into",
        |e| async move { e.send_keys(text).await },
    )
    .await;
}

async fn select(c: &Client, css: &str, value: &str) {
    on_element(c, css, "select", |e| async move {
        e.select_by_value(value).await
    })
    .await;
}

fn api_get(base: &str, token: &str, path: &str) -> Value {
    let mut resp = ureq::get(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    resp.body_mut().read_json().expect("json")
}

fn api_query(base: &str, token: &str, sql: &str) -> Value {
    let mut resp = ureq::post(&format!("{base}/api/v1/query"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(json!({ "sql": sql }))
        .unwrap_or_else(|e| panic!("query: {e}"));
    resp.body_mut().read_json().expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = common::demo_data(&tmp.path().join("data"));
    let incidents = read_ndjson(&dir.join("incidents.ndjson"));
    let of_level = |l: u64| incidents.iter().filter(|i| i["level"] == l).count();
    let l3 = incidents
        .iter()
        .find(|i| i["level"] == 3)
        .expect("the demo raises a level 3 incident")
        .clone();
    let l3_id = l3["incident_id"].as_str().expect("id").to_string();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut mon = common::start_monitor(&dir, port);
    let analyst = token(&dir, "analyst");
    let (_driver, c) = browser().await;

    // 1. Sign in with a token; the header names the subject and role.
    sign_in(&c, &base, &analyst).await;
    assert!(text(&c, "#who").await.contains("e2e (analyst)"));
    assert_eq!(
        text(&c, "#count-l3 b").await,
        of_level(3).to_string(),
        "level 3 count"
    );
    assert_eq!(text(&c, "#count-l2 b").await, of_level(2).to_string());
    assert_eq!(text(&c, "#shown").await, incidents.len().to_string());
    shot(&c, "console-queue.png").await;

    // 2. Filters: level, then rule; every row shown matches, and the count is the file's.
    select(&c, "#f-level", "2").await;
    until(
        &c,
        "level filter",
        &format!(
            "document.querySelector('#shown').textContent === '{}'",
            of_level(2)
        ),
    )
    .await;
    let levels = texts(
        &c,
        "[...document.querySelectorAll('.qrow')].map(r => r.dataset.level)",
    )
    .await;
    assert!(!levels.is_empty());
    assert!(levels.iter().all(|l| l == "2"), "{levels:?}");
    select(&c, "#f-level", "").await;
    let rule = l3["rule_id"].as_str().expect("rule");
    select(&c, "#f-rule", rule).await;
    let of_rule = incidents.iter().filter(|i| i["rule_id"] == rule).count();
    until(
        &c,
        "rule filter",
        &format!("document.querySelector('#shown').textContent === '{of_rule}'"),
    )
    .await;
    select(&c, "#f-rule", "").await;
    until(
        &c,
        "no filter",
        &format!(
            "document.querySelector('#shown').textContent === '{}'",
            incidents.len()
        ),
    )
    .await;

    // 3. A new incident arrives live: an SSRF request in a new session, over HTTP ingest.
    let attack = std::fs::read_to_string(dir.join("traffic.ndjson"))
        .expect("traffic")
        .lines()
        .find(|l| l.contains("metadata.google.internal") && l.contains("\"c2s\""))
        .expect("the demo traffic holds a metadata SSRF request")
        .to_string();
    let mut ev: Value = serde_json::from_str(&attack).expect("json");
    ev["event_id"] = json!("console-live-1");
    ev["session_id"] = json!("console-live-session");
    ev["ts"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let ingest = token(&dir, "ingest");
    ureq::post(&format!("{base}/v1/ingest"))
        .header("Authorization", &format!("Bearer {ingest}"))
        .header("Content-Type", "application/x-ndjson")
        .send(format!("{ev}\n"))
        .expect("ingest");
    let new_id = until(
        &c,
        "the live incident",
        &format!("(document.querySelector(\".qrow.new[data-rule='{rule}']\") || {{dataset: {{}}}}).dataset.id"),
    )
    .await;
    let new_id = new_id.as_str().expect("id").to_string();
    assert_eq!(text(&c, "#count-l3 b").await, (of_level(3) + 1).to_string());
    let listed = api_get(&base, &analyst, "/api/v1/incidents?level=3");
    let new_inc = listed["incidents"]
        .as_array()
        .expect("list")
        .iter()
        .find(|i| i["incident_id"] == new_id.as_str())
        .expect("the row's incident is in the API")
        .clone();
    assert_eq!(new_inc["session_id"], "console-live-session");
    assert_eq!(new_inc["event_ids"], json!(["console-live-1"]));

    // 4. The incident page: evidence with the rule's regex span marked, rule SQL, timeline.
    click(&c, &format!(".qrow[data-id='{new_id}']")).await;
    until(
        &c,
        "evidence",
        "document.querySelector('#evidence pre.args')",
    )
    .await;
    let args = text(&c, "#evidence pre.args").await;
    assert!(
        args.contains("http://metadata.google.internal/computeMetadata/v1"),
        "{args}"
    );
    let marks: Vec<String> = texts(
        &c,
        "[...document.querySelectorAll('#evidence pre.args mark')].map(m => m.textContent)",
    )
    .await
    .iter()
    .map(|m| m.to_lowercase())
    .collect();
    assert_eq!(
        marks,
        vec!["/computemetadata/v1"],
        "matched span highlighted"
    );
    until(&c, "the rule's SQL", "document.querySelector('#rule-sql') && document.querySelector('#rule-sql').textContent.includes('regexp_like')").await;
    until(&c, "timeline", "document.querySelector('#timeline tr.hit')").await;
    assert!(
        text(&c, "#timeline tr.hit")
            .await
            .contains("console-live-1"),
        "the incident's event is highlighted in its session timeline"
    );

    // 5. The demo's Level 3 incident: ledger proof, then acknowledge → resolve.
    c.goto(&format!("{base}/#/incident/{l3_id}"))
        .await
        .expect("goto");
    until(&c, "inclusion proof", "document.querySelector('#proof-ok')").await;
    let ledger = api_get(
        &base,
        &analyst,
        &format!("/api/v1/incidents/{l3_id}/ledger"),
    );
    assert_eq!(ledger["inclusion"]["verified"], true);
    let idx = ledger["incident_records"][0].as_u64().expect("index");
    assert!(
        text(&c, "#ledger-incident-records")
            .await
            .contains(&format!("#{idx}"))
    );
    assert!(
        count(&c, "#responses tr").await >= 1,
        "the Level 3 response is shown"
    );
    assert!(
        count(&c, "#clocks tr").await > 1,
        "regulatory clocks are shown"
    );
    shot(&c, "console-incident.png").await;
    type_into(&c, "#act-note", "looking at it").await;
    click(&c, "#act-ack").await;
    until(&c, "acknowledged", "document.querySelector('#inc-status') && document.querySelector('#inc-status').textContent === 'acknowledged'").await;
    select(&c, "#act-disposition", "true_positive").await;
    type_into(&c, "#act-note", "confirmed credential theft attempt").await;
    click(&c, "#act-resolve").await;
    until(&c, "resolved", "document.querySelector('#inc-status') && document.querySelector('#inc-status').textContent === 'resolved'").await;
    let after = api_get(&base, &analyst, &format!("/api/v1/incidents/{l3_id}"));
    let history = after["history"].as_array().expect("history");
    let steps: Vec<(&str, &str, Option<&str>)> = history
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or(""),
                a["actor"].as_str().unwrap_or(""),
                a["note"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("ack", "e2e", Some("looking at it")),
            ("resolve", "e2e", Some("confirmed credential theft attempt")),
        ]
    );
    assert_eq!(history[1]["disposition"], "true_positive");
    let action_idx: Vec<u64> = history
        .iter()
        .map(|a| a["ledger_index"].as_u64().expect("ledgered"))
        .collect();
    let ledger = api_get(
        &base,
        &analyst,
        &format!("/api/v1/incidents/{l3_id}/ledger"),
    );
    assert_eq!(ledger["action_records"], json!(action_idx));
    assert_eq!(count(&c, "#history tr").await, 2);

    // 6. Hunting: rows render, page through them, same rows as the API gives.
    c.goto(&format!("{base}/#/hunt")).await.expect("goto");
    until(
        &c,
        "table list",
        "document.querySelector('#tables details')",
    )
    .await;
    let sql = "SELECT event_id, ts, method FROM events ORDER BY ts, event_id LIMIT 250";
    c.execute(
        "document.querySelector('#sql').value = arguments[0]; return 1;",
        vec![json!(sql)],
    )
    .await
    .expect("set sql");
    click(&c, "#run").await;
    until(&c, "results", "document.querySelector('#result-table')").await;
    assert_eq!(
        count(&c, "#result-table tr").await,
        101,
        "header + 100 rows per page"
    );
    assert_eq!(text(&c, "#page-label").await, "page 1 of 3");
    let api_rows = api_query(&base, &analyst, sql);
    let first_api = api_rows["rows"][0]["event_id"].as_str().expect("event id");
    assert_eq!(
        text(&c, "#result-table tr:nth-child(2) td").await,
        first_api
    );
    c.execute("window.scrollTo(0, 0); return 1;", vec![])
        .await
        .expect("scroll");
    shot(&c, "console-hunt.png").await;
    click(&c, "#next-page").await;
    let row101 = api_rows["rows"][100]["event_id"]
        .as_str()
        .expect("event id");
    assert_eq!(text(&c, "#result-table tr:nth-child(2) td").await, row101);
    assert!(count(&c, "#hist-chart rect").await > 0, "time histogram");

    // 7. A viewer: no action controls, no hunting, and the server refuses a forged POST.
    let viewer = token(&dir, "viewer");
    sign_in(&c, &base, &viewer).await;
    c.goto(&format!("{base}/#/incident/{new_id}"))
        .await
        .expect("goto");
    until(
        &c,
        "read-only page",
        "document.querySelector('#actions-none')",
    )
    .await;
    assert_eq!(count(&c, "#actions button").await, 0);
    let hunt_hidden = c
        .execute("return document.querySelector('#nav-hunt').hidden;", vec![])
        .await
        .expect("nav");
    assert_eq!(hunt_hidden, json!(true));
    let status = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch('/api/v1/incidents/' + arguments[0] + '/ack', {method: 'POST',
                 headers: {Authorization: 'Bearer ' + sessionStorage.getItem('dunes.token'),
                           'Idempotency-Key': 'forged-1', 'Content-Type': 'application/json'},
                 body: '{}'}).then(r => done(r.status));"#,
            vec![json!(new_id)],
        )
        .await
        .expect("forged POST");
    assert_eq!(status, json!(403));
    let still = api_get(&base, &analyst, &format!("/api/v1/incidents/{new_id}"));
    assert_eq!(still["status"], "open");
    assert_eq!(still["history"], json!([]));

    // 8. Overview as an admin, signed in with a `token issue --login` link (the token
    // leaves the address bar at once): counts, rules with their false-positive rates,
    // ledger verification.
    let link = run_ok(
        dunes()
            .args([
                "token",
                "issue",
                "--sub",
                "e2e-admin",
                "--role",
                "admin",
                "--ttl",
                "5m",
                "--login",
            ])
            .arg("--data-dir")
            .arg(&dir),
    );
    let link = String::from_utf8(link.stdout).expect("utf8");
    let link = link.lines().last().expect("a link").trim();
    // the link names the configured listener; this test's monitor listens elsewhere
    let fragment = link
        .strip_prefix("http://127.0.0.1:8080/")
        .unwrap_or_else(|| panic!("a link to [http] listen: {link}"));
    assert!(fragment.starts_with("#token="), "{link}");
    c.execute("sessionStorage.clear(); return 1;", vec![])
        .await
        .expect("clear");
    c.goto(&format!("{base}/{fragment}")).await.expect("goto");
    c.refresh().await.expect("load the link");
    until(
        &c,
        "the queue after the link",
        "document.querySelectorAll('.qrow').length",
    )
    .await;
    assert!(text(&c, "#who").await.contains("e2e-admin (admin)"));
    let url = c.current_url().await.expect("url");
    assert_eq!(
        url.fragment(),
        Some("/queue"),
        "the token left the address bar"
    );
    c.goto(&format!("{base}/#/overview")).await.expect("goto");
    until(&c, "overview", "document.querySelector('#rules-table')").await;
    assert_eq!(text(&c, "#ov-l3").await, (of_level(3) + 1).to_string());
    click(&c, "#verify").await;
    let verdict = until(
        &c,
        "verification",
        "document.querySelector('#verify-result').textContent.match(/^[✓✗]/) && document.querySelector('#verify-result').textContent",
    )
    .await;
    assert!(verdict.as_str().unwrap_or("").starts_with('✓'), "{verdict}");
    shot(&c, "console-overview.png").await;
    let before = api_get(
        &base,
        &analyst,
        "/api/v1/incidents?view=summary&limit=100000",
    )["count"]
        .as_u64()
        .expect("count") as usize;
    sigterm_and_wait(&mut mon);

    // 9. Ten thousand incidents: the queue renders them all (virtualised rows).
    let template = read_ndjson(&dir.join("incidents.ndjson"))
        .into_iter()
        .find(|i| i["event_ids"].as_array().is_some_and(|e| e.len() == 1))
        .expect("a one-event incident");
    let mut bulk = String::new();
    for n in 0..10_000 {
        let mut i = template.clone();
        i["incident_id"] = json!(format!("inc-bulk-{n:05}"));
        i["level"] = json!(1 + n % 3);
        i["rule_id"] = json!(format!("bulk-rule-{}", n % 40));
        bulk.push_str(&i.to_string());
        bulk.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("incidents.ndjson"))
        .expect("open");
    std::io::Write::write_all(&mut f, bulk.as_bytes()).expect("append");
    drop(f);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut mon = common::start_monitor(&dir, port);
    sign_in(&c, &base, &analyst).await;
    let m = c
        .execute("return window.dunesMetrics;", vec![])
        .await
        .expect("metrics");
    let total = before + 10_000;
    assert_eq!(m["queueRows"], json!(total));
    assert_eq!(text(&c, "#shown").await, total.to_string());
    let in_dom = count(&c, ".qrow").await;
    assert!(in_dom < 200, "rows are virtualised: {in_dom} in the DOM");
    select(&c, "#f-rule", "bulk-rule-7").await;
    until(
        &c,
        "filter over 10k",
        "document.querySelector('#shown').textContent === '250'",
    )
    .await;
    eprintln!(
        "console: first render of {total} incidents: {:.0} ms (fetch + render), render alone {:.0} ms",
        m["queueFirstRenderMs"].as_f64().unwrap_or(f64::NAN),
        m["queueRenderOnlyMs"].as_f64().unwrap_or(f64::NAN)
    );
    c.close().await.expect("close");
    sigterm_and_wait(&mut mon);
}
