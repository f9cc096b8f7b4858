"""The exact ops of the Llama family (SmolLM2, and any Llama-architecture GGUF): formats, tables
and the int64 reference formulas the backends implement and the referees recompute.

Every value is an integer in fixed point with ``ACT_FRAC`` bits unless said. Records are
``[1, T, C]`` for T positions (the batch axis is 1: a sequence at a time), as the other models'.

======================  ==========================================================================
op (record kind)        element
======================  ==========================================================================
QEMBED  [1,T,H]         ``round(q[id, j] * d[id, j // 32] / 2**12)``: the Q8_0 table's row (2**-24
                        units) in ``ACT_FRAC`` bits
BLINEAR [1,T,N]         ``exact.blockq.block_linear`` of the row (a matrix used as stored); a row
                        wider than ``LOGIT_ROW`` (the LM head's 49,152 logits) is laid out
                        ``[T, ceil(N / W), W]``, padded with ``-(out_max + 1)``
WRMSNORM [1,T,H]        RMSNorm of the wide residual stream: the row rescaled to ``RMS_BITS`` bits,
                        ``D = isqrt(mean(ds**2) * 2**8)``, ``round(ds * gain / D)``, clipped to ACT_MAX
ROPE    [1,T,C]         adjacent pairs (a, b) of each head rotated by position ``start + t``:
                        ``round((a cos - b sin) / 2**15)``, ``round((a sin + b cos) / 2**15)``
KV_APPEND [1,S,C]       the cache's rows, then the new ones (rows are positions)
TRANSPOSE [1,C,S]       the V cache transposed, so a context element reads two rows
GQA_SCORES [H,T,S]      ``round(round(q.k / 2**14) * c / 2**16)``, ``c = round(log2(e) / sqrt(D) *
                        2**16)``, clipped to ``Z_MAX``; a key after the query's position: ``MASKED``
GQA_PROBS [H,T,S]       ``table[min(zmax - z, len - 1)]``, 16 bits (the 8-bit table of the small
                        models loses an LLM's small attention weights); masked keys get 0
GQA_CONTEXT [1,T,C]     ``round(sum_s p v / sum_s p)`` for head h's KV head ``h // (H / Hkv)``
RESID_ADD               ``a + b`` clipped to ``WIDE_MAX``: the residual stream is wide, since an LLM
                        grows a few huge channels (SmolLM2's reach 24,874 by block 15)
SILU_GATE               ``round(silu[g] * u / 2**8)`` clipped to ``WIDE_MAX`` (g: the gate in
                        ``GELU_FRAC`` bits through the SiLU table)
ROW_MAX [T,2R]          each logits row's largest value and its (first) token id, side by side
PICK    [T,1]           the token of the largest row maximum (ties: the lowest id); after a stop
                        token (a parameter), the stop token again
======================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from veracity.exact.blockq import HALF_FRAC
from veracity.exact.intmath import bitlen, clip, isqrt, round_div
from veracity.exact.spec import ACT_FRAC, ACT_MAX, NORM_STD_SHIFT

WIDE_MAX = (1 << 31) - 1
RMS_BITS = 26  # a row rescales to |v| <= 2**26: up to 1024 of them keep the sum of squares below 2**63
ROPE_FRAC = 15
CONTEXT = 2048  # positions a sequence may reach on the network (a scores row is at most this long)
Z_FRAC = 10  # attention scores: base-2 logits with 10 fractional bits
Z_MAX = (1 << 30) - 1
SCALE_FRAC = 16
MASKED = -(1 << 31)
P_BITS = 16
P_MAX = (1 << P_BITS) - 1
EXP2_ROWS = 18  # the probability table covers u < 18 * 2**Z_FRAC (2**-18 rounds to 0)
LOGIT_ROW = 2048  # a record's row holds at most this many int32 (one 8 KiB chunk)
EMBED_SHIFT = HALF_FRAC - ACT_FRAC  # Q8_0 scales are in 2**-24 units


@dataclass(frozen=True, eq=False)
class BlockWeights:
    """A matrix as a GGUF file stores it (``exact.blockq``): quants ``q`` int8 [N, K], per block of 32
    a scale ``d`` and (Q4_1) a minimum ``m``, int64 [N, K / 32] in 2**-24 units, each within int32
    (the width a referee reads them in)."""

    q: np.ndarray
    d: np.ndarray
    m: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        for part in (self.d, self.m):
            if part is not None and part.size and int(np.abs(part).max()) > (1 << 31) - 1:
                raise ValueError(f"{self.name or 'a matrix'} has block scales beyond int32")

    def tensors(self) -> tuple[np.ndarray, ...]:
        """The constants a record names: quants int8 [N, K], scales int32 [N, K/32] (and minimums)."""
        parts = (np.asarray(self.q, dtype=np.int8), np.asarray(self.d, dtype=np.int32))
        return parts if self.m is None else parts + (np.asarray(self.m, dtype=np.int32),)


@lru_cache(maxsize=1)
def exp2_table() -> np.ndarray:
    """round(P_MAX * 2**(-u / 2**Z_FRAC)) for u in [0, EXP2_ROWS * 2**Z_FRAC), by mpmath; it ends in
    zeros, so masked keys (u at the end) get no weight. As a constant: [EXP2_ROWS, 1024] int32."""
    import mpmath

    mpmath.mp.dps = 40
    n = EXP2_ROWS << Z_FRAC
    out = np.array([int(mpmath.floor(P_MAX * mpmath.power(2, -mpmath.mpf(u) / (1 << Z_FRAC)) + mpmath.mpf("0.5")))
                    for u in range(n)], dtype=np.int64)
    assert out[-1] == 0
    return out


@lru_cache(maxsize=1)
def exp2_tables() -> tuple[np.ndarray]:
    """The probability table as the constants a record names (one tuple, so its digest is taken once)."""
    return (exp2_table(),)


@lru_cache(maxsize=4)
def rope_table(head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """round(cos(p theta_i) * 2**ROPE_FRAC) and sin for p < CONTEXT, theta_i = base**(-2i / head_dim),
    each [CONTEXT, head_dim / 2], by mpmath (the same on every machine): p theta_i by the angle
    addition recurrence is not exact, so every entry is evaluated on its own. Kept in the cache
    folder (``VERACITY_CACHE``) after the first time (1.4 s of mpmath), as the native kernels are."""
    import os
    from pathlib import Path

    cache = Path(os.environ.get("VERACITY_CACHE", Path.home() / ".cache" / "veracity"))
    path = cache / f"rope-{head_dim}-{base!r}-{CONTEXT}-{ROPE_FRAC}.npz"
    try:
        with np.load(path) as z:
            return z["cos"], z["sin"]
    except (OSError, KeyError, ValueError):
        pass
    cos, sin = _rope_table(head_dim, base)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.npz")
        np.savez(tmp, cos=cos, sin=sin)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except OSError:
        pass  # a read-only cache: computed each time
    return cos, sin


def _rope_table(head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    import mpmath

    mpmath.mp.dps = 30
    half = head_dim // 2
    one = mpmath.mpf(1 << ROPE_FRAC)
    cos = np.zeros((CONTEXT, half), dtype=np.int64)
    sin = np.zeros((CONTEXT, half), dtype=np.int64)
    for i in range(half):
        theta = mpmath.power(mpmath.mpf(base), -mpmath.mpf(2 * i) / head_dim)
        for p in range(CONTEXT):
            c, s = mpmath.cos_sin(p * theta)
            cos[p, i] = int(mpmath.floor(c * one + mpmath.mpf("0.5")))
            sin[p, i] = int(mpmath.floor(s * one + mpmath.mpf("0.5")))
    return cos, sin


@lru_cache(maxsize=8)
def score_scale(head_dim: int) -> int:
    """round(log2(e) / sqrt(head_dim) * 2**SCALE_FRAC), by mpmath."""
    import mpmath

    mpmath.mp.dps = 40
    v = mpmath.log(mpmath.e, 2) / mpmath.sqrt(head_dim) * (1 << SCALE_FRAC)
    return int(mpmath.floor(v + mpmath.mpf("0.5")))


# the reference formulas (int64 NumPy) --------------------------------------------------------------
def qembed(q: np.ndarray, d: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` [1, T] of a Q8_0 table (quants [V, H], scales [V, H / 32]) in ACT_FRAC bits."""
    ids = np.asarray(ids, dtype=np.int64)
    w = q[ids].astype(np.int64) * np.repeat(np.asarray(d, dtype=np.int64)[ids], 32, axis=-1)
    return round_div(w, np.int64(1 << EMBED_SHIFT))


