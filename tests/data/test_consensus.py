"""The fixed-point Dawid-Skene against crowd-kit's, on simulated labellers of known accuracies:
the same consensus, better than a majority vote, the same result whatever the order."""

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene

from veracity.data.consensus import BPS, ITERATIONS, ONE, dawid_skene, majority_vote, payouts
from veracity.errors import InputError

ITEMS = 64  # a task's most items on chain
pytestmark = pytest.mark.filterwarnings("ignore:::crowdkit")  # pandas 3 deprecations inside crowd-kit


def simulate(rng, truth, accuracies, classes):
    """Labels (items x labellers): labeller j gives the true class with probability accuracies[j],
    else another class uniformly; an accuracy of None answers uniformly at random (a spammer)."""
    cols = []
    for a in accuracies:
        if a is None:
            cols.append(rng.integers(0, classes, len(truth)))
            continue
        wrong = (truth + rng.integers(1, classes, len(truth))) % classes
        cols.append(np.where(rng.random(len(truth)) < a, truth, wrong))
    return np.stack(cols, axis=1)


def rounds(seed, n_rounds, items):
    """Rounds of K = 2..4 classes and 5..7 labellers of accuracies 0.55..0.95, one a spammer."""
    rng = np.random.default_rng(seed)
    for r in range(n_rounds):
        classes, n_labellers = 2 + r % 3, 5 + (r // 3) % 3
        truth = rng.integers(0, classes, items)
        accuracies = [*rng.uniform(0.55, 0.95, n_labellers - 1), None]
        yield classes, truth, simulate(rng, truth, accuracies, classes)


def crowd_kit(labels, **kw):
    n, m = labels.shape
    df = pd.DataFrame({"task": np.repeat(np.arange(n), m), "worker": np.tile(np.arange(m), n),
                       "label": labels.reshape(-1)})
    return DawidSkene(**kw).fit_predict(df).sort_index().to_numpy()


@pytest.fixture(scope="module")
def simulated():
    """36 rounds of 64 items (2,304 items), each aggregated here and by a majority vote."""
    out = []
    for classes, truth, labels in rounds(20, 36, ITEMS):
        out.append((classes, truth, labels, dawid_skene(labels.tolist(), classes),
                    np.array(majority_vote(labels.tolist(), classes))))
    return out


def test_consensus_agrees_with_crowd_kit(simulated):
    """crowd-kit's DawidSkene run for the same number of EM rounds (its tolerance switched off: a
    contract cannot evaluate its log-likelihood) gives the same consensus on at least 99.9% of the
    items (on every one, so far)."""
    same = total = 0
    for classes, truth, labels, ours, _ in simulated:
        theirs = crowd_kit(labels, n_iter=ITERATIONS, tol=float("-inf"))
        same += int((np.array(ours.labels) == theirs).sum())
        total += len(truth)
    print(f"\nagreement with crowd-kit DawidSkene(n_iter={ITERATIONS}): {same}/{total} = {same / total:.4%}")
    assert total >= 2000
    assert same >= 0.999 * total


def test_consensus_close_to_crowd_kit_run_to_its_tolerance():
    """On larger rounds crowd-kit's default run (up to 100 rounds, until its log-likelihood stops
    moving) still agrees on all but a few near-tie items. (On 64-item rounds, EM after 20 rounds
    and at convergence differ on about 1% of the items; the 20 rounds are then the closer to the
    truth, as EM on few items drifts towards overfitted confusion matrices.)"""
    same = total = 0
    for classes, truth, labels in rounds(21, 5, 500):
        ours = np.array(dawid_skene(labels.tolist(), classes).labels)
        same += int((ours == crowd_kit(labels)).sum())
        total += len(truth)
    print(f"\nagreement with crowd-kit DawidSkene() run to its tolerance: {same}/{total} = {same / total:.4%}")
    assert same >= 0.985 * total  # 99.1% to 100% over seeds; exactly 99.16% with this one


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
    with the labellers or items permuted, gives the same integers, permuted alike."""
    classes, _, labels, result, _ = simulated[5]
    assert dawid_skene(labels.tolist(), classes) == result
    rng = np.random.default_rng(1)
    cols, rows = rng.permutation(labels.shape[1]), rng.permutation(labels.shape[0])
    permuted = dawid_skene(labels[rows][:, cols].tolist(), classes)
    assert permuted.accuracy_bps == tuple(result.accuracy_bps[j] for j in cols)
    assert permuted.labels == tuple(result.labels[i] for i in rows)
    assert permuted.posteriors == tuple(result.posteriors[i] for i in rows)


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
