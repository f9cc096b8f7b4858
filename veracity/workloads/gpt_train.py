"""The ``train`` job kind for the tiny GPT: exact next-character training from scratch on a text
(``training.gpt``), a checkpoint out, every optimizer step one trace step.

Inputs are JSONL, one ``{"text": "..."}`` per line; the lines joined by newlines are the corpus
(the shipped one is ``examples/inputs/tiny-corpus.jsonl``). Every character must be in the tiny
GPT's vocabulary (the shipped model's). The model's shape is the shipped tiny GPT's (2 layers of
128, 4 heads) with a context of ``CTX`` characters.

The program names every op of every step (``training.gpt.gpt_step``: the batch, the forward
through embeddings, LayerNorms, attention, GELU and the head, the loss, every backward op, each
state tensor's update), from one traced template step (``step_template``). A provider commits the
coarse trace while it runs (``exact.levels``: the start state, then each step's state tensors,
which are what the next step reads); a dispute opens the step the coarse traces first differ in,
both parties recompute its op records, and the TrainReferee, TrainNormReferee and
TrainAttentionReferee judge the one element the game reaches.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.exact import integer as X
from veracity.exact import program as P
from veracity.exact import spec
from veracity.exact.trace import encode_records, records_root, tensor_digest
from veracity.training import gpt as GT
from veracity.training import tape as TP
from veracity.workloads import states as TR
from veracity.workloads.infer import input_records
from veracity.workloads.workload import JobResult, Tamper, Trainer, register, training_args

CTX = 64
HEADS = 4


def shape() -> GT.Shape:
    from veracity.models.registry import loaded

    cfg = loaded("tiny-gpt").cfg
    return GT.Shape(vocab=len(cfg.vocab), block=CTX, layers=cfg.layers, heads=cfg.heads, embd=cfg.embd)


def corpus_ids(data: bytes) -> np.ndarray:
    """The corpus as token ids: the JSONL lines' texts joined by newlines, in the model's vocabulary."""
    from veracity.models.registry import loaded

    vocab = loaded("tiny-gpt").cfg.vocab
    texts = []
    for n, rec in input_records(data, "training text"):
        t = rec.get("text")
        if not isinstance(t, str):
            raise InputError(f'training text line {n}: "text" must be a string')
        bad = sorted(set(t) - set(vocab))
        if bad:
            raise InputError(f"training text line {n}: characters {''.join(bad)!r} are not in tiny-gpt's vocabulary")
        texts.append(t)
    text = "\n".join(texts)
    if len(text) < CTX + 2:
        raise InputError(f"training text has {len(text)} characters; tiny-gpt trains on windows of {CTX + 1}")
    index = {c: i for i, c in enumerate(vocab)}
    return np.array([index[c] for c in text], dtype=np.int64)


def start_state(params: Any, start: bytes | None) -> GT.GPTState:
    try:
        return GT.load_checkpoint(start, shape()) if start is not None else GT.GPTState.init(shape(), params.init_seed)
    except ValueError as exc:
        raise InputError(f"the start checkpoint cannot be read ({exc})") from None


def named(state: GT.GPTState) -> TR.Named:
    """The state's tensors by record name: ``state.wte`` ... ``state.m.wte`` ... ``state.s.head.w``."""
    return [(f"state.{group}{name}", t) for group, ts in (("", state.params), ("m.", state.m), ("s.", state.s))
            for name, t in ts.items()]


@dataclass(frozen=True)
class StepTemplate:
    """One traced optimizer step's descriptors, from which every step's are made: the start
    state's input records (``named`` order), then the step's records, whose inputs number the
    start records from 0 and the step's own from ``len(start)``."""

    start: tuple[Any, ...]
    step: tuple[Any, ...]
    writes: dict[str, int]  # a state tensor's record name -> the step record that leaves it

    @property
    def per_step(self) -> int:
        return len(self.step)


