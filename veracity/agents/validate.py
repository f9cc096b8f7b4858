"""A validator's side of the ``Validation`` contract (``veracity agent validate``): for each request
addressed to it, fetch the run record the request URI names, check that it is the record the
request committed to, verify every receipt in it (``agents.trace.check_run``) and answer.

**The request hash is keccak-256 of the record's bytes** (the JSONL file exactly as served), as
ERC-8004's tools compute it ("requestHash MUST be keccak256 of the content at requestUri") and as
the contract's response hashes are; ``request_hash`` computes it and ``request_validation`` makes a
request with it. (The record's own hashes, of prompts and outputs, are SHA-256: they are the run
record's format, not the contract's.)

**The answer**: 100 when every receipt is verified (tag ``verified:final`` once every window is
finalized, ``verified:soft`` while some window is still in its challenge window and could be
overturned), 0 when any receipt failed (a forged or altered receipt, an answer its committed
window does not hold, a window a dispute overturned or that was never committed: tag
``failed:receipt``), when the run has no receipts (``failed:no-receipts``), when the bytes at the
URI are not the ones requested (``failed:hash``) or not a run record (``failed:record``). No
answer while some window is not committed yet (retried later). The response URI is a ``data:``
URI holding the reason in words, and the response hash its keccak-256, so the evidence is on
chain in the answer's event; except that **a pass's response hash attests the run's work by
agent** (``work_split``: each agent's verified model calls, the collective's own and each
member's it called; ``chain.agents.split_hash``), which the ``Collective`` contract pays a run's
price by, and its URI ends with the split in words (``split 3=2,7=1``: ``read_split``).

**A soft pass is watched**: ``due`` says a request needs a look while it is unanswered or its
answer is ``verified:soft``; the validator answers again when the verdict changes (0 if a
dispute overturns a window after the pass, ``verified:final`` once every window is final). The
contract lets a later answer replace an earlier one, and lets the score go down for this reason.

The judging is pure (``judge``, ``answer_for``); ``validate_pass`` is the thin shell that reads
the chain, fetches and answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote, unquote, urlparse

from eth_utils import keccak

from veracity.agents.record import RunRecord, parse_record
from veracity.chain.agents import split_hash
from veracity.errors import InputError, VeracityError

if TYPE_CHECKING:
    from veracity.agents.trace import RunCheck
    from veracity.chain.agents import AgentRegistryClient, ValidationClient, ValidationInfo
    from veracity.chain.devnet import Deployment

MAX_RECORD_BYTES = 16 * 2**20  # a run record fetched, at most
MAX_URI = 256  # the Validation contract's request and response URIs, at most (bytes)
MAX_TAG = 32  # its tags
FETCH_TIMEOUT_S = 10.0

VERIFIED_FINAL = "verified:final"  # every receipt verified, every window finalized
VERIFIED_SOFT = "verified:soft"  # every receipt verified, some window still in its challenge window
FAILED_RECEIPT = "failed:receipt"
FAILED_NO_RECEIPTS = "failed:no-receipts"
FAILED_HASH = "failed:hash"
FAILED_RECORD = "failed:record"


def request_hash(data: bytes) -> bytes:
    """A validation request's hash: keccak-256 of the run record's bytes (the JSONL file as served)."""
    return keccak(data)


def request_validation(val: ValidationClient, validator: str, agent_id: int, uri: str, data: bytes) -> bytes:
    """Ask ``validator`` to check the run whose record (``data``, the bytes served at ``uri``) agent
    ``agent_id`` made (as its owner or an operator); the request's hash."""
    if len(uri.encode("utf-8")) > MAX_URI:
        raise InputError(f"the request URI is {len(uri.encode('utf-8'))} bytes; the contract takes at most {MAX_URI}")
    h = request_hash(data)
    val.request(validator, agent_id, uri, h)
    return h


@dataclass(frozen=True)
class Answer:
    score: int  # 0 (failed) to 100 (verified)
    tag: str  # VERIFIED_FINAL, VERIFIED_SOFT or one of the FAILED_ tags
    reason: str  # in words (the response URI holds it)
    split: tuple[list[int], list[int]] | None = None  # a pass: (agent ids, their verified model calls)


