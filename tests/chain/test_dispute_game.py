"""The whole dispute game on a real anvil node, with real digits-MLP and MiniLM traces: bisection
to the first differing record, opening it against the order's program, descending the chunk trees
to one element, and a referee recomputing that element with OneStep. A provider that corrupted
one element of a record of any kind the models use loses its collateral and stake share; an honest
provider challenged with a corrupted trace keeps its pay and takes the challenger's bond."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from test_market import MODEL, SPEC, TOKEN, bid_for, register_provider

from veracity.client.player import CHALLENGER, PROVIDER, Player
from veracity.errors import ChainError
from veracity.exact import program as prog
from veracity.exact.trace import decode_records
from veracity.models.registry import load
from veracity.sim.adversary import alter_record, corrupt_tamper
from veracity.verify.sampling import bond_to_provider, challenger_reward
from veracity.workloads.infer import job_program, record_tensors, run_infer_job

MODEL_NAME = "digits-mlp"


@pytest.fixture(scope="module")
def job():
    digits = load_digits()
    inputs = "".join(json.dumps({"pixels": [int(v) for v in digits.data[i]]}) + "\n" for i in range(40)).encode()
    model = load(MODEL_NAME)
    return model, inputs, job_program(MODEL_NAME, inputs, model)


def side(model, inputs, n, at=None):
    """A party's trace and its record tensors: honest, or corrupted at record ``at``."""
    fresh = (lambda: corrupt_tamper(MODEL_NAME, inputs, model, at=at)) if at is not None else (lambda: None)
    result = run_infer_job(MODEL_NAME, inputs, backend="numpy", model=model, tamper=fresh(), coarse=False)
    tensors = record_tensors(MODEL_NAME, inputs, set(range(n)), model=model, tamper=fresh())
    return decode_records(result.trace), result.trace_root, tensors.get


def play(a, oid, players, limit=200):
    """Both parties move until the game settles; returns the moves made."""
    moves = []
    chal = a.d.disputes_client(a.validator.key)
    for _ in range(limit):
        if chal.game(oid).stage_name == "settled":
            return moves
        acted = False
        for p in players:
            try:
                m = p.act()
            except ChainError as exc:
                if "stage" in str(exc) or "no element" in str(exc):
                    m = None
                else:
                    raise
            if m:
                moves.append(m)
                acted = True
        assert acted, f"nobody could move in stage {chal.game(oid).stage_name}"
    raise AssertionError("the game did not settle")


def scores_cheat_challenged(a, minilm_job):
    """A MiniLM result whose first attention-scores record was altered, committed and challenged
    with the honest root: (that record, the order, the challenger's client, both players)."""
    model, inputs, program, honest = minilm_job
    k = next(i for i, d in enumerate(program) if d.kind == prog.SCORES)
    result = run_infer_job("minilm", inputs, backend="numpy", model=model, tamper=alter_record(k), coarse=False)
    tensors = record_tensors("minilm", inputs, set(range(len(program))), model=model, tamper=alter_record(k))
    cheat = (decode_records(result.trace), result.trace_root, tensors.get)
    oid, _ = committed_order(a, program, cheat[1], len(program))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, honest[1])
    return k, oid, chal, players(a, oid, model, program, cheat, honest)


def play_to_judging(chal, oid, players, limit=100):
    """Play the game up to its judgement (or its end), and no further."""
    for _ in range(limit):
        for p in players:
            if chal.game(oid).stage_name in ("judging", "settled"):
                return
            p.act()


def committed_order(a, program, root, n):
    register_provider(a.provider)
    oid = a.client.market.open_order(SPEC, 1, MODEL, 50 * TOKEN, a.now() + 600, 600, 500,
                                     prog.program_root(program), len(program))
    bid = bid_for(a, oid)
    a.client.market.accept_bid(bid)
    a.provider.market.commit_result(oid, b"\1" * 32, root, n)
    return oid, bid


def players(a, oid, model, program, prov, chal):
    make = lambda party, key, s: Player(party, a.d.disputes_client(key), a.d.referees, oid, s[0], program, s[2],
                                        lambda d: prog.constants(model, d))
    return [make(PROVIDER, a.provider.key, prov), make(CHALLENGER, a.validator.key, chal)]


