//! Replay protection of state-changing requests with an `Idempotency-Key`
//! header (as in the IETF httpapi "Idempotency-Key" draft).
//!
//! Bearer tokens are reusable for their (short) lifetime. A state-changing
//! request (incident actions, ledger redaction, rule reload) must carry an
//! `Idempotency-Key`; the first request with a given key (per token `jti`)
//! runs, and its response is kept until the token expires. The same key
//! again gets that response back (`Idempotent-Replayed: true`) without a
//! second effect; the same key with a different method, path or body gets
//! 422; while the first is still running, 409.
//!
//! The store is journalled in `<data_dir>/auth/`[`IDEMPOTENCY_FILE`]: a `B`
//! line before the request runs and a `C` line with its response after, so a
//! key whose request was cut off by a restart answers 409 ("outcome unknown")
//! instead of running again. Lines are written to the OS without fsync (a
//! process crash loses nothing); expired entries go when the journal is
//! compacted.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::ApiError;
use crate::auth::LEEWAY_SECS;

/// Journal file in the token key directory.
pub const IDEMPOTENCY_FILE: &str = "idempotency.log";

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

const PRUNE_MIN: usize = 4096;

/// A response kept for replays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First use of the key: run it, then [`IdempotencyStore::complete`].
    Proceed,
    /// Seen and answered: send this again.
    Replay(Stored),
    /// The first request with this key is still running.
    InFlight,
    /// The first request with this key was cut off by a restart.
    Unknown,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Clone, Debug)]
struct Entry {
    exp: i64,
    fingerprint: String,
    outcome: Outcome,
}

#[derive(Clone, Debug)]
enum Outcome {
    Running,
    Interrupted,
    Done(Stored),
}

#[derive(Default)]
struct Inner {
    /// (jti, key) → entry
    map: HashMap<(String, String), Entry>,
    prune_at: usize,
    journal: Option<(PathBuf, std::fs::File)>,
}

/// See the module docs.
pub struct IdempotencyStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for IdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore").finish_non_exhaustive()
    }
}

/// A key is 1–255 visible ASCII characters (no spaces).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// What identifies a request besides its key: method, path and query, body.
pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    for part in [method.as_bytes(), path_and_query.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(body);
    h.finalize().to_hex().to_string()
}

fn internal(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("{what} {}: {e}", path.display()))
}

impl IdempotencyStore {
    /// A store without a journal (tests, auth disabled).
    pub fn in_memory() -> Self {
        IdempotencyStore {
            inner: Mutex::new(Inner {
                prune_at: PRUNE_MIN,
                ..Inner::default()
            }),
        }
    }

