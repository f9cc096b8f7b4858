"""A provider's side of Oracle requests (``contracts/Oracle.vy``): the Oracle is the client of
their Market orders, so the provider reads each request's spec from the Oracle (built on chain
from the input, so its CID is the order's), takes a request itself with its signed bid (first
come, first served), and once the committed result's challenge window has passed delivers it
(``fulfil``: the Oracle finalizes the order, which pays the provider, and calls the consumer
back with the output)."""

from __future__ import annotations

from typing import Any, Callable

from veracity.errors import VeracityError
from veracity.node.blobs import BlobStore
from veracity.node.state import NodeState


class OracleDesk:
    def __init__(self, oracle: Any, market: Any, blobs: BlobStore, state: NodeState, now: Callable[[], int],
                 log: Callable[[str], None]) -> None:
        self.oracle, self.market, self.blobs, self.state, self.now, self.log = oracle, market, blobs, state, now, log
        self.due: dict[int, int] = {}  # requests committed here -> when to deliver them
        for job in self.state.jobs("committed", "challenged"):  # after a restart
            self.committed(job.order_id)

    def is_client(self, client: str) -> bool:
        return client.lower() == self.oracle.address.lower()

    def fetch_spec(self, oid: int, spec_cid: str) -> None:
        if not self.blobs.has(spec_cid):
            self.blobs.put(self.oracle.spec(oid))

    def take(self, bid: Any) -> str | None:
        """Accept this node's own bid through the Oracle; why not, if another provider was first."""
        try:
            self.oracle.accept(bid)
        except VeracityError as exc:
            return f"the Oracle request went to another provider ({exc})"
        self.log(f"oracle request {bid.order_id}: taken")
        return None

    def committed(self, oid: int) -> None:
        order = self.market.order(oid)
        if self.is_client(order.client):
            self.due[oid] = order.committed_at + order.challenge_window

    def deliver(self) -> None:
        now = self.now()
        for oid, due in list(self.due.items()):
            job = self.state.job(oid)
            if job is None or job.status not in ("committed", "challenged"):  # settled, overturned...
                del self.due[oid]
                continue
            if job.status == "challenged" or now < due:
                continue
            try:
                self.oracle.fulfil(oid, self.blobs.get(job.output_cid))  # type: ignore[arg-type]
                del self.due[oid]
                self.log(f"oracle request {oid}: delivered to its consumer")
            except VeracityError as exc:  # the window restarted after a won dispute, or a block is late
                self.due[oid] = now + 2
                self.log(f"oracle request {oid}: not delivered yet ({exc})")
