"""The ``finetune`` job kind: exact LoRA fine-tuning of the MiniLM encoder for text classification
(``training.lora``), a checkpoint out, every optimizer step one trace step.

Inputs are JSONL, one labelled text per line: ``{"text": "...", "label": 0..classes-1}``. The job
runs the frozen encoder exactly over the texts once (the same ops and bits as an ``infer`` job),
then ``steps`` optimizer steps of the adapter (rank ``rank``; 0 trains the head alone) and the
head, from a seeded initialisation or a checkpoint blob (a work unit). The output is the
checkpoint blob, its hash the output hash.

The program names every op of every step (``training.lora.lora_step``), its batch's features as
inputs whose digests the client computes (so building the program runs the encoder); each step's
descriptors follow from its batch's tokens and sentences (``StepShapes``). A provider commits the
coarse trace (``exact.levels``: the start state, then each step's trained tensors and moments); a
dispute opens one step, and the training referees judge the element the game reaches.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.exact import integer as X
from veracity.exact.trace import encode_records, records_root, tensor_digest
from veracity.training import lora as F
from veracity.training import tape as TP
from veracity.workloads import states as TR
from veracity.workloads.infer import input_records
from veracity.workloads.workload import JobResult, Tamper, Trainer, register, training_args

LORA_LR_SHIFT = 2  # the adapter learns at a quarter of the head's rate (it starts at zero, as LoRA does)
STATE_NAMES = ("", "m.", "s.")  # parameters, first and second moments


@dataclass(frozen=True)
class FinetuneParams:
    steps: int
    rank: int = 8
    classes: int = 2
    seed: int = 0  # the data order
    init_seed: int = 0
    optimizer: str = "adam"
    lr: float = 0.01
    batch: int = 16

    def config(self) -> X.SGDConfig:
        if self.steps <= 0 or self.batch <= 0:
            raise InputError("fine-tuning needs a positive number of steps and a positive batch size")
        if not 0 < self.lr < 1:
            raise InputError(f"learning rate {self.lr} is outside (0, 1)")
        if not 0 <= self.rank <= 64 or not 2 <= self.classes <= 64:
            raise InputError("rank must be 0..64 (0: the head alone) and classes 2..64")
        return X.SGDConfig(lr_num=max(1, round(self.lr * (1 << X.LR_SHIFT))), batch=self.batch, seed=self.seed,
                           optimizer=self.optimizer)


def parse_labelled(data: bytes, classes: int) -> tuple[list[str], np.ndarray]:
    """(texts, labels) from the job's JSONL, with the line of any bad example."""
    texts, labels = [], []
    for n, rec in input_records(data, "fine-tuning data"):
        t, label = rec.get("text"), rec.get("label")
        if not isinstance(t, str) or not t.strip():
            raise InputError(f'fine-tuning data line {n}: "text" must be a non-empty string')
        if not (isinstance(label, int) and 0 <= label < classes):
            raise InputError(f'fine-tuning data line {n}: "label" must be an integer 0..{classes - 1}')
        texts.append(t)
        labels.append(label)
    return texts, np.array(labels, dtype=np.int64)


def start_state(params: FinetuneParams, start: bytes | None, model: Any) -> F.LoraState:
    try:
        if start is None:
            return F.LoraState.init(params.rank, params.classes, model.cfg.hidden, model.cfg.intermediate,
                                    seed=params.init_seed)
        state = F.load_checkpoint(start)
    except (ValueError, OSError) as exc:
        raise InputError(f"the start checkpoint cannot be read ({exc})") from None
    if state.rank != params.rank or state.params[2].shape[0] != params.classes:
        raise InputError(f"the start checkpoint has rank {state.rank} and {state.params[2].shape[0]} classes, "
                         f"the job asks for rank {params.rank} and {params.classes}")
    return state


def named(state: F.LoraState) -> TR.Named:
    """The state's tensors by record name: ``state.lora.A`` ... ``state.m.head.b`` ... ``state.s.head.b``
    (A and its moments as records hold them: rows in two halves, ``training.lora.halves``)."""
    return [(f"state.{prefix}{name}", F.halves(t) if name == "lora.A" else t)
            for prefix, ts in zip(STATE_NAMES, (state.params, state.m, state.s))
            for name, t in zip(F.LoraState.NAMES, ts)]


