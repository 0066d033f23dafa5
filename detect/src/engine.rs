//! The rule engine: every rule's SQL is planned once into a DataFusion
//! physical plan over two *swappable* tables (`events`, `tool_defs`). For
//! each micro-batch the engine swaps the batch into the tables and
//! re-executes the planned physical plans; no SQL is parsed or planned on
//! the hot path.

use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{
    ExecutionPlan, SendableRecordBatchStream, collect, execution_plan::reset_plan_states,
};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::DetectError;
use crate::rule::LoadedRule;

type Slot = Arc<RwLock<Vec<RecordBatch>>>;

/// A partition whose contents are whatever batch is currently in the slot
/// when the plan is executed.
#[derive(Debug)]
struct SlotPartition {
    schema: SchemaRef,
    slot: Slot,
}

impl PartitionStream for SlotPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches: Vec<RecordBatch> = match self.slot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
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

/// A rule turned into a runtime detector: its config plus a physical plan.
#[derive(Debug)]
pub struct PlannedRule {
    pub rule: LoadedRule,
    pub layout: OutputLayout,
    plan: Arc<dyn ExecutionPlan>,
}

impl PlannedRule {
    pub fn id(&self) -> &str {
        &self.rule.config.id
    }
    pub fn output_schema(&self) -> SchemaRef {
        self.plan.schema()
    }
}

/// The matches of one rule for one micro-batch.
pub struct RuleMatches<'a> {
    pub rule: &'a PlannedRule,
    pub batches: Vec<RecordBatch>,
}

impl RuleMatches<'_> {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// The set of planned rules and the tables they read.
pub struct Engine {
    ctx: SessionContext,
    events: Slot,
    tool_defs: Slot,
    rules: Vec<PlannedRule>,
}

impl Engine {
    /// Plans every rule. The first rule that does not plan refuses the whole
    /// set, naming its file and the line of its query.
    pub async fn new(rules: Vec<LoadedRule>) -> Result<Self, DetectError> {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        let events: Slot = Arc::default();
        let tool_defs: Slot = Arc::default();
        register(
            &ctx,
            "events",
            dunes_ingest::schema::events_schema(),
            &events,
        )?;
        register(
            &ctx,
            "tool_defs",
            dunes_ingest::schema::tool_defs_schema(),
            &tool_defs,
        )?;
        let mut planned = Vec::with_capacity(rules.len());
        for rule in rules {
            planned.push(plan_rule(&ctx, rule).await?);
        }
        Ok(Engine {
            ctx,
            events,
            tool_defs,
            rules: planned,
        })
    }

    pub fn rules(&self) -> &[PlannedRule] {
        &self.rules
    }

    /// Runs every rule over one micro-batch and returns the rules that
    /// matched at least one row.
    pub async fn evaluate(
        &self,
        events: &RecordBatch,
        tool_defs: &RecordBatch,
    ) -> Result<Vec<RuleMatches<'_>>, DetectError> {
        self.load(events, tool_defs);
        let mut out = Vec::new();
        for rule in &self.rules {
            let batches = self.execute(rule).await?;
            if batches.iter().any(|b| b.num_rows() > 0) {
                out.push(RuleMatches { rule, batches });
            }
        }
        self.load_empty();
        Ok(out)
    }

    /// Runs a single rule (by index) over a batch; used by the inline rule
    /// tests.
    pub async fn evaluate_one(
        &self,
        rule_index: usize,
        events: &RecordBatch,
        tool_defs: &RecordBatch,
    ) -> Result<Vec<RecordBatch>, DetectError> {
        let rule = self
            .rules
            .get(rule_index)
            .ok_or_else(|| DetectError::InvalidValue(format!("no rule #{rule_index}")))?;
        self.load(events, tool_defs);
        let res = self.execute(rule).await;
        self.load_empty();
        res
    }

    async fn execute(&self, rule: &PlannedRule) -> Result<Vec<RecordBatch>, DetectError> {
        let plan = reset_plan_states(rule.plan.clone()).map_err(|e| DetectError::Execution {
            rule: rule.id().to_string(),
            message: e.to_string(),
        })?;
        collect(plan, self.ctx.task_ctx())
            .await
            .map_err(|e| DetectError::Execution {
                rule: rule.id().to_string(),
                message: e.to_string(),
            })
    }

    fn load(&self, events: &RecordBatch, tool_defs: &RecordBatch) {
        set(&self.events, events);
        set(&self.tool_defs, tool_defs);
    }

    fn load_empty(&self) {
        for slot in [&self.events, &self.tool_defs] {
            match slot.write() {
                Ok(mut g) => g.clear(),
                Err(p) => p.into_inner().clear(),
            }
        }
    }
}

fn set(slot: &Slot, batch: &RecordBatch) {
    let v = if batch.num_rows() == 0 {
        Vec::new()
    } else {
        vec![batch.clone()]
    };
    match slot.write() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

fn register(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    slot: &Slot,
) -> Result<(), DetectError> {
    let part = Arc::new(SlotPartition {
        schema: schema.clone(),
        slot: slot.clone(),
    });
    let table = StreamingTable::try_new(schema, vec![part])
        .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    Ok(())
}

async fn plan_rule(ctx: &SessionContext, rule: LoadedRule) -> Result<PlannedRule, DetectError> {
    let line = Some(rule.query_line);
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(&rule.config.query, options)
        .await
        .map_err(|e| rule.error(line, format!("query: {e}")))?;
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
        entity,
        session_id: find("session_id"),
        server_id: find("server_id"),
    };
    Ok(PlannedRule { rule, layout, plan })
}
