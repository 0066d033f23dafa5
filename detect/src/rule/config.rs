//! Rule configuration as written in `rules/<category>/<id>.yaml`.
//!
//! A [`RuleConfig`] is plain data; [`crate::Engine`] turns it into a planned,
//! runtime detector.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::DetectError;

/// Incident severity, ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }
}

impl FromStr for Severity {
    type Err = DetectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(DetectError::InvalidValue(format!(
                "severity must be one of info|low|medium|high|critical, got {other:?}"
            ))),
        }
    }
}

/// Response tier of a rule: 1 automated response, 2 analyst, 3 emergency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "u8")]
pub enum Level {
    Automated = 1,
    Analyst = 2,
    Emergency = 3,
}

impl Level {
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for Level {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(Level::Automated),
            2 => Ok(Level::Analyst),
            3 => Ok(Level::Emergency),
            other => Err(format!("level must be 1, 2 or 3, got {other}")),
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Level;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("level 1, 2 or 3")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Level, E> {
                u8::try_from(v)
                    .ok()
                    .and_then(|v| Level::try_from(v).ok())
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Level, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_u64(V)
    }
}

impl From<Level> for u8 {
    fn from(l: Level) -> u8 {
        l as u8
    }
}

/// The automated action a Level 1 rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseAction {
    IsolateSession,
    BlockPrincipal,
    AlertOnly,
    IsolateServer,
}

impl fmt::Display for ResponseAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseAction::IsolateSession => "isolate_session",
            ResponseAction::BlockPrincipal => "block_principal",
            ResponseAction::AlertOnly => "alert_only",
            ResponseAction::IsolateServer => "isolate_server",
        })
    }
}

/// One inline test of a rule: input envelopes and the expected number of
/// rows the rule's query returns for them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    pub name: String,
    pub expect: u64,
    pub input: Vec<serde_json::Value>,
    /// Rate tests: the input is sent `times` times, copy *k* shifted by
    /// *k* × `every` (ts), with `.k` appended to event ids and JSON-RPC ids
    /// made unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<TestRepeat>,
}

impl RuleTest {
    /// The input with `repeat:` applied (see [`TestRepeat`]).
    pub fn expanded_input(&self) -> Result<Vec<serde_json::Value>, String> {
        let input = &self.input;
        let Some(rep) = &self.repeat else {
            return Ok(input.to_vec());
        };
        let every = parse_duration_us(&rep.every)
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
}

/// `repeat:` of an inline test.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRepeat {
    pub times: u32,
    pub every: String,
}

/// A rule exactly as written in its YAML file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub level: Level,
    pub tags: Vec<String>,
    pub entity: Vec<String>,
    #[serde(default)]
    pub response: Option<ResponseAction>,
    pub query: String,
    /// `match` (default, stateless) | `threshold` | `sequence` | `baseline`.
    #[serde(default)]
    pub kind: RuleKind,
    /// `threshold` rules: the event-time window.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// `threshold` rules: the aggregate and its bound.
    #[serde(default)]
    pub threshold: Option<ThresholdSpec>,
    /// `sequence` rules: ordered step names and the time bound.
    #[serde(default)]
    pub sequence: Option<SequenceSpec>,
    /// `baseline` rules: key and watched value columns.
    #[serde(default)]
    pub baseline: Option<BaselineSpec>,
    /// `lifetime` rules: idle and absolute limits per entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<LifetimeSpec>,
    /// How far behind the newest event time an event may arrive and still be
    /// evaluated against full state (default 5m). See rule-format.md.
    #[serde(default)]
    pub lateness: Option<String>,
    /// One incident per rule+entity per this much event time; later matches
    /// update its running count and last_ts (default 10m; `0s` disables).
    #[serde(default)]
    pub suppress: Option<String>,
    /// Allowlists: rows whose `column` value is listed in `file` (one value a
    /// line, `#` comments; path relative to the rule file) are dropped.
    #[serde(default)]
    pub exceptions: Vec<ExceptionSpec>,
    #[serde(default)]
    pub tests: Vec<RuleTest>,
    /// Set when the rule came from a Sigma rule (loaded directly or written
    /// by `dunes rules import-sigma`): what Sigma said about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<SigmaOrigin>,
}