def work_split(record: RunRecord, agent_id: int) -> tuple[list[int], list[int]]:
    """The run's verified work by agent, as a validator that passed it attests it (its answer's
    response hash: ``chain.agents.split_hash``) and the Collective pays by: (agent ids ascending,
    each one's model calls). The run's own calls (its ``chat`` events and its tools' receipts) are
    agent ``agent_id``'s; those of another agent it called (a ``tool`` event with a ``member``)
    are that member's, or no one's when its card named no agent id. The record is the
    collective's word for who made which call: receipts do not name the agent that asked."""
    work: dict[int, int] = {}
    for e in record.events:
        if e["event"] == "chat":
            work[agent_id] = work.get(agent_id, 0) + 1
        elif e["event"] == "tool" and e.get("receipts"):
            who = e["member"] if "member" in e else agent_id
            if isinstance(who, int) and not isinstance(who, bool) and 0 < who < 2**256:
                work[who] = work.get(who, 0) + len(e["receipts"])
    ids = sorted(work)
    return ids, [work[i] for i in ids]


def known_split(split: tuple[list[int], list[int]], exists: Callable[[int], bool]
                ) -> tuple[list[int], list[int]]:
    """``split`` without the agents the AgentRegistry does not hold (``exists``: a member's card can
    name any id; paying one that does not exist would block the payment for everyone): their work
    earns no one, as a card naming no agent."""
    kept = [(i, w) for i, w in zip(*split) if exists(i)]
    return [i for i, _ in kept], [w for _, w in kept]


def split_text(split: tuple[list[int], list[int]]) -> str:
    """A split as a pass's response URI says it (``read_split`` reads it back): ``split 3=2,7=1``."""
    return "split " + ",".join(f"{i}={w}" for i, w in zip(*split))


def read_split(text: str) -> tuple[list[int], list[int]] | None:
    m = re.search(r"split (\d+=\d+(?:,\d+=\d+)*)", unquote(text))
    if m is None:
        return None
    pairs = [tuple(int(x) for x in kv.split("=")) for kv in m.group(1).split(",")]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def answer_for(record: RunRecord, check: RunCheck, agent_id: int = 0,
               exists: Callable[[int], bool] = lambda agent: True) -> Answer | None:
    """The answer to a request for a run whose receipts were checked (the run of agent
    ``agent_id``): None while some window is not committed yet (answer later). A pass carries the
    run's work by agent (``work_split``), of the agents the registry holds (``exists``:
    ``known_split``)."""
    n = len(check.checks)
    if not n:
        return Answer(0, FAILED_NO_RECEIPTS, "the run has no receipts: none of its model calls can be checked")
    seen: dict[tuple[object, object], int] = {}
    for i, r in enumerate(record.receipts):  # a call counted twice would earn twice in the split
        key = (r.get("lease"), r.get("index")) if isinstance(r, dict) else (None, i)
        if key in seen:
            return Answer(0, FAILED_RECEIPT, f"receipt {i + 1} of {n} (lease {key[0]} #{key[1]}) is receipt "
                                             f"{seen[key] + 1} again: each model call counts once")
        seen[key] = i
    bad = next((i for i, c in enumerate(check.checks) if c.verdict == "failed"), None)
    if bad is not None:
        r = record.receipts[bad]
        where = f"lease {r.get('lease')} #{r.get('index')}" if isinstance(r, dict) else "not an object"
        return Answer(0, FAILED_RECEIPT, f"receipt {bad + 1} of {n} ({where}) failed: {check.checks[bad].reason}")
    if any(c.verdict != "verified" for c in check.checks):  # pending: its window is not committed yet
        return None
    split = known_split(work_split(record, agent_id), exists)
    if all(c.facts.get("state") == "finalized" for c in check.checks):
        return Answer(100, VERIFIED_FINAL, f"all {n} receipts verified; every window is finalized; {split_text(split)}",
                      split)
    return Answer(100, VERIFIED_SOFT, f"all {n} receipts verified; some windows are still in their challenge window; "
                                      f"{split_text(split)}", split)


def judge(data: bytes, expected: bytes, check: Callable[[RunRecord], RunCheck], source: str = "the record",
          agent_id: int = 0, exists: Callable[[int], bool] = lambda agent: True) -> Answer | None:
    """The answer to the request ``expected`` (its hash) for the bytes fetched from its URI:
    ``check`` verifies a record's receipts (``check_run`` against a deployment)."""
    got = request_hash(data)
    if got != expected:
        return Answer(0, FAILED_HASH, f"{source} hashes to 0x{got.hex()} (keccak-256), not the request hash "
                                      f"0x{expected.hex()}: it is not the record that was requested")
    try:
        record = parse_record(data, source)
    except InputError as exc:
        return Answer(0, FAILED_RECORD, str(exc))
    return answer_for(record, check(record), agent_id, exists)


