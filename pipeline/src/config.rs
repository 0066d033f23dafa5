//! `dunes.toml`: the configuration file. Every field has a default, so an
//! empty file (or none) is a working embedded setup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dunes_detect::ResponseConfig;
use dunes_ingest::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Context, PipelineError, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Rule pack directory; defaults to `./rules`, else the pack shipped in
    /// the source tree.
    pub rules_dir: Option<PathBuf>,
    pub http: HttpConfig,
    pub ingest: IngestSection,
    pub ledger: LedgerSection,
    pub response: ResponseConfig,
    pub kafka: KafkaConfig,
    /// API authentication and rate limits.
    pub auth: dunes_api::AuthConfig,
    /// Hunting SQL limits.
    pub hunt: dunes_api::HuntConfig,
    /// Parquet event history (hunting, backfill).
    pub history: dunes_detect::HistoryConfig,
    /// Behavioural anomaly detection (`[anomaly]`).
    pub anomaly: dunes_detect::anomaly::AnomalyConfig,
    /// Detection state persistence (`[state]`).
    pub state: StateSection,
    /// Rule engine settings (`[detect]`).
    pub detect: DetectSection,
    /// OCSF findings and webhooks (`[outputs]`, `[[outputs.webhooks]]`).
    pub outputs: OutputsSection,
    /// Regulatory notification clocks of Level 3 incidents (`[notification]`).
    pub notification: dunes_detect::notification::NotificationConfig,
    /// Self-monitoring thresholds (`[self_monitor]`).
    pub self_monitor: crate::selfmon::SelfMonitorSection,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsSection {
    /// Every incident change as an OCSF Detection Finding in
    /// `<data_dir>/findings.ocsf.ndjson`.
    pub ocsf_file: bool,
    /// At shutdown, wait this long for webhook queues to empty (what is
    /// left is sent after the next start).
    pub drain_on_stop_ms: u64,
    pub webhooks: Vec<crate::sinks::webhook::WebhookConfig>,
}

