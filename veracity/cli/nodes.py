"""``veracity provider run`` and ``veracity validator run``: the daemons, one entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from veracity.cli.app import app, err
from veracity.errors import UsageError

provider_app = typer.Typer(help="Run a provider node.", no_args_is_help=True)
app.add_typer(provider_app, name="provider")
validator_app = typer.Typer(help="Run a validator node.", no_args_is_help=True)
app.add_typer(validator_app, name="validator")

LOG_LEVEL = typer.Option(None, "--log-level", help="debug, info, warning or error (default: the config's "
                                                   "log_level, else info)")
LOG_JSON = typer.Option(False, "--log-json", help="log one JSON object per line")


def _run_daemon(kind: str, config: Path, cfg_cls: Any, node_cls: Any, log_level: str | None,
                log_json: bool) -> None:
    """Start a daemon from its config file; the launcher runs this same command."""
    import json as _json

    from pydantic import ValidationError

    if not config.is_file():
        raise UsageError(f"{kind} config {config} not found")
    try:
        cfg = cfg_cls.model_validate(_json.loads(config.read_text()))
    except ValidationError as exc:
        what = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"{config} is not a valid {kind} config: {what}") from None
    except ValueError as exc:  # not JSON
        raise UsageError(f"{config} is not a valid {kind} config: {exc}") from None
    from veracity.node.daemon import start_logging

    try:
        start_logging(cfg, log_level, log_json)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    node = node_cls(cfg)
    err.print(f"{kind} {node.chain.address} serving on http://127.0.0.1:{cfg.port}")
    node.serve_forever()


@provider_app.command("run")
def provider_run(config: Path = typer.Option(..., help="provider config (JSON, see veracity.node.provider)"),
                 log_level: Optional[str] = LOG_LEVEL, log_json: bool = LOG_JSON) -> None:
    """Register (if needed), then follow orders, bid, run, commit and serve blobs and bids."""
    from veracity.node.provider import ProviderConfig, ProviderNode

    _run_daemon("provider", config, ProviderConfig, ProviderNode, log_level, log_json)


@validator_app.command("run")
def validator_run(config: Path = typer.Option(..., help="validator config (JSON, see veracity.node.validator)"),
                  log_level: Optional[str] = LOG_LEVEL, log_json: bool = LOG_JSON) -> None:
    """Register (if needed), then follow commitments and re-execute a sample of them."""
    from veracity.node.validator import ValidatorConfig, ValidatorNode

    _run_daemon("validator", config, ValidatorConfig, ValidatorNode, log_level, log_json)

