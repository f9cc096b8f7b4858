"""Fast backend: the exact op set in PyTorch at native matrix-multiply speed.

Tensors are float32 holding integers below 2**24, so every float32 add, multiply by a power of
two and floor on them is exact, and int8 GEMMs run as float32 GEMMs: every partial sum of
K <= 1040 products of int8 values is an integer below 2**24, so any summation order gives the
same bits (longer K is split into chunks summed in float64). Requantization and division run
in float64 where the bounds below keep every intermediate exact:

* floor division lemma: for integers |n| < 2**53 and 0 < d, ``floor(fl64(n / d)) == n // d``
  (a non-integer quotient is at least 1/d from the next integer; the rounding error of the
  division is at most |n/d| * 2**-53 < 1/d). Scaling n and d by the same power of two keeps it.
* products of integers stay exact while their magnitude (mantissa bits) stays below 2**53.

No libm function is used: tables come from ``spec`` and square roots are fixed up to ``isqrt``.
Results equal ``ops_numpy`` bit for bit; ``tests/exact`` checks that on random and edge inputs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from veracity.exact import llm, spec
from veracity.exact.spec import QLinear, QNorm

Tensor = torch.Tensor
_F64 = torch.float64
_CANON = {np.dtype(np.int8): torch.int8, np.dtype(np.int16): torch.int16,
          np.dtype(np.int32): torch.int32, np.dtype(np.uint8): torch.uint8,
          np.dtype(np.int64): torch.int64}


def pow2(e: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.ldexp(torch.ones(e.shape, dtype=dtype, device=e.device), e.to(torch.int32))


def _bitlen(a: Tensor) -> Tensor:
    """Bit length of non-negative integer-valued floats (frexp's exponent is exact)."""
    return torch.frexp(a).exponent.to(torch.int32)


def _floor_div(n: Tensor, d: Tensor) -> Tensor:
    """n // d for integer-valued float64 with |n| < 2**53 (the floor division lemma)."""
    return torch.div(n, d).floor_()


def _isqrt(n: Tensor) -> Tensor:
    """floor(sqrt(n)) for integer-valued float64 n < 2**52, corrected to the exact value."""
    r = torch.sqrt(n).floor_()
    r = r - (r * r > n).to(_F64)
    return r + ((r + 1) * (r + 1) <= n).to(_F64)


def _shift_round(x: Tensor, e: Tensor) -> Tensor:
    """(x + 2**(e-1)) >> e, with e >= 0 per row; exact for |x| < 2**24 in float32."""
    half = torch.floor(pow2(e - 1, x.dtype))
    return (x + half).mul_(pow2(-e, x.dtype)).floor_()


_I64 = torch.int64


def _rdiv(num: Tensor, den: Tensor | int) -> Tensor:
    """round_half_up(num / den) on int64, den > 0."""
    return torch.div(2 * num + den, 2 * den, rounding_mode="floor")


def _bitlen64(a: Tensor) -> Tensor:
    """Bit length of non-negative int64 values below 2**53 (frexp of an exact float64)."""
    return torch.frexp(a.to(_F64)).exponent.to(_I64)


def _isqrt64(n: Tensor) -> Tensor:
    """floor(sqrt(n)) for int64 n < 2**62: the float64 root, corrected in integers."""
    r = torch.sqrt(n.to(_F64)).to(_I64)
    for _ in range(2):
        r = torch.where(r * r > n, r - 1, r)
    for _ in range(2):
        r = torch.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


_BLOCKS: dict[tuple[int, str], tuple[Any, dict[str, Tensor]]] = {}  # block-quantized matrices, per device


class LlamaTorchOps:
    """The Llama family's ops (``exact.llm``) in torch int64 arithmetic; the per-block dots of the
    block-quantized linear as float GEMMs (exact: see ``exact.blockq``)."""

    device: torch.device
    _params: dict[int, tuple[object, dict[str, Tensor]]]

    def _i64(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64)).to(self.device)

    def _cached(self, obj: object, make: "Callable[[], dict[str, Tensor]]") -> dict[str, Tensor]:
        hit = self._params.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = (obj, make())
            self._params[id(obj)] = hit
        return hit[1]

    def _block(self, w: Any) -> dict[str, Tensor]:
        """A matrix's tensors on this device, made once per process (``_BLOCKS``: a job's backend is
        new, the model's weights are not)."""
        key = (id(w), str(self.device))
        hit = _BLOCKS.get(key)
        if hit is None or hit[0] is not w:
            n, k = w.q.shape
            wide = int(np.abs(w.q.astype(np.int64)).max(initial=0)) * 32 * 32767 >= 1 << 24
            qt = w.q.reshape(n, k // 32, 32).transpose(1, 2, 0)
            out = {"qt": torch.from_numpy(np.ascontiguousarray(qt)).to(self.device, _F64 if wide else torch.float32),
                   "q8": torch.from_numpy(np.ascontiguousarray(w.q)).to(self.device), "d": self._i64(w.d)}
            if w.m is not None:
                out["m"] = self._i64(w.m)
            hit = (w, out)
            _BLOCKS[key] = hit
        return hit[1]

    def qembed(self, w: Any, ids: Tensor) -> Tensor:
        p = self._block(w)
        q = p["q8"][ids].to(_I64)
        return _rdiv(q * p["d"][ids].repeat_interleave(32, dim=-1), 1 << llm.EMBED_SHIFT)

    def block_linear(self, x: Tensor, w: Any, frac_out: int, out_max: int) -> Tensor:
        from veracity.exact.blockq import HALF_FRAC, QX, ROW_BITS

        p = self._block(w)
        k = x.shape[-1]
        xb = x.reshape(-1, k // 32, 32).to(_I64)
        t = xb.shape[0]
        amax = xb.abs().amax(dim=-1)  # [T, nb]
        e = (_bitlen64(amax.amax(dim=-1, keepdim=True)) - ROW_BITS).clamp(min=0)  # [T, 1]
        a = -torch.bitwise_right_shift(-amax, e)
        den = (torch.bitwise_left_shift(a, e) * 2)[..., None]
        qx = torch.where(den > 0, torch.div(2 * QX * xb + (den >> 1), den.clamp(min=1), rounding_mode="floor"), 0)
        dots = torch.bmm(qx.transpose(0, 1).to(p["qt"].dtype), p["qt"]).to(_I64)  # [nb, T, N]
        acc = (dots * a.T[:, :, None] * p["d"].T[:, None, :]).sum(dim=0)
        if "m" in p:  # elementwise int64 (CUDA has no int64 GEMM): |a * sx| < 2**27, the sum < 2**62
            acc = acc + ((a * qx.sum(dim=-1))[:, None, :] * p["m"][None]).sum(dim=-1)
        shift = HALF_FRAC + spec.ACT_FRAC - frac_out - e
        num = torch.bitwise_left_shift(acc, (-shift).clamp(min=0))
        dd = torch.bitwise_left_shift(torch.full_like(shift, QX), shift.clamp(min=0))
        y = torch.div(2 * num + dd, 2 * dd, rounding_mode="floor").clamp(-out_max, out_max)
        n = y.shape[-1]
        if n <= llm.LOGIT_ROW:
            return y.reshape(1, t, n)
        r = -(-n // llm.LOGIT_ROW)
        out = torch.full((t, r * llm.LOGIT_ROW), -(out_max + 1), dtype=_I64, device=y.device)
        out[:, :n] = y
        return out.reshape(t, r, llm.LOGIT_ROW)

    def wrmsnorm(self, x: Tensor, gain: np.ndarray) -> Tensor:
        g = self._cached(gain, lambda: {"g": self._i64(gain)})["g"]
        x = x.to(_I64)
        e = (_bitlen64(x.abs().amax(dim=-1, keepdim=True)) - llm.RMS_BITS).clamp(min=0)
        ds = torch.bitwise_right_shift(x + torch.bitwise_right_shift(torch.bitwise_left_shift(torch.ones_like(e), e), 1), e)
        ms = torch.div((ds * ds).sum(dim=-1, keepdim=True), x.shape[-1], rounding_mode="floor")
        den = _isqrt64(ms << (2 * spec.NORM_STD_SHIFT)).clamp(min=1)
        return _rdiv(ds * g, den).clamp(-spec.ACT_MAX, spec.ACT_MAX)

    def rope(self, x: Tensor, start: int, head_dim: int, table: tuple[np.ndarray, np.ndarray]) -> Tensor:
        cs = self._cached(table, lambda: {"cos": self._i64(table[0]), "sin": self._i64(table[1])})
        _, t, c = x.shape
        xh = x.to(_I64).reshape(t, c // head_dim, head_dim // 2, 2)
        cos, sin = cs["cos"][start:start + t][:, None, :], cs["sin"][start:start + t][:, None, :]
        a, b = xh[..., 0], xh[..., 1]
        one = 1 << llm.ROPE_FRAC
        return torch.stack([_rdiv(a * cos - b * sin, one), _rdiv(a * sin + b * cos, one)], dim=-1).reshape(1, t, c)

    def kv_append(self, cache: Tensor, new: Tensor) -> Tensor:
        return torch.cat([cache, new.to(cache.dtype)], dim=1)

    def gqa_scores(self, q: Tensor, k: Tensor, heads: int, kv_heads: int) -> Tensor:
        _, t, c = q.shape
        s, dim = k.shape[1], c // heads
        qh = q.to(_I64).reshape(t, heads, dim).transpose(0, 1)  # [H, T, D]
        kh = k.to(_I64).reshape(s, kv_heads, dim).transpose(0, 1).repeat_interleave(heads // kv_heads, dim=0)
        # a float64 GEMM is exact while D <= 64 (|q|, |k| <= ACT_MAX: partial sums below 2**52);
        # wider heads use int64 (CPU only)
        if dim <= 64:
            dot = torch.bmm(qh.to(_F64), kh.transpose(1, 2).to(_F64)).to(_I64)  # [H, T, S]
        else:
            dot = torch.bmm(qh, kh.transpose(1, 2))
        z = _rdiv(_rdiv(dot, 1 << (2 * spec.ACT_FRAC - llm.Z_FRAC)) * llm.score_scale(dim), 1 << llm.SCALE_FRAC)
        mask = torch.from_numpy(llm.causal(t, s)).to(self.device)
        return torch.where(mask[None], z.clamp(-llm.Z_MAX, llm.Z_MAX), llm.MASKED)

    def gqa_probs(self, z: Tensor) -> Tensor:
        table = self._cached(llm.exp2_table(), lambda: {"t": self._i64(llm.exp2_table())})["t"]
        last = table.shape[0] - 1
        valid = z != llm.MASKED
        zmax = z.amax(dim=-1, keepdim=True)  # MASKED is below every score, and each row has one
        u = torch.where(valid, (zmax - z).clamp(max=last), last)
        return table[u]

    def gqa_context(self, p: Tensor, vt: Tensor, heads: int, kv_heads: int) -> Tensor:
        h, t, s = p.shape
        dim = vt.shape[1] // kv_heads
        vh = vt.to(_I64).reshape(kv_heads, dim, s).repeat_interleave(heads // kv_heads, dim=0)  # [H, D, S]
        # exact in float64: p <= 2**16, |v| <= ACT_MAX, S <= CONTEXT: sums below 2**50
        num = torch.bmm(p.to(_F64), vh.transpose(1, 2).to(_F64)).to(_I64)  # [H, T, D]
        den = p.sum(dim=-1, keepdim=True)
        out = _rdiv(num, den).clamp(-spec.ACT_MAX, spec.ACT_MAX)
        return out.transpose(0, 1).reshape(1, t, h * dim)

    def resid_add(self, a: Tensor, b: Tensor) -> Tensor:
        return (a.to(_I64) + b.to(_I64)).clamp(-llm.WIDE_MAX, llm.WIDE_MAX)

    def silu_gate(self, g: Tensor, u: Tensor) -> Tensor:
        lut = self._cached(spec.silu_lut(), lambda: {"t": self._i64(spec.silu_lut())})["t"]
        s = lut[g.to(_I64) + (1 << 15)]
        return _rdiv(s * u.to(_I64), 1 << 8).clamp(-llm.WIDE_MAX, llm.WIDE_MAX)

    def row_max(self, x: Tensor) -> Tensor:
        t, r, w = x.shape
        idx = torch.argmax(x, dim=-1)  # the first largest
        val = torch.gather(x, -1, idx[..., None])[..., 0]
        base = torch.arange(r, device=x.device, dtype=_I64)[None, :] * w
        return torch.stack([val.to(_I64), idx + base], dim=-1).reshape(t, 2 * r)

    def pick(self, m: Tensor, prev: Tensor | None, stops: tuple[int, ...]) -> Tensor:
        r = torch.argmax(m[:, 0::2], dim=-1)
        out = torch.gather(m[:, 1::2], -1, r[:, None])
        if prev is None:
            return out
        prev = prev.to(_I64)
        return torch.where(torch.isin(prev, torch.tensor(stops, dtype=_I64, device=prev.device)), prev, out)


class TorchBackend(LlamaTorchOps):
    """The exact op set on PyTorch (CPU, or CUDA where present)."""

    name = "torch"

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self._gelu = self._to(spec.gelu_lut())
        self._silu = self._to(spec.silu_lut())
        self._exp2 = self._to(spec.exp2_lut())
        self._params: dict[int, tuple[object, dict[str, Tensor]]] = {}

    def _to(self, a: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(self.device, dtype)

    def _linear_params(self, lin: QLinear) -> dict[str, Tensor]:
        hit = self._params.get(id(lin))
        if hit is None:
            colf = lin.mult.astype(np.float64) * np.ldexp(1.0, -lin.shift)
            params = {"wt": self._to(lin.weight.T), "colf": self._to(colf, _F64), "bias": self._to(lin.bias, _F64)}
            if lin.smooth is not None:
                params["smooth"] = self._to(lin.smooth, _F64)
            hit = (lin, params)
            self._params[id(lin)] = hit
        return hit[1]

    def _norm_params(self, norm: QNorm) -> dict[str, Tensor]:
        hit = self._params.get(id(norm))
        if hit is None:
            hit = (norm, {"gamma2": self._to(2 * norm.gamma, _F64), "beta": self._to(norm.beta, _F64)})
            self._params[id(norm)] = hit
        return hit[1]

    # conversions --------------------------------------------------------------------------
    def tensor(self, a: np.ndarray) -> Tensor:
        return self._to(a)

    def constant(self, a: np.ndarray) -> Tensor:
        """A model constant (an embedding table), converted once and kept with its array."""
        hit = self._params.get(id(a))
        if hit is None:
            hit = (a, {"t": self._to(a)})
            self._params[id(a)] = hit
        return hit[1]["t"]

    def index(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.array(a, dtype=np.int64)).to(self.device)

    def canonical(self, x: Tensor, dtype: np.dtype) -> np.ndarray:
        return x.to(_CANON[np.dtype(dtype)]).cpu().numpy()

    def split_heads(self, x: Tensor, heads: int) -> Tensor:
        b, t, h = x.shape
        return x.reshape(b, t, heads, h // heads).transpose(1, 2)

    def argmax(self, x: Tensor) -> Tensor:
        """Each row's first largest value's index (torch.argmax returns the first)."""
        return torch.argmax(x, dim=-1)

    def append(self, tokens: Tensor, token: Tensor) -> Tensor:
        return torch.cat([tokens, token.to(tokens.dtype)], dim=-1)

    def transpose_last(self, x: Tensor) -> Tensor:
        """The last two axes swapped (a layout record: V per head, h per feature)."""
        return x.transpose(-1, -2)

    def merge_heads(self, x: Tensor) -> Tensor:
        b, nh, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, nh * d)

    # quantization -------------------------------------------------------------------------
    def quantize_rows(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-row int8 as in ops_numpy; xs * inv <= 127 * 2**17 < 2**24 keeps float32 exact.

        x is float32 (|x| < 2**24) or float64 (|x| < 2**53); q comes back as float32.
        """
        amax = x.abs().amax(dim=-1, keepdim=True)
        e = (_bitlen(amax) - spec.ROW_BITS).clamp_(min=0)
        xs = _shift_round(x, e)
        ams = _shift_round(amax, e)
        inv = _floor_div(torch.full_like(ams, spec.QMAX << spec.RECIP_SHIFT, dtype=_F64),
                         ams.to(_F64).clamp(min=1))
        xs, ams = xs.to(torch.float32), ams.to(torch.float32)
        inv = torch.where(ams > 0, inv, 0).to(torch.float32)
        q = (xs.mul_(inv)).add_(1 << (spec.RECIP_SHIFT - 1)).mul_(2.0 ** -spec.RECIP_SHIFT).floor_()
        return q, ams, e

    @staticmethod
    def _idot(a: Tensor, b: Tensor) -> Tensor:
        """Exact int8 matmul into float64: float32 GEMM per K-chunk of at most 1040."""
        k = a.shape[-1]
        if k <= spec.F32_EXACT_K:
            return torch.matmul(a, b).to(_F64)
        acc = torch.matmul(a[..., :spec.F32_EXACT_K], b[..., :spec.F32_EXACT_K, :]).to(_F64)
        for lo in range(spec.F32_EXACT_K, k, spec.F32_EXACT_K):
            acc.add_(torch.matmul(a[..., lo:lo + spec.F32_EXACT_K], b[..., lo:lo + spec.F32_EXACT_K, :]).to(_F64))
        return acc

    # ops ----------------------------------------------------------------------------------
    def linear(self, x: Tensor, lin: QLinear) -> Tensor:
        """y = round(acc * rowmax * 2**e * mult * 2**-shift) + bias; acc*rowmax*mult < 2**52."""
        p = self._linear_params(lin)
        smooth = p.get("smooth")
        q, ams, e = self.quantize_rows(x if smooth is None else x.to(_F64).mul_(smooth))
        acc = self._idot(q, p["wt"])
        rowf = ams.to(_F64) * pow2(e, _F64)
        y = acc.mul_(rowf).mul_(p["colf"]).add_(0.5).floor_().add_(p["bias"])
        return y.clamp_(-lin.out_max, lin.out_max).to(torch.float32)

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b).clamp_(-spec.ACT_MAX, spec.ACT_MAX)

    def relu(self, x: Tensor) -> Tensor:
        return torch.clamp(x, min=0)

    def gelu(self, x: Tensor) -> Tensor:
        return self._gelu.take((x + (1 << 15)).to(torch.int64))

    def silu(self, x: Tensor) -> Tensor:
        return self._silu.take((x + (1 << 15)).to(torch.int64))

    def _normalize(self, d: Tensor, norm: QNorm) -> Tensor:
        """round(d * gamma / D) + beta with D = isqrt(mean(ds^2) * 2**8), ds = d shifted to 15 bits."""
        p = self._norm_params(norm)
        h = d.shape[-1]
        e = (_bitlen(d.abs().amax(dim=-1, keepdim=True)) - spec.NORM_BITS).clamp_(min=0)
        ds = _shift_round(d, e)
        var = (ds * ds).sum(dim=-1, keepdim=True)
        den = _isqrt(_floor_div(var.mul_(1 << (2 * spec.NORM_STD_SHIFT)), torch.tensor(float(h), dtype=_F64)))
        den = den.clamp_(min=1)
        out = _floor_div(ds.mul_(p["gamma2"]).add_(den), den.mul(2)).add_(p["beta"])
        return out.clamp_(-spec.ACT_MAX, spec.ACT_MAX).to(torch.float32)

    def rmsnorm(self, x: Tensor, norm: QNorm) -> Tensor:
        return self._normalize(x.to(_F64), norm)

    def layernorm(self, x: Tensor, norm: QNorm) -> Tensor:
        h = x.shape[-1]
        x64 = x.to(_F64)
        mu = _floor_div(x64.sum(dim=-1, keepdim=True).mul_(2).add_(h), torch.tensor(2.0 * h, dtype=_F64))
        return self._normalize(x64.sub_(mu), norm)

    def embedding(self, table: Tensor, ids: Tensor) -> Tensor:
        return table[ids]

    def attention_scores(self, q: Tensor, k: Tensor, key_valid: Tensor, causal: bool) -> Tensor:
        qq, amq, eq = self.quantize_rows(q)
        kq, amk, ek = self.quantize_rows(k)
        acc = torch.matmul(qq, kq.transpose(-1, -2)).to(_F64)
        den = spec.QMAX * spec.QMAX
        rowf = amq.to(_F64) * pow2(eq + (1 + spec.SCORE_FRAC - 2 * spec.ACT_FRAC), _F64)
        colf = (amk.to(_F64) * pow2(ek, _F64)).transpose(-1, -2)
        z = _floor_div(acc.mul_(rowf).mul_(colf).add_(den), torch.tensor(2.0 * den, dtype=_F64))
        z = z.clamp_(-spec.I16_MAX, spec.I16_MAX).to(torch.float32)
        return z.masked_fill_(~_key_mask(key_valid, z.shape, causal), spec.MASKED_SCORE)

    def scores_softmax(self, q: Tensor, k: Tensor, key_valid: Tensor, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Scores, then the softmax numerators and row sums (fused by the native backend)."""
        z = self.attention_scores(q, k, key_valid, causal)
        return (z, *self.softmax(z))

    def softmax(self, z: Tensor) -> tuple[Tensor, Tensor]:
        zmax = z.amax(dim=-1, keepdim=True)
        u = (zmax - z).clamp_(max=spec.EXP2_LUT_SIZE - 1)
        u.masked_fill_(z == spec.MASKED_SCORE, spec.EXP2_LUT_SIZE - 1)
        p = self._exp2.take(u.to(torch.int64))
        return p, p.sum(dim=-1)

    def attention_context(self, p: Tensor, psum: Tensor, v: Tensor, key_valid: Tensor) -> Tensor:
        """acc * colmax * 2**e < 2**49 and the division by 127 * S is a floor division."""
        v = v * key_valid[:, None, :, None].to(v.dtype)
        vq, amv, ev = self.quantize_rows(v.transpose(-1, -2))
        if p.shape[-1] * spec.PROB_MAX * spec.QMAX >= 1 << 24:
            raise ValueError("attention over more than 518 keys is outside the exact op set")
        acc = torch.matmul(p, vq.transpose(-1, -2)).to(_F64)
        colf = (amv.to(_F64) * pow2(ev, _F64)).transpose(-1, -2)
        den = psum[..., None].to(_F64).mul_(spec.QMAX)
        out = _floor_div(acc.mul_(colf).mul_(2).add_(den), den.mul(2))
        return out.clamp_(-spec.ACT_MAX, spec.ACT_MAX).to(torch.float32)

    def mean_pool(self, h: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(_F64)
        total = (h.to(_F64) * m[..., None]).sum(dim=1)
        count = m.sum(dim=1, keepdim=True).clamp_(min=1)
        return _floor_div(total.mul_(2).add_(count), count.mul(2)).to(torch.float32)

    def l2_normalize(self, x: Tensor) -> Tensor:
        x64 = x.to(_F64)
        e = (_bitlen(x64.abs().amax(dim=-1, keepdim=True)) - spec.NORM_BITS).clamp_(min=0)
        xs = _shift_round(x64, e)
        norm = _isqrt((xs * xs).sum(dim=-1, keepdim=True))
        safe = norm.clamp(min=1)
        out = _floor_div(xs.mul_(1 << 16).add_(safe), safe.mul(2))
        return torch.where(norm > 0, out, 0).to(torch.float32)


def _key_mask(key_valid: Tensor, shape: torch.Size, causal: bool) -> Tensor:
    t = shape[-1]
    mask = key_valid[:, None, None, :].to(torch.bool).expand(shape[0], 1, t, t)
    if causal:
        mask = mask & torch.ones(t, t, dtype=torch.bool, device=key_valid.device).tril()
    return mask
