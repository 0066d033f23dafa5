//! `dunes doctor`: checks a deployment before (or while) it runs. Each check
//! prints `ok`, `warn` or `FAIL` with what was found; any FAIL makes the exit
//! status non-zero.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use dunes_pipeline::Config;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        })
    }
}

struct Report {
    worst: Verdict,
}

impl Report {
    fn line(&mut self, v: Verdict, what: &str, detail: impl fmt::Display) {
        println!("{v}  {what:<14} {detail}");
        self.worst = self.worst.max(v);
    }
}

/// Runs every check; returns the worst verdict.
pub async fn run(cfg: &Config, config_path: Option<&Path>) -> Verdict {
    let mut r = Report { worst: Verdict::Ok };
    match config_path {
        Some(p) => r.line(Verdict::Ok, "config", format!("{} parsed", p.display())),
        None => r.line(Verdict::Ok, "config", "none given: defaults"),
    }
    data_dir(&mut r, &cfg.data_dir);
    keys(&mut r, &cfg.data_dir);
    ledger_and_clock(&mut r, &cfg.data_dir);
    disk_space(&mut r, &cfg.data_dir);
    rules(&mut r, cfg).await;
    http(&mut r, cfg).await;
    kafka(&mut r, cfg).await;
    r.worst
}

fn data_dir(r: &mut Report, dir: &Path) {
    if !dir.exists() {
        r.line(
            Verdict::Warn,
            "data dir",
            format!(
                "{} does not exist yet (created on first run)",
                dir.display()
            ),
        );
        return;
    }
    let probe = dir.join(".dunes-doctor-probe");
    match std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => r.line(
            Verdict::Ok,
            "data dir",
            format!("{} writable", dir.display()),
        ),
        Err(e) => r.line(
            Verdict::Fail,
            "data dir",
            format!("{} not writable: {e}", dir.display()),
        ),
    }
}

/// Private key seeds must be readable by their owner only.
fn keys(r: &mut Report, dir: &Path) {
    let mut seeds = 0;
    for sub in ["keys", "auth"] {
        let d = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        if let Ok(m) = std::fs::metadata(&d)
            && m.permissions().mode() & 0o077 != 0
        {
            r.line(
                Verdict::Fail,
                "key dir",
                format!(
                    "{} is mode {:o}: others can list it (chmod 700)",
                    d.display(),
                    m.permissions().mode() & 0o777
                ),
            );
        }
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "seed") {
                continue;
            }
            seeds += 1;
            match std::fs::metadata(&p) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => r.line(
                    Verdict::Fail,
                    "private key",
                    format!(
                        "{} is mode {:o}: readable by others (chmod 600)",
                        p.display(),
                        m.permissions().mode() & 0o777
                    ),
                ),
                Ok(_) => {}
                Err(e) => r.line(
                    Verdict::Fail,
                    "private key",
                    format!("{}: {e}", p.display()),
                ),
            }
        }
    }
    let ledger_pub = dir.join("keys").join("ledger-mldsa65-0.pub");
    if dir.join("ledger").exists() && !ledger_pub.exists() {
        r.line(
            Verdict::Fail,
            "ledger keys",
            format!("a ledger exists but {} is missing", ledger_pub.display()),
        );
    } else if seeds > 0 {
        r.line(
            Verdict::Ok,
            "private keys",
            format!("{seeds} seed file(s), owner-only"),
        );
    } else {
        r.line(
            Verdict::Warn,
            "private keys",
            "none yet (generated on first run)",
        );
    }
}

