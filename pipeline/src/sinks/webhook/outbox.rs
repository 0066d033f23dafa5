//! The persistent retry queue of one destination: `outbox.ndjson`, an
//! append-only journal of queued bodies and their outcomes (fsynced before
//! an enqueue or an outcome counts), and `dead-letter.ndjson`, the bodies
//! given up on with the reason. A delivery id is queued at most once: ids
//! already queued or done are remembered (the last [`KEEP_DONE_IDS`] done
//! ids survive compaction), so a batch re-detected after a crash does not
//! send a change twice.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};
use crate::sinks::lifecycle::ChangeKind;

/// The journal is rewritten (pending entries only) once it has this many
/// lines and nothing is pending.
const COMPACT_LINES: u64 = 20_000;
/// Done ids kept across a compaction (re-detection after a crash covers
/// far fewer changes than this).
pub(crate) const KEEP_DONE_IDS: usize = 10_000;

/// A queued delivery.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pending {
    pub id: String,
    pub event: ChangeKind,
    pub incident_id: String,
    /// Unix milliseconds when it was queued.
    pub queued_at_ms: i64,
    pub body: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Queued {
        id: String,
        event: ChangeKind,
        incident_id: String,
        queued_at_ms: i64,
        body: String,
    },
    Delivered {
        id: String,
        at_ms: i64,
        status: u16,
    },
    Dead {
        id: String,
        at_ms: i64,
        reason: String,
    },
    /// A done id carried over by compaction.
    Seen {
        id: String,
    },
}

/// A dead-lettered delivery, as in `dead-letter.ndjson`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct DeadLetter {
    pub id: String,
    pub event: ChangeKind,
    pub incident_id: String,
    pub queued_at_ms: i64,
    pub dead_at_ms: i64,
    pub attempts: u32,
    pub reason: String,
    pub body: String,
}

