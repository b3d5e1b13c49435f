"""
Tests for L{hoopgw.audit.merkle}, against the RFC 6962 test vectors of
certificate-transparency (as kept in transparency-dev/merkle testonly/).
"""

from __future__ import annotations

from hashlib import sha256

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    Levels,
    aligned_subtrees,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    mth,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]


def _h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# (leaf index, tree size, path) -- 0-based indexes.
INCLUSION = [
    (0, 1, []),
    (0, 2, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")),
    (1, 2, _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")),
    (2, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, _h(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    )),
    (0, 8, _h(
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    )),
    (5, 8, _h(
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    )),
]

# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, _h(
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    )),
    (6, 8, _h(
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    )),
    (2, 5, _h(
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    )),
]

HASHES = [leaf_hash(d) for d in LEAVES]
leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


class VectorTests(SynchronousTestCase):
    def test_hashers(self) -> None:
        """
        The leaf and node hashers give the RFC 6962 test values for the
        empty tree, an empty leaf, "L123456" and the children "N123"/"N456".
        """
        self.assertEqual(EMPTY_ROOT.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        self.assertEqual(mth([]), EMPTY_ROOT)
        self.assertEqual(leaf_hash(b"").hex(), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        self.assertEqual(leaf_hash(b"L123456").hex(), "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
        self.assertEqual(node_hash(b"N123", b"N456").hex(), "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")

    def test_roots(self) -> None:
        """
        For each prefix of the 8 test leaves, MTH, the recursive root over
        leaf hashes and the compact tree all give the published root.
        """
        tree = CompactTree()
        for n in range(1, 9):
            tree.append(HASHES[n - 1])
            self.assertEqual(mth(LEAVES[:n]), ROOTS[n - 1], n)
            self.assertEqual(root_from_leaf_hashes(HASHES[:n]), ROOTS[n - 1], n)
            self.assertEqual(tree.root(), ROOTS[n - 1], n)

    def test_inclusion_vectors(self) -> None:
        """
        The generated inclusion paths equal the published ones, and they
        verify against the published roots.
        """
        for index, size, path in INCLUSION:
            self.assertEqual(inclusion_proof(index, HASHES[:size]), path, (index, size))
            verify_inclusion(index, size, HASHES[index], path, ROOTS[size - 1])

    def test_consistency_vectors(self) -> None:
        """
        The generated consistency proofs equal the published ones, and they
        verify between the published roots.
        """
        for old, new, proof in CONSISTENCY:
            self.assertEqual(consistency_proof(old, HASHES[:new]), proof, (old, new))
            verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)

    def test_corrupted_inclusion(self) -> None:
        """
        If the index, size, leaf, root or any proof element is wrong, or the
        proof has an element added or removed, verification fails.
        """
        index, size, path = INCLUSION[-1]
        root, leaf = ROOTS[size - 1], HASHES[index]
        bad_cases = [
            (index - 1, size, leaf, path, root),
            (index + 1, size, leaf, path, root),
            (index ^ 2, size, leaf, path, root),
            (index, size * 2, leaf, path, root),
            (index, size // 2, leaf, path, root),
            (index, size, sha256(b"WrongLeaf").digest(), path, root),
            (index, size, leaf, path, EMPTY_ROOT),
            (index, size, leaf, path + [root], root),
            (index, size, leaf, [root] + path, root),
            (index, size, leaf, path[:-1], root),
        ]
        for i in range(len(path)):
            wrong = list(path)
            wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
            bad_cases.append((index, size, leaf, wrong, root))
        for case in bad_cases:
            self.assertRaises(ProofError, verify_inclusion, *case)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(leaf_lists)
    def test_levels_give_the_rfc_6962_tree(self, leaves: list[bytes]) -> None:
        """The bottom-up levels have MTH's root and PATH's proofs (a bundle's many proofs, each O(log n))."""
        hashes = [leaf_hash(d) for d in leaves]
        levels = Levels(hashes)
        self.assertEqual(levels.root(), root_from_leaf_hashes(hashes))
        for index in range(len(hashes)):
            self.assertEqual(levels.inclusion_proof(index), inclusion_proof(index, hashes))
        self.assertRaises(ProofError, levels.inclusion_proof, len(hashes))

    @settings(max_examples=60, deadline=None)
    @given(leaf_lists)
    def test_compact_tree_equals_mth(self, leaves: list[bytes]) -> None:
        """
        For any number of leaves, the compact tree's root after each append
        equals MTH of that prefix, and a tree restored from its serialised
        frontier continues identically.
        """
        hashes = [leaf_hash(d) for d in leaves]
        tree = CompactTree()
        for n, h in enumerate(hashes, 1):
            tree.append(h)
            self.assertEqual(tree.root(), root_from_leaf_hashes(hashes[:n]))
        half = len(hashes) // 2
        first = CompactTree()
        for h in hashes[:half]:
            first.append(h)
        restored = CompactTree.from_list(first.size, first.to_list())
        for h in hashes[half:]:
            restored.append(h)
        self.assertEqual(restored.root(), tree.root())

    @settings(max_examples=60, deadline=None)
    @given(leaf_lists, st.data())
    def test_proofs_verify(self, leaves: list[bytes], data: st.DataObject) -> None:
        """
        For any tree, the inclusion proof of any leaf and the consistency
        proof from any smaller size verify; flipping a bit in any proof
        element or using the wrong leaf makes them fail.
        """
        hashes = [leaf_hash(d) for d in leaves]
        n = len(hashes)
        root = root_from_leaf_hashes(hashes)
        index = data.draw(st.integers(0, n - 1))
        path = inclusion_proof(index, hashes)
        verify_inclusion(index, n, hashes[index], path, root)
        self.assertRaises(ProofError, verify_inclusion, index, n, leaf_hash(b"other"), path, root)
        old = data.draw(st.integers(1, n))
        proof = consistency_proof(old, hashes)
        old_root = root_from_leaf_hashes(hashes[:old])
        verify_consistency(old, n, old_root, root, proof)
        if path:
            i = data.draw(st.integers(0, len(path) - 1))
            wrong = list(path)
            wrong[i] = bytes([wrong[i][0] ^ 1]) + wrong[i][1:]
            self.assertRaises(ProofError, verify_inclusion, index, n, hashes[index], wrong, root)
        if proof:
            i = data.draw(st.integers(0, len(proof) - 1))
            wrong = list(proof)
            wrong[i] = bytes([wrong[i][0] ^ 1]) + wrong[i][1:]
            self.assertRaises(ProofError, verify_consistency, old, n, old_root, root, wrong)

    def test_from_list_rejects_mismatch(self) -> None:
        """
        If a serialised frontier has the wrong number of hashes for its size,
        or a hash is not 64 hex digits, restoring it fails saying so.
        """
        e = self.assertRaises(ValueError, CompactTree.from_list, 3, ["00" * 32])
        self.assertIn("size 3 has 2", str(e))
        self.assertRaises(ValueError, CompactTree.from_list, 1, ["zz"])


class AlignedSubtreeTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(0, 300),
        st.lists(st.integers(1, 90), max_size=8),
        st.lists(st.integers(0, 320), max_size=6),
    )
    def test_equals_leaf_by_leaf(self, n: int, pieces: list[int], cuts: list[int]) -> None:
        """
        For any leaves fed in any pieces (as the verifier's read chunks and
        worker ranges cut them) and any checkpoint sizes, appending the
        pieces' aligned subtrees gives the root of the same leaves appended
        one by one, and the tree passes through every cut size with that
        prefix's root.
        """
        hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(n)]
        cuts = sorted(set(cuts))
        tree = CompactTree()
        roots = {0: tree.root()}
        position = 0
        for width in pieces + [n]:
            end = min(n, position + width)
            for height, root in aligned_subtrees(position, hashes[position:end], cuts):
                tree.append_subtree(height, root)
                roots[tree.size] = tree.root()
            position = end
        self.assertEqual(tree.size, n)
        self.assertEqual(tree.root(), root_from_leaf_hashes(hashes))
        for cut in cuts:
            if cut <= n:
                self.assertEqual(roots[cut], root_from_leaf_hashes(hashes[:cut]), cut)

    def test_misaligned_subtree_refused(self) -> None:
        """
        If a subtree of 2**h leaves would start at a size that is not a
        multiple of 2**h, it is refused.
        """
        tree = CompactTree()
        tree.append(leaf_hash(b"a"))
        self.assertRaises(ValueError, tree.append_subtree, 1, leaf_hash(b"b"))
