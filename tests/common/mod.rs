//! Helpers shared by the end-to-end tests of the `dunes` binary (each test
//! binary uses some of them).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `dunes` with a quiet log and no configuration leaking in from the
/// environment.
pub fn dunes() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dunes"));
    c.env("RUST_LOG", "warn")
        .env_remove("DUNES_CONFIG")
        .env_remove("DUNES_DATA_DIR");
    c
}

/// Runs `cmd` and fails the test with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn dunes");
    assert!(
        out.status.success(),
        "dunes failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/corpus/mcp-sample.ndjson")
}

pub fn labels() -> BTreeMap<String, String> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/corpus/mcp-sample.labels.json");
    serde_json::from_slice(&std::fs::read(p).expect("labels")).expect("labels json")
}

pub fn read_ndjson(p: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ureq::get(&format!("{base}/healthz")).call().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("dunes did not become healthy at {base}");
}

/// Issues an API token with `dunes token issue` (the token is stdout's last line).
pub fn token(dir: &Path, role: &str) -> String {
    let out = run_ok(
        dunes()
            .args([
                "token", "issue", "--sub", "e2e", "--role", role, "--ttl", "5m",
            ])
            .arg("--data-dir")
            .arg(dir),
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_string()
}

pub fn bearer(dir: &Path, role: &str) -> String {
    format!("Bearer {}", token(dir, role))
}

/// SIGTERM, then `dunes` must exit successfully within 30 s.
pub fn sigterm_and_wait(child: &mut std::process::Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "dunes exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "dunes did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `dunes run` child that is killed if the test panics before `stop`.
pub struct Running(pub std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `dunes demo --no-serve` into `root` and returns the demo's data dir (`root/demo`).
pub fn demo_data(root: &Path) -> PathBuf {
    run_ok(
        dunes()
            .args(["demo", "--no-serve"])
            .arg("--data-dir")
            .arg(root),
    );
    root.join("demo")
}

/// `dunes run` on `dir` with its API on 127.0.0.1:`port`, once healthy.
pub fn start_monitor(dir: &Path, port: u16) -> Running {
    start_run_on(dunes(), None, dir, port)
}

/// `cmd` (`dunes()`, or one with more environment) `run [--config cfg]` on
/// `dir` with its API on a free loopback port, once healthy; and its base URL.
pub fn start_run(cmd: Command, cfg: Option<&Path>, dir: &Path) -> (Running, String) {
    let port = free_port();
    (
        start_run_on(cmd, cfg, dir, port),
        format!("http://127.0.0.1:{port}"),
    )
}

fn start_run_on(mut cmd: Command, cfg: Option<&Path>, dir: &Path, port: u16) -> Running {
    cmd.arg("run");
    if let Some(cfg) = cfg {
        cmd.arg("--config").arg(cfg);
    }
    let mon = Running(
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn run"),
    );
    wait_healthy(&format!("http://127.0.0.1:{port}"));
    mon
}
