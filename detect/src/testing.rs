//! Runs the inline tests of rules (`tests:` in each rule file).

use dunes_ingest::{IngestConfig, Normalizer, RawRecord, SourcePos};

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
            let actual = match expand_repeat(&test.input, test.repeat.as_ref()) {
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
        records.push(RawRecord {
            bytes,
            source: SourcePos::File {
                path: format!("{file}#{test_name}"),
                line: n as u64 + 1,
            },
            oversize: None,
        });
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

/// The input of a test with `repeat:` applied (see [`crate::rule::TestRepeat`]).
fn expand_repeat(
    input: &[serde_json::Value],
    repeat: Option<&crate::rule::TestRepeat>,
) -> Result<Vec<serde_json::Value>, String> {
    let Some(rep) = repeat else {
        return Ok(input.to_vec());
    };
    let every = crate::rule::parse_duration_us(&rep.every)
        .ok_or_else(|| format!("repeat.every {:?} is not a duration", rep.every))?;
    let mut out = Vec::with_capacity(input.len() * rep.times as usize);
    for k in 0..i64::from(rep.times) {
        for env in input {
            let mut env = env.clone();
            if k > 0 {
                if let Some(ts) = env.get("ts").and_then(|t| t.as_str()) {
                    let t = chrono::DateTime::parse_from_rfc3339(ts)
                        .map_err(|e| format!("repeat: ts {ts:?}: {e}"))?
                        + chrono::Duration::microseconds(every * k);
                    env["ts"] = t
                        .with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                        .into();
                }
                if let Some(id) = env.get("event_id").and_then(|t| t.as_str()) {
                    env["event_id"] = format!("{id}.{k}").into();
                }
                if let Some(id) = env.pointer_mut("/message/id") {
                    *id = match &*id {
                        serde_json::Value::Number(n) => {
                            (n.as_i64().unwrap_or(0) + k * 1_000_000).into()
                        }
                        serde_json::Value::String(s) => format!("{s}.{k}").into(),
                        other => other.clone(),
                    };
                }
            }
            out.push(env);
        }
    }
    Ok(out)
}
