//! The rule engine: every rule's SQL is planned once into a DataFusion
//! physical plan over three tables (`events`, `tool_defs`, `maml_docs`) whose
//! contents come with each execution: a micro-batch's tables ride in the
//! task context its plans run with ([`Engine::start`]), so the plans of the
//! next batch can run while this one's results are taken ([`Engine::finish`]).
//! No SQL is parsed or planned on the hot path.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{
    ExecutionPlan, SendableRecordBatchStream, collect, execution_plan::reset_plan_states,
};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use smallvec::SmallVec;

use crate::DetectError;
use crate::rule::{Aggregate, LoadedRule, RuleKind, WindowType, parse_duration_us};
use crate::state::{RuleState, StateRow, StateSpec};
use dunes_ingest::Tables;

/// Default allowed lateness of stateful rules.
pub const DEFAULT_LATENESS_US: i64 = 5 * 60 * 1_000_000;

/// One micro-batch's tables, carried by the task context its plans run with
/// (a session-config extension), so that plans of different batches can run
/// at the same time.
#[derive(Debug, Default)]
struct BatchTables {
    events: Vec<RecordBatch>,
    tool_defs: Vec<RecordBatch>,
    maml_docs: Vec<RecordBatch>,
}

impl BatchTables {
    fn of(t: Tables<'_>) -> Self {
        let one = |b: &RecordBatch| {
            if b.num_rows() == 0 {
                Vec::new()
            } else {
                vec![b.clone()]
            }
        };
        BatchTables {
            events: one(t.events),
            tool_defs: one(t.tool_defs),
            maml_docs: one(t.maml_docs),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Table {
    Events,
    ToolDefs,
    MamlDocs,
}

/// A table's only partition: the batch of the task context that executes it
/// (empty without one).
#[derive(Debug)]
struct BatchPartition {
    schema: SchemaRef,
    table: Table,
}

impl PartitionStream for BatchPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = ctx
            .session_config()
            .get_extension::<BatchTables>()
            .map(|t| match self.table {
                Table::Events => t.events.clone(),
                Table::ToolDefs => t.tool_defs.clone(),
                Table::MamlDocs => t.maml_docs.clone(),
            })
            .unwrap_or_default();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}

/// Where the columns the engine needs sit in a rule's output.
#[derive(Clone, Debug)]
pub struct OutputLayout {
    pub event_id: usize,
    pub ts: usize,
    pub entity: Vec<usize>,
    pub session_id: Option<usize>,
    pub server_id: Option<usize>,
}

/// Output columns a stateful rule's state reads.
#[derive(Clone, Debug)]
pub struct StateLayout {
    pub spec: StateSpec,
    /// Entity (threshold, sequence) or baseline key columns.
    pub key: Vec<usize>,
    /// Threshold distinct/sum column or baseline value columns.
    pub values: Vec<usize>,
    pub step: Option<usize>,
    /// Baseline `fire_if`: boolean column; rows where it is not true only
    /// teach the baseline.
    pub fire_if: Option<usize>,
    /// Baseline `learn_if`: boolean column; rows where it is not true are
    /// judged but not remembered.
    pub learn_if: Option<usize>,
}

/// A rule turned into a runtime detector: its config plus a physical plan.
#[derive(Debug)]
pub struct PlannedRule {
    pub rule: LoadedRule,
    pub layout: OutputLayout,
    pub state: Option<StateLayout>,
    /// Allowlists: (output column, values).
    pub exceptions: Vec<(usize, HashSet<String>)>,
    plan: Arc<dyn ExecutionPlan>,
    /// The tables the query scans (subqueries included); empty when unknown.
    reads: Vec<String>,
    cost: Arc<CostCounter>,
    /// [`LoadedRule::state_key`], computed once (the state journal names it per batch).
    state_key: String,
}

/// What a rule has cost since its engine started: see [`Engine::rule_costs`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleCost {
    pub rule_id: String,
    /// Batches its plan ran on (a rule whose tables are empty in a batch is
    /// not executed for it).
    pub executions: u64,
    /// Time spent executing its plan (wall time of the plan's task, so a
    /// busy machine inflates it), seconds.
    pub plan_seconds: f64,
    /// Time spent feeding its output rows into its state (stateful rules).
    pub state_seconds: f64,
    /// Rows its plan returned.
    pub rows: u64,
}

#[derive(Debug, Default)]
struct CostCounter {
    executions: AtomicU64,
    plan_ns: AtomicU64,
    state_ns: AtomicU64,
    rows: AtomicU64,
}

fn nanos_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A completed window, sequence or baseline change of a stateful rule.
#[derive(Clone, Debug)]
pub struct Fire {
    /// The completing row as JSON plus the state's facts.
    pub row: serde_json::Map<String, serde_json::Value>,
    pub prior_evidence: Vec<serde_json::Map<String, serde_json::Value>>,
    pub first_ts: i64,
    pub ts: i64,
    pub event_ids: Vec<String>,
}

/// Late-event accounting of one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LateCounts {
    pub late: u64,
    pub too_late: u64,
    /// Keys evicted by the key limit (`[state] max_keys_per_rule`).
    pub evicted: u64,
}

