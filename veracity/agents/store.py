"""The app store (``veracity agent list``): every agent on the AgentRegistry with its owner, its
URI, the name its registration file gives (when the URI answers), and its record: the
reputation summary (feedback count and average, every client counted: a reader who fears sybils
filters by clients it trusts, ``ReputationClient.summary``) and the validation summary (answered
requests and their average score).

``card_name`` and ``entries_table`` are pure; ``read_entries`` reads the chain and the cards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from veracity.agents.validate import FetchError, fetch_uri

if TYPE_CHECKING:
    from veracity.chain.devnet import Deployment

CARD_BYTES = 64 * 1024  # a registration file, at most
CARD_TIMEOUT_S = 2.0  # an agent's card that does not answer in this time is shown as unreachable


@dataclass(frozen=True)
class AgentEntry:
    agent_id: int
    owner: str
    uri: str
    name: str | None  # from the card; None when it could not be read
    card_error: str  # why not ("" when it was read)
    feedback_count: int
    feedback_average: Decimal
    validation_count: int
    validation_average: int  # 0-100

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["feedback_average"] = float(self.feedback_average)
        return d


def card_name(data: bytes) -> str:
    """The ``name`` in a registration file; ValueError when it is not one."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ValueError("not a registration file (a JSON object with a `name`)")
    return doc["name"]


def shown(value: Decimal) -> str:
    """An average as people read it: up to two decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def read_entries(dep: Deployment) -> list[AgentEntry]:
    """Every registered agent, in registration order, with its card's name and its summaries."""
    reg, rep, val = dep.agent_clients("")  # reads only: no account needed
    out = []
    for agent_id in reg.agent_ids():
        uri = reg.uri(agent_id)
        name, why = None, ""
        try:
            name = card_name(fetch_uri(uri, CARD_BYTES, CARD_TIMEOUT_S)) if uri else None
            why = "" if uri else "no URI"
        except FetchError as exc:
            why = str(exc)
        except ValueError as exc:
            why = f"{uri}: {str(exc).splitlines()[0]}"
        feedback = rep.summary(agent_id)
        checked, score = val.summary(agent_id)
        out.append(AgentEntry(agent_id, reg.owner_of(agent_id), uri, name, why, feedback.count, feedback.average,
                              checked, score))
    return out


def entries_table(entries: list[AgentEntry]) -> Any:
    """The agents as a rich Table."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(entries)} agent{'s' * (len(entries) != 1)}")
    for col in ("id", "name", "owner", "URI", "feedback", "validations"):
        table.add_column(col, overflow="fold")
    for e in entries:
        feedback = f"{e.feedback_count}, avg {shown(e.feedback_average)}" if e.feedback_count else "none"
        checks = f"{e.validation_count}, avg {e.validation_average}" if e.validation_count else "none"
        name = escape(e.name) if e.name is not None else "[dim]? (no card)[/]"
        table.add_row(str(e.agent_id), name, e.owner, escape(e.uri) or "[dim]none[/]", feedback, checks)
    return table