@lru_cache(maxsize=8)
def _template(sh: GT.Shape, batch: int, cfg_key: tuple[Any, ...]) -> StepTemplate:
    cfg = X.SGDConfig(*cfg_key)
    state = GT.GPTState.init(sh, 0)
    tape = TP.Tape()
    tape.start(0, named(state))
    ids = np.zeros((batch, CTX), dtype=np.int64)
    GT.gpt_step(state, ids, ids, cfg, HEADS, "torch", tape)
    n0 = len(named(state))
    step = tuple(tape.descs[n0:])
    if any(i < 0 for d in step for i in d.inputs):
        raise AssertionError("a tiny-GPT step record reads a record its tape did not name")
    coarse = set(GT.coarse_names(state))
    return StepTemplate(tuple(tape.descs[:n0]), step, {d.op: j for j, d in enumerate(step) if d.op in coarse})


def step_template(cfg: X.SGDConfig) -> StepTemplate:
    """The template of a job's steps (``StepTemplate``): traced once per shape, batch and optimizer."""
    return _template(shape(), cfg.batch, astuple(replace(cfg, seed=0)))


def gpt_train_program(params: Any, start: bytes | None, data: bytes) -> list[Any]:
    """Every record of every step (``training.gpt.gpt_step``): the start state's tensors as inputs
    (their digests the client computes), then each step's batch (ids, targets, positions) and its
    ops, from one traced template step (``states.steps_program``)."""
    cfg = params.config()
    ids = corpus_ids(data)
    state = start_state(params, start)
    tpl = step_template(cfg)

    def step(k: int) -> tuple[tuple[Any, ...], list[bytes]]:
        x, y = GT.windows(ids, state.step + k, cfg.batch, CTX, cfg.seed)
        return tpl.step, [tensor_digest(t) for _, t in GT.step_inputs(x, y)]

    return TR.steps_program(tpl.start, named(state), state.step, params.steps, tpl.writes, step)


def run_gpt_train_job(data: bytes, params: Any, start: bytes | None = None, backend: str = "torch",
                      progress: Callable[[int], None] | None = None, keep: set[int] | None = None,
                      tamper: Tamper | None = None) -> JobResult:
    """Train from ``start`` or a fresh initialisation for ``params.steps`` (``TrainParams``). The
    trace is the coarse one (``exact.levels``): the start state's records, then each step's state
    records. A step is recorded op by op only when ``keep`` asks for one of its records (a
    dispute) or ``tamper`` may alter any (an adversary's replay): the records ``gpt_train_program``
    names, numbered as it numbers them."""
    cfg = params.config()
    ids = corpus_ids(data)
    state = start_state(params, start)
    names = [name for name, _ in named(state)]
    records = TR.start_records(state.step, named(state))
    kept: dict[int, np.ndarray] = {i: named(state)[i][1].copy() for i in (keep or set()) if i < len(names)}
    tpl = step_template(cfg) if keep or tamper is not None else None
    try:
        for k in range(params.steps):
            tape = TP.NULL_TAPE
            if tpl is not None:
                base = len(tpl.start) + k * tpl.per_step
                if tamper is not None or any(base <= i < base + tpl.per_step for i in keep or ()):
                    tape = TP.Tape(keep=keep, tamper=tamper, base=base)
                    tape.at.update(TR.state_places(names, len(tpl.start), tpl.per_step, tpl.writes, k))
            state = GT.train(state, ids, 1, cfg, HEADS, CTX, backend, tape=tape)
            kept.update(tape.kept)
            records += TR.state_records(state.step, list(zip(GT.coarse_names(state), GT.coarse_tensors(state))))
            if progress:
                progress(state.step)
    except ValueError as exc:
        raise InputError(f"step {state.step + 1}: {exc}") from None
    result = JobResult(GT.checkpoint_bytes(state), GT.checkpoint_hash(state), records_root(records), params.steps,
                       len(records), encode_records(records), output_digests=TR.state_digests(named(state)),
                       coarse=True)
    result.kept.update(kept)
    return result


