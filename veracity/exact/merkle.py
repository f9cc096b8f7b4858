"""Position-binding SHA-256 Merkle trees with inclusion proofs, as the Disputes contract checks them.

Node ``sha256(0x01 || left || right)``; an odd last node is carried up unchanged (the trace
format's tree: ``exact.trace`` roots traces and tensors with it). A proof is the list of sibling hashes from the leaf
up, skipping levels where the node was carried; the leaf's index and the tree's size fix which
side each sibling is on, so a proof binds a leaf to its position. (snekmate's Merkle module sorts
each pair, which proves membership but not position; a bisection game needs positions.)
"""

from __future__ import annotations

import hashlib


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, root last."""
    out = [list(leaves) or [hashlib.sha256(b"").digest()]]
    while len(out[-1]) > 1:
        lv = out[-1]
        nxt = [node(lv[i], lv[i + 1]) for i in range(0, len(lv) - 1, 2)]
        if len(lv) % 2:
            nxt.append(lv[-1])
        out.append(nxt)
    return out


def root(leaves: list[bytes]) -> bytes:
    return levels(leaves)[-1][0]


Peaks = list[tuple[int, bytes]]  # (leaves under it, hash): a tree grown leaf by leaf, its perfect subtrees


def grow(peaks: Peaks, leaf: bytes) -> Peaks:
    """``peaks`` with one more leaf (equal subtrees merged, as the tree pairs them)."""
    out = peaks + [(1, leaf)]
    while len(out) >= 2 and out[-1][0] == out[-2][0]:
        (n, left), (_, right) = out[-2], out[-1]
        out[-2:] = [(2 * n, node(left, right))]
    return out


def peaks_root(peaks: Peaks) -> bytes:
    """The root of the tree ``peaks`` hold: ``root`` of their leaves (an odd last node carried up
    is a smaller subtree folded in from the right), in O(log n) hashes."""
    h = peaks[-1][1]
    for _, p in reversed(peaks[:-1]):
        h = node(p, h)
    return h


def prove(tree: list[list[bytes]], index: int) -> list[bytes]:
    """Sibling hashes for leaf ``index`` of a tree from ``levels``."""
    proof = []
    for lv in tree[:-1]:
        sib = index ^ 1
        if sib < len(lv):
            proof.append(lv[sib])
        index //= 2
    return proof


def verify(root_: bytes, leaf: bytes, index: int, size: int, proof: list[bytes]) -> bool:
    """Whether ``leaf`` is at ``index`` of a ``size``-leaf tree with this root."""
    if not 0 <= index < size:
        return False
    h, width, used = leaf, size, 0
    while width > 1:
        if index ^ 1 < width:  # has a sibling at this level (else carried up)
            if used >= len(proof):
                return False
            sib = proof[used]
            used += 1
            h = node(sib, h) if index & 1 else node(h, sib)
        index //= 2
        width = (width + 1) // 2
    return used == len(proof) and h == root_
