"""An agent run's record: what the agent asked, what each model call and tool call gave back, and
the receipts that tie every model answer to the chain, one JSON object a line (JSONL).

Events, in order (times are Unix nanoseconds):

* ``run``: ``run_id``, ``agent``, ``model``, ``task``, ``start``, ``spec_sha256`` (the agent file's);
* ``chat``: one model call through the gateway: ``step``, ``purpose`` (``tool``: which tool,
  ``input``: the tool's input, ``answer``: free text), ``model``, ``start``, ``end``,
  ``prompt_sha256``, ``output``, ``output_sha256``, ``input_tokens``, ``output_tokens``,
  ``receipt`` (the gateway's, as ``veracity receipt verify`` takes it);
* ``tool``: one tool call: ``step``, ``name``, ``start``, ``end``, ``input``, ``input_sha256``,
  ``output``, ``output_sha256``, ``error`` (None, or what went wrong), ``receipts`` (model calls
  the tool made itself, e.g. retrieval's embeddings, or another agent's run's: then ``member``,
  that agent's id on the AgentRegistry, or None when its card names none);
* ``end``: ``answer``, ``reason`` (``answered``, ``steps`` or ``tokens``: the budget that
  stopped it), ``end``, ``steps``, ``input_tokens``, ``output_tokens``, ``grounded`` and
  ``cited`` (``answer: quote``: how the answer was grounded in the tools' results, and the lines).

The hashes are SHA-256 of the UTF-8 text, hex: a run's record can be published without its
texts and still be checked against them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from veracity.errors import InputError


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RunRecord:
    """A run's events, appended to its JSONL file as they happen (a crashed run keeps what it did)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def add(self, event: str, **fields: Any) -> dict[str, Any]:
        row = {"event": event, **fields}
        self.events.append(row)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return row

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    @property
    def receipts(self) -> list[dict[str, Any]]:
        """Every model call's receipt in the run, in event order: the agent's own calls' and those
        its tools made."""
        out: list[dict[str, Any]] = []
        for e in self.events:
            if e["event"] == "chat":
                out.append(e["receipt"])
            elif e["event"] == "tool":
                out.extend(e.get("receipts") or [])
        return out


def parse_record(data: bytes, source: str = "the record") -> RunRecord:
    """A run record from its JSONL bytes; InputError when it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source} is not UTF-8 text: not a run record") from None
    record = RunRecord()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{source}, line {n}: not JSON ({exc})") from None
        if not isinstance(row, dict) or "event" not in row:
            raise InputError(f"{source}, line {n}: not a run record event (an object with an `event`)")
        record.events.append(row)
    if not record.of("run"):
        raise InputError(f"{source}: no `run` event: not an agent run's record")
    return record


def read_record(path: Path) -> RunRecord:
    """A run's record from its JSONL file; InputError when it is not one."""
    if not path.is_file():
        raise InputError(f"run record {path} not found")
    return parse_record(path.read_bytes(), str(path))
