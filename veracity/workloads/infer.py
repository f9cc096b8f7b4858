"""The ``infer`` job kind: run an exact model over input items, with outputs and a trace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from veracity.exact.execute import Exec, make_backend
from veracity.exact.trace import Trace, output_hash, tensor_digest


@dataclass(frozen=True)
class InferResult:
    outputs: list[np.ndarray]  # per item, integers (see each model's ``present``)
    output_hash: bytes  # independent of batching
    trace_root: bytes
    steps: int
    ops: int


def infer(model: Any, items: list[Any], backend: str = "torch", batch_size: int = 32,
          trace: bool = True, progress: Callable[[int], None] | None = None) -> InferResult:
    """Run ``model`` on parsed ``items`` in batches of ``batch_size`` (in input order)."""
    tr = Trace() if trace else None
    ex = Exec(make_backend(backend), tr)
    outputs: list[np.ndarray] = []
    for lo in range(0, len(items), batch_size):
        outputs += model.run(ex, items[lo:lo + batch_size])
        if progress:
            progress(min(lo + batch_size, len(items)))
    digests = [tensor_digest(np.asarray(o, dtype=np.int32)) for o in outputs]
    root = tr.root() if tr else b"\0" * 32
    ops = len(tr) if tr else 0
    if tr:
        tr.close()
    return InferResult(outputs, output_hash(digests), root, ex.step_index + 1, ops)
