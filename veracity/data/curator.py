"""The people around a data pool, as I/O shells over ``chain.pools`` and the market's client parts:

- a contributor pushes its blob to every registered node and submits its signed CID
  (``contribute``);
- the pool's curator walks the contributions in order (``Curator.tick``): a blob outside the
  schema, or one no node serves, is rejected with its reason; the rest get a ``score`` order that
  providers bid on (the curator accepts the best bid through the pool, as any client would) and
  validators check; a final result is settled on chain with the job's output, which the curator
  recomputes itself (exact: the committed bits) or, when they differ, reads from its provider;
- a consumer assembles the pool's accepted items into a fine-tuning set, pays the pool, and
  orders the fine-tune (``dataset``, ``buy_and_finetune``).

Everything a tick does is read back from the chain, so a curator that restarts resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from veracity.blobs.transfer import fetch_any, push_all
from veracity.chain.devnet import Deployment
from veracity.chain.pools import DataPoolClient, sign_contribution
from veracity.cid import cid_from_digest, cid_of, digest_of
from veracity.client.jobs import TOKEN, collect_bids, holders, registered
from veracity.client.outputs import served_output
from veracity.data.pools import embedding, score_spec
from veracity.errors import ChainError, InputError, VeracityError
from veracity.exact.outputs import encode_outputs
from veracity.exact.program import program_root
from veracity.market.choice import rank_bids
from veracity.workloads.jobs import Job
from veracity.workloads.score import check_contribution
from veracity.workloads.spec import parse_spec


def contribute(dep: Deployment, key: str, pool: int, blob: bytes, device_key: str | None = None) -> tuple[int, str]:
    """Push ``blob`` to every registered node and submit it to ``pool`` signed by ``key`` (and its
    device's key, for a pool of device data). Returns (its index in the pool, its CID)."""
    check_contribution(blob)
    client = dep.data_pool_client(key)
    who = client.chain.address
    cid = cid_of(blob)
    refused = push_all(holders(dep, key), [blob])
    if len(refused) == len(holders(dep, key)):
        raise VeracityError(f"no node took the contribution's blob: {'; '.join(refused.values()) or 'no node'}")
    sig = sign_contribution(key, dep.chain_id, client.address, pool, digest_of(cid), who)
    dev = sign_contribution(device_key, dep.chain_id, client.address, pool, digest_of(cid), who) if device_key else b""
    return client.contribute(pool, who, digest_of(cid), sig, dev), cid


def contribute_samples(dep: Deployment, key: str, pool: int, samples: list[dict[str, Any]],
                       provenance: dict[str, Any]) -> list[tuple[int, str]]:
    """Contribute a generated set (``workloads.synthesize.samples``), each item with the provenance
    of the job that made it (``workloads.synthesize.provenance``): anyone regenerates it from that
    job and checks it against the committed output root."""
    from veracity.data.pools import contribution_line

    return [contribute(dep, key, pool, contribution_line(s["text"], provenance=provenance)) for s in samples]


def score_job(cid: str, blob: bytes) -> Job:
    """The score job of a contribution: its spec as the pool builds it on chain, and its blob."""
    return Job(parse_spec(score_spec(cid).decode(), "the score spec"), blob)


@dataclass
class Curator:
    """A pool's curator: one ``tick`` advances every contribution it can (see the module)."""

    dep: Deployment
    key: str
    pool: int
    max_price: int = 5 * TOKEN
    bid_wait: float = 15.0
    log: Callable[[str], None] = print
    blobs: dict[int, bytes] = field(default_factory=dict)  # contributions' blobs, by index
    only: Callable[[int], set[str] | None] | None = None  # the providers whose bids an item may take (tests)

    def __post_init__(self) -> None:
        self.client: DataPoolClient = self.dep.data_pool_client(self.key)
        self.chain, _, self.registry, self.market = self.dep.clients(self.key)

    def _nodes(self) -> dict[str, str]:
        return holders(self.dep, self.key)

    def _blob(self, index: int, cid: str) -> bytes | None:
        if index not in self.blobs:
            try:
                self.blobs[index] = fetch_any(cid, self._nodes().values())
            except VeracityError:
                return None
        return self.blobs[index]

    def tick(self) -> bool:
        """One pass over the unsettled contributions; True when every one is settled."""
        info = self.client.pool(self.pool)
        for index in range(info.next_settled, info.contributions):
            item = self.client.item(self.pool, index)
            nxt = index == self.client.pool(self.pool).next_settled
            try:
                if item.state_name == "submitted":
                    self._order(index, cid_from_digest(item.cid), nxt)
                elif item.state_name == "scoring":
                    self._follow(index, item, nxt)
            except VeracityError as exc:
                self.log(f"pool {self.pool} item {index}: {exc}")
        info = self.client.pool(self.pool)
        return info.next_settled == info.contributions

    def run(self, timeout: float = 600, interval: float = 1.0) -> None:
        """Tick until every contribution is settled (or ``timeout`` seconds)."""
        end = time.monotonic() + timeout
        while not self.tick():
            if time.monotonic() > end:
                raise VeracityError(f"pool {self.pool}: contributions still unsettled after {timeout:.0f} s; "
                                    "`veracity data show` lists them")
            time.sleep(interval)

    def _order(self, index: int, cid: str, nxt: bool) -> None:
        blob = self._blob(index, cid)
        why = "no node serves its blob" if blob is None else None
        if blob is not None:
            try:
                job = score_job(cid, blob)
                program = job.posted_program()
            except InputError as exc:
                why = str(exc)
        if why is not None:
            if nxt:
                self.client.reject(self.pool, index, why)
                self.log(f"pool {self.pool} item {index}: rejected ({why})")
            return
        spec = score_spec(cid)
        nodes = registered(self.dep, self.key)
        push_all({a: u for a, (_, u) in nodes.items() if u}, [spec, blob])
        oid = self.client.order_score(self.pool, index, self.max_price, program_root(program), len(program))
        self.log(f"pool {self.pool} item {index}: score order {oid} opened")
        self._accept(oid, index)

    def _accept(self, oid: int, index: int) -> None:
        from veracity.client.jobs import providers

        peers = providers(self.dep, self.key)
        if self.only is not None and (allowed := self.only(index)) is not None:
            peers = {a: u for a, u in peers.items() if a in allowed}
        bids, reasons = collect_bids(self.dep, oid, peers, self.max_price, self.bid_wait, [])
        ranked, refused = rank_bids(bids, self.chain.now(), self.market.order(oid).deadline,
                                    lambda p: self.registry.node(p).reputation)
        for bid in ranked:
            try:
                self.client.accept(bid)
                self.log(f"score order {oid}: provider {bid.provider} at {bid.price / TOKEN:g} VRC")
                return
            except ChainError as exc:
                refused.append(f"{bid.provider}: {exc}")
        self.log(f"score order {oid}: no bid taken ({'; '.join(reasons + refused) or 'none came'}); "
                 "it is ordered again after its deadline")

    def _follow(self, index: int, item: Any, nxt: bool) -> None:
        order = self.market.order(item.order_id)
        state = order.state_name
        if state in ("overturned", "refunded") or (state in ("open", "accepted") and self.chain.now() > order.deadline):
            self.log(f"pool {self.pool} item {index}: score order {item.order_id} {state}: ordering it again")
            self._order(index, cid_from_digest(item.cid), nxt)
            return
        if not nxt or state != "committed" or self.market.fn.challenged(item.order_id).call():
            return
        if self.chain.now() < order.committed_at + order.challenge_window:
            return
        cid = cid_from_digest(item.cid)
        blob = self._blob(index, cid)
        if blob is None:
            return
        output = self._output(score_job(cid, blob), item.order_id, order)
        self.client.settle(self.pool, index, output, self.client.topic(self.pool), self.client.accepted(self.pool))
        done = self.client.item(self.pool, index)
        self.log(f"pool {self.pool} item {index}: settled, score {done.score}")

    def _output(self, job: Job, oid: int, order: Any) -> bytes:
        """The committed output's canonical blob: this curator's own exact run when it gives the
        committed output root, else what the provider serves."""
        mine = job.run("torch")
        if mine.output_root == order.output_cid:
            return encode_outputs(job.served_tensors(mine.outputs))
        url = dict(registered(self.dep, self.key)).get(order.provider, (0, ""))[1]
        _, served = served_output(url, oid)
        return encode_outputs(job.served_tensors(served))


def accepted_items(dep: Deployment, key: str, pool: int) -> list[tuple[int, str, bytes]]:
    """The pool's accepted items in acceptance order: (index, CID, blob), every blob checked."""
    client = dep.data_pool_client(key)
    urls = list(holders(dep, key).values())
    out = []
    for e in client.events(pool):
        if e.name == "Accepted":
            cid = cid_from_digest(client.item(pool, e.args["index"]).cid)
            out.append((e.args["index"], cid, fetch_any(cid, urls)))
    return out


def dataset(dep: Deployment, key: str, pool: int) -> bytes:
    """The pool's accepted items as one JSONL fine-tuning set (labelled lines, in acceptance order)."""
    return b"".join(blob for _, _, blob in accepted_items(dep, key, pool))


def buy(dep: Deployment, key: str, pool: int, amount: int) -> bytes:
    """Pay ``amount`` for the pool's data; returns the dataset bought (its CID is recorded on chain)."""
    data = dataset(dep, key, pool)
    if not data:
        raise InputError(f"pool {pool} has no accepted item to sell yet")
    dep.data_pool_client(key).buy(pool, amount, digest_of(cid_of(data)))
    return data


def embedding_of(job: Job, outputs: bytes) -> bytes:
    """The embedding in a score job's served outputs (JSONL)."""
    return embedding(encode_outputs(job.served_tensors(outputs)))
