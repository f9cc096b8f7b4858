"""The spot-check rate makes cheating a losing bet, and no more checking than that."""

import pytest

from veracity.verify.sampling import (
    cheating_gain,
    check_rate,
    required_catch_probability,
    slashable,
)

TOKEN = 10**18


@pytest.mark.parametrize("validators", [1, 3, 10])
@pytest.mark.parametrize("price,collateral,stake", [(4.5, 0.9, 1000), (50, 10, 100), (1, 0, 10_000), (5, 5, 0)])
def test_at_the_chosen_rate_cheating_has_negative_expected_value(price, collateral, stake, validators):
    p, s = int(price * TOKEN), slashable(int(collateral * TOKEN), int(stake * TOKEN))
    rate = check_rate(p, s, validators)
    for cost in (p, p // 2, p // 10):  # whatever the honest run costs the provider
        assert cheating_gain(p, cost, s, rate, validators) < 0
    # and it is not wasteful: at half that rate, a provider whose honest cost is the price would profit
    if rate < 1:
        assert cheating_gain(p, p, s, rate / 4, validators) > 0


def test_the_devnet_figures_and_the_floor():
    p, s = int(4.5 * TOKEN), slashable(int(0.9 * TOKEN), 1000 * TOKEN)
    assert s == int(200.9 * TOKEN)
    assert required_catch_probability(p, s) == pytest.approx(2 * 4.5 / 205.4)
    assert check_rate(p, s, validators=1) == pytest.approx(0.0438, abs=1e-3)
    assert check_rate(p, s, validators=1, floor=0.5) == 0.5  # the client may ask for more
    assert check_rate(p, 0) == 1.0  # nothing to slash: every job must be checked
    assert check_rate(0, s) == 0.0
