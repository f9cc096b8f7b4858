"""Reference backend: the exact op set in plain int64 NumPy arithmetic.

This is the specification in executable form. Every op is integer arithmetic: products, sums,
floor divisions and arithmetic shifts on int64, square roots by ``math.isqrt``. Dot products run
as float64 BLAS matmuls, exact because every partial sum of int8 products is an integer far
below 2**53. It shares no arithmetic code with ``ops_torch``, which computes the same integers
with float32 and float64 vehicles at native speed; the tests compare the two bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from veracity.exact import blockq, llm, spec
from veracity.exact.intmath import bitlen, isqrt, round_div  # noqa: F401  (re-exported)
from veracity.exact.spec import QLinear, QNorm

Array = np.ndarray


def _idot(a: Array, b: Array) -> Array:
    """Exact integer matmul a @ b for int8-range operands (float64 BLAS, sums < 2**53)."""
    return np.rint(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(np.int64)


def normalize(d: Array, gamma: Array, beta: Array) -> tuple[Array, Array, Array, Array]:
    """round(ds * gamma / D) + beta (clipped): ds = d rescaled to 15 bits, D = isqrt(mean(ds^2) * 2**8).
    Returns (out, ds, e, D): training's LayerNorm backward reads the last three."""
    h = d.shape[-1]
    e = np.maximum(0, bitlen(np.abs(d).max(axis=-1, keepdims=True)) - spec.NORM_BITS)
    half = (np.int64(1) << e) >> 1
    ds = (d + half) >> e
    var = (ds * ds).sum(axis=-1, keepdims=True)
    den = np.maximum(isqrt((var << (2 * spec.NORM_STD_SHIFT)) // h), 1)
    out = round_div(ds * gamma, den) + beta
    return np.clip(out, -spec.ACT_MAX, spec.ACT_MAX), ds, e, den


class LlamaOps:
    """The Llama family's ops (``exact.llm``) on the int64 reference: NumpyBackend's, and the
    formulas any backend must match."""

    def qembed(self, w: Any, ids: Array) -> Array:
        return llm.qembed(w.q, w.d, ids)

    def block_linear(self, x: Array, w: Any, frac_out: int, out_max: int) -> Array:
        y = blockq.block_linear(np.asarray(x, dtype=np.int64).reshape(-1, x.shape[-1]), w.q, w.d, w.m, spec.ACT_FRAC,
                                frac_out, out_max)
        return llm.linear_record(y, out_max)

    def wrmsnorm(self, x: Array, gain: Array) -> Array:
        return llm.wrmsnorm(x, gain)

    def rope(self, x: Array, start: int, head_dim: int, table: tuple[Array, Array]) -> Array:
        return llm.rope(x, start, head_dim, *table)

    def kv_append(self, cache: Array, new: Array) -> Array:
        return np.concatenate([cache, new], axis=1)

    def gqa_scores(self, q: Array, k: Array, heads: int, kv_heads: int) -> Array:
        return llm.gqa_scores(q, k, heads, kv_heads)

    def gqa_probs(self, z: Array) -> Array:
        return llm.gqa_probs(z)

    def gqa_context(self, p: Array, vt: Array, heads: int, kv_heads: int) -> Array:
        return llm.gqa_context(p, vt, heads, kv_heads)

    def resid_add(self, a: Array, b: Array) -> Array:
        return llm.resid_add(a, b)

    def silu_gate(self, g: Array, u: Array) -> Array:
        return llm.silu_gate(g, u, spec.silu_lut())

    def row_max(self, x: Array) -> Array:
        return llm.row_max(x)

    def pick(self, m: Array, prev: Array | None, stops: tuple[int, ...]) -> Array:
        return llm.pick(m, prev, stops)


class NumpyBackend(LlamaOps):
    """The int64 reference implementation of the exact op set."""

    name = "numpy"

    def __init__(self) -> None:
        self._gelu = spec.gelu_lut()
        self._silu = spec.silu_lut()
        self._exp2 = spec.exp2_lut()

    # conversions ------------------------------------------------------------------------
    def tensor(self, a: Array) -> Array:
        return np.asarray(a, dtype=np.int64)

    def constant(self, a: Array) -> Array:
        return self.tensor(a)

    def index(self, a: Array) -> Array:
        return np.asarray(a, dtype=np.int64)

    def canonical(self, x: Array, dtype: np.dtype) -> Array:
        return np.ascontiguousarray(x.astype(dtype))

    def split_heads(self, x: Array, heads: int) -> Array:
        b, t, h = x.shape
        return x.reshape(b, t, heads, h // heads).transpose(0, 2, 1, 3)

    def argmax(self, x: Array) -> Array:
        """Each row's first largest value's index (np.argmax returns the first)."""
        return np.argmax(x, axis=-1).astype(np.int64)

    def append(self, tokens: Array, token: Array) -> Array:
        return np.concatenate([tokens, token], axis=-1)

    def transpose_last(self, x: Array) -> Array:
        """The last two axes swapped (a layout record: V per head, h per feature)."""
        return np.swapaxes(x, -1, -2)

    def merge_heads(self, x: Array) -> Array:
        b, nh, t, d = x.shape
        return x.transpose(0, 2, 1, 3).reshape(b, t, nh * d)

    # quantization -------------------------------------------------------------------------
    def quantize_rows(self, x: Array) -> tuple[Array, Array, Array]:
        """Per-row int8: q = round(127 * x / rowmax) by a 12-bit rescale and a reciprocal."""
        amax = np.abs(x).max(axis=-1, keepdims=True)
        e = np.maximum(0, bitlen(amax) - spec.ROW_BITS)
        half = (np.int64(1) << e) >> 1
        xs = (x + half) >> e
        ams = (amax + half) >> e
        inv = np.where(ams > 0, (spec.QMAX << spec.RECIP_SHIFT) // np.maximum(ams, 1), 0)
        q = (xs * inv + (1 << (spec.RECIP_SHIFT - 1))) >> spec.RECIP_SHIFT
        return q, ams, e

    # ops ------------------------------------------------------------------------------------
    def linear(self, x: Array, lin: QLinear) -> Array:
        q, ams, e = self.quantize_rows(x if lin.smooth is None else x * lin.smooth)
        acc = _idot(q, lin.weight.T.astype(np.int64))
        prod = acc * ams * lin.mult
        shift = lin.shift - e
        y = ((prod + (np.int64(1) << (shift - 1))) >> shift) + lin.bias
        return np.clip(y, -lin.out_max, lin.out_max)

    def add(self, a: Array, b: Array) -> Array:
        return np.clip(a + b, -spec.ACT_MAX, spec.ACT_MAX)

    def relu(self, x: Array) -> Array:
        return np.maximum(x, 0)

    def gelu(self, x: Array) -> Array:
        return self._gelu[x + (1 << 15)]

    def silu(self, x: Array) -> Array:
        return self._silu[x + (1 << 15)]

    @staticmethod
    def _normalize(d: Array, norm: QNorm) -> Array:
        return normalize(d, norm.gamma, norm.beta)[0]

    def rmsnorm(self, x: Array, norm: QNorm) -> Array:
        """LayerNorm without centring (RMSNorm)."""
        return self._normalize(x, norm)

    def layernorm(self, x: Array, norm: QNorm) -> Array:
        mu = round_div(x.sum(axis=-1, keepdims=True), np.int64(x.shape[-1]))
        return self._normalize(x - mu, norm)

    def embedding(self, table: Array, ids: Array) -> Array:
        return table[ids]

    def attention_scores(self, q: Array, k: Array, key_valid: Array, causal: bool) -> Array:
        """Base-2 logits z = round(q.k * 2**SCORE_FRAC); masked keys get MASKED_SCORE."""
        qq, amq, eq = self.quantize_rows(q)
        kq, amk, ek = self.quantize_rows(k)
        acc = _idot(qq, np.swapaxes(kq, -1, -2))
        num = acc * amq * np.swapaxes(amk, -1, -2)
        k2 = eq + np.swapaxes(ek, -1, -2) + spec.SCORE_FRAC - 2 * spec.ACT_FRAC
        den = spec.QMAX * spec.QMAX
        pos = np.maximum(k2, 0)
        neg = np.maximum(-k2, 0)
        z = (((num << pos) << 1) + (den << neg)) // ((2 * den) << neg)
        z = np.clip(z, -spec.I16_MAX, spec.I16_MAX)
        return np.where(_key_mask(key_valid, z.shape, causal), z, spec.MASKED_SCORE)

    def scores_softmax(self, q: Array, k: Array, key_valid: Array, causal: bool) -> tuple[Array, Array, Array]:
        """Scores, then the softmax numerators and row sums (fused by the native backend)."""
        z = self.attention_scores(q, k, key_valid, causal)
        return (z, *self.softmax(z))

    def softmax(self, z: Array) -> tuple[Array, Array]:
        """Unnormalised probabilities p = 255 * 2**-(rowmax - z) by table, and their row sums."""
        zmax = z.max(axis=-1, keepdims=True)
        u = np.minimum(zmax - z, spec.EXP2_LUT_SIZE - 1)
        u = np.where(z == spec.MASKED_SCORE, spec.EXP2_LUT_SIZE - 1, u)
        p = self._exp2[u]
        return p, p.sum(axis=-1)

    def attention_context(self, p: Array, psum: Array, v: Array, key_valid: Array) -> Array:
        """ctx = round(sum_t p[t] v[t] / S) with V quantized per feature column over tokens."""
        v = v * key_valid[:, None, :, None]
        vq, amv, ev = self.quantize_rows(np.swapaxes(v, -1, -2))
        acc = _idot(p, np.swapaxes(vq, -1, -2))
        num = acc * (np.swapaxes(amv, -1, -2) << np.swapaxes(ev, -1, -2))
        out = round_div(num, spec.QMAX * psum[..., None])
        return np.clip(out, -spec.ACT_MAX, spec.ACT_MAX)

    def mean_pool(self, h: Array, mask: Array) -> Array:
        total = (h * mask[..., None]).sum(axis=1)
        count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return round_div(total, count)

    def l2_normalize(self, x: Array) -> Array:
        """x / |x| in 2**15 fixed point, the norm from an integer square root."""
        e = np.maximum(0, bitlen(np.abs(x).max(axis=-1, keepdims=True)) - spec.NORM_BITS)
        half = (np.int64(1) << e) >> 1
        xs = (x + half) >> e
        norm = isqrt((xs * xs).sum(axis=-1, keepdims=True))
        return np.where(norm > 0, round_div(xs << 15, np.maximum(norm, 1)), 0)


def _key_mask(key_valid: Array, shape: tuple[int, ...], causal: bool) -> Array:
    """Boolean [B, 1, T, T] mask of the keys each query may attend to."""
    t = shape[-1]
    mask = np.broadcast_to(key_valid[:, None, None, :].astype(bool), (shape[0], 1, t, t))
    if causal:
        mask = mask & np.tril(np.ones((t, t), dtype=bool))
    return mask

