//! The stage every batch goes through, shared by `run`, `replay`, `demo`,
//! `bench` and backfill: raw records → validation/normalisation → rules and
//! anomaly model → incidents/responses → ledger (durable) → history → outputs
//! and the queryable incident store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dunes_api::{AccessRecord, ActionOutcome, ActionRefused, ReloadAck};
use dunes_detect::notification::{NotificationClocks, StageState};
use dunes_detect::{
    ActionKind, Engine, HistoryWriter, Incident, IncidentAction, IncidentStore, Level,
    ResponseConfig, ResponseRecord, Severity,
};
use dunes_ingest::{DeadLetterWriter, DecodedBatch, Dedup, IngestConfig, Normalizer, RawRecord};
use dunes_ledger::{Ledger, RecordKind};
use serde::Serialize;

use crate::config::Config;
use crate::error::{Context, PipelineError, Result};
use crate::sinks::files::{DataPaths, IncidentFiles, NdjsonWriter};
use crate::sinks::kafka::KafkaOutputs;
use crate::sinks::lifecycle::Change;
use crate::sinks::outputs::Outputs;
use crate::sinks::persist::Persister;
use crate::sinks::state::StateStore;
use crate::sinks::{Delivery, Rows, Sink};

/// Running totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub batches: u64,
    pub envelopes: u64,
    pub rows: u64,
    pub rejected: u64,
    /// Envelopes skipped as already ledgered (same id and bytes).
    pub duplicates: u64,
    pub incidents: u64,
    pub incidents_by_level: [u64; 3],
    pub responses: u64,
    /// Wall time spent per phase, in microseconds.
    pub time: PhaseTimes,
}

/// Where a batch's time goes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseTimes {
    /// Decoding (contract, normalisation, de-duplication) and dead letters.
    pub normalize_us: u64,
    /// Rules and the anomaly monitor.
    pub detect_us: u64,
    /// Ledger appends and the fsync.
    pub ledger_us: u64,
    /// Detection state (and anomaly state) saved.
    pub state_us: u64,
    /// Parquet history.
    pub history_us: u64,
    /// NDJSON outputs, incident store, checkpoints.
    pub outputs_us: u64,
}

/// What one batch produced.
#[derive(Clone, Debug, Default)]
pub struct BatchOutcome {
    pub accepted: u64,
    pub rejected: u64,
    pub incidents: Vec<Incident>,
    pub responses: Vec<ResponseRecord>,
}

impl BatchOutcome {
    /// The answer to an HTTP ingest request carried by this batch.
    pub fn ack(&self) -> dunes_api::IngestAck {
        dunes_api::IngestAck {
            accepted: self.accepted,
            rejected: self.rejected,
            incidents: self.incidents.len() as u64,
            responses: self.responses.len() as u64,
        }
    }
}

/// The first half of the stage: contract check, normalisation to Arrow and
/// de-duplication. The driver moves it to a thread of its own
/// ([`Pipeline::take_decoder`]) so batch N+1 decodes while batch N is in
/// detection and the ledger; batches keep their order.
pub struct Decoder {
    normalizer: Normalizer,
    /// Ids of recently ledgered events (rebuilt from the ledger's tail on
    /// open), so a redelivered event is never ledgered twice.
    dedup: Dedup,
}

/// A batch after the [`Decoder`], ready for [`Pipeline::finish`].
pub struct Decoded {
    batch: DecodedBatch,
    /// When decoding started (the batch latency is measured from it).
    started: std::time::Instant,
    decode_us: u64,
    /// Set when the events are read back from the ledger (see
    /// [`Pipeline::catch_up`]): they are not ledgered again.
    replay: Option<Replay>,
}

/// Events re-detected from the ledger after a restart.
struct Replay {
    /// Ledger index of each event.
    event_index: HashMap<String, u64>,
    /// Incidents already ledgered after the first replayed event.
    ledgered_incidents: Arc<std::collections::HashSet<String>>,
}

impl Decoder {
    /// Decodes one batch; only an internal error (not bad input, which is
    /// rejected record by record) fails.
    pub fn decode(&mut self, records: Vec<RawRecord>) -> Result<Decoded> {
        let started = std::time::Instant::now();
        let batch = self
            .normalizer
            .decode_batch_dedup(records, &mut self.dedup)
            .context("normalisation failed")?;
        Ok(Decoded {
            batch,
            started,
            decode_us: started.elapsed().as_micros() as u64,
            replay: None,
        })
    }
}

pub struct Pipeline {
    /// `None` once the driver moved it to its own thread.
    decoder: Option<Decoder>,
    engine: Engine,
    /// Where the rules were loaded from (hot reload reads it again).
    rules_dir: PathBuf,
    /// Version hash of the running rule set (see `rule_set_version`).
    rule_set_version: String,
    /// The Parquet history and the detection state (windows, sequences,
    /// baselines, suppression: a snapshot plus a journal of per-batch
    /// deltas, `sinks/state.rs`), written after each batch's ledger sync on
    /// their own thread (`sinks/persist.rs`).
    persist: Persister,
    ledger: Ledger,
    dead_letter: DeadLetterWriter,
    /// `incidents.ndjson`, `responses.ndjson`, `--incidents-out`.
    files: IncidentFiles,
    /// The Kafka output topics (with Kafka on, see [`Pipeline::send_to_kafka`]).
    kafka_out: Option<KafkaOutputs>,
    store: Arc<IncidentStore>,
    response_cfg: ResponseConfig,
    /// Behavioural anomaly monitor (None when `[anomaly] enabled = false`).
    anomaly: Option<AnomalyPart>,
    pub stats: Stats,
    actions_out: NdjsonWriter,
    /// OCSF findings and webhooks.
    outputs: Outputs,
    /// Findings of analyst actions, published with the next batch.
    action_findings: Vec<(String, Vec<u8>)>,
    /// Regulatory notification regimes (clocks of Level 3 incidents).
    notification: Arc<NotificationClocks>,
    /// `[ledger] retention_days` (0 = keep forever) and when retention runs next.
    retention_days: u64,
    next_prune: std::time::Instant,
    /// Per-minute batch latency lines in the data dir (`latency.ndjson`).
    latency: crate::sinks::latency::LatencyLog,
    /// Thresholds on the pipeline's own figures (`[self_monitor]`).
    selfmon: crate::selfmon::SelfMonitor,
    /// Arrival to durable of the oldest record of the last completed batch
    /// (noted by the stage driver, read by the next batch's self-monitor).
    ingest_lag_secs: Option<f64>,
    /// The running rules as served by `GET /api/v1/rules` (updated on reload).
    pub rules_view: Arc<RwLock<Vec<serde_json::Value>>>,
}

/// The anomaly monitor and where its model and state live.
struct AnomalyPart {
    monitor: dunes_detect::anomaly::Monitor,
    model_path: PathBuf,
    state_path: PathBuf,
    last_save: std::time::Instant,
    /// No state file was found at start: the monitor has seen nothing.
    fresh: bool,
}

impl AnomalyPart {
    /// Saves a model trained at the end of the warm-up and ledgers it.
    fn keep_trained(
        &self,
        ledger: &mut Ledger,
        model: &dunes_detect::anomaly::LoadedModel,
    ) -> Result<()> {
        model
            .save(&self.model_path)
            .with_context(|| format!("cannot save anomaly model {}", self.model_path.display()))?;
        append_model(ledger, model, &self.model_path)
    }

    /// Saves the monitor's windows (and warm-up) state.
    fn save(&mut self) -> Result<()> {
        self.monitor.save_state(&self.state_path).with_context(|| {
            format!(
                "cannot save the anomaly state {}",
                self.state_path.display()
            )
        })?;
        self.last_save = std::time::Instant::now();
        Ok(())
    }
}