def _load(model: Any) -> Any:
    if model is not None:
        return model
    from veracity.models.registry import loaded

    return loaded("minilm")


_FEATURES: dict[tuple[Any, ...], tuple[Any, F.Features, np.ndarray]] = {}  # the last few data sets' (exact: any backend's)
_FEATURES_LOCK = threading.Lock()


def prepare(data: bytes, params: FinetuneParams, model: Any = None, backend: str = "torch",
            progress: Callable[[int], None] | None = None) -> tuple[Any, F.Features, np.ndarray]:
    """The model, the frozen encoder's exact features of the job's texts, and the labels. Kept
    for the last two data sets: a node builds a fine-tune's program (its inputs' digests are
    features) before it bids, then runs the job, from the same features."""
    model = _load(model)
    key = (id(model), hashlib.sha256(data).digest(), params.classes)
    with _FEATURES_LOCK:
        hit = _FEATURES.get(key)
    if hit is not None and hit[0] is model:
        return hit
    texts, labels = parse_labelled(data, params.classes)
    for n, t in enumerate(texts, 1):
        try:
            model.parse({"text": t})
        except InputError as exc:
            raise InputError(f"fine-tuning data line {n}: {exc}") from None
    out = (model, F.features(model, texts, backend, progress=progress), labels)
    with _FEATURES_LOCK:
        while len(_FEATURES) >= 2:
            _FEATURES.pop(next(iter(_FEATURES)))
        _FEATURES[key] = out
    return out


def run_finetune_job(data: bytes, params: FinetuneParams, start: bytes | None = None, backend: str = "torch",
                     model: Any = None, progress: Callable[[int], None] | None = None,
                     keep: set[int] | None = None, tamper: Tamper | None = None) -> JobResult:
    """Fine-tune from ``start`` (a checkpoint blob) or a fresh initialisation for ``params.steps``.
    The trace is the coarse one (``exact.levels``): the start state's records, then each step's
    state records. ``keep``: records whose tensors to keep (a dispute's), ``tamper``: an
    adversary's replay; with either, every step is recorded op by op (``finetune_program``'s
    numbering)."""
    return _run(data, params, start, backend, model, progress, keep, tamper)[0]


def _run(data: bytes, params: FinetuneParams, start: bytes | None, backend: str, model: Any,
         progress: Callable[[int], None] | None, keep: set[int] | None,
         tamper: Tamper | None, digests: bool = True) -> tuple[JobResult, TP.Tape]:
    cfg = params.config()
    model, feats, labels = prepare(data, params, model, backend)
    state = start_state(params, start, model)
    norm = model.layers[-1].ln2
    records = TR.start_records(state.step, named(state))
    tape = TP.Tape(keep=keep, tamper=tamper, digests=digests) if keep is not None or tamper is not None else TP.NULL_TAPE
    tape.start(state.step, named(state))
    try:
        for _ in range(params.steps):
            state = F.finetune(state, feats, labels, norm.gamma, norm.beta, 1, cfg, backend,
                               lora_lr_shift=LORA_LR_SHIFT, tape=tape)
            records += TR.state_records(state.step, list(zip(F.coarse_names(state), F.coarse_tensors(state))))
            if progress:
                progress(state.step)
    except ValueError as exc:  # a diverged run is refused (a clear error), never committed
        raise InputError(f"step {state.step + 1}: {exc}") from None
    result = JobResult(F.checkpoint_bytes(state), F.checkpoint_hash(state), records_root(records), params.steps,
                       len(records), encode_records(records), output_digests=TR.state_digests(named(state)),
                       coarse=True)
    result.kept.update(tape.kept)
    return result, tape


