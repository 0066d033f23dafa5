//! Hunting: read-only SQL over the history store (`events`, `tool_defs`) and the incidents.
//!
//! Defence in depth: (1) the statement is parsed with DataFusion's SQL parser and must be a
//! single query (SELECT / WITH / VALUES) reading only `events`, `tool_defs`, `incidents` or
//! its own CTEs, with no table functions, `SELECT INTO`, nested DML or locking clauses;
//! (2) it is planned with DDL, DML and statements disabled in a fresh session whose catalog
//! holds only those tables (no URL tables); (3) it runs under a time limit and a row limit.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{
    ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use dunes_detect::{IncidentFilter, IncidentStore};
use serde::{Deserialize, Serialize};

/// The tables a hunting query may read.
pub const HUNT_TABLES: [&str; 4] = ["events", "tool_defs", "maml_docs", "incidents"];

/// `[hunt]` settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HuntConfig {
    /// A query is cancelled after this long (408-like 422 answer).
    pub timeout_ms: u64,
    /// At most this many rows are returned (`truncated: true` beyond).
    pub max_rows: usize,
    /// Longest accepted SQL text, in bytes.
    pub max_sql_bytes: usize,
}

impl Default for HuntConfig {
    fn default() -> Self {
        HuntConfig {
            timeout_ms: 10_000,
            max_rows: 10_000,
            max_sql_bytes: 16 * 1024,
        }
    }
}

/// Why a hunting query was refused or failed (all shown to the caller: they describe the
/// caller's SQL, not the server).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HuntError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("query failed: {0}")]
    Failed(String),
    #[error("query exceeded the time limit of {0} ms")]
    Timeout(u64),
}

struct Guard {
    statements: usize,
    ctes: HashSet<String>,
    relations: Vec<String>,
    refused: Option<String>,
}

fn single_ident(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Some(id.value.to_ascii_lowercase()),
        _ => None,
    }
}

fn check_set_expr(e: &SetExpr) -> Result<(), String> {
    match e {
        SetExpr::Select(s) => {
            if s.into.is_some() {
                return Err("SELECT INTO is not allowed".into());
            }
            Ok(())
        }
        SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            Err("data modification is not allowed".into())
        }
        _ => Err("only SELECT / WITH queries are allowed".into()),
    }
}

