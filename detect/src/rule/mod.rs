//! Rule files: configuration, loading and validation.

mod config;

pub use config::{
    Aggregate, BaselineSpec, BaselineWhen, ExceptionSpec, Level, LifetimeSpec, LoadedException,
    LoadedRule, ResponseAction, RuleConfig, RuleKind, RuleTest, SequenceSpec, Severity,
    SigmaOrigin, TestRepeat, ThresholdSpec, WindowSpec, WindowType, load_dir, parse_duration_us,
};
pub(crate) use config::{collect_rule_files, flow_nesting, is_atlas_tag, is_owasp_mcp_tag};
