"""Each job's program says what every trace record is: recomputing elements of every record from
the inputs and constants its descriptor names (as the referees do) gives the record's own values,
for every record of every model; and the program matches the trace record for record."""

import json

import numpy as np
import pytest

from veracity.exact import program as prog
from veracity.exact.dryrun import ShapeBackend
from veracity.exact.levels import Levels
from veracity.exact.trace import CODE_DTYPES, decode_records, records_root, tensor_digest
from veracity.models.registry import load
from veracity.verify.game import recompute
from veracity.workloads.infer import infer, input_records, job_program, parse_items, record_tensors, run_infer_job

JOBS = {
    "digits-mlp": [{"pixels": [(i * 7 + j) % 17 for j in range(64)]} for i in range(3)],
    "minilm": [{"text": "Exact arithmetic makes checking a hash comparison."}, {"text": "A short one."}],
    "tiny-gpt": [{"text": "the cat ", "max_tokens": 2}],
    "smollm2": [{"prompt": "The sky is", "max_tokens": 3}],  # 3: a KV cache grown twice (hashed incrementally)
}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_record_is_what_its_descriptor_says(name, fresh_rng):
    rng = fresh_rng
    model = load(name)
    inputs = "".join(json.dumps(r) + "\n" for r in JOBS[name]).encode()
    program = job_program(name, inputs, model)
    trace = infer(model, parse_items(model, input_records(inputs), "inputs"), backend="numpy", coarse=False).records
    tensors = record_tensors(name, inputs, set(range(len(program))), model=model)
    consts = prog.model_constants(model)
    assert [(d.step, d.op) for d in program] == [(r.step, r.op) for r in trace]
    kinds = set()

    def record(i):
        return tensors[i].astype(CODE_DTYPES[program[i].dtype])

    for i, d in enumerate(program):
        t = record(i)
        assert tuple(t.shape) == d.dims and tensor_digest(t) == trace[i].digest, d.op
        assert all(j < i for j in d.inputs), f"{d.op} reads a record that is not earlier"
        if d.kind == prog.INPUT:
            assert d.consts[0] == trace[i].digest  # what the client posted
            continue
        kinds.add(d.kind)
        for e in {0, t.size - 1, *rng.integers(0, t.size, 3).tolist()}:
            got = recompute(d, int(e), record, prog.constants(model, d, consts))
            assert got == int(t.flat[e]), f"record {i} {d.op} element {e}: recomputed {got}, traced {int(t.flat[e])}"
    assert kinds  # every model has records judged element by element

    # two levels: the committed (coarse) trace is the full trace's exported records, and inside every
    # step the op-level program, numbered on from the coarse records before it, still recomputes
    levels = Levels.of(program)
    committed = run_infer_job(name, inputs, backend="torch", model=model)
    assert decode_records(committed.trace) == levels.coarse_records(trace)
    assert committed.trace_root == records_root(levels.coarse_records(trace)) and committed.ops == len(levels.coarse)
    assert len(levels.coarse) < len(program)
    for s in levels.steps:
        seg = levels.segment(s)
        for n, d in enumerate(seg):
            here = levels.first[s] + n
            full = levels.full_index(s, here)
            assert all(j < here for j in d.inputs if j != prog.NO_INPUT), f"{d.op} reads a later record"
            if d.kind == prog.INPUT:
                continue
            t = record(full)
            e = int(rng.integers(0, t.size))
            got = recompute(d, e, lambda j: record(levels.full_index(s, j)), prog.constants(model, d, consts))
            assert got == int(t.flat[e]), f"step {s} record {n} {d.op} element {e}: recomputed {got}"


def test_a_shape_only_run_tells_records_apart():
    """An op that handed back its input tensor would make its readers name the wrong record."""
    from veracity.exact.execute import Exec

    class Lazy(ShapeBackend):
        def relu(self, x):
            return x

    ex = Exec(Lazy(), program=[])
    x = ex.input("x", np.zeros((2, 3)))
    with pytest.raises(AssertionError, match="returned the tensor of record 0"):
        ex.relu("relu", x)