impl PlannedRule {
    pub fn id(&self) -> &str {
        &self.rule.config.id
    }
    pub fn output_schema(&self) -> SchemaRef {
        self.plan.schema()
    }
    /// The tables the query scans, sorted (a rule whose tables are all
    /// empty in a batch is not executed for it).
    pub fn reads(&self) -> &[String] {
        &self.reads
    }
    fn state_key(&self) -> &str {
        &self.state_key
    }
}

/// The matches of one rule for one micro-batch: rows of a stateless rule
/// (`batches`) or fires of a stateful one (`fires`).
pub struct RuleMatches<'a> {
    pub rule: &'a PlannedRule,
    pub batches: Vec<RecordBatch>,
    pub fires: Vec<Fire>,
}

impl RuleMatches<'_> {
    pub fn rows(&self) -> usize {
        if self.rule.state.is_some() {
            self.fires.len()
        } else {
            self.batches.iter().map(|b| b.num_rows()).sum()
        }
    }
}

/// Persisted engine state: per rule id, the state key it was built under
/// and the state.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EngineState {
    /// The ledger length this state reflects (set by the pipeline; `None` in
    /// files written before positions were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    pub rules: BTreeMap<String, (String, RuleState)>,
    #[serde(default)]
    pub noise: crate::noise::NoiseState,
}

/// The changes of an [`Engine`]'s state over one or more batches, as
/// journaled by the pipeline: per stateful rule that changed, its state key
/// and [`crate::state::RuleDelta`], and the noise control's delta.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EngineDelta {
    pub position: u64,
    #[serde(default)]
    pub rules: BTreeMap<String, (String, crate::state::RuleDelta)>,
    #[serde(default)]
    pub noise: crate::noise::NoiseDelta,
}

impl EngineState {
    /// Applies a journaled delta (restore). A rule whose state key in the
    /// delta differs from the one here starts from empty state under the
    /// new key (its rule changed between the two).
    pub fn apply(&mut self, delta: EngineDelta) {
        self.position = Some(delta.position);
        for (id, (key, d)) in delta.rules {
            let slot = self
                .rules
                .entry(id)
                .or_insert_with(|| (key.clone(), RuleState::default()));
            if slot.0 != key {
                *slot = (key, RuleState::default());
            }
            slot.1.apply(d);
        }
        self.noise.apply_delta(delta.noise);
    }
}

/// The set of planned rules and the tables they read.
pub struct Engine {
    ctx: SessionContext,
    /// Tells this engine's [`BatchPlans`] from another's.
    id: u64,
    rules: Vec<PlannedRule>,
    states: Mutex<HashMap<String, RuleState>>,
    late: Mutex<LateCounts>,
    noise: Mutex<crate::noise::NoiseState>,
    prefilter: Arc<crate::prefilter::Prefilter>,
    /// Most keys per baseline or lifetime rule ([`crate::state::MAX_STATE_KEYS`]).
    max_state_keys: AtomicUsize,
}

impl Engine {
    /// Plans every rule. The first rule that does not plan refuses the whole
    /// set, naming its file and the line of its query.
    pub async fn new(rules: Vec<LoadedRule>) -> Result<Self, DetectError> {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        // Patterns compiled once per engine, not once per batch.
        let prefilter = Arc::new(crate::prefilter::Prefilter::new());
        ctx.register_udf(crate::regex_udf::RegexpLike::udf_with(prefilter.clone()));
        ctx.register_udf(crate::cidr_udf::CidrMatch::udf());
        register(
            &ctx,
            "events",
            dunes_ingest::schema::events_schema(),
            Table::Events,
        )?;
        register(
            &ctx,
            "tool_defs",
            dunes_ingest::schema::tool_defs_schema(),
            Table::ToolDefs,
        )?;
        register(
            &ctx,
            "maml_docs",
            dunes_ingest::schema::maml_docs_schema(),
            Table::MamlDocs,
        )?;
        let mut planned = Vec::with_capacity(rules.len());
        for rule in rules {
            planned.push(plan_rule(&ctx, &prefilter, rule).await?);
        }
        static ENGINES: AtomicU64 = AtomicU64::new(0);
        Ok(Engine {
            ctx,
            id: ENGINES.fetch_add(1, Ordering::Relaxed),
            rules: planned,
            states: Mutex::default(),
            late: Mutex::default(),
            noise: Mutex::default(),
            prefilter,
            max_state_keys: AtomicUsize::new(crate::state::MAX_STATE_KEYS),
        })
    }

    /// Turns the literal prefilter of `regexp_like` on (the default) or off
    /// (see `prefilter.rs`); results are the same either way.
    pub fn set_regex_prefilter(&self, on: bool) {
        self.prefilter.set_enabled(on);
    }

    /// Most keys a baseline or lifetime rule remembers (least recently seen
    /// evicted past it; `[state] max_keys_per_rule`).
    pub fn set_max_state_keys(&self, n: usize) {
        self.max_state_keys.store(n.max(1), Ordering::Relaxed);
    }