impl Pipeline {
    /// Opens the data dir (creating it), the ledger (generating keys on
    /// first run) and plans the rule pack.
    pub async fn open(
        cfg: &Config,
        store: Arc<IncidentStore>,
        extra_incidents_out: Option<&Path>,
    ) -> Result<Pipeline> {
        let data_dir = &cfg.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let rules_dir = cfg.rules_dir();
        let rules = dunes_detect::load_dir(&rules_dir)
            .with_context(|| format!("cannot load rules from {}", rules_dir.display()))?;
        let engine = Engine::new(rules).await.context("cannot plan rules")?;
        engine.set_regex_prefilter(cfg.detect.regex_prefilter);
        engine.set_max_state_keys(cfg.state.max_keys_per_rule);
        tracing::info!(rules = engine.rules().len(), dir = %rules_dir.display(), "rules planned");
        let (state, restored) =
            StateStore::open(&data_dir.join("state"), cfg.state.journal_compact_bytes)?;
        // The ledger length the restored state reflects: `None` with no
        // state at all (first start: everything ledgered is re-detected),
        // the ledger's length for a state saved before positions existed.
        let state_position = restored.state.as_ref().map(|s| s.position);
        if let Some(saved) = restored.state {
            let rules = engine.restore(saved);
            tracing::info!(
                rules = rules.len(),
                journal_deltas = restored.deltas,
                "detection state restored"
            );
        }
        let ledger = Ledger::open(cfg.ledger_config()).context("cannot open the ledger")?;
        let paths = DataPaths::new(data_dir);
        // After `Ledger::open`, which holds the data dir's lock; the NDJSON writers
        // below repair their own files the same way.
        crate::sinks::files::repair_tail(&paths.dead_letter)?;
        let dead_letter = DeadLetterWriter::open(&paths.dead_letter)
            .with_context(|| format!("cannot open {}", paths.dead_letter.display()))?;
        let maml_keys = crate::maml_keys::MamlKeys::from_config(&cfg.ingest.maml_keys)
            .map_err(PipelineError::Config)?;
        let ingest_cfg = IngestConfig {
            max_line_bytes: cfg.ingest.max_line_bytes,
            session_gap_ms: i64::try_from(cfg.ingest.session_gap_ms).unwrap_or(i64::MAX),
            maml_keys: (!maml_keys.is_empty())
                .then(|| Arc::new(maml_keys) as Arc<dyn dunes_ingest::maml::SignatureCheck>),
            ..IngestConfig::default()
        };
        let mut ledger = ledger;
        let ledger_len = ledger.len();
        let (dedup, tail) = rebuild_dedup(data_dir, ledger_len, cfg.ingest.dedup_window)?;
        let rule_set_version = append_rule_set(&mut ledger, &engine)?;
        let history = if cfg.history.enabled {
            Some(
                HistoryWriter::open(data_dir, cfg.history.clone())
                    .context("cannot open the history store")?,
            )
        } else {
            None
        };
        let rules_view = Arc::new(RwLock::new(rules_view(&engine)));
        let anomaly = open_anomaly(cfg, &mut ledger)?;
        let persist = Persister::start(history, state)?;
        let outputs = Outputs::open(
            &cfg.outputs,
            data_dir,
            cfg.kafka.enabled && !cfg.kafka.ocsf_topic.is_empty(),
        )?;
        let notification =
            Arc::new(NotificationClocks::new(&cfg.notification).map_err(PipelineError::Config)?);
        let mut pipeline = Pipeline {
            actions_out: NdjsonWriter::open(&paths.actions)?,
            outputs,
            action_findings: Vec::new(),
            notification,
            retention_days: cfg.ledger.retention_days,
            next_prune: std::time::Instant::now(),
            latency: crate::sinks::latency::LatencyLog::open(data_dir)?,
            selfmon: crate::selfmon::SelfMonitor::new(cfg.self_monitor.clone()),
            ingest_lag_secs: None,
            rules_view,
            decoder: Some(Decoder {
                normalizer: Normalizer::new(ingest_cfg.clone()),
                dedup,
            }),
            engine,
            rules_dir,
            rule_set_version,
            persist,
            ledger,
            dead_letter,
            files: IncidentFiles::open(&paths, extra_incidents_out)?,
            kafka_out: None,
            store,
            response_cfg: cfg.response.clone(),
            anomaly,
            stats: Stats::default(),
        };
        let rules_at = match state_position {
            None => 0,
            Some(p) => p.unwrap_or(ledger_len).min(ledger_len),
        };
        pipeline
            .catch_up(
                data_dir,
                CatchUp {
                    rules_at,
                    ledger_len,
                    tail,
                    ttl_us: ingest_cfg.pending_request_ttl_ms.saturating_mul(1000),
                    max_pending: ingest_cfg.pending_requests_max,
                    batch: cfg.ingest.batch_size.max(1),
                },
            )
            .await?;
        pipeline.stats = Stats::default();
        pipeline.persist.take_times();
        Ok(pipeline)
    }

    /// Every batch's results also go to the Kafka output topics.
    pub(crate) fn send_to_kafka(&mut self, sink: Arc<dunes_ingest::kafka::KafkaSink>) {
        self.kafka_out = Some(KafkaOutputs(sink));
    }

    /// Webhook delivery state for the API (`None` without webhooks).
    pub fn outputs_view(&self) -> Option<Arc<dyn dunes_api::OutputsView>> {
        self.outputs.view()
    }

    /// The notification regimes, for the API.
    pub fn notification_clocks(&self) -> Arc<NotificationClocks> {
        self.notification.clone()
    }

