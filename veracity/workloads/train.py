"""The ``train`` job kind: exact training of the digits MLP over labelled examples, a checkpoint
out, every optimizer step one trace step.

Inputs are JSONL, one example per line: ``{"pixels": [64 ints 0..16], "label": 0..9}``. A job
runs ``steps`` optimizer steps from its start: a fresh, seeded initialisation, or (a work unit) a
checkpoint blob, which carries its step counter, so a long job split into units ends at the same
checkpoint as the unsplit job. The output is the checkpoint blob; the output hash is its
``training.mlp.checkpoint_hash``. The trace starts with the start state's tensors
(inputs whose digests the client computes), then each step's ops, every one a record
(``training.mlp.mlp_step``): the batch, the forward GEMMs and ReLUs, the loss gradient, the
backward GEMMs, transposes and masks, and the updates, which end in the state's new tensors. The
job's program (``train_program``) names each record from shapes alone, so a dispute over a
training job is judged to one element of one op like an inference job's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.exact import integer as X
from veracity.exact import spec
from veracity.exact.trace import (
    encode_records,
    records_root,
    tensor_digest,
)
from veracity.training import mlp as MLP
from veracity.training import tape as TP
from veracity.workloads.infer import input_records
from veracity.workloads.states import state_digests
from veracity.workloads.workload import JobResult, Tamper, Trainer, register, training_args

PIXELS, CLASSES = 64, 10  # an 8x8 digit in, one logit per digit out


@dataclass(frozen=True)
class TrainParams:
    steps: int
    seed: int = 0  # the data order
    init_seed: int = 0  # the initial weights (ignored when resuming from a checkpoint)
    optimizer: str = "momentum"
    lr: float = 0.05
    batch: int = 32

    def config(self) -> X.SGDConfig:
        if self.steps <= 0 or not 0 < self.batch <= 1024:
            raise InputError("training needs a positive number of steps and a batch size of 1 to 1024")
        if not 0 < self.lr < 1:
            raise InputError(f"learning rate {self.lr} is outside (0, 1)")
        return X.SGDConfig(lr_num=max(1, round(self.lr * (1 << X.LR_SHIFT))), batch=self.batch, seed=self.seed,
                           optimizer=self.optimizer)


def parse_examples(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [N, 64], labels [N]) from the job's JSONL, with the line of any bad example."""
    pixels, labels = [], []
    for n, rec in input_records(data, "training data"):
        px, label = rec.get("pixels"), rec.get("label")
        if not (isinstance(px, list) and len(px) == PIXELS and all(isinstance(v, int) and 0 <= v <= 16 for v in px)):
            raise InputError(f"training data line {n}: \"pixels\" must be {PIXELS} integers 0..16")
        if not (isinstance(label, int) and 0 <= label <= 9):
            raise InputError(f"training data line {n}: \"label\" must be an integer 0..9")
        pixels.append(px)
        labels.append(label)
    return np.array(pixels, dtype=np.int64), np.array(labels, dtype=np.int64)


def start_state(params: TrainParams, start: bytes | None) -> MLP.MLPState:
    """The state a job starts from: the ``start`` checkpoint, or the seeded initialisation."""
    try:
        state = MLP.load_checkpoint(start) if start is not None else MLP.MLPState.init(seed=params.init_seed)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"the start checkpoint cannot be read ({exc})") from None
    sizes = state.sizes
    if sizes[0] != PIXELS or sizes[-1] != CLASSES or max(sizes) > spec.F32_EXACT_K:
        raise InputError(f"the start checkpoint is an MLP of {'-'.join(map(str, sizes))}: a digits job needs "
                         f"{PIXELS} inputs, {CLASSES} classes and layers of at most {spec.F32_EXACT_K} units "
                         "(the longest row a dispute's referee contracts)")
    return state


