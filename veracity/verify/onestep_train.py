"""One-step verification of the tiny GPT's training step (``training.gpt.gpt_step``) and MiniLM's
fine-tuning step (``training.lora.lora_step``): ONE element of one op from the rows of its input
records, in plain Python integers, as the TrainNormReferee, the TrainAttentionReferee and the
FinetuneReferee (``contracts/``) compute it.

==============  ===============================================================================
op              element and what it reads
==============  ===============================================================================
rescale, sum    one element of each input
embed_sum       y[n, c]: the token's row of wte, the position's row of wpe (the ids' one row)
ln_rec          y[r, c]: row r of x, gamma's and beta's one row
xhat            y[r, c]: row r of the LayerNorm's input
ln_bwd          dx[r, c]: row r of dz and of the LayerNorm's input, gamma's row
col_dot         y[c]: row c of two transposed [C, tokens] tensors
head_split      y[g, t, d]: the token's row of the fused tensor
head_merge      y[n, col]: the head's row of the part the column names
t_scores        z[g, i, j]: query row (g, i), key row (g, j); a later key is masked
row_norm        p[r, c]: row r
softmax_bwd     ds[r, c]: row r of p and of dp
gelu_t          y: the input element and one entry of the GELU table
gelu_grad       dh: the gradient's element, the pre-GELU element, one entry of the slope table
scatter_add     g[v, c]: row c of the transposed gradient, the index record's one row
seg_mean        y[s, c]: row c of the transposed tokens, the sentences' starts
seg_spread      dz[t, c]: the token's sentence's row of the pooled gradient, the starts
row_qscale      (max, shift)[t]: row t (its int8 quantization's scale)
qscale_mul      y[t, j]: the element, row t of the scales
quant_t         q[i, t]: row t of the quantized tensor
qmm_int8w       y[r, c]: row r of x (quantized), row c of the int8 operand as it is
qmm_w2          y[r, c]: row r of x, rows 2c and 2c + 1 of w [N, 2, K/2] (the two halves of its row c)
==============  ===============================================================================
"""

from __future__ import annotations

import math

from veracity.exact import spec
from veracity.verify.onestep import OneStepError, Row, norm, qmm, quantize_row, round_div, round_shift

ACT, NORM_STD_SHIFT, NORM_BITS = spec.ACT_FRAC, spec.NORM_STD_SHIFT, spec.NORM_BITS
PROB = SCALE_SHIFT = 16
MASKED = -(1 << 40)


def rescale(x: int, shift: int) -> int:
    return round_shift(x, 1, shift)


def embed_sum(wte_row: Row, wpe_row: Row, c: int, shift: int) -> int:
    return round_shift(wte_row[c] + wpe_row[c], 1, shift)


def ln_rec(x: Row, c: int, gamma: Row, beta: Row) -> int:
    return norm(x, c, gamma[c], beta[c], True)


