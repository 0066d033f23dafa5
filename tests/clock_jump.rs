//! Fault: the wall clock jumps backwards under a running monitor (NTP step,
//! a VM restored from a snapshot). `dunes run` runs under libfaketime
//! (Debian's `faketime`; `.ci/run` installs it) with a clock 2 hours ahead,
//! ingests, then the clock steps back 3 hours while it runs; it ingests
//! again, stops, and starts once more on the earlier clock. Every batch is
//! acknowledged and detected, and the ledger verifies with the real clock:
//! signed checkpoints never go back in time (a verifier rejects that), the
//! records' own event times are not required to.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Running, labels, sample, sigterm_and_wait};
use serde_json::Value;

const LIBS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

/// `dunes` on the faked clock of `clock_file` (`+2h`, `-1h`, … from now).
fn faked(clock_file: &Path) -> Command {
    let lib = LIBS
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("libfaketime (Debian package faketime) is needed: .ci/run installs it");
    let mut c = common::dunes();
    c.env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", clock_file)
        .env("FAKETIME_NO_CACHE", "1")
        // a real step moves CLOCK_REALTIME only
        .env("DONT_FAKE_MONOTONIC", "1");
    c
}

fn token(clock: &Path, dir: &Path, role: &str) -> String {
    let out = faked(clock)
        .args([
            "token", "issue", "--sub", "clock", "--role", role, "--ttl", "5m",
        ])
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).expect("utf8");
    format!("Bearer {}", t.lines().last().expect("token line").trim())
}

fn start(clock: &Path, cfg: &Path, dir: &Path) -> (Running, String) {
    common::start_run(faked(clock), Some(cfg), dir)
}

/// Posts every line of `session`; returns the acknowledgement.
fn ingest(base: &str, auth: &str, lines: &[String]) -> Value {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut resp = ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", auth)
        .header("content-type", "application/x-ndjson")
        .send(body.as_bytes())
        .expect("ingest");
    assert_eq!(resp.status().as_u16(), 202);
    resp.body_mut().read_json().expect("ack")
}

/// Seconds since the epoch on the faked clock.
fn now_on(clock: &Path) -> i64 {
    let d = Command::new("date")
        .arg("+%s")
        .env(
            "LD_PRELOAD",
            LIBS.iter().find(|p| Path::new(p).exists()).expect("lib"),
        )
        .env("FAKETIME_TIMESTAMP_FILE", clock)
        .env("FAKETIME_NO_CACHE", "1")
        .output()
        .expect("date");
    String::from_utf8_lossy(&d.stdout)
        .trim()
        .parse()
        .expect("seconds")
}

#[test]
fn the_clock_stepping_back_loses_nothing_and_the_ledger_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let clock: PathBuf = tmp.path().join("clock");
    std::fs::write(&clock, "+2h\n").expect("clock");
    let real = chrono::Utc::now().timestamp();
    assert!(
        now_on(&clock) > real + 7000,
        "libfaketime does not shift the clock"
    );
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(
        &cfg,
        "[ledger]\ncheckpoint_every_records = 1\ncheckpoint_interval_ms = 200\n",
    )
    .expect("config");
    let dir = tmp.path().join("data");

    // three attack sessions of the sample, one per phase
    let labels = labels();
    let text = std::fs::read_to_string(sample()).expect("sample");
    let mut sessions: Vec<String> = Vec::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).expect("json");
        if let Some(s) = v["session_id"].as_str()
            && labels
                .get(s)
                .is_some_and(|x| x != "benign" && x != "recon_anomaly")
            && !sessions.iter().any(|x| x == s)
        {
            sessions.push(s.to_string());
        }
    }
    assert!(sessions.len() >= 3);
    let lines_of = |s: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&format!("\"session_id\":\"{s}\"")))
            .map(str::to_string)
            .collect()
    };

    let (mut mon, base) = start(&clock, &cfg, &dir);
    let a1 = ingest(
        &base,
        &token(&clock, &dir, "ingest"),
        &lines_of(&sessions[0]),
    );
    // the clock steps back 3 hours under the running monitor
    std::fs::write(&clock, "-1h\n").expect("clock");
    assert!(now_on(&clock) < real);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let a2 = ingest(
        &base,
        &token(&clock, &dir, "ingest"),
        &lines_of(&sessions[1]),
    );
    sigterm_and_wait(&mut mon);
    // a restart on the earlier clock (the last checkpoint is "in the future")
    let (mut mon, base) = start(&clock, &cfg, &dir);
    let a3 = ingest(
        &base,
        &token(&clock, &dir, "ingest"),
        &lines_of(&sessions[2]),
    );
    sigterm_and_wait(&mut mon);

    for (ack, s) in [
        (&a1, &sessions[0]),
        (&a2, &sessions[1]),
        (&a3, &sessions[2]),
    ] {
        assert_eq!(ack["rejected"], 0, "{ack}");
        assert_eq!(ack["accepted"], lines_of(s).len(), "{ack}");
        assert!(ack["incidents"].as_u64().unwrap_or(0) > 0, "{s}: {ack}");
    }
    // the real clock's verifier: chain, Merkle roots, signatures and
    // non-decreasing checkpoint times
    let r = dunes_ledger::verify_dir(&dir).expect("verify");
    assert!(r.is_ok(), "{r}");
    let log = std::fs::read(dir.join("ledger/checkpoints.log")).expect("checkpoints");
    let times: Vec<i64> = String::from_utf8_lossy(&log)
        .lines()
        .filter_map(|l| l.strip_prefix("time ")?.trim().parse().ok())
        .collect();
    assert!(times.len() >= 3, "{times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // the last checkpoints were signed after the step back: they keep the
    // time of the one signed before it (at least), never an earlier one
    assert!(
        times.last().copied().unwrap_or(0) / 1_000_000 > real + 7000,
        "{times:?}"
    );
    // every record of the three sessions is in the ledger
    let mut events = 0u64;
    dunes_ledger::for_each_record(&dir, 0, |r| {
        events += (r.kind.as_str() == "event") as u64;
    })
    .expect("read ledger");
    let sent: usize = sessions[..3].iter().map(|s| lines_of(s).len()).sum();
    assert_eq!(events, sent as u64);
}
