"""The two-level game on a real anvil node (``exact.levels``): providers commit only their coarse
trace; a dispute bisects it to a step, both commit that step's op-level trace (recomputed now),
and the game goes on inside it to one op, one chunk, one element and the referee. A corrupted op
deep inside a step is found exactly there; a provider whose op-level trace does not connect to
its coarse record, or that lies about the ops inside the disputed step, loses."""

import json
import math

import numpy as np
import pytest
from test_dispute_game import committed_order

from veracity.client.player import CHALLENGER, PROVIDER, Player
from veracity.errors import ChainError
from veracity.exact import program as prog
from veracity.exact.trace import TraceRecord, decode_records, records_root, tensor_digest
from veracity.models.registry import load
from veracity.workloads.jobs import infer_job

TEXTS = ["The cat sat on the mat.", "Exact arithmetic makes checking a hash comparison."]


@pytest.fixture(scope="module")
def minilm():
    model = load("minilm")
    job = infer_job("minilm", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode())
    levels = job.levels(model)
    return model, job, levels, levels.coarse_program()


def alter_first(k):
    """Every element of record ``k`` moved by 50 (one element moved a little may be rounded away by
    the ops after it: a change no exported record shows, which no dispute needs to find)."""
    return lambda i, op, x: np.asarray(x, dtype=np.int64) + 50 if i == k else x


class Side:
    """A party: its committed coarse trace, its tensors and its op-level traces, honest or with
    record ``at`` (a full-program index) altered and everything after it computed from it."""

    def __init__(self, minilm, at=None):
        self.model, self.job, self.levels, _ = minilm
        self.cheat = (lambda: alter_first(at)) if at is not None else (lambda: None)
        result = self.job.run("numpy", self.model, tamper=self.cheat())
        self.records, self.root = decode_records(result.trace), result.trace_root
        self._tensors = None

    def tensor(self, i):
        if self._tensors is None:
            self._tensors = self.job.tensors(set(range(len(self.levels.program))), self.model, self.cheat())
        return self._tensors.get(i)

    def step_records(self, s):
        return self.job.step_records(self.levels, s, self.model, self.cheat())


def player(a, oid, minilm, party, key, side, step_records=None):
    model, _, levels, coarse = minilm
    return Player(party, a.d.disputes_client(key), a.d.referees, oid, side.records, coarse, side.tensor,
                  lambda d: prog.constants(model, d), levels, step_records or side.step_records)


def play(chal, oid, players, limit=300):
    """Both move until the game settles or nobody can; returns the moves made (a move the contract
    refuses counts as none: that party will miss its deadline)."""
    moves = []
    for _ in range(limit):
        if chal.game(oid).stage_name == "settled":
            break
        acted = False
        for p in players:
            try:
                m = p.act()
            except ChainError:
                m = None
            if m:
                moves.append(m)
                acted = True
        if not acted:
            break
    return moves


def located(levels, i):
    """Record ``i`` (a full index) as the referees number it inside its step."""
    s, place = levels.where[i]
    return levels.first[s] + place


INSIDE = ["layer.1.qkv", "layer.2.attn.context", "layer.3.ln1", "layer.4.gelu"]


