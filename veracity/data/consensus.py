"""Consensus labels by a fixed-point Dawid-Skene EM that a contract reproduces bit for bit.

Labellers of unknown skill label the same items; Dawid-Skene (1979) estimates each labeller's
confusion matrix and each item's posterior over the true class by EM, so one careful labeller
outweighs several careless ones, where a majority vote counts them all alike. Because the
consensus decides who is paid and who is slashed, every party must derive the same numbers: the
EM here uses Python integers only, in exactly the order and with exactly the floor divisions that
``contracts/LabelTasks.vy`` uses on chain, so the two agree to the bit.

The EM is crowd-kit's ``DawidSkene`` (the reference it is tested against) step for step: it
starts from the majority vote's shares (each item's vote fraction per class), then each round is
an M-step (class priors as the posteriors' mean; confusion counts normalised per true class) and
an E-step (posteriors from priors times confusion entries). A fixed number of rounds replaces
crowd-kit's tolerance on the evidence lower bound, which needs logarithms a contract cannot take
exactly; with the same number of rounds the two agree on the consensus of every item we tested.

Fixed point: probabilities are integers over ``ONE = 2**24``, every division a floor division.
Where crowd-kit clips probabilities at 1e-10 so that it never takes the log of zero, we keep them
at 1 (2**-24) at least: every confusion count starts at 1 before the posteriors are added to it,
and a confusion entry or a prior that the floor division leaves at 0 is raised to 1. So no entry
is zero (a zero would veto a class for good on a single slip), a prior is at most ``ONE`` and a
confusion entry below it, and an item's likelihood for a class, the prior times one entry per
labeller, is an exact product of at most 1 + 8 factors: at most 2**216, summed over at most 4
classes and scaled by ``ONE`` still under 2**242, inside a uint256 with no rounding before the
one division that normalises it. Hence at most ``MAX_LABELLERS`` labellers and ``MAX_CLASSES``
classes. The floor (6e-8 against 1e-10) is where we depart from crowd-kit: with it and a fixed
number of rounds, a consensus can differ from crowd-kit's run to its tolerance on items near a
tie (under 1% of them in our simulations), never from crowd-kit's run for the same rounds.

Accuracy: a labeller's estimated accuracy is the posterior mass on its own label, averaged over
the items, in basis points: the expected share of items on which it gave the true class, under
the fitted model. Up to the floor divisions and the counts' starting 1 it is the trace of the
labeller's confusion matrix weighted by the class priors, as the next M-step would estimate
them: Dawid-Skene's own estimate. A labeller answering at random scores about 1/K of 10,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from veracity.errors import InputError

ONE = 2**24
ITERATIONS = 20
BPS = 10_000
MAX_LABELLERS = 8
MAX_CLASSES = 4


@dataclass(frozen=True)
class Consensus:
    """What the aggregation derives: the consensus class of each item, each labeller's estimated
    accuracy in basis points (in the labels' column order), and each item's posterior over the
    classes (integers over ``ONE``, summing to at most ``ONE``)."""

    labels: tuple[int, ...]
    accuracy_bps: tuple[int, ...]
    posteriors: tuple[tuple[int, ...], ...]


def _check(labels: Sequence[Sequence[int]], classes: int) -> tuple[int, int]:
    if not 2 <= classes <= MAX_CLASSES:
        raise InputError(f"a labelling task has 2 to {MAX_CLASSES} classes, not {classes}")
    if not labels:
        raise InputError("there are no items to aggregate: pass one row of labels per item")
    n_labellers = len(labels[0])
    if not 1 <= n_labellers <= MAX_LABELLERS:
        raise InputError(f"aggregation takes 1 to {MAX_LABELLERS} labellers per item (the fixed point's "
                         f"products must fit 256 bits), not {n_labellers}")
    for i, row in enumerate(labels):
        if len(row) != n_labellers:
            raise InputError(f"item {i} has {len(row)} labels, item 0 has {n_labellers}: every labeller labels "
                             "every item")
        for label in row:
            if not 0 <= label < classes:
                raise InputError(f"item {i} has label {label}: labels are classes 0..{classes - 1}")
    return len(labels), n_labellers


def majority_vote(labels: Sequence[Sequence[int]], classes: int) -> list[int]:
    """Each item's most frequent label, the lowest class on a tie: the baseline the EM must beat."""
    return [_argmax(votes) for votes in _votes(labels, classes)]


def _votes(labels: Sequence[Sequence[int]], classes: int) -> list[list[int]]:
    _check(labels, classes)
    out = []
    for row in labels:
        votes = [0] * classes
        for label in row:
            votes[label] += 1
        out.append(votes)
    return out


def _argmax(values: Sequence[int]) -> int:
    best = 0
    for k in range(1, len(values)):
        if values[k] > values[best]:  # strictly: a tie keeps the lowest class
            best = k
    return best


def _m_step(labels: Sequence[Sequence[int]], post: list[list[int]], classes: int,
            n_labellers: int) -> tuple[list[int], list[list[list[int]]]]:
    """Priors (the posteriors' mean, at least 1) and confusion matrices (``conf[j][k][l]``:
    labeller j says l when the truth is k; counts from 1, each row normalised by floor division,
    at least 1)."""
    counts = [[[1] * classes for _ in range(classes)] for _ in range(n_labellers)]
    mass = [0] * classes
    for row, p in zip(labels, post):
        for k in range(classes):
            mass[k] += p[k]
        for j, label in enumerate(row):
            for k in range(classes):
                counts[j][k][label] += p[k]
    priors = [max(m // len(labels), 1) for m in mass]
    conf = []
    for j in range(n_labellers):
        rows = []
        for k in range(classes):
            row_total = sum(counts[j][k])
            rows.append([max(c * ONE // row_total, 1) for c in counts[j][k]])
        conf.append(rows)
    return priors, conf


def _e_step(labels: Sequence[Sequence[int]], priors: list[int], conf: list[list[list[int]]],
            classes: int) -> list[list[int]]:
    """Each item's posterior: the exact product of its prior and its labellers' confusion entries
    per class, normalised to ``ONE`` by one floor division."""
    post = []
    for row in labels:
        likes = []
        for k in range(classes):
            like = priors[k]
            for j, label in enumerate(row):
                like *= conf[j][k][label]
            likes.append(like)
        total = sum(likes)
        post.append([like * ONE // total for like in likes])
    return post


def dawid_skene(labels: Sequence[Sequence[int]], classes: int, iterations: int = ITERATIONS) -> Consensus:
    """Aggregate ``labels`` (one row per item, one column per labeller, classes ``0..classes-1``)
    by ``iterations`` rounds of M-step then E-step from the majority vote's shares.

    A fixed number of rounds, not a tolerance, so that the contract stops where everyone else
    does. The result does not depend on the order of the items or of the labellers (sums and
    products are exact; divisions are per item, per class or per labeller)."""
    n_items, n_labellers = _check(labels, classes)
    post = [[v * ONE // n_labellers for v in votes] for votes in _votes(labels, classes)]
    for _ in range(iterations):
        priors, conf = _m_step(labels, post, classes, n_labellers)
        post = _e_step(labels, priors, conf, classes)
    consensus = tuple(_argmax(p) for p in post)
    scale = n_items * ONE
    accuracy = tuple(sum(p[row[j]] for row, p in zip(labels, post)) * BPS // scale for j in range(n_labellers))
    return Consensus(consensus, accuracy, tuple(tuple(p) for p in post))


@dataclass(frozen=True)
class Payout:
    """What one labeller gets back at settlement: its reward, its stake less any slash, and the
    slash (to the treasury)."""

    reward: int
    returned: int
    slashed: int


def payouts(accuracy_bps: Sequence[int], reward: int, stake: int, threshold_bps: int,
            slash_bps: int) -> tuple[list[Payout], int]:
    """The settlement rule of ``LabelTasks.finalize`` for the labellers who revealed: those at or
    above the threshold share the reward in proportion to their accuracy (floor division) and get
    their stake back; those below it lose ``slash_bps`` of their stake. Returns each one's payout
    and the reward's dust, which goes back to the requester (all of the reward if nobody
    qualifies)."""
    paid_pool = sum(a for a in accuracy_bps if a >= threshold_bps)
    out = []
    for a in accuracy_bps:
        if a >= threshold_bps:
            share = reward * a // paid_pool if paid_pool else 0
            out.append(Payout(share, stake, 0))
        else:
            slash = stake * slash_bps // BPS
            out.append(Payout(0, stake - slash, slash))
    return out, reward - sum(p.reward for p in out)