    /// Loads `dir/`[`IDEMPOTENCY_FILE`] (expired entries dropped) and keeps
    /// appending to it. A line that cannot be read is an error, except a
    /// torn last line (a crash mid-append).
    pub fn open(dir: &Path, now: i64) -> Result<Self, ApiError> {
        let path = dir.join(IDEMPOTENCY_FILE);
        let mut map: HashMap<(String, String), Entry> = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let n_lines = text.lines().count();
                for (n, line) in text.lines().enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    match parse_line(line) {
                        Some((jti, key, entry)) => {
                            let k = (jti, key);
                            if let Some(e) = map.get_mut(&k) {
                                if let Outcome::Done(_) = entry.outcome {
                                    e.outcome = entry.outcome;
                                }
                            } else {
                                map.insert(k, entry);
                            }
                        }
                        None if n + 1 == n_lines && !text.ends_with('\n') => {}
                        None => {
                            return Err(ApiError::Internal(format!(
                                "{}:{}: not an idempotency journal line",
                                path.display(),
                                n + 1
                            )));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal("read", &path, e)),
        }
        std::fs::create_dir_all(dir).map_err(|e| internal("create", dir, e))?;
        let mut inner = Inner {
            map,
            prune_at: PRUNE_MIN,
            journal: Some((path.clone(), open_append(&path)?)),
        };
        inner.prune(now)?;
        Ok(IdempotencyStore {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Looks `key` up for the token `jti` (valid until `exp`); on first use
    /// records it as running (journalled before the request runs).
    pub fn begin(
        &self,
        jti: &str,
        exp: i64,
        key: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Begin, ApiError> {
        let mut inner = self.lock();
        if inner.map.len() >= inner.prune_at {
            inner.prune(now)?;
        }
        if let Some(e) = inner.map.get(&(jti.to_string(), key.to_string())) {
            return Ok(if e.fingerprint != fingerprint {
                Begin::Mismatch
            } else {
                match &e.outcome {
                    Outcome::Running => Begin::InFlight,
                    Outcome::Interrupted => Begin::Unknown,
                    Outcome::Done(s) => Begin::Replay(s.clone()),
                }
            });
        }
        inner.append(&format!("B {exp} {jti} {key} {fingerprint}\n"))?;
        inner.map.insert(
            (jti.to_string(), key.to_string()),
            Entry {
                exp,
                fingerprint: fingerprint.to_string(),
                outcome: Outcome::Running,
            },
        );
        Ok(Begin::Proceed)
    }

    /// Keeps the response of a request that [`begin`](Self::begin) let run.
    pub fn complete(&self, jti: &str, key: &str, stored: Stored) -> Result<(), ApiError> {
        let mut inner = self.lock();
        let Some(e) = inner.map.get(&(jti.to_string(), key.to_string())).cloned() else {
            return Ok(()); // pruned meanwhile: the token has expired
        };
        inner.append(&format!(
            "C {} {jti} {key} {} {} {}\n",
            e.exp,
            e.fingerprint,
            stored.status,
            B64.encode(&stored.body)
        ))?;
        if let Some(e) = inner.map.get_mut(&(jti.to_string(), key.to_string())) {
            e.outcome = Outcome::Done(stored);
        }
        Ok(())
    }
}

impl Inner {
    fn append(&mut self, line: &str) -> Result<(), ApiError> {
        if let Some((path, f)) = &mut self.journal {
            f.write_all(line.as_bytes())
                .map_err(|e| internal("append", path, e))?;
        }
        Ok(())
    }

    /// Drops entries of expired tokens and rewrites the journal.
    fn prune(&mut self, now: i64) -> Result<(), ApiError> {
        let t = now - LEEWAY_SECS;
        self.map.retain(|_, e| e.exp >= t);
        self.prune_at = (self.map.len() * 2).max(PRUNE_MIN);
        let Some((path, _)) = &self.journal else {
            return Ok(());
        };
        let path = path.clone();
        let mut text = String::new();
        for ((jti, key), e) in &self.map {
            let fp = &e.fingerprint;
            text.push_str(&format!("B {} {jti} {key} {fp}\n", e.exp));
            if let Outcome::Done(s) = &e.outcome {
                text.push_str(&format!(
                    "C {} {jti} {key} {fp} {} {}\n",
                    e.exp,
                    s.status,
                    B64.encode(&s.body)
                ));
            }
        }
        let tmp = path.with_extension("log.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| internal("compact", &path, e))?;
        self.journal = Some((path.clone(), open_append(&path)?));
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, ApiError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| internal("open", path, e))
}

/// `B <exp> <jti> <key> <fp>` or `C <exp> <jti> <key> <fp> <status> <b64>`;
/// a `B` line read back is a request cut off unless its `C` line follows.
fn parse_line(line: &str) -> Option<(String, String, Entry)> {
    let mut f = line.split(' ');
    let kind = f.next()?;
    let exp = f.next()?.parse().ok()?;
    let jti = f.next().filter(|s| !s.is_empty())?.to_string();
    let key = f.next().filter(|k| valid_key(k))?.to_string();
    let fingerprint = f.next().filter(|s| s.len() == 64)?.to_string();
    let outcome = match kind {
        "B" => Outcome::Interrupted,
        "C" => Outcome::Done(Stored {
            status: f.next()?.parse().ok()?,
            body: B64.decode(f.next()?).ok()?,
        }),
        _ => return None,
    };
    if f.next().is_some() {
        return None;
    }
    Some((
        jti,
        key,
        Entry {
            exp,
            fingerprint,
            outcome,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(s: &str) -> Stored {
        Stored {
            status: 200,
            body: s.as_bytes().to_vec(),
        }
    }

    #[test]
    fn first_use_runs_then_replays_mismatches_and_in_flight() {
        let s = IdempotencyStore::in_memory();
        let fp = fingerprint("POST", "/api/v1/incidents/i/ack", b"");
        let other = fingerprint("POST", "/api/v1/incidents/j/ack", b"");
        assert_eq!(
            s.begin("t1", 100, "k", &fp, 0).expect("begin"),
            Begin::Proceed
        );
        assert_eq!(
            s.begin("t1", 100, "k", &fp, 0).expect("begin"),
            Begin::InFlight
        );
        s.complete("t1", "k", stored("{\"ok\":1}"))
            .expect("complete");
        assert_eq!(
            s.begin("t1", 100, "k", &fp, 0).expect("begin"),
            Begin::Replay(stored("{\"ok\":1}"))
        );
        assert_eq!(
            s.begin("t1", 100, "k", &other, 0).expect("begin"),
            Begin::Mismatch
        );
        // keys are per token
        assert_eq!(
            s.begin("t2", 100, "k", &other, 0).expect("begin"),
            Begin::Proceed
        );
        assert!(valid_key("0f8fad5b-d9cb-469f-a165-70867728950e"));
        for bad in ["", "a b", "é", &"x".repeat(256)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_journal_survives_a_restart_and_forgets_expired_tokens() {
        let tmp = tempfile::tempdir().expect("tmp");
        let fp = fingerprint("POST", "/x", b"{}");
        {
            let s = IdempotencyStore::open(tmp.path(), 0).expect("open");
            assert_eq!(
                s.begin("done", 100, "k", &fp, 0).expect("b"),
                Begin::Proceed
            );
            s.complete("done", "k", stored("answer\n with spaces"))
                .expect("c");
            assert_eq!(s.begin("cut", 100, "k", &fp, 0).expect("b"), Begin::Proceed);
            assert_eq!(s.begin("old", 10, "k", &fp, 0).expect("b"), Begin::Proceed);
        }
        let s = IdempotencyStore::open(tmp.path(), 50).expect("reopen");
        assert_eq!(
            s.begin("done", 100, "k", &fp, 50).expect("b"),
            Begin::Replay(stored("answer\n with spaces"))
        );
        assert_eq!(
            s.begin("cut", 100, "k", &fp, 50).expect("b"),
            Begin::Unknown
        );
        // expired before the restart: forgotten (its token is refused anyway)
        assert_eq!(s.begin("old", 10, "k", &fp, 50).expect("b"), Begin::Proceed);
        drop(s);
        let path = tmp.path().join(IDEMPOTENCY_FILE);
        let text = std::fs::read_to_string(&path).expect("journal");
        // a torn last line is tolerated, a corrupt line elsewhere is not
        std::fs::write(&path, format!("{text}C 1")).expect("write");
        assert!(IdempotencyStore::open(tmp.path(), 50).is_ok());
        std::fs::write(&path, format!("garbage\n{text}")).expect("write");
        let err = IdempotencyStore::open(tmp.path(), 50).expect_err("corrupt");
        assert!(format!("{err:?}").contains(":1:"), "{err:?}");
    }
}