    /// Raises an incident for every notification stage of a Level 3
    /// incident that is overdue or due within `warn_before_hours` at `now`
    /// and not submitted: rule `notification.overdue` (Level 2, critical) or
    /// `notification.due_soon` (Level 2, high), one per stage and state
    /// (its id is derived from both, so a restart does not raise it again).
    /// Ledgered and sent to the outputs like any incident. Returns the
    /// incidents raised.
    pub fn check_notification_clocks(&mut self, now: DateTime<Utc>) -> Result<Vec<Incident>> {
        let mut raised = Vec::new();
        for (inc, c) in self.notification.all(&self.store, now) {
            let (rule, severity, what) = match c.state {
                StageState::Overdue => ("notification.overdue", Severity::Critical, "overdue"),
                StageState::DueSoon => ("notification.due_soon", Severity::High, "due soon"),
                _ => continue,
            };
            let key = format!("{rule}\n{}\n{}\n{}", inc.incident_id, c.regime, c.stage);
            let id = format!("inc-{}", &blake3::hash(key.as_bytes()).to_hex()[..24]);
            if self.store.contains(&id) {
                continue;
            }
            let deadline = c.deadline.map(|d| d.to_rfc3339()).unwrap_or_default();
            let mut entity = std::collections::BTreeMap::new();
            entity.insert(
                "incident_id".to_string(),
                serde_json::json!(inc.incident_id),
            );
            entity.insert("regime".to_string(), serde_json::json!(c.regime));
            entity.insert("stage".to_string(), serde_json::json!(c.stage));
            let mut clock = serde_json::Map::new();
            if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&c) {
                clock = m;
            }
            raised.push(Incident {
                incident_id: id,
                rule_id: rule.to_string(),
                rule_sha256: String::new(),
                level: Level::Analyst,
                severity,
                title: format!(
                    "{} {} {what} for {} (deadline {deadline})",
                    c.regime_name, c.name, inc.incident_id
                ),
                tags: vec![
                    "compliance:notification".into(),
                    format!("regime:{}", c.regime),
                ],
                entity,
                session_id: inc.session_id.clone(),
                server_id: inc.server_id.clone(),
                first_ts: now,
                last_ts: now,
                event_ids: Vec::new(),
                match_count: 1,
                evidence: vec![clock],
                status: dunes_detect::IncidentStatus::Open,
                detected_at: now,
                backfill: false,
            });
        }
        if raised.is_empty() {
            return Ok(raised);
        }
        self.publish_system_incidents(&raised, false)?;
        for inc in &raised {
            tracing::error!(
                target: "dunes::compliance",
                incident = %inc.incident_id, rule = %inc.rule_id,
                "{}", inc.title
            );
        }
        self.ledger
            .maybe_checkpoint()
            .context("ledger checkpoint failed")?;
        Ok(raised)
    }

    /// Signs the ledger's unsigned records if the checkpoint interval has passed (the
    /// driver calls this on a timer, so an idle monitor signs an analyst's action within
    /// about one interval too, not only at the next batch).
    pub fn sign_pending(&mut self) -> Result<()> {
        self.ledger
            .maybe_checkpoint()
            .context("ledger checkpoint failed")?;
        self.maybe_prune()?;
        Ok(())
    }

    /// Retention, on the driver's timer: at the first call and then hourly, prunes the
    /// ledger segments last written more than `[ledger] retention_days` ago
    /// (`docs/ledger-format.md` §2.10).
    pub fn maybe_prune(&mut self) -> Result<Option<dunes_ledger::PruneSummary>> {
        let now = std::time::Instant::now();
        if self.retention_days == 0 || now < self.next_prune {
            return Ok(None);
        }
        self.next_prune = now + Duration::from_secs(3600);
        let cutoff = Utc::now() - chrono::Duration::days(self.retention_days as i64);
        self.prune_ledger(cutoff, "retention")
    }

    /// Prunes ledger segments last written before `cutoff` behind a signed tombstone and
    /// ledgers what was pruned as an `action` record (`"type":"ledger_retention"`).
    pub fn prune_ledger(
        &mut self,
        cutoff: DateTime<Utc>,
        actor: &str,
    ) -> Result<Option<dunes_ledger::PruneSummary>> {
        let s =
            self.ledger
                .prune(cutoff.timestamp_micros())
                .map_err(|e| PipelineError::Ledger {
                    what: "ledger retention failed".into(),
                    source: e,
                })?;
        if let Some(s) = &s {
            self.append_action_record(
                &retention_action(s, self.retention_days, actor, Utc::now()),
                &[],
            )?;
            metrics::counter!("dunes_ledger_pruned_records_total").increment(s.records_removed);
        }
        Ok(s)
    }

    /// [`dunes_detect::Engine::state_size`] of the running rules.
    pub fn state_size(&self) -> (u64, u64) {
        self.engine.state_size()
    }

    pub fn rule_count(&self) -> usize {
        self.engine.rules().len()
    }

    /// What each rule has cost so far (see [`dunes_detect::RuleCost`]).
    pub fn rule_costs(&self) -> Vec<dunes_detect::RuleCost> {
        self.engine.rule_costs()
    }

    /// What the rules' regex prefilter did so far.
    pub fn regex_prefilter_stats(&self) -> dunes_detect::PrefilterStats {
        self.engine.regex_prefilter_stats()
    }

    /// The anomaly model's version, `Some(None)` while warming up, `None`
    /// when anomaly detection is off.
    pub fn anomaly_model_version(&self) -> Option<Option<String>> {
        self.anomaly
            .as_ref()
            .map(|a| a.monitor.model().map(|m| m.version().to_string()))
    }

    /// Hot reload, between batches: loads and plans the rules directory
    /// again. A rule error (naming file and line) is returned as `Ok(Err)`
    /// and the running engine is kept. On success the new rule set's
    /// `RuleSet` record is ledgered (when its version differs) before the
    /// engine is swapped; stateful rules with unchanged id and SHA-256 keep
    /// their state. `Err` only for ledger/state I/O failures (fatal, as in
    /// `process`).
    pub async fn reload_rules(&mut self) -> Result<Result<ReloadAck, String>> {
        let (engine, kept) = match dunes_detect::reload(&self.engine, &self.rules_dir).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(dir = %self.rules_dir.display(), "rule reload refused, previous rules keep running: {e}");
                return Ok(Err(e.to_string()));
            }
        };
        let version = rule_set_version_hash(&engine);
        let changed = version != self.rule_set_version;
        if changed {
            append_rule_set(&mut self.ledger, &engine)?;
        }
        self.engine = engine;
        self.rule_set_version = version.clone();
        publish_rules(&self.rules_view, &self.engine);
        let snapshot = self
            .engine
            .snapshot_json(Some(self.ledger.len()))
            .context("cannot encode the detection state")?;
        self.persist.replace(snapshot).await?;
        tracing::info!(
            rules = self.engine.rules().len(),
            %version, changed, kept_state = kept.len(),
            dir = %self.rules_dir.display(),
            "rules reloaded"
        );
        Ok(Ok(ReloadAck {
            version,
            rules: self.engine.rules().len() as u64,
            changed,
            kept_state: kept,
        }))
    }

    /// Processes one micro-batch to completion: when this returns, every
    /// accepted envelope, incident and response of the batch is in the
    /// ledger and fsynced, and every rejected record is in the dead-letter
    /// file.
    pub async fn process(&mut self, records: Vec<RawRecord>) -> Result<BatchOutcome> {
        if records.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let decoded = self
            .decoder
            .as_mut()
            .ok_or_else(decoder_gone)?
            .decode(records)?;
        self.finish(decoded).await
    }

    /// Moves the decoder out, for a thread of its own; [`Pipeline::process`]
    /// refuses batches afterwards (use [`Pipeline::finish`]).
    pub fn take_decoder(&mut self) -> Option<Decoder> {
        self.decoder.take()
    }

    /// The second half of the stage: detection, ledger (fsync), history,
    /// outputs. Batches must arrive in the order they were decoded.
    pub async fn finish(&mut self, decoded: Decoded) -> Result<BatchOutcome> {
        self.finish_started(decoded, None).await
    }

    /// Starts the rule plans of a decoded batch, to run on the worker
    /// threads while the batches before it finish; hand them to
    /// [`Pipeline::finish_started`] with the batch. `None` for a batch with
    /// nothing to detect on.
    pub fn start_plans(&self, decoded: &Decoded) -> Option<dunes_detect::BatchPlans> {
        (!decoded.batch.accepted.is_empty()).then(|| self.engine.start(decoded.batch.tables()))
    }

    /// [`Pipeline::finish`] with the plans [`Pipeline::start_plans`] started
    /// for this batch, if any (plans of a replaced engine are started again).
    pub async fn finish_started(
        &mut self,
        decoded: Decoded,
        plans: Option<dunes_detect::BatchPlans>,
    ) -> Result<BatchOutcome> {
        let Decoded {
            batch: decoded,
            started: t0,
            decode_us,
            replay,
        } = decoded;
        if decoded.accepted.is_empty()
            && decoded.rejected.is_empty()
            && decoded.duplicates.is_empty()
        {
            return Ok(BatchOutcome::default());
        }
        if !decoded.duplicates.is_empty() {
            tracing::info!(
                duplicates = decoded.duplicates.len(),
                first = %decoded.duplicates[0].source,
                "skipped envelopes already in the ledger (same event_id and bytes)"
            );
        }
        let dl0 = std::time::Instant::now();
        for r in &decoded.rejected {
            self.dead_letter
                .write(r)
                .context("cannot write the dead-letter file")?;
        }
        let t1 = std::time::Instant::now();
        let now = Utc::now();
        let plans = match plans {
            Some(p) if self.engine.started(&p) => p,
            _ => self.engine.start(decoded.tables()),
        };
        let (detection, anomaly_out) = dunes_detect::detect_with_anomaly(
            &self.engine,
            plans,
            self.anomaly.as_mut().map(|a| &mut a.monitor),
            decoded.tables(),
            now,
            &self.response_cfg,
        )
        .await
        .context("detection failed")?;

        let t2 = std::time::Instant::now();
        // Ledger first: nothing is reported that is not ledgered.
        // Event ids are hashed with foldhash (per-process seed), as the
        // detection state's keys: SipHash of every id of the batch was
        // ~0.4 % of the replay's CPU.
        let mut event_index: HashMap<&str, u64, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(decoded.accepted.len(), Default::default());
        for a in &decoded.accepted {
            let idx = match &replay {
                Some(r) => match r.event_index.get(&a.event_id) {
                    Some(&idx) => idx,
                    None => continue,
                },
                None => self
                    .ledger
                    .append_event_prehashed(a.ts_micros, &a.raw, &a.raw_blake3, &[])
                    .context("ledger append failed")?,
            };
            event_index.insert(a.event_id.as_str(), idx);
        }
        let ledgered = |id: &str| {
            replay
                .as_ref()
                .is_some_and(|r| r.ledgered_incidents.contains(id))
        };
        let now_us = now.timestamp_micros();
        if let (Some(model), Some(a)) = (&anomaly_out.trained, &self.anomaly) {
            // A model learnt at the end of the warm-up: saved and ledgered
            // before the first incident that names it.
            a.keep_trained(&mut self.ledger, model)?;
        }
        let mut incidents = Vec::with_capacity(detection.incidents.len());
        // Ledger indexes of the events an incident cites (this batch's).
        let refs_of = |inc: &Incident| -> Vec<u64> {
            inc.event_ids
                .iter()
                .filter_map(|id| event_index.get(id.as_str()).copied())
                .collect()
        };
        let mut incident_index: HashMap<String, u64> = HashMap::new();
        // Each incident and response is encoded once: the same bytes go to
        // the ledger, the NDJSON outputs and the Kafka topics.
        let mut incident_json = Vec::with_capacity(detection.incidents.len());
        for inc in detection.incidents {
            if self.store.contains(&inc.incident_id) {
                // The same rule, entity and first event were already
                // reported (e.g. the same file replayed twice).
                continue;
            }
            if let Some(by) = self.store.suppressed_by(&inc, now) {
                // An analyst suppressed similar incidents (`suppress` action).
                metrics::counter!("dunes_incidents_suppressed_total").increment(1);
                tracing::debug!(incident = %inc.incident_id, action = %by, "incident suppressed by an analyst");
                continue;
            }
            let refs = refs_of(&inc);
            let payload = serde_json::to_vec(&inc).context("cannot encode incident")?;
            if !ledgered(&inc.incident_id) {
                let idx = self
                    .ledger
                    .append(RecordKind::Incident, now_us, &payload, &refs)
                    .context("ledger append failed")?;
                incident_index.insert(inc.incident_id.clone(), idx);
            }
            incidents.push(inc);
            incident_json.push(payload);
        }
        // Suppressed matches: the earlier incident, with its running count,
        // is ledgered again (same incident_id; the newest record wins).
        let mut updates = Vec::with_capacity(detection.updates.len());
        for mut inc in detection.updates {
            if !self.store.contains(&inc.incident_id)
                && self.store.suppressed_by(&inc, now).is_some()
            {
                continue;
            }
            // Analyst actions (status, escalated level) survive repeat matches.
            if let Some(old) = self.store.get(&inc.incident_id) {
                inc.status = old.status;
                inc.level = inc.level.max(old.level);
            }
            let refs = refs_of(&inc);
            let payload = serde_json::to_vec(&inc).context("cannot encode incident")?;
            if !ledgered(&inc.incident_id) {
                self.ledger
                    .append(RecordKind::Incident, now_us, &payload, &refs)
                    .context("ledger append failed")?;
            }
            updates.push((inc, payload));
        }
        let mut responses = Vec::with_capacity(detection.responses.len());
        let mut response_json = Vec::with_capacity(detection.responses.len());
        for resp in detection.responses {
            let Some(&inc_idx) = incident_index.get(&resp.incident_id) else {
                continue;
            };
            let payload = serde_json::to_vec(&resp).context("cannot encode response")?;
            self.ledger
                .append(RecordKind::Response, now_us, &payload, &[inc_idx])
                .context("ledger append failed")?;
            responses.push(resp);
            response_json.push(payload);
        }
        self.ledger.sync().context("ledger sync failed")?;
        self.dead_letter
            .flush_sync()
            .context("cannot sync the dead-letter file")?;
        crash_point("after-ledger-sync");
        // The sinks, in their crash-safe order (`sinks/mod.rs`): webhook
        // queues take the changes before this batch's detection state
        // becomes durable (a crash in between re-detects the batch and the
        // outboxes ignore what they already hold); incidents.ndjson and
        // responses.ndjson get the batch before its state entry can become
        // durable (the persist thread fsyncs them first): a crash after that
        // entry does not re-detect the batch, so these lines must already be
        // there.
        let mut delivery = Delivery {
            incidents: &incidents,
            incident_json: &incident_json,
            updates: &updates,
            responses: &responses,
            response_json: &response_json,
            dead_letters: &decoded.rejected,
            findings: std::mem::take(&mut self.action_findings),
            ..Delivery::empty(now)
        };
        self.outputs.deliver(&mut delivery).await?;
        crash_point("after-outputs-queued");
        let t_synced = std::time::Instant::now();
        self.files.deliver(&mut delivery).await?;
        // The API shows what the files hold (before a Kafka outage can
        // hold the batch up in the last sink).
        for (inc, _) in &updates {
            self.store.insert(inc.clone());
        }
        for inc in &incidents {
            self.stats.incidents += 1;
            self.stats.incidents_by_level[(inc.level.as_u8() - 1) as usize] += 1;
            match inc.level {
                Level::Automated => tracing::warn!(
                    target: "dunes::alert",
                    incident = %inc.incident_id, rule = %inc.rule_id, severity = %inc.severity,
                    session = inc.session_id.as_deref().unwrap_or("-"),
                    server = inc.server_id.as_deref().unwrap_or("-"),
                    "ALERT level 1: {}", inc.title
                ),
                Level::Analyst => tracing::info!(
                    target: "dunes::queue",
                    incident = %inc.incident_id, rule = %inc.rule_id,
                    "queued for analyst: {}", inc.title
                ),
                Level::Emergency => tracing::error!(
                    target: "dunes::emergency",
                    incident = %inc.incident_id, rule = %inc.rule_id,
                    server = inc.server_id.as_deref().unwrap_or("-"),
                    "EMERGENCY level 3: {}", inc.title
                ),
            }
            self.store.insert(inc.clone());
        }
        for r in &responses {
            tracing::warn!(
                target: "dunes::response",
                response = %r.response_id, action = %r.action, target = ?r.target,
                "response issued"
            );
        }
        let t_files = std::time::Instant::now();
        // History, then the state journal, on the persist thread while the
        // next batch is detected. The state delta is taken now, before the
        // next batch changes the state.
        let position = self.ledger.len();
        let delta = if decoded.accepted.is_empty() {
            None
        } else {
            Some(
                self.engine
                    .delta_json(position)
                    .context("cannot encode the detection state")?,
            )
        };
        let t_delta = std::time::Instant::now();
        delivery.rows = Some(Rows {
            events: decoded.events.clone(),
            tool_defs: decoded.tool_defs.clone(),
            maml_docs: decoded.maml_docs.clone(),
            // Files named after the batch's first ledger index: a batch
            // re-detected after a crash replaces its own files.
            key: event_index.values().min().copied(),
            delta,
        });
        self.persist.deliver(&mut delivery).await?;
        let t_queued = std::time::Instant::now();
        if let Some(kafka) = &mut self.kafka_out {
            kafka.deliver(&mut delivery).await?;
        }
        let t_history = std::time::Instant::now();
        self.stats.responses += responses.len() as u64;
        metrics::counter!("dunes_events_total").increment(decoded.accepted.len() as u64);
        if let Some(newest) = decoded.accepted.iter().map(|a| a.ts_micros).max() {
            // event-time lag: how far behind the newest event of this batch the wall clock is
            metrics::gauge!("dunes_event_lag_seconds").set((now_us - newest) as f64 / 1e6);
        }
        metrics::counter!("dunes_rejected_total").increment(decoded.rejected.len() as u64);
        // A crash before the persist thread made this batch's state entry
        // durable re-detects the batch from the ledger at the next start
        // (see `catch_up`), after which history, outputs and state are as if
        // it had not happened.
        let t_out = std::time::Instant::now();
        if let Some(a) = &mut self.anomaly
            && a.last_save.elapsed() >= Duration::from_secs(ANOMALY_STATE_EVERY_SECS)
        {
            a.monitor.set_position(position);
            a.save()?;
        }
        let t_state = std::time::Instant::now();
        self.ledger
            .maybe_checkpoint()
            .context("ledger checkpoint failed")?;
        let delay = TEST_SINK_DELAY_MS.load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }

        let t4 = std::time::Instant::now();
        let us = |a: std::time::Instant, b: std::time::Instant| (b - a).as_micros() as u64;
        // Decoding may have overlapped the previous batch: its own time, plus
        // the dead-letter writes.
        self.stats.time.normalize_us += decode_us + us(dl0, t1);
        self.stats.time.detect_us += us(t1, t2);
        self.stats.time.ledger_us += us(t2, t_synced);
        // history and state journal: the persist thread's own time (it
        // overlaps the next batch); waiting for its queue is not counted
        let (history_us, state_us) = self.persist.take_times();
        self.stats.time.history_us += history_us;
        // (the Kafka topics included; waiting for the persist queue is not)
        self.stats.time.outputs_us += us(t_synced, t_files)
            + us(t_queued, t_history)
            + us(t_history, t_out)
            + us(t_state, t4);
        self.stats.time.state_us += us(t_files, t_delta) + us(t_out, t_state) + state_us;
        tracing::debug!(
            rows = decoded.events.num_rows(),
            decode_ms = decode_us as f64 / 1e3,
            detect_ms = us(t1, t2) as f64 / 1e3,
            ledger_ms = us(t2, t_synced) as f64 / 1e3,
            after_ledger_ms = us(t_synced, t4) as f64 / 1e3,
            "batch durable"
        );
        let accepted = decoded.accepted.len() as u64;
        let rejected = decoded.rejected.len() as u64;
        let duplicates = decoded.duplicates.len() as u64;
        self.stats.batches += 1;
        self.stats.envelopes += accepted;
        self.stats.rows += decoded.events.num_rows() as u64;
        self.stats.rejected += rejected;
        self.stats.duplicates += duplicates;
        metrics::counter!("dunes_events_accepted_total").increment(accepted);
        metrics::counter!("dunes_events_rejected_total").increment(rejected);
        metrics::counter!("dunes_events_duplicate_total").increment(duplicates);
        metrics::counter!("dunes_incidents_total").increment(incidents.len() as u64);
        let late = self.engine.late_counts();
        metrics::counter!("dunes_late_rows_total").absolute(late.late);
        metrics::counter!("dunes_too_late_rows_total").absolute(late.too_late);
        metrics::counter!("dunes_state_keys_evicted_total").absolute(late.evicted);
        for c in self.engine.rule_costs() {
            metrics::gauge!("dunes_rule_seconds_total", "rule" => c.rule_id.clone(), "part" => "plan")
                .set(c.plan_seconds);
            if c.state_seconds > 0.0 {
                metrics::gauge!("dunes_rule_seconds_total", "rule" => c.rule_id, "part" => "state")
                    .set(c.state_seconds);
            }
        }
        let batch_secs = (t4 - t0).as_secs_f64() + decode_us as f64 / 1e6;
        metrics::histogram!("dunes_batch_seconds").record(batch_secs);
        self.latency.observe(Utc::now(), batch_secs, accepted)?;
        self.self_monitor(Some((batch_secs, accepted, rejected)))?;
        Ok(BatchOutcome {
            accepted,
            rejected,
            incidents,
            responses,
        })
    }

    /// Applies an analyst action between batches: checks the transition, ledgers the
    /// action (kind `action`, with the actor), and for an escalation the Level 3 incident
    /// and its response; only then updates the outputs and the incident store. `Ok(Err)`
    /// when the action is refused (unknown incident, invalid transition); `Err` only for
    /// ledger/output I/O failures (fatal, as in `process`).
    pub fn apply_action(
        &mut self,
        mut action: IncidentAction,
    ) -> Result<Result<ActionOutcome, ActionRefused>> {
        let Some(inc) = self.store.get(&action.incident_id) else {
            return Ok(Err(ActionRefused::NotFound));
        };
        if action.action == ActionKind::Notify {
            let (regime, stage) = (
                action.regime.as_deref().unwrap_or_default(),
                action.stage.as_deref().unwrap_or_default(),
            );
            if !self.notification.knows(regime, stage) {
                return Ok(Err(ActionRefused::Conflict(format!(
                    "{regime}/{stage} is not a configured notification stage"
                ))));
            }
            let done = self.store.history(&action.incident_id).iter().any(|a| {
                a.action == ActionKind::Notify
                    && a.regime.as_deref() == Some(regime)
                    && a.stage.as_deref() == Some(stage)
            });
            if done {
                return Ok(Err(ActionRefused::Conflict(format!(
                    "{regime}/{stage} was already submitted"
                ))));
            }
        }
        let updated = match dunes_detect::transition(&inc, &action) {
            Ok(u) => u,
            Err(e) => return Ok(Err(ActionRefused::Conflict(e.to_string()))),
        };
        let now = Utc::now();
        let now_us = now.timestamp_micros();
        let idx = append_json(
            &mut self.ledger,
            RecordKind::Action,
            now_us,
            &action,
            &[],
            "action",
        )?;
        action.ledger_index = Some(idx);
        let mut responses = Vec::new();
        if action.action == ActionKind::Escalate {
            let inc_idx = append_json(
                &mut self.ledger,
                RecordKind::Incident,
                now_us,
                &updated,
                &[idx],
                "incident",
            )?;
            // The Level 3 response; its regulatory clock starts at the escalation.
            let mut at_escalation = updated.clone();
            at_escalation.detected_at = now;
            for r in dunes_detect::response::respond(&at_escalation, None, &self.response_cfg) {
                append_json(
                    &mut self.ledger,
                    RecordKind::Response,
                    now_us,
                    &r,
                    &[inc_idx],
                    "response",
                )?;
                responses.push(r);
            }
        }
        self.ledger.sync().context("ledger sync failed")?;
        let updated_json = serde_json::to_vec(&updated).context("cannot encode incident")?;
        let change = Change::action(&updated, &updated_json, &action);
        let findings = self.outputs.emit(std::slice::from_ref(&change))?;
        self.action_findings.extend(findings);
        self.actions_out.write(&action)?;
        self.actions_out.flush()?;
        self.files
            .append_incidents([updated_json.as_slice()], false)?;
        for r in &responses {
            self.files.responses.write(r)?;
            tracing::error!(
                target: "dunes::emergency",
                incident = %updated.incident_id, response = %r.response_id, action = %r.action,
                actor = %action.actor,
                "EMERGENCY level 3 (escalated by an analyst): {}", updated.title
            );
        }
        self.files.responses.flush()?;
        self.stats.responses += responses.len() as u64;
        self.store.insert(updated.clone());
        self.store.push_action(action.clone());
        metrics::counter!("dunes_incident_actions_total", "action" => action.action.to_string())
            .increment(1);
        tracing::info!(
            incident = %action.incident_id, action = %action.action, actor = %action.actor,
            role = %action.role, ledger_index = idx, "incident action ledgered"
        );
        self.ledger
            .maybe_checkpoint()
            .context("ledger checkpoint failed")?;
        Ok(Ok(ActionOutcome {
            action,
            incident: updated,
            responses: responses.len() as u64,
        }))
    }

    /// Raises the self-monitor's incidents (ledgered, written to the
    /// outputs and the store like a rule's) and resolves the ones whose
    /// metric is back to normal (an `action` record by `dunes-self-monitor`).
    /// The self-monitor between batches (on the driver's clock): forged or
    /// revoked tokens, failed verifications, refused requests and unsigned
    /// records raise their incidents also while no traffic flows.
    pub fn self_check_idle(&mut self) -> Result<()> {
        self.self_monitor(None)
    }

    /// The OCSF findings emitted since the last batch's (see
    /// [`crate::flow`]'s `publish_between_batches`).
    pub(crate) fn take_findings_between_batches(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.action_findings)
    }

    /// While no batch is in flight: an anomaly model whose training has
    /// finished takes over (saved and ledgered) instead of waiting for the
    /// batches that would count down to the switch.
    pub(crate) fn anomaly_idle(&mut self) -> Result<()> {
        if let Some(a) = self.anomaly.as_mut()
            && let Some(model) = a.monitor.take_finished_training()
        {
            a.keep_trained(&mut self.ledger, &model)?;
        }
        Ok(())
    }

    /// Notes how long the oldest record of a completed batch took from
    /// arrival to durable (the self-monitor's ingest lag).
    pub(crate) fn note_ingest_lag(&mut self, secs: f64) {
        self.ingest_lag_secs = Some(self.ingest_lag_secs.map_or(secs, |l| l.max(secs)));
        metrics::gauge!("dunes_ingest_lag_seconds").set(secs);
    }

    /// Ledgers (synced) and publishes incidents raised outside a batch (the
    /// notification clocks, the self-monitor): outputs, `incidents.ndjson`
    /// (and `--incidents-out` with `extra`), the store, the counter.
    fn publish_system_incidents(&mut self, raised: &[Incident], extra: bool) -> Result<()> {
        let mut json = Vec::with_capacity(raised.len());
        for inc in raised {
            let payload = serde_json::to_vec(inc).context("cannot encode incident")?;
            self.ledger
                .append(
                    RecordKind::Incident,
                    inc.detected_at.timestamp_micros(),
                    &payload,
                    &[],
                )
                .context("ledger append failed")?;
            json.push(payload);
        }
        self.ledger.sync().context("ledger sync failed")?;
        let mut delivery = Delivery {
            incidents: raised,
            incident_json: &json,
            ..Delivery::empty(Utc::now())
        };
        self.outputs.deliver_now(&mut delivery)?;
        self.action_findings.extend(delivery.findings);
        self.files
            .append_incidents(json.iter().map(Vec::as_slice), extra)?;
        for inc in raised {
            self.store.insert(inc.clone());
        }
        metrics::counter!("dunes_incidents_total").increment(raised.len() as u64);
        Ok(())
    }

    fn apply_self_signals(&mut self, signals: Vec<crate::selfmon::Signal>) -> Result<()> {
        let mut raised = Vec::new();
        let mut clears = Vec::new();
        for s in signals {
            match s {
                crate::selfmon::Signal::Raise(inc) => raised.push(*inc),
                crate::selfmon::Signal::Clear { incident_id, note } => {
                    clears.push((incident_id, note))
                }
            }
        }
        if !raised.is_empty() {
            self.publish_system_incidents(&raised, true)?;
        }
        for inc in &raised {
            tracing::warn!(
                target: "dunes::alert",
                incident = %inc.incident_id, rule = %inc.rule_id,
                "self-monitor: {}", inc.title
            );
        }
        for (incident_id, note) in clears {
            let action = IncidentAction {
                record_type: "incident_action".into(),
                action_id: format!("act-{}", uuid::Uuid::now_v7().simple()),
                incident_id,
                action: ActionKind::Resolve,
                actor: "dunes-self-monitor".into(),
                role: "system".into(),
                jti: String::new(),
                at: Utc::now(),
                assignee: None,
                disposition: Some(dunes_detect::Disposition::TruePositive),
                note: Some(note),
                regime: None,
                stage: None,
                suppress_until: None,
                ledger_index: None,
            };
            if let Err(refused) = self.apply_action(action)? {
                // resolved by an analyst already: nothing to do
                tracing::debug!(?refused, "self-monitor: incident not resolved");
            }
        }
        Ok(())
    }

    /// The self-monitor after a batch (`batch`: seconds, accepted, rejected)
    /// or, `None`, between batches.
    fn self_monitor(&mut self, batch: Option<(f64, u64, u64)>) -> Result<()> {
        let (batch_secs, accepted, rejected) = match batch {
            Some((secs, a, r)) => (Some(secs), a, r),
            None => (None, 0, 0),
        };
        let signals = self.selfmon.observe(crate::selfmon::Sample {
            batch_secs,
            accepted,
            rejected,
            security: dunes_api::security_counts(),
            ingest_lag_secs: batch_secs.and_then(|_| self.ingest_lag_secs.take()),
            unsigned_secs: self.ledger.unsigned_for().map(|d| d.as_secs_f64()),
            now: Utc::now(),
        });
        self.apply_self_signals(signals)
    }

    /// Appends one `action` record (a report digest handed over by the API, the request
    /// behind a redaction) between batches, referring to `refs`, and syncs the ledger;
    /// returns its index.
    pub fn append_action_record(
        &mut self,
        payload: &serde_json::Value,
        refs: &[u64],
    ) -> Result<u64> {
        let idx = append_json(
            &mut self.ledger,
            RecordKind::Action,
            Utc::now().timestamp_micros(),
            payload,
            refs,
            "action",
        )?;
        self.ledger.sync().context("ledger sync failed")?;
        self.ledger
            .maybe_checkpoint()
            .context("ledger checkpoint failed")?;
        Ok(idx)
    }

    /// Number of ledger records pruned by retention (the first kept index).
    pub fn ledger_pruned(&self) -> u64 {
        self.ledger.pruned()
    }

    /// Applies a ledger redaction between batches: the ledger erases the record's payload
    /// behind a `redaction` record signed by its active key (reason + requesting subject),
    /// then an `action` record ledgers who asked (refs: the redaction record). `Ok(Err)`
    /// when the ledger refuses (no such record, a protected kind, already redacted, bad
    /// reason); `Err` only for ledger I/O failures.
    pub fn apply_redaction(
        &mut self,
        r: &dunes_api::RedactionRequest,
    ) -> Result<Result<dunes_api::RedactionOutcome, String>> {
        let red = match self.ledger.redact(r.index, &r.reason, &r.actor) {
            Ok(i) => i,
            Err(dunes_ledger::LedgerError::InvalidInput(m)) => return Ok(Err(m)),
            Err(e) => {
                return Err(PipelineError::Ledger {
                    what: "ledger redaction failed".into(),
                    source: e,
                });
            }
        };
        let at = Utc::now();
        let action = serde_json::json!({
            "type": "ledger_redaction",
            "action_id": format!("act-{}", uuid::Uuid::now_v7().simple()),
            "index": r.index,
            "redaction_index": red,
            "reason": r.reason,
            "actor": r.actor,
            "role": r.role,
            "jti": r.jti,
            "at": at.to_rfc3339(),
        });
        let idx = self.append_action_record(&action, &[red])?;
        tracing::warn!(
            index = r.index, redaction_record = red, action_record = idx, actor = %r.actor,
            "ledger record payload redacted on request"
        );
        Ok(Ok(dunes_api::RedactionOutcome {
            index: r.index,
            redaction_index: red,
            action_index: idx,
        }))
    }

    /// Backfill: replaces the engine by a freshly planned one with empty state, so history
    /// is evaluated as a new live run would, without touching the live detection state.
    pub async fn fresh_engine_for_backfill(&mut self) -> Result<()> {
        let rules = dunes_detect::load_dir(&self.rules_dir)
            .with_context(|| format!("cannot load rules from {}", self.rules_dir.display()))?;
        let engine = Engine::new(rules).await.context("cannot plan rules")?;
        engine.use_settings_of(&self.engine);
        self.engine = engine;
        Ok(())
    }

    /// Backfill over stored (already ledgered) events: runs the rules, marks every incident
    /// `backfill`, ledgers the ones not known yet, and writes them to `incidents.ndjson` and
    /// the store; the extra incidents file (`--incidents-out`) gets every incident of the
    /// run. No automated responses are issued for history, and the detection state is not
    /// saved. Returns how many incidents were raised.
    pub async fn backfill_batch(&mut self, tables: dunes_detect::Tables<'_>) -> Result<u64> {
        let now = Utc::now();
        let detection = dunes_detect::detect(&self.engine, tables, now, &self.response_cfg)
            .await
            .context("detection failed")?;
        let now_us = now.timestamp_micros();
        let mut new = Vec::new();
        let mut raised = 0;
        for mut inc in detection.incidents.into_iter().chain(detection.updates) {
            inc.backfill = true;
            raised += 1;
            let stored = self.store.contains(&inc.incident_id);
            if stored && self.files.extra.is_none() {
                continue;
            }
            // Encoded once: the same bytes go to the copy, the ledger and
            // incidents.ndjson.
            let payload = serde_json::to_vec(&inc).context("cannot encode incident")?;
            if let Some(extra) = &mut self.files.extra {
                extra.write_line(&payload)?;
            }
            if stored {
                continue;
            }
            self.ledger
                .append(RecordKind::Incident, now_us, &payload, &[])
                .context("ledger append failed")?;
            new.push((inc, payload));
        }
        self.ledger.sync().context("ledger sync failed")?;
        if let Some(extra) = &mut self.files.extra {
            extra.flush()?;
        }
        self.files
            .append_incidents(new.iter().map(|(_, json)| json.as_slice()), false)?;
        for (inc, _) in new {
            self.stats.incidents += 1;
            self.stats.incidents_by_level[(inc.level.as_u8() - 1) as usize] += 1;
            self.store.insert(inc);
        }
        self.stats.batches += 1;
        self.stats.rows += tables.events.num_rows() as u64;
        self.ledger
            .maybe_checkpoint()
            .context("ledger checkpoint failed")?;
        Ok(raised)
    }

    /// Ledgers `first` and the API accesses already waiting in `queue` (at
    /// most [`ACCESS_QUEUE`] in all) as `access` records (kind 10, no refs)
    /// with one fsync for the group; called between batches. Returns how
    /// many were ledgered.
    pub fn append_access(
        &mut self,
        first: AccessRecord,
        queue: &mut tokio::sync::mpsc::Receiver<AccessRecord>,
    ) -> Result<usize> {
        let now_us = Utc::now().timestamp_micros();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(r) = next.take() {
            let payload = serde_json::to_vec(&r).context("cannot encode an access record")?;
            self.ledger
                .append(RecordKind::Access, now_us, &payload, &[])
                .context("ledger append failed")?;
            n += 1;
            if n < ACCESS_QUEUE {
                next = queue.try_recv().ok();
            }
        }
        self.ledger.sync().context("ledger sync failed")?;
        metrics::counter!("dunes_access_records_total").increment(n as u64);
        Ok(n)
    }

    /// Writes a final signed checkpoint and syncs everything.
    pub fn close(mut self) -> Result<(Stats, Option<dunes_ledger::Checkpoint>)> {
        self.persist.close()?;
        self.latency.flush()?;
        let (history_us, state_us) = self.persist.take_times();
        self.stats.time.history_us += history_us;
        self.stats.time.state_us += state_us;
        if let Some(mut a) = self.anomaly {
            // A model still training at the end of the input is kept.
            if let Some(model) = a.monitor.finish_training() {
                a.keep_trained(&mut self.ledger, &model)?;
            }
            a.monitor.set_position(self.ledger.len());
            a.save()?;
        }
        let cp = self.ledger.close().context("cannot close the ledger")?;
        // Queued webhook deliveries get a bounded time to go out.
        self.outputs.drain();
        Ok((self.stats, cp))
    }
}