impl Default for OutputsSection {
    fn default() -> Self {
        OutputsSection {
            ocsf_file: true,
            drain_on_stop_ms: 5_000,
            webhooks: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectSection {
    /// Literal prefilter for `regexp_like` (same results; off only to
    /// measure it).
    pub regex_prefilter: bool,
    /// Incidents the API serves from memory at most (0: all); past it the
    /// resolved ones changed longest ago, then the oldest, leave memory
    /// (they stay in incidents.ndjson and the ledger).
    pub max_incidents_in_memory: usize,
}

impl Default for DetectSection {
    fn default() -> Self {
        DetectSection {
            regex_prefilter: true,
            max_incidents_in_memory: 20_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// The detection state journal's active segment is closed and folded
    /// into the snapshot (in the background) once it holds this many bytes.
    pub journal_compact_bytes: u64,
    /// Most keys a baseline or lifetime rule remembers; past it the least
    /// recently seen tenth is forgotten (`dunes_state_keys_evicted_total`).
    pub max_keys_per_rule: usize,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            journal_compact_bytes: crate::sinks::state::DEFAULT_COMPACT_BYTES,
            max_keys_per_rule: dunes_detect::state::MAX_STATE_KEYS,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Optional second listener: `GET /metrics` without authentication, for
    /// Prometheus (e.g. "127.0.0.1:9464"; keep it on loopback).
    pub metrics_listen: Option<SocketAddr>,
    /// A connection that has not sent its request headers within this many
    /// milliseconds is closed (slow-loris clients).
    pub header_read_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// NDJSON files read by `dunes run` (`-` is stdin).
    pub files: Vec<PathBuf>,
    pub stdin: bool,
    /// What the files and stdin carry: `envelope` (default), or an MCP gateway's access
    /// log (`agentgateway`, `tyk`; `docs/schema.md#gateway-logs`).
    pub format: dunes_ingest::InputFormat,
    pub max_line_bytes: usize,
    /// Records per micro-batch (8,192: each batch pays the fixed cost of
    /// every rule plan, and the 1M replay runs 10–15 % faster than at 4,096;
    /// `docs/benchmarks.md`).
    pub batch_size: usize,
    /// A partly filled batch is processed after this many milliseconds.
    pub batch_timeout_ms: u64,
    /// Batches between the source and durability at once (decoded ahead of
    /// detection; at least 2). Each costs a batch of memory.
    pub batches_in_flight: usize,
    /// Event ids remembered for de-duplication (the last this many ledger
    /// records are re-read on start); 0 disables it.
    pub dedup_window: usize,
    /// Public keys per MAML origin (`[[ingest.maml_keys]]`): signed MAML
    /// documents from these origins are checked (`maml_docs.sig_status`).
    pub maml_keys: Vec<crate::maml_keys::MamlKeyConfig>,
    /// Stateless MCP (no session id): a party's derived session without a W3C trace ends
    /// after this much event time without a message (`docs/schema.md#session-stitching`).
    pub session_gap_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    pub origin: Option<String>,
    pub checkpoint_every_records: u64,
    pub checkpoint_interval_ms: u64,
    /// Rotate the signing key this often (0 = never); each rotation is
    /// recorded in the log, signed by the outgoing key.
    pub rotate_every_hours: u64,
    /// Also sign checkpoints with Ed25519 (hybrid classical +
    /// post-quantum); the verifier then requires both signatures.
    pub hybrid_ed25519: bool,
    /// Start a new segment file when the current one would exceed this.
    pub segment_max_bytes: u64,
    /// Publish every signed checkpoint into this directory (trust anchors
    /// for `dunes verify --trusted-checkpoint`); best a directory the
    /// monitor's account can write but not rewrite (e.g. another host's
    /// mount, or append-only storage).
    pub publish_dir: Option<PathBuf>,
    /// Prune ledger segments last written more than this many days ago, behind a signed
    /// tombstone (`docs/ledger-format.md` §2.10). 0 keeps everything; 1–182 are refused
    /// (EU AI Act Art. 12: logs kept at least six months).
    pub retention_days: u64,
}

/// The shortest retention accepted: six months (EU AI Act Art. 12).
pub const MIN_RETENTION_DAYS: u64 = 183;

/// `Ok` for 0 (keep forever) or at least [`MIN_RETENTION_DAYS`].
pub fn check_retention_days(days: u64) -> std::result::Result<(), String> {
    if (1..MIN_RETENTION_DAYS).contains(&days) {
        return Err(format!(
            "ledger.retention_days must be 0 (keep forever) or at least {MIN_RETENTION_DAYS} (six months: EU AI Act Art. 12), got {days}"
        ));
    }
    Ok(())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./dunes-data"),
            rules_dir: None,
            http: HttpConfig::default(),
            ingest: IngestSection::default(),
            ledger: LedgerSection::default(),
            response: ResponseConfig::default(),
            kafka: KafkaConfig::default(),
            auth: dunes_api::AuthConfig::default(),
            hunt: dunes_api::HuntConfig::default(),
            history: dunes_detect::HistoryConfig::default(),
            anomaly: Default::default(),
            state: StateSection::default(),
            detect: DetectSection::default(),
            outputs: OutputsSection::default(),
            notification: Default::default(),
            self_monitor: Default::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 16 * 1024 * 1024,
            metrics_listen: None,
            header_read_timeout_ms: 10_000,
        }
    }
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            files: Vec::new(),
            format: dunes_ingest::InputFormat::Envelope,
            stdin: false,
            max_line_bytes: 1024 * 1024,
            batch_size: 8192,
            batch_timeout_ms: 200,
            batches_in_flight: 4,
            dedup_window: 1_000_000,
            maml_keys: Vec::new(),
            session_gap_ms: 30 * 60 * 1000,
        }
    }
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            origin: None,
            checkpoint_every_records: 10_000,
            checkpoint_interval_ms: 1_000,
            rotate_every_hours: 24,
            hybrid_ed25519: false,
            segment_max_bytes: 256 * 1024 * 1024,
            publish_dir: None,
            retention_days: 365,
        }
    }
}

