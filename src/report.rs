//! What `run`, `replay` and `demo` print: the run summary and the incident
//! list, and `dunes demo` itself.

use anyhow::Context;
use dunes_detect::{Incident, IncidentFilter};
use dunes_pipeline::{Config, DataPaths, DriveOptions, DriveOutcome, drive};

pub fn print_summary(cfg: &Config, out: &DriveOutcome) {
    let s = &out.stats;
    let paths = DataPaths::new(&cfg.data_dir);
    println!(
        "processed {} envelopes ({} messages) in {:.2}s",
        s.envelopes,
        s.rows,
        out.elapsed.as_secs_f64()
    );
    println!(
        "rejected: {}{}",
        s.rejected,
        if s.rejected > 0 {
            format!(" (see {})", paths.dead_letter.display())
        } else {
            String::new()
        }
    );
    println!(
        "incidents: {} (level 1: {}, level 2: {}, level 3: {}) -> {}",
        s.incidents,
        s.incidents_by_level[0],
        s.incidents_by_level[1],
        s.incidents_by_level[2],
        paths.incidents.display()
    );
    println!(
        "responses: {} -> {}",
        s.responses,
        paths.responses.display()
    );
    match &out.checkpoint {
        Some(cp) => println!(
            "ledger: signed checkpoint at tree size {} (root {})",
            cp.tree_size,
            hex::encode(cp.root)
        ),
        None => println!("ledger: no new records"),
    }
}

/// Prints incidents newest-level first, as a SOC console would list them.
pub fn print_incidents(incidents: &[Incident]) {
    let mut list: Vec<&Incident> = incidents.iter().collect();
    list.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(b.severity.cmp(&a.severity))
            .then(a.first_ts.cmp(&b.first_ts))
    });
    println!(
        "{:<3} {:<9} {:<36} {:<34} {:>6}  title",
        "lvl", "severity", "rule", "session / entity", "events"
    );
    for inc in list {
        let who = inc.session_id.clone().unwrap_or_else(|| {
            inc.entity
                .values()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(",")
        });
        println!(
            "L{:<2} {:<9} {:<36} {:<34} {:>6}  {}",
            inc.level.as_u8(),
            inc.severity.to_string(),
            truncate(&inc.rule_id, 36),
            truncate(&who, 34),
            inc.event_ids.len(),
            inc.title
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `dunes demo`: fresh simulated traffic through the real pipeline.
/// What `dunes demo` simulates and how it feeds it.
pub struct Demo {
    pub sessions: u64,
    pub seed: u64,
    pub no_serve: bool,
    /// Stateless MCP (2026-07-28) traffic, stitched into sessions.
    pub stateless: bool,
    /// Feed OTLP/JSON log exports (`--format otlp`) instead of envelopes.
    pub otlp: bool,
}

pub async fn demo(mut cfg: Config, demo: Demo) -> anyhow::Result<()> {
    let Demo {
        sessions,
        seed,
        no_serve,
        stateless,
        otlp,
    } = demo;
    let dir = cfg.data_dir.join("demo");
    if dir.exists() {
        // The demo owns this sub-directory and recreates it on every run.
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot reset {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let traffic = dir.join(if otlp {
        "traffic.otlp.jsonl"
    } else {
        "traffic.ndjson"
    });
    let sim = dunes_sim::SimConfig {
        sessions,
        seed,
        stateless,
        ..dunes_sim::SimConfig::default()
    };
    let f = std::fs::File::create(&traffic)
        .with_context(|| format!("cannot create {}", traffic.display()))?;
    let st = if otlp {
        cfg.ingest.format = dunes_ingest::InputFormat::Otlp;
        dunes_sim::write_otlp(&sim, std::io::BufWriter::new(f))?
    } else {
        dunes_sim::write_ndjson(&sim, std::io::BufWriter::new(f))?
    };
    let labels = dunes_sim::generate_labels(&sim);
    std::fs::write(
        dir.join("labels.json"),
        serde_json::to_string_pretty(&labels)?,
    )
    .context("cannot write labels")?;
    println!(
        "simulated {} sessions ({} envelopes{}{}, seed {seed}) -> {}",
        st.sessions,
        st.lines,
        if stateless {
            ", stateless 2026-07-28"
        } else {
            ""
        },
        if otlp {
            ", as OTLP/JSON log exports"
        } else {
            ""
        },
        traffic.display()
    );
    // Anomaly model: the data dir's, if one was trained (`dunes model
    // train`); otherwise a short warm-up on the demo's own traffic.
    let model = cfg.anomaly.model_path(&cfg.data_dir);
    if model.exists() {
        cfg.anomaly.model = Some(model);
    } else {
        cfg.anomaly.warmup_min_sessions = cfg.anomaly.warmup_min_sessions.min(30);
    }
    cfg.data_dir = dir.clone();
    cfg.ingest.files = vec![traffic];
    cfg.ingest.stdin = false;
    cfg.http.enabled = !no_serve;
    let data_dir = dir.clone();
    let opts = DriveOptions {
        keep_running: !no_serve,
        after_sources: Some(Box::new(move |stats, store, addr| {
            let incidents = store.list(&IncidentFilter::default());
            println!();
            print_incidents(&incidents);
            println!(
                "\n{} incidents (level 1: {}, level 2: {}, level 3: {}) from {} envelopes; {} rejected",
                stats.incidents,
                stats.incidents_by_level[0],
                stats.incidents_by_level[1],
                stats.incidents_by_level[2],
                stats.envelopes,
                stats.rejected
            );
            println!(
                "data dir: {}  (verify: dunes verify {})",
                data_dir.display(),
                data_dir.display()
            );
            if let Some(a) = addr {
                let tcfg = Config {
                    data_dir: data_dir.clone(),
                    ..Config::default()
                };
                match crate::issue_token(&tcfg, "demo-analyst", "analyst", "15m") {
                    Ok(t) => {
                        println!(
                            "API up (every route but /healthz needs a bearer token; this analyst token lasts 15 minutes):"
                        );
                        println!("  export DUNES_TOKEN={t}");
                        println!(
                            "  curl -H \"Authorization: Bearer $DUNES_TOKEN\" 'http://{a}/api/v1/incidents?level=3'"
                        );
                        println!(
                            "  new token: dunes token issue --data-dir {} --sub you --role analyst --ttl 15m   (Ctrl-C to stop)",
                            data_dir.display()
                        );
                    }
                    Err(e) => println!("API up at http://{a} (cannot issue a demo token: {e:#})"),
                }
            }
        })),
        ..DriveOptions::replay()
    };
    let out = drive(&cfg, opts).await?;
    print_summary(&cfg, &out);
    Ok(())
}
