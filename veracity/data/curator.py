"""The people around a data pool, as I/O shells over ``chain.pools`` and the market's client parts:

- a contributor commits to its contribution, reveals it with its signature over the CID and the
  score job's program (which it computes from its own blob), and only then pushes the blob to
  every registered node (``contribute``);
- the pool's curator walks the contributions (``Curator.tick``): a blob outside the schema, one no
  node serves, or one whose signed program is not its score job's, is rejected with its reason;
  the rest get a ``score`` order that providers bid on (the curator accepts the best bid through
  the pool, as any client would) and validators check. The curator re-runs each committed result
  at once (exact: the committed bits) and challenges one that differs; a final one is delivered
  (by its provider, or the curator) and settled on chain in contribution order;
- a consumer assembles the pool's accepted items into a fine-tuning set, pays the pool, and
  orders the fine-tune (``dataset``, ``buy_and_finetune``).

Everything a tick does is read back from the chain, so a curator that restarts resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from eth_utils import keccak

from veracity.blobs.transfer import fetch_any, push_all
from veracity.chain.devnet import Deployment
from veracity.chain.pools import DataPoolClient, commitment, sign_contribution
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
    """Contribute ``blob`` to ``pool`` as ``key`` (and its device's key, for a pool of device data):
    commit, reveal with the signed CID and score program (a later block), then push the blob to
    every registered node. Returns (its index in the pool, its CID)."""
    import secrets

    check_contribution(blob)
    client = dep.data_pool_client(key)
    who = client.chain.address
    cid = cid_of(blob)
    posted = score_job(cid, blob).posted_program()
    program = (program_root(posted), len(posted))
    salt = secrets.token_bytes(32)
    client.commit(pool, commitment(digest_of(cid), who, salt))  # mined before the reveal below is sent
    sig = sign_contribution(key, dep.chain_id, client.address, pool, digest_of(cid), who, program)
    dev = sign_contribution(device_key, dep.chain_id, client.address, pool, digest_of(cid), who, program) \
        if device_key else b""
    index = client.contribute(pool, who, digest_of(cid), salt, program, sig, dev)
    nodes = holders(dep, key)
    refused = push_all(nodes, [blob])  # only now: nobody could claim it from a node's store first
    if nodes and len(refused) == len(nodes):
        raise VeracityError(f"item {index} is on chain but no node took its blob ({'; '.join(refused.values())}): "
                            "push it again, or the curator rejects it")
    return index, cid


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
    max_orders: int = 3  # score orders without a taker before an item is rejected
    orders: dict[int, int] = field(default_factory=dict)  # score orders opened, by item
    checked: dict[int, bytes | None] = field(default_factory=dict)  # a committed order -> the output blob it gave here
    games: dict[int, Any] = field(default_factory=dict)  # this curator's challenges, by order

    def __post_init__(self) -> None:
        self.chain, token, self.registry, self.market = self.dep.clients(self.key)
        if self.dep.data_pool is None:
            raise ChainError("this deployment has no DataPool contract: redeploy it")
        self.client = DataPoolClient(self.chain, self.dep.data_pool, token)  # one signer, one nonce

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
        for oid, game in list(self.games.items()):
            game.tick(self.chain.now())
            if not self.market.fn.challenged(oid).call():
                del self.games[oid]
        info = self.client.pool(self.pool)
        for index in range(info.next_settled, info.contributions):
            item = self.client.item(self.pool, index)
            nxt = index == self.client.pool(self.pool).next_settled
            try:
                if item.state_name == "submitted":
                    self._order(index, item, nxt)
                elif item.state_name == "scoring":
                    self._follow(index, item, nxt)
                elif item.state_name == "delivered" and nxt:
                    self._settle(index, item)
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

    def _why_not(self, index: int, item: Any) -> str | None:
        """Why a contribution cannot be scored (None: it can): no node serves its blob, the blob
        breaks the schema, or the program its contributor signed is not its score job's."""
        cid = cid_from_digest(item.cid)
        blob = self._blob(index, cid)
        if blob is None:
            return "no node serves its blob"
        try:
            program = score_job(cid, blob).posted_program()
        except InputError as exc:
            return str(exc)
        if (program_root(program), len(program)) != (item.program_root, item.program_length):
            return "the program it signed is not its score job's"
        return None

    def _order(self, index: int, item: Any, nxt: bool) -> None:
        why = self._why_not(index, item)
        if why is None and self.orders.get(index, 0) >= self.max_orders:
            why = f"no provider took its score order ({self.max_orders} tries)"
        if why is not None:
            if nxt:
                self.client.reject(self.pool, index, why)
                self.log(f"pool {self.pool} item {index}: rejected ({why})")
            return
        cid = cid_from_digest(item.cid)
        nodes = registered(self.dep, self.key)
        push_all({a: u for a, (_, u) in nodes.items() if u}, [score_spec(cid), self.blobs[index]])
        oid = self.client.order_score(self.pool, index, self.max_price)
        self.orders[index] = self.orders.get(index, 0) + 1
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
        oid = item.order_id
        order = self.market.order(oid)
        state = order.state_name
        if state in ("overturned", "refunded") or (state in ("open", "accepted") and self.chain.now() > order.deadline):
            self.log(f"pool {self.pool} item {index}: score order {oid} {state}: ordering it again")
            self._order(index, item, nxt)
            return
        if state != "committed":
            return
        if oid not in self.checked:  # re-run it at once, while it can still be challenged
            self.checked[oid] = self._check(index, item, order)
        if self.market.fn.challenged(oid).call() or self.chain.now() < order.committed_at + order.challenge_window:
            return
        if (blob := self.checked[oid]) is not None:
            self.client.deliver(oid, blob)
            self.log(f"pool {self.pool} item {index}: score order {oid} delivered")

    def _check(self, index: int, item: Any, order: Any) -> bytes | None:
        """This curator's exact run of a committed score job: its output blob when it gives the
        committed output root; else it challenges the result (and plays the game) and gives None."""
        from veracity.client.jobs import _challenge

        cid = cid_from_digest(item.cid)
        blob = self._blob(index, cid)
        if blob is None:
            return None  # nothing to check it with: its provider delivers it
        job = score_job(cid, blob)
        mine = job.run("torch")
        if mine.output_root == order.output_cid:
            return encode_outputs(job.served_tensors(mine.outputs))
        why, game = _challenge(self.dep, self.key, item.order_id, job, mine,
                               "its committed output is not this curator's exact run")
        if game is not None:
            self.games[item.order_id] = game
        self.log(f"pool {self.pool} item {index}: score order {item.order_id}: {why}")
        return None

    def _settle(self, index: int, item: Any) -> None:
        cid = cid_from_digest(item.cid)
        blob = self._blob(index, cid)
        if blob is None:
            return
        job = score_job(cid, blob)
        checked = self.checked.get(item.order_id)  # this curator's run when it followed the order (else run it now)
        emb = embedding(checked if checked is not None else encode_outputs(job.served_tensors(job.run("torch").outputs)))
        if keccak(emb) != bytes(self.client.fn.delivered(self.pool, index).call()):  # what was delivered: its provider's
            url = dict(registered(self.dep, self.key)).get(self.market.order(item.order_id).provider, (0, ""))[1]
            emb = embedding(encode_outputs(job.served_tensors(served_output(url, item.order_id)[1])))
        self.client.settle(self.pool, index, emb, self.client.topic(self.pool), self.client.accepted(self.pool))
        self.log(f"pool {self.pool} item {index}: settled, score {self.client.item(self.pool, index).score}")


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
