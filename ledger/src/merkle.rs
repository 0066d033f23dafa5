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
//! O(1) amortised time per leaf and O(log n) memory.
//!
//! Inclusion and consistency proofs follow RFC 9162 §2.1.3 and §2.1.4 exactly (generation:
//! `PATH` / `PROOF`; verification: the iterative algorithms of §2.1.3.2 and §2.1.4.2).

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

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    let mut k = 1u64;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// RFC 9162 §2.1.3.1 `PATH(m, D[n])`: the inclusion proof of leaf `m` in the tree over
/// `leaves`. `None` if `m >= leaves.len()`.
pub fn inclusion_proof(leaves: &[Hash], m: u64) -> Option<Vec<Hash>> {
    LeafSet::borrowed(leaves).inclusion_proof(m, leaves.len() as u64)
}

/// RFC 9162 §2.1.4.1 `PROOF(m, D[n])`: consistency proof between the tree over the first `m`
/// leaves and the tree over all `leaves`. `None` unless `1 <= m <= leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], m: u64) -> Option<Vec<Hash>> {
    LeafSet::borrowed(leaves).consistency_proof(m, leaves.len() as u64)
}

/// The record (leaf) hashes of a ledger whose first `pruned()` records may have been removed
/// by retention: those are known only through their compact range (the [`Frontier`] at the
/// pruning point), the later ones one by one. Roots of every tree size `>= pruned()` and
/// proofs about leaves `>= pruned()` can still be computed: every subtree they need that lies
/// wholly before the pruning point is one of the frontier's nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafSet<'a> {
    base: Frontier,
    leaves: std::borrow::Cow<'a, [Hash]>,
}

impl<'a> LeafSet<'a> {
    /// All leaves from 0, nothing pruned.
    pub fn borrowed(leaves: &'a [Hash]) -> Self {
        Self {
            base: Frontier::new(),
            leaves: std::borrow::Cow::Borrowed(leaves),
        }
    }

