"""One-step verification: recompute ONE output element of an exact op from its input rows.

A dispute narrows a disagreement to one element of one op whose inputs both parties agree on.
The referee (``contracts/OneStep.vy``, the same formulas in Vyper) then recomputes that element
from the Merkle-proven input rows and constants, and whoever claimed another value loses. These
functions are the reference for the contract: plain Python integers, one element at a time, the
same arithmetic as ``exact.ops_numpy`` restricted to what one element depends on. Every op's
element depends on O(1) rows of its inputs:

=================  ==============================================================================
op                 element and what it reads
=================  ==============================================================================
linear             y[r, c]: row r of x (and the smoothing row), row c of W, mult/shift/bias of c
add, relu          one element of each input
lut (gelu, silu)   one table entry, at the index the input element names
layernorm/rmsnorm  y[r, c]: row r of x, gamma[c], beta[c]
embedding          y[t, c]: row ids[t] of the table
attention score    z[i, j]: the head's row i of q and row j of k, the key's mask bit
softmax prob       p[i, j]: row i of z and one exp2 table entry
prob row sum       s[i]: row i of p
context            ctx[i, d]: row i of p, s[i], column d of v over tokens (a row of the transposed v)
mean pool          y[c]: column c of h over tokens, the mask
l2 normalize       y[c]: the row
=================  ==============================================================================

Division is floor division, right shifts are arithmetic (floor), rounding is half up, exactly as
in the op set's specification.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from veracity.exact import spec

Row = Sequence[int]


class OneStepError(ValueError):
    """An element claim that is malformed (wrong table index, rows of different lengths)."""


def round_div(num: int, den: int) -> int:
    """round_half_up(num / den) for den > 0."""
    return (2 * num + den) // (2 * den)


def clip(v: int, limit: int) -> int:
    return max(-limit, min(limit, v))


def quantize_row(x: Row) -> tuple[list[int], int, int]:
    """Per-row int8 quantization: (q, rescaled row max, shift e), as ``ops_numpy.quantize_rows``."""
    amax = max((abs(v) for v in x), default=0)
    e = max(0, amax.bit_length() - spec.ROW_BITS)
    half = (1 << e) >> 1
    ams = (amax + half) >> e
    inv = (spec.QMAX << spec.RECIP_SHIFT) // ams if ams > 0 else 0
    rnd = 1 << (spec.RECIP_SHIFT - 1)
    return [(((v + half) >> e) * inv + rnd) >> spec.RECIP_SHIFT for v in x], ams, e


def _dot(a: Row, b: Row) -> int:
    if len(a) != len(b):
        raise OneStepError(f"rows of different lengths ({len(a)} and {len(b)})")
    return sum(x * y for x, y in zip(a, b))


def linear(x: Row, w: Row, mult: int, shift: int, bias: int, out_max: int, smooth: Row | None = None) -> int:
    """y[r, c] from row r of x, row c of the int8 weights, and channel c's requantization."""
    xv = list(x) if smooth is None else [a * s for a, s in zip(x, smooth, strict=True)]
    q, ams, e = quantize_row(xv)
    prod = _dot(q, w) * ams * mult
    sh = shift - e
    if sh < 1:
        raise OneStepError(f"requantization shift {sh} is below 1")
    return clip(((prod + (1 << (sh - 1))) >> sh) + bias, out_max)


def add(a: int, b: int) -> int:
    return clip(a + b, spec.ACT_MAX)


def relu(x: int) -> int:
    return max(x, 0)


def lut(x: int, index: int, value: int) -> int:
    """A table op (GELU, SiLU): the entry at ``x + 2**15``, proven separately against the table."""
    if index != x + (1 << 15):
        raise OneStepError(f"the table entry shown is {index}, the input {x} needs {x + (1 << 15)}")
    return value


