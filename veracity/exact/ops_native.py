"""Native CPU backend: ``TorchBackend`` with its elementwise work fused into C kernels.

Torch still runs the GEMMs (float32 on int8 values, exact); the quantization, requantization,
softmax, LayerNorm and table lookups that follow run as one pass per row in ``native.c``,
compiled on first use with the system C compiler and cached. Results equal ``ops_numpy`` bit
for bit (the op tests run all backends); where no compiler is found, ``make_backend`` falls
back to the plain torch backend, which gives the same bits, only slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veracity.exact import spec
from veracity.exact.ops_torch import TorchBackend, pow2
from veracity.exact.spec import QLinear, QNorm

Tensor = torch.Tensor
SOURCE = Path(__file__).with_name("native.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared"]
_F64 = torch.float64


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") or line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """Compile (once per source, flags and CPU) and load the kernels; None without a compiler."""
    if os.environ.get("VERACITY_NATIVE", "1") == "0":
        return None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + _cpu_id().encode()).hexdigest()[:16]
    cache = Path(os.environ.get("VERACITY_CACHE", Path.home() / ".cache" / "veracity"))
    lib = cache / f"native-{key}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        proc = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            return None
        os.replace(tmp, lib)  # atomic: concurrent builders never see half a file
    return ctypes.CDLL(str(lib))


def _p(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def _c(t: Tensor) -> Tensor:
    return t if t.is_contiguous() else t.contiguous()


I64, F64 = ctypes.c_int64, ctypes.c_double


class NativeBackend(TorchBackend):
    """The exact op set on CPU: torch GEMMs plus fused C kernels."""

    name = "torch"

    def __init__(self) -> None:
        super().__init__("cpu")
        lib = library()
        if lib is None:
            raise RuntimeError("native kernels unavailable (no C compiler)")
        self.lib = lib

    @staticmethod
    def _nt() -> ctypes.c_int:
        return ctypes.c_int(torch.get_num_threads())

    def quantize_rows(self, x: Tensor, smooth: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        x = _c(x.to(torch.float32))
        k = x.shape[-1]
        rows = x.numel() // k
        q = torch.empty_like(x)
        ams = torch.empty(x.shape[:-1] + (1,), dtype=torch.float32)
        e = torch.empty(x.shape[:-1] + (1,), dtype=torch.int32)
        self.lib.vq_quantize_rows(_p(x), _p(smooth), I64(rows), I64(k), _p(q), _p(ams), _p(e), self._nt())
        return q, ams, e

    def linear(self, x: Tensor, lin: QLinear) -> Tensor:
        p = self._linear_params(lin)
        q, ams, e = self.quantize_rows(x, p.get("smooth"))
        k, ck = q.shape[-1], spec.F32_EXACT_K
        acc32 = acc32b = acc64 = None
        if k <= ck:
            acc32 = _c(torch.matmul(q, p["wt"]))
        elif k <= 2 * ck:  # two exact float32 chunks, summed in double inside the kernel
            half = (k + 1) // 2
            acc32 = _c(torch.matmul(q[..., :half], p["wt"][:half]))
            acc32b = _c(torch.matmul(q[..., half:], p["wt"][half:]))
        else:
            acc64 = _c(self._idot(q, p["wt"]))
        acc = next(a for a in (acc32, acc64) if a is not None)
        n = acc.shape[-1]
        rowf = _c((ams.to(_F64) * pow2(e, _F64)).reshape(-1))
        y = torch.empty(acc.shape, dtype=torch.float32)
        self.lib.vq_requant(_p(acc32), _p(acc32b), _p(acc64), _p(rowf), _p(p["colf"]), _p(p["bias"]),
                            I64(acc.numel() // n), I64(n), F64(lin.out_max), _p(y), self._nt())
        return y

    def layernorm(self, x: Tensor, norm: QNorm) -> Tensor:
        p = self._norm_params(norm)
        x = _c(x)
        out = torch.empty_like(x)
        h = x.shape[-1]
        self.lib.vq_layernorm(_p(x), _p(p["gamma2"]), _p(p["beta"]), I64(x.numel() // h), I64(h),
                              F64(spec.ACT_MAX), _p(out), self._nt())
        return out

    def _lookup16(self, x: Tensor, table: Tensor) -> Tensor:
        x = _c(x)
        out = torch.empty_like(x)
        self.lib.vq_lookup16(_p(x), _p(table), I64(x.numel()), _p(out), self._nt())
        return out

    def gelu(self, x: Tensor) -> Tensor:
        return self._lookup16(x, self._gelu)

    def silu(self, x: Tensor) -> Tensor:
        return self._lookup16(x, self._silu)

    def scores_softmax(self, q: Tensor, k: Tensor, key_valid: Tensor, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
        qq, amq, eq = self.quantize_rows(q)
        kq, amk, ek = self.quantize_rows(k)
        acc = _c(torch.matmul(qq, kq.transpose(-1, -2)))
        b, h, t, _ = acc.shape
        rowf = _c((amq.to(_F64) * pow2(eq + (1 + spec.SCORE_FRAC - 2 * spec.ACT_FRAC), _F64)).reshape(-1))
        colf = _c((amk.to(_F64) * pow2(ek, _F64)).reshape(-1))
        valid = _c(key_valid.to(torch.float32))
        z, p = torch.empty_like(acc), torch.empty_like(acc)
        psum = torch.empty((b, h, t), dtype=torch.float32)
        self.lib.vq_scores_softmax(_p(acc), _p(rowf), _p(colf), _p(valid), I64(b * h), I64(h), I64(t),
                                   ctypes.c_int(int(causal)), _p(self._exp2), I64(spec.EXP2_LUT_SIZE),
                                   _p(z), _p(p), _p(psum), self._nt())
        return z, p, psum

    def attention_scores(self, q: Tensor, k: Tensor, key_valid: Tensor, causal: bool) -> Tensor:
        return self.scores_softmax(q, k, key_valid, causal)[0]

    def attention_context(self, p: Tensor, psum: Tensor, v: Tensor, key_valid: Tensor) -> Tensor:
        v = v * key_valid[:, None, :, None].to(v.dtype)
        vq, amv, ev = self.quantize_rows(v.transpose(-1, -2))
        if p.shape[-1] * spec.PROB_MAX * spec.QMAX >= 1 << 24:
            raise ValueError("attention over more than 518 keys is outside the exact op set")
        acc = _c(torch.matmul(p, vq.transpose(-1, -2)))
        b, h, t, d = acc.shape
        colf = _c((amv.to(_F64) * pow2(ev, _F64)).reshape(-1))
        out = torch.empty_like(acc)
        self.lib.vq_context(_p(acc), _p(colf), _p(_c(psum)), I64(b * h), I64(t), I64(d),
                            F64(spec.ACT_MAX), _p(out), self._nt())
        return out


def available() -> bool:
    return library() is not None


# training entry points (``exact.integer`` calls them on the native backend) -------------------------
@lru_cache(maxsize=1)
def training_kernels() -> Any:
    """The native kernels with the training entry points' signatures declared (None without a
    C compiler: the NumPy and torch paths then answer, with the same integers)."""
    import ctypes

    lib = library()
    if lib is not None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.vt_qmatmul_q.argtypes = [p, p, p, p, i64, i64, p, p, p, p, i64, i64, p, ctypes.c_int]
        lib.vt_update.argtypes = [p, p, p, p, *[i64] * 9, p, p, p, ctypes.c_int]
        lib.vt_layernorm.argtypes = [p, i64, i64, p, p, p, p, p, p, ctypes.c_int]
        lib.vt_loss_grad.argtypes = [p, p, i64, i64, p, i64, p, p]
        lib.vt_layernorm_backward.argtypes = [p, i64, i64, p, p, p, p, p, p, ctypes.c_int]
    return lib


def threads(work: int, least: int = 1 << 15) -> int:
    """Threads for a native kernel of ``work`` element operations: torch's count (the cores this
    process may use), or one below ``least``, where waking a second thread costs more than it
    saves. The integers are the same on any count: rows are independent."""
    import torch

    return torch.get_num_threads() if work >= least else 1


def native_qmatmul(lib: Any, x: np.ndarray | None, w: np.ndarray | None, shift: int,
                   xq: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                   wq: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
    """``qmatmul`` in one C pass (``native.c: vt_qmatmul_q``): the same integers, or None when a
    value leaves the int64 range the kernel handles (the NumPy path then answers). ``xq``: x
    quantized already (q [M, K] as int16, scales, shifts); ``wq``: w quantized already and given
    transposed (q [K, N] as int16, scales, shifts), as frozen features are."""
    kx = (xq[0] if xq is not None else x).shape[1]  # type: ignore[union-attr]
    kw = wq[0].shape[0] if wq is not None else w.shape[1]  # type: ignore[union-attr]
    if kx != kw:
        raise ValueError(f"qmatmul: the operands contract over {kx} and {kw} values")
    xargs: tuple[int | None, ...]
    wargs: tuple[int | None, ...]
    if xq is None:
        a = np.ascontiguousarray(x, dtype=np.int64)
        (m, k), xargs = a.shape, (a.ctypes.data, None, None, None)
    else:
        xq = (np.ascontiguousarray(xq[0], dtype=np.int16), np.ascontiguousarray(xq[1], dtype=np.int64),
              np.ascontiguousarray(xq[2], dtype=np.int64))
        (m, k), xargs = xq[0].shape, (None, *(t.ctypes.data for t in xq))
    if wq is None:
        b = np.ascontiguousarray(w, dtype=np.int64)
        n, wargs = b.shape[0], (b.ctypes.data, None, None, None)
    else:
        wq = (np.ascontiguousarray(wq[0], dtype=np.int16), np.ascontiguousarray(wq[1], dtype=np.int64),
              np.ascontiguousarray(wq[2], dtype=np.int64))
        n, wargs = wq[0].shape[1], (None, *(t.ctypes.data for t in wq))
    out = np.empty((m, n), dtype=np.int64)  # a, b, xq and wq hold the arrays the pointers point into
    bad = lib.vt_qmatmul_q(*xargs, m, k, *wargs, n, shift, out.ctypes.data, threads(m * k * n))
    return None if bad else out


def native_update(lib: Any, w: np.ndarray, v: np.ndarray, sq: np.ndarray, g: np.ndarray, batch: int,
                  cfg: Any, code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``update`` in one C pass (``native.c: vt_update``) into new arrays (the second moment is
    new only under Adam; otherwise it is returned as it came, as the NumPy path does)."""
    w, v, sq, gg = (np.ascontiguousarray(t, dtype=np.int64) for t in (w, v, sq, g))
    adam = cfg.optimizer == "adam"
    wo, vo = np.empty_like(w), np.empty_like(v)
    so = np.empty_like(sq) if adam else sq
    bad = lib.vt_update(w.ctypes.data, v.ctypes.data, sq.ctypes.data, gg.ctypes.data, gg.size, batch, cfg.clip,
                        code, cfg.mu_num, cfg.b1_num, cfg.b2_num, cfg.lr_num, cfg.eps,
                        wo.ctypes.data, vo.ctypes.data, so.ctypes.data if adam else None, threads(gg.size, 1 << 12))
    if bad:
        raise ValueError("training diverged: a weight or moment passed 2**46 in fixed point (lower the learning rate)")
    return wo, vo, so