    /// Leaves `base.size()..` after a pruned prefix summarised by `base`.
    pub fn pruned(base: Frontier, leaves: Vec<Hash>) -> LeafSet<'static> {
        LeafSet {
            base,
            leaves: std::borrow::Cow::Owned(leaves),
        }
    }

    /// Number of pruned leaves (0 when nothing was pruned).
    pub fn first(&self) -> u64 {
        self.base.size()
    }

    /// The compact range of the pruned prefix.
    pub fn base(&self) -> &Frontier {
        &self.base
    }

    /// Total number of leaves, pruned ones included.
    pub fn len(&self) -> u64 {
        self.base.size() + self.leaves.len() as u64
    }

    /// Whether there are no leaves at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaf `i`, if it was not pruned.
    pub fn leaf(&self, i: u64) -> Option<Hash> {
        let j = usize::try_from(i.checked_sub(self.first())?).ok()?;
        self.leaves.get(j).copied()
    }

    /// The leaves kept after the pruned prefix.
    pub fn kept(&self) -> &[Hash] {
        &self.leaves
    }

    /// Append one leaf.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.to_mut().push(leaf);
    }

    /// The compact range `[0, size)` (`first() <= size <= len()`).
    pub fn frontier(&self, size: u64) -> Option<Frontier> {
        if size < self.first() || size > self.len() {
            return None;
        }
        let mut f = self.base.clone();
        for l in &self.leaves[..(size - self.first()) as usize] {
            f.push(*l);
        }
        Some(f)
    }

    /// Merkle root of the first `size` leaves (`first() <= size <= len()`, or a size that is
    /// a node of the pruned prefix).
    pub fn root(&self, size: u64) -> Option<Hash> {
        if size == 0 {
            return Some(empty_root());
        }
        if size > self.len() {
            return None;
        }
        self.mth(0, size)
    }

    /// `MTH(D[a..b])`, `a < b`: computed from the kept leaves, from the frontier's nodes for
    /// the pruned prefix, `None` when it needs a pruned leaf that no node summarises.
    fn mth(&self, a: u64, b: u64) -> Option<Hash> {
        let p = self.first();
        if a >= p {
            let s = &self.leaves[(a - p) as usize..(b - p) as usize];
            return Some(root(s));
        }
        // The frontier's nodes cover [0, p) in decreasing powers of two.
        let mut start = 0u64;
        for (bit, node) in (0..64u32)
            .rev()
            .filter(|bit| p >> bit & 1 == 1)
            .zip(self.base.nodes())
        {
            let end = start + (1u64 << bit);
            if (a, b) == (start, end) {
                return Some(*node);
            }
            start = end;
        }
        // A perfect subtree inside the pruned prefix that is not one of its nodes lies inside
        // one: its leaves are gone. (A range that ends at `p` and is not perfect is split
        // into the nodes below.)
        if b - a < 2 || (b <= p && (b - a).is_power_of_two()) {
            return None;
        }
        let k = split_point(b - a);
        Some(node_hash(&self.mth(a, a + k)?, &self.mth(a + k, b)?))
    }

    /// RFC 9162 `PATH(m, D[n])`; `None` if `m >= n`, `n > len()` or a needed node was pruned
    /// (never for `m >= first()`).
    pub fn inclusion_proof(&self, m: u64, n: u64) -> Option<Vec<Hash>> {
        if m >= n || n > self.len() {
            return None;
        }
        let mut out = Vec::new();
        self.path(m, 0, n, &mut out)?;
        Some(out)
    }

    fn path(&self, m: u64, a: u64, b: u64, out: &mut Vec<Hash>) -> Option<()> {
        if b - a <= 1 {
            return Some(());
        }
        let k = split_point(b - a);
        if m < a + k {
            self.path(m, a, a + k, out)?;
            out.push(self.mth(a + k, b)?);
        } else {
            self.path(m, a + k, b, out)?;
            out.push(self.mth(a, a + k)?);
        }
        Some(())
    }

    /// RFC 9162 `PROOF(m, D[n])`; `None` unless `1 <= m <= n <= len()`, or if a needed
    /// node was pruned (never for `m >= first()`).
    pub fn consistency_proof(&self, m: u64, n: u64) -> Option<Vec<Hash>> {
        if m == 0 || m > n || n > self.len() {
            return None;
        }
        let mut out = Vec::new();
        self.subproof(m, 0, n, true, &mut out)?;
        Some(out)
    }

    /// `SUBPROOF(m, D[a..b], flag)` with `m` counted from `a`.
    fn subproof(&self, m: u64, a: u64, b: u64, flag: bool, out: &mut Vec<Hash>) -> Option<()> {
        if m == b - a {
            if !flag {
                out.push(self.mth(a, b)?);
            }
            return Some(());
        }
        let k = split_point(b - a);
        if m <= k {
            self.subproof(m, a, a + k, flag, out)?;
            out.push(self.mth(a + k, b)?);
        } else {
            self.subproof(m - k, a + k, b, false, out)?;
            out.push(self.mth(a, a + k)?);
        }
        Some(())
    }
}

/// RFC 9162 §2.1.3.2: verify that `leaf` is leaf `index` of the tree of `tree_size` leaves
/// with head `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= tree_size {
        return false;
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: verify that the tree of `first` leaves with head `first_root` is a
/// prefix of the tree of `second` leaves with head `second_root`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *first_root && sr == *second_root
}

impl Frontier {
    /// The subtree roots, largest (leftmost) first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Rebuild a frontier from its size and subtree roots (as exported); `None` if the number
    /// of nodes does not match the set bits of `size`.
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        if nodes.len() as u32 != size.count_ones() {
            return None;
        }
        Some(Self { size, nodes })
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

