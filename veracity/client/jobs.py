"""The client side of a job: upload, order, collect bids, accept, wait, fetch and verify, settle.

Providers and validators are found from the Registry's events (their endpoints); the spec and
inputs (and a start checkpoint) are pushed to every registered node's blob store, providers' and
validators', so a provider that withholds them cannot keep validators from re-executing the job;
bids are read from each provider's ``/bids/{order}`` and checked
locally (signature, price, expiry) before one is accepted on-chain. The output is fetched by the
CID the provider committed, so its bytes are exactly what was committed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from veracity.blobs.transfer import fetch_any, fetch_trace, push_all
from veracity.chain.client import PROVIDER
from veracity.chain.devnet import Deployment
from veracity.chain.events import EventStream
from veracity.cid import cid_of, digest_of
from veracity.client.disputer import CHALLENGER, Disputer
from veracity.client.outputs import OutputAsks, judge_output, served_output
from veracity.errors import ChainError, InputError, VeracityError
from veracity.exact.program import program_root
from veracity.exact.trace import decode_records
from veracity.logs import log
from veracity.market.bids import Bid, bid_signer
from veracity.market.choice import rank_bids
from veracity.workloads.jobs import Job, judged_on_chain
from veracity.workloads.spec import JobSpec

TOKEN = 10**18


class NoBidError(VeracityError):
    """No provider bid on the order; the message lists each provider's reason."""


class MissedDeadlineError(VeracityError):
    """The provider did not commit before the deadline; the escrow came back with its collateral."""

    def __init__(self, message: str, order_id: int = 0, bid: Bid | None = None, bids: list[Bid] | None = None):
        super().__init__(message)
        self.order_id, self.bid, self.bids = order_id, bid, bids or []


@dataclass
class JobOutcome:
    order_id: int
    provider: str
    price: int
    output_cid: str
    trace_root: bytes
    outputs: bytes
    phases: dict[str, float] = field(default_factory=dict)
    bids: list[Bid] = field(default_factory=list)  # every valid bid the client saw


def registered(dep: Deployment, key: str) -> dict[str, tuple[int, str]]:
    """Every registered node (providers and validators): its role and endpoint, from the Registry's events."""
    chain, *_ = dep.clients(key)
    stream = EventStream(chain, {"Registry": dep.registry}, start=0)
    return {e.args["node"]: (int(e.args["role"]), e.args["endpoint"]) for e in stream.poll() if e.name == "Registered"}


def providers(dep: Deployment, key: str) -> dict[str, str]:
    """Registered providers and their endpoints, from the Registry's events."""
    return {a: url for a, (role, url) in registered(dep, key).items() if role == PROVIDER}


def holders(dep: Deployment, key: str) -> dict[str, str]:
    """Every registered node with an endpoint, providers and validators: where a job's blobs go."""
    return {a: url for a, (_, url) in registered(dep, key).items() if url}


def check_orderable(spec: JobSpec, accept_unjudged: bool = False) -> None:
    """Refuse to order a job whose result no referee can overturn on chain, unless the client
    accepts that (``accept_unjudged``): its re-run still checks the result, but a provider that
    commits a wrong one would be paid."""
    if not (accept_unjudged or judged_on_chain(spec)):
        what = "a fine-tune" if spec.kind == "finetune" else f"training {spec.model}"
        raise InputError(f"{what} is checked by re-execution but not yet judged on chain (a wrong result "
                         "could not be overturned, and would be paid): pass --accept-unjudged to order it anyway")


