//! Fault: the data dir's file system fills up under a running monitor.
//! `dunes run` writes on a 16 MiB tmpfs (mounted by the test: it needs root,
//! as `.ci/run` has) and takes HTTP batches until the disk is full. Every
//! batch it acknowledged is durable; the batch that hit the full disk is not
//! acknowledged (the client keeps it) and the monitor stops with a clear
//! error instead of running on with a torn ledger. Restarted while the disk
//! is still full, it refuses to start, saying why; once space returns it
//! starts, repairs the torn tail, takes the refused batch again, and the
//! ledger verifies with every acknowledged event exactly once.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, dunes, free_port, sample, sigterm_and_wait, token, wait_healthy};
use serde_json::Value;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Batch `round` of the sample: every line with fresh event and session ids.
fn batch(round: usize) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(sample()).expect("sample");
    let mut ids = Vec::new();
    let mut body = String::new();
    for line in text.lines().take(900) {
        let mut v: Value = serde_json::from_str(line).expect("json");
        let id = format!("{}.r{round}", v["event_id"].as_str().expect("event_id"));
        v["event_id"] = id.clone().into();
        if let Some(s) = v["session_id"].as_str() {
            v["session_id"] = format!("{s}.r{round}").into();
        }
        ids.push(id);
        body.push_str(&v.to_string());
        body.push('\n');
    }
    (body, ids)
}

fn post(base: &str, auth: &str, body: &str) -> Result<u16, String> {
    match ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", auth)
        .header("content-type", "application/x-ndjson")
        .send(body.as_bytes())
    {
        Ok(r) => Ok(r.status().as_u16()),
        Err(ureq::Error::StatusCode(c)) => Ok(c),
        Err(e) => Err(e.to_string()),
    }
}

fn run(cfg: &Path, dir: &Path, port: u16) -> std::process::Child {
    dunes()
        .arg("run")
        .arg("--config")
        .arg(cfg)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run")
}

/// Waits (at most 60 s) for the child to exit; returns its status and stderr.
fn exit_of(child: std::process::Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = child;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (st, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        assert!(Instant::now() < deadline, "dunes did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_disk_stops_the_monitor_cleanly_and_nothing_acknowledged_is_lost() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root (.ci/run runs as root)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(st.success(), "mount -t tmpfs failed");
    let _mount = Mount(mnt.clone());
    // 4 MiB that can be given back later
    let ballast = mnt.join("ballast");
    std::fs::write(&ballast, vec![0x5a; 4 << 20]).expect("ballast");
    let dir = mnt.join("data");
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(&cfg, "[ledger]\ncheckpoint_every_records = 500\n").expect("config");
    let auth = format!("Bearer {}", token(&dir, "ingest"));

    let port = free_port();
    let child = run(&cfg, &dir, port);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut refused = None;
    for round in 0..40 {
        let (body, ids) = batch(round);
        match post(&base, &auth, &body) {
            Ok(202) => acked.extend(ids),
            other => {
                refused = Some((round, other));
                break;
            }
        }
    }
    let (round, answer) = refused.expect("the disk never filled up");
    assert!(round >= 1, "nothing was taken before the disk filled");
    assert_ne!(answer, Ok(202));
    let (status, stderr) = exit_of(child);
    assert!(!status.success(), "the monitor must stop on a full disk");
    assert!(stderr.contains("No space left on device"), "{stderr}");

    // still full: refuses to start, and says why
    let (status, stderr) = exit_of(run(&cfg, &dir, free_port()));
    assert!(!status.success());
    assert!(stderr.contains("No space left on device"), "{stderr}");

    // space returns: starts, repairs, takes the refused batch again
    std::fs::remove_file(&ballast).expect("free space");
    let port = free_port();
    let mut mon = Running(run(&cfg, &dir, port));
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base);
    let (body, ids) = batch(round);
    assert_eq!(post(&base, &auth, &body), Ok(202));
    acked.extend(ids);
    sigterm_and_wait(&mut mon);

    let r = dunes_ledger::verify_dir(&dir).expect("verify");
    assert!(r.is_ok(), "{r}");
    let mut ledgered: Vec<String> = Vec::new();
    dunes_ledger::for_each_record(&dir, 0, |rec| {
        if rec.kind.as_str() == "event"
            && let Ok(v) = serde_json::from_slice::<Value>(rec.payload)
            && let Some(id) = v["event_id"].as_str()
        {
            ledgered.push(id.to_string());
        }
    })
    .expect("read ledger");
    let unique: BTreeSet<String> = ledgered.iter().cloned().collect();
    assert_eq!(unique.len(), ledgered.len(), "an event ledgered twice");
    assert_eq!(unique, acked, "acknowledged events = ledgered events");
}
