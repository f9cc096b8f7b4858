"""Consensus labels by a fixed-point Dawid-Skene EM that a contract reproduces bit for bit.

Labellers of unknown skill label the same items; Dawid-Skene (1979) estimates each labeller's
confusion matrix and each item's posterior over the true class by EM, so one careful labeller
outweighs several careless ones, where a majority vote counts them all alike. Because the
consensus decides who is paid and who is slashed, every party must derive the same numbers: the
EM here uses Python integers only, in exactly the order and with exactly the floor divisions that
``contracts/LabelTasks.vy`` uses on chain, so the two agree to the bit.

The EM is crowd-kit's ``DawidSkene`` (the reference it is tested against) step for step, with its
default stopping rule: it starts from the majority vote's shares (each item's vote fraction per
class), then each iteration is an E-step (posteriors from priors times confusion entries) and an
M-step (class priors as the posteriors' mean; confusion counts normalised per true class), and it
stops when crowd-kit's loss gains less than ``TOL`` (its ``tol``, 1e-5 nats per label) from one
iteration to the next, or after ``MAX_ITERATIONS`` (its ``n_iter``, 100). Where it stops matters:
on a few dozen items EM keeps drifting long after most labels settle, so a fixed 20 iterations
disagree with crowd-kit's default on about 1% of the items.

The loss is crowd-kit's evidence lower bound ELBO(q_t, theta_t), which counts the log prior once
per label rather than once per item. A contract cannot take logarithms freely, so it is rewritten
as the log evidence at theta_{t-1} (which the E-step that gave q_t has at hand: one log2 per
iteration, of the running product of the items' evidences), plus the M-step's gain, the sum of
count * ln(new / old) over the confusion entries and priors (each by its atanh series to third
order, over one division), plus (labellers - 1) times the posteriors' mass on the log priors
(one log2 per class). Logs are in 2**-``LOG_BITS`` bits. That this stops where crowd-kit stops is
tested, not proved: the series and the fixed point's floors can move a gain lying within a few
percent of ``TOL`` across it, and the stop by one iteration (seen on about 2% of simulated
rounds, no consensus label changing with it).

Fixed point: probabilities are integers over ``ONE = 2**24``, every division a floor division.
Where crowd-kit clips probabilities at 1e-10 so that it never takes the log of zero, we keep them
at 1 (2**-24) at least: every confusion count starts at 1 before the posteriors are added to it,
and a confusion entry or a prior that the floor division leaves at 0 is raised to 1. So no entry
is zero (a zero would veto a class for good on a single slip), a prior is at most ``ONE`` and a
confusion entry below it, and an item's likelihood for a class, the prior times one entry per
labeller, is an exact product of at most 1 + 8 factors: at most 2**216, summed over at most 4
classes and scaled by ``ONE`` still under 2**242, inside a uint256 with no rounding before the
one division that normalises it. Hence at most ``MAX_LABELLERS`` labellers and ``MAX_CLASSES``
classes.

Accuracy: a labeller's estimated accuracy is the posterior mass on its own label, averaged over
the items, in basis points: the expected share of items on which it gave the true class, under
the fitted model. Up to the floor divisions and the counts' starting 1 it is the trace of the
labeller's confusion matrix weighted by the class priors, as the next M-step would estimate
them: Dawid-Skene's own estimate. A labeller answering at random scores about 1/K of 10,000.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from veracity.errors import InputError

ONE = 2**24
MAX_ITERATIONS = 100  # crowd-kit's default n_iter
LOG_BITS = 24  # fraction bits of a fixed-point log2
TOL = round(1e-5 * math.log2(math.e) * 2**LOG_BITS)  # crowd-kit's default tol, 1e-5 nats per label: 242
LOG2_E = round(math.log2(math.e) * 2**32)  # 6196328019
BPS = 10_000
MAX_LABELLERS = 8
MAX_CLASSES = 4


@dataclass(frozen=True)
class Consensus:
    """What the aggregation derives: the consensus class of each item, each labeller's estimated
    accuracy in basis points (in the labels' column order), each item's posterior over the
    classes (integers over ``ONE``, summing to at most ``ONE``), and the EM iterations it ran
    (crowd-kit's ``len(loss_history_)``)."""

    labels: tuple[int, ...]
    accuracy_bps: tuple[int, ...]
    posteriors: tuple[tuple[int, ...], ...]
    iterations: int


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



def _log2(x: int) -> int:
    """log2(x) * 2**LOG_BITS for an integer x >= 1, as the contract computes it: the integer part is
    the top bit's position; each fraction bit comes from squaring the mantissa (normalised to
    [2**127, 2**128), truncated after each square) and seeing whether it reached 2."""
    top = x.bit_length() - 1
    y = x >> (top - 127) if top >= 127 else x << (127 - top)
    out = top << LOG_BITS
    for i in range(LOG_BITS):
        y = y * y >> 127
        if y >= 1 << 128:
            y >>= 1
            out |= 1 << (LOG_BITS - 1 - i)
    return out


def _m_step(labels: Sequence[Sequence[int]], post: list[list[int]], classes: int,
            n_labellers: int) -> tuple[list[int], list[list[list[int]]], list[int], list[list[list[int]]]]:
    """Priors (the posteriors' mass per class over the items, at least 1), confusion matrices
    (``conf[j][k][l]``: labeller j says l when the truth is k; counts from 1, each row normalised
    by floor division, at least 1), the masses, and the counts (``counts[j][k][l]``: the
    posteriors' mass on k over the items j labelled l)."""
    counts = [[[0] * classes for _ in range(classes)] for _ in range(n_labellers)]
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
            row_total = sum(counts[j][k]) + classes
            rows.append([max((c + 1) * ONE // row_total, 1) for c in counts[j][k]])
        conf.append(rows)
    return priors, conf, mass, counts


def _e_step(labels: Sequence[Sequence[int]], priors: list[int], conf: list[list[list[int]]],
            classes: int) -> tuple[list[list[int]], list[int]]:
    """Each item's posterior: the exact product of its prior and its labellers' confusion entries
    per class, normalised to ``ONE`` by one floor division; and each item's total (its evidence,
    in units of ``ONE ** (1 + labellers)``)."""
    post, totals = [], []
    for row in labels:
        likes = []
        for k in range(classes):
            like = priors[k]
            for j, label in enumerate(row):
                like *= conf[j][k][label]
            likes.append(like)
        total = sum(likes)
        post.append([like * ONE // total for like in likes])
        totals.append(total)
    return post, totals


def _log_evidence(totals: Sequence[int]) -> int:
    """The sum of the totals' log2 (in 2**-LOG_BITS bits, up to a constant), by one running
    product of their mantissas (each normalised to [2**127, 2**128), the product truncated and
    renormalised after each factor) and a single log at the end."""
    acc, exponent = 1 << 127, 0
    for total in totals:
        top = total.bit_length() - 1
        exponent += top
        acc = acc * (total >> (top - 127) if top >= 127 else total << (127 - top)) >> 127
        if acc >= 1 << 128:
            acc >>= 1
            exponent += 1
    return (exponent << LOG_BITS) + _log2(acc)


def _ln_ratio(w: int, a: int, b: int) -> int:
    """w * ln(a / b) * 2**8, signed, by 2 (u + u**3 / 3) with u = (a - b) / (a + b): its magnitude
    over one floor division, as the contract computes it."""
    s, d = a + b, abs(a - b)
    if s == 0:
        return 0
    mag = (2 * w * d * (3 * s * s + d * d) << 8) // (3 * s * s * s)
    return mag if a > b else -mag


def _gain(counts: list[list[list[int]]], conf: list[list[list[int]]], old_conf: list[list[list[int]]],
          mass: list[int], priors: list[int], old_priors: list[int]) -> tuple[int, int]:
    """The M-step's gain in crowd-kit's loss, sum of w ln(new / old) over the counts and the
    confusion entries and over the masses and the priors, in 2**-32 nats: as (up, down), the sums
    of its positive terms and of its negative terms' magnitudes."""
    terms = [_ln_ratio(counts[j][k][l], conf[j][k][l], old_conf[j][k][l])
             for j in range(len(conf)) for k in range(len(priors)) for l in range(len(priors))]
    terms += [_ln_ratio(w, p, o) for w, p, o in zip(mass, priors, old_priors)]
    return sum(x for x in terms if x > 0), -sum(x for x in terms if x < 0)


def dawid_skene(labels: Sequence[Sequence[int]], classes: int) -> Consensus:
    """Aggregate ``labels`` (one row per item, one column per labeller, classes ``0..classes-1``)
    by EM from the majority vote's shares, until crowd-kit's loss gains less than ``TOL`` per label
    from one iteration to the next, or for ``MAX_ITERATIONS``.

    The result does not depend on the order of the labellers, nor, but for the last bit of a loss,
    on the order of the items: sums and products are exact, divisions per item, class or
    labeller, and only the evidence's running product truncates as it goes (at 2**-127 per
    item, far below the loss's 2**-24 bits)."""
    n_items, n_labellers = _check(labels, classes)
    post = [[v * ONE // n_labellers for v in votes] for votes in _votes(labels, classes)]
    priors, conf, _, _ = _m_step(labels, post, classes, n_labellers)
    post, totals = _e_step(labels, priors, conf, classes)
    evidence, last, done = _log_evidence(totals), 0, MAX_ITERATIONS
    for t in range(1, MAX_ITERATIONS + 1):
        new_priors, new_conf, mass, counts = _m_step(labels, post, classes, n_labellers)
        up, down = _gain(counts, new_conf, conf, mass, new_priors, priors)
        prior_term = (n_labellers - 1) * sum(w * ((24 << LOG_BITS) - _log2(p)) for w, p in zip(mass, new_priors))
        loss = evidence + (up * LOG2_E >> 40) - (down * LOG2_E >> 40) - prior_term // ONE
        if (t > 1 and loss - last < TOL * n_items * n_labellers) or t == MAX_ITERATIONS:
            done = t
            break
        last, priors, conf = loss, new_priors, new_conf
        post, totals = _e_step(labels, priors, conf, classes)
        evidence = _log_evidence(totals)
    consensus = tuple(_argmax(p) for p in post)
    scale = n_items * ONE
    accuracy = tuple(sum(p[row[j]] for row, p in zip(labels, post)) * BPS // scale for j in range(n_labellers))
    return Consensus(consensus, accuracy, tuple(tuple(p) for p in post), done)


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
