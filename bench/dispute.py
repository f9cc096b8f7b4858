"""The dispute game's cost on a real anvil node, and what spot checks cost validators.

Full games on real traces: digits-MLP jobs sized so their traces have 2^6 to 2^12 records (n,
the trace's elements, from 2^17 to 2^23; a larger digits job has more than the 1,024 output
records a result commits, one per batch, so it is refused), a
provider that altered one element of a random record (everything after it computed from it),
and an honest challenger; both play through ``client.player.Player`` against the
deployed Disputes, Referee and OneStep contracts. For each: the rounds (bisection reveals, the
record opened, each chunk-tree level, the chunk, the judgement), the gas of the whole game
(challenge to settlement, both parties and the judge) and of its final one-step judgement, and
the wall time. Then a full game at the first record of every kind MiniLM's trace has (the
final step's gas for each: the referee's call, proofs included), OneStep alone on its most
expensive element (a smoothed linear row of 1536), and the validators' CPU relative to the providers' at the
spot-check rate ``verify.sampling`` chooses for the devnet's figures (a check re-executes the job,
so its CPU is the provider's run, times the rate). Last, a full game at a record of every kind
SmolLM2's trace has (``LlamaReferee`` and ``LlamaAttentionReferee``).

    python bench/dispute.py --json bench/results/dispute.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table

from veracity.chain.anvil import Anvil
from veracity.chain.client import PROVIDER
from veracity.chain.devnet import deploy, dev_accounts
from veracity.client.player import CHALLENGER, Player
from veracity.exact import program as prog
from veracity.exact import spec
from veracity.exact.trace import decode_records
from veracity.market.bids import Bid, sign_bid
from veracity.verify.game import PROVIDER as PROVIDER_PARTY
from veracity.verify.rows import padded
from veracity.verify.sampling import check_rate, slashable

TOKEN = 10**18
ROOT = Path(__file__).resolve().parent.parent
MODEL = "digits-mlp"
RECORDS_PER_BATCH = 6  # input, then linear and ReLU, linear and ReLU, linear: per batch of 32 items


class Metered:
    """A DisputesClient that notes the gas of every move it sends."""

    MOVES = ("challenge", "reveal", "open_record", "descend", "reveal_chunk", "judge")

    def __init__(self, inner: Any, log: list[tuple[str, int]]) -> None:
        self.inner, self.log = inner, log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.MOVES:
            return attr

        def call(*args: Any) -> Any:
            receipt = attr(*args)
            self.log.append((name, int(receipt.gasUsed)))
            return receipt

        return call


def job_inputs(n_records: int) -> bytes:
    from sklearn.datasets import load_digits

    images = load_digits().data.astype(int)
    items = max(1, n_records // RECORDS_PER_BATCH) * 32
    return "".join(json.dumps({"pixels": images[i % len(images)].tolist()}) + "\n" for i in range(items)).encode()


def settle(dep, accts, program: list[Any], sides: dict[str, Any], constants: Any, kind_code: int = 1
           ) -> tuple[list[tuple[str, int]], Any, str, float]:
    """Open an order for ``program``, have the provider commit its (cheating) side's trace, and
    play the game against the honest challenger to settlement: (metered moves, game, order
    state, wall seconds)."""
    client, provider, challenger = accts[1], accts[2], accts[3]
    _, _, _, cmarket = dep.clients(client.key)
    _, _, preg, pmarket = dep.clients(provider.key)
    if preg.node(provider.address).role == 0:
        preg.register(PROVIDER, 1000 * TOKEN, "cpu", 8, [], 0, "http://127.0.0.1:1")
    elif (stake := preg.node(provider.address).stake) < 1000 * TOKEN:  # each lost game slashed a share of it
        preg.add_stake(1000 * TOKEN - stake)
    oid = cmarket.open_order(b"\1" * 32, kind_code, b"\2" * 32, 5 * TOKEN, cmarket.chain.now() + 3600, 3600, 0,
                             prog.program_root(program), len(program))
    bid = sign_bid(Bid(order_id=oid, provider=provider.address, price=4 * TOKEN, collateral=TOKEN,
                       expiry=cmarket.chain.now() + 600), provider.key, dep.chain_id, dep.market)
    cmarket.accept_bid(bid)
    pmarket.commit_result(oid, b"\3" * 32, sides["provider"][1], len(program))
    moves: list[tuple[str, int]] = []
    prov = Metered(dep.disputes_client(provider.key), moves)
    chal = Metered(dep.disputes_client(challenger.key), moves)
    players = [Player(party, d, dep.referees, oid, sides[who][0], program, sides[who][2], constants)
               for party, d, who in ((PROVIDER_PARTY, prov, "provider"), (CHALLENGER, chal, "challenger"))]
    t0 = time.perf_counter()
    chal.challenge(oid, sides["challenger"][1])
    for _ in range(400):
        if chal.game(oid).stage_name == "settled":
            break
        for pl in players:
            pl.act()
    return moves, chal.game(oid), cmarket.order(oid).state_name, time.perf_counter() - t0


def summary(program: list[Any], k: int, moves: list[tuple[str, int]]) -> dict[str, Any]:
    """A settled game over record ``k``: its rounds (both parties' moves at one query: bisection,
    opening, a chunk-tree level; the chunk; the judgement) against ceil(log2 n) + 8 for the
    trace's n elements, and its gas, whole and in the judgement."""
    kinds = [m for m, _ in moves]
    rounds = kinds.count("reveal") // 2 + kinds.count("open_record") // 2 + kinds.count("descend") // 2 + \
        (1 if "reveal_chunk" in kinds else 0) + kinds.count("judge")
    elements = sum(int(np.prod(d.dims)) for d in program)
    return {"n": len(program), "elements": elements, "bound": math.ceil(math.log2(elements)) + 8, "record": k,
            "op": program[k].op, "kind": prog.KIND_NAMES[program[k].kind], "rounds": rounds,
            "gas": sum(gas for _, gas in moves), "gas_judge": sum(gas for m, gas in moves if m == "judge")}


