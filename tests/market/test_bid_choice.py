"""The client's choice among bids: bids the Market would refuse are skipped with a reason; the rest
go by price net of a tenth of their collateral, then reputation."""

import random

from veracity.market.bids import Bid
from veracity.market.choice import rank_bids

NOW, DEADLINE = 1_000, 2_000


def bid(provider: str, price: int, collateral: int, run_time: int = 60, expiry: int = 1_500) -> Bid:
    return Bid(order_id=1, provider=provider, price=price, collateral=collateral, expiry=expiry, run_time=run_time)


def no_reputation(_: str) -> int:
    return 0


def test_bids_the_market_would_refuse_are_skipped_with_a_reason():
    bids = [bid("0xthin", 100, 9), bid("0xslow", 100, 50, run_time=1_001), bid("0xstale", 100, 50, expiry=999),
            bid("0xfloor", 100, 10), bid("0xfits", 100, 10, run_time=1_000)]
    ranked, refused = rank_bids(bids, NOW, DEADLINE, no_reputation)
    assert {b.provider for b in ranked} == {"0xfloor", "0xfits"}  # exactly 10%, exactly the deadline: taken
    assert refused == ["0xthin: its collateral (9) is below 10% of its price (100)",
                       "0xslow: its run time (1001 s) no longer fits before the order's deadline (1000 s away)",
                       "0xstale: it expired 1 s ago"]
    late, refused = rank_bids([bid("0xfits", 100, 10, run_time=1_000)], NOW + 1, DEADLINE, no_reputation)
    assert late == [] and "no longer fits" in refused[0]


def test_collateral_protection_counts_off_the_price():
    cheap, backed, dear = bid("0xcheap", 100, 10), bid("0xbacked", 100, 200), bid("0xdear", 110, 110)
    ranked, _ = rank_bids([cheap, dear, backed], NOW, DEADLINE, no_reputation)
    # nets: cheap 100 - 1 = 99; backed 100 - 20 = 80; dear 110 - 11 = 99 (a tie with cheap)
    assert ranked[0] == backed
    well_backed = bid("0xwell", 105, 200)  # 5 more, 190 more collateral: net 85 < cheap's 99
    assert rank_bids([cheap, well_backed], NOW, DEADLINE, no_reputation)[0][0] == well_backed
    barely = bid("0xbarely", 105, 40)  # 5 more, 30 more collateral: net 101 > 99
    assert rank_bids([cheap, barely], NOW, DEADLINE, no_reputation)[0][0] == cheap


def test_ties_go_to_reputation_then_chance():
    a, b = bid("0xa", 100, 10), bid("0xb", 100, 10)
    rep = {"0xa": 5, "0xb": 9}
    assert rank_bids([a, b], NOW, DEADLINE, rep.__getitem__)[0][0] == b
    firsts = {rank_bids([a, b], NOW, DEADLINE, no_reputation, random.Random(seed))[0][0].provider
              for seed in range(20)}
    assert firsts == {"0xa", "0xb"}
