//! The de-duplication window: an event whose `event_id` (or derived id) was
//! already accepted is not normalised, detected or ledgered again. This is
//! what makes Kafka's at-least-once redelivery (after a crash between the
//! ledger fsync and the offset commit) exactly-once in the ledger, and it
//! also absorbs producer retries and a file replayed twice.

use hashbrown::HashTable;

/// 128-bit BLAKE3 prefix.
type Key = [u8; 16];

fn key(bytes: &[u8]) -> Key {
    let h = blake3::hash(bytes);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// A key's table hash: its first eight bytes (a BLAKE3 prefix is uniform
/// already, so it is not hashed again).
fn hash_of(k: &Key) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_le_bytes(b)
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

/// One remembered id: its key and the hash of its bytes.
#[derive(Clone, Copy, Debug)]
struct Remembered {
    id: Key,
    content: Key,
}

/// The most recent `capacity` event ids with a hash of their bytes: a ring
/// of 32-byte entries in arrival order and a table of ring slots (4 bytes
/// per bucket), about 44 MB per million ids (a map of key → hash plus a
/// queue of keys took about 86 MB).
#[derive(Debug)]
pub struct Dedup {
    capacity: usize,
    /// Entries in arrival order; once full, `head` is the oldest and is
    /// overwritten next.
    ring: Vec<Remembered>,
    head: usize,
    /// Slots of `ring`, found by the id's key.
    index: HashTable<u32>,
}

impl Dedup {
    /// An empty window of `capacity` ids (0 disables de-duplication; at most
    /// `u32::MAX`).
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity: capacity.min(u32::MAX as usize),
            ring: Vec::new(),
            head: 0,
            index: HashTable::new(),
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
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
        let id = key(event_id.as_bytes());
        let mut content = [0u8; 16];
        content.copy_from_slice(&raw_blake3[..16]);
        let ring = &self.ring;
        if let Some(known) = self
            .index
            .find(hash_of(&id), |&s| {
                ring.get(s as usize).is_some_and(|e| e.id == id)
            })
            .and_then(|&s| ring.get(s as usize))
        {
            return if known.content == content {
                Seen::Duplicate
            } else {
                Seen::IdReused
            };
        }
        let entry = Remembered { id, content };
        let slot = if self.ring.len() < self.capacity {
            self.ring.push(entry);
            self.ring.len() - 1
        } else {
            // The oldest id leaves the window; its slot takes the new one.
            let slot = self.head;
            let old = self.ring[slot].id;
            if let Ok(e) = self
                .index
                .find_entry(hash_of(&old), |&s| s as usize == slot)
            {
                e.remove();
            }
            self.ring[slot] = entry;
            self.head = (slot + 1) % self.capacity;
            slot
        };
        let ring = &self.ring;
        self.index.insert_unique(hash_of(&id), slot as u32, |&s| {
            ring.get(s as usize).map_or(0, |e| hash_of(&e.id))
        });
        Seen::New
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

    /// The same answers as the window it replaced (a map of id → content
    /// and a queue of ids in arrival order), over random streams with
    /// repeated ids, reused ids and evictions.
    mod model {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::{HashMap, VecDeque};

        struct MapAndQueue {
            capacity: usize,
            seen: HashMap<String, Vec<u8>>,
            order: VecDeque<String>,
        }

        impl MapAndQueue {
            fn observe(&mut self, id: &str, raw: &[u8]) -> Seen {
                if self.capacity == 0 {
                    return Seen::New;
                }
                match self.seen.get(id) {
                    Some(c) if c.as_slice() == raw => Seen::Duplicate,
                    Some(_) => Seen::IdReused,
                    None => {
                        self.seen.insert(id.to_string(), raw.to_vec());
                        self.order.push_back(id.to_string());
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

        proptest! {
            #[test]
            fn answers_like_a_map_and_a_queue(
                capacity in 0usize..6,
                stream in proptest::collection::vec((0u8..10, 0u8..3), 0..200),
            ) {
                let mut d = Dedup::new(capacity);
                let mut m = MapAndQueue { capacity, seen: HashMap::new(), order: VecDeque::new() };
                for (id, raw) in stream {
                    let id = format!("id-{id}");
                    let raw = [raw];
                    prop_assert_eq!(d.observe(&id, &raw), m.observe(&id, &raw), "{}", id);
                    prop_assert_eq!(d.len(), m.order.len());
                    // an evicted id leaves the table too (no stale slots)
                    prop_assert_eq!(d.index.len(), d.ring.len());
                }
            }
        }
    }
}
