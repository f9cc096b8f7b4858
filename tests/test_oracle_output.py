"""An Oracle request is taken only if its output fits ``fulfil`` (4096 bytes): the size is bounded
from the job's program with no arithmetic, and run (numpy backend) only when the bounds straddle
the limit. The bounds are checked against real runs, so a wrong bound fails here."""

import json

from veracity.models.registry import loaded
from veracity.node.oracle_desk import ORACLE_MAX_OUTPUT, output_bounds, undeliverable
from veracity.workloads.jobs import infer_job


def job(model: str, item: dict):
    return infer_job(model, (json.dumps(item) + "\n").encode()), loaded(model)


def test_a_minilm_embedding_is_too_long_to_deliver_and_the_reason_gives_its_exact_size():
    j, m = job("minilm", {"text": "a cat sat on the mat"})
    size = len(j.run("numpy", model=m).outputs)
    lo, hi = output_bounds(j, m)
    assert lo <= ORACLE_MAX_OUTPUT < size <= hi  # the bounds cannot decide: it is run
    assert undeliverable(j, m) == f"its output would be {size} bytes, more than the Oracle's 4096-byte limit"
    assert undeliverable(j, m, limit=size) is None  # exactly at the limit it is deliverable


def test_a_digit_and_a_short_generation_fit_whatever_they_output():
    for j, m in (job("digits-mlp", {"pixels": [16] * 64}), job("tiny-gpt", {"text": "the ", "max_tokens": 3})):
        lo, hi = output_bounds(j, m)
        assert lo <= len(j.run("numpy", model=m).outputs) <= hi <= ORACLE_MAX_OUTPUT
        assert undeliverable(j, m) is None


def test_an_output_surely_too_long_is_refused_without_running():
    j, m = job("digits-mlp", {"pixels": [0] * 64, "note": "x" * 5_000})  # its echoed fields alone
    lo, _ = output_bounds(j, m)
    assert lo > 5_000
    assert undeliverable(j, m) == f"its output would be at least {lo} bytes, more than the Oracle's 4096-byte limit"
