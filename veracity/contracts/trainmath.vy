# pragma version ~=0.4.3
"""
@title trainmath
@notice The integer arithmetic the training referees share (`veracity/verify/onestep.py` and
        `onestep_train.py`): floor division, rounding shifts, the per-row int8 quantizer and
        LayerNorm's row statistics. Pure functions only.
"""

import tensors

QMAX: constant(int256) = 127
ROW_BITS: constant(uint256) = 12
RECIP_SHIFT: constant(uint256) = 17
NORM_BITS: constant(uint256) = 15
NORM_STD_SHIFT: constant(uint256) = 4
MAX_K: constant(uint256) = 1040  # the longest row an int64 chunk holds


@internal
@pure
def _fdiv(a: int256, b: int256) -> int256:
    """floor(a / b) for b > 0 (Vyper's // truncates toward zero)."""
    q: int256 = a // b
    if a % b != 0 and a < 0:
        q -= 1
    return q


@internal
@pure
def _round_shift(num: int256, den: int256, sh: int256) -> int256:
    """round_half_up(num * 2**shift / den), as `exact.integer.round_shift`."""
    pos: uint256 = convert(max(sh, 0), uint256)
    neg: uint256 = convert(max(-sh, 0), uint256)
    d2: int256 = (den << neg) * 2
    return self._fdiv((num << pos) * 2 + d2 // 2, d2)


@internal
@pure
def _values(row: Bytes[tensors.ROW_BYTES], dtype: uint8, k: uint256) -> DynArray[int256, MAX_K]:
    """The first `k` elements of a row (uint8 unsigned, the rest signed), decoded in one pass
    (reading them one call at a time would copy the row into every call)."""
    w: uint256 = tensors._itemsize(dtype)
    bits: uint256 = 256 - 8 * w
    out: DynArray[int256, MAX_K] = []
    for i: uint256 in range(k, bound=MAX_K):
        word: bytes32 = extract32(row, i * w)
        if dtype == 2:
            out.append(convert(convert(word, uint256) >> bits, int256))
        else:
            out.append(convert(word, int256) >> bits)
    return out


@internal
@pure
def _row(row: Bytes[tensors.ROW_BYTES], t: tensors.TensorRow) -> DynArray[int256, MAX_K]:
    """A whole row of tensor `t`, decoded."""
    return self._values(row, t.dtype, tensors._last(t.dims))


@internal
@pure
def _quantized(v: DynArray[int256, MAX_K]) -> (DynArray[int256, MAX_K], int256, int256):
    """A row as per-row int8 (`ops_numpy.quantize_rows`): the values, the rescaled max, the shift."""
    amax: int256 = 0
    for x: int256 in v:
        amax = max(amax, abs(x))
    b: uint256 = tensors._bitlen(convert(amax, uint256))
    e: uint256 = 0
    if b > ROW_BITS:
        e = b - ROW_BITS
    half: int256 = convert((1 << e) >> 1, int256)
    ams: int256 = (amax + half) >> e
    inv: int256 = 0
    if ams > 0:
        inv = (QMAX << RECIP_SHIFT) // ams
    q: DynArray[int256, MAX_K] = []
    for x: int256 in v:
        q.append(((x + half) >> e) * inv + (1 << (RECIP_SHIFT - 1)) >> RECIP_SHIFT)
    return q, ams, convert(e, int256)


@internal
@pure
def _qdot(x: DynArray[int256, MAX_K], w: DynArray[int256, MAX_K], sh: int256) -> int256:
    """`train.qmatmul`'s element from its two rows: round_shift(dot(q(x), q(w)) ax aw, 127**2, ex + ew + sh)."""
    assert len(x) == len(w), "referee: rows of different lengths"
    qx: DynArray[int256, MAX_K] = []
    qw: DynArray[int256, MAX_K] = []
    ax: int256 = 0
    aw: int256 = 0
    ex: int256 = 0
    ew: int256 = 0
    qx, ax, ex = self._quantized(x)
    qw, aw, ew = self._quantized(w)
    acc: int256 = 0
    for i: uint256 in range(len(qx), bound=MAX_K):
        acc += qx[i] * qw[i]
    return self._round_shift(acc * ax * aw, QMAX * QMAX, ex + ew + sh)


@internal
@pure
def _dot(a: DynArray[int256, MAX_K], b: DynArray[int256, MAX_K]) -> int256:
    assert len(a) == len(b), "referee: rows of different lengths"
    acc: int256 = 0
    for i: uint256 in range(len(a), bound=MAX_K):
        acc += a[i] * b[i]
    return acc


@internal
@pure
def _sum(a: DynArray[int256, MAX_K]) -> int256:
    acc: int256 = 0
    for x: int256 in a:
        acc += x
    return acc


@internal
@pure
def _norm_stats(x: DynArray[int256, MAX_K]) -> (DynArray[int256, MAX_K], int256, int256):
    """LayerNorm's (ds, e, D) of a row: the centred row shifted to 15 bits, the shift, and
    D = isqrt(mean(ds^2) * 2**8) (at least 1)."""
    hh: int256 = convert(len(x), int256)
    mean: int256 = self._fdiv(2 * self._sum(x) + hh, 2 * hh)
    amax: int256 = 0
    for v: int256 in x:
        amax = max(amax, abs(v - mean))
    b: uint256 = tensors._bitlen(convert(amax, uint256))
    e: uint256 = 0
    if b > NORM_BITS:
        e = b - NORM_BITS
    half: int256 = convert((1 << e) >> 1, int256)
    ds: DynArray[int256, MAX_K] = []
    var: int256 = 0
    for v: int256 in x:
        d: int256 = (v - mean + half) >> e
        ds.append(d)
        var += d * d
    den: int256 = max(convert(isqrt(convert((var << 2 * NORM_STD_SHIFT) // hh, uint256)), int256), 1)
    return ds, convert(e, int256), den