def record_tensors(data: bytes, params: Any, start: bytes | None, indices: set[int],
                   tamper: Tamper | None = None) -> dict[int, np.ndarray]:
    """Re-run a job (exact, so the same bits) and keep the tensors of records ``indices``, tracing
    only the steps they are in (``tamper`` replays a cheat, and traces every step)."""
    return run_gpt_train_job(data, params, start, "torch", keep=set(indices), tamper=tamper).kept


def heldout_loss(checkpoint: bytes, data: bytes, windows: int = 32) -> float:
    """The checkpoint's mean next-character loss on windows of another text (seeded, fixed)."""
    ids = corpus_ids(data)
    x, y = GT.windows(ids, 0, windows, CTX, 12345)
    return GT.loss(GT.load_checkpoint(checkpoint, shape()), x, y, HEADS)


def generate(checkpoint: bytes, prompt: str, n: int) -> str:
    """Greedy continuation of ``prompt`` by a trained checkpoint (the exact forward, no trace)."""
    from veracity.models.registry import loaded

    vocab = loaded("tiny-gpt").cfg.vocab
    state = GT.load_checkpoint(checkpoint, shape())
    ids = [vocab.index(c) for c in prompt]
    for _ in range(n):
        window = np.array([ids[-CTX:]])
        logits = GT.forward(state, window, HEADS, "numpy")[0]
        ids.append(int(np.argmax(logits[-1])))
    return "".join(vocab[i] for i in ids[len(prompt):])



class GPTTrainer(Trainer):
    """``train`` of the tiny GPT from scratch on a text: every op of every step a record, judged
    by the training referees."""

    kind, models, code, judged_on_chain = "train", ("tiny-gpt",), 2, True
    defaults = (8, "adam", 0.003)

    def params(self, training: Any) -> Any:
        from veracity.workloads.train import TrainParams

        return TrainParams(**training_args(training, self.defaults))

    def run(self, job: Any, backend: str, model: Any = None, tamper: Tamper | None = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        return run_gpt_train_job(job.inputs, job.params, job.start, backend, progress, tamper=tamper)

    def build_program(self, job: Any, model: Any = None) -> list[Any]:
        return gpt_train_program(job.params, job.start, job.inputs)

    def records(self, job: Any, indices: set[int], model: Any = None,
                tamper: Tamper | None = None) -> dict[int, np.ndarray]:
        return record_tensors(job.inputs, job.params, job.start, indices, tamper)

    def constants(self, job: Any, model: Any = None) -> dict[bytes, np.ndarray]:
        exp_d, gelu_d, slope_d = GT.table_digests()
        return {exp_d: X.exp_table_tensor(), gelu_d: P.lut_tensors(spec.gelu_lut())[0],
                slope_d: GT.gelu_slope_tensor()}

    def load_checkpoint(self, blob: bytes) -> Any:
        return GT.load_checkpoint(blob, shape())

    def named(self, state: Any) -> list[tuple[str, np.ndarray]]:
        return named(state)

    def evaluate(self, job: Any, checkpoint: bytes, data: bytes) -> str:
        return f"loss {heldout_loss(checkpoint, data):.4f} nats per character"

    def estimate(self, job: Any, program: list[Any] | None = None) -> Any:
        """6 x parameters per token per step, plus attention's scores and context."""
        from veracity.workloads.planner import JobEstimate, human

        p, sh = job.params, shape()
        n = 12 * sh.layers * sh.embd ** 2 + sh.vocab * sh.embd  # the blocks' matrices and the LM head
        tokens = p.batch * CTX
        attention = 12 * sh.layers * CTX * sh.embd  # per token: scores and context, forward and backward
        return JobEstimate((6.0 * n + attention) * tokens * p.steps, 8.0 * 3 * n + 8.0 * tokens * sh.embd * 16,
                           f"{human(n)} parameters, {p.steps} steps of {p.batch} x {CTX} characters")


register(GPTTrainer())
