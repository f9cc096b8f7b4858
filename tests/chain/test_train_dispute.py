"""Disputes over training jobs on a real anvil node: a provider that altered one element of one op
inside an optimizer step (the forward GEMM, the ReLU, the exp rows, the loss gradient, a
transpose, the weight gradient, the bias gradient, the ReLU mask, the momentum, the second
moment, the weight update) and trained on from it is bisected to that op, the TrainReferee
recomputes the element, and the provider is slashed; an honest trainer keeps its pay against a
corrupted challenge."""

from pathlib import Path

import pytest
from test_dispute_game import committed_order, play

from veracity.client.player import CHALLENGER, PROVIDER, Player
from veracity.exact import program as prog
from veracity.exact.trace import decode_records
from veracity.sim.adversary import train_tamper
from veracity.verify.sampling import bond_to_provider, challenger_reward
from veracity.workloads.train import (
    TrainParams,
    record_tensors,
    run_train_job,
    train_program,
)

DATA = (Path(__file__).resolve().parent.parent.parent / "examples" / "inputs" / "digits-train.jsonl").read_bytes()


@pytest.fixture(scope="module", params=["momentum", "adam"])
def training(request):
    params = TrainParams(steps=2, seed=1, optimizer=request.param, lr=0.05 if request.param != "adam" else 0.01,
                         batch=8)
    return params, train_program(params, None, DATA)


def side(params, n, at=None):
    """A party's trace and its record tensors: honest, or with one element of record ``at`` altered."""
    cheat = (lambda: train_tamper(at)) if at is not None else (lambda: None)
    result = run_train_job(DATA, params, tamper=cheat())
    tensors = record_tensors(DATA, params, None, set(range(n)), tamper=cheat())
    return decode_records(result.trace), result.trace_root, tensors.get


def players(a, oid, program, prov, chal):
    from veracity.exact.integer import exp_table_digest, exp_table_tensor

    table = {exp_table_digest(): exp_table_tensor()}
    make = lambda party, key, s: Player(party, a.d.disputes_client(key), a.d.referees, oid, s[0], program, s[2],  # noqa: E731
                                        lambda d: prog.constants(None, d, table))
    return [make(PROVIDER, a.provider.key, prov), make(CHALLENGER, a.validator.key, chal)]


def last_of(program, kind, step=2):
    """The last record of ``kind`` in step ``step`` (the second step: its inputs are records too)."""
    return max(i for i, d in enumerate(program) if d.kind == kind and d.step == step)


KINDS = ["qmm", "relu", "exp_rows", "loss_grad", "transpose", "row_sum", "relu_mask", "moment", "second", "weight"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_trainer_that_altered_one_op_is_judged_and_slashed(actors, training, kind):
    a = actors
    params, program = training
    code = next(k for k, name in prog.KIND_NAMES.items() if name == kind)
    at = last_of(program, code)
    cheat, honest = side(params, len(program), at), side(params, len(program))
    oid, bid = committed_order(a, program, cheat[1], len(program))
    chal0 = a.validator.token.balance_of(a.validator.address)
    node0 = a.provider.registry.node(a.provider.address)
    a.d.disputes_client(a.validator.key).challenge(oid, honest[1])
    moves = play(a, oid, players(a, oid, program, cheat, honest))
    g = a.d.disputes_client(a.validator.key).game(oid)
    assert g.differ == at, (g.differ, program[g.differ].op, program[at].op)
    assert any("referee" in m for m in moves) and g.provider_element != g.challenger_element
    share = (node0.stake - node0.locked) * 2000 // 10_000
    assert a.client.market.order(oid).state_name == "overturned"
    assert a.validator.token.balance_of(a.validator.address) == chal0 + challenger_reward(bid.collateral + share)


def test_an_honest_trainer_wins_against_a_corrupted_challenge(actors, training):
    a = actors
    params, program = training
    at = last_of(program, prog.WEIGHT)
    honest, liar = side(params, len(program)), side(params, len(program), at)
    oid, _ = committed_order(a, program, honest[1], len(program))
    prov0 = a.provider.token.balance_of(a.provider.address)
    a.d.disputes_client(a.validator.key).challenge(oid, liar[1])
    moves = play(a, oid, players(a, oid, program, honest, liar))
    assert any("referee" in m for m in moves)
    assert a.provider.token.balance_of(a.provider.address) == prov0 + bond_to_provider(a.d.disputes_client(a.validator.key).game(oid).bond)
    assert a.client.market.order(oid).state_name == "committed"