/// The de-duplication window, refilled from the last `window` ledger
/// records (events only; redacted payloads are skipped); also returns the
/// (index, timestamp) of those events, for [`Pipeline::catch_up`].
fn rebuild_dedup(
    data_dir: &Path,
    ledger_len: u64,
    window: usize,
) -> Result<(Dedup, Vec<(u64, i64)>)> {
    let mut dedup = Dedup::new(window);
    let mut tail = Vec::new();
    if ledger_len == 0 {
        return Ok((dedup, tail));
    }
    // At least the last 200k records are read for the catch-up, even with
    // de-duplication off.
    let from = ledger_len.saturating_sub(window.max(200_000) as u64);
    let dedup_from = ledger_len.saturating_sub(window as u64);
    dunes_ledger::for_each_record(data_dir, from, |r| {
        if r.kind == RecordKind::Event && !r.redacted {
            tail.push((r.index, r.ts_micros));
            if window > 0
                && r.index >= dedup_from
                && let Some(id) = dunes_ingest::event_id_of(r.payload)
            {
                dedup.observe(&id, r.payload);
            }
        }
    })
    .context("cannot read the ledger to rebuild the de-duplication window")?;
    tracing::info!(
        ids = dedup.len(),
        from,
        "de-duplication window rebuilt from the ledger"
    );
    Ok((dedup, tail))
}