    #[test]
    fn all_proofs_for_small_trees() {
        let leaves: Vec<Hash> = (0..40).map(leaf).collect();
        for n in 1..=leaves.len() {
            let d = &leaves[..n];
            let r = root(d);
            for m in 0..n {
                let p = inclusion_proof(d, m as u64).expect("proof");
                assert!(
                    verify_inclusion(&d[m], m as u64, n as u64, &p, &r),
                    "n {n} m {m}"
                );
                // Wrong leaf, index, size, root or a modified proof fail.
                assert!(!verify_inclusion(&leaf(999), m as u64, n as u64, &p, &r));
                if n > 1 {
                    assert!(!verify_inclusion(
                        &d[m],
                        ((m + 1) % n) as u64,
                        n as u64,
                        &p,
                        &r
                    ));
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_inclusion(&d[m], m as u64, n as u64, &bad, &r));
                    assert!(!verify_inclusion(
                        &d[m],
                        m as u64,
                        n as u64,
                        &p[..p.len() - 1],
                        &r
                    ));
                }
            }
            assert!(inclusion_proof(d, n as u64).is_none());
            for m in 1..=n {
                let rm = root(&d[..m]);
                let p = consistency_proof(d, m as u64).expect("proof");
                assert!(
                    verify_consistency(m as u64, n as u64, &rm, &r, &p),
                    "m {m} n {n}"
                );
                if m < n {
                    assert!(!verify_consistency(m as u64, n as u64, &r, &r, &p));
                    assert!(!verify_consistency(m as u64, n as u64, &rm, &rm, &p));
                    let mut bad = p.clone();
                    let last = bad.len() - 1;
                    bad[last][5] ^= 0x80;
                    assert!(!verify_consistency(m as u64, n as u64, &rm, &r, &bad));
                    assert!(!verify_consistency(m as u64 + 1, n as u64, &rm, &r, &p) || m + 1 == n);
                }
            }
            assert!(consistency_proof(d, 0).is_none());
        }
    }

    #[test]
    fn rfc9162_proof_shapes() {
        // Tree of 7 leaves (RFC 6962 §2.1.3 example shapes): PATH(3, D7) = [c, g, l]
        // where a..h are leaves: here checked structurally.
        let l: Vec<Hash> = (0..7).map(leaf).collect();
        let p = inclusion_proof(&l, 3).expect("proof");
        assert_eq!(p, vec![l[2], node_hash(&l[0], &l[1]), root(&l[4..7])]);
        // PROOF(3, D7) = [c, d, g, l]
        let c = consistency_proof(&l, 3).expect("proof");
        assert_eq!(c, vec![l[2], l[3], node_hash(&l[0], &l[1]), root(&l[4..7])]);
        // PROOF(4, D7) = [l], PROOF(6, D7) = [i, j, k]
        assert_eq!(consistency_proof(&l, 4).expect("p"), vec![root(&l[4..7])]);
        assert_eq!(
            consistency_proof(&l, 6).expect("p"),
            vec![node_hash(&l[4], &l[5]), l[6], root(&l[..4])]
        );
    }

    proptest! {
        #[test]
        fn proofs_verify_for_random_sizes(n in 1usize..300, a in any::<u64>(), b in any::<u64>()) {
            let leaves: Vec<Hash> = (0..n as u64).map(leaf).collect();
            let m = (a % n as u64) as usize;
            let r = root(&leaves);
            let p = inclusion_proof(&leaves, m as u64).expect("proof");
            prop_assert!(verify_inclusion(&leaves[m], m as u64, n as u64, &p, &r));
            let first = 1 + (b % n as u64);
            let c = consistency_proof(&leaves, first).expect("proof");
            prop_assert!(verify_consistency(first, n as u64, &root(&leaves[..first as usize]), &r, &c));
        }

        /// After pruning the first `p` leaves, every root of size >= p and every inclusion
        /// and consistency proof about leaves >= p is still computable and identical.
        #[test]
        fn pruned_prefix_keeps_roots_and_proofs(n in 1u64..200, a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
            let leaves: Vec<Hash> = (0..n).map(leaf).collect();
            let p = a % (n + 1);
            let mut base = Frontier::new();
            for l in &leaves[..p as usize] {
                base.push(*l);
            }
            let set = LeafSet::pruned(base, leaves[p as usize..].to_vec());
            prop_assert_eq!(set.len(), n);
            let size = p.max(1) + b % (n - p.max(1) + 1);
            prop_assert_eq!(set.root(size), Some(root(&leaves[..size as usize])));
            prop_assert_eq!(set.frontier(size).map(|f| f.root()), Some(root(&leaves[..size as usize])));
            if p < size {
                let m = p + c % (size - p);
                prop_assert_eq!(set.inclusion_proof(m, size), inclusion_proof(&leaves[..size as usize], m));
            }
            let first = p.max(1) + c % (size - p.max(1) + 1);
            prop_assert_eq!(set.consistency_proof(first, size), consistency_proof(&leaves[..size as usize], first));
            if p > 1 {
                // A leaf inside the pruned prefix has no proof unless a node is that leaf.
                let m = c % p;
                let full = inclusion_proof(&leaves[..size as usize], m);
                let got = set.inclusion_proof(m, size);
                prop_assert!(got.is_none() || got == full);
            }
        }

        #[test]
        fn root_matches_rfc9162_recursion(seeds in proptest::collection::vec(any::<u64>(), 0..200)) {
            let leaves: Vec<Hash> = seeds.iter().map(|s| leaf(*s)).collect();
            prop_assert_eq!(root(&leaves), mth(&leaves));
        }
    }
}
