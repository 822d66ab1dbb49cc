//! A Merkle tree over a batch of answers, so that one signature covers many
//! (as Roughtime signs a batch of replies): the server signs the tree's
//! root once, and each answer carries the hashes that lead from its own
//! leaf to that root (its audit path).
//!
//! The tree is RFC 9162's (Certificate Transparency 2.0, section 2.1):
//! a leaf's hash is SHA-256 of `0x00` and the leaf's bytes; an inner node's
//! is SHA-256 of `0x01`, the left child's hash and the right's; a tree of
//! `n > 1` leaves splits at the largest power of two below `n`. The two
//! prefixes keep a leaf from ever passing for an inner node, and the
//! verifier walks the path by the leaf's index and the tree's size, both
//! of which the signed message fixes (PROTOCOL.md, "Signed answers").

use sha2::{Digest, Sha256};

/// A node's hash.
pub type Hash = [u8; 32];

/// The hash of a leaf holding `bytes`.
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    let mut digest = Sha256::new();
    digest.update([0x00]);
    digest.update(bytes);
    digest.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut digest = Sha256::new();
    digest.update([0x01]);
    digest.update(left);
    digest.update(right);
    digest.finalize().into()
}

/// The root over `leaves` (leaf hashes, at least one) and each leaf's
/// audit path, the sibling nearest the leaf first.
///
/// # Panics
/// On an empty batch: a batch holds at least the answer that started it.
pub fn root_and_paths(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    assert!(!leaves.is_empty(), "a Merkle tree of no leaves");
    let mut paths = vec![Vec::new(); leaves.len()];
    let root = subtree(leaves, &mut paths);
    (root, paths)
}

/// The hash of `leaves`' subtree; each leaf's path in `paths` (the same
/// length) gets the siblings on its way up to this subtree's root.
fn subtree(leaves: &[Hash], paths: &mut [Vec<Hash>]) -> Hash {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let split = split_point(leaves.len());
    let (left_paths, right_paths) = paths.split_at_mut(split);
    let left = subtree(&leaves[..split], left_paths);
    let right = subtree(&leaves[split..], right_paths);
    for path in left_paths {
        path.push(right);
    }
    for path in right_paths {
        path.push(left);
    }
    node_hash(&left, &right)
}

/// The largest power of two below `n` (for `n > 1`).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root that `leaf` at `index` of a tree of `size` leaves reaches by
/// `path` (RFC 9162, 2.1.3.2), or `None` when the path cannot belong to
/// such a leaf: index past the size, or too few or too many hashes.
pub fn root_from_path(leaf: Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let mut node = index;
    let mut last = size - 1;
    let mut hash = leaf;
    for sibling in path {
        if last == 0 {
            return None;
        }
        if node & 1 == 1 || node == last {
            hash = node_hash(sibling, &hash);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    (last == 0).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("answer {i}").as_bytes()))
            .collect()
    }

    /// RFC 9162's definition, written out recursively, to check the
    /// path-building one against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let split = split_point(leaves.len());
        node_hash(
            &reference_root(&leaves[..split]),
            &reference_root(&leaves[split..]),
        )
    }

    #[test]
    fn every_leaf_of_every_size_reaches_the_root() {
        for n in 1..=70 {
            let leaves = leaves(n);
            let (root, paths) = root_and_paths(&leaves);
            assert_eq!(root, reference_root(&leaves), "size {n}");
            for (i, path) in paths.iter().enumerate() {
                assert!(path.len() <= 7, "size {n}: a path of {}", path.len());
                assert_eq!(
                    root_from_path(leaves[i], i as u64, n as u64, path),
                    Some(root),
                    "leaf {i} of {n}"
                );
            }
        }
    }

    #[test]
    fn a_leaf_and_a_node_never_hash_alike() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut both = Vec::from(a);
        both.extend_from_slice(&b);
        // The bytes of an inner node, offered as a leaf, hash otherwise.
        assert_ne!(leaf_hash(&both), node_hash(&a, &b));
        assert_eq!(root_and_paths(&[a]).0, a);
    }

    #[test]
    fn a_path_for_another_place_or_size_or_altered_reaches_no_root() {
        let sizes = [2usize, 3, 5, 8, 13, 32, 33];
        for n in sizes {
            let leaves = leaves(n);
            let (root, paths) = root_and_paths(&leaves);
            for (i, path) in paths.iter().enumerate() {
                let (index, size) = (i as u64, n as u64);
                let reaches = |leaf: Hash, index: u64, size: u64, path: &[Hash]| {
                    root_from_path(leaf, index, size, path) == Some(root)
                };
                assert!(reaches(leaves[i], index, size, path));
                // Another answer's leaf in this place.
                assert!(!reaches(leaves[(i + 1) % n], index, size, path));
                // This path claimed for another place.
                for other in (0..size).filter(|other| *other != index) {
                    assert!(
                        !reaches(leaves[i], other, size, path),
                        "{i} as {other} of {n}"
                    );
                }
                // Past the end. (A path may also fit a tree of another
                // size: the signed message names the size, see
                // `answer::tests`.)
                assert!(!reaches(leaves[i], size, size, path));
                // A hash changed, dropped or added.
                for at in 0..path.len() {
                    let mut altered = path.clone();
                    altered[at][at % 32] ^= 0x20;
                    assert!(!reaches(leaves[i], index, size, &altered));
                }
                assert!(!reaches(leaves[i], index, size, &path[..path.len() - 1]));
                let mut longer = path.clone();
                longer.push(root);
                assert!(!reaches(leaves[i], index, size, &longer));
            }
        }
    }

    #[test]
    fn a_batch_of_one_is_its_leaf_with_an_empty_path() {
        let leaf = leaf_hash(b"alone");
        let (root, paths) = root_and_paths(&[leaf]);
        assert_eq!((root, paths), (leaf, vec![Vec::new()]));
        assert_eq!(root_from_path(leaf, 0, 1, &[]), Some(leaf));
        assert_eq!(root_from_path(leaf, 0, 1, &[leaf]), None);
        assert_eq!(root_from_path(leaf, 0, 0, &[]), None);
    }
}
