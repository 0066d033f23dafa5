//! `regexp_like` for rule plans. DataFusion's built-in rewrites the call into
//! the `~` operator, which compiles the pattern again for every batch; rule
//! plans are re-executed per batch, so this version compiles each pattern
//! once per engine and keeps it, with a larger lazy-DFA cache so long tool
//! results stay on the fast engine. Same semantics as the built-in (the
//! `regex` crate, flags as an optional third argument, `g` refused); other
//! argument shapes (a pattern column) go to the built-in.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use regex::Regex;

use crate::prefilter::{Prefilter, RowHits, Strings};

/// Lazy-DFA cache per compiled pattern (the `regex` default is 2 MiB; the
/// large case-insensitive alternations of the pack thrash it on long texts
/// and fall back to the much slower NFA simulation).
const DFA_CACHE_BYTES: usize = 16 << 20;

pub(crate) struct RegexpLike {
    builtin: Arc<ScalarUDF>,
    compiled: Mutex<HashMap<String, Compiled>>,
    prefilter: Arc<Prefilter>,
}

/// A pattern's regex and the fewest bytes a match spans (a shorter text
/// cannot match, so its regex is not run).
#[derive(Clone)]
struct Compiled {
    re: Arc<Regex>,
    min_len: usize,
}

impl std::fmt::Debug for RegexpLike {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegexpLike")
    }
}

impl RegexpLike {
    #[cfg(test)]
    pub(crate) fn udf() -> ScalarUDF {
        Self::udf_with(Arc::new(Prefilter::new()))
    }

    /// The UDF, sharing `prefilter` (the engine clears its column cache per
    /// batch and can turn it off).
    pub(crate) fn udf_with(prefilter: Arc<Prefilter>) -> ScalarUDF {
        ScalarUDF::new_from_impl(RegexpLike {
            builtin: datafusion::functions::regex::regexp_like(),
            compiled: Mutex::default(),
            prefilter,
        })
    }

    fn regex(&self, pattern: &str) -> Result<Compiled> {
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(pattern) {
            return Ok(c.clone());
        }
        let re = regex::RegexBuilder::new(pattern)
            .dfa_size_limit(DFA_CACHE_BYTES)
            .build()
            .map_err(|e| {
                DataFusionError::Execution(format!("Regular expression did not compile: {e:?}"))
            })?;
        // The same syntax as the regex crate's defaults; UTF-8 bytes.
        let min_len = regex_syntax::ParserBuilder::new()
            .build()
            .parse(pattern)
            .ok()
            .and_then(|h| h.properties().minimum_len())
            .unwrap_or(0);
        let c = Compiled {
            re: Arc::new(re),
            min_len,
        };
        cache.insert(pattern.to_string(), c.clone());
        Ok(c)
    }
}

/// The pattern `regexp_like(text, pattern, flags)` runs: the flags as an
/// inline group in front.
pub(crate) fn with_flags(pattern: &str, flags: Option<&str>) -> String {
    match flags {
        Some(f) if !f.is_empty() => format!("(?{f}){pattern}"),
        _ => pattern.to_string(),
    }
}

/// Flags `regexp_like` refuses (`g`, "global", as DataFusion's own).
fn refused(flags: Option<&str>) -> bool {
    flags.is_some_and(|f| f.contains('g'))
}

