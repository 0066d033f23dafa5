//! Sigma rules in: detection and correlation rules parsed by `rsigma-parser`
//! and compiled to native rules — one SQL query planned on DataFusion plus
//! the same threshold / sequence state native rules use. One engine, not a
//! second evaluator. `logsource: product: mcp` and its field names are in
//! [`fields`] and docs/sigma.md.

mod compile;
pub(crate) mod fields;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rsigma_parser::{
    ConditionExpr, ConditionOperator, CorrelationCondition, CorrelationRule, CorrelationType,
    SigmaCollection, SigmaRule, WindowMode,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::DetectError;
use crate::rule::{
    Aggregate, Level, LoadedRule, ResponseAction, RuleConfig, RuleKind, RuleTest, SequenceSpec,
    Severity, SigmaOrigin, ThresholdSpec, WindowSpec, WindowType,
};
use fields::Table;

/// A SQL string literal.
pub(crate) fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// True when the file is a Sigma rule file (a top-level `detection:` or
/// `correlation:` key), not a native rule (whose keys never include them).
pub fn is_sigma(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes)
        .lines()
        .any(|l| l.starts_with("detection:") || l.starts_with("correlation:"))
}

/// What became of one Sigma document.
#[derive(Debug)]
pub struct Outcome {
    pub file: PathBuf,
    /// The Sigma title (or the file name when the file does not parse).
    pub title: String,
    /// `Ok(Some)` converted; `Ok(None)` only an input of a correlation that
    /// does not `generate` it; `Err` refused with the construct and reason.
    pub result: Result<Option<LoadedRule>, DetectError>,
}

/// Dunes' own keys in a Sigma rule (`dunes:` mapping), all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DunesExt {
    level: Option<Level>,
    response: Option<ResponseAction>,
    entity: Option<Vec<String>>,
    suppress: Option<String>,
    lateness: Option<String>,
    twin: Option<String>,
    /// Extra output columns (evidence) besides the base ones and `fields`.
    #[serde(default)]
    evidence: Vec<String>,
    #[serde(default)]
    tests: Vec<RuleTest>,
}

fn ext<V: serde::Serialize>(attrs: &HashMap<String, V>) -> Result<DunesExt, (String, String)> {
    let Some(v) = attrs.get("dunes") else {
        return Ok(DunesExt::default());
    };
    let json = serde_json::to_value(v).map_err(|e| ("dunes".to_string(), e.to_string()))?;
    serde_json::from_value(json).map_err(|e| ("dunes".to_string(), e.to_string()))
}

/// A detection rule compiled to its table and boolean condition.
struct Compiled {
    table: Table,
    condition: String,
}

struct Doc<'a> {
    file: &'a Path,
    sha256: String,
}

fn refused(file: &Path, rule: &str, construct: String, reason: String) -> DetectError {
    DetectError::Sigma {
        file: file.display().to_string(),
        rule: rule.to_string(),
        construct,
        reason,
    }
}

