//! RFC 6962 / RFC 9162 Merkle tree maths as pure functions: hashing,
//! roots, inclusion and consistency proofs, and their verification.
//!
//! Nothing here touches storage. Proof generation takes the leaf hashes it
//! needs; verification takes only what an auditor holds offline.

use ring::digest::{Context, SHA256};

/// A SHA-256 hash: a leaf hash, an interior node or a root.
pub type Hash = [u8; 32];

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree sizes out of order: {size1} > {size2}")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyTree,
    #[error("proof has the wrong number of hashes")]
    WrongLength,
    #[error("a hash is {0} bytes, not 32")]
    BadHashLength(usize),
    #[error("the proof leads to a different root")]
    RootMismatch,
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_hash(ctx)
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx)
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    to_hash(Context::new(&SHA256))
}

fn to_hash(ctx: Context) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(ctx.finish().as_ref());
    h
}

/// The largest power of two smaller than `n` (n ≥ 2): RFC 9162's split point.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH(D[n]) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH(index, D[n]): the audit path of leaf `index`.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    let Ok(proof) = inclusion_proof_with(index as u64, leaves.len() as u64, &mut slice_nodes(leaves));
    proof
}

/// PROOF(m, D[n]): that the first `m` leaves are a prefix of `leaves`.
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let Ok(proof) = consistency_proof_with(m as u64, leaves.len() as u64, &mut slice_nodes(leaves));
    proof
}

/// A source of complete-subtree hashes for the generic proof functions:
/// `node(level, i)` is the root of the perfect subtree over leaves
/// `i·2^level .. (i+1)·2^level`. A log stores exactly these, so proofs cost
/// O(log n) reads however large the log.
fn slice_nodes(leaves: &[Hash]) -> impl FnMut(u32, u64) -> Result<Hash, std::convert::Infallible> + '_ {
    |level, i| {
        let start = (i as usize) << level;
        Ok(root(&leaves[start..start + (1usize << level)]))
    }
}

/// MTH(D[a..b]) built from complete subtrees. `a` must be a multiple of the
/// largest power of two not above `b - a`, which holds for every range the
/// RFC 9162 recursion visits.
pub fn range_root<E>(a: u64, b: u64, node: &mut impl FnMut(u32, u64) -> Result<Hash, E>) -> Result<Hash, E> {
    let n = b - a;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && a.is_multiple_of(n) {
        let level = n.trailing_zeros();
        return node(level, a >> level);
    }
    let k = split_u64(n);
    let left = range_root(a, a + k, node)?;
    let right = range_root(a + k, b, node)?;
    Ok(node_hash(&left, &right))
}

