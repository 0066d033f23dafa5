//! Helpers shared by the end-to-end tests of the `dunes` binary.

use std::process::{Command, Output};

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