/// Converts Sigma files (path, bytes) together, so correlations may name
/// rules of any of them. One outcome per Sigma document.
pub fn convert(files: &[(PathBuf, Vec<u8>)]) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut rules: Vec<(Doc, SigmaRule)> = Vec::new();
    let mut correlations: Vec<(Doc, CorrelationRule)> = Vec::new();
    for (path, bytes) in files {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                out.push(file_error(path, format!("not valid UTF-8: {e}")));
                continue;
            }
        };
        if let Err((line, reason)) = crate::rule::flow_nesting(text) {
            out.push(file_error(path, format!("line {line}: {reason}")));
            continue;
        }
        let coll: SigmaCollection = match rsigma_parser::parse_sigma_yaml(text) {
            Ok(c) => c,
            Err(e) => {
                out.push(file_error(path, format!("Sigma YAML: {e}")));
                continue;
            }
        };
        for e in &coll.errors {
            out.push(file_error(path, format!("Sigma document: {e}")));
        }
        for f in &coll.filters {
            out.push(Outcome {
                file: path.clone(),
                title: f.title.clone(),
                result: Err(refused(
                    path,
                    &f.title,
                    "filter rule".into(),
                    "Sigma filters are not supported; add the exclusion to the rule".into(),
                )),
            });
        }
        for r in coll.rules {
            rules.push((
                Doc {
                    file: path,
                    sha256: sha256.clone(),
                },
                r,
            ));
        }
        for c in coll.correlations {
            correlations.push((
                Doc {
                    file: path,
                    sha256: sha256.clone(),
                },
                c,
            ));
        }
    }
    // Rules named by a correlation that does not generate them.
    let mut silent: Vec<bool> = vec![false; rules.len()];
    // A reference must name exactly one rule (by id or name).
    let lookup = |name: &str| {
        let mut hits = rules
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.id.as_deref() == Some(name) || r.name.as_deref() == Some(name));
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    };
    for (_, c) in &correlations {
        if !c.generate {
            for name in &c.rules {
                if let Some(i) = lookup(name) {
                    silent[i] = true;
                }
            }
        }
    }
    let compiled: Vec<Result<Compiled, (String, String)>> =
        rules.iter().map(|(_, r)| compile_rule(r)).collect();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (i, (doc, rule)) in rules.iter().enumerate() {
        let result = match &compiled[i] {
            Err((construct, reason)) => Err(refused(
                doc.file,
                &rule.title,
                construct.clone(),
                reason.clone(),
            )),
            Ok(_) if silent[i] => Ok(None),
            Ok(c) => rule_config(doc, rule, c, &mut ids)
                .map_err(|(construct, reason)| refused(doc.file, &rule.title, construct, reason))
                .and_then(|cfg| LoadedRule::from_sigma(doc.file, cfg, doc.sha256.clone()))
                .map(Some),
        };
        out.push(Outcome {
            file: doc.file.to_path_buf(),
            title: rule.title.clone(),
            result,
        });
    }
    for (doc, c) in &correlations {
        let result = correlation_config(doc, c, &rules, &compiled, &lookup, &mut ids)
            .map_err(|(construct, reason)| refused(doc.file, &c.title, construct, reason))
            .and_then(|cfg| LoadedRule::from_sigma(doc.file, cfg, doc.sha256.clone()))
            .map(Some);
        out.push(Outcome {
            file: doc.file.to_path_buf(),
            title: c.title.clone(),
            result,
        });
    }
    out
}

fn file_error(path: &Path, reason: String) -> Outcome {
    Outcome {
        file: path.to_path_buf(),
        title: path.display().to_string(),
        result: Err(refused(path, "-", "file".into(), reason)),
    }
}

fn compile_rule(r: &SigmaRule) -> Result<Compiled, (String, String)> {
    let ls = &r.logsource;
    if ls.product.as_deref() != Some("mcp") {
        return Err((
            format!(
                "logsource product {:?}",
                ls.product.as_deref().unwrap_or("")
            ),
            "Dunes maps `product: mcp` only (docs/sigma.md)".into(),
        ));
    }
    if let Some(s) = &ls.service {
        return Err((
            format!("logsource service {s:?}"),
            "product mcp has no services; use a category".into(),
        ));
    }
    let Some((_, table, pred)) = fields::CATEGORIES
        .iter()
        .find(|(c, _, _)| *c == ls.category.as_deref())
    else {
        return Err((
            format!(
                "logsource category {:?}",
                ls.category.as_deref().unwrap_or("")
            ),
            "categories: tool_call, tool_result, tool_definition, transport, auth".into(),
        ));
    };
    if let Some(t) = &r.detection.timeframe {
        return Err((
            format!("timeframe {t}"),
            "aggregations in a detection are deprecated in Sigma; write a correlation rule".into(),
        ));
    }
    let cond = compile::condition(*table, &r.detection.named, &r.detection.conditions)?;
    let condition = if pred.is_empty() {
        cond
    } else {
        format!("({pred}) AND {cond}")
    };
    Ok(Compiled {
        table: *table,
        condition,
    })
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(80).collect()
}

