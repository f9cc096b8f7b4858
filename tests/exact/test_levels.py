"""Two-level traces (``exact.levels``) on a small made-up program: which records are coarse, how a
step's op-level records are numbered, and that the coarse records before a step and the step's
records chain as one trace."""

import os

import pytest

from veracity.errors import InputError
from veracity.exact import levels as lv
from veracity.exact import program as prog
from veracity.exact.trace import TraceRecord, chained

N = prog.NO_INPUT


def desc(kind, step, op, inputs=(), output=0, outputs=0):
    return prog.OpDesc(kind, step, op, 4, (2, 3), tuple(inputs), (), (), output, outputs)


# step 0: the input; step 1: a, b (b read later); step 2: c reads b and the input; step 3: the output
PROGRAM = [desc(prog.INPUT, 0, "x"),
           desc(prog.RELU, 1, "a", (0,)), desc(prog.RELU, 1, "b", (1,)),
           desc(prog.ADD, 2, "c", (2, 0)), desc(prog.RELU, 2, "d", (3,)), desc(prog.RELU, 2, "e", (N,)),
           desc(prog.RELU, 3, "out", (4,), output=1, outputs=1)]


def test_the_coarse_records_are_what_a_later_step_reads_and_the_outputs():
    levels = lv.Levels.of(PROGRAM)
    assert lv.exported(PROGRAM) == levels.coarse == [0, 2, 4, 6]
    assert levels.first == {0: 0, 1: 1, 2: 2, 3: 3}
    coarse = levels.coarse_program()
    assert [d.kind for d in coarse] == [prog.STEP] * 4
    c = coarse[2]  # d: place 1 of step 2 (3 records), the step's first coarse index 2
    assert (c.op, c.inputs, c.params, c.consts) == ("d", (2,), (1, 3), (levels.segment_roots[2],))
    assert coarse[3].output == 1 and coarse[3].outputs == 1


def test_a_steps_records_are_numbered_on_from_the_coarse_records_before_it():
    levels = lv.Levels.of(PROGRAM)
    seg = levels.segment(2)
    assert [d.inputs for d in seg] == [(1, 0), (2,), (N,)]  # b and x by coarse index; c as 2 + 0
    assert [levels.full_index(2, n) for n in (0, 1, 2, 3, 4)] == [0, 2, 3, 4, 5]
    assert prog.program_root(seg) == levels.segment_roots[2]


def test_the_coarse_records_before_a_step_and_its_records_are_one_chain():
    levels = lv.Levels.of(PROGRAM)
    full = [TraceRecord(d.step, d.op, os.urandom(32)) for d in PROGRAM]
    coarse = levels.coarse_records(full)
    step = [full[i] for i in levels.steps[2]]
    seed = lv.seed(coarse, levels.first[2])
    assert seed == chained(coarse)[1]
    assert chained(coarse[:2]) + chained(step, seed) == chained(coarse[:2] + step)
    # from the seed, the leaves of the step's coarse records before one hash forward to the value before it
    assert lv.links(coarse, 2, 2) == []
    assert chained(step[:2], seed)[-1] != chained(coarse[:3])[-1]  # op-level values are not coarse ones


def test_a_step_exporting_more_than_a_dispute_can_open_is_refused():
    wide = [desc(prog.INPUT, 0, f"x{i}") for i in range(lv.MAX_STEP_COARSE + 1)]
    wide.append(desc(prog.ADD, 1, "sum", (0, lv.MAX_STEP_COARSE), output=1, outputs=1))
    levels = lv.Levels.of(wide)
    assert len(levels.coarse) == 3  # x0, the last x, the sum
    many = [desc(prog.INPUT, 0, f"x{i}") for i in range(lv.MAX_STEP_COARSE + 1)]
    many += [desc(prog.ADD, 1, f"s{i}", (i, i)) for i in range(lv.MAX_STEP_COARSE + 1)]
    many.append(desc(prog.RELU, 1, "last", (0,), output=1, outputs=1))
    with pytest.raises(InputError, match="exports 258 records"):
        lv.Levels.of(many).coarse_program()