/// Bound of the API's access-record queue, and the most records one
/// [`Pipeline::append_access`] ledgers under one fsync.
pub const ACCESS_QUEUE: usize = 1024;

/// Most events [`Pipeline::catch_up`] re-detects (and, separately, warms
/// the pending requests with).
const REDETECT_MAX: usize = 100_000;

/// What [`Pipeline::catch_up`] needs to know.
struct CatchUp {
    /// The ledger length the restored detection state reflects.
    rules_at: u64,
    /// The ledger's length when opened (records after it are this run's).
    ledger_len: u64,
    /// (index, ts) of the events at the end of the ledger.
    tail: Vec<(u64, i64)>,
    /// Pending-request lifetime and capacity of the normaliser.
    ttl_us: i64,
    max_pending: usize,
    /// Events per re-detected batch.
    batch: usize,
}

impl Pipeline {
    /// Brings the decoder and the state up to the ledger after a start:
    /// 1. the normaliser's pending requests (a result takes its tool name
    ///    and method from its request) are rebuilt by normalising the
    ///    ledgered events of the last `ttl` before the state's position;
    /// 2. events ledgered after the anomaly state's position but before the
    ///    detection state's feed the anomaly monitor only;
    /// 3. events ledgered after the detection state's position (a crash
    ///    between the ledger fsync and the state journal, or no state at
    ///    all) are re-detected: incidents already in the ledger are not
    ///    ledgered again (but reach the outputs if they had not), incidents
    ///    of a batch cut short by the crash are ledgered now.
    async fn catch_up(&mut self, data_dir: &Path, mut c: CatchUp) -> Result<()> {
        // Bounded work at start: at most the last REDETECT_MAX events are
        // re-detected (a crash leaves at most three batches: one being persisted,
        // one queued, one ledgered by the driver; more only when the state
        // was removed).
        let unseen: Vec<u64> = c
            .tail
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| *i >= c.rules_at)
            .collect();
        if unseen.len() > REDETECT_MAX {
            let from = unseen[unseen.len() - REDETECT_MAX];
            tracing::warn!(
                state_at = c.rules_at,
                from,
                "the detection state is far behind the ledger: only the last {REDETECT_MAX} ledgered events are re-detected"
            );
            c.rules_at = from;
        }
        // A monitor without a state file has seen nothing (of the ledger's
        // tail: older events are not fed); one saved before positions
        // existed is taken as level with the detection state.
        let tail_start = c.tail.first().map_or(c.ledger_len, |(i, _)| *i);
        let anomaly_at = self
            .anomaly
            .as_ref()
            .map_or(c.rules_at, |a| match a.monitor.position() {
                Some(p) => p.max(tail_start),
                None if a.fresh => tail_start,
                None => c.rules_at,
            })
            .min(c.ledger_len);
        let behind = c.rules_at.min(anomaly_at);
        // Warm-up of pending requests: the events within `ttl` of the
        // newest one before `behind`, at most `max_pending` of them.
        let before: Vec<&(u64, i64)> = c.tail.iter().filter(|(i, _)| *i < behind).collect();
        let newest = before.iter().map(|(_, ts)| *ts).max();
        let warm_from = match newest {
            Some(newest) => {
                let recent: Vec<u64> = before
                    .iter()
                    .filter(|(_, ts)| *ts >= newest.saturating_sub(c.ttl_us))
                    .map(|(i, _)| *i)
                    .collect();
                let skip = recent.len().saturating_sub(c.max_pending.min(REDETECT_MAX));
                recent.get(skip).copied().unwrap_or(behind)
            }
            None => behind,
        };
        if warm_from >= c.ledger_len {
            return Ok(());
        }
        // Phases 1 and 2 run while the ledger is read (in chunks); the
        // events to re-detect are kept for phase 3.
        let mut redo: Vec<RawRecord> = Vec::new();
        let mut ledgered_incidents = std::collections::HashSet::new();
        let mut chunk: Vec<RawRecord> = Vec::with_capacity(c.batch);
        let mut chunk_feeds_anomaly = false;
        let (mut warmed, mut anomaly_only) = (0usize, 0usize);
        let mut failed: Option<PipelineError> = None;
        let anomaly = &mut self.anomaly;
        let ledger = &mut self.ledger;
        let decoder = self.decoder.as_mut().ok_or_else(decoder_gone)?;
        let mut flush = |chunk: &mut Vec<RawRecord>, feeds_anomaly: bool| -> Result<()> {
            if chunk.is_empty() {
                return Ok(());
            }
            let batch = decoder
                .normalizer
                .decode_batch(std::mem::take(chunk))
                .context("normalisation failed")?;
            if feeds_anomaly && let Some(a) = anomaly.as_mut() {
                let out = a
                    .monitor
                    .process(&batch.events, Utc::now())
                    .context("anomaly catch-up failed")?;
                // The warm-up ended in the part re-read: the model is saved
                // and ledgered as in `finish`.
                if let Some(model) = &out.trained {
                    a.keep_trained(ledger, model)?;
                }
            }
            Ok(())
        };
        dunes_ledger::for_each_record(data_dir, warm_from, |r| {
            if r.index >= c.ledger_len || r.redacted || failed.is_some() {
                return;
            }
            match r.kind {
                RecordKind::Event if r.index >= c.rules_at => {
                    redo.push(ledger_record(r.index, r.payload));
                }
                RecordKind::Event => {
                    let feeds = r.index >= anomaly_at;
                    if feeds != chunk_feeds_anomaly || chunk.len() >= c.batch {
                        if let Err(e) = flush(&mut chunk, chunk_feeds_anomaly) {
                            failed = Some(e);
                        }
                        chunk_feeds_anomaly = feeds;
                    }
                    if feeds {
                        anomaly_only += 1;
                    } else {
                        warmed += 1;
                    }
                    chunk.push(ledger_record(r.index, r.payload));
                }
                RecordKind::Incident if r.index >= c.rules_at => {
                    #[derive(serde::Deserialize)]
                    struct Id {
                        incident_id: String,
                    }
                    if let Ok(id) = serde_json::from_slice::<Id>(r.payload) {
                        ledgered_incidents.insert(id.incident_id);
                    }
                }
                _ => {}
            }
        })
        .context("cannot read the ledger to catch up")?;
        if let Some(e) = failed {
            return Err(e);
        }
        flush(&mut chunk, chunk_feeds_anomaly)?;
        let redetected = redo.len();
        let ledgered_incidents = Arc::new(ledgered_incidents);
        // Events the anomaly monitor already saw (its state is newer than the
        // detection state's) are re-detected without it.
        let full =
            redo.split_off(redo.partition_point(|r| ledger_index_of(&r.source) < Some(anomaly_at)));
        for (without_anomaly, mut events) in [(true, redo), (false, full)] {
            while !events.is_empty() {
                let part: Vec<RawRecord> = events.drain(..c.batch.min(events.len())).collect();
                let t = std::time::Instant::now();
                let batch = self
                    .decoder
                    .as_mut()
                    .ok_or_else(decoder_gone)?
                    .normalizer
                    .decode_batch(part)
                    .context("normalisation failed")?;
                let event_index = batch
                    .accepted
                    .iter()
                    .filter_map(|a| Some((a.event_id.clone(), ledger_index_of(&a.source)?)))
                    .collect();
                let decoded = Decoded {
                    batch,
                    started: t,
                    decode_us: t.elapsed().as_micros() as u64,
                    replay: Some(Replay {
                        event_index,
                        ledgered_incidents: ledgered_incidents.clone(),
                    }),
                };
                let anomaly = if without_anomaly {
                    self.anomaly.take()
                } else {
                    None
                };
                let done = self.finish(decoded).await;
                if anomaly.is_some() {
                    self.anomaly = anomaly;
                }
                done?;
            }
        }
        tracing::info!(
            warmed,
            anomaly_only,
            redetected,
            from = c.rules_at,
            to = c.ledger_len,
            "caught up with the ledger"
        );
        Ok(())
    }
}

