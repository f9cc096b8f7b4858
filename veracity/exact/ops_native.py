"""Native CPU backend: ``TorchBackend`` with its elementwise work fused into C kernels.

Torch still runs the GEMMs (float32 on int8 values, exact); the quantization, requantization,
softmax, LayerNorm and table lookups that follow run as one pass per row in ``native.c``,
compiled on first use with the system C compiler and cached. Results equal ``ops_numpy`` bit
for bit (the op tests run all backends); where no compiler is found, ``make_backend`` falls
back to the plain torch backend, which gives the same bits, only slower.

The block-quantized linear of GGUF matrices (``exact.blockq``) runs wholly in C here
(``pack_blocks`` once per matrix, then ``block_linear_native``): int32 dots on the quants as
stored, no GEMM operand copies, which at one token per step is what decoding waits on.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veracity.exact import llm, spec
from veracity.exact.blockq import HALF_FRAC
from veracity.exact.ops_torch import TorchBackend, pow2
from veracity.exact.spec import QLinear, QNorm
from veracity.exact.trace import chunking, grown_digest, header_of, rows_of

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
_I64 = np.dtype(np.int64)
_SHAPE, _DTYPE, _C_ORDER = attrgetter("shape"), attrgetter("dtype"), attrgetter("flags.c_contiguous")


# packed matrices, per process (a job's backend is new, the model's weights are not): by the ids of
# the weights packed as one matrix (kept alive with it)
_PACKED: dict[tuple[int, ...], tuple[tuple[Any, ...], PackedBlocks | None]] = {}


def _packed(ws: tuple[Any, ...]) -> PackedBlocks | None:
    """Block-quantized matrices (``llm.BlockWeights``) of one width, their rows stacked and packed
    once per process; None where the kernel cannot take them (``pack_blocks``), or where some have
    minimums and others not."""
    key = tuple(id(w) for w in ws)
    hit = _PACKED.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], ws)):
        ms = [w.m for w in ws]
        packed = None
        if len({w.q.shape[1] for w in ws}) == 1 and len({m is None for m in ms}) == 1:
            packed = pack_blocks(np.concatenate([w.q for w in ws]), np.concatenate([w.d for w in ws]),
                                 None if ms[0] is None else np.concatenate(ms))
        hit = (ws, packed)
        _PACKED[key] = hit
    return hit[1]


def _np(a: Any) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else a


def _numpy_op(name: str) -> Any:
    """A Llama-family op of the int64 reference on NumPy arrays (the native backend keeps that
    family's records as arrays: at one decoded token its ops are a few hundred values each, where
    a framework's per-op dispatch costs more than the arithmetic)."""
    from veracity.exact.ops_numpy import LlamaOps

    ref = getattr(LlamaOps, name)

    def op(self: Any, *args: Any) -> np.ndarray:
        return np.ascontiguousarray(ref(self, *[_np(a) for a in args]), dtype=np.int64)

    op.__name__ = name
    op.__doc__ = ref.__doc__
    return op


class NativeBackend(TorchBackend):
    """The exact op set on CPU: torch GEMMs plus fused C kernels."""

    name = "torch"

    def __init__(self) -> None:
        super().__init__("cpu")
        lib = library()
        if lib is None:
            raise RuntimeError("native kernels unavailable (no C compiler)")
        self.lib = lib
        self._kv: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # a KV cache record: (it, its buffer)
        self._kv_used: dict[int, int] = {}  # per KV buffer: the rows its records hold

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

    qembed, wrmsnorm, rope, gqa_scores, gqa_probs, gqa_context, resid_add, silu_gate, row_max, pick = (
        _numpy_op(n) for n in ("qembed", "wrmsnorm", "rope", "gqa_scores", "gqa_probs", "gqa_context", "resid_add",
                               "silu_gate", "row_max", "pick"))

    def canonical(self, x: Any, dtype: np.dtype) -> np.ndarray:
        if isinstance(x, np.ndarray):  # a Llama-family record
            return np.ascontiguousarray(x.astype(dtype))
        return super().canonical(x, dtype)

    def grown_digests(self, arrays: list[np.ndarray], dtypes: list[np.dtype],
                      grown: list[Any]) -> list[tuple[bytes, Any]]:
        """``trace.grown_digests``: those of one shape and dtype held as int64 in C order (a step's KV
        caches) in one call of ``native.c`` each, the rest (all, without the CPU's SHA extensions)
        by ``trace.grown_digest``."""
        if arrays and len(set(dtypes)) == 1 and len(set(map(_SHAPE, arrays))) == 1 and all(
                map(_C_ORDER, arrays)) and all(map(_I64.__eq__, map(_DTYPE, arrays))):  # a step's caches: one call
            got = grown_digests(arrays, dtypes[0], grown, self._nt())
            if got is not None:
                return got
        out: list[tuple[bytes, Any] | None] = [None] * len(arrays)
        groups: dict[tuple[tuple[int, ...], np.dtype], list[int]] = {}
        for i, a in enumerate(arrays):
            if a.dtype == np.int64 and a.flags.c_contiguous:
                groups.setdefault((a.shape, dtypes[i]), []).append(i)
        for (_, dtype), idx in groups.items():
            got = grown_digests([arrays[i] for i in idx], dtype, [grown[i] for i in idx], self._nt())
            for i, r in zip(idx, got or ()):
                out[i] = r
        return [r if r is not None else grown_digest(a, dtype, None if isinstance(g, Growth) else g)
                for r, a, dtype, g in zip(out, arrays, dtypes, grown)]

    def transpose_last(self, x: Any) -> Any:
        return np.swapaxes(x, -1, -2) if isinstance(x, np.ndarray) else super().transpose_last(x)

    def kv_append(self, cache: Any, new: Any) -> Any:  # a NumPy array
        """The cache's rows then the new ones, as a view of a buffer grown in place (a cache record
        is the buffer's first S rows, which later appends never change), so a decoded token does
        not copy the whole cache of every block."""
        cache, new = _np(cache), _np(new)
        s, t = cache.shape[1], new.shape[1]
        hit = self._kv.get(id(cache))
        if hit is not None and hit[0] is cache and self._kv_used.get(id(hit[1])) == s and s + t <= hit[1].shape[1]:
            buf = hit[1]
        else:
            buf = np.empty((1, max(2 * (s + t), 64), cache.shape[2]), dtype=np.int64)
            buf[:, :s] = cache
        buf[:, s:s + t] = new
        if len(self._kv) > 4096:  # views of finished sequences: forget them
            self._kv.clear()
            self._kv_used.clear()
        view = buf[:, :s + t]
        self._kv[id(view)] = (view, buf)
        self._kv_used[id(buf)] = s + t
        return view

    def block_linear(self, x: Any, w: Any, frac_out: int, out_max: int) -> Any:  # a NumPy array
        """The Llama family's block-quantized linear in one C pass (the matrix packed once)."""
        x2 = np.asarray(_np(x), dtype=np.int64).reshape(-1, x.shape[-1])
        y = block_linear(x2, w.q, w.d, w.m, spec.ACT_FRAC, frac_out, out_max, _packed((w,)))
        return llm.linear_record(y, out_max)

    def block_linears(self, x: Any, ws: tuple[Any, ...], frac_out: int, out_max: int) -> list[np.ndarray]:
        """Block linears of one input as one matrix (their rows stacked, packed once): one call and
        one quantization of x instead of one per matrix; the same integers as each on its own."""
        packed = _packed(ws)
        x2 = np.asarray(_np(x), dtype=np.int64).reshape(-1, x.shape[-1])
        wide = any(w.q.shape[0] > llm.LOGIT_ROW for w in ws)
        y = None if packed is None or wide else block_linear_native(packed, x2, spec.ACT_FRAC, frac_out, out_max)
        if y is None:
            return [self.block_linear(x, w, frac_out, out_max) for w in ws]
        ends = np.cumsum([w.q.shape[0] for w in ws])
        return [np.ascontiguousarray(part).reshape(1, x2.shape[0], -1) for part in np.split(y, ends[:-1], axis=1)]

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


# the block-quantized linear (``exact.blockq``) ------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PackedBlocks:
    """A block-quantized matrix [n, k] packed once for ``native.c: bq_linear`` (the layout is
    described there): per group of 16 rows and block of 32 columns one record of the quants, 4-bit
    ones as nibbles (Q4_0's stored + 8, its -8 d folded into ``m``), 8-bit ones as int8, then the
    scales as int32."""

    rec: np.ndarray  # uint8, the records
    n: int
    k: int
    kind: int  # 0: 4-bit, 1: 8-bit
    has_m: bool
    scale_dot: bool  # weight by (a dot) d, else by dot (a d): the pair that fits int32
    ptr: int = field(init=False, repr=False)  # the records' address, once (``ndarray.ctypes`` costs a microsecond)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ptr", self.rec.ctypes.data)


@lru_cache(maxsize=1)
def _bq_lib() -> Any:
    lib = library()
    if lib is not None:
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.bq_vector_words.restype = i32
        lib.bq_linear.argtypes = [p, i64, i64, p, i64, i32, i32, i32, i64, i64, p, i32]
        lib.bq_linear.restype = i32
    return lib


_ARENA: dict[str, Any] = {"chunk": np.empty(0, dtype=np.uint8), "used": 0, "base": 0}
_ARENA_LOCK = threading.Lock()
ARENA_CHUNK = 32 << 20


def _arena(nbytes: int) -> np.ndarray:
    """``nbytes`` of 64-byte-aligned zeros cut from a shared 32 MB array. NumPy backs arrays of 4 MB
    and more with huge pages, so a model's many small matrices stream from memory without a TLB
    miss and a prefetch restart every 4 KB page (1.3x faster for SmolLM2's at one token). A chunk
    lives while any matrix cut from it does; a request over a quarter chunk gets its own array."""
    if nbytes > ARENA_CHUNK // 4:
        return np.zeros(nbytes, dtype=np.uint8)
    with _ARENA_LOCK:
        start = _ARENA["used"] + (-(_ARENA["base"] + _ARENA["used"]) % 64)
        if start + nbytes > _ARENA["chunk"].size:
            _ARENA["chunk"] = np.zeros(ARENA_CHUNK, dtype=np.uint8)
            _ARENA["base"] = _ARENA["chunk"].ctypes.data
            start = -_ARENA["base"] % 64
        _ARENA["used"] = start + nbytes
        return _ARENA["chunk"][start:start + nbytes]


def pack_blocks(q: np.ndarray, d: np.ndarray, m: np.ndarray | None) -> PackedBlocks | None:
    """``q`` int8 [N, K], ``d``, ``m`` int64 [N, K/32] as the kernel reads them, or None where it
    cannot (no C compiler, K not a multiple of 32, scales beyond int32, or 8-bit quants beyond 32
    in magnitude with |d| >= 2**25, whose products would pass int32)."""
    n, k = q.shape
    if _bq_lib() is None or k % 32 or n == 0:
        return None
    lo, hi = int(q.min()), int(q.max())
    d = np.asarray(d, dtype=np.int64)
    m = None if m is None else np.asarray(m, dtype=np.int64)
    nibble = (0 <= lo and hi <= 15) or (-8 <= lo and hi <= 7)
    offset = 8 if nibble and lo < 0 else 0
    if offset:
        m = (0 if m is None else m) - 8 * d  # d (u - 8) + m = d u + (m - 8 d), u = q + 8 in 0..15
    scale_dot = max(-lo, hi) <= 32  # |a dot| <= 64 * 32 * 32 * 32767 < 2**31
    lim = 1 << 31
    if not scale_dot and int(np.abs(d).max(initial=0)) * 64 >= lim:
        return None
    if any(v is not None and v.size and int(np.abs(v).max()) >= lim for v in (d, m)):
        return None
    if m is not None and not m.any():
        m = None
    g, nb = -(-n // 16), k // 32
    qp = np.zeros((g * 16, k), dtype=np.int16)
    qp[:n] = q.astype(np.int16) + offset
    u = qp.reshape(g, 16, nb, 16, 2).transpose(0, 2, 3, 1, 4)  # [group, block, pair, row, half]
    if nibble:
        vw = _bq_lib().bq_vector_words()  # the kernel's vector width: 16 words (AVX2) or 32 (AVX-512)
        u = u.reshape(g, nb, 512 // (4 * vw), 4, vw).astype(np.uint16)  # [.., chunk, vector, word]
        w = (u[:, :, :, 0] | u[:, :, :, 1] << 4 | u[:, :, :, 2] << 8 | u[:, :, :, 3] << 12).astype("<u2")
    else:
        w = u.astype(np.int8)
    parts = [np.ascontiguousarray(w).view(np.uint8).reshape(g, nb, -1)]
    for s in (d, m):
        if s is not None:
            sp = np.zeros((g * 16, nb), dtype="<i4")
            sp[:n] = s
            parts.append(np.ascontiguousarray(sp.reshape(g, 16, nb).transpose(0, 2, 1)).view(np.uint8))
    rs = sum(p.shape[-1] for p in parts)
    rec = _arena(g * nb * rs)
    rec.reshape(g, nb, rs)[...] = np.concatenate(parts, axis=-1)
    return PackedBlocks(rec, n, k, 0 if nibble else 1, m is not None, scale_dot)


def _addr(a: np.ndarray) -> int:
    """The address of a contiguous array's data (a third of ``a.ctypes.data``'s cost where writable)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))  # type: ignore[arg-type]
    except (TypeError, ValueError):  # read-only, or empty
        return a.ctypes.data


@lru_cache(maxsize=1)
def _vh_lib() -> Any:
    lib = library()
    if lib is not None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.vh_growth_bytes.restype = i64
        lib.vh_grown_digests.argtypes = [i64, p, i64, i64, i64, ctypes.c_char_p, i64, p, p, ctypes.c_int]
        lib.vh_grown_digests.restype = ctypes.c_int
    return lib


class Growth(tuple[Any, ...]):
    """A grown tensor's hashing state as ``native.c`` keeps it (``vh_growth``; ``trace.Growth`` in C):
    (the array holding it, its address); made by ``tuple``'s own constructor (``grown_digests``
    makes a step's in one pass)."""

    __slots__ = ()


def grown_digests(arrays: list[np.ndarray], dtype: np.dtype, grown: list[Any],
                  nt: ctypes.c_int | int = 1) -> list[tuple[bytes, Growth]] | None:
    """``trace.grown_digest`` of tensors of one shape held as int64 in C order, as ``dtype``, in one
    call of ``native.c: vh_grown_digests`` (``nt`` threads): each one's digest and growth, or None
    where the CPU lacks the SHA extensions. A growth that is not a ``Growth`` (hashlib's) counts as
    none: that tensor is hashed whole."""
    lib = _vh_lib()
    n, shape = len(arrays), arrays[0].shape or (1,)
    size = lib.vh_growth_bytes()
    items = np.empty((n, 3), dtype=np.int64)
    try:
        items[:, 0] = list(map(ctypes.addressof, map(ctypes.c_char.from_buffer, arrays)))  # type: ignore[arg-type]  # _addr of each
    except (TypeError, ValueError):  # one read-only, or empty
        items[:, 0] = list(map(_addr, arrays))
    items[:, 1] = rows_of(shape)
    items[:, 2] = [g[1] if type(g) is Growth else 0 for g in grown]
    states = np.empty((n, size), dtype=np.uint8)
    digests = np.empty((n, 32), dtype=np.uint8)
    head, base = header_of(shape, dtype), _addr(states)
    if lib.vh_grown_digests(n, _addr(items), shape[-1], dtype.itemsize, chunking(shape, dtype.itemsize)[1],
                            head, len(head), base, _addr(digests), nt):
        return None
    raw = digests.tobytes()
    return list(zip([raw[i:i + 32] for i in range(0, 32 * n, 32)],
                    map(Growth, zip(repeat(states), range(base, base + n * size, size)))))


def block_linear_native(p: PackedBlocks, x: np.ndarray, frac_in: int, frac_out: int, out_max: int,
                        nt: int | None = None) -> np.ndarray | None:
    """``blockq.block_linear`` of x [T, K] (int64) by ``native.c: bq_linear``: the same integers,
    or None for an input outside the kernel's range (|x| >= 2**36, or a rounding shift outside
    -63..46), which NumPy then answers. ``nt``: threads (default ``threads`` of the work)."""
    x = np.ascontiguousarray(x, dtype=np.int64)
    t, k = x.shape
    if k != p.k:
        raise ValueError(f"block_linear: x has {k} columns, the matrix {p.k}")
    y = np.empty((t, p.n), dtype=np.int64)
    rc = _bq_lib().bq_linear(_addr(x), t, k, p.ptr, p.n, p.kind, p.has_m, p.scale_dot,
                             HALF_FRAC + frac_in - frac_out, out_max, _addr(y),
                             threads(t * p.n * k, 1 << 18) if nt is None else nt)
    if rc == 2:
        raise MemoryError("bq_linear: out of memory")
    return None if rc else y


def block_linear(x: np.ndarray, q: np.ndarray, d: np.ndarray, m: np.ndarray | None, frac_in: int, frac_out: int,
                 out_max: int, packed: PackedBlocks | None = None, nt: int | None = None) -> np.ndarray:
    """``blockq.block_linear`` by the kernel (``packed``: the matrix from ``pack_blocks``, or None to
    pack it now); the int64 reference answers where the kernel cannot take the matrix or input."""
    from veracity.exact import blockq

    p = packed if packed is not None else pack_blocks(q, d, m)
    y = None if p is None else block_linear_native(p, x, frac_in, frac_out, out_max, nt)
    return y if y is not None else blockq.block_linear(np.asarray(x, dtype=np.int64), q, d, m, frac_in, frac_out,
                                                       out_max)
