//! `dunes`: streaming security event monitor for MCP servers.

mod backfill;
mod bench;
mod bench_api;
mod bench_maml;
mod bench_soak;
mod doctor;
mod eval;
mod ledger_cmd;
mod maml_cmd;
mod model_cmd;
mod report;
mod report_cmd;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

use dunes_pipeline::Config;

/// mimalloc instead of glibc's malloc: the pipeline allocates and frees
/// millions of small strings and maps per second on several threads; the
/// 1M replay needs 11 % less CPU and ~110 MiB more peak RSS with it
/// (docs/benchmarks.md, "Rule-state rows and the allocator"). Built without
/// transparent huge pages (`no_thp`: mimalloc does not `madvise` its regions
/// into 2 MiB pages): the same speed and ~70 MiB less peak RSS on the 1M
/// replay, where THP is `madvise` (docs/benchmarks.md, "Stateful rules fed
/// while plans run").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[command(
        after_help = "Examples:\n  dunes run --data-dir /var/lib/dunes logs/*.ndjson            # files, then keep serving HTTP ingest and the API
  gateway | dunes run --stdin --no-http                             # envelopes on stdin
  agentgateway -f gw.yaml | dunes run --stdin --format agentgateway # a gateway's access log
  dunes run --config /etc/dunes/dunes.toml                          # [kafka] enabled: consume topics"
    )]
    Run {
        #[command(flatten)]
        common: Common,
        /// NDJSON files to ingest (`-` for stdin).
        files: Vec<PathBuf>,
        /// Also read NDJSON envelopes from stdin.
        #[arg(long)]
        stdin: bool,
        /// What the files/stdin carry: envelope (default), agentgateway or tyk (an MCP
        /// gateway's access log; overrides `[ingest] format`).
        #[arg(long, value_name = "FORMAT")]
        format: Option<dunes_ingest::InputFormat>,
        /// HTTP listen address (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Do not start the HTTP server.
        #[arg(long)]
        no_http: bool,
    },
    /// Run the same pipeline over files to completion and print a summary.
    #[command(
        after_help = "Examples:\n  dunes replay examples/corpus/mcp-sample.ndjson --data-dir ./dunes-data
  dunes replay day1.ndjson day2.ndjson --incidents-out found.ndjson
  dunes replay --format agentgateway /var/log/agentgateway/access.log   # a gateway's access log
  dunes replay --from-store --since 2026-11-20T00:00:00Z           # backfill: current rules over the history"
    )]
    Replay {
        #[command(flatten)]
        common: Common,
        #[arg(required_unless_present = "from_store")]
        files: Vec<PathBuf>,
        /// What the files/stdin carry: envelope (default), agentgateway or tyk (an MCP
        /// gateway's access log; overrides `[ingest] format`).
        #[arg(long, value_name = "FORMAT")]
        format: Option<dunes_ingest::InputFormat>,
        /// Also write this run's incidents to this NDJSON file.
        #[arg(long)]
        incidents_out: Option<PathBuf>,
        /// Re-run the current rules over the stored event history (Parquet) instead of
        /// files; incidents are marked `backfill`.
        #[arg(long, conflicts_with = "files")]
        from_store: bool,
        /// With --from-store: events at or after this time (RFC 3339).
        #[arg(long, requires = "from_store")]
        since: Option<String>,
        /// With --from-store: events before this time (RFC 3339).
        #[arg(long, requires = "from_store")]
        until: Option<String>,
    },
    /// Reports for regulators: notification documents with evidence bundles.
    Report {
        #[command(subcommand)]
        what: ReportCmd,
    },
    /// Verify offline a data dir's ledger or an export bundle: hash chain, Merkle roots,
    /// signatures, key history, redactions (bundles: also the signed manifest and digests).
    ///
    /// Records after the last signed checkpoint fail verification unless
    /// --allow-unsigned-tail is given. With --trusted-checkpoint (a checkpoint kept out of
    /// band, e.g. by `dunes checkpoint publish`) the ledger must extend it: a rollback or a
    /// re-signed fork fails.
    #[command(
        after_help = "Examples:\n  dunes verify ./dunes-data --trusted-checkpoint /srv/anchors/latest.note\n  dunes verify ./bundle"
    )]
    Verify {
        /// Data directory (default ./dunes-data) or export bundle.
        dir: Option<PathBuf>,
        /// Same as DIR.
        #[arg(long, conflicts_with = "dir")]
        data_dir: Option<PathBuf>,
        /// Accept records after the last signed checkpoint (a live ledger between two
        /// checkpoints). They are covered by no signature.
        #[arg(long)]
        allow_unsigned_tail: bool,
        /// A signed checkpoint obtained earlier out of band; the ledger must be a consistent
        /// extension of it. Repeatable.
        #[arg(long = "trusted-checkpoint", value_name = "FILE")]
        trusted_checkpoint: Vec<PathBuf>,
    },
    /// Generate deterministic benign + attack MCP traffic in envelope form.
    #[command(
        after_help = "Examples:\n  dunes simulate --sessions 1000 --seed 3 --out traffic.ndjson --labels labels.json
  dunes simulate --sessions 50 | dunes run --stdin --no-http
  dunes simulate --maml --sessions 400 --out maml.ndjson --labels maml.labels.json
  dunes simulate --standard --scenarios principal_flood,server_degraded --sessions 300 --out s.ndjson
  dunes simulate --stateless --otlp --out otlp.jsonl && dunes replay --format otlp otlp.jsonl"
    )]
    Simulate {
        #[arg(long, default_value_t = 100)]
        sessions: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (default, or `-`: stdout).
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
        /// Add a MAML document hub: benign MAML traffic and the five MAML
        /// attacks (maml_invalid, maml_injection, maml_privilege, maml_tamper,
        /// maml_rug_pull).
        #[arg(long)]
        maml: bool,
        /// Add the session, replay, rate, downgrade and degradation
        /// situations of the DUNES standard (session_expired_reuse,
        /// auth_downgrade, principal_flood, request_replay,
        /// protocol_downgrade, server_degraded).
        #[arg(long)]
        standard: bool,
        /// Stateless MCP (revision 2026-07-28): no initialize, no session ids; client
        /// info, protocol version and W3C trace context in each request's `_meta`.
        #[arg(long)]
        stateless: bool,
        /// With --stateless: write the ground truth (event_id → generated session) as
        /// JSON here, to score session stitching and `dunes eval --truth`.
        #[arg(long, requires = "stateless")]
        truth: Option<PathBuf>,
        /// Write OTLP/JSON log exports instead of envelopes: one ExportLogsServiceRequest
        /// per line (the OpenTelemetry Collector file exporter's layout), 64 envelopes each
        /// as log record bodies; read back with `--format otlp` or POST /v1/logs.
        #[arg(long, conflicts_with = "truth")]
        otlp: bool,
    },
    /// Simulate traffic, run it through the pipeline, print incidents and
    /// keep the API up.
    #[command(
        after_help = "Examples:\n  dunes demo                                   # simulate, detect, print incidents, serve the API
  dunes demo --sessions 500 --seed 9 --no-serve"
    )]
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
        /// Stateless MCP traffic (revision 2026-07-28, no session ids: stitched).
        #[arg(long)]
        stateless: bool,
        /// Feed the traffic as OTLP/JSON log exports (`--format otlp`) instead of envelopes.
        #[arg(long)]
        otlp: bool,
    },
    /// Measure pipeline throughput and latency over simulated (or recorded) traffic.
    #[command(
        after_help = "Examples:\n  dunes bench --sessions 6000                  # per-stage time and events/s, batch latency, costliest rules
  dunes bench --input traffic.ndjson           # the same over recorded envelopes (held in memory)
  dunes bench --sessions 6000 --stateless --otlp   # the same over stateless traffic as OTLP logs
  dunes bench kafka --brokers 127.0.0.1:19092 --preproduced
  dunes bench kafka --preproduced --source-only   # the broker and consumer alone: the ceiling
  dunes bench api --seconds 10 --clients 8
  dunes bench --sessions 2000 maml --rounds 20
  dunes bench soak --minutes 30 --rate 25000 --live-sessions 100000 --csv soak.csv"
    )]
    Bench {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 2000)]
        sessions: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 8192)]
        batch_size: usize,
        /// Pipeline bench: stateless MCP traffic (2026-07-28, stitched into sessions).
        #[arg(long)]
        stateless: bool,
        /// Pipeline bench: feed OTLP/JSON log exports (64 envelopes each), decoded and
        /// mapped inside the measured time.
        #[arg(long)]
        otlp: bool,
        /// Pipeline bench: NDJSON envelopes from this file instead of the simulator
        /// (read into memory before the clock starts; `--sessions`/`--seed` unused).
        #[arg(long, conflicts_with_all = ["stateless", "otlp"])]
        input: Option<PathBuf>,
        #[command(subcommand)]
        what: Option<BenchWhat>,
    },
    /// Replay labelled traffic through the pipeline and score detection
    /// per scenario (recall, false-positive sessions, rules fired).
    #[command(
        after_help = "Examples:\n  dunes eval --events traffic.ndjson --labels labels.json --data-dir /tmp/eval
  dunes eval --events traffic.ndjson --labels labels.json --json > score.json"
    )]
    Eval {
        #[command(flatten)]
        common: Common,
        /// NDJSON envelopes.
        #[arg(long)]
        events: PathBuf,
        /// JSON object session_id → scenario (`benign` for clean sessions).
        #[arg(long)]
        labels: PathBuf,
        /// Stateless traffic: JSON object event_id → generated session
        /// (`dunes simulate --stateless --truth`); incidents are scored for the
        /// generated sessions their events come from, not the stitched ones.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Behavioural anomaly model: train on baseline traffic, show.
    #[command(
        after_help = "Examples:\n  dunes model train --from baseline.ndjson --labels labels.json
  dunes model train --from ./dunes-data                # the data dir's event history
  dunes model show"
    )]
    Model {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: model_cmd::ModelCmd,
    },
    /// MAML documents: check them as the pipeline does, sign them.
    #[command(
        after_help = "Examples:\n  dunes maml check workflow.maml.md --config dunes.toml   # one JSON line per document
  dunes maml sign --key-dir ./maml-keys workflow.maml.md    # signature + public key (ML-DSA-65)"
    )]
    Maml {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: maml_cmd::MamlCmd,
    },
    /// Rule pack tooling.
    #[command(
        after_help = "Examples:\n  dunes rules test                 # every rule's inline tests
  dunes rules lint rules/          # all problems, non-zero exit on any
  dunes rules list
  dunes rules test sigma/          # the shipped Sigma twins, loaded directly
  dunes rules import-sigma sigma/ --out /tmp/imported"
    )]
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Export ledger records (default: all) as a self-contained, signed bundle for offline
    /// verification (`dunes verify DIR`).
    #[command(
        after_help = "Examples:\n  dunes export --out bundle                      # everything the latest checkpoint covers
  dunes export --from 1000 --to 1999 --out bundle --trusted-checkpoint anchors/latest.note
  dunes verify bundle"
    )]
    Export {
        #[command(flatten)]
        common: Common,
        /// First record index (default 0).
        #[arg(long)]
        from: Option<u64>,
        /// Last record index, inclusive (default: the last record the latest signed
        /// checkpoint covers).
        #[arg(long)]
        to: Option<u64>,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Include a consistency proof to this trusted checkpoint (`proofs/anchor.json`), so
        /// the bundle can be verified against it even when it lies outside the range.
        #[arg(long = "trusted-checkpoint", value_name = "FILE")]
        trusted_checkpoint: Option<PathBuf>,
    },
    /// Signed checkpoints: publish them out of the writer's reach.
    #[command(
        after_help = "Examples:\n  dunes checkpoint publish --to-dir /srv/anchors --follow
  dunes checkpoint publish --to-kafka dunes.checkpoints"
    )]
    Checkpoint {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: ledger_cmd::CheckpointCmd,
    },
    /// Ledger signing keys: rotate, revoke, list.
    #[command(after_help = "Examples:\n  dunes keys list
  dunes keys rotate
  dunes keys revoke --epoch 0 --reason \"seed file copied off the host\"   # stop dunes run first")]
    Keys {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: ledger_cmd::KeysCmd,
    },
    /// Ledger maintenance: Merkle proofs, redaction.
    #[command(after_help = "Examples:\n  dunes ledger proof inclusion --index 42
  dunes ledger proof consistency --first 1000
  dunes ledger redact --index 42 --reason \"GDPR erasure request 2026-117\"")]
    Ledger {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: ledger_cmd::LedgerCmd,
    },
    /// API bearer tokens (JWT-shaped, signed with the data dir's ML-DSA-65 token key).
    #[command(
        after_help = "Examples:\n  dunes token issue --sub alice --role analyst --ttl 10m
  TOKEN=$(dunes token issue --sub gw-1 --role ingest --ttl 15m | tail -1)"
    )]
    Token {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Check a deployment: config, data dir, key permissions, ledger and clock,
    /// disk space, rules, HTTP listeners, Kafka brokers and topics.
    ///
    /// Prints one line per check (ok, warn, FAIL); exits non-zero on any FAIL.
    #[command(
        after_help = "Examples:\n  dunes doctor --config /etc/dunes/dunes.toml\n  dunes doctor --data-dir /var/lib/dunes"
    )]
    Doctor {
        #[command(flatten)]
        common: Common,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  dunes completions bash > /etc/bash_completion.d/dunes\n  dunes completions zsh > \"${fpath[1]}/_dunes\""
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (roff): dunes.1 and one per subcommand (dunes-run.1, …).
    #[command(
        after_help = "Examples:\n  dunes man --out-dir /usr/local/share/man/man1 && man dunes-verify"
    )]
    Man {
        /// Directory for the pages (created if missing).
        #[arg(long, default_value = "man")]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Submit one notification stage of a Level 3 incident: writes the stage's document
    /// (notification.json, whose BLAKE3 goes into the ledgered `notify` action, and
    /// notification.html) and an evidence bundle of the incident's ledger records
    /// (evidence/, checked with `dunes verify`). Through a running monitor with --api,
    /// otherwise directly on the data dir.
    #[command(
        after_help = "Examples:\n  dunes report notify inc-0123 --regime nis2 --stage early-warning --out nis2-early\n  DUNES_TOKEN=$(dunes token issue --sub dpo --role responder --ttl 10m | tail -n1) dunes report notify inc-0123 --regime gdpr --stage authority-notification --api http://127.0.0.1:8080"
    )]
    Notify {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: report_cmd::NotifyArgs,
    },
    /// Compliance report over a period: the DUNES checklist items a monitor can evidence,
    /// each with a live check (ledger verification, rule set, anomaly model, access
    /// records, incident handling, notification deadlines), the items it cannot evidence
    /// and why, and the period's figures. Writes compliance.json (its BLAKE3 is ledgered
    /// when no monitor holds the ledger), compliance.html and compliance.pdf (headless
    /// Chromium).
    #[command(
        after_help = "Examples:\n  dunes report compliance --out q4-report\n  dunes report compliance --from 2026-10-01T00:00:00Z --to 2027-01-01T00:00:00Z --out q4-report --no-pdf"
    )]
    Compliance {
        #[command(flatten)]
        common: Common,
        /// Start of the period (RFC 3339; default: 30 days ago).
        #[arg(long)]
        from: Option<String>,
        /// End of the period, exclusive (RFC 3339; default: now).
        #[arg(long)]
        to: Option<String>,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Skip the PDF (no Chromium needed).
        #[arg(long)]
        no_pdf: bool,
        /// Base URL of the running monitor's API: when it holds the ledger, the report's
        /// digest is ledgered through it (`POST /api/v1/reports/digest`).
        #[arg(long)]
        api: Option<String>,
        /// API token for --api (role auditor or admin).
        #[arg(long, env = "DUNES_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// End to end through a real Kafka broker: produce simulated envelopes to
    /// a new topic, consume, ledger, commit; events/s and produce-to-ledger
    /// latency percentiles.
    Kafka {
        #[arg(long, default_value = "127.0.0.1:9092", env = "DUNES_KAFKA_BROKERS")]
        brokers: String,
        #[arg(long, default_value_t = 2000)]
        sessions: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Produce at this many messages/s (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 4096)]
        batch_size: usize,
        /// Produce every envelope before the pipeline starts, then measure consuming a
        /// backlog (the producer's speed is out of the figure; start-up and group join are in).
        #[arg(long, conflicts_with = "rate")]
        preproduced: bool,
        /// Consume with the Kafka source alone (each batch committed as it arrives, no
        /// pipeline): what the broker and the consumer sustain on this machine, and their
        /// produce->commit latency, the floor under the end-to-end figures.
        #[arg(long)]
        source_only: bool,
    },
    /// Incident reads on the HTTP API (with auth) while HTTP ingest runs: req/s and
    /// latency percentiles.
    Api {
        /// Measurement length.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent keep-alive reader connections.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Envelopes per concurrent POST /v1/ingest.
        #[arg(long, default_value_t = 200)]
        ingest_batch: usize,
        /// Do not ledger the API accesses (to measure what the access audit costs).
        #[arg(long)]
        no_access_audit: bool,
    },
    /// MAML document processing: documents/s and latency per document of the
    /// parse/validate/digest step, and the normaliser over MAML-carrying envelopes.
    Maml {
        /// Passes over the simulated documents.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// Soak: the full pipeline for a fixed time at a fixed rate over copies of the
    /// real-SDK corpus; RSS, batch latency, state size and incidents every sample.
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Events per second handed to the pipeline.
        #[arg(long, default_value_t = 25_000)]
        rate: u64,
        /// Sessions open at any event time (copies of the corpus overlap to reach it).
        #[arg(long, default_value_t = 100_000)]
        live_sessions: u64,
        #[arg(long, default_value = "examples/corpus/mcp-public.ndjson.gz")]
        corpus: PathBuf,
        #[arg(long, default_value_t = 10)]
        sample_secs: u64,
        /// Samples as CSV here (default: stdout).
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Issue a token; the token alone is printed on stdout's last line.
    Issue {
        /// The actor (recorded with every ledgered action).
        #[arg(long)]
        sub: String,
        /// viewer, analyst, responder, admin, auditor or ingest.
        #[arg(long)]
        role: String,
        /// Lifetime: 30s, 10m, 15m (at most `[auth] max_token_ttl_secs`, default 15m).
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// Print a console sign-in link (`http://<[http] listen>/#token=…`) instead of the
        /// bare token: opening it signs the browser tab in (the token rides in the URL
        /// fragment, which browsers never send to a server; the page drops it at once).
        #[arg(long)]
        login: bool,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Run every rule's inline tests.
    Test { dir: Option<PathBuf> },
    /// Check every rule file and report all problems (metadata, unique ids, tags,
    /// positive and negative tests, SQL planned against the schema); non-zero exit on any.
    Lint { dir: Option<PathBuf> },
    /// List the rules (id, level, severity, source format native/sigma, title, tags).
    List { dir: Option<PathBuf> },
    /// Convert Sigma rules (`logsource: product: mcp`; files or directories of
    /// *.yml / *.yaml) to native rule files in OUT, one line per Sigma rule:
    /// imported, correlation input, or refused with the construct and reason.
    /// Non-zero exit when any rule is refused.
    ImportSigma {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Directory for the native rule files (`<id>.yaml`).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes `dunes.1` and one page per subcommand (`dunes-run.1`,
/// `dunes-ledger-prove.1`, …) into `dir`; returns the files written.
fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(
        cmd: clap::Command,
        page: &str,
        dir: &Path,
        out: &mut Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        let path = dir.join(format!("{page}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.clone().name(page.to_string()))
            .render(&mut buf)
            .context("cannot render a man page")?;
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        out.push(path);
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub.clone(), &format!("{page}-{}", sub.get_name()), dir, out)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, "dunes", dir, &mut out)?;
    Ok(out)
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: logs redirected to a file or a collector
    // stay plain text (`NO_COLOR` turns them off on a terminal too).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Commands that only read and print. For them a closed stdout (`dunes
/// model show | head`) ends the process quietly, as it does other Unix
/// tools, instead of a panic in `println!`. The others serve sockets and
/// keep SIGPIPE ignored: a client closing its connection must not kill them.
fn printing_only(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Verify { .. }
            | Command::Simulate { .. }
            | Command::Eval { .. }
            | Command::Model { .. }
            | Command::Rules { .. }
            | Command::Maml { .. }
            | Command::Export { .. }
            | Command::Checkpoint { .. }
            | Command::Keys { .. }
            | Command::Ledger { .. }
            | Command::Token { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Doctor { .. }
    )
}

#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: called at the start of main, before any other thread exists;
    // restores the default disposition Rust's runtime replaced with SIG_IGN.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if printing_only(&cli.command) {
        default_sigpipe();
    }
    let quiet = "warn,dunes::alert=off,dunes::response=off,dunes::emergency=off,dunes::queue=off";
    init_tracing(match &cli.command {
        Command::Bench { .. }
        | Command::Rules { .. }
        | Command::Maml { .. }
        | Command::Verify { .. }
        | Command::Export { .. }
        | Command::Checkpoint { .. }
        | Command::Keys { .. }
        | Command::Ledger { .. }
        | Command::Token { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Doctor { .. }
        | Command::Report { .. }
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
        Command::Doctor { common } => {
            let cfg = common.config()?;
            let worst = doctor::run(&cfg, common.config.as_deref()).await;
            Ok(if worst == doctor::Verdict::Fail {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "dunes", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => {
            let pages = write_man_pages(&out_dir)?;
            println!("{} man pages in {}", pages.len(), out_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            common,
            files,
            stdin,
            format,
            listen,
            no_http,
        } => {
            let mut cfg = common.config()?;
            cfg.ingest.files.extend(files);
            cfg.ingest.format = format.unwrap_or(cfg.ingest.format);
            cfg.ingest.stdin |= stdin;
            if let Some(l) = listen {
                cfg.http.listen = l;
            }
            if no_http {
                cfg.http.enabled = false;
            }
            let out = dunes_pipeline::drive(&cfg, dunes_pipeline::DriveOptions::run()).await?;
            report::print_summary(&cfg, &out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            common,
            incidents_out,
            from_store: true,
            since,
            until,
            ..
        } => {
            let cfg = common.config()?;
            let started = std::time::Instant::now();
            let (stats, checkpoint) = backfill::run(
                &cfg,
                rfc3339(since, "since")?,
                rfc3339(until, "until")?,
                incidents_out.as_deref(),
            )
            .await?;
            let out = dunes_pipeline::DriveOutcome {
                stats,
                checkpoint,
                elapsed: started.elapsed(),
            };
            report::print_summary(&cfg, &out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            common,
            files,
            format,
            incidents_out,
            ..
        } => {
            let mut cfg = common.config()?;
            cfg.ingest.files = files;
            cfg.ingest.format = format.unwrap_or(cfg.ingest.format);
            cfg.ingest.stdin = false;
            cfg.http.enabled = false;
            let opts = dunes_pipeline::DriveOptions {
                incidents_out,
                ..dunes_pipeline::DriveOptions::replay()
            };
            let out = dunes_pipeline::drive(&cfg, opts).await?;
            report::print_summary(&cfg, &out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            what: ReportCmd::Notify { common, args },
        } => {
            let cfg = common.config()?;
            report_cmd::run(&cfg, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            what:
                ReportCmd::Compliance {
                    common,
                    from,
                    to,
                    out,
                    no_pdf,
                    api,
                    token,
                },
        } => {
            let cfg = common.config()?;
            report_cmd::compliance(
                &cfg,
                rfc3339(from, "from")?,
                rfc3339(to, "to")?,
                &out,
                !no_pdf,
                api.as_deref().map(|a| (a, token.as_deref())),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            dir,
            data_dir,
            allow_unsigned_tail,
            trusted_checkpoint,
        } => {
            let dir = dir
                .or(data_dir)
                .unwrap_or_else(|| Config::default().data_dir);
            ledger_cmd::verify(&dir, allow_unsigned_tail, &trusted_checkpoint)
        }
        Command::Simulate {
            sessions,
            seed,
            out,
            labels,
            attack_ratio,
            scenarios,
            maml,
            standard,
            stateless,
            truth,
            otlp,
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
                maml,
                standard,
                stateless,
                ..dunes_sim::SimConfig::default()
            };
            simulate(
                &cfg,
                out.as_deref(),
                labels.as_deref(),
                truth.as_deref(),
                otlp,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            common,
            sessions,
            seed,
            listen,
            no_serve,
            stateless,
            otlp,
        } => {
            let mut cfg = common.config()?;
            if let Some(l) = listen {
                cfg.http.listen = l;
            }
            let demo = report::Demo {
                sessions,
                seed,
                no_serve,
                stateless,
                otlp,
            };
            report::demo(cfg, demo).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            common,
            sessions,
            seed,
            batch_size,
            stateless,
            otlp,
            input,
            what,
        } => {
            let cfg = common.config()?;
            match what {
                None => {
                    let traffic = bench::Traffic {
                        sessions,
                        seed,
                        batch_size,
                        stateless,
                        otlp,
                        input,
                    };
                    bench::run(cfg, traffic).await?
                }
                Some(BenchWhat::Maml { rounds }) => bench_maml::run(sessions, seed, rounds)?,
                Some(BenchWhat::Soak {
                    minutes,
                    rate,
                    live_sessions,
                    corpus,
                    sample_secs,
                    csv,
                }) => {
                    let s = bench_soak::Soak {
                        minutes,
                        rate: rate.max(1),
                        live_sessions,
                        corpus,
                        sample_secs,
                        batch_size,
                        csv,
                    };
                    bench_soak::run(cfg, s).await?
                }
                Some(BenchWhat::Kafka {
                    brokers,
                    sessions,
                    seed,
                    partitions,
                    rate,
                    batch_size,
                    preproduced,
                    source_only,
                }) => {
                    let b = bench::KafkaBench {
                        brokers,
                        sessions,
                        seed,
                        partitions,
                        rate,
                        batch_size,
                        preproduced,
                        source_only,
                    };
                    bench::run_kafka(cfg, b).await?
                }
                Some(BenchWhat::Api {
                    seconds,
                    clients,
                    ingest_batch,
                    no_access_audit,
                }) => {
                    let opts = bench_api::ApiBenchOpts {
                        sessions,
                        seed,
                        seconds,
                        clients,
                        ingest_batch,
                        access_audit: !no_access_audit,
                    };
                    bench_api::run(cfg, opts).await?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            common,
            events,
            labels,
            truth,
            json,
        } => {
            let cfg = common.config()?;
            let clean = eval::run(&cfg, &events, &labels, truth.as_deref(), json).await?;
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
        Command::Maml { common, cmd } => {
            let cfg = common.config()?;
            Ok(if maml_cmd::run(&cfg, cmd)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Export {
            common,
            from,
            to,
            out,
            trusted_checkpoint,
        } => ledger_cmd::export(
            &common.config()?.data_dir,
            from,
            to,
            &out,
            trusted_checkpoint.as_deref(),
        ),
        Command::Checkpoint { common, cmd } => ledger_cmd::checkpoint(&common.config()?, cmd).await,
        Command::Keys { common, cmd } => {
            let cfg = common.config()?;
            ledger_cmd::keys(&cfg.data_dir, cfg.origin(), cmd)
        }
        Command::Ledger { common, cmd } => {
            let cfg = common.config()?;
            ledger_cmd::ledger(&cfg.data_dir, cfg.origin(), cmd)
        }
        Command::Token { common, cmd } => {
            let cfg = common.config()?;
            match cmd {
                TokenCmd::Issue {
                    sub,
                    role,
                    ttl,
                    login,
                } => {
                    let token = issue_token(&cfg, &sub, &role, &ttl)?;
                    if login {
                        let mut at = cfg.http.listen;
                        if at.ip().is_unspecified() {
                            at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                        }
                        println!("http://{at}/#token={token}");
                    } else {
                        println!("{token}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// Who a command run from the shell acts as in the ledger: `cli:$USER`.
fn cli_subject() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// An optional RFC 3339 time option (`--since`, `--from`, …) as UTC.
fn rfc3339(s: Option<String>, what: &str) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    s.map(|s| {
        chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .with_context(|| format!("--{what} must be RFC 3339, got {s:?}"))
    })
    .transpose()
}

/// Signs an API token with the data dir's token key (generated on first use).
pub(crate) fn issue_token(
    cfg: &Config,
    sub: &str,
    role: &str,
    ttl: &str,
) -> anyhow::Result<String> {
    let role: dunes_api::Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let ttl_us = dunes_detect::rule::parse_duration_us(ttl)
        .with_context(|| format!("--ttl {ttl:?}: expected e.g. 30s, 10m, 15m"))?;
    let ttl_secs = ttl_us / 1_000_000;
    let max = cfg.auth.max_token_ttl_secs;
    if ttl_secs < 1 || ttl_secs > max {
        anyhow::bail!("--ttl must be between 1s and {max}s ([auth] max_token_ttl_secs)");
    }
    if sub.trim().is_empty() || sub.len() > 256 {
        anyhow::bail!("--sub must be a non-empty name of at most 256 bytes");
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let key = dunes_api::auth::load_or_generate_key(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot load the token key: {e}"))?;
    let now = chrono::Utc::now();
    let token = dunes_api::auth::issue(&key, &cfg.origin(), sub, role, now, ttl_secs)
        .map_err(|e| anyhow::anyhow!("cannot sign the token: {e}"))?;
    eprintln!(
        "token for {sub} (role {role}), valid until {}",
        (now + chrono::Duration::seconds(ttl_secs)).to_rfc3339()
    );
    Ok(token)
}

fn simulate(
    cfg: &dunes_sim::SimConfig,
    out: Option<&Path>,
    labels: Option<&Path>,
    truth: Option<&Path>,
    otlp: bool,
) -> anyhow::Result<()> {
    let seed = cfg.seed;
    let mut w: Box<dyn Write> = match out.filter(|p| p.as_os_str() != "-") {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let stats = if let Some(tp) = truth {
        // Lines one by one, each with the session it was generated in.
        let mut sim = dunes_sim::Simulator::new(cfg.clone());
        let mut map = serde_json::Map::new();
        // `for … in sim.by_ref()` would hold `sim` borrowed: the truth is read between lines.
        #[allow(clippy::while_let_on_iterator)]
        while let Some(line) = sim.next() {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
            if let (Some(id), Some(s)) = (
                dunes_ingest::event_id_of(line.as_bytes()),
                sim.truth_session(),
            ) {
                map.insert(id, serde_json::Value::String(s.to_string()));
            }
        }
        w.flush()?;
        std::fs::write(tp, serde_json::to_vec(&map)?)
            .with_context(|| format!("cannot write {}", tp.display()))?;
        sim.stats().clone()
    } else if otlp {
        dunes_sim::write_otlp(cfg, w)?
    } else {
        dunes_sim::write_ndjson(cfg, w)?
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
            let report = dunes_detect::lint::lint_dir(&dir).await?;
            for i in &report.issues {
                eprintln!("error: {i}");
            }
            if report.ok() {
                println!(
                    "{} rules in {} pass lint (metadata, tags, tests, SQL plans)",
                    report.files,
                    dir.display()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "{} problem(s) in {} rule file(s) under {}",
                    report.issues.len(),
                    report.files,
                    dir.display()
                );
                Ok(ExitCode::FAILURE)
            }
        }
        RulesCmd::List { dir } => {
            let dir = dir_of(dir);
            for r in dunes_detect::load_dir(&dir)? {
                let c = &r.config;
                println!(
                    "{:<40} L{} {:<8} {:<6} {}  [{}]",
                    c.id,
                    c.level.as_u8(),
                    c.severity.to_string(),
                    r.source_format(),
                    c.title,
                    c.tags.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCmd::ImportSigma { paths, out } => {
            let report = dunes_detect::sigma::import(&paths, &out).await?;
            for line in &report.lines {
                println!("{line}");
            }
            println!(
                "{} imported, {} correlation inputs, {} refused",
                report.imported, report.inputs, report.refused
            );
            Ok(if report.refused == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `dunes …` line under "Examples:" in any help text, as argv
    /// (comments and pipes cut off; lines with command substitution skipped).
    fn examples(cmd: &clap::Command, out: &mut Vec<(String, Vec<String>)>) {
        let texts = [cmd.get_after_help(), cmd.get_long_about(), cmd.get_about()];
        for t in texts.into_iter().flatten() {
            let text = t.to_string();
            let Some(rest) = text
                .split("Examples:")
                .nth(1)
                .or_else(|| text.split("Example:").nth(1))
            else {
                continue;
            };
            for line in rest.lines().map(str::trim) {
                let line = line.split(" #").next().unwrap_or("").trim();
                let Some(seg) = line
                    .split('|')
                    .map(str::trim)
                    .find(|s| s.starts_with("dunes "))
                else {
                    continue;
                };
                let seg = seg
                    .split("&&")
                    .next()
                    .unwrap_or("")
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .trim();
                if line.contains("$(") || seg.is_empty() {
                    continue;
                }
                // words, with "double quoted" ones kept whole
                let mut argv = Vec::new();
                let mut word = String::new();
                let mut quoted = false;
                for c in seg.chars() {
                    match c {
                        '"' => quoted = !quoted,
                        c if c.is_whitespace() && !quoted => {
                            if !word.is_empty() {
                                argv.push(std::mem::take(&mut word));
                            }
                        }
                        c => word.push(c),
                    }
                }
                if !word.is_empty() {
                    argv.push(word);
                }
                out.push((cmd.get_name().to_string(), argv));
            }
        }
        for sub in cmd.get_subcommands() {
            examples(sub, out);
        }
    }

    #[test]
    fn every_help_example_parses() {
        let mut found = Vec::new();
        examples(&Cli::command(), &mut found);
        assert!(found.len() >= 30, "{}", found.len());
        for (from, argv) in &found {
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("example in `{from}` help does not parse: {argv:?}\n{e}");
            }
        }
        // every top-level command but `help` shows at least one example
        let with: std::collections::BTreeSet<&str> = found
            .iter()
            .filter_map(|(_, a)| a.get(1).map(String::as_str))
            .collect();
        for sub in Cli::command().get_subcommands() {
            assert!(
                with.contains(sub.get_name()),
                "`dunes {}` has no example in its help",
                sub.get_name()
            );
        }
    }
}
