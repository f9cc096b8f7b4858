"""A job of any kind, as the nodes handle it: its spec and the blobs it reads, and what a node does
with one (run it, compute its program, recompute records for a dispute, check what a provider
served against its committed output), each answered by the job's ``Workload`` (its kind).

    job = Job(spec, inputs, start)   # start: the checkpoint a training work unit resumes from
    job.run("torch")                 # JobResult: outputs (JSONL or a checkpoint), output hash, trace
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.workloads.spec import INFER_BATCH, JobSpec, parse_spec
from veracity.workloads.workload import JobResult, Workload, workload_for


def judged_on_chain(spec: JobSpec) -> bool:
    """Whether a dispute over ``spec``'s result can be judged inside every record (inference, the
    digits MLP's and the tiny GPT's training). A fine-tune's steps are state records that no
    referee judges yet: re-executed and compared, but a wrong result cannot be overturned on chain."""
    return workload_for(spec.kind, spec.model).judged_on_chain


@dataclass(frozen=True)
class Job:
    spec: JobSpec
    inputs: bytes
    start: bytes | None = None  # a training job's start checkpoint (None: a fresh initialisation)

    @property
    def workload(self) -> Workload:
        """The job's kind (``workloads.workload``), which answers every question below."""
        return workload_for(self.spec.kind, self.spec.model)

    @property
    def model_name(self) -> str:
        return self.spec.model

    @property
    def batch(self) -> int:
        """An infer job's items per batch (its trace depends on it, its outputs do not)."""
        return self.spec.batch or INFER_BATCH

    @property
    def trains(self) -> bool:
        """A training job (train or finetune): its output is a checkpoint."""
        return self.workload.trains

    @property
    def params(self) -> Any:
        return self.workload.params(self.spec.training)

    @property
    def disputable(self) -> bool:
        """Whether a dispute can be judged inside every record (``judged_on_chain``)."""
        return self.workload.judged_on_chain

    def model(self) -> Any:
        from veracity.models.registry import loaded

        return loaded(self.spec.model)

    def run(self, backend: str = "torch", model: Any = None, tamper: Any = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        """The job's result; ``progress`` hears each finished optimizer step of a training job;
        ``tamper`` replays a cheat (tests, the demo: an Exec hook, or a digits-MLP tape hook)."""
        result = self.workload.run(self, backend, model, tamper, progress)
        if result.coarse:
            return result
        from dataclasses import replace

        from veracity.exact.trace import decode_records, encode_records, records_root

        coarse = self.levels(model).coarse_records(decode_records(result.trace))
        return replace(result, trace_root=records_root(coarse), ops=len(coarse), trace=encode_records(coarse),
                       coarse=True)

    def levels(self, model: Any = None, limit: int | None = None) -> Any:
        """The job's program as two levels (``exact.levels.Levels``): its coarse records, committed
        while it runs, and each step's records, derived in a dispute."""
        from veracity.exact.levels import Levels

        return Levels.of(self.program(model, limit))

    def posted_program(self, model: Any = None, limit: int | None = None) -> list[Any]:
        """The program a client posts with the order (``exact.levels``: the coarse records'
        descriptors, each naming its step's op-level program root)."""
        return self.levels(model, limit).coarse_program()

    def step_records(self, levels: Any, step: int, model: Any = None, tamper: Any = None,
                     keep: dict[int, np.ndarray] | None = None) -> list[Any]:
        """Step ``step``'s op-level trace records (``exact.levels``), recomputed by re-running the job
        (exact, so the bits it hashed; ``tamper`` replays a cheat). ``keep``: filled with the
        tensors of the step's records and of every record they read, from the same run (what the
        rest of a game inside the step shows)."""
        from veracity.exact.trace import CODE_DTYPES, TraceRecord, tensor_digest

        wanted = levels.steps[step]
        reads = {r for i in wanted for r in levels.program[i].inputs if r < len(levels.program)}
        got = self.tensors(set(wanted) | (reads if keep is not None else set()), model, tamper)
        if keep is not None:
            keep.update(got)
        return [TraceRecord(d.step, d.op, tensor_digest(got[i].astype(CODE_DTYPES[d.dtype])))
                for i, d in ((i, levels.program[i]) for i in wanted)]

    def program(self, model: Any = None, limit: int | None = None) -> list[Any]:
        """What each record of the job's trace must be (``exact.program``). A program of more than
        ``limit`` records is ``ProgramTooLarge``: a training one before it is built (its length is
        known from its steps: ``planner.program_records``), an inference one once it passes it."""
        return self.workload.program(self, model, limit)

    def tensors(self, indices: set[int], model: Any = None, tamper: Any = None) -> dict[int, np.ndarray]:
        """The tensors of records ``indices``, recomputed by re-running the job (exact); ``tamper``
        replays a cheat (an Exec hook for inference, a tape hook for the digits MLP's training)."""
        return self.workload.records(self, indices, model, tamper)

    def constants(self, model: Any = None) -> dict[bytes, np.ndarray]:
        """Every constant tensor the job's records may name, by digest (weights and tables)."""
        return self.workload.constants(self, model)

    def evaluate(self, checkpoint: bytes, data: bytes) -> str:
        """A trained checkpoint's quality on held-out data, for people: accuracy on labelled
        examples (the digits MLP, a fine-tune) or the mean next-character loss (the tiny GPT)."""
        return self.workload.evaluate(self, checkpoint, data)

    def served_tensors(self, outputs: bytes, model: Any = None) -> list[np.ndarray]:
        """The output records' tensors that outputs a provider served give, in output order;
        InputError when they cannot be read as this job's outputs (a checkpoint must also end at
        the job's final step)."""
        return self.workload.served_tensors(self, outputs, model)

    def served_digests(self, outputs: bytes, model: Any = None) -> list[bytes]:
        """Their digests: what the committed output root must be over."""
        from veracity.exact.trace import tensor_digest

        return [tensor_digest(t) for t in self.served_tensors(outputs, model)]

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

    def final_step(self) -> int:
        """The step a training job's checkpoint ends at: its start checkpoint's, plus its steps."""
        return self.workload.final_step(self)  # type: ignore[attr-defined]


def infer_job(model: str, inputs: bytes) -> Job:
    """A bare ``infer`` job (no order terms): what a local run or a test hands a worker. The model
    name is checked when it runs, so an unknown one is refused there like any bad input."""
    from veracity.cid import cid_of
    from veracity.workloads.spec import Inputs

    spec = JobSpec.model_construct(kind="infer", model=model, inputs=Inputs(cid=cid_of(inputs)), max_price=1.0,
                                   deadline=1, training=None, batch=None)
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
