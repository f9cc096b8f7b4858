"""Exact training's integer primitives, shared by every trainer (``veracity.training``): fixed-point
formats, per-row int8 quantization and the quantized matmul over an exact GEMM, the rounding
shift, the softmax cross-entropy's exp table and gradient, the optimizer's update and its
configuration, and the seeded data order. Every value is an integer, so a checkpoint's hash is the
same on any machine, thread count or backend.

* **Fixed point**: master weights and optimizer state in ``W_FRAC`` fractional bits, activations
  and their gradients in ``ACT_FRAC``.
* **Quantized matmul** (``qmatmul``): both operands quantized per row to int8 (the inference op
  set's per-row quantizer: a max, a 12-bit rescale and a reciprocal, all exact), one GEMM on the
  int8 values (``gemm``: int64 in NumPy, or float32 in torch, exact because every partial sum is
  an integer below 2**24 for contractions up to 1040), then one rounding rescale per element.
* **Loss gradient**: softmax cross-entropy, with exp from a table (``exp_table``, computed with
  mpmath): ``dz = p / sum(p) - onehot`` in ``ACT_FRAC``.
* **Update** (``update``): SGD (``mu_num = 0``), SGD with momentum, ``v = v * mu_num >> MU_SHIFT
  + g; W -= v * lr_num >> LR_SHIFT``, or Adam, ``m = b1 m + (1 - b1) g; s = b2 s + (1 - b2) g^2;
  W -= lr m / (isqrt(s) + eps)`` with an integer square root (no bias correction: a warm start),
  after the batch mean and an elementwise clip.
* **Data order** (``batch_indices``): the epoch's permutation from a PCG64 generator seeded by
  (seed, epoch), which NumPy specifies bit for bit on every platform.

The native backend runs the hot loops as C kernels (``ops_native``), with the same integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from veracity.exact import spec
from veracity.exact.trace import tensor_digest

W_FRAC = 20  # master weights and optimizer state: value * 2**20


ACT_FRAC = spec.ACT_FRAC  # activations and their gradients: value * 2**12


EXP_FRAC = 8  # the exp table's argument, base 2: u / 2**8


EXP_SIZE = 24 << EXP_FRAC  # 2**-24 is below the table's resolution


EXP_ONE = 1 << 16


LOG2E = 94548  # round(log2(e) * 2**16)


MU_SHIFT = 10


LR_SHIFT = 16


def exp_table_tensor() -> np.ndarray:
    """The exp table as the constant a referee reads: int32 rows of 256 entries."""
    return exp_table().astype(np.int32).reshape(-1, 256)


@lru_cache(maxsize=None)
def exp_table_digest() -> bytes:
    return tensor_digest(exp_table_tensor())


@lru_cache(maxsize=None)
def exp_table() -> np.ndarray:
    """round(2**16 * 2**(-u / 2**8)) for u in [0, EXP_SIZE), computed with mpmath (no libm)."""
    import mpmath

    mpmath.mp.dps = 30
    return np.array([int(mpmath.floor(EXP_ONE * mpmath.power(2, -mpmath.mpf(u) / (1 << EXP_FRAC)) + mpmath.mpf("0.5")))
                     for u in range(EXP_SIZE)], dtype=np.int64)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row int8 as in inference: x ~ q * ams * 2**e / 127 (``ops_numpy.quantize_rows``)."""
    from veracity.exact.ops_numpy import NumpyBackend

    return NumpyBackend.quantize_rows(None, np.asarray(x, dtype=np.int64))  # type: ignore[arg-type]


def gemm(a: np.ndarray, b: np.ndarray, backend: str) -> np.ndarray:
    """a @ b.T for int8-valued int64 operands: int64 in NumPy, or float32 in torch on the CPU or
    (backend "cuda") a GPU (exact: every
    partial sum is an integer below 2**24 while the contraction is at most 1040 long; a longer one
    is cut into such chunks, whose integer results add up exactly)."""
    if backend == "numpy":
        return a @ b.T
    import torch

    device = "cuda" if backend == "cuda" else "cpu"  # on a GPU: no TF32, which would round the operands
    # (torch, torch-eager, native without a compiler: float32 GEMMs on the CPU)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    k = spec.F32_EXACT_K
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.int64)
    for lo in range(0, a.shape[1], k):
        ta = torch.from_numpy(a[:, lo:lo + k].astype(np.float32, copy=False)).to(device)
        tb = torch.from_numpy(b[:, lo:lo + k].astype(np.float32, copy=False)).to(device)
        out += (ta @ tb.T).cpu().numpy().astype(np.int64)
    return out


