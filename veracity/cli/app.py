"""The ``veracity`` Typer app, which each command group's module adds itself to, and the console
its progress goes to (stderr)."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Veracity: verifiable AI compute on exact arithmetic.")
err = Console(stderr=True)