def game(dep, accts, n: int, model: Any, rng: np.random.Generator, model_name: str = MODEL,
         inputs: bytes | None = None, k: int | None = None) -> dict[str, Any]:
    from veracity.sim.adversary import alter_record
    from veracity.workloads.infer import job_program, record_tensors, run_infer_job

    inputs = inputs if inputs is not None else job_inputs(n)
    program = job_program(model_name, inputs, model)
    k = int(rng.integers(len(program))) if k is None else k
    sides = {}
    for who, cheat in (("provider", True), ("challenger", False)):
        result = run_infer_job(model_name, inputs, backend="numpy", model=model, tamper=alter_record(k) if cheat else None)
        wanted = {k, *[i for i in program[k].inputs if i < len(program)]}
        tensors = record_tensors(model_name, inputs, wanted, model=model, tamper=alter_record(k) if cheat else None)
        sides[who] = (decode_records(result.trace), result.trace_root, tensors.get)
    moves, g, state, wall = settle(dep, accts, program, sides, lambda desc: prog.constants(model, desc))
    assert g.differ == k and state == "overturned", (g.differ, k, state)
    return {**summary(program, k, moves), "items": len(program) // RECORDS_PER_BATCH * 32,
            "gas_bisection": sum(gas for m, gas in moves if m in ("challenge", "reveal")),
            "wall_s": wall, "outcome": state}


def minilm_judgements(dep, accts, rng: np.random.Generator) -> list[dict[str, Any]]:
    """A full game at the first record of every kind MiniLM's trace has: the judgement's gas."""
    from veracity.models.registry import load
    from veracity.workloads.infer import job_program

    model = load("minilm")
    inputs = (ROOT / "examples" / "inputs" / "minilm.jsonl").read_bytes()
    program = job_program("minilm", inputs, model)
    firsts: dict[int, int] = {}
    for i, d in enumerate(program):
        if d.kind != prog.INPUT:
            firsts.setdefault(d.kind, i)
    widest = next(i for i, d in enumerate(program) if d.op.endswith("ffn_out"))  # K = 1536, smoothed
    picks = sorted({*firsts.values(), widest})
    return [game(dep, accts, len(program), model, rng, "minilm", inputs, k) for k in picks]


def one_step_gas(dep, rng: np.random.Generator) -> int:
    from veracity.chain.client import Chain

    chain = Chain(dep.rpc_url, dep.deployer.key)
    fn = chain.contract("OneStep", chain.deploy("OneStep")).functions
    k = 1536
    lin = spec.quantize_linear(rng.normal(0, 0.05, (2, k)), rng.normal(0, 0.5, 2), spec.ACT_FRAC, spec.ACT_FRAC,
                               act_max=rng.uniform(0.1, 30, k))
    x = rng.integers(-spec.ACT_MAX, spec.ACT_MAX, k)
    call = fn.linear(padded(x, 4), 4, padded(lin.weight[1], 1), padded(lin.smooth, 4), k, int(lin.mult[1]),
                     int(lin.shift[1]), int(lin.bias[1]), lin.out_max)
    return int(call.estimate_gas())