/// The error of a stage whose decoder was moved to the decode thread.
fn decoder_gone() -> PipelineError {
    PipelineError::Stopped("the decoder runs on the driver's decode thread".into())
}

/// A ledgered event read back as an input record.
fn ledger_record(index: u64, payload: &[u8]) -> RawRecord {
    RawRecord {
        bytes: payload.to_vec().into(),
        source: dunes_ingest::SourcePos::Ledger { index },
        oversize: None,
        refused: None,
    }
}

/// The ledger index of a record read back by [`ledger_record`].
fn ledger_index_of(source: &dunes_ingest::SourcePos) -> Option<u64> {
    match source {
        dunes_ingest::SourcePos::Ledger { index } => Some(*index),
        _ => None,
    }
}

/// Test hook: `DUNES_CRASH_AT=<point>:<n>` aborts the process (as a
/// `kill -9` would) the `n`th time it passes `point` (`after-ledger-sync`,
/// `after-state`), to test recovery between the ledger and the state.
/// Test support: every batch waits this long in its outputs stage (an
/// artificially slow sink, for the self-monitor's degradation test).
#[doc(hidden)]
pub static TEST_SINK_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn crash_point(point: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("DUNES_CRASH_AT").ok()?;
        let (p, n) = v.rsplit_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((p, n)) = at
        && p == point
        && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        eprintln!("DUNES_CRASH_AT: aborting at {point} #{n}");
        std::process::abort();
    }
}

