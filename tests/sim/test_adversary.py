"""The adversaries really cheat: their results differ from the honest run where they say."""

from pathlib import Path

from veracity.exact.trace import decode_records, first_difference, records_root
from veracity.sim.adversary import corrupt_op_job, lazy_job, wrong_output_job
from veracity.workloads.infer import run_infer_job

INPUTS = Path(__file__).resolve().parent.parent.parent / "examples" / "inputs"


def test_corrupt_op_alters_one_op_and_everything_after_it_consistently():
    data = (INPUTS / "minilm.jsonl").read_bytes()
    honest = run_infer_job("minilm", data, backend="numpy")
    bad = corrupt_op_job("minilm", data)
    ours, theirs = decode_records(honest.trace), decode_records(bad.trace)
    assert len(ours) == len(theirs) and records_root(theirs) == bad.trace_root != honest.trace_root
    i = first_difference(ours, theirs)
    assert i is not None and abs(i - len(ours) // 2) <= 3  # about half-way through
    assert ours[:i] == theirs[:i] and ours[-1] != theirs[-1]  # consistent from the altered op on
    assert bad.outputs != honest.outputs


def test_lazy_and_wrong_output():
    data = (INPUTS / "digits-mlp.jsonl").read_bytes()
    honest = run_infer_job("digits-mlp", data, backend="numpy")
    lazy = lazy_job("digits-mlp", data)
    assert lazy.outputs != honest.outputs and lazy.trace_root != honest.trace_root
    assert records_root(decode_records(lazy.trace)) == lazy.trace_root  # made up, but self-consistent
    assert len(decode_records(lazy.trace)) == honest.ops  # as long as the program, so it can commit
    assert first_difference(decode_records(honest.trace), decode_records(lazy.trace)) == 0
    forged = wrong_output_job("digits-mlp", data)
    assert forged.outputs != honest.outputs
    ours, theirs = decode_records(honest.trace), decode_records(forged.trace)
    assert first_difference(ours, theirs) == len(ours) - 1  # only the final output is off