pub(crate) struct Outbox {
    path: PathBuf,
    dead_path: PathBuf,
    file: File,
    pending: VecDeque<Pending>,
    seen: HashSet<String>,
    done_order: VecDeque<String>,
    lines: u64,
    dead_total: u64,
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`. A torn last line (a crash in
    /// the middle of an append) is cut off; any other unreadable line is an
    /// error naming the file and line.
    pub(crate) fn open(dir: &Path) -> Result<Outbox> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("outbox.ndjson");
        let dead_path = dir.join("dead-letter.ndjson");
        let mut ob = Outbox {
            file: open_append(&path)?,
            path,
            dead_path,
            pending: VecDeque::new(),
            seen: HashSet::new(),
            done_order: VecDeque::new(),
            lines: 0,
            dead_total: 0,
        };
        let bytes = std::fs::read(&ob.path)
            .with_context(|| format!("cannot read {}", ob.path.display()))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(file = %ob.path.display(), "cutting a torn last line (crash during an append)");
            ob.file
                .set_len(complete as u64)
                .and_then(|()| ob.file.sync_all())
                .with_context(|| format!("cannot repair {}", ob.path.display()))?;
        }
        for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_slice(line)
                .with_context(|| format!("{} line {}: unreadable", ob.path.display(), n + 1))?;
            ob.lines += 1;
            match parsed {
                Line::Queued {
                    id,
                    event,
                    incident_id,
                    queued_at_ms,
                    body,
                } => {
                    if ob.seen.insert(id.clone()) {
                        ob.pending.push_back(Pending {
                            id,
                            event,
                            incident_id,
                            queued_at_ms,
                            body,
                        });
                    }
                }
                Line::Delivered { id, .. } | Line::Dead { id, .. } => {
                    ob.remove_pending(&id);
                    ob.mark_done(id);
                }
                Line::Seen { id } => {
                    ob.mark_done(id);
                }
            }
        }
        if ob.dead_path.exists() {
            let f = File::open(&ob.dead_path)
                .with_context(|| format!("cannot read {}", ob.dead_path.display()))?;
            ob.dead_total = BufReader::new(f).lines().count() as u64;
        }
        Ok(ob)
    }

    /// Deliveries finish in queue order: the head, almost always.
    fn remove_pending(&mut self, id: &str) {
        if self.pending.front().is_some_and(|p| p.id == id) {
            self.pending.pop_front();
        } else {
            self.pending.retain(|p| p.id != id);
        }
    }

    fn mark_done(&mut self, id: String) {
        self.seen.insert(id.clone());
        self.done_order.push_back(id);
        if self.done_order.len() > 4 * KEEP_DONE_IDS {
            let drop = self.done_order.len() - KEEP_DONE_IDS;
            for old in self.done_order.drain(..drop) {
                self.seen.remove(&old);
            }
            // Ids still pending must stay known.
            for p in &self.pending {
                self.seen.insert(p.id.clone());
            }
        }
    }

    /// Queues the deliveries whose id was never queued, durably (one fsync).
    /// Returns how many were new.
    pub(crate) fn enqueue(&mut self, items: Vec<Pending>) -> Result<usize> {
        let mut buf = Vec::new();
        let mut fresh = Vec::new();
        for p in items {
            if self.seen.contains(&p.id) {
                continue;
            }
            self.seen.insert(p.id.clone());
            let line = Line::Queued {
                id: p.id.clone(),
                event: p.event,
                incident_id: p.incident_id.clone(),
                queued_at_ms: p.queued_at_ms,
                body: p.body.clone(),
            };
            serde_json::to_writer(&mut buf, &line).context("cannot encode an outbox entry")?;
            buf.push(b'\n');
            fresh.push(p);
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        self.append(&buf)?;
        self.lines += fresh.len() as u64;
        let n = fresh.len();
        self.pending.extend(fresh);
        Ok(n)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    pub(crate) fn front(&self) -> Option<&Pending> {
        self.pending.front()
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn dead_total(&self) -> u64 {
        self.dead_total
    }

    /// Records that the head delivery `id` was accepted (durably).
    pub(crate) fn delivered(&mut self, id: &str, status: u16, at_ms: i64) -> Result<()> {
        let line = Line::Delivered {
            id: id.to_string(),
            at_ms,
            status,
        };
        self.finish(id, &line)
    }

    /// Moves the head delivery to the dead letters (durably), with the reason.
    pub(crate) fn dead(&mut self, id: &str, attempts: u32, reason: &str, at_ms: i64) -> Result<()> {
        let Some(p) = self.pending.iter().find(|p| p.id == id) else {
            return Ok(());
        };
        let dl = DeadLetter {
            id: p.id.clone(),
            event: p.event,
            incident_id: p.incident_id.clone(),
            queued_at_ms: p.queued_at_ms,
            dead_at_ms: at_ms,
            attempts,
            reason: reason.to_string(),
            body: p.body.clone(),
        };
        let mut bytes = serde_json::to_vec(&dl).context("cannot encode a dead letter")?;
        bytes.push(b'\n');
        let mut f = open_append(&self.dead_path)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_data())
            .with_context(|| format!("cannot write {}", self.dead_path.display()))?;
        self.dead_total += 1;
        let line = Line::Dead {
            id: id.to_string(),
            at_ms,
            reason: reason.to_string(),
        };
        self.finish(id, &line)
    }

    fn finish(&mut self, id: &str, line: &Line) -> Result<()> {
        let mut bytes = serde_json::to_vec(line).context("cannot encode an outbox entry")?;
        bytes.push(b'\n');
        self.append(&bytes)?;
        self.lines += 1;
        self.remove_pending(id);
        self.mark_done(id.to_string());
        if self.pending.is_empty() && self.lines >= COMPACT_LINES {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal as the last done ids only (nothing is pending).
    fn compact(&mut self) -> Result<()> {
        let keep = self.done_order.len().saturating_sub(KEEP_DONE_IDS);
        let ids: Vec<String> = self.done_order.iter().skip(keep).cloned().collect();
        let mut buf = Vec::new();
        for id in &ids {
            serde_json::to_writer(&mut buf, &Line::Seen { id: id.clone() })
                .context("cannot encode an outbox entry")?;
            buf.push(b'\n');
        }
        dunes_ledger::write_atomic(&self.path, &buf, false)
            .with_context(|| format!("cannot compact {}", self.path.display()))?;
        self.file = open_append(&self.path)?;
        self.lines = ids.len() as u64;
        self.seen = ids.iter().cloned().collect();
        self.done_order = ids.into();
        Ok(())
    }

    /// The newest `limit` dead letters, newest first.
    pub(crate) fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        if !self.dead_path.exists() {
            return Ok(Vec::new());
        }
        let f = File::open(&self.dead_path)
            .with_context(|| format!("cannot read {}", self.dead_path.display()))?;
        let mut all = Vec::new();
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", self.dead_path.display()))?;
            let dl: DeadLetter = serde_json::from_str(&line).with_context(|| {
                format!("{} line {}: unreadable", self.dead_path.display(), n + 1)
            })?;
            all.push(dl);
        }
        all.reverse();
        all.truncate(limit);
        Ok(all)
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> Pending {
        Pending {
            id: id.into(),
            event: ChangeKind::Created,
            incident_id: format!("inc-{id}"),
            queued_at_ms: 1_700_000_000_000,
            body: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    #[test]
    fn queued_entries_survive_reopen_and_ids_are_queued_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut ob = Outbox::open(dir.path()).expect("open");
        assert_eq!(
            ob.enqueue(vec![item("a"), item("b"), item("c")])
                .expect("q"),
            3
        );
        ob.delivered("a", 200, 1).expect("delivered");
        ob.dead("b", 3, "HTTP 400: bad payload", 2).expect("dead");
        drop(ob);
        let mut ob = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(ob.pending(), 1);
        assert_eq!(ob.front(), Some(&item("c")));
        // Re-detection after a crash queues the same changes again: ignored,
        // whether they were delivered, dead-lettered or still pending.
        assert_eq!(
            ob.enqueue(vec![item("a"), item("b"), item("c"), item("d")])
                .expect("q"),
            1
        );
        assert_eq!(ob.pending(), 2);
        assert_eq!(ob.dead_total(), 1);
        let dl = ob.dead_letters(10).expect("dead letters");
        assert_eq!(dl.len(), 1);
        assert_eq!(
            (dl[0].id.as_str(), dl[0].attempts, dl[0].reason.as_str()),
            ("b", 3, "HTTP 400: bad payload")
        );
        assert_eq!(dl[0].body, item("b").body);
    }

    #[test]
    fn a_torn_last_line_is_cut_and_other_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut ob = Outbox::open(dir.path()).expect("open");
        ob.enqueue(vec![item("a")]).expect("q");
        drop(ob);
        let p = dir.path().join("outbox.ndjson");
        let mut f = OpenOptions::new().append(true).open(&p).expect("f");
        f.write_all(b"{\"op\":\"delivered\",\"id\":\"a\",\"at_")
            .expect("w");
        drop(f);
        let mut ob = Outbox::open(dir.path()).expect("torn tail is repaired");
        assert_eq!(ob.pending(), 1, "the torn outcome did not count");
        ob.delivered("a", 204, 3).expect("delivered");
        drop(ob);
        let ob = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(ob.pending(), 0);
        let mut text = std::fs::read_to_string(&p).expect("read");
        text.insert_str(0, "not json\n");
        std::fs::write(&p, text).expect("w");
        let err = Outbox::open(dir.path()).err().expect("damage refused");
        assert!(err.to_string().contains("outbox.ndjson line 1"), "{err}");
    }

    #[test]
    fn compaction_keeps_pending_nothing_and_remembers_recent_ids() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut ob = Outbox::open(dir.path()).expect("open");
        let n = COMPACT_LINES as usize / 2 + 1;
        let ids: Vec<String> = (0..n).map(|i| format!("id{i}")).collect();
        ob.enqueue(ids.iter().map(|i| item(i)).collect())
            .expect("q");
        for id in &ids {
            ob.delivered(id, 200, 1).expect("delivered");
        }
        assert!(ob.lines < 2 * n as u64, "compacted");
        drop(ob);
        let size = std::fs::metadata(dir.path().join("outbox.ndjson"))
            .expect("meta")
            .len();
        assert!(size < 40 * KEEP_DONE_IDS as u64, "{size}");
        let mut ob = Outbox::open(dir.path()).expect("reopen");
        assert_eq!(ob.pending(), 0);
        // The most recent ids are still known; the oldest are forgotten.
        assert_eq!(ob.enqueue(vec![item(&ids[n - 1])]).expect("q"), 0);
        assert_eq!(ob.enqueue(vec![item(&ids[0])]).expect("q"), 1);
    }
}
