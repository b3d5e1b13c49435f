"""
Merkle tree hashing as RFC 6962 §2.1 / RFC 9162 §2.1 define it.

Leaves are hashed as C{SHA-256(0x00 || d)}, interior nodes as
C{SHA-256(0x01 || left || right)}; the tree over C{n} leaves splits at the
largest power of two smaller than C{n}.  L{CompactTree} keeps only the
O(log n) roots of the perfect subtrees a log of C{n} leaves decomposes into,
which is all that appending and computing the root need.
"""

from __future__ import annotations

from bisect import bisect_right
from hashlib import sha256
from typing import Iterable, Sequence

from attrs import define, field

__all__ = [
    "EMPTY_ROOT",
    "aligned_subtrees",
    "CompactTree",
    "Levels",
    "ProofError",
    "consistency_proof",
    "consistency_proof_from",
    "inclusion_proof",
    "leaf_hash",
    "mth",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

#: MTH({}) = SHA-256() (RFC 6962 §2.1).
EMPTY_ROOT = sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not verify, or is malformed; the message says which."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than C{n} (C{n} >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaves given by their leaf hashes."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def mth(entries: Iterable[bytes]) -> bytes:
    """MTH(D[n]) of a list of entries (RFC 6962 §2.1)."""
    tree = CompactTree()
    for entry in entries:
        tree.append(leaf_hash(entry))
    return tree.root()


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """
    PATH(m, D[n]) (RFC 6962 §2.1.1) for the leaf at C{index}, from all the
    tree's leaf hashes.
    """
    n = len(hashes)
    if not 0 <= index < n:
        raise ProofError(f"leaf index {index} is outside a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_proof(index, hashes[:k]) + [root_from_leaf_hashes(hashes[k:])]
    return inclusion_proof(index - k, hashes[k:]) + [root_from_leaf_hashes(hashes[:k])]


class Levels:
    """
    Every node of the tree over C{hashes}, level by level, so that many
    inclusion proofs cost O(log n) each (a session's records in a log of
    millions), not O(n) as L{inclusion_proof}.

    RFC 6962's tree (split at the largest power of two below C{n}) is the
    tree built bottom-up pairing neighbours, where a level's last node
    without a partner moves up unchanged.
    """

    def __init__(self, hashes: Sequence[bytes]) -> None:
        level = list(hashes)
        self.size = len(level)
        self.levels = [level]
        while len(level) > 1:
            up = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)
            level = up

    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[bytes]:
        """PATH(index, D[n]), bottom to top, as L{inclusion_proof}."""
        if not 0 <= index < self.size:
            raise ProofError(f"leaf index {index} is outside a tree of size {self.size}")
        proof = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index >>= 1
        return proof


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """
    PROOF(m, D[n]) (RFC 6962 §2.1.2) between the tree of the first
    C{old_size} leaves and the tree of all of C{hashes}.
    """
    n = len(hashes)
    if not 0 < old_size <= n:
        raise ProofError(f"old size {old_size} is not within 1..{n}")

    def subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
        size = len(leaves)
        if m == size:
            return [] if complete else [root_from_leaf_hashes(leaves)]
        k = _split(size)
        if m <= k:
            return subproof(m, leaves[:k], complete) + [root_from_leaf_hashes(leaves[k:])]
        return subproof(m - k, leaves[k:], False) + [root_from_leaf_hashes(leaves[:k])]

    return subproof(old_size, hashes, True)


def consistency_proof_from(
    old_size: int, old_frontier: Sequence[bytes], new_hashes: Sequence[bytes]
) -> list[bytes]:
    """
    PROOF(m, D[n]) (RFC 6962 §2.1.2) from what a log keeps: the frontier of
    the tree of the first C{old_size} leaves (L{CompactTree}'s, largest
    subtree first) and the leaf hashes of the leaves after them.

    Every node of the proof that lies within the first C{old_size} leaves
    is one of the frontier's subtrees (the left siblings on the path to
    leaf C{old_size - 1} are exactly the perfect subtrees C{old_size}
    decomposes into); every other node is over new leaves only.  So a log
    can prove consistency with any size whose frontier it kept, reading
    only the records written since.
    """
    m = old_size
    n = m + len(new_hashes)
    if not 0 < m <= n:
        raise ProofError(f"old size {m} is not within 1..{n}")
    if len(old_frontier) != bin(m).count("1"):
        raise ProofError(f"a tree of size {m} has {bin(m).count('1')} frontier hashes, got {len(old_frontier)}")
    by_start: dict[int, tuple[int, bytes]] = {}
    start = 0
    for bit, h in zip((b for b in range(m.bit_length() - 1, -1, -1) if m >> b & 1), old_frontier):
        by_start[start] = (start + (1 << bit), h)
        start += 1 << bit

    def node(lo: int, hi: int) -> bytes:
        if hi <= m:
            end, h = by_start[lo]
            if end != hi:  # cannot happen for an RFC 6962 proof
                raise ProofError(f"node [{lo}, {hi}) is not a subtree of the old tree's frontier")
            return h
        return root_from_leaf_hashes(new_hashes[lo - m : hi - m])

    def subproof(mm: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        size = hi - lo
        if mm == size:
            return [] if complete else [node(lo, hi)]
        k = _split(size)
        if mm <= k:
            return subproof(mm, lo, lo + k, complete) + [node(lo + k, hi)]
        return subproof(mm - k, lo + k, hi, False) + [node(lo, lo + k)]

    return subproof(m, 0, n, True)


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """
    Verify an inclusion proof (RFC 9162 §2.1.3.2).

    @raise ProofError: if it does not prove C{leaf} at C{index} in the tree
        of C{size} leaves whose root is C{root}.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if len(p) != 32:
            raise ProofError(f"proof element of {len(p)} bytes, expected 32")
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """
    Verify a consistency proof (RFC 9162 §2.1.4.2).

    @raise ProofError: if it does not prove that the tree of C{new_size}
        leaves with root C{new_root} extends the one of C{old_size} leaves with
        root C{old_root}.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"sizes {old_size} -> {new_size}: expected 0 < old <= new")
    if any(len(p) != 32 for p in proof):
        raise ProofError("proof element is not 32 bytes")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal sizes but different roots")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # A power of two: the old root is itself the first node (§2.1.4.2 step 1).
        path.insert(0, old_root)
    if not path:
        raise ProofError("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than expected")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than expected")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")


