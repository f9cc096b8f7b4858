"""A training step's ops as trace records, each with the descriptor a dispute judges it by."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from veracity.exact.trace import tensor_digest


class Tape:
    """A training step's ops as trace records (``rec``: kind, name, value, input records, and the
    parameters the referee reads), each with the descriptor a dispute judges it by. ``at`` maps a
    state tensor's name to the record that holds its current value; ``base`` numbers a tape that
    records from the middle of a job (a dispute's one step) as the whole job's would. The null tape (``Tape(False)``)
    records nothing, so an untraced step pays nothing."""

    def __init__(self, on: bool = True, keep: set[int] | None = None,
                 tamper: Callable[[int, str, np.ndarray], None] | None = None, base: int = 0,
                 digests: bool = True) -> None:
        self.on = on
        self.digests = digests  # False: descriptors only (a program's; an input's digest is in its descriptor)
        self.base = base  # the index of this tape's first record (a tape that opens a job mid-way)
        self.tamper = tamper  # an adversary's hook (tests, the demo): alters a value in place
        self.records: list[Any] = []  # TraceRecord
        self.descs: list[Any] = []  # program.OpDesc
        self.at: dict[str, int] = {}
        self.keep = keep if keep is not None else set()
        self.kept: dict[int, np.ndarray] = {}

    def rec(self, kind: int, step: int, op: str, x: np.ndarray, inputs: tuple[int, ...] = (),
            consts: tuple[bytes, ...] = (), params: tuple[int, ...] = (), dtype: Any = np.int64) -> int:
        if not self.on:
            return -1
        from veracity.exact.program import INPUT, OpDesc, dtype_code
        from veracity.exact.trace import TraceRecord

        i = self.base + len(self.records)
        if self.tamper is not None:
            self.tamper(i, op, x)  # in place, so every later op reads the altered value
        t = np.ascontiguousarray(x, dtype=dtype)  # int64, or narrower where rows would not fit a chunk
        self.records.append(TraceRecord(step, op, tensor_digest(t) if self.digests or kind == INPUT else b""))
        self.descs.append(OpDesc(kind, step, op, dtype_code(t.dtype), tuple(t.shape), inputs, consts, params))
        if i in self.keep:
            self.kept[i] = t.copy()
        return i

    def input(self, step: int, op: str, x: np.ndarray, dtype: Any = np.int64) -> int:
        from veracity.exact.program import INPUT

        return self.rec(INPUT, step, op, x, consts=(tensor_digest(np.asarray(x, dtype=dtype)),), dtype=dtype)

    def start(self, step: int, named: list[tuple[str, np.ndarray]]) -> None:
        """The state a job starts from (its step, its tensors by record name), as input records
        (the client computes their digests from the initialisation seed or the start checkpoint)."""
        for name, t in named:
            self.at[name] = self.input(step, "start." + name.removeprefix("state."), t)


NULL_TAPE = Tape(False)


class StepRecorder:
    """One optimizer step's recorder on a tape: ``r(kind, op, x, inputs, ...)`` is ``tape.rec`` at
    this step, ``x`` a tensor or a function making one (built only when recording); on the null
    tape it is -1 and builds nothing. ``r.state(name)`` is the record holding state tensor
    ``state.<name>`` now (-1 untraced)."""

    def __init__(self, tape: Tape, step: int) -> None:
        self.tape, self.step, self.on = tape, step, tape.on

    def __call__(self, kind: int, op: str, x: Any, inputs: tuple[int, ...] = (), consts: tuple[bytes, ...] = (),
                 params: tuple[int, ...] = (), dtype: Any = np.int64) -> int:
        if not self.on:
            return -1
        return self.tape.rec(kind, self.step, op, x() if callable(x) else x, inputs, consts, params, dtype)

    def state(self, name: str) -> int:
        return self.tape.at.get("state." + name, -1) if self.on else -1

    def input(self, op: str, x: np.ndarray, dtype: Any = np.int64) -> int:
        return self.tape.input(self.step, op, x, dtype) if self.on else -1

    def update(self, names: tuple[str, str, str], tensors: tuple[np.ndarray, np.ndarray, np.ndarray], grad: int,
               params: dict[str, tuple[int, int]]) -> None:
        """A state tensor's optimizer update as three records: its moment and second moment, each
        from its value before and the gradient's record ``grad``, then the tensor from its value
        before and both; ``names`` (moment, second, tensor) are state names, ``params`` the
        descriptors' (``mlp.update_params``). The tape then holds each name at its new record."""
        if not self.on:
            return
        from veracity.exact.program import MOMENT, SECOND, WEIGHT

        (mn, sn, wn), (m, s, w) = names, tensors
        m_at = self(MOMENT, "state." + mn, m, (self.state(mn), grad), params=params["moment"])
        s_at = self(SECOND, "state." + sn, s, (self.state(sn), grad), params=params["second"])
        w_at = self(WEIGHT, "state." + wn, w, (self.state(wn), m_at, s_at), params=params["weight"])
        self.tape.at.update({"state." + mn: m_at, "state." + sn: s_at, "state." + wn: w_at})