@pytest.mark.parametrize("name", INSIDE)
def test_an_op_corrupted_inside_a_step_is_found_there_and_slashed(actors, minilm, name):
    a = actors
    model, job, levels, coarse = minilm
    k = next(i for i, d in enumerate(levels.program) if d.op.endswith(name) or d.op == name)
    assert k not in levels.coarse_index  # an op no coarse trace holds
    cheat, honest = Side(minilm, k), Side(minilm)
    assert cheat.root != honest.root
    oid, bid = committed_order(a, coarse, cheat.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    client0 = a.client.token.balance_of(a.client.address)
    chal.challenge(oid, honest.root)
    moves = play(chal, oid, [player(a, oid, minilm, PROVIDER, a.provider.key, cheat),
                             player(a, oid, minilm, CHALLENGER, a.validator.key, honest)])
    assert any(m.startswith("opened step") for m in moves)
    assert any(f"of record {located(levels, k)} (" in m for m in moves if "referee" in m)  # the op itself
    assert a.client.market.order(oid).state_name == "overturned"
    assert a.client.token.balance_of(a.client.address) == client0 + bid.price
    # rounds over both levels, against a single-level game over every record
    reveals = sum(1 for m in moves if m.startswith("revealed the chain value")) // 2
    assert reveals <= math.ceil(math.log2(len(levels.program))) + 3


def test_an_op_level_trace_that_does_not_connect_to_its_coarse_record_loses(actors, minilm):
    """The provider commits a coarse record its own computation does not give: the step's op-level
    trace it recomputes cannot hold it, so it cannot open the step and loses at its deadline."""
    a = actors
    model, job, levels, coarse = minilm
    honest = Side(minilm)
    d = len(coarse) // 2
    forged = list(honest.records)
    forged[d] = TraceRecord(forged[d].step, forged[d].op, tensor_digest(honest.tensor(levels.coarse[d]) + 1))
    cheat = Side(minilm)
    cheat.records, cheat.root = forged, records_root(forged)
    oid, _ = committed_order(a, coarse, cheat.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, honest.root)
    prov = player(a, oid, minilm, PROVIDER, a.provider.key, cheat)
    moves = play(chal, oid, [prov, player(a, oid, minilm, CHALLENGER, a.validator.key, honest)])
    g = chal.game(oid)
    assert g.stage_name == "located" and g.differ == d and not g.fine
    assert any(m.startswith("opened step") for m in moves)  # the challenger did
    with pytest.raises(ChainError, match="does not hold your committed record"):
        prov.open_step(d)
    a.advance(g.deadline - a.now() + 1)
    a.d.disputes_client(a.stranger.key).timeout(oid)
    assert a.client.market.order(oid).state_name == "overturned"


def test_a_provider_that_lies_about_the_ops_inside_the_step_loses(actors, minilm):
    """The provider's coarse record is wrong (an op inside the step was), and in the dispute it
    shows an op-level trace of honest records that ends in its committed one: the game finds the
    first op that differs, the one it claims, and the referee recomputes it from agreed inputs."""
    a = actors
    model, job, levels, coarse = minilm
    k = next(i for i, d in enumerate(levels.program) if d.op == "layer.2.qkv")
    cheat, honest = Side(minilm, k), Side(minilm)
    oid, _ = committed_order(a, coarse, cheat.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, honest.root)

    def pinned_on_the_exported_record(s):
        """Honest op records, and the committed (wrong) digest at the step's exported record."""
        recs = honest.step_records(s)
        mine = cheat.step_records(s)
        out = list(recs)
        for n, i in enumerate(levels.steps[s]):
            if i in levels.coarse_index:
                out[n] = mine[n]
        return out

    prov = player(a, oid, minilm, PROVIDER, a.provider.key, cheat, pinned_on_the_exported_record)
    moves = play(chal, oid, [prov, player(a, oid, minilm, CHALLENGER, a.validator.key, honest)])
    s = levels.program[k].step
    exported = next(i for i in levels.steps[s] if i in levels.coarse_index and i > k)
    assert any(f"of record {located(levels, exported)} (" in m for m in moves if "referee" in m)
    assert a.client.market.order(oid).state_name == "overturned"


def test_a_lying_challenger_loses_to_an_honest_provider_inside_a_step(actors, minilm):
    a = actors
    model, job, levels, coarse = minilm
    k = next(i for i, d in enumerate(levels.program) if d.op == "layer.3.gelu")
    honest, liar = Side(minilm), Side(minilm, k)
    oid, _ = committed_order(a, coarse, honest.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, liar.root)
    bond = chal.game(oid).bond
    prov0 = a.provider.token.balance_of(a.provider.address)
    moves = play(chal, oid, [player(a, oid, minilm, PROVIDER, a.provider.key, honest),
                             player(a, oid, minilm, CHALLENGER, a.validator.key, liar)])
    assert any(f"of record {located(levels, k)} (" in m for m in moves if "referee" in m)
    assert a.client.market.order(oid).state_name == "committed"  # the result stands
    assert a.provider.token.balance_of(a.provider.address) > prov0 and bond > 0


def test_an_honest_coarse_commitment_defended_with_a_lying_op_level_trace_loses(actors, minilm):
    """The provider's coarse trace is honest, but the op-level trace it shows for the disputed step
    lies about an op (a made-up digest, the step's exported records kept right so it connects):
    every level binds, so the game finds that op and the provider, unable to open it, loses."""
    a = actors
    model, job, levels, coarse = minilm
    k = next(i for i, d in enumerate(levels.program) if d.op == "layer.3.gelu")
    s = levels.program[k].step
    op = next(i for i in levels.steps[s] if levels.program[i].op == "layer.3.ln1")  # before the gelu
    honest, liar = Side(minilm), Side(minilm, k)
    oid, _ = committed_order(a, coarse, honest.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, liar.root)  # a lying challenger: altered from the gelu on

    def made_up_op(step):
        recs = honest.step_records(step)
        if step == s:
            n = levels.where[op][1]
            recs[n] = TraceRecord(recs[n].step, recs[n].op, b"\x09" * 32)
        return recs

    prov = player(a, oid, minilm, PROVIDER, a.provider.key, honest, made_up_op)
    play(chal, oid, [prov, player(a, oid, minilm, CHALLENGER, a.validator.key, liar)])
    g = chal.game(oid)
    assert g.fine and g.stage_name == "located" and g.offset + g.differ == located(levels, op)
    a.advance(g.deadline - a.now() + 1)
    a.d.disputes_client(a.stranger.key).timeout(oid)
    assert a.client.market.order(oid).state_name == "overturned"