/// A unique native id: the Sigma `name`, else the file name, else the title.
fn native_id(
    name: Option<&str>,
    file: &Path,
    title: &str,
    ids: &mut HashMap<String, usize>,
) -> String {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let mut id = name
        .map(slug)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| slug(stem));
    if id.is_empty() {
        id = slug(title);
    }
    if id.is_empty() {
        id = "sigma-rule".into();
    }
    let n = ids.entry(id.clone()).or_insert(0);
    *n += 1;
    if *n > 1 {
        id = format!("{id}-{n}");
    }
    id
}

/// `owasp-mcp.mcp05` → `owasp-mcp:MCP05`, `atlas.aml.t0051.001` →
/// `atlas:AML.T0051.001`; other tags verbatim.
fn native_tag(t: &str) -> String {
    if let Some(n) = t.strip_prefix("owasp-mcp.") {
        return format!("owasp-mcp:{}", n.to_ascii_uppercase());
    }
    if let Some(n) = t.strip_prefix("atlas.") {
        return format!("atlas:{}", n.to_ascii_uppercase());
    }
    t.to_string()
}

fn severity(level: Option<rsigma_parser::Level>) -> Severity {
    use rsigma_parser::Level as L;
    match level {
        Some(L::Informational) => Severity::Info,
        Some(L::Low) => Severity::Low,
        Some(L::Medium) | None => Severity::Medium,
        Some(L::High) => Severity::High,
        Some(L::Critical) => Severity::Critical,
    }
}

fn enum_str<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

struct Meta<'a> {
    id: &'a Option<String>,
    name: &'a Option<String>,
    title: &'a str,
    description: &'a Option<String>,
    level: Option<rsigma_parser::Level>,
    status: Option<String>,
    tags: &'a [String],
    falsepositives: &'a [String],
    fields: &'a [String],
    ext: DunesExt,
}

/// The metadata and output columns shared by rules and correlations.
fn base_config(
    doc: &Doc,
    m: Meta,
    kind: &str,
    table: Table,
    extra_columns: &[String],
    ids: &mut HashMap<String, usize>,
) -> Result<(RuleConfig, String), (String, String)> {
    let mut columns: Vec<String> = table.base_columns().iter().map(|s| s.to_string()).collect();
    let ext = m.ext;
    for f in m.fields.iter().chain(&ext.evidence).chain(extra_columns) {
        let r = fields::resolve(table, f).map_err(|e| (format!("fields: {f}"), e))?;
        let col = if r.column == "labels" {
            format!("{} AS \"{}\"", r.expr, f.replace('"', ""))
        } else {
            r.column
        };
        if !columns.contains(&col) {
            columns.push(col);
        }
    }
    let entity = match ext.entity {
        Some(e) => e,
        None => match table {
            Table::Events => vec!["session_id".to_string()],
            Table::ToolDefs => vec![
                "session_id".to_string(),
                "server_id".to_string(),
                "tool_name".to_string(),
            ],
        },
    };
    for e in &entity {
        if !columns.contains(e) {
            columns.push(e.clone());
        }
    }
    let select = columns.join(", ");
    let config = RuleConfig {
        id: native_id(m.name.as_deref(), doc.file, m.title, ids),
        title: m.title.to_string(),
        description: m
            .description
            .clone()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| m.title.to_string()),
        severity: severity(m.level),
        level: ext.level.unwrap_or(Level::Analyst),
        tags: m.tags.iter().map(|t| native_tag(t)).collect(),
        entity,
        response: ext.response,
        query: String::new(),
        kind: RuleKind::Match,
        window: None,
        threshold: None,
        sequence: None,
        baseline: None,
        lifetime: None,
        lateness: ext.lateness,
        suppress: ext.suppress,
        exceptions: Vec::new(),
        tests: ext.tests,
        sigma: Some(SigmaOrigin {
            id: m.id.clone(),
            name: m.name.clone(),
            title: m.title.to_string(),
            level: m.level.as_ref().and_then(enum_str),
            status: m.status.clone(),
            tags: m.tags.to_vec(),
            falsepositives: m.falsepositives.to_vec(),
            kind: kind.to_string(),
            twin: ext.twin,
        }),
    };
    Ok((config, select))
}