/// The Sigma metadata a converted rule keeps (docs/sigma.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaOrigin {
    /// Sigma `id` (usually a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub title: String,
    /// Sigma `level` (informational | low | medium | high | critical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub falsepositives: Vec<String>,
    /// `rule` or the correlation type (`event_count`, `temporal_ordered`, …).
    pub kind: String,
    /// The native rule this one mirrors (shipped twins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    #[default]
    Match,
    Threshold,
    Sequence,
    Baseline,
    Lifetime,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowType {
    #[default]
    Sliding,
    Tumbling,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    #[serde(rename = "type", default)]
    pub kind: WindowType,
    pub size: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Count,
    Distinct,
    Sum,
    /// Count of the most frequent value of `column` in the window.
    Top,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    pub aggregate: Aggregate,
    /// The column distinct-counted or summed (not for `count`).
    #[serde(default)]
    pub column: Option<String>,
    /// Fires when the aggregate over the window is >= this.
    pub min: f64,
    /// `distinct` / `top` only: also require aggregate ÷ events in the
    /// window >= this (0..=1), e.g. the most frequent value is at least half
    /// of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_share: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// Values of the query's `step` column, in the order they must occur.
    pub steps: Vec<String>,
    pub within: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineWhen {
    /// The tuple of value columns was not seen before for the key.
    #[default]
    Any,
    /// Every value column holds a value not seen before for the key.
    All,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// Columns naming what the baseline is about (e.g. server_id, tool_name).
    pub key: Vec<String>,
    /// Columns whose first-seen values are remembered for the key.
    pub value: Vec<String>,
    #[serde(default)]
    pub when: BaselineWhen,
    /// Learning period from the key's first sighting during which new values
    /// are added silently (default 0s: every value after the first is new).
    #[serde(default)]
    pub learn: Option<String>,
    /// Optional boolean output column: rows where it is not true are
    /// learned but never fire (e.g. only a suspicious variant may fire,
    /// while every row teaches what is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_if: Option<String>,
    /// Optional boolean output column: rows where it is not true are judged
    /// against the baseline (and may fire) but are not remembered (e.g. a
    /// definition that is malicious on its face must not become "normal").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn_if: Option<String>,
    /// A key unseen for this long is forgotten (default: never; at most
    /// 1,000,000 keys either way). For keys that end, such as sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget: Option<String>,
}

/// `lifetime:` — the life of an entity (a session) from its first event:
/// a gap longer than `idle` between two of its events, or an event more
/// than `absolute` after its first, is a violation. At least one is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<String>,
    /// How long an entity is remembered after its last event (default 7d);
    /// an entity seen again after that starts a new life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSpec {
    pub column: String,
    pub file: String,
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` into microseconds.
pub fn parse_duration_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, mult): (&str, i64) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000_000)
    } else if let Some(n) = s.strip_suffix('d') {
        (n, 86_400_000_000)
    } else {
        return None;
    };
    let n: i64 = num.trim().parse().ok().filter(|n| *n >= 0)?;
    n.checked_mul(mult)
}

/// A rule file as loaded: config, where it came from, and the hash of its
/// exact bytes (recorded on every incident as `rule_sha256`).
#[derive(Clone, Debug)]
pub struct LoadedRule {
    pub config: RuleConfig,
    pub path: PathBuf,
    pub sha256: String,
    /// 1-based line of the `query:` key, to point SQL errors at the file.
    pub query_line: usize,
    /// Allowlists loaded from `exceptions` (column, values, file sha256).
    pub exceptions: Vec<LoadedException>,
    /// Converted on load from a Sigma `.yml` (its id need not be the file name).
    pub from_sigma_file: bool,
}

#[derive(Clone, Debug)]
pub struct LoadedException {
    pub column: String,
    pub file: PathBuf,
    pub values: std::collections::HashSet<String>,
    pub sha256: String,
}

impl LoadedRule {
    /// Parses and validates the metadata of one rule file (SQL is checked
    /// when the rule is planned by the engine).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, DetectError> {
        let text = std::str::from_utf8(bytes).map_err(|e| DetectError::Rule {
            file: path.display().to_string(),
            line: None,
            message: format!("not valid UTF-8: {e}"),
        })?;
        flow_nesting(text).map_err(|(line, message)| DetectError::Rule {
            file: path.display().to_string(),
            line: Some(line),
            message,
        })?;
        let config: RuleConfig = serde_norway::from_str(text).map_err(|e| DetectError::Rule {
            file: path.display().to_string(),
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })?;
        let query_line = text
            .lines()
            .position(|l| l.starts_with("query:"))
            .map(|i| i + 1)
            .unwrap_or(1);
        let sha256 = hex::encode(Sha256::digest(bytes));
        let line_of = |key: &str| text.lines().position(|l| l.starts_with(key)).map(|i| i + 1);
        let mut rule = LoadedRule {
            config,
            path: path.to_path_buf(),
            sha256,
            query_line,
            exceptions: Vec::new(),
            from_sigma_file: false,
        };
        rule.validate_metadata()?;
        rule.validate_state(&line_of)?;
        rule.load_exceptions(line_of("exceptions:"))?;
        Ok(rule)
    }

    /// A rule converted from a Sigma file (`path`, whose bytes hash to
    /// `sha256`), validated like a native one.
    pub(crate) fn from_sigma(
        path: &Path,
        config: RuleConfig,
        sha256: String,
    ) -> Result<Self, DetectError> {
        let rule = LoadedRule {
            config,
            path: path.to_path_buf(),
            sha256,
            query_line: 1,
            exceptions: Vec::new(),
            from_sigma_file: true,
        };
        rule.validate_metadata()?;
        rule.validate_state(&|_| None)?;
        Ok(rule)
    }

    /// `sigma` when the rule came from a Sigma rule, else `native`.
    pub fn source_format(&self) -> &'static str {
        if self.config.sigma.is_some() {
            "sigma"
        } else {
            "native"
        }
    }

    pub fn load(path: &Path) -> Result<Self, DetectError> {
        let bytes = std::fs::read(path).map_err(|e| DetectError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_bytes(path, &bytes)
    }

    pub fn error(&self, line: Option<usize>, message: impl Into<String>) -> DetectError {
        DetectError::Rule {
            file: self.path.display().to_string(),
            line,
            message: message.into(),
        }
    }

    fn validate_state(&self, line_of: &dyn Fn(&str) -> Option<usize>) -> Result<(), DetectError> {
        let c = &self.config;
        let dur = |key: &str, v: &Option<String>| -> Result<(), DetectError> {
            match v {
                Some(v) if parse_duration_us(v).is_none() => Err(self.error(
                    line_of(key),
                    format!("{key} {v:?} is not a duration like 500ms, 30s, 5m, 2h, 1d"),
                )),
                _ => Ok(()),
            }
        };
        dur("lateness:", &c.lateness)?;
        dur("suppress:", &c.suppress)?;
        let need = |present: bool, what: &str, key: &str| -> Result<(), DetectError> {
            if present {
                Ok(())
            } else {
                Err(self.error(
                    line_of("kind:"),
                    format!("kind {what} needs a `{key}:` block"),
                ))
            }
        };
        let forbid = |present: bool, key: &str| -> Result<(), DetectError> {
            if present {
                Err(self.error(
                    line_of(&format!("{key}:")),
                    format!("`{key}:` does not apply to kind {:?}", c.kind),
                ))
            } else {
                Ok(())
            }
        };
        match c.kind {
            RuleKind::Match => {
                forbid(c.window.is_some(), "window")?;
                forbid(c.threshold.is_some(), "threshold")?;
                forbid(c.sequence.is_some(), "sequence")?;
                forbid(c.baseline.is_some(), "baseline")?;
                forbid(c.lifetime.is_some(), "lifetime")?;
            }
            RuleKind::Threshold => {
                need(c.window.is_some(), "threshold", "window")?;
                need(c.threshold.is_some(), "threshold", "threshold")?;
                forbid(c.sequence.is_some(), "sequence")?;
                forbid(c.baseline.is_some(), "baseline")?;
                forbid(c.lifetime.is_some(), "lifetime")?;
                let w = c.window.as_ref().map(|w| w.size.clone());
                dur("window:", &w)?;
                if w.as_deref().and_then(parse_duration_us) == Some(0) {
                    return Err(self.error(line_of("window:"), "window size must be > 0"));
                }
                if let Some(t) = &c.threshold
                    && t.aggregate != Aggregate::Count
                    && t.column.is_none()
                {
                    return Err(self.error(
                        line_of("threshold:"),
                        "aggregate distinct/sum/top needs a `column`",
                    ));
                }
                if let Some(t) = &c.threshold
                    && let Some(share) = t.min_share
                {
                    if !matches!(t.aggregate, Aggregate::Distinct | Aggregate::Top) {
                        return Err(self.error(
                            line_of("threshold:"),
                            "min_share applies to aggregate distinct or top only",
                        ));
                    }
                    if !(0.0..=1.0).contains(&share) {
                        return Err(self.error(
                            line_of("threshold:"),
                            format!("min_share {share} is not in 0..=1"),
                        ));
                    }
                }
            }
            RuleKind::Sequence => {
                need(c.sequence.is_some(), "sequence", "sequence")?;
                forbid(c.window.is_some(), "window")?;
                forbid(c.threshold.is_some(), "threshold")?;
                forbid(c.baseline.is_some(), "baseline")?;
                forbid(c.lifetime.is_some(), "lifetime")?;
                let s = c.sequence.as_ref().map(|s| s.within.clone());
                dur("sequence:", &s)?;
                if c.sequence.as_ref().is_some_and(|s| s.steps.len() < 2) {
                    return Err(
                        self.error(line_of("sequence:"), "a sequence needs at least 2 steps")
                    );
                }
            }
            RuleKind::Baseline => {
                need(c.baseline.is_some(), "baseline", "baseline")?;
                forbid(c.window.is_some(), "window")?;
                forbid(c.threshold.is_some(), "threshold")?;
                forbid(c.sequence.is_some(), "sequence")?;
                forbid(c.lifetime.is_some(), "lifetime")?;
                if let Some(b) = &c.baseline {
                    if b.key.is_empty() || b.value.is_empty() {
                        return Err(self.error(
                            line_of("baseline:"),
                            "baseline needs non-empty `key` and `value`",
                        ));
                    }
                    dur("baseline:", &b.learn)?;
                    dur("baseline:", &b.forget)?;
                }
            }
            RuleKind::Lifetime => {
                need(c.lifetime.is_some(), "lifetime", "lifetime")?;
                forbid(c.window.is_some(), "window")?;
                forbid(c.threshold.is_some(), "threshold")?;
                forbid(c.sequence.is_some(), "sequence")?;
                forbid(c.baseline.is_some(), "baseline")?;
                if let Some(l) = &c.lifetime {
                    dur("lifetime:", &l.idle)?;
                    dur("lifetime:", &l.absolute)?;
                    dur("lifetime:", &l.forget)?;
                    let set = |v: &Option<String>| {
                        v.as_deref().and_then(parse_duration_us).unwrap_or(0) > 0
                    };
                    if !set(&l.idle) && !set(&l.absolute) {
                        return Err(self.error(
                            line_of("lifetime:"),
                            "lifetime needs a non-zero `idle` or `absolute` (or both)",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn load_exceptions(&mut self, line: Option<usize>) -> Result<(), DetectError> {
        let base = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        for e in self.config.exceptions.clone() {
            let file = base.join(&e.file);
            let bytes = std::fs::read(&file).map_err(|err| {
                self.error(line, format!("exception file {}: {err}", file.display()))
            })?;
            let values = String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            self.exceptions.push(LoadedException {
                column: e.column.clone(),
                file,
                values,
                sha256: hex::encode(Sha256::digest(&bytes)),
            });
        }
        Ok(())
    }

    /// Hash of everything that defines the meaning of this rule's state
    /// (kind, parameters, query, entity). State persisted under another key
    /// is discarded on load.
    pub fn state_key(&self) -> String {
        let c = &self.config;
        let mut text = serde_json::json!({
            "kind": c.kind, "window": c.window, "threshold": c.threshold,
            "sequence": c.sequence, "baseline": c.baseline, "query": c.query,
            "entity": c.entity,
        });
        // only when set, so the keys of the other kinds stay what they were
        if let Some(l) = &c.lifetime {
            text["lifetime"] = serde_json::json!(l);
        }
        hex::encode(Sha256::digest(text.to_string().as_bytes()))
    }

    fn validate_metadata(&self) -> Result<(), DetectError> {
        let c = &self.config;
        let id_ok = !c.id.is_empty()
            && c.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && c.id.as_bytes()[0].is_ascii_alphanumeric();
        if !id_ok {
            return Err(self.error(None, format!("id {:?} must match [a-z0-9][a-z0-9-]*", c.id)));
        }
        if let Some(stem) = self.path.file_stem().and_then(|s| s.to_str())
            && stem != c.id
            && !self.from_sigma_file
        {
            return Err(self.error(
                None,
                format!("id {:?} does not match the file name {stem:?}", c.id),
            ));
        }
        if c.title.trim().is_empty() || c.description.trim().is_empty() {
            return Err(self.error(None, "title and description must not be empty"));
        }
        // A Sigma rule keeps its own tags (ATT&CK, …) and may come without tests.
        let sigma = c.sigma.is_some();
        if !sigma && !c.tags.iter().any(|t| is_owasp_mcp_tag(t)) {
            return Err(self.error(
                None,
                "tags need an OWASP MCP Top 10 tag like owasp-mcp:MCP05",
            ));
        }
        if !sigma && !c.tags.iter().any(|t| is_atlas_tag(t)) {
            return Err(self.error(None, "tags need a MITRE ATLAS tag like atlas:AML.T0051"));
        }
        for t in &c.tags {
            if t.starts_with("owasp-mcp:") && !is_owasp_mcp_tag(t) {
                return Err(self.error(None, format!("malformed OWASP MCP tag {t:?}")));
            }
            if t.starts_with("atlas:") && !is_atlas_tag(t) {
                return Err(self.error(None, format!("malformed ATLAS tag {t:?}")));
            }
        }
        if c.entity.is_empty() {
            return Err(self.error(None, "entity must name at least one output column"));
        }
        if c.tests.is_empty() && !sigma {
            return Err(self.error(None, "a rule needs at least one inline test"));
        }
        if c.response == Some(ResponseAction::IsolateServer) && c.level != Level::Emergency {
            return Err(self.error(None, "response isolate_server is reserved for level 3"));
        }
        Ok(())
    }
}

pub(crate) fn is_owasp_mcp_tag(t: &str) -> bool {
    t.strip_prefix("owasp-mcp:MCP")
        .and_then(|n| n.parse::<u8>().ok().filter(|_| n.len() == 2))
        .is_some_and(|n| (1..=10).contains(&n))
}

pub(crate) fn is_atlas_tag(t: &str) -> bool {
    let Some(rest) = t.strip_prefix("atlas:AML.") else {
        return false;
    };
    let Some(body) = rest.strip_prefix('T').or_else(|| rest.strip_prefix("TA")) else {
        return false;
    };
    let mut parts = body.split('.');
    let main_ok = parts
        .next()
        .is_some_and(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()));
    let sub_ok = parts.all(|p| p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()));
    main_ok && sub_ok
}

/// Deepest nesting of YAML flow collections (`{`, `[`) a rule file may have.
/// The YAML parser's time grows with the square of that nesting (found by
/// AFL: 10 KB of `{` cost 2.4 s, 20 KB 19 s); rules need a few levels.
pub(crate) const MAX_FLOW_NESTING: usize = 128;

/// Refuses a text whose `{` / `[` nest deeper than [`MAX_FLOW_NESTING`]
/// before the YAML parser sees it: `(line, reason)`. Brackets are counted
/// over the raw text, in strings and comments too (so the bound is loose,
/// never tight: unmatched brackets of regexes only add a level each).
pub(crate) fn flow_nesting(text: &str) -> Result<(), (usize, String)> {
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        for b in line.bytes() {
            match b {
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_FLOW_NESTING {
                        return Err((
                            i + 1,
                            format!(
                                "YAML flow collections ({{ or [) nested more than {MAX_FLOW_NESTING} deep"
                            ),
                        ));
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Loads every `*.yaml` / `*.yml` below `dir` (sorted by path), refusing the
/// whole set on the first invalid file or a repeated id.
pub fn load_dir(dir: &Path) -> Result<Vec<LoadedRule>, DetectError> {
    let mut files = Vec::new();
    collect_rule_files(dir, &mut files)?;
    files.sort();
    let mut rules: Vec<LoadedRule> = Vec::with_capacity(files.len());
    let mut sigma_files = Vec::new();
    let mut loaded = Vec::with_capacity(files.len());
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| DetectError::Io {
            path: f.display().to_string(),
            source: e,
        })?;
        if crate::sigma::is_sigma(&bytes) {
            sigma_files.push((f, bytes));
        } else {
            loaded.push(LoadedRule::from_bytes(&f, &bytes)?);
        }
    }
    // Sigma files are converted together: correlations may name rules of
    // other files. Any refusal refuses the set (nothing dropped silently).
    for outcome in crate::sigma::convert(&sigma_files) {
        if let Some(rule) = outcome.result? {
            loaded.push(rule);
        }
    }
    for rule in loaded {
        if let Some(prev) = rules.iter().find(|r| r.config.id == rule.config.id) {
            return Err(rule.error(
                None,
                format!(
                    "duplicate rule id {:?} (also in {})",
                    rule.config.id,
                    prev.path.display()
                ),
            ));
        }
        rules.push(rule);
    }
    if rules.is_empty() {
        return Err(DetectError::Rule {
            file: dir.display().to_string(),
            line: None,
            message: "no rule files (*.yaml) found".into(),
        });
    }
    Ok(rules)
}

pub(crate) fn collect_rule_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DetectError> {
    let io = |e| DetectError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_rule_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"id: demo-rule
title: Demo
description: A demo rule.
severity: high
level: 1
tags: [owasp-mcp:MCP05, atlas:AML.T0051.001]
entity: [session_id]
query: |
  SELECT event_id, ts, session_id FROM events
tests:
  - name: t
    expect: 0
    input: []
"#;

    fn parse(text: &str) -> Result<LoadedRule, DetectError> {
        LoadedRule::from_bytes(Path::new("rules/x/demo-rule.yaml"), text.as_bytes())
    }

    #[test]
    fn parses_a_valid_rule() {
        let r = parse(GOOD).expect("valid");
        assert_eq!(r.config.level, Level::Automated);
        assert_eq!(r.config.severity, Severity::High);
        assert_eq!(r.query_line, 8);
        assert_eq!(r.sha256.len(), 64);
    }

    /// AFL finding (`fuzz/findings/rule-slow-yaml-flow-nesting.yaml`): a test
    /// input opened 10,712 `{` and took the YAML parser 2.4 s; past the
    /// bound the file is refused, naming the line, before it is parsed.
    #[test]
    fn deeply_nested_flow_collections_are_refused_before_parsing() {
        let deep = GOOD.replace(
            "    input: []",
            &format!("    input: [{}", "{".repeat(20_000)),
        );
        let err = parse(&deep).unwrap_err().to_string();
        assert!(err.contains("demo-rule.yaml:13"), "{err}");
        assert!(err.contains("nested more than 128 deep"), "{err}");
        let finding = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/findings/rule-slow-yaml-flow-nesting.yaml"),
        )
        .expect("finding");
        let err = LoadedRule::from_bytes(Path::new("f.yaml"), &finding)
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.yaml:35"), "{err}");
        // At the bound the parser decides (here: a valid nested value).
        let at_bound = GOOD.replace(
            "    input: []",
            &format!("    input: {}{}", "[".repeat(127), "]".repeat(127)),
        );
        assert!(flow_nesting(&at_bound).is_ok());
        assert!(flow_nesting(&"[".repeat(129)).is_err());
    }

    #[test]
    fn rejects_bad_level_with_line() {
        let err = parse(&GOOD.replace("level: 1", "level: 4")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("demo-rule.yaml:5"), "{msg}");
        assert!(msg.contains("level 1, 2 or 3"), "{msg}");
    }

    #[test]
    fn rejects_unknown_keys_missing_tags_and_id_mismatch() {
        let e = parse(&GOOD.replace("entity:", "colour: red\nentity:")).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = parse(&GOOD.replace("owasp-mcp:MCP05, ", "")).unwrap_err();
        assert!(e.to_string().contains("OWASP"), "{e}");
        let e = parse(&GOOD.replace("atlas:AML.T0051.001", "atlas:T51")).unwrap_err();
        assert!(e.to_string().contains("ATLAS"), "{e}");
        let e = parse(&GOOD.replace("id: demo-rule", "id: other")).unwrap_err();
        assert!(e.to_string().contains("file name"), "{e}");
        let e = parse(&GOOD.replace("severity: high", "severity: urgent")).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn tag_shapes() {
        assert!(is_owasp_mcp_tag("owasp-mcp:MCP10"));
        assert!(!is_owasp_mcp_tag("owasp-mcp:MCP11"));
        assert!(!is_owasp_mcp_tag("owasp-mcp:MCP1"));
        assert!(is_atlas_tag("atlas:AML.T0051"));
        assert!(is_atlas_tag("atlas:AML.T0051.001"));
        assert!(!is_atlas_tag("atlas:AML.T51"));
    }
}
