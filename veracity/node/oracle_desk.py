"""A provider's side of Oracle requests (``contracts/Oracle.vy``): the Oracle is the client of
their Market orders, so the provider reads each request's spec from the Oracle (built on chain
from the input, so its CID is the order's), takes a request itself with its signed bid (first
come, first served), and once the committed result's challenge window has passed delivers it
(``fulfil``: the Oracle finalizes the order, which pays the provider, checks the output against
the committed output root and calls the consumer back with it).

What ``fulfil`` carries is the job's canonical output blob (``exact.outputs``): its output
tensors, each a header and its big-endian integers, which the Oracle hashes to the output root
the provider committed. It carries at most ``MAX_OUTPUT`` bytes (and ``MAX_OUTPUTS`` tensors), and
an undelivered result is never paid (the provider's collateral is slashed to the consumer), so a
provider takes only a request whose output fits (``undeliverable``): the job's program fixes
every output tensor's dtype and dims, hence the blob's exact size, with no arithmetic."""

from __future__ import annotations

from typing import Any, Callable

from veracity.blobs.store import BlobStore
from veracity.errors import ChainError, InputError, VeracityError
from veracity.exact.outputs import ORACLE_MAX_OUTPUT, encode_outputs, undeliverable_shapes
from veracity.exact.program import output_records
from veracity.node.state import NodeState
from veracity.workloads.jobs import Job, job_from_blobs

__all__ = ["ORACLE_MAX_OUTPUT", "OracleDesk", "output_blob", "output_shapes", "undeliverable"]


def output_shapes(job: Job, model: Any) -> list[tuple[int, tuple[int, ...]]]:
    """The (dtype code, dims) of an ``infer`` job's output tensors, in output order: from its
    program (a shape-only dry run)."""
    if job.spec.kind != "infer":
        raise InputError(f"an Oracle request is an infer job, not {job.spec.kind}")
    program = job.program(model)
    return [(program[i].dtype, tuple(program[i].dims)) for i in output_records(program)]


def undeliverable(job: Job, model: Any, limit: int = ORACLE_MAX_OUTPUT) -> str | None:
    """Why the job's output could not go through ``fulfil``, or None if it can. Exact, and cheap:
    the program gives the canonical output blob's size (``exact.outputs.encoded_size``)."""
    return undeliverable_shapes(output_shapes(job, model), limit)


def output_blob(job: Job, outputs_jsonl: bytes, model: Any = None) -> bytes:
    """The canonical output blob ``fulfil`` carries for an ``infer`` job whose served output JSONL
    is ``outputs_jsonl``: its integers read back (``unpresent``) and cut into the program's output
    tensors (``infer.served_tensors``). InputError when they cannot be read as the job's outputs."""
    from veracity.workloads.infer import served_tensors

    if job.spec.kind != "infer":
        raise InputError(f"an Oracle request is an infer job, not {job.spec.kind}")
    try:
        return encode_outputs(served_tensors(job.model_name, job.inputs, outputs_jsonl, model, job.batch))
    except ValueError as exc:
        raise InputError(f"the outputs cannot be encoded for the Oracle ({exc})") from None


def _no_blob(cid: str, what: str) -> bytes:
    raise InputError(f"an Oracle spec holds its input inline; it names {what} {cid}")


class OracleDesk:
    def __init__(self, oracle: Any, market: Any, blobs: BlobStore, state: NodeState, now: Callable[[], int],
                 log: Callable[[str], None]) -> None:
        self.oracle, self.market, self.blobs, self.state, self.now, self.log = oracle, market, blobs, state, now, log
        self.due: dict[int, int] = {}  # requests committed here -> when to deliver them
        self.blobs_of: dict[int, bytes] = {}  # requests due -> their canonical output blobs
        for job in self.state.jobs("committed", "challenged"):  # after a restart
            self.committed(job.order_id)

    def is_client(self, client: str) -> bool:
        return client.lower() == self.oracle.address.lower()

    def job(self, oid: int) -> Job:
        """Request ``oid``'s job, from the spec the Oracle built (its input inline)."""
        return job_from_blobs(self.oracle.spec(oid), _no_blob, f"oracle request {oid}'s spec")

    def blob(self, oid: int, output_cid: str) -> bytes:
        """What ``fulfil`` carries for request ``oid``: the canonical output blob of the output
        JSONL this node served (blob ``output_cid``), made once."""
        if oid not in self.blobs_of:
            job = self.job(oid)
            self.blobs_of[oid] = output_blob(job, self.blobs.get(output_cid), job.model())
        return self.blobs_of[oid]

    def fetch_spec(self, oid: int, spec_cid: str) -> None:
        if not self.blobs.has(spec_cid):
            self.blobs.put(self.oracle.spec(oid))

    def undeliverable(self, oid: int) -> str | None:
        """Why request ``oid``'s output could not be delivered (too long for ``fulfil``), or None."""
        try:
            job = self.job(oid)
            return undeliverable(job, job.model())
        except VeracityError as exc:
            return f"its output cannot be sized ({exc})"

    def take(self, bid: Any) -> str | None:
        """Accept this node's own bid through the Oracle; why not: its output would be too long to
        deliver (checked first: an undelivered result is slashed), or another provider was first."""
        if why := self.undeliverable(bid.order_id):
            self.log(f"oracle request {bid.order_id}: not taken, {why}")
            return why
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
                self.blobs_of.pop(oid, None)
                continue
            if job.status == "challenged" or now < due:
                continue
            try:
                blob = self.blob(oid, job.output_cid)  # type: ignore[arg-type]
            except ChainError as exc:  # reading the spec: tried again
                self.due[oid] = now + 2
                self.log(f"oracle request {oid}: not delivered yet ({exc})")
                continue
            except (VeracityError, ValueError, OSError) as exc:  # its outputs cannot be read back
                del self.due[oid]
                self.log(f"oracle request {oid}: cannot be delivered, {exc}")
                continue
            try:
                self.oracle.fulfil(oid, blob)
                del self.due[oid]
                self.blobs_of.pop(oid, None)
                self.log(f"oracle request {oid}: delivered to its consumer")
            except VeracityError as exc:  # the window restarted after a won dispute, or a block is late
                self.due[oid] = now + 2
                self.log(f"oracle request {oid}: not delivered yet ({exc})")
