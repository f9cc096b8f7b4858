"""The ``score`` job kind: the exact MiniLM embedding of one data-pool contribution.

A data pool (``contracts/DataPool.vy``) scores each contribution from this job's output: the
pool checks the output against the order's committed output root, then computes on chain the
item's similarity to the pool's topic (its quality) and its highest similarity to the items the
pool accepted before it (a near-copy scores zero). So the only thing a provider computes is the
embedding, an ``infer`` job's ops and bits, judged on chain record by record like any infer job:
a provider that commits a wrong embedding to inflate a score loses a dispute.

Its input is one contribution: one JSON line ``{"text": "...", "label": k, "provenance": {...}}``
(the label is optional: a pool of labelled texts sells them for fine-tuning, whose inputs are these
lines; so is the provenance, which a generated item carries: the ``synthesize`` job that made it,
``workloads.synthesize.provenance``), and nothing else: the output is that one item's embedding, one output tensor of 384 int32 values in
2**15 fixed point (a unit vector).
"""

from __future__ import annotations

import json
from typing import Any

from veracity.errors import InputError
from veracity.workloads.infer import InferWorkload, input_records
from veracity.workloads.workload import register

FIELDS = {"text", "label", "provenance"}
MAX_LABEL = 63
MAX_PROVENANCE = 2048  # bytes of its JSON


def check_contribution(inputs: bytes) -> dict[str, Any]:
    """The contribution's one record, or InputError saying what the data pool's schema wants."""
    records = input_records(inputs, "the contribution")
    if len(records) != 1:
        raise InputError(f"a contribution is one JSON line ({len(records)} given): contribute each item on its own")
    _, rec = records[0]
    if extra := sorted(set(rec) - FIELDS):
        raise InputError(f"a contribution has only the fields text, label and provenance (not {', '.join(extra)})")
    if "label" in rec and not (isinstance(rec["label"], int) and not isinstance(rec["label"], bool)
                               and 0 <= rec["label"] <= MAX_LABEL):
        raise InputError(f'a contribution\'s "label" is an integer from 0 to {MAX_LABEL}')
    if "provenance" in rec and not (isinstance(rec["provenance"], dict)
                                    and len(json.dumps(rec["provenance"])) <= MAX_PROVENANCE):
        raise InputError(f'a contribution\'s "provenance" is a JSON object of at most {MAX_PROVENANCE} bytes '
                         "(the job that made it)")
    return rec


class ScoreWorkload(InferWorkload):
    """``score``: MiniLM's exact embedding of one contribution (every record judged on chain)."""

    kind, models, code = "score", ("minilm",), 4  # type: ignore[assignment]

    def params(self, training: Any) -> Any:
        raise InputError("a score job takes no 'training' section")

    def run(self, job: Any, *args: Any, **kw: Any) -> Any:
        check_contribution(job.inputs)
        return super().run(job, *args, **kw)

    def program(self, job: Any, model: Any = None, limit: int | None = None) -> list[Any]:
        check_contribution(job.inputs)
        return super().program(job, model, limit)


register(ScoreWorkload())
