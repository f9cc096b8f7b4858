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

import numpy as np
import torch

from veracity.exact import spec
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


class TorchBackend:
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
