//! A syntax check of SQL that comes from outside — rule files, `POST /api/v1/rules/validate`,
//! hunting queries — with a current sqlparser, before DataFusion parses it.
//!
//! DataFusion 55 pins sqlparser 0.62, whose speculative parsing (`maybe_parse` after a `.`,
//! reserved words tried as expression heads) re-walks the rest of the input on every
//! failure: some malformed inputs of a few hundred bytes take seconds to hours
//! (`fuzz/findings/`, docs/security.md). The recursion limit does not bound it. sqlparser
//! 0.63 fixed those paths (apache/datafusion-sqlparser-rs #2344, #2350, #2352); this
//! check rejects such text in microseconds, so 0.62 only ever sees SQL that parses.

use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};

/// Parses `sql` (any number of statements, DataFusion's default generic dialect) and
/// returns the parser's error if it is not valid SQL. What the statements are allowed to
/// do is for the caller to check.
pub fn check_syntax(sql: &str) -> Result<(), ParserError> {
    Parser::parse_sql(&GenericDialect {}, sql).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input AFL found to hang sqlparser 0.62 is rejected (this test would not
    /// finish in CI's time if the gate regressed: the first takes ~8 CPU-seconds in 0.62
    /// and each added level doubles it).
    #[test]
    fn rejects_the_inputs_that_hang_sqlparser_0_62() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/findings");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("fuzz/findings") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "sql") {
                let sql =
                    String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
                assert!(check_syntax(&sql).is_err(), "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen > 0, "no findings in {dir}");
        // The shapes of the upstream reports, 30 levels deep.
        let chains = [
            format!("SELECT {}", "case\t-".repeat(30)),
            format!(
                "SELECT 1 FROM events WHERE {}",
                "if(current_time(".repeat(30)
            ),
            format!("SELECT IF {}.#", vec!["a"; 30].join(".")),
            format!("SELECT x{}", "-not-b.".repeat(30)),
        ];
        for sql in &chains {
            assert!(check_syntax(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn accepts_what_datafusion_runs() {
        for sql in [
            "SELECT server_id, count(*) AS n FROM events WHERE ts > now() - INTERVAL '1 hour' GROUP BY 1 ORDER BY n DESC LIMIT 10",
            "WITH t AS (SELECT * FROM events) SELECT a.b.c, x['k'], CAST(y AS BIGINT) FROM t WHERE z IN (SELECT 1) AND regexp_like(m, '(?i)x')",
            "SELECT CASE WHEN NOT a THEN 1 ELSE 2 END, coalesce(session_id, concat('principal:', principal)) FROM events",
        ] {
            assert!(check_syntax(sql).is_ok(), "{sql}");
        }
        assert!(check_syntax("SELECT FROM WHERE (").is_err());
    }
}
