//! Shell completions and man pages generated from the CLI definition.

mod common;

use common::{dunes, run_ok};

#[test]
fn completions_cover_every_subcommand() {
    let out = run_ok(dunes().args(["completions", "bash"]));
    let bash = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        bash.contains("complete -F _dunes"),
        "not a bash completion script"
    );
    for sub in [
        "run",
        "replay",
        "verify",
        "checkpoint",
        "token",
        "completions",
        "man",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(bash.contains("--trusted-checkpoint"));
    let out = run_ok(dunes().args(["completions", "zsh"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("#compdef dunes"));
    let err = dunes().args(["completions", "tcsh"]).output().expect("run");
    assert!(!err.status.success(), "an unknown shell is refused");
}

#[test]
fn man_pages_for_the_command_and_each_subcommand() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("man1");
    run_ok(dunes().arg("man").arg("--out-dir").arg(&dir));
    let page = |name: &str| {
        std::fs::read_to_string(dir.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"))
    };
    assert!(page("dunes").starts_with(".ie \\n(.g .ds Aq \\(aq"));
    assert!(page("dunes").contains(".TH dunes 1"));
    let verify = page("dunes-verify");
    assert!(verify.contains(".TH dunes-verify 1"), "{verify}");
    assert!(verify.contains("trusted\\-checkpoint"), "{verify}");
    assert!(page("dunes-checkpoint-publish").contains("to\\-kafka"));
    assert!(page("dunes-token-issue").contains("role"));
    // one page per subcommand, nested ones included, no page for `help`
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    assert!(names.len() >= 25, "{names:?}");
}

#[test]
fn doctor_passes_on_a_fresh_deployment_and_names_what_is_wrong() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/corpus/mcp-sample.ndjson"
    );
    run_ok(
        dunes()
            .arg("replay")
            .arg("--data-dir")
            .arg(&data)
            .arg(sample),
    );
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(&cfg, "[http]\nlisten = \"127.0.0.1:0\"\n").expect("config");
    let doctor = || {
        dunes()
            .arg("doctor")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("doctor")
    };
    let out = doctor();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for check in [
        "data dir",
        "private keys",
        "ledger",
        "clock",
        "disk",
        "rules",
        "http",
        "kafka",
    ] {
        assert!(
            text.lines().any(|l| l.contains(check)),
            "no {check} line:\n{text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(
        text.contains("31 rules planned") || text.contains("rules planned"),
        "{text}"
    );

    // A private key readable by others is a failure naming the file.
    let seed = data.join("keys/ledger-mldsa65-0.seed");
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = doctor();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("ledger-mldsa65-0.seed")
            && l.contains("644")),
        "{text}"
    );
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // An unreachable broker fails within the probe's timeout.
    std::fs::write(
        &cfg,
        "[http]\nenabled = false\n\n[kafka]\nenabled = true\nbrokers = \"127.0.0.1:1\"\ntopics = [\"mcp\"]\n",
    )
    .expect("config");
    let t = std::time::Instant::now();
    let out = doctor();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("kafka")),
        "{text}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn ledger_prune_leaves_a_verifiable_tombstone_and_refuses_short_retention() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let cfg_path = tmp.path().join("dunes.toml");
    std::fs::write(&cfg_path, "[ledger]\norigin = \"dunes/cli-prune\"\n").expect("config");
    // A ledger with small segments, written "two years ago" but for its last segment.
    let mut c = dunes_ledger::LedgerConfig::new(&data, "dunes/cli-prune");
    c.segment_max_bytes = 4096;
    c.rotate_every = None;
    let mut l = dunes_ledger::Ledger::open(c).expect("open");
    for i in 0..200u64 {
        let p = format!("{{\"event\":{i},\"pad\":\"{}\"}}", "p".repeat(100));
        l.append(dunes_ledger::RecordKind::Event, 0, p.as_bytes(), &[])
            .expect("append");
    }
    l.close().expect("close");
    let segments =
        dunes_ledger::backdate_segments(&data, std::time::Duration::from_secs(2 * 365 * 86_400))
            .expect("backdate");
    let prune = |days: &str| {
        dunes()
            .args(["ledger", "prune", "--retention-days", days, "--config"])
            .arg(&cfg_path)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run")
    };
    let short = prune("30");
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least 183"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let out = prune("365");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    let pruned = summary["pruned"].as_u64().expect("pruned");
    assert_eq!(
        summary["segments_removed"].as_u64(),
        Some(segments as u64 - 1)
    );
    let again = prune("365");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to prune"));
    let v = run_ok(dunes().arg("verify").arg(&data));
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.contains(&format!("records 0 .. {} removed by retention", pruned - 1)),
        "{text}"
    );
    // The prune itself is in the ledger, by whom.
    let mut found = None;
    dunes_ledger::for_each_record(&data, 0, |r| {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(r.payload)
            && v["type"] == "ledger_retention"
        {
            found = Some(v);
        }
    })
    .expect("walk");
    let found = found.expect("a ledger_retention action record");
    assert_eq!(found["pruned"].as_u64(), Some(pruned));
    assert!(
        found["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("cli:"))
    );
}