def verify_cost() -> dict[str, float]:
    """Validator CPU / provider CPU: a checked job is re-executed in full, at the sampling rate."""
    from veracity.workloads.infer import run_infer_job

    data = (ROOT / "examples" / "inputs" / "minilm.jsonl").read_bytes()
    from veracity.models.registry import load

    model = load("minilm")
    run_infer_job("minilm", data, model=model)  # warm-up: kernels
    runs: dict[str, list[float]] = {"provider": [], "check": []}
    for _ in range(3):  # interleaved: the provider's run, then a validator's re-execution of it
        for who in runs:
            t = time.process_time()
            run_infer_job("minilm", data, model=model)
            runs[who].append(time.process_time() - t)
    provider_cpu, check_cpu = (float(np.median(runs[w])) for w in ("provider", "check"))
    rate = check_rate(int(4.5 * TOKEN), slashable(int(0.9 * TOKEN), 1000 * TOKEN), validators=1)
    return {"rate": rate, "provider_cpu_s": provider_cpu, "check_cpu_s": check_cpu,
            "verify_cost_ratio": rate * check_cpu / provider_cpu}


def train_judgements(dep, accts) -> list[dict[str, Any]]:
    """A full game at the last record of every training kind of a digits-MLP training job's second
    step (Adam, batch 32): the provider altered that element and trained on; the judgement's gas."""
    from veracity.exact.integer import exp_table_digest, exp_table_tensor
    from veracity.sim.adversary import train_tamper
    from veracity.workloads.train import (
        TrainParams,
        record_tensors,
        run_train_job,
        train_program,
    )

    data = (ROOT / "examples" / "inputs" / "digits-train.jsonl").read_bytes()
    params = TrainParams(steps=2, seed=1, optimizer="adam", lr=0.01)
    program = train_program(params, None, data)
    table = {exp_table_digest(): exp_table_tensor()}
    out = []
    kinds = sorted({d.kind for d in program if d.kind != prog.INPUT})
    rpc = dep.clients(accts[1].key)[0].w3.provider.make_request
    for kind in kinds:
        snap = rpc("evm_snapshot", [])["result"]  # each game from the same chain state (stakes intact)
        k = max(i for i, d in enumerate(program) if d.kind == kind and d.step == 2)
        sides = {}
        for who, cheat in (("provider", True), ("challenger", False)):
            result = run_train_job(data, params, tamper=train_tamper(k) if cheat else None)
            wanted = {k, *program[k].inputs}
            tensors = record_tensors(data, params, None, wanted, tamper=train_tamper(k) if cheat else None)
            sides[who] = (decode_records(result.trace), result.trace_root, tensors.get)
        moves, g, state, _ = settle(dep, accts, program, sides, lambda desc: prog.constants(None, desc, table), 2)
        assert g.differ == k and state == "overturned", (g.differ, k, state)
        out.append(summary(program, k, moves))
        rpc("evm_revert", [snap])
    return out


LLAMA_KINDS = ("qembed", "blinear", "wrmsnorm", "rope", "kv_append", "transpose", "gqa_scores", "gqa_probs",
               "gqa_context", "resid_add", "silu_gate", "select_last", "row_max", "pick")


