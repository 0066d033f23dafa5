//! `dunes`: streaming security event monitor for MCP servers.

mod bench;
mod config;
mod eval;
mod ledger_cmd;
mod model_cmd;
mod pipeline;
mod runner;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "dunes",
    version,
    about = "Streaming security event monitor (SIEM) for MCP servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that touches state.
#[derive(Args, Clone, Debug, Default)]
struct Common {
    /// TOML configuration file.
    #[arg(long, global = true, env = "DUNES_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (ledger, keys, incidents, responses, dead letters).
    #[arg(long, global = true, env = "DUNES_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Rule pack directory.
    #[arg(long, global = true)]
    rules: Option<PathBuf>,
}

impl Common {
    fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(r) = &self.rules {
            cfg.rules_dir = Some(r.clone());
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitor: ingest files/stdin/HTTP, detect, ledger, serve the API.
    Run {
        #[command(flatten)]
        common: Common,
        /// NDJSON files to ingest (`-` for stdin).
        files: Vec<PathBuf>,
        /// Also read NDJSON envelopes from stdin.
        #[arg(long)]
        stdin: bool,
        /// HTTP listen address (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Do not start the HTTP server.
        #[arg(long)]
        no_http: bool,
    },
    /// Run the same pipeline over files to completion and print a summary.
    Replay {
        #[command(flatten)]
        common: Common,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also write this run's incidents to this NDJSON file.
        #[arg(long)]
        incidents_out: Option<PathBuf>,
    },
    /// Verify offline a data dir's ledger or an export bundle: hash chain, Merkle roots,
    /// signatures, key history, redactions (bundles: also the signed manifest and digests).
    Verify {
        /// Data directory (default ./dunes-data).
        dir: Option<PathBuf>,
        /// Same as DIR.
        #[arg(long, conflicts_with = "dir")]
        data_dir: Option<PathBuf>,
    },
    /// Generate deterministic benign + attack MCP traffic in envelope form.
    Simulate {
        #[arg(long, default_value_t = 100)]
        sessions: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (default stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Write the labels (session_id → scenario) as JSON here.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Target share of attack sessions (0 = benign only).
        #[arg(long, default_value_t = 0.3)]
        attack_ratio: f64,
        /// Only these attack scenarios (comma-separated, e.g. recon_anomaly,ssrf).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
    },
    /// Simulate traffic, run it through the pipeline, print incidents and
    /// keep the API up.
    Demo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 120)]
        sessions: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Exit after printing the incidents instead of serving the API.
        #[arg(long)]
        no_serve: bool,
    },
    /// Measure pipeline throughput and latency over simulated traffic.
    Bench {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 2000)]
        sessions: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 4096)]
        batch_size: usize,
    },
    /// Replay labelled traffic through the pipeline and score detection
    /// per scenario (recall, false-positive sessions, rules fired).
    Eval {
        #[command(flatten)]
        common: Common,
        /// NDJSON envelopes.
        #[arg(long)]
        events: PathBuf,
        /// JSON object session_id → scenario (`benign` for clean sessions).
        #[arg(long)]
        labels: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Behavioural anomaly model: train on baseline traffic, show.
    Model {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: model_cmd::ModelCmd,
    },
    /// Rule pack tooling.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Export ledger records (default: all) as a self-contained, signed bundle for offline
    /// verification (`dunes verify DIR`).
    Export {
        #[command(flatten)]
        common: Common,
        /// First record index (default 0).
        #[arg(long)]
        from: Option<u64>,
        /// Last record index, inclusive (default: the last record).
        #[arg(long)]
        to: Option<u64>,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Ledger signing keys: rotate, revoke, list.
    Keys {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: ledger_cmd::KeysCmd,
    },
    /// Ledger maintenance: Merkle proofs, redaction.
    Ledger {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: ledger_cmd::LedgerCmd,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Run every rule's inline tests.
    Test { dir: Option<PathBuf> },
    /// Parse, validate and plan every rule (metadata, tags, SQL).
    Lint { dir: Option<PathBuf> },
    /// List the rules.
    List { dir: Option<PathBuf> },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = "warn,dunes::alert=off,dunes::response=off,dunes::emergency=off,dunes::queue=off";
    init_tracing(match &cli.command {
        Command::Bench { .. }
        | Command::Rules { .. }
        | Command::Verify { .. }
        | Command::Export { .. }
        | Command::Keys { .. }
        | Command::Ledger { .. }
        | Command::Eval { .. } => quiet,
        Command::Simulate { .. } | Command::Model { .. } => "warn",
        Command::Replay { .. } | Command::Demo { .. } => {
            "info,dunes::queue=warn,dunes::response=warn,dunes::alert=warn"
        }
        Command::Run { .. } => "info",
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run {
            common,
            files,
            stdin,
            listen,
            no_http,
        } => {
            let mut cfg = common.config()?;
            cfg.ingest.files.extend(files);
            cfg.ingest.stdin |= stdin;
            if let Some(l) = listen {
                cfg.http.listen = l;
            }
            if no_http {
                cfg.http.enabled = false;
            }
            let out = runner::drive(&cfg, runner::DriveOptions::run()).await?;
            runner::print_summary(&cfg, &out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            common,
            files,
            incidents_out,
        } => {
            let mut cfg = common.config()?;
            cfg.ingest.files = files;
            cfg.ingest.stdin = false;
            cfg.http.enabled = false;
            let opts = runner::DriveOptions {
                incidents_out,
                ..runner::DriveOptions::replay()
            };
            let out = runner::drive(&cfg, opts).await?;
            runner::print_summary(&cfg, &out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir, data_dir } => {
            let dir = dir
                .or(data_dir)
                .unwrap_or_else(|| Config::default().data_dir);
            verify(&dir)
        }
        Command::Simulate {
            sessions,
            seed,
            out,
            labels,
            attack_ratio,
            scenarios,
        } => {
            let scenarios = scenarios
                .iter()
                .map(|s| s.parse::<dunes_sim::Scenario>())
                .collect::<Result<Vec<_>, _>>()?;
            let cfg = dunes_sim::SimConfig {
                sessions,
                seed,
                attack_ratio,
                scenarios: (!scenarios.is_empty()).then_some(scenarios),
                ..dunes_sim::SimConfig::default()
            };
            simulate(&cfg, out.as_deref(), labels.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            common,
            sessions,
            seed,
            listen,
            no_serve,
        } => {
            let mut cfg = common.config()?;
            if let Some(l) = listen {
                cfg.http.listen = l;
            }
            runner::demo(cfg, sessions, seed, no_serve).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            common,
            sessions,
            seed,
            batch_size,
        } => {
            let cfg = common.config()?;
            bench::run(cfg, sessions, seed, batch_size).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            common,
            events,
            labels,
            json,
        } => {
            let cfg = common.config()?;
            let clean = eval::run(&cfg, &events, &labels, json).await?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Model { common, cmd } => {
            model_cmd::run(&common.config()?, cmd)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { cmd } => rules_cmd(cmd).await,
        Command::Export {
            common,
            from,
            to,
            out,
        } => ledger_cmd::export(&common.config()?.data_dir, from, to, &out),
        Command::Keys { common, cmd } => {
            let cfg = common.config()?;
            ledger_cmd::keys(&cfg.data_dir, cfg.origin(), cmd)
        }
        Command::Ledger { common, cmd } => {
            let cfg = common.config()?;
            ledger_cmd::ledger(&cfg.data_dir, cfg.origin(), cmd)
        }
    }
}

fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    ledger_cmd::verify(dir)
}

fn simulate(
    cfg: &dunes_sim::SimConfig,
    out: Option<&Path>,
    labels: Option<&Path>,
) -> anyhow::Result<()> {
    let seed = cfg.seed;
    let stats = match out {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            dunes_sim::write_ndjson(cfg, std::io::BufWriter::new(f))?
        }
        None => dunes_sim::write_ndjson(cfg, std::io::BufWriter::new(std::io::stdout().lock()))?,
    };
    if let Some(p) = labels {
        let labels = dunes_sim::generate_labels(cfg);
        let text = serde_json::to_string_pretty(&labels)?;
        std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    eprintln!(
        "simulated {} sessions, {} envelopes (seed {seed})",
        stats.sessions, stats.lines
    );
    Ok(())
}

async fn rules_cmd(cmd: RulesCmd) -> anyhow::Result<ExitCode> {
    let dir_of = |d: Option<PathBuf>| d.unwrap_or_else(|| Config::default().rules_dir());
    match cmd {
        RulesCmd::Test { dir } => {
            let dir = dir_of(dir);
            let rules = dunes_detect::load_dir(&dir)?;
            let engine = dunes_detect::Engine::new(rules).await?;
            let outcomes = dunes_detect::testing::run_inline_tests(&engine).await;
            let failed = outcomes.iter().filter(|o| !o.passed()).count();
            for o in &outcomes {
                println!("{o}");
            }
            println!(
                "{} passed, {} failed ({} rules)",
                outcomes.len() - failed,
                failed,
                engine.rules().len()
            );
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        RulesCmd::Lint { dir } => {
            let dir = dir_of(dir);
            let rules = dunes_detect::load_dir(&dir)?;
            let n = rules.len();
            dunes_detect::Engine::new(rules).await?;
            println!("{n} rules in {} parse, validate and plan", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        RulesCmd::List { dir } => {
            let dir = dir_of(dir);
            for r in dunes_detect::load_dir(&dir)? {
                let c = &r.config;
                println!(
                    "{:<40} L{} {:<8} {}  [{}]",
                    c.id,
                    c.level.as_u8(),
                    c.severity.to_string(),
                    c.title,
                    c.tags.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
