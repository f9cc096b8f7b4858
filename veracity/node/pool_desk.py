"""A provider's side of data-pool score orders (``contracts/DataPool.vy``): the DataPool is their
client, a gated one, so the Market pays them only when their output is delivered to the pool
(``DataPool.deliver``), and an output undelivered for the Market's delivery time is voided and the
provider's collateral slashed. So a provider does not wait for the pool's curator: once a score
order's challenge window has passed unchallenged, it delivers the output it committed itself
(the canonical blob of its served output, which the pool checks against the output root). Items
are delivered in any order; the pool scores them in contribution order afterwards."""

from __future__ import annotations

from typing import Any, Callable

from veracity.blobs.store import BlobStore
from veracity.errors import VeracityError
from veracity.exact.outputs import encode_outputs
from veracity.node.state import NodeState


class PoolDesk:
    def __init__(self, pools: Any, market: Any, blobs: BlobStore, state: NodeState, load_job: Callable[[str], Any],
                 now: Callable[[], int], log: Callable[[str], None]) -> None:
        self.pools, self.market, self.blobs, self.state = pools, market, blobs, state
        self.load_job, self.now, self.log = load_job, now, log
        self.due: dict[int, int] = {}  # score orders committed here -> when to deliver them
        for job in self.state.jobs("committed", "challenged"):  # after a restart
            self.committed(job.order_id)

    def committed(self, oid: int) -> None:
        order = self.market.order(oid)
        if order.client.lower() == self.pools.address.lower():
            self.due[oid] = order.committed_at + order.challenge_window

    def deliver(self) -> None:
        now = self.now()
        for oid, due in list(self.due.items()):
            job = self.state.job(oid)
            if job is None or job.status not in ("committed", "challenged") or not (job.spec_cid and job.output_cid):
                del self.due[oid]
                continue
            if job.status == "challenged" or now < due:
                continue
            found = self.pools.order_item(oid)
            if found is None or self.pools.item(*found).state_name != "scoring":  # delivered by someone else
                del self.due[oid]
                continue
            try:
                work = self.load_job(job.spec_cid)
                blob = encode_outputs(work.served_tensors(self.blobs.get(job.output_cid)))
            except (VeracityError, ValueError, OSError) as exc:  # its outputs cannot be read back
                del self.due[oid]
                self.log(f"score order {oid}: cannot be delivered, {exc}")
                continue
            try:
                self.pools.deliver(oid, blob)
                del self.due[oid]
                self.log(f"score order {oid}: delivered to its data pool")
            except VeracityError as exc:  # the window restarted after a won dispute, or a block is late
                self.due[oid] = now + 2
                self.log(f"score order {oid}: not delivered yet ({exc})")
