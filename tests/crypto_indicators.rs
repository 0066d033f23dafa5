//! Cryptography-compromise indicators of the running monitor (DUNES §10.1):
//! a bearer token signed by a revoked token key, and a ledger that fails
//! verification, each raise a Level 3 incident at once — through the real
//! API of `dunes run`, with the monitor otherwise idle.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{bearer, dunes, sample, sigterm_and_wait, start_run};
use serde_json::Value;

fn incidents(base: &str, auth: &str) -> Vec<Value> {
    let mut resp = ureq::get(&format!("{base}/api/v1/incidents?limit=500"))
        .header("authorization", auth)
        .call()
        .expect("list incidents");
    let v: Value = resp.body_mut().read_json().expect("json");
    v["incidents"].as_array().cloned().unwrap_or_default()
}

/// Waits (at most 20 s) for an incident of `rule`.
fn wait_for(base: &str, dir: &Path, rule: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let auth = bearer(dir, "viewer");
        if let Some(i) = incidents(base, &auth)
            .into_iter()
            .find(|i| i["rule_id"] == rule)
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no {rule} incident");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn revoked_token_key_and_failed_ledger_verification_are_emergencies() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The retired token key: a data dir whose key signed a token.
    let old = tmp.path().join("old");
    let old_token = common::token(&old, "admin");
    let old_pub = std::fs::read(old.join("auth/token-mldsa65.pub")).expect("old public key");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(old_pub);
    let cfg = tmp.path().join("dunes.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nrevoked_token_keys = [\"{b64}\"]\n[notification]\ncheck_interval_secs = 1\n[ledger]\ncheckpoint_every_records = 1\n"
        ),
    )
    .expect("config");
    let dir = tmp.path().join("data");
    let (mut mon, base) = start_run(dunes(), Some(&cfg), &dir);
    assert!(
        incidents(&base, &bearer(&dir, "viewer")).is_empty(),
        "a quiet start"
    );

    // The revoked key's token is refused, and raises an emergency while no
    // traffic flows.
    let err = ureq::get(&format!("{base}/api/v1/incidents"))
        .header("authorization", &format!("Bearer {old_token}"))
        .call();
    assert!(matches!(err, Err(ureq::Error::StatusCode(401))), "{err:?}");
    let inc = wait_for(&base, &dir, "self.revoked_token_key_used");
    assert_eq!(inc["level"], 3, "{inc}");
    assert_eq!(inc["severity"], "critical");
    assert_eq!(inc["status"], "open");

    // Some traffic, then a byte of the ledger's first segment flipped on
    // disk: the verification the console runs fails, and says so.
    let body = std::fs::read(sample()).expect("sample");
    let body: Vec<u8> = body
        .split(|b| *b == b'\n')
        .take(40)
        .flat_map(|l| [l, b"\n"].concat())
        .collect();
    let resp = ureq::post(&format!("{base}/v1/ingest"))
        .header("authorization", &bearer(&dir, "ingest"))
        .header("content-type", "application/x-ndjson")
        .send(&body[..])
        .expect("ingest");
    assert_eq!(resp.status().as_u16(), 202);
    let auditor = bearer(&dir, "auditor");
    let verify = || -> Value {
        ureq::get(&format!("{base}/api/v1/ledger/verify"))
            .header("authorization", &auditor)
            .call()
            .expect("verify")
            .body_mut()
            .read_json()
            .expect("json")
    };
    let ok = verify();
    assert_eq!(ok["ok"], true, "{ok}");
    let seg = dir.join("ledger/seg-0000000000000000.dlg");
    let mut bytes = std::fs::read(&seg).expect("segment");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("tamper");
    let ok = verify();
    assert_eq!(ok["ok"], false, "{ok}");
    let inc = wait_for(&base, &dir, "self.ledger_verification_failed");
    assert_eq!(inc["level"], 3, "{inc}");
    // neither resolves itself
    std::thread::sleep(Duration::from_secs(3));
    let all = incidents(&base, &bearer(&dir, "viewer"));
    for rule in [
        "self.revoked_token_key_used",
        "self.ledger_verification_failed",
    ] {
        let i = all.iter().find(|i| i["rule_id"] == rule).expect(rule);
        assert_eq!(i["status"], "open", "{i}");
    }
    sigterm_and_wait(&mut mon);
}