def train_program(params: TrainParams, start: bytes | None, data: bytes) -> list[Any]:
    """The program of a train job, from shapes and the data alone (no arithmetic): the start
    state's tensors as inputs, then every step's records as ``training.mlp.mlp_step`` makes them,
    each naming its input records, the batch's digests and the parameters its referee reads. A
    test holds it to the descriptors a traced run records."""
    from veracity.exact import program as P

    cfg = params.config()
    pixels, labels = parse_examples(data)
    state = start_state(params, start)
    prog: list[Any] = []
    at: dict[str, int] = {}
    i64 = P.dtype_code(np.dtype(np.int64))

    def rec(kind: int, step: int, op: str, dims: tuple[int, ...], inputs: tuple[int, ...] = (),
            consts: tuple[bytes, ...] = (), params_: tuple[int, ...] = ()) -> int:
        prog.append(P.OpDesc(kind, step, op, i64, tuple(int(d) for d in dims), inputs, consts, params_))
        return len(prog) - 1

    def inp(step: int, op: str, x: np.ndarray) -> int:
        return rec(P.INPUT, step, op, x.shape, consts=(tensor_digest(np.asarray(x, dtype=np.int64)),))

    shapes = {}
    for name, t in MLP.state_tensors(state):
        at[name] = inp(state.step, "start." + name.removeprefix("state."), t)
        shapes[name] = t.shape
    n = len(state.weights)
    widths = [state.weights[0].shape[1], *(w.shape[0] for w in state.weights)]
    for k in range(params.steps):
        step = state.step + k + 1
        idx = X.batch_indices(len(labels), step - 1, cfg)
        bsz = len(idx)
        ups = MLP.update_params(cfg, bsz)
        ix, iy = inp(step, "batch.x", pixels[idx]), inp(step, "batch.y", labels[idx])
        ids, ih, frac = [ix], ix, MLP.PIX_FRAC
        for i in range(n):
            iz = rec(P.QMM, step, f"fwd.{i}.z", (bsz, widths[i + 1]), (ih, at[f"state.w{i}"], at[f"state.b{i}"]),
                     params_=(X.ACT_FRAC - frac - X.W_FRAC, X.W_FRAC - X.ACT_FRAC))
            if i < n - 1:
                ih = rec(P.RELU, step, f"fwd.{i}.relu", (bsz, widths[i + 1]), (iz,))
                ids.append(ih)
                frac = X.ACT_FRAC
        ip = rec(P.EXP_ROWS, step, "loss.exp", (bsz, widths[-1]), (iz,), consts=(X.exp_table_digest(),))
        idz = rec(P.LOSS_GRAD, step, "loss.dz", (bsz, widths[-1]), (ip, iy))
        for i in reversed(range(n)):
            fx = MLP.PIX_FRAC if i == 0 else X.ACT_FRAC
            idzt = rec(P.TRANSPOSE, step, f"bwd.{i}.dz_t", (widths[i + 1], bsz), (idz,))
            ixt = rec(P.TRANSPOSE, step, f"bwd.{i}.x_t", (widths[i], bsz), (ids[i],))
            igw = rec(P.QMM, step, f"bwd.{i}.gw", (widths[i + 1], widths[i]), (idzt, ixt),
                      params_=(X.W_FRAC - X.ACT_FRAC - fx, -1))
            igb = rec(P.ROW_SUM, step, f"bwd.{i}.gb", (widths[i + 1],), (idzt,), params_=(X.W_FRAC - X.ACT_FRAC,))
            if i > 0:
                iwt = rec(P.TRANSPOSE, step, f"bwd.{i}.w_t", (widths[i], widths[i + 1]), (at[f"state.w{i}"],))
                idx_ = rec(P.QMM, step, f"bwd.{i}.dx", (bsz, widths[i]), (idz, iwt), params_=(-X.W_FRAC, -1))
                idz = rec(P.RELU_MASK, step, f"bwd.{i}.dz", (bsz, widths[i]), (idx_, ids[i]))
            for (wn, mn, sn), ig in ((("w", "m", "s"), igw), (("b", "mb", "sb"), igb)):
                dims = shapes[f"state.{wn}{i}"]
                m_at = rec(P.MOMENT, step, f"state.{mn}{i}", dims, (at[f"state.{mn}{i}"], ig), params_=ups["moment"])
                s_at = rec(P.SECOND, step, f"state.{sn}{i}", dims, (at[f"state.{sn}{i}"], ig), params_=ups["second"])
                w_at = rec(P.WEIGHT, step, f"state.{wn}{i}", dims, (at[f"state.{wn}{i}"], m_at, s_at),
                           params_=ups["weight"])
                at.update({f"state.{mn}{i}": m_at, f"state.{sn}{i}": s_at, f"state.{wn}{i}": w_at})
    prog = P.mark_outputs(prog, [at[name] for name, _ in MLP.state_tensors(state)])  # the final state
    P.check_disputable(prog)  # every record within what the contracts read
    return prog