/// The newest signed checkpoint, and the clock against it: a clock behind
/// the ledger's last checkpoint has jumped backwards.
fn ledger_and_clock(r: &mut Report, dir: &Path) {
    let now = chrono::Utc::now();
    match dunes_ledger::read_latest_checkpoint(dir) {
        Ok(None) => r.line(Verdict::Warn, "ledger", "no signed checkpoint yet"),
        Ok(Some(cp)) => {
            let at = chrono::DateTime::from_timestamp_micros(cp.timestamp_micros)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "?".into());
            r.line(
                Verdict::Ok,
                "ledger",
                format!(
                    "latest checkpoint covers {} records, signed {at} (key epoch {}); run `dunes verify` for a full check",
                    cp.tree_size, cp.key_epoch
                ),
            );
            let behind = cp.timestamp_micros - now.timestamp_micros();
            if behind > 5_000_000 {
                r.line(
                    Verdict::Fail,
                    "clock",
                    format!(
                        "now {} is {:.1} s before the last checkpoint: the clock went backwards",
                        now.to_rfc3339(),
                        behind as f64 / 1e6
                    ),
                );
                return;
            }
        }
        Err(e) => r.line(
            Verdict::Fail,
            "ledger",
            format!("checkpoints unreadable: {e}"),
        ),
    }
    r.line(Verdict::Ok, "clock", format!("{} (UTC)", now.to_rfc3339()));
}

fn disk_space(r: &mut Report, dir: &Path) {
    let at = if dir.exists() { dir } else { Path::new(".") };
    let Ok(c) = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a zeroed statvfs
    // that the call fills in.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        r.line(
            Verdict::Warn,
            "disk",
            format!(
                "cannot stat {}: {}",
                at.display(),
                std::io::Error::last_os_error()
            ),
        );
        return;
    }
    let free = s.f_bavail as u64 * s.f_frsize as u64;
    let gib = free as f64 / (1u64 << 30) as f64;
    let v = if free < 1 << 30 {
        Verdict::Fail
    } else if free < 10 << 30 {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    r.line(
        v,
        "disk",
        format!("{gib:.1} GiB free under {}", at.display()),
    );
}

async fn rules(r: &mut Report, cfg: &Config) {
    let dir = cfg.rules_dir();
    match dunes_detect::load_dir(&dir) {
        Err(e) => r.line(Verdict::Fail, "rules", format!("{}: {e}", dir.display())),
        Ok(rules) => match dunes_detect::Engine::new(rules).await {
            Ok(engine) => r.line(
                Verdict::Ok,
                "rules",
                format!(
                    "{} rules planned from {}",
                    engine.rules().len(),
                    dir.display()
                ),
            ),
            Err(e) => r.line(Verdict::Fail, "rules", format!("{}: {e}", dir.display())),
        },
    }
}

async fn http(r: &mut Report, cfg: &Config) {
    if !cfg.http.enabled {
        r.line(Verdict::Ok, "http", "disabled");
        return;
    }
    let addrs = std::iter::once(("listen", cfg.http.listen))
        .chain(cfg.http.metrics_listen.map(|m| ("metrics", m)));
    for (what, addr) in addrs {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => r.line(Verdict::Ok, "http", format!("{what} {addr} can be bound")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => r.line(
                Verdict::Warn,
                "http",
                format!("{what} {addr} is in use (is `dunes run` already running?)"),
            ),
            Err(e) => r.line(Verdict::Fail, "http", format!("{what} {addr}: {e}")),
        }
    }
}

async fn kafka(r: &mut Report, cfg: &Config) {
    if !cfg.kafka.enabled {
        r.line(Verdict::Ok, "kafka", "disabled");
        return;
    }
    let k = cfg.kafka.clone();
    let probe =
        tokio::task::spawn_blocking(move || dunes_ingest::kafka::probe(&k, Duration::from_secs(5)))
            .await;
    match probe {
        Ok(Ok(p)) => {
            r.line(
                Verdict::Ok,
                "kafka",
                format!("{} broker(s): {}", p.brokers.len(), p.brokers.join(", ")),
            );
            for (t, n) in p.topics {
                match n {
                    Some(n) => r.line(Verdict::Ok, "kafka topic", format!("{t}: {n} partition(s)")),
                    None => r.line(
                        Verdict::Fail,
                        "kafka topic",
                        format!("{t}: unknown to the cluster"),
                    ),
                }
            }
        }
        Ok(Err(e)) => r.line(Verdict::Fail, "kafka", e),
        Err(e) => r.line(Verdict::Fail, "kafka", format!("probe failed: {e}")),
    }
}
