//! The event history store: normalised `events`, `tool_defs` and `maml_docs` batches persisted as
//! compressed Parquet ([`HistoryCompression`]) under `<data_dir>/history/<table>/date=YYYY-MM-DD/`, partitioned
//! by event day, with a retention in days. DataFusion reads it back for hunting
//! ([`register_history`]) and backfill.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::datasource::MemTable;
use datafusion::parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use datafusion::parquet::basic::{Compression, Type as PhysicalType, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::DetectError;

/// The tables kept in the history store.
pub const HISTORY_TABLES: [&str; 3] = ["events", "tool_defs", "maml_docs"];

/// Free-text and digest columns: nearly every value is distinct, so a
/// dictionary only costs (every value is interned, then the writer falls
/// back to plain encoding). Measured in `docs/benchmarks.md`. (Their
/// statistics are off with those of every text column, below.)
const FREE_TEXT_COLUMNS: [&str; 16] = [
    "event_id",
    "user_agent",
    "extra",
    "args_sha256",
    "args_preview",
    "args_text",
    "args_decoded",
    "error_message",
    "result_preview",
    "result_text",
    "def_sha256",
    "desc_sha256",
    "schema_sha256",
    "desc_preview",
    "description",
    "input_schema",
];

/// Text and list columns that keep min/max statistics: the server a
/// batch's rows came from can prune files in a hunt; the other text columns
/// (ids, principals, methods, URLs, free text) span nearly the whole range
/// in every file of a batch, so their statistics cost a string comparison
/// per value and prune nothing. Numeric, boolean and time columns keep theirs (`ts`
/// prunes every time-bounded hunt), and they are cheap.
const TEXT_COLUMNS_WITH_STATISTICS: [&str; 1] = ["server_id"];

/// Values the Parquet writer takes at a time before it checks the page
/// size (its default is 1,024): a history file is one micro-batch (8,192
/// rows by default), so its columns are written in one go, without a page
/// cut per 1,024 rows. −5 to −11 % of the writer's time in
/// `benches/history.rs` (docs/benchmarks.md).
const WRITE_BATCH_ROWS: usize = 8192;

/// Parquet settings of history files: the configured codec; values written
/// [`WRITE_BATCH_ROWS`] at a time; no dictionary for
/// [`FREE_TEXT_COLUMNS`]; no statistics for the text and list columns of
/// the history tables but [`TEXT_COLUMNS_WITH_STATISTICS`].
fn writer_properties(codec: HistoryCompression) -> WriterProperties {
    let codec = match codec {
        HistoryCompression::Snappy => Compression::SNAPPY,
        HistoryCompression::Lz4 => Compression::LZ4_RAW,
        HistoryCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
    };
    let mut b = WriterProperties::builder()
        .set_compression(codec)
        .set_write_batch_size(WRITE_BATCH_ROWS);
    for c in FREE_TEXT_COLUMNS {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    let schemas = [
        dunes_ingest::schema::events_schema(),
        dunes_ingest::schema::tool_defs_schema(),
        dunes_ingest::schema::maml_docs_schema(),
    ];
    for schema in schemas {
        // Leaf columns as Parquet names them: a list's items and a map's
        // keys and values are leaves under the column's name.
        let Ok(descr) = ArrowSchemaConverter::new().convert(&schema) else {
            continue;
        };
        for leaf in descr.columns() {
            let top = leaf.path().parts().first().map(String::as_str);
            if leaf.physical_type() == PhysicalType::BYTE_ARRAY
                && !top.is_some_and(|t| TEXT_COLUMNS_WITH_STATISTICS.contains(&t))
            {
                b = b.set_column_statistics_enabled(leaf.path().clone(), EnabledStatistics::None);
            }
        }
    }
    b.build()
}

/// `[history]` settings.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Persist normalised events as Parquet (needed for hunting and backfill).
    pub enabled: bool,
    /// Day partitions older than this many days are deleted (0 = keep forever).
    pub retention_days: u32,
    /// Parquet compression of new history files.
    pub compression: HistoryCompression,
}

/// `[history] compression`: the codec of new history files (files already
/// written keep theirs; readers handle all three).
///
/// Snappy is the default: ZSTD files are about a third smaller, but ZSTD
/// took ~8 % of a replay's CPU samples (a compressor and a decompressor
/// context per column chunk, then the compression) against ~3 % for Snappy;
/// `docs/benchmarks.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryCompression {
    #[default]
    Snappy,
    Lz4,
    Zstd,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            retention_days: 30,
            compression: HistoryCompression::default(),
        }
    }
}