def aligned_subtrees(
    start: int, hashes: Sequence[bytes], cuts: Sequence[int] = ()
) -> list[tuple[int, bytes]]:
    """
    Split the leaves at indices [start, start + len(hashes)), given as leaf
    hashes, into the largest perfect subtrees aligned to their index in the
    whole tree (a subtree of 2**h leaves starts at a multiple of 2**h), none
    spanning a size in the sorted C{cuts}; return (h, root) left to right.

    Appending them in order with L{CompactTree.append_subtree} to a tree of
    C{start} leaves gives the same tree as appending each leaf, and the tree
    passes through every size in C{cuts} (where a checkpoint is checked).
    Hashing a level at a time in a list comprehension costs about a third
    of what L{CompactTree.append} costs per leaf, and runs in the workers.
    """
    result: list[tuple[int, bytes]] = []
    position = start
    end = start + len(hashes)
    offset = 0
    cut = bisect_right(cuts, position)
    while position < end:
        while cut < len(cuts) and cuts[cut] <= position:
            cut += 1
        limit = min(end, cuts[cut]) if cut < len(cuts) else end
        height = (limit - position).bit_length() - 1
        if position:
            height = min(height, (position & -position).bit_length() - 1)
        width = 1 << height
        level = hashes[offset : offset + width]
        while len(level) > 1:
            pairs = iter(level)
            level = [sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs)]
        result.append((height, level[0]))
        position += width
        offset += width
    return result


@define
class CompactTree:
    """
    An append-only Merkle tree that keeps only its frontier: the roots of
    the perfect subtrees the first C{size} leaves decompose into, largest
    (leftmost) first — one per set bit of C{size}.
    """

    size: int = 0
    _frontier: list[bytes] = field(factory=list)

    def append(self, leaf: bytes) -> None:
        """Add a leaf, given as its leaf hash."""
        frontier = self._frontier
        frontier.append(leaf)
        n = self.size
        # Each trailing 1 bit of the old size is a subtree of equal size to
        # merge with (binary carry).
        while n & 1:
            right = frontier.pop()
            frontier[-1] = sha256(b"\x01" + frontier[-1] + right).digest()
            n >>= 1
        self.size += 1

    def append_subtree(self, height: int, root: bytes) -> None:
        """
        Add 2**C{height} leaves at once, given as the root of their perfect
        subtree (see L{aligned_subtrees}).

        @raise ValueError: if the size is not a multiple of 2**C{height}:
            such a subtree is not a node of this tree.
        """
        if height < 0 or self.size & ((1 << height) - 1):
            raise ValueError(f"a subtree of 2**{height} leaves cannot start at leaf {self.size}")
        frontier = self._frontier
        frontier.append(root)
        n = self.size >> height
        while n & 1:
            right = frontier.pop()
            frontier[-1] = sha256(b"\x01" + frontier[-1] + right).digest()
            n >>= 1
        self.size += 1 << height

    def root(self) -> bytes:
        """MTH of the leaves so far."""
        frontier = self._frontier
        if not frontier:
            return EMPTY_ROOT
        r = frontier[-1]
        for h in reversed(frontier[:-1]):
            r = sha256(b"\x01" + h + r).digest()
        return r

    def to_list(self) -> list[str]:
        """The frontier as hex strings (what L{from_list} takes back)."""
        return [h.hex() for h in self._frontier]

    @classmethod
    def from_list(cls, size: int, frontier: Sequence[str]) -> "CompactTree":
        """
        Restore a tree from its size and L{to_list} output.

        @raise ValueError: if the frontier does not fit the size.
        """
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        expected = bin(size).count("1")
        if len(frontier) != expected:
            raise ValueError(
                f"a tree of size {size} has {expected} frontier hashes, got {len(frontier)}"
            )
        hashes = []
        for i, text in enumerate(frontier):
            try:
                h = bytes.fromhex(text)
            except (TypeError, ValueError):
                h = b""
            if len(h) != 32:
                raise ValueError(f"frontier[{i}] is not 64 hex digits: {text!r}")
            hashes.append(h)
        return cls(size, hashes)

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """The frontier hashes, largest subtree first."""
        return tuple(self._frontier)

    def copy(self) -> "CompactTree":
        return CompactTree(self.size, list(self._frontier))
