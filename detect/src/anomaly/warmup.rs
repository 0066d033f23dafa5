//! The warm-up baseline (windows collected while there is no model) and its
//! persistence, so that a restart during the warm-up continues it.
//!
//! The windows go to an append-only log next to the monitor state
//! (`anomaly-warmup.bin`): each save appends only what was collected since
//! the previous one (the cost does not grow with the baseline), fsyncs it,
//! and then the state file records the log's length. On load the log is
//! read up to that length; anything after it (appended just before a crash,
//! before the state was written) is cut off at the next save.
//!
//! Log layout: the magic `DUNESWU1`, then records: `1` key (u32 length,
//! UTF-8), `2` session window (u32 session, 13 f64), `3` principal window
//! (u32 session, u32 principal, 13 f64). Integers and floats are little
//! endian; keys are numbered in order of appearance; floats are stored bit
//! for bit.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::features::{FeatureSpec, FeatureVec, N_FEATURES, Observation, WindowKind};
use super::model::{Baseline, TrainingSet};
use crate::DetectError;

const MAGIC: &[u8; 8] = b"DUNESWU1";
const KEY: u8 = 1;
const SESSION: u8 = 2;
const PRINCIPAL: u8 = 3;

/// The warm-up log beside a monitor state file.
pub fn log_path(state_path: &Path) -> PathBuf {
    state_path.with_file_name("anomaly-warmup.bin")
}

/// What the state file says about the warm-up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WarmupMeta {
    /// Event time of the first warm-up window.
    pub start_ts: Option<i64>,
    /// Length of the log that belongs to this state.
    pub log_bytes: u64,
    pub session_windows: usize,
    pub principal_windows: usize,
    /// Distinct sessions with a session window.
    pub sessions: usize,
    /// The feature settings the windows were computed with.
    pub feature_spec: FeatureSpec,
    /// Sessions a rule raised an incident on: left out of the training.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// The warm-up has ended and its model was being trained: a restart
    /// trains on this baseline again, without adding to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<WarmupEnd>,
}

/// How the warm-up ended (see [`WarmupMeta::ended`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WarmupEnd {
    /// What the model says it was trained on.
    pub label: String,
    /// The baseline had `warmup_max_windows` session windows.
    pub full: bool,
    /// Events the model was still to wait before taking over (a state
    /// saved when this counted batches is read as that many events: the
    /// model then takes over after the next batch).
    #[serde(alias = "batches_left")]
    pub events_left: u64,
}

/// Rule-flagged sessions remembered during a warm-up, at most.
const MAX_EXCLUDED: usize = 100_000;

/// How much of the baseline is in the log already.
#[derive(Clone, Copy, Debug, Default)]
struct Saved {
    keys: usize,
    session: usize,
    principal: usize,
    bytes: u64,
}

/// The baseline being learnt, with interned session and principal keys.
#[derive(Debug, Default)]
pub(crate) struct Warmup {
    pub start_ts: Option<i64>,
    keys: Vec<String>,
    ids: HashMap<String, u32>,
    session: Vec<(u32, FeatureVec)>,
    principal: Vec<(u32, u32, FeatureVec)>,
    /// Sessions with a session window.
    sessions: HashSet<u32>,
    saved: Saved,
    /// The log no longer matches (the baseline was dropped): write it anew.
    rewrite: bool,
    /// Sessions a rule raised an incident on (not learnt as normal).
    excluded: HashSet<String>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DetectError + '_ {
    move |e| DetectError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn corrupt(path: &Path, what: &str) -> DetectError {
    DetectError::Model(format!("warm-up log {}: {what}", path.display()))
}

impl Warmup {
    fn id(&mut self, k: &str) -> u32 {
        if let Some(&i) = self.ids.get(k) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.keys.push(k.to_string());
        self.ids.insert(k.to_string(), i);
        i
    }

    /// Keeps an observation (at most `cap` windows of each kind).
    pub fn observe(&mut self, o: &Observation<'_>, cap: usize) {
        self.start_ts.get_or_insert(o.window.last_ts);
        match o.kind {
            WindowKind::Session if self.session.len() < cap => {
                let s = self.id(o.session);
                self.sessions.insert(s);
                self.session.push((s, o.features));
            }
            WindowKind::Principal if self.principal.len() < cap => {
                let s = self.id(o.session);
                let p = self.id(o.key);
                self.principal.push((s, p, o.features));
            }
            _ => {}
        }
    }

    pub fn session_windows(&self) -> usize {
        self.session.len()
    }

