//! Every shipped rule parses, plans, and passes its inline tests.

use std::path::PathBuf;

use dunes_detect::{Engine, Level, load_dir, testing::run_inline_tests};

fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_rules_pass_their_inline_tests() {
    let rules = load_dir(&pack_dir()).expect("rule pack loads");
    assert!(rules.len() >= 10, "only {} rules shipped", rules.len());
    for level in [Level::Automated, Level::Analyst, Level::Emergency] {
        assert!(
            rules.iter().any(|r| r.config.level == level),
            "no rule at level {level:?}"
        );
    }
    for r in &rules {
        let t = &r.config.tests;
        assert!(
            t.iter().any(|t| t.expect > 0),
            "{}: no positive test",
            r.config.id
        );
        assert!(
            t.iter().any(|t| t.expect == 0),
            "{}: no negative test",
            r.config.id
        );
    }
    let engine = Engine::new(rules).await.expect("rule pack plans");
    let outcomes = run_inline_tests(&engine).await;
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} inline rule tests failed:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
}
