"""The op interface models are written against: a backend plus an optional trace.

Each method runs one exact op on the backend and records the output's digest under the current
step, so a model's code is the same for the torch and NumPy backends, traced or not.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from veracity.exact.spec import I16_MAX, QLinear, QNorm
from veracity.exact.trace import Trace

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
    """Runs exact ops on ``backend``, recording each output in ``trace`` (when given)."""

    def __init__(self, backend: Any, trace: Trace | None = None,
                 tamper: Callable[[int, str, Any], Any] | None = None) -> None:
        self.b = backend
        self.trace = trace
        self.tamper = tamper  # only adversaries in tests set this: (op index, op name, output) -> output
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

    def _rec(self, op: str, x: Any, dtype: np.dtype) -> Any:
        if self.tamper is not None:
            x = self.tamper(self.ops, self._prefix + op, x)
        self.ops += 1
        if self.trace is not None:
            b = self.b
            nbytes = int(np.prod(x.shape)) * dtype.itemsize
            self.trace.record(self.step_index, self._prefix + op, lambda: b.canonical(x, dtype), nbytes)
        return x

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
        return self._rec(op, self.b.linear(x, lin), I16 if lin.out_max <= I16_MAX else I32)

    def add(self, op: str, a: Any, b: Any) -> Any:
        return self._rec(op, self.b.add(a, b), I32)

    def relu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.relu(x), I32)

    def gelu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.gelu(x), I16)

    def silu(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.silu(x), I16)

    def rmsnorm(self, op: str, x: Any, norm: QNorm) -> Any:
        return self._rec(op, self.b.rmsnorm(x, norm), I32)

    def layernorm(self, op: str, x: Any, norm: QNorm) -> Any:
        return self._rec(op, self.b.layernorm(x, norm), I32)

    def embedding(self, op: str, table: Any, ids: Any) -> Any:
        return self._rec(op, self.b.embedding(table, ids), I32)

    def attention(self, op: str, q: Any, k: Any, v: Any, key_valid: Any, heads: int, causal: bool) -> Any:
        """Multi-head attention: scores, softmax, context; q, k, v are [B, T, H] activations."""
        b = self.b
        qh, kh, vh = (b.split_heads(t, heads) for t in (q, k, v))
        z, p, psum = b.scores_softmax(qh, kh, key_valid, causal)
        self._rec(op + ".scores", z, I16)
        self._rec(op + ".probs", p, U8)
        self._rec(op + ".probsum", psum, I32)
        ctx = self._rec(op + ".context", b.attention_context(p, psum, vh, key_valid), I32)
        return b.merge_heads(ctx)

    def mean_pool(self, op: str, h: Any, mask: Any) -> Any:
        return self._rec(op, self.b.mean_pool(h, mask), I32)

    def l2_normalize(self, op: str, x: Any) -> Any:
        return self._rec(op, self.b.l2_normalize(x), I32)
