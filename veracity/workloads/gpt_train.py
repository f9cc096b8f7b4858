"""The ``train`` job kind for the tiny GPT: exact next-character training from scratch on a text
(``training.gpt``), a checkpoint out, every optimizer step one trace step.

Inputs are JSONL, one ``{"text": "..."}`` per line; the lines joined by newlines are the corpus
(the shipped one is ``examples/inputs/tiny-corpus.jsonl``). Every character must be in the tiny
GPT's vocabulary (the shipped model's). The model's shape is the shipped tiny GPT's (2 layers of
128, 4 heads) with a context of ``CTX`` characters. Step ``s``'s trace records are every
parameter and its two Adam moments after it; no referee judges inside a transformer step yet
(the digits MLP's steps are judged op by op), so validators re-execute these jobs and report a
mismatch without challenging.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.exact.program import check_disputable
from veracity.exact.trace import TraceRecord, encode_records, records_root
from veracity.training import gpt as GT
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


def run_gpt_train_job(data: bytes, params: Any, start: bytes | None = None, backend: str = "torch",
                      progress: Callable[[int], None] | None = None, keep: set[int] | None = None) -> JobResult:
    """Train from ``start`` or a fresh initialisation for ``params.steps`` (``TrainParams``)."""
    cfg = params.config()
    ids = corpus_ids(data)
    state = start_state(params, start)
    records: list[TraceRecord] = []
    kept: dict[int, np.ndarray] = {}
    try:
        for _ in range(params.steps):
            state = GT.train(state, ids, 1, cfg, HEADS, CTX, backend)
            TR.keep_step(kept, keep, len(records), named(state))
            records += TR.state_records(state.step, named(state))
            if progress:
                progress(state.step)
    except ValueError as exc:
        raise InputError(f"step {state.step + 1}: {exc}") from None
    result = JobResult(GT.checkpoint_bytes(state), GT.checkpoint_hash(state), records_root(records), params.steps,
                       len(records), encode_records(records), output_digests=TR.state_digests(named(state)))
    result.kept.update(kept)
    return result


def gpt_train_program(params: Any, start: bytes | None, data: bytes) -> list[Any]:
    """One ``STATE`` descriptor per parameter and moment per step (``train.state_program``): the
    learning rate, batch and context packed in one parameter, the data seed and a hash of the
    corpus in the other."""
    cfg = params.config()
    corpus = int.from_bytes(hashlib.sha256(corpus_ids(data).tobytes()).digest()[:7], "big")
    state = start_state(params, start)
    program = TR.state_program(state.step, named(state), params.steps,
                               (cfg.lr_num | cfg.batch << 32 | CTX << 48, cfg.seed % (1 << 62) ^ corpus))
    check_disputable(program)  # its rows fit what a dispute reads (a fine-tune's adapter rows do not)
    return program


def record_tensors(data: bytes, params: Any, start: bytes | None, indices: set[int]) -> dict[int, np.ndarray]:
    return run_gpt_train_job(data, params, start, "numpy", keep=set(indices)).kept


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
    """``train`` of the tiny GPT from scratch on a text; its steps are state records (re-executed
    and compared; no referee judges inside a transformer step yet)."""

    kind, models, code, judged_on_chain = "train", ("tiny-gpt",), 2, False
    defaults = (8, "adam", 0.003)

    def params(self, training: Any) -> Any:
        from veracity.workloads.train import TrainParams

        return TrainParams(**training_args(training, self.defaults))

    def run(self, job: Any, backend: str, model: Any = None, tamper: Tamper | None = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        return run_gpt_train_job(job.inputs, job.params, job.start, backend, progress)

    def build_program(self, job: Any, model: Any = None) -> list[Any]:
        return gpt_train_program(job.params, job.start, job.inputs)

    def records(self, job: Any, indices: set[int], model: Any = None,
                tamper: Tamper | None = None) -> dict[int, np.ndarray]:
        return record_tensors(job.inputs, job.params, job.start, indices)

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
