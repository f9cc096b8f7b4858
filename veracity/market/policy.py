"""A provider's bidding policy, as a pure function: bid on an order, or say why not.

The reasons are what a client sees when nobody bids ("price below every provider's floor",
"no provider serves model X"), so they are written for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

COMMIT_MARGIN_S = 20  # seconds a bid's run time allows for committing, beyond running the job


class PricePolicy(BaseModel):
    """How a provider prices work (amounts in token base units)."""

    models: list[str]
    price_floor: int = Field(ge=0)  # never bid below this
    markup_bps: int = Field(0, ge=0, le=10_000)  # bid this far below the client's max, never under the floor
    collateral_bps: int = Field(2_000, ge=1_000)  # collateral offered, as a share of the price (the Market's minimum: 10%)
    min_deadline_s: int = Field(60, ge=0)  # refuse orders that leave less time than this
    max_jobs: int = Field(4, ge=1)  # concurrent leases
    bid_ttl_s: int = Field(300, ge=1)
    devices: str = "1xCPU"  # what it runs jobs on (the planner's COUNTxNAME)
    price_per_device_hour: int = Field(0, ge=0)  # its cost of compute; 0: only the floor prices work
    mfu: float = Field(0.05, gt=0, le=1)  # the share of peak its exact runs reach (CPU NumPy: a few %)


@dataclass(frozen=True)
class OrderView:
    order_id: int
    model: str
    max_price: int
    deadline: int  # unix seconds


@dataclass(frozen=True)
class BidTerms:
    price: int
    collateral: int
    expiry: int
    run_time: int = 0  # seconds it needs once accepted: the Market refuses acceptance later than deadline - run_time


def decide_bid(order: OrderView, policy: PricePolicy, now: int, running_jobs: int,
               free_stake: int) -> BidTerms | str:
    """Terms to bid with, or the reason this provider does not bid."""
    if order.model not in policy.models:
        return f"does not serve model {order.model!r} (serves {', '.join(policy.models)})"
    if order.max_price < policy.price_floor:
        return f"max price {order.max_price} is below its price floor {policy.price_floor}"
    if order.deadline - now < policy.min_deadline_s:
        return f"the deadline leaves {max(0, order.deadline - now)} s, it needs at least {policy.min_deadline_s} s"
    if running_jobs >= policy.max_jobs:
        return f"is at capacity ({running_jobs} of {policy.max_jobs} jobs running)"
    price = max(policy.price_floor, order.max_price - order.max_price * policy.markup_bps // 10_000)
    collateral = price * policy.collateral_bps // 10_000
    if collateral > free_stake:
        return f"its free stake {free_stake} cannot cover collateral {collateral}"
    run_time = min(COMMIT_MARGIN_S, order.deadline - now)  # the planner (check_capacity) raises it to the job's
    return BidTerms(price=price, collateral=collateral, expiry=min(order.deadline - run_time, now + policy.bid_ttl_s),
                    run_time=run_time)


REPLAY_SHARE = 0.5  # of a dispute move's time, the most that re-running a job to open a record may take


def check_replay(estimate: Any, policy: PricePolicy, move_time: int | None) -> str | None:
    """Why a job (or a lease request: its replay is its own run, ``infer.record_tensors``) of
    ``estimate`` is refused because re-running it to open a record in a dispute would not fit in
    REPLAY_SHARE of a dispute move on this provider's devices, or None when it fits."""
    from veracity.workloads.planner import duration

    seconds = estimate.seconds(policy.devices, policy.mfu)
    if move_time is None or seconds <= REPLAY_SHARE * move_time:
        return None
    return (f"re-running it to open a record in a dispute would take about {duration(seconds)} on its "
            f"{policy.devices}, more than {REPLAY_SHARE:.0%} of a dispute move ({move_time} s): "
            "an honest provider could miss its move")


def check_capacity(terms: BidTerms, estimate: Any, policy: PricePolicy, order: OrderView, now: int,
                   free_stake: int, move_time: int | None = None) -> BidTerms | str:
    """The planner's say on terms ``decide_bid`` offered, for a job ``estimate``
    (``workloads.planner.JobEstimate``): refuse a job that does not fit this provider's devices,
    would not finish before the deadline, or whose re-run (what opening a record in a dispute
    takes) would not fit in REPLAY_SHARE of a dispute move (``move_time``), and raise the price to
    the compute's cost (never above the client's max, which ``decide_bid`` already met)."""
    from veracity.workloads.planner import duration, human, parse_devices

    if not estimate.fits(policy.devices):
        return (f"cannot hold the job ({human(estimate.memory_bytes, 'B')} at once) on its {policy.devices}")
    seconds = estimate.seconds(policy.devices, policy.mfu)
    slow = check_replay(estimate, policy, move_time)
    if slow is not None:
        return slow
    if seconds > order.deadline - now:
        return (f"needs about {duration(seconds)} for {human(estimate.flops, 'FLOP')} on its {policy.devices}; "
                f"the deadline leaves {max(0, order.deadline - now)} s")
    count, _ = parse_devices(policy.devices)
    cost = -(-int(seconds * count * policy.price_per_device_hour) // 3600)
    if cost > order.max_price:
        return (f"its compute for this job costs about {cost} (about {duration(seconds)} on {policy.devices}), "
                f"above the max price {order.max_price}")
    run_time = min(max(terms.run_time, 2 * int(seconds) + COMMIT_MARGIN_S), order.deadline - now)  # twice the estimate
    terms = BidTerms(price=terms.price, collateral=terms.collateral,
                     expiry=min(terms.expiry, order.deadline - run_time), run_time=run_time)
    if cost <= terms.price:
        return terms
    collateral = cost * policy.collateral_bps // 10_000
    if collateral > free_stake:
        return f"its free stake {free_stake} cannot cover collateral {collateral}"
    return BidTerms(price=cost, collateral=collateral, expiry=terms.expiry, run_time=run_time)