fn split_u64(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// PATH(index, D[size]) from complete-subtree hashes (see [`range_root`]).
pub fn inclusion_proof_with<E>(index: u64, size: u64, node: &mut impl FnMut(u32, u64) -> Result<Hash, E>) -> Result<Vec<Hash>, E> {
    let mut path = Vec::new();
    if index >= size {
        return Ok(path);
    }
    // Walk down from the whole tree, collecting siblings; the RFC's
    // recursion emits them leaf-side first, so reverse at the end.
    let (mut a, mut b) = (0, size);
    while b - a > 1 {
        let k = split_u64(b - a);
        if index < a + k {
            path.push(range_root(a + k, b, node)?);
            b = a + k;
        } else {
            path.push(range_root(a, a + k, node)?);
            a += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// PROOF(m, D[size]) from complete-subtree hashes (see [`range_root`]).
pub fn consistency_proof_with<E>(m: u64, size: u64, node: &mut impl FnMut(u32, u64) -> Result<Hash, E>) -> Result<Vec<Hash>, E> {
    let mut proof = Vec::new();
    if m == 0 || m >= size {
        return Ok(proof);
    }
    let (mut a, mut b, mut m, mut complete) = (0, size, m, true);
    let mut terminal = None;
    loop {
        let n = b - a;
        if m == n {
            if !complete {
                terminal = Some(range_root(a, b, node)?);
            }
            break;
        }
        let k = split_u64(n);
        if m <= k {
            proof.push(range_root(a + k, b, node)?);
            b = a + k;
        } else {
            proof.push(range_root(a, a + k, node)?);
            a += k;
            m -= k;
            complete = false;
        }
    }
    // SUBPROOF emits the deepest hash first; the walk found it last.
    proof.extend(terminal);
    proof.reverse();
    Ok(proof)
}

/// The right edge of a tree: one complete-subtree root per set bit of its
/// size (a "compact range"). Enough to append leaves and compute the root
/// without reading anything back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of a tree of `size` leaves, read from its complete
    /// subtrees: the subtree of level `l` ending the prefix `size >> l << l`.
    pub fn load<E>(size: u64, node: &mut impl FnMut(u32, u64) -> Result<Hash, E>) -> Result<Self, E> {
        let mut nodes = Vec::new();
        for level in (0..u64::BITS).rev() {
            if size >> level & 1 == 1 {
                nodes.push(node(level, (size >> level) - 1)?);
            }
        }
        Ok(Frontier { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash. Calls `completed(level, index, hash)` for every
    /// complete subtree the leaf completes, the leaf itself (level 0) first.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let index = self.size;
        completed(0, index, &leaf);
        let mut hash = leaf;
        let mut level = 0;
        // Each trailing one bit of the old size is a left sibling to merge with.
        while (index >> level) & 1 == 1 {
            let left = self.nodes.pop().expect("a set bit of the size has a frontier node");
            hash = node_hash(&left, &hash);
            level += 1;
            completed(level, index >> level, &hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// MTH of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(first) = it.next() else { return empty_root() };
        it.fold(*first, |acc, left| node_hash(left, &acc))
    }
}

fn as_hash(bytes: &[u8]) -> Result<Hash, ProofError> {
    bytes.try_into().map_err(|_| ProofError::BadHashLength(bytes.len()))
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with
/// `root` (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &[u8], proof: &[Vec<u8>], root: &[u8]) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let leaf = as_hash(leaf)?;
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        let p = as_hash(p)?;
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(&p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, &p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r.as_slice() != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `size1` leaves with `root1` is a prefix of the
/// tree of `size2` leaves with `root2` (RFC 9162, 2.1.4.2).
pub fn verify_consistency(size1: u64, size2: u64, root1: &[u8], root2: &[u8], proof: &[Vec<u8>]) -> Result<(), ProofError> {
    // Roots are compared as given (a root of the wrong length simply does
    // not match), as the transparency-dev verifier does.
    if size2 < size1 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        // Every tree extends the empty one: a "proof" of it proves nothing,
        // so a verifier that accepted one would be trusting nothing.
        return Err(ProofError::EmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    let (fr, sr) = consistency_roots(size1, size2, root1, proof)?;
    if fr.as_slice() != root1 || sr.as_slice() != root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The two roots a consistency proof from `size1` to `size2` (0 < size1 <
/// size2) leads to: the root of the first `size1` leaves and the root of
/// all `size2`, as the tree the proof came from has them. `root1` is used
/// only when `size1` is a power of two (the proof then omits it, and the
/// first root is `root1` by construction).
///
/// If the second root is a log's signed root and the first is not the root
/// it signed earlier for `size1`, the log signed two incompatible trees:
/// a fraud proof.
pub fn consistency_roots(size1: u64, size2: u64, root1: &[u8], proof: &[Vec<u8>]) -> Result<(Hash, Hash), ProofError> {
    if size1 == 0 {
        return Err(ProofError::EmptyTree);
    }
    if size2 <= size1 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(as_hash(root1)?);
    }
    for p in proof {
        path.push(as_hash(p)?);
    }
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok((fr, sr))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The eight leaves of RFC 6962's (and the Go/C++ CT code's) test tree.
    fn rfc_leaves() -> Vec<Hash> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|h| leaf_hash(&hex::decode(h).unwrap()))
            .collect()
    }

    #[test]
    fn known_roots() {
        assert_eq!(empty_root(), hex32("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        let leaves = rfc_leaves();
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(root(&leaves[..=n]), hex32(want), "root of {} leaves", n + 1);
        }
    }

    #[test]
    fn the_frontier_and_stored_subtrees_agree_with_the_recursive_definition() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut stored = std::collections::HashMap::new();
        let mut frontier = Frontier::default();
        for (n, leaf) in leaves.iter().enumerate() {
            assert_eq!(frontier.root(), root(&leaves[..n]));
            frontier.push(*leaf, |level, i, h| {
                assert!(stored.insert((level, i), *h).is_none(), "subtree ({level},{i}) completed twice");
            });
            let mut get = |level: u32, i: u64| stored.get(&(level, i)).copied().ok_or((level, i));
            assert_eq!(Frontier::load(n as u64 + 1, &mut get).unwrap(), frontier);
        }
        let mut get = |level: u32, i: u64| stored.get(&(level, i)).copied().ok_or((level, i));
        assert_eq!(frontier.root(), root(&leaves));
        for n in 1..=leaves.len() as u64 {
            assert_eq!(range_root(0, n, &mut get).unwrap(), root(&leaves[..n as usize]));
        }
    }

    #[test]
    fn generated_proofs_verify_and_tampering_is_caught() {
        let leaves: Vec<Hash> = (0..37u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            let tree = &leaves[..n];
            let r = root(tree);
            for i in 0..n {
                let proof: Vec<Vec<u8>> = inclusion_proof(i, tree).iter().map(|h| h.to_vec()).collect();
                verify_inclusion(i as u64, n as u64, &tree[i], &proof, &r).unwrap();
                assert!(verify_inclusion(i as u64, n as u64, &leaf_hash(b"other"), &proof, &r).is_err());
            }
            for m in 1..=n {
                let proof: Vec<Vec<u8>> = consistency_proof(m, tree).iter().map(|h| h.to_vec()).collect();
                verify_consistency(m as u64, n as u64, &root(&tree[..m]), &r, &proof).unwrap();
                if m > 0 && m < n {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_consistency(m as u64, n as u64, &root(&tree[..m]), &r, &bad).is_err());
                }
            }
        }
    }
}
