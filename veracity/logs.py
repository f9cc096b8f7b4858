"""Logging for every process: one line per event, ``HH:MM:SS daemon: what happened`` (or JSON lines),
through the standard ``logging`` module under the ``veracity`` logger.

    log("provider", "order 3: committed")   # logger "veracity.provider", level INFO
    setup("info", json_lines=False)         # once, at a process's start (daemons, the CLI)
"""

from __future__ import annotations

import json
import logging
import sys

LEVELS = ("debug", "info", "warning", "error")


def log(name: str, message: str, level: int = logging.INFO) -> None:
    """One event of component ``name`` (provider, validator, client, gateway, ...)."""
    logging.getLogger(f"veracity.{name}").log(level, message)


class _Line(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("veracity.")
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{self.formatTime(record, '%H:%M:%S')} {name}: {text}"


class _JSONLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": round(record.created, 3), "level": record.levelname.lower(),
               "component": record.name.removeprefix("veracity."), "message": record.getMessage()}
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup(level: str = "info", json_lines: bool = False, stream: object = None) -> None:
    """Send the ``veracity`` logger's events at ``level`` and above to ``stream`` (stdout by
    default), one line each; replaces what an earlier call set."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LEVELS)}")
    root = logging.getLogger("veracity")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stdout)  # type: ignore[arg-type]
    handler.setFormatter(_JSONLine() if json_lines else _Line())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
