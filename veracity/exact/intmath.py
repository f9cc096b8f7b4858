"""Integer helpers of the exact op set, vectorised over int64 arrays and exact: bit lengths,
integer square roots and rounded division."""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray

_VEC_LIMIT = 1 << 62  # below it the vectorised forms are exact; above, the reference loops run
_SMALL = 8  # up to this many elements Python's integers are faster than the vectorised forms


def bitlen(a: Array) -> Array:
    """int.bit_length of each (non-negative) element. Vectorised: the float64 exponent, then one
    integer check for a conversion that rounded up to the next power of two."""
    a = np.asarray(a, dtype=np.int64)
    if a.size <= _SMALL or a.max() >= _VEC_LIMIT or a.min() < 0:
        flat = [int(v).bit_length() for v in a.ravel().tolist()]
        return np.array(flat, dtype=np.int64).reshape(a.shape)
    e = np.frexp(a.astype(np.float64))[1].astype(np.int64)  # a == 0 gives 0
    return np.where((e > 0) & (a < (np.int64(1) << np.maximum(e - 1, 0))), e - 1, e)


def isqrt(a: Array) -> Array:
    """math.isqrt of each (non-negative) element. Vectorised: the float64 root, then integer
    corrections so that r*r <= a < (r+1)*(r+1) holds exactly."""
    a = np.asarray(a, dtype=np.int64)
    if a.size <= _SMALL or a.max() >= _VEC_LIMIT or a.min() < 0:
        flat = [math.isqrt(v) for v in a.ravel().tolist()]
        return np.array(flat, dtype=np.int64).reshape(a.shape)
    r = np.sqrt(a.astype(np.float64)).astype(np.int64)
    r = np.where(r * r > a, r - 1, r)
    r = np.where(r * r > a, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= a, r + 1, r)
    return np.where((r + 1) * (r + 1) <= a, r + 1, r)


def round_div(num: Array, den: Array | np.int64) -> Array:
    """round_half_up(num / den) for integer arrays, den > 0."""
    return (2 * num + den) // (2 * den)


def clip(x: Array, lo: int, hi: int) -> Array:
    """``np.clip`` for integer arrays, without its per-call checks (a decoded token's ops are small)."""
    return np.minimum(np.maximum(x, lo), hi)
