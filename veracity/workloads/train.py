"""The ``train`` job kind: exact training of the digits MLP over labelled examples, a checkpoint
out, every optimizer step one trace step.

Inputs are JSONL, one example per line: ``{"pixels": [64 ints 0..16], "label": 0..9}``. A job
runs ``steps`` optimizer steps from its start: a fresh, seeded initialisation, or (a work unit) a
checkpoint blob, which carries its step counter, so a long job split into units ends at the same
checkpoint as the unsplit job. The output is the checkpoint blob; the output hash is its
``exact.train.checkpoint_hash``. Step ``s``'s trace records are the state's tensors after it,
and the job's program (``train_program``) names each of them: its step, tensor, shape, the same
tensor's record of the step before, and the step's hyper-parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.exact import train as T
from veracity.exact.trace import (
    TraceRecord,
    encode_records,
    records_root,
    tensor_digest,
)
from veracity.workloads.infer import JobResult, parse_jsonl

STATE_NAMES = ("w", "b", "m", "mb", "s", "sb")  # weights, biases, first and second moments


@dataclass(frozen=True)
class TrainParams:
    steps: int
    seed: int = 0  # the data order
    init_seed: int = 0  # the initial weights (ignored when resuming from a checkpoint)
    optimizer: str = "momentum"
    lr: float = 0.05
    batch: int = 32

    def config(self) -> T.SGDConfig:
        if self.steps <= 0 or self.batch <= 0:
            raise InputError("training needs a positive number of steps and a positive batch size")
        if not 0 < self.lr < 1:
            raise InputError(f"learning rate {self.lr} is outside (0, 1)")
        return T.SGDConfig(lr_num=max(1, round(self.lr * (1 << T.LR_SHIFT))), batch=self.batch, seed=self.seed,
                           optimizer=self.optimizer)


def parse_examples(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [N, 64], labels [N]) from the job's JSONL, with the line of any bad example."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("training data is not UTF-8 JSONL") from None
    pixels, labels = [], []
    for n, rec in parse_jsonl(text, "training data"):
        px, label = rec.get("pixels"), rec.get("label")
        if not (isinstance(px, list) and len(px) == 64 and all(isinstance(v, int) and 0 <= v <= 16 for v in px)):
            raise InputError(f"training data line {n}: \"pixels\" must be 64 integers 0..16")
        if not (isinstance(label, int) and 0 <= label <= 9):
            raise InputError(f"training data line {n}: \"label\" must be an integer 0..9")
        pixels.append(px)
        labels.append(label)
    return np.array(pixels, dtype=np.int64), np.array(labels, dtype=np.int64)


def step_records(state: T.MLPState) -> list[TraceRecord]:
    """The trace records of one step: each state tensor after it."""
    groups = (state.weights, state.biases, state.vw, state.vb, state.sw, state.sb)
    return [TraceRecord(state.step, f"state.{name}{i}", tensor_digest(t))
            for name, ts in zip(STATE_NAMES, groups) for i, t in enumerate(ts)]


def start_state(params: TrainParams, start: bytes | None) -> T.MLPState:
    """The state a job starts from: the ``start`` checkpoint, or the seeded initialisation."""
    try:
        return T.load_checkpoint(start) if start is not None else T.MLPState.init(seed=params.init_seed)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"the start checkpoint cannot be read ({exc})") from None


OPTIMIZER_CODES = {"sgd": 1, "momentum": 2, "adam": 3}


def train_program(params: TrainParams, start: bytes | None) -> list[Any]:
    """The program of a train job: one ``STATE`` descriptor per state tensor per step, naming the
    same tensor's record of the step before (none for the job's first step, which reads the start
    checkpoint) and the hyper-parameters every step applies."""
    from veracity.exact.program import NO_INPUT, STATE, OpDesc, dtype_code

    cfg = params.config()
    state = start_state(params, start)
    shapes = [(f"state.{name}{i}", t.shape) for name, ts in
              zip(STATE_NAMES, (state.weights, state.biases, state.vw, state.vb, state.sw, state.sb))
              for i, t in enumerate(ts)]
    hyper = (OPTIMIZER_CODES[cfg.optimizer], cfg.lr_num, cfg.mu_num, cfg.clip, cfg.batch, cfg.seed,
             cfg.b1_num, cfg.b2_num, cfg.eps)
    code = dtype_code(np.dtype(np.int64))
    program = []
    for k in range(params.steps):
        for j, (name, dims) in enumerate(shapes):
            prev = (k - 1) * len(shapes) + j if k else NO_INPUT
            program.append(OpDesc(STATE, state.step + k + 1, name, code, tuple(dims), (prev,), (), hyper))
    return program


def check_checkpoint(blob: bytes, records: list[TraceRecord]) -> str | None:
    """Whether a served checkpoint is the one a committed trace ends at: its tensors must hash to
    the last step's records. Returns what is wrong, or None."""
    try:
        state = T.load_checkpoint(blob)
    except ValueError as exc:
        return f"the checkpoint cannot be read ({exc})"
    last = step_records(state)
    if records[-len(last):] != last:
        return "the checkpoint is not the state the committed trace ends at"
    return None


def run_train_job(data: bytes, params: TrainParams, start: bytes | None = None, backend: str = "numpy",
                  progress: Callable[[int], None] | None = None) -> JobResult:
    """Train from ``start`` (a checkpoint blob) or a fresh initialisation for ``params.steps``."""
    pixels, labels = parse_examples(data)
    cfg = params.config()
    state = start_state(params, start)
    records: list[TraceRecord] = []
    for _ in range(params.steps):
        state = T.train(state, pixels, labels, 1, cfg, backend)
        records += step_records(state)
        if progress:
            progress(state.step)
    blob = T.checkpoint_bytes(state)
    return JobResult(blob, T.checkpoint_hash(state), records_root(records), params.steps, len(records),
                     encode_records(records))


def accuracy(checkpoint: bytes, data: bytes) -> float:
    pixels, labels = parse_examples(data)
    return float((T.predict(T.load_checkpoint(checkpoint), pixels) == labels).mean())


__all__: list[Any] = ["TrainParams", "run_train_job", "train_program", "check_checkpoint", "parse_examples", "accuracy"]


def record_tensors(data: bytes, params: TrainParams, start: bytes | None, indices: set[int]) -> dict[int, np.ndarray]:
    """Re-run a train job (exact, so the same bits) as far as the last of records ``indices`` and
    keep their tensors: what a party shows in a dispute, recomputed rather than stored."""
    pixels, labels = parse_examples(data)
    cfg = params.config()
    state = start_state(params, start)
    per = len(step_records(state))
    out: dict[int, np.ndarray] = {}
    for k in range(min(params.steps, max(indices, default=-1) // per + 1)):
        state = T.train(state, pixels, labels, 1, cfg)
        tensors = state.tensors()
        out.update({i: tensors[i - k * per].copy() for i in indices if k * per <= i < (k + 1) * per})
    return out
