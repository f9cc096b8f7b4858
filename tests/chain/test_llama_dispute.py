"""SmolLM2 disputes on a real anvil node: a provider whose committed trace is wrong at one record of
any kind the Llama family uses (the Q8_0 embedding, the block-quantized linear and the LM head's
logits, the wide RMSNorm, RoPE, the KV cache, grouped-query scores, probabilities and context, the
residual add, the SiLU gate, the token pick) is located, judged to one element by the
LlamaReferee or LlamaAttentionReferee, and overturned; each judgement under 3M gas."""

import json

import numpy as np
import pytest
from test_dispute_game import committed_order, play, players

from veracity.exact import program as prog
from veracity.exact.trace import CODE_DTYPES, TraceRecord, decode_records, records_root, tensor_digest
from veracity.models.registry import loaded
from veracity.workloads.infer import job_program, record_tensors, run_infer_job

JUDGE_GAS = 3_000_000


@pytest.fixture(scope="module")
def llama_job():
    model = loaded("smollm2")
    inputs = (json.dumps({"prompt": "The sky is", "max_tokens": 2}) + "\n").encode()
    program = job_program("smollm2", inputs, model)
    honest = run_infer_job("smollm2", inputs, backend="torch", model=model)
    tensors = record_tensors("smollm2", inputs, set(range(len(program))), model=model)
    return model, program, (decode_records(honest.trace), honest.trace_root, tensors.get)


def cheat_at(honest, program, k):
    """A provider's side whose record ``k`` is off by 3 in one element, everything else as computed
    (the first record it gets wrong is ``k``): its trace, root and tensors."""
    records, _, tensors = honest
    bad = np.array(tensors(k), dtype=np.int64, copy=True)
    at = bad.size // 3
    bad.flat[at] += 3 if bad.flat[at] < 1000 else -3
    digest = tensor_digest(bad.astype(CODE_DTYPES[program[k].dtype]))
    cheat = [r if i != k else TraceRecord(r.step, r.op, digest) for i, r in enumerate(records)]
    return cheat, records_root(cheat), (lambda i: bad if i == k else tensors(i))


def record_of(program, kind, block="block.15."):
    """The first record of ``kind`` in the middle block of the second pass (else the last of it)."""
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
    cheat = cheat_at(honest, program, k)
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
    cheat = cheat_at(honest, program, head)
    oid, _ = committed_order(a, program, cheat[1], len(program))
    a.d.disputes_client(a.validator.key).challenge(oid, honest[1])
    play(a, oid, players(a, oid, model, program, cheat, honest))
    assert a.client.market.order(oid).state_name == "overturned"
