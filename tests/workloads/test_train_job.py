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
    assert {r.step for r in records} == set(range(91))  # the start state (step 0), then one trace step per step
    blob = None
    for _ in range(3):  # three units of 30 steps, each from the previous unit's checkpoint
        unit = run_train_job(train, TrainParams(steps=30, seed=1), start=blob)
        blob = unit.outputs
    assert unit.output_hash == whole.output_hash and blob == whole.outputs
    assert accuracy(whole.outputs, held_out) > 0.8  # two epochs, on the harder tail of the set


def test_bad_training_inputs_are_clear_errors(data):
    with pytest.raises(InputError, match='line 1: "label" must be an integer 0..9'):
        run_train_job(b'{"pixels": [0' + b", 0" * 63 + b"]}\n", TrainParams(steps=1))
    with pytest.raises(InputError, match="learning rate 2"):
        run_train_job(data[0], TrainParams(steps=1, lr=2))
    with pytest.raises(InputError, match="start checkpoint cannot be read"):
        run_train_job(data[0], TrainParams(steps=1), start=b"not a checkpoint")


def test_the_program_names_every_record_and_a_served_checkpoint_is_checked_against_the_trace(data):
    from veracity.cid import cid_of
    from veracity.exact.program import INPUT, QMM, WEIGHT
    from veracity.workloads.jobs import Job
    from veracity.workloads.spec import JobSpec
    from veracity.workloads.train import train_program

    train, _ = data
    first = run_train_job(train, TrainParams(steps=2, seed=3))
    records = decode_records(first.trace)
    program = train_program(TrainParams(steps=2, seed=3), None, train)
    assert [(d.step, d.op) for d in program] == [(r.step, r.op) for r in records]
    starts = [d for d in program if d.step == 0]
    assert len(starts) == 18 and {d.kind for d in starts} == {INPUT}  # the start state: 6 tensors of 3 layers
    w0 = [i for i, d in enumerate(program) if d.op == "state.w0"]
    z0 = next(d for d in program if d.step == 2 and d.op == "fwd.0.z")
    assert program[w0[0]].kind == WEIGHT and z0.kind == QMM and z0.inputs[1] == w0[0]  # step 2 reads step 1's w0
    from veracity.exact.program import output_records
    from veracity.exact.trace import outputs_root

    outs = output_records(program)  # the final state's records are the outputs, and the root is theirs
    assert len(outs) == 18 and all(program[i].op.startswith("state.") and program[i].step == 2 for i in outs)
    assert first.output_root == outputs_root([records[i].digest for i in outs])
    job = Job(JobSpec.model_validate({"kind": "train", "model": "digits-mlp", "inputs": {"cid": cid_of(train)},
                                      "max_price": 1, "deadline": 60, "training": {"steps": 2, "seed": 3}}), train)
    assert job.check_served(first.outputs, first.output_root) is None
    later = run_train_job(train, TrainParams(steps=1, seed=3), start=first.outputs)
    unit = train_program(TrainParams(steps=1, seed=3), first.outputs, train)
    assert unit[0].step == 2 and unit[-1].step == 3  # a unit starts from the checkpoint's step
    assert "says step 3; the job ends at step 2" in job.check_served(later.outputs, first.output_root)
    other = run_train_job(train, TrainParams(steps=2, seed=4))
    assert "not the committed output" in job.check_served(other.outputs, first.output_root)
    assert "cannot be read (truncated)" in job.check_served(first.outputs[:-3], first.output_root)


def test_values_a_referee_would_judge_differently_never_reach_a_trace(data):
    """int64 intermediates that would wrap are computed exactly (as the referee's int256 does), and
    start checkpoints with other shapes or out-of-range values are refused before anything runs."""
    import numpy as np

    from veracity.exact import integer as X
    from veracity.training import mlp as MLP
    from veracity.verify.onestep import round_shift

    num = np.array([[3 << 50, -(5 << 49)], [7, -7]], dtype=np.int64)
    shift = np.array([[12, 14], [3, 0]])
    got = X.round_shift(num, 16129, shift)
    assert [int(v) for v in got.ravel()] == [round_shift(int(n), 16129, int(s))
                                             for n, s in zip(num.ravel(), shift.ravel())]
    state = MLP.MLPState.init()
    state.weights[0][0, 0] = 1 << 50
    with pytest.raises(InputError, match="values out of range"):
        run_train_job(data[0], TrainParams(steps=1), start=MLP.checkpoint_bytes(state))
    wide = MLP.MLPState.init(sizes=(64, 2000, 10))
    with pytest.raises(InputError, match="an MLP of 64-2000-10: a digits job needs 64 inputs, 10 classes and "
                                         "layers of at most 1040 units"):
        run_train_job(data[0], TrainParams(steps=1), start=MLP.checkpoint_bytes(wide))
    small = MLP.MLPState.init(sizes=(64, 32, 10))  # the shapes come from the checkpoint: any width trains
    assert MLP.load_checkpoint(run_train_job(data[0], TrainParams(steps=1), start=MLP.checkpoint_bytes(small)).outputs).sizes == (64, 32, 10)
    with pytest.raises(InputError, match="batch size of 1 to 1024"):
        run_train_job(data[0], TrainParams(steps=1, batch=4096))
