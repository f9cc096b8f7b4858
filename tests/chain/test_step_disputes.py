"""Disputes over the tiny GPT's training and MiniLM's fine-tuning on a real anvil node: the provider
commits only the coarse trace (each step's state); a dispute bisects it to a step, both parties
show that step's op-level trace (every op of ``training.gpt.gpt_step`` or
``training.lora.lora_step`` a record), and the game goes on to one element of one op, which the
TrainNormReferee, TrainAttentionReferee, FinetuneReferee or TrainReferee recomputes. A trainer
that altered one op (of each kind the steps add) and trained on from it is slashed; an honest
trainer keeps its pay against a challenger that lies about an op."""

from pathlib import Path

import numpy as np
import pytest
from test_dispute_game import committed_order
from test_levels_dispute import play

from veracity.client.player import CHALLENGER, PROVIDER, Player
from veracity.exact import program as prog
from veracity.exact.trace import decode_records
from veracity.verify.game import FINETUNE_KINDS, GPT_KINDS
from veracity.workloads.jobs import Job
from veracity.workloads.spec import load_spec

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"


def two_steps(name, batch, lines=None):
    """A job of two steps (the second's inputs are records too), its levels, posted program, constants."""
    spec = load_spec(JOBS / name)
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"steps": 2, "batch": batch})})
    data = Path(spec.inputs.path).read_bytes()
    if lines:
        data = b"".join(data.splitlines(keepends=True)[:lines])
    job = Job(spec, data)
    levels = job.levels()
    return job, levels, levels.coarse_program(), job.constants()


@pytest.fixture(scope="module")
def gpt():
    return two_steps("tiny-gpt-train.yaml", 2)


@pytest.fixture(scope="module")
def lora():
    return two_steps("reviews-finetune.yaml", 4, lines=24)


def alter(k, element=None):
    """Every seventh element of record ``k`` moved by 4099 (a pattern, so no softmax's shift
    invariance and no rounding hides it from the step's state; not a multiple of 256, so an int8
    record changes too), or only its element ``element``."""
    def tamper(i, op, x):
        if i == k and element is None:
            x.flat[::7] += 4099
        elif i == k:
            x.flat[element] += 4099
    return tamper


class Side:
    """A party: its committed coarse trace and the tensors of the steps a game opens, honest or
    with record ``at`` (a full-program index) altered and everything after it computed from it."""

    def __init__(self, gpt, at=None, element=None):
        self.job, self.levels, _, _ = gpt
        self.cheat = (lambda: alter(at, element)) if at is not None else (lambda: None)
        result = self.job.run("torch", tamper=self.cheat())
        self.records, self.root = decode_records(result.trace), result.trace_root
        self._tensors = None
        self._steps = {}

    def tensor(self, i):
        if self._tensors is None:
            self._tensors = self.job.tensors(set(range(len(self.levels.program))), tamper=self.cheat())
        return self._tensors.get(i)

    def step_records(self, s):
        if s not in self._steps:
            self._steps[s] = self.job.step_records(self.levels, s, tamper=self.cheat())
        return self._steps[s]


@pytest.fixture(scope="module")
def honest(gpt):
    return Side(gpt)


@pytest.fixture(scope="module")
def honest_lora(lora):
    return Side(lora)


def player(a, oid, gpt, party, key, side):
    _, levels, coarse, table = gpt
    return Player(party, a.d.disputes_client(key), a.d.referees, oid, side.records, coarse, side.tensor,
                  lambda d: prog.constants(None, d, table), levels, side.step_records)


def located(levels, i):
    s, place = levels.where[i]
    return levels.first[s] + place


def last_of(levels, kind, step=2, op=""):
    """The last record of ``kind`` (named ``...op``) in step ``step``, whose inputs are records too."""
    return max(i for i, d in enumerate(levels.program) if d.kind == kind and d.step == step and d.op.endswith(op))


CASES = [(prog.KIND_NAMES[k], "") for k in GPT_KINDS] + [("qmm", ".dv"), ("qmm", ".gw")]  # a batched GEMM too