def isqrt(a: np.ndarray) -> np.ndarray:
    from veracity.exact.ops_numpy import isqrt as floor_sqrt

    return floor_sqrt(np.asarray(a, dtype=np.int64))


def round_shift(num: np.ndarray, den: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """round_half_up(num * 2**shift / den) in integers (shift may be negative)."""
    if isinstance(den, int) and den == 1 and isinstance(shift, int):  # a power of two: shifts alone
        return num << shift if shift >= 0 else (num + (1 << (-shift - 1))) >> -shift
    shift = np.asarray(shift, dtype=np.int64)
    den = np.asarray(den, dtype=np.int64)
    pos, neg = np.maximum(shift, 0), np.maximum(-shift, 0)
    top = int(np.abs(num).max(initial=0)).bit_length() + int(pos.max(initial=0)) + 2
    if top >= 63 or int(np.abs(den).max(initial=0)).bit_length() + int(neg.max(initial=0)) + 2 >= 63:
        return _round_shift_exact(num, den, pos, neg)  # int64 would wrap: the referee's int256 would not
    n2 = (num << pos) * 2
    d2 = (den << neg) * 2
    return (n2 + d2 // 2) // d2


def _round_shift_exact(num: np.ndarray, den: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """``round_shift`` in Python integers, for values whose intermediates exceed int64: the same
    result as the referee's int256 arithmetic, or a clear error if the result itself does not fit."""
    o = lambda a: np.asarray(a).astype(object)  # noqa: E731
    n2 = (o(num) << o(pos)) * 2
    d2 = (o(den) << o(neg)) * 2
    out = (n2 + d2 // 2) // d2
    if any(abs(int(v)) >= 1 << 62 for v in np.asarray(out).ravel()):
        raise ValueError("training diverged: a value no longer fits exact int64 arithmetic (lower the learning rate)")
    return np.asarray(out).astype(np.int64)


def fast(backend: str) -> Any:
    """The native kernels, where the backend takes them: "torch" (as in inference, fused C kernels
    when a C compiler is present) and "native"; "torch-eager", "cuda" and "numpy" never do."""
    from veracity.exact.ops_native import training_kernels

    return training_kernels() if backend in ("torch", "native") else None


def qmatmul(x: np.ndarray | None, fx: int, w: np.ndarray, fw: int, fout: int, backend: str,
            xq: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """x @ w.T (x [M, K] with ``fx`` fractional bits, w [N, K] with ``fw``) in ``fout`` bits: both
    quantized per row to int8, one exact GEMM, then one rounding rescale per element. ``xq``: x's
    quantization (``quantize_rows``), when x is frozen and it was computed once."""
    if (lib := fast(backend)) is not None:
        from veracity.exact.ops_native import native_qmatmul

        out = native_qmatmul(lib, x, w, fout - fx - fw, xq=xq)
        if out is not None:
            return out
    if xq is None:
        if x is None:
            raise ValueError("qmatmul needs x or its quantization xq")
        xq = quantize_rows(x)
    qx, ax, ex = xq
    qw, aw, ew = quantize_rows(w)
    acc = gemm(qx, qw, backend)
    scale = ax * aw.T  # < 2**24
    return round_shift(acc * scale, spec.QMAX * spec.QMAX, ex + ew.T + fout - fx - fw)


@dataclass
class SGDConfig:
    lr_num: int = 3277  # learning rate lr_num / 2**16 (0.05)
    mu_num: int = 922  # momentum mu_num / 2**10 (0.9); 0 is plain SGD
    clip: int = 1 << W_FRAC  # each gradient element clipped to +-1.0
    batch: int = 32
    seed: int = 0
    optimizer: str = "momentum"  # "sgd", "momentum" or "adam"
    b1_num: int = 922  # Adam's beta1 = b1_num / 2**10 (0.9)
    b2_num: int = 1023  # Adam's beta2 = b2_num / 2**10 (0.999)
    eps: int = 1 << 10  # Adam's epsilon in W_FRAC (about 1e-3)

    def __post_init__(self) -> None:
        from veracity.errors import InputError

        if self.optimizer not in ("sgd", "momentum", "adam"):
            raise InputError(f"unknown optimizer {self.optimizer!r}: use sgd, momentum or adam")
        if not 1 <= self.lr_num <= 1 << LR_SHIFT or not all(0 <= b <= 1 << MU_SHIFT for b in (
                self.mu_num, self.b1_num, self.b2_num)) or \
                not 1 <= self.clip <= 1 << (26 if self.optimizer == "adam" else 40):
            raise InputError("the learning rate must be in (0, 1], momentum and betas in [0, 1] and the clip in "
                             "(0, 64] for Adam, (0, 2**20] otherwise (fixed point): int64 holds every product then")
        if self.eps < 1 or not 0 < self.batch <= 1 << 15 or self.clip < 1:
            raise InputError("eps and clip must be at least 1 and the batch 1 to 32768 (fixed point)")
        if self.optimizer == "sgd":
            self.mu_num = 0


OPT_CODES = {"sgd": 1, "momentum": 2, "adam": 3}


def update(w: np.ndarray, v: np.ndarray, sq: np.ndarray, g: np.ndarray, batch: int,
           cfg: SGDConfig, backend: str = "numpy") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One optimizer update of a tensor from its summed gradient ``g`` (all in ``W_FRAC``): the
    batch mean, the clip, then SGD, momentum or Adam. Returns the new (weights, moment, second
    moment). The native backend runs it in one C pass (``native.c: vt_update``), same integers."""
    if (lib := fast(backend)) is not None:
        from veracity.exact.ops_native import native_update

        return native_update(lib, w, v, sq, g, batch, cfg, OPT_CODES[cfg.optimizer])
    g = np.clip(round_shift(g, batch, 0), -cfg.clip, cfg.clip)
    if max(int(np.abs(w).max(initial=0)), int(np.abs(v).max(initial=0)), int(np.abs(sq).max(initial=0))) >= 1 << 46:
        raise ValueError("training diverged: a weight or moment passed 2**46 in fixed point (lower the learning rate)")
    if cfg.optimizer == "adam":
        v = (v * cfg.b1_num + g * ((1 << MU_SHIFT) - cfg.b1_num)) >> MU_SHIFT
        sq = (sq * cfg.b2_num + g * g * ((1 << MU_SHIFT) - cfg.b2_num)) >> MU_SHIFT
        return w - round_shift(v * cfg.lr_num, (isqrt(sq) + cfg.eps) << LR_SHIFT, W_FRAC), v, sq
    v = ((v * cfg.mu_num) >> MU_SHIFT) + g
    return w - ((v * cfg.lr_num) >> LR_SHIFT), v, sq


def exp_rows(z: np.ndarray) -> np.ndarray:
    """The softmax's numerators from the exp table: ``table[min(((max_r - z) * LOG2E) >> 20, size - 1)]``."""
    u = ((z.max(axis=1, keepdims=True) - z) * LOG2E) >> (ACT_FRAC + 16 - EXP_FRAC)
    return exp_table()[np.minimum(u, EXP_SIZE - 1)]


def loss_grad(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d(cross-entropy)/d(logits) = p / sum(p) - onehot, in ``ACT_FRAC``."""
    g = round_shift(p, p.sum(axis=1, keepdims=True), ACT_FRAC)
    g[np.arange(len(labels)), labels] -= 1 << ACT_FRAC
    return g


def loss_pair(z: np.ndarray, labels: np.ndarray, backend: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """(``exp_rows(z)``, ``loss_grad`` of them): in one C pass on the native backend, same integers."""
    if (lib := fast(backend)) is not None:
        zz = np.ascontiguousarray(z, dtype=np.int64)
        yy = np.ascontiguousarray(labels, dtype=np.int64)
        p, g = np.empty_like(zz), np.empty_like(zz)
        table = exp_table()
        lib.vt_loss_grad(zz.ctypes.data, yy.ctypes.data, zz.shape[0], zz.shape[1], table.ctypes.data, table.size,
                         p.ctypes.data, g.ctypes.data)
        return p, g
    p = exp_rows(z)
    return p, loss_grad(p, labels)


def batch_indices(n: int, step: int, cfg: SGDConfig) -> np.ndarray:
    """The samples of step ``step``: its epoch's seeded permutation, sliced (the last batch of an
    epoch may be short)."""
    per_epoch = -(-n // cfg.batch)
    epoch, j = divmod(step, per_epoch)
    return _epoch_order(n, cfg.seed, epoch)[j * cfg.batch:(j + 1) * cfg.batch].copy()


@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    order = np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n)
    order.flags.writeable = False
    return order