def run_train_job(data: bytes, params: TrainParams, start: bytes | None = None, backend: str = "numpy",
                  progress: Callable[[int], None] | None = None, keep: set[int] | None = None,
                  tamper: Callable[[int, str, np.ndarray], None] | None = None) -> JobResult:
    """Train from ``start`` (a checkpoint blob) or a fresh initialisation for ``params.steps``."""
    pixels, labels = parse_examples(data)
    cfg = params.config()
    state = start_state(params, start)
    tape = TP.Tape(keep=keep, tamper=tamper)
    tape.start(state.step, MLP.state_tensors(state))
    try:
        for _ in range(params.steps):
            state = MLP.train(state, pixels, labels, 1, cfg, backend, tape=tape)
            if progress:
                progress(state.step)
    except ValueError as exc:  # a diverged run stops rather than commit values a referee would not
        raise InputError(f"step {state.step + 1}: {exc}") from None
    blob = MLP.checkpoint_bytes(state)
    records = tape.records
    result = JobResult(blob, MLP.checkpoint_hash(state), records_root(records), params.steps, len(records),
                       encode_records(records), output_digests=state_digests(MLP.state_tensors(state)))
    if keep is not None:
        result.kept.update(tape.kept)
    return result


def accuracy(checkpoint: bytes, data: bytes) -> float:
    pixels, labels = parse_examples(data)
    return float((MLP.predict(MLP.load_checkpoint(checkpoint), pixels) == labels).mean())




def record_tensors(data: bytes, params: TrainParams, start: bytes | None, indices: set[int],
                   tamper: Callable[[int, str, np.ndarray], None] | None = None) -> dict[int, np.ndarray]:
    """Re-run a train job (exact, so the same bits) and keep the tensors of records ``indices``:
    what a party shows in a dispute, recomputed rather than stored. ``tamper`` replays a cheat."""
    return run_train_job(data, params, start, "numpy", keep=set(indices), tamper=tamper).kept


class MLPTrainer(Trainer):
    """``train`` of the digits MLP: every op of every step a record, judged by the TrainReferee."""

    kind, models, code, judged_on_chain = "train", ("digits-mlp",), 2, True
    defaults = (32, "momentum", 0.05)

    def params(self, training: Any) -> TrainParams:
        return TrainParams(**training_args(training, self.defaults))

    def run(self, job: Any, backend: str, model: Any = None, tamper: Tamper | None = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        return run_train_job(job.inputs, job.params, job.start, backend, progress, tamper=tamper)

    def build_program(self, job: Any, model: Any = None) -> list[Any]:
        return train_program(job.params, job.start, job.inputs)

    def records(self, job: Any, indices: set[int], model: Any = None,
                tamper: Tamper | None = None) -> dict[int, np.ndarray]:
        return record_tensors(job.inputs, job.params, job.start, indices, tamper)

    def constants(self, job: Any, model: Any = None) -> dict[bytes, np.ndarray]:
        return {X.exp_table_digest(): X.exp_table_tensor()}

    def load_checkpoint(self, blob: bytes) -> Any:
        return MLP.load_checkpoint(blob)

    def named(self, state: Any) -> list[tuple[str, np.ndarray]]:
        return MLP.state_tensors(state)

    def evaluate(self, job: Any, checkpoint: bytes, data: bytes) -> str:
        return f"accuracy {accuracy(checkpoint, data):.4f}"

    def estimate(self, job: Any, program: list[Any] | None = None) -> Any:
        """6 x parameters per example per step."""
        from veracity.workloads.planner import JobEstimate, human

        p = job.params
        n = sum(w.size for w in start_state(p, job.start).weights)
        return JobEstimate(6.0 * n * p.batch * p.steps, 8.0 * n * 6 + 8.0 * p.batch * 128 * 8,
                           f"{human(n)} parameters, {p.steps} steps of {p.batch}")


register(MLPTrainer())
