//! A hostile input file through the real binary (`dunes replay`): every bad
//! line is dead-lettered with its reason, every acceptable one ledgered, the
//! pipeline finishes, memory stays bounded with a 100 MB line, and the
//! ledger verifies.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::{dunes, run_ok};

const HEAD: &str =
    r#""ts":"2026-11-20T08:00:00Z","server_id":"files@prod-1","session_id":"h1","direction":"c2s""#;

fn call(id: u32, args: &str) -> Vec<u8> {
    format!(
        r#"{{{HEAD},"event_id":"h-{id}","message":{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read_file","arguments":{args}}}}}}}"#
    )
    .into_bytes()
}

/// 0-based index of `what` in `line`.
fn find(line: &[u8], what: &[u8]) -> usize {
    line.windows(what.len())
        .position(|w| w == what)
        .expect("present")
}

/// (line, what it is, the dead-letter reason or `None` when it is accepted).
fn corpus() -> Vec<(Vec<u8>, &'static str, Option<String>)> {
    let huge_line = {
        let mut l = format!(r#"{{{HEAD},"message":{{"x":""#).into_bytes();
        l.resize(l.len() + 100_000_000, b'a');
        l.extend_from_slice(b"\"}}");
        l
    };
    let huge_len = huge_line.len();
    // serde_json stops at nesting level 128: the envelope, message, params
    // and arguments objects are 4 levels, so the 124th `[` is refused
    let deep = call(
        4,
        &format!(
            r#"{{"deep":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    );
    let deep_col = find(&deep, b"[[") + 124;
    let mut bad_utf8 = call(5, r#"{"path":"/tmp/x"}"#);
    let utf8_at = bad_utf8.len() - 10;
    bad_utf8[utf8_at] = 0xff;
    let mut raw_nul = call(6, r#"{"path":"/tmp/x"}"#);
    let nul_at = raw_nul.len() - 9;
    raw_nul[nul_at] = 0;
    let out_of_range = call(9, r#"{"n":1e400}"#);
    // columns are 1-based; the error points at the number's last digit
    let range_col = find(&out_of_range, b"1e400") + 5;
    let big_array = format!(
        r#"{{"v":[{}]}}"#,
        std::iter::repeat_n("0", 200_000)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut bom = vec![0xef, 0xbb, 0xbf];
    bom.extend(call(15, "{}"));
    vec![
        (call(1, r#"{"path":"/etc/hosts"}"#), "good", None),
        (
            huge_line,
            "100 MB line",
            Some(format!("line is {huge_len} bytes, limit 1048576")),
        ),
        (call(3, r#"{"path":"/srv/a"}"#), "good", None),
        (
            deep,
            "10,000-deep nesting",
            Some(format!(
                "invalid JSON: recursion limit exceeded at line 1 column {deep_col}"
            )),
        ),
        (
            bad_utf8,
            "invalid UTF-8",
            Some(format!("invalid UTF-8 at byte {utf8_at}")),
        ),
        (
            raw_nul,
            "raw NUL byte in a string",
            Some(format!(
                "invalid JSON: control character (\\u0000-\\u001F) found while parsing a string at line 1 column {}",
                nul_at + 1
            )),
        ),
        (call(7, r#"{"path":"a\u0000b"}"#), "escaped NUL", None),
        (call(8, &big_array), "200,000-element array", None),
        (
            out_of_range,
            "number out of range",
            Some(format!(
                "invalid JSON: number out of range at line 1 column {range_col}"
            )),
        ),
        (
            call(
                10,
                r#"{"a":-0,"b":1.7976931348623157e308,"c":18446744073709551616,"d":-9223372036854775809,"e":5e-324}"#,
            ),
            "numeric edge cases",
            None,
        ),
        (
            call(11, r#"{"path":"/a","path":"/b","path":"/etc/shadow"}"#),
            "duplicate keys",
            None,
        ),
        (
            b"[1,2,3]".to_vec(),
            "array",
            Some("envelope must be a JSON object, got array".into()),
        ),
        (
            b"\"just a string\"".to_vec(),
            "string",
            Some("envelope must be a JSON object, got string".into()),
        ),
        (
            br#"{"ts":"2026-11-20T08:00"#.to_vec(),
            "truncated",
            Some("invalid JSON: EOF while parsing a string at line 1 column 23".into()),
        ),
        (
            bom,
            "byte-order mark",
            Some("invalid JSON: expected value at line 1 column 1".into()),
        ),
        (
            b"{}".to_vec(),
            "empty object",
            Some("missing required field \"ts\"".into()),
        ),
        (call(17, r#"{"path":"/srv/z"}"#), "good", None),
    ]
}

/// Highest `VmHWM` (peak RSS, KiB) seen while `pid` runs.
fn watch_peak_rss(pid: u32, done: &std::sync::atomic::AtomicBool) -> u64 {
    let mut peak = 0;
    let path = format!("/proc/{pid}/status");
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(s) = std::fs::read_to_string(&path)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    peak
}

fn ledgered_events(data: &Path) -> usize {
    let out = run_ok(dunes().arg("verify").arg(data));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("RESULT: OK"), "{text}");
    text.lines()
        .find_map(|l| l.split("event: ").nth(1))
        .and_then(|r| r.split([',', ')']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_lines_are_dead_lettered_with_reasons_and_the_rest_is_ledgered() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("hostile.ndjson");
    let corpus = corpus();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
    for (line, _, _) in &corpus {
        f.write_all(line).expect("write");
        f.write_all(b"\n").expect("write");
    }
    f.flush().expect("flush");
    drop(f);
    let data = tmp.path().join("data");

    let child = dunes()
        .arg("replay")
        .arg("--data-dir")
        .arg(&data)
        .arg(&input)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let done = std::sync::atomic::AtomicBool::new(false);
    let pid = child.id();
    let (peak_kib, out) = std::thread::scope(|s| {
        let w = s.spawn(|| watch_peak_rss(pid, &done));
        let out = child.wait_with_output().expect("wait");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (w.join().expect("watcher"), out)
    });
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("peak RSS of dunes replay: {peak_kib} KiB");
    assert!(
        peak_kib > 0 && peak_kib < 400 * 1024,
        "peak RSS {peak_kib} KiB with a 100 MB line: not bounded by max_line_bytes"
    );

    // Golden: (line number, reason) of every dead letter, in order.
    let dead: Vec<(String, String)> = std::fs::read_to_string(data.join("dead-letter.ndjson"))
        .expect("dead letters")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let src = v["source"].as_str().expect("source").to_string();
            let line = src.rsplit(':').next().expect("line").to_string();
            (line, v["reason"].as_str().expect("reason").to_string())
        })
        .collect();
    let want: Vec<(String, String)> = corpus
        .iter()
        .enumerate()
        .filter_map(|(i, (_, _, r))| r.clone().map(|r| ((i + 1).to_string(), r)))
        .collect();
    assert_eq!(dead, want);

    // Everything else is in the ledger, which verifies.
    let accepted = corpus.iter().filter(|(_, _, r)| r.is_none()).count();
    assert_eq!(ledgered_events(&data), accepted);
    let kinds: Vec<&str> = corpus
        .iter()
        .filter(|(_, _, r)| r.is_none())
        .map(|(_, k, _)| *k)
        .collect();
    assert_eq!(
        kinds,
        [
            "good",
            "good",
            "escaped NUL",
            "200,000-element array",
            "numeric edge cases",
            "duplicate keys",
            "good"
        ]
    );
}
