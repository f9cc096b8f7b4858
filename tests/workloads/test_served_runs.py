"""A lease window's result from the runs that served its requests: each request runs once, alone,
with the coarse trace kept, and joining the runs gives the bits of the window's job (an infer job
with batch 1 over the requests), so a provider never runs a window twice."""

import json

import pytest

from veracity.exact.trace import decode_records
from veracity.models.registry import load
from veracity.workloads.infer import infer, input_records, joined_result, parse_items, run_infer_job, served_run

YES_NO = {"messages": [{"role": "user", "content": "Reply with one word: yes or no. Is the sky blue?"}], "max_tokens": 6}


def items_for(name, rng):
    if name == "digits-mlp":
        return [{"pixels": [int(v) for v in rng.integers(0, 17, 64)]} for _ in range(3)]
    if name == "minilm":
        words = ["exact", "arithmetic", "checks", "a", "hash", "provider", "window", "lease", "the", "cheap"]
        return [{"text": " ".join(rng.choice(words, int(rng.integers(2, 9))))} for _ in range(3)]
    if name == "tiny-gpt":
        return [{"text": "the cat ", "max_tokens": 2}, {"text": "a dog ran", "max_tokens": 3}]
    return [YES_NO, {"prompt": "The sky is", "max_tokens": 2}]


@pytest.mark.parametrize("name", ["digits-mlp", "minilm", "tiny-gpt", "smollm2"])
def test_joined_runs_are_the_window_jobs_bits(name, fresh_rng):
    model = load(name)
    inputs = "".join(json.dumps(r) + "\n" for r in items_for(name, fresh_rng)).encode()
    items = parse_items(model, input_records(inputs), "inputs")
    heard = []
    runs = [served_run(model, item, "torch", heard.append) for item in items]
    joined = joined_result(model, inputs, runs)
    job = run_infer_job(name, inputs, "torch", batch_size=1, model=model)
    assert joined.trace == job.trace and joined.trace_root == job.trace_root and joined.ops == job.ops
    assert joined.outputs == job.outputs and joined.output_hash == job.output_hash
    assert joined.output_digests == job.output_digests
    assert [h.tolist() for h in heard] == [r.output.tolist() for r in runs]  # each answer heard once, as run
    assert [r.step for r in decode_records(joined.trace)] == sorted(r.step for r in decode_records(joined.trace))
    if name in ("minilm", "digits-mlp"):  # batching changes the trace: a window must say batch 1
        assert run_infer_job(name, inputs, "torch", model=model).trace_root != joined.trace_root


def test_a_generator_answers_at_its_stop_token_and_still_traces_every_pass():
    model = load("smollm2")
    item = model.parse(YES_NO)
    passes, heard = [], []

    def count(i, op, x):
        if op.endswith(".token"):  # a pass's pick (``Decoder.next_token``)
            passes.append(i)
        return x

    result = infer(model, [item], batch_size=1, tamper=count,
                   answered=lambda k, out: heard.append((k, len(passes), out.tolist())))
    tokens = result.outputs[0].tolist()
    stop = next(i for i, t in enumerate(tokens) if t in model.stops)
    assert stop < item[1] - 1, "the test's prompt must stop early"
    assert heard == [(0, stop + 1, tokens)]  # answered after the stop token's pass, with the whole output
    assert len(passes) == item[1]  # and every later pass still ran (the window's trace has them)
    assert tokens[stop:] == [tokens[stop]] * (item[1] - stop)