impl Visitor for Guard {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        self.statements += 1;
        if self.statements > 1 {
            self.refused = Some("nested statements are not allowed".into());
            return ControlFlow::Break(());
        }
        if !matches!(s, Statement::Query(_)) {
            self.refused = Some("only SELECT / WITH queries are allowed".into());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Err(e) = check_set_expr(&q.body) {
            self.refused = Some(e);
            return ControlFlow::Break(());
        }
        if !q.locks.is_empty()
            || q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            self.refused = Some("unsupported query clause".into());
            return ControlFlow::Break(());
        }
        if let Some(w) = &q.with {
            for cte in &w.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        let ok = match t {
            TableFactor::Table { args, .. } => args.is_none(),
            TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::UNNEST { .. } => true,
            _ => false,
        };
        if !ok {
            self.refused = Some("table functions are not allowed".into());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        match single_ident(r) {
            Some(n) => self.relations.push(n),
            None => {
                self.refused = Some(format!("unknown table {r}"));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// Refuses anything but a single read-only query over the hunting tables.
pub fn check_read_only(sql: &str) -> Result<(), HuntError> {
    // A current sqlparser first: DataFusion's own (0.62) is exponential on some garbage.
    dunes_detect::check_syntax(sql)
        .map_err(|e| HuntError::Refused(format!("cannot parse: {e}")))?;
    let stmts = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| HuntError::Refused(format!("cannot parse: {e}")))?;
    let [stmt] = stmts.as_slice() else {
        return Err(HuntError::Refused(
            "exactly one statement is required".into(),
        ));
    };
    let mut g = Guard {
        statements: 0,
        ctes: HashSet::new(),
        relations: Vec::new(),
        refused: None,
    };
    let _ = stmt.visit(&mut g);
    if let Some(r) = g.refused {
        return Err(HuntError::Refused(r));
    }
    for r in &g.relations {
        if !HUNT_TABLES.contains(&r.as_str()) && !g.ctes.contains(r) {
            return Err(HuntError::Refused(format!(
                "unknown table {r} (events, tool_defs, maml_docs, incidents)"
            )));
        }
    }
    Ok(())
}

/// The result of a hunting query.
pub struct HuntResult {
    pub columns: Vec<String>,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub truncated: bool,
    pub elapsed: Duration,
}

fn failed(e: impl std::fmt::Display) -> HuntError {
    HuntError::Failed(e.to_string())
}

/// Runs a checked query in a fresh session over the history store and the incident store.
pub async fn run(
    sql: &str,
    data_dir: &Path,
    incidents: &IncidentStore,
    cfg: &HuntConfig,
    max_rows: usize,
) -> Result<HuntResult, HuntError> {
    if sql.len() > cfg.max_sql_bytes {
        return Err(HuntError::Refused(format!(
            "SQL longer than {} bytes",
            cfg.max_sql_bytes
        )));
    }
    check_read_only(sql)?;
    let started = Instant::now();
    let limit = max_rows.min(cfg.max_rows).max(1);
    let work = async {
        let ctx = SessionContext::new_with_config(
            SessionConfig::new()
                .with_information_schema(false)
                .with_target_partitions(2),
        );
        dunes_detect::history::register_history(&ctx, data_dir)
            .await
            .map_err(failed)?;
        ctx.register_table("incidents", Arc::new(incidents_table(incidents)?))
            .map_err(failed)?;
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(sql, opts).await.map_err(failed)?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let df = df.limit(0, Some(limit + 1)).map_err(failed)?;
        let batches = df.collect().await.map_err(failed)?;
        Ok::<_, HuntError>((columns, batches))
    };
    let (columns, mut batches) = tokio::time::timeout(Duration::from_millis(cfg.timeout_ms), work)
        .await
        .map_err(|_| HuntError::Timeout(cfg.timeout_ms))??;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let truncated = total > limit;
    if truncated {
        let mut keep = limit;
        let mut out = Vec::new();
        for b in batches {
            if keep == 0 {
                break;
            }
            let n = b.num_rows().min(keep);
            out.push(b.slice(0, n));
            keep -= n;
        }
        batches = out;
    }
    Ok(HuntResult {
        columns,
        rows: total.min(limit),
        batches,
        truncated,
        elapsed: started.elapsed(),
    })
}

/// The `incidents` table: one row per incident (current state), nested fields as JSON text.
fn incidents_table(store: &IncidentStore) -> Result<MemTable, HuntError> {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("incident_id", DataType::Utf8, false),
        Field::new("rule_id", DataType::Utf8, false),
        Field::new("level", DataType::Int64, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("server_id", DataType::Utf8, true),
        Field::new("first_ts", ts(), false),
        Field::new("last_ts", ts(), false),
        Field::new("detected_at", ts(), false),
        Field::new("match_count", DataType::Int64, false),
        Field::new("event_count", DataType::Int64, false),
        Field::new("tags", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, false),
    ]));
    let rows: Vec<serde_json::Value> = store
        .list(&IncidentFilter::default())
        .into_iter()
        .map(|i| {
            serde_json::json!({
                "incident_id": i.incident_id,
                "rule_id": i.rule_id,
                "level": i.level.as_u8(),
                "severity": i.severity.to_string(),
                "status": i.status.to_string(),
                "title": i.title,
                "session_id": i.session_id,
                "server_id": i.server_id,
                "first_ts": i.first_ts.to_rfc3339(),
                "last_ts": i.last_ts.to_rfc3339(),
                "detected_at": i.detected_at.to_rfc3339(),
                "match_count": i.match_count,
                "event_count": i.event_ids.len(),
                "tags": i.tags.join(","),
                "entity": serde_json::to_string(&i.entity).unwrap_or_default(),
            })
        })
        .collect();
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema.clone())
        .build_decoder()
        .map_err(failed)?;
    decoder.serialize(&rows).map_err(failed)?;
    let batch = decoder
        .flush()
        .map_err(failed)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    MemTable::try_new(schema, vec![vec![batch]]).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_queries_over_known_tables_pass() {
        for ok in [
            "SELECT count(*) FROM events",
            "select e.server_id, count(*) from events e join tool_defs t on e.event_id = t.event_id group by 1",
            "WITH x AS (SELECT * FROM incidents WHERE level = 3) SELECT * FROM x",
            "SELECT * FROM (SELECT tool_name FROM events) s UNION ALL SELECT tool_name FROM tool_defs",
            "SELECT 1",
            "SELECT * FROM events WHERE event_id IN (SELECT event_id FROM tool_defs)",
        ] {
            assert_eq!(check_read_only(ok), Ok(()), "{ok}");
        }
        for bad in [
            "DROP TABLE events",
            "DELETE FROM events",
            "INSERT INTO events SELECT * FROM events",
            "UPDATE incidents SET status = 'resolved'",
            "CREATE TABLE x AS SELECT * FROM events",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "COPY events TO '/tmp/x.csv'",
            "COPY (SELECT 1) TO '/tmp/x.parquet'",
            "SELECT * FROM read_parquet('/etc/passwd')",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM \"/etc/passwd\"",
            "SELECT * FROM generate_series(1, 10)",
            "SELECT * INTO newtab FROM events",
            "SELECT 1; DROP TABLE events",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM datafusion.public.events",
            "SELECT * FROM ledger",
            "WITH x AS (DELETE FROM events RETURNING *) SELECT * FROM x",
            "PREPARE p AS SELECT 1",
            "",
        ] {
            assert!(
                matches!(check_read_only(bad), Err(HuntError::Refused(_))),
                "not refused: {bad}"
            );
        }
    }
}