    /// Takes over `other`'s settings (regex prefilter, key limit), not its state.
    pub fn use_settings_of(&self, other: &Engine) {
        self.prefilter.set_enabled(other.prefilter.enabled());
        self.set_max_state_keys(other.max_state_keys.load(Ordering::Relaxed));
    }

    /// What each rule has cost so far, in rule order (plan execution and
    /// state feeding; published as `dunes_rule_seconds_total`).
    pub fn rule_costs(&self) -> Vec<RuleCost> {
        self.rules
            .iter()
            .map(|r| RuleCost {
                rule_id: r.id().to_string(),
                executions: r.cost.executions.load(Ordering::Relaxed),
                plan_seconds: r.cost.plan_ns.load(Ordering::Relaxed) as f64 / 1e9,
                state_seconds: r.cost.state_ns.load(Ordering::Relaxed) as f64 / 1e9,
                rows: r.cost.rows.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// What the `regexp_like` prefilter did so far.
    pub fn regex_prefilter_stats(&self) -> crate::PrefilterStats {
        self.prefilter.stats()
    }

    pub fn rules(&self) -> &[PlannedRule] {
        &self.rules
    }

    /// Suppression and de-duplication of a batch's incidents.
    pub fn filter_noise(&self, incidents: Vec<crate::Incident>) -> crate::noise::Filtered {
        self.filter_noise_with(incidents, &[])
    }

    /// [`Engine::filter_noise`] with suppression windows for incident
    /// sources that are not rules (the anomaly monitor).
    pub fn filter_noise_with(
        &self,
        incidents: Vec<crate::Incident>,
        extra: &[(&str, i64)],
    ) -> crate::noise::Filtered {
        let mut windows: HashMap<&str, i64> = self
            .rules
            .iter()
            .map(|r| {
                (
                    r.id(),
                    r.rule
                        .config
                        .suppress
                        .as_deref()
                        .and_then(parse_duration_us)
                        .unwrap_or(crate::noise::DEFAULT_SUPPRESS_US),
                )
            })
            .collect();
        windows.extend(extra.iter().copied());
        lock(&self.noise).apply(incidents, |id| windows.get(id).copied().unwrap_or(0))
    }

    /// (suppressed matches, duplicate incidents) since start.
    pub fn noise_counts(&self) -> (u64, u64) {
        let n = lock(&self.noise);
        (n.suppressed, n.duplicates)
    }

    /// What the stateful rules and the noise control hold: (keys, values):
    /// keys are window, sequence, baseline and lifetime entities plus open
    /// suppression windows and de-dup fingerprints; values the events in
    /// windows and sequences and the values remembered by baselines.
    pub fn state_size(&self) -> (u64, u64) {
        let states = lock(&self.states);
        let (mut keys, mut values) = (0usize, 0usize);
        for st in states.values() {
            keys += st.windows.len() + st.sequences.len() + st.baselines.len() + st.spans.len();
            values += st.windows.values().map(|w| w.len()).sum::<usize>();
            values += st
                .sequences
                .values()
                .map(|s| s.steps.iter().map(Vec::len).sum::<usize>())
                .sum::<usize>();
            values += st.baselines.values().map(|b| b.tuples.len()).sum::<usize>();
        }
        let n = lock(&self.noise);
        keys += n.open.len() + n.fingerprints.len();
        (keys as u64, values as u64)
    }

    /// Late / too-late rows seen since the engine started (all rules).
    pub fn late_counts(&self) -> LateCounts {
        lock(&self.late).clone()
    }

    /// The state of every stateful rule, for persistence.
    pub fn snapshot(&self) -> EngineState {
        let states = lock(&self.states);
        let mut out = EngineState {
            noise: lock(&self.noise).clone(),
            ..EngineState::default()
        };
        for r in &self.rules {
            if r.state.is_some()
                && let Some(st) = states.get(r.id())
            {
                out.rules
                    .insert(r.id().to_string(), (r.state_key().to_string(), st.clone()));
            }
        }
        out
    }

    /// The state as the JSON of [`EngineState`], encoded straight from the
    /// live maps (no copy of them first): what the pipeline saves after
    /// every batch.
    /// The changes since the previous delta or snapshot are reset.
    pub fn snapshot_json(&self, position: Option<u64>) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(serde::Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            position: Option<u64>,
            rules: BTreeMap<&'a str, (String, &'a RuleState)>,
            noise: &'a crate::noise::NoiseState,
        }
        let mut states = lock(&self.states);
        let mut noise = lock(&self.noise);
        // Everything is in the snapshot: nothing is pending for a delta.
        for st in states.values_mut() {
            st.delta();
        }
        noise.delta();
        let mut rules = BTreeMap::new();
        for r in &self.rules {
            if r.state.is_some()
                && let Some(st) = states.get(r.id())
            {
                rules.insert(r.id(), (r.state_key().to_string(), st));
            }
        }
        serde_json::to_vec(&View {
            position,
            rules,
            noise: &noise,
        })
    }

    /// The JSON of an [`EngineDelta`]: what changed since the previous
    /// delta or snapshot, encoded from the live maps, at ledger `position`.
    /// Unchanged rules are left out.
    pub fn delta_json(&self, position: u64) -> Result<Vec<u8>, serde_json::Error> {
        #[derive(serde::Serialize)]
        struct View<'a> {
            position: u64,
            rules: BTreeMap<&'a str, (&'a str, crate::state::RuleDeltaRef<'a>)>,
            noise: crate::noise::NoiseDeltaRef<'a>,
        }
        let mut states = lock(&self.states);
        let mut noise = lock(&self.noise);
        let keys: HashMap<&str, &str> = self
            .rules
            .iter()
            .filter(|r| r.state.is_some())
            .map(|r| (r.id(), r.state_key()))
            .collect();
        let mut rules = BTreeMap::new();
        for (id, st) in states.iter_mut() {
            if let Some((rid, key)) = keys.get_key_value(id.as_str())
                && st.is_dirty()
            {
                rules.insert(*rid, (*key, st.delta()));
            }
        }
        serde_json::to_vec(&View {
            position,
            rules,
            noise: noise.delta(),
        })
    }

