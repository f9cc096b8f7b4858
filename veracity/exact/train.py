"""Exact training: every value an optimizer step computes is an integer, so a checkpoint's hash is
the same on any machine, thread count or backend, and a training step can be re-executed and
disputed like an inference op.

The digits MLP's step (``mlp_step``), all in integers:

* **Master weights and optimizer state** are int64 fixed point (``W_FRAC`` fractional bits).
* **Forward**: each layer's master weights are quantized per output channel to int8 (the
  inference op set's per-row quantizer: a max, a 12-bit rescale and a reciprocal, all exact),
  activations per row (per sample); the GEMM runs on the int8 operands (``gemm``: int64 in
  NumPy, or float32 in torch, exact because every partial sum is an integer below 2**24 for
  contractions up to 1040), and the integer accumulator is rescaled to ``ACT_FRAC`` by a rounding
  division; ReLU; logits.
* **Loss gradient**: softmax cross-entropy, with exp from a table (``exp_table``, computed with
  mpmath): ``dz = p / sum(p) - onehot`` in ``ACT_FRAC``.
* **Backward**: ``dW = dz^T x`` (contracting over the batch, operands quantized per row of the
  transposes), ``dx = dz W`` (contracting over the outputs, the weights quantized per input
  column), the ReLU mask, bias gradients as exact integer sums; each gradient is clipped
  elementwise in integers.
* **Update**: SGD (``mu_num = 0``), SGD with momentum, ``v = v * mu_num >> MU_SHIFT + g;
  W -= v * lr_num >> LR_SHIFT``, or Adam, ``m = b1 m + (1 - b1) g; s = b2 s + (1 - b2) g^2;
  W -= lr m / (isqrt(s) + eps)`` with an integer square root (no bias correction: a warm start).
* **Data order**: the epoch's permutation from a PCG64 generator seeded by (seed, epoch), which
  NumPy specifies bit for bit on every platform.

A checkpoint is the state's tensors in canonical form (``checkpoint_bytes``); its hash
(``checkpoint_hash``) is what a training job commits. A job of N steps split into work units of K
steps, each starting from the previous unit's checkpoint, ends at the same hash as the unsplit
job, because the state carries everything a step reads (the step counter included).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from veracity.exact import spec
from veracity.exact.trace import tensor_digest

W_FRAC = 20  # master weights and optimizer state: value * 2**20
ACT_FRAC = spec.ACT_FRAC  # activations and their gradients: value * 2**12
PIX_FRAC = 4  # pixels 0..16 are value * 16
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


def _isqrt(a: np.ndarray) -> np.ndarray:
    from veracity.exact.ops_numpy import _isqrt as isqrt

    return isqrt(np.asarray(a, dtype=np.int64))


def _round_shift(num: np.ndarray, den: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
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
    """``_round_shift`` in Python integers, for values whose intermediates exceed int64: the same
    result as the referee's int256 arithmetic, or a clear error if the result itself does not fit."""
    o = lambda a: np.asarray(a).astype(object)  # noqa: E731
    n2 = (o(num) << o(pos)) * 2
    d2 = (o(den) << o(neg)) * 2
    out = (n2 + d2 // 2) // d2
    if any(abs(int(v)) >= 1 << 62 for v in np.asarray(out).ravel()):
        raise ValueError("training diverged: a value no longer fits exact int64 arithmetic (lower the learning rate)")
    return np.asarray(out).astype(np.int64)


def _fast(backend: str) -> Any:
    """The native kernels, where the backend takes them: "torch" (as in inference, fused C kernels
    when a C compiler is present) and "native"; "torch-eager", "cuda" and "numpy" never do."""
    return _native() if backend in ("torch", "native") else None


@lru_cache(maxsize=1)
def _native() -> Any:
    """The native kernels with the training entry points' signatures declared (None without a
    C compiler: the NumPy and torch paths then answer, with the same integers)."""
    import ctypes

    from veracity.exact.ops_native import library

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


def _native_qmatmul(lib: Any, x: np.ndarray | None, w: np.ndarray | None, shift: int,
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
    if xq is None:
        a = np.ascontiguousarray(x, dtype=np.int64)
        (m, k), xargs = a.shape, (a.ctypes.data, None, None, None)
    else:
        xq = (np.ascontiguousarray(xq[0], dtype=np.int16), *(np.ascontiguousarray(t, dtype=np.int64) for t in xq[1:]))
        (m, k), xargs = xq[0].shape, (None, *(t.ctypes.data for t in xq))
    if wq is None:
        b = np.ascontiguousarray(w, dtype=np.int64)
        n, wargs = b.shape[0], (b.ctypes.data, None, None, None)
    else:
        wq = (np.ascontiguousarray(wq[0], dtype=np.int16), *(np.ascontiguousarray(t, dtype=np.int64) for t in wq[1:]))
        n, wargs = wq[0].shape[1], (None, *(t.ctypes.data for t in wq))
    out = np.empty((m, n), dtype=np.int64)  # a, b, xq and wq hold the arrays the pointers point into
    bad = lib.vt_qmatmul_q(*xargs, m, k, *wargs, n, shift, out.ctypes.data, threads(m * k * n))
    return None if bad else out


def _native_update(lib: Any, w: np.ndarray, v: np.ndarray, sq: np.ndarray, g: np.ndarray, batch: int,
                   cfg: SGDConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``update`` in one C pass (``native.c: vt_update``) into new arrays (the second moment is
    new only under Adam; otherwise it is returned as it came, as the NumPy path does)."""
    w, v, sq, gg = (np.ascontiguousarray(t, dtype=np.int64) for t in (w, v, sq, g))
    adam = cfg.optimizer == "adam"
    wo, vo = np.empty_like(w), np.empty_like(v)
    so = np.empty_like(sq) if adam else sq
    bad = lib.vt_update(w.ctypes.data, v.ctypes.data, sq.ctypes.data, gg.ctypes.data, gg.size, batch, cfg.clip,
                        OPT_CODES[cfg.optimizer], cfg.mu_num, cfg.b1_num, cfg.b2_num, cfg.lr_num, cfg.eps,
                        wo.ctypes.data, vo.ctypes.data, so.ctypes.data if adam else None, threads(gg.size, 1 << 12))
    if bad:
        raise ValueError("training diverged: a weight or moment passed 2**46 in fixed point (lower the learning rate)")
    return wo, vo, so


def qmatmul(x: np.ndarray | None, fx: int, w: np.ndarray, fw: int, fout: int, backend: str,
            xq: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """x @ w.T (x [M, K] with ``fx`` fractional bits, w [N, K] with ``fw``) in ``fout`` bits: both
    quantized per row to int8, one exact GEMM, then one rounding rescale per element. ``xq``: x's
    quantization (``quantize_rows``), when x is frozen and it was computed once."""
    if (lib := _fast(backend)) is not None:
        out = _native_qmatmul(lib, x, w, fout - fx - fw, xq=xq)
        if out is not None:
            return out
    qx, ax, ex = xq if xq is not None else quantize_rows(x)
    qw, aw, ew = quantize_rows(w)
    acc = gemm(qx, qw, backend)
    scale = ax * aw.T  # < 2**24
    return _round_shift(acc * scale, spec.QMAX * spec.QMAX, ex + ew.T + fout - fx - fw)


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


@dataclass
class MLPState:
    """Master weights and biases (``W_FRAC``), momenta, and the step counter."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    vw: list[np.ndarray] = field(default_factory=list)  # momentum, or Adam's first moment
    vb: list[np.ndarray] = field(default_factory=list)
    sw: list[np.ndarray] = field(default_factory=list)  # Adam's second moment (W_FRAC * 2 bits)
    sb: list[np.ndarray] = field(default_factory=list)
    step: int = 0

    @classmethod
    def init(cls, sizes: tuple[int, ...] = (64, 128, 64, 10), seed: int = 0) -> "MLPState":
        """He-uniform weights drawn from a seeded PCG64 (bit for bit on every platform), zero biases."""
        rng = np.random.Generator(np.random.PCG64(seed))
        ws = [rng.integers(-(1 << W_FRAC), 1 << W_FRAC, (b, a)) * int(np.sqrt(6 / a) * 1024) >> 10
              for a, b in zip(sizes, sizes[1:])]
        bs = [np.zeros(b, dtype=np.int64) for b in sizes[1:]]
        zeros = lambda ts: [np.zeros_like(t) for t in ts]  # noqa: E731
        return cls(ws, bs, zeros(ws), zeros(bs), zeros(ws), zeros(bs), 0)

    def tensors(self) -> list[np.ndarray]:
        return [*self.weights, *self.biases, *self.vw, *self.vb, *self.sw, *self.sb,
                np.array([self.step], dtype=np.int64)]

    def copy(self) -> "MLPState":
        cp = lambda ts: [t.copy() for t in ts]  # noqa: E731
        return replace(self, weights=cp(self.weights), biases=cp(self.biases), vw=cp(self.vw), vb=cp(self.vb),
                       sw=cp(self.sw), sb=cp(self.sb))


CHECKPOINT_MAGIC = b"VRCKPT1\n"


def pack_tensors(tensors: list[np.ndarray]) -> bytes:
    """Tensors as a checkpoint blob: the magic, the tensor count, then each tensor's rank, dims and
    little-endian int64 values. Nothing else (no timestamps, no container metadata), so the same
    state gives the same bytes, and the same CID, everywhere."""
    ts = [np.ascontiguousarray(t, dtype="<i8") for t in tensors]
    parts = [CHECKPOINT_MAGIC, struct.pack("<I", len(ts))]
    for t in ts:
        parts += [struct.pack(f"<B{t.ndim}I", t.ndim, *t.shape), t.tobytes()]
    return b"".join(parts)


def unpack_tensors(blob: bytes) -> list[np.ndarray]:
    """The tensors of a checkpoint blob; ValueError (what is wrong) for bytes that are not one."""
    if not blob.startswith(CHECKPOINT_MAGIC):
        raise ValueError("not a Veracity checkpoint (bad magic)")
    at = len(CHECKPOINT_MAGIC)
    try:
        (count,) = struct.unpack_from("<I", blob, at)
        at += 4
        ts = []
        for _ in range(count):
            (ndim,) = struct.unpack_from("<B", blob, at)
            dims = struct.unpack_from(f"<{ndim}I", blob, at + 1)
            at += 1 + 4 * ndim
            size = 8 * int(np.prod(dims, dtype=np.int64))
            if at + size > len(blob):
                raise ValueError("truncated")
            ts.append(np.frombuffer(blob, dtype="<i8", count=size // 8, offset=at).reshape(dims).astype(np.int64))
            at += size
    except struct.error:
        raise ValueError("truncated") from None
    if at != len(blob):
        raise ValueError("trailing bytes after the last tensor")
    return ts


def checkpoint_bytes(state: MLPState) -> bytes:
    """The state as a blob (a checkpoint's CID is this blob's; ``pack_tensors``)."""
    return pack_tensors(state.tensors())


def load_checkpoint(blob: bytes) -> MLPState:
    """The MLP state a checkpoint blob holds; ValueError (what is wrong) for bytes that are not one."""
    ts = unpack_tensors(blob)
    if len(ts) % 6 != 1 or ts[-1].shape != (1,):
        raise ValueError("malformed: not six groups of state tensors and a step counter")
    n = (len(ts) - 1) // 6
    state = MLPState(*(ts[k * n:(k + 1) * n] for k in range(6)), step=int(ts[-1][0]))
    init = MLPState.init()
    if [t.shape for t in state.tensors()] != [t.shape for t in init.tensors()]:
        raise ValueError("not the digits MLP's shapes (64-128-64-10)")
    if any(int(np.abs(t).max(initial=0)) >= 1 << 44 for t in state.tensors()[:-1]) or \
            any(int(t.min(initial=0)) < 0 for t in (*state.sw, *state.sb)) or not 0 <= state.step < 1 << 32:
        raise ValueError("values out of range: |weights and moments| < 2**44, second moments >= 0")
    return state


def checkpoint_hash(state: MLPState) -> bytes:
    """sha256 over the tensor digests of the state (independent of the blob's container)."""
    return hashlib.sha256(b"".join(tensor_digest(t) for t in state.tensors())).digest()


def forward(state: MLPState, pixels: np.ndarray, backend: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Activations of every layer's input (``ACT_FRAC``; the pixels in ``PIX_FRAC``) and the logits."""
    acts = [np.asarray(pixels, dtype=np.int64)]
    frac = PIX_FRAC
    h = acts[0]
    for i, (w, b) in enumerate(zip(state.weights, state.biases)):
        z = qmatmul(h, frac, w, W_FRAC, ACT_FRAC, backend) + (b >> (W_FRAC - ACT_FRAC))
        frac = ACT_FRAC
        if i < len(state.weights) - 1:
            h = np.maximum(z, 0)
            acts.append(h)
        else:
            return acts, z
    raise AssertionError("unreachable")


def exp_rows(z: np.ndarray) -> np.ndarray:
    """The softmax's numerators from the exp table: ``table[min(((max_r - z) * LOG2E) >> 20, size - 1)]``."""
    u = ((z.max(axis=1, keepdims=True) - z) * LOG2E) >> (ACT_FRAC + 16 - EXP_FRAC)
    return exp_table()[np.minimum(u, EXP_SIZE - 1)]


def loss_grad(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d(cross-entropy)/d(logits) = p / sum(p) - onehot, in ``ACT_FRAC``."""
    g = _round_shift(p, p.sum(axis=1, keepdims=True), ACT_FRAC)
    g[np.arange(len(labels)), labels] -= 1 << ACT_FRAC
    return g


def loss_pair(z: np.ndarray, labels: np.ndarray, backend: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """(``exp_rows(z)``, ``loss_grad`` of them): in one C pass on the native backend, same integers."""
    if (lib := _fast(backend)) is not None:
        zz = np.ascontiguousarray(z, dtype=np.int64)
        yy = np.ascontiguousarray(labels, dtype=np.int64)
        p, g = np.empty_like(zz), np.empty_like(zz)
        table = exp_table()
        lib.vt_loss_grad(zz.ctypes.data, yy.ctypes.data, zz.shape[0], zz.shape[1], table.ctypes.data, table.size,
                         p.ctypes.data, g.ctypes.data)
        return p, g
    p = exp_rows(z)
    return p, loss_grad(p, labels)


class Tape:
    """A training step's ops as trace records (``rec``: kind, name, value, input records, and the
    parameters the referee reads), each with the descriptor a dispute judges it by. ``at`` maps a
    state tensor's name to the record that holds its current value. The null tape (``Tape(False)``)
    records nothing, so an untraced step pays nothing."""

    def __init__(self, on: bool = True, keep: set[int] | None = None,
                 tamper: Callable[[int, str, np.ndarray], None] | None = None) -> None:
        self.on = on
        self.tamper = tamper  # an adversary's hook (tests, the demo): alters a value in place
        self.records: list[Any] = []  # TraceRecord
        self.descs: list[Any] = []  # program.OpDesc
        self.at: dict[str, int] = {}
        self.keep = keep if keep is not None else set()
        self.kept: dict[int, np.ndarray] = {}

    def rec(self, kind: int, step: int, op: str, x: np.ndarray, inputs: tuple[int, ...] = (),
            consts: tuple[bytes, ...] = (), params: tuple[int, ...] = ()) -> int:
        if not self.on:
            return -1
        from veracity.exact.program import OpDesc, dtype_code
        from veracity.exact.trace import TraceRecord

        i = len(self.records)
        if self.tamper is not None:
            self.tamper(i, op, x)  # in place, so every later op reads the altered value
        t = np.ascontiguousarray(x, dtype=np.int64)
        self.records.append(TraceRecord(step, op, tensor_digest(t)))
        self.descs.append(OpDesc(kind, step, op, dtype_code(t.dtype), tuple(t.shape), inputs, consts, params))
        if i in self.keep:
            self.kept[i] = t.copy()
        return i

    def input(self, step: int, op: str, x: np.ndarray) -> int:
        from veracity.exact.program import INPUT

        return self.rec(INPUT, step, op, x, consts=(tensor_digest(np.asarray(x, dtype=np.int64)),))

    def start(self, state: "MLPState") -> None:
        """The state a job starts from, as input records (the client computes their digests from
        the initialisation seed or the start checkpoint)."""
        for name, t in state_tensors(state):
            self.at[name] = self.input(state.step, "start." + name.removeprefix("state."), t)


def state_tensors(state: "MLPState") -> list[tuple[str, np.ndarray]]:
    """The state's tensors by record name: ``state.w0``, ``state.b0``, ``state.m0`` (the weights'
    momentum or first moment), ``state.mb0``, ``state.s0`` (second moment), ``state.sb0``, ..."""
    groups = (("w", state.weights), ("b", state.biases), ("m", state.vw), ("mb", state.vb), ("s", state.sw),
              ("sb", state.sb))
    return [(f"state.{name}{i}", t) for name, ts in groups for i, t in enumerate(ts)]


OPT_CODES = {"sgd": 1, "momentum": 2, "adam": 3}


def update_params(cfg: SGDConfig, batch: int) -> dict[str, tuple[int, int]]:
    """The two parameters each update record's descriptor carries (the contract reads two)."""
    code = OPT_CODES[cfg.optimizer]
    grad = batch | cfg.clip << 16  # the batch mean and the clip, applied to the summed gradient
    first = cfg.b1_num if cfg.optimizer == "adam" else cfg.mu_num
    return {"moment": (code | first << 8, grad), "second": (code | cfg.b2_num << 8, grad),
            "weight": (code | cfg.lr_num << 8, cfg.eps)}


NULL_TAPE = Tape(False)


def mlp_step(state: MLPState, pixels: np.ndarray, labels: np.ndarray, cfg: SGDConfig, backend: str = "numpy",
             tape: Tape = NULL_TAPE) -> MLPState:
    """One optimizer step on a batch (a new state; ``state`` is not changed). With a tape, every
    op is a record: the batch (inputs), each layer's GEMM and ReLU, the exp rows and the loss
    gradient, the transposes the backward GEMMs contract over, the weight and bias gradients, the
    ReLU mask, and each state tensor's update (its moment, second moment, then the tensor)."""
    from veracity.exact import program as P

    s = replace(state, weights=list(state.weights), biases=list(state.biases), vw=list(state.vw),
                vb=list(state.vb), sw=list(state.sw), sb=list(state.sb))  # updates make new arrays
    step, n, t = s.step + 1, len(s.weights), tape
    on = t.on  # an untraced step builds no record arguments
    ix = t.input(step, "batch.x", pixels) if on else -1
    iy = t.input(step, "batch.y", labels) if on else -1
    acts, ids = [np.asarray(pixels, dtype=np.int64)], [ix]
    frac, h, ih = PIX_FRAC, acts[0], ix
    for i, (w, b) in enumerate(zip(s.weights, s.biases)):  # forward
        z = qmatmul(h, frac, w, W_FRAC, ACT_FRAC, backend) + (b >> (W_FRAC - ACT_FRAC))
        iz = t.rec(P.QMM, step, f"fwd.{i}.z", z, (ih, t.at.get(f"state.w{i}", -1), t.at.get(f"state.b{i}", -1)),
                   params=(ACT_FRAC - frac - W_FRAC, W_FRAC - ACT_FRAC)) if on else -1
        if i < n - 1:
            h = np.maximum(z, 0)
            ih = t.rec(P.RELU, step, f"fwd.{i}.relu", h, (iz,)) if on else -1
            acts.append(h)
            ids.append(ih)
            frac = ACT_FRAC
    p, dz = loss_pair(z, labels, backend)  # ACT_FRAC; the mean over the batch is folded into the update
    ip = t.rec(P.EXP_ROWS, step, "loss.exp", p, (iz,), consts=(exp_table_digest(),)) if on else -1
    idz = t.rec(P.LOSS_GRAD, step, "loss.dz", dz, (ip, iy)) if on else -1
    ups = update_params(cfg, len(labels)) if on else {}
    for i in reversed(range(n)):  # backward
        x, fx = acts[i], PIX_FRAC if i == 0 else ACT_FRAC
        idzt = t.rec(P.TRANSPOSE, step, f"bwd.{i}.dz_t", dz.T, (idz,)) if on else -1
        ixt = t.rec(P.TRANSPOSE, step, f"bwd.{i}.x_t", x.T, (ids[i],)) if on else -1
        gw = qmatmul(dz.T, ACT_FRAC, x.T, fx, W_FRAC, backend)  # [out, in]: contraction over the batch
        igw = t.rec(P.QMM, step, f"bwd.{i}.gw", gw, (idzt, ixt),
                    params=(W_FRAC - ACT_FRAC - fx, -1)) if on else -1
        gb = dz.sum(axis=0) << (W_FRAC - ACT_FRAC)
        igb = t.rec(P.ROW_SUM, step, f"bwd.{i}.gb", gb, (idzt,), params=(W_FRAC - ACT_FRAC,)) if on else -1
        if i > 0:
            wt = s.weights[i].T
            iwt = t.rec(P.TRANSPOSE, step, f"bwd.{i}.w_t", wt, (t.at.get(f"state.w{i}", -1),)) if on else -1
            dx = qmatmul(dz, ACT_FRAC, wt, W_FRAC, ACT_FRAC, backend)  # over the outputs
            idx = t.rec(P.QMM, step, f"bwd.{i}.dx", dx, (idz, iwt), params=(-W_FRAC, -1)) if on else -1
            dz = np.where(acts[i] > 0, dx, 0)
            idz = t.rec(P.RELU_MASK, step, f"bwd.{i}.dz", dz, (idx, ids[i])) if on else -1
        for (wn, mn, sn), (w, v, sq), g, ig in ((("w", "m", "s"), (s.weights, s.vw, s.sw), gw, igw),
                                                (("b", "mb", "sb"), (s.biases, s.vb, s.sb), gb, igb)):
            w[i], v[i], sq[i] = update(w[i], v[i], sq[i], g, len(labels), cfg, backend)
            if on:
                m_at = t.rec(P.MOMENT, step, f"state.{mn}{i}", v[i], (t.at[f"state.{mn}{i}"], ig),
                             params=ups["moment"])
                s_at = t.rec(P.SECOND, step, f"state.{sn}{i}", sq[i], (t.at[f"state.{sn}{i}"], ig),
                             params=ups["second"])
                w_at = t.rec(P.WEIGHT, step, f"state.{wn}{i}", w[i], (t.at[f"state.{wn}{i}"], m_at, s_at),
                             params=ups["weight"])
                t.at.update({f"state.{mn}{i}": m_at, f"state.{sn}{i}": s_at, f"state.{wn}{i}": w_at})
    s.step += 1
    return s


def update(w: np.ndarray, v: np.ndarray, sq: np.ndarray, g: np.ndarray, batch: int,
           cfg: SGDConfig, backend: str = "numpy") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One optimizer update of a tensor from its summed gradient ``g`` (all in ``W_FRAC``): the
    batch mean, the clip, then SGD, momentum or Adam. Returns the new (weights, moment, second
    moment). The native backend runs it in one C pass (``native.c: vt_update``), same integers."""
    if (lib := _fast(backend)) is not None:
        return _native_update(lib, w, v, sq, g, batch, cfg)
    g = np.clip(_round_shift(g, batch, 0), -cfg.clip, cfg.clip)
    if max(int(np.abs(w).max(initial=0)), int(np.abs(v).max(initial=0)), int(np.abs(sq).max(initial=0))) >= 1 << 46:
        raise ValueError("training diverged: a weight or moment passed 2**46 in fixed point (lower the learning rate)")
    if cfg.optimizer == "adam":
        v = (v * cfg.b1_num + g * ((1 << MU_SHIFT) - cfg.b1_num)) >> MU_SHIFT
        sq = (sq * cfg.b2_num + g * g * ((1 << MU_SHIFT) - cfg.b2_num)) >> MU_SHIFT
        return w - _round_shift(v * cfg.lr_num, (_isqrt(sq) + cfg.eps) << LR_SHIFT, W_FRAC), v, sq
    v = ((v * cfg.mu_num) >> MU_SHIFT) + g
    return w - ((v * cfg.lr_num) >> LR_SHIFT), v, sq


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


def train(state: MLPState, pixels: np.ndarray, labels: np.ndarray, steps: int, cfg: SGDConfig,
          backend: str = "numpy", progress: Any = None, tape: Tape = NULL_TAPE) -> MLPState:
    """``steps`` steps from ``state`` (which carries its step counter, so a work unit resumes)."""
    for _ in range(steps):
        idx = batch_indices(len(labels), state.step, cfg)
        state = mlp_step(state, pixels[idx], labels[idx], cfg, backend, tape)
        if progress:
            progress(state.step)
    return state


def predict(state: MLPState, pixels: np.ndarray, backend: str = "numpy") -> np.ndarray:
    return np.argmax(forward(state, pixels, backend)[1], axis=1)


def float_update(p: Any, v: Any, sq: Any, g: Any, cfg: SGDConfig) -> None:
    """``update``'s optimizer in float32 torch, in place (the float references' step): the clip,
    then SGD with momentum, or Adam without bias correction, with the same constants."""
    g = g.clamp(-cfg.clip / (1 << W_FRAC), cfg.clip / (1 << W_FRAC))
    lr = cfg.lr_num / (1 << LR_SHIFT)
    if cfg.optimizer == "adam":
        b1, b2 = cfg.b1_num / (1 << MU_SHIFT), cfg.b2_num / (1 << MU_SHIFT)
        v.mul_(b1).add_(g, alpha=1 - b1)
        sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_(lr * v / (sq.sqrt() + cfg.eps / (1 << W_FRAC)))
    else:
        v.mul_(cfg.mu_num / (1 << MU_SHIFT)).add_(g)
        p.sub_(lr * v)


def train_float(state: MLPState, pixels: np.ndarray, labels: np.ndarray, steps: int, cfg: SGDConfig) -> list[Any]:
    """The same MLP, initial weights, data order and optimizer, in float32 torch: the
    reference an exact run's accuracy is compared with. Returns [(W, b), ...] as float arrays."""
    import torch

    ws = [torch.tensor(w / (1 << W_FRAC), dtype=torch.float32, requires_grad=True) for w in state.weights]
    bs = [torch.tensor(b / (1 << W_FRAC), dtype=torch.float32, requires_grad=True) for b in state.biases]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (*ws, *bs)]
    x_all = torch.tensor(pixels / (1 << PIX_FRAC), dtype=torch.float32)
    y_all = torch.tensor(labels, dtype=torch.int64)
    for step in range(state.step, state.step + steps):
        idx = torch.from_numpy(batch_indices(len(labels), step, cfg))
        h = x_all[idx]
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ w.T + b
            if i < len(ws) - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, y_all[idx])
        grads = torch.autograd.grad(loss, [*ws, *bs])
        with torch.no_grad():
            for p, (v, sq), g in zip((*ws, *bs), moments, grads):
                float_update(p, v, sq, g, cfg)
    return [(w.detach().numpy(), b.detach().numpy()) for w, b in zip(ws, bs)]


def predict_float(params: list[Any], pixels: np.ndarray) -> np.ndarray:
    h = pixels / (1 << PIX_FRAC)
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = np.maximum(h, 0)
    return np.argmax(h, axis=1)
