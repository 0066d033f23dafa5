//! Runs the inline tests of rules (`tests:` in each rule file).

use dunes_ingest::{IngestConfig, Normalizer, RawRecord};

use crate::engine::Engine;

/// The result of one inline test.
#[derive(Clone, Debug)]
pub struct TestOutcome {
    pub rule_id: String,
    pub file: String,
    pub test_name: String,
    pub expected: u64,
    /// Rows the rule returned, or why the test could not run.
    pub actual: Result<u64, String>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        matches!(self.actual, Ok(n) if n == self.expected)
    }
}

impl std::fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.passed() { "ok  " } else { "FAIL" };
        write!(f, "{verdict} {} :: {}", self.rule_id, self.test_name)?;
        match &self.actual {
            Ok(n) if *n != self.expected => {
                write!(
                    f,
                    " (expected {} matches, got {n}; {})",
                    self.expected, self.file
                )
            }
            Ok(_) => Ok(()),
            Err(e) => write!(f, " ({e}; {})", self.file),
        }
    }
}

/// Runs every inline test of every rule in the engine. Each test gets a
/// fresh normaliser, so request/response matching never leaks between tests.
pub async fn run_inline_tests(engine: &Engine) -> Vec<TestOutcome> {
    let mut out = Vec::new();
    for (idx, planned) in engine.rules().iter().enumerate() {
        let rule = &planned.rule;
        for test in &rule.config.tests {
            let actual = match test.expanded_input() {
                Ok(input) => {
                    let file = rule.path.display().to_string();
                    run_one(engine, idx, &file, &test.name, &input).await
                }
                Err(e) => Err(e),
            };
            out.push(TestOutcome {
                rule_id: rule.config.id.clone(),
                file: rule.path.display().to_string(),
                test_name: test.name.clone(),
                expected: test.expect,
                actual,
            });
        }
    }
    out
}

async fn run_one(
    engine: &Engine,
    idx: usize,
    file: &str,
    test_name: &str,
    input: &[serde_json::Value],
) -> Result<u64, String> {
    let mut records = Vec::with_capacity(input.len());
    for (n, env) in input.iter().enumerate() {
        let bytes = serde_json::to_vec(env).map_err(|e| e.to_string())?;
        records.push(RawRecord::file_line(
            bytes,
            &format!("{file}#{test_name}"),
            n as u64 + 1,
        ));
    }
    let mut normalizer = Normalizer::new(IngestConfig::default());
    let decoded = normalizer
        .decode_batch(records)
        .map_err(|e| e.to_string())?;
    if let Some(r) = decoded.rejected.first() {
        return Err(format!(
            "input envelope {} rejected: {}",
            r.source, r.reason
        ));
    }
    engine
        .test_one(idx, decoded.tables())
        .await
        .map_err(|e| e.to_string())
}