def response_uri(reason: str) -> tuple[str, bytes]:
    """The response URI (a ``data:`` URI holding ``reason``, cut with an ellipsis to what the
    contract takes) and its hash (keccak-256 of the text it holds)."""
    def encoded(text: str) -> str:
        return "data:," + quote(text, safe=",;:/()'")

    text = reason
    if len(encoded(text)) > MAX_URI:
        while text and len(encoded(text + "…")) > MAX_URI:
            text = text[:-1]
        text = text.rstrip() + "…"
    return encoded(text), keccak(text.encode("utf-8"))


def due(info: ValidationInfo) -> bool:
    """Whether a request needs a look: unanswered, or passed while a window could still be overturned."""
    return info.pending or info.tag == VERIFIED_SOFT


def changed(info: ValidationInfo, answer: Answer) -> bool:
    """Whether ``answer`` says something the chain does not hold yet (an answer costs a transaction)."""
    return info.pending or (info.response, info.tag) != (answer.score, answer.tag)


# the shell: fetch, check, answer -----------------------------------------------------------------

class FetchError(VeracityError):
    """A request's URI could not be read (the validator tries again later)."""


def fetch_uri(uri: str, limit: int = MAX_RECORD_BYTES, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The bytes at ``uri``: ``http(s)://`` or ``file://`` (a path on this machine), at most
    ``limit``; FetchError that says why not."""
    import httpx

    parts = urlparse(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"{uri} names a file on another machine ({parts.netloc})")
        path = Path(unquote(parts.path))
        if not path.is_file():
            raise FetchError(f"no file at {path}")
        if path.stat().st_size > limit:
            raise FetchError(f"{path} is over {limit} bytes: too large")
        return path.read_bytes()
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"cannot read {uri!r}: only http(s):// and file:// URIs are fetched")
    try:
        with httpx.stream("GET", uri, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise FetchError(f"{uri} answered {resp.status_code}")
            data = b""
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > limit:
                    raise FetchError(f"{uri} is over {limit} bytes: too large")
            return data
    except httpx.HTTPError as exc:
        raise FetchError(f"{uri} did not answer ({type(exc).__name__})") from None


@dataclass(frozen=True)
class Outcome:
    """What the validator did with one request addressed to it."""

    request_hash: bytes
    agent_id: int
    uri: str
    status: str  # answered, unchanged, pending, unreachable, done
    score: int | None  # the answer on chain after this pass (None: unanswered)
    tag: str
    note: str

    def to_json(self) -> dict[str, object]:
        return {"request_hash": "0x" + self.request_hash.hex(), "agent_id": self.agent_id, "uri": self.uri,
                "status": self.status, "score": self.score, "tag": self.tag, "note": self.note}


def _exists(reg: "AgentRegistryClient", agent_id: int) -> bool:
    try:
        reg.owner_of(agent_id)
    except VeracityError:  # the registry's "no such agent"
        return False
    return True


def validate_pass(dep: Deployment, key: str, uris: dict[bytes, str] | None = None) -> list[Outcome]:
    """One look at every request addressed to the account of ``key``: each one due is fetched,
    judged and answered when the answer changes. ``uris`` caches the request URIs between passes."""
    from veracity.agents.trace import check_run

    reg, _, val = dep.agent_clients(key)
    me = val.chain.address
    uris = {} if uris is None else uris
    out = []
    for h in val.validator_requests(me):
        info = val.status(h)
        assert info is not None  # listed by the contract: it exists
        if h not in uris:
            uris.update(val.request_uris(me))
        uri = uris.get(h, "")
        shown = None if info.pending else info.response
        if not due(info):
            out.append(Outcome(h, info.agent_id, uri, "done", shown, info.tag, "answered before"))
            continue
        try:
            data = fetch_uri(uri)
        except FetchError as exc:
            out.append(Outcome(h, info.agent_id, uri, "unreachable", shown, info.tag, f"{exc}; will try again"))
            continue
        answer = judge(data, h, lambda record: check_run(record, dep, key), uri, info.agent_id,
                       lambda agent: _exists(reg, agent))
        if answer is None:
            out.append(Outcome(h, info.agent_id, uri, "pending", shown, info.tag,
                               "some window is not committed yet; will look again"))
        elif not changed(info, answer):
            out.append(Outcome(h, info.agent_id, uri, "unchanged", answer.score, answer.tag, answer.reason))
        else:
            evidence, evidence_hash = response_uri(answer.reason)
            if answer.split is not None:  # a pass attests the run's work by agent: what the Collective pays by
                evidence_hash = split_hash(*answer.split)
            val.respond(h, answer.score, evidence, evidence_hash, answer.tag)
            out.append(Outcome(h, info.agent_id, uri, "answered", answer.score, answer.tag, answer.reason))
    return out
