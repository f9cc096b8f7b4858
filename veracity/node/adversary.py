"""Cheating providers, for tests and the demo. Each really cheats, each in its own way, so the
verification layer is tested against what a dishonest node would actually do:

* ``wrong-output``: runs the job honestly, then alters the final output it commits (the trace
  root is the honest one);
* ``corrupt-op``: alters one element of one intermediate op output and computes everything after
  it from the altered value, so the outputs and the trace it commits are consistent with each
  other, and wrong from that op on;
* ``lazy``: runs nothing; commits made-up outputs and a made-up trace.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import numpy as np

from veracity.exact.trace import TraceRecord, encode_records, records_root
from veracity.workloads.infer import JobResult, parse_jsonl, run_infer_job

BEHAVIOURS = ("honest", "late", "wrong-output", "corrupt-op", "lazy")
ATTENTION_INTERNALS = (".scores", ".probs", ".probsum")  # recorded, but not what flows on


def forge_output(outputs_jsonl: bytes) -> bytes:
    """``wrong-output``: the first output replaced after an honest run."""
    return outputs_jsonl.replace(b'"output": ', b'"output": "forged", "was": ', 1)


def corrupt_op_job(model_name: str, inputs: bytes, model: Any = None, target: float = 0.5) -> JobResult:
    """``corrupt-op``: one element of the op at about ``target`` of the way through is off by a
    few units; every later op is computed from it (on the int64 reference backend)."""
    honest_ops = run_infer_job(model_name, inputs, backend="numpy", model=model).ops
    at = int(honest_ops * target)

    def tamper(index: int, op: str, x: Any) -> Any:
        nonlocal at
        if index == at and op.endswith(ATTENTION_INTERNALS):
            at += 1  # those values do not flow on: corrupt the next op instead
        if index != at:
            return x
        y = np.array(x, dtype=np.int64, copy=True)
        y.flat[y.size // 2] += 5 if y.flat[y.size // 2] < 0 else -5
        return y

    return run_infer_job(model_name, inputs, backend="numpy", model=model, tamper=tamper)


def lazy_job(inputs: bytes) -> JobResult:
    """``lazy``: each input echoed with a made-up output, and a made-up trace."""
    lines = [json.dumps({**rec, "output": 0}) + "\n" for _, rec in parse_jsonl(inputs.decode("utf-8"), "inputs")]
    records = [TraceRecord(0, "made-up", secrets.token_bytes(32))]
    outputs = "".join(lines).encode()
    return JobResult(outputs, secrets.token_bytes(32), records_root(records), 1, len(records), encode_records(records))
