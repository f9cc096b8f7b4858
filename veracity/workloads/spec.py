"""Job specs: YAML files validated by pydantic, with errors that name the field and the fix.

    kind: infer                    # job kind: infer, train or finetune (exact training; see below), synthesize
    model: minilm                  # a registry name: digits-mlp, minilm, tiny-gpt
    inputs: {path: inputs.jsonl}   # a local JSONL file, or {cid: bafkrei...} already in a blob store
    max_price: 5                   # VRC the client escrows at most
    deadline: 600                  # seconds from acceptance for the provider to commit
    batch: 32                      # infer: items per batch (the default; it changes the trace, not
                                   # the outputs: a gateway's window has 1, so each request's trace
                                   # is its own part of the window's, kept as it was served)
    verification:
      challenge_window: 60         # seconds during which anyone may challenge the result
      spot_check_rate: 0.1         # share of jobs validators re-execute

A ``train`` job (the digits MLP, from labelled JSONL ``{"pixels": [...], "label": 3}``) or a
``finetune`` job (MiniLM with a LoRA adapter and a head, from ``{"text": "...", "label": 1}``;
also ``rank`` and ``classes``) adds:

    training:
      steps: 60                    # optimizer steps this job runs (one trace step each)
      batch: 32
      optimizer: momentum          # sgd, momentum or adam
      lr: 0.05
      seed: 1                      # the data order
      init_seed: 0                 # the initial weights (unused when resuming)
      start: bafkrei...            # optional: the checkpoint CID a work unit resumes from

Its output is the checkpoint blob; a long job is split into work units, each starting from the
previous unit's committed checkpoint (``client.jobs.submit_units``).

A ``synthesize`` job (smollm2 or tiny-gpt) generates synthetic data: its inputs are one JSON object
``{"template": "... {seed} ...", "seeds": [...], "max_tokens": n}`` (``workloads.synthesize``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from veracity.cid import digest_of
from veracity.errors import InputError

MAX_STEPS = 100_000
INFER_BATCH = 32  # an infer job's items per batch when its spec names none


class Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = None
    cid: str | None = None
    inline: str | None = None  # the JSONL itself (an Oracle request's spec, built on chain, carries its input so)

    @model_validator(mode="after")
    def exactly_one(self) -> "Inputs":
        if sum(v is not None for v in (self.path, self.cid, self.inline)) != 1:
            raise ValueError("give exactly one of 'path' (a local JSONL file), 'cid' (a stored blob) or 'inline' "
                             "(the JSONL itself)")
        if self.cid is not None:
            try:
                digest_of(self.cid)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return self


class Verification(BaseModel):
    model_config = ConfigDict(extra="forbid")
    challenge_window: int = Field(default=60, ge=0, le=7 * 24 * 3600)
    spot_check_rate: float = Field(default=0.1, ge=0, le=1)


class Training(BaseModel):
    """Defaults by model (each workload's ``defaults``): the digits MLP batch 32, momentum, lr 0.05; the tiny GPT
    batch 8 windows of 64 characters, Adam, lr 0.003; MiniLM's fine-tune (LoRA rank 8 and a head
    over 2 classes) batch 16, Adam, lr 0.01."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(gt=0, le=MAX_STEPS)
    batch: int | None = Field(None, gt=0, le=1024)
    optimizer: Literal["sgd", "momentum", "adam"] | None = None
    lr: float | None = Field(None, gt=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**63)
    init_seed: int = Field(0, ge=0, lt=2**63)
    start: str | None = None  # the checkpoint CID a work unit resumes from
    rank: int | None = Field(None, ge=0, le=64)  # finetune: the adapter's rank (0: the head alone)
    classes: int | None = Field(None, ge=2, le=64)  # finetune: the labels are 0..classes-1

    @field_validator("start")
    @classmethod
    def start_is_cid(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                digest_of(v)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return v

    def params(self, kind: str = "train", model: str = "digits-mlp") -> "Any":
        """The job's parameters, as ``kind``'s workload for ``model`` reads this section."""
        from veracity.workloads.workload import workload_for

        return workload_for(kind, model).params(self)


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str  # a registered workload kind (``workloads.workload.kinds``): infer, train, finetune
    model: str
    inputs: Inputs
    max_price: float = Field(gt=0)
    deadline: int = Field(gt=0, le=30 * 24 * 3600)
    verification: Verification = Verification()
    training: Training | None = None
    batch: int | None = Field(None, gt=0, le=1024)  # infer only: items per batch (None: INFER_BATCH)

    @model_validator(mode="after")
    def training_fits_kind(self) -> "JobSpec":
        from veracity.workloads.workload import kinds, trains

        known = kinds()
        if trains(self.kind):
            if self.training is None:
                raise ValueError(f"a {self.kind} job needs a 'training' section (steps, and optionally batch, "
                                 "optimizer, lr, seed, init_seed, start)")
            if self.model not in known[self.kind]:
                raise ValueError(f"model {self.model!r} cannot be trained by a {self.kind} job: use "
                                 f"{', '.join(sorted(known[self.kind]))}")
            if self.kind == "train" and (self.training.rank is not None or self.training.classes is not None):
                raise ValueError("training.rank and training.classes belong to finetune jobs")
        elif self.training is not None:
            raise ValueError(f"a {self.kind} job takes no 'training' section (use kind: train or finetune)")
        elif known[self.kind] and self.model not in known[self.kind]:
            raise ValueError(f"model {self.model!r} cannot run a {self.kind} job: use {', '.join(sorted(known[self.kind]))}")
        if self.batch is not None and self.kind != "infer":
            raise ValueError(f"batch is an infer job's field: a {self.kind} job's batch is training.batch"
                             if trains(self.kind) else f"batch is an infer job's field: drop it from a {self.kind} job")
        return self

    @field_validator("kind")
    @classmethod
    def known_kind(cls, v: str) -> str:
        from veracity.workloads.workload import kinds

        if v not in (known := kinds()):
            raise ValueError(f"unknown job kind {v!r}: use {', '.join(sorted(known))}")
        return v

    @field_validator("model")
    @classmethod
    def known_model(cls, v: str) -> str:
        from veracity.models.registry import names

        if v not in names():
            raise ValueError(f"unknown model {v!r}: choose one of {', '.join(names())}")
        return v

    @property
    def kind_code(self) -> int:
        from veracity.workloads.workload import workload_for

        return workload_for(self.kind, self.model).code

    @property
    def model_id(self) -> bytes:
        """The 32 bytes the Market stores for the model: sha256 of its registry name."""
        return model_id(self.model)


def model_id(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def explain(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "spec"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling)"
        elif e["type"] == "missing":
            msg = "missing"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (YAML keeps the last silently,
    so a spec could say one price and mean another)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def strict_yaml(text: str, source: str) -> Any:
    """YAML text read safely, refusing duplicate keys; InputError that says where otherwise."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  (a safe loader)
    except yaml.YAMLError as exc:
        lines = str(exc).splitlines()
        why = next((ln for ln in lines if "appears twice" in ln), lines[0])
        raise InputError(f"{source} is not valid YAML ({why.strip()})") from None


def parse_spec(text: str, source: str = "spec") -> JobSpec:
    data = strict_yaml(text, source)
    if not isinstance(data, dict):
        raise InputError(f"{source} must be a YAML mapping with kind, model, inputs, max_price, deadline")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{source}: {explain(exc)}") from None


def load_spec(path: str | Path) -> JobSpec:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"job spec {p} not found")
    spec = parse_spec(p.read_text(encoding="utf-8"), str(p))
    if spec.inputs.path is not None:
        inputs = (p.parent / spec.inputs.path).resolve()
        if not inputs.is_file():
            raise InputError(f"{p}: inputs.path {spec.inputs.path} not found (paths are relative to the spec)")
        spec = spec.model_copy(update={"inputs": Inputs(path=str(inputs))})
    return spec
