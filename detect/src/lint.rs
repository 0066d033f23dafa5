//! `dunes rules lint`: checks every rule file of a directory and reports
//! *all* problems (not just the first), each naming the file and, where it
//! can, the line.
//!
//! Checks: the YAML parses with known keys and valid `severity` / `level` /
//! `response` values; `id` has the allowed shape, equals the file name and
//! is unique in the directory; title and description are not empty; tags
//! are `owasp-mcp:MCP01`..`MCP10` or `atlas:AML.T####[.###]` (at least one
//! of each, nothing else); `entity` is not empty; there is at least one
//! positive (`expect` > 0) and one negative (`expect: 0`) inline test; the
//! stateful parameters and allowlists are valid; the SQL plans against the
//! `events` / `tool_defs` schema and outputs the columns the rule needs.
//! Sigma files are converted (docs/sigma.md); a refusal is a problem, and
//! the converted rules get the same checks except the file-name and
//! OWASP/ATLAS tag rules.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::rule::{LoadedRule, RuleConfig, is_atlas_tag, is_owasp_mcp_tag};
use crate::{DetectError, Engine};

/// One problem found by the linter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintIssue {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for LintIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What the linter saw: rule files checked and the problems found.
#[derive(Debug, Default)]
pub struct LintReport {
    pub files: usize,
    pub issues: Vec<LintIssue>,
}

impl LintReport {
    pub fn ok(&self) -> bool {
        self.issues.is_empty()
    }
}

/// Lints every `*.yaml` / `*.yml` below `dir` (sorted by path).
pub async fn lint_dir(dir: &Path) -> Result<LintReport, DetectError> {
    let mut files = Vec::new();
    crate::rule::collect_rule_files(dir, &mut files)?;
    files.sort();
    let mut report = LintReport {
        files: files.len(),
        ..LintReport::default()
    };
    if files.is_empty() {
        report.issues.push(LintIssue {
            file: dir.to_path_buf(),
            line: None,
            message: "no rule files (*.yaml) found".into(),
        });
    }
    // id → first file that declared it.
    let mut ids: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut sigma = Vec::new();
    for file in files {
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                report
                    .issues
                    .push(issue(&file, None, format!("cannot read: {e}")));
                continue;
            }
        };
        if crate::sigma::is_sigma(&bytes) {
            sigma.push((file, bytes));
            continue;
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let line_of = |key: &str| text.lines().position(|l| l.starts_with(key)).map(|i| i + 1);
        if let Err((line, reason)) = crate::rule::flow_nesting(&text) {
            report.issues.push(issue(&file, Some(line), reason));
            continue;
        }
        let config: RuleConfig = match serde_norway::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                report
                    .issues
                    .push(issue(&file, e.location().map(|l| l.line()), e.to_string()));
                continue;
            }
        };
        let before = report.issues.len();
        check_metadata(&file, &config, &line_of, false, &mut report.issues);
        match ids.get(&config.id) {
            Some(prev) => report.issues.push(issue(
                &file,
                line_of("id:"),
                format!(
                    "duplicate rule id {:?} (also in {})",
                    config.id,
                    prev.display()
                ),
            )),
            None => {
                ids.insert(config.id.clone(), file.clone());
            }
        }
        if report.issues.len() > before {
            continue;
        }
        // The loader's own validation (state parameters, allowlists), then
        // planning the SQL against the schema.
        let rule = match LoadedRule::from_bytes(&file, &bytes) {
            Ok(r) => r,
            Err(e) => {
                report.issues.push(from_error(&file, e));
                continue;
            }
        };
        if let Err(e) = Engine::new(vec![rule]).await {
            report.issues.push(from_error(&file, e));
        }
    }
    // Sigma files: converted together (the loader's refusals are problems),
    // then the same metadata, test and planning checks on each result.
    for outcome in crate::sigma::convert(&sigma) {
        let rule = match outcome.result {
            Ok(Some(rule)) => rule,
            Ok(None) => continue,
            Err(e) => {
                report.issues.push(from_error(&outcome.file, e));
                continue;
            }
        };
        let file = outcome.file;
        let before = report.issues.len();
        check_metadata(&file, &rule.config, &|_| None, true, &mut report.issues);
        if let Some(prev) = ids.get(&rule.config.id) {
            report.issues.push(issue(
                &file,
                None,
                format!(
                    "duplicate rule id {:?} (also in {})",
                    rule.config.id,
                    prev.display()
                ),
            ));
        } else {
            ids.insert(rule.config.id.clone(), file.clone());
        }
        if report.issues.len() == before
            && let Err(e) = Engine::new(vec![rule]).await
        {
            report.issues.push(from_error(&file, e));
        }
    }
    Ok(report)
}

fn issue(file: &Path, line: Option<usize>, message: impl Into<String>) -> LintIssue {
    LintIssue {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn from_error(file: &Path, e: DetectError) -> LintIssue {
    match e {
        DetectError::Rule { line, message, .. } => issue(file, line, message),
        other => issue(file, None, other.to_string()),
    }
}

fn check_metadata(
    file: &Path,
    c: &RuleConfig,
    line_of: &dyn Fn(&str) -> Option<usize>,
    sigma: bool,
    out: &mut Vec<LintIssue>,
) {
    let mut push = |key: &str, msg: String| out.push(issue(file, line_of(key), msg));
    let id_ok = !c.id.is_empty()
        && c.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && c.id.as_bytes()[0].is_ascii_alphanumeric();
    if !id_ok {
        push(
            "id:",
            format!("id {:?} must match [a-z0-9][a-z0-9-]*", c.id),
        );
    }
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != c.id && !sigma {
        push(
            "id:",
            format!("id {:?} does not match the file name {stem:?}", c.id),
        );
    }
    if c.title.trim().is_empty() {
        push("title:", "title is empty".into());
    }
    if c.description.trim().is_empty() {
        push("description:", "description is empty".into());
    }
    for t in &c.tags {
        let known = if t.starts_with("owasp-mcp:") {
            is_owasp_mcp_tag(t)
        } else if t.starts_with("atlas:") {
            is_atlas_tag(t)
        } else {
            // A Sigma rule keeps its own tags (attack.t1059, …).
            sigma
        };
        if !known {
            push(
                "tags:",
                format!("tag {t:?} is neither owasp-mcp:MCP01..MCP10 nor atlas:AML.T####[.###]"),
            );
        }
    }
    if !sigma && !c.tags.iter().any(|t| is_owasp_mcp_tag(t)) {
        push(
            "tags:",
            "no OWASP MCP Top 10 tag (owasp-mcp:MCP01..MCP10)".into(),
        );
    }
    if !sigma && !c.tags.iter().any(|t| is_atlas_tag(t)) {
        push(
            "tags:",
            "no MITRE ATLAS technique tag (atlas:AML.T####[.###])".into(),
        );
    }
    if c.entity.is_empty() {
        push(
            "entity:",
            "entity must name at least one output column".into(),
        );
    }
    if !c.tests.iter().any(|t| t.expect > 0) {
        push(
            "tests:",
            "no positive inline test (one with expect > 0)".into(),
        );
    }
    if !c.tests.iter().any(|t| t.expect == 0) {
        push(
            "tests:",
            "no negative inline test (one with expect: 0)".into(),
        );
    }
    for t in &c.tests {
        if t.name.trim().is_empty() {
            push("tests:", "an inline test has an empty name".into());
        }
    }
}
