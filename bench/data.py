"""The data layer's figures, measured on a fresh anvil node with the contracts compiled by vyper:

- ``contributions_per_min``: contributions taken from a commitment to a settled score, one after
  another: the commitment, the signed reveal (the score program computed by the contributor), its
  score order, a provider's bid accepted, the exact MiniLM score job run and committed, its output
  delivered, and the score settled on chain against every accepted item (the challenge window
  advanced on anvil's clock, so what is timed is the work, not the wait);
- ``gas_per_contribution``: the gas of those seven transactions, per contribution (mean, and at the
  first and last item: settling compares an item with every accepted item before it);
- ``ds_agreement``: the fixed-point Dawid-Skene's consensus labels against crowd-kit's on
  simulated labellers of known accuracies (the share of items where they agree).

    python bench/data.py [--items 24] [--json bench/results/data.json]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import write_json  # noqa: E402

TOKEN = 10**18
SENTENCES = Path(__file__).resolve().parent.parent / "tests" / "data" / "sentences.txt"


def pool_figures(items: int) -> dict:
    from veracity.chain.anvil import Anvil
    from veracity.chain.client import PROVIDER
    from veracity.chain.devnet import deploy, dev_accounts
    from veracity.chain.pools import DataPoolClient, commitment, sign_contribution
    from veracity.cid import cid_of, digest_of
    from veracity.data import pools as P
    from veracity.data.curator import score_job
    from veracity.exact.outputs import encode_outputs
    from veracity.exact.program import program_root
    from veracity.market.bids import Bid, sign_bid
    from veracity.models.registry import loaded
    from veracity.sim.traffic import anvil_advance

    texts = [t for t in SENTENCES.read_text().splitlines() if t.strip()][:items]
    node = Anvil(accounts=4)
    try:
        accts = dev_accounts(4)
        dep = deploy(node.rpc_url, accts[0], accts, pool_window=1)
        owner, provider, contributor = accts[1], accts[2], accts[3]
        _, _, reg, pmarket = dep.clients(provider.key)
        reg.register(PROVIDER, 1000 * TOKEN, "cpu", 24, [hashlib.sha256(b"minilm").digest()], TOKEN // 10,
                     "http://127.0.0.1:9")
        pool_c, relay = dep.data_pool_client(owner.key), dep.data_pool_client(contributor.key)
        pdeliver = DataPoolClient(pmarket.chain, dep.data_pool, pmarket.token)  # the provider delivers its own
        model = loaded("minilm")
        topic = P.embed("a sentence about everyday life", model)
        pool = pool_c.create_pool(bytes(32), topic, 9000, False, 10**6, 1, 100 * TOKEN, 10 * items * TOKEN, TOKEN)
        relay.token.approve(dep.data_pool, items * TOKEN)  # the deposits
        advance = anvil_advance(dep)
        gas: list[int] = []
        parts: list[list[int]] = []
        t0 = time.perf_counter()
        for i, text in enumerate(texts):
            line = P.contribution_line(text, i % 2)
            cid = cid_of(line)
            job = score_job(cid, line)
            program = job.posted_program(model)
            signed = (program_root(program), len(program))
            salt = hashlib.sha256(line).digest()
            sig = sign_contribution(contributor.key, dep.chain_id, dep.data_pool, pool, digest_of(cid),
                                    contributor.address, signed)
            steps = [relay.chain.send(relay.fn.commit(pool, commitment(digest_of(cid), contributor.address, salt)))
                     ["gasUsed"]]
            steps.append(relay.chain.send(relay.fn.contribute(pool, contributor.address, digest_of(cid), salt, *signed,
                                                              sig, b""), estimate_at="pending")["gasUsed"])
            steps.append(pool_c.chain.send(pool_c.fn.order_score(pool, i, 5 * TOKEN))["gasUsed"])
            oid = pool_c.item(pool, i).order_id
            bid = sign_bid(Bid(order_id=oid, provider=provider.address, price=4 * TOKEN, collateral=TOKEN,
                               expiry=pool_c.chain.now() + 300, run_time=60), provider.key, dep.chain_id, dep.market)
            steps.append(pool_c.chain.send(pool_c.fn.accept(oid, provider.address, bid.price, bid.collateral, bid.expiry,
                                                            bid.run_time, bytes.fromhex(bid.signature[2:])))["gasUsed"])
            result = job.run("torch", model)
            steps.append(pmarket.chain.send(pmarket.fn.commit_result(oid, result.output_digests, result.trace_root,
                                                                     result.ops))["gasUsed"])
            advance(2)
            blob = encode_outputs(job.served_tensors(result.outputs, model))
            steps.append(pmarket.chain.send(pdeliver.fn.deliver(oid, blob))["gasUsed"])
            steps.append(relay.chain.send(relay.fn.settle(pool, i, P.embedding(blob), topic, relay.accepted(pool)))
                         ["gasUsed"])
            gas.append(sum(steps))
            parts.append(steps)
        wall = time.perf_counter() - t0
        accepted = pool_c.pool(pool).accepted
    finally:
        node.stop()
    return {"contributions": len(texts), "accepted": accepted, "wall_s": round(wall, 2),
            "contributions_per_min": round(60 * len(texts) / wall, 1),
            "gas_per_contribution": int(np.mean(gas)), "gas_first": gas[0], "gas_last": gas[-1],
            "gas_by_step": dict(zip(("commit", "reveal", "order_score", "accept", "commit_result", "deliver", "settle"),
                                    (int(np.mean(c)) for c in zip(*parts))))}


def ds_figures(seed: int = 0) -> dict:
    from bench.data_consensus import agreement_with_crowdkit

    return agreement_with_crowdkit(seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pool = pool_figures(args.items)
    ds = ds_figures()
    result = {**pool, **ds}
    rows = [("contributions_per_min", f"{pool['contributions_per_min']:.1f}"),
            ("  contributions (accepted)", f"{pool['contributions']} ({pool['accepted']})"),
            ("gas_per_contribution (mean)", f"{pool['gas_per_contribution']:,}"),
            ("  first / last item", f"{pool['gas_first']:,} / {pool['gas_last']:,}"),
            ("ds_agreement (with crowd-kit)", f"{ds['ds_agreement']:.4f}"),
            ("  items, rounds", f"{ds.get('items', '')}, {ds.get('rounds', '')}")]
    width = max(len(k) for k, _ in rows)
    print("data layer")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
