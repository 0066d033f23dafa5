//! Hot reload: the rules directory is polled and its fingerprint compared;
//! a change asks the driver to reload between batches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dunes_api::ReloadRequest;
use tokio::sync::{mpsc, oneshot, watch};

/// How often the rules directory is polled for changes.
const RULES_POLL: Duration = Duration::from_secs(2);

/// BLAKE3 over every file below `dir` (sorted paths and contents): rule
/// files and allowlists. An unreadable directory hashes its error.
pub(crate) fn rules_fingerprint(dir: &Path) -> [u8; 32] {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut h = blake3::Hasher::new();
    let mut files = Vec::new();
    if let Err(e) = walk(dir, &mut files) {
        h.update(e.to_string().as_bytes());
    }
    files.sort();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(b"\0");
        match std::fs::read(&f) {
            Ok(b) => {
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(&b);
            }
            Err(e) => {
                h.update(e.to_string().as_bytes());
            }
        }
    }
    *h.finalize().as_bytes()
}

/// Polls the rules directory every [`RULES_POLL`]; on a change asks the
/// pipeline to reload (a refused reload is logged by the pipeline and
/// retried only after the next change).
pub(crate) async fn watch_rules(
    dir: PathBuf,
    mut last: [u8; 32],
    tx: mpsc::Sender<ReloadRequest>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(RULES_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let d = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || rules_fingerprint(&d)).await else {
            return;
        };
        if now == last {
            continue;
        }
        last = now;
        tracing::info!(dir = %dir.display(), "rules directory changed: reloading");
        let (reply, rx) = oneshot::channel();
        if tx.send(ReloadRequest { reply }).await.is_err() {
            return;
        }
        match rx.await {
            Ok(Ok(ack)) => {
                tracing::info!(version = %ack.version, rules = ack.rules, "rules reloaded by the watcher")
            }
            Ok(Err(e)) => {
                tracing::error!("rules reload refused (previous rules keep running): {e}")
            }
            Err(_) => return,
        }
    }
}