@pytest.mark.parametrize("kind,op", CASES, ids=[f"{k}{o}" for k, o in CASES])
def test_a_trainer_that_altered_one_op_of_the_step_is_found_there_and_slashed(actors, gpt, honest, kind, op):
    a = actors
    job, levels, coarse, _ = gpt
    code = next(k for k, name in prog.KIND_NAMES.items() if name == kind)
    k = last_of(levels, code, op=op)
    cheat = Side(gpt, k)
    assert cheat.root != honest.root
    oid, bid = committed_order(a, coarse, cheat.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    client0 = a.client.token.balance_of(a.client.address)
    chal.challenge(oid, honest.root)
    moves = play(chal, oid, [player(a, oid, gpt, PROVIDER, a.provider.key, cheat),
                             player(a, oid, gpt, CHALLENGER, a.validator.key, honest)])
    assert any(m.startswith("opened step") for m in moves)
    assert any(f"of record {located(levels, k)} (" in m for m in moves if "referee" in m), moves[-4:]
    assert a.client.market.order(oid).state_name == "overturned"
    assert a.client.token.balance_of(a.client.address) == client0 + bid.price


LORA_CASES = [prog.KIND_NAMES[k] for k in FINETUNE_KINDS] + ["ln_bwd"]


@pytest.mark.parametrize("kind", LORA_CASES)
def test_a_fine_tuner_that_altered_one_op_of_the_step_is_found_there_and_slashed(actors, lora, honest_lora, kind):
    a = actors
    job, levels, coarse, _ = lora
    code = next(k for k, name in prog.KIND_NAMES.items() if name == kind)
    k = last_of(levels, code)
    cheat = Side(lora, k)
    assert cheat.root != honest_lora.root
    oid, bid = committed_order(a, coarse, cheat.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, honest_lora.root)
    moves = play(chal, oid, [player(a, oid, lora, PROVIDER, a.provider.key, cheat),
                             player(a, oid, lora, CHALLENGER, a.validator.key, honest_lora)])
    assert any(f"of record {located(levels, k)} (" in m for m in moves if "referee" in m), moves[-4:]
    assert a.client.market.order(oid).state_name == "overturned"


def test_an_honest_trainer_wins_against_a_challenger_that_lies_about_an_op(actors, gpt, honest):
    a = actors
    job, levels, coarse, _ = gpt
    k = last_of(levels, prog.LN_BWD)
    liar = Side(gpt, k)
    oid, _ = committed_order(a, coarse, honest.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, liar.root)
    prov0 = a.provider.token.balance_of(a.provider.address)
    moves = play(chal, oid, [player(a, oid, gpt, PROVIDER, a.provider.key, honest),
                             player(a, oid, gpt, CHALLENGER, a.validator.key, liar)])
    assert any(f"of record {located(levels, k)} (" in m for m in moves if "referee" in m)
    assert a.client.market.order(oid).state_name == "committed"
    assert a.provider.token.balance_of(a.provider.address) > prov0


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_an_honest_fine_tuner_wins_against_a_challenger_that_lies_about_the_adapters_gemm(actors, lora, honest_lora,
                                                                                          where):
    """The FinetuneReferee's two-halves GEMM (``lora.v``: a token's row of 1,536 GELU activations
    against the adapter's row, held in two halves) recomputes the honest element exactly: a
    challenger that moved one element of it loses, wherever the element is (the first token and
    rank, one in the middle, the last of both)."""
    a = actors
    job, levels, coarse, _ = lora
    k = last_of(levels, prog.QMM_W2)
    size = int(np.prod(levels.program[k].dims))
    liar = Side(lora, k, element={"first": 0, "middle": size // 2 + 3, "last": size - 1}[where])
    oid, _ = committed_order(a, coarse, honest_lora.root, len(coarse))
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, liar.root)
    moves = play(chal, oid, [player(a, oid, lora, PROVIDER, a.provider.key, honest_lora),
                             player(a, oid, lora, CHALLENGER, a.validator.key, liar)])
    assert any(f"of record {located(levels, k)} (" in m for m in moves if "referee" in m), moves[-4:]
    assert a.client.market.order(oid).state_name == "committed"


@pytest.mark.parametrize("which", ["gpt", "lora"])
def test_every_record_of_a_step_is_its_ops_recomputed_by_the_referees_formulas(request, which):
    """The wiring: each record of a step, sampled element by element, is what the referees compute
    from its input records (``verify.game.recompute``); an altered input changes the answer."""
    from veracity.verify.game import recompute

    job, levels, _, table = request.getfixturevalue(which)
    wanted = set(levels.steps[2]) | {r for i in levels.steps[2] for r in levels.program[i].inputs}
    tensors = job.tensors(wanted)
    rng = np.random.default_rng(0)
    kinds = set()
    for i in levels.steps[2]:
        d = levels.program[i]
        if d.kind == prog.INPUT:
            continue
        t = tensors[i]
        assert t.shape == tuple(d.dims), d.op
        for e in {0, t.size - 1, *(int(v) for v in rng.integers(0, t.size, 6))}:
            assert recompute(d, e, tensors.__getitem__, tuple(table[c] for c in d.consts)) == int(t.flat[e]), (d.op, e)
        kinds.add(d.kind)
    assert set(GPT_KINDS if which == "gpt" else FINETUNE_KINDS) <= kinds
    q = last_of(levels, prog.QMM, op=".dq" if which == "gpt" else ".dv")
    d = levels.program[q]
    bent = dict(tensors)
    bent[d.inputs[0]] = tensors[d.inputs[0]] + 4096
    assert any(recompute(d, e, bent.__getitem__, ()) != int(tensors[q].flat[e]) for e in range(0, tensors[q].size, 97))