def llama_judgements(dep, accts) -> list[dict[str, Any]]:
    """A full game at a record of every kind SmolLM2's trace has (a chat prompt, two tokens; the
    record in block 15 of the second pass where the kind has one, and the LM head's logits): the
    provider's trace is the honest one with that record's tensor off by 3 in one element."""
    from veracity.exact.trace import CODE_DTYPES
    from veracity.models.registry import load
    from veracity.sim.adversary import altered_trace
    from veracity.workloads.infer import job_program, record_tensors, run_infer_job

    model = load("smollm2")
    inputs = (json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}) + "\n").encode()
    program = job_program("smollm2", inputs, model)
    honest = run_infer_job("smollm2", inputs, backend="torch", model=model)
    tensors = record_tensors("smollm2", inputs, set(range(len(program))), model=model)
    records = decode_records(honest.trace)
    second = next(i for i, d in enumerate(program) if d.op == "next.token") + 1  # the first decode pass
    picks = []
    for kind in LLAMA_KINDS:
        hits = [i for i, d in enumerate(program) if prog.KIND_NAMES[d.kind] == kind]
        later = [i for i in hits if i >= second]
        picks.append(next((i for i in later if program[i].op.startswith("block.15.")), (later or hits)[0]))
    picks.append([i for i, d in enumerate(program) if d.op == "head.logits"][-1])
    out = []
    for k in picks:
        sides = {"provider": altered_trace(records, tensors.get, CODE_DTYPES[program[k].dtype], k),
                 "challenger": (records, honest.trace_root, tensors.get)}
        moves, g, state, _ = settle(dep, accts, program, sides, lambda desc: prog.constants(model, desc))
        assert g.differ == k and state == "overturned", (g.differ, k, state)
        out.append(summary(program, k, moves))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    from veracity.models.registry import load

    rng = np.random.default_rng(args.seed)
    model = load(MODEL)
    node = Anvil(accounts=5)
    console = Console(width=130)
    try:
        accts = dev_accounts(5)
        dep = deploy(node.rpc_url, accts[0], accts)
        games = []
        for e in range(6, 13, 2):
            with console.status(f"a full game over a trace of about 2^{e} records"):
                games.append(game(dep, accts, 1 << e, model, rng))
        gas_one = one_step_gas(dep, rng)
        with console.status("a full game at each kind of MiniLM record"):
            judged = minilm_judgements(dep, accts, rng)
        with console.status("a full game at each kind of training record"):
            trained = train_judgements(dep, accts)
        with console.status("a full game at each kind of SmolLM2 record"):
            llama = llama_judgements(dep, accts)
    finally:
        node.stop()
    cost = verify_cost()
    table = Table("records", "elements n", "items", "corrupted record", "rounds", "ceil(log2 n) + 8", "gas, whole game",
                  "of it bisection", "judgement", "wall", "outcome",
                  title="full dispute games on anvil (digits-MLP traces, a provider that altered one element, honest challenger)")
    for g in games:
        table.add_row(str(g["n"]), f"{g['elements']:,}", str(g["items"]), f"{g['record']} ({g['kind']})",
                      str(g["rounds"]), str(g["bound"]), f"{g['gas']:,}", f"{g['gas_bisection']:,}",
                      f"{g['gas_judge']:,}", f"{g['wall_s']:.1f}s", g["outcome"])
    console.print(table)
    for first, title, rows in (
            ("MiniLM record", "the final step for every kind of record (MiniLM, 5 sentences; the referee's whole call)",
             judged),
            ("training record", "the final step for every kind of training record (digits MLP, Adam, batch 32, "
             "step 2 of 2)", trained),
            ("SmolLM2 record", "the final step for every kind of SmolLM2 record (a chat prompt, 2 tokens; "
             "LlamaReferee / LlamaAttentionReferee)", llama)):
        jt = Table(first, "kind", "rounds", "ceil(log2 n) + 8", "gas, whole game", "judgement (the final step)",
                   title=title)
        for g in rows:
            jt.add_row(f"{g['record']} {g['op']}", g["kind"], str(g["rounds"]), str(g["bound"]), f"{g['gas']:,}",
                       f"{g['gas_judge']:,}")
        console.print(jt)
    console.print(f"OneStep alone, the widest element (smoothed linear, K=1536): {gas_one:,}")
    console.print(f"spot-check rate {cost['rate']:.4f}; a check costs {cost['check_cpu_s']:.2f} CPU-s for a "
                  f"{cost['provider_cpu_s']:.2f} CPU-s job -> verify_cost_ratio {cost['verify_cost_ratio']:.4f}")
    every = games + judged + trained + llama
    assert all(g["rounds"] <= g["bound"] for g in every), "a game took more rounds than ceil(log2 n) + 8"
    result = {"rounds_max": max(g["rounds"] for g in every), "gas_full_game": max(g["gas"] for g in every),
              "rounds_scope": "n is the trace's elements (every record's tensor); a round is both parties' "
                              "moves at one query, the chunk reveal, or the judgement",
              "gas_full_game_scope": "challenge to settlement: bisection, opening, chunk-tree descent, chunk, "
                                     "one-step judgement (both parties and the judge)",
              "gas_one_step": max(g["gas_judge"] for g in every),
              "gas_one_step_scope": "the referee's whole judgement call (proofs of every input row and OneStep), "
                                    "the largest over every kind of record",
              "gas_onestep_widest_linear": gas_one, "verify_cost_ratio": cost["verify_cost_ratio"],
              "games": games, "minilm_judgements": judged, "train_judgements": trained,
              "gas_one_step_train": max(g["gas_judge"] for g in trained),
              "llama_judgements": llama, "gas_one_step_llama": max(g["gas_judge"] for g in llama),
              "rounds_max_llama": max(g["rounds"] for g in llama), **cost}
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
