"""One-step verification for the Llama family's exact ops (SmolLM2: ``exact.llm``, ``exact.blockq``):
recompute ONE output element from its input rows, in plain Python integers.

The reference for ``contracts/LlamaOneStep.vy`` (the same formulas in Vyper), as ``verify.onestep``
is for ``OneStep.vy``; each function is the int64 NumPy formula restricted to what one element
depends on:

==============  ===================================================================================
op              element and what it reads
==============  ===================================================================================
BLINEAR         y[t, n]: row t of x, row n of the quants, of the block scales (and minimums)
QEMBED          y[t, j]: the table's quant q[id, j] and its block scale d[id, j // 32]
WRMSNORM        y[t, c]: row t of x, gain[c]
ROPE            one element of a pair: the pair (a, b), the table's cos and sin
GQA_SCORES      z[h, t, s]: head h's slice of query t and of key s, whether s is visible to t
GQA_PROBS       p[h, t, j]: row (h, t) of the scores, one exp2 table entry
GQA_CONTEXT     ctx[t, h D + d]: row (h, t) of p, row (h's KV head) D + d of the transposed V cache
RESID_ADD       one element of each input
SILU_GATE       g, u and the SiLU table's entry at g + 2**15
ROW_MAX         [t, 2r] / [t, 2r + 1]: logits row r of position t
PICK            [t, 0]: row t of the row maxima (the stop rule is the caller's)
==============  ===================================================================================

Division is floor division, right shifts are arithmetic (floor), rounding is half up.
"""

from __future__ import annotations

import math

from veracity.exact import blockq, llm
from veracity.exact.spec import ACT_FRAC, ACT_MAX, NORM_STD_SHIFT
from veracity.verify.onestep import OneStepError, Row, clip, round_div

EXP2_LEN = llm.EXP2_ROWS << llm.Z_FRAC  # the probability table's length
SILU_OFFSET = 1 << 15
SCORE_SCALES = {32: 16714, 64: 11819, 128: 8357}  # llm.score_scale(D), as the contract hard-codes them