@pytest.mark.parametrize("at,kind", [(3, "linear"), (2, "relu"), (0, "input"), (11, "linear")])
def test_a_provider_that_corrupted_one_op_is_judged_and_slashed(actors, job, at, kind):
    a = actors
    model, inputs, program = job
    assert prog.KIND_NAMES[program[at].kind] == kind
    cheat, honest = side(model, inputs, len(program), at), side(model, inputs, len(program))
    oid, bid = committed_order(a, program, cheat[1], len(program))
    client0 = a.client.token.balance_of(a.client.address)
    chal0 = a.validator.token.balance_of(a.validator.address)
    node0 = a.provider.registry.node(a.provider.address)
    a.d.disputes_client(a.validator.key).challenge(oid, honest[1])
    moves = play(a, oid, players(a, oid, model, program, cheat, honest))
    g = a.d.disputes_client(a.validator.key).game(oid)
    assert g.differ == at
    if kind != "input":
        assert any("referee" in m for m in moves) and g.provider_element != g.challenger_element
    share = (node0.stake - node0.locked) * 2000 // 10_000
    assert a.client.market.order(oid).state_name == "overturned"
    assert a.client.token.balance_of(a.client.address) == client0 + bid.price
    assert a.validator.token.balance_of(a.validator.address) == chal0 + challenger_reward(bid.collateral + share)
    node = a.provider.registry.node(a.provider.address)
    assert node.stake == node0.stake - bid.collateral - share and node.locked == 0


def test_an_honest_provider_wins_against_a_corrupted_challenge(actors, job):
    a = actors
    model, inputs, program = job
    honest, liar = side(model, inputs, len(program)), side(model, inputs, len(program), 3)
    oid, bid = committed_order(a, program, honest[1], len(program))
    prov0 = a.provider.token.balance_of(a.provider.address)
    chal0 = a.validator.token.balance_of(a.validator.address)
    a.d.disputes_client(a.validator.key).challenge(oid, liar[1])
    moves = play(a, oid, players(a, oid, model, program, honest, liar))
    assert any("referee" in m for m in moves)
    assert a.validator.token.balance_of(a.validator.address) == chal0 - a.d.disputes_client(a.validator.key).game(oid).bond
    assert a.provider.token.balance_of(a.provider.address) == prov0 + bond_to_provider(a.d.disputes_client(a.validator.key).game(oid).bond)
    a.advance(601)
    a.stranger.market.finalize(oid)
    assert a.client.market.order(oid).state_name == "finalized"


def test_a_record_opened_against_another_descriptor_is_refused(actors, job):
    a = actors
    model, inputs, program = job
    cheat, honest = side(model, inputs, len(program), 3), side(model, inputs, len(program))
    oid, _ = committed_order(a, program, cheat[1], len(program))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, honest[1])
    ps = players(a, oid, model, program, cheat, honest)
    while chal.game(oid).stage_name == "bisecting":
        for p in ps:
            p.act()
    from veracity.verify.game import desc_proof

    wrong = program[2]  # a relu's descriptor, shown for the linear at record 3
    with pytest.raises(ChainError, match="not the program's"):
        chal.open_record(oid, wrong.as_tuple(), desc_proof(program, 2), b"\0" * 32)
    real = program[3]
    with pytest.raises(ChainError, match="does not give your committed chain value"):
        chal.open_record(oid, real.as_tuple(), desc_proof(program, 3), b"\5" * 32)


def test_the_trace_must_have_the_programs_length(actors, job):
    a = actors
    model, inputs, program = job
    register_provider(a.provider)
    oid = a.client.market.open_order(SPEC, 1, MODEL, 50 * TOKEN, a.now() + 600, 600, 500,
                                     prog.program_root(program), len(program))
    a.client.market.accept_bid(bid_for(a, oid))
    with pytest.raises(ChainError, match="program length"):
        a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, len(program) + 1)


MINILM_TEXTS = ["The cat sat on the mat.", "Exact arithmetic makes checking a hash comparison.",
                "Validators re-execute a sample of the results."]


@pytest.fixture(scope="module")
def minilm_job():
    model = load("minilm")
    inputs = "".join(json.dumps({"text": t}) + "\n" for t in MINILM_TEXTS).encode()
    program = job_program("minilm", inputs, model)
    honest = run_infer_job("minilm", inputs, backend="numpy", model=model, coarse=False)
    tensors = record_tensors("minilm", inputs, set(range(len(program))), model=model)
    return model, inputs, program, (decode_records(honest.trace), honest.trace_root, tensors.get)


MINILM_KINDS = ["input", "embedding", "add", "layernorm", "linear", "scores", "probs", "probsum", "vt", "context",
                "gelu", "transpose", "mean_pool", "l2_normalize"]


@pytest.mark.parametrize("kind", MINILM_KINDS)
def test_every_minilm_op_is_judged_to_one_element(actors, minilm_job, kind):
    a = actors
    model, inputs, program, honest = minilm_job
    k = next(i for i, d in enumerate(program) if prog.KIND_NAMES[d.kind] == kind and (kind != "input" or i > 0))
    result = run_infer_job("minilm", inputs, backend="numpy", model=model, tamper=alter_record(k), coarse=False)
    tensors = record_tensors("minilm", inputs, set(range(len(program))), model=model, tamper=alter_record(k))
    cheat = (decode_records(result.trace), result.trace_root, tensors.get)
    oid, bid = committed_order(a, program, cheat[1], len(program))
    chal0 = a.validator.token.balance_of(a.validator.address)
    a.d.disputes_client(a.validator.key).challenge(oid, honest[1])
    moves = play(a, oid, players(a, oid, model, program, cheat, honest))
    g = a.d.disputes_client(a.validator.key).game(oid)
    assert g.differ == k and a.client.market.order(oid).state_name == "overturned", (moves, g)
    if kind != "input":
        assert any("called the referee" in m for m in moves)
    assert a.validator.token.balance_of(a.validator.address) > chal0 + challenger_reward(bid.collateral)


