//! Rule files: configuration, loading and validation.

mod config;

pub use config::{Level, LoadedRule, ResponseAction, RuleConfig, RuleTest, Severity, load_dir};