def quantize_blocks(x: Row) -> tuple[list[int], list[int], int]:
    """A row's per-block 16-bit quantization (qx, block scales a, row exponent e), as
    ``blockq.quantize_blocks``: a_b = ceil(max |x_b| / 2**e), qx = round(QX x / (a_b 2**e))."""
    if len(x) % blockq.BLOCK:
        raise OneStepError(f"a row of {len(x)} values is not whole blocks of {blockq.BLOCK}")
    blocks = [x[i:i + blockq.BLOCK] for i in range(0, len(x), blockq.BLOCK)]
    amax = [max(abs(v) for v in b) for b in blocks]
    e = max(max(amax, default=0).bit_length() - blockq.ROW_BITS, 0)
    a = [-((-am) >> e) for am in amax]
    qx = []
    for ab, b in zip(a, blocks):
        den = (ab << e) * 2
        qx += [(2 * blockq.QX * v + den // 2) // den if den > 0 else 0 for v in b]
    return qx, a, e


def block_linear(x: Row, q: Row, d: Row, m: Row | None, frac_out: int, out_max: int) -> int:
    """y[t, n] of ``blockq.block_linear`` (ACT_FRAC input bits) from row t of x and row n of the
    quants, block scales and (Q4_1) minimums."""
    if len(q) != len(x) or len(d) * blockq.BLOCK != len(x) or (m is not None and len(m) != len(d)):
        raise OneStepError("block linear: rows of mismatched lengths")
    qx, a, e = quantize_blocks(x)
    acc = 0
    for b, ab in enumerate(a):
        lo, hi = b * blockq.BLOCK, (b + 1) * blockq.BLOCK
        term = d[b] * sum(u * v for u, v in zip(q[lo:hi], qx[lo:hi]))
        if m is not None:
            term += m[b] * sum(qx[lo:hi])
        acc += ab * term
    shift = blockq.HALF_FRAC + ACT_FRAC - frac_out - e
    num, den = acc << max(-shift, 0), blockq.QX << max(shift, 0)
    return clip((2 * num + den) // (2 * den), out_max)


def qembed(q: int, d: int) -> int:
    """An embedding element: quant q times its block scale d (2**-24 units) in ACT_FRAC bits."""
    return round_div(q * d, 1 << llm.EMBED_SHIFT)


def wrmsnorm(x: Row, c: int, gain: int) -> int:
    """y[t, c] of ``llm.wrmsnorm``: the row rescaled to RMS_BITS bits, D = isqrt(mean(ds**2) 2**8)."""
    e = max(0, max(abs(v) for v in x).bit_length() - llm.RMS_BITS)
    half = (1 << e) >> 1
    ds = [(v + half) >> e for v in x]
    ms = sum(v * v for v in ds) // len(x)
    den = max(math.isqrt(ms << (2 * NORM_STD_SHIFT)), 1)
    return clip(round_div(ds[c] * gain, den), ACT_MAX)


def rope(a: int, b: int, cos: int, sin: int, second: bool) -> int:
    """One element of the rotated pair (a, b)."""
    num = a * sin + b * cos if second else a * cos - b * sin
    return round_div(num, 1 << llm.ROPE_FRAC)


def gqa_score(q: Row, k: Row, visible: bool) -> int:
    """z[h, t, s] from head h's slices of query t and key s (``llm.gqa_scores``)."""
    if not visible:
        return llm.MASKED
    if len(q) not in SCORE_SCALES:
        raise OneStepError(f"no score scale for head width {len(q)}")
    if len(k) != len(q):
        raise OneStepError("gqa score: rows of different lengths")
    dot = sum(u * v for u, v in zip(q, k))
    z = round_div(round_div(dot, 1 << (2 * ACT_FRAC - llm.Z_FRAC)) * SCORE_SCALES[len(q)], 1 << llm.SCALE_FRAC)
    return clip(z, llm.Z_MAX)


def exp2_index(z: Row, j: int) -> int:
    """The exp2 table index of key j in a scores row: min(zmax - z_j, len - 1), len - 1 if masked."""
    if z[j] == llm.MASKED:
        return EXP2_LEN - 1
    zmax = max(v for v in z if v != llm.MASKED)
    return min(zmax - z[j], EXP2_LEN - 1)


def gqa_prob(z: Row, j: int, index: int, entry: int) -> int:
    """p[h, t, j]: the table entry shown, once its index is the one the scores row names."""
    u = exp2_index(z, j)
    if index != u:
        raise OneStepError(f"the exp2 entry shown is {index}, the scores need {u}")
    return entry


def gqa_context(p: Row, v: Row) -> int:
    """ctx element: round(sum p v / sum p) over a probabilities row and a row of the transposed V
    cache (0 for a row of zero weights, as the specification's integer division by zero)."""
    if len(p) != len(v):
        raise OneStepError("gqa context: rows of different lengths")
    den = sum(p)
    if den == 0:
        return 0
    return clip(round_div(sum(a * b for a, b in zip(p, v)), den), ACT_MAX)


def resid_add(a: int, b: int) -> int:
    return clip(a + b, llm.WIDE_MAX)


def silu_gate(g: int, index: int, entry: int, u: int) -> int:
    """round(silu[g] u / 2**8) clipped to WIDE_MAX, ``entry`` being the SiLU table's at ``index``."""
    if index != g + SILU_OFFSET:
        raise OneStepError(f"the SiLU entry shown is {index}, the gate needs {g + SILU_OFFSET}")
    return clip(round_div(entry * u, 1 << 8), llm.WIDE_MAX)


def row_max(x: Row, r: int, which: int) -> int:
    """Logits row r (of width len(x)): which 0, its largest value; which 1, r * width + its first index."""
    best = max(x)
    return best if which == 0 else r * len(x) + list(x).index(best)


def pick(m: Row) -> int:
    """The id of the (value, id) pair with the largest value (the first on ties), pairs side by side."""
    values = list(m[0::2])
    return m[2 * values.index(max(values)) + 1]
