"""The explorer's words: each indexed event told as a sentence whose accounts, orders and CIDs
link to their pages, and the summaries the pages show (an order's story and its dispute's rounds,
the providers' leaderboard), from event rows (``explorer.index``). Pure: rows in, text out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from veracity.explorer import dataviews as D
from veracity.explorer.links import TOKEN, account, agent, cid, code, order, short, vrc  # noqa: F401 (the pages')
from veracity.workloads.spec import model_id

ROLES = {1: "provider", 2: "validator"}
OUTCOMES = {1: "the provider won", 2: "the provider lost", 3: "undecided"}
KINDS = {1: "infer", 2: "train", 3: "finetune", 4: "score", 5: "synthesize"}


def model_names(names: list[str]) -> dict[str, str]:
    """0x model id (the Market's) -> registry name."""
    return {"0x" + model_id(n).hex(): n for n in names}


def describe(e: dict[str, Any], labels: dict[str, str] | None = None, models: dict[str, str] | None = None,
             where: dict[int, str] | None = None, thresholds: dict[int, int] | None = None) -> Markup:
    """Event row ``e`` in words. ``labels``: account -> role; ``models``: model id -> name;
    ``where``: order -> where its dispute ended ("at record 57, element 12"); ``thresholds``: a
    data pool -> its near-copy threshold (bps). An event whose arguments are not what its kind's
    words need is told by its fields: one odd event never takes a page down."""
    try:
        if e["contract"] in D.CONTRACTS:  # their names (Paid, Revealed, Slashed, Finalized) are others' too
            return D.words(e, labels, thresholds) or fields(e)
        return _words(e, labels, models, where)
    except (KeyError, TypeError, ValueError, AttributeError):
        return fields(e)


def fields(e: dict[str, Any]) -> Markup:
    parts = ", ".join(f"{k} {v}" for k, v in e["args"].items())
    return Markup("{} {}: {}").format(e["contract"], e["name"], parts)


def _words(e: dict[str, Any], labels: dict[str, str] | None, models: dict[str, str] | None,
           where: dict[int, str] | None) -> Markup:
    a, n = e["args"], e["name"]

    def who(key: str) -> Markup:
        return account(a[key], labels)

    o = order(a["order_id"]) if "order_id" in a else Markup("")
    f = Markup
    if n == "OrderOpened":
        model = (models or {}).get(a["model_id"], short(a["model_id"]))
        return f("{} opened {}: {} {} for at most {}, spec {}").format(
            who("client"), o, KINDS.get(a["kind"], "a job of kind %s" % a["kind"]), model, vrc(a["max_price"]),
            cid(a["spec_cid"]))
    if n == "OrderCancelled":
        return f("{} cancelled; {} back to its client").format(o, vrc(a["refund"]))
    if n == "BidAccepted":
        return f("{} won {} at {}, {} collateral locked").format(who("provider"), o, vrc(a["price"]),
                                                                 vrc(a["collateral"]))
    if n == "ResultCommitted":
        return f("{} committed {}: outputs {}, trace root {} ({} records)").format(
            who("provider"), o, cid(a["output_cid"]), code(a["trace_root"]), a["trace_length"])
    if n == "Finalized":
        return f("{} settled: {} paid {} (fee {})").format(o, who("provider"), vrc(a["paid"]), vrc(a["fee"]))
    if n == "TimedOut":
        return f("{} lost {}: {} missed its deadline ({} back to the client)").format(
            who("provider"), vrc(a["slashed"]), o, vrc(a["refund"]))
    if n == "ChallengeSet":
        return f("{} is {}").format(o, "under challenge" if a["challenged"] else "no longer challenged")
    if n == "Overturned":
        at = (where or {}).get(int(a["order_id"]), "")
        return f("{} lost {}: {} overturned{} (challenger {}; {} back to the client)").format(
            who("provider"), vrc(a["slashed"]), o, (" " + at) if at else "", who("challenger"), vrc(a["refund"]))
    if n == "Undecided":
        return f("{} undecided: {} back to the client").format(o, vrc(a["refund"]))
    if n == "Undelivered":
        return f("{} lost {}: it did not serve {}'s outputs").format(who("provider"), vrc(a["slashed"]), o)
    if n == "WindowPosted":
        return f("lease {} posted its window: spec {}, {} coarse records").format(o, cid(a["spec_cid"]),
                                                                                 a["program_length"])
    if n == "Challenged":
        return f("{} challenged {} with a {} bond (its trace root {})").format(who("challenger"), o, vrc(a["bond"]),
                                                                             code(a["root"]))
    if n == "Revealed":
        return f("{} revealed record {} of {}'s game").format(who("party"), a["index"], o)
    if n == "Query":
        return f("{}: the traces agree through record {} and differ by record {}; record {} asked").format(
            o, a["agree"], a["differ"], a["index"])
    if n == "Located":
        return f("{}: the game narrowed to record {}").format(o, a["record"])
    if n == "Opened":
        return f("{} opened the record of {}: chunk root {}").format(who("party"), o, code(a["chunk_root"]))
    if n == "ChunkRevealed":
        return f("{} revealed chunk {} of {}'s record").format(who("party"), a["index"], o)
    if n == "ElementLocated":
        return f("{}: narrowed to element {}: the provider says {}, the challenger {}").format(
            o, a["element"], a["provider_value"], a["challenger_value"])
    if n == "Settled":
        return f("{}'s dispute settled: {} ({})").format(o, OUTCOMES.get(a["outcome"], a["outcome"]), a["reason"])
    if n == "Registered" and e["contract"] == "Registry":
        return f("{} registered as a {} with {} stake{}").format(
            who("node"), ROLES.get(a["role"], "node"), vrc(a["stake"]),
            f(" at {}").format(a["endpoint"]) if a.get("endpoint") else "")
    if n == "AttributesUpdated":
        return f("{} set its device {} ({} GB), price floor {}").format(who("node"), a["device"] or "-",
                                                                        a["memory_gb"], vrc(a["price_floor"]))
    if n == "StakeAdded":
        return f("{} staked {} more").format(who("node"), vrc(a["amount"]))
    if n == "UnbondRequested":
        return f("{} asked to unbond {}").format(who("node"), vrc(a["amount"]))
    if n == "Withdrawn":
        return f("{} withdrew {}").format(who("node"), vrc(a["amount"]))
    if n == "CollateralLocked":
        return f("{} locked {} of its stake as collateral").format(who("node"), vrc(a["amount"]))
    if n == "CollateralUnlocked":
        return f("{}'s collateral of {} unlocked").format(who("node"), vrc(a["amount"]))
    if n == "Slashed":
        to = a.get("to") or ""
        gone = f("{} to {}").format(vrc(int(a["amount"]) - int(a["burnt"])), account(to, labels)) \
            if int(to or "0x0", 16) else Markup("")
        return f("{} was slashed {}: {}{}{} burnt").format(who("node"), vrc(a["amount"]), gone,
                                                          ", " if gone else "", vrc(a["burnt"]))
    if n == "ReputationChanged":
        return f("{}'s reputation is now {}").format(who("node"), a["reputation"])
    if n == "Requested":
        return f("{} asked the Oracle for {} ({}, paying {})").format(who("consumer"), order(a["request_id"]),
                                                                      a["model"], vrc(a["payment"]))
    if n == "Taken":
        return f("{} took Oracle {} at {}").format(who("provider"), order(a["request_id"]), vrc(a["price"]))
    if n == "Fulfilled":
        return f("Oracle {} answered {}: outputs {}").format(order(a["request_id"]), who("consumer"),
                                                            cid(a["output_cid"]))
    if n == "Registered" and e["contract"] == "AgentRegistry":
        return f("{} registered agent {} ({})").format(who("owner"), agent(a["agentId"]), a["agentURI"])
    if n == "NewFeedback":
        return f("{} rated agent {}: {}").format(who("clientAddress"), agent(a["agentId"]),
                                                 int(a["value"]) / 10 ** int(a["valueDecimals"]))
    if n == "ValidationRequest":
        return f("agent {} asked {} to validate a run").format(agent(a["agentId"]), who("validatorAddress"))
    if n == "ValidationResponse":
        return f("{} answered {} for agent {}'s run ({})").format(who("validatorAddress"), a["response"],
                                                                  agent(a["agentId"]), a["tag"] or "-")
    if n == "PaymentOpened":
        return f("{} escrowed {} for agent {}'s run").format(who("payer"), vrc(a["amount"]), agent(a["agentId"]))
    if n == "SharePaid":
        return f("agent {} was paid {} ({} verified calls) to {}").format(agent(a["agentId"]), vrc(a["amount"]),
                                                                         a["work"], who("payee"))
    if n == "PaymentRefunded":
        return f("{} was refunded {}").format(who("payer"), vrc(a["amount"]))
    if n == "Transfer" and e["contract"] == "AgentRegistry":  # an agent's ERC-721 token
        if int(a["sender"], 16) == 0:
            return f("agent {} was minted to {}").format(agent(a["token_id"]), who("receiver"))
        return f("{} passed agent {} to {}").format(who("sender"), agent(a["token_id"]), who("receiver"))
    if n == "Transfer" and e["contract"] == "Token":
        if int(a["receiver"], 16) == 0:
            return f("{} burnt from {}").format(vrc(a["value"]), who("sender"))
        if int(a["sender"], 16) == 0:
            return f("{} minted to {}").format(vrc(a["value"]), who("receiver"))
        return f("{} sent {} to {}").format(who("sender"), vrc(a["value"]), who("receiver"))
    return fields(e)


# an order's story -------------------------------------------------------------------------------
@dataclass
class Round:
    """One step of a dispute's narrowing: what is known to agree, to differ, and what was asked."""

    what: str  # "records", "chunk", "element", "judgement"
    agree: int
    differ: int
    asked: int | None
    text: Markup
    size: int = 0  # the records of its level (the coarse trace's, or the located step's)


@dataclass
class OrderStory:
    order_id: int
    events: list[dict[str, Any]]
    opened: dict[str, Any] | None = None
    lease: dict[str, Any] | None = None
    commit: dict[str, Any] | None = None
    window: dict[str, Any] | None = None
    state: str = "unknown"
    rounds: list[Round] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # each level's records
    steps: list[int] = field(default_factory=list)  # the coarse records the game went inside
    located: int | None = None
    games: int = 0  # games played over it (the rounds shown are the latest's)
    element: dict[str, Any] | None = None
    judgement: dict[str, Any] | None = None
    settlement: list[dict[str, Any]] = field(default_factory=list)  # the events that moved tokens at its end

    @property
    def where(self) -> str:
        """Where its dispute ended, in words ("at record 57, element 12"), or ""."""
        if self.located is None:
            return ""
        return f"at record {self.located}" + (f", element {self.element['element']}" if self.element else "")


def order_story(oid: int, events: list[dict[str, Any]], settled_by_tx: dict[str, list[dict[str, Any]]]
                ) -> OrderStory:
    """Order ``oid`` from its events (oldest first); ``settled_by_tx``: every event of the
    transactions that ended it (the Registry's slashes and unlocks ride with the Market's)."""
    s = OrderStory(oid, events)
    ends = {"Finalized": "finalized", "TimedOut": "timed out", "Overturned": "overturned",
            "Undecided": "undecided", "OrderCancelled": "cancelled", "Undelivered": "undelivered"}
    for e in events:
        n, a = e["name"], e["args"]
        if n == "OrderOpened":
            s.opened, s.state = e, "open"
        elif n == "BidAccepted":
            s.lease, s.state = e, "accepted"
        elif n == "WindowPosted":
            s.window = e
        elif n == "ResultCommitted":
            s.commit, s.state = e, "committed"
        elif n == "ChallengeSet":
            s.state = "challenged" if a["challenged"] else "committed"
        elif n == "Challenged":  # a game (a result may be challenged again once its provider won one)
            s.rounds, s.sizes, s.steps, s.located, s.element, s.judgement = [], [], [], None, None, None
            s.games += 1
        elif n == "Query":
            agree, differ = int(a["agree"]), int(a["differ"])
            if not s.rounds or s.rounds[-1].what == "record":  # a level's first round: its records' count
                s.sizes.append(differ)
            said = (Markup("records 0 to {} may differ, and do by record {}").format(differ - 1, differ)
                    if agree < 0 else Markup("the traces agree through record {} and differ by record {}").format(
                        agree, differ))
            s.rounds.append(Round("records", agree, differ, int(a["index"]),
                                  Markup("{}: record {} asked").format(said, a["index"]), s.sizes[-1]))
        elif n == "Located":
            if s.located is not None:  # the game went inside the step it had located
                s.steps.append(s.located)
                for r in s.rounds:
                    if r.what == "record" and r.text.endswith(f": {s.located}"):
                        r.text = Markup("narrowed to one coarse record, {}: the game goes inside its step").format(
                            s.located)
            s.located = int(a["record"])
            s.rounds.append(Round("record", s.located - 1, s.located, None,
                                  Markup("narrowed to one record: {}").format(s.located)))
        elif n == "ChunkRevealed":
            s.rounds.append(Round("chunk", 0, 0, int(a["index"]),
                                  Markup("chunk {} of the record revealed").format(a["index"])))
        elif n == "ElementLocated":
            s.element = a
            s.rounds.append(Round("element", 0, 0, int(a["element"]), Markup(
                "narrowed to one element: {}; the provider says {}, the challenger {}").format(
                a["element"], a["provider_value"], a["challenger_value"])))
        elif n == "Settled":
            s.judgement = e
        if n in ends:
            s.state = ends[n]
            s.settlement = settled_by_tx.get(e["tx"], [e])
    return s


# the leaderboard ---------------------------------------------------------------------------------
@dataclass
class NodeRow:
    address: str
    role: str
    endpoint: str = ""
    jobs: int = 0  # results finalized
    earned: int = 0
    slashes: int = 0
    slashed: int = 0
    disputes_won: int = 0
    disputes_lost: int = 0
    reputation: int = 0


def leaderboard(events: list[dict[str, Any]]) -> dict[str, NodeRow]:
    """Every registered node's record from the events (oldest first), by lowercase address."""
    nodes: dict[str, NodeRow] = {}
    challengers: dict[int, str] = {}
    providers: dict[int, str] = {}
    for e in events:
        a, n = e["args"], e["name"]
        if e["contract"] in D.CONTRACTS:  # a labeller's slash or a pool's payment is not a node's
            continue
        if n == "Registered" and e["contract"] == "Registry":
            nodes[a["node"].lower()] = NodeRow(a["node"].lower(), ROLES.get(a["role"], "node"), a["endpoint"])
            continue
        node = nodes.get(str(a.get("node", a.get("provider", ""))).lower())
        if n == "AttributesUpdated" and node:
            node.endpoint = a["endpoint"] or node.endpoint
        elif n == "Slashed" and node:
            node.slashes += 1
            node.slashed += int(a["amount"])
        elif n == "ReputationChanged" and node:
            node.reputation = int(a["reputation"])
        elif n == "Finalized" and node:
            node.jobs += 1
            node.earned += int(a["paid"])
        elif n == "BidAccepted":
            providers[int(a["order_id"])] = a["provider"].lower()
        elif n == "Challenged":
            challengers[int(a["order_id"])] = a["challenger"].lower()
        elif n == "Overturned":  # the provider lost (a game, or an output fault proven): to who proved it
            prov, chal = nodes.get(str(a["provider"]).lower()), nodes.get(str(a["challenger"]).lower())
            if prov:
                prov.disputes_lost += 1
            if chal:
                chal.disputes_won += 1
        elif n == "Settled" and a["outcome"] == 1:  # the provider won its game
            oid = int(a["order_id"])
            prov, chal = nodes.get(providers.get(oid, "")), nodes.get(challengers.get(oid, ""))
            if prov:
                prov.disputes_won += 1
            if chal:
                chal.disputes_lost += 1
    return nodes


def labels(nodes: dict[str, NodeRow], contracts: dict[str, str] | None = None) -> dict[str, str]:
    """Account -> what it is: a node's role, or a contract's name (``contracts``: name -> address)."""
    return {**{a.lower(): name for name, a in (contracts or {}).items()}, **{a: r.role for a, r in nodes.items()}}


def per_minute(times: list[int], now: int, window_s: int = 600) -> float:
    """Events in the last ``window_s`` seconds before ``now``, per minute."""
    recent = [t for t in times if now - window_s < t <= now]
    return len(recent) * 60 / window_s


def group_by_tx(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        out[e["tx"]].append(e)
    return out
