//! `dunes model`: train the behavioural anomaly model on a baseline and
//! show a saved model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use dunes_detect::anomaly::{self, Baseline, Extractor, FeatureSpec, LoadedModel, WindowKind};
use dunes_ingest::{IngestConfig, Normalizer};

use dunes_pipeline::Config;

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Train the anomaly model on baseline traffic (NDJSON envelopes, or the
    /// Parquet event history of a data dir) and save it in the data dir
    /// (`models/anomaly-model.json`, or `[anomaly] model`); `dunes run`
    /// loads it at start and ledgers its version.
    Train {
        /// NDJSON files of baseline traffic, or event history directories (a
        /// data dir, its `history` dir, `history/events` or one day
        /// partition), read in write order.
        #[arg(long, required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// Labels (session_id → scenario): train only on `benign` sessions.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Write the model here instead of the data dir.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a saved model's version, calibration and feature baseline.
    Show {
        /// Model file (default: the data dir's).
        file: Option<PathBuf>,
    },
}

pub fn run(cfg: &Config, cmd: ModelCmd) -> anyhow::Result<()> {
    match cmd {
        ModelCmd::Train { from, labels, out } => {
            let labels = labels.as_deref().map(read_labels).transpose()?;
            let path = out.unwrap_or_else(|| cfg.anomaly.model_path(&cfg.data_dir));
            let m = train_from_files(cfg, &from, labels.as_ref())?;
            m.save(&path)
                .with_context(|| format!("cannot save {}", path.display()))?;
            print_model(&m, &path);
            Ok(())
        }
        ModelCmd::Show { file } => {
            let path = file.unwrap_or_else(|| cfg.anomaly.model_path(&cfg.data_dir));
            let m = LoadedModel::load(&path)
                .with_context(|| format!("cannot load {}", path.display()))?;
            print_model(&m, &path);
            Ok(())
        }
    }
}

pub fn read_labels(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| {
        format!(
            "{}: expected a JSON object session_id → scenario",
            path.display()
        )
    })
}

/// Feature windows (session and principal) of NDJSON files (through the
/// same normalisation as the pipeline) or of event history directories
/// (already normalised), through the same feature code as the pipeline.
pub fn windows_from_files(
    cfg: &Config,
    spec: FeatureSpec,
    files: &[PathBuf],
) -> anyhow::Result<Baseline> {
    let mut normalizer = Normalizer::new(IngestConfig {
        max_line_bytes: cfg.ingest.max_line_bytes,
        ..IngestConfig::default()
    });
    let mut ex = Extractor::new(spec);
    let mut set = Baseline::default();
    let batch = cfg.ingest.batch_size.max(1);
    for file in files {
        if file.is_dir() {
            let parts = dunes_detect::history::event_files(file)?;
            for part in &parts {
                for b in dunes_detect::history::read_batches(part)? {
                    ex.feed(&b, |o| set.observe(&o))
                        .with_context(|| format!("{}", part.display()))?;
                }
            }
            continue;
        }
        let reader = dunes_ingest::source::open_file(file, cfg.ingest.max_line_bytes)
            .with_context(|| format!("cannot open {}", file.display()))?;
        let mut buf = Vec::with_capacity(batch);
        let mut feed = |buf: Vec<dunes_ingest::RawRecord>| -> anyhow::Result<()> {
            let decoded = normalizer
                .decode_batch(buf)
                .context("normalisation failed")?;
            ex.feed(&decoded.events, |o| set.observe(&o))?;
            Ok(())
        };
        for rec in reader {
            buf.push(rec?);
            if buf.len() >= batch {
                feed(std::mem::take(&mut buf))?;
            }
        }
        if !buf.is_empty() {
            feed(buf)?;
        }
    }
    Ok(set)
}

/// Trains on files; with labels, only on sessions labelled `benign` (and
/// principal windows of principals with no other session).
pub fn train_from_files(
    cfg: &Config,
    files: &[PathBuf],
    labels: Option<&BTreeMap<String, String>>,
) -> anyhow::Result<LoadedModel> {
    let t0 = std::time::Instant::now();
    let mut set = windows_from_files(cfg, cfg.anomaly.feature_spec(), files)?;
    let total = (set.session.len(), set.principal.len());
    if let Some(l) = labels {
        set.retain_sessions(|s| l.get(s).is_some_and(|v| v == "benign"));
    }
    eprintln!(
        "{} session and {} principal windows from {} source(s){} in {:.1}s; training...",
        set.session.len(),
        set.principal.len(),
        files.len(),
        if labels.is_some() {
            format!(
                " (benign-labelled sessions only, of {} and {})",
                total.0, total.1
            )
        } else {
            String::new()
        },
        t0.elapsed().as_secs_f64()
    );
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            if f.is_dir() {
                format!("event history {}", f.display())
            } else {
                f.display().to_string()
            }
        })
        .collect();
    let mut on = names.join(", ");
    if labels.is_some() {
        on.push_str(" (benign-labelled sessions)");
    }
    let m = anomaly::train(
        &set,
        &cfg.anomaly.feature_spec(),
        &cfg.anomaly.train_params(),
        &on,
    )
    .context("training failed")?;
    eprintln!("trained in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(m)
}

fn print_model(m: &LoadedModel, path: &Path) {
    let md = &m.model;
    println!("anomaly model {}", path.display());
    println!("  version:      {}", md.version);
    println!(
        "  kind:         {} (format {}), window {}s",
        md.kind, md.format, md.feature_spec.window_secs
    );
    println!("  trained on:   {}", md.trained_on);
    for kind in [WindowKind::Session, WindowKind::Principal] {
        let Some(part) = m.part(kind) else {
            println!(
                "  {kind} windows: no part (format 1, or no principal in the baseline): not scored"
            );
            continue;
        };
        let (components, trained) = match (kind, &md.principal) {
            (WindowKind::Principal, Some(p)) => (
                p.components.len(),
                format!(
                    "{} principals, {} sessions, {} windows",
                    p.trained_principals, p.trained_sessions, p.trained_windows
                ),
            ),
            _ => (
                md.components.len(),
                format!(
                    "{} sessions, {} windows",
                    md.trained_sessions, md.trained_windows
                ),
            ),
        };
        let c = part.calibration();
        println!("  {kind} windows: {components} components; {trained}");
        println!(
            "    threshold:  {:.2} (target FP rate {:.2}% of sessions; {} {} calibration sessions, {:.2}% above)",
            c.threshold,
            c.target_fpr * 100.0,
            c.sessions,
            if c.held_out { "held-out" } else { "in-sample" },
            c.empirical_fpr * 100.0
        );
        if c.fenced_sessions > 0 {
            println!(
                "    calibration left out {} far-out sessions (presumed attacks in the baseline)",
                c.fenced_sessions
            );
        }
        println!(
            "    session max score p50/p90/p99: {:.1} / {:.1} / {:.1}",
            c.session_score_p50, c.session_score_p90, c.session_score_p99
        );
        println!("    feature baseline (raw p50 / p99):");
        for f in part.baseline() {
            match &f.tail {
                Some(t) => println!(
                    "      {:<20} {:>10.2} {:>10.2}   tail ref (session maxima p50/p95/p99): {:.2} / {:.2} / {:.2}{}",
                    f.name,
                    f.p50,
                    f.p99,
                    t.p50,
                    t.p95,
                    t.p99,
                    if t.fenced_sessions > 0 {
                        format!(", {} far-out sessions left out", t.fenced_sessions)
                    } else {
                        String::new()
                    }
                ),
                None => println!("      {:<20} {:>10.2} {:>10.2}", f.name, f.p50, f.p99),
            }
        }
    }
}
