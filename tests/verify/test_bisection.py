"""Phase one of the dispute game finds the first differing record in ceil(log2 n) + 1 rounds."""

import math
from pathlib import Path

import pytest

from veracity.exact.trace import TraceRecord, decode_records, first_difference
from veracity.sim.adversary import corrupt_op_job, lazy_job
from veracity.verify.bisection import Bisection, TraceView, play, rounds_needed
from veracity.workloads.infer import run_infer_job

INPUTS = Path(__file__).resolve().parent.parent.parent / "examples" / "inputs"


def synthetic(n, changed=()):
    return [TraceRecord(i // 4, f"op{i % 4}", bytes([i % 251, 1 if i in changed else 0]) * 16) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 64, 1000, 1 << 16])
def test_the_first_differing_record_is_found(n, fresh_rng):
    k = int(fresh_rng.integers(n))
    later = {k, *fresh_rng.integers(k, n, 3).tolist()}  # more differences after the first
    out = play(TraceView(synthetic(n, later)), TraceView(synthetic(n)), n)
    assert out.record == k and out.loser is None
    assert out.rounds <= (math.ceil(math.log2(n)) if n > 1 else 0) + 1
    assert rounds_needed(n) == (math.ceil(math.log2(n)) if n > 1 else 0)


def test_identical_traces_leave_nothing_to_dispute():
    out = play(TraceView(synthetic(50)), TraceView(synthetic(50)), 50)
    assert out.record is None and out.loser is None and out.rounds == 1


def test_a_reveal_that_does_not_prove_loses():
    honest, other = TraceView(synthetic(40)), TraceView(synthetic(40, {7}))
    out = play(other, honest, 40, provider_root=honest.root)  # reveals from a trace it did not commit
    assert out.loser == "provider"


def test_real_adversaries_against_an_honest_trace():
    data = (INPUTS / "minilm.jsonl").read_bytes()
    honest = decode_records(run_infer_job("minilm", data, backend="numpy").trace)
    corrupt = decode_records(corrupt_op_job("minilm", data).trace)
    out = play(TraceView(corrupt), TraceView(honest), len(honest))
    assert out.record == first_difference(honest, corrupt) and out.rounds <= rounds_needed(len(honest)) + 1
    lazy = decode_records(lazy_job("minilm", data).trace)
    assert play(TraceView(lazy), TraceView(honest), len(honest)).record == 0  # made up from the first record
    assert play(TraceView(lazy[:-1]), TraceView(honest), len(honest)).loser == "provider"  # wrong length


def test_the_state_machine():
    s = Bisection.start(8)
    assert (s.agree, s.differ, s.mid, s.done) == (-1, 7, 3, False)
    s = s.after(True).after(False)
    assert (s.agree, s.differ) == (3, 5)
    s = s.after(True)
    assert s.done and s.differ == 5
    with pytest.raises(ValueError):
        s.after(True)