def submit(spec: JobSpec, dep: Deployment, key: str, bid_wait: float = 15, result_timeout: float = 600,
           on_phase: Callable[[str], None] | None = None, only: set[str] | None = None,
           start_blob: bytes | None = None, accept_unjudged: bool = False) -> JobOutcome:
    """Run ``spec`` on the network and return the verified outputs once the order settled.

    ``only`` limits the bids considered to these provider addresses (a client that trusts or
    wants to test particular providers); by default every registered provider may bid. A job no
    referee judges on chain is refused unless ``accept_unjudged`` (``check_orderable``).
    """
    check_orderable(spec, accept_unjudged)
    chain, token, registry, market = dep.clients(key)
    max_price = int(spec.max_price * TOKEN)
    balance = token.balance_of(chain.address)
    if balance < max_price:
        raise InputError(f"the escrow needs {max_price / TOKEN:g} VRC (the spec's max_price) but account "
                         f"{chain.address} holds {balance / TOKEN:g} VRC: fund it (devnet: the faucet) or lower max_price")
    phases: dict[str, float] = {}
    t0 = time.monotonic()

    def phase(name: str) -> None:
        nonlocal t0
        phases[name] = time.monotonic() - t0
        t0 = time.monotonic()
        if on_phase:
            on_phase(name)

    inputs = Path(spec.inputs.path).read_bytes() if spec.inputs.path else None
    nodes = registered(dep, key)
    peers = {a: url for a, (role, url) in nodes.items() if role == PROVIDER}
    others = {a: url for a, (role, url) in nodes.items() if role != PROVIDER and url}  # validators
    if inputs is None and spec.inputs.cid:  # inputs named by CID only: fetch them (every byte checked)
        inputs = _fetch_any([*peers.values(), *others.values()], spec.inputs.cid)
    start_cid = spec.training.start if spec.training is not None else None
    start = None
    if start_cid:  # the checkpoint bytes in hand when they are the named CID, else fetched (checked)
        start = start_blob if start_blob is not None and cid_of(start_blob) == start_cid else \
            _fetch_any([*peers.values(), *others.values()], start_cid)
    if start_cid and start is None:
        raise InputError(f"the start checkpoint {start_cid} is on no registered provider: push it to one "
                         "(it is the output of the work unit before this one) or drop training.start")
    job = Job(spec, inputs, start) if inputs is not None else None
    # the program fixes what each trace record must be, so a dispute can judge inside any record;
    # a dry run over shapes (milliseconds), which also refuses inputs the job cannot take
    program = job.posted_program() if job is not None else []
    doc = spec.model_copy(update={"inputs": spec.inputs.model_copy(
        update={"path": None, "cid": cid_of(inputs) if inputs is not None else spec.inputs.cid})})
    spec_bytes = doc.model_dump_json(exclude_none=True).encode()
    # to every node that takes them (validators re-execute from them, whoever else withholds them);
    # only the providers that hold them may bid
    refused = push_all({**others, **peers}, (spec_bytes, inputs, start))
    if only is not None:
        wanted = {a.lower() for a in only}
        peers = {a: u for a, u in peers.items() if a.lower() in wanted}
    reachable = {a: u for a, u in peers.items() if a not in refused}
    reasons = [f"provider {a}: {refused[a]}" for a in peers if a in refused]
    first_block = chain.w3.eth.block_number + 1
    oid = market.open_order(digest_of(cid_of(spec_bytes)), spec.kind_code, spec.model_id, max_price,
                            chain.now() + spec.deadline, spec.verification.challenge_window,
                            int(spec.verification.spot_check_rate * 10_000),
                            program_root(program) if program else bytes(32), len(program))
    phase("order")
    bids, reasons = collect_bids(dep, oid, reachable, max_price, bid_wait, reasons)
    if not bids:
        market.reclaim(oid)
        why = "; ".join(reasons) or ("none of the chosen providers is registered" if only is not None
                                     else "no provider is registered")
        raise NoBidError(f"no provider bid on order {oid} (escrow refunded): {why}")
    best = accept_best(market, registry, oid, bids)
    phase("match")
    stream = EventStream(chain, {"Market": dep.market}, first_block)
    give_up = time.monotonic() + result_timeout
    order_deadline = market.order(oid).deadline
    committed = None
    while committed is None:
        for ev in stream.poll():
            if ev.args.get("order_id") == oid and ev.name == "ResultCommitted":
                committed = ev
        if committed is not None:
            break
        if chain.now() > order_deadline:
            market.reclaim(oid)
            raise MissedDeadlineError(
                f"order {oid}: provider {best.provider} missed the deadline; the escrow ({best.price / TOKEN:g} VRC) "
                f"was refunded and its collateral ({best.collateral / TOKEN:g} VRC) slashed to you", oid, best, bids)
        if time.monotonic() > give_up:
            raise VeracityError(f"order {oid}: no result within {result_timeout:.0f} s; "
                                f"`veracity job status {oid}` shows it, reclaim after the deadline")
        time.sleep(0.2)
    phase("run")
    out_cid, outputs, wrong = "", b"", None
    try:
        out_cid, outputs = served_output(reachable[best.provider], oid)
    except VeracityError as exc:
        wrong = str(exc)
    disputer = None  # this client's own game, when its re-run contradicts a trace the provider withholds
    digests: list[bytes] = []  # the committed output digests
    if job is not None:  # the committed output, and the committed trace's: else proven wrong (or challenged)
        try:
            digests = market.committed_outputs(oid)
        except VeracityError as exc:
            wrong = str(exc)
        else:
            wrong, disputer = _served_wrong(dep, key, reachable[best.provider], oid, job, program,
                                            outputs if wrong is None else None, digests,
                                            bytes.fromhex(committed.args["trace_root"][2:]), wrong)
    asks = None  # chunks of the committed outputs asked for on chain, when none readable were served
    if wrong and disputer is None and job is not None and program and market.order(oid).state_name == "committed":
        try:
            asks = OutputAsks(dep.disputes_client(key).outputs(), oid, program)
            log("client", f"order {oid}: {wrong}; asked for {len(asks.pending)} of its output chunks on chain")
        except VeracityError as exc:
            log("client", f"order {oid}: could not ask for its output chunks on chain: {exc}")
    phase("commit")
    while True:  # wait out the challenge window, and any dispute (which restarts the window if it fails)
        order = market.order(oid)
        if order.state_name == "overturned" and asks is not None and asks.withheld:
            raise VeracityError(f"order {oid}: provider {best.provider} withheld its outputs (asked for on "
                                f"chain, it did not serve them); it was slashed and your payment "
                                f"({best.price / TOKEN:g} VRC) refunded")
        if order.state_name == "overturned":
            raise VeracityError(f"order {oid}: a dispute found provider {best.provider}'s result wrong; your "
                                f"payment ({best.price / TOKEN:g} VRC) was refunded and the output discarded")
        if order.state_name == "refunded":
            raise VeracityError(f"order {oid}: a dispute over the result ended undecided; your payment "
                                f"({best.price / TOKEN:g} VRC) was refunded")
        if asks is not None and asks.open():  # served, or claimed once its deadline passed
            asks.tick(chain.now())
            if asks.open() or asks.withheld:
                if time.monotonic() > give_up:
                    raise VeracityError(f"order {oid}: its output chunks are still asked for; "
                                        f"`veracity job status {oid}` follows it")
                time.sleep(0.5)
                continue
        if market.fn.challenged(oid).call():
            if disputer is not None:
                disputer.tick(chain.now())
            if time.monotonic() > give_up:
                raise VeracityError(f"order {oid}: its result is still disputed; `veracity job status {oid}` "
                                    "follows it")
            time.sleep(0.5)
            continue
        wait = order.committed_at + order.challenge_window - chain.now()
        if wait <= 0:
            break
        time.sleep(min(wait + 1, 5.0))
    if wrong and asks is not None and job is not None:  # the chunks asked for were served: the data is
        mine = job.run("numpy")                       # available, and this exact re-run gives it
        if digests and mine.output_digests == digests:
            out_cid, outputs, wrong = cid_of(mine.outputs), mine.outputs, None
    if wrong:  # the trace stood, but what was served is not what it says: this client does not finalize
        raise VeracityError(f"order {oid}: provider {best.provider} served outputs that are not its committed "
                            f"result ({wrong}); they were discarded. Its committed trace stood through the "
                            f"challenge window; fetch the outputs again or run the job yourself")
    try:
        market.finalize(oid)
    except ChainError:  # the provider may finalize its own result first (anyone may)
        if market.order(oid).state_name != "finalized":
            raise
    phase("settle")
    return JobOutcome(oid, best.provider, best.price, out_cid, bytes.fromhex(committed.args["trace_root"][2:]),
                      outputs, phases, bids)