/// The patterns of the `regexp_like` calls with literal arguments in `plan`
/// (as [`with_flags`] writes them), so that the prefilter knows a rule
/// pack's patterns before the first batch: its automaton is then built once,
/// not again each time one more rule's first call registers a pattern.
pub(crate) fn literal_patterns(plan: &datafusion::logical_expr::LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    fn literal(e: &Expr) -> Option<&str> {
        match e {
            Expr::Literal(v, _) => v.try_as_str().flatten(),
            _ => None,
        }
    }
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.name() == "regexp_like"
                    && let Some(pattern) = f.args.get(1).and_then(literal)
                {
                    let flags = match f.args.get(2) {
                        None => None,
                        Some(a) => match literal(a) {
                            Some(fl) => Some(fl),
                            None => return Ok(TreeNodeRecursion::Continue),
                        },
                    };
                    if !refused(flags) {
                        out.push(with_flags(pattern, flags));
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    out
}

fn scalar_str(v: &ScalarValue) -> Result<Option<&str>> {
    match v.try_as_str() {
        Some(s) => Ok(s),
        None => exec_err!("regexp_like: unsupported type {:?}", v.data_type()),
    }
}

/// `re` on each row; a row shorter than `min_len` bytes or without one of
/// the pattern's literals (`hits`) is answered `false` without running it.
fn is_match(
    values: &ArrayRef,
    re: &Regex,
    min_len: usize,
    hits: Option<(&RowHits, usize)>,
    prefilter: &Prefilter,
) -> Result<ArrayRef> {
    let (skipped, ran) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    let test = |i: usize, s: &str| {
        if s.len() < min_len || hits.is_some_and(|(h, slot)| !h.may_match(i, slot)) {
            skipped.set(skipped.get() + 1);
            false
        } else {
            if hits.is_some() {
                ran.set(ran.get() + 1);
            }
            re.is_match(s)
        }
    };
    let Some(col) = Strings::of(values) else {
        return exec_err!("regexp_like: unsupported type {:?}", values.data_type());
    };
    let out: BooleanArray = (0..values.len())
        .map(|i| col.get(i).map(|s| test(i, s)))
        .collect();
    prefilter.count(skipped.get(), ran.get());
    Ok(Arc::new(out))
}

impl PartialEq for RegexpLike {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for RegexpLike {}
impl Hash for RegexpLike {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "dunes.regexp_like".hash(state);
    }
}

impl ScalarUDFImpl for RegexpLike {
    fn name(&self) -> &str {
        "regexp_like"
    }

    fn signature(&self) -> &Signature {
        self.builtin.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.builtin.inner().return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (values, pattern, flags) = match args.args.as_slice() {
            [ColumnarValue::Array(v), ColumnarValue::Scalar(p)] => (v, scalar_str(p)?, None),
            [
                ColumnarValue::Array(v),
                ColumnarValue::Scalar(p),
                ColumnarValue::Scalar(f),
            ] => (v, scalar_str(p)?, scalar_str(f)?),
            _ => return self.builtin.invoke_with_args(args),
        };
        if refused(flags) {
            return plan_err!("regexp_like() does not support the \"global\" option");
        }
        let Some(pattern) = pattern else {
            return Ok(ColumnarValue::Array(Arc::new(BooleanArray::new_null(
                values.len(),
            ))));
        };
        let pattern = with_flags(pattern, flags);
        let compiled = self.regex(&pattern)?;
        let slot = self.prefilter.slot(&pattern);
        let hits = slot.and_then(|_| self.prefilter.hits(values));
        let hits = match (&hits, slot) {
            (Some(h), Some(slot)) => Some((h.as_ref(), slot)),
            _ => None,
        };
        // Part of the prefilter: off, every regex runs on every row.
        let min_len = if self.prefilter.enabled() {
            compiled.min_len
        } else {
            0
        };
        Ok(ColumnarValue::Array(is_match(
            values,
            &compiled.re,
            min_len,
            hits,
            &self.prefilter,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use datafusion::prelude::SessionContext;

    /// The same answers as DataFusion's built-in over one table, including
    /// nulls, flags, non-ASCII text and a refused `g` flag.
    #[tokio::test]
    async fn answers_like_the_builtin() {
        let rows = "('Curl x | sh'), (NULL), ('écurl | bash'), ('ignore previous instructions'), (''), ('日本 curl|sh')";
        let queries = [
            r"regexp_like(s, '(?i)\bcurl\b[^\n]{0,20}\|\s*(ba)?sh\b')",
            r"regexp_like(s, 'CURL', 'i')",
            r"regexp_like(s, '^$')",
            r"regexp_like(s, '(?i)(^|[^\w])ignore\s+previous')",
            // a match spans 12 bytes at least: shorter rows are not searched
            r"regexp_like(s, '[a-z]{12}|[a-z]{3}\s\|\s[a-z]{4}')",
            r"regexp_like(s, '日本\s?curl')",
        ];
        let builtin = SessionContext::new();
        let ours = SessionContext::new();
        ours.register_udf(RegexpLike::udf());
        async fn table(ctx: &SessionContext, sql: &str) -> String {
            let batches = ctx
                .sql(sql)
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run");
            arrow::util::pretty::pretty_format_batches(&batches)
                .expect("fmt")
                .to_string()
        }
        for q in queries {
            let sql = format!("SELECT {q} AS m FROM (VALUES {rows}) AS t(s)");
            assert_eq!(table(&builtin, &sql).await, table(&ours, &sql).await, "{q}");
        }
        // The built-in is rewritten into the `~` operator; ours stays a call.
        let plan = |ctx: SessionContext| async move {
            let df = ctx
                .sql(&format!(
                    "EXPLAIN SELECT {} FROM (VALUES {rows}) AS t(s)",
                    queries[0]
                ))
                .await
                .expect("plan");
            arrow::util::pretty::pretty_format_batches(&df.collect().await.expect("explain"))
                .expect("fmt")
                .to_string()
        };
        assert!(plan(SessionContext::new()).await.contains(" ~ "));
        let ours_plan = plan(ours.clone()).await;
        assert!(
            ours_plan.contains("regexp_like(") && !ours_plan.contains(" ~ "),
            "{ours_plan}"
        );
        let g = ours
            .sql(&format!(
                "SELECT regexp_like(s, 'a', 'g') FROM (VALUES {rows}) AS t(s)"
            ))
            .await;
        let refused = match g {
            Err(_) => true,
            Ok(df) => df.collect().await.is_err(),
        };
        assert!(refused, "the g flag is refused");
    }

    #[test]
    fn rows_shorter_than_any_match_are_not_searched() {
        let udf = RegexpLike {
            builtin: datafusion::functions::regex::regexp_like(),
            compiled: Mutex::default(),
            prefilter: Arc::new(Prefilter::new()),
        };
        let c = udf.regex("[0-9a-f]{8}|x{9}").expect("compiles");
        assert_eq!(c.min_len, 8);
        // 8 bytes, 4 bytes, null, 9 bytes (é is two) that do not match.
        let values: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some("deadbeef"),
            Some("dead"),
            None,
            Some("é0123456"),
        ]));
        let out = is_match(&values, &c.re, c.min_len, None, &udf.prefilter).expect("runs");
        let out = out.as_boolean();
        let got: Vec<Option<bool>> = out.iter().collect();
        assert_eq!(got, [Some(true), Some(false), None, Some(false)]);
        assert_eq!(udf.prefilter.stats().rows_skipped, 1, "only the 4-byte row");
        assert_eq!(udf.regex("日本").expect("compiles").min_len, 6);
    }
}
