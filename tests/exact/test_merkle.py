"""Merkle proofs bind a leaf to its position, for every tree size, and match the trace's root."""

import hashlib

from veracity.exact import merkle
from veracity.exact.trace import merkle_root


def leaves(n):
    return [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]


def test_every_leaf_proves_and_no_other_position_does():
    for n in [1, 2, 3, 5, 8, 13, 33]:
        ls = leaves(n)
        tree = merkle.levels(ls)
        r = tree[-1][0]
        assert r == merkle.root(ls) == merkle_root(ls)
        for i in range(n):
            proof = merkle.prove(tree, i)
            assert merkle.verify(r, ls[i], i, n, proof)
            if n > 1:  # the same leaf at another position, or another leaf here, does not prove
                assert not merkle.verify(r, ls[i], (i + 1) % n, n, proof)
                assert not merkle.verify(r, ls[(i + 1) % n], i, n, proof)
        assert not merkle.verify(r, ls[0], n, n, merkle.prove(tree, 0))
