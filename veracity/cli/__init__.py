"""The ``veracity`` command line: one Typer app (``app.app``), one module per command group; errors
print as one line, never a traceback."""

from __future__ import annotations

import sys

from veracity.cli import agents, data, devnet, explorer, gateway, jobs, labels, local, nodes  # noqa: F401  (each adds its commands to ``app``)
from veracity.cli.app import app, err
from veracity.errors import VeracityError
from veracity.logs import setup

__all__ = ["app", "main"]


def main() -> None:
    setup("info", stream=sys.stderr)  # the client's and the gateway's events; a daemon sets its own
    try:
        app(standalone_mode=True)
    except VeracityError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, never wrapped
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