def norm_stats(x: Row) -> tuple[list[int], int, int]:
    """LayerNorm's (ds, e, D) of a row: the centred row shifted to NORM_BITS bits, the shift,
    and D = isqrt(mean(ds^2) * 2**8)."""
    h = len(x)
    d = [v - round_div(sum(x), h) for v in x]
    e = max(0, max(abs(v) for v in d).bit_length() - NORM_BITS)
    half = (1 << e) >> 1
    ds = [(v + half) >> e for v in d]
    den = max(math.isqrt((sum(v * v for v in ds) << (2 * NORM_STD_SHIFT)) // h), 1)
    return ds, e, den


def xhat(x: Row, c: int) -> int:
    ds, _, den = norm_stats(x)
    return round_shift(ds[c], den, NORM_STD_SHIFT + ACT)


def ln_bwd(dz: Row, x: Row, gamma: Row, c: int) -> int:
    """``lora.layernorm_backward``'s dx[r, c]: (g - mean(g) - xhat mean(g xhat)) / sigma."""
    h = len(x)
    if not len(dz) == len(gamma) == h:
        raise OneStepError("ln_bwd: rows of different lengths")
    ds, e, den = norm_stats(x)
    g = [round_shift(a * b, 1, -(ACT + NORM_STD_SHIFT)) for a, b in zip(dz, gamma)]
    xh = [round_shift(v, den, NORM_STD_SHIFT + ACT) for v in ds]
    m1 = round_div(sum(g), h)
    m2 = round_shift(sum(a * b for a, b in zip(g, xh)), h, -ACT)
    t = g[c] - m1 - round_shift(xh[c] * m2, 1, -ACT)
    return round_shift(t, den, ACT + NORM_STD_SHIFT - e)


def col_dot(a: Row, b: Row, shift: int, shift2: int) -> int:
    if len(a) != len(b):
        raise OneStepError("col_dot: rows of different lengths")
    return round_shift(round_shift(sum(x * y for x, y in zip(a, b)), 1, shift), 1, shift2)


def t_score(q: Row, k: Row, i: int, j: int, shift: int, scale: int) -> int:
    """A causal attention score: the scaled per-row int8 product, or MASKED for a later key."""
    if j > i:
        return MASKED
    return round_shift(qmm(q, k, shift, None, 0) * scale, 1, -SCALE_SHIFT)


def row_norm(x: Row, c: int, frac: int) -> int:
    return round_shift(x[c], sum(x), frac)


def softmax_bwd(p: Row, dp: Row, c: int, scale: int) -> int:
    if len(p) != len(dp):
        raise OneStepError("softmax_bwd: rows of different lengths")
    rs = round_shift(sum(a * b for a, b in zip(p, dp)), 1, -PROB)
    ds = round_shift(p[c] * (dp[c] - rs), 1, -PROB)
    return round_shift(ds * scale, 1, -SCALE_SHIFT)


def gelu_index(h: int) -> int:
    return min(max(round_shift(h, 1, -(ACT - spec.GELU_FRAC)), -(1 << 15)), (1 << 15) - 1) + (1 << 15)


def gelu_t(h: int, index: int, entry: int) -> int:
    if index != gelu_index(h):
        raise OneStepError(f"the GELU entry shown is {index}, the input needs {gelu_index(h)}")
    return entry << (ACT - spec.GELU_FRAC)


def gelu_grad(df: int, h: int, index: int, slope: int) -> int:
    if index != gelu_index(h):
        raise OneStepError(f"the slope entry shown is {index}, the input needs {gelu_index(h)}")
    return round_shift(df * slope, 1, -ACT)


def scatter_add(dxt: Row, index: Row, v: int) -> int:
    """g[v, c]: the sum of row c of the transposed gradient over the tokens whose index is v."""
    if len(dxt) != len(index):
        raise OneStepError("scatter_add: rows of different lengths")
    return sum(a for a, i in zip(dxt, index) if i == v)


def head_split_source(dims: tuple[int, ...], element: int, heads: int, part: int) -> tuple[int, int]:
    """(row, column) of the fused [B*T, parts*H*d] tensor that head-split element ``element`` of
    dims [B*H, T, d] copies."""
    _, t_len, hd = dims
    g, rest = divmod(element, t_len * hd)
    t, d = divmod(rest, hd)
    b, h = divmod(g, heads)
    return b * t_len + t, part * heads * hd + h * hd + d


def head_merge_source(n_cols: int, src_dims: tuple[int, ...], element: int, heads: int) -> tuple[int, int, int]:
    """(part, row, column) of the heads [B*H, T, d] tensors that merged element ``element`` of
    [B*T, parts*H*d] copies."""
    _, t_len, hd = src_dims
    n, col = divmod(element, n_cols)
    part, rest = divmod(col, heads * hd)
    h, d = divmod(rest, hd)
    b, t = divmod(n, t_len)
    return part, (b * heads + h) * t_len + t, d


def _segment(starts: Row, t: int) -> int:
    """The sentence token ``t`` belongs to (``starts``: each sentence's first token, then the total)."""
    for s in range(len(starts) - 1):
        if starts[s] <= t < starts[s + 1]:
            return s
    raise OneStepError(f"token {t} is in no sentence")


def seg_mean(zt: Row, starts: Row, s: int) -> int:
    """The mean over sentence ``s``'s tokens of row c of the transposed tokens."""
    lo, hi = starts[s], starts[s + 1]
    if not 0 <= lo < hi <= len(zt):
        raise OneStepError(f"sentence {s} has no tokens")
    return round_div(sum(zt[lo:hi]), hi - lo)


def seg_spread(dpooled: Row, starts: Row, t: int, c: int) -> int:
    """dz[t, c]: the token's sentence's pooled gradient over its count (``dpooled`` that sentence's row)."""
    s = _segment(starts, t)
    return round_shift(dpooled[c], starts[s + 1] - starts[s], 0)


def row_qscale(x: Row, c: int) -> int:
    _, ams, e = quantize_row(x)
    return (ams, e)[c]


def qscale_mul(x: int, scale: Row) -> int:
    return (x * scale[0]) << scale[1]


def quant_t(x: Row, i: int) -> int:
    return quantize_row(x)[0][i]


def qmm_int8w(x: Row, w: Row, shift: int) -> int:
    """A GEMM element whose second operand is int8 values already: x's row quantized, w's as it is."""
    if len(x) != len(w):
        raise OneStepError("qmm_int8w: rows of different lengths")
    qx, ax, ex = quantize_row(x)
    return round_shift(sum(a * b for a, b in zip(qx, w)) * ax, spec.QMAX * spec.QMAX, ex + shift)
