"""``veracity agent run`` and ``veracity agent trace``: an agent's task run through the gateway,
every model call with its receipt, and a run's record checked against the chain."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

from veracity.chain.devnet import find_deployment
from veracity.cli.app import app, err

if TYPE_CHECKING:
    from veracity.agents.record import RunRecord
    from veracity.chain.devnet import Deployment

agent_app = typer.Typer(help="Agents whose every model call carries an on-chain receipt.", no_args_is_help=True)


@agent_app.command("run")
def run(agent: Path = typer.Argument(..., help="the agent's YAML file"),
        task: str = typer.Option(..., "--task", "-t", help="what the agent is asked"),
        url: str = typer.Option("http://127.0.0.1:8400/v1", help="the gateway's /v1 URL"),
        deployment: Optional[Path] = typer.Option(None, help="deployment file, for chain tools and checks "
                                                             "(default: the devnet's)"),
        out: Path = typer.Option(Path("runs"), help="the folder the run's record (JSONL) and spans go to"),
        otlp_endpoint: Optional[str] = typer.Option(None, help="also export the spans to this OTLP/HTTP endpoint "
                                                               "(default: $OTEL_EXPORTER_OTLP_ENDPOINT)"),
        wait: float = typer.Option(0, min=0, help="then wait up to this many seconds for the windows to be "
                                                  "committed, and verify every receipt")) -> None:
    """Run a task: the model picks tools or answers; prints the answer and where its record is."""
    import hashlib

    from veracity.agents.record import RunRecord
    from veracity.agents.runtime import chat_template, default_record_path, gateway_completer, run_agent
    from veracity.agents.spec import load_agent
    from veracity.agents.tools import ToolContext, build_tools

    spec = load_agent(agent)
    dep = None
    try:
        dep = find_deployment(deployment)
    except Exception:  # chain tools say they need a deployment; everything else runs without one
        if deployment is not None:
            raise
    tools = build_tools(spec.tools, ToolContext(dep, url.removesuffix("/").removesuffix("/v1"),
                                                dep.accounts[0].key if dep is not None else None))
    path = default_record_path(out, spec.name)
    record = RunRecord(path)
    done = run_agent(spec, task, gateway_completer(url, spec.model), chat_template(spec.model), tools, record,
                     hashlib.sha256(agent.read_bytes()).hexdigest())
    Console().print(done.answer)
    err.print(f"[dim]{spec.name}: {done.reason} after {record.of('end')[0]['steps']} tool calls; "
              f"record {path}[/]")
    _export(record, path, otlp_endpoint)
    if wait and dep is not None:
        _check(record, dep, wait)


def _export(record: "RunRecord", path: Path, endpoint: str | None) -> None:
    try:
        from veracity.agents.telemetry import export_run
    except ImportError:  # the OpenTelemetry SDK is not installed: the JSONL record is the run's trace
        return
    spans = path.with_suffix(".otlp.json")
    n = export_run(record, spans, endpoint)
    err.print(f"[dim]{n} spans in {spans}[/]")


def _check(record: "RunRecord", dep: "Deployment", wait: float) -> int:
    from veracity.agents.trace import check_run, run_tree

    end = time.monotonic() + wait
    while True:
        check = check_run(record, dep, dep.accounts[0].key)
        if check.verdict != "pending" or time.monotonic() > end:
            break
        time.sleep(1.0)
    Console().print(run_tree(record, check))
    for c in check.checks:
        if not c.ok:
            err.print(f"{c.verdict}: {c.reason}")
    return 0 if check.ok else 3 if check.verdict == "pending" else 1


@agent_app.command("trace")
def trace(run: Path = typer.Argument(..., help="a run's record (the JSONL `veracity agent run` wrote)"),
          deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
          wait: float = typer.Option(0, min=0, help="wait up to this many seconds for windows still pending")) -> None:
    """Show a run as a tree and verify every receipt in it: exit 0 verified (every model call's
    answer is in a committed window, signed by its lease's provider), 3 pending, 1 failed."""
    from veracity.agents.record import read_record

    raise typer.Exit(_check(read_record(run), find_deployment(deployment), wait))


app.add_typer(agent_app, name="agent")
