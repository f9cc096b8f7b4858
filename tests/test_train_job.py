"""The ``train`` job kind: same checkpoint and trace on every backend, a job split into work units
ends at the unsplit job's checkpoint, and bad training data or parameters are clear errors."""

import json

import pytest
from sklearn.datasets import load_digits

from veracity.errors import InputError
from veracity.exact.trace import decode_records
from veracity.workloads.train import TrainParams, accuracy, run_train_job


@pytest.fixture(scope="module")
def data():
    d = load_digits()
    lines = [json.dumps({"pixels": [int(v) for v in d.data[i]], "label": int(d.target[i])}) for i in range(len(d.target))]
    return "\n".join(lines[:1400]).encode(), "\n".join(lines[1400:]).encode()


def test_a_training_job_is_exact_and_splits_into_work_units(data):
    train, held_out = data
    p = TrainParams(steps=90, seed=1)
    whole = run_train_job(train, p)
    assert run_train_job(train, p, backend="torch").trace_root == whole.trace_root
    records = decode_records(whole.trace)
    assert {r.step for r in records} == set(range(1, 91))  # every optimizer step is one trace step
    blob = None
    for _ in range(3):  # three units of 30 steps, each from the previous unit's checkpoint
        unit = run_train_job(train, TrainParams(steps=30, seed=1), start=blob)
        blob = unit.outputs_jsonl
    assert unit.output_hash == whole.output_hash and blob == whole.outputs_jsonl
    assert accuracy(whole.outputs_jsonl, held_out) > 0.8  # two epochs, on the harder tail of the set


def test_bad_training_inputs_are_clear_errors(data):
    with pytest.raises(InputError, match='line 1: "label" must be an integer 0..9'):
        run_train_job(b'{"pixels": [0' + b", 0" * 63 + b"]}\n", TrainParams(steps=1))
    with pytest.raises(InputError, match="learning rate 2"):
        run_train_job(data[0], TrainParams(steps=1, lr=2))
    with pytest.raises(InputError, match="start checkpoint cannot be read"):
        run_train_job(data[0], TrainParams(steps=1), start=b"not a checkpoint")
