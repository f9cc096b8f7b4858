"""Phase one of a dispute: narrow two traces of the same length to their first differing record.

Each party committed a trace root: the Merkle root over its chain values ``c_0 .. c_{n-1}``
(``exact.trace``). Roots that differ mean the last chain values differ. Each round both reveal
the chain value at the midpoint of the open interval, with a Merkle proof against their own root;
equal values move the agreed end up, unequal ones move the differing end down. After
``ceil(log2 n)`` rounds the interval is one record wide: both agree on ``c_{k-1}`` (hence on
every record before ``k``) and disagree on ``c_k`` (hence on record ``k``). The next phases go
inside record ``k``, down to one element, whose inputs are all in agreed records. A reveal whose
proof fails, or that does not come before its deadline, loses the game.

``Bisection`` is the state the Disputes contract keeps; ``TraceView`` is what a party holds
off-chain to answer; ``play`` runs a whole phase between two views, as the tests and the
benchmark do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from veracity.exact import merkle
from veracity.exact.trace import TraceRecord, chained


@dataclass(frozen=True)
class Bisection:
    size: int
    agree: int = -1  # both reveal the same chain value here (-1: the genesis, agreed by definition)
    differ: int = -1  # they reveal different chain values here (set once the last values differ)

    @classmethod
    def start(cls, size: int) -> "Bisection":
        return cls(size, -1, size - 1)

    @property
    def done(self) -> bool:
        return self.differ == self.agree + 1

    @property
    def mid(self) -> int:
        return (self.agree + self.differ) // 2

    def after(self, same: bool) -> "Bisection":
        """The state after both revealed their chain value at ``mid``."""
        if self.done:
            raise ValueError("the bisection is over")
        m = self.mid
        return Bisection(self.size, m, self.differ) if same else Bisection(self.size, self.agree, m)


def rounds_needed(size: int) -> int:
    """Rounds of midpoint reveals from ``start`` to ``done`` (at most)."""
    return math.ceil(math.log2(size)) if size > 1 else 0


class TraceView:
    """A party's trace: its records, chain values and Merkle tree, ready to reveal any position."""

    def __init__(self, records: list[TraceRecord], start: bytes = bytes(32)) -> None:
        self.records = records
        self.chain = chained(records, start)
        self.tree = merkle.levels(self.chain)
        self.root = self.tree[-1][0]

    def reveal(self, index: int) -> tuple[bytes, list[bytes]]:
        return self.chain[index], merkle.prove(self.tree, index)


@dataclass(frozen=True)
class Outcome:
    record: int | None  # the first differing record; None when the traces agree throughout
    rounds: int
    loser: str | None = None  # a party whose reveal did not prove (it loses at once)


def checked(view: TraceView, root: bytes, index: int, size: int) -> bytes | None:
    """A party's reveal at ``index``, or None if it does not prove against its committed root."""
    value, proof = view.reveal(index)
    return value if merkle.verify(root, value, index, size, proof) else None


def play(provider: TraceView, challenger: TraceView, length: int, provider_root: bytes | None = None,
         challenger_root: bytes | None = None) -> Outcome:
    """Run phase one as the contract would, each reveal checked against the committed roots.

    ``length`` is the number of records the job's program has; a trace of another length is
    wrong on its face and its party loses at once.
    """
    n = length
    roots = {"provider": provider_root or provider.root, "challenger": challenger_root or challenger.root}
    for who, view in (("provider", provider), ("challenger", challenger)):
        if len(view.chain) != n:
            return Outcome(None, 0, who)
    views = {"provider": provider, "challenger": challenger}

    def both(index: int) -> tuple[dict[str, bytes | None], str | None]:
        got = {who: checked(v, roots[who], index, n) for who, v in views.items()}
        bad = next((who for who, v in got.items() if v is None), None)
        return got, bad

    got, bad = both(n - 1)
    if bad:
        return Outcome(None, 1, bad)
    if got["provider"] == got["challenger"]:
        return Outcome(None, 1)  # the same records throughout: nothing to dispute
    state, rounds = Bisection.start(n), 1
    while not state.done:
        got, bad = both(state.mid)
        rounds += 1
        if bad:
            return Outcome(None, rounds, bad)
        state = state.after(got["provider"] == got["challenger"])
    return Outcome(state.differ, rounds)
