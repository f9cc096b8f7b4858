"""The reference backend's vectorised integer square root and bit length are exactly
math.isqrt and int.bit_length, at every power-of-two and perfect-square boundary."""

import math

import numpy as np

from veracity.exact.ops_numpy import bitlen, isqrt


def test_vectorised_isqrt_and_bitlen_are_exact():
    rng = np.random.default_rng(0)
    vals = list(range(20))
    vals += [(1 << k) + d for k in range(1, 62) for d in (-2, -1, 0, 1, 2)]
    vals += [r * r + d for r in (1000, 2**20 + 3, 2**26 - 1, 2**30 + 5, 2**31 - 1) for d in (-1, 0, 1)]
    vals += [*rng.integers(0, 2**62, 20000), *rng.integers(0, 2**40, 20000), *rng.integers(0, 2**20, 20000)]
    a = np.array(vals, dtype=np.int64).reshape(-1, 5)
    assert (bitlen(a) == np.array([int(v).bit_length() for v in a.ravel()]).reshape(a.shape)).all()
    assert (isqrt(a) == np.array([math.isqrt(int(v)) for v in a.ravel()]).reshape(a.shape)).all()
    big = np.array([2**62, 2**63 - 1], dtype=np.int64)  # past the vectorised range: the loops answer
    assert list(isqrt(big)) == [math.isqrt(2**62), math.isqrt(2**63 - 1)] and list(bitlen(big)) == [63, 63]