    /// Restores persisted state. State of a rule whose kind, parameters,
    /// query or entity changed (another state key) is discarded; returns
    /// the ids of the rules restored.
    pub fn restore(&self, saved: EngineState) -> Vec<String> {
        *lock(&self.noise) = saved.noise;
        let mut states = lock(&self.states);
        let mut restored = Vec::new();
        for (id, (key, st)) in saved.rules {
            if let Some(r) = self.rules.iter().find(|r| r.id() == id)
                && r.state.is_some()
                && r.state_key() == key
            {
                states.insert(id.clone(), st);
                restored.push(id);
            }
        }
        restored
    }

    /// Hot reload: takes over the state of `old` for every stateful rule
    /// whose id and file SHA-256 are unchanged (its state key then is too);
    /// state of changed or removed rules is dropped, as are their open
    /// suppression windows. De-dup fingerprints, late counts and the regex
    /// prefilter setting carry over.
    /// Returns the ids of the rules whose state was kept.
    pub fn carry_state_from(&self, old: &Engine) -> Vec<String> {
        let unchanged: HashSet<&str> = self
            .rules
            .iter()
            .filter(|r| {
                old.rules
                    .iter()
                    .any(|o| o.id() == r.id() && o.rule.sha256 == r.rule.sha256)
            })
            .map(|r| r.id())
            .collect();
        let old_states = lock(&old.states);
        let mut states = lock(&self.states);
        let mut kept = Vec::new();
        for r in &self.rules {
            if r.state.is_some()
                && unchanged.contains(r.id())
                && let Some(st) = old_states.get(r.id())
            {
                states.insert(r.id().to_string(), st.clone());
                kept.push(r.id().to_string());
            }
        }
        let mut noise = lock(&old.noise).clone();
        noise
            .open
            .retain(|_, o| unchanged.contains(o.incident.rule_id.as_str()));
        *lock(&self.noise) = noise;
        *lock(&self.late) = lock(&old.late).clone();
        self.use_settings_of(old);
        kept
    }

    /// Runs every rule over one micro-batch and returns the rules that
    /// matched at least one row ([`Engine::start`] then [`Engine::finish`]).
    pub async fn evaluate(&self, tables: Tables<'_>) -> Result<Vec<RuleMatches<'_>>, DetectError> {
        self.finish(self.start(tables)).await
    }

    /// Starts every rule's plan over one micro-batch, in parallel on the
    /// runtime's worker threads; [`Engine::finish`] takes the results. The
    /// batch's tables travel with its plans, so a caller may start the next
    /// batch before it finishes this one (its plans then run while this
    /// batch's states are fed); batches must be finished in the order they
    /// were started, by the engine that started them.
    pub fn start(&self, tables: Tables<'_>) -> BatchPlans {
        let ctx = self.batch_ctx(tables);
        BatchPlans {
            engine: self.id,
            started: self.start_all(tables, &ctx),
            ctx,
        }
    }

    /// Whether this engine started `plans` (not one it replaced).
    pub fn started(&self, plans: &BatchPlans) -> bool {
        plans.engine == self.id
    }

    /// Takes the results of the plans [`Engine::start`] started, in rule
    /// order, feeding each stateful rule's state while the later plans still
    /// run, and returns the rules that matched at least one row. Every task
    /// is awaited, also after an error.
    pub async fn finish(&self, plans: BatchPlans) -> Result<Vec<RuleMatches<'_>>, DetectError> {
        if !self.started(&plans) {
            return Err(DetectError::InvalidValue(
                "a batch started by another engine (rules reloaded in between)".into(),
            ));
        }
        let BatchPlans { started, ctx, .. } = plans;
        let mut out = Vec::new();
        let mut result = Ok(());
        for (rule, started) in self.rules.iter().zip(started) {
            // After an error the remaining plans are still awaited (none may
            // outlive this batch's tables), their results dropped.
            let executed = result_of(rule, started, &ctx).await;
            if result.is_err() {
                continue;
            }
            let batches = match executed {
                Ok(b) => b,
                Err(e) => {
                    result = Err(e);
                    continue;
                }
            };
            if !batches.iter().any(|b| b.num_rows() > 0) {
                continue;
            }
            if rule.state.is_some() {
                let mut states = lock(&self.states);
                let st = states.entry(rule.id().to_string()).or_default();
                let max_keys = self.max_state_keys.load(Ordering::Relaxed);
                let fed = Instant::now();
                let state_fed = feed_state(rule, st, &batches, max_keys);
                rule.cost
                    .state_ns
                    .fetch_add(nanos_since(fed), Ordering::Relaxed);
                let fires = match state_fed {
                    Ok((f, late)) => {
                        if late != LateCounts::default() {
                            let mut l = lock(&self.late);
                            l.late += late.late;
                            l.too_late += late.too_late;
                            l.evicted += late.evicted;
                        }
                        if late.evicted > 0 {
                            tracing::warn!(
                                rule = rule.id(),
                                evicted = late.evicted,
                                keys = max_keys,
                                "the rule's state reached its key limit ([state] max_keys_per_rule): the least recently seen keys were forgotten"
                            );
                        }
                        if late.too_late > 0 {
                            tracing::warn!(
                                rule = rule.id(),
                                late = late.late,
                                too_late = late.too_late,
                                "events older than the rule's retained state were evaluated against what is left"
                            );
                        } else if late.late > 0 {
                            tracing::debug!(rule = rule.id(), late = late.late, "late events");
                        }
                        f
                    }
                    Err(e) => {
                        result = Err(e);
                        continue;
                    }
                };
                if !fires.is_empty() {
                    out.push(RuleMatches {
                        rule,
                        batches: Vec::new(),
                        fires,
                    });
                }
            } else {
                out.push(RuleMatches {
                    rule,
                    batches,
                    fires: Vec::new(),
                });
            }
        }
        self.prefilter.batch_done();
        result.map(|()| out)
    }

