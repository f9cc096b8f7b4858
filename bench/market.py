"""Market on a real anvil: gas per call and per job lifecycle, and lifecycles per second.

A lifecycle is: approve + open_order (escrow), accept_bid (EIP-712 bid checked, collateral
locked), commit_result, finalize (challenge window 0 here, so it settles at once). Throughput
is measured with 1 and with 4 concurrent clients, each with its own provider, in one run. Also
the output data-availability calls (a full 8 KB chunk asked for and served; one claimed
unserved), and the largest call against EIP-7825's per-transaction gas cap.

    python bench/market.py --json bench/results/market.json
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table

from veracity.chain.anvil import Anvil
from veracity.chain.client import PROVIDER
from veracity.chain.devnet import Deployment, deploy, dev_accounts
from veracity.market.bids import Bid, sign_bid

TOKEN = 10**18
SPEC = hashlib.sha256(b"bench spec").digest()
TX_GAS_CAP = 2**24  # EIP-7825: the most gas one transaction may use


def lifecycle(d: Deployment, client_key: str, provider_key: str, gas: dict[str, list[int]] | None = None,
              window: int = 0) -> int:
    """One job from order to settlement; returns the order id. Records gas per call if asked."""
    cchain, ctok, _, cmkt = d.clients(client_key)
    pchain, _, _, pmkt = d.clients(provider_key)
    now = cchain.now()

    def note(name: str, receipt: object) -> None:
        if gas is not None:
            gas.setdefault(name, []).append(receipt.gasUsed)  # type: ignore[attr-defined]

    note("approve", ctok.approve(cmkt.address, 10 * TOKEN))
    receipt = cchain.send(cmkt.fn.open_order(SPEC, 1, SPEC, 10 * TOKEN, now + 3600, window, 500, SPEC, 84))
    note("open_order", receipt)
    oid = _order_id(cmkt, receipt)
    bid = sign_bid(Bid(order_id=oid, provider=pchain.address, price=8 * TOKEN, collateral=20 * TOKEN,
                       expiry=now + 600, run_time=60), provider_key, d.chain_id, d.market)
    note("accept_bid", cmkt.accept_bid(bid))
    note("commit_result", pmkt.commit_result(oid, SPEC, SPEC, 84))
    note("finalize", pmkt.finalize(oid))
    return oid


def availability(d: Deployment, client_key: str, provider_key: str, gas: dict[str, list[int]]) -> None:
    """A chunk of a committed output asked for and served (a full 8 KB chunk of an int32 tensor),
    and one asked for and claimed unserved (the provider slashed)."""
    import numpy as np

    from veracity.exact.trace import tensor_digest
    from veracity.verify.available import serve_args

    out = [np.arange(64 * 512, dtype=np.int32).reshape(64, 512)]  # rows of 2 KB: 4 rows a chunk
    cchain, _, _, cmkt = d.clients(client_key)
    pchain, _, _, pmkt = d.clients(provider_key)
    oid = cmkt.open_order(SPEC, 1, SPEC, 10 * TOKEN, cchain.now() + 3600, 600, 500, SPEC, 84)
    cmkt.accept_bid(sign_bid(Bid(order_id=oid, provider=pchain.address, price=8 * TOKEN, collateral=20 * TOKEN,
                                 expiry=cchain.now() + 600, run_time=60), provider_key, d.chain_id, d.market))
    pmkt.commit_result(oid, [tensor_digest(out[0])], SPEC, 84)
    asker, server = d.disputes_client(client_key).outputs(), d.disputes_client(provider_key).outputs()
    gas.setdefault("request_chunk", []).append(asker.request_chunk(oid, 0, 1).gasUsed)
    gas.setdefault("serve_chunk (8 KB)", []).append(server.serve_chunk(oid, 0, 1, serve_args(out, 0, 1)).gasUsed)
    asker.request_chunk(oid, 0, 2)
    due = asker.open_request(oid, 0, 2).deadline  # (requests queue: due a move after the one before)
    cchain.w3.provider.make_request("evm_increaseTime", [due - cchain.now() + 1])
    cchain.w3.provider.make_request("evm_mine", [])
    gas.setdefault("claim_unserved (slash)", []).append(asker.claim_unserved(oid, 0, 2).gasUsed)


def _order_id(market: object, receipt: object) -> int:
    from web3.logs import DISCARD

    (ev,) = market.contract.events.OrderOpened().process_receipt(receipt, errors=DISCARD)  # type: ignore[attr-defined]
    return int(ev["args"]["order_id"])


def _worker(args: tuple[str, str, str, int]) -> int:
    deployment_json, ck, pk, jobs = args
    d = Deployment.model_validate_json(deployment_json)
    for _ in range(jobs):
        lifecycle(d, ck, pk)
    return jobs


def throughput(d: Deployment, pairs: list[tuple[str, str]], jobs_each: int) -> float:
    """Lifecycles per second with one OS process per client (as real clients are)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(len(pairs)) as pool:
        pool.map(_worker, [(d.model_dump_json(), ck, pk, 1) for ck, pk in pairs])  # warm up imports
        t = time.perf_counter()
        done = sum(pool.map(_worker, [(d.model_dump_json(), ck, pk, jobs_each) for ck, pk in pairs]))
        return done / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--jobs", type=int, default=20, help="lifecycles per client in the throughput runs")
    args = ap.parse_args()
    console = Console()
    node = Anvil(accounts=10)
    try:
        accts = dev_accounts(10)
        d = deploy(node.rpc_url, accts[0], accts)
        clients, providers = accts[1:5], accts[5:9]
        gas: dict[str, list[int]] = {}
        for p in providers:
            _, _, reg, _ = d.clients(p.key)
            receipt = reg.register(PROVIDER, 10_000 * TOKEN, "cpu", 24, [SPEC], TOKEN, "http://127.0.0.1:9000")
            gas.setdefault("register", []).append(receipt.gasUsed)
        for _ in range(3):
            lifecycle(d, clients[0].key, providers[0].key, gas)
        # the timeout path, for its gas
        c = d.clients(clients[1].key)
        oid = c[3].open_order(SPEC, 1, SPEC, 10 * TOKEN, c[0].now() + 5, 0, 0, SPEC, 84)
        c[3].accept_bid(sign_bid(Bid(order_id=oid, provider=providers[1].address, price=8 * TOKEN,
                                     collateral=20 * TOKEN, expiry=c[0].now() + 600), providers[1].key,
                                 d.chain_id, d.market))
        c[0].w3.provider.make_request("evm_increaseTime", [10])
        c[0].w3.provider.make_request("evm_mine", [])
        gas["reclaim (timeout, slash)"] = [c[3].reclaim(oid).gasUsed]
        availability(d, clients[2].key, providers[2].key, gas)
        per_call = {k: int(sum(v) / len(v)) for k, v in gas.items()}
        gas_per_job = sum(per_call[k] for k in ("approve", "open_order", "accept_bid", "commit_result", "finalize"))
        one = throughput(d, [(clients[0].key, providers[0].key)], args.jobs)
        four = throughput(d, [(c.key, p.key) for c, p in zip(clients, providers)], args.jobs)
    finally:
        node.stop()
    largest = max(per_call.values())
    result = {"gas_per_call": per_call, "gas_per_job": gas_per_job, "jobs_per_s": four, "jobs_per_s_1_client": one,
              "jobs_per_s_4_clients": four, "largest_call_gas": largest, "tx_gas_cap": TX_GAS_CAP,
              "chain": "anvil 1.7.1 (instant mining) on 127.0.0.1"}
    table = Table("measure", "value", title="market on anvil")
    for k, v in per_call.items():
        table.add_row(f"gas: {k}", f"{v:,}")
    table.add_row("gas per job lifecycle (approve, open, accept, commit, finalize)", f"{gas_per_job:,}")
    table.add_row("largest call, against EIP-7825's cap per transaction", f"{largest:,} of {TX_GAS_CAP:,}")
    table.add_row("lifecycles/s, 1 client", f"{one:.1f}")
    table.add_row("lifecycles/s, 4 concurrent clients", f"{four:.1f}")
    console.print(table)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