#[test]
fn maml_check_and_sign_round_trip() {
    let tmp = tempfile::tempdir().expect("tmp");
    let doc = "---\nmaml_version: \"2.0.0\"\nid: \"urn:uuid:9a8b7c6d-1234-4e5f-8a9b-0c1d2e3f4a5b\"\ntype: \"workflow\"\norigin: \"agent://etl-agent\"\npermissions:\n  execute: [\"gateway://batch\"]\nverification:\n  method: \"ml-dsa-65\"\n  level: \"strict\"\n---\n## Intent\nLoad the orders.\n\n## Code_Blocks\n```bash\nmake load\n```\n";
    let file = tmp.path().join("load.maml.md");
    std::fs::write(&file, doc).expect("write");
    // declared ML-DSA, no signature: reported, non-zero exit
    let out = dunes()
        .args(["maml", "check"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json line");
    assert_eq!(line["valid"], true);
    assert_eq!(line["sig_status"], "missing");
    // sign it, configure the key, insert the signature: valid
    let keys = tmp.path().join("keys");
    let out = run_ok(
        dunes()
            .args(["maml", "sign", "--key-dir"])
            .arg(&keys)
            .arg(&file),
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .expect(k)
            .trim()
            .to_string()
    };
    let (sig, pk) = (field("signature:"), field("public_key:"));
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(
        &cfg,
        format!("[[ingest.maml_keys]]\norigin = \"agent://etl-agent\"\nalgorithm = \"ml-dsa-65\"\npublic_key = \"{pk}\"\n"),
    )
    .expect("config");
    let signed = doc.replace(
        "  level: \"strict\"\n",
        &format!("  level: \"strict\"\n  signature: \"{sig}\"\n"),
    );
    std::fs::write(&file, &signed).expect("write");
    let check = || {
        let out = dunes()
            .args(["maml", "check", "--config"])
            .arg(&cfg)
            .arg(&file)
            .output()
            .expect("run");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        (
            out.status.success(),
            v["sig_status"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(check(), (true, "valid".to_string()));
    std::fs::write(
        &file,
        signed.replace("Load the orders.", "Load and export the orders."),
    )
    .expect("write");
    assert_eq!(check(), (false, "invalid".to_string()));
}

/// `dunes bench --input` runs the pipeline bench over recorded envelopes and
/// lists the costliest rules of the shipped pack, most expensive first.
#[test]
fn bench_over_a_recorded_file_lists_the_costliest_rules() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = root.join("examples/corpus/mcp-sample.ndjson");
    let lines = std::fs::read_to_string(&sample)
        .expect("sample")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = run_ok(
        dunes()
            .arg("bench")
            .arg("--input")
            .arg(&sample)
            .args(["--batch-size", "1024", "--data-dir"])
            .arg(tmp.path()),
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.contains(&format!("dunes bench: {lines} envelopes read from")),
        "{text}"
    );
    let counts = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("events: "))
        .expect("counts line");
    let n = |s: &str| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let accepted = n(counts).expect("events");
    let rejected = counts
        .split("rejected: ")
        .nth(1)
        .and_then(n)
        .expect("rejected");
    assert_eq!(accepted + rejected, lines, "{text}");
    let listed: Vec<(String, f64)> = text
        .lines()
        .skip_while(|l| !l.contains("costliest rules:"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next().expect("id").to_string();
            let secs = f
                .next()
                .and_then(|s| s.trim_end_matches('s').parse().ok())
                .expect("seconds");
            (id, secs)
        })
        .collect();
    assert_eq!(listed.len(), 10, "{text}");
    for w in listed.windows(2) {
        assert!(w[0].1 >= w[1].1, "most expensive first: {text}");
    }
    let shipped = |id: &str| {
        std::fs::read_dir(root.join("rules"))
            .expect("rules")
            .flatten()
            .any(|d| d.path().join(format!("{id}.yaml")).exists())
    };
    for (id, _) in &listed {
        assert!(shipped(id), "{id} is a shipped rule: {text}");
    }
    assert!(text.contains("  regex prefilter: rows skipped "), "{text}");
}

#[test]
fn logs_to_a_pipe_are_plain_text() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = root.join("examples/corpus/mcp-sample.ndjson");
    let tmp = tempfile::tempdir().expect("tmp");
    let out = run_ok(
        dunes()
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .arg("replay")
            .arg("--data-dir")
            .arg(tmp.path())
            .arg(&sample),
    );
    let log = String::from_utf8(out.stderr).expect("utf-8");
    assert!(log.contains(" INFO "), "no INFO line in:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in piped logs:\n{log}"
    );
}