fn rules_view(engine: &Engine) -> Vec<serde_json::Value> {
    engine.rules().iter().map(dunes_api::rule_summary).collect()
}

fn publish_rules(view: &RwLock<Vec<serde_json::Value>>, engine: &Engine) {
    let v = rules_view(engine);
    match view.write() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

/// How often (wall time) the anomaly monitor's windows and warm-up baseline
/// are saved; also on close. A crash loses at most this much of them.
const ANOMALY_STATE_EVERY_SECS: u64 = 30;

/// Loads the anomaly model (ledgering its version record) and the monitor
/// state; without a model the monitor warms up.
fn open_anomaly(cfg: &Config, ledger: &mut Ledger) -> Result<Option<AnomalyPart>> {
    use dunes_detect::anomaly::{LoadedModel, Monitor};
    if !cfg.anomaly.enabled {
        return Ok(None);
    }
    let model_path = cfg.anomaly.model_path(&cfg.data_dir);
    let model = if model_path.exists() {
        let m = LoadedModel::load(&model_path)
            .with_context(|| format!("cannot load anomaly model {}", model_path.display()))?;
        append_model(ledger, &m, &model_path)?;
        tracing::info!(version = %m.version(), threshold = m.model.calibration.threshold, "anomaly model loaded");
        Some(m)
    } else {
        tracing::info!(
            minutes = cfg.anomaly.warmup_minutes,
            sessions = cfg.anomaly.warmup_min_sessions,
            "no anomaly model: learning a baseline first (warm-up)"
        );
        None
    };
    if let Some(m) = &model
        && m.part(dunes_detect::anomaly::WindowKind::Principal)
            .is_none()
    {
        tracing::warn!(
            version = %m.version(),
            "the anomaly model has no principal part (format 1, or trained without principals): only session windows are scored; retrain to score principal windows"
        );
    }
    let prior = if model.is_none() && cfg.anomaly.prior {
        match dunes_detect::anomaly::prior_model(cfg.anomaly.prior_tail_ratio) {
            Ok(p) => {
                append_model(ledger, &p, Path::new("(shipped prior, tail alarms only)"))?;
                tracing::info!(version = %p.version(), "until then the shipped prior model scores (tail alarms only)");
                Some(p)
            }
            Err(e) => {
                tracing::warn!("no prior anomaly model: {e}");
                None
            }
        }
    } else {
        None
    };
    let mut monitor = Monitor::new(cfg.anomaly.clone(), model).with_prior(prior);
    let state_path = cfg.data_dir.join("state").join("anomaly-state.json");
    let fresh = !state_path.exists();
    monitor
        .load_state(&state_path)
        .with_context(|| format!("cannot restore the anomaly state {}", state_path.display()))?;
    Ok(Some(AnomalyPart {
        monitor,
        model_path,
        state_path,
        last_save: std::time::Instant::now(),
        fresh,
    }))
}

/// Ledgers a model's `Model` record; `path` is where it is stored (or, for
/// the shipped prior, a label: the prior is never written to disk).
fn append_model(
    ledger: &mut Ledger,
    model: &dunes_detect::anomaly::LoadedModel,
    path: &Path,
) -> Result<()> {
    let record = dunes_detect::anomaly::model_record(&model.model, path);
    append_synced(ledger, RecordKind::Model, &record, "the model record")
}

/// Encodes `value` once and appends it; returns its ledger index.
fn append_json<T: Serialize>(
    ledger: &mut Ledger,
    kind: RecordKind,
    ts_us: i64,
    value: &T,
    refs: &[u64],
    what: &str,
) -> Result<u64> {
    let payload = serde_json::to_vec(value).with_context(|| format!("cannot encode {what}"))?;
    ledger
        .append(kind, ts_us, &payload, refs)
        .context("ledger append failed")
}

/// Appends one JSON record now and syncs the ledger.
fn append_synced(
    ledger: &mut Ledger,
    kind: RecordKind,
    value: &serde_json::Value,
    what: &str,
) -> Result<()> {
    append_json(
        ledger,
        kind,
        Utc::now().timestamp_micros(),
        value,
        &[],
        what,
    )?;
    ledger.sync().context("ledger sync failed")
}

fn rule_set_version_hash(engine: &Engine) -> String {
    dunes_detect::rule_set_version(engine.rules())["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Ledgers (and syncs) the `RuleSet` record of `engine`; returns its
/// version hash.
fn append_rule_set(ledger: &mut Ledger, engine: &Engine) -> Result<String> {
    let rule_set = dunes_detect::rule_set_version(engine.rules());
    append_synced(ledger, RecordKind::RuleSet, &rule_set, "the rule set")?;
    Ok(rule_set["version"].as_str().unwrap_or_default().to_string())
}

/// The `action` record that ledgers one retention prune (`docs/ledger-format.md` §2.8).
pub fn retention_action(
    s: &dunes_ledger::PruneSummary,
    retention_days: u64,
    actor: &str,
    at: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "type": "ledger_retention",
        "action_id": format!("act-{}", uuid::Uuid::now_v7().simple()),
        "pruned": s.pruned,
        "records_removed": s.records_removed,
        "segments_removed": s.segments_removed,
        "bytes_freed": s.bytes_freed,
        "checkpoints_removed": s.checkpoints_removed,
        "root": s.root,
        "cutoff": DateTime::<Utc>::from_timestamp_micros(s.cutoff_micros).map(|t| t.to_rfc3339()),
        "retention_days": retention_days,
        "actor": actor,
        "at": at.to_rfc3339(),
    })
}
