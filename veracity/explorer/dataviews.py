"""The data layer in the explorer's words: each DataPool and LabelTasks event as a sentence whose
accounts, orders, pools, items and tasks link to their pages, and the data page's tables (the
pools, each pool's items, the labelling tasks) built from the indexed events. Pure: rows in, text
and rows out. An event whose fields are not what its words need raises (``views.describe`` then
tells it by its fields); a table skips it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from veracity.explorer.links import account, bps, cid, code, duration, item, order, pool, task, vrc

CONTRACTS = ("DataPool", "LabelTasks")
BY_EPOCH, BY_SALE = 1, 2  # why a pool paid a contributor (DataPool.Paid.why)
ODD = (KeyError, TypeError, ValueError, AttributeError)


def score_note(quality_bps: int, similarity_bps: int, score: int, threshold_bps: int | None) -> str:
    """Why an item scored what it did, in words ("a near-copy: similarity 0.99 to an accepted item;
    quality 0.46"); ``threshold_bps``: the pool's near-copy threshold, when known."""
    q, sim = f"quality {bps(quality_bps)}", bps(similarity_bps)
    if score > 0:
        return q + (f"; similarity {sim} to its nearest accepted item" if similarity_bps else "")
    if quality_bps <= 0:
        return "off topic: quality 0"
    if threshold_bps is not None and similarity_bps >= threshold_bps:
        return f"a near-copy: similarity {sim} to an accepted item; {q}"
    if threshold_bps is not None:
        return f"the pool's reference set is full; {q}"
    return f"similarity {sim} to an accepted item; {q}"


def labels_text(hexstr: str, most: int = 16) -> str:
    """Labels (one byte per item, as 0x hex) as their classes: "0 1 1 2 …"."""
    raw = bytes.fromhex(str(hexstr).removeprefix("0x"))
    return " ".join(str(b) for b in raw[:most]) + (" …" if len(raw) > most else "")


def words(e: dict[str, Any], labels: dict[str, str] | None = None,
          thresholds: dict[int, int] | None = None) -> Markup | None:
    """A DataPool or LabelTasks event in words (None: a kind these words do not know).
    ``thresholds``: pool -> its near-copy threshold in basis points (``PoolCreated``'s)."""
    a, n, f = e["args"], e["name"], Markup

    def who(key: str) -> Markup:
        return account(a[key], labels)

    if e["contract"] == "DataPool":
        p = pool(a["pool"])
        if n == "PoolCreated":
            return f("{} opened {}: {} epochs of {}, {} each, {} for scoring, near-copy at similarity {}{} "
                     "(curator {}; schema {})").format(
                who("owner"), p, int(a["epochs"]), duration(a["epoch_length"]), vrc(a["epoch_reward"]),
                vrc(a["score_budget"]), bps(a["threshold_bps"]), ", device data only" if a["devices"] is True else "",
                who("curator"), cid(a["schema_cid"]))
        if n == "DeviceRegistered":
            return f("{} registered device {} of contributor {}").format(p, who("device"), who("contributor"))
        if n == "Contributed":
            device = a.get("device") or ""
            via = f(", from device {}").format(account(device, labels)) if device and int(device, 16) else ""
            return f("contributor {} contributed {} to {} ({}, epoch {}{})").format(
                who("contributor"), cid(a["cid"]), p, item(a["pool"], a["index"]), int(a["epoch"]), via)
        if n == "ScoreOrdered":
            return f("{} ordered the score of its {}: {} (spec {})").format(p, item(a["pool"], a["index"]),
                                                                           order(a["order_id"]), cid(a["spec_cid"]))
        if n == "Scored":
            score = int(a["score"])
            note = score_note(int(a["quality_bps"]), int(a["similarity_bps"]), score,
                              (thresholds or {}).get(int(a["pool"])))
            return f("{} of {} scored {} ({}) from {} (program {})").format(
                item(a["pool"], a["index"]), p, bps(score), note, order(a["order_id"]), code(a["program_root"]))
        if n == "Delivered":
            return f("{} of {}: its score {} delivered (its provider paid)").format(
                item(a["pool"], a["index"]), p, order(a["order_id"]))
        if n == "Accepted":
            return f("{} of {} accepted: reference item {} of the pool").format(item(a["pool"], a["index"]), p,
                                                                                int(a["position"]))
        if n == "Rejected":
            return f("{} of {} rejected: {}").format(item(a["pool"], a["index"]), p, a["reason"] or "no reason given")
        if n == "Paid":
            why = int(a["why"])
            what = (f("for epoch {}").format(int(a["epoch"])) if why == BY_EPOCH else
                    f("from sale {}").format(int(a["epoch"])) if why == BY_SALE else
                    f("(reason {}, {})").format(why, int(a["epoch"])))
            return f("{} paid contributor {} {} {}").format(p, who("contributor"), vrc(a["amount"]), what)
        if n == "EpochPaid":
            reward, rest = int(a["reward"]), int(a["remainder"])
            to = a.get("remainder_to")
            back = f(", {} to {}").format(vrc(rest), account(to, labels)) if rest and isinstance(to, str) else \
                f(", {} left").format(vrc(rest)) if rest else ""
            return f("{} paid epoch {}: {} of its {} to the contributors by score (total score {}){}").format(
                p, int(a["epoch"]), vrc(reward - rest), vrc(reward), bps(a["total_score"]), back)
        if n == "Bought":
            n_items = int(a["items"])
            return f("{}'s data bought by {} for {} ({} item{}, dataset {}; sale {})").format(
                p, who("buyer"), vrc(a["amount"]), n_items, "" if n_items == 1 else "s", cid(a["dataset_cid"]),
                int(a["sale"]))
        return None
    if e["contract"] == "LabelTasks":
        t = task(a["task_id"])
        if n == "TaskPosted":
            return f("{} posted labelling {}: {} items ({}) in {} classes for {} labellers, {} reward, {} stake "
                     "each; accuracy {} to be paid, {}% of the stake slashed below it").format(
                who("requester"), t, int(a["n_items"]), cid(a["items_cid"]), int(a["classes"]),
                int(a["labels_per_item"]), vrc(a["reward"]), vrc(a["min_stake"]), bps(a["accuracy_threshold_bps"]),
                bps(int(a["slash_bps"]) * 100))
        if n == "Committed":
            return f("labeller {} joined {} with {} stake (commitment {})").format(
                who("labeller"), t, vrc(a["stake"]), code(a["commitment"]))
        if n == "Revealed":
            return f("labeller {} revealed its labels on {}: {}").format(who("labeller"), t, labels_text(a["labels"]))
        if n == "Finalized":
            got = labels_text(a["consensus"])
            if not got:
                return f("{} cancelled: {} labellers revealed, too few for a consensus (the reward back to the "
                         "requester)").format(t, int(a["revealed"]))
            its = a.get("iterations")
            after = f(" after {} EM iterations").format(int(its)) if isinstance(its, int) else ""
            return f("{} finalized: consensus of {} labellers{}: {}").format(t, int(a["revealed"]), after, got)
        if n == "Aggregating":
            return f("{}: the consensus is still being computed ({} EM iterations so far; finalize again)").format(
                t, int(a["iterations"]))
        if n == "Paid":
            if int(a["amount"]):
                return f("labeller {} was paid {} on {} (accuracy {}; {} stake back)").format(
                    who("labeller"), vrc(a["amount"]), t, bps(a["accuracy_bps"]), vrc(a["stake_returned"]))
            return f("labeller {} got {} of its stake back on {} (accuracy {})").format(
                who("labeller"), vrc(a["stake_returned"]), t, bps(a["accuracy_bps"]))
        if n == "Slashed":
            return f("labeller {} was slashed {} on {}").format(who("labeller"), vrc(a["amount"]), t)
        if n == "Refunded":
            return f("{} got {} of {}'s reward back").format(who("requester"), vrc(a["amount"]), t)
    return None


# the data page's tables -----------------------------------------------------------------------
@dataclass
class ItemRow:
    """A contribution to a pool and what became of it."""

    index: int
    contributor: str
    cid: str  # its 0x digest
    epoch: int
    state: str = "submitted"  # scoring, accepted, not accepted, rejected
    order_id: int | None = None  # its (latest) score order
    score: int | None = None  # basis points
    note: str = ""  # why it scored what it did, or why it was rejected


@dataclass
class PoolRow:
    pool: int
    owner: str
    curator: str
    schema_cid: str
    threshold_bps: int
    devices: bool
    epochs: int
    epoch_length: int
    epoch_reward: int
    score_budget: int
    items: dict[int, ItemRow] = field(default_factory=dict)
    epochs_paid: list[int] = field(default_factory=list)
    paid_epochs: int = 0  # to its contributors, for its epochs
    paid_sales: int = 0  # and from its sales
    sales: int = 0
    sold: int = 0  # what its buyers paid

    @property
    def paid(self) -> int:
        return self.paid_epochs + self.paid_sales

    @property
    def accepted(self) -> int:
        return sum(1 for i in self.items.values() if i.state == "accepted")


def pools(events: list[dict[str, Any]]) -> dict[int, PoolRow]:
    """Every pool from the DataPool's events (oldest first), by id, each with its items."""
    out: dict[int, PoolRow] = {}
    for e in events:
        if e["contract"] != "DataPool":
            continue
        try:
            _pool_event(out, e["name"], e["args"])
        except ODD:
            continue  # an odd event is told by its fields in the events list; a table leaves it out
    return out


def _pool_event(out: dict[int, PoolRow], n: str, a: dict[str, Any]) -> None:
    pid = int(a["pool"])
    if n == "PoolCreated":
        out[pid] = PoolRow(pid, str(a["owner"]).lower(), str(a["curator"]).lower(), str(a["schema_cid"]),
                           int(a["threshold_bps"]), a["devices"] is True, int(a["epochs"]), int(a["epoch_length"]),
                           int(a["epoch_reward"]), int(a["score_budget"]))
        return
    p = out.get(pid)
    if p is None:
        return
    if n == "Contributed":
        i = int(a["index"])
        p.items[i] = ItemRow(i, str(a["contributor"]).lower(), str(a["cid"]), int(a["epoch"]))
        return
    if n == "Paid":
        amount = int(a["amount"])
        if int(a["why"]) == BY_SALE:
            p.paid_sales += amount
        else:
            p.paid_epochs += amount
    elif n == "EpochPaid":
        p.epochs_paid.append(int(a["epoch"]))
    elif n == "Bought":
        p.sold += int(a["amount"])
        p.sales += 1
    it = p.items.get(int(a["index"])) if n in ("ScoreOrdered", "Delivered", "Scored", "Rejected") else None
    if it is None:
        return
    if n == "ScoreOrdered":
        it.state, it.order_id = "scoring", int(a["order_id"])
    elif n == "Delivered":
        it.state = "delivered"
    elif n == "Scored":  # all read before any is set: an odd event changes nothing
        score, oid = int(a["score"]), int(a["order_id"])
        note = score_note(int(a["quality_bps"]), int(a["similarity_bps"]), score, p.threshold_bps)
        it.score, it.order_id, it.note = score, oid, note
        it.state = "accepted" if score > 0 else "not accepted"
    elif n == "Rejected":
        it.state, it.note = "rejected", str(a["reason"])


@dataclass
class TaskRow:
    task_id: int
    requester: str
    items_cid: str
    n_items: int
    classes: int
    labels_per_item: int
    reward: int
    min_stake: int
    commit_deadline: int
    reveal_deadline: int
    labellers: list[str] = field(default_factory=list)  # in the order they joined
    revealed: list[str] = field(default_factory=list)
    finalized: bool = False
    cancelled: bool = False
    paid: int = 0  # reward shares
    slashed: int = 0
    slashes: int = 0

    def state(self, now: int) -> str:
        """Where it is at time ``now``: committing, revealing, to finalize, finalized, cancelled."""
        if self.cancelled:
            return "cancelled"
        if self.finalized:
            return "finalized"
        return "committing" if now <= self.commit_deadline else "revealing" if now <= self.reveal_deadline \
            else "to finalize"


def tasks(events: list[dict[str, Any]]) -> dict[int, TaskRow]:
    """Every labelling task from the LabelTasks events (oldest first), by id."""
    out: dict[int, TaskRow] = {}
    for e in events:
        if e["contract"] != "LabelTasks":
            continue
        try:
            _task_event(out, e["name"], e["args"])
        except ODD:
            continue
    return out


def _task_event(out: dict[int, TaskRow], n: str, a: dict[str, Any]) -> None:
    tid = int(a["task_id"])
    if n == "TaskPosted":
        out[tid] = TaskRow(tid, str(a["requester"]).lower(), str(a["items_cid"]), int(a["n_items"]),
                           int(a["classes"]), int(a["labels_per_item"]), int(a["reward"]), int(a["min_stake"]),
                           int(a["commit_deadline"]), int(a["reveal_deadline"]))
        return
    t = out.get(tid)
    if t is None:
        return
    if n == "Committed":
        t.labellers.append(str(a["labeller"]).lower())
    elif n == "Revealed":
        t.revealed.append(str(a["labeller"]).lower())
    elif n == "Paid":
        t.paid += int(a["amount"])
    elif n == "Slashed":
        t.slashed += int(a["amount"])
        t.slashes += 1
    elif n == "Finalized":
        t.cancelled = not labels_text(a["consensus"])
        t.finalized = True
