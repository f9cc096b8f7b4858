"""The fixed-point Dawid-Skene against crowd-kit's default DawidSkene, on simulated labellers of
known accuracies (``bench/data_consensus.py`` simulates them and runs the comparison): the same
consensus, stopping where crowd-kit stops, better than a majority vote, the same result whatever
the order."""

import sys
from pathlib import Path

import numpy as np
import pytest

from veracity.data.consensus import BPS, MAX_ITERATIONS, ONE, dawid_skene, majority_vote, payouts
from veracity.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root: bench.* (never bench/ itself, whose ray.py would shadow ray)
from bench.data_consensus import agreement_with_crowdkit, simulated_rounds  # noqa: E402

ITEMS = 64  # a task's most items on chain


@pytest.fixture(scope="module")
def simulated():
    """36 rounds of 64 items (2,304 items), each aggregated here and by a majority vote."""
    out = []
    for classes, truth, labels in simulated_rounds(20, 36, ITEMS):
        out.append((classes, truth, labels, dawid_skene(labels.tolist(), classes),
                    np.array(majority_vote(labels.tolist(), classes))))
    return out


def test_consensus_agrees_with_crowd_kit_default():
    """crowd-kit's DawidSkene() with its defaults (up to 100 iterations, stopping when its loss
    gains less than 1e-5 per label) gives the same consensus on at least 99.9% of the items (on
    every one, with these rounds), and we stop where it stops on most rounds (a round where we do
    not is one iteration early, the loss's gain then lying within a few percent of the tolerance)."""
    got = agreement_with_crowdkit(seed=20, rounds=36, items=ITEMS, same_iterations=False)
    print(f"\nagreement with crowd-kit DawidSkene(): {got['ds_agreement']:.4%} of {got['items']} items; same stop on "
          f"{got['iterations_match']:.0%} of {got['rounds']} rounds; iterations mean {got['iterations_mean']:.1f}, "
          f"max {got['iterations_max']}; correct: ours {got['truth_ours']:.4f}, crowd-kit {got['truth_crowdkit']:.4f}, "
          f"majority {got['truth_majority']:.4f}")
    assert got["items"] >= 2000
    assert got["ds_agreement"] >= 0.999
    assert got["iterations_match"] >= 0.9 and set(got["iterations_gaps"]) <= {0, -1}
    assert 40 < got["iterations_max"] <= MAX_ITERATIONS  # some rounds converge slowly: a fixed 20 would not do


def test_consensus_beats_majority_vote(simulated):
    """Weighting labellers by their estimated skill finds more true labels than counting votes."""
    ours = mv = total = 0
    for classes, truth, labels, result, vote in simulated:
        ours += int((np.array(result.labels) == truth).sum())
        mv += int((vote == truth).sum())
        total += len(truth)
    print(f"\ncorrect: Dawid-Skene {ours / total:.4f}, majority vote {mv / total:.4f}")
    assert ours > mv + 0.01 * total


def test_accuracy_estimates_track_the_truth(simulated):
    """Estimated accuracies are close to the labellers' real ones, and a spammer scores near 1/K."""
    errors = []
    for classes, truth, labels, result, _ in simulated:
        real = [(labels[:, j] == truth).mean() for j in range(labels.shape[1])]
        errors += [abs(est / BPS - r) for est, r in zip(result.accuracy_bps, real)]
        assert result.accuracy_bps[-1] < BPS * (1 / classes + 0.2)  # the spammer
    assert np.mean(errors) < 0.05


def test_same_result_in_any_order(simulated):
    """Sums and products are exact and divisions per item, class or labeller: running twice, or
    with the labellers or items permuted, gives the same integers, permuted alike, and stops at
    the same iteration."""
    for index in (5, 11):
        classes, _, labels, result, _ = simulated[index]
        assert dawid_skene(labels.tolist(), classes) == result
        rng = np.random.default_rng(index)
        cols, rows = rng.permutation(labels.shape[1]), rng.permutation(labels.shape[0])
        permuted = dawid_skene(labels[rows][:, cols].tolist(), classes)
        assert permuted.accuracy_bps == tuple(result.accuracy_bps[j] for j in cols)
        assert permuted.labels == tuple(result.labels[i] for i in rows)
        assert permuted.posteriors == tuple(result.posteriors[i] for i in rows)
        assert permuted.iterations == result.iterations


def test_integers_only_and_bounded(simulated):
    """Every posterior is an integer over ONE and sums to at most ONE (floor divisions)."""
    for *_, result, _ in simulated:
        for post in result.posteriors:
            assert all(isinstance(p, int) and p >= 0 for p in post)
            assert ONE - len(post) <= sum(post) <= ONE


def test_unanimous_and_tied_items():
    """Unanimous labellers give their label; an even split goes to the lowest class."""
    result = dawid_skene([[1, 1, 1], [0, 0, 0], [2, 2, 2]], 3)
    assert result.labels == (1, 0, 2)
    assert all(a > 9900 for a in result.accuracy_bps)
    assert majority_vote([[1, 0, 1, 0]], 2) == [0]


@pytest.mark.parametrize("labels, classes, message", [
    ([[0, 1], [1]], 2, "every labeller labels every item"),
    ([[0, 2, 1]], 2, "labels are classes 0..1"),
    ([[0] * 9], 2, "1 to 8 labellers"),
    ([[0, 1, 0]], 5, "2 to 4 classes"),
    ([], 2, "no items"),
])
def test_malformed_labels_are_refused(labels, classes, message):
    with pytest.raises(InputError, match=message):
        dawid_skene(labels, classes)


def test_payouts_conserve_the_reward():
    """Shares in proportion to accuracy, the dust to the requester, the slash a share of the stake."""
    reward, stake = 10**21 + 7, 5 * 10**18
    out, dust = payouts([9000, 8500, 3300, 7000], reward, stake, threshold_bps=6000, slash_bps=5000)
    assert [p.reward for p in out] == [reward * a // 24500 for a in (9000, 8500)] + [0, reward * 7000 // 24500]
    assert sum(p.reward for p in out) + dust == reward and 0 <= dust < 3
    assert out[2].slashed == stake // 2 and out[2].returned == stake - stake // 2
    assert all(p.returned == stake and p.slashed == 0 for p in out if p.reward)
    nobody, dust = payouts([1000, 2000, 3000], reward, stake, 6000, 10000)
    assert dust == reward and all(p.returned == 0 and p.slashed == stake for p in nobody)
