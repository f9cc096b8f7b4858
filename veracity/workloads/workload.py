"""What a job kind is to the nodes (the ``Workload`` protocol), and the registry of kinds.

A workload is registered by its spec's (kind, model): ``("infer", None)`` serves every model the
model registry knows, ``("train", "digits-mlp")`` one. Adding a kind (an LLM, a scorer, a
synthesizer) is one new module in this package that defines a workload and calls ``register``:
the registry imports every module of the package the first time it is asked, so nothing else is
edited. ``jobs.Job`` hands each question about a job to its workload.

    w = workload_for("finetune", "minilm")
    w.run(job, "torch")          # JobResult: outputs (JSONL or a checkpoint), commitments, trace
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from veracity.errors import InputError
from veracity.exact.trace import outputs_root

if TYPE_CHECKING:
    from veracity.workloads.jobs import Job
    from veracity.workloads.planner import JobEstimate
    from veracity.workloads.spec import Training

Tamper = Callable[[int, str, Any], Any]


@dataclass(frozen=True)
class JobResult:
    outputs: bytes  # an infer job: the output JSONL; a training job: the checkpoint blob
    output_hash: bytes
    trace_root: bytes
    steps: int
    ops: int
    trace: bytes = b""  # the trace records as a blob (``trace.encode_records``); its root is trace_root
    kept: dict[int, Any] = field(default_factory=dict)  # tensors of records asked for (disputes)
    output_digests: list[bytes] = field(default_factory=list)  # the output records' digests, committed
    coarse: bool = False  # the trace is the coarse one (``exact.levels``); else every record (``Job.run`` cuts it)

    @property
    def output_root(self) -> bytes:
        """The order's output CID once committed (``trace.outputs_root``)."""
        return outputs_root(self.output_digests)