/// `<data_dir>/history`
pub fn history_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("history")
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DetectError + '_ {
    move |e| DetectError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn pq_err(e: datafusion::parquet::errors::ParquetError) -> DetectError {
    DetectError::InvalidValue(format!("parquet: {e}"))
}

/// Writes batches into day partitions.
pub struct HistoryWriter {
    dir: PathBuf,
    cfg: HistoryConfig,
    seq: AtomicU64,
    last_retention_day: Option<NaiveDate>,
    props: WriterProperties,
}

impl HistoryWriter {
    pub fn open(data_dir: &Path, cfg: HistoryConfig) -> Result<Self, DetectError> {
        let dir = history_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let props = writer_properties(cfg.compression);
        let mut w = HistoryWriter {
            dir,
            cfg,
            seq: AtomicU64::new(0),
            last_retention_day: None,
            props,
        };
        w.apply_retention(Utc::now())?;
        Ok(w)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Persists one micro-batch of `table` (`events` or `tool_defs`), split by event day.
    /// Files appear atomically (written as `.tmp`, then renamed).
    pub fn write(&mut self, table: &str, batch: &RecordBatch) -> Result<(), DetectError> {
        self.write_keyed(table, batch, None)
    }

    /// [`HistoryWriter::write`], naming the files after `key` (the batch's
    /// first ledger index) when given: writing the same batch again (it is
    /// re-detected after a crash) replaces its files instead of adding rows.
    pub fn write_keyed(
        &mut self,
        table: &str,
        batch: &RecordBatch,
        key: Option<u64>,
    ) -> Result<(), DetectError> {
        if !self.cfg.enabled || batch.num_rows() == 0 {
            return Ok(());
        }
        let now = Utc::now();
        self.apply_retention(now)?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        for (day, part) in split_by_day(batch)? {
            let dir = self.dir.join(table).join(format!("date={day}"));
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let name = match key {
                Some(k) => format!("part-ledger-{k:020}.parquet"),
                None => format!("part-{:016x}-{seq:06}.parquet", now.timestamp_micros()),
            };
            let tmp = dir.join(format!("{name}.tmp"));
            let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            let mut w =
                ArrowWriter::try_new(f, part.schema(), Some(self.props.clone())).map_err(pq_err)?;
            w.write(&part).map_err(pq_err)?;
            w.close().map_err(pq_err)?;
            let path = dir.join(name);
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Deletes day partitions older than the retention (at most once per day).
    pub fn apply_retention(&mut self, now: DateTime<Utc>) -> Result<(), DetectError> {
        let today = now.date_naive();
        if self.cfg.retention_days == 0 || self.last_retention_day == Some(today) {
            return Ok(());
        }
        self.last_retention_day = Some(today);
        let oldest = today - chrono::Duration::days(i64::from(self.cfg.retention_days));
        for table in HISTORY_TABLES {
            let tdir = self.dir.join(table);
            let Ok(rd) = std::fs::read_dir(&tdir) else {
                continue;
            };
            for ent in rd.flatten() {
                let name = ent.file_name();
                let Some(day) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("date="))
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                else {
                    continue;
                };
                if day < oldest {
                    let p = ent.path();
                    std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
                    tracing::info!(partition = %p.display(), "history retention: partition deleted");
                }
            }
        }
        Ok(())
    }
}

/// Splits a batch by the UTC day of its `ts` column.
fn split_by_day(batch: &RecordBatch) -> Result<BTreeMap<NaiveDate, RecordBatch>, DetectError> {
    let idx = batch
        .schema()
        .index_of("ts")
        .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    let ts = arrow::compute::cast(
        batch.column(idx),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
    )
    .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    let ts = ts
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| DetectError::InvalidValue("ts is not a timestamp".into()))?;
    let day_of = |i: usize| {
        let us = if ts.is_null(i) { 0 } else { ts.value(i) };
        crate::incident::micros_to_dt(us).date_naive()
    };
    let mut days: Vec<NaiveDate> = (0..ts.len()).map(day_of).collect();
    let mut distinct = days.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut out = BTreeMap::new();
    if distinct.len() == 1 {
        out.insert(distinct[0], batch.clone());
        return Ok(out);
    }
    for d in distinct {
        let mask = BooleanArray::from(days.iter().map(|x| *x == d).collect::<Vec<_>>());
        let part = filter_record_batch(batch, &mask)
            .map_err(|e| DetectError::InvalidValue(e.to_string()))?;
        out.insert(d, part);
    }
    days.clear();
    Ok(out)
}

/// Registers `events`, `tool_defs` and `maml_docs` over the history store (an empty table of the right
/// schema when nothing is stored yet). The `date` partition column is not exposed: filter
/// on `ts`.
pub async fn register_history(ctx: &SessionContext, data_dir: &Path) -> Result<(), DetectError> {
    let dir = history_dir(data_dir);
    let tables: [(&str, SchemaRef); 3] = [
        ("events", dunes_ingest::schema::events_schema()),
        ("tool_defs", dunes_ingest::schema::tool_defs_schema()),
        ("maml_docs", dunes_ingest::schema::maml_docs_schema()),
    ];
    for (name, schema) in tables {
        let tdir = dir.join(name);
        let has_files = has_parquet(&tdir);
        let df_err = |e: datafusion::error::DataFusionError| DetectError::Execution {
            rule: format!("history table {name}"),
            message: e.to_string(),
        };
        if has_files {
            let path = format!("{}/", tdir.display());
            let opts = ParquetReadOptions::default().schema(&schema);
            ctx.register_parquet(name, &path, opts)
                .await
                .map_err(df_err)?;
        } else {
            let t = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(df_err)?;
            ctx.register_table(name, Arc::new(t)).map_err(df_err)?;
        }
    }
    Ok(())
}

/// The `events` Parquet files of a history store, in the order they were
/// written (file names start with the write time, then the day partition),
/// so that reading them back replays the stream as the pipeline saw it.
/// `path` may be a data dir, its `history` dir, the `history/events` dir
/// or one `date=` partition.
pub fn event_files(path: &Path) -> Result<Vec<PathBuf>, DetectError> {
    let candidates = [
        history_dir(path).join("events"),
        path.join("events"),
        path.to_path_buf(),
    ];
    for dir in candidates.iter().filter(|d| d.is_dir()) {
        let mut files = Vec::new();
        collect_parquet(dir, &mut files)?;
        if !files.is_empty() {
            files.sort_by(|a, b| {
                a.file_name()
                    .cmp(&b.file_name())
                    .then_with(|| a.parent().cmp(&b.parent()))
            });
            return Ok(files);
        }
    }
    Err(DetectError::InvalidValue(format!(
        "{}: no event history (Parquet files) found",
        path.display()
    )))
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DetectError> {
    for ent in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = ent.map_err(io_err(dir))?.path();
        if p.is_dir() {
            collect_parquet(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads the record batches of one history Parquet file.
pub fn read_batches(file: &Path) -> Result<Vec<RecordBatch>, DetectError> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let f = std::fs::File::open(file).map_err(io_err(file))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| DetectError::InvalidValue(format!("{}: parquet: {e}", file.display())))?;
    reader
        .map(|b| {
            b.map_err(|e| DetectError::InvalidValue(format!("{}: parquet: {e}", file.display())))
        })
        .collect()
}

fn has_parquet(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_parquet(&p)
        } else {
            p.extension().is_some_and(|x| x == "parquet")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    fn batch() -> RecordBatch {
        let ts = TimestampMicrosecondArray::from(vec![
            1_763_625_600_000_000i64, // 2025-11-20
            1_763_625_600_000_001,
            1_763_712_000_000_000, // the next day
        ])
        .with_timezone("UTC");
        let text = StringArray::from(vec![Some("cat /etc/passwd"), None, Some("ünïcode")]);
        RecordBatch::try_from_iter([
            ("ts", Arc::new(ts) as ArrayRef),
            ("args_text", Arc::new(text) as ArrayRef),
        ])
        .expect("batch")
    }

    /// Each codec writes files in that codec, read back to the same rows,
    /// one file per event day.
    #[test]
    fn every_codec_round_trips_and_is_the_one_written() {
        for (codec, want) in [
            (HistoryCompression::Snappy, "SNAPPY"),
            (HistoryCompression::Lz4, "LZ4_RAW"),
            (HistoryCompression::Zstd, "ZSTD"),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = HistoryConfig {
                enabled: true,
                retention_days: 0,
                compression: codec,
            };
            let mut w = HistoryWriter::open(dir.path(), cfg).expect("open");
            let b = batch();
            w.write_keyed("events", &b, Some(7)).expect("write");
            let files = event_files(dir.path()).expect("files");
            assert_eq!(files.len(), 2, "{codec:?}: one file per day");
            let mut rows = Vec::new();
            for f in &files {
                let r = SerializedFileReader::new(std::fs::File::open(f).expect("open"))
                    .expect("parquet");
                for rg in r.metadata().row_groups() {
                    for c in rg.columns() {
                        assert!(
                            c.compression().to_string().starts_with(want),
                            "{codec:?}: {} is {}",
                            c.column_path(),
                            c.compression()
                        );
                    }
                }
                rows.extend(read_batches(f).expect("read"));
            }
            let back = arrow::compute::concat_batches(&b.schema(), &rows).expect("concat");
            assert_eq!(back, b, "{codec:?}");
        }
    }

    /// Min/max statistics only where they can prune a file: time, numbers,
    /// the server; not ids, lists or free text.
    #[test]
    fn statistics_are_kept_for_time_numbers_and_server_only() {
        use arrow::array::{Int64Array, ListBuilder, StringBuilder};
        let ts =
            TimestampMicrosecondArray::from(vec![1_763_625_600_000_000i64, 1_763_625_600_000_001])
                .with_timezone("UTC");
        let mut keys = ListBuilder::new(StringBuilder::new());
        keys.append_value([Some("path")]);
        keys.append_value([Some("query"), Some("limit")]);
        let b = RecordBatch::try_from_iter([
            ("ts", Arc::new(ts) as ArrayRef),
            (
                "server_id",
                Arc::new(StringArray::from(vec!["a@x", "b@x"])) as ArrayRef,
            ),
            (
                "session_id",
                Arc::new(StringArray::from(vec!["s1", "s2"])) as ArrayRef,
            ),
            (
                "args_bytes",
                Arc::new(Int64Array::from(vec![10, 20])) as ArrayRef,
            ),
            ("args_keys", Arc::new(keys.finish()) as ArrayRef),
            (
                "args_text",
                Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            ),
        ])
        .expect("batch");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = HistoryWriter::open(dir.path(), HistoryConfig::default()).expect("open");
        w.write_keyed("events", &b, Some(1)).expect("write");
        let files = event_files(dir.path()).expect("files");
        let r = SerializedFileReader::new(std::fs::File::open(&files[0]).expect("open"))
            .expect("parquet");
        let mut with_stats = Vec::new();
        for c in r.metadata().row_group(0).columns() {
            if c.statistics().is_some_and(|s| s.min_bytes_opt().is_some()) {
                with_stats.push(c.column_path().string());
            }
        }
        assert_eq!(with_stats, ["ts", "server_id", "args_bytes"]);
        let back =
            arrow::compute::concat_batches(&b.schema(), &read_batches(&files[0]).expect("read"))
                .expect("concat");
        assert_eq!(back, b);
    }

    #[test]
    fn the_codec_is_named_in_lower_case_and_unknown_ones_are_refused() {
        let cfg: HistoryConfig = serde_json::from_str(r#"{"compression": "zstd"}"#).expect("zstd");
        assert_eq!(cfg.compression, HistoryCompression::Zstd);
        assert_eq!(
            serde_json::from_str::<HistoryConfig>("{}")
                .expect("default")
                .compression,
            HistoryCompression::Snappy
        );
        let err = serde_json::from_str::<HistoryConfig>(r#"{"compression": "brotli"}"#)
            .expect_err("brotli is not offered");
        assert!(
            err.to_string().contains("unknown variant `brotli`"),
            "{err}"
        );
    }
}