fn rule_config(
    doc: &Doc,
    r: &SigmaRule,
    c: &Compiled,
    ids: &mut HashMap<String, usize>,
) -> Result<RuleConfig, (String, String)> {
    let meta = Meta {
        id: &r.id,
        name: &r.name,
        title: &r.title,
        description: &r.description,
        level: r.level,
        status: r.status.as_ref().and_then(enum_str),
        tags: &r.tags,
        falsepositives: &r.falsepositives,
        fields: &r.fields,
        ext: ext(&r.custom_attributes)?,
    };
    let (mut cfg, select) = base_config(doc, meta, "rule", c.table, &[], ids)?;
    cfg.query = format!(
        "SELECT {select}\nFROM {}\nWHERE {}\n",
        c.table.name(),
        c.condition
    );
    Ok(cfg)
}

/// The lower bound of a threshold condition (`gte n` / `gt n`).
fn lower_bound(preds: &[(ConditionOperator, u64)]) -> Result<u64, (String, String)> {
    match preds {
        [(ConditionOperator::Gte, n)] => Ok(*n),
        [(ConditionOperator::Gt, n)] => Ok(n.saturating_add(1)),
        other => Err((
            format!("condition {other:?}"),
            "Dunes thresholds fire at a lower bound: use gte or gt alone".into(),
        )),
    }
}

