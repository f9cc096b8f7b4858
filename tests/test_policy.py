"""A provider's bidding policy: bids within the client's price, or a reason a person can read."""

from veracity.market.policy import BidTerms, OrderView, PricePolicy, decide_bid

POLICY = PricePolicy(models=["minilm", "digits-mlp"], price_floor=100, markup_bps=1_000, collateral_bps=5_000,
                     min_deadline_s=60, max_jobs=2, bid_ttl_s=300)


def order(**kw):
    base = dict(order_id=1, model="minilm", max_price=1_000, deadline=10_000)
    return OrderView(**{**base, **kw})


def test_bids_below_the_max_and_never_under_the_floor():
    terms = decide_bid(order(), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    assert terms == BidTerms(price=900, collateral=450, expiry=1_300)
    low = decide_bid(order(max_price=105), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    assert low.price == 100  # 10% under 105 would break the floor
    short = decide_bid(order(deadline=1_100), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    assert short.expiry == 1_100  # a bid never outlives the order's deadline


def test_every_refusal_says_why():
    cases = [
        (order(model="tiny-gpt"), {}, "does not serve model 'tiny-gpt'"),
        (order(max_price=99), {}, "below its price floor 100"),
        (order(deadline=1_030), {}, "needs at least 60 s"),
        (order(), {"running_jobs": 2}, "at capacity (2 of 2"),
        (order(), {"free_stake": 10}, "cannot cover collateral 450"),
    ]
    for o, over, reason in cases:
        args = {"now": 1_000, "running_jobs": 0, "free_stake": 10**6, **over}
        got = decide_bid(o, POLICY, **args)
        assert isinstance(got, str) and reason in got, (got, reason)