@dataclass(frozen=True)
class StepShapes:
    """A fine-tuning step's descriptors as functions of its batch: traced on three tiny made-up
    batches (zeros: a descriptor holds no value), each dimension solved as ``a + b T + c S``
    (T the batch's tokens, S its sentences). Inputs number the start state's records from 0 and
    the step's own from ``len(start)``, as ``gpt_train.StepTemplate``'s."""

    start: tuple[Any, ...]
    step: tuple[Any, ...]
    dims: tuple[tuple[tuple[int, int, int], ...], ...]  # per record, per dimension: (a, b, c)
    params: tuple[tuple[tuple[int, int, int], ...], ...]  # per record, per parameter (the updates' batch)
    writes: dict[str, int]

    def at(self, tokens: int, sentences: int) -> list[Any]:
        from dataclasses import replace

        solve = lambda abc: tuple(a + b * tokens + c * sentences for a, b, c in abc)  # noqa: E731
        return [replace(d, dims=solve(dims), params=solve(params))
                for d, dims, params in zip(self.step, self.dims, self.params)]


_SHAPES: dict[tuple[Any, ...], StepShapes] = {}


def step_shapes(params: FinetuneParams, model: Any) -> StepShapes:
    """The job's ``StepShapes`` (cached per rank, classes, optimizer and model)."""
    from dataclasses import astuple, replace

    cfg = params.config()
    key = (params.rank, params.classes, astuple(replace(cfg, seed=0)), id(model))
    if key in _SHAPES:
        return _SHAPES[key]
    norm = model.layers[-1].ln2
    hidden, inter = model.cfg.hidden, model.cfg.intermediate
    traced = []
    for tokens, sentences in ((6, 3), (7, 3), (7, 4)):
        state = F.LoraState.init(params.rank, params.classes, hidden, inter, seed=params.init_seed)
        starts = np.array([0, *range(tokens - sentences + 1, tokens + 1)], dtype=np.int64)  # every sentence >= 1 token
        feats = F.Features(np.zeros((tokens, hidden), dtype=np.int64), np.zeros((tokens, inter), dtype=np.int64), starts)
        tape = TP.Tape(digests=False)
        tape.start(0, named(state))
        F.lora_step(state, feats, np.zeros(sentences, dtype=np.int64), norm.gamma, norm.beta,
                    replace(cfg, batch=sentences), "numpy", LORA_LR_SHIFT, tape)
        traced.append(tape)
    n0 = len(named(F.LoraState.init(params.rank, params.classes, hidden, inter)))
    one, two, three = (t.descs[n0:] for t in traced)
    if not len(one) == len(two) == len(three) or any(
            (x.kind, x.op, x.inputs, len(x.dims), len(x.params)) != (y.kind, y.op, y.inputs, len(y.dims), len(y.params))
            for x, y in zip(one, three)):
        raise AssertionError("a fine-tuning step's records do not follow from its batch's size alone")

    def solved(v1: tuple[int, ...], v2: tuple[int, ...], v3: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
        return tuple((a1 - 6 * (a2 - a1) - 3 * (a3 - a2), a2 - a1, a3 - a2) for a1, a2, a3 in zip(v1, v2, v3))

    dims = [solved(x.dims, y.dims, z.dims) for x, y, z in zip(one, two, three)]
    pars = [solved(x.params, y.params, z.params) for x, y, z in zip(one, two, three)]
    coarse = set(F.coarse_names(F.LoraState.init(params.rank, params.classes, hidden, inter)))
    shapes = StepShapes(tuple(traced[0].descs[:n0]), tuple(one), tuple(dims), tuple(pars),
                        {d.op: j for j, d in enumerate(one) if d.op in coarse})
    _SHAPES[key] = shapes
    return shapes


def finetune_program(params: FinetuneParams, start: bytes | None, data: bytes, model: Any = None) -> list[Any]:
    """Every record of every step (``training.lora.lora_step``): the start state's tensors as
    inputs, then each step's batch (the frozen encoder's features of its sentences, their starts,
    the labels, the LayerNorm's gain and bias: inputs whose digests the client computes by running
    the encoder) and its ops (``StepShapes``: no arithmetic but the digests; ``states.steps_program``)."""
    cfg = params.config()
    model, feats, labels = prepare(data, params, model)
    state = start_state(params, start, model)
    shapes = step_shapes(params, model)
    norm = model.layers[-1].ln2

    def step(k: int) -> tuple[list[Any], list[bytes]]:
        idx = X.batch_indices(len(labels), state.step + k, cfg)
        f = feats.sentences(idx)
        return shapes.at(int(f.starts[-1]), len(idx)), [
            tensor_digest(np.asarray(x, dtype=dtype)) for _, x, dtype in F.step_inputs(f, labels[idx], norm.gamma,
                                                                                       norm.beta)]

    return TR.steps_program(shapes.start, named(state), state.step, params.steps, shapes.writes, step)


def record_tensors(data: bytes, params: FinetuneParams, start: bytes | None, indices: set[int],
                   model: Any = None, tamper: Tamper | None = None) -> dict[int, np.ndarray]:
    """Re-run the job (exact, so the same bits) and keep the tensors of records ``indices``."""
    return run_finetune_job(data, params, start, "torch", model, keep=set(indices), tamper=tamper).kept


def accuracy(checkpoint: bytes, data: bytes, classes: int = 2, model: Any = None) -> float:
    model = _load(model)
    texts, labels = parse_labelled(data, classes)
    feats = F.features(model, texts)
    norm = model.layers[-1].ln2
    return float((F.predict(F.load_checkpoint(checkpoint), feats, norm.gamma, norm.beta) == labels).mean())


class FinetuneTrainer(Trainer):
    """``finetune`` of MiniLM: LoRA and a head on the frozen encoder's exact features, every op of
    every step a record, judged by the training referees."""

    kind, models, code, judged_on_chain = "finetune", ("minilm",), 3, True
    defaults = (16, "adam", 0.01)

    def params(self, training: Any) -> FinetuneParams:
        extra = {k: v for k, v in (("rank", training.rank), ("classes", training.classes)) if v is not None}
        return FinetuneParams(**training_args(training, self.defaults), **extra)

    def run(self, job: Any, backend: str, model: Any = None, tamper: Tamper | None = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        return run_finetune_job(job.inputs, job.params, job.start, backend, model, progress, tamper=tamper)

    def build_program(self, job: Any, model: Any = None) -> list[Any]:
        parse_labelled(job.inputs, job.params.classes)  # data the job cannot use is refused before anything is locked
        return finetune_program(job.params, job.start, job.inputs, model)

    def records(self, job: Any, indices: set[int], model: Any = None,
                tamper: Tamper | None = None) -> dict[int, np.ndarray]:
        return record_tensors(job.inputs, job.params, job.start, indices, model, tamper)

    def constants(self, job: Any, model: Any = None) -> dict[bytes, np.ndarray]:
        return {X.exp_table_digest(): X.exp_table_tensor()}

    def load_checkpoint(self, blob: bytes) -> Any:
        return F.load_checkpoint(blob)

    def named(self, state: Any) -> list[tuple[str, np.ndarray]]:
        return named(state)

    def evaluate(self, job: Any, checkpoint: bytes, data: bytes) -> str:
        return f"accuracy {accuracy(checkpoint, data, job.params.classes):.4f}"

    def estimate(self, job: Any, program: list[Any] | None = None) -> Any:
        """The frozen encoder's forward over every text once, plus the adapter's and head's steps."""
        from veracity.workloads.planner import JobEstimate, human, model_params

        p, model = job.params, job.model()
        texts, _ = parse_labelled(job.inputs, p.classes)
        tokens = sum(len(model.parse({"text": t})) for t in texts)
        n = model_params(model)
        trained = p.rank * (model.cfg.intermediate + model.cfg.hidden) + p.classes * model.cfg.hidden
        per_step = 6.0 * trained * p.batch * tokens / max(1, len(texts))
        return JobEstimate(2.0 * n * tokens + per_step * p.steps, n + 8.0 * tokens * model.cfg.intermediate * 2,
                           f"{human(n)} frozen weights over {tokens} tokens, {p.steps} steps of {human(trained)} "
                           "parameters")


register(FinetuneTrainer())
