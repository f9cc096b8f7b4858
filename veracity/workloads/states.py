"""What every trainer's trace shares: a training state's tensors by record name, its committed
outputs (the final state's digests), the coarse records a step leaves (its state), and a job's
program made from one step's descriptors repeated for every step (the tiny GPT's, the
fine-tune's: ``steps_program``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np

from veracity.exact.trace import TraceRecord, tensor_digest

Named = list[tuple[str, np.ndarray]]  # a training state's tensors by record name ("state.w0", ...)


def state_digests(named: Named) -> list[bytes]:
    """A training job's committed outputs: the digests of its final state's tensors, in state
    order (its program marks each tensor's last record as an output)."""
    return [tensor_digest(t) for _, t in named]


def state_records(step: int, named: Named) -> list[TraceRecord]:
    """Records of state tensors at ``step``: a step's coarse records (``exact.levels``), or, named
    ``start.*``, the state a job starts from."""
    return [TraceRecord(step, name, tensor_digest(t)) for name, t in named]


def start_records(step: int, named: Named) -> list[TraceRecord]:
    """The input records of the state a job starts from (``Tape.start``'s names)."""
    return state_records(step, [("start." + name.removeprefix("state."), t) for name, t in named])


def state_places(names: list[str], start: int, per: int, writes: dict[str, int], k: int) -> dict[str, int]:
    """Where each state tensor's value is before a job's step ``k`` (0-based), in a program of
    ``start`` start records then ``per`` records a step: a start record, or the record the step
    before left it in (``writes``: a step's record of each tensor it updates; others keep theirs)."""
    base = start + (k - 1) * per
    return {name: base + writes[name] if k and name in writes else i for i, name in enumerate(names)}


def steps_program(start: Sequence[Any], named: Named, first: int, steps: int, writes: dict[str, int],
                  step: Callable[[int], tuple[Sequence[Any], list[bytes]]]) -> list[Any]:
    """A training job's program: the start state's input records (descriptors ``start``, with the
    state's digests), then each step's, ``step(k)`` giving the step's descriptors (inputs number
    the start records from 0 and the step's own from ``len(start)``) and its batch inputs' digests;
    every input renumbered into the job's records, the final state marked as the outputs."""
    from veracity.exact import program as P

    names = [name for name, _ in named]
    prog: list[Any] = [replace(d, step=first, dims=tuple(t.shape), consts=(tensor_digest(t),))
                       for d, (_, t) in zip(start, named)]
    n0, per = len(start), 0
    for k in range(steps):
        descs, digests = step(k)
        per = len(descs)
        places = state_places(names, n0, per, writes, k)
        old = {i: places[name] for i, name in enumerate(names)}
        base, batch = n0 + k * per, iter(digests)
        prog += [replace(d, step=first + k + 1, inputs=tuple(old[i] if i < n0 else base + i - n0 for i in d.inputs),
                         consts=(next(batch),) if d.kind == P.INPUT else d.consts) for d in descs]
    final = state_places(names, n0, per, writes, steps)
    prog = P.mark_outputs(prog, [final[name] for name in names])
    P.check_disputable(prog)
    return prog
