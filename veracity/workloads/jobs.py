"""A job of any kind, as the nodes handle it: its spec and the blobs it reads, and the four things
a node does with one (run it, compute its program, recompute records for a dispute, check what
a provider served against its committed trace), dispatched on the spec's kind.

    job = Job(spec, inputs, start)   # start: the checkpoint a training work unit resumes from
    job.run("torch")                 # JobResult: outputs (JSONL or a checkpoint), output hash, trace
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.exact.program import ProgramTooLarge
from veracity.workloads import finetune as FT
from veracity.workloads import gpt_train as GPT
from veracity.workloads import infer as I
from veracity.workloads import train as T
from veracity.workloads.spec import JobSpec, parse_spec


def judged_on_chain(spec: JobSpec) -> bool:
    """Whether a dispute over ``spec``'s result can be judged inside every record (inference, the
    digits MLP's training). A fine-tune's and the tiny GPT's training steps are state records that
    no referee judges yet (op-level referees for them come with multi-level traces): re-executed
    and compared, but a wrong result cannot be overturned on chain."""
    return spec.kind == "infer" or (spec.kind == "train" and spec.model != "tiny-gpt")


@dataclass(frozen=True)
class Job:
    spec: JobSpec
    inputs: bytes
    start: bytes | None = None  # a train job's start checkpoint (None: a fresh initialisation)

    @property
    def model_name(self) -> str:
        return self.spec.model

    @property
    def trains(self) -> bool:
        """A training job (train or finetune): its output is a checkpoint."""
        return self.spec.kind in ("train", "finetune")

    @property
    def params(self) -> Any:
        return self.spec.training.params(self.spec.kind, self.spec.model)  # type: ignore[union-attr]

    @property
    def gpt(self) -> bool:
        """Training the tiny GPT (its steps are trace steps of state records)."""
        return self.spec.kind == "train" and self.spec.model == "tiny-gpt"

    @property
    def disputable(self) -> bool:
        """Whether a dispute can be judged inside every record (``judged_on_chain``)."""
        return judged_on_chain(self.spec)

    def model(self) -> Any:
        from veracity.models.registry import loaded

        return loaded(self.spec.model)

    def run(self, backend: str = "torch", model: Any = None, tamper: Any = None,
            progress: Callable[[int], None] | None = None) -> I.JobResult:
        """The job's result; ``progress`` hears each finished optimizer step of a training job;
        ``tamper`` replays a cheat (tests, the demo: an Exec hook, or a digits-MLP tape hook)."""
        if self.spec.kind == "finetune":
            return FT.run_finetune_job(self.inputs, self.params, self.start, backend, model, progress)
        if self.gpt:
            return GPT.run_gpt_train_job(self.inputs, self.params, self.start, backend, progress)
        if self.trains:
            return T.run_train_job(self.inputs, self.params, self.start, backend, progress, tamper=tamper)
        return I.run_infer_job(self.spec.model, self.inputs, backend, model=model, tamper=tamper)

    def program(self, model: Any = None, limit: int | None = None) -> list[Any]:
        """What each record of the job's trace must be (``exact.program``). A program of more than
        ``limit`` records is ``ProgramTooLarge``: a training one before it is built (its length is
        known from its steps: ``planner.program_records``), an inference one once it passes it."""
        if limit is not None and self.trains:
            from veracity.workloads.planner import program_records

            if (n := program_records(self, model)) > limit:
                raise ProgramTooLarge(f"its program has {n} records, more than {limit}")
        if self.spec.kind == "finetune":  # data the job cannot use is refused before anything is locked
            FT.parse_labelled(self.inputs, self.params.classes)
            return FT.finetune_program(self.params, self.start, model)
        if self.gpt:
            return GPT.gpt_train_program(self.params, self.start, self.inputs)
        if self.trains:
            return T.train_program(self.params, self.start, self.inputs)
        return I.job_program(self.spec.model, self.inputs, model, limit=limit)

    def tensors(self, indices: set[int], model: Any = None, tamper: Any = None) -> dict[int, np.ndarray]:
        """The tensors of records ``indices``, recomputed by re-running the job (exact); ``tamper``
        replays a cheat (an Exec hook for inference, a tape hook for the digits MLP's training)."""
        if self.spec.kind == "finetune":
            return FT.record_tensors(self.inputs, self.params, self.start, indices, model)
        if self.gpt:
            return GPT.record_tensors(self.inputs, self.params, self.start, indices)
        if self.trains:
            return T.record_tensors(self.inputs, self.params, self.start, indices, tamper)
        return I.record_tensors(self.spec.model, self.inputs, indices, model=model, tamper=tamper)

    def constants(self, model: Any = None) -> dict[bytes, np.ndarray]:
        """Every constant tensor the job's records may name, by digest (weights and tables)."""
        from veracity.exact import program as P

        if self.spec.kind == "train" and not self.gpt:
            from veracity.exact.integer import exp_table_digest, exp_table_tensor

            return {exp_table_digest(): exp_table_tensor()}
        if self.trains:
            return {}
        return P.model_constants(model if model is not None else self.model())

    def evaluate(self, checkpoint: bytes, data: bytes) -> str:
        """A trained checkpoint's quality on held-out data, for people: accuracy on labelled
        examples (the digits MLP, a fine-tune) or the mean next-character loss (the tiny GPT)."""
        if self.spec.kind == "finetune":
            return f"accuracy {FT.accuracy(checkpoint, data, self.params.classes):.4f}"
        if self.gpt:
            return f"loss {GPT.heldout_loss(checkpoint, data):.4f} nats per character"
        if self.trains:
            return f"accuracy {T.accuracy(checkpoint, data):.4f}"
        raise InputError("only a training job's checkpoint is evaluated")

    def served_digests(self, outputs: bytes, model: Any = None) -> list[bytes]:
        """The output record digests that outputs a provider served give (what its output root
        must be over); InputError when they cannot be read as this job's outputs. A checkpoint's
        step counter, which no output record holds, must be its start's plus the job's steps
        (the next work unit's batches follow from it)."""
        if not self.trains:
            return I.served_digests(self.spec.model, self.inputs, outputs, model)
        kind = self._trainer()
        try:
            digests, step = kind.checkpoint_digests(outputs), kind.checkpoint_step(outputs)
        except ValueError as exc:
            raise InputError(f"the checkpoint cannot be read ({exc})") from None
        if step != (final := self.final_step()):
            raise InputError(f"the checkpoint says step {step}; the job ends at step {final}")
        return digests

    def check_served(self, outputs: bytes, output_root: bytes, model: Any = None) -> str | None:
        """What is wrong with outputs a provider served, against the output root it committed
        (None: nothing). The root itself is bound to the trace on chain (``prove_output_fault``)."""
        from veracity.exact.trace import outputs_root

        try:
            digests = self.served_digests(outputs, model)
        except InputError as exc:
            return str(exc)
        if outputs_root(digests) != output_root:
            return "the served outputs are not the committed output (their output root differs)"
        return None

    def _trainer(self) -> Any:
        return FT if self.spec.kind == "finetune" else GPT if self.gpt else T

    def final_step(self) -> int:
        """The step a training job's checkpoint ends at: its start checkpoint's, plus its steps."""
        kind = self._trainer()
        return (kind.checkpoint_step(self.start) if self.start else 0) + self.params.steps


def infer_job(model: str, inputs: bytes) -> Job:
    """A bare ``infer`` job (no order terms): what a local run or a test hands a worker. The model
    name is checked when it runs, so an unknown one is refused there like any bad input."""
    from veracity.cid import cid_of
    from veracity.workloads.spec import Inputs

    spec = JobSpec.model_construct(kind="infer", model=model, inputs=Inputs(cid=cid_of(inputs)), max_price=1.0,
                                   deadline=1, training=None)
    return Job(spec, inputs)


def job_from_blobs(spec_bytes: bytes, get: Callable[[str, str], bytes], source: str = "spec") -> Job:
    """A job from its spec blob, reading the blobs it names with ``get(cid, what)`` (what: "inputs"
    or "start checkpoint")."""
    spec = parse_spec(spec_bytes.decode("utf-8", "replace"), source)
    if spec.inputs.cid is None and spec.inputs.inline is None:
        raise InputError(f"{source} names its inputs by a local path, not a CID: the client must upload them")
    start = spec.training.start if spec.training is not None else None
    inputs = spec.inputs.inline.encode() if spec.inputs.inline is not None else get(spec.inputs.cid, "inputs")  # type: ignore[arg-type]
    return Job(spec, inputs, get(start, "start checkpoint") if start else None)
