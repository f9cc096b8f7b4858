"""The resource planner: what a job costs in FLOPs, memory, communication and time on a set of
devices, and how to split it (data, tensor and pipeline parallel degrees). Providers use it to
decide whether they can take a job and at what price; clients, to estimate cost before posting.

Estimates (per token; ``N`` = parameters in matrix multiplies, ``L`` layers, ``H`` width,
``s`` sequence length, ``b`` micro-batch):

* FLOPs: forward ``2N + 4 L s H`` (the second term is attention's two ``s x H`` products per
  layer), training three times the forward (backward is twice the forward): ``6N + 12 L s H``.
  GPT-3 175B on 300B tokens: 3.2e23, the published ~3.1e23 plus attention.
* Inference memory: weights (2 bytes per parameter in bf16, 1 in int8) plus the KV cache,
  ``2 L s H`` values per sequence.
* Training memory (mixed precision, Adam): 16 bytes per parameter (bf16 weights and gradients,
  fp32 master weights and two moments), split across tensor and pipeline stages, plus
  activations ``34 s b H`` bytes per layer (Korthikanti et al., selective recomputation).
* Communication per device (ring collectives move ``2 (k-1)/k`` of the data): DP all-reduces
  the gradients of its shard once per optimizer step (a global batch of ``batch`` sequences);
  TP all-reduces each token's activations (``H`` values) twice per layer forward and twice more
  backward; PP sends each token's activations across a stage boundary (and gradients back
  when training).
* Time: the largest of compute (FLOPs at ``mfu`` of peak), memory traffic (inference decodes
  read every weight once per token) and communication; that one is the bottleneck.

``estimate_job`` does the same for one of our jobs from its own shapes (an inference job's
program, a training job's steps and batch): what ``market.policy`` checks before a provider bids.
``program_records`` gives a training job's program length without building it: a provider builds
no program of more than ``MAX_PROGRAM_RECORDS`` records.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from veracity.errors import UsageError


@dataclass(frozen=True)
class Device:
    name: str
    tflops: float  # dense bf16 peak
    memory_gb: float
    hbm_gbps: float  # memory bandwidth
    link_gbps: float  # inside a node (NVLink or PCIe), per device
    net_gbps: float  # between nodes, per device
    per_node: int = 8


DEVICES = {
    "H100": Device("H100", 989, 80, 3350, 450, 50),
    "H200": Device("H200", 989, 141, 4800, 450, 50),
    "A100": Device("A100", 312, 80, 2039, 300, 25),
    "L4": Device("L4", 121, 24, 300, 32, 12.5, per_node=4),
    "RTX4090": Device("RTX4090", 165, 24, 1008, 32, 12.5, per_node=4),
    "CPU": Device("CPU", 2, 64, 50, 25, 12.5, per_node=1),
}


@dataclass(frozen=True)
class ModelShape:
    params: float  # parameters in matrix multiplies (embeddings lookups excluded)
    layers: int
    hidden: int
    seq: int


@dataclass(frozen=True)
class Plan:
    mode: str
    devices: str
    flops: float
    memory_per_device_gb: float
    fits: bool
    dp: int
    tp: int
    pp: int
    comm_gb: dict[str, float]
    time_s: dict[str, float]
    total_time_s: float
    bottleneck: str

    def to_dict(self) -> dict:
        return asdict(self)


def parse_devices(text: str) -> tuple[int, Device]:
    """``8xH100`` -> (8, H100)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*([A-Za-z0-9]+)\s*", text)
    if not m or m.group(2).upper() not in {k.upper() for k in DEVICES}:
        raise UsageError(f"devices {text!r}: write COUNTxNAME, e.g. 8xH100; known: {', '.join(DEVICES)}")
    name = next(k for k in DEVICES if k.upper() == m.group(2).upper())
    count = int(m.group(1))
    if count < 1:
        raise UsageError("devices: the count must be at least 1")
    return count, DEVICES[name]


def flops_per_token(m: ModelShape, mode: str) -> float:
    forward = 2 * m.params + 4 * m.layers * m.seq * m.hidden
    return forward if mode == "infer" else 3 * forward


