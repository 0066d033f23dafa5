//! The de-duplication window: an event whose `event_id` (or derived id) was
//! already accepted is not normalised, detected or ledgered again. This is
//! what makes Kafka's at-least-once redelivery (after a crash between the
//! ledger fsync and the offset commit) exactly-once in the ledger, and it
//! also absorbs producer retries and a file replayed twice.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

/// 128-bit BLAKE3 prefix.
type Key = [u8; 16];

fn key(bytes: &[u8]) -> Key {
    let h = blake3::hash(bytes);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// What [`Dedup::observe`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time in the window: process it.
    New,
    /// Same id and same bytes as an earlier event: skip it.
    Duplicate,
    /// Same id, different bytes: a producer reused an id. Processed (nothing
    /// is dropped on a guess) and counted.
    IdReused,
}

/// The most recent `capacity` event ids with a hash of their bytes
/// (32 bytes per id plus map overhead, about 60 MB per million).
#[derive(Debug)]
pub struct Dedup {
    capacity: usize,
    /// Keys are BLAKE3 digests already: foldhash, not SipHash.
    seen: HashMap<Key, Key, foldhash::fast::RandomState>,
    order: VecDeque<Key>,
}

impl Dedup {
    /// An empty window of `capacity` ids (0 disables de-duplication).
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity,
            seen: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            order: VecDeque::new(),
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Checks `event_id` with the envelope's `raw` bytes and remembers it
    /// (evicting the oldest id beyond the capacity).
    pub fn observe(&mut self, event_id: &str, raw: &[u8]) -> Seen {
        self.observe_hashed(event_id, blake3::hash(raw).as_bytes())
    }

    /// [`Dedup::observe`] with the BLAKE3 hash of the bytes already computed.
    pub fn observe_hashed(&mut self, event_id: &str, raw_blake3: &[u8; 32]) -> Seen {
        if self.capacity == 0 {
            return Seen::New;
        }
        let k = key(event_id.as_bytes());
        let mut content = [0u8; 16];
        content.copy_from_slice(&raw_blake3[..16]);
        match self.seen.entry(k) {
            Entry::Occupied(c) if *c.get() == content => Seen::Duplicate,
            Entry::Occupied(_) => Seen::IdReused,
            Entry::Vacant(v) => {
                v.insert(content);
                self.order.push_back(k);
                while self.order.len() > self.capacity {
                    if let Some(old) = self.order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
                Seen::New
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_reuse_and_eviction() {
        let mut d = Dedup::new(2);
        assert_eq!(d.observe("a", b"1"), Seen::New);
        assert_eq!(d.observe("a", b"1"), Seen::Duplicate);
        assert_eq!(d.observe("a", b"2"), Seen::IdReused);
        assert_eq!(d.observe("b", b"1"), Seen::New);
        assert_eq!(d.observe("c", b"1"), Seen::New);
        assert_eq!(d.len(), 2);
        // "a" fell out of the window.
        assert_eq!(d.observe("a", b"1"), Seen::New);
        assert_eq!(d.observe("c", b"1"), Seen::Duplicate);
        let mut off = Dedup::new(0);
        assert_eq!(off.observe("a", b"1"), Seen::New);
        assert_eq!(off.observe("a", b"1"), Seen::New);
        assert!(off.is_empty());
    }
}
