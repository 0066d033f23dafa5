//! RFC 9162-shaped Merkle tree hashing with BLAKE3.
//!
//! * leaf hash  = `BLAKE3(0x00 ‖ record_header_bytes)` (this is also the record hash that
//!   chains records together, see `docs/ledger-format.md`)
//! * node hash  = `BLAKE3(0x01 ‖ left ‖ right)`
//! * empty tree = `BLAKE3("")`
//!
//! For `n > 1` leaves the root is `node(MTH(D[0..k]), MTH(D[k..n]))` where `k` is the largest
//! power of two strictly smaller than `n` (RFC 9162 §2.1.1).
//!
//! [`Frontier`] is a compact range starting at leaf 0: the roots of the perfect subtrees that
//! make up the first `size` leaves. It lets the ledger compute the root of a growing tree in
//! O(1) amortised time per leaf and O(log n) memory. Inclusion and consistency proofs (a later
//! issue) need the full leaf list, which the ledger keeps in memory.

/// A 32-byte BLAKE3 digest.
pub type Hash = [u8; 32];

/// Domain-separation prefix of leaf hashes.
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of interior node hashes.
pub const NODE_PREFIX: u8 = 0x01;

/// `BLAKE3(0x00 ‖ record_header_bytes)`: the Merkle leaf hash, identical to the record hash.
pub fn leaf_hash(record_header_bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF_PREFIX]);
    h.update(record_header_bytes);
    *h.finalize().as_bytes()
}

/// `BLAKE3(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    *blake3::hash(&buf).as_bytes()
}

/// Root of the empty tree: `BLAKE3("")`.
pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// Merkle tree head over `leaves` (already leaf-hashed).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

/// Compact range `[0, size)`: the roots of the maximal perfect subtrees covering the first
/// `size` leaves, largest (leftmost) first. Their sizes are the set bits of `size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// An empty frontier (tree size 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.size;
        // Each trailing 1 bit of `size` is a perfect subtree of the same size as the one being
        // carried: merge them.
        while n & 1 == 1 {
            match self.nodes.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break, // unreachable by construction; keeps this panic-free
            }
            n >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// Root of the tree over the leaves pushed so far (RFC 9162 `MTH`).
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        let mut acc = *last;
        for left in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_le_bytes())
    }

    /// RFC 9162 §2.1.1 recursive definition, written independently of `Frontier`.
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => *blake3::hash(b"").as_bytes(),
            1 => d[0],
            n => {
                let mut k = 1usize;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    fn b3(parts: &[&[u8]]) -> Hash {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        *h.finalize().as_bytes()
    }

    #[test]
    fn hashes_are_domain_separated_blake3() {
        assert_eq!(leaf_hash(b"abc"), b3(&[&[0u8], b"abc"]));
        let (a, b) = (leaf(1), leaf(2));
        assert_eq!(node_hash(&a, &b), b3(&[&[1u8], &a, &b]));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        assert_eq!(root(&[]), b3(&[]));
        assert_eq!(
            hex::encode(root(&[])),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn small_trees_by_explicit_formula() {
        let l: Vec<Hash> = (0..5).map(leaf).collect();
        let n = |a: &Hash, b: &Hash| b3(&[&[1u8], a, b]);
        // 1 leaf: the leaf itself.
        assert_eq!(root(&l[..1]), l[0]);
        // 2 leaves.
        assert_eq!(root(&l[..2]), n(&l[0], &l[1]));
        // 3 leaves: split at 2.
        assert_eq!(root(&l[..3]), n(&n(&l[0], &l[1]), &l[2]));
        // 4 leaves: perfect.
        let n01 = n(&l[0], &l[1]);
        let n23 = n(&l[2], &l[3]);
        assert_eq!(root(&l[..4]), n(&n01, &n23));
        // 5 leaves: split at 4.
        assert_eq!(root(&l[..5]), n(&n(&n01, &n23), &l[4]));
    }

    #[test]
    fn frontier_tracks_every_prefix() {
        let leaves: Vec<Hash> = (0..300).map(leaf).collect();
        let mut f = Frontier::new();
        assert_eq!(f.root(), mth(&[]));
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.size(), i as u64 + 1);
            assert_eq!(f.root(), mth(&leaves[..=i]), "size {}", i + 1);
            assert_eq!(f.nodes.len() as u32, f.size().count_ones());
        }
    }

    proptest! {
        #[test]
        fn root_matches_rfc9162_recursion(seeds in proptest::collection::vec(any::<u64>(), 0..200)) {
            let leaves: Vec<Hash> = seeds.iter().map(|s| leaf(*s)).collect();
            prop_assert_eq!(root(&leaves), mth(&leaves));
        }
    }
}
