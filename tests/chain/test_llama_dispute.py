"""SmolLM2 disputes on a real anvil node: a provider whose committed trace is wrong at one record of
any kind the Llama family uses (the Q8_0 embedding, the block-quantized linear and the LM head's
logits, the wide RMSNorm, RoPE, the KV cache, grouped-query scores, probabilities and context, the
residual add, the SiLU gate, the token pick) is located, judged to one element by the
LlamaReferee or LlamaAttentionReferee, and overturned (the judgements' gas: bench/dispute.py)."""

import json

import pytest
from test_dispute_game import committed_order, play, players

from veracity.exact import program as prog
from veracity.exact.trace import CODE_DTYPES, decode_records
from veracity.models.registry import loaded
from veracity.sim.adversary import altered_trace
from veracity.workloads.infer import job_program, record_tensors, run_infer_job


@pytest.fixture(scope="module")
def llama_job():
    model = loaded("smollm2")
    inputs = (json.dumps({"prompt": "The sky is", "max_tokens": 2}) + "\n").encode()
    program = job_program("smollm2", inputs, model)
    honest = run_infer_job("smollm2", inputs, backend="torch", model=model, coarse=False)
    tensors = record_tensors("smollm2", inputs, set(range(len(program))), model=model)
    return model, program, (decode_records(honest.trace), honest.trace_root, tensors.get)


def record_of(program, kind, block="block.15."):
    """The first record of ``kind`` in the middle block of the trace's second half (else the first in
    that half, else the first of all)."""
    hits = [i for i, d in enumerate(program) if prog.KIND_NAMES[d.kind] == kind]
    second = [i for i in hits if i > len(program) // 2]
    middle = [i for i in second if program[i].op.startswith(block)]
    return (middle or second or hits)[0]


KINDS = ["qembed", "blinear", "wrmsnorm", "rope", "kv_append", "transpose", "gqa_scores", "gqa_probs", "gqa_context",
         "resid_add", "silu_gate", "select_last", "row_max", "pick"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_llama_op_is_judged_to_one_element(actors, llama_job, kind):
    a = actors
    model, program, honest = llama_job
    k = record_of(program, kind)
    cheat = altered_trace(honest[0], honest[2], CODE_DTYPES[program[k].dtype], k)
    oid, _ = committed_order(a, program, cheat[1], len(program))
    a.d.disputes_client(a.validator.key).challenge(oid, honest[1])
    moves = play(a, oid, players(a, oid, model, program, cheat, honest))
    g = a.d.disputes_client(a.validator.key).game(oid)
    assert g.differ == k and a.client.market.order(oid).state_name == "overturned", (moves, g)
    judged = [m for m in moves if "called the referee" in m]
    assert judged, moves


def test_the_lm_heads_logits_are_judged(actors, llama_job):
    """The LM head: 49,152 logits laid out in rows of 2,048, the tied Q8_0 table as its matrix."""
    a = actors
    model, program, honest = llama_job
    head = [i for i, d in enumerate(program) if d.op == "head.logits"][-1]
    cheat = altered_trace(honest[0], honest[2], CODE_DTYPES[program[head].dtype], head)
    oid, _ = committed_order(a, program, cheat[1], len(program))
    a.d.disputes_client(a.validator.key).challenge(oid, honest[1])
    play(a, oid, players(a, oid, model, program, cheat, honest))
    assert a.client.market.order(oid).state_name == "overturned"


@pytest.mark.parametrize("kind", ["blinear", "gqa_probs", "pick"])
def test_an_honest_provider_wins_against_a_lying_challenger(actors, llama_job, kind):
    """A challenger whose trace is wrong at one SmolLM2 record: the referee recomputes the honest
    provider's element, the challenger loses its bond, and the result is finalized."""
    from veracity.verify.sampling import bond_to_provider

    a = actors
    model, program, honest = llama_job
    k = record_of(program, kind)
    liar = altered_trace(honest[0], honest[2], CODE_DTYPES[program[k].dtype], k)
    oid, _ = committed_order(a, program, honest[1], len(program))
    prov0 = a.provider.token.balance_of(a.provider.address)
    chal0 = a.validator.token.balance_of(a.validator.address)
    disputes = a.d.disputes_client(a.validator.key)
    disputes.challenge(oid, liar[1])
    moves = play(a, oid, players(a, oid, model, program, honest, liar))
    bond = disputes.game(oid).bond
    assert disputes.game(oid).differ == k and any("called the referee" in m for m in moves), moves
    assert a.validator.token.balance_of(a.validator.address) == chal0 - bond
    assert a.provider.token.balance_of(a.provider.address) == prov0 + bond_to_provider(bond)
    a.advance(601)
    a.stranger.market.finalize(oid)
    assert a.client.market.order(oid).state_name == "finalized"