def _fetch_any(urls: list[str], cid: str) -> bytes | None:
    try:
        return fetch_any(cid, urls)
    except VeracityError:
        return None


def _served_wrong(dep: Deployment, key: str, url: str, oid: int, job: Job, program: list[Any],
                  outputs: bytes | None, committed: list[bytes], trace_root: bytes,
                  unserved: str | None) -> tuple[str | None, Disputer | None]:
    """What is wrong with a result (None: nothing), and this client's game when it started one.
    The committed outputs must be the committed trace's (the provider's trace, or this client's
    own re-run when the provider does not serve it: exact, the same bits when the trace is
    honest) and the served outputs the committed ones. A committed output that is not its trace
    record is proven on chain (the provider is slashed, the client refunded and paid the
    challenger's share); a withheld trace that the client's re-run contradicts is challenged with
    the re-run's root, and the game played through (the game makes the provider reveal it)."""
    try:
        records = fetch_trace(url, oid, trace_root)
    except VeracityError as exc:
        mine = job.run("numpy")
        if mine.trace_root != trace_root:
            return _challenge(dep, key, oid, job, mine, f"{exc}; this client's re-run gives another trace root")
        records = decode_records(mine.trace)
    verdict = judge_output(job, program, records, committed, outputs, dep.disputes_client(key), oid)
    if verdict.ok:
        return unserved, None
    return verdict.reason, None


