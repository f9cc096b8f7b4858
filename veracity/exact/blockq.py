"""The block-quantized linear: a GGUF weight matrix used as it is stored (Q4_0, Q4_1, Q8_0 blocks
of 32), times activations quantized per block of 32, in integers.

Weights (``models.gguf``): ``w[n, k] = (d[n, b] * q[n, k] + m[n, b]) * 2**-24`` for ``k`` in block
``b``, with integer ``d``, ``m`` (Q4_0 and Q8_0 have ``m = 0``). Activations ``x`` (fixed point,
``frac_in`` bits) are quantized per block of 32, as llama.cpp's Q8 does, since one outlier channel
then coarsens only its own block, not the whole row; and to 16 bits, not 8, since an LLM's
attention logits (tens of units) turn 8-bit rounding of q and k into percent-level errors in its
attention weights. Each row gets one exponent ``e`` (the bits of its largest value beyond
``ROW_BITS``), each block a scale ``a_b = ceil(max |x_b| / 2**e) <= 2**ROW_BITS``, and ``qx =
round(QX * x / (a_b * 2**e))`` in -QX..QX. Then

    acc[t, n] = sum_b a[t, b] * (d[n, b] * sum_k q[n, k] qx[t, k] + m[n, b] * sum_k qx[t, k])
    y[t, n]   = round(acc * 2**(e + frac_out) / (QX * 2**(24 + frac_in)))

every term an integer; ``check_range`` proves ``acc`` fits int64 for a matrix. The per-block dot
products are exact int64 here; the torch backend runs them as float GEMMs (exact: float32 for
4-bit quants, whose dots stay below 2**24, float64 for 8-bit ones) and the native backend in one
C pass (``native.c: bq_linear``) over the quants packed once by ``ops_native.pack_blocks`` (4-bit
ones as nibbles, read as stored: the decode of one token reads each weight once; its dots are
int32, its weighting int64, see there why each product is exact); all compute the same integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from veracity.exact import spec
from veracity.exact.intmath import bitlen

BLOCK = 32
HALF_FRAC = 24  # the weights' scale unit, 2**-24 (every fp16 is an integer multiple of it)
ROW_BITS = 6  # a block scale has at most this many bits (its block's values keep >= 15 of their 16)
QX = 32767  # activations are 16-bit per block: an LLM's attention logits amplify 8-bit rounding


def quantize_blocks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` [T, K] (int64) as (qx int16 [T, K], a int64 [T, K/32], e int64 [T, 1]): per-block
    16-bit values, each block's scale and the row's exponent (``x ~ qx * a * 2**e / QX``)."""
    t, k = x.shape
    xb = np.asarray(x, dtype=np.int64).reshape(t, k // BLOCK, BLOCK)
    amax = np.abs(xb).max(axis=2)  # [T, nb]
    e = np.maximum(bitlen(amax.max(axis=1, keepdims=True)) - ROW_BITS, 0)  # [T, 1]
    a = -((-amax) >> e)  # ceil(amax / 2**e): the block's max maps to at most QX
    den = (a << e)[..., None] * 2  # round(QX x / (a 2**e)) = floor((2 QX x + den / 2) / den), den = 2 a 2**e
    q = np.where(den > 0, np.floor_divide(2 * QX * xb + (den >> 1), np.maximum(den, 1)), 0)
    return q.reshape(t, k).astype(np.int16), a, e


def check_range(q: np.ndarray, d: np.ndarray, m: np.ndarray | None) -> None:
    """Refuse a matrix whose accumulator could leave int64 for some activation (none of SmolLM2's)."""
    qmax = max(-int(q.min(initial=0)), int(q.max(initial=0)))  # the largest |q| (no int64 copy of q)
    per_block = np.abs(d).astype(np.float64) * qmax * BLOCK * QX
    if m is not None:
        per_block = per_block + np.abs(m).astype(np.float64) * BLOCK * QX
    worst = float((per_block * float(1 << ROW_BITS)).sum(axis=1).max(initial=0.0))
    if worst >= 2.0 ** 59:  # the final rounding doubles acc, shifted left by up to a bit: < 2**61
        raise ValueError("a block-quantized matrix's scales are outside the exact int64 range")


def block_dots(qx: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-block dot products [nb, T, N] of qx [T, K] and q [N, K], int64: float64 BLAS GEMMs, exact
    as every partial sum is an integer of at most 32 * 128 * 32767 < 2**28 (as ``ops_numpy``'s
    other dot products)."""
    t, k = qx.shape
    n = q.shape[0]
    nb = k // BLOCK
    xs = qx.reshape(t, nb, BLOCK).transpose(1, 0, 2)  # [nb, T, 32]
    w = q.reshape(n, nb, BLOCK).transpose(1, 2, 0)
    return np.rint(np.matmul(xs.astype(np.float64), w.astype(np.float64))).astype(np.int64)


def block_linear(x: np.ndarray, q: np.ndarray, d: np.ndarray, m: np.ndarray | None, frac_in: int, frac_out: int,
                 out_max: int = spec.ACT_MAX) -> np.ndarray:
    """``x @ w.T`` for x [T, K] (``frac_in`` bits) and the block-quantized w [N, K], in ``frac_out``
    bits, clamped to ``+-out_max``: the int64 reference (the torch backend computes the same
    integers with float GEMMs for the dots, the native one in one C pass)."""
    qx, a, e = quantize_blocks(x)
    dots = block_dots(qx, q)  # [nb, T, N]
    acc = np.einsum("tb,nb,btn->tn", a, d, dots)
    if m is not None:
        sx = qx.astype(np.int64).reshape(qx.shape[0], -1, BLOCK).sum(axis=2)  # [T, nb]
        acc = acc + (a * sx) @ m.T  # |a * sx| < 2**27, |m| < 2**30, nb <= 2**6: exact in int64
    shift = HALF_FRAC + frac_in - frac_out - e  # [T, 1]
    pos = np.maximum(shift, 0)
    num = acc << np.maximum(-shift, 0)
    den = np.int64(QX) << pos
    y = np.floor_divide(2 * num + den, 2 * den)  # round half up
    return np.clip(y, -out_max, out_max)


def linear_reference(x: np.ndarray, w: np.ndarray, frac_in: int, frac_out: int) -> Any:
    """The float64 product the exact op approximates (for tests and benchmarks)."""
    return (np.asarray(x, dtype=np.float64) / (1 << frac_in)) @ np.asarray(w, dtype=np.float64).T * (1 << frac_out)
