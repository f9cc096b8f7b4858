"""The op interface models are written against: a backend plus an optional trace.

Each method runs one exact op on the backend and records the output's digest under the current
step, so a model's code is the same for the torch and NumPy backends, traced or not.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from veracity.exact import program as prog
from veracity.exact.spec import I16_MAX, QLinear, QNorm
from veracity.exact.trace import Trace, tensor_digest

I32, I16, U8 = np.dtype(np.int32), np.dtype(np.int16), np.dtype(np.uint8)


BACKENDS = ("torch", "torch-eager", "numpy")


def make_backend(name: str, device: str = "cpu") -> Any:
    """'torch' (fast: fused C kernels on CPU when a C compiler is present, else eager torch),
    'torch-eager' (plain torch ops, CPU or GPU) or 'numpy' (the int64 reference)."""
    if name == "torch" and device == "cpu":
        from veracity.exact import ops_native

        if ops_native.available():
            return ops_native.NativeBackend()
    if name in ("torch", "torch-eager"):
        from veracity.exact.ops_torch import TorchBackend

        return TorchBackend(device)
    if name == "numpy":
        from veracity.exact.ops_numpy import NumpyBackend

        return NumpyBackend()
    from veracity.errors import UsageError

    raise UsageError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")


class Exec:
    """Runs exact ops on ``backend``, recording each output in ``trace`` (when given) and, when
    ``program`` is a list, each op's descriptor (``exact.program``) in it."""

    def __init__(self, backend: Any, trace: Trace | None = None,
                 tamper: Callable[[int, str, Any], Any] | None = None,
                 program: list[prog.OpDesc] | None = None) -> None:
        self.b = backend
        self.trace = trace
        # adversaries and dispute replays set this: (op index, op name, output) -> output
        self.tamper = tamper
        self.program = program
        self._where: dict[int, tuple[int, Any]] = {}  # id(tensor) -> (record index, tensor)
        self.ops = 0
        self.step_index = -1
        self._prefix = ""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One trace step (a layer call); op names inside are prefixed with ``name``."""
        self.step_index += 1
        self._prefix = name + "."
        try:
            yield
        finally:
            self._prefix = ""

    def _rec(self, op: str, x: Any, dtype: np.dtype, kind: int = 0, inputs: tuple[Any, ...] = (),
             consts: Callable[[], tuple[bytes, ...]] | None = None, params: tuple[int, ...] = ()) -> Any:
        if self.tamper is not None:
            x = self.tamper(self.ops, self._prefix + op, x)
        if self.program is not None:
            self._describe(op, x, dtype, kind, inputs, consts() if consts else (), params)
        self.ops += 1
        if self.trace is not None:
            b = self.b
            nbytes = int(np.prod(x.shape)) * dtype.itemsize
            self.trace.record(self.step_index, self._prefix + op, lambda: b.canonical(x, dtype), nbytes)
        return x

    def _describe(self, op: str, x: Any, dtype: np.dtype, kind: int, inputs: tuple[Any, ...],
                  consts: tuple[bytes, ...], params: tuple[int, ...]) -> None:
        assert self.program is not None
        refs = []
        for t in inputs:
            hit = self._where.get(id(t))
            refs.append(hit[0] if hit is not None and hit[1] is t else prog.NO_INPUT)
        self.program.append(prog.OpDesc(kind, self.step_index, self._prefix + op, prog.dtype_code(dtype),
                                        tuple(x.shape), tuple(refs), consts, params))
        self._where[id(x)] = (self.ops, x)

    def input(self, op: str, a: np.ndarray, dtype: np.dtype = I32) -> Any:
        """A job input as a trace record, so later ops read it as they read any record; its
        descriptor carries the digest the client computed from the inputs it posted."""
        arr = np.asarray(a)
        return self._rec(op, self.b.tensor(arr), dtype, prog.INPUT,
                         consts=lambda: (tensor_digest(arr.astype(dtype)),))

    def tensor(self, a: np.ndarray) -> Any:
        return self.b.tensor(a)

    def constant(self, a: np.ndarray) -> Any:
        """A model constant on the backend, converted once per backend (weights, tables)."""
        return self.b.constant(a)

    def index(self, a: np.ndarray) -> Any:
        return self.b.index(a)

    def to_numpy(self, x: Any, dtype: np.dtype = I32) -> np.ndarray:
        return np.asarray(self.b.canonical(x, dtype)).astype(np.int64)

    def linear(self, op: str, x: Any, lin: QLinear) -> Any:
        kind = prog.LINEAR if lin.smooth is None else 0  # smoothed linears: judged in a later phase
        return self._rec(op, self.b.linear(x, lin), I16 if lin.out_max <= I16_MAX else I32, kind, (x,),
                         lambda: prog.linear_consts(lin), (lin.out_max,))

    def add(self, op: str, a: Any, b: Any) -> Any:
        return self._rec(op, self.b.add(a, b), I32, prog.ADD, (a, b))

    def relu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.relu(x), I32, prog.RELU, (x,))

    def gelu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.gelu(x), I16, prog.GELU, (x,))

    def silu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.silu(x), I16, prog.SILU, (x,))

    def rmsnorm(self, op: str, x: Any, norm: QNorm) -> Any:
        return self._rec(op, self.b.rmsnorm(x, norm), I32, prog.RMSNORM, (x,))

    def layernorm(self, op: str, x: Any, norm: QNorm) -> Any:
        return self._rec(op, self.b.layernorm(x, norm), I32, prog.LAYERNORM, (x,))

    def embedding(self, op: str, table: Any, ids: Any) -> Any:
        return self._rec(op, self.b.embedding(table, ids), I32, prog.EMBEDDING, (ids,))

    def attention(self, op: str, q: Any, k: Any, v: Any, key_valid: Any, heads: int, causal: bool) -> Any:
        """Multi-head attention: scores, softmax, context; q, k, v are [B, T, H] activations."""
        b = self.b
        qh, kh, vh = (b.split_heads(t, heads) for t in (q, k, v))
        z, p, psum = b.scores_softmax(qh, kh, key_valid, causal)
        self._rec(op + ".scores", z, I16, prog.SCORES)
        self._rec(op + ".probs", p, U8, prog.PROBS, (z,))
        self._rec(op + ".probsum", psum, I32, prog.PROBSUM, (p,))
        ctx = self._rec(op + ".context", b.attention_context(p, psum, vh, key_valid), I32, prog.CONTEXT, (p, psum))
        return b.merge_heads(ctx)

    def mean_pool(self, op: str, h: Any, mask: Any) -> Any:
        return self._rec(op, self.b.mean_pool(h, mask), I32, prog.MEAN_POOL, (h,))

    def l2_normalize(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.l2_normalize(x), I32, prog.L2_NORMALIZE, (x,))