    /// Runs one rule over one batch as an inline test: a stateless rule
    /// counts rows, a stateful rule counts fires from a fresh state.
    pub async fn test_one(
        &self,
        rule_index: usize,
        tables: Tables<'_>,
    ) -> Result<u64, DetectError> {
        let rule = self
            .rules
            .get(rule_index)
            .ok_or_else(|| DetectError::InvalidValue(format!("no rule #{rule_index}")))?;
        let batches = self.evaluate_one(rule_index, tables).await?;
        if rule.state.is_some() {
            let mut st = RuleState::default();
            let max_keys = self.max_state_keys.load(Ordering::Relaxed);
            Ok(feed_state(rule, &mut st, &batches, max_keys)?.0.len() as u64)
        } else {
            let mut n = 0;
            for b in &batches {
                let ex = Exceptions::of(rule, b);
                n += (0..b.num_rows()).filter(|&i| !ex.excepted(i)).count() as u64;
            }
            Ok(n)
        }
    }

    /// Runs a single rule (by index) over a batch; used by the inline rule
    /// tests.
    pub async fn evaluate_one(
        &self,
        rule_index: usize,
        tables: Tables<'_>,
    ) -> Result<Vec<RecordBatch>, DetectError> {
        let rule = self
            .rules
            .get(rule_index)
            .ok_or_else(|| DetectError::InvalidValue(format!("no rule #{rule_index}")))?;
        let res = run_plan(rule, self.batch_ctx(tables)).await;
        self.prefilter.batch_done();
        res
    }

    /// A task context whose tables are `tables`.
    fn batch_ctx(&self, tables: Tables<'_>) -> Arc<TaskContext> {
        self.prefilter.batch_started();
        let config = self
            .ctx
            .copied_config()
            .with_extension(Arc::new(BatchTables::of(tables)));
        Arc::new(TaskContext::from(&self.ctx).with_session_config(config))
    }

    /// Starts every rule's plan over `tables` (the batch of `ctx`), in
    /// parallel on the runtime's worker threads (each plan is an independent
    /// task reading the same tables). [`Engine::finish`] takes the results in
    /// rule order, so what follows (state, incidents) does not depend on
    /// which finished first. Outside a Tokio runtime the plans run one after
    /// the other as they are awaited.
    ///
    /// A rule whose every scanned table is empty in this batch (the MAML
    /// rules on traffic without MAML documents) is not executed: its result
    /// is the empty result the plan would produce.
    fn start_all(&self, tables: Tables<'_>, ctx: &Arc<TaskContext>) -> Vec<Started> {
        let rows = |t: &str| match t {
            "events" => tables.events.num_rows(),
            "tool_defs" => tables.tool_defs.num_rows(),
            "maml_docs" => tables.maml_docs.num_rows(),
            _ => usize::MAX,
        };
        let idle =
            |rule: &PlannedRule| !rule.reads.is_empty() && rule.reads.iter().all(|t| rows(t) == 0);
        let spawn = tokio::runtime::Handle::try_current().is_ok() && self.rules.len() >= 2;
        self.rules
            .iter()
            .map(|rule| {
                if idle(rule) {
                    Started::Idle
                } else if spawn {
                    Started::Task(tokio::spawn(run_plan(rule, ctx.clone())))
                } else {
                    Started::Inline
                }
            })
            .collect()
    }
}