def inference_memory(m: ModelShape, batch: int = 1, bytes_per_param: float = 2) -> dict[str, float]:
    return {"weights": m.params * bytes_per_param, "kv_cache": 2 * m.layers * m.seq * m.hidden * batch * 2}


def training_memory(m: ModelShape, micro_batch: int = 1) -> dict[str, float]:
    return {"weights": 2 * m.params, "gradients": 2 * m.params, "optimizer": 12 * m.params,
            "activations": 34 * m.seq * micro_batch * m.hidden * m.layers}


def _factorizations(count: int, per_node: int) -> list[tuple[int, int, int]]:
    out = []
    for tp in (1, 2, 4, 8):
        if tp > per_node or count % tp:
            continue
        for pp in range(1, count // tp + 1):
            if (count // tp) % pp == 0:
                out.append((count // (tp * pp), tp, pp))
    return out


def plan(m: ModelShape, mode: Literal["infer", "train"], tokens: float, devices: str, batch: int = 1,
         mfu: float = 0.4, bytes_per_param: float = 2) -> Plan:
    """The fastest split of the job over ``devices`` that fits in memory (else the least short)."""
    if mode not in ("infer", "train"):
        raise UsageError(f"mode {mode!r}: use infer or train")
    count, dev = parse_devices(devices)
    total_flops = flops_per_token(m, mode) * tokens
    steps = max(1.0, tokens / (batch * m.seq))  # optimizer steps: gradients are all-reduced once per step
    best: Plan | None = None
    for dp, tp, pp in _factorizations(count, dev.per_node):
        shard = tp * pp
        if mode == "train":
            mem = training_memory(m, 1)  # one sequence per micro-batch; gradients accumulate
            per_dev = (mem["weights"] + mem["gradients"] + mem["optimizer"]) / shard + mem["activations"] / shard
        else:
            mem = inference_memory(m, batch, bytes_per_param)
            per_dev = mem["weights"] / shard + mem["kv_cache"] / shard
        # per device: tokens through its replica, activations of H bf16 values per token
        per_replica = tokens / dp
        passes = 2 if mode == "train" else 1
        token_act = m.hidden * 2
        comm = {
            "dp": (2 * (dp - 1) / dp * 2 * m.params / shard * steps) if mode == "train" and dp > 1 else 0.0,
            "tp": (2 * (tp - 1) / tp * token_act * 2 * passes * (m.layers / pp) * per_replica) if tp > 1 else 0.0,
            "pp": (token_act * passes * per_replica * (pp - 1) / pp) if pp > 1 else 0.0,
        }
        net = dev.net_gbps if count > dev.per_node else dev.link_gbps
        t = {
            "compute": total_flops / (count * dev.tflops * 1e12 * mfu),
            "memory": (m.params * bytes_per_param / shard * tokens / batch / (dev.hbm_gbps * 1e9) / dp)
            if mode == "infer" else 0.0,
            "communication": comm["dp"] / (net * 1e9) + comm["tp"] / (dev.link_gbps * 1e9) + comm["pp"] / (net * 1e9),
        }
        total = max(t.values())
        candidate = Plan(mode, devices, total_flops, per_dev / 1e9, per_dev / 1e9 <= dev.memory_gb, dp, tp, pp,
                         {k: v / 1e9 for k, v in comm.items()}, t, total, max(t, key=t.__getitem__))
        if best is None or _rank(candidate) < _rank(best):
            best = candidate
    if best is None:
        raise UsageError(f"{devices}: no split of {count} devices works (tensor parallel degrees are 1, 2, 4 or 8)")
    return best


def _rank(p: Plan) -> tuple[bool, float, float, float]:
    """Fitting first, then the shortest time, then the least communication, then memory."""
    return (not p.fits, round(p.total_time_s, 6), p.time_s["communication"], p.memory_per_device_gb)


def human(x: float, unit: str = "") -> str:
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {suffix}{unit}"
    return f"{x:.3g} {unit}".strip()


def duration(seconds: float) -> str:
    for div, unit in ((86400 * 365, "years"), (86400, "days"), (3600, "hours"), (60, "minutes")):
        if seconds >= div:
            return f"{seconds / div:.3g} {unit}"
    return f"{seconds:.3g} s"


# a job's own estimate: what a provider checks before it bids, and a client before it posts ---------
@dataclass(frozen=True)
class JobEstimate:
    flops: float  # the job's multiply-adds times two (its GEMMs and attention; training: 3x forward)
    memory_bytes: float  # parameters and state, plus the largest activation, held at once
    detail: str  # what was counted, for people

    def seconds(self, devices: str, mfu: float = 0.4) -> float:
        """The time the job takes on ``devices`` at ``mfu`` of their peak."""
        count, dev = parse_devices(devices)
        return self.flops / (count * dev.tflops * 1e12 * mfu)

    def fits(self, devices: str) -> bool:
        count, dev = parse_devices(devices)
        return self.memory_bytes <= count * dev.memory_gb * 1e9


def program_flops(program: list[Any]) -> tuple[float, int]:
    """2 x the multiply-adds of an inference program's linears and attention, and its largest record."""
    from veracity.exact import program as prog

    flops, largest = 0.0, 0
    for d in program:
        size = int(np.prod(d.dims))
        largest = max(largest, size)
        if d.kind == prog.LINEAR:
            flops += 2.0 * size * program[d.inputs[0]].dims[-1]
        elif d.kind == prog.SCORES:  # [B, H, T, T] from qkv [B, T, 3 * hidden]: each a dot of hidden / H
            flops += 2.0 * size * program[d.inputs[0]].dims[-1] / 3 / d.dims[1]
        elif d.kind == prog.CONTEXT:  # [B, T, hidden]: each a sum over the T keys
            flops += 2.0 * size * d.dims[1]
        elif d.kind == prog.BLINEAR:  # a Llama family's linear: [1, T, N] from [1, T, K]
            flops += 2.0 * size * program[d.inputs[0]].dims[-1]
        elif d.kind == prog.GQA_SCORES:  # [H, T, S] from q [1, T, H * D]: each a dot of D
            flops += 2.0 * size * program[d.inputs[0]].dims[-1] / d.dims[0]
        elif d.kind == prog.GQA_CONTEXT:  # [1, T, H * D] from probabilities [H, T, S]: each a sum over S
            flops += 2.0 * size * program[d.inputs[0]].dims[-1]
    return flops, largest


def model_params(model: Any) -> int:
    """The parameters in a model's matrix multiplies (its QLinear weights, or an MLP's matrices)."""
    from veracity.exact.program import model_constants

    return int(sum(t.size for t in model_constants(model).values() if t.dtype == np.int8))


def estimate_job(job: Any, program: list[Any] | None = None) -> JobEstimate:
    """FLOPs and memory of a ``workloads.jobs.Job``, as its workload estimates them."""
    return job.workload.estimate(job, program)


# the largest program a provider prepares -------------------------------------------------------
MAX_PROGRAM_RECORDS = 100_000
"""The most records a provider builds a program of (before it bids, and again to defend a result).
A dispute move can wait on that preparation: building the program and hashing its descriptors
(about 30 and 110 microseconds a record on one core), so 100,000 records are at most ~15 s, well
inside a devnet move's 60 s even while the job loop shares the interpreter. It is ~2,200 steps of
the digits MLP, ~370 of tiny-gpt, ~2,200 of a MiniLM fine-tune (every op of a step a record; a
fine-tune's program also runs the encoder over its data, once); ~2,600 tokens generated by
tiny-gpt, ~34,000 MiniLM inputs, ~530,000 digits. (Recomputing a record's tensor for a move replays
the job up to it: that is bounded by the job's own run time, not by this.)"""


def program_records(job: Any, model: Any = None) -> int:
    """The number of records in a job's program. A training program is built from its first two
    steps only: it is the start state's records, then the same records every step. An inference
    program's length depends on every item, so it is counted by building it."""
    if not job.trains:
        return len(job.program(model if model is not None else job.model()))

    def records(steps: int) -> int:
        training = job.spec.training.model_copy(update={"steps": steps})
        return len(replace(job, spec=job.spec.model_copy(update={"training": training})).program(model))

    one = records(1)
    return one + (records(2) - one) * (job.params.steps - 1)