def norm(x: Row, c: int, gamma: int, beta: int, centre: bool) -> int:
    """LayerNorm (``centre``) or RMSNorm element y[r, c] from row r."""
    h = len(x)
    d = [v - round_div(sum(x), h) for v in x] if centre else list(x)
    amax = max(abs(v) for v in d)
    e = max(0, amax.bit_length() - spec.NORM_BITS)
    half = (1 << e) >> 1
    ds = [(v + half) >> e for v in d]
    var = sum(v * v for v in ds)
    den = max(math.isqrt((var << (2 * spec.NORM_STD_SHIFT)) // h), 1)
    return clip(round_div(ds[c] * gamma, den) + beta, spec.ACT_MAX)


def embedding(table_row: Row, row_index: int, token_id: int, c: int) -> int:
    """y[t, c] = table[ids[t], c]: the row shown must be the one the token names."""
    if row_index != token_id:
        raise OneStepError(f"the table row shown is {row_index}, the token needs {token_id}")
    return table_row[c]


def score(q: Row, k: Row, i: int, j: int, key_valid: int, causal: bool) -> int:
    """Base-2 attention logit z[i, j] from the head's query row i and key row j."""
    if not key_valid or (causal and j > i):
        return spec.MASKED_SCORE
    qq, amq, eq = quantize_row(q)
    kq, amk, ek = quantize_row(k)
    num = _dot(qq, kq) * amq * amk
    k2 = eq + ek + spec.SCORE_FRAC - 2 * spec.ACT_FRAC
    den = spec.QMAX * spec.QMAX
    pos, neg = max(k2, 0), max(-k2, 0)
    z = (((num << pos) << 1) + (den << neg)) // ((2 * den) << neg)
    return clip(z, spec.I16_MAX)


def prob(z: Row, j: int, index: int, value: int) -> int:
    """p[i, j] = exp2 table entry at min(rowmax - z[j], size - 1) (the last entry if masked)."""
    u = min(max(z) - z[j], spec.EXP2_LUT_SIZE - 1)
    if z[j] == spec.MASKED_SCORE:
        u = spec.EXP2_LUT_SIZE - 1
    if index != u:
        raise OneStepError(f"the exp2 entry shown is {index}, the scores need {u}")
    return value


def prob_sum(p: Row) -> int:
    return sum(p)


def context(p: Row, psum: int, v: Row, key_valid: Row) -> int:
    """ctx[i, d] from row i of the probabilities, its sum, and column d of v over the tokens."""
    vq, amv, ev = quantize_row([a * m for a, m in zip(v, key_valid, strict=True)])
    num = _dot(p, vq) * (amv << ev)
    return clip(round_div(num, spec.QMAX * psum), spec.ACT_MAX)


def mean_pool(h: Row, mask: Row) -> int:
    """y[c] from column c of h over the tokens and the token mask."""
    total = _dot(h, mask)
    return round_div(total, max(sum(mask), 1))


def l2_normalize(x: Row, c: int) -> int:
    """y[c] = x[c] / |x| in 2**15 fixed point."""
    amax = max(abs(v) for v in x)
    e = max(0, amax.bit_length() - spec.NORM_BITS)
    half = (1 << e) >> 1
    xs = [(v + half) >> e for v in x]
    n = math.isqrt(sum(v * v for v in xs))
    return round_div(xs[c] << 15, n) if n > 0 else 0


# training (``training.mlp.mlp_step``): the digits MLP's step, one element at a time -----------------
def round_shift(num: int, den: int, shift: int) -> int:
    """round_half_up(num * 2**shift / den), as ``exact.integer.round_shift``."""
    pos, neg = max(shift, 0), max(-shift, 0)
    d2 = (den << neg) * 2
    return ((num << pos) * 2 + d2 // 2) // d2


def qmm(x: Row, w: Row, shift: int, bias: int | None, bias_shift: int) -> int:
    """y[r, c] of ``train.qmatmul`` (row r of x, row c of w, both quantized per row) plus bias."""
    if len(x) != len(w):
        raise OneStepError("qmm: rows of different lengths")
    qx, ax, ex = quantize_row(x)
    qw, aw, ew = quantize_row(w)
    acc = sum(a * b for a, b in zip(qx, qw))
    y = round_shift(acc * ax * aw, spec.QMAX * spec.QMAX, ex + ew + shift)
    return y + (bias >> bias_shift) if bias is not None else y


EXP_SHIFT, EXP_SIZE, LOG2E_16 = 20, 24 << 8, 94548  # ``exact.integer``: the exp table's index


def exp_index(z: Row, c: int) -> int:
    """The exp table entry of logit c: ((max - z_c) * log2(e)) >> 20, capped at the table's end."""
    return min(((max(z) - z[c]) * LOG2E_16) >> EXP_SHIFT, EXP_SIZE - 1)


def loss_grad(p: Row, c: int, label: int) -> int:
    """p_c / sum(p) - onehot, in ACT_FRAC."""
    return round_shift(p[c], sum(p), spec.ACT_FRAC) - ((1 << spec.ACT_FRAC) if c == label else 0)


def clipped_mean(g: int, grad: int) -> int:
    """The summed gradient's batch mean, clipped (``grad`` packs batch | clip << 16)."""
    batch, limit = grad & 0xFFFF, grad >> 16
    return clip(round_shift(g, batch, 0), limit)


def moment(v: int, g: int, opt: int, grad: int) -> int:
    """The first moment's update (``opt`` packs optimizer | mu or beta1 << 8)."""
    code, k = opt & 0xFF, opt >> 8
    g = clipped_mean(g, grad)
    return (v * k + g * (1024 - k)) >> 10 if code == 3 else ((v * k) >> 10) + g


def second(s: int, g: int, opt: int, grad: int) -> int:
    """Adam's second moment (``opt`` packs optimizer | beta2 << 8); other optimizers keep it."""
    code, k = opt & 0xFF, opt >> 8
    if code != 3:
        return s
    g = clipped_mean(g, grad)
    return (s * k + g * g * (1024 - k)) >> 10


def weight(w: int, m: int, s: int, opt: int, eps: int) -> int:
    """The tensor's update (``opt`` packs optimizer | lr << 8): w - lr m, or Adam's lr m / (sqrt(s) + eps)."""
    code, lr = opt & 0xFF, opt >> 8
    if code == 3:
        return w - round_shift(m * lr, (math.isqrt(s) + eps) << 16, 20)
    return w - ((m * lr) >> 16)
