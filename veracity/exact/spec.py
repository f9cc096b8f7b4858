"""The exact op set's integer specification: formats, constants and weight conversion.

Every value that feeds a commitment is an integer. Real numbers are represented in fixed point:
an *activation* with ``frac`` fractional bits holds ``round(real * 2**frac)``. Linear layers use
int8 weights with one scale per output channel and int8 activations with one scale per row
(per token), both derived from a max, which is exact, so the scales are deterministic too.

Formats (``frac`` bits, canonical dtype used for hashing):

======================  ======  ========  ===============================================
tensor                  frac    dtype     notes
======================  ======  ========  ===============================================
activation (ACT)        12      int32     clamped to +-(2**23 - 1), so float32 holds it exactly
GELU input and output   8       int16     the index range of the GELU lookup table
attention score         6       int16     base-2 logits (log2(e)/sqrt(d) folded into Wq)
attention probability   8 bits  uint8     p = round(255 * 2**(-u/64)), u = rowmax - score
probability row sum     -       int32
======================  ======  ========  ===============================================

Requantization multiplies by an integer multiplier and shifts (gemmlowp style); divisions are
integer floor divisions. The two backends compute the same integers: ``ops_numpy`` with int64
arithmetic (the reference), ``ops_torch`` with float vehicles that are exact by the bounds
stated next to each op.

This module is pure Python/NumPy; it turns float weights into the integer parameters of the
exact model once, at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np

ACT_FRAC = 12
ACT_MAX = (1 << 23) - 1
GELU_FRAC = 8
I16_MAX = (1 << 15) - 1
SCORE_FRAC = 6
EXP2_LUT_SIZE = 1024  # u = rowmax - score is clamped to this - 1, where the table is 0
PROB_MAX = 255
MASKED_SCORE = -(1 << 15)

QMAX = 127  # symmetric int8: -128 is never produced, so K * 127 * 127 bounds every partial sum
ROW_BITS = 12  # a row's max is shifted to at most this many bits before the reciprocal
RECIP_SHIFT = 17  # q = (xs * inv + 2**16) >> 17 with inv = floor(127 * 2**17 / amax)
NORM_BITS = 15  # layer norm centres are shifted to this many bits before squaring
NORM_STD_SHIFT = 4  # D = isqrt(V * 2**8 / H) ~ 16 * std
MULT_BITS = 15  # requantization multipliers lie in [2**14, 2**15) (0 for a vanishing channel)
MAX_SHIFT = 60  # beyond, a product < 2**52 rounds to 0 anyway; keeps int64 shifts defined
F32_EXACT_K = (1 << 24) // (QMAX * QMAX)  # 1040: longest exact float32 dot product of int8s
MAX_K = 2080  # acc < 2**25 keeps acc * rowmax * multiplier < 2**52
SMOOTH_BITS = 16  # smoothing multipliers lie in [1, 2**16); x * m < 2**39 stays exact in float64


@dataclass(frozen=True)
class QLinear:
    """An exact linear layer: y = round(acc * rowscale * mult * 2**-shift) + bias."""

    weight: np.ndarray  # int8 values [N, K]
    mult: np.ndarray  # int64 [N], in [2**14, 2**15)
    shift: np.ndarray  # int64 [N]
    bias: np.ndarray  # int64 [N], in output fixed point
    frac_in: int
    frac_out: int
    out_max: int  # outputs are clamped to +-out_max
    smooth: np.ndarray | None = None  # int64 [K] per-input-channel multipliers (SmoothQuant)


@dataclass(frozen=True)
class QNorm:
    """An exact LayerNorm: out = round(centred * gamma / D) + beta, D = isqrt(var) scaled."""

    gamma: np.ndarray  # int64 [H] = round(gamma * 2**(ACT_FRAC + NORM_STD_SHIFT))
    beta: np.ndarray  # int64 [H] = round(beta * 2**ACT_FRAC)


def round_half_up(x: np.ndarray) -> np.ndarray:
    """Round float64 values to the nearest integer, ties upward (the op set's only rounding)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def to_fixed(x: np.ndarray, frac: int, limit: int = ACT_MAX) -> np.ndarray:
    """Float array -> fixed point integers with ``frac`` fractional bits, clamped to +-limit."""
    scaled = np.asarray(x, dtype=np.float64) * float(1 << frac)
    return np.clip(round_half_up(scaled), -limit, limit)


def multiplier(c: float) -> tuple[int, int]:
    """Represent a positive real c as m * 2**-s with m in [2**14, 2**15), using frexp (exact)."""
    if not c > 0 or not math.isfinite(c):
        raise ValueError(f"a requantization scale must be positive and finite, got {c}")
    mant, exp = math.frexp(c)
    m = int(math.floor(mant * (1 << MULT_BITS) + 0.5))
    if m == 1 << MULT_BITS:
        m, exp = 1 << (MULT_BITS - 1), exp + 1
    return m, MULT_BITS - exp


def smoothing(act_max: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """SmoothQuant multipliers m_j ~ 1 / sqrt(act_max_j / wmax_j), scaled to 16 bits.

    The linear computes x_j * m_j before its per-row quantization and uses W_nj / m_j as weights:
    the product is unchanged, but outlier input channels no longer crush the others' resolution.
    ``act_max`` comes from a calibration run shipped with the model, so m is the same everywhere.
    """
    a = np.maximum(np.asarray(act_max, dtype=np.float64), 1e-5)
    wmax = np.maximum(np.abs(np.asarray(weight, dtype=np.float64)).max(axis=0), 1e-5)
    s = np.sqrt(a / wmax)
    m = round_half_up(((1 << SMOOTH_BITS) - 1) * (s.min() / s))
    return np.maximum(m, 1)


def quantize_linear(
    weight: np.ndarray, bias: np.ndarray | None, frac_in: int, frac_out: int, out_max: int = ACT_MAX,
    act_max: np.ndarray | None = None,
) -> QLinear:
    """Quantize a float linear layer (weight [N, K]) per output channel to an exact QLinear.

    With ``act_max`` (calibrated per-input-channel maxima) the layer is smoothed, see ``smoothing``.
    """
    w = np.asarray(weight, dtype=np.float64)
    n, k = w.shape
    if k > MAX_K:
        raise ValueError(f"linear layers with K={k} > {MAX_K} are outside the exact op set")
    smooth = None if act_max is None else smoothing(act_max, w)
    in_bits = 23
    if smooth is not None:
        w = w / smooth[None, :]
        in_bits += int(smooth.max()).bit_length()
    wmax = np.abs(w).max(axis=1)
    wmax = np.where(wmax > 0, wmax, 1.0)
    wq = np.clip(round_half_up(w * QMAX / wmax[:, None]), -QMAX, QMAX)
    mults, shifts = [], []
    for c in wmax:
        m, s = multiplier(float(c) * 2.0 ** (frac_out - frac_in) / (QMAX * QMAX))
        if s > MAX_SHIFT:  # |acc * rowmax * m| < 2**52, so this channel's product rounds to 0
            m, s = 0, MAX_SHIFT
        if s < in_bits - ROW_BITS + 1:  # shift = s - e >= 1 for every row exponent e
            raise ValueError("weights too large for the exact requantization range")
        mults.append(m)
        shifts.append(s)
    b = np.zeros(n) if bias is None else np.asarray(bias, dtype=np.float64)
    return QLinear(
        weight=wq.astype(np.int8),
        mult=np.array(mults, dtype=np.int64),
        shift=np.array(shifts, dtype=np.int64),
        bias=to_fixed(b, frac_out, out_max),
        frac_in=frac_in,
        frac_out=frac_out,
        out_max=out_max,
        smooth=smooth,
    )


def quantize_norm(gamma: np.ndarray, beta: np.ndarray) -> QNorm:
    """Quantize LayerNorm's affine parameters."""
    g = to_fixed(gamma, ACT_FRAC + NORM_STD_SHIFT, limit=1 << 22)
    return QNorm(gamma=g, beta=to_fixed(beta, ACT_FRAC))


def _lut16(fn: "Callable[[Any], Any]", limit: int) -> np.ndarray:
    """round(fn(x) * 2**GELU_FRAC) for every int16 x in GELU_FRAC fixed point, computed in mpmath.

    Beyond |x| = ``limit`` the exact result at this resolution is x (x > 0) or 0 (x < 0), so
    only the middle of the table is evaluated (the caller's limit must make that true).
    """
    import mpmath

    mpmath.mp.dps = 40
    xs = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
    out = np.where(xs > 0, xs, 0)
    scale = 1 << GELU_FRAC
    for i in range(-limit * scale, limit * scale + 1):
        y = fn(mpmath.mpf(i) / scale)
        out[i + (1 << 15)] = int(mpmath.floor(y * scale + mpmath.mpf("0.5")))
    return out


@lru_cache(maxsize=None)
def gelu_lut() -> np.ndarray:
    """GELU (erf form) over the int16 range: index i holds round(gelu((i - 32768) / 256) * 256)."""
    import mpmath

    return _lut16(lambda x: x * (1 + mpmath.erf(x / mpmath.sqrt(2))) / 2, 8)


@lru_cache(maxsize=None)
def silu_lut() -> np.ndarray:
    """SiLU over the int16 range: index i holds round(silu((i - 32768) / 256) * 256)."""
    import mpmath

    return _lut16(lambda x: x / (1 + mpmath.exp(-x)), 16)


@lru_cache(maxsize=None)
def exp2_lut() -> np.ndarray:
    """p[u] = round(255 * 2**(-u / 2**SCORE_FRAC)) for u in [0, EXP2_LUT_SIZE), exact (mpmath)."""
    import mpmath

    mpmath.mp.dps = 40
    out = np.zeros(EXP2_LUT_SIZE, dtype=np.int64)
    for u in range(EXP2_LUT_SIZE):
        v = PROB_MAX * mpmath.power(2, -mpmath.mpf(u) / (1 << SCORE_FRAC))
        out[u] = int(mpmath.floor(v + mpmath.mpf("0.5")))
    if out[-1] != 0:
        raise AssertionError("the exp2 table must end in zero so masked keys get no weight")
    return out
