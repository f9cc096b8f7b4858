"""The ``veracity`` Typer app, which each command group's module adds itself to, and the console
its progress goes to (stderr)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from veracity.errors import UsageError

if TYPE_CHECKING:
    from veracity.chain.devnet import Deployment

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Veracity: verifiable AI compute on exact arithmetic.")
err = Console(stderr=True)


def account_key(dep: "Deployment", account: int) -> str:
    """The private key of deployment account ``account`` (``--account``), or a usage error."""
    if not 0 <= account < len(dep.accounts):
        raise UsageError(f"--account must be between 0 and {len(dep.accounts) - 1}")
    return dep.accounts[account].key
