"""A provider's bidding policy: bids within the client's price, or a reason a person can read."""

from veracity.market.policy import BidTerms, OrderView, PricePolicy, decide_bid

POLICY = PricePolicy(models=["minilm", "digits-mlp"], price_floor=100, markup_bps=1_000, collateral_bps=5_000,
                     min_deadline_s=60, max_jobs=2, bid_ttl_s=300)


def order(**kw):
    base = dict(order_id=1, model="minilm", max_price=1_000, deadline=10_000)
    return OrderView(**{**base, **kw})


def test_bids_below_the_max_and_never_under_the_floor():
    terms = decide_bid(order(), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    assert terms == BidTerms(price=900, collateral=450, expiry=1_300, run_time=20)
    low = decide_bid(order(max_price=105), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    assert low.price == 100  # 10% under 105 would break the floor
    short = decide_bid(order(deadline=1_100), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    assert short.expiry == 1_080  # a bid never outlives the last moment its run time still fits


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


def test_the_planner_refuses_what_the_devices_cannot_do_and_prices_the_compute():
    from veracity.market.policy import check_capacity
    from veracity.workloads.planner import JobEstimate

    terms = decide_bid(order(), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    small = JobEstimate(flops=1e9, memory_bytes=1e6, detail="")
    assert check_capacity(terms, small, POLICY, order(), 1_000, 10**6) == terms  # cheap, quick, fits
    huge = JobEstimate(flops=1e18, memory_bytes=1e6, detail="")  # 1e7 s on one CPU at 5% of its 2 TFLOP/s
    assert "needs about 116 days" in check_capacity(terms, huge, POLICY, order(), 1_000, 10**6)
    big = JobEstimate(flops=1e9, memory_bytes=1e12, detail="")
    assert "cannot hold the job (1 TB at once) on its 1xCPU" in check_capacity(terms, big, POLICY, order(), 1_000, 10**6)
    hourly = POLICY.model_copy(update={"price_per_device_hour": 3_600_000})  # 1_000 a second
    one_s = JobEstimate(flops=1e11, memory_bytes=1e6, detail="")  # 1 s on one CPU at 5%
    raised = check_capacity(terms, one_s, hourly, order(), 1_000, 10**6)
    assert raised == BidTerms(price=1_000, collateral=500, expiry=terms.expiry, run_time=22)  # its cost; twice its time
    dear = JobEstimate(flops=2e11, memory_bytes=1e6, detail="")
    assert "costs about 2000" in check_capacity(terms, dear, hourly, order(), 1_000, 10**6)


def test_a_job_whose_replay_outlasts_a_dispute_move_gets_no_bid():
    """Hole 12: opening a record in a dispute re-runs the job; a provider declines a job whose
    re-run would not fit in half a move, so no legal spec makes it miss a move."""
    from veracity.market.policy import check_capacity
    from veracity.workloads.planner import JobEstimate

    terms = decide_bid(order(), POLICY, now=1_000, running_jobs=0, free_stake=10**6)
    ten_s = JobEstimate(flops=1e12, memory_bytes=1e6, detail="")  # 10 s on one CPU at 5%
    assert isinstance(check_capacity(terms, ten_s, POLICY, order(), 1_000, 10**6, move_time=60), type(terms))
    why = check_capacity(terms, ten_s, POLICY, order(), 1_000, 10**6, move_time=10)
    assert isinstance(why, str) and "more than 50% of a dispute move (10 s)" in why
