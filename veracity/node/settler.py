"""A provider finalizes its own committed results: once a result's challenge window has passed
unchallenged, ``Market.finalize`` pays it and releases its collateral. Nobody else finalizes a
standing lease's window (the gateway does not): without this its collateral would stay locked
and it would go unpaid, so a window (``only_mine``) is finalized as soon as its challenge window
has passed. A client that finalizes (``client.jobs.submit``) is left ``grace_s`` after the window
to do it first (it pays the gas).

Orders of a gated client (the Oracle) are left to that client: the Market pays them only on
delivery, through the Oracle's ``fulfil`` (``node.oracle_desk``). Each due order is tried once,
and again ``backoff_s`` later if the Market refused (a block not yet past the window, a challenge
this node has not seen yet); at most ``per_tick`` a tick, so dispute moves are never held up.
"""

from __future__ import annotations

from typing import Any, Callable

from veracity.errors import VeracityError
from veracity.node.state import NodeState


class Settler:
    def __init__(self, market: Any, state: NodeState, now: Callable[[], int], log: Callable[[str], None],
                 grace_s: int = 30, backoff_s: int = 5, per_tick: int = 2,
                 only_mine: Callable[[int], bool] = lambda oid: False) -> None:
        self.market, self.state, self.now, self.log = market, state, now, log
        self.grace_s = grace_s  # after the window: the client may finalize first (it pays the gas)
        self.only_mine = only_mine  # orders no client finalizes (a lease's window): no grace
        self.backoff_s, self.per_tick = backoff_s, per_tick
        self.due: dict[int, int | None] = {}  # committed results -> when to finalize them (None: read it)
        for job in self.state.jobs("committed", "challenged"):  # after a restart
            self.watch(job.order_id)

    def watch(self, oid: int) -> None:
        """Read (next tick) when ``oid``'s result can be finalized: after its commit, and after a
        dispute it won (the Market restarts the challenge window then)."""
        self.due[oid] = None

    def _read(self, oid: int) -> None:
        order = self.market.order(oid)
        if order.state_name != "committed" or self.market.gated(order.client):
            del self.due[oid]  # settled already, or paid only through its client
        else:
            grace = 0 if self.only_mine(oid) else self.grace_s
            self.due[oid] = order.committed_at + order.challenge_window + grace

    def tick(self) -> None:
        for oid in [o for o, due in self.due.items() if due is None]:
            try:
                self._read(oid)
            except Exception as exc:  # a read the chain did not answer: tried again next tick
                self.log(f"order {oid}: cannot read when to finalize it ({exc})")
        if not any(due is not None for due in self.due.values()):
            return  # nothing to finalize: no need to read the chain's clock
        now, tried = self.now(), 0
        for oid, due in sorted((o, d) for o, d in self.due.items() if d is not None and d <= now):
            job = self.state.job(oid)
            if job is None or job.status != "committed":
                if job is None or job.status != "challenged":  # settled, overturned...: done with it
                    del self.due[oid]
                continue  # challenged: ChallengeSet(false) calls watch again
            if tried == self.per_tick:
                break
            tried += 1
            try:
                self.market.finalize(oid)
                del self.due[oid]
                self.log(f"order {oid}: finalized, its challenge window passed")
            except VeracityError as exc:
                self.due[oid] = now + self.backoff_s
                self.log(f"order {oid}: not finalized yet ({exc})")