def _challenge(dep: Deployment, key: str, oid: int, job: Job, mine: Any, why: str) -> tuple[str, Disputer | None]:
    """Challenge ``oid`` with this client's re-run (``mine``) and join the game (played by the
    caller's wait loop), or say why that could not be done."""
    if not job.disputable:
        return f"{why} (this job's steps are not judged on chain yet: nothing was challenged)", None
    disputes = dep.disputes_client(key)
    disputer = Disputer(CHALLENGER, disputes, dep.referees, lambda m: log("client", m))
    try:
        disputes.challenge(oid, mine.trace_root)
        disputer.join(oid, decode_records(mine.trace), job, dep.clients(key)[3].program(oid))
    except VeracityError as exc:
        return f"{why}; could not challenge it: {exc}", None
    return f"{why}; challenged with this client's bond", disputer


def unit_specs(spec: JobSpec, units: int) -> list[JobSpec]:
    """A train job split into ``units`` work units of (nearly) equal steps, each escrowing its share
    of the max price; each unit's ``training.start`` is filled in as the one before it settles."""
    if spec.training is None:
        raise InputError("only a train job splits into work units (this spec has no training section)")
    steps = spec.training.steps
    if not 1 <= units <= steps:
        raise InputError(f"a job of {steps} steps splits into 1 to {steps} units, not {units}")
    sizes = [steps // units + (i < steps % units) for i in range(units)]
    return [spec.model_copy(update={"max_price": spec.max_price * n / steps,
                                    "training": spec.training.model_copy(update={"steps": n})}) for n in sizes]


def submit_units(spec: JobSpec, dep: Deployment, key: str, units: int, rotate: list[str] | None = None,
                 on_unit: Callable[[int, JobOutcome], None] | None = None, **kw: Any) -> list[JobOutcome]:
    """Run a train job as ``units`` work units, one order each, each starting from the checkpoint
    the unit before it committed; ``rotate`` sends unit i only to provider ``rotate[i % len]``
    (by default each unit goes to the best bid). The last outcome's output is the job's checkpoint:
    the same bits as the unsplit job's."""
    done: list[JobOutcome] = []
    start = spec.training.start if spec.training is not None else None
    blob: bytes | None = None  # the previous unit's checkpoint, already fetched and checked
    only_all = kw.pop("only", None)
    for i, unit in enumerate(unit_specs(spec, units)):
        unit = unit.model_copy(update={"training": unit.training.model_copy(update={"start": start})})  # type: ignore[union-attr]
        only = {rotate[i % len(rotate)]} if rotate else only_all
        out = submit(unit, dep, key, only=only, start_blob=blob, **kw)
        done.append(out)
        start, blob = out.output_cid, out.outputs
        if on_unit:
            on_unit(i, out)
    return done


def accept_best(market: Any, registry: Any, oid: int, bids: list[Bid]) -> Bid:
    """Accept the best bid by ``market.choice.rank_bids`` (bids the Market would refuse, for too
    little collateral, expired, or a run time past the deadline, are skipped; the rest go by price
    net of a tenth of their collateral, then reputation, then chance); if the contract still refuses
    one (the provider's stake is now locked elsewhere, time ran out), try the next."""
    ranked, refusals = rank_bids(bids, market.chain.now(), market.order(oid).deadline,
                                 lambda provider: registry.node(provider).reputation)
    for bid in ranked:
        try:
            market.accept_bid(bid)
            return bid
        except ChainError as exc:
            refusals.append(f"{bid.provider}: {exc}")
    market.reclaim(oid)
    raise NoBidError(f"order {oid}: no bid could be accepted (escrow refunded): {'; '.join(refusals)}")


def collect_bids(dep: Deployment, oid: int, peers: dict[str, str], max_price: int, wait: float,
                  reasons: list[str]) -> tuple[list[Bid], list[str]]:
    bids: list[Bid] = []
    pending = dict(peers)
    end = time.monotonic() + wait
    while pending and time.monotonic() < end:
        for addr, url in list(pending.items()):
            try:
                resp = httpx.get(f"{url.rstrip('/')}/bids/{oid}", timeout=5)
            except httpx.HTTPError as exc:
                reasons.append(f"provider {addr} is unreachable at {url} ({exc})")
                del pending[addr]
                continue
            if resp.status_code == 404:
                continue  # not decided yet
            del pending[addr]
            if resp.status_code == 409:
                reasons.append(resp.json().get("detail", "declined"))
                continue
            try:
                bid = Bid.model_validate(resp.json())
            except ValueError:
                reasons.append(f"provider {addr} sent a malformed bid")
                continue
            if bid.order_id != oid or bid.provider != addr or bid_signer(bid, dep.chain_id, dep.market) != addr:
                reasons.append(f"provider {addr} sent an invalid bid")
            elif bid.price > max_price:
                reasons.append(f"provider {addr} bid above the max price")
            else:
                bids.append(bid)
        if pending:
            time.sleep(0.2)
    reasons += [f"provider {a} did not answer in {wait:.0f} s" for a in pending]
    return bids, reasons
