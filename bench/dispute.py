"""The dispute game's cost on a real anvil node, and what spot checks cost validators.

For traces of 2^6 to 2^16 records whose provider diverges from the honest trace at a random
record: the bisection rounds and gas until the first differing record is located on-chain
(challenge + every reveal), and the wall time. Then the gas of the one-step referee's most
expensive element (a smoothed linear row of 1536, MiniLM's widest), and the validators' CPU
relative to the providers' at the spot-check rate ``verify.sampling`` chooses for the devnet's
figures (a check re-executes the job, so its CPU is the provider's run, times the rate).

    python bench/dispute.py --json bench/results/dispute.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from veracity.chain.anvil import Anvil
from veracity.chain.client import PROVIDER
from veracity.chain.devnet import deploy, dev_accounts
from veracity.exact import spec
from veracity.exact.trace import TraceRecord
from veracity.market.bids import Bid, sign_bid
from veracity.verify.bisection import TraceView
from veracity.verify.rows import padded
from veracity.verify.sampling import check_rate, slashable

TOKEN = 10**18
ROOT = Path(__file__).resolve().parent.parent


def records(n: int, diverge: int | None = None) -> list[TraceRecord]:
    return [TraceRecord(i // 8, f"op{i % 8}", (i.to_bytes(4, "big") + (b"\1" if diverge is not None and i >= diverge
                                                                          else b"\0")) * 6 + bytes(2))
            for i in range(n)]


def game(dep, accts, n: int, rng: np.random.Generator) -> dict[str, float]:
    client, provider, challenger = accts[1], accts[2], accts[3]
    _, _, creg, cmarket = dep.clients(client.key)
    _, _, preg, pmarket = dep.clients(provider.key)
    if preg.node(provider.address).role == 0:
        preg.register(PROVIDER, 1000 * TOKEN, "cpu", 8, [], 0, "http://127.0.0.1:1")
    oid = cmarket.open_order(b"\1" * 32, 1, b"\2" * 32, 5 * TOKEN, cmarket.chain.now() + 3600, 3600, 0)
    bid = sign_bid(Bid(order_id=oid, provider=provider.address, price=4 * TOKEN, collateral=TOKEN,
                       expiry=cmarket.chain.now() + 600), provider.key, dep.chain_id, dep.market)
    cmarket.accept_bid(bid)
    k = int(rng.integers(n))
    cheat, honest = TraceView(records(n, k)), TraceView(records(n))
    pmarket.commit_result(oid, b"\3" * 32, cheat.root, n)
    prov, chal = dep.disputes_client(provider.key), dep.disputes_client(challenger.key)
    t0 = time.perf_counter()
    gas = chal.challenge(oid, honest.root).gasUsed
    rounds = 0
    while chal.game(oid).stage_name == "bisecting":
        q = chal.game(oid).query
        gas += prov.reveal(oid, *cheat.reveal(q)).gasUsed
        gas += chal.reveal(oid, *honest.reveal(q)).gasUsed
        rounds += 1
    g = chal.game(oid)
    assert g.differ == k, (g.differ, k)
    return {"n": n, "rounds": rounds, "gas": gas, "wall_s": time.perf_counter() - t0, "located": k}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    node = Anvil(accounts=5)
    try:
        accts = dev_accounts(5)
        dep = deploy(node.rpc_url, accts[0], accts)
        games = [game(dep, accts, 1 << e, rng) for e in range(6, 17, 2)]
        gas_one = one_step_gas(dep, rng)
    finally:
        node.stop()
    cost = verify_cost()
    table = Table("records n", "first difference", "rounds", "ceil(log2 n) + 1", "gas (challenge + reveals)",
                  "wall", title="bisection to the first differing record, on anvil")
    for g in games:
        table.add_row(str(g["n"]), str(g["located"]), str(g["rounds"]), str(math.ceil(math.log2(g["n"])) + 1),
                      f"{g['gas']:,}", f"{g['wall_s']:.2f}s")
    console = Console(width=120)
    console.print(table)
    console.print(f"one-step gas, the widest element (smoothed linear, K=1536): {gas_one:,}")
    console.print(f"spot-check rate {cost['rate']:.4f}; a check costs {cost['check_cpu_s']:.2f} CPU-s for a "
                  f"{cost['provider_cpu_s']:.2f} CPU-s job -> verify_cost_ratio {cost['verify_cost_ratio']:.4f}")
    result = {"rounds_max": max(g["rounds"] for g in games), "gas_full_game": max(g["gas"] for g in games),
              "gas_full_game_scope": "challenge and bisection to the first differing record (phases two and "
                                     "three, inside the record, are not built yet)",
              "gas_one_step": gas_one, "verify_cost_ratio": cost["verify_cost_ratio"], "games": games, **cost}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