fn correlation_config(
    doc: &Doc,
    c: &CorrelationRule,
    rules: &[(Doc, SigmaRule)],
    compiled: &[Result<Compiled, (String, String)>],
    lookup: &dyn Fn(&str) -> Option<usize>,
    ids: &mut HashMap<String, usize>,
) -> Result<RuleConfig, (String, String)> {
    let kind = c.correlation_type.as_str();
    if !c.aliases.is_empty() {
        return Err((
            "aliases".into(),
            "field aliases across rules are not supported; name the same column in each rule"
                .into(),
        ));
    }
    let window_type = match c.window {
        WindowMode::Sliding => WindowType::Sliding,
        WindowMode::Tumbling => WindowType::Tumbling,
        WindowMode::Session => {
            return Err((
                "window: session".into(),
                "session windows are not supported (sliding, tumbling)".into(),
            ));
        }
    };
    if c.gap.is_some() {
        return Err(("gap".into(), "session windows are not supported".into()));
    }
    let mut inputs = Vec::new();
    for name in &c.rules {
        let i = lookup(name).ok_or_else(|| {
            (
                format!("rules: {name}"),
                "no Sigma rule, or more than one, has that id or name among the loaded files"
                    .to_string(),
            )
        })?;
        let comp = compiled[i].as_ref().map_err(|(construct, reason)| {
            (
                format!("rules: {name}"),
                format!("that rule is refused ({construct}: {reason})"),
            )
        })?;
        inputs.push((i, comp));
    }
    let Some(table) = inputs.first().map(|(_, c)| c.table) else {
        return Err((
            "rules".into(),
            "a correlation needs at least one rule".into(),
        ));
    };
    if inputs.iter().any(|(_, c)| c.table != table) || table != Table::Events {
        return Err((
            "rules".into(),
            "correlated rules must all read events (not tool_definition)".into(),
        ));
    }
    let group: Vec<String> = c
        .group_by
        .iter()
        .map(|g| {
            fields::resolve(table, g)
                .map(|r| r.column)
                .map_err(|e| (format!("group-by: {g}"), e))
        })
        .collect::<Result<_, _>>()?;
    let mut extra = group.clone();
    let step_name = |i: usize| -> String {
        let r = &rules[i].1;
        slug(r.name.as_deref().or(r.id.as_deref()).unwrap_or(&r.title)).replace('-', "_")
    };
    let (rule_kind, threshold, sequence, step) = match c.correlation_type {
        CorrelationType::EventCount | CorrelationType::ValueCount => {
            let CorrelationCondition::Threshold {
                predicates, field, ..
            } = &c.condition
            else {
                return Err(("condition".into(), "expected a threshold condition".into()));
            };
            let min = lower_bound(predicates)?;
            let (aggregate, column) = if c.correlation_type == CorrelationType::ValueCount {
                let f = match field.as_deref() {
                    Some([f]) => f,
                    _ => {
                        return Err((
                            "condition.field".into(),
                            "value_count needs exactly one field".into(),
                        ));
                    }
                };
                let col = fields::resolve(table, f)
                    .map_err(|e| (format!("condition.field: {f}"), e))?
                    .column;
                extra.push(col.clone());
                (Aggregate::Distinct, Some(col))
            } else {
                (Aggregate::Count, None)
            };
            (
                RuleKind::Threshold,
                Some(ThresholdSpec {
                    aggregate,
                    column,
                    min: min as f64,
                    min_share: None,
                }),
                None,
                false,
            )
        }
        CorrelationType::Temporal => {
            let n = inputs.len() as u64;
            let min = match &c.condition {
                // rsigma-parser reads an absent condition as `gte: 1`: all rules.
                CorrelationCondition::Threshold { predicates, .. }
                    if predicates[..] == [(ConditionOperator::Gte, 1)] =>
                {
                    n
                }
                CorrelationCondition::Threshold { predicates, .. } => lower_bound(predicates)?,
                CorrelationCondition::Extended(e) if is_and_of_all(e, &c.rules) => n,
                CorrelationCondition::Extended(e) => {
                    return Err((
                        format!("condition \"{e}\""),
                        "temporal conditions other than all of the rules are not supported".into(),
                    ));
                }
            };
            (
                RuleKind::Threshold,
                Some(ThresholdSpec {
                    aggregate: Aggregate::Distinct,
                    column: Some("step".into()),
                    min: min as f64,
                    min_share: None,
                }),
                None,
                true,
            )
        }
        CorrelationType::TemporalOrdered => {
            let all = match &c.condition {
                CorrelationCondition::Threshold { predicates, .. } => {
                    predicates[..] == [(ConditionOperator::Gte, 1)]
                        || lower_bound(predicates)? == inputs.len() as u64
                }
                CorrelationCondition::Extended(e) => is_and_of_all(e, &c.rules),
            };
            if !all {
                return Err((
                    "condition".into(),
                    "temporal_ordered fires when every rule matched in order".into(),
                ));
            }
            (
                RuleKind::Sequence,
                None,
                Some(SequenceSpec {
                    steps: inputs.iter().map(|(i, _)| step_name(*i)).collect(),
                    within: c.timespan.original.clone(),
                }),
                true,
            )
        }
        other => {
            return Err((
                format!("correlation type {}", other.as_str()),
                "value_sum / value_avg / value_percentile / value_median are not supported".into(),
            ));
        }
    };
    let ext = ext(&c.custom_attributes)?;
    let explicit_entity = ext.entity.is_some();
    let meta = Meta {
        id: &c.id,
        name: &c.name,
        title: &c.title,
        description: &c.description,
        level: c.level,
        status: c.status.as_ref().and_then(enum_str),
        tags: &c.tags,
        falsepositives: &c.falsepositives,
        fields: &c.fields,
        ext,
    };
    let (mut cfg, select) = base_config(doc, meta, kind, table, &extra, ids)?;
    if !explicit_entity && !group.is_empty() {
        cfg.entity = group.clone();
    }
    let conds: Vec<&str> = inputs.iter().map(|(_, c)| c.condition.as_str()).collect();
    let step_sql = if step {
        let arms: String = inputs
            .iter()
            .map(|(i, c)| format!(" WHEN {} THEN {}", c.condition, sql_str(&step_name(*i))))
            .collect();
        format!(",\n  CASE{arms} END AS step")
    } else {
        String::new()
    };
    let not_null: String = group
        .iter()
        .map(|g| format!("{g} IS NOT NULL AND "))
        .collect();
    cfg.query = format!(
        "SELECT {select}{step_sql}\nFROM events\nWHERE {not_null}({})\n",
        conds.join(")\n   OR (")
    );
    cfg.kind = rule_kind;
    cfg.threshold = threshold;
    cfg.sequence = sequence;
    if rule_kind == RuleKind::Threshold {
        cfg.window = Some(WindowSpec {
            kind: window_type,
            size: c.timespan.original.clone(),
        });
    }
    Ok(cfg)
}

