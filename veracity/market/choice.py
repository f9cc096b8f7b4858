"""The client's choice among providers' bids, as a pure function.

A bid the Market would refuse is dropped before it costs a transaction: collateral below
``MIN_COLLATERAL_BPS`` of the price (Market.vy's floor), an expired bid, or a run time that no
longer fits before the order's deadline. The rest are ranked by their price net of the protection
their collateral gives: the collateral is what the client is paid if the provider misses the
deadline (and what a wrong result costs the provider), so a tenth of it
(``COLLATERAL_CREDIT_BPS``) is counted off the price. One number keeps the rule easy to read: of
two bids at one price the better-backed wins, and extra collateral outweighs a higher price only
when it is ten times the difference. Ties go to the better reputation, then to chance (so equal
providers share the work).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from veracity.market.bids import Bid

MAX_BPS = 10_000
MIN_COLLATERAL_BPS = 1_000  # Market.vy's MIN_COLLATERAL_BPS: collateral >= 10% of the price
COLLATERAL_CREDIT_BPS = 1_000  # the share of the collateral counted off the price when ranking


def refusal(bid: Bid, now: int, deadline: int) -> str | None:
    """Why the Market would refuse to accept ``bid`` at time ``now`` for an order due at
    ``deadline``, or None if it would take it."""
    if bid.collateral * MAX_BPS < bid.price * MIN_COLLATERAL_BPS:
        return (f"its collateral ({bid.collateral}) is below {MIN_COLLATERAL_BPS // 100}% of its price "
                f"({bid.price})")
    if now > bid.expiry:
        return f"it expired {now - bid.expiry} s ago"
    if now + bid.run_time > deadline:
        return (f"its run time ({bid.run_time} s) no longer fits before the order's deadline "
                f"({max(deadline - now, 0)} s away)")
    return None


def net_price(bid: Bid) -> int:
    """The ranking key's first part, in ten-thousandths of a token unit (exact integers)."""
    return bid.price * MAX_BPS - bid.collateral * COLLATERAL_CREDIT_BPS


def rank_bids(bids: list[Bid], now: int, deadline: int, reputation: Callable[[str], int],
              rng: random.Random | None = None) -> tuple[list[Bid], list[str]]:
    """The acceptable bids, best first, and a reason for each bid left out."""
    rng = rng or random.Random()
    ok, refused = [], []
    for bid in bids:
        why = refusal(bid, now, deadline)
        if why is None:
            ok.append(bid)
        else:
            refused.append(f"{bid.provider}: {why}")
    ranked = sorted(ok, key=lambda b: (net_price(b), -reputation(b.provider), rng.random()))
    return ranked, refused