class Workload(Protocol):
    """A job kind: how a job of it runs, what its trace must be, and how its outputs are checked."""

    kind: str  # the spec's ``kind``
    code: int  # the kind's number on chain (``JobSpec.kind_code``)
    trains: bool  # its output is a checkpoint
    judged_on_chain: bool  # a referee judges inside every record of its trace (else re-execution only)

    @property
    def models(self) -> tuple[str, ...] | None:
        """The models it serves (None: any the model registry knows)."""

    @property
    def defaults(self) -> tuple[int, str, float] | None:
        """A training kind's (batch, optimizer, lr) where a spec leaves them out."""

    def params(self, training: "Training | None") -> Any:
        """The job's parameters from its spec's ``training`` section (a training kind; other kinds
        raise InputError)."""

    def run(self, job: "Job", backend: str, model: Any = None, tamper: Tamper | None = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        """The job's result; ``tamper`` replays a cheat (tests, the demo)."""

    def program(self, job: "Job", model: Any = None, limit: int | None = None) -> list[Any]:
        """What each record of the job's trace must be (``exact.program``); refuses inputs the job
        cannot take, and programs longer than ``limit`` (``ProgramTooLarge``)."""

    def records(self, job: "Job", indices: set[int], model: Any = None,
                tamper: Tamper | None = None) -> dict[int, np.ndarray]:
        """The tensors of records ``indices``, recomputed by re-running the job (exact)."""

    def constants(self, job: "Job", model: Any = None) -> dict[bytes, np.ndarray]:
        """Every constant tensor the job's records may name, by digest (weights and tables)."""

    def served_tensors(self, job: "Job", outputs: bytes, model: Any = None) -> list[np.ndarray]:
        """The output records' tensors served outputs give, in output order; InputError when
        they cannot be read."""

    def evaluate(self, job: "Job", checkpoint: bytes, data: bytes) -> str:
        """A trained checkpoint's quality on held-out data, for people."""

    def estimate(self, job: "Job", program: list[Any] | None = None) -> "JobEstimate":
        """The job's FLOPs and memory (``planner.JobEstimate``)."""


class Trainer:
    """What every training kind shares: a checkpoint out, whose step must be its start's plus the
    job's steps; a program whose length follows from its first two steps. A subclass names its
    ``kind``, ``models``, ``defaults``, how it reads a checkpoint blob (``load_checkpoint``: a state
    with a ``step``) and the state's tensors by record name (``named``)."""

    trains = True
    code = 0
    kind = ""
    models: tuple[str, ...] | None = None
    judged_on_chain = False
    defaults: tuple[int, str, float] | None = None

    def load_checkpoint(self, blob: bytes) -> Any:
        raise NotImplementedError

    def named(self, state: Any) -> list[tuple[str, np.ndarray]]:
        raise NotImplementedError

    def build_program(self, job: "Job", model: Any = None) -> list[Any]:
        raise NotImplementedError

    def program(self, job: "Job", model: Any = None, limit: int | None = None) -> list[Any]:
        """The program, refused before it is built when its length (known from its steps:
        ``planner.program_records``) passes ``limit``."""
        if limit is not None:
            from veracity.exact.program import ProgramTooLarge
            from veracity.workloads.planner import program_records

            if (n := program_records(job, model)) > limit:
                raise ProgramTooLarge(f"its program has {n} records, more than {limit}")
        return self.build_program(job, model)

    def constants(self, job: "Job", model: Any = None) -> dict[bytes, np.ndarray]:
        return {}

    def final_step(self, job: "Job") -> int:
        """The step the job's checkpoint ends at: its start checkpoint's, plus its steps."""
        return (int(self.load_checkpoint(job.start).step) if job.start else 0) + job.params.steps

    def served_tensors(self, job: "Job", outputs: bytes, model: Any = None) -> list[np.ndarray]:
        """A served checkpoint's state tensors (the outputs its program names, in state order); its step counter, which no output record holds,
        must be the job's final step (the next work unit's batches follow from it)."""
        try:
            state = self.load_checkpoint(outputs)
        except ValueError as exc:
            raise InputError(f"the checkpoint cannot be read ({exc})") from None
        if (step := int(state.step)) != (final := self.final_step(job)):
            raise InputError(f"the checkpoint says step {step}; the job ends at step {final}")
        return [t for _, t in self.named(state)]


_REGISTRY: dict[tuple[str, str | None], Workload] = {}
_discovered = False
_discovering = threading.RLock()


def register(workload: Workload) -> Workload:
    """Register ``workload`` under its kind and each of its models (or any model: None)."""
    for model in workload.models or (None,):
        key = (workload.kind, model)
        if key in _REGISTRY and _REGISTRY[key] is not workload:
            raise ValueError(f"a workload for {key} is registered already")
        _REGISTRY[key] = workload
    return workload


def _discover() -> None:
    """Import every module of this package once, so each registers its workloads (under a lock:
    a thread that asks while another imports waits for the whole registry)."""
    global _discovered
    with _discovering:
        if not _discovered:
            import veracity.workloads as package

            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package.__name__}.{info.name}")
            _discovered = True


def workload_for(kind: str, model: str) -> Workload:
    """The workload that runs ``kind`` jobs of ``model``; InputError naming the choices otherwise."""
    _discover()
    found = _REGISTRY.get((kind, model)) or _REGISTRY.get((kind, None))
    if found is None:
        known = kinds()
        if kind not in known:
            raise InputError(f"unknown job kind {kind!r}: use {', '.join(sorted(known))}")
        raise InputError(f"model {model!r} cannot be trained by a {kind} job: use {', '.join(sorted(known[kind]))}")
    return found


def kinds() -> dict[str, tuple[str, ...]]:
    """Every registered kind, with the models it is registered for (empty: any model)."""
    _discover()
    out: dict[str, tuple[str, ...]] = {}
    for kind, model in _REGISTRY:
        out[kind] = out.get(kind, ()) + ((model,) if model is not None else ())
    return out


def workloads() -> list[Workload]:
    """Every registered workload (one per kind and model it serves)."""
    _discover()
    return list(_REGISTRY.values())


def trains(kind: str) -> bool:
    """Whether ``kind``'s jobs train (their output is a checkpoint)."""
    _discover()
    return any(w.trains for (k, _), w in _REGISTRY.items() if k == kind)


def training_args(training: "Training", defaults: tuple[int, str, float]) -> dict[str, Any]:
    """A training section's common parameters, ``defaults`` (batch, optimizer, lr) where it leaves
    them out."""
    given = {k: v if v is not None else d for k, v, d in
             zip(("batch", "optimizer", "lr"), (training.batch, training.optimizer, training.lr), defaults)}
    return {"steps": training.steps, "seed": training.seed, "init_seed": training.init_seed, **given}