fn is_and_of_all(e: &ConditionExpr, rules: &[String]) -> bool {
    let ConditionExpr::And(parts) = e else {
        return false;
    };
    let mut names: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            ConditionExpr::Identifier(i) => Some(i.as_str()),
            _ => None,
        })
        .collect();
    names.sort();
    let mut want: Vec<&str> = rules.iter().map(String::as_str).collect();
    want.sort();
    names.len() == parts.len() && names == want
}

/// What `dunes rules import-sigma` did, one line per Sigma document.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub lines: Vec<String>,
    pub imported: usize,
    pub inputs: usize,
    pub refused: usize,
}

/// Converts the Sigma files under `paths` and writes each converted rule as
/// a native rule file `out/<id>.yaml` (keeping the Sigma metadata in its
/// `sigma:` block). A rule whose SQL does not plan is refused too.
pub async fn import(paths: &[PathBuf], out: &Path) -> Result<ImportReport, DetectError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            crate::rule::collect_rule_files(p, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut report = ImportReport::default();
    let mut sigma = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| DetectError::Io {
            path: f.display().to_string(),
            source: e,
        })?;
        if is_sigma(&bytes) {
            sigma.push((f, bytes));
        } else {
            report.refused += 1;
            report.lines.push(format!(
                "refused  {}: not a Sigma rule (no top-level detection: or correlation: key)",
                f.display()
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| DetectError::Io {
        path: out.display().to_string(),
        source: e,
    })?;
    for o in convert(&sigma) {
        let rule = match o.result {
            Err(e) => {
                report.refused += 1;
                report.lines.push(format!("refused  {e}"));
                continue;
            }
            Ok(None) => {
                report.inputs += 1;
                report.lines.push(format!(
                    "input    {}: {:?} (only an input of a correlation)",
                    o.file.display(),
                    o.title
                ));
                continue;
            }
            Ok(Some(rule)) => rule,
        };
        if let Err(e) = crate::Engine::new(vec![rule.clone()]).await {
            report.refused += 1;
            report.lines.push(format!(
                "refused  {}: Sigma rule {:?}: converted SQL: {e}",
                o.file.display(),
                o.title
            ));
            continue;
        }
        let target = out.join(format!("{}.yaml", rule.config.id));
        let text = native_yaml(&rule.config, &o.file)?;
        // What is written must load back as a native rule.
        LoadedRule::from_bytes(&target, text.as_bytes())?;
        std::fs::write(&target, text.as_bytes()).map_err(|e| DetectError::Io {
            path: target.display().to_string(),
            source: e,
        })?;
        report.imported += 1;
        report.lines.push(format!(
            "imported {} → {}",
            o.file.display(),
            target.display()
        ));
    }
    Ok(report)
}

/// A rule config as a native YAML rule file (empty / default keys left out).
fn native_yaml(config: &RuleConfig, from: &Path) -> Result<String, DetectError> {
    fn prune(v: &mut serde_json::Value) {
        if let serde_json::Value::Object(m) = v {
            m.retain(|_, v| !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty())));
            m.values_mut().for_each(prune);
        }
    }
    let mut v =
        serde_json::to_value(config).map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    prune(&mut v);
    let body = serde_norway::to_string(&v).map_err(|e| DetectError::InvalidValue(e.to_string()))?;
    Ok(format!(
        "# Converted from the Sigma rule in {} by `dunes rules import-sigma`.\n{body}",
        from.display()
    ))
}
