"""Training steps recorded as their state: one record per state tensor per step (the fine-tune's and
every trainer's committed outputs: its final state's digests)."""

from __future__ import annotations

from typing import Any

import numpy as np

from veracity.exact.trace import TraceRecord, tensor_digest

Named = list[tuple[str, np.ndarray]]  # a training state's tensors by record name ("state.w0", ...)


def state_digests(named: Named) -> list[bytes]:
    """A training job's committed outputs: the digests of its final state's tensors, in state
    order (its program marks each tensor's last record as an output)."""
    return [tensor_digest(t) for _, t in named]


def state_records(step: int, named: Named) -> list[TraceRecord]:
    """A step's trace records when the step is recorded as its state (fine-tuning)."""
    return [TraceRecord(step, name, tensor_digest(t)) for name, t in named]


def state_program(first: int, named: Named, steps: int, hyper: tuple[int, int]) -> list[Any]:
    """The program of a job whose steps are recorded as their state: one ``STATE`` descriptor per
    tensor per step, naming the same tensor's record of the step before and the job's packed
    hyper-parameters (two: the contract's bound), each descriptor one the contracts decode."""
    from veracity.exact.program import (
        NO_INPUT,
        STATE,
        OpDesc,
        check_descriptors,
        dtype_code,
    )

    code = dtype_code(np.dtype(np.int64))
    n = len(named)
    program = [OpDesc(STATE, first + k + 1, name, code, tuple(t.shape), ((k - 1) * n + j if k else NO_INPUT,), (),
                      hyper, output=j + 1 if k == steps - 1 else 0, outputs=n if k == steps - 1 else 0)
               for k in range(steps) for j, (name, t) in enumerate(named)]  # the last step's state: the outputs
    check_descriptors(program)
    return program


def keep_step(kept: dict[int, np.ndarray], keep: set[int] | None, first: int, named: Named) -> None:
    """Copy the tensors of the records ``keep`` asks for among a step's records (from ``first``)."""
    if keep:
        kept.update({i: named[i - first][1].copy() for i in keep if first <= i < first + len(named)})