impl LedgerSection {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=60_000).contains(&self.checkpoint_interval_ms) {
            return Err(format!(
                "ledger.checkpoint_interval_ms must be 1..=60000 (a checkpoint at least every minute; default 1000), got {}",
                self.checkpoint_interval_ms
            ));
        }
        check_retention_days(self.retention_days)?;
        if self.segment_max_bytes < 64 * 1024 {
            return Err(format!(
                "ledger.segment_max_bytes must be at least 65536, got {}",
                self.segment_max_bytes
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The ledger writer's configuration (`[ledger]` and the origin).
    pub fn ledger_config(&self) -> dunes_ledger::LedgerConfig {
        let l = &self.ledger;
        let mut c = dunes_ledger::LedgerConfig::new(&self.data_dir, self.origin());
        c.checkpoint_every_records = l.checkpoint_every_records;
        c.checkpoint_interval = std::time::Duration::from_millis(l.checkpoint_interval_ms);
        c.rotate_every = (l.rotate_every_hours > 0)
            .then(|| std::time::Duration::from_secs(l.rotate_every_hours * 3600));
        c.hybrid_ed25519 = l.hybrid_ed25519;
        c.segment_max_bytes = l.segment_max_bytes;
        c.publish_dir = l.publish_dir.clone();
        c
    }

    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let invalid = |m: String| PipelineError::Config(format!("{}: {m}", path.display()));
        cfg.anomaly.validate().map_err(|e| invalid(e.to_string()))?;
        cfg.ledger.validate().map_err(invalid)?;
        for w in &cfg.outputs.webhooks {
            w.validate().map_err(invalid)?;
        }
        dunes_detect::notification::NotificationClocks::new(&cfg.notification).map_err(invalid)?;
        crate::maml_keys::MamlKeys::from_config(&cfg.ingest.maml_keys).map_err(invalid)?;
        cfg.self_monitor
            .check()
            .map_err(|m| invalid(format!("[self_monitor] {m}")))?;
        Ok(cfg)
    }

    pub fn rules_dir(&self) -> PathBuf {
        if let Some(d) = &self.rules_dir {
            return d.clone();
        }
        let local = PathBuf::from("rules");
        if local.is_dir() {
            return local;
        }
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"))
    }

    pub fn origin(&self) -> String {
        if let Some(o) = &self.ledger.origin {
            return o.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("dunes/{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("").expect("empty config");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.response.regulatory_hours, 72);
        let err = toml::from_str::<Config>("[http]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let c: Config =
            toml::from_str("data_dir = \"/tmp/x\"\n[ingest]\nbatch_size = 10\n").expect("partial");
        assert_eq!(c.ingest.batch_size, 10);
        assert_eq!(c.ingest.max_line_bytes, 1024 * 1024);
        assert_eq!(c.ledger.rotate_every_hours, 24);
        let c: Config = toml::from_str("[ledger]\nhybrid_ed25519 = true\nrotate_every_hours = 0\n")
            .expect("ledger keys");
        assert!(c.ledger.hybrid_ed25519);
        assert_eq!(c.ledger.rotate_every_hours, 0);
        let c: Config = toml::from_str("").expect("empty");
        assert!(!c.auth.disabled, "authentication is on by default");
        assert_eq!(c.auth.max_token_ttl_secs, 900);
        let c: Config = toml::from_str("[history]\nretention_days = 7\n[hunt]\nmax_rows = 5\n")
            .expect("history");
        assert_eq!((c.history.retention_days, c.hunt.max_rows), (7, 5));
        assert_eq!(Config::default().ledger.retention_days, 365);
        for (days, ok) in [
            (0, true),
            (1, false),
            (182, false),
            (183, true),
            (3650, true),
        ] {
            let l = LedgerSection {
                retention_days: days,
                ..LedgerSection::default()
            };
            assert_eq!(l.validate().is_ok(), ok, "{days} days");
        }
    }

    #[test]
    fn out_of_range_anomaly_settings_are_refused_with_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("d.toml");
        for (text, key) in [
            ("[anomaly]\nlevel = 4\n", "level = 4"),
            ("[anomaly]\ntarget_fpr = 5.0\n", "target_fpr = 5"),
            (
                "[anomaly]\nprincipal_fpr_share = -1.0\n",
                "principal_fpr_share",
            ),
            ("[anomaly]\nwindow_secs = 0\n", "window_secs"),
        ] {
            std::fs::write(&p, text).expect("write");
            let err = Config::load(Some(&p)).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        std::fs::write(&p, "[anomaly]\nlevel = 2\nresponse = \"block_principal\"\n").expect("w");
        let c = Config::load(Some(&p)).expect("valid");
        assert_eq!(c.anomaly.level, 2);
        assert_eq!(
            c.anomaly.response,
            dunes_detect::ResponseAction::BlockPrincipal
        );
    }
}