/// The plans of one micro-batch, running: [`Engine::start`] made them,
/// [`Engine::finish`] takes their results. Dropped unfinished, its tasks
/// still run to completion (their results are discarded).
pub struct BatchPlans {
    engine: u64,
    started: Vec<Started>,
    ctx: Arc<TaskContext>,
}

/// The result of a plan [`Engine::start_all`] started.
async fn result_of(
    rule: &PlannedRule,
    started: Started,
    ctx: &Arc<TaskContext>,
) -> Result<Vec<RecordBatch>, DetectError> {
    match started {
        Started::Idle => Ok(Vec::new()),
        Started::Inline => run_plan(rule, ctx.clone()).await,
        Started::Task(h) => h.await.unwrap_or_else(|e| {
            Err(DetectError::Execution {
                rule: rule.id().to_string(),
                message: format!("execution task failed: {e}"),
            })
        }),
    }
}

/// A rule's plan as [`Engine::start_all`] left it.
enum Started {
    /// Not executed: every table it reads is empty.
    Idle,
    /// To run when its result is wanted (no runtime to spawn on).
    Inline,
    Task(tokio::task::JoinHandle<Result<Vec<RecordBatch>, DetectError>>),
}

/// Runs a rule's planned physical plan (its state reset) to completion;
/// an owned future, so that it can run as a task of its own.
fn run_plan(
    rule: &PlannedRule,
    ctx: Arc<TaskContext>,
) -> impl std::future::Future<Output = Result<Vec<RecordBatch>, DetectError>> + Send + 'static {
    let id = rule.id().to_string();
    let plan = reset_plan_states(rule.plan.clone());
    let cost = rule.cost.clone();
    async move {
        let started = Instant::now();
        let err = |message: String| DetectError::Execution {
            rule: id.clone(),
            message,
        };
        let plan = plan.map_err(|e| err(e.to_string()))?;
        let out = collect(plan, ctx).await.map_err(|e| err(e.to_string()));
        cost.plan_ns
            .fetch_add(nanos_since(started), Ordering::Relaxed);
        cost.executions.fetch_add(1, Ordering::Relaxed);
        if let Ok(b) = &out {
            let rows: usize = b.iter().map(RecordBatch::num_rows).sum();
            cost.rows.fetch_add(rows as u64, Ordering::Relaxed);
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn utf8(batch: &RecordBatch, i: usize) -> Result<StringArray, DetectError> {
    let arr = cast(batch.column(i), &DataType::Utf8)
        .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    arr.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DetectError::InvalidValue("not a string column".into()))
}

fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// A rule's exception columns in one of its output batches, as text (cast
/// once per batch, not per row).
pub(crate) struct Exceptions<'r> {
    cols: Vec<(StringArray, &'r HashSet<String>)>,
}

impl<'r> Exceptions<'r> {
    pub(crate) fn of(rule: &'r PlannedRule, batch: &RecordBatch) -> Self {
        let cols = rule
            .exceptions
            .iter()
            .filter_map(|(col, values)| {
                // a column that cannot be read as text excepts nothing
                let a = cast(batch.column(*col), &DataType::Utf8).ok()?;
                Some((a.as_any().downcast_ref::<StringArray>()?.clone(), values))
            })
            .collect();
        Exceptions { cols }
    }

    /// Whether row `i` is allowlisted by an exception file.
    pub(crate) fn excepted(&self, i: usize) -> bool {
        self.cols
            .iter()
            .any(|(a, values)| !a.is_null(i) && values.contains(a.value(i)))
    }
}

/// Feeds a stateful rule's output rows into its state; returns the fires.
pub fn feed_state(
    rule: &PlannedRule,
    st: &mut RuleState,
    batches: &[RecordBatch],
    max_keys: usize,
) -> Result<(Vec<Fire>, LateCounts), DetectError> {
    let Some(sl) = &rule.state else {
        return Ok((Vec::new(), LateCounts::default()));
    };
    let spec = &sl.spec;
    // Rows, with where they came from (batch, row) to build evidence later.
    // The text columns of every batch first: the rows borrow them.
    let text_cols = batches
        .iter()
        .map(|b| {
            if b.num_rows() == 0 {
                return Ok(None);
            }
            let cols = |idx: &[usize]| {
                idx.iter()
                    .map(|&i| utf8(b, i))
                    .collect::<Result<Vec<_>, _>>()
            };
            Ok(Some((
                utf8(b, rule.layout.event_id)?,
                cols(&sl.key)?,
                cols(&sl.values)?,
            )))
        })
        .collect::<Result<Vec<_>, DetectError>>()?;
    // Joined keys of several columns, for the rows below (one arena per
    // call instead of a `String` per row).
    let joined = bumpalo::Bump::new();
    let mut rows: Vec<StateRow> =
        Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for (bi, (b, cols)) in batches.iter().zip(&text_cols).enumerate() {
        let Some((ids, keys, vals)) = cols else {
            continue;
        };
        let ts_arr = cast(
            b.column(rule.layout.ts),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )
        .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
        let ts = ts_arr
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| DetectError::InvalidValue("ts".into()))?;
        let num = if spec.kind == RuleKind::Threshold && spec.aggregate == Aggregate::Sum {
            let c = cast(b.column(sl.values[0]), &DataType::Float64)
                .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
            c.as_any().downcast_ref::<Float64Array>().cloned()
        } else {
            None
        };
        let step = sl.step.map(|i| utf8(b, i)).transpose()?;
        let flag = |col: Option<usize>| {
            col.map(|i| {
                b.column(i)
                    .as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .cloned()
                    .ok_or_else(|| {
                        DetectError::InvalidValue("fire_if/learn_if is not boolean".into())
                    })
            })
            .transpose()
        };
        let fire_if = flag(sl.fire_if)?;
        let learn_if = flag(sl.learn_if)?;
        let mut seq_evidence = None;
        let ex = Exceptions::of(rule, b);
        for i in 0..b.num_rows() {
            if ts.is_null(i) || ids.is_null(i) || ex.excepted(i) {
                continue;
            }
            // A null key column: the row is about no entity; skip it.
            let key = match keys.as_slice() {
                [k] => match opt_str(k, i) {
                    Some(v) => Cow::Borrowed(v),
                    None => continue,
                },
                ks => {
                    let parts: Option<SmallVec<[&str; 4]>> =
                        ks.iter().map(|k| opt_str(k, i)).collect();
                    let Some(parts) = parts else {
                        continue;
                    };
                    Cow::Borrowed(crate::state::sep_join_in(&parts, &joined))
                }
            };
            let step_idx = match &step {
                Some(s) => match opt_str(s, i).and_then(|v| spec.steps.iter().position(|x| x == v))
                {
                    Some(p) => Some(p),
                    None => continue,
                },
                None => None,
            };
            // A sequence keeps the evidence of its earlier steps (a chain's
            // final event is the firing row, whose evidence is built below).
            let evidence = match step_idx {
                Some(s) if spec.kind == RuleKind::Sequence && s + 1 < spec.steps.len() => {
                    if seq_evidence.is_none() {
                        seq_evidence = Some(crate::incident::JsonRows::new(b)?);
                    }
                    seq_evidence.as_mut().map(|r| r.row(i))
                }
                _ => None,
            };
            rows.push(StateRow {
                ts: ts.value(i),
                event_id: Cow::Borrowed(ids.value(i)),
                key,
                values: vals
                    .iter()
                    .map(|v| opt_str(v, i).map(Cow::Borrowed))
                    .collect(),
                num: num
                    .as_ref()
                    .and_then(|n| (!n.is_null(i)).then(|| n.value(i))),
                step: step_idx,
                may_fire: fire_if.as_ref().is_none_or(|a| !a.is_null(i) && a.value(i)),
                may_learn: learn_if
                    .as_ref()
                    .is_none_or(|a| !a.is_null(i) && a.value(i)),
                evidence,
                origin: (bi, i),
            });
        }
    }
    let (fired, late, too_late) = st.process_with_limit(spec, rows, max_keys);
    let evicted = st.take_evicted();
    let mut fires = Vec::with_capacity(fired.len());
    for (row, f) in fired {
        let mut map = match row.evidence {
            Some(m) => m,
            None => {
                let (bi, i) = row.origin;
                match batches.get(bi) {
                    Some(b) => crate::incident::batch_to_json_rows(&b.slice(i, 1))?
                        .into_iter()
                        .next()
                        .unwrap_or_default(),
                    None => Default::default(),
                }
            }
        };
        for (k, v) in f.detail {
            map.insert(k, v);
        }
        fires.push(Fire {
            row: map,
            prior_evidence: f.prior_evidence,
            first_ts: f.first_ts,
            ts: f.ts,
            event_ids: f.event_ids,
        });
    }
    Ok((
        fires,
        LateCounts {
            late,
            too_late,
            evicted,
        },
    ))
}