    pub fn principal_windows(&self) -> usize {
        self.principal.len()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Leaves a session out of the training: a rule flagged it, so its
    /// behaviour is not learnt as normal.
    pub fn exclude(&mut self, session: &str) {
        if self.excluded.len() < MAX_EXCLUDED {
            self.excluded.insert(session.to_string());
        }
    }

    pub fn excluded(&self) -> usize {
        self.excluded.len()
    }

    /// The training sets.
    pub fn baseline(&self) -> Baseline {
        let key = |i: u32| self.keys.get(i as usize).map_or("", String::as_str);
        let mut session = TrainingSet::default();
        for (s, x) in &self.session {
            session.push(key(*s), *x);
        }
        let mut principal = TrainingSet::default();
        for (s, p, x) in &self.principal {
            principal.push_grouped(key(*s), key(*p), *x);
        }
        let mut b = Baseline { session, principal };
        if !self.excluded.is_empty() {
            b.retain_sessions(|s| !self.excluded.contains(s));
        }
        b
    }

    /// Drops the baseline collected so far.
    pub fn clear(&mut self) {
        *self = Warmup {
            start_ts: self.start_ts,
            rewrite: true,
            ..Warmup::default()
        };
    }

    pub fn meta(&self, spec: &FeatureSpec) -> WarmupMeta {
        WarmupMeta {
            start_ts: self.start_ts,
            log_bytes: self.saved.bytes,
            session_windows: self.saved.session,
            principal_windows: self.saved.principal,
            sessions: self.sessions.len(),
            feature_spec: spec.clone(),
            excluded: {
                let mut v: Vec<String> = self.excluded.iter().cloned().collect();
                v.sort();
                v
            },
            ended: None,
        }
    }

    /// Appends what the log lacks and syncs it. [`Warmup::meta`] describes
    /// the log afterwards.
    pub fn append(&mut self, path: &Path) -> Result<(), DetectError> {
        let io = io_err(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(&io)?;
        }
        let fresh = self.rewrite || self.saved.bytes == 0;
        if fresh {
            self.saved = Saved::default();
        }
        let mut buf = Vec::new();
        if fresh {
            buf.extend_from_slice(MAGIC);
        }
        for k in &self.keys[self.saved.keys..] {
            buf.push(KEY);
            buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buf.extend_from_slice(k.as_bytes());
        }
        let put = |buf: &mut Vec<u8>, x: &FeatureVec| {
            for v in x {
                buf.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        };
        for (s, x) in &self.session[self.saved.session..] {
            buf.push(SESSION);
            buf.extend_from_slice(&s.to_le_bytes());
            put(&mut buf, x);
        }
        for (s, p, x) in &self.principal[self.saved.principal..] {
            buf.push(PRINCIPAL);
            buf.extend_from_slice(&s.to_le_bytes());
            buf.extend_from_slice(&p.to_le_bytes());
            put(&mut buf, x);
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(fresh)
            .open(path)
            .map_err(&io)?;
        // Whatever follows the saved length was never recorded in a state.
        f.set_len(self.saved.bytes).map_err(&io)?;
        f.seek(SeekFrom::Start(self.saved.bytes)).map_err(&io)?;
        f.write_all(&buf).map_err(&io)?;
        f.sync_all().map_err(&io)?;
        self.saved = Saved {
            keys: self.keys.len(),
            session: self.session.len(),
            principal: self.principal.len(),
            bytes: self.saved.bytes + buf.len() as u64,
        };
        self.rewrite = false;
        Ok(())
    }

    /// Reads the log as `meta` describes it.
    pub fn load(path: &Path, meta: &WarmupMeta) -> Result<Warmup, DetectError> {
        let mut wu = Warmup {
            start_ts: meta.start_ts,
            excluded: meta.excluded.iter().cloned().collect(),
            ..Warmup::default()
        };
        if meta.log_bytes == 0 {
            return Ok(wu);
        }
        let io = io_err(path);
        let f = std::fs::File::open(path).map_err(&io)?;
        let mut bytes = Vec::new();
        f.take(meta.log_bytes)
            .read_to_end(&mut bytes)
            .map_err(&io)?;
        if (bytes.len() as u64) < meta.log_bytes {
            return Err(corrupt(
                path,
                &format!(
                    "{} bytes, the state expects {}",
                    bytes.len(),
                    meta.log_bytes
                ),
            ));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(corrupt(path, "not a warm-up log"));
        }
        let mut r = Reader {
            b: &bytes,
            at: MAGIC.len(),
        };
        let bad = || corrupt(path, "truncated or malformed record");
        while r.at < bytes.len() {
            match r.u8().ok_or_else(bad)? {
                KEY => {
                    let n = r.u32().ok_or_else(bad)? as usize;
                    let k = r.take(n).ok_or_else(bad)?;
                    let k = std::str::from_utf8(k).map_err(|_| bad())?.to_string();
                    wu.ids.insert(k.clone(), wu.keys.len() as u32);
                    wu.keys.push(k);
                }
                SESSION => {
                    let s = r.u32().ok_or_else(bad)?;
                    let x = r.vec().ok_or_else(bad)?;
                    if s as usize >= wu.keys.len() {
                        return Err(bad());
                    }
                    wu.sessions.insert(s);
                    wu.session.push((s, x));
                }
                PRINCIPAL => {
                    let s = r.u32().ok_or_else(bad)?;
                    let p = r.u32().ok_or_else(bad)?;
                    let x = r.vec().ok_or_else(bad)?;
                    if s.max(p) as usize >= wu.keys.len() {
                        return Err(bad());
                    }
                    wu.principal.push((s, p, x));
                }
                _ => return Err(bad()),
            }
        }
        if wu.session.len() != meta.session_windows || wu.principal.len() != meta.principal_windows
        {
            return Err(corrupt(
                path,
                &format!(
                    "{} session and {} principal windows, the state expects {} and {}",
                    wu.session.len(),
                    wu.principal.len(),
                    meta.session_windows,
                    meta.principal_windows
                ),
            ));
        }
        wu.saved = Saved {
            keys: wu.keys.len(),
            session: wu.session.len(),
            principal: wu.principal.len(),
            bytes: meta.log_bytes,
        };
        Ok(wu)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn vec(&mut self) -> Option<FeatureVec> {
        let mut x = [0.0; N_FEATURES];
        for v in &mut x {
            *v = f64::from_bits(u64::from_le_bytes(self.take(8)?.try_into().ok()?));
        }
        Some(x)
    }
}
