"""Honest traffic for a devnet: many orders opened, matched, committed and finalized by one client
and one provider, fast (the chain's side only, nothing run): what the explorer's benchmark and
tests index. The digests committed are placeholders: nobody challenges them."""

from __future__ import annotations

import hashlib
from typing import Callable

from veracity.chain.devnet import Deployment
from veracity.market.bids import Bid, sign_bid
from veracity.workloads.spec import model_id

TOKEN = 10**18
PROVIDER_ROLE = 1


def settled_orders(dep: Deployment, client_key: str, provider_key: str, n: int, model: str = "digits-mlp",
                   advance: Callable[[int], None] | None = None, window: int = 60,
                   progress: Callable[[int], None] | None = None) -> list[int]:
    """``n`` orders of ``model`` from ``client_key`` to ``provider_key`` (registered here when it is not),
    each matched, committed and, once ``advance(seconds)`` has moved the chain's clock past their
    challenge window, finalized. Returns their ids."""
    _, _, creg, cmarket = dep.clients(client_key)
    _, _, preg, pmarket = dep.clients(provider_key)
    me = preg.chain.address
    if preg.node(me).role == 0:
        preg.register(PROVIDER_ROLE, 1000 * TOKEN, "cpu", 16, [model_id(model)], TOKEN // 10, "")
    now = lambda: cmarket.chain.now()  # noqa: E731
    ids = []
    for i in range(n):
        spec = hashlib.sha256(b"traffic %d" % i).digest()
        oid = cmarket.open_order(spec, 1, model_id(model), 2 * TOKEN, now() + 3600, window, 0,
                                 hashlib.sha256(spec + b"program").digest(), 1)
        bid = sign_bid(Bid(order_id=oid, provider=me, price=TOKEN, collateral=TOKEN // 5, expiry=now() + 600,
                           run_time=60), provider_key, dep.chain_id, dep.market)
        cmarket.accept_bid(bid)
        pmarket.commit_result(oid, hashlib.sha256(spec).digest(), hashlib.sha256(spec + b"trace").digest(), 1)
        ids.append(oid)
        if progress:
            progress(i + 1)
    if advance is not None:
        advance(window + 1)
        for oid in ids:
            pmarket.finalize(oid)
    return ids


def anvil_advance(dep: Deployment) -> Callable[[int], None]:
    """Move an anvil node's clock forward ``seconds`` and mine a block."""
    from veracity.chain.client import Chain

    chain = Chain(dep.rpc_url)

    def advance(seconds: int) -> None:
        chain.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    return advance


__all__ = ["settled_orders", "anvil_advance"]