def test_a_program_a_dispute_could_not_judge_is_refused():
    from veracity.errors import InputError

    wide = [prog.OpDesc(prog.INPUT, 0, "x", 4, (2, prog.MAX_ROW + 1))]
    with pytest.raises(InputError, match="rows of 2081 values"):
        prog.check_disputable(wide)
    far = [prog.OpDesc(prog.INPUT, 0, "x", 4, (2, 3))] + \
        [prog.OpDesc(prog.RELU, 0, f"r{i}", 4, (2, 3), (i,)) for i in range(prog.MAX_LINKS + 1)] + \
        [prog.OpDesc(prog.ADD, 0, "late", 4, (2, 3), (0, prog.MAX_LINKS + 1))]
    with pytest.raises(InputError, match="more than 1024 records back"):
        prog.check_disputable(far)
    with pytest.raises(InputError, match="names no output records"):
        prog.check_disputable(far[:-1])
    prog.check_disputable(prog.mark_outputs(far[:-1], [len(far) - 2]))


@pytest.mark.parametrize("optimizer,lr", [("momentum", 0.05), ("adam", 0.01), ("sgd", 0.05)])
def test_every_training_record_is_what_its_descriptor_says(optimizer, lr, fresh_rng):
    """A train job's program (built from shapes and the data alone) is what a traced run records,
    and every element of every record of its steps recomputes from the records it names."""
    from pathlib import Path

    from veracity.exact.integer import exp_table_digest, exp_table_tensor
    from veracity.workloads.train import (
        TrainParams,
        record_tensors,
        run_train_job,
        train_program,
    )

    data = (Path(__file__).resolve().parent.parent.parent / "examples" / "inputs" / "digits-train.jsonl").read_bytes()
    params = TrainParams(steps=2, seed=1, optimizer=optimizer, lr=lr, batch=16)
    program = train_program(params, None, data)
    prog.check_disputable(program)
    trace = decode_records(run_train_job(data, params).trace)
    assert [(d.step, d.op) for d in program] == [(r.step, r.op) for r in trace]
    tensors = record_tensors(data, params, None, set(range(len(program))))
    table = {exp_table_digest(): exp_table_tensor()}
    kinds = set()
    for i, d in enumerate(program):
        t = tensors[i]
        assert tuple(t.shape) == d.dims and tensor_digest(t) == trace[i].digest, d.op
        assert all(j < i for j in d.inputs), f"{d.op} reads a record that is not earlier"
        if d.kind == prog.INPUT:
            assert d.consts[0] == trace[i].digest
            continue
        kinds.add(d.kind)
        for e in {0, t.size - 1, *fresh_rng.integers(0, t.size, 4).tolist()}:
            got = recompute(d, int(e), tensors.__getitem__, prog.constants(None, d, table))
            assert got == int(t.flat[e]), f"record {i} {d.op} element {e}: recomputed {got}, traced {int(t.flat[e])}"
    assert kinds == {prog.QMM, prog.RELU, prog.EXP_ROWS, prog.LOSS_GRAD, prog.TRANSPOSE, prog.ROW_SUM,
                     prog.RELU_MASK, prog.MOMENT, prog.SECOND, prog.WEIGHT}


def test_a_program_with_more_outputs_than_a_commitment_holds_is_refused():
    from veracity.errors import InputError
    from veracity.exact.program import MAX_OUTPUTS, check_disputable, mark_outputs

    many = [prog.OpDesc(prog.INPUT, 0, f"x{i}", 4, (1, 3)) for i in range(MAX_OUTPUTS + 1)]
    check_disputable(mark_outputs(many[:MAX_OUTPUTS], list(range(MAX_OUTPUTS))))
    with pytest.raises(InputError, match=f"{MAX_OUTPUTS + 1} output records; a result commits at most {MAX_OUTPUTS}"):
        check_disputable(mark_outputs(many, list(range(MAX_OUTPUTS + 1))))


def test_a_descriptors_encoding_is_the_abi_encoding_the_contracts_hash(fresh_rng):
    """``program.encode_desc`` (written out, for speed) is ``eth_abi``'s encoding of the contracts'
    ``OpDesc`` tuple, for descriptors of every size the contracts decode, negative parameters too."""
    from eth_abi import encode

    rng = fresh_rng
    for _ in range(300):
        n = lambda most: int(rng.integers(0, most + 1))  # noqa: E731
        d = prog.OpDesc(int(rng.integers(1, 70)), int(rng.integers(0, 2**32)), "op." * n(16), int(rng.integers(1, 6)),
                        tuple(int(v) for v in rng.integers(1, 5000, n(4))),
                        tuple(prog.NO_INPUT if rng.random() < 0.2 else int(v) for v in rng.integers(0, 10**6, n(4))),
                        tuple(rng.bytes(32) for _ in range(n(3))),
                        tuple(int(v) * 2**40 for v in rng.integers(-2**20, 2**20, n(2))), n(9), n(9))
        assert prog.encode_desc(d) == encode([prog.DESC_ABI], [d.as_tuple()]), d
