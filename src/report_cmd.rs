//! `dunes report notify` and `dunes report compliance`.
//!
//! `notify` submits one regulatory notification stage of a Level 3 incident.
//! Builds the document from the data dir, ledgers the submission (through the running
//! monitor's API with `--api`, or directly when no monitor holds the ledger), then writes
//! the document, its HTML page and an evidence bundle of the incident's ledger records.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use dunes_detect::notification::NotificationClocks;
use dunes_detect::{ActionKind, IncidentAction, IncidentStore};
use dunes_pipeline::report::{self, DocumentInput, Submission};
use dunes_pipeline::{Config, DataPaths, Pipeline};

/// `dunes report notify` options.
#[derive(clap::Args, Debug)]
pub struct NotifyArgs {
    /// Incident id (`inc-…`).
    pub incident: String,
    /// Regime id (nis2, dora, gdpr, ai-act, … as configured in `[notification]`).
    #[arg(long)]
    pub regime: String,
    /// Stage id (e.g. early-warning).
    #[arg(long)]
    pub stage: String,
    /// Output directory (default: notification-<incident>-<regime>-<stage>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Base URL of the running monitor's API; the submission goes through it.
    #[arg(long)]
    pub api: Option<String>,
    /// API token for --api (role analyst or above).
    #[arg(long, env = "DUNES_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Actor recorded when submitting without --api (default: cli:$USER).
    #[arg(long)]
    pub actor: Option<String>,
}

fn load_store(cfg: &Config) -> anyhow::Result<IncidentStore> {
    let paths = DataPaths::new(&cfg.data_dir);
    let store = IncidentStore::load_ndjson(&paths.incidents)
        .with_context(|| format!("cannot read {}", paths.incidents.display()))?;
    store
        .load_actions_ndjson(&paths.actions)
        .with_context(|| format!("cannot read {}", paths.actions.display()))?;
    Ok(store)
}

pub async fn run(cfg: &Config, a: NotifyArgs) -> anyhow::Result<()> {
    let data_dir = &cfg.data_dir;
    let store = load_store(cfg)?;
    let inc = store
        .get(&a.incident)
        .with_context(|| format!("no incident {} in {}", a.incident, data_dir.display()))?;
    let clocks = NotificationClocks::new(&cfg.notification).map_err(anyhow::Error::msg)?;
    let (records, responses) = report::incident_records(data_dir, &a.incident)?;
    let origin = dunes_ledger::read_checkpoints(data_dir)?
        .last()
        .map(|c| c.origin.clone())
        .context("the ledger has no signed checkpoint")?;
    let history = store.history(&a.incident);
    let doc = report::notification_document(
        &clocks,
        DocumentInput {
            incident: &inc,
            history: &history,
            responses: &responses,
            records: records.clone(),
            origin,
            regime: &a.regime,
            stage: &a.stage,
            now: Utc::now(),
        },
    )?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "notification-{}-{}-{}",
            a.incident, a.regime, a.stage
        ))
    });
    ensure_empty(&out)?;
    let doc_json = serde_json::to_vec_pretty(&doc)?;
    let note = report::submission_note(&doc_json);

    let action_index = match &a.api {
        Some(url) => submit_over_api(url, a.token.as_deref(), &a, &note)?,
        None => submit_directly(cfg, store, &a, &note).await?,
    };
    let tree_size = wait_signed(data_dir, action_index, Duration::from_secs(90))?;

    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let json_path = out.join("notification.json");
    std::fs::write(&json_path, &doc_json)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let mut wanted: BTreeSet<u64> = records.all();
    wanted.insert(action_index);
    let ev = dunes_ledger::export_evidence(data_dir, &wanted, &out.join("evidence"))?;
    let submission = Submission {
        action_index,
        document_blake3: blake3::hash(&doc_json).to_hex().to_string(),
        evidence_tree_size: ev.tree_size,
        evidence_root: ev.root.clone(),
        evidence_records: ev.records.len() as u64,
    };
    let html = report::render_html(&doc, &submission)?;
    std::fs::write(out.join("notification.html"), html)
        .with_context(|| format!("cannot write {}", out.join("notification.html").display()))?;
    println!(
        "{}/{} for {} submitted {} (deadline {}): ledger record {action_index}, signed at tree size {tree_size}",
        a.regime,
        a.stage,
        a.incident,
        if doc.on_time { "on time" } else { "LATE" },
        doc.deadline
            .map_or_else(|| "none".to_string(), |d| d.to_rfc3339())
    );
    println!(
        "  {}  (BLAKE3 {}, in the action's note)",
        json_path.display(),
        submission.document_blake3
    );
    println!("  {}", out.join("notification.html").display());
    println!(
        "  {}  ({} records with inclusion proofs; check: dunes verify {})",
        ev.out.display(),
        ev.records.len(),
        ev.out.display()
    );
    let open = doc.to_complete.len();
    println!(
        "  {open} fields are marked \"{}\"",
        report::notify::TO_COMPLETE
    );
    Ok(())
}