def wrmsnorm(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    e = np.maximum(0, bitlen(np.abs(x).max(axis=-1, keepdims=True)) - RMS_BITS)
    ds = (x + ((np.int64(1) << e) >> 1)) >> e
    ms = (ds * ds).sum(axis=-1, keepdims=True) // x.shape[-1]
    den = np.maximum(isqrt(ms << (2 * NORM_STD_SHIFT)), 1)
    return clip(round_div(ds * np.asarray(gain, dtype=np.int64), den), -ACT_MAX, ACT_MAX)


def rope(x: np.ndarray, start: int, head_dim: int, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [1, T, C] (heads of ``head_dim`` side by side) rotated by positions start..start+T-1."""
    _, t, c = x.shape
    xh = x.reshape(t, c // head_dim, head_dim)
    pos = start + np.arange(t)
    cs, sn = cos[pos][:, None, :], sin[pos][:, None, :]
    a, b = xh[..., 0::2], xh[..., 1::2]
    out = np.empty_like(xh)
    out[..., 0::2] = round_div(a * cs - b * sn, np.int64(1 << ROPE_FRAC))
    out[..., 1::2] = round_div(a * sn + b * cs, np.int64(1 << ROPE_FRAC))
    return out.reshape(1, t, c)


def causal(t: int, s: int) -> np.ndarray:
    """[T, S]: key s is visible to query t (the T queries are the cache's last T positions)."""
    return np.arange(s)[None, :] <= (s - t + np.arange(t))[:, None]


def gqa_scores(q: np.ndarray, k: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """q [1, T, H*D], the K cache [1, S, Hkv*D] -> base-2 scores [H, T, S] (exact int64 dots:
    |q|, |k| <= ACT_MAX and D <= 128 keep them below 2**53)."""
    _, t, c = q.shape
    s = k.shape[1]
    dim = c // heads
    qh = q.reshape(t, heads, dim).astype(np.int64)
    kh = np.repeat(k.reshape(s, kv_heads, dim).astype(np.int64), heads // kv_heads, axis=1)
    dot = np.einsum("thd,shd->hts", qh, kh)
    z = round_div(round_div(dot, np.int64(1 << (2 * ACT_FRAC - Z_FRAC))) * score_scale(dim),
                  np.int64(1 << SCALE_FRAC))
    return np.where(causal(t, s)[None], clip(z, -Z_MAX, Z_MAX), MASKED)


def gqa_probs(z: np.ndarray) -> np.ndarray:
    table = exp2_table()
    valid = z != MASKED
    zmax = np.where(valid, z, MASKED).max(axis=-1, keepdims=True)
    u = np.where(valid, np.minimum(zmax - z, len(table) - 1), len(table) - 1)
    return table[u]


def gqa_context(p: np.ndarray, vt: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """Probabilities [H, T, S] and the V cache transposed [1, Hkv*D, S] -> [1, T, H*D]."""
    h, t, s = p.shape
    dim = vt.shape[1] // kv_heads
    vh = np.repeat(vt.reshape(kv_heads, dim, s).astype(np.int64), heads // kv_heads, axis=0)  # [H, D, S]
    num = np.einsum("hts,hds->thd", p.astype(np.int64), vh)
    den = p.astype(np.int64).sum(axis=-1).T[..., None]  # [T, H, 1]
    return clip(round_div(num, den), -ACT_MAX, ACT_MAX).reshape(1, t, h * dim)


def resid_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return clip(np.asarray(a, dtype=np.int64) + b, -WIDE_MAX, WIDE_MAX)


def silu_gate(g: np.ndarray, u: np.ndarray, silu: np.ndarray) -> np.ndarray:
    s = silu[np.asarray(g, dtype=np.int64) + (1 << 15)]
    return clip(round_div(s * np.asarray(u, dtype=np.int64), np.int64(1 << 8)), -WIDE_MAX, WIDE_MAX)


def linear_record(y: np.ndarray, out_max: int) -> np.ndarray:
    """A block linear's [T, N] output as its record: [1, T, N]; or, wider than ``LOGIT_ROW`` (the LM
    head's logits), [T, ceil(N / W), W], padded below every value."""
    t, n = y.shape
    if n <= LOGIT_ROW:
        return y.reshape(1, t, n)
    r = -(-n // LOGIT_ROW)
    out = np.full((t, r * LOGIT_ROW), -(out_max + 1), dtype=np.int64)
    out[:, :n] = y
    return out.reshape(t, r, LOGIT_ROW)


def row_max(x: np.ndarray) -> np.ndarray:
    """[T, R, W] -> [T, 2R]: each row's largest value and its first index (counted over all rows),
    side by side, so one row of the record holds a position's candidates."""
    t, r, w = x.shape
    idx = np.argmax(x, axis=-1)
    val = np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]
    return np.stack([val, idx + w * np.arange(r)[None, :]], axis=-1).astype(np.int64).reshape(t, 2 * r)


def pick(m: np.ndarray, prev: np.ndarray | None = None, stops: tuple[int, ...] = ()) -> np.ndarray:
    """[T, 2R] -> [T, 1]: the id of the largest value (the first row holding it: the lowest id); once
    the previous token ``prev`` [T, 1] is a stop token, that token again (so a stopped sequence's
    later tokens follow from its answer, and a server may stop computing there)."""
    r = np.argmax(m[:, 0::2], axis=-1)
    out = np.take_along_axis(m[:, 1::2], r[:, None], axis=-1).astype(np.int64)
    if prev is None:
        return out
    prev = np.asarray(prev, dtype=np.int64)
    return np.where(np.isin(prev, np.array(stops, dtype=np.int64)), prev, out)
