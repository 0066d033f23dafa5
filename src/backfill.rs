//! `dunes replay --from-store [--since T1] [--until T2]`: re-runs the current rules over
//! the Parquet event history (in event-time order, with a fresh detection state, as a new
//! live run would see the same input), with a progress bar. Incidents are marked
//! `backfill`; see [`Pipeline::backfill_batch`].

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use dunes_detect::IncidentStore;
use futures::StreamExt as _;

use dunes_pipeline::Config;
use dunes_pipeline::{DataPaths, Pipeline, Stats};

fn ts_values(batch: &RecordBatch) -> anyhow::Result<TimestampMicrosecondArray> {
    let idx = batch.schema().index_of("ts")?;
    let ts = arrow::compute::cast(
        batch.column(idx),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )?;
    ts.as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .cloned()
        .context("ts is not a timestamp")
}

pub async fn run(
    cfg: &Config,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    incidents_out: Option<&Path>,
) -> anyhow::Result<(Stats, Option<dunes_ledger::Checkpoint>)> {
    let ctx = SessionContext::new();
    dunes_detect::history::register_history(&ctx, &cfg.data_dir)
        .await
        .context("cannot open the history store")?;
    // Bounds are our own RFC 3339 renderings, never user text.
    let mut conds = vec!["true".to_string()];
    if let Some(t) = since {
        conds.push(format!("ts >= TIMESTAMP '{}'", t.to_rfc3339()));
    }
    if let Some(t) = until {
        conds.push(format!("ts < TIMESTAMP '{}'", t.to_rfc3339()));
    }
    let cond = conds.join(" AND ");
    let total: u64 = {
        let b = ctx
            .sql(&format!("SELECT count(*) AS n FROM events WHERE {cond}"))
            .await?
            .collect()
            .await?;
        b.first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|a| a.value(0) as u64)
            })
            .unwrap_or(0)
    };
    // The side tables (one row per tool definition / MAML document) are
    // small: loaded whole, then handed out up to each events batch's end.
    let mut tool_defs = SideTable::load(
        &ctx,
        "tool_defs",
        dunes_ingest::schema::tool_defs_schema(),
        &cond,
    )
    .await?;
    let mut maml_docs = SideTable::load(
        &ctx,
        "maml_docs",
        dunes_ingest::schema::maml_docs_schema(),
        &cond,
    )
    .await?;

    let paths = DataPaths::new(&cfg.data_dir);
    let store = Arc::new(
        IncidentStore::load_ndjson(&paths.incidents).context("cannot load earlier incidents")?,
    );
    let mut no_history = cfg.clone();
    // The stored events are already in the history: do not store them twice.
    no_history.history.enabled = false;
    let mut pipeline = Pipeline::open(&no_history, store, incidents_out).await?;
    pipeline.fresh_engine_for_backfill().await?;

    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} backfill [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut stream = ctx
        .sql(&format!(
            "SELECT * FROM events WHERE {cond} ORDER BY ts, event_id, msg_index"
        ))
        .await?
        .execute_stream()
        .await?;
    let ev_schema = dunes_ingest::schema::events_schema();
    let mut raised = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        // Same column types and nullability as live batches.
        let batch = RecordBatch::try_new(ev_schema.clone(), batch.columns().to_vec())
            .context("stored events do not match the events schema")?;
        let ts = ts_values(&batch)?;
        let max_ts = (0..ts.len())
            .filter(|&i| !ts.is_null(i))
            .map(|i| ts.value(i))
            .max()
            .unwrap_or(i64::MIN);
        let td = tool_defs.until(max_ts);
        let md = maml_docs.until(max_ts);
        raised += pipeline
            .backfill_batch(dunes_detect::Tables {
                events: &batch,
                tool_defs: &td,
                maml_docs: &md,
            })
            .await?;
        bar.inc(batch.num_rows() as u64);
        bar.set_message(format!("{raised} incidents"));
    }
    bar.finish_with_message(format!("{raised} incidents"));
    Ok(pipeline.close()?)
}

/// A stored side table in ts order, handed out in consecutive slices.
struct SideTable {
    rows: RecordBatch,
    ts: arrow::array::TimestampMicrosecondArray,
    pos: usize,
}

impl SideTable {
    async fn load(
        ctx: &datafusion::prelude::SessionContext,
        table: &str,
        schema: arrow::datatypes::SchemaRef,
        cond: &str,
    ) -> anyhow::Result<Self> {
        let batches = ctx
            .sql(&format!(
                "SELECT * FROM {table} WHERE {cond} ORDER BY ts, event_id"
            ))
            .await?
            .collect()
            .await?;
        let rows = arrow::compute::concat_batches(&schema, &batches)?;
        let rows = RecordBatch::try_new(schema, rows.columns().to_vec())
            .with_context(|| format!("stored {table} do not match the {table} schema"))?;
        let ts = ts_values(&rows)?;
        Ok(SideTable { rows, ts, pos: 0 })
    }

    /// The rows not handed out yet with ts up to `max_ts`.
    fn until(&mut self, max_ts: i64) -> RecordBatch {
        let mut end = self.pos;
        while end < self.ts.len() && (self.ts.is_null(end) || self.ts.value(end) <= max_ts) {
            end += 1;
        }
        let out = self.rows.slice(self.pos, end - self.pos);
        self.pos = end;
        out
    }
}