/// Refuses an output directory that exists and is not empty.
fn ensure_empty(out: &Path) -> anyhow::Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("output directory {} exists and is not empty", out.display());
    }
    Ok(())
}

/// Through the running monitor: `POST /api/v1/incidents/{id}/notify`.
fn submit_over_api(
    base: &str,
    token: Option<&str>,
    a: &NotifyArgs,
    note: &str,
) -> anyhow::Result<u64> {
    let token =
        token.context("--api needs a token: --token or DUNES_TOKEN (role analyst or above)")?;
    let url = format!(
        "{}/api/v1/incidents/{}/notify",
        base.trim_end_matches('/'),
        a.incident
    );
    let body = serde_json::json!({ "regime": a.regime, "stage": a.stage, "note": note });
    api_post(&url, token, "notify", &body)?["action"]["ledger_index"]
        .as_u64()
        .context("the answer has no action.ledger_index")
}

/// Through the running monitor: `POST /api/v1/reports/digest`; returns the record index.
fn digest_over_api(
    base: &str,
    token: Option<&str>,
    blake3_hex: &str,
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
) -> anyhow::Result<u64> {
    let token =
        token.context("--api needs a token: --token or DUNES_TOKEN (role auditor or admin)")?;
    let url = format!("{}/api/v1/reports/digest", base.trim_end_matches('/'));
    let body =
        serde_json::json!({ "report": "compliance", "blake3": blake3_hex, "from": from, "to": to });
    api_post(&url, token, "digest", &body)?["ledger_index"]
        .as_u64()
        .context("the answer has no ledger_index")
}

/// POSTs `body` with a fresh `Idempotency-Key`; the JSON answer of a 200, else the error.
fn api_post(
    url: &str,
    token: &str,
    what: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .header(
            "Idempotency-Key",
            &format!("{what}-{}", uuid::Uuid::now_v7().simple()),
        )
        .send_json(body)
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        bail!("POST {url}: HTTP {status}: {}", text.trim());
    }
    serde_json::from_str(&text).context("answer is not JSON")
}

/// No monitor running: open the pipeline on the data dir, apply the action, close (which
/// signs a checkpoint).
async fn submit_directly(
    cfg: &Config,
    store: IncidentStore,
    a: &NotifyArgs,
    note: &str,
) -> anyhow::Result<u64> {
    let mut p = Pipeline::open(cfg, Arc::new(store), None)
        .await
        .map_err(|e| {
            let locked = matches!(
                &e,
                dunes_pipeline::PipelineError::Ledger {
                    source: dunes_ledger::LedgerError::Locked { .. },
                    ..
                }
            );
            if locked {
                anyhow::anyhow!(
                    "{e}: a monitor is running on {}; submit through it with --api http://HOST:PORT and a responder token (DUNES_TOKEN)",
                    cfg.data_dir.display()
                )
            } else {
                anyhow::Error::new(e)
            }
        })?;
    let actor = a.actor.clone().unwrap_or_else(crate::cli_subject);
    let action = IncidentAction {
        record_type: "incident_action".into(),
        action_id: format!("act-{}", uuid::Uuid::now_v7().simple()),
        incident_id: a.incident.clone(),
        action: ActionKind::Notify,
        actor,
        role: "cli".into(),
        jti: "-".into(),
        at: Utc::now(),
        assignee: None,
        disposition: None,
        note: Some(note.to_string()),
        regime: Some(a.regime.clone()),
        stage: Some(a.stage.clone()),
        suppress_until: None,
        ledger_index: None,
    };
    let outcome = p.apply_action(action)?;
    let index = match outcome {
        Ok(o) => o
            .action
            .ledger_index
            .context("the action was not ledgered")?,
        Err(dunes_api::ActionRefused::NotFound) => bail!("no incident {}", a.incident),
        Err(dunes_api::ActionRefused::Conflict(m)) => bail!("submission refused: {m}"),
    };
    p.close()?;
    Ok(index)
}