@pytest.fixture(scope="module")
def gpt_job():
    model = load("tiny-gpt")
    inputs = (json.dumps({"text": "the cat ", "max_tokens": 3}) + "\n").encode()
    program = job_program("tiny-gpt", inputs, model)
    honest = run_infer_job("tiny-gpt", inputs, backend="numpy", model=model, coarse=False)
    tensors = record_tensors("tiny-gpt", inputs, set(range(len(program))), model=model)
    return model, inputs, program, (decode_records(honest.trace), honest.trace_root, tensors.get)


@pytest.mark.parametrize("kind,nth", [("argmax", 0), ("append", 0), ("select_last", 1), ("embedding", 2)])
def test_generation_is_judged_token_by_token(actors, gpt_job, kind, nth):
    """tiny-GPT: a wrong next token, a wrong id appended, a wrong last position, and an embedding
    of the ids a later pass reads (which earlier passes chose) are each judged to one element."""
    a = actors
    model, inputs, program, honest = gpt_job
    k = [i for i, d in enumerate(program) if prog.KIND_NAMES[d.kind] == kind][nth]
    result = run_infer_job("tiny-gpt", inputs, backend="numpy", model=model, tamper=alter_record(k), coarse=False)
    tensors = record_tensors("tiny-gpt", inputs, set(range(len(program))), model=model, tamper=alter_record(k))
    cheat = (decode_records(result.trace), result.trace_root, tensors.get)
    oid, _ = committed_order(a, program, cheat[1], len(program))
    a.d.disputes_client(a.validator.key).challenge(oid, honest[1])
    moves = play(a, oid, players(a, oid, model, program, cheat, honest))
    assert a.d.disputes_client(a.validator.key).game(oid).differ == k
    assert a.client.market.order(oid).state_name == "overturned" and any("called the referee" in m for m in moves)


def test_an_input_record_must_be_the_agreed_one(actors, minilm_job):
    """A judge call that shows a made-up earlier record (an all-zero mask, as a party could hide
    at a leaf the bisection never queried) is refused: an input is proven by chain links forward
    to the chain value both parties revealed, not by a tree either could have filled."""
    from veracity.exact.trace import TraceRecord, tensor_digest
    from veracity.verify.bisection import TraceView
    from veracity.verify.game import TensorSide, judge_args

    a = actors
    _, _, program, honest = minilm_job
    k, oid, chal, ps = scores_cheat_challenged(a, minilm_job)
    mask = program[k].inputs[1]
    play_to_judging(chal, oid, ps)  # and stop there
    g = chal.game(oid)
    assert g.stage_name == "judging", g
    fake_mask = np.zeros(program[mask].dims, dtype=np.int32)
    records = list(honest[0])
    records[mask] = TraceRecord(records[mask].step, records[mask].op, tensor_digest(fake_mask))
    sides = {mask: TensorSide(fake_mask)}

    def side(i):
        return sides.get(i) or TensorSide(honest[2](i).astype(np.int16))

    kind, args = judge_args(program[k], k, g.element, TraceView(records), side, None)
    with pytest.raises(ChainError, match="not the one both parties agreed on"):
        chal.judge(a.d.referees, kind, oid, *args)
    play(a, oid, ps)  # the real inputs still judge it
    assert a.client.market.order(oid).state_name == "overturned"


def test_an_element_nobody_proves_wrong_in_time_leaves_the_result_standing(actors, minilm_job):
    """Hole 6: a game that reaches its element and is never judged (a record no referee reads,
    or a challenger that cannot prove) ends in the provider's favour: a challenger wins only by
    proving a fault, so a client's sybil cannot stall an honest result into a refund."""
    a = actors
    _, oid, chal, ps = scores_cheat_challenged(a, minilm_job)
    bond = chal.game(oid).bond
    before = a.provider.token.balance_of(a.provider.address)
    play_to_judging(chal, oid, ps)  # and nobody calls the referee
    assert chal.game(oid).stage_name == "judging"
    anyone = a.d.disputes_client(a.stranger.key)
    with pytest.raises(ChainError, match="deadline has not passed"):
        anyone.timeout(oid)
    a.advance(chal.game(oid).deadline - a.now() + 1)
    anyone.timeout(oid)
    assert a.client.market.order(oid).state_name == "committed"  # the result stands, its window restarted
    assert a.provider.token.balance_of(a.provider.address) == before + bond_to_provider(bond)  # half is burnt
