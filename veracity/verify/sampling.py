"""How often validators must re-execute so that cheating never pays.

A provider paid price ``P`` for a job that costs it ``C`` to run honestly (``C <= P``, or it
would not bid) can instead skip the work and commit made-up results. If that is caught (by any of
``V`` validators, each re-executing the job with probability ``p``), it is paid nothing and loses
``S``: its collateral plus the stake share a dispute slashes. So

    honest:   P - C
    cheating: (1 - q) * P - q * S        with q = 1 - (1 - p)^V, the chance of being caught

Cheating loses in expectation when ``(1 - q) P - q S < P - C``, that is when ``q > C / (P + S)``.
Not knowing ``C``, validators take its bound ``C = P`` and a safety factor ``k`` (default 2, for
colluding or mistaken estimates), and check each job with

    q* = min(1, k * P / (P + S))
    p  = max(p_min, 1 - (1 - q*)^(1 / V))

``p_min`` is the floor the client asked for in its order (its ``spot_check_rate``). With the
devnet's figures (P = 4.5 VRC, S = 0.9 collateral + 20% of a 1000 VRC stake, the share the
Market slashes) and one validator, q* = 0.044: a validator re-executes about one job in 23, and
a rational provider never cheats.
"""

from __future__ import annotations

STAKE_SLASH_BPS = 2_000  # share of its stake a provider caught cheating loses (with its collateral)
BURN_BPS = 5_000  # share of a dispute's slash (and of a lost bond) that the contracts burn
SAFETY = 2.0


def challenger_reward(slashed: int) -> int:
    """What a challenger that won is paid of the ``slashed`` amount (the rest is burnt)."""
    return slashed - slashed * BURN_BPS // 10_000


def bond_to_provider(bond: int) -> int:
    """What a provider gets of a challenger's lost bond (the rest is burnt)."""
    return bond - bond * BURN_BPS // 10_000


def slashable(collateral: int, stake: int, stake_slash_bps: int = STAKE_SLASH_BPS) -> int:
    """``S``: what a provider caught cheating on one job loses."""
    return collateral + stake * stake_slash_bps // 10_000


def required_catch_probability(price: int, slash: int, safety: float = SAFETY) -> float:
    """``q*``: the chance of being caught above which cheating has negative expected value."""
    if price <= 0:
        return 0.0
    return min(1.0, safety * price / (price + max(slash, 0)))


def check_rate(price: int, slash: int, validators: int = 1, floor: float = 0.0, safety: float = SAFETY) -> float:
    """``p``: the probability with which each of ``validators`` validators re-executes a job."""
    q = required_catch_probability(price, slash, safety)
    v = max(validators, 1)
    p = 1.0 if q >= 1.0 else 1.0 - (1.0 - q) ** (1.0 / v)
    return min(1.0, max(floor, p))


def cheating_gain(price: int, cost: int, slash: int, rate: float, validators: int = 1) -> float:
    """Expected payoff of cheating minus that of honest work (negative: cheating does not pay)."""
    q = 1.0 - (1.0 - rate) ** max(validators, 1)
    return ((1.0 - q) * price - q * slash) - (price - cost)