/// Waits until a signed checkpoint covers record `index`.
fn wait_signed(data_dir: &Path, index: u64, timeout: Duration) -> anyhow::Result<u64> {
    let start = Instant::now();
    loop {
        if let Some(size) = dunes_ledger::read_checkpoints(data_dir)?
            .last()
            .map(|c| c.tree_size)
            .filter(|s| *s > index)
        {
            return Ok(size);
        }
        if start.elapsed() > timeout {
            bail!(
                "record {index} is still not covered by a signed checkpoint after {}s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dunes report compliance`: compliance.json, compliance.html and compliance.pdf in
/// `out`; the JSON's BLAKE3 is ledgered as an `action` record (`report_digest`) when no
/// monitor holds the ledger.
pub fn compliance(
    cfg: &Config,
    from: Option<chrono::DateTime<Utc>>,
    to: Option<chrono::DateTime<Utc>>,
    out: &Path,
    pdf: bool,
    api: Option<(&str, Option<&str>)>,
) -> anyhow::Result<()> {
    use dunes_pipeline::report::compliance as c;
    let now = Utc::now();
    let (df, dt) = c::default_period(now);
    let (from, to) = (from.unwrap_or(df), to.unwrap_or(dt));
    ensure_empty(out)?;
    let store = load_store(cfg)?;
    let r = c::compliance_report(cfg, &store, from, to, now)?;
    let json = serde_json::to_vec_pretty(&r)?;
    let digest = blake3::hash(&json).to_hex().to_string();
    let actor = crate::cli_subject();
    // One record appended, no key rotation on this open (the monitor rotates on its own).
    let mut lc = cfg.ledger_config();
    lc.rotate_every = None;
    let ledgered = match dunes_ledger::Ledger::open(lc) {
        Ok(mut l) => {
            let payload = c::digest_record("compliance", &digest, from, to, &actor, now);
            let idx = l.append(
                dunes_ledger::RecordKind::Action,
                now.timestamp_micros(),
                &serde_json::to_vec(&payload)?,
                &[],
            )?;
            l.close().context("cannot close the ledger")?;
            Some(idx)
        }
        Err(dunes_ledger::LedgerError::Locked { .. }) => match api {
            // a monitor holds the ledger: it appends the digest for us
            Some((base, token)) => Some(digest_over_api(base, token, &digest, from, to)?),
            None => None,
        },
        Err(e) => return Err(e).context("cannot open the ledger"),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("compliance.json"), &json)?;
    let html_path = out.join("compliance.html");
    std::fs::write(&html_path, c::render_html(&r, &digest, ledgered)?)?;
    if pdf {
        print_pdf(&html_path, &out.join("compliance.pdf"))?;
    }
    let count = |s: c::ItemStatus| r.items.iter().filter(|i| i.status == s).count();
    println!(
        "compliance report {} .. {}: {} items evidenced, {} failed, {} not evidenced by Dunes",
        from.to_rfc3339(),
        to.to_rfc3339(),
        count(c::ItemStatus::Evidenced),
        count(c::ItemStatus::Failed),
        count(c::ItemStatus::NotEvidenced)
    );
    for i in r.items.iter().filter(|i| i.status == c::ItemStatus::Failed) {
        println!(
            "  FAILED {}: {}",
            i.id,
            i.reason.as_deref().unwrap_or_default()
        );
    }
    println!(
        "  {}  (BLAKE3 {digest})",
        out.join("compliance.json").display()
    );
    match ledgered {
        Some(i) => println!("  digest ledgered as record {i}"),
        None => println!(
            "  digest NOT ledgered: a monitor holds the ledger of {} (rerun with --api http://HOST:PORT and an auditor token, or stop it and rerun)",
            cfg.data_dir.display()
        ),
    }
    println!("  {}", html_path.display());
    if pdf {
        println!("  {}", out.join("compliance.pdf").display());
    }
    Ok(())
}

/// Headless Chromium (Debian's `chromium`, or `$DUNES_CHROMIUM`) prints `html` to `pdf`.
fn print_pdf(html: &Path, pdf: &Path) -> anyhow::Result<()> {
    let candidates = std::env::var("DUNES_CHROMIUM")
        .map(|c| vec![c])
        .unwrap_or_else(|_| {
            ["chromium", "chromium-browser", "google-chrome"]
                .map(String::from)
                .to_vec()
        });
    let html = std::fs::canonicalize(html)?;
    let profile = tempfile_dir(pdf)?;
    for bin in &candidates {
        let run = std::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-pdf-header-footer",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--print-to-pdf={}", pdf.display()))
            .arg(format!("file://{}", html.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match run {
            Ok(s) if s.success() && pdf.exists() => {
                let _ = std::fs::remove_dir_all(&profile);
                return Ok(());
            }
            Ok(s) => {
                let _ = std::fs::remove_dir_all(&profile);
                bail!("{bin} could not print {} to PDF ({s})", html.display())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot run {bin}")),
        }
    }
    let _ = std::fs::remove_dir_all(&profile);
    bail!(
        "no headless Chromium found (tried {}; install Debian's `chromium` or set DUNES_CHROMIUM), or pass --no-pdf",
        candidates.join(", ")
    )
}

/// A fresh Chromium profile directory next to the output (removed afterwards).
fn tempfile_dir(near: &Path) -> anyhow::Result<PathBuf> {
    let dir = near
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".chromium-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
