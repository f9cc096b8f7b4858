"""The explorer's links and amounts: an account, an order, a CID, a pool, an item, a task as the
link to its page, and token amounts, fractions and durations as people read them. Pure."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from veracity.cid import cid_from_digest

TOKEN = 10**18


def vrc(amount: Any) -> str:
    """Token base units as VRC, to at most 4 decimals, no trailing zeros."""
    v = int(amount) / TOKEN
    text = f"{v:,.4f}".rstrip("0").rstrip(".")
    return f"{text} VRC"


def short(hexstr: str, keep: int = 6) -> str:
    return hexstr if len(hexstr) <= 2 + 2 * keep else f"{hexstr[:2 + keep]}…{hexstr[-4:]}"


def account(addr: str, labels: dict[str, str] | None = None) -> Markup:
    a = str(addr).lower()
    label = (labels or {}).get(a)
    text = f"{label} {short(a)}" if label else short(a)
    return Markup('<a class="addr" href="/address/{}">{}</a>').format(a, text)


def order(oid: Any) -> Markup:
    return Markup('<a class="order" href="/order/{}">order {}</a>').format(int(oid), int(oid))


def cid(digest: str) -> Markup:
    """A 32-byte digest as the CID it is (``cid.cid_from_digest``), linked to its blob page."""
    try:
        text = cid_from_digest(bytes.fromhex(digest[2:]))
    except ValueError:
        return Markup("{}").format(digest)
    return Markup('<a class="cid" href="/cid/{}">{}</a>').format(text, short(text, 8))


def code(hexstr: str) -> Markup:
    return Markup('<code title="{}">{}</code>').format(hexstr, short(hexstr, 8))


def agent(agent_id: Any) -> Markup:
    return Markup('<a class="agent" href="/agents#agent-{}">{}</a>').format(agent_id, agent_id)




def pool(pool_id: Any) -> Markup:
    return Markup('<a class="pool" href="/data#pool-{}">pool {}</a>').format(int(pool_id), int(pool_id))


def item(pool_id: Any, index: Any) -> Markup:
    """A pool's contribution, linked to its row on the data page."""
    return Markup('<a class="item" href="/data#pool-{}-item-{}">item {}</a>').format(int(pool_id), int(index),
                                                                                    int(index))


def task(task_id: Any) -> Markup:
    return Markup('<a class="task" href="/data#task-{}">task {}</a>').format(int(task_id), int(task_id))


def bps(value: Any) -> str:
    """Basis points as the fraction they are, to at most 4 decimals: 9900 -> "0.99"."""
    v = int(value)
    text = f"{abs(v) // 10000}.{abs(v) % 10000:04d}".rstrip("0").rstrip(".")
    return ("-" if v < 0 else "") + text


def duration(seconds: Any) -> str:
    """Seconds in the largest unit that divides them: 600 -> "10 min", 86400 -> "1 day"."""
    s = int(seconds)
    for unit, name in ((86400, "day"), (3600, "h"), (60, "min")):
        if s >= unit and s % unit == 0:
            n = s // unit
            return f"{n} {name}{'s' if name == 'day' and n != 1 else ''}"
    return f"{s} s"