fn dur(rule: &LoadedRule, v: Option<&str>, default: i64) -> i64 {
    let _ = rule;
    v.and_then(parse_duration_us).unwrap_or(default)
}

fn register(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    table: Table,
) -> Result<(), DetectError> {
    let part = Arc::new(BatchPartition {
        schema: schema.clone(),
        table,
    });
    let table = StreamingTable::try_new(schema, vec![part])
        .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    Ok(())
}

async fn plan_rule(
    ctx: &SessionContext,
    prefilter: &crate::prefilter::Prefilter,
    rule: LoadedRule,
) -> Result<PlannedRule, DetectError> {
    let line = Some(rule.query_line);
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    crate::sql_syntax::check_syntax(&rule.config.query)
        .map_err(|e| rule.error(line, format!("query: {e}")))?;
    let df = ctx
        .sql_with_options(&rule.config.query, options)
        .await
        .map_err(|e| rule.error(line, format!("query: {e}")))?;
    let mut reads: Vec<String> = Vec::new();
    let walked = df.logical_plan().apply_with_subqueries(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            reads.push(scan.table_name.table().to_string());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    if walked.is_err() {
        reads.clear();
    }
    for pattern in crate::regex_udf::literal_patterns(df.logical_plan()) {
        prefilter.slot(&pattern);
    }
    reads.sort();
    reads.dedup();
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| rule.error(line, format!("query does not plan: {e}")))?;
    let schema = plan.schema();
    let find = |name: &str| schema.index_of(name).ok();
    let event_id = find("event_id")
        .ok_or_else(|| rule.error(line, "query output lacks the event_id column"))?;
    if !matches!(
        schema.field(event_id).data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Err(rule.error(line, "event_id must be a string column"));
    }
    let ts = find("ts").ok_or_else(|| rule.error(line, "query output lacks the ts column"))?;
    if !matches!(schema.field(ts).data_type(), DataType::Timestamp(_, _)) {
        return Err(rule.error(line, "ts must be a timestamp column"));
    }
    let mut entity = Vec::with_capacity(rule.config.entity.len());
    for col in &rule.config.entity {
        entity.push(find(col).ok_or_else(|| {
            rule.error(
                line,
                format!("entity column {col:?} is not in the query output"),
            )
        })?);
    }
    let layout = OutputLayout {
        event_id,
        ts,
        entity: entity.clone(),
        session_id: find("session_id"),
        server_id: find("server_id"),
    };
    let col = |name: &str| {
        find(name).ok_or_else(|| {
            rule.error(
                line,
                format!("column {name:?} used by the rule is not in the query output"),
            )
        })
    };
    let mut exceptions = Vec::new();
    for ex in &rule.exceptions {
        exceptions.push((col(&ex.column)?, ex.values.clone()));
    }
    let c = &rule.config;
    let lateness = dur(&rule, c.lateness.as_deref(), DEFAULT_LATENESS_US);
    let base = StateSpec {
        kind: c.kind,
        lateness,
        size: 0,
        tumbling: false,
        aggregate: Aggregate::Count,
        min: 0.0,
        min_share: 0.0,
        steps: Vec::new(),
        within: 0,
        learn: 0,
        when: Default::default(),
        idle: 0,
        absolute: 0,
        forget: 0,
    };
    let bool_col = |name: &Option<String>, key: &str| -> Result<Option<usize>, DetectError> {
        let Some(name) = name else {
            return Ok(None);
        };
        let i = col(name)?;
        if schema.field(i).data_type() != &DataType::Boolean {
            return Err(rule.error(
                line,
                format!("baseline {key} column {name:?} must be boolean"),
            ));
        }
        Ok(Some(i))
    };
    let state = match c.kind {
        RuleKind::Match => None,
        RuleKind::Threshold => {
            let (w, t) = match (&c.window, &c.threshold) {
                (Some(w), Some(t)) => (w, t),
                _ => return Err(rule.error(line, "threshold rule lacks window/threshold")),
            };
            let values = match &t.column {
                Some(cn) if t.aggregate != Aggregate::Count => vec![col(cn)?],
                _ => Vec::new(),
            };
            Some(StateLayout {
                spec: StateSpec {
                    size: dur(&rule, Some(&w.size), 60_000_000),
                    tumbling: w.kind == WindowType::Tumbling,
                    aggregate: t.aggregate,
                    min: t.min,
                    min_share: t.min_share.unwrap_or(0.0),
                    ..base
                },
                key: entity,
                values,
                step: None,
                fire_if: None,
                learn_if: None,
            })
        }
        RuleKind::Sequence => {
            let s = c
                .sequence
                .as_ref()
                .ok_or_else(|| rule.error(line, "sequence rule lacks `sequence`"))?;
            Some(StateLayout {
                spec: StateSpec {
                    steps: s.steps.clone(),
                    within: dur(&rule, Some(&s.within), 300_000_000),
                    ..base
                },
                key: entity,
                values: Vec::new(),
                step: Some(col("step")?),
                fire_if: None,
                learn_if: None,
            })
        }
        RuleKind::Baseline => {
            let b = c
                .baseline
                .as_ref()
                .ok_or_else(|| rule.error(line, "baseline rule lacks `baseline`"))?;
            Some(StateLayout {
                spec: StateSpec {
                    learn: dur(&rule, b.learn.as_deref(), 0),
                    when: b.when,
                    forget: dur(&rule, b.forget.as_deref(), 0),
                    ..base
                },
                key: b.key.iter().map(|k| col(k)).collect::<Result<_, _>>()?,
                values: b.value.iter().map(|k| col(k)).collect::<Result<_, _>>()?,
                step: None,
                fire_if: bool_col(&b.fire_if, "fire_if")?,
                learn_if: bool_col(&b.learn_if, "learn_if")?,
            })
        }
        RuleKind::Lifetime => {
            let l = c
                .lifetime
                .as_ref()
                .ok_or_else(|| rule.error(line, "lifetime rule lacks `lifetime`"))?;
            Some(StateLayout {
                spec: StateSpec {
                    idle: dur(&rule, l.idle.as_deref(), 0),
                    absolute: dur(&rule, l.absolute.as_deref(), 0),
                    forget: dur(&rule, l.forget.as_deref(), 7 * 86_400_000_000),
                    ..base
                },
                key: entity,
                values: Vec::new(),
                step: None,
                fire_if: None,
                learn_if: None,
            })
        }
    };
    Ok(PlannedRule {
        state_key: rule.state_key(),
        rule,
        layout,
        state,
        exceptions,
        plan,
        reads,
        cost: Arc::default(),
    })
}
